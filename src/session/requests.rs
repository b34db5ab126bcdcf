//! What a session does with a client's text frames: `RequestOpen` (version, application name,
//! token), then the requests, answered here when they need no switch and handed to the router
//! shard of the DN's switch otherwise.

use super::gate::{Gate, AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW, AUTH_LOCKOUT};
use super::registry::{self, constant_time_eq, Record, Sessions};
use crate::audit::LogStr;
use crate::client::{ClientHandle, ClientInner, Connection, Entry, Resumed};
use crate::config::Access;
use crate::protocol::{
    self, CloseCause, ErrorCode, ProtocolError, RegisterMode, Request, Resume, SessionInfo,
    SharedText,
};
use crate::router::messages::{DnOp, ToDn};
use crate::router::Shared;
use crate::services;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// What to do after a client frame.
pub(super) enum Next {
    Continue,
    Close(u16, &'static str, CloseCause),
    /// Take the session being resumed over ([`State::try_attach`]).
    Resume,
    /// Look for the session to resume in the cluster (`cluster`).
    ResumeElsewhere,
}

/// A resume this node must look for in the cluster (`cluster`).
pub(super) struct Elsewhere {
    pub(super) reference_id: u64,
    /// The connection's own handle (authenticated: application and access set).
    pub(super) handle: ClientInner,
    pub(super) session_id: String,
    pub(super) last_event_seq: Vec<(String, u64)>,
}

/// A resumed session's queue, and what to write before anything from it.
pub(super) type Attached = (mpsc::Receiver<Entry>, Vec<Entry>);

/// A resume in progress: the session, and what the reply needs.
pub(super) struct Resuming {
    pub(super) reference_id: u64,
    pub(super) record: Arc<Record>,
    pub(super) generation: u64,
    pub(super) session_id: String,
    /// `lastEventSeq` by switch index.
    pub(super) last: Vec<u64>,
}

/// A session's view of its client: opened or not, what it registered, what it has in flight.
pub(super) struct State {
    pub(super) shared: Arc<Shared>,
    pub(super) gate: Arc<Gate>,
    pub(super) sessions: Arc<Sessions>,
    /// The client's handle once it has opened; before, the outbox waiting for `RequestOpen`.
    pub(super) client: Option<ClientHandle>,
    pub(super) pending: Option<ClientInner>,
    /// This connection, as pushers reach it.
    pub(super) conn: Arc<Connection>,
    /// The session once opened or resumed, and the generation of this connection in it.
    pub(super) record: Option<(Arc<Record>, u64)>,
    /// The session being resumed, until this connection holds its queue.
    pub(super) resuming: Option<Resuming>,
    /// A resume of a session this node does not hold, to be looked for in the cluster.
    pub(super) elsewhere: Option<Elsewhere>,
    /// The cluster node, once joined (none without a cluster).
    pub(super) node: Arc<std::sync::OnceLock<Arc<crate::cluster::node::Node>>>,
    /// The client sent `RequestClose`: the session ends with the connection.
    pub(super) closed: bool,
    pub(super) in_flight: usize,
    peer: Option<IpAddr>,
}

impl State {
    /// The state of a new connection `conn` whose outbox is `pending`.
    pub(super) fn new(
        shared: Arc<Shared>,
        gate: Arc<Gate>,
        (sessions, node): (
            Arc<Sessions>,
            Arc<std::sync::OnceLock<Arc<crate::cluster::node::Node>>>,
        ),
        (pending, conn): (ClientInner, Arc<Connection>),
        peer: Option<IpAddr>,
    ) -> State {
        State {
            shared,
            gate,
            sessions,
            client: None,
            pending: Some(pending),
            conn,
            record: None,
            resuming: None,
            elsewhere: None,
            node,
            closed: false,
            in_flight: 0,
            peer,
        }
    }

    /// The outbox this connection writes from: the session's once opened, its own before.
    pub(super) fn outbox(&self) -> Option<&ClientInner> {
        self.client.as_deref().or(self.pending.as_ref())
    }

