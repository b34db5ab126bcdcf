//! Prometheus metrics (README, "Observability").
//!
//! The `metrics` facade with the Prometheus recorder, rendered by the router's own HTTP server
//! at `GET /metrics`. Every metric is described (HELP text), latencies are histograms with
//! buckets from a millisecond up to the request timeout, and every label value known in
//! advance (switches, links, services, results, error codes, reasons) is registered at 0 at
//! start so that `rate()` and alerts work before the first event. No label takes a DN, a connId
//! or any other unbounded value.
//!
//! Hot paths hold their counters as handles created once ([`SwitchMetrics`], the link actor's
//! own), so counting is an atomic add, not a registry lookup. Gauges that are a count of
//! something the router holds anyway (clients, calls, associations, extension actors) are read
//! at scrape time instead of being maintained on every change.
//!
//! The metrics of a cluster node are in [`cluster`] (re-exported here): a router without
//! `[cluster]` exports none of them.

use crate::csta::Message;
use crate::protocol::{CallEventName, CloseCause, ErrorCode};
use crate::services::Service;
use metrics::{
    describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub mod cluster;
pub use cluster::{
    init_cluster_labels, set_cluster_nodes, set_config_mismatch, set_nats_connected,
    ClusterMetrics, OwnershipReason, CLUSTER_CONFIG_MISMATCH, CLUSTER_METRICS, CLUSTER_NODES,
    FLOW_GAPS, FLOW_GAP_RESULTS, FORWARDED_REQUESTS, FORWARDED_REQUEST_SECONDS, NATS_CONNECTED,
    OWNERSHIP_CHANGES, SWITCH_OWNED,
};

/// Private-service requests by switch, service and result.
pub const PRIVATE_SERVICE_REQUESTS: &str = "csta_router_private_service_requests_total";
/// Client request to switch confirmation for hot-desking.
pub const ASSOCIATION_LATENCY: &str = "csta_router_association_latency_seconds";
/// Every `EventError` sent.
pub const ERRORS: &str = "csta_router_errors_total";
/// Private events received from switches.
pub const PRIVATE_EVENTS: &str = "csta_router_private_events_total";
/// Call events for desktops, by switch and event (once per CSTA event that makes one).
pub const CALL_EVENTS: &str = "csta_router_call_events_total";
/// Event copies delivered to clients.
pub const EVENTS_DELIVERED: &str = "csta_router_events_delivered_total";
/// CSTA events received from switches (any kind).
pub const CSTA_EVENTS_RECEIVED: &str = "csta_router_csta_events_received_total";
/// 1 for a switch's active link.
pub const LINK_UP: &str = "csta_router_link_up";
/// 1 for each operational link (active or standby).
pub const LINK_CONNECTED: &str = "csta_router_link_connected";
/// Times the active link moved to another link.
pub const LINK_FAILOVERS: &str = "csta_router_link_failovers_total";
/// Keep-alives the switch did not answer in time.
pub const KEEPALIVE_MISSES: &str = "csta_router_keepalive_misses_total";
/// Links reset because the byte stream lost its framing.
pub const FRAMING_RESETS: &str = "csta_router_csta_framing_resets_total";
/// Successful reconnections of a link.
pub const LINK_RECONNECTS: &str = "csta_router_link_reconnects_total";
/// CSTA requests awaiting an answer.
pub const CSTA_IN_FLIGHT: &str = "csta_router_csta_requests_in_flight";
/// CSTA request to answer.
pub const CSTA_ROUNDTRIP: &str = "csta_router_csta_roundtrip_seconds";
/// Frames whose XML could not be read.
pub const CSTA_DECODE_ERRORS: &str = "csta_router_csta_decode_errors_total";
/// ECMA-354 application sessions the switch refused (or did not answer), by reason.
pub const LINK_SESSION_FAILURES: &str = "csta_router_link_session_failures_total";
/// Frames read that are not quite as the standard has them, by kind (answered, not errors).
pub const LINK_WARNINGS: &str = "csta_router_link_warnings_total";
/// The `kind` of [`LINK_WARNINGS`] for a `SystemStatus` without its `systemStatus`.
pub const WARNING_EMPTY_SYSTEM_STATUS: &str = "system_status_empty";
/// Answers that came after their request had timed out.
pub const CSTA_LATE_ANSWERS: &str = "csta_router_csta_late_answers_total";
/// Invoke IDs reserved, by state (`in_flight`, `expired`).
pub const INVOKE_IDS_RESERVED: &str = "csta_router_invoke_ids_reserved";
/// Frames read from a switch and not yet handled by its router shard.
pub const LINK_QUEUE_FRAMES: &str = "csta_router_link_queue_frames";
/// Times a link stopped reading because its router shard was `link-queue` frames behind.
pub const LINK_READ_PAUSES: &str = "csta_router_link_read_pauses_total";
/// Client connections open.
pub const CLIENTS_CONNECTED: &str = "csta_router_clients_connected";
/// Client connections closed, by reason.
pub const CLIENT_DISCONNECTS: &str = "csta_router_client_disconnects_total";
/// DNs with at least one registration.
pub const REGISTERED_DNS: &str = "csta_router_registered_dns";
/// Hot-desk associations known.
pub const HOTDESK_ASSOCIATIONS: &str = "csta_router_hotdesk_associations";
/// Calls tracked.
pub const ACTIVE_CALLS: &str = "csta_router_active_calls";
/// Extension actors alive.
pub const EXTENSION_ACTORS: &str = "csta_router_extension_actors";
/// Sessions whose connection went, kept for `session-linger`.
pub const SESSIONS_LINGERING: &str = "csta_router_sessions_lingering";
/// `RequestOpen`s with `resume`, by result.
pub const SESSION_RESUMES: &str = "csta_router_session_resumes_total";
/// The results of a resume: resumed (nothing missing), gap (some events no longer kept),
/// unknown (no such session: a new one), refused (another application's session).
pub const RESUME_RESULTS: [&str; 4] = ["resumed", "gap", "unknown", "refused"];
/// Events sent again to resumed sessions.
pub const EVENTS_REPLAYED: &str = "csta_router_events_replayed_total";
/// Configuration reloads (SIGHUP, `POST /admin/reload`), by result.
pub const CONFIG_RELOADS: &str = "csta_router_config_reloads_total";
/// The results of a reload: applied, or the file refused whole.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "rejected"];
/// The configuration's generation: 1 at start, one more per applied reload.
pub const CONFIG_GENERATION: &str = "csta_router_config_generation";
/// 1 when the last reload was applied (or none was asked for), 0 when it was rejected: what the
/// "last reload rejected" alert watches (a counter cannot say which came last).
pub const CONFIG_LAST_RELOAD_OK: &str = "csta_router_config_last_reload_successful";
/// Calls forgotten because a DN or a switch had more than its limit.
pub const CALLS_EVICTED: &str = "csta_router_calls_evicted_total";

/// The CSTA requests the router sends, for the round-trip histogram's `request` label: each is
/// the [`Message::name`] of the request (see [`csta_request_label`]).
pub const CSTA_REQUESTS: [&str; 5] = [
    "RequestSystemStatus",
    "MonitorStart",
    "MonitorStop",
    "Escape",
    "AssociateData",
];

/// The `request` label of a CSTA request: its name when it is one of [`CSTA_REQUESTS`], else
/// "other" (a bounded label set, whatever is sent).
pub fn csta_request_label(request: &Message) -> &'static str {
    let name = request.name();
    CSTA_REQUESTS
        .into_iter()
        .find(|r| *r == name)
        .unwrap_or("other")
}

