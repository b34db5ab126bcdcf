//! The CSTA side of the simulator: one accept loop per link, and per connection a reader task
//! (frames in, requests processed) and a writer task (frames out, from an unbounded queue).

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::state::{ConnId, Decision, Out};
use super::Switch;
use crate::csta::{CstaCodec, CstaError, DecodeError, Frame, Message};

/// Accept connections on one link until the switch shuts down.
pub(crate) async fn accept_loop(switch: Arc<Switch>, link: usize, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = switch.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::debug!(switch = %switch.name, link, %peer, "link connection accepted");
                tokio::spawn(run_connection(switch.clone(), link, stream));
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

/// Serve one connection until either side closes it.
async fn run_connection(switch: Arc<Switch>, link: usize, stream: TcpStream) {
    // Answers go out at once, as a switch's do: no Nagle delay against the peer's delayed ACK.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = switch.shutdown.child_token();
    let Some(id) = switch.lock().add_conn(link, tx, cancel.clone()) else {
        tracing::debug!(switch = %switch.name, link, "link is down: connection refused");
        return;
    };
    let writer = tokio::spawn(write_loop(write, rx, cancel.clone()));
    let mut frames = FramedRead::new(read, CstaCodec);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
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

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut rx: UnboundedReceiver<Out>,
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
        if let Err(e) = write.write_all(&buf).await {
            tracing::debug!("link write failed: {e}");
            cancel.cancel();
            break;
        }
    }
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
    let decision = switch.lock().receive(link, msg.name());
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
            let switch = switch.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = switch.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => switch.lock().answer(conn, invoke, msg, reject),
                }
            });
        }
    }
}
