#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The cluster on real processes (README, "Cluster"; SPEC §10): a `nats-server` with JetStream,
//! `pbx-sim` processes as the switches, and router nodes as separate `csta-router` processes,
//! killed (SIGKILL), paused (SIGSTOP) and resumed for real. The tests run one at a time (each
//! holds `one_at_a_time`; the harness is `common::bed`), `lease-ttl` is 2 s, and time bounds are generous correctness
//! bounds; how fast a failover is comes from `tests/benches/cluster-failover.sh`.

mod common;
use common::bed::*;
use common::process::RouterProcess;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[test]
fn every_switch_has_one_owner_and_the_nodes_share_them_evenly() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        // Two switches on three nodes: each switch one owner, no node two.
        let mut bed = Bed::start(2, 3);
        let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for o in owners.values() {
            *per_node.entry(o).or_default() += 1;
        }
        assert!(per_node.values().all(|&n| n == 1), "{owners:?}");
        for p in &bed.pbxes {
            bed.link_up_everywhere(&p.name).await;
            assert_eq!(connections(&p.control()).await, 1, "{}: one link", p.name);
        }
        // The metrics agree: the owner exports 1, the others 0; everyone sees three nodes.
        for (name, node) in bed.live() {
            let (_, m) = node.scrape().await;
            assert_eq!(m["csta_router_cluster_nodes"], 3.0, "{name}");
            for (switch, owner) in &owners {
                let owned = m[&format!("csta_router_switch_owned{{switch=\"{switch}\"}}")];
                assert_eq!(owned, f64::from(u8::from(owner == name)), "{name} {switch}");
            }
            let log = node.log();
            for (switch, owner) in &owners {
                if owner == name {
                    assert!(
                        log.contains(&format!("node={name}"))
                            && log.contains("this node owns the switch now")
                            && log.contains(&format!("switch={switch}")),
                        "{log}"
                    );
                }
            }
        }
        bed.stop();

        // Four switches on two nodes: two each.
        let mut bed = Bed::start(4, 2);
        let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        let a = owners.values().filter(|o| *o == "a").count();
        assert_eq!(a, 2, "{owners:?}");
        for p in &bed.pbxes {
            bed.link_up_everywhere(&p.name).await;
            assert_eq!(connections(&p.control()).await, 1, "{}: one link", p.name);
        }
        bed.stop();
    });
}

