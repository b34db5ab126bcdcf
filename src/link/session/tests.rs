//! The rules of the CSTA link (README, "The CSTA link"), one test each, on a session driven by hand: instants
//! are made up, frames from the switch and the frames expected from the session are written
//! out literally (as the specification and the golden tests write them), never produced by
//! the session or the encoder.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::csta::{CstaError, HotDeskAction, HotDeskEvent, HotDeskRequest, HotDeskState};
use std::sync::atomic::AtomicU64;

mod app;

// ----- frames, as the specification writes them ----------------------------------------------

/// Our `RequestSystemStatus` (handshake and keep-alive).
const REQUEST_SYSTEM_STATUS: &str = r#"<?xml version="1.0" encoding="UTF-8"?><RequestSystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#;
/// Our answer to the switch's `RequestSystemStatus`.
const STATUS_NORMAL: &str = r#"<?xml version="1.0" encoding="UTF-8"?><RequestSystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><systemStatus>normal</systemStatus></RequestSystemStatusResponse>"#;
/// Our `MonitorStart` for 5001.
const MONITOR_START_5001: &str = r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStart xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorObject><deviceObject>5001</deviceObject></monitorObject></MonitorStart>"#;
/// Our `MonitorStop` of the monitor `M3`.
const MONITOR_STOP_M3: &str = r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStop xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>M3</monitorCrossRefID></MonitorStop>"#;
/// Our `SystemStatusResponse` on invoke ID 0000, header included: 139 bytes in all.
const SYSTEM_STATUS_RESPONSE_0000: &[u8] = b"\x00\x00\x00\x8b0000<?xml version=\"1.0\" encoding=\"UTF-8\"?><SystemStatusResponse xmlns=\"http://www.ecma-international.org/standards/ecma-323/csta/ed3\"/>";

const ESCAPE_RESPONSE: &str =
    r#"<EscapeResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#;
const MONITOR_STOP_RESPONSE: &str = r#"<MonitorStopResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#;
const INVALID_DEVICE: &str = r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><operation>invalidDeviceID</operation></CSTAErrorCode>"#;
/// A well-framed body whose XML is broken.
const BROKEN_XML: &str =
    r#"<EscapeResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><a>"#;
/// A hot-desk event without `monitorCrossRefID`.
const EVENT_WITHOUT_MONITOR: &str = r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><privateData><private><guestAssociatedEvent xmlns="urn:csta-router:hotdesk"><state>established</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice></guestAssociatedEvent></private></privateData></PrivateEvent>"#;

fn status_response(status: &str) -> String {
    format!(
        r#"<RequestSystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><systemStatus>{status}</systemStatus></RequestSystemStatusResponse>"#
    )
}

fn system_status(status: &str) -> String {
    format!(
        r#"<SystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><systemStatus>{status}</systemStatus></SystemStatus>"#
    )
}

fn monitor_started(cross_ref: &str) -> String {
    format!(
        r#"<MonitorStartResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>{cross_ref}</monitorCrossRefID></MonitorStartResponse>"#
    )
}

/// Guest 5001 associated with host 4001, on the monitor `cross_ref`.
fn hotdesk_event(cross_ref: &str) -> String {
    format!(
        r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>{cross_ref}</monitorCrossRefID><privateData><private><guestAssociatedEvent xmlns="urn:csta-router:hotdesk"><state>established</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice></guestAssociatedEvent></private></privateData></PrivateEvent>"#
    )
}

/// What [`hotdesk_event`] says, as a message.
fn hotdesk_message(cross_ref: &str) -> Message {
    Message::PrivateEvent {
        cross_ref: Some(cross_ref.into()),
        event: HotDeskEvent {
            state: HotDeskState::Established,
            guest: "5001".into(),
            host: Some("4001".into()),
        },
    }
}

fn frame(id: u16, body: &str) -> Frame {
    Frame::new(InvokeId::new(id).unwrap(), body.to_owned())
}

// ----- the session under test ----------------------------------------------------------------

type Out = Vec<Output<u32>>;

const TIMEOUT: Duration = Duration::from_secs(4);

