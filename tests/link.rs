//! The link layer against the simulator over real loopback TCP.
//!
//! Each test starts a simulator (the switch) on ephemeral ports and a [`Switch`] with its link
//! actors pointing at it, then speaks CSTA through the switch actor and drives the simulator
//! through its HTTP control API, as a phone or a faulty switch would act.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{sim_control, switch};

use csta_router::csta::{Connection, CstaError, Dialect, HotDeskState, InvokeId, Message};
use csta_router::dnplan::DnPlan;
use csta_router::link::{
    LinkError, LinkSettings, LinkState, MonitorOutcome, StartMonitor, SwitchEvent, SwitchHandle,
    SwitchRequest, SwitchStatusQuery,
};
use csta_router::sim::{SimConfig, Simulator};
use serde_json::json;
use sim_control::SimControl;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use switch::{associate, cancel, second_dialect};
use tokio::sync::mpsc;

fn fast_settings() -> LinkSettings {
    switch::settings(Duration::from_millis(1500), Duration::ZERO, 2)
}

struct Rig {
    sim: Simulator,
    control: SimControl,
    switch: SwitchHandle,
    events: mpsc::UnboundedReceiver<SwitchEvent>,
}

async fn rig(links: usize, dialect: Dialect, settings: LinkSettings) -> Rig {
    let sim = Simulator::start(SimConfig {
        name: "sw1".into(),
        dns: DnPlan::parse(&["4000-4999", "5000-5999"]).unwrap(),
        links: (0..links).map(|_| "127.0.0.1:0".parse().unwrap()).collect(),
        control: Some("127.0.0.1:0".parse().unwrap()),
        dialect: dialect.clone(),
    })
    .await
    .unwrap();
    let control = SimControl {
        addr: sim.control_addr().unwrap(),
    };
    let (switch, events) = switch::start_switch("sw1", sim.link_addrs(), dialect, settings);
    let mut rig = Rig {
        sim,
        control,
        switch,
        events,
    };
    rig.expect_link_up(0).await;
    rig
}

impl Rig {
    async fn next_event(&mut self) -> SwitchEvent {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("no switch event within 5 s")
            .expect("event channel closed")
    }

    /// Skip events until one matches.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&SwitchEvent) -> bool) -> SwitchEvent {
        switch::wait_for(&mut self.events, Duration::from_secs(5), what, pred).await
    }

    async fn expect_link_up(&mut self, link: usize) {
        self.wait_for(
            &format!("LinkUp on link {link}"),
            |e| matches!(e, SwitchEvent::LinkUp { link: l, .. } if *l == link),
        )
        .await;
    }

    async fn request(&self, m: Message) -> Result<Message, LinkError> {
        self.switch.addr.send(SwitchRequest(m)).await.unwrap()
    }

    async fn monitor(&self, dn: &str) -> Result<MonitorOutcome, LinkError> {
        self.switch
            .addr
            .send(StartMonitor(dn.into()))
            .await
            .unwrap()
    }

    /// The CSTA events received for `dn`, skipping others, until `count` have arrived.
    async fn csta_events(&mut self, count: usize) -> Vec<(u64, String, Message)> {
        let mut out = Vec::new();
        while out.len() < count {
            if let SwitchEvent::Csta {
                seq, dn, message, ..
            } = self.next_event().await
            {
                out.push((seq, dn.to_string(), (*message).clone()));
            }
        }
        out
    }

    async fn sim_state(&self) -> serde_json::Value {
        let (status, state) = self.control.get("/state").await;
        assert_eq!(status, 200);
        state
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, reply) = self.control.post(path, body).await;
        assert_eq!(status, 200, "POST {path}: {reply}");
        reply
    }

    async fn assert_no_event(&mut self, within: Duration) {
        if let Ok(Some(ev)) = tokio::time::timeout(within, self.events.recv()).await {
            panic!("unexpected event {ev:?}");
        }
    }
}

fn rejected(r: Result<Message, LinkError>) -> CstaError {
    match r {
        Err(LinkError::Rejected { error, .. }) => error,
        other => panic!("expected a CSTA rejection, got {other:?}"),
    }
}