#[test]
fn a_non_owner_serves_every_request_from_the_owner() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 2);
        let (owner, other, sim) = bed.one_switch_ready().await;
        let mut guest = bed.client(&other).await;
        let mut host = bed.client(&owner).await;
        // Both nodes describe the switch as its owner has it.
        for c in [&mut guest, &mut host] {
            let info = c.request(json!({"message": "RequestQueryServer"})).await;
            assert_eq!(info["message"], "EventServerInfo", "{info}");
            let sw = &info["switches"][0];
            assert_eq!(
                (sw["name"].clone(), sw["owner"].clone(), sw["linkState"].clone(), sw["activeLink"].clone()),
                (json!("sw1"), json!(owner), json!("connected"), json!(0)),
                "{info}"
            );
        }
        guest.register("4001").await;
        host.register("4501").await;
        let q = guest
            .request(json!({"message": "RequestQueryAddress", "thisDn": "4001"}))
            .await;
        assert_eq!(q["message"], "EventAddressInfo", "{q}");
        assert_eq!(q["switch"], "sw1", "{q}");

        // Hot-desk from the non-owner: the reply, then the events on both monitors.
        let reply = guest
            .request(json!({"message": "RequestPrivateService", "thisDn": "4001", "privateMsgId": 1, "extensions": {"HOST_DN": "4501"}}))
            .await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        assert_eq!(reply["otherDn"], "4501", "{reply}");
        let ev = guest.recv().await;
        assert_eq!((ev["privateMsgId"].clone(), ev["monitoredDn"].clone()), (json!(1), json!("4001")), "{ev}");
        let hev = host.recv().await;
        assert_eq!((hev["privateMsgId"].clone(), hev["monitoredDn"].clone()), (json!(1), json!("4501")), "{hev}");
        assert_eq!(
            sim.state().await["associations"],
            json!([{"guest": "4001", "host": "4501"}])
        );
        let q = guest
            .request(json!({"message": "RequestQueryAddress", "thisDn": "4501"}))
            .await;
        assert_eq!(q["hotDesk"], json!({"guestDn": "4001", "hostDn": "4501"}), "{q}");

        // Cancel.
        let reply = guest
            .request(json!({"message": "RequestPrivateService", "thisDn": "4001", "privateMsgId": 2}))
            .await;
        assert_eq!(reply["privateMsgId"], 2, "{reply}");
        assert_eq!(guest.recv().await["privateMsgId"], 2);
        assert_eq!(host.recv().await["privateMsgId"], 2);

        // An account code on a call.
        sim.post_ok("/calls", json!({"from": "4001", "to": "4501"}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        while guest.next(Duration::from_millis(100)).await.is_some() {}
        while host.next(Duration::from_millis(100)).await.is_some() {}
        let reply = guest
            .request(json!({"message": "RequestPrivateService", "thisDn": "4001", "privateMsgId": 501, "extensions": {"AccountCode": "77"}}))
            .await;
        assert_eq!(reply["privateMsgId"], 501, "{reply}");
        let conn_id = reply["connId"].as_str().unwrap().to_owned();
        let ev = guest.recv().await;
        assert_eq!((ev["privateMsgId"].clone(), ev["connId"].clone()), (json!(501), json!(conn_id)), "{ev}");

        // Unregister: one reply, and the switch's monitor goes.
        let r = guest
            .request(json!({"message": "RequestUnregisterAddress", "thisDn": "4001"}))
            .await;
        assert_eq!(r["message"], "EventUnregistered", "{r}");
        monitors_on(&sim, "4001", 0).await;
        guest.expect_nothing().await;

        // The forwarded requests are counted on the node that forwarded them.
        let (_, m) = bed.node(&other).scrape().await;
        let ok = m
            .iter()
            .filter(|(k, _)| k.starts_with("csta_router_forwarded_requests_total") && k.contains("result=\"ok\""))
            .map(|(_, v)| *v)
            .sum::<f64>();
        assert!(ok >= 7.0, "forwarded ok: {ok}");
        bed.stop();
    });
}