fn settings() -> LinkSettings {
    LinkSettings {
        request_timeout: TIMEOUT,
        kpl_interval: Duration::from_secs(10),
        kpl_tolerance: 3,
        reconnect_min: Duration::from_millis(250),
        first_invoke_id: 1,
        ..LinkSettings::default()
    }
}

fn session(settings: &LinkSettings) -> (Session<u32>, Instant) {
    let t0 = Instant::now();
    let stats = Arc::new(LinkStats::default());
    let s = Session::new("sw1".into(), 0, settings, Arc::default(), stats, t0);
    (s, t0)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Connect and pass the handshake at `t`.
fn up(s: &mut Session<u32>, t: Instant) {
    let out = s.connected(t);
    let [Output::Send(handshake)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(handshake.body, REQUEST_SYSTEM_STATUS);
    let id = handshake.invoke_id.get();
    let out = s.on_frame(frame(id, &status_response("normal")), t);
    assert_eq!(
        out.last(),
        Some(&Output::Up {
            status: "normal".into()
        })
    );
    assert_eq!(s.state(), LinkState::Up);
}

/// The invoke ID of the one frame the session asked to send.
fn sent_id(out: &Out) -> u16 {
    match out.as_slice() {
        [Output::Send(f)] => f.invoke_id.get(),
        _ => panic!("expected one frame to send: {out:?}"),
    }
}

fn associate() -> Message {
    Message::Escape(HotDeskRequest {
        guest: "5001".into(),
        action: HotDeskAction::Associate {
            host: "4001".into(),
        },
    })
}

fn answer(to: u32, result: Result<Message, LinkError>) -> Output<u32> {
    Output::Answer { to, result }
}

fn routed(dn: &str, tag: u64, result: Result<Message, LinkError>) -> Output<u32> {
    Output::ToShard {
        dn: dn.into(),
        delivery: Delivery::Answer { tag, result },
    }
}

fn timeout() -> LinkError {
    LinkError::Timeout {
        switch: "sw1".into(),
        timeout: TIMEOUT,
    }
}

fn lost() -> LinkError {
    LinkError::LinkLost {
        switch: "sw1".into(),
    }
}

fn no_switch() -> LinkError {
    LinkError::NoSwitch {
        switch: "sw1".into(),
    }
}

fn roundtrip(request: &'static str, elapsed: Duration) -> Output<u32> {
    Output::RoundTrip { request, elapsed }
}

/// Tick at every instant the session asks for until something happens (at most `limit` ticks).
fn run_until_output(s: &mut Session<u32>, limit: usize) -> (Instant, Out) {
    for _ in 0..limit {
        let t = s.poll_timeout().unwrap();
        let out = s.tick(t);
        if !out.is_empty() {
            return (t, out);
        }
    }
    panic!("nothing happened in {limit} ticks");
}

// ----- handshake -----------------------------------------------------------------------------

#[test]
fn the_handshake_brings_the_link_up_on_normal_or_enabled_and_requests_wait_for_it() {
    let (mut s, t0) = session(&settings());
    assert_eq!(s.state(), LinkState::Starting);
    let refused = vec![answer(1, Err(no_switch()))];
    assert_eq!(s.request(associate(), Waiter::Caller(1), t0), refused);
    assert_eq!(
        s.connected(t0),
        vec![Output::Send(frame(1, REQUEST_SYSTEM_STATUS))]
    );
    assert_eq!(s.state(), LinkState::Handshaking);
    assert_eq!(s.request(associate(), Waiter::Caller(1), t0), refused);
    assert_eq!(
        s.on_frame(frame(1, &status_response("enabled")), t0 + ms(5)),
        vec![
            roundtrip("RequestSystemStatus", ms(5)),
            Output::Up {
                status: "enabled".into()
            }
        ]
    );
    assert_eq!(s.state(), LinkState::Up);
    assert_eq!(sent_id(&s.request(associate(), Waiter::Caller(1), t0)), 2);
    // Only handshakes after the first one are reconnects.
    assert_eq!(load(&s.stats().reconnects), 0);
    s.disconnected(Disconnect::Transport("gone".into()), t0 + secs(1));
    up(&mut s, t0 + secs(2));
    assert_eq!(load(&s.stats().reconnects), 1);
}

#[test]
fn a_switch_not_ready_is_asked_again_and_a_wrong_answer_or_silence_loses_the_link() {
    let (mut s, t0) = session(&settings());
    assert_eq!(sent_id(&s.connected(t0)), 1);
    let not_ready = status_response("initializing");
    assert_eq!(
        s.on_frame(frame(1, &not_ready), t0 + ms(10)),
        vec![roundtrip("RequestSystemStatus", ms(10))]
    );
    assert_eq!(s.state(), LinkState::Handshaking);
    // Asked again after reconnect-min.
    assert_eq!(s.poll_timeout(), Some(t0 + ms(260)));
    assert_eq!(s.tick(t0 + ms(259)), vec![]);
    assert_eq!(
        s.tick(t0 + ms(260)),
        vec![Output::Send(frame(2, REQUEST_SYSTEM_STATUS))]
    );
    s.on_frame(frame(2, &status_response("disabled")), t0 + ms(300));
    assert_eq!(sent_id(&s.tick(t0 + ms(550))), 3);
    // An error instead of a status: lost.
    let out = s.on_frame(frame(3, INVALID_DEVICE), t0 + ms(600));
    assert!(
        matches!(out.as_slice(), [Output::RoundTrip { .. }, Output::Lost(Loss::Failed(why))]
            if why.starts_with("the switch refused RequestSystemStatus (operation/invalidDeviceID): the switch wants an ECMA-354 application session")),
        "{out:?}"
    );
    assert_eq!(s.state(), LinkState::Down);
    // No answer within request-timeout: lost.
    let t1 = t0 + secs(1);
    assert_eq!(sent_id(&s.connected(t1)), 4);
    assert_eq!(s.poll_timeout(), Some(t1 + TIMEOUT));
    assert_eq!(
        s.tick(t1 + TIMEOUT),
        vec![Output::Lost(Loss::Failed(
            "the switch did not answer RequestSystemStatus".into()
        ))]
    );
    assert_eq!(s.poll_timeout(), None);
}

// ----- invoke IDs, deadlines, late answers ---------------------------------------------------

#[test]
fn invoke_ids_wrap_after_9998_and_skip_one_reserved_by_a_timed_out_request_until_its_answer() {
    let mut settings = settings();
    settings.first_invoke_id = 9996;
    settings.kpl_interval = Duration::ZERO;
    let (mut s, t0) = session(&settings);
    up(&mut s, t0); // The handshake takes 9996.
    assert_eq!(
        sent_id(&s.request(associate(), Waiter::Caller(0), t0)),
        9997
    );
    assert_eq!(
        s.tick(t0 + TIMEOUT),
        vec![answer(0, Err(timeout()))],
        "timed out"
    );
    assert_eq!(load(&s.stats().invoke_ids_expired), 1);
    assert_eq!(load(&s.stats().in_flight), 0);
    // A whole cycle of IDs, each answered: 9998, then 0001 to 9996, never 9997.
    let t = t0 + secs(5);
    let mut ids = Vec::new();
    for caller in 1..=9997 {
        let id = sent_id(&s.request(associate(), Waiter::Caller(caller), t));
        let out = s.on_frame(frame(id, ESCAPE_RESPONSE), t);
        assert_eq!(out[1], answer(caller, Ok(Message::EscapeResponse)));
        ids.push(id);
    }
    let expected: Vec<u16> = std::iter::once(9998).chain(1..=9996).collect();
    assert_eq!(ids, expected);
    assert_eq!(sent_id(&s.request(associate(), Waiter::Caller(0), t)), 9998);
    // Its late answer is counted and dropped; the ID is free again.
    assert_eq!(s.on_frame(frame(9997, ESCAPE_RESPONSE), t), vec![]);
    assert_eq!(load(&s.stats().late_answers), 1);
    assert_eq!(load(&s.stats().invoke_ids_expired), 0);
    assert_eq!(load(&s.stats().unmatched_answers), 0);
    // IDs go on in order from where the counter is.
    assert_eq!(sent_id(&s.request(associate(), Waiter::Caller(0), t)), 1);
}

#[test]
fn a_late_answer_is_counted_and_dropped_and_a_reset_frees_the_expired_ids() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    let first = sent_id(&s.request(
        associate(),
        Waiter::Routed {
            dn: "5001".into(),
            tag: 7,
        },
        t0,
    ));
    let t1 = t0 + ms(500);
    s.request(
        associate(),
        Waiter::Routed {
            dn: "5002".into(),
            tag: 8,
        },
        t1,
    );
    assert_eq!(s.tick(t0 + TIMEOUT - ms(1)), vec![]);
    assert_eq!(
        s.tick(t0 + TIMEOUT),
        vec![routed("5001", 7, Err(timeout()))]
    );
    assert_eq!(
        s.tick(t1 + TIMEOUT),
        vec![routed("5002", 8, Err(timeout()))]
    );
    assert_eq!(load(&s.stats().invoke_ids_expired), 2);
    // The late answer: no second answer, no round trip.
    assert_eq!(
        s.on_frame(frame(first, ESCAPE_RESPONSE), t1 + secs(5)),
        vec![]
    );
    assert_eq!(load(&s.stats().late_answers), 1);
    assert_eq!(load(&s.stats().invoke_ids_expired), 1);
    // A reset frees the other one, and does not answer it again.
    assert_eq!(
        s.disconnected(Disconnect::Transport("reset".into()), t1 + secs(6)),
        vec![Output::Lost(Loss::Failed("reset".into()))]
    );
    assert_eq!(load(&s.stats().invoke_ids_expired), 0);
}

#[test]
fn every_request_is_answered_once_by_the_switch_by_its_timeout_or_by_the_link_loss() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    let id = sent_id(&s.request(associate(), Waiter::Caller(1), t0));
    assert_eq!(
        s.on_frame(frame(id, ESCAPE_RESPONSE), t0 + ms(30)),
        vec![
            roundtrip("Escape", ms(30)),
            answer(1, Ok(Message::EscapeResponse))
        ]
    );
    let id = sent_id(&s.request(associate(), Waiter::Caller(2), t0));
    let rejected = LinkError::Rejected {
        switch: "sw1".into(),
        error: CstaError::new("operation", "invalidDeviceID"),
    };
    assert_eq!(
        s.on_frame(frame(id, INVALID_DEVICE), t0 + ms(40)),
        vec![roundtrip("Escape", ms(40)), answer(2, Err(rejected))]
    );
    s.request(associate(), Waiter::Caller(3), t0);
    s.request(
        associate(),
        Waiter::Routed {
            dn: "5001".into(),
            tag: 4,
        },
        t0,
    );
    s.start_monitor("4001".into(), 5, t0);
    assert_eq!(load(&s.stats().in_flight), 3);
    let out = s.disconnected(Disconnect::Framing("framing broken".into()), t0 + ms(50));
    assert_eq!(out.len(), 4, "{out:?}");
    assert!(out.contains(&answer(3, Err(lost()))));
    assert!(out.contains(&routed("5001", 4, Err(lost()))));
    assert!(out.contains(&answer(5, Err(lost()))));
    assert_eq!(out[3], Output::Lost(Loss::Failed("framing broken".into())));
    assert_eq!(load(&s.stats().framing_resets), 1);
    assert_eq!(load(&s.stats().in_flight), 0);
    // Their deadlines are gone with them.
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.tick(t0 + secs(60)), vec![]);
}

