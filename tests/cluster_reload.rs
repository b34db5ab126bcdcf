//! Live reload in a cluster (README, "Live reload"): real nats-server and router processes,
//! each node reloading its own file. A switch removed from every file (the owner reloaded
//! last) is given up: its clients told, its monitors stopped, its links closed, its lease and
//! registrations gone from NATS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::bed::{self, Bed, LEASE_TTL};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Write node `name`'s file as `text` and reload it: the answer.
async fn reload_with(bed: &Bed, name: &str, text: &str) -> Value {
    let node = bed.node(name);
    std::fs::write(node.config_file().unwrap(), text).unwrap();
    node.reload().await
}

/// Node `i`'s file without switch `switch` (the last one the bed writes).
fn without(bed: &Bed, i: usize, switch: &str) -> String {
    let text = bed.config(i);
    let at = text
        .find(&format!("[[switch]]\nname = \"{switch}\""))
        .unwrap();
    text[..at].to_owned()
}

/// A JetStream client of the test's own.
async fn jetstream(bed: &Bed) -> async_nats::jetstream::Context {
    let client = async_nats::connect(bed.nats.url()).await.unwrap();
    async_nats::jetstream::new(client)
}

/// Wait until the keys of `bucket` starting with `prefix` are `n`.
async fn keys_become(js: &async_nats::jetstream::Context, bucket: &str, prefix: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = common::nats::bucket_keys(js, bucket, prefix).await;
        if keys.len() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{bucket}: {n} keys {prefix}* expected, not {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `name`'s `/readyz` says `switch`'s owner is `want`.
async fn owner_becomes(bed: &Bed, name: &str, switch: &str, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let owners = bed.owners_seen_by(name).await;
        if owners.get(switch).map(|o| o.as_deref()) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {name}: owner of {switch} {want:?} expected: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `c`'s EventUnregistered (59) of `dn`, then its EventLinkDisconnected of `switch` (removed).
async fn told_removed(c: &mut common::router::Client, dn: &str, switch: &str) {
    let within = Duration::from_secs(10);
    let (ev, _) = bed::until(c, within, "the unregistration", |m| {
        m["message"] == "EventUnregistered" && m["thisDn"] == dn
    })
    .await;
    assert_eq!(ev["errorCode"], 59, "{ev}");
    let (ev, _) = bed::until(c, within, "the switch's removal", |m| {
        m["message"] == "EventLinkDisconnected" && m["switch"] == switch
    })
    .await;
    assert_eq!(ev["reason"], "removed", "{ev}");
}

#[test]
fn a_switch_removed_from_every_file_is_given_up_and_forgotten_in_nats() {
    bed::runtime().block_on(removed_everywhere());
}

async fn removed_everywhere() {
    let mut bed = Bed::start(2, 2);
    let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
    let owner = owners["sw2"].clone();
    let other = bed.other_than(&owner);
    bed.link_up_everywhere("sw2").await;
    let sim2 = bed.pbx("sw2").control();
    let js = jetstream(&bed).await;
    // A client of each node registered on a DN of sw2.
    let mut far = bed.client(&other).await;
    far.register("6001").await;
    let mut near = bed.client(&owner).await;
    near.register("6002").await;
    bed::monitors_on(&sim2, "6001", 1).await;
    bed::monitors_on(&sim2, "6002", 1).await;
    keys_become(&js, "CRR_test_REGS", "sw2.", 2).await;
    keys_become(&js, "CRR_test_LEASES", "sw2", 1).await;
    // The node that does not own sw2 first: its client is told at once.
    let i = bed.index(&other);
    let answer = reload_with(&bed, &other, &without(&bed, i, "sw2")).await;
    assert_eq!(
        answer["changed"]["switchesRemoved"],
        json!(["sw2"]),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], json!([]), "{answer}");
    told_removed(&mut far, "6001", "sw2").await;
    let r = far
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "6001"}))
        .await;
    assert_eq!(r["errorCode"], 59, "{r}");
    // Its client's record is gone; the owner still serves its own.
    keys_become(&js, "CRR_test_REGS", "sw2.", 1).await;
    owner_becomes(&bed, &owner, "sw2", Some(&owner)).await;
    // Then the owner: it gives sw2 up for good.
    let i = bed.index(&owner);
    let answer = reload_with(&bed, &owner, &without(&bed, i, "sw2")).await;
    assert_eq!(
        answer["changed"]["switchesRemoved"],
        json!(["sw2"]),
        "{answer}"
    );
    told_removed(&mut near, "6002", "sw2").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = sim2.state().await;
        if state["monitors"] == json!([]) && bed::connections(&sim2).await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "sw2 still used: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    keys_become(&js, "CRR_test_REGS", "sw2.", 0).await;
    keys_become(&js, "CRR_test_LEASES", "sw2", 0).await;
    for name in [&owner, &other] {
        let (_, ready) = bed.node(name).http_get("/readyz").await;
        assert!(!ready.contains("sw2"), "{ready}");
    }
    // Nobody takes it again; sw1 is untouched.
    tokio::time::sleep(LEASE_TTL * 2).await;
    keys_become(&js, "CRR_test_LEASES", "sw2", 0).await;
    assert_eq!(bed::connections(&sim2).await, 0);
    owner_becomes(&bed, &other, "sw1", Some(&owners["sw1"])).await;
    near.expect_nothing().await;
    far.expect_nothing().await;
    bed.node(&owner)
        .wait_log("this node gives the switch up: a reload removed it", 1);
    // Back in every file: a node takes it, every client hears of its link, and it serves.
    for name in [&other, &owner] {
        let answer = reload_with(&bed, name, &bed.config(bed.index(name))).await;
        assert_eq!(
            answer["changed"]["switchesAdded"],
            json!(["sw2"]),
            "{answer}"
        );
        assert_eq!(answer["restartRequired"], json!([]), "{answer}");
    }
    for c in [&mut far, &mut near] {
        bed::until(c, Duration::from_secs(10), "sw2's link", |m| {
            bed::link_connected(m, "sw2")
        })
        .await;
    }
    let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
    bed.node(&owners["sw2"])
        .wait_log("this node owns the switch now", 2);
    keys_become(&js, "CRR_test_LEASES", "sw2", 1).await;
    for (c, guest, host) in [(&mut far, "6011", "6901"), (&mut near, "6012", "6902")] {
        c.register(guest).await;
        hot_desk(c, guest, host).await;
    }
    let state = sim2.state().await;
    assert_eq!(
        state["associations"].as_array().unwrap().len(),
        2,
        "{state}"
    );
    keys_become(&js, "CRR_test_REGS", "sw2.", 2).await;
    bed.stop();
}