/// States of a reserved invoke ID, for [`INVOKE_IDS_RESERVED`].
pub const INVOKE_ID_STATES: [&str; 2] = ["in_flight", "expired"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets from 1 ms up to (and including) the request timeout.
pub fn buckets(request_timeout: Duration) -> Vec<f64> {
    let top = request_timeout.as_secs_f64().max(0.001);
    let mut b: Vec<f64> = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0,
        60.0,
    ]
    .into_iter()
    .filter(|v| *v < top)
    .collect();
    b.push(top);
    b
}

/// The exporter's configuration: every `_seconds` histogram has [`buckets`] up to the request
/// timeout, except the forwarded-request latency, which goes up to the request timeout + 1 s
/// (how long a node waits for the owner before it answers 57).
fn builder(
    request_timeout: Duration,
) -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &buckets(request_timeout),
        )?
        .set_buckets_for_metric(
            Matcher::Full(FORWARDED_REQUEST_SECONDS.into()),
            &buckets(request_timeout + Duration::from_secs(1)),
        )
}

/// Install the recorder (once per process; later calls return the same handle, so several
/// routers in one test process share it) and describe every metric.
pub fn install(request_timeout: Duration) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = builder(request_timeout).and_then(|builder| builder.install_recorder());
            let handle = match handle {
                Ok(h) => h,
                // Another recorder is installed (an embedding program's): render ours empty.
                Err(e) => {
                    tracing::warn!("metrics recorder not installed: {e}");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            handle
        })
        .clone()
}

