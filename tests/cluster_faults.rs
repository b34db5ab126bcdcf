#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The cluster under NATS faults (README, "Cluster"; SPEC §10), on real processes: a NATS
//! cluster of three `nats-server` processes (formed once for this binary, see [`nats`]) with
//! nodes using `replicas = 3`, and single servers restarted on their store or on an empty one.
//! Servers are killed with SIGKILL; JetStream's leaders are found through its API. The tests
//! run one at a time (they share the NATS cluster, and timings depend on the CPU); bounds are
//! generous correctness bounds.

mod common;
use common::nats::{bucket_keys, NatsCluster, NatsServer};
use common::process::{self, RouterProcess, SimProcess};
use common::readyz::parse_owners;
use common::router::Client;
use common::sim_control::SimControl;

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The NATS cluster of this binary, made by the first test that needs it; holding the guard
/// runs one test at a time.
static NATS: Mutex<Option<NatsCluster>> = Mutex::new(None);

fn serial() -> MutexGuard<'static, Option<NatsCluster>> {
    NATS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared NATS cluster with its three servers running (a test that failed may have left
/// some killed).
fn nats(guard: &mut Option<NatsCluster>) -> &mut NatsCluster {
    let cluster = guard.get_or_insert_with(NatsCluster::start);
    cluster.ensure_running();
    cluster
}

fn runtime() -> tokio::runtime::Runtime {
    process::runtime()
}

/// A switch of a test.
struct Pbx {
    name: String,
    dns: String,
    sim: SimProcess,
}

/// Nodes of one cluster (a name of their own on the NATS they share) and their switches.
struct Bed {
    cluster: String,
    urls: Vec<String>,
    replicas: usize,
    lease_ttl: Duration,
    pbxes: Vec<Pbx>,
    names: Vec<String>,
    nodes: Vec<Option<RouterProcess>>,
}

impl Bed {
    fn new(cluster: &str, urls: Vec<String>, replicas: usize, lease_ttl: Duration) -> Bed {
        Bed {
            cluster: cluster.to_owned(),
            urls,
            replicas,
            lease_ttl,
            pbxes: Vec::new(),
            names: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// `switches` switches (sw1 4000-4999, sw2 6000-6999) and `nodes` nodes a, b, ...
    fn start(mut self, switches: usize, nodes: usize) -> Bed {
        for i in 0..switches {
            let name = format!("sw{}", i + 1);
            let dns = format!("{}-{}", 4000 + 2000 * i, 4999 + 2000 * i);
            let args = [
                "--name",
                &name,
                "--dns",
                &dns,
                "--link",
                "127.0.0.1:0",
                "--control",
                "127.0.0.1:0",
            ];
            let sim = SimProcess::start(&args, Stdio::null());
            self.pbxes.push(Pbx { name, dns, sim });
        }
        for i in 0..nodes {
            let name = char::from(b'a' + i as u8).to_string();
            self.names.push(name);
            let text = self.config(i, self.lease_ttl, self.replicas, "5m");
            let node = RouterProcess::start(&format!("node-{}", self.names[i]), &text);
            self.nodes.push(Some(node));
        }
        for node in self.nodes.iter().flatten() {
            node.wait_joined();
        }
        self
    }

    fn config(&self, i: usize, ttl: Duration, replicas: usize, replay: &str) -> String {
        let urls: Vec<String> = self.urls.iter().map(|u| format!("\"{u}\"")).collect();
        let mut text = format!(
            "[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\nsession-linger = \"60s\"\n\n[options]\nrequest-timeout = \"2s\"\n\n[cluster]\nname = \"{}\"\nnode = \"{}\"\nnats = [{}]\nlease-ttl = \"{}ms\"\nreplicas = {replicas}\nreplay-window = \"{replay}\"\n\n",
            self.cluster,
            self.names[i],
            urls.join(", "),
            ttl.as_millis()
        );
        for p in &self.pbxes {
            text.push_str(&format!(
                "[[switch]]\nname = \"{}\"\ndns = [\"{}\"]\n[[switch.link]]\naddress = \"{}\"\npriority = 1\n\n",
                p.name,
                p.dns,
                p.sim.link()
            ));
        }
        text
    }

    /// The node whose log says it owns `switch` (the last to say so).
    fn settled_owner_of_log(&self, switch: &str) -> String {
        let needle = format!("switch={switch} ");
        self.live()
            .filter_map(|(n, p)| {
                let log = p.log();
                let at = log
                    .lines()
                    .filter(|l| l.contains("this node owns the switch now") && l.contains(&needle))
                    .map(|l| l[..27].to_owned())
                    .max()?;
                Some((at, n.to_owned()))
            })
            .max()
            .unwrap()
            .1
    }

    /// One more node (the next letter), on `urls`.
    fn add_node(&mut self) {
        let i = self.names.len();
        self.names.push(char::from(b'a' + i as u8).to_string());
        let text = self.config(i, self.lease_ttl, self.replicas, "5m");
        let node = RouterProcess::start(&format!("node-{}", self.names[i]), &text);
        node.wait_joined();
        self.nodes.push(Some(node));
    }

    fn node(&self, name: &str) -> &RouterProcess {
        let i = self.names.iter().position(|n| n == name).unwrap();
        self.nodes[i].as_ref().unwrap()
    }

    fn live(&self) -> impl Iterator<Item = (&str, &RouterProcess)> {
        self.names
            .iter()
            .zip(&self.nodes)
            .filter_map(|(n, p)| Some((n.as_str(), p.as_ref()?)))
    }

    fn sim(&self, switch: &str) -> SimControl {
        self.pbxes
            .iter()
            .find(|p| p.name == switch)
            .unwrap()
            .sim
            .control()
    }

    /// A client on node `name`, opened (the link events of every switch read).
    async fn client(&self, name: &str) -> Client {
        Client::open(&self.node(name).url(), None, self.pbxes.len()).await
    }

    /// Wait until every node is ready, agrees on a live owner for every switch and sees every
    /// link connected: switch → owner.
    async fn settled(&self, within: Duration) -> BTreeMap<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let mut views = Vec::new();
            let mut ready = true;
            for (_, node) in self.live() {
                let (status, body) = node.http_get("/readyz").await;
                ready &= status == 200
                    && self
                        .pbxes
                        .iter()
                        .all(|p| body.contains(&format!("switch {} link connected", p.name)));
                views.push((parse_owners(&body), body));
            }
            let live: Vec<&str> = self.live().map(|(n, _)| n).collect();
            let first = views[0].0.clone();
            let agreed = views.iter().all(|(v, _)| *v == first)
                && first.len() == self.pbxes.len()
                && first
                    .values()
                    .all(|o| o.as_deref().is_some_and(|o| live.contains(&o)));
            if ready && agreed {
                return first.into_iter().map(|(s, o)| (s, o.unwrap())).collect();
            }
            assert!(
                Instant::now() < deadline,
                "not every switch owned, connected and agreed on within {within:?}: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(node) = node.take() {
                let log = node.stop();
                assert!(
                    !log.contains("panicked at"),
                    "node {} panicked:\n{log}",
                    self.names[i]
                );
            }
        }
    }
}

impl Drop for Bed {
    /// A failing test shows what every node logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, node) in self.live() {
                eprintln!("===== node {name} =====\n{}", node.log());
            }
        }
    }
}

