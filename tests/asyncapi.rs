//! The AsyncAPI document of client protocol v1 (README, "Protocol description (AsyncAPI)"),
//! checked with a maintained JSON Schema validator (Python's `jsonschema`, Draft 2020-12, run
//! by `tests/asyncapi/validate.py`):
//!
//! - a scripted session on the router binary (two embedded simulators, tokens configured, real
//!   WebSocket clients) makes it send every kind of message: each is validated against the
//!   schema its `message` names, and the test fails on a name without a schema, on a message a
//!   schema rejects, and on a schema of the document that the session never exercised (unless
//!   [`NOT_PROVOKED`] says why it cannot be); the requests the session sends validate too,
//!   those malformed on purpose are rejected;
//! - real messages broken on purpose (a required field removed, a wrong type, a connId that is
//!   not 16 hex digits, a time that is not RFC 3339, ...) are rejected: the schemas can fail;
//! - every protocol message shown in the README validates;
//! - `GET /asyncapi.json` serves the document as `application/json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "asyncapi/validation.rs"]
mod validation;
use common::{config, http, process, router};
use validation::{judge, validate, Kind};

use futures_util::SinkExt;
use process::RouterProcess;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as Ws;

/// The document as compiled into the binary.
const DOCUMENT: &str = include_str!("../src/protocol/asyncapi.json");

/// Messages of the document that the scripted session cannot make the router send, each with
/// the reason. Everything else must be exercised.
const NOT_PROVOKED: &[(&str, &str)] = &[];

/// The error codes the session provokes (52, a fault inside the router, cannot be).
const CODES_PROVOKED: [u64; 13] = [41, 42, 43, 50, 51, 53, 54, 55, 56, 57, 58, 59, 111];

/// The tokens of the configuration's two applications.
const DESK_TOKEN: &str = "desk-secret-0001";
const WALL_TOKEN: &str = "wall-secret-0002";

/// Every message of the session, in order.
#[derive(Default)]
struct Log(RefCell<Vec<(Kind, Value)>>);

impl Log {
    fn push(&self, kind: Kind, v: Value) {
        self.0.borrow_mut().push((kind, v));
    }

    fn received(&self) -> Vec<Value> {
        self.0
            .borrow()
            .iter()
            .filter(|(k, _)| *k == Kind::Received)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A WebSocket client whose every message, both ways, goes to the log.
struct Desk<'a> {
    ws: router::Client,
    log: &'a Log,
    next_ref: u64,
}

impl<'a> Desk<'a> {
    async fn connect(url: &str, log: &'a Log) -> Desk<'a> {
        Desk {
            ws: router::Client::connect(url).await,
            log,
            next_ref: 1,
        }
    }

    /// Connect and send `RequestOpen` (with `token`, `resume`): the reply, once the link event
    /// of each switch is read.
    async fn open(
        url: &str,
        log: &'a Log,
        token: Option<&str>,
        resume: Option<Value>,
    ) -> (Desk<'a>, Value) {
        let mut d = Desk::connect(url, log).await;
        let mut open =
            json!({"message": "RequestOpen", "protocolVersion": 1, "application": "asyncapi"});
        if let Some(t) = token {
            open["token"] = json!(t);
        }
        if let Some(r) = resume {
            open["resume"] = r;
        }
        let reply = d.request(open).await;
        assert_eq!(reply["message"], "EventServerConnected", "{reply}");
        for _ in 0..2 {
            let ev = d.recv().await;
            assert!(ev["message"].as_str().unwrap().starts_with("EventLink"));
        }
        (d, reply)
    }

    /// Send a request as a well-behaved client would (a fresh `referenceId` unless it has
    /// one): its `referenceId`.
    async fn send(&mut self, mut v: Value) -> u64 {
        if v.get("referenceId").is_none() {
            v["referenceId"] = json!(self.next_ref);
            self.next_ref += 1;
        }
        self.log.push(Kind::Sent, v.clone());
        self.ws.send(&v).await;
        v["referenceId"].as_u64().unwrap()
    }

    /// Send text malformed on purpose (logged when it is JSON).
    async fn send_malformed(&mut self, text: &str) {
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            self.log.push(Kind::Malformed, v);
        }
        self.ws.send_text(text).await;
    }

