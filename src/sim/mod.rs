//! The PBX simulator: a real, independent CSTA peer over TCP (README, section "pbx-sim").
//!
//! It exists so the router can be run and tested without a PBX: the router starts one per
//! configured simulated switch (embedded, on the router's own runtime), and the `pbx-sim`
//! binary runs one as a separate process. Either way it is reached only over loopback TCP, like a
//! real switch, and the router learns its state only from CSTA.
//!
//! One switch state (associations, calls, monitors, fault modes) is shared by all the switch's
//! links. Each link connection gets the `SystemStatus enabled` greeting on invoke `0000`, may
//! start monitors (owned by the connection), and asks for hot-desking (`Escape`) and account
//! codes (`AssociateData`). An HTTP control API (documented in the README) makes it act like a
//! phone or like a faulty switch.
//!
//! Submodules: `state` (the switch's state and rules), `server` (the CSTA links), `control`
//! (the HTTP control API).

mod control;
mod server;
mod session;
mod state;
pub mod vendor;

pub use vendor::Vendor;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix_web::dev::ServerHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::csta::Dialect;
use crate::dnplan::DnPlan;
use state::SwitchState;

/// What a simulated switch is: its name, devices, CSTA links, control API and dialect.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The switch's name (reported by `GET /state` and in logs).
    pub name: String,
    /// The devices the switch knows; anything else is `invalidDeviceID`.
    pub dns: DnPlan,
    /// The addresses to listen on for CSTA links, in link order (port 0: any free port).
    pub links: Vec<SocketAddr>,
    /// The address of the HTTP control API, if one is wanted (port 0: any free port).
    pub control: Option<SocketAddr>,
    /// How the switch writes CSTA (and decodes account codes).
    pub dialect: Dialect,
}

/// The state shared by the link tasks and the control API.
pub(crate) struct Switch {
    name: String,
    dialect: Dialect,
    state: Mutex<SwitchState>,
    shutdown: CancellationToken,
}

/// A burst from the control API pauses while a link connection has more than this queued
/// towards it, so that a burst is paced by the slowest reading link instead of filling its
/// queue (which would drop the link).
const BURST_PAUSE_BYTES: usize = state::CONN_QUEUE_BYTES / 4;

/// A connection whose queue stays above [`BURST_PAUSE_BYTES`] without shrinking for this long
/// is not reading at all: it is dropped, as a switch drops a CTI link that does not read, and
/// the burst goes on.
const LINK_STALL: std::time::Duration = std::time::Duration::from_secs(5);

impl Switch {
    /// Lock the state (a poisoned lock is still usable: every change is applied whole).
    fn lock(&self) -> MutexGuard<'_, SwitchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until every link connection has room in its queue (less than
    /// [`BURST_PAUSE_BYTES`] queued). Anything that generates many events from the control
    /// API calls this before each step, so that the step can never fill a queue: the events
    /// go out as fast as the slowest link reads. A connection that reads nothing for
    /// [`LINK_STALL`] is dropped instead of holding the burst for ever.
    pub(crate) async fn wait_for_room(&self) {
        let mut watched: std::collections::HashMap<state::ConnId, (usize, tokio::time::Instant)> =
            std::collections::HashMap::new();
        loop {
            let behind: Vec<_> = self
                .lock()
                .queue_levels()
                .into_iter()
                .filter(|(_, queued, cancel)| *queued > BURST_PAUSE_BYTES && !cancel.is_cancelled())
                .collect();
            if behind.is_empty() {
                return;
            }
            let now = tokio::time::Instant::now();
            for (id, queued, cancel) in behind {
                let (low, since) = watched.entry(id).or_insert((queued, now));
                if queued < *low {
                    (*low, *since) = (queued, now);
                } else if now.duration_since(*since) >= LINK_STALL {
                    tracing::warn!(
                        switch = %self.name,
                        conn = id,
                        "dropping a link connection that has read nothing for {} s ({queued} bytes queued towards it)",
                        LINK_STALL.as_secs()
                    );
                    cancel.cancel();
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
            }
        }
    }
}

/// A running simulated switch. Cloning gives another handle to the same switch; dropping every
/// handle leaves it running until its runtime ends, so call [`Simulator::shutdown`] to stop it.
#[derive(Clone)]
pub struct Simulator {
    switch: Arc<Switch>,
    link_addrs: Vec<SocketAddr>,
    control_addr: Option<SocketAddr>,
    http: Option<ServerHandle>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("name", &self.switch.name)
            .field("link_addrs", &self.link_addrs)
            .field("control_addr", &self.control_addr)
            .finish()
    }
}

