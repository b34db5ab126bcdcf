#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The documentation a newcomer follows, checked against the real binaries: the README's sample
//! session, control API examples, `pbx-sim` and `csta-bench --router` examples and stdout
//! lines; the configuration keys it names; the systemd unit, the container recipe and the
//! licence file.

mod common;
use common::{default_ports, http, process};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use process::{RouterProcess, SimProcess, ROUTER};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fenced code blocks of a markdown text: (info string, body).
fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The one code block whose body contains `needle`.
fn block_with(blocks: &[(String, String)], needle: &str) -> String {
    let found: Vec<&String> = blocks
        .iter()
        .filter(|(_, b)| b.contains(needle))
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one README code block containing {needle:?}"
    );
    found[0].clone()
}

/// A JSON value without its `time` field (which differs from run to run).
fn timeless(text: &str) -> Value {
    let mut v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    if let Some(o) = v.as_object_mut() {
        o.remove("time");
        // A new session gets a new random id each time.
        if o.get("sessionId")
            .and_then(Value::as_str)
            .is_some_and(|id| id.len() == 32)
        {
            o.insert("sessionId".into(), Value::from("<32 hex digits>"));
        }
    }
    v
}

/// Split a shell command line into words (single and double quotes, backslash-newline
/// continuations already joined).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '#') if !in_word => break,
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// One HTTP request, its header fields written as in curl's `-H` (`Name: value`): status and
/// body.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: &str,
) -> (u16, String) {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|h| h.split_once(": ").unwrap())
        .collect();
    let within = Duration::from_secs(30);
    let r = http::request(addr, method, path, &headers, body.as_bytes(), within)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (r.status, r.text())
}

