//! Live reload (README, "Live reload"; SPEC §12): SIGHUP or `POST /admin/reload` reads the
//! configuration file again and applies what changed without dropping a client or touching a
//! healthy link.
//!
//! Why one [`Reloader`] for both ways in: reloads run one after the other (a mutex), each
//! applied whole or not at all, and the generation counts them in one place. A file that does
//! not parse or check is refused with the message the router gives at start; the running
//! configuration stays. What needs a restart (listen addresses, `[cluster]`, an embedded
//! simulator) is not applied and is listed in the answer's `restartRequired`
//! ([`crate::config::reload`] classifies every key).

use crate::audit::LogStr;
use crate::cluster::node::Node;
use crate::config::reload::{diff, Changes, Diff};
use crate::config::{Config, ConfigError, EMBEDDED_DEFAULT};
use crate::csta::DeviceNaming;
use crate::dnplan::DnPlan;
use crate::link::SwitchConfig;
use crate::router::{Shared, SwitchCtx};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tracing::{info, warn};

/// The answer of an applied reload (SPEC §12), also the content of its log line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The generation now running (1 at start).
    pub generation: u64,
    /// What changed and was applied.
    pub changed: Changes,
    /// Keys that changed but need a restart (dotted TOML paths).
    pub restart_required: Vec<String>,
}

/// Reads the configuration again and applies it, one reload at a time.
pub struct Reloader {
    shared: Arc<Shared>,
    /// The file the router was started on (`None`: the embedded default).
    file: Mutex<Option<PathBuf>>,
    /// The generation running; held while a reload runs, so reloads run one after the other.
    generation: tokio::sync::Mutex<u64>,
    /// In a cluster: this node, once it has joined (it announces the reloaded switches).
    node: Arc<OnceLock<Arc<Node>>>,
    /// The CSTA side's threads, where a switch a reload adds runs.
    pool: Vec<actix::ArbiterHandle>,
}

impl Reloader {
    /// The reloader of a router started on generation 1.
    pub fn new(
        shared: Arc<Shared>,
        node: Arc<OnceLock<Arc<Node>>>,
        pool: Vec<actix::ArbiterHandle>,
    ) -> Reloader {
        Reloader {
            shared,
            file: Mutex::new(None),
            generation: tokio::sync::Mutex::new(1),
            node,
            pool,
        }
    }

    /// Without `[[admin]]`, a WARN at start: anyone reaching `metrics` (the metrics listener's
    /// address) may reload.
    pub fn warn_if_open(&self, metrics: std::net::SocketAddr) {
        if self.shared.config().admin.is_empty() {
            warn!(
                %metrics,
                "no [[admin]] configured: POST /admin/reload is open to anyone who can reach server.metrics-listen; add an [[admin]] entry (name, token) to require a token"
            );
        }
    }

    /// The file a reload reads (the one the router started on; `None`: the embedded default).
    pub fn set_file(&self, file: Option<PathBuf>) {
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
    }

    /// Read the file again and apply it. `by` says who asked (SIGHUP, an admin's name), for
    /// the log. Returns the answer, or the message that refused the file.
    pub async fn reload(&self, by: &str) -> Result<Answer, ConfigError> {
        let mut generation = self.generation.lock().await;
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let loaded = match &file {
            Some(path) => Config::load(path),
            None => Config::parse(EMBEDDED_DEFAULT, "the embedded default configuration"),
        };
        let mut new = match loaded {
            Ok(new) => new,
            Err(e) => {
                crate::metrics::config_reload("rejected", *generation);
                warn!(by = %LogStr(by), "configuration reload rejected, the running configuration stays: {e}");
                return Err(e);
            }
        };
        let old = self.shared.config();
        let d = diff(&old, &new);
        crate::config::reload::keep_restart_only(&old, &mut new);
        self.apply(&old, new, &d).await;
        *generation += 1;
        crate::metrics::config_reload("ok", *generation);
        let answer = Answer {
            generation: *generation,
            changed: d.changed,
            restart_required: d.restart_required,
        };
        let json = serde_json::to_string(&answer).unwrap_or_default();
        info!(by = %LogStr(by), generation = *generation, "configuration reloaded: {json}");
        Ok(answer)
    }

