//! Live reload (README, "Live reload"): the real binary on a configuration file that the test
//! rewrites, reloaded by `POST /admin/reload` and by SIGHUP, with live clients and a `pbx-sim`
//! process whose control API shows the monitors and the TCP connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{RouterProcess, SimProcess};
use common::router::{eventually, Client};
use common::sim_control::SimControl;
use common::{config, http};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

const ADMIN: &str = "[[admin]]\nname = \"ops\"\ntoken = \"ops-secret-000001\"\n";
const BEARER: &str = "Bearer ops-secret-000001";

/// A `pbx-sim` process for sw1 knowing 4000-6999, a router on a configuration file in its own
/// folder, and what a test asks of them.
struct Bed {
    sim: SimProcess,
    router: RouterProcess,
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl Bed {
    /// `extra`: lines after `[options]` (applications, admins); `dns`: sw1's plan.
    fn start(extra: &str, dns: &[&str]) -> Bed {
        Self::start_with(extra, dns, "")
    }

    /// [`Bed::start`] with `tail` (more switches) at the end of the file.
    fn start_with(extra: &str, dns: &[&str], tail: &str) -> Bed {
        let sim = SimProcess::start(
            &[
                "--name",
                "sw1",
                "--link",
                "127.0.0.1:0",
                "--control",
                "127.0.0.1:0",
                "--dns",
                "4000-6999",
            ],
            Stdio::null(),
        );
        let dir = common::process::files(&[]);
        let file = dir.path().join("router.toml");
        let bed_text = Self::text_for(&sim, extra, dns, "") + tail;
        std::fs::write(&file, bed_text).unwrap();
        let router = RouterProcess::start_with(
            None,
            &["--config", file.to_str().unwrap()],
            &[("RUST_LOG", "info")],
        );
        Bed {
            sim,
            router,
            _dir: dir,
            file,
        }
    }

    fn text_for(sim: &SimProcess, extra: &str, dns: &[&str], options: &str) -> String {
        format!(
            "{}{extra}\n{}",
            config::head("session-linger = \"5s\"", options),
            config::switch("sw1", dns, "", &[&sim.link()])
        )
    }

    /// Rewrite the file: the same switch with `dns`, `extra` and `[options]` lines.
    fn write(&self, extra: &str, dns: &[&str], options: &str) {
        std::fs::write(&self.file, Self::text_for(&self.sim, extra, dns, options)).unwrap();
    }

    fn control(&self) -> SimControl {
        self.sim.control()
    }

    /// `POST /admin/reload` with these header fields: status and body.
    async fn post(&self, headers: &[(&str, &str)]) -> (u16, String) {
        let r = http::request(
            self.router.metrics,
            "POST",
            "/admin/reload",
            headers,
            b"",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        (r.status, r.text())
    }

    /// A reload that must be applied: the answer.
    async fn reload(&self) -> Value {
        let (status, body) = self.post(&[("Authorization", BEARER)]).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn metric(&self, series: &str) -> f64 {
        let (_, map) = self.router.scrape().await;
        *map.get(series)
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    }

    /// A session of `desk` (told of `switches` links) that registered `dn`, then lost its
    /// connection: its id, once the router holds it as lingering (what happens from then on
    /// reaches it in its replay, not on the connection that was closing).
    async fn lingering(&self, dn: &str, switches: usize) -> String {
        let (mut c, reply) = Client::open_as(&self.router.url(), "desk", None, switches).await;
        let id = reply["sessionId"].as_str().unwrap().to_owned();
        c.register(dn).await;
        drop(c);
        eventually("the session lingering", async || {
            self.metric("csta_router_sessions_lingering").await == 1.0
        })
        .await;
        id
    }

    /// Resume session `id` (told of `switches` links) and check it was.
    async fn resume(&self, id: &str, switches: usize) -> Client {
        let resume = json!({"sessionId": id, "lastEventSeq": {}});
        let (c, reply) = Client::open_as(&self.router.url(), "desk", Some(resume), switches).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        c
    }

    /// The DNs the simulator monitors, with their cross-references.
    async fn monitors(&self) -> Vec<(String, String)> {
        let state = self.control().state().await;
        let mut m: Vec<(String, String)> = state["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["device"].as_str().unwrap().to_owned(),
                    m["crossRef"].to_string(),
                )
            })
            .collect();
        m.sort();
        m
    }

    /// The simulator's links: connections and requests received.
    async fn link_counts(&self) -> Value {
        self.control().state().await["links"].clone()
    }

    async fn client(&self) -> Client {
        Client::open(&self.router.url(), None, 1).await
    }
}

fn empty_changes() -> Value {
    json!({
        "switchesAdded": [], "switchesRemoved": [], "dnRangesAdded": [], "dnRangesRemoved": [],
        "linksChanged": [], "applicationsChanged": [], "optionsChanged": []
    })
}

/// The next message that is not a reply, within 5 s.
async fn next_event(c: &mut Client) -> Value {
    loop {
        let m = c.recv().await;
        if m.get("referenceId").is_none() {
            return m;
        }
    }
}

#[tokio::test]
async fn ranges_added_and_removed_with_live_clients() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut a = bed.client().await;
    a.register("5001").await;
    let mut b = bed.client().await;
    b.register("5500").await;
    eventually("two monitors", async || bed.monitors().await.len() == 2).await;
    let before = bed.monitors().await;
    let links = bed.link_counts().await;
    let reconnects = bed
        .metric("csta_router_link_reconnects_total{link=\"0\",switch=\"sw1\"}")
        .await;
    // Every reload series is exported from the start.
    assert_eq!(bed.metric("csta_router_config_generation").await, 1.0);
    for result in ["ok", "rejected"] {
        let series = format!("csta_router_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(bed.metric(&series).await, 0.0);
    }
    assert_eq!(
        bed.metric("csta_router_config_last_reload_successful")
            .await,
        1.0
    );
    // Unregistered DN 6001 is refused before the reload.
    let r = a
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "6001"}))
        .await;
    assert_eq!(r["errorCode"], 59, "{r}");

    bed.write(ADMIN, &["5500-5999", "6000-6099"], "");
    let answer = bed.reload().await;
    assert_eq!(answer["generation"], 2, "{answer}");
    assert_eq!(
        answer["changed"]["dnRangesAdded"],
        json!([{"switch": "sw1", "range": "5500-5999"}, {"switch": "sw1", "range": "6000-6099"}]),
        "{answer}"
    );
    assert_eq!(
        answer["changed"]["dnRangesRemoved"],
        json!([{"switch": "sw1", "range": "5000-5999"}])
    );
    assert_eq!(answer["restartRequired"], json!([]));
    // The client on 5001 is unregistered by the router: no referenceId, 59.
    let ev = next_event(&mut a).await;
    assert_eq!(
        (&ev["message"], &ev["thisDn"], &ev["errorCode"]),
        (&json!("EventUnregistered"), &json!("5001"), &json!(59)),
        "{ev}"
    );
    assert!(ev.get("referenceId").is_none(), "{ev}");
    // Its monitor is stopped; 5500 keeps its monitor (same cross-reference).
    eventually("5001's MonitorStop", async || {
        bed.monitors().await.len() == 1
    })
    .await;
    let kept: Vec<_> = before
        .iter()
        .filter(|(d, _)| d == "5500")
        .cloned()
        .collect();
    assert_eq!(bed.monitors().await, kept);
    b.expect_nothing().await;
    // The added range is usable at once, the removed one is not.
    a.register("6001").await;
    let r = a
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "5001"}))
        .await;
    assert_eq!(r["errorCode"], 59, "{r}");
    // The link was not touched.
    let after = bed.link_counts().await;
    assert_eq!(after[0]["connections"], links[0]["connections"]);
    assert_eq!(
        bed.metric("csta_router_link_reconnects_total{link=\"0\",switch=\"sw1\"}")
            .await,
        reconnects
    );
    assert_eq!(bed.metric("csta_router_config_generation").await, 2.0);
    assert_eq!(
        bed.metric("csta_router_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    let log = bed.router.log();
    assert!(
        log.contains("configuration reloaded") && log.contains("\"dnRangesRemoved\""),
        "{log}"
    );
    bed.router.stop();
}

#[tokio::test]
async fn an_unchanged_file_is_an_applied_reload_that_touches_nothing() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut a = bed.client().await;
    a.register("5002").await;
    eventually("a monitor", async || bed.monitors().await.len() == 1).await;
    let (monitors, links) = (bed.monitors().await, bed.link_counts().await);
    for generation in [2, 3] {
        let answer = bed.reload().await;
        assert_eq!(answer["generation"], generation, "{answer}");
        assert_eq!(answer["changed"], empty_changes(), "{answer}");
        assert_eq!(answer["restartRequired"], json!([]));
    }
    a.expect_nothing().await;
    // No MonitorStart or MonitorStop (the same cross-reference), the same TCP connection,
    // and no request at all reached the switch.
    assert_eq!(bed.monitors().await, monitors);
    assert_eq!(bed.link_counts().await, links);
    assert_eq!(bed.metric("csta_router_config_generation").await, 3.0);
    bed.router.stop();
}