    /// A text frame from the client.
    pub(super) fn on_text(&mut self, text: &str) -> Next {
        let parsed = protocol::parse_request(text);
        let Some(client) = self.client.clone() else {
            // Before RequestOpen only RequestOpen is accepted.
            return match parsed {
                Ok((
                    reference_id,
                    Request::Open {
                        protocol_version,
                        application,
                        token,
                        resume,
                    },
                )) => self.on_open(reference_id, protocol_version, &application, token, resume),
                _ => Next::Close(
                    1008,
                    "the first request must be RequestOpen",
                    CloseCause::ProtocolError,
                ),
            };
        };
        match parsed {
            Ok((reference_id, request)) => self.on_request(&client, reference_id, request),
            Err(e) => {
                client.answer_error(&e, None);
                Next::Continue
            }
        }
    }

    fn on_open(
        &mut self,
        reference_id: u64,
        protocol_version: u64,
        application: &str,
        token: Option<String>,
        resume: Resume,
    ) -> Next {
        let Some(mut handle) = self.pending.take() else {
            return Next::Close(1011, "internal error", CloseCause::ProtocolError);
        };
        if protocol_version != 1 {
            handle.answer_error(
                &ProtocolError::new(reference_id, ErrorCode::ProtoVers,
                    format!("Protocol version {protocol_version} is not supported; this router speaks version 1.")),
                None,
            );
            self.pending = Some(handle);
            return Next::Close(
                1002,
                "unsupported protocol version",
                CloseCause::ProtocolError,
            );
        }
        // The name goes into logs and audit lines: validated before anything logs it.
        if let Err(why) = protocol::check_application(application) {
            handle.answer_error(
                &ProtocolError::new(reference_id, ErrorCode::InvalidAttr, why),
                None,
            );
            self.pending = Some(handle);
            return Next::Close(1008, "invalid application name", CloseCause::ProtocolError);
        }
        // Audited under the configured application its token matched; with no applications
        // configured, under the name it gave.
        let name = match self.authenticate(application, token.as_deref()) {
            Ok(Some((name, access))) => {
                handle.access = access;
                name
            }
            Ok(None) => application.to_owned(),
            Err(next) => {
                self.pending = Some(handle);
                return next;
            }
        };
        handle.application = Arc::from(name.as_str());
        self.open_session(reference_id, handle, resume)
    }

    /// An authenticated `RequestOpen`: resume the session it names, or open a new one.
    fn open_session(&mut self, reference_id: u64, handle: ClientInner, resume: Resume) -> Next {
        let resumed = match resume {
            Resume::None => None,
            Resume::Malformed(why) => {
                handle.answer_error(
                    &ProtocolError::new(reference_id, ErrorCode::InvalidAttr, why),
                    None,
                );
                // Not opened: the client may send RequestOpen again.
                self.pending = Some(handle);
                return Next::Continue;
            }
            Resume::Session {
                session_id,
                last_event_seq,
            } => match self.sessions.resume(&session_id, &handle.application) {
                registry::Resumed::Refused => {
                    crate::metrics::session_resume("refused");
                    info!(application = %LogStr(&handle.application), peer = ?self.peer,
                        "resume refused: the session belongs to another application");
                    self.pending = Some(handle);
                    return Next::Close(1008, "authentication failed", CloseCause::Auth);
                }
                registry::Resumed::Attached(record, generation) => {
                    // The connection's own queue gives way to the session's.
                    drop(handle);
                    return self.on_resumed(
                        reference_id,
                        (record, generation),
                        &session_id,
                        &last_event_seq,
                    );
                }
                // Not held here: another node of the cluster may hold it.
                registry::Resumed::Unknown if self.clustered() => {
                    self.elsewhere = Some(Elsewhere {
                        reference_id,
                        handle,
                        session_id,
                        last_event_seq,
                    });
                    return Next::ResumeElsewhere;
                }
                registry::Resumed::Unknown => Some(()),
            },
        };
        self.open_new(reference_id, handle, resumed.is_some())
    }