    /// The next message.
    async fn recv(&mut self) -> Value {
        let v = self.ws.recv().await;
        self.log.push(Kind::Received, v.clone());
        v
    }

    /// Messages until one that `pred` accepts (within 5 s each): that one.
    async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Every message until none comes for 300 ms.
    async fn drain(&mut self) {
        while let Some(v) = self.ws.next(Duration::from_millis(300)).await {
            self.log.push(Kind::Received, v);
        }
    }

    /// Send a request and read until its reply (events before it logged too).
    async fn request(&mut self, v: Value) -> Value {
        let id = self.send(v).await;
        self.until(|m| m["referenceId"] == id).await
    }

    /// A request that the router must refuse with `code`.
    async fn refused(&mut self, v: Value, code: u64) -> Value {
        let reply = self.request(v.clone()).await;
        assert_eq!(
            (&reply["message"], &reply["errorCode"]),
            (&json!("EventError"), &json!(code)),
            "{v} → {reply}"
        );
        reply
    }

    /// `RequestClose`: `EventClosed`, then the close frame.
    async fn close(mut self) {
        let reply = self.request(json!({"message": "RequestClose"})).await;
        assert_eq!(reply["message"], "EventClosed", "{reply}");
        assert_eq!(self.ws.closed().await, 1000);
    }
}

fn private(dn: &str, id: u64, extensions: Value) -> Value {
    json!({"message": "RequestPrivateService", "thisDn": dn, "privateMsgId": id, "extensions": extensions})
}

fn register(dn: &str, call_events: bool) -> Value {
    json!({"message": "RequestRegisterAddress", "thisDn": dn, "callEvents": call_events})
}

fn query(dn: &str) -> Value {
    json!({"message": "RequestQueryAddress", "thisDn": dn})
}

/// The configuration of the scripted session: two simulated switches, two applications with
/// tokens, short timers (so that a stalled switch answers 57 within a second).
fn session_config(tokens: bool) -> String {
    let options = "request-timeout = \"800ms\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"200ms\"";
    let extra = if tokens { config::TWO_APPLICATIONS } else { "" };
    process::two_switches("client-ping-interval = \"10s\"", options, extra, 1)
}

/// Hot-desking from a desktop, and every refusal the router or the switch makes easily.
async fn hotdesk_and_errors<'a>(r: &RouterProcess, desk: &mut Desk<'a>) {
    let sw1 = r.controls[0];
    let server = desk.request(json!({"message": "RequestQueryServer"})).await;
    assert_eq!(server["message"], "EventServerInfo", "{server}");
    for dn in ["5001", "4001", "5002"] {
        let reply = desk.request(register(dn, false)).await;
        assert_eq!(reply["message"], "EventRegistered", "{reply}");
    }
    let reply = desk
        .request(private("5001", 1, json!({"HOST_DN": "4001"})))
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    desk.drain().await;
    let info = desk.request(query("4001")).await;
    assert_eq!(info["hotDesk"]["guestDn"], "5001", "{info}");
    // The switch refuses: already associated (42), nothing to cancel (43).
    desk.refused(private("5001", 1, json!({"HOST_DN": "4002"})), 42)
        .await;
    desk.request(private("5001", 2, json!({}))).await;
    desk.drain().await;
    desk.refused(private("5001", 2, json!({})), 43).await;
    // Refusals of the switch mapped to 111, 58 and 50.
    for (category, value, code) in [
        ("systemResourceAvailability", "resourceBusy", 111),
        ("systemResourceAvailability", "deviceOutOfService", 58),
        ("unspecified", "unspecified", 50),
    ] {
        sw1.post_ok(
            "/faults/reject",
            json!({"count": 1, "category": category, "value": value, "request": "Escape"}),
        )
        .await;
        desk.refused(private("5001", 1, json!({"HOST_DN": "4001"})), code)
            .await;
    }
    // A switch that does not answer: 57 after request-timeout.
    sw1.post_ok("/faults/stall", json!({"on": true})).await;
    desk.refused(private("5001", 2, json!({})), 57).await;
    sw1.post_ok("/faults/clear", json!({})).await;
    // Refusals of the router.
    desk.refused(register("99999", false), 59).await;
    desk.refused(private("5003", 2, json!({})), 41).await;
    desk.refused(
        json!({"message": "RequestUnregisterAddress", "thisDn": "5003"}),
        41,
    )
    .await;
    desk.refused(private("5001", 1, json!({"HOST_DN": "5001"})), 53)
        .await;
    desk.refused(
        json!({"message": "RequestOpen", "protocolVersion": 1, "application": "again", "token": DESK_TOKEN}),
        53,
    )
    .await;
    let none = json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 501, "extensions": {"AccountCode": "12"}});
    desk.refused(none, 56).await;
    let unknown = json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 501, "connId": "0000000000000000", "extensions": {"AccountCode": "12"}});
    desk.refused(unknown, 56).await;
    let reply = desk
        .request(json!({"message": "RequestUnregisterAddress", "thisDn": "5002"}))
        .await;
    assert_eq!(reply["message"], "EventUnregistered", "{reply}");
    malformed_requests(desk).await;
}