    /// Apply a checked configuration: the new one is read by connections and requests from
    /// now on; the plans that changed are replaced, and the DNs that left them unregistered
    /// (their MonitorStops sent before this returns).
    async fn apply(&self, old: &Config, new: Config, d: &Diff) {
        let timers = crate::link::Retime::of(&new.link_settings(false));
        if timers != crate::link::Retime::of(&old.link_settings(false)) {
            let sent = self
                .shared
                .switches
                .iter()
                .filter_map(|s| s.handle.get())
                .map(|h| h.addr.send(timers));
            futures_util::future::join_all(sent).await;
        }
        let plans: Vec<(String, DnPlan)> = new
            .switch
            .iter()
            .zip(&new.plans)
            .map(|(s, p)| (s.name.clone(), p.clone()))
            .collect();
        let limit = new.options.request_timeout.0 + Duration::from_millis(200);
        let relinks: Vec<_> = new
            .switch
            .iter()
            .zip(new.switch_configs())
            .filter(|(s, _)| d.relink.contains(&s.name))
            .map(|(s, config)| (s.dialect().device, config))
            .collect();
        let added: Vec<_> = new
            .switch
            .iter()
            .zip(new.switch_configs())
            .zip(&new.plans)
            .filter(|((s, _), _)| d.changed.switches_added.contains(&s.name))
            .map(|((s, config), plan)| (s.dialect().device, config, plan.clone()))
            .collect();
        if let Some(node) = self.node.get() {
            // A removed switch is contended for no more, and this node's clients served by
            // another node's links are told now.
            for name in &d.changed.switches_removed {
                node.forsake(name);
            }
            // Each node reloads its own file: the others compare its switches with theirs.
            node.reload_definitions(
                new.switch
                    .iter()
                    .map(|sw| (sw.name.clone(), sw.dns.join(",")))
                    .collect(),
            );
        }
        self.shared.set_config(Arc::new(new));
        let gone = |s: &SwitchCtx| d.changed.switches_removed.iter().any(|n| **n == *s.name);
        self.replan(&plans, d, gone).await;
        for sw in self
            .shared
            .switches
            .iter()
            .filter(|s| gone(s) && !s.is_removed())
        {
            self.remove_switch(sw, limit).await;
            if let Some(node) = self.node.get() {
                node.release_removed(&sw.name).await;
            }
        }
        for (naming, config, plan) in added {
            self.add_switch(naming, config, plan);
        }
        self.relink(relinks, limit).await;
    }

    /// Replace the plans that changed (a removed switch's with an empty one) and end the
    /// registrations of the DNs that left them: answered once their actors have handed their
    /// MonitorStops to the links.
    async fn replan(
        &self,
        plans: &[(String, DnPlan)],
        d: &Diff,
        gone: impl Fn(&SwitchCtx) -> bool,
    ) {
        let mut replanned = Vec::new();
        for sw in self.shared.live_switches() {
            if gone(sw) {
                sw.set_plan(DnPlan::default());
            } else if !d.plan_changed(&sw.name) {
                continue;
            }
            if let Some((_, plan)) = plans.iter().find(|(n, _)| **n == *sw.name) {
                sw.set_plan(plan.clone());
            }
            if let Some(shard) = sw.shard.get() {
                replanned.push(shard.replan.send(crate::router::messages::Replanned));
            }
        }
        let ended: usize = futures_util::future::join_all(replanned)
            .await
            .into_iter()
            .flatten()
            .sum();
        if ended > 0 {
            info!("{ended} DNs unregistered: no longer in any DN plan");
        }
    }

    /// Start a switch a reload added, as at start: its router shard and its links on the CSTA
    /// threads (in a cluster, unowned: the node contends for its lease); every client gets
    /// `EventLinkConnected` when a link is up.
    fn add_switch(&self, naming: DeviceNaming, config: SwitchConfig, plan: DnPlan) {
        let switches = &self.shared.switches;
        let index = switches.next_index();
        let name = config.name.clone();
        crate::metrics::init_switch_labels(&name, config.links.len());
        let ctx = Arc::new(SwitchCtx::new(index, name.clone(), plan, false).with_naming(naming));
        let mut pool = self.pool.clone();
        let threads = pool.len().max(1);
        pool.rotate_left(index % threads);
        let router =
            crate::router::Router::start_for(self.shared.clone(), ctx.clone(), pool.first());
        // In a cluster, its links open once this node takes its lease.
        let handle = if self.shared.config().cluster.is_some() {
            crate::link::Switch::start_unowned(config, router.recipient(), &pool)
        } else {
            crate::link::Switch::start(config, router.recipient(), &pool)
        };
        let _ = ctx.handle.set(handle);
        if let Some(node) = self.node.get() {
            node.add_switch(&ctx);
        }
        if switches.push(ctx).is_some() {
            info!(switch = %name, "switch added: its links are starting");
        } else {
            warn!(switch = %name, "switch not added: the router runs {} switches at most", crate::router::state::MAX_SWITCHES);
        }
    }