#[test]
fn pipelined_hot_desks_through_a_non_owner_arrive_in_the_switch_s_order() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 2);
        let (_, other, sim) = bed.one_switch_ready().await;
        let mut clients = [bed.client(&other).await, bed.client(&other).await];
        let guests: Vec<String> = (0..10).map(|i| (4100 + i).to_string()).collect();
        for (i, g) in guests.iter().enumerate() {
            clients[i % 2].register(g).await;
        }
        sim.post_ok("/faults/delay", json!({"minMs": 0, "maxMs": 40, "seed": 7}))
            .await;
        // Five requests per guest: initiate, cancel, initiate, cancel, initiate.
        let mut sent: Vec<Vec<(u64, String, u64)>> = vec![Vec::new(), Vec::new()];
        let mut reference = 50_000u64;
        for round in 0..5u64 {
            for (i, g) in guests.iter().enumerate() {
                reference += 1;
                let host = (4600 + i).to_string();
                let msg = if round % 2 == 0 {
                    json!({"message": "RequestPrivateService", "referenceId": reference, "thisDn": g, "privateMsgId": 1, "extensions": {"HOST_DN": host}})
                } else {
                    json!({"message": "RequestPrivateService", "referenceId": reference, "thisDn": g, "privateMsgId": 2})
                };
                clients[i % 2].send(&msg).await;
                sent[i % 2].push((reference, g.clone(), if round % 2 == 0 { 1 } else { 2 }));
            }
        }
        for (c, sent) in clients.iter_mut().zip(&sent) {
            // Everything this client receives: replies and events, in arrival order.
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let want = sent.len() * 2;
            while got.len() < want {
                let left = deadline.saturating_duration_since(Instant::now());
                let m = c.next(left).await.unwrap_or_else(|| panic!("{} of {want} messages: {got:?}", got.len()));
                got.push(m);
            }
            c.expect_nothing().await;
            // One reply per request, all successful.
            let replies: Vec<&Value> = got.iter().filter(|m| m.get("referenceId").is_some()).collect();
            assert_eq!(replies.len(), sent.len(), "{got:?}");
            for r in &replies {
                assert_eq!(r["message"], "EventPrivateInfo", "{r}");
            }
            // Events in increasing eventSeq.
            let seqs: Vec<u64> = got.iter().filter_map(|m| m["eventSeq"].as_u64()).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            // Per guest, the k-th reply's event is the guest's k-th event; the reply comes
            // first, and replies are in the order of their events (the switch's frame order).
            let mut events_of: HashMap<String, Vec<(usize, u64)>> = HashMap::new();
            for (pos, m) in got.iter().enumerate() {
                if let Some(seq) = m["eventSeq"].as_u64() {
                    events_of.entry(m["thisDn"].as_str().unwrap().to_owned()).or_default().push((pos, seq));
                }
            }
            let mut k_of: HashMap<String, usize> = HashMap::new();
            let mut order: Vec<(usize, u64)> = Vec::new();
            for (pos, m) in got.iter().enumerate() {
                let Some(r) = m["referenceId"].as_u64() else { continue };
                let (_, guest, id) = sent.iter().find(|(rr, _, _)| *rr == r).unwrap();
                assert_eq!(m["privateMsgId"], json!(id), "{m}");
                let k = k_of.entry(guest.clone()).or_default();
                let (epos, seq) = events_of[guest][*k];
                *k += 1;
                assert!(pos < epos, "the reply to {r} came after its event: {got:?}");
                order.push((pos, seq));
            }
            assert!(order.windows(2).all(|w| w[0].1 < w[1].1), "replies out of the switch's order: {order:?}");
        }
        sim.post_ok("/faults/clear", json!({})).await;
        bed.stop();
    });
}

#[test]
fn a_switch_without_an_owner_is_answered_54_at_once() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        // A node waits lease-ttl before it takes a switch: until then no node owns it.
        let mut bed = Bed::start_with(1, 1, "session-linger = \"1s\"");
        let mut c = bed.client("a").await;
        let sent = Instant::now();
        let r = c
            .request(json!({"message": "RequestRegisterAddress", "thisDn": "4001"}))
            .await;
        if r["message"] == "EventRegistered" {
            panic!(
                "the switch was owned within {:?}: the test needs the settle period",
                sent.elapsed()
            );
        }
        assert_eq!(r["message"], "EventError", "{r}");
        assert_eq!(r["errorCode"], 54, "{r}");
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "{:?}",
            sent.elapsed()
        );
        let text = r["errorMessage"].as_str().unwrap_or_default();
        assert!(text.contains("sw1") && text.contains("retry"), "{r}");
        bed.stop();
    });
}

#[test]
fn clients_on_three_nodes_share_one_monitor_and_see_the_same_events() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start_with(1, 3, "session-linger = \"3s\"");
        bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        bed.link_up_everywhere("sw1").await;
        let sim = bed.pbx("sw1").control();
        let mut clients = Vec::new();
        for n in ["a", "b", "c"] {
            let mut c = bed.client(n).await;
            c.register("4200").await;
            clients.push(c);
        }
        monitors_on(&sim, "4200", 1).await;
        sim.post_ok("/hotdesk", json!({"guest": "4200", "host": "4700"}))
            .await;
        let mut seqs = Vec::new();
        for c in &mut clients {
            let ev = c.recv().await;
            assert_eq!(
                (ev["privateMsgId"].clone(), ev["thisDn"].clone()),
                (json!(1), json!("4200")),
                "{ev}"
            );
            seqs.push(ev["eventSeq"].as_u64().unwrap());
        }
        assert!(seqs.iter().all(|s| *s == seqs[0]), "{seqs:?}");
        for c in &mut clients {
            c.expect_nothing().await;
        }
        // The monitor stays until the last client leaves; a client that disconnects leaves
        // session-linger (1 s) later.
        let gone = clients.pop().unwrap();
        drop(gone);
        tokio::time::sleep(Duration::from_millis(300)).await;
        monitors_on(&sim, "4200", 1).await;
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c
                .request(json!({"message": "RequestUnregisterAddress", "thisDn": "4200"}))
                .await;
            assert_eq!(r["message"], "EventUnregistered", "{r}");
            if i < 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                monitors_on(&sim, "4200", 1).await;
            }
        }
        // The disconnected client's registration lingers, then goes.
        let left = Instant::now();
        monitors_on(&sim, "4200", 1).await;
        monitors_on(&sim, "4200", 0).await;
        assert!(
            left.elapsed() > Duration::from_secs(1),
            "released {:?} after the unregisters",
            left.elapsed()
        );
        assert_eq!(sim.state().await["unknownMonitorStops"], 0);
        bed.stop();
    });
}