/// Requests malformed on purpose: each gets its `EventError`, and the schemas reject those
/// that name a request.
async fn malformed_requests<'a>(desk: &mut Desk<'a>) {
    for (text, code) in [
        ("this is not JSON", 53),
        (r#"{"message":"RequestFoo","referenceId":901}"#, 51),
        (
            r#"{"message":"RequestPrivateService","referenceId":902,"thisDn":"5001","privateMsgId":7}"#,
            51,
        ),
        (
            r#"{"message":"RequestRegisterAddress","referenceId":903,"thisDn":"50 01"}"#,
            53,
        ),
        (
            r#"{"message":"RequestPrivateService","referenceId":904,"thisDn":"5001","privateMsgId":1}"#,
            53,
        ),
        (
            r#"{"message":"RequestPrivateService","referenceId":905,"thisDn":"5001","privateMsgId":1,"extensions":{"HOST_DN":4001}}"#,
            53,
        ),
        (
            r#"{"message":"RequestRegisterAddress","referenceId":906,"thisDn":"5001","callEvents":"yes"}"#,
            53,
        ),
        (r#"{"message":"RequestQueryServer"}"#, 53),
    ] {
        desk.send_malformed(text).await;
        let reply = desk.until(|m| m.get("referenceId").is_some()).await;
        assert_eq!(reply["errorCode"], code, "{text} → {reply}");
    }
    desk.ws.ws.send(Ws::binary(vec![1u8, 2, 3])).await.unwrap();
    let reply = desk.until(|m| m.get("referenceId").is_some()).await;
    assert_eq!(reply["errorCode"], 53, "binary frame → {reply}");
}

/// A monitor-only application, a protocol version the router does not speak, and a link
/// down (54 at once; a registration accepted while it is down).
async fn access_version_and_link_down<'a>(r: &RouterProcess, log: &'a Log, desk: &mut Desk<'a>) {
    let url = r.url();
    let (mut wall, _) = Desk::open(&url, log, Some(WALL_TOKEN), None).await;
    wall.refused(register("5004", false), 53).await;
    let monitor =
        json!({"message": "RequestRegisterAddress", "thisDn": "5004", "registerMode": "monitor"});
    let reply = wall.request(monitor).await;
    assert_eq!(reply["registerMode"], "monitor", "{reply}");
    wall.close().await;
    let mut old = Desk::connect(&url, log).await;
    old.send_malformed(&format!(
        r#"{{"message":"RequestOpen","referenceId":1,"protocolVersion":2,"application":"old","token":"{DESK_TOKEN}"}}"#
    ))
    .await;
    let reply = old.recv().await;
    assert_eq!(reply["errorCode"], 55, "{reply}");
    assert_eq!(old.ws.closed().await, 1002);

    let sw2 = r.controls[1];
    sw2.post_ok("/faults/link", json!({"link": 0, "up": false}))
        .await;
    desk.until(|m| m["message"] == "EventLinkDisconnected" && m["switch"] == "sw2")
        .await;
    let reply = desk.request(register("6001", false)).await;
    assert_eq!(reply["linkState"], "disconnected", "{reply}");
    desk.refused(private("6001", 2, json!({})), 54).await;
    sw2.post_ok("/faults/link", json!({"link": 0, "up": true}))
        .await;
    desk.until(|m| m["message"] == "EventLinkConnected" && m["switch"] == "sw2")
        .await;
}

/// A call with every call event, an account code from the phone and from a desktop, and the
/// calls of a DN as objects and as connIds.
async fn calls<'a>(r: &RouterProcess, log: &'a Log, desk: &mut Desk<'a>) {
    let sw1 = r.controls[0];
    let (mut agent, opened) = Desk::open(&r.url(), log, Some(DESK_TOKEN), None).await;
    let accode = opened["accodeName"].as_str().unwrap().to_owned();
    for dn in ["4010", "5010", "5011", "5012", "5013"] {
        agent.request(register(dn, true)).await;
    }
    desk.request(register("4010", false)).await;
    let made = sw1
        .post_ok(
            "/calls",
            json!({"from": "4010", "to": "5010", "answer": false}),
        )
        .await;
    let id = made["callId"].as_str().unwrap().to_owned();
    agent.until(|m| m["message"] == "EventRinging").await;
    for (action, body) in [
        ("answer", json!({"device": "5010"})),
        ("hold", json!({"device": "5010"})),
        ("retrieve", json!({"device": "5010"})),
        ("account-code", json!({"device": "5010", "code": "1234"})),
    ] {
        sw1.post_ok(&format!("/calls/{id}/{action}"), body).await;
    }
    agent
        .until(|m| m["message"] == "EventPrivateInfo" && m["privateMsgId"] == 501)
        .await;
    let mut extensions = serde_json::Map::new();
    extensions.insert(accode, json!("777"));
    let code = json!({"message": "RequestPrivateService", "thisDn": "5010", "privateMsgId": 501, "extensions": extensions});
    let reply = agent.request(code).await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    let objects = agent.request(query("5010")).await;
    assert!(objects["calls"][0]["callState"].is_string(), "{objects}");
    let plain = desk.request(query("4010")).await;
    assert!(plain["calls"][0].is_string(), "{plain}");
    let moved = sw1
        .post_ok(
            &format!("/calls/{id}/transfer"),
            json!({"from": "5010", "to": "5011", "newCallId": true}),
        )
        .await;
    agent.until(|m| m["message"] == "EventPartyChanged").await;
    let new_id = moved["callId"].as_str().unwrap().to_owned();
    let made = sw1
        .post_ok(
            "/calls",
            json!({"from": "4012", "to": "5012", "answer": false}),
        )
        .await;
    let diverted = made["callId"].as_str().unwrap().to_owned();
    sw1.post_ok(
        &format!("/calls/{diverted}/divert"),
        json!({"from": "5012", "to": "5013"}),
    )
    .await;
    agent.until(|m| m["message"] == "EventDiverted").await;
    for call in [new_id, diverted] {
        sw1.post_ok(&format!("/calls/{call}/clear"), json!({}))
            .await;
    }
    agent.drain().await;
    desk.drain().await;
    agent.close().await;
}