#[test]
fn a_frame_that_cannot_be_queued_is_refused_as_overload_or_no_switch() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    let id = sent_id(&s.request(associate(), Waiter::Caller(1), t0));
    let overload = LinkError::Overload {
        switch: "sw1".into(),
    };
    assert_eq!(
        s.unsent(InvokeId::new(id).unwrap(), Unsent::Full, t0),
        vec![answer(1, Err(overload))]
    );
    let waiter = Waiter::Routed {
        dn: "5001".into(),
        tag: 9,
    };
    let id = sent_id(&s.request(associate(), waiter, t0));
    assert_eq!(
        s.unsent(InvokeId::new(id).unwrap(), Unsent::Closed, t0),
        vec![routed("5001", 9, Err(no_switch()))]
    );
    assert_eq!(load(&s.stats().in_flight), 0);
    assert_eq!(s.tick(t0 + TIMEOUT), vec![], "no deadline left");
    // The handshake that cannot be sent loses the link.
    let (mut s, t0) = session(&settings());
    let id = sent_id(&s.connected(t0));
    assert_eq!(
        s.unsent(InvokeId::new(id).unwrap(), Unsent::Closed, t0),
        vec![Output::Lost(Loss::Failed(no_switch().to_string()))]
    );
}

// ----- keep-alive ----------------------------------------------------------------------------

