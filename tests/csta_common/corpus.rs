//! Every CSTA document the tests write out by hand, collected in one place for the
//! differential tests.
//!
//! The documents stay where they are read (golden tests, vendor fixtures and frames, unit
//! tests, benchmarks): this module takes every string literal from those source files, as the
//! compiler would read it (escapes, `\` line continuations, raw strings, byte strings, the
//! pieces of a `concat!` joined), so a fixture added to any of them joins the corpus without
//! being listed twice. A frame (`00 00 LL LL` header) is taken both whole and as its body.
#![allow(dead_code)]

/// The source files whose literals make the corpus, by name.
pub const SOURCES: [(&str, &str); 8] = [
    ("tests/csta_golden.rs", include_str!("../csta_golden.rs")),
    (
        "tests/csta_vendor_fixtures.rs",
        include_str!("../csta_vendor_fixtures.rs"),
    ),
    (
        "tests/csta_vendor_frames.rs",
        include_str!("../csta_vendor_frames.rs"),
    ),
    ("tests/csta_props.rs", include_str!("../csta_props.rs")),
    (
        "tests/benches/hot_paths.rs",
        include_str!("../benches/hot_paths.rs"),
    ),
    (
        "src/csta/appsession.rs",
        include_str!("../../src/csta/appsession.rs"),
    ),
    ("src/csta/xml.rs", include_str!("../../src/csta/xml.rs")),
    (
        "src/csta/reader.rs",
        include_str!("../../src/csta/reader.rs"),
    ),
];

