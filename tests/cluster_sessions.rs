//! Resumable sessions across the cluster (README, "Resumable sessions"): real `nats-server`,
//! `pbx-sim` and router processes. A desktop resumes its session on another node, also after
//! its node was killed, and gets every event of its DNs it missed, in order, once; a resume
//! on another node takes the session over (4009); of two nodes resuming one session at once,
//! exactly one does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{bed, router};

use bed::Bed;
use router::Client;
use serde_json::{json, Value};
use std::time::Duration;

/// Sessions linger long enough for the tests.
const SERVER: &str = "session-linger = \"30s\"";

/// `RequestOpen` on node `url` (with `resume` when given): the client and the reply, the link
/// event of the one switch read.
async fn open(url: &str, resume: Option<Value>) -> (Client, Value) {
    Client::open_as(url, "desk", resume, 1).await
}

/// The next hot-desk event, of `dn`: its `eventSeq` and `privateMsgId`.
async fn event(c: &mut Client, dn: &str) -> (u64, u64) {
    let ev = c.recv().await;
    assert_eq!(ev["monitoredDn"], dn, "{ev}");
    (
        ev["eventSeq"].as_u64().unwrap(),
        ev["privateMsgId"].as_u64().unwrap(),
    )
}

/// What a connection gets within a second: the `privateMsgId`s of its events, and its close
/// code if it was closed.
async fn drain(c: &mut Client) -> (Vec<u64>, Option<u16>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    let mut privates = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => return (privates, None),
            Ok(Some(Ok(Ws::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if let Some(m) = v["privateMsgId"].as_u64() {
                    privates.push(m);
                }
            }
            Ok(Some(Ok(Ws::Close(f)))) => return (privates, f.map(|f| u16::from(f.code))),
            Ok(None) | Ok(Some(Err(_))) => return (privates, Some(0)),
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[test]
fn a_desktop_resumes_on_another_node_after_its_node_was_killed() {
    let _one = bed::one_at_a_time();
    let mut bed = Bed::start_with(1, 3, SERVER);
    let rt = bed::runtime();
    rt.block_on(async {
        let (owner, _, sim) = bed.one_switch_ready().await;
        let others: Vec<String> = bed
            .live()
            .map(|(n, _)| n.to_owned())
            .filter(|n| *n != owner)
            .collect();
        let (home, away) = (others[0].clone(), others[1].clone());
        let mut watcher = bed.client(&owner).await;
        watcher.register("4041").await;
        let (mut c, reply) = open(&bed.node(&home).url(), None).await;
        let id = reply["sessionId"].as_str().unwrap().to_owned();
        c.register("4041").await;
        sim.post_ok("/hotdesk", json!({"guest": "4041", "host": "4042"}))
            .await;
        let first = event(&mut c, "4041").await;
        assert_eq!(event(&mut watcher, "4041").await, first);
        drop(c);
        bed.kill(&home);
        // The phone acts while the desktop's node is gone.
        sim.post_ok("/hotdesk/cancel", json!({"guest": "4041"}))
            .await;
        sim.post_ok("/hotdesk", json!({"guest": "4041", "host": "4043"}))
            .await;
        let missed = [
            event(&mut watcher, "4041").await,
            event(&mut watcher, "4041").await,
        ];
        let resume = json!({"sessionId": id, "lastEventSeq": {"sw1": first.0}});
        let (mut c, reply) = open(&bed.node(&away).url(), Some(resume)).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(reply["sessionId"], json!(id), "{reply}");
        assert_eq!(reply["replayed"], 2, "{reply}");
        assert_eq!(
            [event(&mut c, "4041").await, event(&mut c, "4041").await],
            missed
        );
        // Live events follow, once; the registration is the session's (no new one).
        sim.post_ok("/hotdesk/cancel", json!({"guest": "4041"}))
            .await;
        let live = event(&mut c, "4041").await;
        assert!(live.0 > missed[1].0);
        c.expect_nothing().await;
        let q = c
            .request(json!({"message": "RequestPrivateService", "thisDn": "4041", "privateMsgId": 1, "extensions": {"HOST_DN": "4044"}}))
            .await;
        assert_eq!(q["message"], "EventPrivateInfo", "{q}");
    });
    bed.stop();
}

#[test]
fn when_the_dead_node_owned_the_switch_the_failover_comes_between_the_events() {
    let _one = bed::one_at_a_time();
    let mut bed = Bed::start_with(1, 3, SERVER);
    let rt = bed::runtime();
    rt.block_on(async {
        let (owner, other, sim) = bed.one_switch_ready().await;
        let mut watcher = bed.client(&other).await;
        watcher.register("4061").await;
        let (mut c, reply) = open(&bed.node(&owner).url(), None).await;
        let id = reply["sessionId"].as_str().unwrap().to_owned();
        c.register("4061").await;
        // The phone acts once before the kill: the desktop and the watcher see it.
        sim.post_ok("/hotdesk", json!({"guest": "4061", "host": "4062"}))
            .await;
        let before = event(&mut c, "4061").await;
        assert_eq!(event(&mut watcher, "4061").await, before);
        drop(c);
        bed.kill(&owner);
        // The watcher's node hears of the failover, then of the new owner's link.
        loop {
            let m = watcher
                .next(Duration::from_secs(15))
                .await
                .expect("the watcher hears of the new owner's link");
            if bed::link_connected(&m, "sw1") {
                break;
            }
        }
        // The phone acts once after.
        sim.post_ok("/hotdesk/cancel", json!({"guest": "4061"}))
            .await;
        let after = event(&mut watcher, "4061").await;
        let resume = json!({"sessionId": id, "lastEventSeq": {"sw1": before.0}});
        let (mut c, reply) = open(&bed.node(&other).url(), Some(resume)).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(reply["replayed"], 1, "{reply}");
        let down = c.recv().await;
        assert_eq!(
            (&down["message"], &down["switch"], &down["reason"]),
            (
                &json!("EventLinkDisconnected"),
                &json!("sw1"),
                &json!("failover")
            ),
            "{down}"
        );
        let up = c.recv().await;
        assert_eq!(
            (&up["message"], &up["switch"]),
            (&json!("EventLinkConnected"), &json!("sw1")),
            "{up}"
        );
        assert_eq!(event(&mut c, "4061").await, after);
        c.expect_nothing().await;
    });
    bed.stop();
}

/// More events than `client-queue` while away: the replay is what the event stream holds,
/// on another node, or (`same_node`) on the node holding the session, which fills its gap
/// from the stream.
fn replay_beyond_client_queue(same_node: bool) {
    let _one = bed::one_at_a_time();
    let mut bed = Bed::start_with(1, 3, "session-linger = \"30s\"\nclient-queue = 16");
    let rt = bed::runtime();
    rt.block_on(async {
        let (owner, home, sim) = bed.one_switch_ready().await;
        let mut watcher = bed.client(&owner).await;
        watcher.register("4071").await;
        let (mut c, reply) = open(&bed.node(&home).url(), None).await;
        let id = reply["sessionId"].as_str().unwrap().to_owned();
        c.register("4071").await;
        drop(c);
        // 40 events while away, in chunks the watcher's queue of 16 takes.
        let mut seen = Vec::new();
        for _ in 0..5 {
            sim.post_ok(
                "/burst",
                json!({"guest": "4071", "host": "4072", "count": 4}),
            )
            .await;
            for _ in 0..8 {
                seen.push(event(&mut watcher, "4071").await.0);
            }
        }
        let away = if same_node {
            home.clone()
        } else {
            bed.live()
                .map(|(n, _)| n.to_owned())
                .find(|n| *n != owner && *n != home)
                .unwrap()
        };
        let (mut c, reply) = open(&bed.node(&away).url(), Some(json!({"sessionId": id}))).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(reply["replayed"], 40, "{reply}");
        assert!(reply.get("resumeGap").is_none(), "{reply}");
        let mut got = Vec::new();
        for _ in 0..40 {
            got.push(event(&mut c, "4071").await.0);
        }
        assert_eq!(got, seen);
    });
    bed.stop();
}

#[test]
fn on_another_node_the_replay_is_what_the_stream_holds_not_only_client_queue_events() {
    replay_beyond_client_queue(false);
}

#[test]
fn on_the_same_node_a_gap_in_the_kept_events_is_filled_from_the_stream() {
    replay_beyond_client_queue(true);
}

#[test]
fn a_monitoring_session_takes_all_its_registrations_to_the_other_node() {
    let _one = bed::one_at_a_time();
    let mut bed = Bed::start_with(1, 3, SERVER);
    let rt = bed::runtime();
    rt.block_on(async {
        let (owner, home, sim) = bed.one_switch_ready().await;
        let away = bed
            .live()
            .map(|(n, _)| n.to_owned())
            .find(|n| *n != owner && *n != home)
            .unwrap();
        // Every DN of the switch, in monitor mode.
        let (mut c, reply) = open(&bed.node(&home).url(), None).await;
        let id = reply["sessionId"].as_str().unwrap().to_owned();
        for dn in 4000..5000 {
            let r = c
                .request(json!({"message": "RequestRegisterAddress", "thisDn": dn.to_string(), "registerMode": "monitor"}))
                .await;
            assert_eq!(r["message"], "EventRegistered", "{r}");
        }
        bed::monitors_on(&sim, "4999", 1).await;
        let mut watcher = bed.client(&owner).await;
        watcher.register("4999").await;
        drop(c);
        // While away: an event on two of its DNs (read back from the switch's events, the
        // session having too many DNs for a subject each).
        sim.post_ok("/hotdesk", json!({"guest": "4999", "host": "4998"}))
            .await;
        event(&mut watcher, "4999").await;
        let (mut c, reply) = open(&bed.node(&away).url(), Some(json!({"sessionId": id}))).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(reply["replayed"], 2, "{reply}");
        let mut replayed = vec![
            c.recv().await["monitoredDn"].clone(),
            c.recv().await["monitoredDn"].clone(),
        ];
        replayed.sort_by_key(|v| v.to_string());
        assert_eq!(replayed, [json!("4998"), json!("4999")]);
        sim.post_ok("/hotdesk/cancel", json!({"guest": "4999"}))
            .await;
        c.recv().await;
        c.recv().await;
        // The previous node released its registrations; the switch still monitors every DN.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let monitors = sim.state().await["monitors"].as_array().unwrap().len();
        assert_eq!(monitors, 1000);
        for (guest, host) in [("4000", "4500"), ("4997", "4996")] {
            sim.post_ok("/hotdesk", json!({"guest": guest, "host": host}))
                .await;
            let mut got = vec![
                c.recv().await["monitoredDn"].clone(),
                c.recv().await["monitoredDn"].clone(),
            ];
            got.sort_by_key(|v| v.to_string());
            let mut want = vec![json!(guest), json!(host)];
            want.sort_by_key(|v| v.to_string());
            assert_eq!(got, want);
        }
    });
    bed.stop();
}

#[test]
fn a_resume_on_another_node_takes_the_session_over_and_only_one_of_two_wins() {
    let _one = bed::one_at_a_time();
    let mut bed = Bed::start_with(1, 3, SERVER);
    let rt = bed::runtime();
    rt.block_on(async {
        let (owner, _, sim) = bed.one_switch_ready().await;
        let names: Vec<String> = bed.live().map(|(n, _)| n.to_owned()).collect();
        let home = bed.other_than(&owner);
        let (mut old, reply) = open(&bed.node(&home).url(), None).await;
        let id = reply["sessionId"].as_str().unwrap().to_owned();
        old.register("4051").await;
        // Still connected to its node: a resume on another node closes it with 4009.
        let elsewhere = names.iter().find(|n| **n != home).unwrap().clone();
        let (mut new, reply) =
            open(&bed.node(&elsewhere).url(), Some(json!({"sessionId": id}))).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(old.closed().await, 4009);
        sim.post_ok("/hotdesk", json!({"guest": "4051", "host": "4052"}))
            .await;
        let (_, msg) = event(&mut new, "4051").await;
        assert_eq!(msg, 1);
        // Dropped: two other nodes resume it at the same instant; exactly one does.
        drop(new);
        let rest: Vec<String> = names.iter().filter(|n| **n != elsewhere).cloned().collect();
        let (url_a, url_b) = (bed.node(&rest[0]).url(), bed.node(&rest[1]).url());
        let resume = || Some(json!({"sessionId": id}));
        let ((mut a, ra), (mut b, rb)) =
            tokio::join!(open(&url_a, resume()), open(&url_b, resume()));
        sim.post_ok("/hotdesk/cancel", json!({"guest": "4051"}))
            .await;
        // Exactly one holds it and gets the live event: the other got `resumed: false` (it
        // lost the compare-and-set) or, when it came first, was closed with 4009.
        let (ea, eb) = tokio::join!(drain(&mut a), drain(&mut b));
        let holders: Vec<&(Vec<u64>, Option<u16>)> = [&ea, &eb]
            .into_iter()
            .filter(|(privates, _)| privates.contains(&2))
            .collect();
        assert_eq!(holders.len(), 1, "{ra} {ea:?}\n{rb} {eb:?}");
        for (reply, (privates, end)) in [(&ra, &ea), (&rb, &eb)] {
            if !privates.contains(&2) {
                assert!(
                    reply["resumed"] == false || *end == Some(4009),
                    "{reply} {privates:?} {end:?}"
                );
            }
        }
    });
    bed.stop();
}