/// Every metric with its type and HELP text: a new metric is its name above and one line here
/// (and its handle or its labels exported at 0 below).
const DESCRIPTIONS: [(&str, Kind, &str); 35] = [
    (
        PRIVATE_SERVICE_REQUESTS,
        Kind::Counter,
        "Private-service requests from clients (1: initiate hot-desking, 2: cancel, 501: set account code), by switch, service and result: \"ok\" or the error code sent back.",
    ),
    (
        ASSOCIATION_LATENCY,
        Kind::Histogram,
        "Time from a client's hot-desk request to the switch's confirmation or refusal (successes and failures), by switch and operation.",
    ),
    (
        ERRORS,
        Kind::Counter,
        "EventError messages sent to clients, by switch (empty when none applies) and error code.",
    ),
    (
        PRIVATE_EVENTS,
        Kind::Counter,
        "Private events received from the switch and processed: hot-desk established/cancelled and account codes.",
    ),
    (
        EVENTS_DELIVERED,
        Kind::Counter,
        "Event copies queued to clients (one per client per event).",
    ),
    (
        CSTA_EVENTS_RECEIVED,
        Kind::Counter,
        "CSTA events received from the switch on its monitors.",
    ),
    (
        LINK_UP,
        Kind::Gauge,
        "1 for the switch's active CSTA link, 0 for its other links.",
    ),
    (
        LINK_CONNECTED,
        Kind::Gauge,
        "1 for each operational CSTA link of the switch (active or standby), so a dead standby link is seen before it is needed.",
    ),
    (
        LINK_FAILOVERS,
        Kind::Counter,
        "Times the switch's active link moved to another link.",
    ),
    (
        KEEPALIVE_MISSES,
        Kind::Counter,
        "Keep-alive requests the switch did not answer within request-timeout.",
    ),
    (
        FRAMING_RESETS,
        Kind::Counter,
        "Times a link was reset because the CSTA byte stream lost its framing.",
    ),
    (
        LINK_RECONNECTS,
        Kind::Counter,
        "Times a CSTA link was established again after being lost.",
    ),
    (
        CSTA_IN_FLIGHT,
        Kind::Gauge,
        "CSTA requests sent to the switch and not yet answered (timed-out ones excluded).",
    ),
    (
        CSTA_ROUNDTRIP,
        Kind::Histogram,
        "Time from sending a CSTA request to reading its answer, by switch and request.",
    ),
    (
        CSTA_DECODE_ERRORS,
        Kind::Counter,
        "CSTA frames whose XML could not be read (counted and skipped).",
    ),
    (
        CSTA_LATE_ANSWERS,
        Kind::Counter,
        "CSTA answers that arrived after their request had timed out (dropped).",
    ),
    (
        INVOKE_IDS_RESERVED,
        Kind::Gauge,
        "CSTA invoke IDs reserved on the switch's links (9998 per link), by state: in_flight (awaiting an answer within request-timeout) or expired (timed out and never answered; freed only by a link reset, which happens when fewer than 1000 are free and half of the reserved ones are long expired, or when one has been expired for 10 x request-timeout).",
    ),
    (
        LINK_QUEUE_FRAMES,
        Kind::Gauge,
        "Frames read from the switch and not yet handled by its router shard; at link-queue the link stops reading until the router catches up.",
    ),
    (
        LINK_READ_PAUSES,
        Kind::Counter,
        "Times a link of the switch stopped reading because link-queue frames were waiting for the router shard (TCP backpressure to the switch).",
    ),
    (
        CLIENTS_CONNECTED,
        Kind::Gauge,
        "Client WebSocket connections open.",
    ),
    (
        SESSIONS_LINGERING,
        Kind::Gauge,
        "Client sessions whose connection went without RequestClose, kept (registrations and events) for session-linger so that a new connection can resume them.",
    ),
    (
        SESSION_RESUMES,
        Kind::Counter,
        "RequestOpen with resume, by result: resumed, gap (some events were no longer kept), unknown (no such session: a new one), refused (another application's session).",
    ),
    (
        EVENTS_REPLAYED,
        Kind::Counter,
        "Events sent again to resumed sessions (the events their previous connection may have missed).",
    ),
    (
        CLIENT_DISCONNECTS,
        Kind::Counter,
        "Client WebSocket connections closed, by reason: closed (by the client, or dropped), slow_consumer (4008: queue full, or a write blocked for client-ping-interval x client-ping-tolerance), ping_timeout (1000), protocol_error (1002, 1008, 1009), auth (1008 wrong or missing token; 1013 address locked out after repeated failures), limit (1013, max-clients), shutdown (1001), open_timeout (1008, no RequestOpen within open-timeout).",
    ),
    (
        REGISTERED_DNS,
        Kind::Gauge,
        "DNs registered by at least one client.",
    ),
    (
        HOTDESK_ASSOCIATIONS,
        Kind::Gauge,
        "Distinct hot-desk associations known from the switch's events.",
    ),
    (
        ACTIVE_CALLS,
        Kind::Gauge,
        "Calls tracked on registered devices.",
    ),
    (
        EXTENSION_ACTORS,
        Kind::Gauge,
        "Extension actors alive (one per DN in use).",
    ),
    (
        LINK_SESSION_FAILURES,
        Kind::Counter,
        "ECMA-354 application sessions a switch refused or left unanswered, by reason: the standard definedError value, other (its text in the log) or timeout; the link stays down meanwhile.",
    ),
    (
        LINK_WARNINGS,
        Kind::Counter,
        "Frames read from a switch that are not quite as the standard has them but are handled all the same (kind system_status_empty: a SystemStatus without its systemStatus, answered).",
    ),
    (
        CALL_EVENTS,
        Kind::Counter,
        "Call events made for clients registered with callEvents, by event (off_hook, dialing, ringing, established, held, retrieved, party_changed, diverted, released): once per CSTA event, however many clients get it.",
    ),
    (
        CONFIG_RELOADS,
        Kind::Counter,
        "Configuration reloads (SIGHUP or POST /admin/reload), by result: ok (applied; an unchanged file too), rejected (the file did not parse or check: the running configuration stays).",
    ),
    (
        CONFIG_GENERATION,
        Kind::Gauge,
        "The running configuration's generation: 1 at start, one more per applied reload.",
    ),
    (
        CONFIG_LAST_RELOAD_OK,
        Kind::Gauge,
        "1 when the last configuration reload was applied (or none was asked for since the start), 0 when it was rejected: the file on disk is not the configuration running.",
    ),
    (
        CALLS_EVICTED,
        Kind::Counter,
        "Calls forgotten because a DN had more than max-calls-per-dn or the switch more than max-calls-per-switch active calls (the call idle the longest goes); a steady rise means the switch does not report calls clearing.",
    ),
];

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn describe() {
    for (name, kind, help) in DESCRIPTIONS
        .into_iter()
        .chain(cluster::CLUSTER_DESCRIPTIONS)
    {
        match kind {
            Kind::Counter => describe_counter!(name, Unit::Count, help),
            Kind::Gauge => describe_gauge!(name, Unit::Count, help),
            Kind::Histogram => describe_histogram!(name, Unit::Seconds, help),
        }
    }
}

