//! Router configurations for tests, as TOML text written the way an operator writes it: both
//! listeners on free loopback ports, the options a test needs, and switch tables.
#![allow(dead_code)]

/// `[server]` with both listeners on free loopback ports and `server`'s lines, then
/// `[options]` with `options`' lines.
pub fn head(server: &str, options: &str) -> String {
    format!(
        "[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\n{server}\n\n[options]\n{options}\n\n"
    )
}

/// A `[[switch]]` table: `name`, its DN ranges, `lines` (its other keys), and one
/// `[[switch.link]]` per address, priorities 1, 2, ... in that order.
pub fn switch(name: &str, dns: &[&str], lines: &str, links: &[&str]) -> String {
    let dns: Vec<String> = dns.iter().map(|d| format!("\"{d}\"")).collect();
    let mut text = format!(
        "[[switch]]\nname = \"{name}\"\ndns = [{}]\n{lines}\n",
        dns.join(", ")
    );
    for (i, address) in links.iter().enumerate() {
        text.push_str(&format!(
            "[[switch.link]]\naddress = \"{address}\"\npriority = {}\n",
            i + 1
        ));
    }
    text.push('\n');
    text
}

/// An embedded simulated switch with its control API and `links` links, all on free ports.
pub fn simulated(name: &str, dns: &[&str], lines: &str, links: usize) -> String {
    let lines = format!("simulated = true\nsimulator-control = \"127.0.0.1:0\"\n{lines}");
    switch(name, dns, &lines, &vec!["127.0.0.1:0"; links])
}

/// The pair of switches most tests use, both simulated: sw1 owning 4000-5999 and sw2 owning
/// 6000-7999, with `lines` in both tables and `links[i]` links each.
pub fn two_simulated(lines: &str, links: [usize; 2]) -> String {
    simulated("sw1", &["4000-4999", "5000-5999"], lines, links[0])
        + &simulated("sw2", &["6000-6999", "7000-7999"], lines, links[1])
}

/// Two applications with tokens (after `[options]`): `desk` (token `desk-secret-0001`,
/// control) and `wallboard` (token `wall-secret-0002`, monitor access only).
pub const TWO_APPLICATIONS: &str = r#"
[[application]]
name = "desk"
token = "desk-secret-0001"
access = "control"

[[application]]
name = "wallboard"
token = "wall-secret-0002"
access = "monitor"
"#;
