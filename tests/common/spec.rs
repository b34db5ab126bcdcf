//! Names the product contract (SPEC) fixes and several tests check the product against,
//! written once. A value the code defines is read from the code's constant instead.
#![allow(dead_code)]

/// SPEC section 7: every metric the router must export.
pub const METRICS: [&str; 17] = [
    "csta_router_private_service_requests_total",
    "csta_router_association_latency_seconds",
    "csta_router_errors_total",
    "csta_router_private_events_total",
    "csta_router_events_delivered_total",
    "csta_router_link_up",
    "csta_router_link_reconnects_total",
    "csta_router_csta_requests_in_flight",
    "csta_router_csta_roundtrip_seconds",
    "csta_router_csta_decode_errors_total",
    "csta_router_csta_late_answers_total",
    "csta_router_clients_connected",
    "csta_router_client_disconnects_total",
    "csta_router_registered_dns",
    "csta_router_hotdesk_associations",
    "csta_router_active_calls",
    "csta_router_extension_actors",
];

/// SPEC section 11: the metrics of resumable client sessions, which every router exports (with
/// or without a cluster).
pub const SESSION_METRICS: [&str; 3] = [
    "csta_router_sessions_lingering",
    "csta_router_session_resumes_total",
    "csta_router_events_replayed_total",
];

/// SPEC section 11: the `result` values of `csta_router_session_resumes_total`, each exported
/// at 0 from the start.
pub const RESUME_RESULTS: [&str; 4] = ["resumed", "gap", "unknown", "refused"];