#[test]
fn a_keepalive_after_kpl_interval_of_silence_and_kpl_tolerance_misses_in_a_row_lose_the_link() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + secs(4)),
        "the handshake's deadline"
    );
    assert_eq!(s.tick(t0 + secs(4)), vec![]);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(10)));
    assert_eq!(s.tick(t0 + secs(10) - ms(1)), vec![]);
    assert_eq!(
        s.tick(t0 + secs(10)),
        vec![Output::Send(frame(2, REQUEST_SYSTEM_STATUS))]
    );
    // Unanswered within request-timeout: a miss, and the next keep-alive at once (still
    // nothing heard for kpl-interval).
    assert_eq!(s.poll_timeout(), Some(t0 + secs(14)));
    assert_eq!(
        s.tick(t0 + secs(14)),
        vec![Output::Send(frame(3, REQUEST_SYSTEM_STATUS))]
    );
    assert_eq!(load(&s.stats().keepalive_misses), 1);
    assert_eq!(sent_id(&s.tick(t0 + secs(18))), 4);
    assert_eq!(load(&s.stats().keepalive_misses), 2);
    assert_eq!(s.state(), LinkState::Up);
    assert_eq!(
        s.tick(t0 + secs(22)),
        vec![Output::Lost(Loss::Failed(
            "3 keep-alives unanswered".into()
        ))]
    );
    assert_eq!(load(&s.stats().keepalive_misses), 3);
    assert_eq!(s.state(), LinkState::Down);
}