#[test]
fn a_killed_owner_s_switch_fails_over_with_its_registrations_event_numbers_and_conn_ids() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 3);
        let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        let owner = owners["sw1"].clone();
        let survivors: Vec<String> = bed.live().map(|(n, _)| n.to_owned()).filter(|n| *n != owner).collect();
        bed.link_up_everywhere("sw1").await;
        let sim = bed.pbx("sw1").control();
        // A guest and a caller on one survivor, the host on the other, one client on the owner.
        let mut guest = bed.client(&survivors[0]).await;
        let mut host = bed.client(&survivors[1]).await;
        let mut doomed = bed.client(&owner).await;
        guest.register("4001").await;
        guest.register("4002").await;
        host.register("4501").await;
        doomed.register("4003").await;
        let reply = guest
            .request(json!({"message": "RequestPrivateService", "thisDn": "4001", "privateMsgId": 1, "extensions": {"HOST_DN": "4501"}}))
            .await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        let seq_before = guest.recv().await["eventSeq"].as_u64().unwrap();
        host.recv().await;
        let call = sim.post_ok("/calls", json!({"from": "4002", "to": "4900"})).await;
        let call_id = call["callId"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let q = guest
            .request(json!({"message": "RequestQueryAddress", "thisDn": "4002"}))
            .await;
        let conn_id = q["calls"][0].as_str().unwrap_or_else(|| panic!("{q}")).to_owned();
        // Give the connId's record a moment to be written (it is off the hot path).
        tokio::time::sleep(Duration::from_millis(300)).await;

        let killed = Instant::now();
        bed.kill(&owner);
        // The survivors' clients are told the switch failed over, then that it is back.
        let (down, _) = until(&mut guest, LEASE_TTL + Duration::from_secs(5), "EventLinkDisconnected", |m| {
            m["message"] == "EventLinkDisconnected"
        })
        .await;
        assert_eq!(down["reason"], "failover", "{down}");
        let (up, _) = until(&mut guest, LEASE_TTL + Duration::from_secs(5), "EventLinkConnected", |m| link_connected(m, "sw1")).await;
        assert!(killed.elapsed() < LEASE_TTL + Duration::from_secs(5), "{:?}", killed.elapsed());
        assert_eq!(up["switch"], "sw1");
        until(&mut host, Duration::from_secs(5), "EventLinkConnected", |m| link_connected(m, "sw1")).await;
        let owners = bed.settled(Duration::from_secs(5)).await;
        assert!(survivors.contains(&owners["sw1"]), "{owners:?}");
        // Every DN of a live session is monitored again, on one link.
        for dn in ["4001", "4002", "4501"] {
            monitors_on(&sim, dn, 1).await;
        }
        assert_eq!(connections(&sim).await, 1);
        // Hot-desking works through either survivor; eventSeq keeps increasing.
        let reply = guest
            .request(json!({"message": "RequestPrivateService", "thisDn": "4001", "privateMsgId": 2}))
            .await;
        assert_eq!(reply["privateMsgId"], 2, "{reply}");
        until(&mut host, Duration::from_secs(5), "the cancel's event", |m| m["privateMsgId"] == 2).await;
        host.register("4005").await;
        let reply = host
            .request(json!({"message": "RequestPrivateService", "thisDn": "4005", "privateMsgId": 1, "extensions": {"HOST_DN": "4505"}}))
            .await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        let (ev, _) = until(&mut guest, Duration::from_secs(5), "the cancel's event", |m| m["privateMsgId"] == 2).await;
        let seq_after = ev["eventSeq"].as_u64().unwrap();
        assert!(seq_after > seq_before, "{seq_before} then {seq_after}");
        let reply = guest
            .request(json!({"message": "RequestPrivateService", "thisDn": "4001", "privateMsgId": 1, "extensions": {"HOST_DN": "4501"}}))
            .await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        // The call set up before the kill keeps its connId.
        sim.post_ok(
            &format!("/calls/{call_id}/account-code"),
            json!({"device": "4002", "code": "31"}),
        )
        .await;
        let (ev, _) = until(&mut guest, Duration::from_secs(5), "the 501 event", |m| m["privateMsgId"] == 501).await;
        assert_eq!(ev["connId"], json!(conn_id), "{ev}");
        assert!(ev["eventSeq"].as_u64().unwrap() > seq_after);
        let (_, m) = bed.node(&owners["sw1"]).scrape().await;
        assert_eq!(m["csta_router_ownership_changes_total{reason=\"failover\",switch=\"sw1\"}"], 1.0);
        // The killed node's session lingers out (session-linger 1 s after its presence
        // expired): its DN is released.
        monitors_on(&sim, "4003", 0).await;
        bed.node(&owners["sw1"]).wait_log("lingered out and were released", 1);
        bed.stop();
    });
}

