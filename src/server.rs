//! Process wiring: embedded simulators, switches and their links, router shards, the WebSocket
//! endpoint and the health endpoints; then run until SIGTERM or Ctrl-C.

use crate::audit::LogStr;
use crate::cluster::node::Node;
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::console::Console;
use crate::link::{Switch, SwitchConfig};
use crate::router::{Router, Shared, SwitchCtx};
use crate::session;
use crate::sim::{SimConfig, Simulator};
use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the router could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound, or the runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The node cannot be a member of its cluster (a name in use, credentials refused...).
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A running router: what tests and the binary need to reach it.
pub struct Running {
    /// The shared state (switches, configuration, clients).
    pub shared: Arc<Shared>,
    /// Where the WebSocket endpoint listens.
    pub client_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// The embedded simulators.
    pub simulators: Vec<Simulator>,
    /// In a cluster: this node, once it has joined (see [`Running::join`]).
    pub node: Option<Arc<Node>>,
    /// What the listeners know of the node: whether there is a cluster, and the node once it
    /// has joined.
    slot: NodeSlot,
    http: Vec<actix_web::dev::ServerHandle>,
    sessions: CancellationToken,
    /// The client sessions of this node.
    pub clients: session::Clients,
    /// Reloads the configuration (SIGHUP, `POST /admin/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    /// The CSTA side's threads, stopped before the embedded simulators so that a clean stop
    /// does not look like a switch closing its links.
    arbiters: Vec<Arbiter>,
}

impl Running {
    /// In a cluster: join it (retrying while NATS cannot be reached) and start this node.
    /// Until then the listeners are open, but WebSocket upgrades get 503 and `/readyz` says
    /// the node is joining, so that a load balancer or a desktop's URL list moves on to a
    /// node that serves. Without a cluster there is nothing to do.
    pub async fn join(&mut self) -> Result<(), ServerError> {
        let config = self.shared.config();
        let Some(cfg) = config.cluster.as_ref() else {
            return Ok(());
        };
        if self.node.is_some() {
            return Ok(());
        }
        let cluster = join_cluster(cfg).await?;
        let node = Node::start(cluster, self.shared.clone()).await?;
        node.on_give_up(self.clients.give_up(&self.shared));
        let _ = self.slot.node.set(node.clone());
        self.node = Some(node);
        Ok(())
    }

    /// Stop accepting, close every client with 1001, stop monitors and simulators. Bounded:
    /// the clients are closed at most `request-timeout` + 1.5 s after the call (requests in
    /// flight are answered or time out by then).
    pub async fn stop(self) {
        let started = tokio::time::Instant::now();
        let until = |limit: Duration| {
            let left = (started
                + self.shared.config().options.request_timeout.0
                + Duration::from_millis(1500))
            .saturating_duration_since(tokio::time::Instant::now());
            limit.min(left)
        };
        // 1. Stop accepting connections.
        for h in &self.http {
            h.pause().await;
        }
        // In a cluster, the switches are handed over first (their leases released, so that
        // another node takes them at once and this node's clients are served from there).
        if let Some(node) = &self.node {
            node.stop().await;
        }
        // 2. Let requests already sent to a switch (here, or forwarded to another node) get
        //    their answer (or time out), so that every client request is answered before its
        //    client is closed.
        let in_flight = |shared: &Shared| -> u64 {
            let forwarded = self.node.as_ref().map_or(0, |n| n.forwarded_waiting());
            shared
                .switches
                .iter()
                .filter_map(|s| s.handle.get())
                .map(|h| h.in_flight())
                .sum::<u64>()
                + forwarded as u64
        };
        let limit = self.shared.config().options.request_timeout.0 + Duration::from_millis(200);
        wait_until(until(limit), || in_flight(&self.shared) == 0).await;
        // The last answers still travel link → router → extension → client queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // 3. Close every client with 1001; their registrations are released (in a cluster,
        //    after session-linger, by the owners), so the extension actors retire and stop
        //    their monitors.
        self.sessions.cancel();
        wait_until(until(Duration::from_secs(3)), || self.shared.hub.is_empty()).await;
        self.clients.end_lingering(&self.shared);
        // 4. Wait (bounded) until every monitor is stopped on the switches.
        let deadline = tokio::time::Instant::now() + until(Duration::from_secs(3));
        for s in &self.shared.switches {
            let Some(link) = s.handle.get().map(|h| &h.addr) else {
                continue;
            };
            while tokio::time::Instant::now() < deadline {
                match link.send(crate::link::SwitchStatusQuery).await {
                    Ok(st) if st.monitored > 0 || st.monitor_ops > 0 => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    _ => break,
                }
            }
        }
        wait_until(until(Duration::from_secs(1)), || {
            in_flight(&self.shared) == 0
        })
        .await;
        info!("clients closed and monitors stopped");
        for h in &self.http {
            h.stop(true).await;
        }
        // The links go before the simulators: an embedded simulator stopping first would be
        // seen (and logged as a warning) as the switch closing the link. Each link closes on
        // purpose first (an ECMA-354 application session is stopped, within request-timeout).
        let closing = self
            .shared
            .switches
            .iter()
            .filter_map(|s| s.handle.get())
            .map(|h| h.addr.send(crate::link::CloseLinks));
        let limit = self.shared.config().options.request_timeout.0 + Duration::from_millis(200);
        let _ = tokio::time::timeout(limit, futures_util::future::join_all(closing)).await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for arbiter in self.arbiters {
            let _ = arbiter.join();
        }
        for sim in &self.simulators {
            sim.shutdown();
        }
    }
}

