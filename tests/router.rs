//! The router end to end: real WebSocket clients, the real server, two simulated switches over
//! loopback TCP. Each test checks whole reply objects (all fields but `time`, whose format is
//! checked on every message) and that no second reply arrives.
//!
//! Run with `CSTA_DIALECT=second` to repeat everything with the simulators and switches in the
//! second dialect (ed6 namespace, `EscapeService`, `extensions/privateData`, hex account codes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::router;

use router::{config_text, dialect_from_env, normalized, Client, Router};
use serde_json::{json, Value};
use std::time::Duration;

fn without_message(mut v: Value) -> Value {
    let obj = v.as_object_mut().unwrap();
    obj.remove("errorMessage");
    v
}

/// An `EventError` with everything but its sentence checked; the sentence must be one.
fn assert_error(reply: &Value, code: u64, expected: Value) {
    assert_eq!(reply["message"], "EventError", "{reply}");
    assert_eq!(reply["errorCode"], json!(code), "{reply}");
    let sentence = reply["errorMessage"].as_str().unwrap();
    assert!(
        sentence.len() > 20 && sentence.ends_with('.'),
        "errorMessage should be a sentence a person can act on: {sentence:?}"
    );
    let mut want = expected;
    want["message"] = json!("EventError");
    want["errorCode"] = json!(code);
    want["referenceId"] = reply["referenceId"].clone();
    assert_eq!(normalized(&without_message(reply.clone())), want);
}

#[actix_rt::test]
async fn open_query_server_and_link_events() {
    let r = Router::start().await;
    let mut c = Client::connect(&r.url()).await;
    let reply = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "desk", "unknownField": true}))
        .await;
    assert_eq!(
        normalized(&reply),
        json!({
            "message": "EventServerConnected", "referenceId": reply["referenceId"],
            "protocolVersion": 1, "serverVersion": env!("CARGO_PKG_VERSION"),
            "privateServices": [1, 2, 501], "accodeName": "AccountCode",
            "switches": [
                {"name": "sw1", "linkState": "connected", "simulated": true},
                {"name": "sw2", "linkState": "connected", "simulated": true},
            ],
            "sessionId": "<session>", "sessionLinger": 60,
        })
    );
    for sw in ["sw1", "sw2"] {
        let ev = c.recv().await;
        assert_eq!(
            normalized(&ev),
            json!({"message": "EventLinkConnected", "switch": sw, "link": 0})
        );
    }
    let info = c.request(json!({"message": "RequestQueryServer"})).await;
    assert_eq!(
        normalized(&info),
        json!({
            "message": "EventServerInfo", "referenceId": info["referenceId"],
            "serverVersion": env!("CARGO_PKG_VERSION"),
            "switches": [
                {"name": "sw1", "linkState": "connected", "activeLink": 0, "simulated": true},
                {"name": "sw2", "linkState": "connected", "activeLink": 0, "simulated": true},
            ],
        })
    );
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn protocol_errors_get_the_codes_of_the_spec() {
    let r = Router::start().await;
    // Anything before RequestOpen closes with 1008.
    let mut c = Client::connect(&r.url()).await;
    c.send(&json!({"message": "RequestQueryServer", "referenceId": 1}))
        .await;
    assert_eq!(c.closed().await, 1008);
    let mut c = Client::connect(&r.url()).await;
    c.send_text("not json").await;
    assert_eq!(c.closed().await, 1008);

    // A protocol version other than 1: 55, then closed.
    let mut c = Client::connect(&r.url()).await;
    let reply = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 2, "application": "old"}))
        .await;
    assert_error(&reply, 55, json!({}));
    c.closed().await;

    let mut c = r.client().await;
    // A second RequestOpen: 53, connection stays.
    let reply = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "again"}))
        .await;
    assert_error(&reply, 53, json!({}));
    // Not JSON: 53 with referenceId 0.
    c.send_text("{oops").await;
    let reply = c.recv().await;
    assert_eq!(reply["referenceId"], 0);
    assert_error(&reply, 53, json!({}));
    c.expect_nothing().await;
    // Unknown message: 51.
    let reply = c
        .request(json!({"message": "RequestMakeCall", "thisDn": "5001"}))
        .await;
    assert_error(&reply, 51, json!({}));
    // Wrong field type: 53 naming the DN.
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": 4001}}))
        .await;
    assert_error(&reply, 53, json!({"thisDn": "5001"}));
    // A binary frame: 53.
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    let reply = c.recv().await;
    assert_error(&reply, 53, json!({}));
    c.expect_nothing().await;
    // Still usable.
    let info = c.request(json!({"message": "RequestQueryServer"})).await;
    assert_eq!(info["message"], "EventServerInfo");
    r.stop().await;
}