/// A client kept busy while a fault happens: a `RequestQueryAddress` every 100 ms, every
/// message kept, and the close code if the router closed it.
struct Busy {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Busied>,
}

/// What a busy client sent and got.
struct Busied {
    client: Client,
    sent: Vec<u64>,
    got: Vec<Value>,
    closed: Option<u16>,
}

impl Busy {
    fn start(mut c: Client, dns: Vec<String>) -> Busy {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as Ws;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut got = Vec::new();
            let mut closed = None;
            let mut next = 900_000u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut drain_until: Option<Instant> = None;
            loop {
                if drain_until.is_none() && flag.load(Ordering::Relaxed) {
                    // The replies still on their way (a forwarded request waits
                    // request-timeout + 1 s).
                    drain_until = Some(Instant::now() + Duration::from_millis(3200));
                }
                if drain_until.is_some_and(|d| Instant::now() > d) {
                    break;
                }
                tokio::select! {
                    _ = tick.tick(), if drain_until.is_none() => {
                        next += 1;
                        let dn = &dns[(next as usize) % dns.len()];
                        c.send(&json!({"message": "RequestQueryAddress", "thisDn": dn, "referenceId": next})).await;
                        sent.push(next);
                    }
                    m = tokio::time::timeout(Duration::from_millis(50), c.ws.next()) => match m {
                        Err(_) => {}
                        Ok(Some(Ok(Ws::Text(t)))) => got.push(serde_json::from_str(&t).unwrap()),
                        Ok(Some(Ok(Ws::Close(frame)))) => {
                            closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                            break;
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(other) => panic!("the connection ended without a close frame: {other:?}"),
                    }
                }
            }
            Busied {
                client: c,
                sent,
                got,
                closed,
            }
        });
        Busy { stop, task }
    }

    async fn finish(self) -> Busied {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Every request answered at most once, and exactly once unless the client was closed
/// (1013: the replies lost are why); every event once, in increasing eventSeq: the replies
/// that were not `EventAddressInfo`.
fn answered_once(b: &Busied) -> Vec<Value> {
    let mut replies: HashMap<u64, usize> = HashMap::new();
    let mut failed = Vec::new();
    for m in &b.got {
        if let Some(r) = m["referenceId"].as_u64() {
            *replies.entry(r).or_default() += 1;
            if m["message"] != "EventAddressInfo" {
                failed.push(m.clone());
            }
        }
    }
    for r in &b.sent {
        let n = replies.get(r).copied().unwrap_or(0);
        assert!(n <= 1, "request {r} answered {n} times: {:?}", b.got);
        if b.closed.is_none() {
            assert_eq!(n, 1, "request {r} not answered: {:?}", b.got);
        }
    }
    assert_eq!(
        replies.keys().filter(|r| !b.sent.contains(r)).count(),
        0,
        "replies to requests never sent: {:?}",
        b.got
    );
    if let Some(code) = b.closed {
        assert_eq!(code, 1013, "closed with {code}");
    }
    let seqs: Vec<u64> = b
        .got
        .iter()
        .filter_map(|m| m["eventSeq"].as_u64())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events twice or out of order: {seqs:?}"
    );
    failed
}