/// A session resumed after its connection dropped (the event it missed replayed), then a link
/// loss after which the switch refuses a monitor (`EventUnregistered` without `referenceId`).
async fn resume_and_link_loss<'a>(r: &RouterProcess, log: &'a Log, desk: &mut Desk<'a>) {
    let sw1 = r.controls[0];
    let (mut away, opened) = Desk::open(&r.url(), log, Some(DESK_TOKEN), None).await;
    let id = opened["sessionId"].as_str().unwrap().to_owned();
    away.request(register("5020", false)).await;
    desk.request(register("5020", false)).await;
    drop(away);
    sw1.post_ok("/hotdesk", json!({"guest": "5020", "host": "4020"}))
        .await;
    desk.until(|m| m["monitoredDn"] == "5020").await;
    let resume = json!({"sessionId": id, "lastEventSeq": {"sw1": 0}});
    let (mut back, reply) = Desk::open(&r.url(), log, Some(DESK_TOKEN), Some(resume)).await;
    assert_eq!(
        (&reply["resumed"], &reply["replayed"]),
        (&json!(true), &json!(1)),
        "{reply}"
    );
    let replayed = back.recv().await;
    assert_eq!(replayed["monitoredDn"], "5020", "{replayed}");
    back.close().await;
    let unknown = json!({"sessionId": "0123456789abcdef0123456789abcdef"});
    let (gone, reply) = Desk::open(&r.url(), log, Some(DESK_TOKEN), Some(unknown)).await;
    assert_eq!(reply["resumed"], false, "{reply}");
    gone.close().await;
    sw1.post_ok("/hotdesk/cancel", json!({"guest": "5020"}))
        .await;
    desk.drain().await;
    // Only the desk has registrations on sw1 now, so the refused monitor is one of its DNs.
    sw1.post_ok(
        "/faults/reject",
        json!({"count": 1, "category": "operation", "value": "invalidDeviceID", "request": "MonitorStart"}),
    )
    .await;
    sw1.post_ok("/faults/drop", json!({})).await;
    let lost = desk
        .until(|m| m["message"] == "EventUnregistered" && m.get("referenceId").is_none())
        .await;
    assert_eq!(lost["errorCode"], 59, "{lost}");
    desk.drain().await;
}