/// Associate and cancel with their events, then every simulator error, in one dialect.
async fn hotdesk_round_trips(dialect: Dialect) {
    let mut r = rig(1, dialect, fast_settings()).await;
    assert_eq!(r.monitor("5001").await.unwrap(), MonitorOutcome::Started);
    assert_eq!(r.monitor("4001").await.unwrap(), MonitorOutcome::Started);
    assert_eq!(
        rejected(r.monitor("7777").await.map(|_| Message::EscapeResponse)),
        CstaError::new("operation", "invalidDeviceID")
    );

    assert_eq!(
        r.request(associate("5001", "4001")).await.unwrap(),
        Message::EscapeResponse
    );
    let evs = r.csta_events(2).await;
    let mut dns: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
    dns.sort();
    assert_eq!(
        dns,
        ["4001", "5001"],
        "the event comes on the guest's and the host's monitor"
    );
    assert!(evs[0].0 < evs[1].0, "eventSeq strictly increases");
    for (_, _, m) in &evs {
        match m {
            Message::PrivateEvent { event, .. } => {
                assert_eq!(event.state, HotDeskState::Established);
                assert_eq!(event.guest, "5001");
                assert_eq!(event.host.as_deref(), Some("4001"));
            }
            other => panic!("expected PrivateEvent, got {other:?}"),
        }
    }
    // Rules of the switch: one host per guest, one guest per host.
    let busy = CstaError::new("stateIncompatibility", "invalidObjectState");
    assert_eq!(rejected(r.request(associate("5001", "4002")).await), busy);
    assert_eq!(rejected(r.request(associate("5002", "4001")).await), busy);
    assert_eq!(
        rejected(r.request(associate("5001", "9999")).await),
        CstaError::new("operation", "invalidDeviceID")
    );

    assert_eq!(
        r.request(cancel("5001")).await.unwrap(),
        Message::EscapeResponse
    );
    let evs = r.csta_events(2).await;
    assert!(evs.iter().all(|(_, _, m)| matches!(m,
        Message::PrivateEvent { event, .. } if event.state == HotDeskState::Cancelled && event.host.as_deref() == Some("4001"))));
    assert_eq!(rejected(r.request(cancel("5001")).await), busy);

    // Account codes: a call from the phone, a code set through AssociateData.
    let call = r
        .post("/calls", json!({"from": "5001", "to": "5002"}))
        .await;
    let call_id = call["callId"].as_str().unwrap().to_owned();
    let evs = r.csta_events(4).await; // initiated, originated, delivered, established at 5001
    assert!(evs.iter().all(|(_, dn, _)| dn == "5001"));
    assert_eq!(
        r.request(Message::AssociateData {
            call: Connection::new(call_id.clone(), "5001"),
            account_code: "7788".into(),
        })
        .await
        .unwrap(),
        Message::AssociateDataResponse
    );
    let evs = r.csta_events(1).await;
    match &evs[0].2 {
        Message::CallInformation {
            connection,
            device,
            account_code,
            ..
        } => {
            assert_eq!(connection.call_id.as_deref(), Some(call_id.as_str()));
            assert_eq!(device.as_deref(), Some("5001"));
            assert_eq!(account_code.as_deref(), Some("7788"));
        }
        other => panic!("expected CallInformationEvent, got {other:?}"),
    }
    assert_eq!(
        rejected(
            r.request(Message::AssociateData {
                call: Connection::new("no-such-call", "5001"),
                account_code: "1".into(),
            })
            .await
        ),
        CstaError::new("operation", "invalidCallID")
    );
    r.sim.shutdown();
}

#[actix_rt::test]
async fn associate_cancel_and_every_simulator_error() {
    hotdesk_round_trips(Dialect::default()).await;
}

#[actix_rt::test]
async fn second_dialect_passes_the_same_round_trips() {
    hotdesk_round_trips(second_dialect()).await;
}