#[test]
fn an_owner_paused_past_its_lease_never_acts_on_the_switch_again() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start_with(1, 2, "session-linger = \"30s\"");
        let (owner, other, sim) = bed.one_switch_ready().await;
        let mut here = bed.client(&other).await;
        let mut paused = bed.client(&owner).await;
        here.register("4001").await;
        paused.register("4002").await;

        signal(&bed.node(&owner).child, "STOP");
        // The other node takes over while the owner sleeps.
        let deadline = Instant::now() + LEASE_TTL + Duration::from_secs(5);
        loop {
            if bed.owners_seen_by(&other).await.get("sw1") == Some(&Some(other.clone())) {
                break;
            }
            assert!(Instant::now() < deadline, "{other} did not take sw1");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        until(&mut here, Duration::from_secs(5), "EventLinkConnected", |m| link_connected(m, "sw1")).await;
        monitors_on(&sim, "4001", 2).await; // the sleeping owner's monitor and the new one
        // A request the paused owner's client sends now waits in the socket until it wakes.
        paused
            .send(&json!({"message": "RequestPrivateService", "referenceId": 900, "thisDn": "4002", "privateMsgId": 1, "extensions": {"HOST_DN": "4502"}}))
            .await;
        signal(&bed.node(&owner).child, "CONT");
        // Answered once: by the new owner, or 54 while the woken node learns who owns it.
        let (reply, before) = until(&mut paused, Duration::from_secs(10), "the reply", |m| m["referenceId"] == 900).await;
        let associations = sim.state().await["associations"].clone();
        if reply["message"] == "EventPrivateInfo" {
            assert_eq!(associations, json!([{"guest": "4002", "host": "4502"}]));
        } else {
            assert_eq!(reply["errorCode"], 54, "{reply}");
            assert_eq!(associations, json!([]));
        }
        // The woken node's clients hear that the switch is served again (from the new owner).
        if !before.iter().any(|m| link_connected(m, "sw1")) {
            until(&mut paused, Duration::from_secs(5), "EventLinkConnected", |m| {
                link_connected(m, "sw1")
            })
            .await;
        }
        while paused.next(Duration::from_millis(100)).await.is_some() {}
        while here.next(Duration::from_millis(100)).await.is_some() {}
        // An event now: each client gets it once, with the new owner's number, though the
        // sleeping owner's old link still had the monitor of 4001 when it woke.
        sim.post_ok("/hotdesk", json!({"guest": "4001", "host": "4501"})).await;
        let (ev, _) = until(&mut here, Duration::from_secs(5), "the hot-desk event", |m| m["privateMsgId"] == 1).await;
        here.expect_nothing().await;
        // The woken node's client of 4002 is served from the new owner: the event on 4002 once.
        sim.post_ok("/hotdesk/cancel", json!({"guest": "4001"})).await;
        while paused.next(Duration::from_millis(100)).await.is_some() {}
        sim.post_ok("/hotdesk", json!({"guest": "4003", "host": "4503"})).await;
        sim.post_ok("/hotdesk", json!({"guest": "4004", "host": "4002"})).await;
        let (ev2, _) = until(&mut paused, Duration::from_secs(5), "the hot-desk event on 4002", |m| m["privateMsgId"] == 1 && m["otherDn"] == "4002").await;
        assert!(ev2["eventSeq"].as_u64() > ev["eventSeq"].as_u64(), "{ev} {ev2}");
        paused.expect_nothing().await;
        let state = sim.state().await;
        assert_eq!(state["staleRequests"], 0, "the old owner wrote to the switch after the new link was up: {state}");
        let (_, m) = bed.node(&owner).scrape().await;
        assert_eq!(m["csta_router_switch_owned{switch=\"sw1\"}"], 0.0);
        assert!(bed.node(&owner).log().contains("why=\"fenced\"") || bed.node(&owner).log().contains("why=fenced"), "{}", bed.node(&owner).log());
        assert!(ev["eventSeq"].as_u64().is_some());
        bed.stop();
    });
}