#[tokio::test]
async fn admin_tokens_and_origins() {
    let bed = Bed::start(
        &format!("{ADMIN}{}", config::TWO_APPLICATIONS),
        &["5000-5999"],
    );
    // No token, an application's token, a wrong one: 401, nothing applied.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer desk-secret-0001")],
        vec![("Authorization", "Bearer ops-secret-000002")],
    ] {
        let (status, body) = bed.post(&headers).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
    }
    assert_eq!(bed.metric("csta_router_config_generation").await, 1.0);
    // A page of another origin: 403, even with the token.
    let (status, _) = bed
        .post(&[
            ("Authorization", BEARER),
            ("Origin", "https://evil.example"),
        ])
        .await;
    assert_eq!(status, 403);
    assert_eq!(bed.metric("csta_router_config_generation").await, 1.0);
    // The console's own origin (the metrics listener's) is allowed.
    let own = format!("http://{}", bed.router.metrics);
    let (status, body) = bed
        .post(&[("Authorization", BEARER), ("Origin", &own)])
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!bed.router.log().contains("ops-secret-000001"));
    assert!(!bed.router.log().contains("open to anyone"));
    bed.router.stop();
}

#[tokio::test]
async fn without_admins_reload_is_open_and_a_warning_says_so() {
    let bed = Bed::start("", &["5000-5999"]);
    assert!(bed.router.log().contains(
        "no [[admin]] configured: POST /admin/reload is open to anyone who can reach server.metrics-listen"
    ));
    let (status, body) = bed.post(&[]).await;
    assert_eq!(status, 200, "{body}");
    bed.router.stop();
}