/// Register every label value known in advance at 0.
pub fn init_labels(switches: &[(Arc<str>, usize)]) {
    for cause in CloseCause::ALL {
        metrics::counter!(CLIENT_DISCONNECTS, "reason" => cause.label()).absolute(0);
    }
    metrics::gauge!(CLIENTS_CONNECTED).set(0.0);
    metrics::gauge!(SESSIONS_LINGERING).set(0.0);
    for result in RESUME_RESULTS {
        metrics::counter!(SESSION_RESUMES, "result" => result).absolute(0);
    }
    metrics::counter!(EVENTS_REPLAYED).absolute(0);
    for result in RELOAD_RESULTS {
        metrics::counter!(CONFIG_RELOADS, "result" => result).absolute(0);
    }
    metrics::gauge!(CONFIG_GENERATION).set(1.0);
    metrics::gauge!(CONFIG_LAST_RELOAD_OK).set(1.0);
    for code in ErrorCode::ALL {
        metrics::counter!(ERRORS, "switch" => "", "code" => code.code().to_string()).absolute(0);
    }
    for (switch, links) in switches {
        init_switch_labels(switch, *links);
    }
}

/// Register every label value of one switch known in advance at 0 (at start, and for a switch
/// a reload adds).
pub fn init_switch_labels(switch: &Arc<str>, links: usize) {
    let sw = switch.clone();
    for service in Service::ALL {
        metrics::counter!(PRIVATE_SERVICE_REQUESTS, "switch" => sw.clone(), "service" => service.label(), "result" => "ok").absolute(0);
        for code in ErrorCode::ALL {
            metrics::counter!(PRIVATE_SERVICE_REQUESTS, "switch" => sw.clone(), "service" => service.label(), "result" => code.code().to_string()).absolute(0);
        }
    }
    for op in Service::ALL
        .into_iter()
        .filter_map(Service::latency_operation)
    {
        // Registers the histogram so its buckets render at 0.
        let _ = metrics::histogram!(ASSOCIATION_LATENCY, "switch" => sw.clone(), "operation" => op);
    }
    for code in ErrorCode::ALL {
        metrics::counter!(ERRORS, "switch" => sw.clone(), "code" => code.code().to_string())
            .absolute(0);
    }
    for service in Service::ALL {
        metrics::counter!(PRIVATE_EVENTS, "switch" => sw.clone(), "event" => service.event_label())
            .absolute(0);
    }
    for event in CallEventName::ALL {
        metrics::counter!(CALL_EVENTS, "switch" => sw.clone(), "event" => event.label())
            .absolute(0);
    }
    for request in CSTA_REQUESTS {
        let _ = metrics::histogram!(CSTA_ROUNDTRIP, "switch" => sw.clone(), "request" => request);
    }
    metrics::counter!(LINK_FAILOVERS, "switch" => sw.clone()).absolute(0);
    metrics::counter!(KEEPALIVE_MISSES, "switch" => sw.clone()).absolute(0);
    metrics::counter!(FRAMING_RESETS, "switch" => sw.clone()).absolute(0);
    for link in 0..links {
        metrics::gauge!(LINK_UP, "switch" => sw.clone(), "link" => link.to_string()).set(0.0);
        metrics::gauge!(LINK_CONNECTED, "switch" => sw.clone(), "link" => link.to_string())
            .set(0.0);
        metrics::counter!(LINK_RECONNECTS, "switch" => sw.clone(), "link" => link.to_string())
            .absolute(0);
    }
    metrics::counter!(EVENTS_DELIVERED, "switch" => sw.clone()).absolute(0);
    metrics::counter!(CSTA_EVENTS_RECEIVED, "switch" => sw.clone()).absolute(0);
    metrics::counter!(CSTA_DECODE_ERRORS, "switch" => sw.clone()).absolute(0);
    metrics::counter!(CSTA_LATE_ANSWERS, "switch" => sw.clone()).absolute(0);
    metrics::gauge!(CSTA_IN_FLIGHT, "switch" => sw.clone()).set(0.0);
    for state in INVOKE_ID_STATES {
        metrics::gauge!(INVOKE_IDS_RESERVED, "switch" => sw.clone(), "state" => state).set(0.0);
    }
    metrics::gauge!(LINK_QUEUE_FRAMES, "switch" => sw.clone()).set(0.0);
    metrics::counter!(LINK_READ_PAUSES, "switch" => sw.clone()).absolute(0);
    metrics::gauge!(REGISTERED_DNS, "switch" => sw.clone()).set(0.0);
    metrics::gauge!(HOTDESK_ASSOCIATIONS, "switch" => sw.clone()).set(0.0);
    metrics::gauge!(ACTIVE_CALLS, "switch" => sw.clone()).set(0.0);
    metrics::counter!(CALLS_EVICTED, "switch" => sw.clone()).absolute(0);
    metrics::gauge!(EXTENSION_ACTORS, "switch" => sw.clone()).set(0.0);
}