#[test]
fn any_frame_from_the_switch_resets_the_keepalive_miss_count() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    assert_eq!(sent_id(&s.tick(t0 + secs(10))), 2);
    assert_eq!(sent_id(&s.tick(t0 + secs(14))), 3);
    assert_eq!(sent_id(&s.tick(t0 + secs(18))), 4);
    // Two misses; then an event on no monitor (ignored, but heard).
    assert_eq!(
        s.on_frame(frame(9999, &hotdesk_event("X")), t0 + secs(19)),
        vec![]
    );
    assert_eq!(s.tick(t0 + secs(22)), vec![], "one miss since the frame");
    assert_eq!(s.state(), LinkState::Up);
    // The next keep-alive when nothing has been heard for kpl-interval since the frame.
    let (t, out) = run_until_output(&mut s, 5);
    assert_eq!((t, sent_id(&out)), (t0 + secs(29), 5));
    assert_eq!(sent_id(&s.tick(t0 + secs(33))), 6);
    assert!(matches!(
        s.tick(t0 + secs(37)).as_slice(),
        [Output::Lost(_)]
    ));
    assert_eq!(load(&s.stats().keepalive_misses), 5);
    // An answered keep-alive is no miss and postpones the next one.
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    assert_eq!(sent_id(&s.tick(t0 + secs(10))), 2);
    assert_eq!(
        s.on_frame(frame(2, &status_response("normal")), t0 + secs(11)),
        vec![roundtrip("RequestSystemStatus", secs(1))]
    );
    assert_eq!(s.tick(t0 + secs(14)), vec![], "its deadline, answered");
    assert_eq!(s.poll_timeout(), Some(t0 + secs(21)));
    assert_eq!(load(&s.stats().keepalive_misses), 0);
}

#[test]
fn kpl_interval_zero_disables_the_keepalive() {
    let mut settings = settings();
    settings.kpl_interval = Duration::ZERO;
    let (mut s, t0) = session(&settings);
    up(&mut s, t0);
    assert_eq!(s.tick(t0 + TIMEOUT), vec![], "the handshake's deadline");
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.tick(t0 + secs(3600)), vec![]);
    assert_eq!(s.state(), LinkState::Up);
}