/// Poll `done` every 10 ms until it holds or `limit` has passed.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start everything the configuration describes on the current actix System, and join the
/// cluster if there is one.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let mut running = start_listening(config).await?;
    running.join().await?;
    Ok(running)
}

/// Start everything the configuration describes on the current actix System except the
/// cluster membership: the listeners are open when this returns; in a cluster, call
/// [`Running::join`] next (clients get 503 until it is done).
pub async fn start_listening(config: Config) -> Result<Running, ServerError> {
    let simulators = start_simulators(&config).await?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    // The CSTA side (router shards, their extension actors, link actors) runs on a pool of one
    // thread per core; client sessions run on as many actix-web workers. More threads than
    // cores only adds wake-ups and context switches.
    let pool: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
    let switch_configs = switch_configs(&config, &simulators);
    let console = Arc::new(Console::new(&config.server, &switch_configs));
    crate::metrics::install(config.options.request_timeout.0);
    crate::metrics::init_labels(
        &config
            .switch
            .iter()
            .map(|s| (Arc::from(s.name.as_str()), s.link.len()))
            .collect::<Vec<_>>(),
    );
    let switches: Vec<Arc<SwitchCtx>> = config
        .switch
        .iter()
        .zip(config.plans.iter())
        .enumerate()
        .map(|(index, (sw, plan))| {
            let name: Arc<str> = Arc::from(sw.name.as_str());
            let ctx = SwitchCtx::new(index, name, plan.clone(), sw.simulated);
            Arc::new(ctx.with_naming(sw.dialect().device))
        })
        .collect();
    let shared = Arc::new(Shared::new(config, switches));
    let slot = NodeSlot {
        clustered: shared.config().cluster.is_some(),
        node: Arc::new(OnceLock::new()),
    };
    start_switches(&shared, switch_configs, &pool, slot.clustered);
    let sessions = CancellationToken::new();
    let session_clients = session::Clients {
        node: slot.node.clone(),
        ..session::Clients::default()
    };
    let clients = ClientEndpoint {
        shared: shared.clone(),
        clients: session_clients.clone(),
        sessions: sessions.clone(),
        node: slot.clone(),
        console: console.clone(),
    };
    let (client_server, client_addr) = client_listener(clients, threads)?;
    let reloader = Arc::new(crate::reload::Reloader::new(
        shared.clone(),
        slot.node.clone(),
        pool.iter().map(Arbiter::handle).collect(),
    ));
    let (metrics_server, metrics_addr) = metrics_listener(
        shared.clone(),
        slot.clone(),
        console.clone(),
        reloader.clone(),
    )?;
    console.listening(client_addr, metrics_addr);
    reloader.warn_if_open(metrics_addr);
    let http = vec![client_server.handle(), metrics_server.handle()];
    actix_rt::spawn(client_server);
    actix_rt::spawn(metrics_server);
    let scheme = if shared.config().server.tls_config.is_some() {
        "wss"
    } else {
        "ws"
    };
    info!(%client_addr, "clients: {scheme}://{client_addr}/v1");
    info!(%metrics_addr, "metrics: http://{metrics_addr}/metrics (health: /healthz, /readyz)");
    Ok(Running {
        shared,
        client_addr,
        metrics_addr,
        simulators,
        node: None,
        slot,
        http,
        sessions,
        clients: session_clients,
        reloader,
        arbiters: pool,
    })
}

