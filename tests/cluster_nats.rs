//! The cluster's NATS primitives against a real `nats-server` (JetStream on, a temporary
//! store, a free loopback port): joining creates the buckets and the stream; node names are
//! unique among live nodes; a switch's lease has one holder, is kept by renewing and lost by
//! not renewing — never before the old owner's fence has shut; eventSeq blocks never overlap;
//! registrations and connIds round-trip whatever the DN; credentials stay out of errors.
//!
//! `lease-ttl` is 1 s here, so expiries take about a second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::log_capture::log_lines_with;
use common::nats::NatsServer;
use csta_router::cluster::lease::{Fence, Owner};
use csta_router::cluster::{keys, Cluster, ClusterError};
use csta_router::config::{ClusterConfig, Dur, Secret};
use csta_router::protocol::RegisterMode;
use csta_router::router::calls::ConnId;
use futures_util::StreamExt;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(1);

fn config(server: &NatsServer, cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig {
        name: cluster.into(),
        node: Some(node.into()),
        nats: vec![server.url()],
        lease_ttl: Dur(TTL),
        replay_window: Dur(Duration::from_secs(60)),
        ..Default::default()
    }
}

async fn join(server: &NatsServer, cluster: &str, node: &str) -> Cluster {
    Cluster::join(&config(server, cluster, node))
        .await
        .unwrap_or_else(|e| panic!("node {node} cannot join: {e}\n{}", server.log()))
}

/// Poll `check` every 50 ms until it is true or `limit` has passed: whether it became true.
async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn joining_creates_the_buckets_and_the_stream_and_binds_them_after() {
    common::log_capture::log_buffer();
    let server = NatsServer::start();
    let a = join(&server, "cc1", "a").await;
    assert_eq!((a.name(), a.node_name()), ("cc1", "a"));
    let (name, hex) = a.node_id().rsplit_once('-').unwrap();
    assert_eq!(name, "a");
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        a.node_id()
    );

    let js = a.jetstream();
    for (bucket, max_age) in [
        (keys::leases_bucket("cc1"), TTL),
        (keys::nodes_bucket("cc1"), TTL),
        (keys::seq_bucket("cc1"), Duration::ZERO),
        (keys::regs_bucket("cc1"), Duration::ZERO),
        (keys::calls_bucket("cc1"), Duration::ZERO),
    ] {
        let store = js.get_key_value(bucket.clone()).await.unwrap();
        let config = &store.stream.cached_info().config;
        assert_eq!(config.max_age, max_age, "{bucket}");
        assert_eq!(config.max_messages_per_subject, 1, "{bucket}: history 1");
        assert_eq!(config.num_replicas, 1, "{bucket}");
    }
    let leases = js.get_key_value(keys::leases_bucket("cc1")).await.unwrap();
    assert!(
        leases
            .stream
            .cached_info()
            .config
            .subject_delete_marker_ttl
            .is_some(),
        "an expired lease must leave a marker every watcher sees"
    );
    let mut events = js.get_stream(keys::events_stream("cc1")).await.unwrap();
    let info = events.info().await.unwrap();
    assert_eq!(info.config.subjects, vec!["crr.cc1.ev.>".to_owned()]);
    assert_eq!(info.config.max_age, Duration::from_secs(60));
    assert!(info.config.allow_direct);

    // A second node binds what exists, silently when the settings agree...
    let b = join(&server, "cc1", "b").await;
    assert_ne!(a.node_id(), b.node_id());
    assert!(log_lines_with("cc1")
        .iter()
        .all(|l| !l.contains("exists with")));
    // ...and says which setting differs, keeping the existing one, when they do not.
    let mut other = config(&server, "cc1", "c");
    other.lease_ttl = Dur(Duration::from_secs(2));
    let c = Cluster::join(&other).await.unwrap();
    let warned = log_lines_with(
        "lease-ttl is 2s in this node's configuration, but the existing bucket CRR_cc1_LEASES has 1s: this node uses 1s",
    );
    assert!(!warned.is_empty());
    assert_eq!(c.lease_ttl(), TTL);
    let leases = js.get_key_value(keys::leases_bucket("cc1")).await.unwrap();
    assert_eq!(leases.stream.cached_info().config.max_age, TTL);
    // Another cluster on the same NATS has buckets of its own.
    let other = join(&server, "cc2", "a").await;
    assert!(other
        .jetstream()
        .get_key_value(keys::leases_bucket("cc2"))
        .await
        .is_ok());
}