/// `GET /asyncapi.json`: the document compiled in, as `application/json`.
async fn served_document(r: &RouterProcess) -> String {
    let response = http::get(r.metrics, "/asyncapi.json", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{:?}",
        response.headers
    );
    let body = response.text();
    assert_eq!(body, DOCUMENT, "the served document is the one compiled in");
    body
}

/// The scripted session on a router with tokens, and a short one on a router without: the log
/// of everything sent and received, and the document as served.
fn scripted_session(log: &Log) -> String {
    let r = RouterProcess::start("asyncapi", &session_config(true));
    let document = process::runtime().block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let document = served_document(&r).await;
        let (mut desk, _) = Desk::open(&r.url(), log, Some(DESK_TOKEN), None).await;
        hotdesk_and_errors(&r, &mut desk).await;
        access_version_and_link_down(&r, log, &mut desk).await;
        calls(&r, log, &mut desk).await;
        resume_and_link_loss(&r, log, &mut desk).await;
        desk.close().await;
        document
    });
    r.stop();
    let open = RouterProcess::start("asyncapi-open", &session_config(false));
    process::runtime().block_on(async {
        open_without_token(&open, log).await;
    });
    open.stop();
    document
}

/// Without applications configured, `RequestOpen` needs no token.
async fn open_without_token(r: &RouterProcess, log: &Log) {
    r.wait_connected(&["sw1", "sw2"]).await;
    let (mut c, _) = Desk::open(&r.url(), log, None, None).await;
    c.request(json!({"message": "RequestQueryServer"})).await;
    c.close().await;
}

/// Real messages of the session, each broken in one way the document must catch.
fn broken(received: &[Value]) -> Vec<(&'static str, Value)> {
    let first = |name: &str, extra: &dyn Fn(&Value) -> bool| -> Value {
        received
            .iter()
            .find(|m| m["message"] == name && extra(m))
            .unwrap_or_else(|| panic!("the session got no {name}"))
            .clone()
    };
    let any = |_: &Value| true;
    let mut out = Vec::new();
    let mut e = first("EventError", &any);
    e.as_object_mut().unwrap().remove("errorMessage");
    out.push(("EventError without errorMessage", e));
    let mut e = first("EventError", &any);
    e["errorCode"] = json!(e["errorCode"].to_string());
    out.push(("EventError with errorCode a string", e));
    let mut e = first("EventError", &any);
    e["errorCode"] = json!(60);
    out.push(("EventError with a code not in the table", e));
    let mut e = first("EventRinging", &any);
    e["connId"] = json!("0193AB5C2E7F41D2");
    out.push(("call event with a connId in upper case", e));
    let mut e = first("EventEstablished", &any);
    e["connId"] = json!("0193ab5c2e7f41");
    out.push(("call event with a connId of 14 digits", e));
    let mut e = first("EventHeld", &any);
    e["callState"] = json!("established");
    out.push(("EventHeld not held", e));
    let mut e = first("EventRegistered", &any);
    e.as_object_mut().unwrap().remove("switch");
    out.push(("EventRegistered without switch", e));
    let mut e = first("EventRegistered", &any);
    e["registerMode"] = json!("exclusive");
    out.push(("EventRegistered with an unknown registerMode", e));
    let mut e = first("EventServerConnected", &any);
    e["time"] = json!(e["time"].as_str().unwrap().replace('T', " "));
    out.push(("time not RFC 3339", e));
    let mut e = first("EventServerConnected", &|m| m["resumed"] == true);
    e.as_object_mut().unwrap().remove("replayed");
    out.push(("a resume's reply without replayed", e));
    let mut e = first("EventServerConnected", &any);
    e["sessionId"] = json!(7);
    out.push(("sessionId a number", e));
    let mut e = first("EventLinkConnected", &any);
    e["reason"] = json!("exploded");
    out.push(("link event with an unknown reason", e));
    let mut e = first("EventLinkDisconnected", &any);
    e["referenceId"] = json!(3);
    out.push(("event with a referenceId", e));
    let mut e = first("EventPrivateInfo", &|m| {
        m["privateMsgId"] == 1 && m.get("eventSeq").is_some()
    });
    e.as_object_mut().unwrap().remove("eventSeq");
    out.push(("hot-desk event without eventSeq", e));
    let mut e = first("EventAddressInfo", &|m| {
        m["calls"].as_array().is_some_and(|c| !c.is_empty())
    });
    e["calls"] = json!([123]);
    out.push(("calls of numbers", e));
    let mut e = first("EventServerInfo", &any);
    e["switches"][0]["linkState"] = json!("up");
    out.push(("switch with linkState up", e));
    out
}

