//! The module picture of the crate, checked: no import cycle among modules at any depth, and no
//! import running up the layer order written in the crate docs (`src/lib.rs`).
//!
//! The check reads the sources: every `crate::…`, `super::…` and `self::…` path outside comments
//! is an edge from the module that writes it to the deepest module the path names. Module
//! declarations (`mod x;`) and re-exports (`pub use …;`) are not edges: a parent that re-exports
//! its children is their facade, not their user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first, as the crate docs (`src/lib.rs`) state them: a module may import
/// only modules of its own layer or below.
const LAYERS: &[&[&str]] = &[
    &["csta", "tls", "dnplan"],
    &["protocol"],
    &["services", "audit"],
    &["metrics"],
    &["link"],
    &["errors"],
    &["config", "logging"],
    &["client"],
    &["router"],
    &["cluster"],
    &["session", "console"],
    &["server", "reload"],
];

/// Modules beside the stack: the modules each may use, and the modules that may use it.
const SIDE: &[(&str, &[&str], &[&str])] = &[("sim", &["csta", "tls", "dnplan"], &["server"])];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file of the library: module path (e.g. `link::actor`) → file.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue;
                }
                let module = join(prefix, &name);
                if path.join("mod.rs").exists() {
                    out.insert(module.clone(), path.join("mod.rs"));
                }
                walk(&path, &module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if name == "mod" || (prefix.is_empty() && name == "lib") {
                    continue;
                }
                out.insert(join(prefix, &name), path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), "", &mut out);
    out
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}::{name}")
    }
}

/// The source without comments and string literals (doc links are not dependencies).
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'r' if bytes.get(i + 1) == Some(&b'#') || bytes.get(i + 1) == Some(&b'"') => {
                // A raw string r"…" or r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while bytes.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if bytes.get(j) != Some(&b'"') || (i > 0 && is_ident(bytes[i - 1])) {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest = &text[j + 1..];
                let end = rest
                    .find(&close)
                    .map_or(text.len(), |p| j + 1 + p + close.len());
                out.push_str("\"\"");
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n') or a lifetime ('a): skip only the former.
                let lit = text[i..].char_indices().nth(2).map(|(k, _)| i + k);
                if bytes.get(i + 1) == Some(&b'\\') {
                    let end = text[i + 2..].find('\'').map_or(i + 1, |p| i + 2 + p + 1);
                    i = end;
                } else if let Some(k) = lit.filter(|k| bytes.get(*k) == Some(&b'\'')) {
                    i = k + 1;
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            _ => {
                let c = text[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Drop `mod x;` declarations and `pub use …;` / `pub(crate) use …;` re-exports.
fn without_declarations(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    loop {
        let next = ["pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .filter_map(|k| rest.find(k).map(|p| (p, k.len())))
            .min();
        let Some((at, _)) = next else {
            out.push_str(rest);
            break;
        };
        if at > 0 && is_ident(rest.as_bytes()[at - 1]) {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            continue;
        }
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').map_or(rest.len(), |p| at + p + 1);
        rest = &rest[end..];
    }
    out
}

/// Paths written after `crate::`, `super::` or `self::`, expanded over `{…}` groups, each as
/// the list of segments after the root (`super` roots keep a leading `super`).
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(p) = code[from..].find(root) {
            let at = from + p;
            from = at + root.len();
            if at > 0 && (is_ident(bytes[at - 1]) || bytes[at - 1] == b':') {
                continue;
            }
            let mut supers = vec![];
            let mut pos = at + root.len();
            let root_name = root.trim_end_matches("::").to_owned();
            if root_name == "super" {
                supers.push("super".to_owned());
                while code[pos..].starts_with("super::") {
                    supers.push("super".to_owned());
                    pos += "super::".len();
                }
            }
            for tail in expand(&code[pos..]) {
                let mut segs = supers.clone();
                segs.extend(tail);
                out.push((root_name.clone(), segs));
            }
        }
    }
    out
}

/// Expand one path tail (`a::b::{c, d::e}`) into its paths.
fn expand(text: &str) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let mut depth = 1;
                let mut end = inner.len();
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let mut out = Vec::new();
                for item in split_top(&inner[..end]) {
                    for tail in expand(item.trim()) {
                        let mut p = segs.clone();
                        p.extend(tail);
                        out.push(p);
                    }
                }
                return out;
            }
            return vec![segs];
        }
        rest = &rest[ident.len()..];
        segs.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => return vec![segs],
        }
    }
}