#[tokio::test]
async fn without_jetstream_or_without_nats_the_error_says_which() {
    let core_only = NatsServer::start_with(false, &[]);
    let e = Cluster::join(&config(&core_only, "cc", "a"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(e, ClusterError::JetStreamUnavailable { .. }),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("JetStream unavailable") && text.contains(&core_only.url()),
        "{text}"
    );

    // More replicas than the NATS servers there are: said so, with the remedy.
    let alone = NatsServer::start();
    let mut three = config(&alone, "cc", "a");
    three.replicas = 3;
    let e = Cluster::join(&three).await.err().unwrap();
    assert!(matches!(e, ClusterError::Setup { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("replicas = 3 needs a NATS cluster of at least 3 JetStream servers"),
        "{e}"
    );

    let mut gone = NatsServer::start();
    let url = gone.url();
    gone.kill();
    let started = Instant::now();
    let e = Cluster::join(&config(&gone, "cc", "a"))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, ClusterError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "one attempt, not a retry loop"
    );
}

#[tokio::test]
async fn a_node_name_is_refused_while_a_live_node_has_it() {
    let server = NatsServer::start();
    let first = join(&server, "cc", "a").await;
    let presence = first.presence();
    presence.announce().await.unwrap();
    presence.renew().await.unwrap();
    let mut watch = join(&server, "cc", "watcher")
        .await
        .presence()
        .watch()
        .await
        .unwrap();

    let second = join(&server, "cc", "a").await;
    let e = second.presence().announce().await.err().unwrap();
    assert!(matches!(e, ClusterError::NameInUse { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("\"a\"") && text.contains(first.node_id()),
        "{text}"
    );
    let live = second.presence().live_nodes().await.unwrap();
    assert_eq!(live, vec![("a".to_owned(), first.node_id().to_owned())]);

    // The first stops renewing (it died): once its entry expired, the name is free.
    let second_presence = second.presence();
    let accepted = eventually(TTL + Duration::from_secs(4), || {
        let p = second_presence.clone();
        async move { p.announce().await.is_ok() }
    })
    .await;
    assert!(
        accepted,
        "the name stayed taken after the first node's entry expired"
    );
    let live = second.presence().live_nodes().await.unwrap();
    assert_eq!(live, vec![("a".to_owned(), second.node_id().to_owned())]);
    // The first node, back from a pause, finds its name taken.
    let e = presence.renew().await.err().unwrap();
    assert!(matches!(e, ClusterError::NameInUse { .. }), "{e:?}");

    // The watch saw the first arrive, leave (expiry) and the second arrive.
    let mut seen: Vec<Option<String>> = Vec::new();
    while seen.last() != Some(&Some(second.node_id().to_owned())) {
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
        let (name, info) = next.expect("presence watch").unwrap().unwrap();
        assert_eq!(name, "a");
        seen.push(info.map(|i| i.id));
    }
    assert_eq!(
        seen.first(),
        Some(&Some(first.node_id().to_owned())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&None),
        "the expiry was not reported: {seen:?}"
    );
    second_presence.leave().await.unwrap();
    assert!(second.presence().live_nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn one_switch_has_one_owner_who_keeps_it_by_renewing() {
    let server = NatsServer::start();
    let (a, b) = (
        join(&server, "cc", "a").await,
        join(&server, "cc", "b").await,
    );
    let (la, lb) = (a.leases(), b.leases());
    let (ra, rb) = tokio::join!(la.acquire("sw 1"), lb.acquire("sw 1"));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.is_some() != rb.is_some(),
        "exactly one wins: {ra:?} {rb:?}"
    );
    let (winner, loser, mut lease) = match (ra, rb) {
        (Some(lease), None) => ((&a, &la), (&b, &lb), lease),
        (None, Some(lease)) => ((&b, &lb), (&a, &la), lease),
        _ => unreachable!(),
    };
    assert!(lease.fence.check());
    assert_eq!(lease.epoch, lease.revision);
    let epoch = lease.epoch;

    // Renewing every third of the lease keeps it well past its ttl.
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        tokio::time::sleep(winner.1.renew_interval()).await;
        let before = lease.revision;
        winner.1.renew(&mut lease).await.unwrap();
        assert!(lease.revision > before);
        assert!(lease.fence.check());
        assert!(loser.1.acquire("sw 1").await.unwrap().is_none());
    }
    let owner = loser.1.current("sw 1").await.unwrap().unwrap();
    assert_eq!(
        owner,
        Owner {
            node: winner.0.node_name().into(),
            id: winner.0.node_id().into(),
            epoch,
            revision: lease.revision
        }
    );
    assert_eq!(lease.epoch, epoch, "renewing keeps the epoch");
    // Another switch is independent of this one.
    let other = loser.1.acquire("sw2").await.unwrap().unwrap();
    assert!(other.fence.check());
    assert!(loser.0.leases().current("sw3").await.unwrap().is_none());
}

#[tokio::test]
async fn an_owner_that_stops_renewing_loses_the_switch_after_its_fence_shut() {
    let server = NatsServer::start();
    let (a, b) = (
        join(&server, "cc", "a").await,
        join(&server, "cc", "b").await,
    );
    let (la, lb) = (a.leases(), b.leases());
    let mut watch = lb.watch().await.unwrap();
    let mut lease = la.acquire("sw1").await.unwrap().unwrap();
    let a_epoch = lease.epoch;
    let renew_sent = Instant::now();
    la.renew(&mut lease).await.unwrap();
    let fence: Fence = lease.fence.clone();
    let deadline = fence.deadline().unwrap();
    assert!(
        deadline > renew_sent
            && deadline
                <= renew_sent + TTL - Duration::from_millis(250) + Duration::from_millis(100)
    );

    // a stops renewing (paused, or cut off from NATS). b tries until it gets the switch.
    let mut taken = None;
    let limit = Instant::now() + TTL + Duration::from_secs(5);
    while taken.is_none() && Instant::now() < limit {
        taken = lb.acquire("sw1").await.unwrap();
        if taken.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let taken_at = Instant::now();
    let new = taken.expect("b never got the switch after a stopped renewing");
    assert!(
        taken_at >= renew_sent + TTL,
        "the lease moved {:?} after its last renew, before its ttl",
        taken_at - renew_sent
    );
    assert!(
        !fence.check(),
        "a's fence is still open while b owns the switch"
    );
    assert!(deadline < taken_at, "a's fence shut after b took over");
    assert!(
        new.epoch > lease.epoch,
        "epochs increase: {} then {}",
        lease.epoch,
        new.epoch
    );

    // a wakes up: its renew finds the lease lost, names the holder, shuts the fence.
    let e = la.renew(&mut lease).await.err().unwrap();
    match &e {
        ClusterError::LeaseLost { switch, holder } => {
            assert_eq!((switch.as_str(), holder.as_deref()), ("sw1", Some("b")))
        }
        other => panic!("{other:?}"),
    }
    assert!(!lease.fence.check() && lease.fence.deadline().is_none());
    // Releasing the lost lease leaves b's alone.
    la.release(lease).await.unwrap();
    let owner = la.current("sw1").await.unwrap().unwrap();
    assert_eq!((owner.id.as_str(), owner.epoch), (b.node_id(), new.epoch));

    // The watch reported a's ownership, the expiry, and b's.
    let mut seen: Vec<Option<(String, u64)>> = Vec::new();
    while seen.last() != Some(&Some((b.node_id().to_owned(), new.epoch))) {
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
        let (switch, owner) = next.expect("lease watch").unwrap().unwrap();
        assert_eq!(switch, "sw1");
        seen.push(owner.map(|o| (o.id, o.epoch)));
    }
    assert_eq!(seen.first(), Some(&Some((a.node_id().to_owned(), a_epoch))));
    let gap = seen
        .iter()
        .position(Option::is_none)
        .expect("the expiry was reported");
    assert!(
        seen[..gap]
            .iter()
            .all(|o| o.as_ref().unwrap().0 == a.node_id()),
        "{seen:?}"
    );

    // b releases: the switch is free at once, for a higher epoch again.
    let released_epoch = new.epoch;
    lb.release(new).await.unwrap();
    let again = la
        .acquire("sw1")
        .await
        .unwrap()
        .expect("free after a release");
    assert!(again.epoch > released_epoch);
    let mut released = false;
    while !released {
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
        let (_, owner) = next.expect("lease watch").unwrap().unwrap();
        released = owner.is_none();
    }
}

#[tokio::test]
async fn event_seq_blocks_never_overlap_across_owners() {
    let server = NatsServer::start();
    let (a, b) = (
        join(&server, "cc", "a").await,
        join(&server, "cc", "b").await,
    );
    let (sa, sb) = (a.seq_blocks(), b.seq_blocks());
    let first = sa.reserve("sw1").await.unwrap();
    assert_eq!(first, 1..(1 << 20) + 1);
    let mut blocks = vec![first.clone()];
    // Two owners (an old one not yet fenced and a new one) reserving at the same time.
    let reserve = |s: csta_router::cluster::seq::SeqBlocks| async move {
        let mut got = Vec::new();
        for _ in 0..15 {
            got.push(s.reserve("sw1").await.unwrap());
        }
        got
    };
    let (x, y) = tokio::join!(reserve(sa.clone()), reserve(sb.clone()));
    blocks.extend(x.iter().cloned());
    blocks.extend(y.iter().cloned());
    blocks.sort_by_key(|r| r.start);
    for pair in blocks.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlap: {pair:?}");
    }
    assert!(blocks.iter().all(|r| r.end - r.start == 1 << 20));
    for own in [&x, &y] {
        assert!(
            own.windows(2).all(|p| p[0].end <= p[1].start),
            "each owner's blocks increase"
        );
    }
    // A reserve after another's block starts after it.
    let last = blocks.iter().map(|r| r.end).max().unwrap();
    let next = sb.reserve("sw1").await.unwrap();
    assert_eq!(next.start, last);
    // Switches count apart.
    assert_eq!(sa.reserve("sw*2").await.unwrap().start, 1);
}

#[tokio::test]
async fn registrations_and_conn_ids_round_trip_whatever_the_names() {
    let server = NatsServer::start();
    let a = join(&server, "cc", "a").await;
    let b = join(&server, "cc", "b").await;
    let records = a.records();
    let dns = ["*55#", "+49.30 1234", "5001", "é日本", "a=b", ">", "x.*"];
    for (i, dn) in dns.iter().enumerate() {
        let mode = if i % 2 == 0 {
            RegisterMode::Share
        } else {
            RegisterMode::Monitor
        };
        records
            .put("sw.1", dn, a.node_id(), "s/1", mode, "desk top")
            .await
            .unwrap();
    }
    records
        .put(
            "sw.1",
            "5001",
            b.node_id(),
            "s 2",
            RegisterMode::Monitor,
            "wall",
        )
        .await
        .unwrap();
    records
        .put(
            "sw2",
            "6001",
            a.node_id(),
            "s/1",
            RegisterMode::Share,
            "desk top",
        )
        .await
        .unwrap();

    let mut listed = b.records().list("sw.1").await.unwrap();
    listed.sort_by(|x, y| (&x.dn, &x.node_id).cmp(&(&y.dn, &y.node_id)));
    assert_eq!(listed.len(), dns.len() + 1, "{listed:?}");
    for (i, dn) in dns.iter().enumerate() {
        let r = listed
            .iter()
            .find(|r| r.dn == *dn && r.node_id == a.node_id())
            .unwrap();
        assert_eq!(
            (r.switch.as_str(), r.session.as_str(), r.app.as_str()),
            ("sw.1", "s/1", "desk top")
        );
        let mode = if i % 2 == 0 {
            RegisterMode::Share
        } else {
            RegisterMode::Monitor
        };
        assert_eq!(r.mode, mode, "{dn}");
    }
    let theirs = listed.iter().find(|r| r.node_id == b.node_id()).unwrap();
    assert_eq!(
        (theirs.dn.as_str(), theirs.session.as_str(), theirs.mode),
        ("5001", "s 2", RegisterMode::Monitor)
    );
    assert_eq!(records.list("sw2").await.unwrap().len(), 1);
    assert!(
        records.list("sw").await.unwrap().is_empty(),
        "no prefix match across switches"
    );
    assert_eq!(records.list_node(b.node_id()).await.unwrap().len(), 1);
    assert_eq!(
        records.list_node(a.node_id()).await.unwrap().len(),
        dns.len() + 1
    );

    records
        .delete("sw.1", "*55#", a.node_id(), "s/1")
        .await
        .unwrap();
    assert!(records
        .list("sw.1")
        .await
        .unwrap()
        .iter()
        .all(|r| r.dn != "*55#"));
    assert_eq!(
        records.delete_session(a.node_id(), "s/1").await.unwrap(),
        dns.len()
    );
    let left = records.list_node(a.node_id()).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        records.list("sw.1").await.unwrap().len(),
        1,
        "b's session is untouched"
    );

    let conn = ConnId::generate();
    records.put_call("sw.1", "0042.7/x", conn).await.unwrap();
    records
        .put_call("sw.1", "", ConnId::generate())
        .await
        .unwrap();
    let calls = b.records().list_calls("sw.1").await.unwrap();
    assert_eq!(calls.len(), 2);
    assert!(calls.contains(&("0042.7/x".to_owned(), conn)));
    records.delete_call("sw.1", "0042.7/x").await.unwrap();
    records.delete_call("sw.1", "").await.unwrap();
    assert!(records.list_calls("sw.1").await.unwrap().is_empty());
}

#[tokio::test]
async fn credentials_never_appear_in_an_error() {
    let token = "the-right-token-0001";
    let server = NatsServer::start_with(true, &["--auth", token]);
    let mut cfg = config(&server, "cc", "a");
    cfg.nats_token = Some(Secret::new(token));
    join_with(&cfg).await.unwrap();

    let wrong = "a-wrong-token-9876";
    cfg.nats_token = Some(Secret::new(wrong));
    let e = join_with(&cfg).await.err().unwrap();
    assert!(matches!(e, ClusterError::Auth { .. }), "{e:?}");
    let (text, debug) = (e.to_string(), format!("{e:?} {cfg:?}"));
    assert!(text.contains("nats-token"), "{text}");
    for secret in [token, wrong] {
        assert!(
            !text.contains(secret) && !debug.contains(secret),
            "{text} / {debug}"
        );
    }

    let password = "a-password-5555";
    let server = NatsServer::start_with(true, &["--user", "router", "--pass", password]);
    let mut cfg = config(&server, "cc", "a");
    cfg.nats_user = Some("router".into());
    cfg.nats_password = Some(Secret::new(password));
    join_with(&cfg).await.unwrap();
    let wrong = "not-the-password-77";
    cfg.nats_password = Some(Secret::new(wrong));
    let e = join_with(&cfg).await.err().unwrap();
    let (text, debug) = (e.to_string(), format!("{e:?} {cfg:?}"));
    assert!(matches!(e, ClusterError::Auth { .. }), "{text}");
    for secret in [password, wrong] {
        assert!(
            !text.contains(secret) && !debug.contains(secret),
            "{text} / {debug}"
        );
    }
}

async fn join_with(cfg: &ClusterConfig) -> Result<Cluster, ClusterError> {
    Cluster::join(cfg).await
}

#[tokio::test]
async fn a_restarted_server_keeps_the_buckets_and_the_client_reconnects() {
    let mut server = NatsServer::start();
    let a = join(&server, "cc", "a").await;
    let mut state = a.nats_state();
    assert!(state.borrow().connected);
    let first = a.seq_blocks().reserve("sw1").await.unwrap();
    server.restart();
    let reconnected = tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| s.connected && s.connects >= 2),
    )
    .await
    .map(|r| r.is_ok());
    assert!(
        reconnected == Ok(true),
        "no reconnection reported: {:?}",
        *state.borrow()
    );
    // The counter survived the restart (file storage), so eventSeq keeps increasing.
    let ok = eventually(Duration::from_secs(10), || {
        let seq = a.seq_blocks();
        async move { seq.reserve("sw1").await.is_ok_and(|r| r.start >= first.end) }
    })
    .await;
    assert!(
        ok,
        "no block after the restart, or one not after the block before it"
    );
}