#[actix_rt::test]
async fn register_unregister_and_query_address() {
    let r = Router::start().await;
    let mut c = r.client().await;
    let reply = c.register("5001").await;
    assert_eq!(
        normalized(&reply),
        json!({
            "message": "EventRegistered", "referenceId": reply["referenceId"],
            "thisDn": "5001", "switch": "sw1", "registerMode": "share", "callEvents": false,
            "linkState": "connected", "hotDesk": null, "hotDeskKnown": false,
        })
    );
    c.expect_nothing().await;
    // Registering again replaces the mode.
    let reply = c
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "5001", "registerMode": "monitor"}))
        .await;
    assert_eq!(reply["registerMode"], "monitor");
    assert_eq!(
        r.sw1.state().await["monitors"].as_array().unwrap().len(),
        1,
        "one MonitorStart per DN"
    );
    let reply = c
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "9999"}))
        .await;
    assert_error(&reply, 59, json!({"thisDn": "9999"}));

    let reply = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5001"}))
        .await;
    assert_eq!(
        normalized(&reply),
        json!({
            "message": "EventAddressInfo", "referenceId": reply["referenceId"],
            "thisDn": "5001", "switch": "sw1", "hotDesk": null, "hotDeskKnown": false, "calls": [],
        })
    );
    let reply = c
        .request(json!({"message": "RequestUnregisterAddress", "thisDn": "5001"}))
        .await;
    assert_eq!(
        normalized(&reply),
        json!({"message": "EventUnregistered", "referenceId": reply["referenceId"], "thisDn": "5001"})
    );
    let reply = c
        .request(json!({"message": "RequestUnregisterAddress", "thisDn": "5001"}))
        .await;
    assert_error(&reply, 41, json!({"thisDn": "5001", "switch": "sw1"}));
    c.expect_nothing().await;
    // The last registration gone, the monitor is stopped.
    for _ in 0..100 {
        if r.sw1.state().await["monitors"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(r.sw1.state().await["monitors"]
        .as_array()
        .unwrap()
        .is_empty());
    r.stop().await;
}

#[actix_rt::test]
async fn registration_rejections_are_mapped() {
    let r = Router::start().await;
    let mut c = r.client().await;
    for (category, value, code) in [
        ("operation", "invalidDeviceID", 59),
        (
            "subscribedResourceAvailability",
            "objectMonitorLimitExceeded",
            111,
        ),
    ] {
        r.sw1
            .post_ok("/faults/reject", json!({"count": 1, "category": category, "value": value, "request": "MonitorStart"}))
            .await;
        let reply = c
            .request(json!({"message": "RequestRegisterAddress", "thisDn": "5001"}))
            .await;
        assert_error(
            &reply,
            code,
            json!({"thisDn": "5001", "switch": "sw1", "extensions": {"CSTAError": format!("{category}/{value}")}}),
        );
        c.expect_nothing().await;
    }
    // No answer: 57, and nothing registered.
    r.sw1.post_ok("/faults/stall", json!({"on": true})).await;
    let reply = c
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "5001"}))
        .await;
    assert_error(&reply, 57, json!({"thisDn": "5001", "switch": "sw1"}));
    r.sw1.post_ok("/faults/stall", json!({"on": false})).await;
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 2}))
        .await;
    assert_error(&reply, 41, json!({"thisDn": "5001", "switch": "sw1"}));
    r.stop().await;
}