#[actix_rt::test]
async fn hundred_pipelined_requests_with_random_delays_each_get_their_own_answer() {
    let mut r = rig(1, Dialect::default(), fast_settings()).await;
    r.post("/faults/delay", json!({"minMs": 0, "maxMs": 60, "seed": 7}))
        .await;
    // Even requests are valid monitors, odd ones name unknown devices: a mismatched answer
    // would show as the wrong kind of result.
    let mut calls = Vec::new();
    for i in 0..100u32 {
        let dn = if i % 2 == 0 {
            format!("{}", 5100 + i)
        } else {
            format!("{}", 8100 + i)
        };
        calls.push((i, r.switch.addr.send(StartMonitor(dn.into()))));
    }
    for (i, call) in calls {
        let result = call.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(result.unwrap(), MonitorOutcome::Started, "request {i}");
        } else {
            assert_eq!(
                rejected(result.map(|_| Message::EscapeResponse)),
                CstaError::new("operation", "invalidDeviceID"),
                "request {i}"
            );
        }
    }
    // Each monitor's cross-reference maps to its own DN: a hot-desk on each pair of monitored
    // DNs reports exactly those DNs.
    r.post("/faults/delay", json!({"ms": 0})).await;
    r.post("/hotdesk", json!({"guest": "5100", "host": "5102"}))
        .await;
    let evs = r.csta_events(2).await;
    let mut dns: Vec<String> = evs.into_iter().map(|e| e.1).collect();
    dns.sort();
    assert_eq!(dns, ["5100", "5102"]);
    // Twenty hot-desk requests in flight at once with random delays.
    r.post(
        "/faults/delay",
        json!({"minMs": 0, "maxMs": 40, "seed": 11}),
    )
    .await;
    let mut reqs = Vec::new();
    for i in 0..20 {
        let guest = format!("{}", 5300 + i);
        let host = if i % 4 == 3 {
            "6999".to_owned()
        } else {
            format!("{}", 4300 + i)
        };
        reqs.push((
            i,
            r.switch.addr.send(SwitchRequest(associate(&guest, &host))),
        ));
    }
    for (i, req) in reqs {
        let result = req.await.unwrap();
        if i % 4 == 3 {
            assert_eq!(
                rejected(result),
                CstaError::new("operation", "invalidDeviceID")
            );
        } else {
            assert_eq!(result.unwrap(), Message::EscapeResponse, "request {i}");
        }
    }
    let state = r.sim_state().await;
    assert_eq!(state["associations"].as_array().unwrap().len(), 16);
    r.sim.shutdown();
}