/// Count an `EventError` (called where every one is built).
pub fn error_sent(switch: Option<&str>, code: ErrorCode) {
    let switch = switch.map(str::to_owned).unwrap_or_default();
    metrics::counter!(ERRORS, "switch" => switch, "code" => code.code().to_string()).increment(1);
}

/// Count a `RequestOpen` with `resume` (`result`: one of [`RESUME_RESULTS`]).
pub fn session_resume(result: &'static str) {
    metrics::counter!(SESSION_RESUMES, "result" => result).increment(1);
}

/// Count events replayed to a resumed session.
pub fn events_replayed(n: usize) {
    metrics::counter!(EVENTS_REPLAYED).increment(n as u64);
}

/// Count a reload (`result`: one of [`RELOAD_RESULTS`]) and, when applied, set the
/// generation.
pub fn config_reload(result: &'static str, generation: u64) {
    metrics::counter!(CONFIG_RELOADS, "result" => result).increment(1);
    metrics::gauge!(CONFIG_GENERATION).set(generation as f64);
    let ok = if result == "ok" { 1.0 } else { 0.0 };
    metrics::gauge!(CONFIG_LAST_RELOAD_OK).set(ok);
}

/// Set the number of lingering sessions.
pub fn sessions_lingering(n: usize) {
    metrics::gauge!(SESSIONS_LINGERING).set(n as f64);
}