/// A hot-desk of `guest` on `host`, answered.
async fn hot_desk(c: &mut common::router::Client, guest: &str, host: &str) {
    c.send(&json!({"message": "RequestPrivateService", "referenceId": 900, "thisDn": guest, "privateMsgId": 1, "extensions": {"HOST_DN": host}}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (_, r) = c.next_reply(deadline, || "no hot-desk reply".into()).await;
    assert_eq!(r["message"], "EventPrivateInfo", "{r}");
}

#[test]
fn changed_link_settings_restart_the_owner_s_links_and_keep_its_lease() {
    bed::runtime().block_on(relinked_in_a_cluster());
}

async fn relinked_in_a_cluster() {
    let mut bed = Bed::start(1, 2);
    let (owner, other, sim) = bed.one_switch_ready().await;
    let mut near = bed.client(&owner).await;
    near.register("4001").await;
    let mut far = bed.client(&other).await;
    far.register("4002").await;
    bed::monitors_on(&sim, "4001", 1).await;
    bed::monitors_on(&sim, "4002", 1).await;
    let before = sim.state().await["monitors"].clone();
    let traced = |i: usize| {
        (bed.config(i)).replace("name = \"sw1\"\n", "name = \"sw1\"\nwire-trace = true\n")
    };
    // The other node keeps the new settings for when it takes the switch: nothing moves.
    let answer = reload_with(&bed, &other, &traced(bed.index(&other))).await;
    assert_eq!(
        answer["changed"]["linksChanged"],
        json!([{"switch": "sw1", "address": bed.pbx("sw1").sim.link()}]),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], json!([]), "{answer}");
    far.expect_nothing().await;
    near.expect_nothing().await;
    assert_eq!(sim.state().await["monitors"], before);
    // The owner restarts its links with them, its lease kept.
    let answer = reload_with(&bed, &owner, &traced(bed.index(&owner))).await;
    assert_eq!(answer["restartRequired"], json!([]), "{answer}");
    for expected in ["EventLinkDisconnected", "EventLinkConnected"] {
        let (ev, _) = bed::until(&mut near, Duration::from_secs(10), expected, |m| {
            m["message"] == expected
        })
        .await;
        assert_eq!(
            (&ev["switch"], &ev["reason"]),
            (&json!("sw1"), &json!("reconfigured")),
            "{ev}"
        );
    }
    for expected in ["EventLinkDisconnected", "EventLinkConnected"] {
        let (ev, _) = bed::until(&mut far, Duration::from_secs(10), expected, |m| {
            m["message"] == expected
        })
        .await;
        assert_eq!(ev["reason"], "reconfigured", "{ev}");
    }
    // Both registrations monitored again on the new connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = sim.state().await["monitors"].clone();
        if after.as_array().unwrap().len() == 2 && after != before {
            break;
        }
        assert!(Instant::now() < deadline, "monitors: {after}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (c, guest, host) in [(&mut near, "4001", "4901"), (&mut far, "4002", "4902")] {
        hot_desk(c, guest, host).await;
    }
    owner_becomes(&bed, &other, "sw1", Some(&owner)).await;
    let log = bed.node(&owner).log();
    assert_eq!(
        log.matches("this node owns the switch now").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("this node gives the switch up"), "{log}");
    bed.node(&owner).wait_log("csta_wire", 1);
    bed.stop();
}