#[tokio::test]
async fn a_rejected_file_keeps_the_running_configuration() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    std::fs::write(
        &bed.file,
        std::fs::read_to_string(&bed.file)
            .unwrap()
            .replace("[options]\n", "[options]\nrequest-timeout = \"4x\"\n")
            .replace("5000-5999", "6000-6999"),
    )
    .unwrap();
    let (status, body) = bed.post(&[("Authorization", BEARER)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("request-timeout") && body.contains(bed.file.to_str().unwrap()),
        "the key and the file: {body}"
    );
    assert_eq!(bed.metric("csta_router_config_generation").await, 1.0);
    assert_eq!(
        bed.metric("csta_router_config_reloads_total{result=\"rejected\"}")
            .await,
        1.0
    );
    assert_eq!(
        bed.metric("csta_router_config_last_reload_successful")
            .await,
        0.0
    );
    // The old plan still serves.
    let mut a = bed.client().await;
    a.register("5003").await;
    let r = a
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "6003"}))
        .await;
    assert_eq!(r["errorCode"], 59, "{r}");
    assert!(bed.router.log().contains("configuration reload rejected"));
    bed.router.stop();
}

#[tokio::test]
async fn restart_only_keys_are_listed_and_the_rest_applied() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let text = std::fs::read_to_string(&bed.file).unwrap().replace(
        "client-listen = \"127.0.0.1:0\"",
        "client-listen = \"127.0.0.1:1\"",
    );
    std::fs::write(
        &bed.file,
        text.replace("[options]\n", "[options]\ncall-grace = \"5s\"\n")
            .replace("5000-5999", "5000-5998"),
    )
    .unwrap();
    let answer = bed.reload().await;
    assert_eq!(answer["restartRequired"], json!(["server.client-listen"]));
    assert_eq!(
        answer["changed"]["optionsChanged"],
        json!(["options.call-grace"])
    );
    assert_eq!(answer["changed"]["dnRangesAdded"][0]["range"], "5000-5998");
    // The listener stays where it was.
    let mut a = bed.client().await;
    let r = a
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "5999"}))
        .await;
    assert_eq!(r["errorCode"], 59, "{r}");
    bed.router.stop();
}