/// Count a client disconnect.
pub fn client_disconnected(reason: &'static str) {
    metrics::counter!(CLIENT_DISCONNECTS, "reason" => reason).increment(1);
}

/// Handles for a switch's per-event counters, created once.
#[derive(Debug, Clone)]
pub struct SwitchMetrics {
    /// Event copies queued to clients.
    pub events_delivered: Counter,
    /// Private events, in the order of [`Service::ALL`] (the service whose change each
    /// reports).
    private_events: Vec<Counter>,
    /// Call events, in the order of [`CallEventName::ALL`].
    call_events: Vec<Counter>,
    /// Registered DNs.
    pub registered_dns: Gauge,
    /// Extension actors.
    pub extension_actors: Gauge,
    /// Hot-desk associations.
    pub hotdesk_associations: Gauge,
    /// Active calls.
    pub active_calls: Gauge,
    /// Calls evicted over a limit.
    pub calls_evicted: Counter,
    /// Private-service outcomes: for each of [`Service::ALL`], "ok" then each of
    /// [`ErrorCode::ALL`] (a registry lookup per request showed in profiles).
    private_service: Vec<Counter>,
    /// Association latency, in the order of [`Service::ALL`] (for the hot-desk services).
    association: Vec<Option<Histogram>>,
}

impl SwitchMetrics {
    /// Handles for `switch`.
    pub fn new(switch: &Arc<str>) -> SwitchMetrics {
        let sw = switch.clone();
        SwitchMetrics {
            events_delivered: metrics::counter!(EVENTS_DELIVERED, "switch" => sw.clone()),
            private_events: Service::ALL
                .iter()
                .map(|s| metrics::counter!(PRIVATE_EVENTS, "switch" => sw.clone(), "event" => s.event_label()))
                .collect(),
            call_events: CallEventName::ALL
                .iter()
                .map(|e| metrics::counter!(CALL_EVENTS, "switch" => sw.clone(), "event" => e.label()))
                .collect(),
            registered_dns: metrics::gauge!(REGISTERED_DNS, "switch" => sw.clone()),
            extension_actors: metrics::gauge!(EXTENSION_ACTORS, "switch" => sw.clone()),
            hotdesk_associations: metrics::gauge!(HOTDESK_ASSOCIATIONS, "switch" => sw.clone()),
            active_calls: metrics::gauge!(ACTIVE_CALLS, "switch" => sw.clone()),
            calls_evicted: metrics::counter!(CALLS_EVICTED, "switch" => sw.clone()),
            private_service: Service::ALL
                .iter()
                .flat_map(|service| {
                    let sw = sw.clone();
                    std::iter::once("ok".to_owned())
                        .chain(ErrorCode::ALL.iter().map(|c| c.code().to_string()))
                        .map(move |result| metrics::counter!(PRIVATE_SERVICE_REQUESTS, "switch" => sw.clone(), "service" => service.label(), "result" => result))
                })
                .collect(),
            association: Service::ALL
                .iter()
                .map(|s| {
                    s.latency_operation().map(|op| metrics::histogram!(ASSOCIATION_LATENCY, "switch" => sw.clone(), "operation" => op))
                })
                .collect(),
        }
    }

    /// Count a private-service request's outcome (`None`: ok).
    pub fn private_service(&self, service: Service, result: Option<ErrorCode>) {
        let Some(s) = Service::ALL.iter().position(|p| *p == service) else {
            return;
        };
        let r = match result {
            None => 0,
            Some(code) => match ErrorCode::ALL.iter().position(|c| *c == code) {
                Some(i) => i + 1,
                None => return,
            },
        };
        if let Some(c) = self.private_service.get(s * (ErrorCode::ALL.len() + 1) + r) {
            c.increment(1);
        }
    }