/// Start an embedded simulator for every `simulated = true` switch.
async fn start_simulators(config: &Config) -> Result<Vec<Simulator>, ServerError> {
    let mut simulators = Vec::new();
    for sw in config.switch.iter().filter(|s| s.simulated) {
        let sim = Simulator::start_vendor(
            SimConfig {
                name: sw.name.clone(),
                dns: crate::dnplan::DnPlan::parse(&sw.dns).unwrap_or_default(),
                links: sw.link.iter().map(|l| l.address).collect(),
                control: sw.simulator_control,
                dialect: sw.dialect(),
            },
            sw.simulator_vendor.name().parse().unwrap_or_default(),
            sw.simulator_tls.clone(),
        )
        .await?;
        warn!(
            switch = %sw.name,
            links = ?sim.link_addrs(),
            control = ?sim.control_addr(),
            "switch {} is SIMULATED (embedded pbx-sim), not a real PBX",
            sw.name
        );
        simulators.push(sim);
    }
    Ok(simulators)
}

/// The switches as the link layer wants them, with the addresses the embedded simulators
/// actually bound (they may have been given port 0).
fn switch_configs(config: &Config, simulators: &[Simulator]) -> Vec<SwitchConfig> {
    let mut switch_configs = config.switch_configs();
    let mut sims = simulators.iter();
    for (entry, sc) in config.switch.iter().zip(switch_configs.iter_mut()) {
        if entry.simulated {
            if let Some(sim) = sims.next() {
                for (link, addr) in sc.links.iter_mut().zip(sim.link_addrs()) {
                    link.address = addr;
                }
            }
        }
    }
    switch_configs
}

