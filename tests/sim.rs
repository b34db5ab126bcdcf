#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The PBX simulator seen from outside: a raw CSTA client (tokio + `CstaCodec`) on its links and
//! the HTTP control API, on loopback ports chosen by the OS.

mod common;
use common::sim_control;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use csta_router::csta::{
    encode_frame, AccodeEncoding, CallEvent, CallEventKind, Connection, CstaCodec, CstaError,
    Dialect, EscapeRoot, Frame, FrameError, HotDeskAction, HotDeskEvent, HotDeskRequest,
    HotDeskState, InvokeId, Message, PrivateDataPosition,
};
use csta_router::dnplan::DnPlan;
use csta_router::sim::{SimConfig, Simulator};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sim_control::SimControl;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(3);

// ----- helpers -------------------------------------------------------------------------------

async fn start(links: usize, dialect: Dialect) -> (Simulator, SimControl) {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(SimConfig {
        name: "sw1".to_owned(),
        dns: DnPlan::parse(&["4000-4999", "5000-5999"]).unwrap(),
        links: vec![local; links],
        control: Some(local),
        dialect,
    })
    .await
    .unwrap();
    let ctl = SimControl {
        addr: sim.control_addr().unwrap(),
    };
    (sim, ctl)
}

async fn sim(links: usize) -> (Simulator, SimControl) {
    start(links, Dialect::default()).await
}

/// A raw CSTA client.
struct Client {
    framed: Framed<TcpStream, CstaCodec>,
    dialect: Dialect,
}

impl Client {
    /// Connect and check the switch's greeting.
    async fn connect(addr: SocketAddr) -> Client {
        Client::connect_with(addr, Dialect::default()).await
    }

    async fn connect_with(addr: SocketAddr, dialect: Dialect) -> Client {
        let mut c = Client::connect_raw(addr, dialect).await;
        let (invoke, msg) = c.recv().await;
        assert_eq!(invoke, 0, "the greeting comes on invoke 0000");
        assert_eq!(
            msg,
            Message::SystemStatus {
                status: "enabled".into()
            }
        );
        c.send(0, &Message::SystemStatusResponse).await;
        c
    }