fn link_events(got: &[Value]) -> Vec<Value> {
    got.iter()
        .filter(|m| {
            m["message"]
                .as_str()
                .is_some_and(|s| s.starts_with("EventLink"))
        })
        .cloned()
        .collect()
}

/// After the link events in `got`, the last one of each switch is `EventLinkConnected`.
fn every_link_back(got: &[Value], switches: &[&str]) {
    for sw in switches {
        let last = got.iter().rev().find(|m| {
            m["switch"] == *sw
                && m["message"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("EventLink"))
        });
        if let Some(last) = last {
            assert_eq!(
                last["message"],
                "EventLinkConnected",
                "{sw}: {:?}",
                link_events(got)
            );
        }
    }
}

/// A hot-desk of `guest` on its switch reaches `c` (registered on `guest`) within `within`.
async fn hot_desk_reaches(
    c: &mut Client,
    sim: &SimControl,
    guest: &str,
    host: &str,
    within: Duration,
    got: &mut Vec<Value>,
) {
    sim.post_ok("/hotdesk", json!({"guest": guest, "host": host}))
        .await;
    await_private(c, guest, 1, "hot-desk event", within, got).await;
    sim.post_ok("/hotdesk/cancel", json!({"guest": guest}))
        .await;
    await_private(c, guest, 2, "hot-desk cancel", within, got).await;
}

/// Read `c` (keeping every message in `got`) until the event `msg_id` of `guest` arrives.
async fn await_private(
    c: &mut Client,
    guest: &str,
    msg_id: u64,
    what: &str,
    within: Duration,
    got: &mut Vec<Value>,
) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c
            .next(left)
            .await
            .unwrap_or_else(|| panic!("no {what} on {guest} within {within:?}"));
        got.push(m.clone());
        if m["thisDn"] == guest && m["privateMsgId"] == msg_id {
            break;
        }
    }
}