/// Join the cluster, retrying with back-off while NATS cannot be reached, refuses the
/// credentials or presents a certificate not trusted (each failure logged with its reason and
/// the `[cluster]` keys to check: the server's side may be put right while the node waits); a
/// configuration the node cannot use ends the start.
async fn join_cluster(cfg: &crate::config::ClusterConfig) -> Result<Cluster, ServerError> {
    let mut wait = Duration::from_millis(250);
    loop {
        match Cluster::join(cfg).await {
            Ok(c) => return Ok(c),
            Err(
                e @ (ClusterError::Connect { .. }
                | ClusterError::Auth { .. }
                | ClusterError::Tls { .. }
                | ClusterError::JetStreamUnavailable { .. }
                | ClusterError::Setup { .. }
                | ClusterError::Timeout { .. }
                | ClusterError::Nats { .. }),
            ) => {
                warn!(
                    "cannot join the cluster yet, retrying in {}: {e}",
                    humantime::format_duration(wait)
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Start each switch's router shard and link layer on the CSTA pool.
fn start_switches(
    shared: &Arc<Shared>,
    configs: Vec<SwitchConfig>,
    pool: &[Arbiter],
    clustered: bool,
) {
    let threads = pool.len().max(1);
    let handles: Vec<ArbiterHandle> = pool.iter().map(Arbiter::handle).collect();
    for (i, (sw, sc)) in shared.switches.iter().zip(configs).enumerate() {
        // Switch i's shard (and so its extension actors) on pool thread i, its link j on
        // thread i + j: a switch's routing and per-DN work stay on one thread (see `router`),
        // its active link usually shares that thread (no cross-thread hop between them), and
        // switches are spread over the cores.
        let mut pool = handles.clone();
        pool.rotate_left(i % threads);
        let router = Router::start_for(shared.clone(), sw.clone(), pool.first());
        // In a cluster, a switch's links open only once this node owns it.
        let handle = if clustered {
            Switch::start_unowned(sc, router.recipient(), &pool)
        } else {
            Switch::start(sc, router.recipient(), &pool)
        };
        let _ = sw.handle.set(handle);
    }
}

/// What the WebSocket endpoint's handlers share.
#[derive(Clone)]
struct ClientEndpoint {
    shared: Arc<Shared>,
    /// The admission of connections (`max-clients`, authentication back-off) and the
    /// sessions of this node.
    clients: session::Clients,
    /// Cancelled to close every session with 1001.
    sessions: CancellationToken,
    /// The web console, whose origin `/v1` accepts.
    console: Arc<Console>,
    /// In a cluster: this node (no client is taken before it joined or while it is not
    /// ready).
    node: NodeSlot,
}

/// The cluster node as the listeners see it: none without a cluster; in a cluster, empty
/// until the node has joined.
#[derive(Clone)]
struct NodeSlot {
    clustered: bool,
    node: Arc<OnceLock<Arc<Node>>>,
}

/// Whether clients may be served, as far as the cluster goes.
enum Membership<'a> {
    /// No cluster: always.
    Alone,
    /// In a cluster, not joined yet.
    Joining,
    /// In a cluster, joined: when the node is ready.
    Node(&'a Arc<Node>),
}

impl NodeSlot {
    fn membership(&self) -> Membership<'_> {
        match (self.clustered, self.node.get()) {
            (false, _) => Membership::Alone,
            (true, None) => Membership::Joining,
            (true, Some(n)) => Membership::Node(n),
        }
    }
}

/// Bind the client listener (`/v1`): its server, not yet running, and its address.
fn client_listener(
    clients: ClientEndpoint,
    threads: usize,
) -> Result<(actix_web::dev::Server, SocketAddr), ServerError> {
    let shared = clients.shared.clone();
    let server = &shared.config().server;
    let client_accept = client_accept_bound(server.max_clients, threads);
    warn_if_descriptors_short(&shared.config(), client_accept.0 * threads, threads);
    let client_server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(clients.clone()))
            .route("/v1", web::get().to(ws_endpoint))
    })
    .workers(threads)
    // The TCP connections the client listener holds at once (per worker): max-clients and
    // some room for connections being refused or closed. Beyond, connections wait in the
    // kernel's backlog instead of taking descriptors the metrics listener and the switch links
    // need.
    .max_connections(client_accept.0)
    // Each connection's socket, so that a session can drop a connection whose client stopped
    // reading (see `session::TcpHandle`).
    .on_connect(|io, data| {
        if let Some(socket) = session::ConnSocket::of(io) {
            data.insert(Rc::new(socket));
        }
    })
    .client_disconnect_timeout(session::CLIENT_DISCONNECT_TIMEOUT)
    // Replies go out at once, not after Nagle waits for the client's delayed ACK.
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(2);
    // With tls-cert/tls-key the endpoint speaks wss only: a plain ws:// client fails its
    // handshake.
    let client_server = match &server.tls_config {
        Some(tls) => client_server.bind_rustls_0_23(server.client_listen, (**tls).clone()),
        None => client_server.bind(server.client_listen),
    }
    .map_err(|e| listen_error(e, server.client_listen, "clients", "server.client-listen"))?;
    let addr = client_server
        .addrs()
        .first()
        .copied()
        .unwrap_or(server.client_listen);
    Ok((client_server.run(), addr))
}

/// Bind the metrics listener (`/metrics`, `/healthz`, `/readyz`, the console's `/status` and
/// `/console`).
fn metrics_listener(
    shared: Arc<Shared>,
    node: NodeSlot,
    console: Arc<Console>,
    reloader: Arc<crate::reload::Reloader>,
) -> Result<(actix_web::dev::Server, SocketAddr), ServerError> {
    let server = &shared.config().server;
    let (listen, max) = (server.metrics_listen, server.max_http_connections);
    let metrics_server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(shared.clone()))
            .app_data(web::Data::new(node.clone()))
            .app_data(web::Data::new(console.clone()))
            .route("/metrics", web::get().to(metrics_endpoint))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route(
                "/asyncapi.json",
                web::get().to(crate::protocol::asyncapi::endpoint),
            )
            .route("/status", web::get().to(crate::console::status))
            .route("/console", web::get().to(crate::console::page))
            .app_data(web::Data::new(reloader.clone()))
            .route("/admin/reload", web::post().to(crate::reload::admin_reload))
    })
    .workers(1)
    // Scrapers and health checks cannot hold more descriptors than this (one worker).
    .max_connections(max.max(1))
    .disable_signals()
    .shutdown_timeout(1)
    .bind(listen)
    .map_err(|e| listen_error(e, listen, "metrics", "server.metrics-listen"))?;
    let addr = metrics_server.addrs().first().copied().unwrap_or(listen);
    Ok((metrics_server.run(), addr))
}