/// Private service 1 and 2 end to end, with the events to guest and host clients.
#[actix_rt::test]
async fn hotdesk_initiate_and_cancel_with_events_to_guest_and_host() {
    let r = Router::start().await;
    let mut guest = r.client().await;
    let mut host = r.client().await;
    guest.register("5001").await;
    host.register("4001").await;

    let reply = guest
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "4001"}}))
        .await;
    assert_eq!(
        normalized(&reply),
        json!({
            "message": "EventPrivateInfo", "referenceId": reply["referenceId"], "privateMsgId": 1,
            "thisDn": "5001", "otherDn": "4001", "switch": "sw1", "extensions": {"HOST_DN": "4001"},
        })
    );
    let ev = guest.recv().await;
    assert_eq!(
        normalized(&ev),
        json!({"message": "EventPrivateInfo", "privateMsgId": 1, "thisDn": "5001", "otherDn": "4001",
               "monitoredDn": "5001", "switch": "sw1", "eventSeq": "<seq>"})
    );
    let hev = host.recv().await;
    assert_eq!(
        normalized(&hev),
        json!({"message": "EventPrivateInfo", "privateMsgId": 1, "thisDn": "5001", "otherDn": "4001",
               "monitoredDn": "4001", "switch": "sw1", "eventSeq": "<seq>"})
    );
    guest.expect_nothing().await;
    host.expect_nothing().await;

    let q = guest
        .request(json!({"message": "RequestQueryAddress", "thisDn": "4001"}))
        .await;
    assert_eq!(q["hotDesk"], json!({"guestDn": "5001", "hostDn": "4001"}));
    assert_eq!(q["hotDeskKnown"], true);

    // Already associated: 42 with the switch's error.
    let reply = guest
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "4002"}}))
        .await;
    assert_error(
        &reply,
        42,
        json!({"thisDn": "5001", "switch": "sw1", "extensions": {"CSTAError": "stateIncompatibility/invalidObjectState"}}),
    );
    guest.expect_nothing().await;

    let reply = guest
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 2}))
        .await;
    assert_eq!(
        normalized(&reply),
        json!({
            "message": "EventPrivateInfo", "referenceId": reply["referenceId"], "privateMsgId": 2,
            "thisDn": "5001", "otherDn": "4001", "switch": "sw1", "extensions": {},
        })
    );
    let ev = guest.recv().await;
    assert_eq!(ev["privateMsgId"], 2);
    assert_eq!(ev["otherDn"], "4001");
    assert_eq!(host.recv().await["privateMsgId"], 2);
    // Nothing to cancel: 43.
    let reply = guest
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 2}))
        .await;
    assert_error(
        &reply,
        43,
        json!({"thisDn": "5001", "switch": "sw1", "extensions": {"CSTAError": "stateIncompatibility/invalidObjectState"}}),
    );
    guest.expect_nothing().await;
    host.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn private_service_refusals_made_by_the_router() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("5001").await;
    let ps = |ext: Value, id: u64| json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": id, "extensions": ext});
    let dn = json!({"thisDn": "5001", "switch": "sw1"});
    assert_error(&c.request(ps(json!({}), 1)).await, 53, dn.clone());
    assert_error(
        &c.request(ps(json!({"HOST_DN": "5001"}), 1)).await,
        53,
        dn.clone(),
    );
    assert_error(
        &c.request(ps(json!({"HOST_DN": "6001"}), 1)).await,
        53,
        dn.clone(),
    );
    assert_error(
        &c.request(ps(json!({"HOST_DN": "9999"}), 1)).await,
        59,
        dn.clone(),
    );
    assert_error(&c.request(ps(json!({}), 7)).await, 51, dn.clone());
    assert_error(&c.request(ps(json!({}), 501)).await, 53, dn.clone());
    assert_error(
        &c.request(ps(json!({"AccountCode": "x".repeat(33)}), 501))
            .await,
        53,
        dn.clone(),
    );
    assert_error(
        &c.request(ps(json!({"AccountCode": "123"}), 501)).await,
        56,
        dn.clone(),
    );
    // Not registered, and registered in monitor mode: 41.
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5002", "privateMsgId": 2}))
        .await;
    assert_error(&reply, 41, json!({"thisDn": "5002", "switch": "sw1"}));
    assert!(reply["errorMessage"]
        .as_str()
        .unwrap()
        .contains("not registered"));
    c.request(
        json!({"message": "RequestRegisterAddress", "thisDn": "5001", "registerMode": "monitor"}),
    )
    .await;
    let reply = c.request(ps(json!({}), 2)).await;
    assert_error(&reply, 41, dn.clone());
    assert!(reply["errorMessage"]
        .as_str()
        .unwrap()
        .contains("monitor mode"));
    // A DN in no plan: 59.
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "123", "privateMsgId": 2}))
        .await;
    assert_error(&reply, 59, json!({"thisDn": "123"}));
    c.expect_nothing().await;
    assert!(r.sw1.state().await["associations"]
        .as_array()
        .unwrap()
        .is_empty());
    r.stop().await;
}

