//! The router against the simulator in each vendor preset (`pbx-sim --vendor`), configured with
//! exactly the sample `[[switch]]` blocks of the README's "Connecting your PBX" section (their
//! link addresses replaced by the simulator's): link up, a hot-desk round trip whose Escape
//! carries the switch's device form, an account code from the phone reaching the DN's client,
//! ECMA-354 sessions (no CSTA request outside the session, timer resets before the grant
//! elapses, a stop at SIGTERM, a refusal counted, resets too late dropping the link, a switch
//! that wants a session), system registration, and no decode error anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::config;
use common::process::{self, RouterProcess, SimProcess};
use common::router::Client;
use common::sim_control::SimControl;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One sample of the README: the preset that imitates it and its `[[switch]]` block.
struct Sample {
    vendor: String,
    block: String,
}

impl Sample {
    /// The switch's name in the block.
    fn name(&self) -> String {
        let line = self
            .block
            .lines()
            .find(|l| l.starts_with("name = "))
            .expect("a name");
        line.trim_start_matches("name = ")
            .trim_matches('"')
            .to_owned()
    }

    fn has(&self, line: &str) -> bool {
        self.block.lines().any(|l| l == line)
    }

    /// Whether the block opens application sessions.
    fn sessions(&self) -> bool {
        self.has("application-session = true")
    }
}