#[test]
fn no_keepalive_is_sent_or_counted_as_missed_while_the_driver_is_not_reading() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    s.read_paused();
    assert_eq!(load(&s.stats().read_pauses), 1);
    assert_eq!(
        s.tick(t0 + secs(60)),
        vec![],
        "silence is ours while paused"
    );
    assert_eq!(s.poll_timeout(), None);
    s.read_resumed(t0 + secs(61));
    assert_eq!(sent_id(&s.tick(t0 + secs(61))), 2);
    // A pause while it is out: its answer may be waiting unread, so no miss.
    s.read_paused();
    s.read_resumed(t0 + secs(62));
    assert_eq!(
        sent_id(&s.tick(t0 + secs(65))),
        3,
        "not a miss; the next one"
    );
    // Still paused when it is due: no miss either, and nothing sent while paused.
    s.read_paused();
    assert_eq!(s.tick(t0 + secs(69)), vec![]);
    assert_eq!(load(&s.stats().keepalive_misses), 0);
    // Reading again: a keep-alive unanswered with no pause is a miss.
    s.read_resumed(t0 + secs(70));
    assert_eq!(sent_id(&s.tick(t0 + secs(70))), 4);
    assert_eq!(sent_id(&s.tick(t0 + secs(74))), 5);
    assert_eq!(load(&s.stats().keepalive_misses), 1);
}

// ----- the switch's own requests -------------------------------------------------------------

#[test]
fn the_switchs_system_status_is_answered_on_its_own_invoke_id_0000() {
    let (mut s, t0) = session(&settings());
    s.connected(t0);
    let out = s.on_frame(frame(0, &system_status("enabled")), t0);
    let [Output::Reply(reply)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(reply.to_bytes().unwrap(), SYSTEM_STATUS_RESPONSE_0000);
    // Not up yet: a status that is not operational is answered and changes nothing.
    let out = s.on_frame(frame(0, &system_status("initializing")), t0);
    assert!(matches!(out.as_slice(), [Output::Reply(_)]), "{out:?}");
    assert_eq!(s.state(), LinkState::Handshaking);
    // The switch's RequestSystemStatus: we are normal, on its invoke ID.
    assert_eq!(
        s.on_frame(frame(42, REQUEST_SYSTEM_STATUS), t0),
        vec![Output::Reply(frame(42, STATUS_NORMAL))]
    );
}

#[test]
fn a_system_status_other_than_normal_or_enabled_while_up_loses_the_link() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    let out = s.on_frame(frame(0, &system_status("normal")), t0);
    assert!(matches!(out.as_slice(), [Output::Reply(_)]));
    assert_eq!(s.state(), LinkState::Up);
    s.request(associate(), Waiter::Caller(1), t0);
    let out = s.on_frame(frame(0, &system_status("disabled")), t0 + ms(1));
    assert_eq!(
        out[1..],
        [
            answer(1, Err(lost())),
            Output::Lost(Loss::Failed(
                "the switch reports systemStatus disabled".into()
            ))
        ]
    );
    assert!(matches!(&out[0], Output::Reply(r) if r.invoke_id == InvokeId::ZERO));
    assert_eq!(s.state(), LinkState::Down);
}

// ----- frames that go to nobody --------------------------------------------------------------

#[test]
fn a_frame_that_cannot_be_read_fails_the_request_it_answers_and_unknown_answers_are_counted() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    let id = sent_id(&s.request(associate(), Waiter::Caller(1), t0));
    let out = s.on_frame(frame(id, BROKEN_XML), t0 + ms(2));
    assert_eq!(out[0], roundtrip("Escape", ms(2)));
    assert!(
        matches!(&out[1], Output::Answer { to: 1, result: Err(LinkError::BadAnswer { switch, .. }) } if &**switch == "sw1"),
        "{out:?}"
    );
    assert_eq!(load(&s.stats().decode_errors), 1);
    // Unreadable as an event, or as an answer to nothing: counted and skipped.
    assert_eq!(s.on_frame(frame(9999, BROKEN_XML), t0), vec![]);
    assert_eq!(s.on_frame(frame(77, BROKEN_XML), t0), vec![]);
    assert_eq!(load(&s.stats().decode_errors), 3);
    // An answer to an ID with no request.
    assert_eq!(s.on_frame(frame(1234, ESCAPE_RESPONSE), t0), vec![]);
    assert_eq!(load(&s.stats().unmatched_answers), 2);
    assert_eq!(s.state(), LinkState::Up);
}