#[actix_rt::test]
async fn switch_rejections_map_to_the_codes_of_the_spec() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("5001").await;
    for (category, value, code) in [
        ("operation", "invalidDeviceID", 59),
        ("operation", "objectNotKnown", 59),
        ("systemResourceAvailability", "deviceOutOfService", 58),
        ("systemResourceAvailibility", "resourceBusy", 111),
        (
            "subscribedResourceAvailability",
            "resourceLimitExceeded",
            111,
        ),
        ("performanceManagement", "performanceLimitExceeded", 111),
        ("unspecified", "unspecified", 50),
        ("privateErrorCode", "guest-locked-by-supervisor", 50),
    ] {
        r.sw1
            .post_ok(
                "/faults/reject",
                json!({"count": 1, "category": category, "value": value, "request": "Escape"}),
            )
            .await;
        let reply = c
            .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "4001"}}))
            .await;
        let canonical = category.replace("Availibility", "Availability");
        assert_error(
            &reply,
            code,
            json!({"thisDn": "5001", "switch": "sw1", "extensions": {"CSTAError": format!("{canonical}/{value}")}}),
        );
        if category == "privateErrorCode" {
            assert!(reply["errorMessage"].as_str().unwrap().contains(value));
        }
        c.expect_nothing().await;
    }
    // Account codes: invalidCallID/invalidConnectionID → 56, invalidAccountCode → 53,
    // stateIncompatibility → 56.
    r.sw1
        .post_ok("/calls", json!({"from": "5001", "to": "5002"}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (category, value, code) in [
        ("operation", "invalidCallID", 56),
        ("operation", "invalidConnectionID", 56),
        ("operation", "invalidAccountCode", 53),
        ("stateIncompatibility", "invalidObjectState", 56),
    ] {
        r.sw1
            .post_ok("/faults/reject", json!({"count": 1, "category": category, "value": value, "request": "AssociateData"}))
            .await;
        let reply = c
            .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 501, "extensions": {"AccountCode": "42"}}))
            .await;
        assert_error(
            &reply,
            code,
            json!({"thisDn": "5001", "switch": "sw1", "extensions": {"CSTAError": format!("{category}/{value}")}}),
        );
    }
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn timeouts_and_link_loss() {
    let r = Router::start().await;
    let mut c = r.client().await;
    let mut other = r.client().await;
    c.register("5001").await;
    other.register("4001").await;
    // No answer: 57.
    r.sw1.post_ok("/faults/stall", json!({"on": true})).await;
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 2}))
        .await;
    assert_error(&reply, 57, json!({"thisDn": "5001", "switch": "sw1"}));
    r.sw1.post_ok("/faults/stall", json!({"on": false})).await;

    // In flight when the link drops: 54 at once, EventLinkDisconnected to every client, then
    // the link is back with its monitors and events flow again.
    r.sw1.post_ok("/faults/delay", json!({"ms": 600})).await;
    c.send(&json!({"message": "RequestPrivateService", "referenceId": 777, "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "4001"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.sw1.post_ok("/faults/drop", json!({})).await;
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by_key(|v| v["message"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["referenceId"], 777);
    assert_error(&got[0], 54, json!({"thisDn": "5001", "switch": "sw1"}));
    assert!(got[0]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("may or may not"));
    assert_eq!(
        normalized(&got[1]),
        json!({"message": "EventLinkDisconnected", "switch": "sw1", "link": 0})
    );
    assert_eq!(
        normalized(&other.recv().await),
        json!({"message": "EventLinkDisconnected", "switch": "sw1", "link": 0})
    );
    r.sw1.post_ok("/faults/delay", json!({"ms": 0})).await;
    assert_eq!(
        normalized(&c.recv().await),
        json!({"message": "EventLinkConnected", "switch": "sw1", "link": 0})
    );
    assert_eq!(
        normalized(&other.recv().await),
        json!({"message": "EventLinkConnected", "switch": "sw1", "link": 0})
    );
    // Hot-desk state is unknown after the loss, registrations kept.
    let q = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5001"}))
        .await;
    assert_eq!(q["hotDeskKnown"], false);
    r.sw1
        .post_ok("/hotdesk", json!({"guest": "5001", "host": "4001"}))
        .await;
    let ev = c.recv().await;
    assert_eq!(
        (ev["privateMsgId"].clone(), ev["monitoredDn"].clone()),
        (json!(1), json!("5001"))
    );
    let ev = other.recv().await;
    assert_eq!(
        (ev["privateMsgId"].clone(), ev["monitoredDn"].clone()),
        (json!(1), json!("4001"))
    );
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn two_switches_route_by_dn_plan() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("6001").await;
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "6001", "privateMsgId": 1, "extensions": {"HOST_DN": "7001"}}))
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo");
    assert_eq!(reply["switch"], "sw2");
    let ev = c.recv().await;
    assert_eq!(ev["switch"], "sw2");
    assert_eq!(
        r.sw2.state().await["associations"],
        json!([{"guest": "6001", "host": "7001"}])
    );
    assert_eq!(r.sw1.state().await["associations"], json!([]));
    assert!(r.sw1.state().await["monitors"]
        .as_array()
        .unwrap()
        .is_empty());
    r.stop().await;
}