/// The fenced `toml` blocks under "## Connecting your PBX", each with the preset it names.
fn samples() -> Vec<Sample> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## Connecting your PBX\n")
        .expect("the README has a \"Connecting your PBX\" section");
    let rest = &readme[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
    let mut samples = Vec::new();
    for piece in section.split("```toml\n").skip(1) {
        let block = piece.split("```").next().unwrap().to_owned();
        let vendor = block
            .split("pbx-sim --vendor ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("each sample names the preset that imitates it")
            .to_owned();
        samples.push(Sample { vendor, block });
    }
    let vendors: Vec<&str> = samples.iter().map(|s| s.vendor.as_str()).collect();
    assert_eq!(vendors, ["osv", "avaya", "zultys", "generic"]);
    samples
}

fn sample(vendor: &str) -> Sample {
    samples().into_iter().find(|s| s.vendor == vendor).unwrap()
}

/// A `pbx-sim` in the sample's preset, on free ports, its DNs those of the samples.
fn simulator(s: &Sample) -> SimProcess {
    SimProcess::start(
        &[
            "--vendor",
            &s.vendor,
            "--dns",
            "4000-4999",
            "--dns",
            "5000-5999",
            "--link",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ],
        Stdio::null(),
    )
}

/// The router on the sample block, its link pointed at `sim`, with test timers and every
/// CSTA frame traced; `edit` changes the block first.
fn router(s: &Sample, sim: &SimProcess, edit: impl Fn(&str) -> String) -> RouterProcess {
    let block: String = edit(&s.block)
        .lines()
        .map(|l| {
            if l.starts_with("address = ") {
                format!("address = \"{}\"", sim.link())
            } else if l == "[[switch.link]]" {
                "wire-trace = true\n\n[[switch.link]]".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let options = "request-timeout = \"1s\"\nkpl-interval = \"1s\"\nreconnect-min = \"50ms\"\nreconnect-max = \"300ms\"";
    let text = config::head("", options) + &block + "\n";
    RouterProcess::start(&format!("vendor-{}", s.vendor), &text)
}

async fn sessions(control: &SimControl) -> Value {
    control.state().await["sessions"].clone()
}

/// Wait (10 s at most) until `check` holds of the simulator's state.
async fn until_state(control: &SimControl, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = control.state().await;
        if check(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "{what}: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (10 s at most) until /readyz says the switch's link is `state`.
async fn until_link(r: &RouterProcess, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = format!("switch {name} link {state}");
    loop {
        let (_, body) = r.http_get("/readyz").await;
        if body.contains(&line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} in /readyz: {body}\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read client messages until one satisfies `check` (within 5 s each).
async fn until_message(c: &mut Client, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..50 {
        let m = c
            .next(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no {what}"));
        if check(&m) {
            return m;
        }
    }
    panic!("no {what} among 50 messages")
}

/// The hot-desk guest device as the router must write it in the Escape for this preset.
fn escaped_guest(vendor: &str) -> &'static str {
    match vendor {
        "osv" => "<guestDevice>N&lt;+15615555001&gt;</guestDevice>",
        _ => "<guestDevice>5001</guestDevice>",
    }
}

#[test]
fn every_preset_works_with_its_readme_sample() {
    let rt = process::runtime();
    for s in samples() {
        let sim = simulator(&s);
        let control = sim.control();
        let name = s.name();
        rt.block_on(async {
            // Grants of 2 s, so that resets are seen within the test.
            control.post_ok("/session", json!({"grantMaxS": 2})).await;
            let r = router(&s, &sim, str::to_owned);
            until_link(&r, &name, "connected").await;
            let state = control.state().await;
            assert_eq!(state["vendor"], s.vendor.as_str());

            // Hot-desk round trip: the Escape in the switch's form, read back by the switch.
            let mut c = Client::open(&r.url(), None, 1).await;
            c.register("5001").await;
            let reply = c
                .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "4001"}}))
                .await;
            assert_eq!(reply["message"], "EventPrivateInfo", "{} {reply}", s.vendor);
            let log = r.log();
            let escape = log
                .lines()
                .find(|l| l.contains("out ") && l.contains("<Escape"))
                .unwrap_or_else(|| panic!("no Escape traced:\n{log}"));
            // A switch without a namespace (`csta-namespace = ""`) gets none.
            assert_eq!(
                escape.contains("<Escape xmlns="),
                s.vendor != "zultys",
                "{}: {escape}",
                s.vendor
            );
            assert!(escape.contains(escaped_guest(&s.vendor)), "{}: {escape}", s.vendor);
            until_state(&control, "the association", |st| {
                st["associations"] == json!([{"guest": "5001", "host": "4001"}])
            })
            .await;

            // An account code entered on the phone reaches the DN's client.
            let call = control
                .post_ok("/calls", json!({"from": "5001", "to": "4001"}))
                .await;
            let call_id = call["callId"].as_str().unwrap();
            control
                .post_ok(
                    &format!("/calls/{call_id}/account-code"),
                    json!({"device": "5001", "code": "4711"}),
                )
                .await;
            let ev = until_message(&mut c, "event 501", |m| m["privateMsgId"] == 501).await;
            assert_eq!(
                (&ev["thisDn"], &ev["extensions"]["AccountCode"]),
                (&json!("5001"), &json!("4711")),
                "{}: {ev}",
                s.vendor
            );

            if s.sessions() {
                // Three grants long: the timer resets keep the one session alive.
                let open = sessions(&control).await;
                tokio::time::sleep(Duration::from_millis(6200)).await;
                let later = sessions(&control).await;
                assert_eq!(
                    (&later["started"], &later["expired"], &later["open"]),
                    (&open["started"], &json!(0), &json!(1)),
                    "{}: {later}",
                    s.vendor
                );
                assert!(later["resetsAnswered"].as_u64().unwrap() >= 3, "{later}");
            }

            // A SystemStatus without its child: answered, a warning (logged once), no error.
            for _ in 0..2 {
                control.post_ok("/system-status", json!({})).await;
            }
            let warnings =
                format!("csta_router_link_warnings_total{{kind=\"system_status_empty\",switch=\"{name}\"}}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.scrape().await.1.get(&warnings) != Some(&2.0) {
                assert!(Instant::now() < deadline, "{}: {warnings} not 2", s.vendor);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(r.log().matches("SystemStatus without systemStatus").count(), 1);
            until_link(&r, &name, "connected").await;

            // Nothing the switch sent was unreadable, and nothing the router sent either.
            let (_, metrics) = r.scrape().await;
            let series = format!("csta_router_csta_decode_errors_total{{switch=\"{name}\"}}");
            assert_eq!(metrics.get(&series), Some(&0.0), "{}: {series}", s.vendor);
            let state = control.state().await;
            assert_eq!(state["decodeErrors"], 0, "{state}");
            // No CSTA request outside the session on a switch the router opens sessions with.
            let outside = &state["sessions"]["requestsOutsideSession"];
            if s.sessions() {
                assert_eq!(outside, &json!(0), "{}: {state}", s.vendor);
            }

            // Stopped at SIGTERM (only a session switch has something to stop).
            drop(c);
            r.stop();
            let stopped = sessions(&control).await["stopped"].clone();
            assert_eq!(stopped, json!(u64::from(s.sessions())), "{}", s.vendor);
        });
        sim.stop();
    }
}

#[test]
fn a_refused_session_keeps_the_link_down_with_its_reason_counted() {
    let s = sample("osv");
    let sim = simulator(&s);
    let control = sim.control();
    process::runtime().block_on(async {
        control
            .post_ok("/session", json!({"rejectNextStart": "invalidApplicationInfo"}))
            .await;
        let r = router(&s, &sim, str::to_owned);
        r.wait_log(
            "the switch refused the ECMA-354 application session: definedError invalidApplicationInfo",
            1,
        );
        // The next attempt gets its session.
        until_link(&r, "osv", "connected").await;
        let (_, m) = r.scrape().await;
        let count = |reason: &str| {
            m.get(&format!(
                "csta_router_link_session_failures_total{{reason=\"{reason}\",switch=\"osv\"}}"
            ))
            .copied()
        };
        assert_eq!(count("invalidApplicationInfo"), Some(1.0));
        for reason in ["requestedProtocolVersionNotSupported", "serverResourcesBusy", "other", "timeout"] {
            assert_eq!(count(reason), Some(0.0), "{reason}");
        }
        let state = sessions(&control).await;
        assert_eq!(
            (&state["refused"], &state["requestsOutsideSession"]),
            (&json!(1), &json!(0)),
            "no CSTA request went out on the refused connection: {state}"
        );
        r.stop();
    });
}

#[test]
fn resets_answered_after_the_grant_elapses_drop_the_link() {
    let s = sample("avaya");
    let sim = simulator(&s);
    let control = sim.control();
    process::runtime().block_on(async {
        control.post_ok("/session", json!({"grantMaxS": 1})).await;
        let r = router(&s, &sim, str::to_owned);
        until_link(&r, "aes", "connected").await;
        control
            .post_ok("/session", json!({"resetDelayMs": 1500}))
            .await;
        until_state(&control, "the session to expire", |st| {
            st["sessions"]["expired"].as_u64() >= Some(1)
        })
        .await;
        r.wait_log("CSTA link lost", 1);
        // Answered at once again: the link comes back with a new session.
        control
            .post_ok("/session", json!({"resetDelayMs": 0}))
            .await;
        until_link(&r, "aes", "connected").await;
        r.stop();
    });
}

#[test]
fn without_an_application_session_the_avaya_preset_keeps_the_link_down_and_says_why() {
    let s = sample("avaya");
    let sim = simulator(&s);
    let control = sim.control();
    process::runtime().block_on(async {
        let r = router(&s, &sim, |b| b.replace("application-session = true\n", ""));
        r.wait_log("the switch wants an ECMA-354 application session", 1);
        let (_, body) = r.http_get("/readyz").await;
        assert!(body.contains("switch aes link disconnected"), "{body}");
        let state = sessions(&control).await;
        assert_eq!(state["started"], 0, "{state}");
        r.stop();
    });
}

#[test]
fn system_status_reports_take_the_link_out_of_service_and_bring_it_back() {
    let s = sample("osv");
    assert!(s.has("system-register = true"));
    let sim = simulator(&s);
    let control = sim.control();
    process::runtime().block_on(async {
        let r = router(&s, &sim, str::to_owned);
        until_link(&r, "osv", "connected").await;
        r.wait_log("registered for the switch's status reports", 1);
        control
            .post_ok("/faults/status", json!({"status": "disabled"}))
            .await;
        r.wait_log("the switch reports systemStatus disabled", 1);
        until_link(&r, "osv", "disconnected").await;
        control
            .post_ok("/faults/status", json!({"status": "normal"}))
            .await;
        until_link(&r, "osv", "connected").await;
        r.stop();
    });
}

#[test]
fn a_session_duration_that_is_not_whole_seconds_is_refused_naming_key_and_file() {
    for (value, ok) in [
        ("\"1500ms\"", false),
        ("\"500ms\"", false),
        ("\"2s\"", true),
    ] {
        let text = config::head("", "")
            + &config::switch(
                "aes",
                &["5000-5999"],
                &format!("application-session = true\nsession-duration = {value}"),
                &["127.0.0.1:4721"],
            );
        let dir = process::files(&[("router.toml", &text)]);
        let file = dir.path().join("router.toml");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_csta-router"))
            .arg("--check-config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{value}: {stderr}");
        if !ok {
            assert!(
                stderr.contains("session-duration") && stderr.contains(&*file.to_string_lossy()),
                "{value}: {stderr}"
            );
        }
    }
}

/// The link layer alone against an in-process simulator in the avaya preset: a link closed
/// on purpose (handed over to another node, or the router shutting down) stops its session.
#[actix_rt::test]
async fn a_hand_over_and_a_shutdown_stop_the_session() {
    use common::switch;
    use csta_router::csta::Dialect;
    use csta_router::dnplan::DnPlan;
    use csta_router::link::{AppSessionSettings, CloseLinks, Disown, LinkSettings, SwitchEvent};
    use csta_router::sim::{SimConfig, Simulator, Vendor};

    let sim = Simulator::start_vendor(
        SimConfig {
            name: "aes".into(),
            dns: DnPlan::parse(&["5000-5999"]).unwrap(),
            links: vec!["127.0.0.1:0".parse().unwrap()],
            control: Some("127.0.0.1:0".parse().unwrap()),
            dialect: Dialect::default(),
        },
        Vendor::Avaya,
        None,
    )
    .await
    .unwrap();
    let control = SimControl {
        addr: sim.control_addr().unwrap(),
    };
    let settings = LinkSettings {
        app_session: Some(AppSessionSettings {
            application_id: "csta-router".into(),
            protocol_version: "http://www.ecma-international.org/standards/ecma-323/csta/ed3"
                .into(),
            duration: Duration::from_secs(180),
        }),
        ..switch::settings(Duration::from_secs(1), Duration::ZERO, 2)
    };
    async fn up(events: &mut tokio::sync::mpsc::UnboundedReceiver<SwitchEvent>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline, events.recv()).await;
            if matches!(ev, Ok(Some(SwitchEvent::LinkUp { .. }))) {
                return;
            }
            assert!(ev.is_ok(), "no LinkUp within 10 s");
        }
    }
    let (handle, mut events) = switch::start_switch(
        "aes",
        sim.link_addrs(),
        Dialect::default(),
        settings.clone(),
    );
    up(&mut events).await;
    handle.addr.do_send(Disown {
        why: "handed over".into(),
    });
    let state = until_state(&control, "a stop after the hand-over", |st| {
        st["sessions"]["stopped"] == 1
    })
    .await;
    assert_eq!(state["sessions"]["open"], 0, "{state}");

    let (handle, mut events) =
        switch::start_switch("aes", sim.link_addrs(), Dialect::default(), settings);
    up(&mut events).await;
    handle.addr.send(CloseLinks).await.unwrap();
    let state = control.state().await;
    assert_eq!(
        (&state["sessions"]["stopped"], &state["sessions"]["open"]),
        (&json!(2), &json!(0)),
        "{state}"
    );
    sim.shutdown();
}

#[test]
fn simulator_vendor_shapes_an_embedded_simulator() {
    let s = sample("osv");
    let block = s
        .block
        .replace(
            "[[switch.link]]",
            "simulated = true\nsimulator-control = \"127.0.0.1:0\"\nsimulator-vendor = \"osv\"\n\n[[switch.link]]",
        )
        .lines()
        .map(|l| {
            if l.starts_with("address = ") {
                "address = \"127.0.0.1:0\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let text = config::head("", "request-timeout = \"1s\"") + &block + "\n";
    let r = RouterProcess::start("vendor-embedded", &text);
    process::runtime().block_on(async {
        until_link(&r, "osv", "connected").await;
        let state = r.controls[0].state().await;
        assert_eq!(state["vendor"], "osv", "{state}");
        assert_eq!(
            (
                &state["sessions"]["started"],
                &state["sessions"]["requestsOutsideSession"]
            ),
            (&json!(1), &json!(0)),
            "{state}"
        );
    });
    r.stop();
}