#[actix_rt::test]
async fn invoke_ids_wrap_after_9998_without_reusing_one_in_flight() {
    // Request invoke IDs run 0001 to 9998 (SPEC section 5), the codec's LAST_REQUEST.
    let last = InvokeId::LAST_REQUEST;
    let ids = usize::from(last - InvokeId::FIRST_REQUEST + 1);
    let settings = LinkSettings {
        first_invoke_id: last - 1,
        request_timeout: Duration::from_secs(20),
        ..fast_settings()
    };
    let mut r = rig(1, Dialect::default(), settings).await;
    // The handshake took 9997; the first request gets 9998, then IDs wrap to 0001.
    // Hold one request (9998) in flight for a while, then cycle through the whole range.
    r.post("/faults/delay", json!({"ms": 5000})).await;
    let held = r.switch.addr.send(SwitchRequest(associate("5001", "8888")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.post("/faults/delay", json!({"ms": 0})).await;
    let started = Instant::now();
    let mut done = 0;
    while done < ids {
        let batch: Vec<_> = (0..500.min(ids - done))
            .map(|_| {
                r.switch
                    .addr
                    .send(SwitchRequest(Message::RequestSystemStatus))
            })
            .collect();
        for req in batch {
            assert!(matches!(
                req.await.unwrap().unwrap(),
                Message::RequestSystemStatusResponse { .. }
            ));
        }
        done += 500.min(ids - done);
    }
    assert!(
        started.elapsed() < Duration::from_millis(4800),
        "the cycle must finish while the held request is in flight (took {:?})",
        started.elapsed()
    );
    // The held request gets its own answer, not one meant for a request that reused its ID.
    assert_eq!(
        rejected(held.await.unwrap()),
        CstaError::new("operation", "invalidDeviceID")
    );
    let stats = &r.switch.link_stats[0];
    assert_eq!(stats.unmatched_answers.load(Ordering::Relaxed), 0);
    assert_eq!(stats.in_flight.load(Ordering::Relaxed), 0);
    r.assert_no_event(Duration::from_millis(50)).await;
    r.sim.shutdown();
}

#[actix_rt::test]
async fn stalled_switch_times_out_and_a_late_answer_is_counted_and_dropped() {
    let settings = LinkSettings {
        request_timeout: Duration::from_millis(150),
        ..fast_settings()
    };
    let mut r = rig(1, Dialect::default(), settings).await;
    r.post("/faults/stall", json!({"on": true})).await;
    let t = Instant::now();
    assert!(matches!(
        r.request(associate("5001", "4001")).await,
        Err(LinkError::Timeout { .. })
    ));
    assert!(t.elapsed() < Duration::from_millis(1000));
    r.post("/faults/stall", json!({"on": false})).await;

    r.post("/faults/delay", json!({"ms": 400})).await;
    assert!(matches!(
        r.request(cancel("5001")).await,
        Err(LinkError::Timeout { .. })
    ));
    let stats = r.switch.link_stats[0].clone();
    let deadline = Instant::now() + Duration::from_secs(3);
    while stats.late_answers.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the late answer was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.late_answers.load(Ordering::Relaxed), 1);
    assert_eq!(stats.in_flight.load(Ordering::Relaxed), 0);
    r.post("/faults/delay", json!({"ms": 0})).await;
    // The link is still fine.
    assert_eq!(
        r.request(associate("5001", "4001")).await.unwrap(),
        Message::EscapeResponse
    );
    r.assert_no_event(Duration::from_millis(50)).await;
    r.sim.shutdown();
}

#[actix_rt::test]
async fn a_drop_answers_in_flight_requests_at_once_and_monitors_come_back() {
    let mut r = rig(1, Dialect::default(), fast_settings()).await;
    r.monitor("5001").await.unwrap();
    r.monitor("4001").await.unwrap();
    r.post("/faults/delay", json!({"ms": 1000})).await;
    let in_flight = r.switch.addr.send(SwitchRequest(associate("5001", "4001")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    r.post("/faults/drop", json!({})).await;
    assert!(matches!(
        in_flight.await.unwrap(),
        Err(LinkError::LinkLost { .. })
    ));
    assert!(t.elapsed() < Duration::from_millis(500), "answered at once");
    r.wait_for("LinkDown", |e| matches!(e, SwitchEvent::LinkDown { .. }))
        .await;
    r.post("/faults/delay", json!({"ms": 0})).await;
    r.expect_link_up(0).await;
    assert_eq!(r.switch.link_stats[0].reconnects.load(Ordering::Relaxed), 1);
    // Monitors restored on the new connection: the simulator knows them again, and events
    // for both DNs flow.
    let monitors = r.sim_state().await["monitors"].as_array().unwrap().len();
    assert_eq!(monitors, 2);
    r.post("/hotdesk", json!({"guest": "5001", "host": "4001"}))
        .await;
    let mut dns: Vec<String> = r.csta_events(2).await.into_iter().map(|e| e.1).collect();
    dns.sort();
    assert_eq!(dns, ["4001", "5001"]);
    r.sim.shutdown();
}

#[actix_rt::test]
async fn keepalive_loss_is_detected_and_the_link_recovers() {
    let settings = LinkSettings {
        kpl_interval: Duration::from_millis(100),
        kpl_tolerance: 2,
        request_timeout: Duration::from_millis(100),
        ..fast_settings()
    };
    let mut r = rig(1, Dialect::default(), settings).await;
    // Healthy and silent: keep-alives are answered, the link stays up.
    r.assert_no_event(Duration::from_millis(500)).await;
    let stats = r.switch.link_stats[0].clone();
    assert_eq!(stats.keepalive_misses.load(Ordering::Relaxed), 0);
    r.post("/faults/stall", json!({"on": true})).await;
    let t = Instant::now();
    r.wait_for("LinkDown", |e| matches!(e, SwitchEvent::LinkDown { .. }))
        .await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(stats.keepalive_misses.load(Ordering::Relaxed) >= 2);
    r.post("/faults/stall", json!({"on": false})).await;
    r.expect_link_up(0).await;
    r.sim.shutdown();
}

#[actix_rt::test]
async fn failover_to_the_second_link_without_failing_back() {
    let mut r = rig(2, Dialect::default(), fast_settings()).await;
    let status = r.switch.addr.send(SwitchStatusQuery).await.unwrap();
    assert_eq!(status.active, Some(0));
    r.monitor("5001").await.unwrap();
    r.monitor("4001").await.unwrap();
    assert_eq!(
        r.request(associate("5001", "4001")).await.unwrap(),
        Message::EscapeResponse
    );
    r.csta_events(2).await;
    let before = r.sim_state().await;
    let link1_requests = before["links"][1]["requests"].as_u64().unwrap();

    // Link 1 goes away and stays away: link 2 takes over with the monitors.
    r.post("/faults/link", json!({"link": 0, "up": false}))
        .await;
    r.wait_for("LinkDown", |e| {
        matches!(e, SwitchEvent::LinkDown { link: 0, .. })
    })
    .await;
    r.expect_link_up(1).await;
    assert_eq!(
        r.request(cancel("5001")).await.unwrap(),
        Message::EscapeResponse
    );
    let mut dns: Vec<String> = r.csta_events(2).await.into_iter().map(|e| e.1).collect();
    dns.sort();
    assert_eq!(dns, ["4001", "5001"], "monitors restored on link 2");
    let after = r.sim_state().await;
    assert!(
        after["links"][1]["requests"].as_u64().unwrap() >= link1_requests + 3,
        "two MonitorStarts and the cancel went over link 2: {after}"
    );
    let monitors = after["monitors"].as_array().unwrap();
    assert_eq!(monitors.len(), 2);
    assert!(monitors.iter().all(|m| m["link"] == 1), "{after}");

    // Link 1 recovers: it is operational again but link 2 stays active.
    r.post("/faults/link", json!({"link": 0, "up": true})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = r.switch.addr.send(SwitchStatusQuery).await.unwrap();
        if s.links[0] == LinkState::Up {
            assert_eq!(s.active, Some(1), "no fail-back while link 2 is healthy");
            break;
        }
        assert!(Instant::now() < deadline, "link 1 did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.assert_no_event(Duration::from_millis(100)).await;

    // And when link 2 fails, link 1 takes over again.
    r.post("/faults/link", json!({"link": 1, "up": false}))
        .await;
    r.wait_for("LinkDown", |e| {
        matches!(e, SwitchEvent::LinkDown { link: 1, .. })
    })
    .await;
    r.expect_link_up(0).await;
    assert_eq!(
        r.request(associate("5001", "4001")).await.unwrap(),
        Message::EscapeResponse
    );
    r.sim.shutdown();
}

#[actix_rt::test]
async fn garbage_and_malformed_xml_are_survived() {
    let mut r = rig(1, Dialect::default(), fast_settings()).await;
    r.monitor("5001").await.unwrap();
    let stats = r.switch.link_stats[0].clone();

    // Malformed XML in a well-framed frame: counted and skipped, the link stays up.
    r.post("/faults/garbage", json!({"kind": "xml"})).await;
    assert_eq!(
        r.request(Message::RequestSystemStatus)
            .await
            .map(|m| m.name().to_owned())
            .unwrap(),
        "RequestSystemStatusResponse"
    );
    assert_eq!(stats.decode_errors.load(Ordering::Relaxed), 1);
    r.assert_no_event(Duration::from_millis(50)).await;

    // Broken framing: the link is reset and comes back with its monitor.
    r.post("/faults/garbage", json!({"kind": "frame"})).await;
    r.wait_for("LinkDown", |e| matches!(e, SwitchEvent::LinkDown { .. }))
        .await;
    r.expect_link_up(0).await;
    assert_eq!(stats.framing_resets.load(Ordering::Relaxed), 1);
    r.post("/hotdesk", json!({"guest": "5001", "host": "4001"}))
        .await;
    let evs = r.csta_events(1).await;
    assert_eq!(evs[0].1, "5001");
    assert_eq!(
        r.request(cancel("5001")).await.unwrap(),
        Message::EscapeResponse
    );
    r.sim.shutdown();
}

#[actix_rt::test]
async fn requests_without_a_link_fail_fast_with_no_switch() {
    // A switch whose only link points at a closed port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let (switch, _events) = switch::start_switch(
        "nowhere",
        vec![address],
        Dialect::default(),
        fast_settings(),
    );
    let t = Instant::now();
    let r = switch
        .addr
        .send(SwitchRequest(cancel("5001")))
        .await
        .unwrap();
    assert!(matches!(r, Err(LinkError::NoSwitch { ref switch }) if &**switch == "nowhere"));
    assert!(t.elapsed() < Duration::from_millis(200));
    // A monitor asked for while the link is down is accepted and started later.
    assert_eq!(
        switch
            .addr
            .send(StartMonitor("5001".into()))
            .await
            .unwrap()
            .unwrap(),
        MonitorOutcome::Pending
    );
    let status = switch.addr.send(SwitchStatusQuery).await.unwrap();
    assert_eq!(status.active, None);
    assert_eq!(status.monitored, 1);
}
