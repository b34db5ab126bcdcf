//! A client's connection below the WebSocket: its TCP socket, writes bounded in time, and the
//! end of a connection the router has finished with.
//!
//! Why a session reaches below actix-ws: a client that stops reading blocks the server's
//! writes, and then actix-web never polls the WebSocket's response body again, so neither a
//! close frame nor dropping the session ends the connection. Every connection the router
//! closes is really gone soon after: the close frame gets [`CLOSE_ATTEMPT`], then the TCP
//! connection is reset.

use actix_ws::{CloseCode, CloseReason, Message as WsMessage};
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// A client connection's TCP socket as the HTTP server holds it, registered when the
/// connection is accepted (`HttpServer::on_connect`) and kept in the connection's data for as
/// long as the server's dispatcher owns the socket.
///
/// Why: a client that stops reading blocks the server's writes, and then actix-web never
/// polls the WebSocket's response body again, so neither a close frame nor dropping the
/// session ends the connection (its dispatcher waits for the socket to become writable for
/// ever). A session resets such a connection from the outside through its [`TcpHandle`].
#[derive(Debug)]
pub struct ConnSocket {
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
}

impl ConnSocket {
    /// The socket of an accepted connection (`None` for a stream the router cannot reach).
    pub fn of(io: &dyn std::any::Any) -> Option<ConnSocket> {
        #[cfg(unix)]
        {
            use actix_web::rt::net::TcpStream;
            use std::os::fd::AsRawFd;
            if let Some(tcp) = io.downcast_ref::<TcpStream>() {
                return Some(ConnSocket {
                    fd: tcp.as_raw_fd(),
                });
            }
            if let Some(tls) =
                io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
            {
                return Some(ConnSocket {
                    fd: tls.get_ref().0.as_raw_fd(),
                });
            }
        }
        let _ = io;
        None
    }
}

/// A session's way to its connection's socket: alive exactly as long as the server's
/// dispatcher for the connection (which owns the socket) is.
#[derive(Debug, Clone, Default)]
pub struct TcpHandle(Option<Weak<ConnSocket>>);

impl TcpHandle {
    /// The handle of the connection `socket` (from the request's connection data).
    pub fn new(socket: Option<&Rc<ConnSocket>>) -> TcpHandle {
        TcpHandle(socket.map(Rc::downgrade))
    }

    /// Whether the server still holds the connection.
    pub(super) fn alive(&self) -> bool {
        self.0.as_ref().is_some_and(|w| w.strong_count() > 0)
    }

    /// Drop the connection now: reset it (SO_LINGER 0, so the kernel discards what the client
    /// never read and sends RST instead of waiting for it) and shut both directions down, which
    /// wakes the server's dispatcher, whose next write fails, so it releases the socket.
    /// `false` if the connection was already gone.
    pub(super) fn abort(&self) -> bool {
        let Some(socket) = self.0.as_ref().and_then(Weak::upgrade) else {
            return false;
        };
        #[cfg(unix)]
        {
            // SAFETY: the `ConnSocket` is alive, so the connection's dispatcher has not been
            // dropped, and the dispatcher owns the socket (it only closes it by being
            // dropped). The dispatcher runs on this thread (actix-web runs a connection and
            // the tasks its handlers spawn on the same worker thread), and nothing below
            // yields, so the descriptor cannot be closed, let alone reused, while borrowed.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.fd) };
            let sock = socket2::SockRef::from(&fd);
            let _ = sock.set_linger(Some(Duration::ZERO));
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        #[cfg(not(unix))]
        let _ = socket;
        true
    }
}

/// What a session knows of its connection besides the WebSocket.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// The client's address (for the authentication back-off).
    pub peer: Option<IpAddr>,
    /// Its TCP socket.
    pub tcp: TcpHandle,
}

/// How long a close frame the router sends is given to reach the client: a client that does
/// not take it within this time (it is not reading) has its TCP connection dropped.
pub const CLOSE_ATTEMPT: Duration = Duration::from_secs(1);

/// How long the HTTP server waits, after the last frame of a connection, for the client to
/// close its side before closing the connection itself (actix-web's client disconnect
/// timeout, set by the server from this value).
pub const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// After a close frame was taken, how long the connection may still exist before the session
/// drops it: the server's own disconnect timeout and a margin. Why: a client can take the
/// close frame into the server's buffer and stop reading again, which would leave the
/// connection with the server for ever.
const GONE_WITHIN: Duration = CLIENT_DISCONNECT_TIMEOUT.saturating_add(Duration::from_secs(1));