#[test]
fn every_message_of_a_scripted_session_validates_and_every_schema_is_exercised() {
    let log = Log::default();
    let document = scripted_session(&log);
    let mut cases = log.0.borrow().clone();
    let received = log.received();
    let codes: BTreeSet<u64> = received
        .iter()
        .filter(|m| m["message"] == "EventError")
        .map(|m| m["errorCode"].as_u64().unwrap())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from(CODES_PROVOKED),
        "error codes provoked"
    );
    let broken = broken(&received);
    let first_broken = cases.len();
    cases.extend(broken.iter().map(|(_, v)| (Kind::Broken, v.clone())));
    let verdicts = validate(&document, &cases);
    let (failures, exercised) = judge(&verdicts);
    let failures: Vec<String> = failures
        .into_iter()
        .map(|(i, f)| match i.checked_sub(first_broken) {
            Some(b) => format!("{} — {f}", broken[b].0),
            None => f,
        })
        .collect();
    let doc: Value = serde_json::from_str(&document).unwrap();
    let all: BTreeSet<String> = doc["components"]["messages"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let exempt: BTreeSet<String> = NOT_PROVOKED.iter().map(|(k, _)| (*k).to_owned()).collect();
    assert!(
        exempt.is_subset(&all),
        "NOT_PROVOKED names a message the document lacks"
    );
    let never: Vec<&String> = all
        .difference(&exercised)
        .filter(|k| !exempt.contains(*k))
        .collect();
    let stale: Vec<&String> = exempt.intersection(&exercised).collect();
    println!(
        "{} messages received, {} requests sent, {} broken on purpose; {} schemas exercised",
        received.len(),
        cases.iter().filter(|(k, _)| *k == Kind::Sent).count(),
        broken.len(),
        exercised.len()
    );
    assert!(
        failures.is_empty() && never.is_empty() && stale.is_empty(),
        "{} failures:\n{}\nschemas never exercised: {never:?}\nexercised though listed as not provoked: {stale:?}",
        failures.len(),
        failures.join("\n")
    );
}

/// JSON examples of the README that are not protocol messages (no top-level `message`), by a
/// key that tells what they are. Any other JSON example must be a protocol message.
const NOT_PROTOCOL: &[(&str, &str)] = &[
    (
        "clients",
        "the router's line on stdout with the addresses it bound",
    ),
    (
        "links",
        "pbx-sim's line on stdout with the addresses it bound",
    ),
    ("timestamp", "a log line in --log-format json"),
    ("switches", "the answer of GET /status on metrics-listen"),
    ("generation", "the answer of POST /admin/reload"),
];