#[tokio::test]
async fn tokens_removed_keep_their_clients_and_new_ones_apply() {
    let apps = config::TWO_APPLICATIONS;
    let bed = Bed::start(&format!("{ADMIN}{apps}"), &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut desk = Client::open(&bed.router.url(), Some("desk-secret-0001"), 1).await;
    let changed = apps
        .replace("desk-secret-0001", "desk-secret-0003")
        .replace("wallboard", "wall2");
    bed.write(&format!("{ADMIN}{changed}"), &["5000-5999"], "");
    let answer = bed.reload().await;
    assert_eq!(
        answer["changed"]["applicationsChanged"],
        json!(["desk", "wall2", "wallboard"]),
        "{answer}"
    );
    // The client opened with the removed token stays open and served.
    desk.register("5004").await;
    // The old token is refused from now on, the new one accepted.
    let mut old = Client::connect(&bed.router.url()).await;
    old.send(&json!({"message": "RequestOpen", "referenceId": 1, "protocolVersion": 1, "application": "desk", "token": "desk-secret-0001"}))
        .await;
    assert_eq!(old.closed().await, 1008);
    let mut new = Client::open(&bed.router.url(), Some("desk-secret-0003"), 1).await;
    new.register("5005").await;
    bed.router.stop();
}

#[tokio::test]
async fn sighup_reloads_and_a_hot_desk_is_answered_during_reloads() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut a = bed.client().await;
    for guest in ["5010", "5011", "5012"] {
        a.register(guest).await;
    }
    bed.write(ADMIN, &["5000-5999", "6000-6009"], "");
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &bed.router.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    eventually("the generation after SIGHUP", async || {
        bed.metric("csta_router_config_generation").await == 2.0
    })
    .await;
    assert!(bed.router.log().contains("\"6000-6009\""));
    // Hot-desks while reloads run one after the other.
    let reloads = async {
        for _ in 0..5 {
            bed.reload().await;
        }
    };
    let desks = async {
        for (guest, host) in [("5010", "5901"), ("5011", "5902"), ("5012", "5903")] {
            a.send(&json!({"message": "RequestPrivateService", "referenceId": 900, "thisDn": guest, "privateMsgId": 1, "extensions": {"HOST_DN": host}}))
                .await;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let (_, r) = a.next_reply(deadline, || "no hot-desk reply".into()).await;
            assert_eq!(r["message"], "EventPrivateInfo", "{r}");
        }
    };
    tokio::join!(reloads, desks);
    assert_eq!(bed.metric("csta_router_config_generation").await, 7.0);
    let state = bed.control().state().await;
    assert_eq!(
        state["associations"].as_array().unwrap().len(),
        3,
        "{state}"
    );
    bed.router.stop();
}