/// The README's "Trying it" session, control API examples, `pbx-sim` example and `csta-bench
/// --router` examples, run against the router binary on its embedded default configuration.
#[test]
fn the_readme_examples_work_against_the_real_binaries() {
    let readme = read("README.md");
    let blocks = code_blocks(&readme);
    let _ports = default_ports::lock();
    // No configuration file, and no config/ in its working directory: the embedded default.
    let router = RouterProcess::start_with(None, &[], &[]);
    let router_log = || router.log();
    // Where it listens, from the line it printed (compared with the README's just below).
    let (clients, metrics) = (router.clients, router.metrics);
    let sw1_control = router.controls[0].addr;

    // The stdout line, as documented.
    let documented = block_with(&blocks, "\"clients\":\"127.0.0.1:7700\"");
    assert_eq!(
        timeless(&router.line),
        timeless(documented.trim()),
        "the router's stdout line differs from the README's"
    );
    assert!(
        router_log().contains("configuration: embedded default"),
        "{}",
        router_log()
    );

    let rt = process::runtime();
    rt.block_on(async {
        // Both switches connected, as on a router that has been running a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = exchange(metrics, "GET", "/readyz", &[], "").await;
            if body.matches("link connected").count() == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "switches not connected: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // (a) The sample session: every ">>" sent, every "<<" compared with what the router
        // sends (`time` aside), in order.
        let session = block_with(&blocks, ">> {\"message\": \"RequestOpen\"");
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{clients}/v1"))
            .await
            .unwrap();
        let mut exchanged = 0;
        for l in session.lines() {
            if let Some(request) = l.strip_prefix(">> ") {
                ws.send(WsMessage::text(request)).await.unwrap();
            } else if let Some(expected) = l.strip_prefix("<< ") {
                let got = loop {
                    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                        .await
                        .unwrap_or_else(|_| panic!("no message within 10 s; expected {expected}"))
                        .unwrap()
                        .unwrap();
                    if let WsMessage::Text(t) = msg {
                        break t.to_string();
                    }
                };
                assert_eq!(
                    timeless(&got),
                    timeless(expected),
                    "the README's sample session differs from the router's reply:\n README: {expected}\n router: {got}"
                );
                exchanged += 1;
            } else {
                assert!(l.trim().is_empty(), "a sample line that is neither >> nor <<: {l}");
            }
        }
        assert!(exchanged >= 10, "the sample session is too short to mean anything");
        // The session ended with RequestClose: the router closes the connection.
        let _ = ws.close(None).await;

        // The csta-bench --router examples, against this router.
        let bench = block_with(&blocks, "csta-bench login-storm --router");
        let joined = bench.replace("\\\n", " ");
        let mut ran = 0;
        for l in joined.lines().filter(|l| l.contains("csta-bench") && l.contains("--router")) {
            let args = shell_words(l)[1..].join(" ");
            let (v, _) = tokio::task::spawn_blocking(move || process::bench_summary(&args))
                .await
                .unwrap();
            assert_eq!((&v["errors"], &v["losses"]), (&0.into(), &0.into()), "{l}: {v}");
            ran += 1;
        }
        assert_eq!(ran, 3, "the three --router examples");

        // (b) The control API examples, in order, on the embedded simulator of sw1.
        let examples = block_with(&blocks, "SIM=http://127.0.0.1:10481");
        let mut sent = 0;
        for l in examples.lines().filter(|l| l.starts_with("curl ")) {
            let words = shell_words(l);
            let mut method = "GET";
            let mut headers = Vec::new();
            let mut body = String::new();
            let mut path = None;
            let mut w = words[1..].iter();
            while let Some(word) = w.next() {
                match word.as_str() {
                    "-s" => {}
                    "-XPOST" => method = "POST",
                    "-H" => headers.push(w.next().unwrap().clone()),
                    "-d" => body = w.next().unwrap().clone(),
                    other => {
                        path = Some(
                            other
                                .strip_prefix("$SIM")
                                .unwrap_or_else(|| panic!("{l}: {other:?} is not on $SIM"))
                                .to_owned(),
                        )
                    }
                }
            }
            if method == "POST" {
                assert!(
                    headers.iter().any(|h| h == "Content-Type: application/json"),
                    "a POST example without the Content-Type header: {l}"
                );
            }
            let (status, reply) =
                exchange(sw1_control, method, &path.unwrap(), &headers, &body).await;
            assert_eq!(status, 200, "README example {l} answered {reply}");
            sent += 1;
        }
        assert!(sent >= 20, "only {sent} control API examples");
        let (_, state) = exchange(sw1_control, "GET", "/state", &[], "").await;
        let state: Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["faults"]["stall"], false, "the examples end with faults cleared");
        // The examples dropped and refused sw1's link: the stop below is clean once the router
        // is connected to it again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, state) = exchange(sw1_control, "GET", "/state", &[], "").await;
            let state: Value = serde_json::from_str(&state).unwrap();
            if state["links"][0]["connections"] == 1 && state["links"][0]["up"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "sw1's link not back: {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        router.wait_connected(&["sw1", "sw2"]).await;
    });

    // The pbx-sim example, on ports that do not clash with the running router.
    let example = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release --bin pbx-sim -- "))
        .expect("a `cargo run --release --bin pbx-sim -- ...` example");
    let words = shell_words(example);
    let args = &words[words.iter().position(|w| w == "--").unwrap() + 1..];
    let sim = SimProcess::start(args, Stdio::null());
    let documented = block_with(&blocks, "{\"links\":[\"127.0.0.1:10501\"]");
    assert_eq!(
        sim.line,
        documented.trim(),
        "pbx-sim's stdout line differs from the README's"
    );
    let status = sim.stop();
    assert!(status.is_some_and(|s| s.success()), "pbx-sim: {status:?}");

    // A clean stop (no panic, exit 0), with no warning from the stop on.
    let log = router.stop();
    let (_, stop) = log.split_once("shutting down").unwrap();
    assert!(!stop.contains("WARN"), "warnings during the stop:\n{stop}");
}

/// The text of one `[section]` of the shipped configuration: from its header to the next.
fn section<'a>(config: &'a str, name: &str) -> &'a str {
    let header = format!("\n[{name}]\n");
    let start = config
        .find(&header)
        .unwrap_or_else(|| panic!("no [{name}] in config/csta-router.toml"));
    let rest = &config[start + header.len()..];
    let end = rest.find("\n[").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn every_configuration_key_in_the_readme_is_in_the_shipped_configuration() {
    let readme = read("README.md");
    let config = read("config/csta-router.toml");
    let mut checked = 0;
    for row in readme.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (keys, place) = (cells[1], cells[2]);
        let Some(place) = place.strip_prefix("`[").and_then(|p| p.strip_suffix("]`")) else {
            continue;
        };
        for key in keys.split(", ") {
            let key = key.trim_matches('`');
            assert!(
                key.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "a key cell that is not a key: {row}"
            );
            let word = regex_free_word(&config, key);
            assert!(
                word,
                "README names `{key}` ({place}) but config/csta-router.toml does not"
            );
            if place == "server" || place == "options" {
                let text = section(&config, place);
                assert!(
                    text.lines().any(|l| {
                        let l = l.trim_start_matches(['#', ' ']);
                        l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
                    }),
                    "README names `{key}` in [{place}] but the section does not set it"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} keys found in the README's tables"
    );
}

/// Whether `key` appears in `text` as a whole word (not inside a longer key).
fn regex_free_word(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + key.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        !part(before) && !part(after)
    })
}