impl Simulator {
    /// Bind every link listener and the control API, then serve them on the current tokio
    /// runtime (an actix `System` included). Fails if any address cannot be bound.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Simulator::start_with_tls(config, None).await
    }

    /// [`Simulator::start`], with CSTA over TLS on every link when `tls` is given (like a
    /// switch offering CSTA over TLS; build it with [`crate::tls::server_config`] from PEM
    /// files or [`crate::tls::server_config_from_pem`] from memory). The control API stays
    /// plain HTTP.
    pub async fn start_with_tls(
        config: SimConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Simulator> {
        Simulator::start_vendor(config, Vendor::Generic, tls).await
    }

    /// [`Simulator::start_with_tls`], shaped like a switch of `vendor` (see [`vendor`]): the
    /// preset's namespace replaces the dialect's, and its device forms, cross-references,
    /// greeting and application-session rules apply.
    pub async fn start_vendor(
        mut config: SimConfig,
        vendor: Vendor,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Simulator> {
        if let Some(ns) = vendor.namespace() {
            config.dialect.csta_namespace = ns.to_owned();
        }
        let mut listeners = Vec::with_capacity(config.links.len());
        let mut link_addrs = Vec::with_capacity(config.links.len());
        for addr in &config.links {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "simulated switch {}: cannot listen on {addr}: {e}",
                        config.name
                    ),
                )
            })?;
            link_addrs.push(listener.local_addr()?);
            listeners.push(listener);
        }
        let switch = Arc::new(Switch {
            name: config.name.clone(),
            dialect: config.dialect.clone(),
            state: Mutex::new(SwitchState::new(
                config.name.clone(),
                config.dns,
                config.dialect,
                &link_addrs,
                vendor,
            )),
            shutdown: CancellationToken::new(),
        });
        let (control_addr, http) = match config.control {
            Some(addr) => {
                let (bound, handle) = control::start(switch.clone(), addr).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "simulated switch {}: cannot serve the control API on {addr}: {e}",
                            config.name
                        ),
                    )
                })?;
                (Some(bound), Some(handle))
            }
            None => (None, None),
        };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let with_tls = acceptor.is_some();
        for (link, listener) in listeners.into_iter().enumerate() {
            tokio::spawn(server::accept_loop(
                switch.clone(),
                link,
                listener,
                acceptor.clone(),
            ));
        }
        tracing::info!(
            switch = %config.name,
            links = ?link_addrs,
            control = ?control_addr,
            tls = with_tls,
            vendor = vendor.name(),
            "simulated switch listening"
        );
        Ok(Simulator {
            switch,
            link_addrs,
            control_addr,
            http,
        })
    }

    /// The addresses the CSTA links listen on, in configuration order (ports resolved).
    pub fn link_addrs(&self) -> Vec<SocketAddr> {
        self.link_addrs.clone()
    }

    /// The address of the control API, if it was configured.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The switch's name.
    pub fn name(&self) -> &str {
        &self.switch.name
    }

    /// Stop the switch: close the listeners, every link connection and the control API.
    /// Returns at once; the tasks finish shortly after.
    pub fn shutdown(&self) {
        self.switch.lock().close();
        self.switch.shutdown.cancel();
        if let Some(http) = &self.http {
            // The stop command is sent when `stop` is called; the returned future only waits
            // for completion, which nobody needs here.
            drop(http.stop(false));
        }
        tracing::info!(switch = %self.switch.name, "simulated switch stopped");
    }
}