    /// Open a new session (`resumed_false`: a resume found nothing to resume).
    pub(super) fn open_new(
        &mut self,
        reference_id: u64,
        handle: ClientInner,
        resumed_false: bool,
    ) -> Next {
        let resumed = resumed_false.then_some(());
        if resumed.is_some() {
            crate::metrics::session_resume("unknown");
        }
        let handle = ClientHandle::new(handle);
        let Some((record, session_id)) = self.sessions.open(handle.clone()) else {
            handle.answer_error(
                &ProtocolError::new(reference_id, ErrorCode::Internal,
                    "The router could not make a session id (the OS random source failed); retry in a moment."),
                None,
            );
            return Next::Close(1011, "internal error", CloseCause::ProtocolError);
        };
        info!(client = handle.id, application = %LogStr(&handle.application), "client opened");
        self.client = Some(handle.clone());
        self.publish_session(&record);
        self.record = Some((record, 1));
        // The client's first message is the reply to RequestOpen, with each link's state;
        // then come the link events of the changes after that reading, none missed and none
        // told twice (the hub makes the two one step).
        let resumed = resumed.map(|()| (false, 0, &[][..]));
        self.shared.hub.join(handle.clone(), || {
            for text in self.opening(reference_id, &session_id, resumed) {
                handle.answer(text);
            }
        });
        Next::Continue
    }

    /// `RequestOpen` resumes session `record`: this connection takes it over (the
    /// connection holding it, if any, is told to let go first: [`State::try_attach`]).
    fn on_resumed(
        &mut self,
        reference_id: u64,
        (record, generation): (Arc<Record>, u64),
        session_id: &str,
        last_event_seq: &[(String, u64)],
    ) -> Next {
        let last = self.last_by_switch(last_event_seq);
        self.resuming = Some(Resuming {
            reference_id,
            record,
            generation,
            session_id: session_id.to_owned(),
            last,
        });
        Next::Resume
    }

    /// `lastEventSeq` by switch index (a switch not named: 0).
    pub(super) fn last_by_switch(&self, last_event_seq: &[(String, u64)]) -> Vec<u64> {
        self.shared
            .switches
            .iter()
            .map(|s| {
                last_event_seq
                    .iter()
                    .find(|(name, _)| **name == *s.name)
                    .map_or(0, |(_, n)| *n)
            })
            .collect()
    }

    /// Attach this connection to the session being resumed: its queue, and what to write
    /// before anything from it (the reply, the link events, the notices of registrations
    /// dropped meanwhile, the kept events above the client's `lastEventSeq`). `Err` while
    /// another connection still holds the queue (it was told to let go: try again shortly),
    /// with that connection.
    pub(super) fn try_attach(&mut self) -> Result<Attached, Option<Arc<Connection>>> {
        let Some(r) = self.resuming.as_ref() else {
            return Err(None);
        };
        let client = r.record.client.clone();
        // The link states are read as the client joins the link events (one step).
        let last = &r.last;
        let resumed = self.shared.hub.join(client.clone(), || {
            client.resume(
                &self.conn,
                |switch| last.get(usize::from(switch)).copied().unwrap_or(0),
                |plan| {
                    let gap: Vec<&str> = plan
                        .gap
                        .iter()
                        .filter_map(|i| self.shared.switches.get(usize::from(*i)))
                        .map(|s| &*s.name)
                        .collect();
                    self.opening(
                        r.reference_id,
                        &r.session_id,
                        Some((true, plan.replayed, &gap)),
                    )
                },
            )
        });
        let (rx, first, plan) = match resumed {
            Resumed::Busy(older) => return Err(older),
            Resumed::Attached { rx, first, plan } => (rx, first, plan),
        };
        let Some(r) = self.resuming.take() else {
            return Err(None);
        };
        crate::metrics::session_resume(if plan.gap.is_empty() {
            "resumed"
        } else {
            "gap"
        });
        crate::metrics::events_replayed(plan.replayed);
        debug!(
            client = client.id,
            replayed = plan.replayed,
            "session resumed"
        );
        self.client = Some(client);
        self.record = Some((r.record, r.generation));
        Ok((rx, first))
    }