    /// Restart the links of each switch whose link settings changed, with the new ones: its
    /// clients get `EventLinkDisconnected` and `EventLinkConnected` with `reason:
    /// "reconfigured"`, and its registrations stay (monitored again on the new link). In a
    /// cluster the owner does so without giving its lease up.
    async fn relink(&self, relinks: Vec<(DeviceNaming, SwitchConfig)>, limit: Duration) {
        for (naming, config) in relinks {
            let Some(sw) = self.shared.live_switches().find(|s| s.name == config.name) else {
                continue;
            };
            let Some(handle) = sw.handle.get() else {
                continue;
            };
            sw.set_naming(naming);
            // In a cluster, only the owner's links are up to restart: another node keeps the
            // new settings for when it takes the switch.
            if sw.owned_here.load(Ordering::Acquire) {
                sw.reconfiguring.store(true, Ordering::Release);
            }
            let relink = crate::link::Relink {
                config,
                keep_addresses: sw.simulated,
            };
            let _ = tokio::time::timeout(limit, handle.addr.send(relink)).await;
        }
    }

    /// Close a removed switch's links, its DNs already unregistered: their MonitorStops go out
    /// first (within `limit`), then each link closes as on shutdown (an ECMA-354 session is
    /// stopped), and every client is told the switch is gone (`EventLinkDisconnected`,
    /// `reason: "removed"`).
    async fn remove_switch(&self, sw: &SwitchCtx, limit: Duration) {
        let Some(handle) = sw.handle.get() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            match handle.addr.send(crate::link::SwitchStatusQuery).await {
                Ok(st) if st.monitored > 0 || st.monitor_ops > 0 => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => break,
            }
        }
        sw.set_removed();
        let closing = handle.addr.send(crate::link::CloseLinks);
        let _ = tokio::time::timeout_at(deadline + limit, closing).await;
        self.shared.hub.announce(|| {
            sw.set_link_up(false);
            Some(crate::protocol::link_event(
                &sw.name,
                false,
                None,
                Some("removed"),
            ))
        });
        info!(switch = %sw.name, "switch removed: its links are closed");
    }
}

/// `POST /admin/reload` (on `metrics-listen`): 403 for a page of a foreign origin, 401
/// without the token of an `[[admin]]` (when any is configured), 400 with the message for a
/// file refused, 200 with the [`Answer`].
pub async fn admin_reload(req: HttpRequest, reloader: web::Data<Arc<Reloader>>) -> HttpResponse {
    let config = reloader.shared.config();
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        if !own_origin(&req, origin.as_bytes(), &config.server.allowed_origins) {
            info!(peer = ?req.peer_addr(), "configuration reload refused (403): a page of another origin");
            return text(
                HttpResponse::Forbidden(),
                "A page of another web origin may not reload the configuration.\n",
            );
        }
    }
    let by = if config.admin.is_empty() {
        "POST /admin/reload".to_owned()
    } else {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let admin = token.and_then(|t| {
            config
                .admin
                .iter()
                .find(|a| same_secret(a.token.expose().as_bytes(), t.as_bytes()))
        });
        match admin {
            Some(a) => format!("admin {}", a.name),
            None => {
                info!(peer = ?req.peer_addr(), "configuration reload refused (401): missing or wrong admin token");
                return text(
                    HttpResponse::Unauthorized(),
                    "Reloading needs Authorization: Bearer <token> of an [[admin]] entry.\n",
                );
            }
        }
    };
    match reloader.reload(&by).await {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(e) => text(HttpResponse::BadRequest(), &format!("{e}\n")),
    }
}

fn text(mut builder: actix_web::HttpResponseBuilder, body: &str) -> HttpResponse {
    builder
        .content_type("text/plain; charset=utf-8")
        .body(body.to_owned())
}

/// Whether an `Origin` is the metrics listener's own (`http(s)://<Host>`, the console's page)
/// or one of `allowed-origins`.
fn own_origin(req: &HttpRequest, origin: &[u8], allowed: &[String]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = !host.is_empty()
        && ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
    own || allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Compare a secret without leaking where it differs through the time taken.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reload on every SIGHUP until the process ends (call inside the router's runtime).
pub fn on_sighup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let Ok(mut hup) = hup else {
            warn!("SIGHUP cannot be caught: reload with POST /admin/reload");
            return;
        };
        actix_rt::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = reloader.reload("SIGHUP").await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abcdefgh", b"abcdefgh"));
        assert!(!same_secret(b"abcdefgh", b"abcdefgi"));
        assert!(!same_secret(b"abcdefgh", b"abcdefg"));
    }
}