/// A listener that could not be bound, naming the address and its key.
fn listen_error(e: std::io::Error, addr: SocketAddr, what: &str, key: &str) -> ServerError {
    ServerError::Io(std::io::Error::new(
        e.kind(),
        format!("cannot listen for {what} on {addr} ({key}): {e}"),
    ))
}

async fn ws_endpoint(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ClientEndpoint>,
) -> actix_web::Result<HttpResponse> {
    let shared = state.shared.clone();
    // A browser says which page opens the socket; a page from a site not listed must not
    // drive the router with the user's network access. Other clients send no Origin.
    // The web console's own origin (a page of the metrics listener) is always allowed.
    if let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) {
        let host = req.headers().get(actix_web::http::header::HOST);
        if !origin_allowed(&shared.config().server.allowed_origins, origin.as_bytes())
            && !state
                .console
                .own_origin(origin.as_bytes(), host.map(|h| h.as_bytes()))
        {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            info!(
                origin = %LogStr(&crate::protocol::echo(&origin)),
                peer = ?req.peer_addr(),
                "WebSocket upgrade refused (403): its Origin is not in server.allowed-origins"
            );
            return Ok(HttpResponse::Forbidden()
                .content_type("text/plain; charset=utf-8")
                .body("This web origin may not open the router's WebSocket endpoint; the router's operator can add it to server.allowed-origins.\n"));
        }
    }
    let refusal = match state.node.membership() {
        Membership::Alone => None,
        Membership::Joining => Some("This router node has not joined its cluster yet and serves no client for now; connect to another node, or retry in a few seconds.\n"),
        Membership::Node(n) if !n.is_ready() => Some("This router node has lost its cluster's NATS and serves no client for now; connect to another node, or retry in a few seconds.\n"),
        Membership::Node(_) => None,
    };
    if let Some(refusal) = refusal {
        return Ok(HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body(refusal));
    }
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let conn = session::Conn {
        peer: req.peer_addr().map(|a| a.ip()),
        tcp: session::TcpHandle::new(req.conn_data::<Rc<session::ConnSocket>>()),
    };
    actix_web::rt::spawn(session::run(
        shared,
        state.clients.clone(),
        session,
        stream,
        state.sessions.clone(),
        conn,
    ));
    Ok(response)
}

/// Whether an `Origin` header value is one of `allowed` (compared without case and without a
/// trailing slash, as browsers serialize origins in lower case without a path).
fn origin_allowed(allowed: &[String], origin: &[u8]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// TCP connections the client listener holds at once: `(per worker, room beyond max-clients)`.
/// The room (an eighth of max-clients, at least 16) is for connections being refused with
/// 1013 or finishing their close, so that a full router still answers 1013 rather than
/// leaving new connections in the backlog.
fn client_accept_bound(max_clients: usize, workers: usize) -> (usize, usize) {
    let room = (max_clients / 8).max(16);
    (
        max_clients.saturating_add(room).div_ceil(workers.max(1)),
        room,
    )
}

/// Descriptors the router needs besides its client and metrics connections and its links:
/// listeners, the runtime's own (an epoll and an eventfd per thread, measured at about 60 on a
/// 2-core machine with two embedded simulators), log files.
fn descriptor_margin(threads: usize) -> usize {
    64 + 8 * threads
}

/// The soft limit on open descriptors (`ulimit -n`), from `/proc/self/limits` (`None` when
/// unknown or unlimited).
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Warn at start when the descriptors the configuration may need exceed the process's limit:
/// past it, accepting fails for every listener at once (clients, `/metrics`, `/readyz`).
fn warn_if_descriptors_short(config: &Config, client_connections: usize, threads: usize) {
    let Some(limit) = descriptor_limit() else {
        return;
    };
    // A simulated switch's links have both ends in this process.
    let links: usize = config
        .switch
        .iter()
        .map(|s| s.link.len() * if s.simulated { 2 } else { 1 })
        .sum();
    let http = config.server.max_http_connections;
    let margin = descriptor_margin(threads);
    let need = client_connections + http + links + margin;
    if need as u64 > limit {
        warn!(
            needed = need,
            limit,
            "the router may need {need} file descriptors but may open only {limit} (ulimit -n): {client_connections} client connections (server.max-clients {} and room for connections being refused or closed), {http} metrics connections (server.max-http-connections), {links} switch link sockets, {margin} for listeners, the runtime and logs. Past the limit, clients, /metrics and /readyz are refused alike: raise the limit to at least {need} (systemd: LimitNOFILE={need} in the unit; a shell: ulimit -n {need}) or lower server.max-clients",
            config.server.max_clients
        );
    }
}

async fn metrics_endpoint(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(&shared.gauges()))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(shared: web::Data<Arc<Shared>>, node: web::Data<NodeSlot>) -> HttpResponse {
    let mut body = String::new();
    for s in shared.live_switches() {
        let up = s.link_up.load(Ordering::Relaxed);
        body.push_str(&format!(
            "switch {} link {}\n",
            s.name,
            if up { "connected" } else { "disconnected" }
        ));
    }
    match node.membership() {
        Membership::Alone => HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("ready\n{body}")),
        Membership::Joining => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: joining the cluster\n{body}")),
        Membership::Node(node) if node.is_ready() => HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("ready\n{body}{}", node.readiness())),
        Membership::Node(node) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!(
                "not ready: {}\n{body}{}",
                node.not_ready_reason(),
                node.readiness()
            )),
    }
}