    /// The first messages of an opened session: `EventServerConnected`, then the state of
    /// each switch's link.
    fn opening(
        &self,
        reference_id: u64,
        session_id: &str,
        resumed: Option<(bool, usize, &[&str])>,
    ) -> Vec<SharedText> {
        let config = self.shared.config();
        let (options, linger) = (&config.options, config.server.session_linger.0);
        let mut out = Vec::with_capacity(1 + self.shared.switches.len());
        out.push(protocol::server_connected(
            reference_id,
            &self.shared.private_services(),
            &options.accode_name,
            &self.shared.views(),
            &SessionInfo {
                id: session_id,
                linger,
                resumed,
            },
        ));
        for s in self.shared.switches.iter() {
            if s.is_removed() {
                // A session resumed may have known the switch a reload removed meanwhile.
                if resumed.is_some() {
                    out.push(protocol::link_event(&s.name, false, None, Some("removed")));
                }
                continue;
            }
            let view = s.view();
            let link = view.link_up.then_some(view.active_link);
            out.push(protocol::link_event(&s.name, view.link_up, link, None));
        }
        out
    }

    /// Check the token when applications are configured: the matching application's name and
    /// access (`None` when none are configured), or the close that refuses the client.
    fn authenticate(
        &self,
        application: &str,
        token: Option<&str>,
    ) -> Result<Option<(String, Access)>, Next> {
        let apps = &self.shared.config().application;
        if apps.is_empty() {
            return Ok(None);
        }
        let found = token.and_then(|t| {
            apps.iter()
                .find(|a| constant_time_eq(a.token.as_bytes(), t.as_bytes()))
        });
        if let Some(app) = found {
            return Ok(Some((app.name.clone(), app.access)));
        }
        let locked = self.peer.is_some_and(|ip| self.gate.failed(ip));
        info!(
            application = %LogStr(application),
            peer = ?self.peer,
            "client refused: missing or wrong token"
        );
        if let (true, Some(ip)) = (locked, self.peer) {
            warn!(
                %ip,
                "more than {AUTH_FAILURE_LIMIT} failed authentications from {ip} within {AUTH_FAILURE_WINDOW:?}: its connections are refused for {AUTH_LOCKOUT:?}"
            );
        }
        Err(Next::Close(1008, "authentication failed", CloseCause::Auth))
    }

    fn on_request(&mut self, client: &ClientHandle, reference_id: u64, request: Request) -> Next {
        if self.over_limit(client, reference_id, &request) {
            return Next::Continue;
        }
        match request {
            Request::Open { .. } => {
                client.answer_error(
                    &ProtocolError::new(reference_id, ErrorCode::InvalidAttr,
                        "The connection is already open; RequestOpen is accepted once per connection."),
                    None,
                );
            }
            Request::QueryServer => {
                client.answer(protocol::server_info(reference_id, &self.shared.views()));
            }
            Request::Close => {
                client.answer(protocol::closed(reference_id));
                self.closed = true;
                return Next::Close(1000, "session closed", CloseCause::Closed);
            }
            Request::Register {
                dn,
                mode,
                call_events,
            } => {
                if mode == RegisterMode::Share && client.access == Access::Monitor {
                    client.answer_error(
                        &ProtocolError::new(reference_id, ErrorCode::InvalidAttr,
                            format!("Application {} has monitor access only; register {dn} with \"registerMode\": \"monitor\".", client.application)).dn(&dn),
                        None,
                    );
                    return Next::Continue;
                }
                self.forward(client, reference_id, dn, |c| DnOp::Register {
                    client: c,
                    reference_id,
                    mode,
                    call_events,
                });
            }
            Request::Unregister { dn } => {
                if let Some((record, _)) = &self.record {
                    record.registered().remove(&*dn);
                }
                self.forward(client, reference_id, dn, |c| DnOp::Unregister {
                    client: c,
                    reference_id: Some(reference_id),
                });
            }
            Request::QueryAddress { dn } => {
                self.forward(client, reference_id, dn, |c| DnOp::QueryAddress {
                    client: c,
                    reference_id,
                });
            }
            Request::PrivateService {
                dn,
                msg_id,
                conn_id,
                extensions,
            } => {
                let refused =
                    self.forward(client, reference_id, dn.clone(), |c| DnOp::PrivateService {
                        client: c,
                        reference_id,
                        msg_id,
                        conn_id,
                        extensions,
                    });
                if let Some(code) = refused {
                    audit_refusal(client, &dn, msg_id, code);
                }
            }
        }
        Next::Continue
    }