#[tokio::test]
async fn a_lingering_session_on_a_removed_dn_gets_the_unregistration_in_its_replay() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let id = bed.lingering("5020", 1).await;
    bed.write(ADMIN, &["5100-5999"], "");
    bed.reload().await;
    eventually("5020's MonitorStop", async || {
        bed.monitors().await.is_empty()
    })
    .await;
    let mut c = bed.resume(&id, 1).await;
    let ev = next_event(&mut c).await;
    assert_eq!(
        (&ev["message"], &ev["thisDn"], &ev["errorCode"]),
        (&json!("EventUnregistered"), &json!("5020"), &json!(59)),
        "{ev}"
    );
    bed.router.stop();
}

#[tokio::test]
async fn option_timers_apply_to_the_running_links_without_touching_them() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut a = bed.client().await;
    a.register("5030").await;
    let links = bed.link_counts().await;
    bed.control()
        .post_ok("/faults/stall", json!({"on": true}))
        .await;
    bed.write(ADMIN, &["5000-5999"], "request-timeout = \"300ms\"");
    let answer = bed.reload().await;
    assert_eq!(
        answer["changed"]["optionsChanged"],
        json!(["options.request-timeout"])
    );
    // The switch does not answer: the request times out after the new 300 ms (57), not the
    // 4 s the link started with.
    let sent = std::time::Instant::now();
    let r = a
        .request(json!({"message": "RequestPrivateService", "thisDn": "5030", "privateMsgId": 1, "extensions": {"HOST_DN": "5931"}}))
        .await;
    assert_eq!(r["errorCode"], 57, "{r}");
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "{:?} {r}",
        sent.elapsed()
    );
    bed.control()
        .post_ok("/faults/stall", json!({"on": false}))
        .await;
    assert_eq!(
        bed.link_counts().await[0]["connections"],
        links[0]["connections"]
    );
    bed.router.stop();
}

#[tokio::test]
async fn changed_link_settings_restart_the_links_and_keep_the_registrations() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut a = bed.client().await;
    a.register("5040").await;
    eventually("a monitor", async || bed.monitors().await.len() == 1).await;
    let before = bed.monitors().await;
    let text = std::fs::read_to_string(&bed.file)
        .unwrap()
        .replace("name = \"sw1\"\n", "name = \"sw1\"\nwire-trace = true\n");
    std::fs::write(&bed.file, text).unwrap();
    let answer = bed.reload().await;
    assert_eq!(
        answer["changed"]["linksChanged"],
        json!([{"switch": "sw1", "address": bed.sim.link()}]),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], json!([]), "{answer}");
    for expected in ["EventLinkDisconnected", "EventLinkConnected"] {
        let ev = next_event(&mut a).await;
        assert_eq!(
            (&ev["message"], &ev["switch"], &ev["reason"]),
            (&json!(expected), &json!("sw1"), &json!("reconfigured")),
            "{ev}"
        );
    }
    // Monitored again on the new connection (a new cross-reference), still registered.
    let after = bed.monitors().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, "5040");
    assert_ne!(after, before);
    let r = a
        .request(json!({"message": "RequestPrivateService", "thisDn": "5040", "privateMsgId": 1, "extensions": {"HOST_DN": "5941"}}))
        .await;
    assert_eq!(r["message"], "EventPrivateInfo", "{r}");
    // The new links follow the new settings: every frame is logged now.
    bed.router.wait_log("csta_wire", 1);
    bed.router.stop();
}

/// A `pbx-sim` process for switch `name` owning `dns`.
fn another_sim(name: &str, dns: &str) -> SimProcess {
    SimProcess::start(
        &[
            "--name",
            name,
            "--link",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--dns",
            dns,
        ],
        Stdio::null(),
    )
}

