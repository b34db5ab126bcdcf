//! The CSTA side of the simulator: one accept loop per link, and per connection a reader task
//! (frames in, requests processed) and a writer task (frames out, from a queue bounded in
//! bytes: see [`super::state::CONN_QUEUE_BYTES`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::session::ResetMode;
use super::state::{ConnId, ConnTx, Decision, Out};
use super::Switch;
use crate::csta::{AppSession, CstaCodec, CstaError, DecodeError, Frame, InvokeId, Message};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How long a TLS client has to complete its handshake before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections on one link until the switch shuts down; with `tls`, each connection
/// is served once its TLS handshake (run in the connection's own task) succeeds.
pub(crate) async fn accept_loop(
    switch: Arc<Switch>,
    link: usize,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = switch.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::debug!(switch = %switch.name, link, %peer, "link connection accepted");
                // Answers go out at once, as a switch's do: no Nagle delay against the peer's
                // delayed ACK.
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let (read, write) = stream.into_split();
                        tokio::spawn(run_connection(switch.clone(), link, read, write));
                    }
                    Some(acceptor) => {
                        tokio::spawn(accept_tls(switch.clone(), link, acceptor.clone(), stream));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(switch = %switch.name, link, "accept failed: {e}");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(switch = %switch.name, link, "link listener closed");
}

/// The TLS handshake of one link connection, then serve it; a failed handshake (a client
/// that does not trust our certificate, or does not speak TLS) is logged and dropped.
async fn accept_tls(switch: Arc<Switch>, link: usize, acceptor: TlsAcceptor, stream: TcpStream) {
    let handshake = tokio::select! {
        _ = switch.shutdown.cancelled() => return,
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
    };
    match handshake {
        Ok(Ok(tls)) => {
            let (read, write) = tokio::io::split(tls);
            run_connection(switch, link, read, write).await;
        }
        Ok(Err(e)) => {
            tracing::info!(switch = %switch.name, link, "TLS handshake with a link client failed: {e}");
        }
        Err(_) => {
            tracing::info!(switch = %switch.name, link, "TLS handshake with a link client timed out");
        }
    }
}