    /// Record a hot-desk request's latency (other services have none).
    pub fn association_latency(&self, service: Service, elapsed: Duration) {
        let at = Service::ALL.iter().position(|p| *p == service);
        if let Some(Some(h)) = at.and_then(|i| self.association.get(i)) {
            h.record(elapsed.as_secs_f64());
        }
    }

    /// Count a call event made for the clients of a DN.
    pub fn call_event(&self, event: CallEventName) {
        let at = CallEventName::ALL.iter().position(|e| *e == event);
        if let Some(c) = at.and_then(|i| self.call_events.get(i)) {
            c.increment(1);
        }
    }

    /// Count a private event from the switch: the change `service` makes (hot-desk
    /// established or cancelled, an account code set).
    pub fn private_event(&self, service: Service) {
        let at = Service::ALL.iter().position(|p| *p == service);
        if let Some(c) = at.and_then(|i| self.private_events.get(i)) {
            c.increment(1);
        }
    }
}

/// Handles for one link's series, created once by the link actor, which exports its
/// session's counters to them.
#[derive(Debug, Clone)]
pub struct LinkMetrics {
    /// Requests in flight (per switch).
    pub in_flight: Gauge,
    /// Decode errors.
    pub decode_errors: Counter,
    /// Late answers.
    pub late_answers: Counter,
    /// Reconnects of this link.
    pub reconnects: Counter,
    /// CSTA events received.
    pub events_received: Counter,
    /// Keep-alive misses.
    pub keepalive_misses: Counter,
    /// Framing resets.
    pub framing_resets: Counter,
    /// Invoke IDs awaiting an answer in time (per switch).
    pub invoke_ids_in_flight: Gauge,
    /// Invoke IDs held by timed-out, unanswered requests (per switch).
    pub invoke_ids_expired: Gauge,
    /// Frames between the link and the router shard (per switch).
    pub link_queue_frames: Gauge,
    /// Times the link stopped reading for the router shard (per switch).
    pub read_pauses: Counter,
    /// Frames handled with a warning (per switch).
    pub warnings: Counter,
    /// Round trips, in the order of [`CSTA_REQUESTS`].
    roundtrip: Vec<Histogram>,
    switch: Arc<str>,
}

impl LinkMetrics {
    /// Handles for link `link` of `switch`.
    pub fn new(switch: &Arc<str>, link: usize) -> LinkMetrics {
        let sw = switch.clone();
        LinkMetrics {
            in_flight: metrics::gauge!(CSTA_IN_FLIGHT, "switch" => sw.clone()),
            decode_errors: metrics::counter!(CSTA_DECODE_ERRORS, "switch" => sw.clone()),
            late_answers: metrics::counter!(CSTA_LATE_ANSWERS, "switch" => sw.clone()),
            reconnects: metrics::counter!(LINK_RECONNECTS, "switch" => sw.clone(), "link" => link.to_string()),
            events_received: metrics::counter!(CSTA_EVENTS_RECEIVED, "switch" => sw.clone()),
            keepalive_misses: metrics::counter!(KEEPALIVE_MISSES, "switch" => sw.clone()),
            framing_resets: metrics::counter!(FRAMING_RESETS, "switch" => sw.clone()),
            invoke_ids_in_flight: metrics::gauge!(INVOKE_IDS_RESERVED, "switch" => sw.clone(), "state" => INVOKE_ID_STATES[0]),
            invoke_ids_expired: metrics::gauge!(INVOKE_IDS_RESERVED, "switch" => sw.clone(), "state" => INVOKE_ID_STATES[1]),
            link_queue_frames: metrics::gauge!(LINK_QUEUE_FRAMES, "switch" => sw.clone()),
            read_pauses: metrics::counter!(LINK_READ_PAUSES, "switch" => sw.clone()),
            warnings: metrics::counter!(LINK_WARNINGS, "switch" => sw.clone(), "kind" => WARNING_EMPTY_SYSTEM_STATUS),
            roundtrip: CSTA_REQUESTS
                .iter()
                .map(|r| metrics::histogram!(CSTA_ROUNDTRIP, "switch" => sw.clone(), "request" => *r))
                .collect(),
            switch: sw,
        }
    }

