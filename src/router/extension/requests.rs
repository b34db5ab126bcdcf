//! A DN's private-service requests: checked, queued, sent to the switch one at a time in the
//! order they arrived, and answered when the switch's answer comes back (through the ordering
//! stage, so the reply reaches the client before the event it caused).

use super::Extension;
use crate::client::ClientHandle;
use crate::config::Access;
use crate::csta::Message;
use crate::link::LinkError;
use crate::protocol::{ErrorCode, RegisterMode};
use crate::router::calls::{ConnId, DeviceCalls};
use crate::services::{self, AccountCodes, Params, Refusal, Service};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tracing::debug;

/// A request accepted by the router, waiting for its turn or for the switch's answer.
#[derive(Debug)]
pub(super) struct PendingRequest {
    client: ClientHandle,
    reference_id: u64,
    service: Service,
    message: Message,
    /// The host, for the reply to 1 and 2.
    other_dn: Option<String>,
    /// The call, for the reply to 501.
    conn_id: Option<String>,
    extensions: BTreeMap<String, String>,
    received: Instant,
}

/// The DN's requests: the one sent to the switch and those waiting behind it.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    queue: VecDeque<PendingRequest>,
    /// Boxed: most DNs never have a request in flight, and the actor should stay small.
    in_flight: Option<Box<(u64, PendingRequest)>>,
    next_tag: u64,
}

impl Pipeline {
    /// No request.
    pub(super) const fn new() -> Pipeline {
        Pipeline {
            queue: VecDeque::new(),
            in_flight: None,
            next_tag: 0,
        }
    }

    /// Whether no request is queued or in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }
}

/// A client's `RequestPrivateService`, as it reaches the DN's actor.
pub(super) struct Ask {
    pub(super) client: ClientHandle,
    pub(super) reference_id: u64,
    pub(super) msg_id: u64,
    pub(super) conn_id: Option<String>,
    pub(super) extensions: BTreeMap<String, String>,
}

/// Why a request failed: code, sentence, and `extensions` for the `EventError`.
type Failure = (ErrorCode, String, Option<Map<String, Value>>);

/// `extensions.CSTAError` for a switch rejection.
pub(super) fn csta_extension(e: &LinkError) -> Option<Map<String, Value>> {
    match e {
        LinkError::Rejected { error, .. } => {
            let mut m = Map::new();
            m.insert("CSTAError".into(), Value::from(error.to_string()));
            Some(m)
        }
        _ => None,
    }
}

impl Extension {
    /// A client asks for a private service on this DN: refuse it here, or queue it.
    pub(super) fn on_private_service(&mut self, ask: Ask) {
        let prepared = self
            .check_registered(&ask)
            .and_then(|()| self.prepare(&ask));
        let req = match prepared {
            Ok((service, message, other_dn, conn_id)) => PendingRequest {
                client: ask.client,
                reference_id: ask.reference_id,
                service,
                message,
                other_dn,
                conn_id,
                extensions: ask.extensions,
                received: Instant::now(),
            },
            Err(refusal) => return self.refuse(&ask, refusal),
        };
        if self.more().requests.is_idle() {
            // The usual case: nothing waiting, so the queue is not touched (a push would
            // allocate its buffer, about a kilobyte, for every request).
            self.send(req);
        } else {
            self.more_mut().requests.queue.push_back(req);
            self.next_request();
        }
    }

    /// A private service needs the DN registered by this client in share mode (41).
    fn check_registered(&self, ask: &Ask) -> Result<(), Refusal> {
        match self.subs.mode_of(&ask.client) {
            None => Err(Refusal::new(ErrorCode::NotRegistered, format!(
                "{} is not registered by this client; send RequestRegisterAddress with \"registerMode\": \"share\" first.", self.dn))),
            Some(mode) if mode == RegisterMode::Monitor || ask.client.access == Access::Monitor => {
                Err(Refusal::new(ErrorCode::NotRegistered, format!(
                    "{} is registered in monitor mode, which cannot request private services; register it in share mode.", self.dn)))
            }
            Some(_) => Ok(()),
        }
    }

