//! The bytes of a link: connecting (TCP, and TLS when configured), the writer task, and the
//! reader that respects the `link-queue`.
//!
//! Nothing here knows CSTA beyond its framing: the link actor hands frames to [`spawn_writer`]'s
//! queue and gets [`Read`] items from [`reader`], which it passes to its session.

use super::QueueSlot;
use crate::csta::{CstaCodec, Frame, FrameError};
use crate::tls::LinkTls;
use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::codec::FramedRead;
use tracing::warn;

/// An established connection to the switch, before it is split.
pub(super) enum LinkStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// The TLS stream, and whether its certificate went unverified.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>, bool),
}

/// Why a connection could not be established.
pub(super) enum ConnectError {
    /// The TCP connect failed.
    Tcp(std::io::Error),
    /// The TLS handshake failed.
    Tls(std::io::Error),
    /// Both together took longer than the connect timeout.
    TimedOut,
}

/// TCP connect and, with `tls`, the TLS handshake, within one `timeout`.
pub(super) async fn connect(
    address: SocketAddr,
    tls: Option<LinkTls>,
    timeout: Duration,
) -> Result<LinkStream, ConnectError> {
    let attempt = async move {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(ConnectError::Tcp)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(LinkStream::Plain(tcp)),
            Some(tls) => {
                let stream = tls.connect(tcp, address).await.map_err(ConnectError::Tls)?;
                Ok(LinkStream::Tls(Box::new(stream), tls.insecure))
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::TimedOut))
}

/// Start the task that writes frames to the switch, and return its queue (`queue` frames).
/// The task drains the queue in batches, so the actor never waits on the socket; it ends when
/// the queue is dropped or a write fails (the queue is then closed).
pub(super) fn spawn_writer<W>(mut write: W, queue: usize) -> mpsc::Sender<Frame>
where
    W: AsyncWrite + Unpin + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Frame>(queue.max(1));
    actix_rt::spawn(async move {
        let mut buf = BytesMut::with_capacity(8192);
        while let Some(frame) = rx.recv().await {
            let mut next = Some(frame);
            while let Some(f) = next {
                if let Err(e) = tokio_util::codec::Encoder::encode(&mut CstaCodec, f, &mut buf) {
                    warn!("dropping an unencodable frame: {e}");
                }
                next = if buf.len() < 64 * 1024 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            // The flush matters for TLS only (records still buffered in the session); for
            // plain TCP it is a no-op.
            if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                break;
            }
            buf.clear();
        }
        let _ = write.shutdown().await;
    });
    tx
}

/// What the reader hands the link actor.
pub(super) enum Read {
    /// A frame (or why the stream broke), with its place in the link queue.
    Frame(Result<Frame, FrameError>, QueueSlot),
    /// The reader stopped reading: every place in the link queue is taken.
    Paused,
    /// The reader reads again.
    Resumed,
    /// The switch closed the connection.
    End,
}

/// The reader's state between items.
struct Reader<R> {
    framed: FramedRead<R, CstaCodec>,
    /// A place taken after a pause, for the next frame.
    permit: Option<OwnedSemaphorePermit>,
    paused: bool,
}

/// The frames of `read`, each read only once it has a place in the link queue (`permits`):
/// while the router is `link-queue` frames behind, the socket is not read and TCP slows the
/// switch down. The pause and its end are items of their own, in order with the frames.
/// `gauge` counts the places taken.
pub(super) fn reader<R>(
    read: R,
    permits: Arc<Semaphore>,
    gauge: metrics::Gauge,
) -> impl Stream<Item = Read>
where
    R: AsyncRead + Unpin + 'static,
{
    let start = Reader {
        framed: FramedRead::new(read, CstaCodec),
        permit: None,
        paused: false,
    };
    futures_util::stream::unfold(Some(start), move |state| {
        let (permits, gauge) = (permits.clone(), gauge.clone());
        async move {
            let mut r = state?;
            if r.paused {
                r.permit = Some(permits.acquire_owned().await.ok()?);
                r.paused = false;
                return Some((Read::Resumed, Some(r)));
            }
            let permit = match r.permit.take() {
                Some(permit) => permit,
                None => match permits.try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(TryAcquireError::NoPermits) => {
                        r.paused = true;
                        return Some((Read::Paused, Some(r)));
                    }
                    Err(TryAcquireError::Closed) => return None,
                },
            };
            match r.framed.next().await {
                Some(item) => Some((Read::Frame(item, QueueSlot::held(permit, gauge)), Some(r))),
                // The end of the stream, reported once.
                None => Some((Read::End, None)),
            }
        }
    })
}