#[actix_rt::test]
async fn phone_hotdesk_reaches_guest_and_host_clients() {
    let r = Router::start().await;
    let mut both = r.client().await;
    let mut guest = r.client().await;
    both.register("5003").await;
    both.register("4003").await;
    guest
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "5003", "registerMode": "monitor"}))
        .await;
    r.sw1
        .post_ok("/hotdesk", json!({"guest": "5003", "host": "4003"}))
        .await;
    let mut copies = [both.recv().await, both.recv().await];
    copies.sort_by_key(|v| v["monitoredDn"].as_str().unwrap().to_owned());
    for (copy, monitored) in copies.iter().zip(["4003", "5003"]) {
        assert_eq!(
            normalized(copy),
            json!({"message": "EventPrivateInfo", "privateMsgId": 1, "thisDn": "5003", "otherDn": "4003",
                   "monitoredDn": monitored, "switch": "sw1", "eventSeq": "<seq>"})
        );
    }
    assert_ne!(
        copies[0]["eventSeq"], copies[1]["eventSeq"],
        "two CSTA events"
    );
    let g = guest.recv().await;
    assert_eq!(g["monitoredDn"], "5003");
    assert_eq!(
        g["eventSeq"], copies[1]["eventSeq"],
        "copies of one CSTA event share eventSeq"
    );
    both.expect_nothing().await;
    guest.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn account_codes_from_the_phone_and_from_clients() {
    let r = Router::start().await;
    let mut a = r.client().await;
    let mut b = r.client().await;
    a.register("5011").await;
    b.register("5012").await;
    let call = r
        .sw1
        .post_ok("/calls", json!({"from": "5011", "to": "5012"}))
        .await;
    let call_id = call["callId"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let qa = a
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5011"}))
        .await;
    let qb = b
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5012"}))
        .await;
    let conn_id = qa["calls"][0].as_str().unwrap().to_owned();
    assert_eq!(conn_id.len(), 16);
    assert!(conn_id
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(
        qb["calls"],
        json!([conn_id.clone()]),
        "one connId for the call at every device"
    );

    // Entered on the phone at 5011: delivered from 5011's monitor only.
    r.sw1
        .post_ok(
            &format!("/calls/{call_id}/account-code"),
            json!({"device": "5011", "code": "4711"}),
        )
        .await;
    let ev = a.recv().await;
    assert_eq!(
        normalized(&ev),
        json!({"message": "EventPrivateInfo", "privateMsgId": 501, "thisDn": "5011", "connId": conn_id,
               "extensions": {"AccountCode": "4711"}, "monitoredDn": "5011", "switch": "sw1", "eventSeq": "<seq>"})
    );
    b.expect_nothing().await;

    // Set by the client, without and with connId.
    let reply = a
        .request(json!({"message": "RequestPrivateService", "thisDn": "5011", "privateMsgId": 501, "extensions": {"AccountCode": "99"}}))
        .await;
    assert_eq!(
        normalized(&reply),
        json!({"message": "EventPrivateInfo", "referenceId": reply["referenceId"], "privateMsgId": 501,
               "thisDn": "5011", "connId": conn_id, "switch": "sw1", "extensions": {"AccountCode": "99"}})
    );
    let ev = a.recv().await;
    assert_eq!(
        (ev["privateMsgId"].clone(), ev["connId"].clone()),
        (json!(501), json!(conn_id))
    );
    assert_eq!(ev["extensions"]["AccountCode"], "99");
    let reply = a
        .request(json!({"message": "RequestPrivateService", "thisDn": "5011", "privateMsgId": 501, "connId": conn_id, "extensions": {"AccountCode": "100"}}))
        .await;
    assert_eq!(reply["connId"], json!(conn_id));
    assert_eq!(a.recv().await["extensions"]["AccountCode"], "100");
    let reply = a
        .request(json!({"message": "RequestPrivateService", "thisDn": "5011", "privateMsgId": 501, "connId": "00000000000000ff", "extensions": {"AccountCode": "1"}}))
        .await;
    assert_error(&reply, 56, json!({"thisDn": "5011", "switch": "sw1"}));
    b.expect_nothing().await;

    // Transferred away from 5011: no active call there any more.
    r.sw1
        .post_ok(
            &format!("/calls/{call_id}/transfer"),
            json!({"from": "5011", "to": "5013"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = a
        .request(json!({"message": "RequestPrivateService", "thisDn": "5011", "privateMsgId": 501, "extensions": {"AccountCode": "7"}}))
        .await;
    assert_error(&reply, 56, json!({"thisDn": "5011", "switch": "sw1"}));
    let reply = a
        .request(json!({"message": "RequestPrivateService", "thisDn": "5011", "privateMsgId": 501, "connId": conn_id, "extensions": {"AccountCode": "7"}}))
        .await;
    assert_error(&reply, 56, json!({"thisDn": "5011", "switch": "sw1"}));
    a.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn account_codes_switched_off() {
    let r = Router::with(&config_text(
        "accode-privateservice = false",
        dialect_from_env(),
    ))
    .await;
    let mut c = r.client().await;
    c.register("5021").await;
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5021", "privateMsgId": 501, "extensions": {"AccountCode": "1"}}))
        .await;
    assert_error(&reply, 51, json!({"thisDn": "5021", "switch": "sw1"}));
    let call = r
        .sw1
        .post_ok("/calls", json!({"from": "5021", "to": "5022"}))
        .await;
    r.sw1
        .post_ok(
            &format!("/calls/{}/account-code", call["callId"].as_str().unwrap()),
            json!({"device": "5021", "code": "1"}),
        )
        .await;
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn fifty_pipelined_requests_on_one_dn_are_answered_in_order() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("5031").await;
    r.sw1
        .post_ok("/faults/delay", json!({"minMs": 0, "maxMs": 20, "seed": 3}))
        .await;
    for i in 0..50u64 {
        let msg = if i % 2 == 0 {
            json!({"message": "RequestPrivateService", "referenceId": 1000 + i, "thisDn": "5031", "privateMsgId": 1, "extensions": {"HOST_DN": "4031"}})
        } else {
            json!({"message": "RequestPrivateService", "referenceId": 1000 + i, "thisDn": "5031", "privateMsgId": 2})
        };
        c.send(&msg).await;
    }
    let mut replies = Vec::new();
    let mut events = Vec::new();
    while replies.len() < 50 || events.len() < 50 {
        let m = c.recv().await;
        if m.get("referenceId").is_some() {
            replies.push(m);
        } else {
            events.push(m);
        }
    }
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["referenceId"], json!(1000 + i as u64), "in order");
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        assert_eq!(reply["privateMsgId"], json!(if i % 2 == 0 { 1 } else { 2 }));
    }
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["eventSeq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events in order: {seqs:?}"
    );
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn one_client_on_guest_and_host_gets_reply_and_events_in_frame_order() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("5091").await;
    c.register("4091").await;
    for round in 0..20 {
        for (id, ext) in [(1, json!({"HOST_DN": "4091"})), (2, json!({}))] {
            let reply = c
                .request(json!({"message": "RequestPrivateService", "thisDn": "5091", "privateMsgId": id, "extensions": ext}))
                .await;
            assert_eq!(
                reply["message"], "EventPrivateInfo",
                "round {round}: the reply comes first: {reply}"
            );
            let a = c.recv().await;
            let b = c.recv().await;
            assert_eq!(
                (a["privateMsgId"].clone(), b["privateMsgId"].clone()),
                (json!(id), json!(id))
            );
            assert!(
                a["eventSeq"].as_u64().unwrap() < b["eventSeq"].as_u64().unwrap(),
                "round {round}: events in the order the switch sent them: {a} then {b}"
            );
        }
    }
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn events_of_several_dns_of_a_switch_reach_a_client_in_switch_order() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("5095").await;
    c.register("4095").await;
    let rounds = 500;
    r.sw1
        .post_ok(
            "/burst",
            json!({"guest": "5095", "host": "4095", "count": rounds}),
        )
        .await;
    let mut last = 0;
    let mut per_dn = std::collections::HashMap::new();
    for _ in 0..4 * rounds {
        let ev = c.recv().await;
        let seq = ev["eventSeq"].as_u64().unwrap();
        assert!(seq > last, "eventSeq {seq} after {last}: {ev}");
        last = seq;
        *per_dn
            .entry(ev["monitoredDn"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(per_dn["5095"], 2 * rounds);
    assert_eq!(per_dn["4095"], 2 * rounds);
    c.expect_nothing().await;
    r.stop().await;
}