/// Serve one connection until either side closes it.
async fn run_connection<R, W>(switch: Arc<Switch>, link: usize, read: R, write: W)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let (tx, queued) = ConnTx::new(tx);
    let cancel = switch.shutdown.child_token();
    let Some(id) = switch.lock().add_conn(link, tx, cancel.clone()) else {
        tracing::debug!(switch = %switch.name, link, "link is down: connection refused");
        return;
    };
    let writer = tokio::spawn(write_loop(write, rx, queued, cancel.clone()));
    let mut frames = FramedRead::new(read, CstaCodec);
    // How often an application session's timer is checked (the grants are whole seconds).
    let mut session_check = tokio::time::interval(Duration::from_millis(25));
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = session_check.tick() => {
                if switch.lock().sessions.expired(id, std::time::Instant::now()) {
                    tracing::info!(switch = %switch.name, link, "application session not reset in time: it is over, closing the link connection");
                    break;
                }
                continue;
            }
            next = frames.next() => next,
        };
        match next {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(switch = %switch.name, link, "closing link connection: {e}");
                break;
            }
            Some(Ok(frame)) => on_frame(&switch, id, link, frame),
        }
    }
    cancel.cancel();
    switch.lock().remove_conn(id);
    let _ = writer.await;
    tracing::debug!(switch = %switch.name, link, "link connection closed");
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut rx: UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
    cancel: CancellationToken,
) {
    loop {
        let out = tokio::select! {
            _ = cancel.cancelled() => break,
            out = rx.recv() => out,
        };
        let Some(first) = out else { break };
        // Write everything already queued in one go.
        let mut buf: Vec<u8> = Vec::new();
        let mut next = Some(first);
        while let Some(out) = next {
            queued.fetch_sub(out.size(), Ordering::Relaxed);
            match out {
                Out::Raw(bytes) => buf.extend_from_slice(&bytes),
                Out::Frame(frame) => match frame.to_bytes() {
                    Ok(bytes) => buf.extend_from_slice(&bytes),
                    Err(e) => tracing::warn!("cannot write frame: {e}"),
                },
            }
            next = if buf.len() < 64 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        // The flush matters for TLS (records buffered in the session); a no-op for TCP.
        let written = match write.write_all(&buf).await {
            Ok(()) => write.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::debug!("link write failed: {e}");
            cancel.cancel();
            return;
        }
    }
    // Closed by us: end the stream properly (with TLS, a close_notify), as a switch does;
    // bounded, in case the peer stopped reading.
    let _ = tokio::time::timeout(Duration::from_secs(1), write.shutdown()).await;
}

/// An ECMA-354 request from a link: start, reset (subject to the reset fault) or stop.
fn on_session_request(switch: &Arc<Switch>, conn: ConnId, invoke: InvokeId, request: AppSession) {
    let now = std::time::Instant::now();
    let mut st = switch.lock();
    if !st.sessions.serves {
        let error = CstaError::new("operation", "generic");
        return st.reply(conn, invoke, &Message::Error(error));
    }
    let answer = match request {
        AppSession::Start { duration, .. } => st.sessions.start(conn, duration, now),
        AppSession::Stop { session_id } => st.sessions.stop(conn, &session_id),
        AppSession::Reset { session_id, .. } => match st.sessions.resets {
            ResetMode::Answer => st.sessions.reset(conn, &session_id, now),
            ResetMode::Ignore => return,
            ResetMode::Delay(delay) => {
                drop(st);
                return later(switch, delay, move |st| {
                    let answer = st
                        .sessions
                        .reset(conn, &session_id, std::time::Instant::now());
                    st.reply(conn, invoke, &Message::AppSession(answer));
                });
            }
        },
        // Responses and anything else a client has no business sending: ignored.
        _ => return,
    };
    st.reply(conn, invoke, &Message::AppSession(answer));
}

/// Handle one frame read from a link: decode, apply the fault modes, answer.
fn on_frame(switch: &Arc<Switch>, conn: ConnId, link: usize, frame: Frame) {
    let (msg, refusal) = match Message::decode(&frame.body, &switch.dialect) {
        Ok(msg) => (msg, None),
        // A well-formed AssociateData whose account code is empty or not in the dialect's
        // encoding: a switch answers that with an error rather than ignoring the request.
        Err(DecodeError::Missing {
            message: "AssociateData",
            missing: "accountCode",
        })
        | Err(DecodeError::Invalid {
            message: "AssociateData",
            field: "accountCode",
            ..
        }) => (
            Message::Other {
                name: "AssociateData".to_owned(),
            },
            Some(CstaError::new("operation", "invalidAccountCode")),
        ),
        Err(e) => {
            tracing::warn!(switch = %switch.name, link, invoke = %frame.invoke_id, "skipping a frame that does not decode: {e}");
            switch.lock().count_decode_error();
            return;
        }
    };
    tracing::trace!(switch = %switch.name, link, invoke = %frame.invoke_id, message = msg.name(), "received");
    if matches!(msg, Message::SystemStatusResponse) {
        // The client's answer to our greeting.
        return;
    }
    if let Message::AppSession(request) = msg {
        return on_session_request(switch, conn, frame.invoke_id, request);
    }
    let refused = switch.lock().sessions.gate(conn);
    if let Some(error) = refused {
        tracing::debug!(switch = %switch.name, link, "{} refused: no application session", msg.name());
        switch
            .lock()
            .reply(conn, frame.invoke_id, &Message::Error(error));
        return;
    }
    let decision = switch.lock().receive(link, conn, msg.name());
    let invoke = frame.invoke_id;
    match decision {
        Decision::Drop => {
            tracing::debug!(switch = %switch.name, link, %invoke, "stalled: {} not answered", msg.name());
        }
        Decision::Answer { delay, reject } if delay.is_zero() => {
            let reject = reject.or(refusal);
            switch.lock().answer(conn, invoke, msg, reject);
        }
        Decision::Answer { delay, reject } => {
            let reject = reject.or(refusal);
            later(switch, delay, move |st| {
                // A request whose link went away while it waited is not carried out (the
                // caller was told the switch may or may not have acted; this one did not), so
                // that tests can tell what state the switch is in.
                if st.has_conn(conn) {
                    st.answer(conn, invoke, msg, reject);
                }
            });
        }
    }
}

/// Do `f` on the switch's state after `delay` (a delayed answer), unless the simulator stops
/// first.
fn later(
    switch: &Arc<Switch>,
    delay: Duration,
    f: impl FnOnce(&mut super::SwitchState) + Send + 'static,
) {
    let switch = switch.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = switch.shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => f(&mut switch.lock()),
        }
    });
}