/// The cluster's streams: the buckets' and the events'.
fn streams(cluster: &str) -> Vec<String> {
    ["LEASES", "NODES", "SEQ", "REGS", "CALLS"]
        .iter()
        .map(|b| format!("KV_CRR_{cluster}_{b}"))
        .chain([format!("CRR_{cluster}_EVENTS")])
        .collect()
}

/// A JetStream client of the test's own.
async fn jetstream(urls: &[String]) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connect(urls.to_vec())
        .await
        .unwrap();
    async_nats::jetstream::new(client)
}

/// Each stream's leader (server name), as JetStream's API says.
async fn leaders(js: &async_nats::jetstream::Context, cluster: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in streams(cluster) {
        let mut stream = js.get_stream(&name).await.unwrap();
        let info = stream.info().await.unwrap();
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap_or_default();
        out.insert(name, leader);
    }
    out
}

/// Move the leader of `stream` (or of the meta group: `None`) to server `to`, and wait
/// until it is there.
async fn move_leader(
    js: &async_nats::jetstream::Context,
    nats: &NatsCluster,
    stream: Option<&str>,
    to: &str,
) {
    let subject = match stream {
        Some(s) => format!("STREAM.LEADER.STEPDOWN.{s}"),
        None => "META.LEADER.STEPDOWN".to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = match stream {
            Some(s) => match js.get_stream(s).await {
                Ok(mut st) => st
                    .info()
                    .await
                    .ok()
                    .cloned()
                    .and_then(|i| i.cluster.and_then(|c| c.leader)),
                Err(_) => None,
            },
            None => (0..3)
                .filter(|&i| nats.running(i))
                .find_map(|i| nats.meta_leader(i)),
        };
        if now.as_deref() == Some(to) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the leader of {stream:?} did not move to {to}: {now:?}"
        );
        if now.is_some() {
            let body = json!({"placement": {"preferred": to}});
            let _ = tokio::time::timeout(
                Duration::from_secs(3),
                js.request::<_, _, Value>(subject.clone(), &body),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The server (index) the node whose connection name starts with `prefix` is connected to.
fn server_of(nats: &NatsCluster, prefix: &str) -> usize {
    (0..3)
        .find(|&i| {
            nats.running(i)
                && nats.monitor(i, "/connz?limit=1024").is_some_and(|v| {
                    v["connections"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                })
        })
        .unwrap_or_else(|| panic!("no server has a connection named {prefix}..."))
}

/// Poll every node's `/readyz` until `stop`: the statuses other than 200 seen.
fn watch_ready(bed: &Bed) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<(String, u16)>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let nodes: Vec<(String, String)> = bed
        .live()
        .map(|(n, p)| {
            let addr = p
                .url()
                .trim_start_matches("ws://")
                .trim_end_matches("/v1")
                .to_owned();
            (n.to_owned(), addr)
        })
        .collect();
    let metrics: Vec<(String, std::net::SocketAddr)> = bed
        .live()
        .map(|(n, p)| (n.to_owned(), metrics_addr(p)))
        .collect();
    drop(nodes);
    let task = tokio::spawn(async move {
        let mut bad = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            for (name, addr) in &metrics {
                let status = common::http::get(*addr, "/readyz", Duration::from_secs(5))
                    .await
                    .map(|r| r.status)
                    .unwrap_or(0);
                if status != 200 {
                    bad.push((name.clone(), status));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bad
    });
    (stop, task)
}

fn metrics_addr(p: &RouterProcess) -> std::net::SocketAddr {
    p.ready["metrics"].as_str().unwrap().parse().unwrap()
}

/// Clients on nodes a and b, each registered on a DN of every switch and kept busy.
async fn busy_clients(bed: &Bed, nodes: &[&str]) -> Vec<(Busy, Vec<String>)> {
    let mut out = Vec::new();
    for (k, name) in nodes.iter().enumerate() {
        let mut c = bed.client(name).await;
        let mut dns = Vec::new();
        for i in 0..bed.pbxes.len() {
            let dn = (4001 + 2000 * i + k).to_string();
            c.register(&dn).await;
            dns.push(dn);
        }
        out.push((Busy::start(c, dns.clone()), dns));
    }
    out
}

/// Finish the busy clients: each with what it received, every request answered at most
/// once and every event once.
async fn finish(clients: Vec<(Busy, Vec<String>)>) -> Vec<(Busied, Vec<String>)> {
    let mut out = Vec::new();
    for (busy, dns) in clients {
        let b = busy.finish().await;
        let failed = answered_once(&b);
        eprintln!(
            "{} requests, {} not answered with EventAddressInfo, closed {:?}",
            b.sent.len(),
            failed.len(),
            b.closed
        );
        out.push((b, dns));
    }
    out
}

/// A hot-desk on every DN of every client reaches it (a client closed with 1013 resumes on a
/// new connection to the same node, registering its DNs again).
async fn hot_desks_reach(bed: &Bed, clients: &mut [(Busied, Vec<String>)], nodes: &[&str]) {
    for ((b, dns), node) in clients.iter_mut().zip(nodes) {
        if b.closed.is_some() {
            b.client = bed.client(node).await;
            for dn in dns.iter() {
                b.client.register(dn).await;
            }
        }
        for (i, dn) in dns.iter().enumerate() {
            let sim = bed.sim(&bed.pbxes[i].name);
            let host = (dn.parse::<u64>().unwrap() + 500).to_string();
            hot_desk_reaches(
                &mut b.client,
                &sim,
                dn,
                &host,
                Duration::from_secs(10),
                &mut b.got,
            )
            .await;
        }
    }
}

#[test]
fn losing_a_nats_server_that_leads_none_of_the_cluster_s_streams_is_invisible() {
    let mut guard = serial();
    let nats = nats(&mut guard);
    runtime().block_on(async {
        let ttl = Duration::from_secs(3);
        // Nodes a and b own the switches, connected to the meta leader's server; node c,
        // which owns nothing, is connected to the server killed, which leads nothing: neither
        // the meta group nor any of the cluster's streams.
        let meta = nats.meta_leader(0).unwrap();
        let home = nats.index_of(&meta).unwrap();
        let victim = (home + 1) % 3;
        let mut bed = Bed::new("f1", vec![nats.url(home)], 3, ttl).start(2, 2);
        bed.settled(ttl * 3 + Duration::from_secs(15)).await;
        bed.urls = vec![nats.url(victim)];
        bed.add_node();
        assert_eq!(server_of(nats, "csta-router f1/c-"), victim);
        let js = jetstream(&nats.urls()).await;
        for s in streams("f1") {
            move_leader(&js, nats, Some(&s), &meta).await;
        }
        let victim_name = nats.server_name(victim);
        let led = leaders(&js, "f1").await;
        assert!(led.values().all(|l| *l != victim_name), "{led:?}");
        assert_eq!(nats.meta_leader(0).as_deref(), Some(meta.as_str()));
        drop(js);
        bed.settled(Duration::from_secs(10)).await;
        let clients = busy_clients(&bed, &["a", "c"]).await;
        let (stop, ready) = watch_ready(&bed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::block_in_place(|| nats.kill(victim));
        tokio::time::sleep(ttl * 2 + Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let not_ready = ready.await.unwrap();
        let mut clients = finish(clients).await;
        for (i, (b, _)) in clients.iter().enumerate() {
            let links = link_events(&b.got);
            assert!(links.is_empty(), "{links:?}");
            let failed = answered_once(b);
            if i == 0 {
                // Node a kept its NATS connection: every request succeeds.
                assert!(failed.is_empty(), "{failed:?}");
            } else {
                // Node c moved to another server: what was in flight through the killed one
                // is lost with it. A request whose acknowledgement was lost makes the owner
                // suspect until its lease is seen renewed (54 meanwhile, never sent twice) and
                // is answered 57 if its reply never comes; a reply seen lost closes its client
                // with 1013 (it resumes).
                assert!(
                    failed
                        .iter()
                        .all(|m| m["errorCode"] == 54 || m["errorCode"] == 57),
                    "{failed:?}"
                );
                assert!(
                    failed.len() <= 40,
                    "{} requests failed: {failed:?}",
                    failed.len()
                );
            }
        }
        assert!(not_ready.is_empty(), "{not_ready:?}");
        hot_desks_reach(&bed, &mut clients, &["a", "c"]).await;
        tokio::task::block_in_place(|| nats.restart(victim));
        bed.stop();
    });
}

/// Two servers other than the meta leader: the one the nodes connect to, and the one to
/// kill (so that only JetStream's leader elections are at play, not the nodes' connections).
fn servers_apart(nats: &NatsCluster) -> (usize, usize) {
    let meta = nats.meta_leader(0).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| nats.server_name(i) != meta).collect();
    (others[0], others[1])
}

/// Make server `victim` lead the lease bucket of `cluster` (not the meta group: see
/// [`servers_apart`]) and kill it just after a renewal of `switch`'s lease.
async fn kill_lease_leader(nats: &mut NatsCluster, cluster: &str, switch: &str, victim: usize) {
    use futures_util::StreamExt;
    let js = jetstream(&nats.urls()).await;
    let bucket = format!("KV_CRR_{cluster}_LEASES");
    move_leader(&js, nats, Some(&bucket), &nats.server_name(victim)).await;
    let kv = js
        .get_key_value(format!("CRR_{cluster}_LEASES"))
        .await
        .unwrap();
    let mut watch = kv.watch(switch).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("no renewal of the lease seen");
    tokio::task::block_in_place(|| nats.kill(victim));
}

#[test]
fn losing_the_lease_bucket_s_leader_is_ridden_out_with_a_long_lease() {
    let mut guard = serial();
    let nats = nats(&mut guard);
    runtime().block_on(async {
        let ttl = Duration::from_secs(15);
        let (home, victim) = servers_apart(nats);
        let mut bed = Bed::new("f2long", vec![nats.url(home)], 3, ttl).start(1, 2);
        bed.settled(ttl * 2 + Duration::from_secs(10)).await;
        let clients = busy_clients(&bed, &["a", "b"]).await;
        let (stop, ready) = watch_ready(&bed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        kill_lease_leader(nats, "f2long", "sw1", victim).await;
        let killed = Instant::now();
        // A Raft election takes 4 to 9 s; the fence would close 12 s after the last renewal.
        tokio::time::sleep(Duration::from_secs(13)).await;
        stop.store(true, Ordering::Relaxed);
        let not_ready = ready.await.unwrap();
        let mut clients = finish(clients).await;
        for (b, _) in &clients {
            let links = link_events(&b.got);
            assert!(links.is_empty(), "{links:?}");
            if b.closed.is_none() {
                let failed = answered_once(b);
                assert!(failed.is_empty(), "{failed:?}");
            }
        }
        assert!(not_ready.is_empty(), "{not_ready:?}");
        for (name, node) in bed.live() {
            let log = node.log();
            assert!(!log.contains("gives the switch up"), "{name}: {log}");
        }
        eprintln!("observed for {:?} after the kill", killed.elapsed());
        hot_desks_reach(&bed, &mut clients, &["a", "b"]).await;
        tokio::task::block_in_place(|| nats.restart(victim));
        bed.stop();
    });
}

#[test]
fn losing_the_lease_bucket_s_leader_with_a_short_lease_fails_over_and_restores_everything() {
    let mut guard = serial();
    let nats = nats(&mut guard);
    runtime().block_on(async {
        let ttl = Duration::from_secs(3);
        let (home, victim) = servers_apart(nats);
        let mut bed = Bed::new("f2short", vec![nats.url(home)], 3, ttl).start(2, 2);
        bed.settled(ttl * 3 + Duration::from_secs(15)).await;
        let clients = busy_clients(&bed, &["a", "b"]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        kill_lease_leader(nats, "f2short", "sw1", victim).await;
        let killed = Instant::now();
        // Within 10 s (the election and its detection) + lease-ttl + 1 s, every switch is
        // owned and connected again (a generous bound on a loaded machine).
        let bound = Duration::from_secs(10) + ttl + Duration::from_secs(1);
        // A Raft election takes at least 4 s: by then the owner of sw1 (killed just after its
        // renewal) has fenced.
        let owner = bed.settled_owner_of_log("sw1");
        tokio::time::sleep(ttl + Duration::from_secs(1)).await;
        tokio::task::block_in_place(|| {
            bed.node(&owner)
                .wait_log("its lease was not renewed before the fence closed", 1)
        });
        bed.settled(bound + Duration::from_secs(10)).await;
        let took = killed.elapsed();
        eprintln!(
            "every switch owned and connected again {took:?} after the kill (bound {bound:?})"
        );
        for (name, node) in bed.live() {
            for l in node
                .log()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("owns the switch"))
            {
                eprintln!("{name}: {l}");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut clients = finish(clients).await;
        for (b, _) in &clients {
            every_link_back(&b.got, &["sw1", "sw2"]);
        }
        hot_desks_reach(&bed, &mut clients, &["a", "b"]).await;
        tokio::task::block_in_place(|| nats.restart(victim));
        bed.stop();
    });
}

/// The simulator's open CSTA connections.
async fn connections(sim: &SimControl) -> u64 {
    sim.state().await["links"][0]["connections"]
        .as_u64()
        .unwrap()
}

#[test]
fn jetstream_without_quorum_fences_every_owner_until_a_server_is_back() {
    let mut guard = serial();
    let nats = nats(&mut guard);
    runtime().block_on(async {
        let ttl = Duration::from_secs(3);
        // The nodes connect to server 0 (they learn of the others from it), which stays.
        let mut bed = Bed::new("f3", vec![nats.url(0)], 3, ttl).start(2, 2);
        bed.settled(ttl * 3 + Duration::from_secs(15)).await;
        let clients = busy_clients(&bed, &["a", "b"]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Two of three servers gone: core NATS still works through the third.
        tokio::task::block_in_place(|| {
            nats.kill(1);
            nats.kill(2);
        });
        let lost = Instant::now();
        // Every owner fences (its lease cannot be renewed), every node says it is not ready.
        let deadline = Instant::now() + ttl * 2 + Duration::from_secs(10);
        loop {
            let mut done = true;
            for p in &bed.pbxes {
                done &= connections(&p.sim.control()).await == 0;
            }
            for (_, node) in bed.live() {
                let (status, body) = node.http_get("/readyz").await;
                done &= status == 503
                    && body.contains("jetstream unavailable")
                    && body.contains("nats connected");
                done &= parse_owners(&body).values().all(Option::is_none);
            }
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not fenced and unready within {:?}",
                deadline - lost
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "fenced and not ready {:?} after the quorum was lost",
            lost.elapsed()
        );
        for (_, node) in bed.live() {
            tokio::task::block_in_place(|| node.wait_log("JetStream unavailable", 1));
        }
        // No node takes a switch while the buckets cannot be written.
        let until = Instant::now() + ttl + Duration::from_secs(1);
        while Instant::now() < until {
            for p in &bed.pbxes {
                assert_eq!(
                    connections(&p.sim.control()).await,
                    0,
                    "{} taken without quorum",
                    p.name
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // One server back: the cluster recovers by itself.
        tokio::task::block_in_place(|| nats.restart(1));
        let back = Instant::now();
        bed.settled(Duration::from_secs(45)).await;
        eprintln!("recovered {:?} after one server came back", back.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut clients = finish(clients).await;
        for (b, _) in &clients {
            let links = link_events(&b.got);
            for sw in ["sw1", "sw2"] {
                assert!(
                    links
                        .iter()
                        .any(|m| m["switch"] == sw && m["message"] == "EventLinkDisconnected"),
                    "{sw}: {links:?}"
                );
            }
            every_link_back(&b.got, &["sw1", "sw2"]);
        }
        hot_desks_reach(&bed, &mut clients, &["a", "b"]).await;
        tokio::task::block_in_place(|| nats.restart(2));
        bed.stop();
    });
}

#[test]
fn a_single_nats_server_restarted_on_its_store_or_an_empty_one_gets_everything_back() {
    let _guard = serial();
    runtime().block_on(async {
        let ttl = Duration::from_secs(2);
        let mut server = NatsServer::start();
        let mut bed = Bed::new("f4", vec![server.url()], 1, ttl).start(2, 2);
        bed.settled(ttl * 3 + Duration::from_secs(10)).await;
        let mut clients = Vec::new();
        for (k, name) in ["a", "b"].iter().enumerate() {
            let mut c = bed.client(name).await;
            let mut dns = Vec::new();
            for i in 0..2 {
                let dn = (4001 + 2000 * i + k).to_string();
                c.register(&dn).await;
                dns.push(dn);
            }
            clients.push((
                Busied {
                    client: c,
                    sent: Vec::new(),
                    got: Vec::new(),
                    closed: None,
                },
                dns,
            ));
        }
        let js = jetstream(&[server.url()]).await;
        let regs = bucket_keys(&js, "CRR_f4_REGS", "").await;
        assert_eq!(regs.len(), 4, "{regs:?}");
        drop(js);
        for empty in [false, true] {
            tokio::task::block_in_place(|| {
                if empty {
                    server.restart_empty()
                } else {
                    server.restart()
                }
            });
            let restarted = Instant::now();
            if empty {
                // The leases are gone with the store: every switch is taken again.
                let deadline = Instant::now() + Duration::from_secs(30);
                while bed
                    .live()
                    .map(|(_, n)| n.log().matches("this node owns the switch now").count())
                    .sum::<usize>()
                    < 4
                {
                    assert!(
                        Instant::now() < deadline,
                        "the switches were not taken again"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            bed.settled(Duration::from_secs(30)).await;
            // The registrations are live again: the monitors were restored on the switches.
            hot_desks_reach(&bed, &mut clients, &["a", "b"]).await;
            eprintln!(
                "restart (empty store: {empty}): everything back within {:?}",
                restarted.elapsed()
            );
            let js = jetstream(&[server.url()]).await;
            let now = bucket_keys(&js, "CRR_f4_REGS", "").await;
            assert_eq!(now.len(), 4, "{now:?}");
            let nodes = bucket_keys(&js, "CRR_f4_NODES", "").await;
            assert_eq!(nodes, ["a", "b"]);
            assert!(js.get_stream("CRR_f4_EVENTS").await.is_ok());
        }
        // eventSeq kept increasing across the loss of the store.
        for (b, dns) in &clients {
            for dn in dns {
                let seqs: Vec<u64> = b
                    .got
                    .iter()
                    .filter(|m| m["thisDn"] == dn.as_str())
                    .filter_map(|m| m["eventSeq"].as_u64())
                    .collect();
                assert_eq!(seqs.len(), 4, "{dn}: {seqs:?}");
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{dn}: {seqs:?}");
            }
        }
        for (name, node) in bed.live() {
            let log = node.log();
            assert!(
                log.contains("the cluster's buckets were created again"),
                "{name}: {log}"
            );
        }
        bed.stop();
    });
}

#[test]
fn a_node_whose_settings_differ_from_the_buckets_says_so_and_uses_the_buckets() {
    let _guard = serial();
    runtime().block_on(async {
        let server = NatsServer::start();
        let mut bed = Bed::new("f5", vec![server.url()], 1, Duration::from_secs(2)).start(1, 1);
        bed.settled(Duration::from_secs(15)).await;
        bed.names.push("b".into());
        let text = bed.config(1, Duration::from_secs(5), 3, "10m");
        bed.nodes.push(Some(RouterProcess::start("node-b", &text)));
        let b = bed.node("b");
        b.wait_log("this node is in the cluster", 1);
        let log = b.log();
        for line in [
            "lease-ttl is 5s in this node's configuration, but the existing bucket CRR_f5_LEASES has 2s: this node uses 2s",
            "replicas is 3 in this node's configuration, but the existing bucket CRR_f5_LEASES has 1: this node uses 1",
            "replay-window is 10m in this node's configuration, but the existing stream CRR_f5_EVENTS has 5m: this node uses 5m",
            "it takes switches after 2s",
        ] {
            assert!(log.contains(line), "{line:?} not in:\n{log}");
        }
        let (_, body) = b.http_get("/readyz").await;
        assert!(body.contains("lease-ttl 2s"), "{body}");
        bed.settled(Duration::from_secs(15)).await;
        bed.stop();
        drop(server);
    });
}