#[tokio::test]
async fn an_added_switch_starts_its_links_and_serves_at_once() {
    let sim2 = another_sim("sw2", "7000-7999");
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut a = bed.client().await;
    a.register("5045").await;
    eventually("a monitor", async || bed.monitors().await.len() == 1).await;
    let (monitors, links) = (bed.monitors().await, bed.link_counts().await);
    let text = std::fs::read_to_string(&bed.file).unwrap();
    let sw2 = config::switch("sw2", &["7000-7999"], "", &[&sim2.link()]);
    std::fs::write(&bed.file, format!("{text}{sw2}")).unwrap();
    let answer = bed.reload().await;
    assert_eq!(
        answer["changed"]["switchesAdded"],
        json!(["sw2"]),
        "{answer}"
    );
    assert_eq!(
        answer["changed"]["linksChanged"],
        json!([{"switch": "sw2", "address": sim2.link()}])
    );
    assert_eq!(answer["restartRequired"], json!([]), "{answer}");
    // Every open client hears of it when its link is up, and can use it.
    let ev = next_event(&mut a).await;
    assert_eq!(
        (&ev["message"], &ev["switch"]),
        (&json!("EventLinkConnected"), &json!("sw2")),
        "{ev}"
    );
    a.register("7001").await;
    assert_eq!(
        sim2.control().state().await["monitors"][0]["device"],
        "7001"
    );
    // New clients see both switches; sw1 was not touched.
    let mut c = Client::open(&bed.router.url(), None, 2).await;
    c.expect_nothing().await;
    bed.router.wait_connected(&["sw1", "sw2"]).await;
    assert_eq!(bed.monitors().await, monitors);
    assert_eq!(bed.link_counts().await, links);
    let (_, m) = bed.router.scrape().await;
    assert_eq!(m["csta_router_link_up{link=\"0\",switch=\"sw2\"}"], 1.0);
    bed.router.stop();
}

#[tokio::test]
async fn a_removed_switch_unregisters_its_dns_closes_its_links_and_tells_every_client() {
    let sim2 = SimProcess::start(
        &[
            "--name",
            "sw2",
            "--link",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--dns",
            "7000-7999",
        ],
        Stdio::null(),
    );
    let sw2 = config::switch("sw2", &["7000-7999"], "", &[&sim2.link()]);
    let bed = Bed::start_with(ADMIN, &["5000-5999"], &sw2);
    bed.router.wait_connected(&["sw1", "sw2"]).await;
    let mut a = Client::open(&bed.router.url(), None, 2).await;
    a.register("7001").await;
    let mut b = Client::open(&bed.router.url(), None, 2).await;
    b.register("5050").await;
    let control2 = sim2.control();
    eventually("7001 monitored", async || {
        control2.state().await["monitors"].as_array().unwrap().len() == 1
    })
    .await;
    // The file without sw2.
    bed.write(ADMIN, &["5000-5999"], "");
    let answer = bed.reload().await;
    assert_eq!(
        answer["changed"]["switchesRemoved"],
        json!(["sw2"]),
        "{answer}"
    );
    assert_eq!(
        answer["changed"]["linksChanged"],
        json!([{"switch": "sw2", "address": sim2.link()}])
    );
    // The client on 7001: EventUnregistered (59), then the switch is gone.
    let ev = next_event(&mut a).await;
    assert_eq!(
        (&ev["message"], &ev["thisDn"], &ev["errorCode"]),
        (&json!("EventUnregistered"), &json!("7001"), &json!(59)),
        "{ev}"
    );
    let ev = next_event(&mut a).await;
    assert_eq!(
        (&ev["message"], &ev["switch"], &ev["reason"]),
        (
            &json!("EventLinkDisconnected"),
            &json!("sw2"),
            &json!("removed")
        ),
        "{ev}"
    );
    a.expect_nothing().await;
    // Every other client too, once.
    let ev = next_event(&mut b).await;
    assert_eq!(
        (&ev["message"], &ev["reason"]),
        (&json!("EventLinkDisconnected"), &json!("removed")),
        "{ev}"
    );
    b.expect_nothing().await;
    // The MonitorStop went out and the link is closed.
    let state = control2.state().await;
    assert_eq!(state["monitors"], json!([]), "{state}");
    eventually("sw2's link closed", async || {
        control2.state().await["links"][0]["connections"] == 0
    })
    .await;
    // New clients no longer see sw2; its DNs are in no plan; sw1 was not touched.
    let mut c = Client::open(&bed.router.url(), None, 1).await;
    c.expect_nothing().await;
    let r = c
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "7001"}))
        .await;
    assert_eq!(r["errorCode"], 59, "{r}");
    let (_, ready) = bed.router.http_get("/readyz").await;
    assert!(
        !ready.contains("sw2") && ready.contains("switch sw1 link connected"),
        "{ready}"
    );
    assert_eq!(bed.monitors().await.len(), 1);
    let log = bed.router.stop();
    assert!(log.contains("switch removed"), "{log}");
}

