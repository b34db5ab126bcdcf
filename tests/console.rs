//! The web console in a real headless Chromium, driven through its DevTools protocol: the page
//! the router binary serves at `/console`, read as the operator sees it (rendered text), with
//! the router's switches, clients and simulators changing underneath; and the `/v1` Origin
//! rule that lets the console (and nothing else not listed) open the WebSocket endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::bed::{self, Bed};
use common::config::TWO_APPLICATIONS;
use common::devtools::Browser;
use common::process::{two_switches, RouterProcess};
use common::router::Client;
use common::sim_control::SimControl;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const DESK_TOKEN: &str = "desk-secret-0001";

/// Where the test's screenshot goes: `target/console-test/` (never under `src/`).
fn screenshot_path() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .to_path_buf(),
    };
    target.join("console-test").join("console.png")
}

/// Wait until the rendered text of `selector` satisfies `check` (within 10 s, polled every
/// 10 ms: the page polls `/status` every 2 s, and the machine may be busy); the text. The
/// failure shows the whole page's text.
async fn text_until(
    page: &Browser,
    selector: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            last = page.text(selector).await;
            if check(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "no {what} after 10 s: {selector} shows {last:?}; the page shows:\n{}",
        page.text("body").await
    );
    last
}

/// Wait until the rendered text of `selector` is exactly `expected` (within 10 s).
async fn text_is(page: &Browser, selector: &str, expected: &str) {
    text_until(page, selector, &format!("{expected:?}"), |t| {
        t.trim() == expected
    })
    .await;
}