#[test]
fn a_nats_restart_loses_no_event_silently() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    let _serial = one_at_a_time();
    runtime().block_on(async {
        // A lease long enough to outlast the restart: the owner keeps the switch.
        let ttl = Duration::from_secs(5);
        let mut bed = Bed::start_ttl(1, 2, "session-linger = \"1s\"", ttl);
        let owners = bed.settled(ttl * 3 + Duration::from_secs(5)).await;
        let other = bed.other_than(&owners["sw1"]);
        bed.link_up_everywhere("sw1").await;
        let sim = bed.pbx("sw1").control();
        let mut c = bed.client(&other).await;
        c.register("4001").await;
        // Events flow (a hot-desk, a cancel, ...) while the NATS server restarts.
        let generator = tokio::spawn(async move {
            let mut made = 0u64;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(4) {
                let path = if made.is_multiple_of(2) {
                    "/hotdesk"
                } else {
                    "/hotdesk/cancel"
                };
                let (status, _) = sim
                    .post(path, json!({"guest": "4001", "host": "4501"}))
                    .await;
                if status == 200 {
                    made += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            made
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| bed.nats.restart());
        let made = generator.await.unwrap();
        assert!(made > 50, "{made} events");
        // Every event once and in order, or a close with 1013.
        let mut seqs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut closed = None;
        while (seqs.len() as u64) < made {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, c.ws.next()).await {
                Err(_) => panic!("{} of {made} events, no close: {seqs:?}", seqs.len()),
                Ok(Some(Ok(Ws::Text(t)))) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    if let Some(seq) = m["eventSeq"].as_u64() {
                        assert_eq!(m["thisDn"], "4001", "{m}");
                        seqs.push(seq);
                    }
                }
                Ok(Some(Ok(Ws::Close(frame)))) => {
                    closed = Some(frame.map(|f| u16::from(f.code)));
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "out of order or twice: {seqs:?}"
        );
        match closed {
            None => assert_eq!(seqs.len() as u64, made),
            Some(code) => assert_eq!(
                code,
                Some(1013),
                "closed with {code:?} after {} of {made} events",
                seqs.len()
            ),
        }
        let (_, m) = bed.node(&other).scrape().await;
        let gaps: Vec<String> = m
            .iter()
            .filter(|(k, _)| k.starts_with("csta_router_flow_gaps_total"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        eprintln!(
            "{made} events, {} delivered, closed {closed:?}; {gaps:?}",
            seqs.len()
        );
        bed.stop();
    });
}

#[test]
fn a_stopping_owner_hands_its_switch_over_at_once() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 2);
        let (owner, other, sim) = bed.one_switch_ready().await;
        let mut c = bed.client(&other).await;
        c.register("4001").await;
        let i = bed.index(&owner);
        let stopping = bed.nodes[i].take().unwrap();
        let asked = Instant::now();
        let log = stopping.stop();
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "{:?}",
            asked.elapsed()
        );
        assert!(log.contains("this node gives the switch up"), "{log}");
        let (down, _) = until(
            &mut c,
            Duration::from_secs(5),
            "EventLinkDisconnected",
            |m| m["message"] == "EventLinkDisconnected",
        )
        .await;
        assert_eq!(down["reason"], "shutdown", "{down}");
        until(&mut c, Duration::from_secs(5), "EventLinkConnected", |m| {
            link_connected(m, "sw1")
        })
        .await;
        monitors_on(&sim, "4001", 1).await;
        let (_, m) = bed.node(&other).scrape().await;
        assert_eq!(
            m["csta_router_ownership_changes_total{reason=\"shutdown\",switch=\"sw1\"}"],
            1.0
        );
        bed.stop();
    });
}

