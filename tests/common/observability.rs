//! The repository's observability assets as the tests read them (the Grafana dashboard, the
//! Prometheus configuration and rules) and the tools of Debian's `prometheus` package that
//! check them. A missing tool fails the test that needs it (never skips it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A path of the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A file's text; a missing file fails the test.
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The `.yml`/`.yaml` files of a directory, sorted (at least one).
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

/// The Grafana dashboard.
pub fn dashboard() -> Value {
    let path = repo("grafana/dashboards/csta-router.json");
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel of a dashboard, rows' nested panels included.
pub fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL of every panel target and annotation, with a description of where it is.
pub fn all_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let ref_id = target["refId"].as_str().unwrap_or("?");
            out.push((format!("panel {title:?} target {ref_id}"), expr.to_owned()));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = annotation["name"].as_str().unwrap_or("?");
            out.push((format!("annotation {name:?}"), expr.to_owned()));
        }
    }
    out
}

/// `expr` with Grafana's variables (`$name` and `${name}`) replaced by these values, as
/// Grafana would; longer names first, so `$__interval_ms` is not taken for `$__interval`.
pub fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut values = values.to_vec();
    values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_owned();
    for (name, value) in values {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// The path of a tool of Debian's `prometheus` package: `$ENV_VAR` if set, else found on
/// PATH.
pub fn tool(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env_var}={} is not a file", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is needed for this test and is not on PATH: install Debian's \
                 `prometheus` package (`apt-get install prometheus`; `bash .ci/run` does it when \
                 it is missing), or set {env_var}=/path/to/{name}"
            )
        })
}

/// Run promtool (`$PROMTOOL` or on PATH) with `args` and `stdin`: whether it succeeded and
/// what it printed.
pub fn promtool<S: AsRef<OsStr>>(args: &[S], stdin: &str) -> (bool, String) {
    let mut child = Command::new(tool("promtool", "PROMTOOL"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// [`promtool`], failing the test with promtool's output unless it succeeds; what it printed.
pub fn promtool_ok<S: AsRef<OsStr>>(args: &[S], stdin: &str) -> String {
    let (ok, text) = promtool(args, stdin);
    let command: Vec<_> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(ok, "`promtool {}` failed:\n{text}", command.join(" "));
    text
}