    /// Record a request's round trip (`request`: its [`csta_request_label`]).
    pub fn roundtrip(&self, request: &'static str, elapsed: Duration) {
        if let Some(h) = CSTA_REQUESTS
            .iter()
            .position(|r| *r == request)
            .and_then(|i| self.roundtrip.get(i))
        {
            h.record(elapsed.as_secs_f64());
            return;
        }
        metrics::histogram!(CSTA_ROUNDTRIP, "switch" => self.switch.clone(), "request" => request)
            .record(elapsed.as_secs_f64());
    }
}

/// Show every session-failure reason of `switch` at 0 (a switch with
/// `application-session = true`), so that a dashboard sees the series before the first one.
pub fn session_failures_init(switch: &Arc<str>) {
    let reasons = crate::csta::appsession::DEFINED_ERRORS
        .into_iter()
        .chain(["other", "timeout"]);
    for reason in reasons {
        metrics::counter!(LINK_SESSION_FAILURES, "switch" => switch.clone(), "reason" => reason)
            .absolute(0);
    }
}

/// Count a session failure of `switch` (`reason`: a standard `definedError`, `other` or
/// `timeout`).
pub fn session_failure(switch: &Arc<str>, reason: &'static str) {
    metrics::counter!(LINK_SESSION_FAILURES, "switch" => switch.clone(), "reason" => reason)
        .increment(1);
}

/// Set a link's `link_up` gauge.
pub fn link_up(switch: &Arc<str>, link: usize, up: bool) {
    metrics::gauge!(LINK_UP, "switch" => switch.clone(), "link" => link.to_string()).set(if up {
        1.0
    } else {
        0.0
    });
}

/// Set a link's `link_connected` gauge.
pub fn link_connected(switch: &Arc<str>, link: usize, up: bool) {
    metrics::gauge!(LINK_CONNECTED, "switch" => switch.clone(), "link" => link.to_string())
        .set(if up { 1.0 } else { 0.0 });
}

/// Count a failover.
pub fn failover(switch: &Arc<str>) {
    metrics::counter!(LINK_FAILOVERS, "switch" => switch.clone()).increment(1);
}

/// The gauges read at scrape time: counts of what the router holds anyway.
#[derive(Debug)]
pub struct Gauges<'a> {
    /// Clients open.
    pub clients: usize,
    /// Each switch's counts.
    pub switches: Vec<SwitchGauges<'a>>,
}

/// A switch's scrape-time gauges.
#[derive(Debug)]
pub struct SwitchGauges<'a> {
    /// The switch's metric handles.
    pub metrics: &'a SwitchMetrics,
    /// Calls tracked.
    pub active_calls: usize,
    /// Hot-desk associations known.
    pub associations: usize,
    /// Extension actors alive.
    pub extension_actors: usize,
    /// DNs with at least one client registered.
    pub registered_dns: usize,
}

/// The text exposition, after setting the scrape-time gauges.
pub fn render(gauges: &Gauges<'_>) -> String {
    metrics::gauge!(CLIENTS_CONNECTED).set(gauges.clients as f64);
    for s in &gauges.switches {
        s.metrics.active_calls.set(s.active_calls as f64);
        s.metrics.hotdesk_associations.set(s.associations as f64);
        s.metrics.extension_actors.set(s.extension_actors as f64);
        s.metrics.registered_dns.set(s.registered_dns as f64);
    }
    match HANDLE.get() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_described_once() {
        let mut names: Vec<&str> = DESCRIPTIONS
            .iter()
            .chain(&cluster::CLUSTER_DESCRIPTIONS)
            .map(|(n, _, _)| *n)
            .collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all, "a metric described twice");
        assert!(DESCRIPTIONS.iter().all(|(_, _, help)| help.len() > 20));
        let cluster: Vec<&str> = cluster::CLUSTER_DESCRIPTIONS
            .iter()
            .map(|(n, _, _)| *n)
            .collect();
        assert_eq!(
            cluster, CLUSTER_METRICS,
            "every cluster metric described, in order"
        );
    }

    #[test]
    fn buckets_end_at_the_request_timeout() {
        let b = buckets(Duration::from_secs(4));
        assert_eq!(b.first(), Some(&0.001));
        assert_eq!(b.last(), Some(&4.0));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        let b = buckets(Duration::from_millis(800));
        assert_eq!(b.last(), Some(&0.8));
    }
}