/// The simulator's hot-desk associations as `guest → host` pairs.
async fn associations(sim: &SimControl) -> Vec<(String, String)> {
    sim.state().await["associations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["guest"].as_str().unwrap().to_owned(),
                a["host"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_router_live_and_drives_it_in_a_real_browser() {
    let router = RouterProcess::start("console", &two_switches("", "", TWO_APPLICATIONS, 1));
    router.wait_connected(&["sw1", "sw2"]).await;
    let (sw1, sw2) = (router.controls[0], router.controls[1]);
    let page = Browser::start(1200, 800).await;
    page.call("Network.enable", json!({})).await;
    let console_url = format!("http://127.0.0.1:{}/console", router.metrics.port());
    page.navigate(&console_url).await;

    // Tokens are configured: the page asks for one, keeps it in memory only.
    text_until(&page, "#auth", "the token prompt", |t| t.contains("token")).await;
    page.fill("#token", DESK_TOKEN).await;
    page.click("#connect").await;
    text_until(&page, "#conn", "the console's connection", |t| {
        t.starts_with("connected to ws://127.0.0.1:")
    })
    .await;
    let stored = page
        .eval("JSON.stringify([localStorage.length, sessionStorage.length, document.cookie])")
        .await;
    assert_eq!(stored, json!("[0,0,\"\"]"), "the page stored something");
    assert!(
        !page.text("body").await.contains(DESK_TOKEN),
        "the token is shown"
    );

    // Each switch's live link state; the clients connected (the console itself, then one
    // more); the DNs registered, in all and per switch.
    text_is(&page, "#switch-sw1 .link-state", "connected").await;
    text_is(&page, "#switch-sw2 .link-state", "connected").await;
    text_is(&page, "#clients", "1").await;
    text_is(&page, "#dns", "0").await;
    let mut desk = Client::open(&router.url(), Some(DESK_TOKEN), 2).await;
    text_is(&page, "#clients", "2").await;
    let reply = desk.register("5001").await;
    assert_eq!(reply["message"], "EventRegistered", "{reply}");
    desk.register("6001").await;
    desk.register("6002").await;
    text_is(&page, "#dns", "3").await;
    text_is(&page, "#switch-sw1 .registered", "1").await;
    text_is(&page, "#switch-sw2 .registered", "2").await;

    // An error count rises after a client's bad request.
    assert_eq!(page.text("#error-59 .recent").await, "", "no 59 yet");
    let refused = desk
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "9999"}))
        .await;
    assert_eq!(refused["errorCode"], 59, "{refused}");
    text_is(&page, "#error-59 .recent", "1").await;
    assert!(page.text("#error-59").await.contains("NOT_CONFIGURED"));

    // The live tail of a DN shows a hot-desk made on the phone (the simulator's control API),
    // and the DN lookup then shows the association.
    page.fill("#tail-target", "5002").await;
    page.click("#tail-start").await;
    text_until(&page, "#tail-result", "the tail", |t| {
        t.contains("Following 5002")
    })
    .await;
    sw1.post_ok("/hotdesk", json!({"guest": "5002", "host": "4002"}))
        .await;
    text_until(
        &page,
        "#tail-log",
        "the phone's hot-desk in the tail",
        |t| t.contains("sw1 5002 hot-desk: guest 5002 at host 4002"),
    )
    .await;
    page.fill("#lookup-dn", "5002").await;
    page.click("#lookup").await;
    text_is(
        &page,
        "#lookup-result",
        "5002 on sw1: hot-desked as guest at host 4002; 0 calls",
    )
    .await;

    // A hot-desk and a cancel submitted in the page's form reach the switch.
    page.fill("#hd-guest", "5004").await;
    page.fill("#hd-host", "4004").await;
    page.click("#hd-start").await;
    text_is(&page, "#hd-result", "Done: guest 5004 at host 4004").await;
    let pair = ("5004".to_owned(), "4004".to_owned());
    assert!(
        associations(&sw1).await.contains(&pair),
        "{:?}",
        associations(&sw1).await
    );
    page.click("#hd-cancel").await;
    text_until(&page, "#hd-result", "the cancel's answer", |t| {
        t.starts_with("Done: hot-desk of 5004 cancelled")
    })
    .await;
    assert!(
        !associations(&sw1).await.contains(&pair),
        "{:?}",
        associations(&sw1).await
    );

    // A switch whose simulator drops the link turns "disconnected" within a few seconds.
    let dropped = std::time::Instant::now();
    sw2.post_ok("/faults/link", json!({"link": 0, "up": false}))
        .await;
    text_is(&page, "#switch-sw2 .link-state", "disconnected").await;
    assert!(
        dropped.elapsed() < Duration::from_secs(5),
        "sw2 turned disconnected only after {:?}",
        dropped.elapsed()
    );
    text_is(&page, "#switch-sw1 .link-state", "connected").await;
    assert_eq!(page.text("#switch-sw2 .active").await, "none");
    // /status has the link layer's own state of each link.
    text_until(&page, "#switch-sw2 .links", "sw2's link down", |t| {
        t.ends_with(": down")
    })
    .await;
    page.screenshot(&screenshot_path()).await;
    sw2.post_ok("/faults/link", json!({"link": 0, "up": true}))
        .await;
    text_is(&page, "#switch-sw2 .link-state", "connected").await;

    // Every request the page made went to the router's own two ports.
    let page_urls = [
        format!("http://127.0.0.1:{}/", router.metrics.port()),
        format!("ws://127.0.0.1:{}/", router.clients.port()),
    ];
    let mut urls: Vec<String> = page
        .events("Network.requestWillBeSent")
        .iter()
        .map(|e| e["request"]["url"].as_str().unwrap().to_owned())
        .collect();
    urls.extend(
        page.events("Network.webSocketCreated")
            .iter()
            .map(|e| e["url"].as_str().unwrap().to_owned()),
    );
    for url in &urls {
        assert!(
            page_urls.iter().any(|p| url.starts_with(p.as_str())),
            "the page requested {url}"
        );
    }
    for needed in [
        console_url.clone(),
        page_urls[0].clone() + "status",
        page_urls[0].clone() + "metrics",
        page_urls[1].clone() + "v1",
    ] {
        assert!(
            urls.contains(&needed),
            "no request for {needed} in {urls:?}"
        );
    }
    assert!(!std::fs::read(screenshot_path()).unwrap().is_empty());
    drop(page);
    drop(desk);
    router.stop();
}