/// The README's JSON examples: every line of a ```json block, and every `<< `/`>> ` line (a
/// message received or sent in a transcript) of any block; with their line numbers.
fn readme_examples() -> Vec<(usize, Value)> {
    let readme = include_str!("../README.md");
    let mut out = Vec::new();
    let mut block: Option<&str> = None;
    // The lines of the current ```json block: one JSON value written over several lines, or
    // one value per line.
    let mut json_lines: Vec<(usize, &str)> = Vec::new();
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            if block.is_some() {
                out.extend(json_block(&json_lines));
                json_lines.clear();
            }
            block = if block.is_some() { None } else { Some(lang) };
            continue;
        }
        let Some(lang) = block else { continue };
        match trimmed
            .strip_prefix("<< ")
            .or_else(|| trimmed.strip_prefix(">> "))
        {
            Some(message) => out.push((i + 1, parse_example(i + 1, message))),
            None if lang == "json" && !trimmed.is_empty() => json_lines.push((i + 1, trimmed)),
            None => continue,
        }
    }
    out
}

/// The values of a ```json block: the whole block when it is one value, else each line.
fn json_block(lines: &[(usize, &str)]) -> Vec<(usize, Value)> {
    let Some(&(first, _)) = lines.first() else {
        return Vec::new();
    };
    let whole: Vec<&str> = lines.iter().map(|(_, l)| *l).collect();
    match serde_json::from_str(&whole.join("\n")) {
        Ok(v) => vec![(first, v)],
        Err(_) => lines
            .iter()
            .map(|&(n, text)| (n, parse_example(n, text)))
            .collect(),
    }
}

/// One JSON example of the README (line `line`), or the test fails naming the line.
fn parse_example(line: usize, text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("README line {line}: not JSON ({e}): {text}"))
}

#[test]
fn every_protocol_message_of_the_readme_validates() {
    let mut cases = Vec::new();
    let mut lines = Vec::new();
    for (line, v) in readme_examples() {
        if v.get("message").is_some_and(Value::is_string) {
            cases.push((Kind::Example, v));
            lines.push(line);
        } else {
            assert!(
                NOT_PROTOCOL.iter().any(|(key, _)| v.get(key).is_some()),
                "README line {line}: a JSON example that is neither a protocol message nor listed in NOT_PROTOCOL: {v}"
            );
        }
    }
    let names: BTreeSet<&str> = cases
        .iter()
        .map(|(_, v)| v["message"].as_str().unwrap())
        .collect();
    println!("{} protocol messages in the README: {names:?}", cases.len());
    // The transcript of "Trying it" alone has 24.
    assert!(cases.len() >= 25, "only {} examples found", cases.len());
    let verdicts = validate(DOCUMENT, &cases);
    let (failures, _) = judge(&verdicts);
    let failures: Vec<String> = failures
        .iter()
        .map(|(i, f)| format!("README line {}: {f}", lines[*i]))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The README's program that checks messages (the ```python block of "Protocol description
/// (AsyncAPI)"), run on the document: what it prints for a valid message, an invalid one (as
/// the README says), an event and an unknown name.
#[test]
fn the_readme_program_checks_messages_as_it_says() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## Protocol description (AsyncAPI)\n")
        .nth(1)
        .expect("the README has a section \"Protocol description (AsyncAPI)\"");
    let program = section
        .split("```python\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("the section has a Python program");
    let error = readme_examples()
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["message"] == "EventError" && v["errorCode"] == 41)
        .expect("the README shows an EventError 41");
    let mut wrong = error.clone();
    wrong["errorCode"] = json!("41");
    let event = json!({"message":"EventPrivateInfo","time":"2026-12-06T02:30:28.577Z","privateMsgId":1,"monitoredDn":"4001","switch":"sw1","eventSeq":3,"thisDn":"5001","otherDn":"4001"});
    let input: String = [error, wrong, event, json!({"message": "EventFoo"})]
        .iter()
        .map(|v| format!("{v}\n"))
        .collect();
    let dir = process::files(&[("check.py", program), ("asyncapi.json", DOCUMENT)]);
    let mut child = Command::new("python3")
        .args(["check.py", "asyncapi.json"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (Debian package python3) runs the README's program");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "valid: EventError");
    let prose = section.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        prose.contains(&format!("it prints `{}`", lines[1])),
        "the README says what the program prints for errorCode \"41\"; it prints {}",
        lines[1]
    );
    assert_eq!(lines[2], "valid: EventPrivateInfoHotDeskStarted");
    assert_eq!(lines[3], "no schema named EventFoo");
}
