//! The simulator's HTTP control API (actix-web): act like a phone (calls, account codes,
//! hot-desking from the set) or like a faulty switch (stall, delay, reject, drop, garbage).
//!
//! Bodies and replies are JSON with camelCase keys; an empty body counts as `{}`. Every POST
//! must say `Content-Type: application/json` (else 415), so that no web page a browser
//! visits can drive the switch with a cross-site form or `text/plain` request. Errors are
//! HTTP 4xx with `{"error": "<sentence>", "csta": "<category>/<value>"}` (`csta` only when the
//! refusal is one the switch would also give on a link).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::{ServerHandle, Service};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::{ready, Either, FutureExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::ResetMode;
use super::state::{Garbage, SimError, ERROR_CATEGORIES};
use super::Switch;
use crate::csta::{CstaError, HotDeskAction, HotDeskRequest};

/// Bind the control API and spawn it on the current runtime; returns the bound address and the
/// handle that stops it.
pub(crate) fn start(
    switch: Arc<Switch>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let data = web::Data::from(switch.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap_fn(|req, srv| {
                if req.method() == Method::POST && !is_json(req.headers()) {
                    let refusal = respond(Err(SimError::http(
                        415,
                        "a POST to the control API needs the header \"Content-Type: application/json\" (a browser form cannot send it, so no web page can drive the switch)",
                    )));
                    Either::Left(ready(Ok(req.into_response(refusal).map_into_right_body())))
                } else {
                    Either::Right(srv.call(req).map(|r| r.map(|r| r.map_into_left_body())))
                }
            })
            .configure(routes)
    })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("the control API bound no address"))?;
    let server = server.run();
    let handle = server.handle();
    let name = switch.name.clone();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(switch = %name, "control API stopped: {e}");
        }
    });
    Ok((bound, handle))
}

/// Whether the request says its body is JSON (`application/json`, any parameters). Requiring
/// it on every POST keeps web pages out: a cross-site form or `fetch` without CORS can only
/// send `text/plain`, form or multipart bodies.
fn is_json(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/state", web::get().to(get_state))
        .route("/calls", web::post().to(post_call))
        .route("/calls/burst", web::post().to(call_burst))
        .route("/calls/{call_id}/{action}", web::post().to(call_action))
        .route("/hotdesk", web::post().to(hotdesk))
        .route("/hotdesk/cancel", web::post().to(hotdesk_cancel))
        .route("/burst", web::post().to(burst))
        .route("/faults/{fault}", web::post().to(fault))
        .route("/session", web::post().to(session))
        .route("/system-status", web::post().to(system_status))
        .default_service(web::to(not_found));
}

type Reply = Result<Value, SimError>;

fn respond(reply: Reply) -> HttpResponse {
    match reply {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut body = json!({ "error": e.message });
            if e.from_switch {
                body["csta"] = Value::String(e.csta.to_string());
            }
            HttpResponse::build(status).json(body)
        }
    }
}

/// Read a JSON body; empty counts as `{}`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, SimError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        SimError::bad_request(format!(
            "the request body is not what this endpoint takes: {e}"
        ))
    })
}

async fn not_found() -> HttpResponse {
    respond(Err(SimError::http(
        404,
        "no such endpoint; see the README's pbx-sim control API section",
    )))
}