/// One document: where it was found (file and line) and its bytes.
#[derive(Debug, Clone)]
pub struct Doc {
    /// `file:line` of the literal.
    pub origin: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Every literal of every source that looks like XML (contains `<`), bodies of frames too.
pub fn documents() -> Vec<Doc> {
    let mut out = Vec::new();
    for (file, source) in SOURCES {
        for (line, bytes) in literals(source) {
            if !bytes.contains(&b'<') {
                continue;
            }
            let origin = format!("{file}:{line}");
            if bytes.len() > 8 && bytes[0] == 0 && bytes[1] == 0 {
                out.push(Doc {
                    origin: format!("{origin} (frame body)"),
                    bytes: bytes[8..].to_vec(),
                });
            }
            out.push(Doc { origin, bytes });
        }
    }
    out
}

/// The string and byte-string literals of a Rust source, with their line; the literals of
/// one `concat!(…)` joined into one.
pub fn literals(source: &str) -> Vec<(usize, Vec<u8>)> {
    let s = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    // Inside `concat!(`: the paren depth at which it closes, its line and what it holds.
    let mut concat: Option<(usize, usize, Vec<u8>)> = None;
    let mut depth = 0usize;
    while i < s.len() {
        let c = s[i];
        if c == b'\n' {
            line += 1;
            i += 1;
            continue;
        }
        // Comments: skipped (doc comments hold documents too, but not ones the tests read).
        if s[i..].starts_with(b"//") {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if s[i..].starts_with(b"concat!(") {
            depth += 1;
            concat = Some((depth, line, Vec::new()));
            i += b"concat!(".len();
            continue;
        }
        if c == b'(' {
            depth += 1;
        }
        if c == b')' {
            if let Some((d, l, bytes)) = concat.take() {
                if d == depth {
                    out.push((l, bytes));
                } else {
                    concat = Some((d, l, bytes));
                }
            }
            depth = depth.saturating_sub(1);
        }
        // A character literal such as '"' is not the start of a string.
        if c == b'\'' && i + 2 < s.len() {
            if s[i + 1] == b'\\' {
                if let Some(end) = s[i + 3..].iter().position(|&b| b == b'\'') {
                    i += end + 4;
                    continue;
                }
            } else if s[i + 2] == b'\'' {
                i += 3;
                continue;
            }
        }
        let start_line = line;
        let lit = if let Some((raw_len, hashes)) = raw_start(&s[i..]) {
            let body_start = i + raw_len;
            let mut close = Vec::with_capacity(hashes + 1);
            close.push(b'"');
            close.extend(std::iter::repeat_n(b'#', hashes));
            let Some(end) = find(&s[body_start..], &close) else {
                break;
            };
            let body = s[body_start..body_start + end].to_vec();
            line += body.iter().filter(|&&b| b == b'\n').count();
            i = body_start + end + close.len();
            Some(body)
        } else if c == b'"' || (c == b'b' && s.get(i + 1) == Some(&b'"') && !ident(s, i)) {
            let body_start = i + if c == b'b' { 2 } else { 1 };
            let (body, end, lines) = cooked(&s[body_start..]);
            line += lines;
            i = body_start + end + 1;
            Some(body)
        } else {
            i += 1;
            None
        };
        if let Some(body) = lit {
            match concat.as_mut() {
                Some((_, _, joined)) => joined.extend_from_slice(&body),
                None => out.push((start_line, body)),
            }
        }
    }
    out
}

/// Whether the byte before `i` continues an identifier (so `b` is not a prefix).
fn ident(s: &[u8], i: usize) -> bool {
    i > 0 && (s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_')
}

/// `r"`, `r#"`, `br##"`…: the length of the opening and the number of `#`.
fn raw_start(s: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    if s.first() == Some(&b'b') {
        at += 1;
    }
    if s.get(at) != Some(&b'r') {
        return None;
    }
    at += 1;
    let hashes = s[at..].iter().take_while(|&&b| b == b'#').count();
    at += hashes;
    (s.get(at) == Some(&b'"')).then_some((at + 1, hashes))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A cooked string's body up to its closing quote: the bytes, where the quote is, how many
/// newlines it spans.
fn cooked(s: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut out = Vec::new();
    let mut i = 0;
    let mut lines = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return (out, i, lines),
            b'\\' if i + 1 < s.len() => {
                let e = s[i + 1];
                i += 2;
                match e {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'0' => out.push(0),
                    b'\\' => out.push(b'\\'),
                    b'"' => out.push(b'"'),
                    b'\'' => out.push(b'\''),
                    b'x' => {
                        let hex = std::str::from_utf8(&s[i..i + 2]).unwrap_or("00");
                        out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 2;
                    }
                    b'u' => {
                        let end = s[i..].iter().position(|&b| b == b'}').unwrap_or(0);
                        let hex = std::str::from_utf8(&s[i + 1..i + end]).unwrap_or("0");
                        let ch = u32::from_str_radix(hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('\u{fffd}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += end + 1;
                    }
                    b'\n' => {
                        lines += 1;
                        while i < s.len() && s[i].is_ascii_whitespace() {
                            if s[i] == b'\n' {
                                lines += 1;
                            }
                            i += 1;
                        }
                    }
                    other => out.push(other),
                }
            }
            b => {
                if b == b'\n' {
                    lines += 1;
                }
                out.push(b);
                i += 1;
            }
        }
    }
    (out, i, lines)
}

/// Variants of a document that exercise what the tolerant reader promises and refuses: the
/// document pretty-printed, prefixed, with its digits as character references, with its texts
/// in CDATA, and cut short (each a different error, or none).
pub fn variants(doc: &[u8], cuts: usize) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(doc);
    let mut out = vec![
        text.replace("><", ">\n  <").into_bytes(),
        text.replace("<", "<p:")
            .replace("<p:/", "</p:")
            .replace("<p:?", "<?")
            .replace("<p:!", "<!")
            .into_bytes(),
        text.replace('5', "&#53;")
            .replace('0', "&#x30;")
            .into_bytes(),
        text.replace(">4", "><![CDATA[4]]>").into_bytes(),
        text.replace("&amp;", "&unknown;").into_bytes(),
        text.replace("\"", "'").into_bytes(),
    ];
    let step = (doc.len() / cuts.max(1)).max(1);
    let mut at = 0;
    while at < doc.len() {
        out.push(doc[..at].to_vec());
        at += step;
    }
    out
}
