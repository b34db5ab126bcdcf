//! Validation of client protocol messages against the AsyncAPI document with Python's
//! `jsonschema` (`validate.py` beside this file), and what counts as a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::process;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;

/// What a recorded message is, and so what the validator must say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sent by the router: valid against exactly one schema of its name.
    Received,
    /// A request the test sent as a well-behaved client: valid likewise.
    Sent,
    /// A request malformed on purpose: rejected by every schema of its name.
    Malformed,
    /// A real message broken on purpose: rejected by every schema of its name.
    Broken,
    /// A protocol message of the README: valid against exactly one schema.
    Example,
}

/// What the validator said of one case: for each schema of its name, its errors (none: valid).
#[derive(Debug)]
pub struct Verdict {
    pub kind: Kind,
    pub message: Value,
    pub candidates: Vec<(String, Vec<String>)>,
}

/// Validate `cases` against `document` with `tests/asyncapi/validate.py`. Fails naming the
/// package when `python3` or `jsonschema` is missing, and when a schema of the document is not
/// a valid JSON Schema.
pub fn validate(document: &str, cases: &[(Kind, Value)]) -> Vec<Verdict> {
    match Command::new("python3")
        .args(["-c", "import jsonschema, referencing"])
        .output()
    {
        Err(e) => panic!("python3 is needed to validate messages (Debian package python3): {e}"),
        Ok(out) if !out.status.success() => panic!(
            "the Python package jsonschema (4.18 or newer) is needed: pip install 'jsonschema>=4.18'\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
    let list: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, v))| json!({"id": i, "message": v}))
        .collect();
    let dir = process::files(&[
        ("asyncapi.json", document),
        ("cases.json", &Value::from(list).to_string()),
    ]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/asyncapi/validate.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.path().join("asyncapi.json"))
        .arg(dir.path().join("cases.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["schemaErrors"],
        json!([]),
        "schemas that are not JSON Schema"
    );
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let (kind, message) = cases[c["id"].as_u64().unwrap() as usize].clone();
            let candidates = c["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let errors = k["errors"].as_array().unwrap();
                    let errors = errors.iter().map(|e| e.as_str().unwrap().to_owned());
                    (
                        k["component"].as_str().unwrap().to_owned(),
                        errors.collect(),
                    )
                })
                .collect();
            Verdict {
                kind,
                message,
                candidates,
            }
        })
        .collect()
}

/// Every failure among the verdicts (the verdict's index, and a line with the message and the
/// reasons), and the schemas that valid messages exercised.
pub fn judge(verdicts: &[Verdict]) -> (Vec<(usize, String)>, BTreeSet<String>) {
    let mut failures = Vec::new();
    let mut exercised = BTreeSet::new();
    for (i, v) in verdicts.iter().enumerate() {
        let mut fail = |text: String| failures.push((i, text));
        let valid: Vec<&str> = v
            .candidates
            .iter()
            .filter(|(_, errors)| errors.is_empty())
            .map(|(k, _)| k.as_str())
            .collect();
        let reasons = || {
            v.candidates
                .iter()
                .map(|(k, errors)| format!("\n    against {k}: {}", errors.join("; ")))
                .collect::<String>()
        };
        match v.kind {
            Kind::Received | Kind::Sent | Kind::Example => {
                if v.candidates.is_empty() {
                    fail(format!(
                        "{:?} with no schema of its name: {}",
                        v.kind, v.message
                    ));
                } else if valid.is_empty() {
                    fail(format!("{:?} rejected: {}{}", v.kind, v.message, reasons()));
                } else if valid.len() > 1 {
                    fail(format!(
                        "{:?} matches several schemas {valid:?}: {}",
                        v.kind, v.message
                    ));
                } else if v.kind != Kind::Example {
                    exercised.insert(valid[0].to_owned());
                }
            }
            Kind::Malformed | Kind::Broken => {
                if !valid.is_empty() {
                    fail(format!(
                        "{:?} message accepted by {valid:?}: {}",
                        v.kind, v.message
                    ));
                } else if v.kind == Kind::Broken && v.candidates.is_empty() {
                    fail(format!(
                        "broken message with no schema of its name: {}",
                        v.message
                    ));
                }
            }
        }
    }
    (failures, exercised)
}