async fn get_state(sw: web::Data<Switch>) -> HttpResponse {
    HttpResponse::Ok().json(sw.lock().state_json())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewCall {
    from: String,
    to: String,
    call_id: Option<String>,
    answer: Option<bool>,
}

async fn post_call(sw: web::Data<Switch>, body: web::Bytes) -> HttpResponse {
    respond((|| {
        let b: NewCall = parse(&body)?;
        let mut st = sw.lock();
        let id = st.call_new(&b.from, &b.to, b.call_id, b.answer.unwrap_or(true))?;
        Ok(st.call_json(&id))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBurstBody {
    from: String,
    to: String,
    count: u64,
}

/// The most calls one `POST /calls/burst` makes.
const MAX_CALL_BURST: u64 = 1_000_000;

/// Calls made per hold of the switch's lock in a call burst: the links' writers and the other
/// endpoints get their turn between chunks.
const CALL_BURST_CHUNK: u64 = 256;

/// `count` answered calls from `from` to `to`, each with a fresh call ID, none cleared: a call
/// storm (ServiceInitiated and Originated at `from`, Delivered and Established at both) for
/// load tests, made as fast as the slowest link reads. Replies with the count and the first and
/// last call IDs.
async fn call_burst(sw: web::Data<Switch>, body: web::Bytes) -> HttpResponse {
    let b: CallBurstBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return respond(Err(e)),
    };
    if b.count > MAX_CALL_BURST {
        return respond(Err(SimError::bad_request(format!(
            "at most {MAX_CALL_BURST} calls per burst"
        ))));
    }
    let mut made = 0;
    let mut first = None;
    let mut last = Value::Null;
    while made < b.count {
        // Paced by the slowest link, like `/burst`: a chunk never overfills a link's queue.
        sw.wait_for_room().await;
        let n = CALL_BURST_CHUNK.min(b.count - made);
        match sw.lock().call_burst(&b.from, &b.to, n) {
            Ok((f, l)) => {
                first.get_or_insert(f);
                last = Value::String(l);
            }
            Err(e) => return respond(Err(e)),
        }
        made += n;
    }
    respond(Ok(json!({ "calls": made, "first": first, "last": last })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallBody {
    device: Option<String>,
    from: Option<String>,
    to: Option<String>,
    code: Option<String>,
    /// Transfer only: the staying parties get a new call ID (`true`: one the switch picks, a
    /// string: that one), as OpenScape Voice does.
    new_call_id: Option<Value>,
}

/// `newCallId` of a transfer: `None` keeps the call ID, `Some(None)` asks for a new one the
/// switch picks, `Some(Some(id))` for that one.
fn new_call_id(value: Option<Value>) -> Result<Option<Option<String>>, SimError> {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(None)),
        Some(Value::String(id)) => Ok(Some(Some(id))),
        Some(_) => Err(SimError::bad_request(
            "\"newCallId\" must be true, false or a call ID",
        )),
    }
}

fn need(value: Option<String>, name: &str) -> Result<String, SimError> {
    value.ok_or_else(|| SimError::bad_request(format!("the body needs \"{name}\"")))
}

async fn call_action(
    sw: web::Data<Switch>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (call_id, action) = path.into_inner();
    respond((|| {
        let b: CallBody = parse(&body)?;
        let mut st = sw.lock();
        let mut now_id = call_id.clone();
        match action.as_str() {
            "answer" => st.call_answer(&call_id, b.device.as_deref())?,
            "transfer" if b.new_call_id.is_some() => {
                let (from, to) = (need(b.from, "from")?, need(b.to, "to")?);
                match new_call_id(b.new_call_id)? {
                    None => st.call_transfer(&call_id, &from, &to)?,
                    Some(new) => now_id = st.call_transfer_new_id(&call_id, &from, &to, new)?,
                }
            }
            "hold" => st.call_hold(&call_id, &need(b.device, "device")?, true)?,
            "retrieve" => st.call_hold(&call_id, &need(b.device, "device")?, false)?,
            "transfer" => st.call_transfer(&call_id, &need(b.from, "from")?, &need(b.to, "to")?)?,
            "divert" => st.call_divert(&call_id, &need(b.from, "from")?, &need(b.to, "to")?)?,
            "clear" => st.call_clear(&call_id, b.device.as_deref())?,
            "account-code" => {
                let device = need(b.device, "device")?;
                let code = need(b.code, "code")?;
                st.set_account_code(&call_id, &device, &code)?;
                st.emit_account_code(&call_id, &device, &code);
            }
            other => {
                return Err(SimError::http(
                    404,
                    format!(
                        "{other:?} is not a call action (answer, hold, retrieve, transfer, divert, clear, account-code)"
                    ),
                ))
            }
        }
        Ok(st.call_json(&now_id))
    })())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HotDeskBody {
    guest: String,
    host: Option<String>,
}

fn hotdesk_reply(sw: &Switch, guest: String, action: HotDeskAction) -> Reply {
    let mut st = sw.lock();
    let event = st.hotdesk(&HotDeskRequest { guest, action })?;
    st.emit_hotdesk(&event);
    Ok(json!({ "guest": event.guest, "host": event.host }))
}

async fn hotdesk(sw: web::Data<Switch>, body: web::Bytes) -> HttpResponse {
    respond((|| {
        let b: HotDeskBody = parse(&body)?;
        let host = need(b.host, "host")?;
        hotdesk_reply(&sw, b.guest, HotDeskAction::Associate { host })
    })())
}

async fn hotdesk_cancel(sw: web::Data<Switch>, body: web::Bytes) -> HttpResponse {
    respond((|| {
        let b: HotDeskBody = parse(&body)?;
        hotdesk_reply(&sw, b.guest, HotDeskAction::Cancel)
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstBody {
    guest: String,
    host: String,
    #[serde(default = "one")]
    pairs: u64,
    #[serde(default = "one")]
    count: u64,
    /// Also a call from the guest to the host after each associate + cancel, answered and
    /// cleared (call events for the call-event benchmark).
    #[serde(default)]
    calls: bool,
}

fn one() -> u64 {
    1
}

/// `count` rounds of hot-desk associate + cancel from the phone, on `pairs` consecutive
/// guest/host pairs starting at `guest`/`host` (numbers incremented, width kept): a burst of
/// events for load and slow-consumer tests, generated inside the switch as fast as the links
/// read them (each step waits for room in every link's queue: [`Switch::wait_for_room`]).
/// With `calls`, each pair's round also has a call from the guest to the host, answered and
/// cleared.
async fn burst(sw: web::Data<Switch>, body: web::Bytes) -> HttpResponse {
    let pairs = (|| {
        let b: BurstBody = parse(&body)?;
        let nth = |base: &str, i: u64| -> Result<String, SimError> {
            let n: u64 = base
                .parse()
                .map_err(|_| SimError::bad_request(format!("{base:?} is not a number")))?;
            Ok(format!("{:0width$}", n + i, width = base.len()))
        };
        if b.pairs.saturating_mul(b.count) > 1_000_000 {
            return Err(SimError::bad_request("at most 1,000,000 rounds per burst"));
        }
        let pairs: Vec<(String, String)> = (0..b.pairs)
            .map(|i| Ok((nth(&b.guest, i)?, nth(&b.host, i)?)))
            .collect::<Result<_, SimError>>()?;
        Ok((pairs, b.count, b.calls))
    })();
    let (pairs, count, calls) = match pairs {
        Ok(p) => p,
        Err(e) => return respond(Err(e)),
    };
    let (mut events, mut made_calls) = (0u64, 0u64);
    for _ in 0..count {
        for (guest, host) in &pairs {
            for action in [
                HotDeskAction::Associate { host: host.clone() },
                HotDeskAction::Cancel,
            ] {
                sw.wait_for_room().await;
                let mut st = sw.lock();
                let event = match st.hotdesk(&HotDeskRequest {
                    guest: guest.clone(),
                    action,
                }) {
                    Ok(event) => event,
                    Err(e) => return respond(Err(e)),
                };
                st.emit_hotdesk(&event);
                events += 1;
            }
            if calls {
                sw.wait_for_room().await;
                let mut st = sw.lock();
                let made = st
                    .call_new(guest, host, None, true)
                    .and_then(|id| st.call_clear(&id, None));
                if let Err(e) = made {
                    return respond(Err(e));
                }
                made_calls += 1;
            }
        }
    }
    respond(Ok(json!({ "hotdeskEvents": events, "calls": made_calls })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StallBody {
    on: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DelayBody {
    ms: Option<u64>,
    min_ms: Option<u64>,
    max_ms: Option<u64>,
    seed: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RejectBody {
    count: u64,
    category: Option<String>,
    value: Option<String>,
    request: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropBody {
    link: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    link: usize,
    up: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum GarbageKind {
    Frame,
    Xml,
    Truncated,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GarbageBody {
    kind: GarbageKind,
    link: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
}

/// XML element content must not be able to break the document: the values the control API
/// puts on the wire are restricted to a safe alphabet.
/// `POST /session`: the switch's ECMA-354 behaviour; every key optional, absent keys keep
/// their value.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionBody {
    /// The longest session granted, seconds (at least 1).
    grant_max_s: Option<u32>,
    /// Refuse CSTA requests outside a session.
    required: Option<bool>,
    /// Refuse the next StartApplicationSession with this definedError ("" clears it).
    reject_next_start: Option<String>,
    /// Answer (and apply) timer resets this late (0: at once).
    reset_delay_ms: Option<u64>,
    /// Never answer nor apply timer resets (false: back to answering).
    ignore_resets: Option<bool>,
}

async fn session(sw: web::Data<Switch>, body: web::Bytes) -> HttpResponse {
    respond((|| {
        let b: SessionBody = parse(&body)?;
        let mut st = sw.lock();
        let s = &mut st.sessions;
        if let Some(cap) = b.grant_max_s {
            if cap == 0 {
                return Err(SimError::bad_request("grantMaxS must be at least 1"));
            }
            s.cap_s = cap;
        }
        if let Some(required) = b.required {
            s.required = required;
        }
        if let Some(e) = b.reject_next_start {
            if !e.is_empty() && !xml_safe(&e) {
                return Err(SimError::bad_request(
                    "the definedError must be letters, digits, '_', '-', '.' or ':'",
                ));
            }
            s.reject_next_start((!e.is_empty()).then_some(e));
        }
        if let Some(ms) = b.reset_delay_ms {
            s.resets = if ms == 0 {
                ResetMode::Answer
            } else {
                ResetMode::Delay(std::time::Duration::from_millis(ms))
            };
        }
        match b.ignore_resets {
            Some(true) => s.resets = ResetMode::Ignore,
            Some(false) if s.resets == ResetMode::Ignore => s.resets = ResetMode::Answer,
            _ => {}
        }
        Ok(json!({ "sessions": s.json() }))
    })())
}

/// `POST /system-status`: the switch tells every link connection its status with a
/// `SystemStatus` request on invoke 0000 (without `status`: a self-closing one, as some
/// peers send it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SystemStatusBody {
    status: Option<String>,
}

async fn system_status(sw: web::Data<Switch>, body: web::Bytes) -> HttpResponse {
    respond((|| {
        let b: SystemStatusBody = parse(&body)?;
        if b.status.as_deref().is_some_and(|s| !xml_safe(s)) {
            return Err(SimError::bad_request(
                "the status must be letters, digits, '_', '-', '.' or ':'",
            ));
        }
        let sent = sw.lock().tell_status(b.status);
        Ok(json!({ "sent": sent }))
    })())
}

fn xml_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

async fn fault(sw: web::Data<Switch>, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let fault = path.into_inner();
    respond((|| {
        let mut extra = json!({});
        match fault.as_str() {
            "stall" => {
                let b: StallBody = parse(&body)?;
                sw.lock().set_stall(b.on);
            }
            "delay" => {
                let b: DelayBody = parse(&body)?;
                match (b.ms, b.min_ms, b.max_ms) {
                    (Some(ms), None, None) if b.seed.is_none() => sw.lock().set_delay_fixed(ms),
                    (None, Some(min), Some(max)) if min <= max => {
                        sw.lock().set_delay_random(min, max, b.seed.unwrap_or(0))
                    }
                    _ => {
                        return Err(SimError::bad_request(
                            "give either {\"ms\": N} or {\"minMs\": A, \"maxMs\": B, \"seed\": S} with A <= B",
                        ))
                    }
                }
            }
            "reject" => {
                let b: RejectBody = parse(&body)?;
                let category = b.category.unwrap_or_else(|| "operation".to_owned());
                let value = b.value.unwrap_or_else(|| "generic".to_owned());
                if !ERROR_CATEGORIES.contains(&category.as_str()) {
                    return Err(SimError::bad_request(format!(
                        "{category:?} is not a CSTA error category (one of {})",
                        ERROR_CATEGORIES.join(", ")
                    )));
                }
                if !xml_safe(&value) {
                    return Err(SimError::bad_request(
                        "the error value must be letters, digits, '_', '-', '.' or ':'",
                    ));
                }
                sw.lock()
                    .set_reject(b.count, CstaError::new(category, value), b.request);
            }
            "drop" => {
                let b: DropBody = parse(&body)?;
                let n = sw.lock().drop_connections(b.link)?;
                extra = json!({ "dropped": n });
            }
            "link" => {
                let b: LinkBody = parse(&body)?;
                sw.lock().set_link(b.link, b.up)?;
            }
            "garbage" => {
                let b: GarbageBody = parse(&body)?;
                let kind = match b.kind {
                    GarbageKind::Frame => Garbage::Frame,
                    GarbageKind::Xml => Garbage::Xml,
                    GarbageKind::Truncated => Garbage::Truncated,
                };
                let n = sw.lock().garbage(kind, b.link)?;
                extra = json!({ "sent": n });
            }
            "status" => {
                let b: StatusBody = parse(&body)?;
                if !xml_safe(&b.status) {
                    return Err(SimError::bad_request(
                        "the status must be letters, digits, '_', '-', '.' or ':'",
                    ));
                }
                sw.lock().set_status(b.status);
            }
            "clear" => {
                let _: Value = parse(&body)?;
                sw.lock().clear_faults();
            }
            other => {
                return Err(SimError::http(
                    404,
                    format!(
                        "{other:?} is not a fault (stall, delay, reject, drop, link, garbage, status, clear)"
                    ),
                ))
            }
        }
        let mut reply = json!({ "faults": sw.lock().faults_json() });
        if let (Some(r), Some(e)) = (reply.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        Ok(reply)
    })())
}