    async fn connect_raw(addr: SocketAddr, dialect: Dialect) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client {
            framed: Framed::new(stream, CstaCodec),
            dialect,
        }
    }

    async fn send(&mut self, invoke: u16, msg: &Message) {
        let frame = encode_frame(InvokeId::new(invoke).unwrap(), msg, &self.dialect).unwrap();
        self.framed.send(frame).await.unwrap();
    }

    async fn send_body(&mut self, invoke: u16, body: &str) {
        let frame = Frame::new(InvokeId::new(invoke).unwrap(), body.to_owned());
        self.framed.send(frame).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.framed.get_mut().write_all(bytes).await.unwrap();
    }

    async fn next(&mut self) -> Option<Result<Frame, FrameError>> {
        tokio::time::timeout(WAIT, self.framed.next())
            .await
            .expect("nothing from the switch in time")
    }

    async fn frame(&mut self) -> Frame {
        match self.next().await {
            Some(Ok(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    async fn recv(&mut self) -> (u16, Message) {
        let frame = self.frame().await;
        let msg = Message::decode(&frame.body, &self.dialect).unwrap();
        (frame.invoke_id.get(), msg)
    }

    /// The next message, which must be an event (invoke 9999).
    async fn event(&mut self) -> Message {
        let (invoke, msg) = self.recv().await;
        assert_eq!(
            invoke,
            InvokeId::EVENT.get(),
            "events come on invoke 9999: {msg:?}"
        );
        msg
    }

    async fn request(&mut self, invoke: u16, msg: &Message) -> Message {
        self.send(invoke, msg).await;
        let (got, answer) = self.recv().await;
        assert_eq!(got, invoke, "the answer carries the request's invoke ID");
        answer
    }

    async fn monitor(&mut self, invoke: u16, device: &str) -> String {
        let answer = self
            .request(
                invoke,
                &Message::MonitorStart {
                    device: device.into(),
                },
            )
            .await;
        match answer {
            Message::MonitorStartResponse { cross_ref } => cross_ref,
            other => panic!("MonitorStart {device}: {other:?}"),
        }
    }

    /// Nothing arrives for `ms` milliseconds.
    async fn quiet(&mut self, ms: u64) {
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(ms), self.framed.next()).await {
            panic!("expected silence, got {got:?}");
        }
    }

    /// The switch closes the connection (end of stream or reset), with no frame before.
    async fn closed(&mut self) {
        match self.next().await {
            None | Some(Err(FrameError::Io(_))) => {}
            Some(other) => panic!("expected the connection to close, got {other:?}"),
        }
    }
}

fn err(category: &str, value: &str) -> Message {
    Message::Error(CstaError::new(category, value))
}

fn associate(guest: &str, host: &str) -> Message {
    Message::Escape(HotDeskRequest {
        guest: guest.into(),
        action: HotDeskAction::Associate { host: host.into() },
    })
}

fn cancel(guest: &str) -> Message {
    Message::Escape(HotDeskRequest {
        guest: guest.into(),
        action: HotDeskAction::Cancel,
    })
}

fn hotdesk_event(x: &str, state: HotDeskState, guest: &str, host: &str) -> Message {
    Message::PrivateEvent {
        cross_ref: Some(x.into()),
        event: HotDeskEvent {
            state,
            guest: guest.into(),
            host: Some(host.into()),
        },
    }
}

fn call_event(
    kind: CallEventKind,
    x: &str,
    call: &str,
    at: Option<&str>,
    device: Option<&str>,
    other: Option<&str>,
) -> Message {
    Message::Call(CallEvent {
        kind,
        cross_ref: Some(x.into()),
        connection: Connection {
            call_id: Some(call.into()),
            device_id: at.map(Into::into),
        },
        device: device.map(Into::into),
        other_device: other.map(Into::into),
        cause: Some(kind.default_cause().to_owned()),
        changes: vec![],
    })
}

fn call_info(x: &str, call: &str, device: &str, code: &str) -> Message {
    Message::CallInformation {
        cross_ref: Some(x.into()),
        connection: Connection::new(call, device),
        device: Some(device.into()),
        account_code: Some(code.into()),
    }
}

fn system_status() -> Message {
    Message::RequestSystemStatus
}

fn status(s: &str) -> Message {
    Message::RequestSystemStatusResponse { status: s.into() }
}

/// Poll `GET /state` until `pred` holds.
async fn wait_state(ctl: &SimControl, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = ctl.state().await;
        if pred(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "state never matched: {state}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ----- link basics ---------------------------------------------------------------------------

#[actix_rt::test]
async fn greeting_and_system_status() {
    let (sim, ctl) = sim(1).await;
    let link = sim.link_addrs()[0];
    assert_ne!(link.port(), 0);
    let mut c = Client::connect(link).await;
    assert_eq!(c.request(42, &system_status()).await, status("normal"));
    let last = InvokeId::LAST_REQUEST;
    assert_eq!(c.request(last, &system_status()).await, status("normal"));

    ctl.post_ok("/faults/status", json!({"status": "disabled"}))
        .await;
    assert_eq!(c.request(43, &system_status()).await, status("disabled"));

    let state = ctl.state().await;
    assert_eq!(state["name"], "sw1");
    assert_eq!(state["links"][0]["address"], link.to_string());
    assert_eq!(state["links"][0]["connections"], 1);
    // Three requests; the SystemStatusResponse to the greeting is not one.
    assert_eq!(state["links"][0]["requests"], 3);
    sim.shutdown();
}

#[actix_rt::test]
async fn monitors_start_stop_and_vanish_with_their_connection() {
    let (sim, ctl) = sim(1).await;
    let link = sim.link_addrs()[0];
    let mut c = Client::connect(link).await;
    let x1 = c.monitor(1, "5001").await;
    let x2 = c.monitor(2, "5001").await;
    assert_ne!(
        x1, x2,
        "two monitors on one device have their own cross-refs"
    );
    let unknown = c
        .request(
            3,
            &Message::MonitorStart {
                device: "7001".into(),
            },
        )
        .await;
    assert_eq!(unknown, err("operation", "invalidDeviceID"));

    let state = ctl.state().await;
    assert_eq!(
        state["monitors"],
        json!([{"crossRef": x1, "device": "5001", "link": 0}, {"crossRef": x2, "device": "5001", "link": 0}])
    );

    let stop = c
        .request(
            4,
            &Message::MonitorStop {
                cross_ref: x1.clone(),
            },
        )
        .await;
    assert_eq!(stop, Message::MonitorStopResponse);
    let again = c.request(5, &Message::MonitorStop { cross_ref: x1 }).await;
    assert_eq!(again, err("operation", "invalidCrossRefID"));

    // Another connection cannot stop this one's monitor.
    let mut other = Client::connect(link).await;
    let foreign = other
        .request(
            1,
            &Message::MonitorStop {
                cross_ref: x2.clone(),
            },
        )
        .await;
    assert_eq!(foreign, err("operation", "invalidCrossRefID"));

    drop(c);
    wait_state(&ctl, |s| s["monitors"] == json!([])).await;
    sim.shutdown();
}

#[actix_rt::test]
async fn unknown_requests_and_broken_frames_from_the_client() {
    let (sim, ctl) = sim(1).await;
    let mut c = Client::connect(sim.link_addrs()[0]).await;
    let ns = csta_router::csta::dialect::CSTA_ED3_NAMESPACE;
    c.send_body(7, &format!("<MakeCall xmlns=\"{ns}\"/>")).await;
    assert_eq!(c.recv().await, (7, err("unspecified", "generic")));

    // XML that does not decode is skipped and counted; the link stays usable.
    c.send_body(8, "<MonitorStart><monitorObject>").await;
    c.send_body(9, &format!("<MonitorStart xmlns=\"{ns}\"/>"))
        .await;
    assert_eq!(c.request(10, &system_status()).await, status("normal"));
    assert_eq!(ctl.state().await["decodeErrors"], 2);

    // An empty account code is refused, not ignored.
    let empty = format!(
        "<AssociateData xmlns=\"{ns}\"><existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall><accountCode></accountCode></AssociateData>"
    );
    c.send_body(11, &empty).await;
    assert_eq!(c.recv().await, (11, err("operation", "invalidAccountCode")));

    // A broken frame header makes the stream unusable: the switch closes the link.
    c.send_raw(b"HELLO, SWITCH!").await;
    c.closed().await;
    sim.shutdown();
}

// ----- hot-desking ---------------------------------------------------------------------------

#[actix_rt::test]
async fn hotdesk_over_csta_answers_first_then_events_on_guest_and_host_monitors() {
    let (sim, ctl) = sim(2).await;
    let links = sim.link_addrs();
    let mut a = Client::connect(links[0]).await;
    let mut b = Client::connect(links[1]).await;
    let xg = a.monitor(1, "5001").await;
    let xg2 = a.monitor(2, "5001").await;
    let xh = b.monitor(1, "4001").await;

    a.send(3, &associate("5001", "4001")).await;
    assert_eq!(a.recv().await, (3, Message::EscapeResponse));
    assert_eq!(
        a.event().await,
        hotdesk_event(&xg, HotDeskState::Established, "5001", "4001")
    );
    assert_eq!(
        a.event().await,
        hotdesk_event(&xg2, HotDeskState::Established, "5001", "4001")
    );
    assert_eq!(
        b.event().await,
        hotdesk_event(&xh, HotDeskState::Established, "5001", "4001")
    );
    assert_eq!(
        ctl.state().await["associations"],
        json!([{"guest": "5001", "host": "4001"}])
    );

    // The guest is associated: again (even with another host) is refused; so is another
    // guest on the same host.
    for (invoke, req) in [
        (4, associate("5001", "4001")),
        (5, associate("5001", "4002")),
        (6, associate("5002", "4001")),
    ] {
        assert_eq!(
            a.request(invoke, &req).await,
            err("stateIncompatibility", "invalidObjectState")
        );
    }
    assert_eq!(
        a.request(7, &associate("5002", "9999")).await,
        err("operation", "invalidDeviceID")
    );
    assert_eq!(
        a.request(8, &cancel("7777")).await,
        err("operation", "invalidDeviceID")
    );

    b.send(2, &cancel("5001")).await;
    assert_eq!(b.recv().await, (2, Message::EscapeResponse));
    assert_eq!(
        b.event().await,
        hotdesk_event(&xh, HotDeskState::Cancelled, "5001", "4001")
    );
    assert_eq!(
        a.event().await,
        hotdesk_event(&xg, HotDeskState::Cancelled, "5001", "4001")
    );
    assert_eq!(
        a.event().await,
        hotdesk_event(&xg2, HotDeskState::Cancelled, "5001", "4001")
    );
    assert_eq!(
        b.request(3, &cancel("5001")).await,
        err("stateIncompatibility", "invalidObjectState")
    );
    a.quiet(30).await;
    sim.shutdown();
}

#[actix_rt::test]
async fn hotdesk_from_the_phone() {
    let (sim, ctl) = sim(1).await;
    let mut c = Client::connect(sim.link_addrs()[0]).await;
    let xh = c.monitor(1, "4001").await;

    let reply = ctl
        .post_ok("/hotdesk", json!({"guest": "5001", "host": "4001"}))
        .await;
    assert_eq!(reply, json!({"guest": "5001", "host": "4001"}));
    assert_eq!(
        c.event().await,
        hotdesk_event(&xh, HotDeskState::Established, "5001", "4001")
    );

    let (code, refused) = ctl
        .post("/hotdesk", json!({"guest": "5002", "host": "4001"}))
        .await;
    assert_eq!(code, 409);
    assert_eq!(refused["csta"], "stateIncompatibility/invalidObjectState");
    assert!(refused["error"].as_str().unwrap().contains("4001"));
    let (code, refused) = ctl
        .post("/hotdesk", json!({"guest": "5002", "host": "8001"}))
        .await;
    assert_eq!(
        (code, &refused["csta"]),
        (404, &json!("operation/invalidDeviceID"))
    );

    ctl.post_ok("/hotdesk/cancel", json!({"guest": "5001"}))
        .await;
    assert_eq!(
        c.event().await,
        hotdesk_event(&xh, HotDeskState::Cancelled, "5001", "4001")
    );
    let (code, _) = ctl.post("/hotdesk/cancel", json!({"guest": "5001"})).await;
    assert_eq!(code, 409);
    sim.shutdown();
}

// ----- calls and account codes ---------------------------------------------------------------

#[actix_rt::test]
async fn calls_and_account_codes() {
    use CallEventKind::*;
    let (sim, ctl) = sim(1).await;
    let link = sim.link_addrs()[0];
    let mut a = Client::connect(link).await;
    let mut b = Client::connect(link).await;
    let xa = a.monitor(1, "5001").await;
    let xb = b.monitor(1, "4001").await;
    // 4002 is not in the call: its monitor must get nothing (checked by `quiet` below).
    b.monitor(2, "4002").await;

    let reply = ctl
        .post_ok("/calls", json!({"from": "5001", "to": "4001"}))
        .await;
    let call = reply["callId"].as_str().unwrap().to_owned();
    assert_eq!(reply["devices"], json!(["5001", "4001"]));
    let f = Some("5001");
    let t = Some("4001");
    assert_eq!(
        a.event().await,
        call_event(ServiceInitiated, &xa, &call, f, f, None)
    );
    assert_eq!(a.event().await, call_event(Originated, &xa, &call, f, f, t));
    assert_eq!(a.event().await, call_event(Delivered, &xa, &call, t, t, f));
    assert_eq!(
        a.event().await,
        call_event(Established, &xa, &call, t, t, f)
    );
    assert_eq!(b.event().await, call_event(Delivered, &xb, &call, t, t, f));
    assert_eq!(
        b.event().await,
        call_event(Established, &xb, &call, t, t, f)
    );

    // Entered on the phone: reported on the monitors of every device of the call.
    ctl.post_ok(
        &format!("/calls/{call}/account-code"),
        json!({"device": "5001", "code": "1234"}),
    )
    .await;
    assert_eq!(a.event().await, call_info(&xa, &call, "5001", "1234"));
    assert_eq!(b.event().await, call_info(&xb, &call, "5001", "1234"));

    // Set over CSTA: the answer first, then the same event as from the phone.
    let set = |call: &str, device: &str, code: &str| Message::AssociateData {
        call: Connection::new(call, device),
        account_code: code.into(),
    };
    b.send(3, &set(&call, "4001", "77")).await;
    assert_eq!(b.recv().await, (3, Message::AssociateDataResponse));
    assert_eq!(b.event().await, call_info(&xb, &call, "4001", "77"));
    assert_eq!(a.event().await, call_info(&xa, &call, "4001", "77"));
    assert_eq!(ctl.state().await["calls"][0]["accountCode"], "77");

    assert_eq!(
        b.request(4, &set("NOPE", "4001", "1")).await,
        err("operation", "invalidCallID")
    );
    assert_eq!(
        b.request(5, &set(&call, "4002", "1")).await,
        err("operation", "invalidConnectionID")
    );
    b.quiet(20).await;
    a.quiet(0).await;
    sim.shutdown();
}

#[actix_rt::test]
async fn transfer_divert_hold_and_clear() {
    use CallEventKind::*;
    let (sim, ctl) = sim(1).await;
    let mut c = Client::connect(sim.link_addrs()[0]).await;
    let x1 = c.monitor(1, "5001").await;
    let x2 = c.monitor(2, "4001").await;
    let x3 = c.monitor(3, "4002").await;
    let x4 = c.monitor(4, "4003").await;

    // A call with a given ID, not answered yet, then answered.
    ctl.post_ok(
        "/calls",
        json!({"from": "5001", "to": "4001", "callId": "K7", "answer": false}),
    )
    .await;
    let (s, t) = (Some("5001"), Some("4001"));
    assert_eq!(
        c.event().await,
        call_event(ServiceInitiated, &x1, "K7", s, s, None)
    );
    assert_eq!(c.event().await, call_event(Originated, &x1, "K7", s, s, t));
    assert_eq!(c.event().await, call_event(Delivered, &x1, "K7", t, t, s));
    assert_eq!(c.event().await, call_event(Delivered, &x2, "K7", t, t, s));
    ctl.post_ok("/calls/K7/answer", json!({})).await;
    assert_eq!(c.event().await, call_event(Established, &x1, "K7", t, t, s));
    assert_eq!(c.event().await, call_event(Established, &x2, "K7", t, t, s));

    ctl.post_ok("/calls/K7/hold", json!({"device": "5001"}))
        .await;
    assert_eq!(c.event().await, call_event(Held, &x1, "K7", s, s, None));
    assert_eq!(c.event().await, call_event(Held, &x2, "K7", s, s, None));
    let (code, _) = ctl.post("/calls/K7/hold", json!({"device": "5001"})).await;
    assert_eq!(code, 409, "a held party cannot be held again");
    ctl.post_ok("/calls/K7/retrieve", json!({"device": "5001"}))
        .await;
    assert_eq!(
        c.event().await,
        call_event(Retrieved, &x1, "K7", s, s, None)
    );
    assert_eq!(
        c.event().await,
        call_event(Retrieved, &x2, "K7", s, s, None)
    );

    // 4001 transfers the call to 4002: 4001 leaves, 4002 joins, same call ID.
    let n = Some("4002");
    ctl.post_ok("/calls/K7/transfer", json!({"from": "4001", "to": "4002"}))
        .await;
    for x in [&x1, &x2, &x3] {
        assert_eq!(c.event().await, call_event(Transferred, x, "K7", t, t, n));
    }
    assert_eq!(c.event().await, call_event(Delivered, &x1, "K7", n, n, s));
    assert_eq!(c.event().await, call_event(Delivered, &x3, "K7", n, n, s));
    assert_eq!(c.event().await, call_event(Established, &x1, "K7", n, n, s));
    assert_eq!(c.event().await, call_event(Established, &x3, "K7", n, n, s));
    assert_eq!(
        ctl.state().await["calls"][0]["devices"],
        json!(["5001", "4002"])
    );

    // 4002 diverts to 4003, where it rings.
    let d = Some("4003");
    ctl.post_ok("/calls/K7/divert", json!({"from": "4002", "to": "4003"}))
        .await;
    for x in [&x1, &x3, &x4] {
        assert_eq!(c.event().await, call_event(Diverted, x, "K7", n, n, d));
    }
    assert_eq!(c.event().await, call_event(Delivered, &x1, "K7", d, d, s));
    assert_eq!(c.event().await, call_event(Delivered, &x4, "K7", d, d, s));

    // 5001 hangs up: fewer than two parties remain, so the call is cleared.
    ctl.post_ok("/calls/K7/clear", json!({"device": "5001"}))
        .await;
    assert_eq!(
        c.event().await,
        call_event(ConnectionCleared, &x1, "K7", s, s, None)
    );
    assert_eq!(
        c.event().await,
        call_event(ConnectionCleared, &x4, "K7", s, s, None)
    );
    assert_eq!(
        c.event().await,
        call_event(ConnectionCleared, &x4, "K7", d, d, None)
    );
    assert_eq!(
        c.event().await,
        call_event(CallCleared, &x1, "K7", None, None, None)
    );
    assert_eq!(
        c.event().await,
        call_event(CallCleared, &x4, "K7", None, None, None)
    );
    assert_eq!(ctl.state().await["calls"], json!([]));

    // The call ID may be reused once cleared; clearing without a device clears every party.
    ctl.post_ok(
        "/calls",
        json!({"from": "4003", "to": "5001", "callId": "K7"}),
    )
    .await;
    let (code, dup) = ctl
        .post(
            "/calls",
            json!({"from": "4001", "to": "4002", "callId": "K7"}),
        )
        .await;
    assert_eq!(
        (code, &dup["csta"]),
        (409, &json!("stateIncompatibility/invalidObjectState"))
    );
    for _ in 0..6 {
        c.event().await;
    }
    ctl.post_ok("/calls/K7/clear", json!({})).await;
    let (a, b) = (Some("4003"), Some("5001"));
    assert_eq!(
        c.event().await,
        call_event(ConnectionCleared, &x1, "K7", a, a, None)
    );
    assert_eq!(
        c.event().await,
        call_event(ConnectionCleared, &x4, "K7", a, a, None)
    );
    assert_eq!(
        c.event().await,
        call_event(ConnectionCleared, &x1, "K7", b, b, None)
    );
    assert_eq!(
        c.event().await,
        call_event(CallCleared, &x1, "K7", None, None, None)
    );
    assert_eq!(
        c.event().await,
        call_event(CallCleared, &x4, "K7", None, None, None)
    );
    c.quiet(20).await;
    sim.shutdown();
}

#[actix_rt::test]
async fn control_api_refusals() {
    let (sim, ctl) = sim(1).await;
    let (code, r) = ctl
        .post("/calls", json!({"from": "5001", "to": "8000"}))
        .await;
    assert_eq!(
        (code, &r["csta"]),
        (404, &json!("operation/invalidDeviceID"))
    );
    let (code, r) = ctl.post("/calls/NOPE/answer", json!({})).await;
    assert_eq!((code, &r["csta"]), (404, &json!("operation/invalidCallID")));
    let (code, r) = ctl.post("/calls", json!({"from": "5001"})).await;
    assert_eq!(code, 400);
    assert!(r["error"].is_string() && r.get("csta").is_none(), "{r}");
    let (code, r) = ctl.post("/faults/delay", json!({"minMs": 5})).await;
    assert_eq!(code, 400, "{r}");
    let (code, r) = ctl
        .post(
            "/faults/reject",
            json!({"count": 1, "category": "bogus", "value": "x"}),
        )
        .await;
    assert_eq!(code, 400, "{r}");
    let (code, _) = ctl
        .post("/faults/link", json!({"link": 3, "up": false}))
        .await;
    assert_eq!(code, 404);
    let (code, _) = ctl.get("/nowhere").await;
    assert_eq!(code, 404);

    let call = ctl
        .post_ok("/calls", json!({"from": "5001", "to": "4001"}))
        .await;
    let id = call["callId"].as_str().unwrap();
    let (code, r) = ctl
        .post(
            &format!("/calls/{id}/account-code"),
            json!({"device": "4999", "code": "1"}),
        )
        .await;
    assert_eq!(
        (code, &r["csta"]),
        (404, &json!("operation/invalidConnectionID"))
    );
    let (code, r) = ctl
        .post(
            &format!("/calls/{id}/account-code"),
            json!({"device": "4001", "code": ""}),
        )
        .await;
    assert_eq!(
        (code, &r["csta"]),
        (400, &json!("operation/invalidAccountCode"))
    );
    sim.shutdown();
}

// ----- faults --------------------------------------------------------------------------------

#[actix_rt::test]
async fn stall_drops_requests_but_not_phone_events() {
    let (sim, ctl) = sim(1).await;
    let mut c = Client::connect(sim.link_addrs()[0]).await;
    let x = c.monitor(1, "5001").await;
    ctl.post_ok("/faults/stall", json!({"on": true})).await;
    c.send(2, &system_status()).await;
    c.send(3, &associate("5001", "4001")).await;
    c.quiet(100).await;

    ctl.post_ok("/hotdesk", json!({"guest": "5001", "host": "4002"}))
        .await;
    assert_eq!(
        c.event().await,
        hotdesk_event(&x, HotDeskState::Established, "5001", "4002")
    );
    assert_eq!(
        ctl.state().await["associations"],
        json!([{"guest": "5001", "host": "4002"}]),
        "the stalled Escape was not processed"
    );

    ctl.post_ok("/faults/stall", json!({"on": false})).await;
    assert_eq!(c.request(4, &system_status()).await, status("normal"));
    assert_eq!(ctl.state().await["links"][0]["requests"], 4);
    sim.shutdown();
}

#[actix_rt::test]
async fn delay_fixed_then_random_with_seed_reorders_answers() {
    let (sim, ctl) = sim(1).await;
    let mut c = Client::connect(sim.link_addrs()[0]).await;

    ctl.post_ok("/faults/delay", json!({"ms": 80})).await;
    let t0 = Instant::now();
    assert_eq!(c.request(1, &system_status()).await, status("normal"));
    assert!(
        t0.elapsed() >= Duration::from_millis(80),
        "{:?}",
        t0.elapsed()
    );

    let faults = ctl
        .post_ok(
            "/faults/delay",
            json!({"minMs": 0, "maxMs": 120, "seed": 7}),
        )
        .await;
    assert_eq!(
        faults["faults"]["delay"],
        json!({"minMs": 0, "maxMs": 120, "seed": 7})
    );
    let sent: Vec<u16> = (10..18).collect();
    for &i in &sent {
        c.send(i, &system_status()).await;
    }
    let mut got = Vec::new();
    for _ in &sent {
        let (invoke, msg) = c.recv().await;
        assert_eq!(msg, status("normal"));
        got.push(invoke);
    }
    assert_ne!(got, sent, "random delays answer out of order");
    got.sort_unstable();
    assert_eq!(got, sent, "every request is answered exactly once");

    let off = ctl.post_ok("/faults/delay", json!({"ms": 0})).await;
    assert_eq!(off["faults"]["delay"], Value::Null);
    assert_eq!(c.request(2, &system_status()).await, status("normal"));
    sim.shutdown();
}

#[actix_rt::test]
async fn reject_the_next_requests() {
    let (sim, ctl) = sim(1).await;
    let mut c = Client::connect(sim.link_addrs()[0]).await;
    ctl.post_ok(
        "/faults/reject",
        json!({"count": 2, "category": "systemResourceAvailability", "value": "resourceBusy", "request": "MonitorStart"}),
    )
    .await;
    // Not a MonitorStart: not rejected, and not counted.
    assert_eq!(c.request(1, &system_status()).await, status("normal"));
    let start = Message::MonitorStart {
        device: "5001".into(),
    };
    for i in 2..4 {
        assert_eq!(
            c.request(i, &start).await,
            err("systemResourceAvailability", "resourceBusy")
        );
    }
    c.monitor(4, "5001").await;
    assert_eq!(ctl.state().await["faults"]["reject"], Value::Null);

    // Any request, default category/value is not needed when given.
    ctl.post_ok(
        "/faults/reject",
        json!({"count": 1, "category": "unspecified", "value": "generic"}),
    )
    .await;
    assert_eq!(
        c.request(5, &associate("5001", "4001")).await,
        err("unspecified", "generic")
    );
    assert_eq!(
        ctl.state().await["associations"],
        json!([]),
        "a rejected request is not processed"
    );
    assert_eq!(c.request(6, &system_status()).await, status("normal"));
    sim.shutdown();
}

#[actix_rt::test]
async fn drop_closes_connections_but_keeps_listening() {
    let (sim, ctl) = sim(2).await;
    let links = sim.link_addrs();
    let mut a = Client::connect(links[0]).await;
    let mut b = Client::connect(links[0]).await;
    let mut c = Client::connect(links[1]).await;
    a.monitor(1, "5001").await;

    let reply = ctl.post_ok("/faults/drop", json!({"link": 0})).await;
    assert_eq!(reply["dropped"], 2);
    a.closed().await;
    b.closed().await;
    assert_eq!(c.request(1, &system_status()).await, status("normal"));
    wait_state(&ctl, |s| s["monitors"] == json!([])).await;

    let mut again = Client::connect(links[0]).await;
    assert_eq!(again.request(1, &system_status()).await, status("normal"));

    let reply = ctl.post_ok("/faults/drop", json!({})).await;
    assert_eq!(reply["dropped"], 2);
    c.closed().await;
    again.closed().await;
    sim.shutdown();
}

#[actix_rt::test]
async fn link_down_refuses_connections_until_up() {
    let (sim, ctl) = sim(2).await;
    let links = sim.link_addrs();
    let mut a = Client::connect(links[0]).await;
    let mut other = Client::connect(links[1]).await;

    ctl.post_ok("/faults/link", json!({"link": 0, "up": false}))
        .await;
    a.closed().await;
    let mut refused = Client::connect_raw(links[0], Dialect::default()).await;
    refused.closed().await;
    assert_eq!(other.request(1, &system_status()).await, status("normal"));
    let state = ctl.state().await;
    assert_eq!(state["links"][0]["up"], false);
    assert_eq!(state["faults"]["linksDown"], json!([0]));

    ctl.post_ok("/faults/link", json!({"link": 0, "up": true}))
        .await;
    let mut back = Client::connect(links[0]).await;
    assert_eq!(back.request(1, &system_status()).await, status("normal"));

    // clear brings links up too.
    ctl.post_ok("/faults/link", json!({"link": 1, "up": false}))
        .await;
    other.closed().await;
    ctl.post_ok("/faults/clear", json!({})).await;
    Client::connect(links[1]).await;
    sim.shutdown();
}

#[actix_rt::test]
async fn garbage_reaches_the_client() {
    let (sim, ctl) = sim(2).await;
    let links = sim.link_addrs();
    let mut a = Client::connect(links[0]).await;
    let mut b = Client::connect(links[1]).await;

    let reply = ctl
        .post_ok("/faults/garbage", json!({"kind": "xml", "link": 0}))
        .await;
    assert_eq!(reply["sent"], 1);
    let frame = a.frame().await;
    assert_eq!(frame.invoke_id, InvokeId::EVENT);
    assert_eq!(&frame.body[..], b"<PrivateEvent><unclosed>");
    assert!(Message::decode(&frame.body, &Dialect::default()).is_err());
    b.quiet(30).await;

    ctl.post_ok("/faults/garbage", json!({"kind": "truncated", "link": 1}))
        .await;
    b.quiet(60).await; // 20 of the 200 announced bytes: the codec waits for the rest
    let mut raw = [0u8; 64];
    let more = tokio::time::timeout(Duration::from_millis(30), async {
        use tokio::io::AsyncReadExt;
        b.framed.get_mut().read(&mut raw).await.unwrap()
    })
    .await;
    // The framed reader has buffered the 28 bytes; nothing more comes, and the link stays open.
    assert!(more.is_err(), "{more:?}");
    assert_eq!(b.framed.read_buffer().len(), 28);
    assert_eq!(&b.framed.read_buffer()[..8], b"\x00\x00\x00\xc89999");

    ctl.post_ok("/faults/garbage", json!({"kind": "frame"}))
        .await;
    match a.next().await {
        Some(Err(FrameError::BadMagic(b'G', b'A'))) => {}
        other => panic!("expected a broken header, got {other:?}"),
    }
    sim.shutdown();
}

// ----- dialects, runtimes, binary ------------------------------------------------------------

#[actix_rt::test]
async fn another_dialect_escape_service_extensions_hex() {
    let dialect = Dialect {
        csta_namespace: "http://www.ecma-international.org/standards/ecma-323/csta/ed6".into(),
        hotdesk_namespace: "urn:example:hotdesk".into(),
        escape_root: EscapeRoot::EscapeService,
        private_data: PrivateDataPosition::Extensions,
        accode_encoding: AccodeEncoding::Hex,
        device: Default::default(),
    };
    let (sim, ctl) = start(1, dialect.clone()).await;
    let mut c = Client::connect_with(sim.link_addrs()[0], dialect).await;
    let xg = c.monitor(1, "5001").await;

    c.send(2, &associate("5001", "4001")).await;
    let answer = c.frame().await;
    let body = std::str::from_utf8(&answer.body).unwrap();
    assert!(body.contains("<EscapeServiceResponse xmlns=\"http://www.ecma-international.org/standards/ecma-323/csta/ed6\""), "{body}");
    let event = c.frame().await;
    let body = std::str::from_utf8(&event.body).unwrap();
    assert!(
        body.contains("<extensions><privateData><private><guestAssociatedEvent xmlns=\"urn:example:hotdesk\">"),
        "{body}"
    );
    assert_eq!(
        Message::decode(&event.body, &Dialect::default()).unwrap(),
        hotdesk_event(&xg, HotDeskState::Established, "5001", "4001")
    );

    // The switch reads the other escape form too.
    let mut plain = Client::connect(sim.link_addrs()[0]).await;
    assert_eq!(
        plain.request(1, &cancel("5001")).await,
        Message::EscapeResponse
    );
    c.event().await;

    let call = ctl
        .post_ok("/calls", json!({"from": "5001", "to": "4001"}))
        .await;
    let id = call["callId"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        c.event().await;
    }
    c.send(
        3,
        &Message::AssociateData {
            call: Connection::new(&id, "5001"),
            account_code: "12A".into(),
        },
    )
    .await;
    assert_eq!(c.recv().await, (3, Message::AssociateDataResponse));
    let info = c.frame().await;
    let body = std::str::from_utf8(&info.body).unwrap();
    assert!(body.contains("<accountInfo>313241</accountInfo>"), "{body}");
    assert_eq!(
        Message::decode(&info.body, &c.dialect).unwrap(),
        call_info(&xg, &id, "5001", "12A")
    );
    // Not hex: refused as an invalid account code.
    let ns = "http://www.ecma-international.org/standards/ecma-323/csta/ed6";
    c.send_body(
        4,
        &format!("<AssociateData xmlns=\"{ns}\"><existingCall><callID>{id}</callID><deviceID>5001</deviceID></existingCall><accountCode>12A</accountCode></AssociateData>"),
    )
    .await;
    assert_eq!(c.recv().await, (4, err("operation", "invalidAccountCode")));
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_a_plain_tokio_runtime_and_shuts_down() {
    let (sim, ctl) = sim(1).await;
    let link = sim.link_addrs()[0];
    let mut c = Client::connect(link).await;
    let x = c.monitor(1, "4001").await;
    ctl.post_ok("/hotdesk", json!({"guest": "5001", "host": "4001"}))
        .await;
    assert_eq!(
        c.event().await,
        hotdesk_event(&x, HotDeskState::Established, "5001", "4001")
    );

    sim.shutdown();
    c.closed().await;
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(link).await.is_ok() {
        assert!(Instant::now() < deadline, "the link listener is still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while TcpStream::connect(ctl.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the control API is still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the child process if the test fails half-way.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_rt::test]
async fn pbx_sim_binary_prints_its_addresses_answers_and_stops_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_pbx-sim"))
        .args([
            "--name",
            "bin1",
            "--dns",
            "4000-4999",
            "--dns",
            "5000-5999",
            "--link",
            "127.0.0.1:0",
            "--link",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--escape-root",
            "EscapeService",
            "--private-data",
            "extensions",
            "--accode-encoding",
            "hex",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let printed: Value = serde_json::from_str(line.trim()).unwrap();
    let links: Vec<SocketAddr> = printed["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(links.len(), 2);
    let ctl = SimControl {
        addr: printed["control"].as_str().unwrap().parse().unwrap(),
    };

    let dialect = Dialect {
        escape_root: EscapeRoot::EscapeService,
        private_data: PrivateDataPosition::Extensions,
        accode_encoding: AccodeEncoding::Hex,
        ..Dialect::default()
    };
    let mut c = Client::connect_with(links[1], dialect).await;
    assert_eq!(c.request(5, &system_status()).await, status("normal"));
    c.send(6, &associate("5001", "4001")).await;
    let answer = c.frame().await;
    assert!(std::str::from_utf8(&answer.body)
        .unwrap()
        .contains("<EscapeServiceResponse"));
    let state = ctl.state().await;
    assert_eq!(state["name"], "bin1");
    assert_eq!(
        state["associations"],
        json!([{"guest": "5001", "host": "4001"}])
    );

    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "pbx-sim did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(exit.success(), "{exit:?}");
    c.closed().await;
}