// ----- monitors ------------------------------------------------------------------------------

/// Start the monitor of `dn` and have the switch accept it as `cross_ref`.
fn monitor(s: &mut Session<u32>, dn: &str, cross_ref: &str, t: Instant) {
    let id = sent_id(&s.start_monitor(dn.into(), 0, t));
    let out = s.on_frame(frame(id, &monitor_started(cross_ref)), t);
    let accepted = Message::MonitorStartResponse {
        cross_ref: cross_ref.into(),
    };
    assert_eq!(out[1], answer(0, Ok(accepted)));
}

fn event_for(dn: &str, cross_ref: &str) -> Out {
    vec![Output::ToShard {
        dn: dn.into(),
        delivery: Delivery::Event(hotdesk_message(cross_ref)),
    }]
}

#[test]
fn events_go_to_the_dn_whose_monitor_carried_them_from_monitor_start_to_monitor_stop() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    assert_eq!(
        s.start_monitor("5001".into(), 1, t0),
        vec![Output::Send(frame(2, MONITOR_START_5001))]
    );
    // Not accepted yet: an event on M1 is for nobody.
    assert_eq!(s.on_frame(frame(9999, &hotdesk_event("M1")), t0), vec![]);
    assert_eq!(
        s.on_frame(frame(2, &monitor_started("M1")), t0 + ms(3))[1],
        answer(
            1,
            Ok(Message::MonitorStartResponse {
                cross_ref: "M1".into()
            })
        )
    );
    let event = |s: &mut Session<u32>, cross_ref: &str| {
        s.on_frame(frame(9999, &hotdesk_event(cross_ref)), t0)
    };
    assert_eq!(event(&mut s, "M1"), event_for("5001", "M1"));
    assert_eq!(s.on_frame(frame(9999, EVENT_WITHOUT_MONITOR), t0), vec![]);
    assert_eq!(event(&mut s, "M9"), vec![], "no such monitor");
    monitor(&mut s, "4001", "M2", t0);
    assert_eq!(event(&mut s, "M2"), event_for("4001", "M2"));
    // A new monitor of 5001 replaces the old one.
    monitor(&mut s, "5001", "M3", t0);
    assert_eq!(event(&mut s, "M1"), vec![]);
    assert_eq!(event(&mut s, "M3"), event_for("5001", "M3"));
    assert_eq!(load(&s.stats().events_received), 3);
    // MonitorStop: events on it are for nobody from the moment it is sent.
    let out = s.stop_monitor("5001".into(), 3, t0);
    let [Output::Send(stop)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(stop.body, MONITOR_STOP_M3);
    assert_eq!(event(&mut s, "M3"), vec![]);
    assert_eq!(
        s.on_frame(frame(stop.invoke_id.get(), MONITOR_STOP_RESPONSE), t0)[1],
        answer(3, Ok(Message::MonitorStopResponse))
    );
    // Nothing left to stop: answered at once, nothing sent.
    let stopped = vec![answer(4, Ok(Message::MonitorStopResponse))];
    assert_eq!(s.stop_monitor("5001".into(), 4, t0), stopped);
    // The connection's monitors go with it.
    s.disconnected(Disconnect::Transport("gone".into()), t0 + secs(1));
    let refused = vec![answer(4, Err(no_switch()))];
    assert_eq!(s.stop_monitor("4001".into(), 4, t0 + secs(1)), refused);
    up(&mut s, t0 + secs(2));
    assert_eq!(event(&mut s, "M2"), vec![]);
    assert_eq!(s.stop_monitor("4001".into(), 4, t0 + secs(2)), stopped);
}