    /// Check the request against the catalogue and this DN's state; the service, its CSTA
    /// request, and the host or call its reply names.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        ask: &Ask,
    ) -> Result<(Service, Message, Option<String>, Option<String>), Refusal> {
        let Some(service) = Service::from_id(ask.msg_id) else {
            return Err(Refusal::new(
                ErrorCode::UnsupOper,
                format!(
                    "Private service {} is not supported; this router offers {:?}.",
                    ask.msg_id,
                    self.env.shared.private_services()
                ),
            ));
        };
        let options = &self.env.shared.config().options;
        let account_codes = AccountCodes {
            enabled: options.accode_privateservice,
            name: &options.accode_name,
        };
        let params = services::read(service, &self.dn, &ask.extensions, account_codes)?;
        let (other_dn, call) = match &params {
            Params::Associate { host } => {
                self.check_host(host)?;
                (Some(host.clone()), None)
            }
            Params::Cancel => (
                self.more()
                    .state
                    .hotdesk()
                    .filter(|(g, _)| *g == &*self.dn)
                    .map(|(_, h)| h.to_owned()),
                None,
            ),
            Params::AccountCode { .. } => (None, Some(self.call_for(ask.conn_id.as_deref())?)),
        };
        let call_id = call.as_ref().map(|(id, _)| &**id);
        let message = services::request(&params, &self.dn, call_id, &self.env.switch.naming());
        Ok((service, message, other_dn, call.map(|(_, conn)| conn)))
    }

    /// The host of a hot-desk request must be a DN of this switch.
    fn check_host(&self, host: &str) -> Result<(), Refusal> {
        if self.env.switch.owns(host) {
            return Ok(());
        }
        Err(match self.env.shared.switch_of(host) {
            Some(other) => Refusal::new(ErrorCode::InvalidAttr, format!(
                "Host {host} is on switch {}, guest {} on switch {}; hot-desking needs both on the same switch.", other.name, self.dn, self.env.switch.name)),
            None => Refusal::new(ErrorCode::NotConfigured, format!(
                "Host {} is in no switch's DN plan; check the number.", crate::protocol::echo(host))),
        })
    }

    /// The call an account code goes to: `connId`, else the DN's most recent active call (56
    /// when there is none). Its switch call ID and connId.
    fn call_for(&self, conn_id: Option<&str>) -> Result<(std::sync::Arc<str>, String), Refusal> {
        let calls = self.more().state.calls.as_deref();
        let call = match conn_id {
            Some(cid) => ConnId::parse(cid)
                .and_then(|c| calls?.by_conn_id(c))
                .ok_or_else(|| {
                    Refusal::new(ErrorCode::InvConnId, format!(
                        "connId {} is not an active call of {}; query the address for its calls.", crate::protocol::echo(cid), self.dn))
                })?,
            None => calls.and_then(DeviceCalls::most_recent).ok_or_else(|| {
                Refusal::new(
                    ErrorCode::InvConnId,
                    format!("{} has no active call to set an account code on.", self.dn),
                )
            })?,
        };
        Ok((call.call_id.clone(), call.conn_id.to_string()))
    }

    /// Answer a request the router refuses itself, counted and audited like the switch's.
    fn refuse(&self, ask: &Ask, refusal: Refusal) {
        if let Some(service) = Service::from_id(ask.msg_id) {
            self.env
                .switch
                .metrics
                .private_service(service, Some(refusal.code));
        }
        crate::audit::private_service(
            &ask.client.application,
            &self.dn,
            &services::audit_name(ask.msg_id),
            Some(refusal.code),
            Duration::ZERO,
        );
        let e = self.error(ask.reference_id, refusal.code, refusal.message);
        ask.client
            .reply_error(&e, Some(&self.env.switch.name), None);
    }

    /// Send a request to the switch's active link; answer it at once if there is none.
    /// Returns whether it is now in flight.
    fn send(&mut self, req: PendingRequest) -> bool {
        let requests = &mut self.more_mut().requests;
        requests.next_tag += 1;
        let tag = requests.next_tag;
        // Straight to the active link; its answer (or failure) comes back as an `Answer`
        // through the shard, in frame order.
        if let Err(e) = self.route(req.message.clone(), tag) {
            self.finish(req, Err(e));
            return false;
        }
        self.more_mut().requests.in_flight = Some(Box::new((tag, req)));
        true
    }

    /// Send the next queued request if none is in flight.
    pub(super) fn next_request(&mut self) {
        while self.more().requests.in_flight.is_none() {
            let Some(more) = self.more.as_mut() else {
                return;
            };
            let queue = &mut more.requests.queue;
            let Some(req) = queue.pop_front() else {
                if queue.capacity() > 0 {
                    // A burst queued here is over: give its buffer back.
                    *queue = VecDeque::new();
                }
                return;
            };
            if self.send(req) {
                return;
            }
        }
    }

    /// The switch is no longer owned here: the request in flight (the switch may or may not
    /// have acted) and the queued ones are answered with 54.
    pub(super) fn fail_requests(&mut self) {
        let gone = || LinkError::LinkLost {
            switch: self.env.switch.name.clone(),
        };
        let Some(more) = self.more.as_mut() else {
            return;
        };
        let in_flight = more.requests.in_flight.take();
        let queued = std::mem::take(&mut more.requests.queue);
        if let Some(b) = in_flight {
            let (_, req) = *b;
            self.finish(req, Err(gone()));
        }
        for req in queued {
            let e = LinkError::NoSwitch {
                switch: self.env.switch.name.clone(),
            };
            self.finish(req, Err(e));
        }
    }

    /// The switch's answer to request `tag` (or why there is none).
    pub(super) fn on_answer(&mut self, tag: u64, result: Result<Message, LinkError>) {
        if self
            .more()
            .requests
            .in_flight
            .as_ref()
            .is_none_or(|b| b.0 != tag)
        {
            debug!(dn = %self.dn, tag, "answer for a request no longer in flight ignored");
            return;
        }
        if let Some(b) = self.more.as_mut().and_then(|m| m.requests.in_flight.take()) {
            let (_, req) = *b;
            self.finish(req, result);
        }
        self.next_request();
    }

    /// Answer a request: count it, audit it, reply.
    fn finish(&mut self, req: PendingRequest, result: Result<Message, LinkError>) {
        let elapsed = req.received.elapsed();
        let outcome: Result<(), Failure> = match &result {
            Ok(answer) if req.service.accepts(answer) => Ok(()),
            Ok(other) => Err((ErrorCode::UnknownError, format!(
                "Switch {} answered {} to a {} request; the switch may or may not have acted, so query {} before retrying.",
                self.env.switch.name, other.name(), req.service.label(), self.dn), None)),
            Err(e) => {
                let (code, message) = crate::errors::link_error(e, Some(req.service), &self.dn);
                Err((code, message, csta_extension(e)))
            }
        };
        let code = outcome.as_ref().err().map(|(code, _, _)| *code);
        self.env.switch.metrics.private_service(req.service, code);
        self.env
            .switch
            .metrics
            .association_latency(req.service, elapsed);
        crate::audit::private_service(
            &req.client.application,
            &self.dn,
            req.service.label(),
            code,
            elapsed,
        );
        let text = match outcome {
            Ok(()) => crate::protocol::private_info_reply(
                req.reference_id,
                req.service.id(),
                &self.dn,
                &self.env.switch.name,
                &req.extensions,
                req.other_dn.as_deref(),
                req.conn_id.as_deref(),
            ),
            Err((code, message, ext)) => {
                let e = self.error(req.reference_id, code, message);
                crate::client::error_text(&e, Some(&self.env.switch.name), ext.as_ref())
            }
        };
        self.emit(vec![req.client], text, true);
    }
}