fn split_top(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// The module a path from `from` lands in: the deepest existing module it names.
fn target(
    from: &str,
    is_mod_rs: bool,
    root: &str,
    segs: &[String],
    mods: &BTreeMap<String, PathBuf>,
) -> Option<String> {
    let mut base: Vec<String> = match root {
        "crate" => Vec::new(),
        _ => from.split("::").map(str::to_owned).collect(),
    };
    // A file `a/b.rs` is module a::b; `super` from it is `a`. In `a/mod.rs` (module a), `self`
    // is a and `super` is a's parent.
    let mut rest = segs;
    if root == "super" {
        while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
            base.pop();
            rest = tail;
        }
    }
    let _ = is_mod_rs;
    let mut best = if base.is_empty() {
        None
    } else {
        Some(base.join("::"))
    };
    let mut cur = base;
    for s in rest {
        cur.push(s.clone());
        let name = cur.join("::");
        if mods.contains_key(&name) {
            best = Some(name);
        } else {
            break;
        }
    }
    best
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &mods {
        let text = fs::read_to_string(file).unwrap();
        let code = without_declarations(&code_only(&text));
        let is_mod_rs = file.ends_with("mod.rs");
        let set = edges.entry(module.clone()).or_default();
        for (root, segs) in paths(&code) {
            if let Some(t) = target(module, is_mod_rs, &root, &segs, &mods) {
                if &t != module {
                    set.insert(t);
                }
            }
        }
    }
    edges
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top(module)))
}

#[test]
fn no_module_imports_up_the_layer_order() {
    let edges = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if top(from) == top(to) {
                continue;
            }
            if let Some((side, allowed, _)) = SIDE.iter().find(|(m, _, _)| *m == top(from)) {
                if !allowed.contains(&top(to)) {
                    wrong.push(format!("{from} -> {to} ({side} may use only {allowed:?})"));
                }
                continue;
            }
            if let Some((side, _, users)) = SIDE.iter().find(|(m, _, _)| *m == top(to)) {
                if !users.contains(&top(from)) {
                    wrong.push(format!("{from} -> {to} ({side} is used only by {users:?})"));
                }
                continue;
            }
            match (layer(from), layer(to)) {
                (Some(a), Some(b)) if b <= a => {}
                (Some(_), Some(_)) => wrong.push(format!("{from} -> {to} runs up the layers")),
                _ => wrong.push(format!(
                    "{from} -> {to}: a module missing from the layer list in tests/architecture.rs"
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycle_among_modules() {
    let edges = graph();
    // Tarjan's strongly connected components.
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        cycles: Vec<Vec<&'a str>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[w].min(self.low[v]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.index[w].min(self.low[v]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.cycles.push(comp);
                }
            }
        }
    }
    let mut t = T {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        cycles: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    let cycles: Vec<String> = t.cycles.iter().map(|c| c.join(" <-> ")).collect();
    assert!(
        cycles.is_empty(),
        "modules that import each other (directly or through others):\n{}",
        cycles.join("\n")
    );
}

/// The longest a function of `src/` may be (test code excepted), in lines, and the longest a
/// file outside the simulator may be: past these, a function does several jobs and a file holds
/// several concepts.
const MAX_FN_LINES: usize = 100;
const MAX_FILE_LINES: usize = 900;

/// Every source file of `src/`, the binaries included.
fn all_sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &mut out);
    out.sort();
    out
}

/// The functions of a file outside `#[cfg(test)]` items, with their first line and length. A
/// function runs from its `fn` line to the line of the brace that closes its body.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    let mut skip_depth: Option<i64> = None;
    let mut depth: i64 = 0;
    let mut pending_test = false;
    let mut open: Vec<(String, usize, i64)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
        }
        let is_fn = skip_depth.is_none()
            && (trimmed.starts_with("fn ")
                || trimmed.starts_with("pub fn ")
                || trimmed.starts_with("pub(crate) fn ")
                || trimmed.starts_with("async fn ")
                || trimmed.starts_with("pub async fn ")
                || trimmed.starts_with("pub(crate) async fn ")
                || trimmed.starts_with("const fn ")
                || trimmed.starts_with("pub const fn "));
        if is_fn {
            let name = trimmed
                .split("fn ")
                .nth(1)
                .unwrap_or("")
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
                .to_owned();
            open.push((name, i, depth));
        }
        for c in line.chars() {
            match c {
                '{' => {
                    if pending_test && skip_depth.is_none() {
                        skip_depth = Some(depth);
                        pending_test = false;
                    }
                    depth += 1;
                }
                '}' => {
                    depth -= 1;
                    if skip_depth == Some(depth) {
                        skip_depth = None;
                    }
                    if let Some((_, _, d)) = open.last() {
                        if *d == depth {
                            let (name, start, _) = open.pop().unwrap();
                            out.push((name, start + 1, i - start + 1));
                        }
                    }
                }
                ';' if pending_test && skip_depth.is_none() && depth >= 0 => {
                    // `#[cfg(test)] mod tests;` or a test-only item without a body.
                    pending_test = false;
                }
                _ => {}
            }
        }
        // A function declared without a body (a trait method) closes at its `;`.
        if let Some((_, start, d)) = open.last() {
            if *start == i && *d == depth && trimmed.ends_with(';') {
                open.pop();
            }
        }
    }
    out
}

#[test]
fn no_function_in_src_is_longer_than_100_lines_and_no_file_over_900() {
    let mut long = Vec::new();
    for file in all_sources() {
        let text = fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES && !rel.starts_with("sim/") {
            long.push(format!("{rel}: {lines} lines (at most {MAX_FILE_LINES})"));
        }
        for (name, start, len) in functions(&text) {
            if len > MAX_FN_LINES {
                long.push(format!(
                    "{rel}:{start}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(long.is_empty(), "too long:\n{}", long.join("\n"));
}