#[test]
fn a_node_without_nats_for_longer_than_its_lease_closes_its_clients_with_1013() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 1);
        bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        bed.link_up_everywhere("sw1").await;
        let mut c = bed.client("a").await;
        c.register("4001").await;
        bed.nats.stop();
        let lost = Instant::now();
        assert_eq!(c.ended().await, Some(1013));
        // Not at the first disconnection: only after lease-ttl without NATS (counted from
        // when the node saw it, a little before the server had exited).
        assert!(
            lost.elapsed() >= LEASE_TTL - Duration::from_millis(500),
            "{:?}",
            lost.elapsed()
        );
        let (status, body) = bed.node("a").http_get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("nats disconnected"), "{body}");
        // New clients are sent elsewhere too.
        let refused = tokio_tungstenite::connect_async(bed.node("a").url()).await;
        assert!(
            refused.is_err(),
            "a WebSocket upgrade was accepted without NATS"
        );
        // NATS back: ready again, and the switch owned again.
        tokio::task::block_in_place(|| bed.nats.restart());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = bed.node("a").http_get("/readyz").await;
            if status == 200
                && body.contains("switch sw1 link connected")
                && body.contains("owner a")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not serving again after NATS came back: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut c = bed.client("a").await;
        c.register("4001").await;
        bed.stop();
    });
}

#[test]
fn nodes_that_define_a_switch_differently_say_which() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 1);
        bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        // Node b: sw1 with other DNs, and a switch node a does not have.
        bed.names.push("b".into());
        let text = bed.config(1).replace("dns = [\"4000-4999\"]", "dns = [\"4000-4899\"]")
            + "[[switch]]\nname = \"sw9\"\ndns = [\"9000-9999\"]\n[[switch.link]]\naddress = \"127.0.0.1:9\"\npriority = 1\n";
        let b = RouterProcess::start("node-b", &text);
        bed.nodes.push(Some(b));
        for name in ["a", "b"] {
            let node = bed.node(name);
            node.wait_log("is defined differently on node", 1);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, m) = node.scrape().await;
                let get = |s: &str| m.get(&format!("csta_router_cluster_config_mismatch{{switch=\"{s}\"}}")).copied();
                if get("sw1") == Some(1.0) && get("sw9") == Some(1.0) {
                    break;
                }
                assert!(Instant::now() < deadline, "{name}: sw1 {:?}, sw9 {:?}", get("sw1"), get("sw9"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let log = bed.node("a").log();
        assert!(log.contains("switch sw1 is defined differently on node b (DNs [4000-4899] there, [4000-4999] here)"), "{log}");
        assert!(log.contains("switch sw9 is defined differently on node b (defined there only)"), "{log}");
        // Node b leaves: node a agrees with every live node again.
        let i = bed.index("b");
        let b = bed.nodes[i].take().unwrap();
        b.stop();
        bed.node("a").wait_log("switch sw1 is defined alike on every live node again", 1);
        let (_, m) = bed.node("a").scrape().await;
        assert_eq!(m["csta_router_cluster_config_mismatch{switch=\"sw1\"}"], 0.0);
        bed.stop();
    });
}
