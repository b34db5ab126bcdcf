//! The ECMA-354 and system-register rules of the link, one test each, on a session driven by
//! hand with made-up instants and frames written out literally.

use super::*;

/// Our `StartApplicationSession` with the defaults but a 6 s duration.
const START_6S: &str = r#"<?xml version="1.0" encoding="UTF-8"?><StartApplicationSession xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><applicationInfo><applicationID>csta-router</applicationID></applicationInfo><requestedProtocolVersions><protocolVersion>http://www.ecma-international.org/standards/ecma-323/csta/ed3</protocolVersion></requestedProtocolVersions><requestedSessionDuration>6</requestedSessionDuration></StartApplicationSession>"#;
/// Our timer reset of session `S-1`.
const RESET_S1: &str = r#"<?xml version="1.0" encoding="UTF-8"?><ResetApplicationSessionTimer xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><sessionID>S-1</sessionID><requestedSessionDuration>6</requestedSessionDuration></ResetApplicationSessionTimer>"#;
/// Our stop of session `S-1`.
const STOP_S1: &str = r#"<?xml version="1.0" encoding="UTF-8"?><StopApplicationSession xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><sessionID>S-1</sessionID><sessionEndReason><appEndReason>normal</appEndReason></sessionEndReason></StopApplicationSession>"#;
/// Our `SystemRegister`.
const SYSTEM_REGISTER: &str = r#"<?xml version="1.0" encoding="UTF-8"?><SystemRegister xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#;
/// The switch grants session `S-1` for 6 s, OpenScape-style (an unused prefix, a heartbeat
/// extension).
const GRANTED_6S: &str = r#"<?xml version="1.0" encoding="UTF-8"?><StartApplicationSessionPosResponse xmlns:aps="http://www.ecma-international.org/standards/ecma-354/appl_session"><sessionID>S-1</sessionID><actualProtocolVersion>http://www.ecma-international.org/standards/ecma-323/csta/ed3</actualProtocolVersion><actualSessionDuration>6</actualSessionDuration><extensions><actualHBT>0</actualHBT></extensions></StartApplicationSessionPosResponse>"#;
const RESET_OK: &str = r#"<ResetApplicationSessionTimerPosResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><actualSessionDuration>6</actualSessionDuration></ResetApplicationSessionTimerPosResponse>"#;
const RESET_REFUSED: &str = r#"<ResetApplicationSessionTimerNegResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><errorCode><definedError>invalidSessionID</definedError></errorCode></ResetApplicationSessionTimerNegResponse>"#;
const STOPPED: &str = r#"<StopApplicationSessionPosResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"/>"#;
/// A self-closing, prefixed `SystemStatus` without its child.
const EMPTY_SYSTEM_STATUS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><ns3:SystemStatus xmlns:ns2="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns3="http://www.ecma-international.org/standards/ecma-323/csta/ed4"/>"#;

fn refused(inner: &str) -> String {
    format!(
        r#"<StartApplicationSessionNegResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><errorCode>{inner}</errorCode></StartApplicationSessionNegResponse>"#
    )
}

fn session_settings() -> LinkSettings {
    LinkSettings {
        app_session: Some(crate::link::AppSessionSettings {
            application_id: "csta-router".into(),
            protocol_version: "http://www.ecma-international.org/standards/ecma-323/csta/ed3"
                .into(),
            duration: secs(6),
        }),
        ..settings()
    }
}

