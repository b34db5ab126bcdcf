//! Application tokens never appear in a configuration error.

/// Remove application tokens from a parser message. The TOML parser quotes the offending line
/// (and may quote a value): a syntax error on a `token` line, or a misspelt key in an
/// `[[application]]` table, would print the secret. Every quoted source line that holds a
/// token (any line naming `token`, and any line of an `[[application]]` table other than its
/// `name` and `access`) is replaced, and the values of those lines are cut from the rest of
/// the message.
pub(super) fn redact_secrets(message: &str, text: &str) -> String {
    let mut secret_lines = std::collections::BTreeSet::new();
    let mut secret_values: Vec<String> = Vec::new();
    let mut in_application = false;
    let mut open_multiline: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if let Some(delimiter) = open_multiline {
            secret_lines.insert(number);
            secret_values.push(line.trim().to_owned());
            if line.contains(delimiter) {
                open_multiline = None;
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_application = trimmed
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .eq_ignore_ascii_case("application");
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let key = trimmed
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        let secret = trimmed.to_ascii_lowercase().contains("token")
            || (in_application && key != "name" && key != "access");
        if !secret {
            continue;
        }
        secret_lines.insert(number);
        if let Some((_, value)) = trimmed.split_once('=') {
            let value = value.trim();
            for delimiter in ["\"\"\"", "\'\'\'"] {
                if value.starts_with(delimiter) && value.matches(delimiter).count() == 1 {
                    open_multiline = Some(delimiter);
                }
            }
            secret_values.push(value.to_owned());
            // The bare value too (the parser may quote it without its quotes), and every
            // quoted string on the line (inline tables).
            secret_values.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
            secret_values.extend(
                value
                    .split(['"', '\''])
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned),
            );
        }
    }
    let mut lines: Vec<String> = message
        .lines()
        .map(|l| {
            // The parser's quoted lines look like "12 | token = ...".
            let quoted = l
                .split_once('|')
                .and_then(|(n, _)| n.trim().parse::<usize>().ok());
            match quoted {
                Some(n) if secret_lines.contains(&n) => {
                    format!(
                        "{} | (a line with a token, not shown)",
                        l.split('|').next().unwrap_or("").trim_end()
                    )
                }
                _ => l.to_owned(),
            }
        })
        .collect();
    // Longest first, so that a value is never cut in two by a shorter one inside it.
    secret_values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for line in &mut lines {
        for value in secret_values.iter().filter(|v| v.len() >= 4) {
            if line.contains(value.as_str()) {
                *line = line.replace(value.as_str(), "<redacted>");
            }
        }
    }
    lines.join("\n")
}