// ----- invoke ID exhaustion ------------------------------------------------------------------

#[test]
fn ordinary_requests_leave_one_id_for_the_keepalive_and_crowded_expired_ids_reset_the_link() {
    let mut settings = settings();
    settings.kpl_interval = secs(1);
    settings.kpl_tolerance = 10;
    let (mut s, t0) = session(&settings);
    up(&mut s, t0); // The handshake took 0001, answered.
    let mut answers = 0;
    for tag in 0..9998 {
        let waiter = Waiter::Routed {
            dn: "5001".into(),
            tag,
        };
        match s.request(associate(), waiter, t0).as_slice() {
            [Output::Send(f)] => assert_eq!(f.invoke_id.get(), tag as u16 + 2),
            [Output::ToShard { .. }] if tag == 9997 => answers += 1, // overload
            other => panic!("request {tag}: {other:?}"),
        }
    }
    // The keep-alive takes the one ID left.
    assert_eq!(
        s.tick(t0 + secs(1)),
        vec![Output::Send(frame(1, REQUEST_SYSTEM_STATUS))]
    );
    let out = s.tick(t0 + TIMEOUT);
    assert_eq!(out.len(), 9997, "every request times out once");
    answers += out.len();
    // The keep-alive times out too, and the next cannot be sent: two misses.
    assert_eq!(s.tick(t0 + TIMEOUT + secs(1)), vec![]);
    assert_eq!(load(&s.stats().keepalive_misses), 2);
    assert_eq!(load(&s.stats().invoke_ids_expired), 9998);
    // Once the expiries are older than request-timeout, the link is reset.
    let aged = t0 + TIMEOUT * 2 + Duration::from_nanos(1);
    assert_eq!(s.poll_timeout(), Some(aged));
    assert_eq!(s.tick(aged - ms(1)), vec![]);
    let out = s.tick(aged);
    let [Output::Lost(Loss::Exhausted(e))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((e.reserved, e.expired, e.long_expired), (9998, 9998, 9997));
    assert_eq!(answers, 9998, "each request answered exactly once");
    assert_eq!(load(&s.stats().invoke_ids_expired), 0);
}

#[test]
fn one_id_expired_for_ten_request_timeouts_resets_the_link_unless_the_driver_was_not_reading() {
    let mut settings = settings();
    settings.kpl_interval = Duration::ZERO;
    settings.request_timeout = ms(100);
    for paused in [false, true] {
        let (mut s, t0) = session(&settings);
        up(&mut s, t0);
        let id = sent_id(&s.request(associate(), Waiter::Caller(1), t0));
        let timed_out = t0 + ms(100);
        if paused {
            s.tick(timed_out);
            s.read_paused();
            assert_eq!(s.tick(timed_out + secs(1)), vec![]);
            assert_eq!(s.poll_timeout(), None, "nothing to do while paused");
            s.read_resumed(timed_out + ms(1500));
            // A whole request-timeout of reading before the switch is blamed again.
            let (t, out) = run_until_output(&mut s, 10);
            assert_eq!(t, timed_out + ms(1600));
            assert!(matches!(out.as_slice(), [Output::Lost(Loss::Exhausted(_))]));
        } else {
            let (t, out) = run_until_output(&mut s, 1);
            assert_eq!(
                (t, &out),
                (
                    timed_out,
                    &vec![answer(
                        1,
                        Err(LinkError::Timeout {
                            switch: "sw1".into(),
                            timeout: ms(100)
                        })
                    )]
                )
            );
            assert_eq!(s.tick(timed_out + secs(1) - ms(1)), vec![]);
            let (t, out) = run_until_output(&mut s, 10);
            assert_eq!(t, timed_out + secs(1));
            let [Output::Lost(Loss::Exhausted(e))] = out.as_slice() else {
                panic!("{out:?}")
            };
            assert_eq!((e.reserved, e.oldest), (1, secs(1)));
            // The late answer after the reset is an answer to nothing.
            s.on_frame(frame(id, ESCAPE_RESPONSE), t);
            assert_eq!(load(&s.stats().unmatched_answers), 1);
        }
    }
}
