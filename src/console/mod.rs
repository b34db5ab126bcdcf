//! The web console (`GET /console`) and the operator's status (`GET /status`), both on
//! `metrics-listen` (README, "Web console").
//!
//! An on-call engineer needs something to look at when Grafana is not there: the console is
//! one self-contained page (HTML, CSS and JavaScript in `console.html`, embedded in the binary;
//! no CDN, no build step) that speaks the public client protocol over `/v1` and reads the
//! public endpoints (`/status`, `/metrics`). The page learns where `/v1` is from the server,
//! which writes the client listener's actual port (or `[server] console-client-url`) into it.
//! `/v1` accepts the console's own origin (the `metrics-listen` port on the host the upgrade
//! names, see [`Console::own_origin`]) besides `allowed-origins`.

use crate::config::{Config, ServerConfig};
use crate::link::{LinkState, SwitchConfig, SwitchStatus, SwitchStatusQuery};
use crate::router::{Shared, SwitchCtx};
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The page, with [`CONFIG_PLACEHOLDER`] where the server writes where `/v1` is.
const PAGE: &str = include_str!("console.html");

/// Replaced in [`PAGE`] by a JSON object: `url` (`console-client-url`, or `null`), `scheme`
/// (`ws` or `wss`) and `port` (the client listener's bound port).
const CONFIG_PLACEHOLDER: &str = "/*CONSOLE_CONFIG*/null";

/// How long `GET /status` waits for a switch's link layer to report its links.
const LINK_QUERY_LIMIT: Duration = Duration::from_millis(500);

/// What the console's endpoints and the `/v1` Origin rule need to know about the listeners:
/// their bound addresses are known only once both are bound (a test may configure port 0).
pub struct Console {
    client: OnceLock<SocketAddr>,
    metrics: OnceLock<SocketAddr>,
    tls: bool,
    url: Option<String>,
    /// Each switch's link addresses as the link layer uses them (an embedded simulator's
    /// actual ports), by switch name.
    links: HashMap<String, Vec<SocketAddr>>,
}

impl Console {
    /// The console of a router with this `[server]` section, whose links are `switches`.
    pub fn new(server: &ServerConfig, switches: &[SwitchConfig]) -> Console {
        Console {
            client: OnceLock::new(),
            metrics: OnceLock::new(),
            tls: server.tls_config.is_some(),
            url: server.console_client_url.clone(),
            links: switches
                .iter()
                .map(|s| {
                    let addrs = s.links.iter().map(|l| l.address).collect();
                    (s.name.to_string(), addrs)
                })
                .collect(),
        }
    }

    /// Note where the listeners were bound (before they accept anything).
    pub fn listening(&self, client: SocketAddr, metrics: SocketAddr) {
        let _ = self.client.set(client);
        let _ = self.metrics.set(metrics);
    }

    /// Whether a WebSocket upgrade's `Origin` is the console's own: a page served by this
    /// router's metrics listener (its port), on the host the upgrade's `Host` header names.
    /// The host must match `Host` so that a page of another site that happens to use the same
    /// port cannot pass; the port must be the metrics listener's so that another service on
    /// the same host (another origin) cannot.
    pub fn own_origin(&self, origin: &[u8], host: Option<&[u8]>) -> bool {
        let Some(metrics) = self.metrics.get() else {
            return false;
        };
        match (std::str::from_utf8(origin), host.map(std::str::from_utf8)) {
            (Ok(origin), Some(Ok(host))) => same_host_on_port(origin, host, metrics.port()),
            _ => false,
        }
    }

    /// The JSON the page starts from (see [`CONFIG_PLACEHOLDER`]), safe inside a `<script>`.
    fn page_config(&self) -> String {
        let port = self.client.get().map(SocketAddr::port);
        let scheme = if self.tls { "wss" } else { "ws" };
        json!({"url": self.url, "scheme": scheme, "port": port})
            .to_string()
            .replace('<', "\\u003c")
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (the `Host` header's host, port
/// ignored) and `port` (explicit, or the scheme's default).
fn same_host_on_port(origin: &str, host: &str, port: u16) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    let (rest, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (rest, 443)
    } else {
        return false;
    };
    let Some((origin_host, origin_port)) = split_host_port(rest, default_port) else {
        return false;
    };
    let Some((host_host, _)) = split_host_port(host.trim(), 0) else {
        return false;
    };
    origin_port == port && !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host_host)
}

/// `host[:port]` or `[v6][:port]`: the host and the port (`default` when absent); `None`
/// when the text is not one (a path, user information, a port that is not a number).
fn split_host_port(text: &str, default: u16) -> Option<(&str, u16)> {
    if text.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None => default,
        Some(p) => p.parse().ok()?,
    };
    Some((host, port))
}