/// Wait until every live node's `csta_router_cluster_config_mismatch{switch="sw1"}` is `want`.
async fn mismatch_everywhere(bed: &common::bed::Bed, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for (name, node) in bed.live() {
        loop {
            let (_, m) = node.scrape().await;
            let got = m
                .get("csta_router_cluster_config_mismatch{switch=\"sw1\"}")
                .copied();
            if got == Some(want) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {name}: mismatch {got:?}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[test]
fn each_cluster_node_reloads_its_own_file_and_the_mismatch_gauge_follows() {
    common::bed::runtime().block_on(each_node_reloads_its_own_file());
}

async fn each_node_reloads_its_own_file() {
    let mut bed = common::bed::Bed::start(1, 3);
    bed.settled(common::bed::LEASE_TTL * 3 + Duration::from_secs(5))
        .await;
    mismatch_everywhere(&bed, 0.0).await;
    let names = ["a", "b", "c"];
    for (k, name) in names.into_iter().enumerate() {
        let i = bed.index(name);
        let text = bed.config(i).replace(
            "dns = [\"4000-4999\"]",
            "dns = [\"4000-4999\", \"5000-5099\"]",
        );
        let node = bed.node(name);
        std::fs::write(node.config_file().unwrap(), text).unwrap();
        let answer = node.reload().await;
        assert_eq!(
            answer["changed"]["dnRangesAdded"],
            json!([{"switch": "sw1", "range": "5000-5099"}]),
            "{answer}"
        );
        assert_eq!(answer["restartRequired"], json!([]), "{answer}");
        // Until the last node is reloaded, the plans differ, and every node says so.
        mismatch_everywhere(&bed, if k < 2 { 1.0 } else { 0.0 }).await;
        if k == 0 {
            node.wait_log("switch sw1 is defined differently on node", 1);
        }
    }
    bed.node("a")
        .wait_log("switch sw1 is defined alike on every live node again", 1);
    bed.stop();
}

#[tokio::test]
async fn a_renamed_switch_is_one_removed_and_one_added() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let mut a = bed.client().await;
    a.register("5060").await;
    let text = std::fs::read_to_string(&bed.file)
        .unwrap()
        .replace("name = \"sw1\"", "name = \"main\"");
    std::fs::write(&bed.file, text).unwrap();
    let answer = bed.reload().await;
    assert_eq!(
        (
            &answer["changed"]["switchesRemoved"],
            &answer["changed"]["switchesAdded"]
        ),
        (&json!(["sw1"]), &json!(["main"])),
        "{answer}"
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut a).await;
        seen.push(format!(
            "{} {}",
            ev["message"].as_str().unwrap(),
            ev["switch"].as_str().unwrap()
        ));
    }
    assert_eq!(
        seen,
        [
            "EventUnregistered sw1",
            "EventLinkDisconnected sw1",
            "EventLinkConnected main"
        ]
    );
    a.register("5060").await;
    bed.router.wait_connected(&["main"]).await;
    // Rename it back: a new place again, the old one stays removed.
    bed.write(ADMIN, &["5000-5999"], "");
    let answer = bed.reload().await;
    assert_eq!(
        answer["changed"]["switchesAdded"],
        json!(["sw1"]),
        "{answer}"
    );
    bed.router.wait_connected(&["sw1"]).await;
    let mut c = Client::open(&bed.router.url(), None, 1).await;
    c.register("5061").await;
    bed.router.stop();
}

#[tokio::test]
async fn concurrent_reloads_run_one_after_the_other() {
    let bed = Bed::start(ADMIN, &["5000-5999"]);
    bed.router.wait_connected(&["sw1"]).await;
    let (a, b, c) = tokio::join!(bed.reload(), bed.reload(), bed.reload());
    let mut generations: Vec<u64> = [a, b, c]
        .iter()
        .map(|v| v["generation"].as_u64().unwrap())
        .collect();
    generations.sort();
    assert_eq!(generations, [2, 3, 4]);
    assert_eq!(bed.metric("csta_router_config_generation").await, 4.0);
    bed.router.stop();
}

#[tokio::test]
async fn a_lingering_session_on_a_removed_switch_is_told_when_it_resumes() {
    let sim2 = another_sim("sw2", "7000-7999");
    let sw2 = config::switch("sw2", &["7000-7999"], "", &[&sim2.link()]);
    let bed = Bed::start_with(ADMIN, &["5000-5999"], &sw2);
    bed.router.wait_connected(&["sw1", "sw2"]).await;
    let id = bed.lingering("7020", 2).await;
    bed.write(ADMIN, &["5000-5999"], "");
    let answer = bed.reload().await;
    assert_eq!(answer["changed"]["switchesRemoved"], json!(["sw2"]));
    let mut c = bed.resume(&id, 0).await;
    let mut seen = Vec::new();
    while let Some(m) = c.next(Duration::from_millis(300)).await {
        seen.push(m);
    }
    let has = |message: &str, check: &dyn Fn(&Value) -> bool| {
        seen.iter().any(|m| m["message"] == message && check(m))
    };
    assert!(
        has("EventLinkDisconnected", &|m| m["switch"] == "sw2"
            && m["reason"] == "removed"),
        "{seen:?}"
    );
    assert!(
        has("EventUnregistered", &|m| m["thisDn"] == "7020"
            && m["errorCode"] == 59),
        "{seen:?}"
    );
    assert!(
        has("EventLinkConnected", &|m| m["switch"] == "sw1"),
        "{seen:?}"
    );
    bed.router.stop();
}

#[test]
fn a_dn_a_reload_removed_is_not_monitored_again_when_its_owner_dies() {
    common::bed::runtime().block_on(removed_dn_after_an_owner_kill());
}

async fn removed_dn_after_an_owner_kill() {
    let mut bed = common::bed::Bed::start(1, 2);
    let (owner, other, sim) = bed.one_switch_ready().await;
    let mut c = bed.client(&other).await;
    c.register("4001").await;
    c.register("4002").await;
    common::bed::monitors_on(&sim, "4001", 1).await;
    common::bed::monitors_on(&sim, "4002", 1).await;
    // Only the surviving node has reloaded when the owner dies.
    let i = bed.index(&other);
    let text = bed
        .config(i)
        .replace("dns = [\"4000-4999\"]", "dns = [\"4002-4999\"]");
    std::fs::write(bed.node(&other).config_file().unwrap(), text).unwrap();
    let answer = bed.node(&other).reload().await;
    assert_eq!(
        answer["changed"]["dnRangesRemoved"],
        json!([{"switch": "sw1", "range": "4000-4999"}]),
        "{answer}"
    );
    bed.kill(&owner);
    // The new owner tells the client instead of monitoring 4001 again; 4002 is restored.
    let (ev, _) = common::bed::until(
        &mut c,
        Duration::from_secs(15),
        "4001's unregistration",
        |m| m["message"] == "EventUnregistered" && m["thisDn"] == "4001",
    )
    .await;
    assert_eq!(ev["errorCode"], 59, "{ev}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let state = sim.state().await;
        let devices: Vec<&str> = state["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["device"].as_str().unwrap())
            .collect();
        if devices == ["4002"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "monitors: {devices:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bed.node(&other)
        .wait_log("this node owns the switch now", 1);
    bed.stop();
}