    /// Past `client-max-in-flight` requests in flight, a request (but `RequestQueryServer`
    /// and `RequestOpen`, answered here) gets 111 at once; `true` if this one did.
    fn over_limit(&self, client: &ClientHandle, reference_id: u64, request: &Request) -> bool {
        let limit = self.shared.config().server.client_max_in_flight;
        if self.in_flight < limit
            || matches!(
                request,
                Request::QueryServer | Request::Open { .. } | Request::Close
            )
        {
            return false;
        }
        let (dn, msg_id) = match request {
            Request::PrivateService { dn, msg_id, .. } => (Some(&**dn), Some(*msg_id)),
            Request::Register { dn, .. }
            | Request::Unregister { dn }
            | Request::QueryAddress { dn } => (Some(&**dn), None),
            _ => (None, None),
        };
        let switch = dn.and_then(|d| self.shared.switch_of(d));
        if let (Some(sw), Some(service)) = (switch, msg_id.and_then(services::Service::from_id)) {
            sw.metrics
                .private_service(service, Some(ErrorCode::TooManyReq));
        }
        if let (Some(dn), Some(msg_id)) = (dn, msg_id) {
            audit_refusal(client, dn, msg_id, ErrorCode::TooManyReq);
        }
        let mut e = ProtocolError::new(reference_id, ErrorCode::TooManyReq,
            format!("This client already has {limit} requests in flight; wait for replies before sending more."));
        if let Some(dn) = dn {
            e = e.dn(dn);
        }
        client.answer_error(&e, switch.map(|s| &*s.name));
        true
    }

    /// Hand a request to the router shard of the DN's switch; the error code sent back when
    /// the session refused it here.
    fn forward(
        &mut self,
        client: &ClientHandle,
        reference_id: u64,
        dn: Arc<str>,
        op: impl FnOnce(ClientHandle) -> DnOp,
    ) -> Option<ErrorCode> {
        let Some(switch) = self.shared.switch_of(&dn) else {
            client.answer_error(
                &ProtocolError::new(reference_id, ErrorCode::NotConfigured,
                    format!("{dn} is in no switch's DN plan; check the number or the router's configuration.")).dn(&dn),
                None,
            );
            return Some(ErrorCode::NotConfigured);
        };
        let Some(requests) = switch.requests() else {
            client.answer_error(
                &ProtocolError::new(
                    reference_id,
                    ErrorCode::Internal,
                    "The router is still starting; retry in a moment.",
                )
                .dn(&dn),
                None,
            );
            return Some(ErrorCode::Internal);
        };
        let op = op(client.clone());
        if let (DnOp::Register { call_events, .. }, Some((record, _))) = (&op, &self.record) {
            record
                .registered()
                .insert(dn.clone(), (switch.index, *call_events));
        }
        self.in_flight += 1;
        requests.do_send(ToDn { dn, op });
        None
    }
}

/// Release every DN session `record` registered: it ended.
pub(super) fn release_all(shared: &Shared, record: &Record) {
    let registered: Vec<(Arc<str>, usize)> = record
        .registered()
        .drain()
        .map(|(dn, (switch, _))| (dn, switch))
        .collect();
    for (dn, switch) in registered {
        if let Some(requests) = shared.switches.get(switch).and_then(|s| s.requests()) {
            requests.do_send(ToDn {
                dn,
                op: DnOp::Unregister {
                    client: record.client.clone(),
                    reference_id: None,
                },
            });
        }
    }
}

/// Audit a private-service request the session refused itself.
fn audit_refusal(client: &ClientHandle, dn: &str, msg_id: u64, code: ErrorCode) {
    crate::audit::private_service(
        &client.application,
        dn,
        &services::audit_name(msg_id),
        Some(code),
        Duration::ZERO,
    );
}