/// Run the router until a termination signal, then stop it cleanly; SIGHUP reloads `file`
/// (`None`: the embedded default).
pub fn run(config: Config, file: Option<std::path::PathBuf>) -> Result<(), ServerError> {
    let system = actix::System::new();
    system.block_on(async move {
        let mut running = start_listening(config).await?;
        running.reloader.set_file(file);
        crate::reload::on_sighup(running.reloader.clone());
        // Installed before the line below: whoever reads the line may send SIGTERM at once.
        let stop = shutdown_signal();
        tokio::pin!(stop);
        // One machine-readable line on stdout, so that scripts and tests that asked for port 0
        // learn where to connect.
        println!(
            "{}",
            serde_json::json!({
                "clients": running.client_addr.to_string(),
                "metrics": running.metrics_addr.to_string(),
                "simulators": running.simulators.iter().map(|s| serde_json::json!({
                    "name": s.name(),
                    "links": s.link_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "control": s.control_addr().map(|a| a.to_string()),
                })).collect::<Vec<_>>(),
            })
        );
        let stopped = tokio::select! {
            joined = running.join() => {
                joined?;
                false
            }
            _ = &mut stop => true,
        };
        info!(
            switches = running.shared.switches.len(),
            "csta-router running"
        );
        if !stopped {
            stop.await;
        }
        info!("shutting down: closing clients with 1001");
        running.stop().await;
        Ok::<(), ServerError>(())
    })?;
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c (the router's and the bench's way to be stopped). The SIGTERM
/// handler is installed when this is called, not when the future is first polled: a process
/// that calls it before announcing itself (the stdout line) is never killed by a SIGTERM sent
/// right after the announcement. Call it inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        {
            match term {
                Some(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_without_case_or_trailing_slash() {
        let allowed = vec![
            "https://desk.example.com".to_owned(),
            "http://127.0.0.1:8080/".to_owned(),
        ];
        assert!(origin_allowed(&allowed, b"https://desk.example.com"));
        assert!(origin_allowed(&allowed, b"https://DESK.example.com/"));
        assert!(origin_allowed(&allowed, b"http://127.0.0.1:8080"));
        assert!(!origin_allowed(
            &allowed,
            b"https://desk.example.com.evil.example"
        ));
        assert!(!origin_allowed(&allowed, b"http://desk.example.com"));
        assert!(!origin_allowed(&allowed, b"null"));
        assert!(!origin_allowed(&[], b"https://desk.example.com"));
        assert!(!origin_allowed(&allowed, &[0xff, 0xfe]));
    }

    #[test]
    fn the_descriptor_limit_is_read_from_proc() {
        let limit = descriptor_limit().unwrap_or(0);
        assert!(limit >= 16, "{limit}");
    }

    #[test]
    fn the_client_listener_holds_max_clients_and_some_room() {
        assert_eq!(client_accept_bound(100, 2), (58, 16));
        assert_eq!(client_accept_bound(10_000, 2), (5_625, 1_250));
        assert_eq!(client_accept_bound(3, 4), (5, 16));
        assert_eq!(client_accept_bound(10, 0), (26, 16));
    }
}