/// Every key of a JSON value as a path (`switches[].links[].state`; an array's elements merged).
fn key_paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let path = format!("{prefix}{k}");
                    out.insert(path.clone());
                    walk(child, &format!("{path}."), out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{}[].", prefix.trim_end_matches('.')), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// Upgrade `/v1` at `clients` with this `Origin` (and `Host`, when given): the HTTP status
/// (101 when the WebSocket opened).
async fn upgrade_status(clients: SocketAddr, origin: &str, host: Option<&str>) -> u16 {
    let mut request = format!("ws://{clients}/v1").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).unwrap());
    if let Some(host) = host {
        request
            .headers_mut()
            .insert("Host", HeaderValue::from_str(host).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade with Origin {origin}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_accepts_the_console_origin_and_refuses_others() {
    let router = RouterProcess::start(
        "console-origin",
        &two_switches(
            "allowed-origins = [\"https://desk.example.com\"]",
            "",
            "",
            1,
        ),
    );
    let (clients, metrics) = (router.clients, router.metrics.port());
    let own = format!("http://127.0.0.1:{metrics}");
    assert_eq!(upgrade_status(clients, &own, None).await, 101);
    assert_eq!(
        upgrade_status(clients, "https://desk.example.com", None).await,
        101
    );
    let other_port = if metrics == 1 { 2 } else { metrics - 1 };
    for (origin, host) in [
        (format!("http://127.0.0.1:{other_port}"), None),
        (format!("http://127.0.0.1:{}", clients.port()), None),
        (format!("http://localhost:{metrics}"), None),
        (format!("http://evil.example:{metrics}"), None),
        (
            own.clone(),
            Some(format!("evil.example:{}", clients.port())),
        ),
        ("null".to_owned(), None),
    ] {
        let status = upgrade_status(clients, &origin, host.as_deref()).await;
        assert_eq!(status, 403, "Origin {origin} (Host {host:?}) got {status}");
    }
    // A client without Origin (not a browser) is not affected.
    let mut plain = Client::connect(&router.url()).await;
    let reply = plain
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "plain"}))
        .await;
    assert_eq!(reply["message"], "EventServerConnected", "{reply}");
    drop(plain);
    // The README's /status example has the fields the router's /status has.
    router.wait_connected(&["sw1", "sw2"]).await;
    let (status, body) = router.http_get("/status").await;
    assert_eq!(status, 200, "{body}");
    let live: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(live["switches"][1]["links"][0]["state"], "up", "{live}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example = readme
        .lines()
        .find(|l| l.starts_with("{\"clientsConnected\""))
        .expect("the README's /status example");
    let example: Value = serde_json::from_str(example).unwrap();
    assert_eq!(
        key_paths(&example),
        key_paths(&live),
        "README: {example}\nrouter: {live}"
    );
    let log = router.stop();
    assert!(log.contains("WebSocket upgrade refused (403)"), "{log}");
}

/// In a cluster, `/status` names the node that answers and each switch's owner, on the owner
/// and on the other node alike (the console shows both).
#[test]
fn status_names_the_node_and_each_switch_owner_in_a_cluster() {
    let mut bed = Bed::start(1, 2);
    let rt = bed::runtime();
    rt.block_on(async {
        let (owner, other, _) = bed.one_switch_ready().await;
        for name in [&owner, &other] {
            let (status, body) = bed.node(name).http_get("/status").await;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["node"], json!(name), "{v}");
            let sw = &v["switches"][0];
            assert_eq!(
                (&sw["name"], &sw["owner"], &sw["linkState"]),
                (&json!("sw1"), &json!(owner), &json!("connected")),
                "{name}: {v}"
            );
        }
    });
    bed.stop();
}