/// Connect a session link at `t`, open session `S-1` (6 s) and pass the handshake.
fn session_up(s: &mut Session<u32>, t: Instant) {
    let out = s.connected(t);
    let [Output::Send(start)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(start.body, START_6S);
    let out = s.on_frame(frame(start.invoke_id.get(), GRANTED_6S), t);
    let [Output::RoundTrip { .. }, Output::Send(status)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(status.body, REQUEST_SYSTEM_STATUS);
    let out = s.on_frame(frame(status.invoke_id.get(), STATUS_NORMAL), t);
    assert!(matches!(out.last(), Some(Output::Up { .. })), "{out:?}");
    assert_eq!(s.session_id(), Some("S-1"));
}

#[test]
fn a_session_link_opens_its_session_before_any_csta_request() {
    let (mut s, t0) = session(&session_settings());
    assert_eq!(s.connected(t0), vec![Output::Send(frame(1, START_6S))]);
    // Nothing else goes out before the positive response.
    assert_eq!(
        s.request(associate(), Waiter::Caller(7), t0),
        vec![answer(7, Err(no_switch()))]
    );
    assert_eq!(
        s.on_frame(frame(1, GRANTED_6S), t0 + ms(3)),
        vec![
            roundtrip("other", ms(3)),
            Output::Send(frame(2, REQUEST_SYSTEM_STATUS))
        ]
    );
    s.on_frame(frame(2, &status_response("normal")), t0 + ms(4));
    assert_eq!(s.state(), LinkState::Up);
    // Every connection opens a new session.
    s.disconnected(Disconnect::Transport("gone".into()), t0 + secs(1));
    assert_eq!(s.session_id(), None);
    assert_eq!(
        s.connected(t0 + secs(2)),
        vec![Output::Send(frame(3, START_6S))]
    );
}

#[test]
fn a_refused_or_unanswered_session_keeps_the_link_down_and_says_why() {
    let (mut s, t0) = session(&session_settings());
    let cases = [
        (
            refused("<definedError>invalidApplicationInfo</definedError>"),
            "invalidApplicationInfo",
            "definedError invalidApplicationInfo",
        ),
        (
            refused("<definedError>tooManySessions</definedError>"),
            "other",
            "definedError tooManySessions",
        ),
        (
            refused("<applError>licence</applError>"),
            "other",
            "applError \"licence\"",
        ),
        (
            INVALID_DEVICE.to_owned(),
            "other",
            "CSTAErrorCode operation/invalidDeviceID",
        ),
    ];
    for (i, (body, reason, text)) in cases.into_iter().enumerate() {
        let t = t0 + secs(i as u64);
        let id = sent_id(&s.connected(t));
        let out = s.on_frame(frame(id, &body), t);
        let why = format!("the switch refused the ECMA-354 application session: {text}");
        assert!(
            matches!(out.as_slice(), [Output::RoundTrip { .. }, Output::SessionFailed { reason: r }, Output::Lost(Loss::Failed(w))] if *r == reason && w.ends_with(text)),
            "{out:?} / {why}"
        );
        assert_eq!(s.state(), LinkState::Down);
    }
    // No answer within request-timeout.
    let t = t0 + secs(10);
    s.connected(t);
    assert_eq!(
        s.tick(t + TIMEOUT),
        vec![
            Output::SessionFailed { reason: "timeout" },
            Output::Lost(Loss::Failed(
                "the switch did not answer StartApplicationSession".into()
            ))
        ]
    );
}

#[test]
fn timer_resets_replace_the_keepalive_at_a_third_of_the_grant_whatever_the_traffic() {
    let settings = LinkSettings {
        kpl_interval: secs(1),
        ..session_settings()
    };
    let (mut s, t0) = session(&settings);
    session_up(&mut s, t0);
    // A third of 6 s, although kpl-interval is 1 s and frames keep coming.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(2)));
    s.on_frame(frame(0, &system_status("normal")), t0 + ms(1500));
    assert_eq!(s.tick(t0 + ms(1999)), vec![]);
    let out = s.tick(t0 + secs(2));
    assert_eq!(out, vec![Output::Send(frame(3, RESET_S1))]);
    s.on_frame(frame(3, RESET_OK), t0 + ms(2010));
    assert_eq!(s.poll_timeout(), Some(t0 + secs(4)));
    assert_eq!(load(&s.stats().keepalive_misses), 0);
}

#[test]
fn the_session_timer_is_reset_while_the_switch_is_not_ready_yet() {
    let (mut s, t0) = session(&session_settings());
    s.connected(t0);
    s.on_frame(frame(1, GRANTED_6S), t0);
    s.on_frame(frame(2, &status_response("initializing")), t0 + ms(1));
    assert_eq!(s.state(), LinkState::Handshaking);
    // Asked again every reconnect-min; the reset comes a third of the grant after the start.
    let mut resets = 0;
    let mut t = t0;
    while t < t0 + secs(3) {
        t = s.poll_timeout().unwrap();
        for out in s.tick(t) {
            if let Output::Send(f) = &out {
                if f.body == RESET_S1 {
                    resets += 1;
                    assert_eq!(t, t0 + secs(2));
                }
                let answer = if f.body == RESET_S1 {
                    RESET_OK.to_owned()
                } else {
                    status_response("initializing")
                };
                s.on_frame(frame(f.invoke_id.get(), &answer), t);
            }
        }
    }
    assert_eq!(resets, 1);
}

#[test]
fn resets_refused_or_unanswered_kpl_tolerance_times_in_a_row_lose_the_link() {
    let settings = LinkSettings {
        request_timeout: ms(500),
        ..session_settings()
    };
    let (mut s, t0) = session(&settings);
    session_up(&mut s, t0);
    // Refused: a miss, although a frame came.
    let id = sent_id(&s.tick(t0 + secs(2)));
    s.on_frame(frame(id, RESET_REFUSED), t0 + ms(2001));
    assert_eq!(load(&s.stats().keepalive_misses), 1);
    // A positive answer ends the run.
    let id = sent_id(&s.tick(t0 + secs(4)));
    s.on_frame(frame(id, RESET_OK), t0 + ms(4001));
    // Then: refused, unanswered, refused: three in a row.
    let id = sent_id(&s.tick(t0 + secs(6)));
    s.on_frame(frame(id, RESET_REFUSED), t0 + ms(6001));
    sent_id(&s.tick(t0 + secs(8)));
    assert_eq!(s.tick(t0 + ms(8500)), vec![]);
    assert_eq!(load(&s.stats().keepalive_misses), 3);
    assert_eq!(s.state(), LinkState::Up);
    let id = sent_id(&s.tick(t0 + secs(10)));
    let out = s.on_frame(frame(id, RESET_REFUSED), t0 + ms(10_001));
    assert!(
        matches!(out.last(), Some(Output::Lost(Loss::Failed(why))) if why.starts_with("3 session timer resets refused or unanswered in a row")),
        "{out:?}"
    );
}

#[test]
fn a_stop_on_purpose_names_the_session_and_a_lost_link_has_none_to_stop() {
    let (mut s, t0) = session(&session_settings());
    session_up(&mut s, t0);
    let out = s.stop_session(9, t0 + secs(1));
    assert_eq!(out, vec![Output::Send(frame(3, STOP_S1))]);
    let out = s.on_frame(frame(3, STOPPED), t0 + ms(1002));
    assert_eq!(
        out,
        vec![
            roundtrip("other", ms(2)),
            answer(9, Ok(Message::AppSession(crate::csta::AppSession::StopPos)))
        ]
    );
    // After a loss: nothing is sent, the caller hears at once.
    session_up(&mut s, t0 + secs(2));
    s.disconnected(Disconnect::Transport("gone".into()), t0 + secs(3));
    let out = s.stop_session(9, t0 + secs(3));
    assert_eq!(
        out,
        vec![answer(
            9,
            Ok(Message::AppSession(crate::csta::AppSession::StopPos))
        )]
    );
}

#[test]
fn system_register_follows_the_link_start_and_status_reports_take_the_link_out() {
    let settings = LinkSettings {
        system_register: true,
        ..settings()
    };
    let (mut s, t0) = session(&settings);
    s.connected(t0);
    let out = s.on_frame(frame(1, STATUS_NORMAL), t0);
    assert_eq!(out.last(), Some(&Output::Send(frame(2, SYSTEM_REGISTER))));
    let registered = r#"<SystemRegisterResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><sysStatRegisterID>27ss</sysStatRegisterID></SystemRegisterResponse>"#;
    assert_eq!(
        s.on_frame(frame(2, registered), t0 + ms(1)),
        vec![roundtrip("other", ms(1))]
    );
    let out = s.on_frame(frame(7, &system_status("disabled")), t0 + ms(2));
    assert!(
        matches!(out.as_slice(), [Output::Reply(_), Output::Lost(Loss::Failed(why))] if why == "the switch reports systemStatus disabled"),
        "{out:?}"
    );
}

#[test]
fn a_system_status_without_its_child_is_answered_and_warned_once_not_a_decode_error() {
    let (mut s, t0) = session(&settings());
    up(&mut s, t0);
    for i in 0..2 {
        let out = s.on_frame(frame(0, EMPTY_SYSTEM_STATUS), t0 + secs(i));
        let [Output::Reply(reply)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            reply.to_bytes().unwrap().as_ref(),
            SYSTEM_STATUS_RESPONSE_0000
        );
    }
    assert_eq!(s.state(), LinkState::Up);
    assert_eq!(load(&s.stats().warnings), 2);
    assert_eq!(load(&s.stats().decode_errors), 0);
    assert!(s.app.warned_empty_status);
}