pub(super) fn close_reason(code: u16, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(description.to_owned()),
    })
}

/// The close frame that answers a client's: the same code (RFC 6455 §5.5.1), unless the
/// client sent one that may not be sent on the wire, which is a protocol error (1002).
pub(super) fn echo_close(theirs: Option<CloseReason>) -> Option<CloseReason> {
    let theirs = theirs?;
    let code = u16::from(theirs.code);
    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if sendable {
        Some(CloseReason {
            code: theirs.code,
            description: None,
        })
    } else {
        close_reason(1002, "invalid close code")
    }
}

/// `d` from now, saturating far in the future for absurd durations (never a panic).
pub(super) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// How a write to the WebSocket ended.
pub(super) enum Write {
    Done,
    /// The connection is gone.
    Gone,
    /// It could not finish in time: the client is not reading.
    Blocked,
}

/// Await one write to the WebSocket for at most `limit`.
pub(super) async fn write_within(
    write: impl Future<Output = Result<(), actix_ws::Closed>>,
    limit: Duration,
) -> Write {
    let mut write = std::pin::pin!(write);
    // Almost every write completes at once (room in actix-ws's queue): only one that has to
    // wait arms a timer, so the fan-out path pays nothing for the deadline.
    if let Poll::Ready(r) = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return if r.is_ok() { Write::Done } else { Write::Gone };
    }
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Write::Done,
        Ok(Err(_)) => Write::Gone,
        Err(_) => Write::Blocked,
    }
}

/// End a connection the router has finished with: send `reason` (a close frame, `None` for
/// none) and make sure the TCP connection goes away. The close frame is given
/// [`CLOSE_ATTEMPT`] to be taken by the client (the server's body stream ends once it has
/// it); a client that does not take it in time is not reading, and its connection is dropped
/// ([`TcpHandle::abort`]). A connection still held by the server [`GONE_WITHIN`] after that is
/// dropped too.
pub(super) async fn end_connection(
    session: actix_ws::Session,
    stream: &mut actix_ws::MessageStream,
    reason: Option<Option<CloseReason>>,
    tcp: &TcpHandle,
    client: u64,
) {
    let deadline = after(CLOSE_ATTEMPT);
    let taken = match reason {
        None => {
            drop(session);
            true
        }
        Some(reason) => match tokio::time::timeout_at(deadline, session.close(reason)).await {
            // Not even queued: the server is not writing to the client at all.
            Err(_) => false,
            // The server's side of the WebSocket is already gone.
            Ok(Err(_)) => true,
            // The stream ends when the server has taken the close frame (its response body
            // ended) or when the client closed; read and discard until then.
            Ok(Ok(())) => tokio::time::timeout_at(deadline, async {
                while let Some(msg) = stream.recv().await {
                    if matches!(msg, Ok(WsMessage::Close(_)) | Err(_)) {
                        break;
                    }
                }
            })
            .await
            .is_ok(),
        },
    };
    if !taken {
        if tcp.abort() {
            debug!(
                client,
                "connection dropped: the client did not take the close frame within {CLOSE_ATTEMPT:?}"
            );
        }
        return;
    }
    let gone_by = after(GONE_WITHIN);
    while tcp.alive() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if tcp.abort() {
        debug!(
            client,
            "connection dropped: still open {GONE_WITHIN:?} after its close frame"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_close_frame_is_answered_with_its_own_code() {
        let reason = |code: u16| {
            Some(CloseReason {
                code: CloseCode::from(code),
                description: Some("bye".into()),
            })
        };
        let code = |r: Option<CloseReason>| r.map(|r| u16::from(r.code));
        assert_eq!(code(echo_close(reason(1000))), Some(1000));
        assert_eq!(code(echo_close(reason(4321))), Some(4321));
        assert_eq!(code(echo_close(reason(1001))), Some(1001));
        // Codes that must never be sent are a protocol error.
        for bad in [999, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert_eq!(code(echo_close(reason(bad))), Some(1002), "{bad}");
        }
        assert!(echo_close(None).is_none());
    }
}