/// What the page may do (`Content-Security-Policy`): its own inline script and style, requests
/// to its own origin and WebSockets, nothing loaded from elsewhere; and no other site may
/// frame it (a framed hot-desk form could be clicked through a decoy).
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /console`: the page, told where `/v1` is.
pub async fn page(console: web::Data<Arc<Console>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Content-Security-Policy", POLICY))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(PAGE.replacen(CONFIG_PLACEHOLDER, &console.page_config(), 1))
}

/// `GET /status`: the switches (links, active link, link state and its last change, owner
/// node in a cluster, DN plan, DNs registered), the clients connected and the DNs registered
/// in all (README, "Web console").
pub async fn status(
    shared: web::Data<Arc<Shared>>,
    console: web::Data<Arc<Console>>,
) -> HttpResponse {
    let config = shared.config();
    let mut switches = Vec::new();
    for s in shared.switches.iter().filter(|s| !s.is_removed()) {
        let links = match s.handle.get() {
            Some(h) => tokio::time::timeout(LINK_QUERY_LIMIT, h.addr.send(SwitchStatusQuery))
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        switches.push(switch_status(&config, s, links.as_ref(), &console));
    }
    let registered: usize = shared
        .switches
        .iter()
        .filter(|s| !s.is_removed())
        .map(|s| s.registered.load(Ordering::Relaxed))
        .sum();
    let mut body = json!({
        "clientsConnected": shared.hub.len(),
        "dnsRegistered": registered,
        "tokensRequired": !config.application.is_empty(),
        "switches": switches,
    });
    if let Some(node) = config.cluster.as_ref().and_then(|c| c.node.clone()) {
        body["node"] = json!(node);
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(body.to_string())
}

/// One switch of `GET /status` (`links`: its link layer's report, when it answered).
fn switch_status(
    config: &Config,
    s: &SwitchCtx,
    links: Option<&SwitchStatus>,
    console: &Console,
) -> Value {
    let view = s.view();
    let entry = config.switch.iter().find(|e| *e.name == *s.name);
    // An embedded simulator's links are where it was bound (fixed for the process' life:
    // `simulated` needs a restart); any other switch's are those of the current file.
    let started = if s.simulated {
        console.links.get(&*s.name)
    } else {
        None
    };
    let addresses: Vec<String> = match started {
        Some(addrs) => addrs.iter().map(ToString::to_string).collect(),
        None => entry
            .map(|e| e.link.iter().map(|l| l.address.to_string()).collect())
            .unwrap_or_default(),
    };
    let link_list: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(j, address)| {
            let state = links.and_then(|l| l.links.get(j)).map(|st| link_state(*st));
            json!({"index": j, "address": address, "state": state})
        })
        .collect();
    let changed = s.link_changed_ms.load(Ordering::Relaxed);
    let mut out = json!({
        "name": &*s.name,
        "simulated": s.simulated,
        "linkState": if view.link_up { "connected" } else { "disconnected" },
        "activeLink": if view.link_up { Some(view.active_link) } else { None },
        "lastChange": (changed > 0).then(|| rfc3339_ms(changed)),
        "dns": entry.map(|e| e.dns.clone()).unwrap_or_default(),
        "dnsRegistered": s.registered.load(Ordering::Relaxed),
        "links": link_list,
    });
    if let Some(owner) = view.owner {
        out["owner"] = json!(owner.as_deref());
    }
    out
}

/// A link's state as `/status` names it.
fn link_state(state: LinkState) -> &'static str {
    match state {
        LinkState::Starting => "starting",
        LinkState::Handshaking => "handshaking",
        LinkState::Up => "up",
        LinkState::Down => "down",
    }
}

/// Milliseconds since the Unix epoch as RFC 3339, UTC, with milliseconds (as every message's
/// `time`).
fn rfc3339_ms(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_origin_is_the_metrics_port_on_the_upgrade_host() {
        assert!(same_host_on_port(
            "http://127.0.0.1:9464",
            "127.0.0.1:7700",
            9464
        ));
        assert!(same_host_on_port(
            "http://LocalHost:9464/",
            "localhost:7700",
            9464
        ));
        assert!(same_host_on_port("http://[::1]:9464", "[::1]:7700", 9464));
        assert!(same_host_on_port(
            "https://cti.example.com",
            "cti.example.com",
            443
        ));
        assert!(same_host_on_port(
            "http://cti.example.com",
            "cti.example.com:7700",
            80
        ));
        // Another port on the same host: another origin.
        assert!(!same_host_on_port(
            "http://127.0.0.1:8080",
            "127.0.0.1:7700",
            9464
        ));
        // The metrics port on another host than the one the upgrade names.
        assert!(!same_host_on_port(
            "http://evil.example:9464",
            "127.0.0.1:7700",
            9464
        ));
        assert!(!same_host_on_port(
            "http://127.0.0.2:9464",
            "127.0.0.1:7700",
            9464
        ));
        assert!(!same_host_on_port(
            "http://127.0.0.1.evil:9464",
            "127.0.0.1",
            9464
        ));
        // Not an origin.
        assert!(!same_host_on_port("null", "127.0.0.1:7700", 9464));
        assert!(!same_host_on_port(
            "file://127.0.0.1:9464",
            "127.0.0.1",
            9464
        ));
        assert!(!same_host_on_port(
            "http://u@127.0.0.1:9464",
            "127.0.0.1",
            9464
        ));
        assert!(!same_host_on_port(
            "http://127.0.0.1:9464/x",
            "127.0.0.1",
            9464
        ));
        assert!(!same_host_on_port("http://127.0.0.1:x", "127.0.0.1", 9464));
        assert!(!same_host_on_port("http://:9464", ":7700", 9464));
    }

    #[test]
    fn the_rule_needs_the_bound_metrics_port_and_a_host_header() {
        let console = Console::new(&ServerConfig::default(), &[]);
        assert!(!console.own_origin(b"http://127.0.0.1:9464", Some(b"127.0.0.1:7700")));
        console.listening(
            SocketAddr::from(([127, 0, 0, 1], 7700)),
            SocketAddr::from(([127, 0, 0, 1], 41234)),
        );
        assert!(console.own_origin(b"http://127.0.0.1:41234", Some(b"127.0.0.1:7700")));
        assert!(!console.own_origin(b"http://127.0.0.1:9464", Some(b"127.0.0.1:7700")));
        assert!(!console.own_origin(b"http://127.0.0.1:41234", None));
        assert!(!console.own_origin(&[0xff], Some(b"127.0.0.1")));
    }

    #[test]
    fn the_page_is_told_where_v1_is_and_the_text_cannot_end_its_script() {
        let mut server = ServerConfig::default();
        let console = Console::new(&server, &[]);
        console.listening(
            SocketAddr::from(([127, 0, 0, 1], 7711)),
            SocketAddr::from(([127, 0, 0, 1], 9464)),
        );
        let v: Value = serde_json::from_str(&console.page_config()).unwrap_or_default();
        assert_eq!(v, json!({"url": null, "scheme": "ws", "port": 7711}));
        assert!(PAGE.contains(CONFIG_PLACEHOLDER));
        server.console_client_url = Some("wss://cti.example.com/v1?</script>".into());
        let console = Console::new(&server, &[]);
        let text = console.page_config();
        assert!(!text.contains("</script>"), "{text}");
        assert!(text.contains("wss://cti.example.com/v1"), "{text}");
        let tls = Console {
            tls: true,
            ..Console::new(&ServerConfig::default(), &[])
        };
        tls.listening(
            SocketAddr::from(([127, 0, 0, 1], 7712)),
            SocketAddr::from(([127, 0, 0, 1], 9464)),
        );
        let v: Value = serde_json::from_str(&tls.page_config()).unwrap_or_default();
        assert_eq!(v, json!({"url": null, "scheme": "wss", "port": 7712}));
    }

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_796_524_262_114), "2026-12-06T02:31:02.114Z");
    }
}