#[test]
fn the_systemd_unit_verifies_with_the_built_binary() {
    let unit = read("config/systemd/csta-router.service");
    assert!(
        unit.contains("LimitNOFILE="),
        "the unit sets the descriptor limit"
    );
    assert!(unit.contains("ExecStart=/usr/local/bin/csta-router --config "));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csta-router.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/csta-router", ROUTER)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install Debian's systemd package")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns:\n{stderr}"
    );
}

#[test]
fn the_container_recipe_refers_to_what_the_repository_builds() {
    let recipe = read("config/container/Containerfile");
    let cargo = read("Cargo.toml");
    let lines: Vec<&str> = recipe
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let build = lines
        .iter()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("a RUN cargo build line");
    let mut destinations = Vec::new();
    let mut config_in_image = None;
    for l in lines.iter().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = l.split_whitespace().skip(1).collect();
        let (from, words) = match words[0].strip_prefix("--from=") {
            Some(stage) => (Some(stage), &words[1..]),
            None => (None, &words[..]),
        };
        let (sources, dest) = words.split_at(words.len() - 1);
        destinations.push(dest[0]);
        match from {
            Some(stage) => {
                assert!(
                    recipe.contains(&format!(" AS {stage}")),
                    "no stage {stage}: {l}"
                );
                for s in sources {
                    let bin = s.strip_prefix("/src/target/release/").expect(l);
                    assert!(
                        cargo.contains(&format!("name = \"{bin}\"")),
                        "{bin} is not a binary of Cargo.toml"
                    );
                    assert!(
                        build.contains(&format!("--bin {bin}")),
                        "{bin} is not built"
                    );
                }
            }
            None => {
                for s in sources {
                    assert!(repo(s).exists(), "COPY {s}: no such file in the repository");
                    if *s == "config/container/csta-router.toml" {
                        config_in_image = Some(dest[0]);
                    }
                }
            }
        }
    }
    let entrypoint = lines
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).unwrap();
    assert!(
        destinations.contains(&entrypoint[0].as_str()),
        "ENTRYPOINT runs nothing copied"
    );
    let cmd: Vec<String> =
        serde_json::from_str(lines.iter().find_map(|l| l.strip_prefix("CMD ")).unwrap()).unwrap();
    assert_eq!(
        cmd,
        [
            "--config",
            config_in_image.expect("the container's configuration")
        ]
    );

    // The image's configuration is valid and listens, on every interface, on the ports the
    // image exposes.
    let out = Command::new(ROUTER)
        .arg("--check-config")
        .arg(repo("config/container/csta-router.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exposed: Vec<&str> = lines
        .iter()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .split_whitespace()
        .collect();
    let config = read("config/container/csta-router.toml");
    for key in ["client-listen", "metrics-listen"] {
        let addr = config
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap()
            .trim_matches('"');
        let (ip, port) = addr.rsplit_once(':').unwrap();
        assert_eq!(
            ip, "0.0.0.0",
            "{key} must listen on every interface of the container"
        );
        assert!(
            exposed.contains(&port),
            "port {port} of {key} is not exposed"
        );
    }
}

#[test]
fn the_licence_is_the_one_cargo_toml_names() {
    assert!(read("Cargo.toml").contains("license = \"Apache-2.0\""));
    let licence = read("LICENSE");
    assert!(licence.trim_start().starts_with("Apache License"));
    assert!(licence.contains("Version 2.0, January 2004"));
    assert!(licence.contains("END OF TERMS AND CONDITIONS"));
}
