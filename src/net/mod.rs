//! The gRPC port: hostscan's own accept loop in front of tonic's
//! `serve_with_incoming`, so that connections are limited, handshakes have a
//! deadline and TLS certificates can be swapped while serving.
//!
//! For each accepted TCP connection the loop:
//! 1. applies `--max-connections`: at the limit, the oldest connection still
//!    in its handshake is closed to make room; if every connection is
//!    established, the new one is closed at once, so the ones in use keep
//!    working;
//! 2. sets TCP_NODELAY and TCP keepalive on the socket (tonic ignores its
//!    own `tcp_*` settings with `serve_with_incoming`);
//! 3. spawns the handshake (TLS, then the 24-byte HTTP/2 client preface)
//!    under one deadline, so a silent client never stalls the loop and is
//!    closed when the deadline passes;
//! 4. hands the connection to tonic, preface included.
//!
//! A connection holds its slot (`Slot`) until hyper drops it. Every task
//! here belongs to the caller's `TaskTracker` and ends with its
//! `CancellationToken`.
//!
//! Must not: know gRPC services, API keys or the store.

pub mod tls;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;

use crate::metrics::{self, Rejected};

pub use tls::{Tls, TlsError, TlsFiles};

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Idle time before the first TCP keepalive probe, probe interval, and
/// unanswered probes before the kernel drops the connection.
const TCP_KEEPALIVE: (Duration, Duration, u32) =
    (Duration::from_secs(60), Duration::from_secs(10), 3);
/// Pause after `accept` fails (out of descriptors or memory), so the loop
/// does not spin while handshakes time out and free some.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Connections handed to tonic but not yet picked up.
const HANDOFF_QUEUE: usize = 64;

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Connections open at once, in handshake or established.
    pub max_connections: usize,
    /// Time from accept to a complete TLS handshake and HTTP/2 preface.
    pub handshake_timeout: Duration,
}

/// Accepts plaintext HTTP/2 connections on `listener` until `stop`.
/// The stream ends when the loop and every handshake have stopped.
pub fn plaintext(
    listener: TcpListener,
    settings: Settings,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> impl Stream<Item = io::Result<Conn<TcpStream>>> + use<> {
    start(
        listener,
        settings,
        |tcp| std::future::ready(Ok(tcp)),
        tasks,
        stop,
    )
}

/// Accepts TLS connections on `listener` until `stop`; each handshake uses
/// the config `tls` holds at its accept.
pub fn tls(
    listener: TcpListener,
    settings: Settings,
    tls: Tls,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> impl Stream<Item = io::Result<Conn<tokio_rustls::server::TlsStream<TcpStream>>>> + use<> {
    start(
        listener,
        settings,
        move |tcp| tls.acceptor().accept(tcp),
        tasks,
        stop,
    )
}

fn start<IO, H, F>(
    listener: TcpListener,
    settings: Settings,
    handshake: H,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> impl Stream<Item = io::Result<Conn<IO>>> + use<IO, H, F>
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
    tasks.spawn(accept_loop(
        listener,
        settings,
        handshake,
        tx,
        tasks.clone(),
        stop,
    ));
    ReceiverStream::new(rx).map(Ok)
}

/// A connection in its handshake, which a newer one may displace.
struct Handshaking {
    /// Cancels the handshake task, which then closes the socket.
    cancel: CancellationToken,
    /// Set by the handshake task when it is over, either way.
    done: Arc<AtomicBool>,
}

/// Closes the oldest connection still in its handshake; false if there is
/// none (every open connection is established).
fn displace_oldest(queue: &mut VecDeque<Handshaking>) -> bool {
    while let Some(h) = queue.pop_front() {
        if !h.done.load(Ordering::Acquire) {
            h.cancel.cancel();
            return true;
        }
    }
    false
}

async fn accept_loop<IO, H, F>(
    listener: TcpListener,
    settings: Settings,
    handshake: H,
    tx: mpsc::Sender<Conn<IO>>,
    tasks: TaskTracker,
    stop: CancellationToken,
) where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + Unpin + Send + 'static,
{
    let open = Arc::new(AtomicUsize::new(0));
    let mut handshaking: VecDeque<Handshaking> = VecDeque::new();
    let mut accept_failures = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                metrics::connection_rejected(Rejected::AcceptError);
                // Logged on the 1st, 2nd, 4th, 8th… failure in a row: a full
                // descriptor table fails every accept until something closes.
                accept_failures += 1;
                if accept_failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures = accept_failures, "cannot accept connections");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        accept_failures = 0;
        while handshaking
            .front()
            .is_some_and(|h| h.done.load(Ordering::Acquire))
        {
            handshaking.pop_front();
        }
        if open.load(Ordering::Acquire) >= settings.max_connections {
            if displace_oldest(&mut handshaking) {
                metrics::connection_rejected(Rejected::Displaced);
            } else {
                metrics::connection_rejected(Rejected::Limit);
                tracing::debug!(%peer, limit = settings.max_connections, "every connection is in use; closing the new one");
                continue;
            }
        }
        configure(&tcp);
        let slot = Slot::take(&open);
        let cancel = stop.child_token();
        let done = Arc::new(AtomicBool::new(false));
        handshaking.push_back(Handshaking {
            cancel: cancel.clone(),
            done: done.clone(),
        });
        let handshake = handshake(tcp);
        let tx = tx.clone();
        let deadline = settings.handshake_timeout;
        tasks.spawn(async move {
            let ready = async {
                let mut io = handshake.await?;
                let mut preface = [0u8; PREFACE.len()];
                io.read_exact(&mut preface).await?;
                if &preface != PREFACE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not an HTTP/2 client (no preface)",
                    ));
                }
                Ok(io)
            };
            let outcome = tokio::select! {
                _ = cancel.cancelled() => None,
                outcome = tokio::time::timeout(deadline, ready) => Some(outcome),
            };
            done.store(true, Ordering::Release);
            match outcome {
                Some(Ok(Ok(io))) => {
                    metrics::connection_accepted();
                    tx.send(Conn {
                        io,
                        replayed: 0,
                        _slot: slot,
                    })
                    .await
                    .ok();
                }
                Some(Ok(Err(e))) => {
                    metrics::connection_rejected(Rejected::Handshake);
                    tracing::debug!(%peer, error = %e, "handshake failed; closing");
                }
                Some(Err(_)) => {
                    metrics::connection_rejected(Rejected::HandshakeTimeout);
                    tracing::debug!(%peer, deadline_ms = deadline.as_millis() as u64, "no handshake within the deadline; closing");
                }
                // Displaced (counted by the loop) or shutting down.
                None => {}
            }
        });
    }
}

/// TCP_NODELAY (gRPC messages are small and latency-bound) and TCP
/// keepalive (finds peers that vanished without a FIN).
fn configure(tcp: &TcpStream) {
    let (time, interval, retries) = TCP_KEEPALIVE;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(time)
        .with_interval(interval)
        .with_retries(retries);
    let socket = socket2::SockRef::from(tcp);
    if let Err(e) = socket
        .set_tcp_nodelay(true)
        .and_then(|()| socket.set_tcp_keepalive(&keepalive))
    {
        tracing::debug!(error = %e, "cannot set socket options");
    }
}

/// One of `--max-connections`, held by a connection until it closes.
#[derive(Debug)]
struct Slot {
    open: Arc<AtomicUsize>,
    _gauge: metrics::GaugeGuard,
}

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Self {
            open: open.clone(),
            _gauge: metrics::connection_opened(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted connection, as tonic gets it: the stream (TCP or TLS) with
/// the HTTP/2 preface the accept loop read to check it put back in front.
#[derive(Debug)]
pub struct Conn<IO> {
    io: IO,
    /// Bytes of `PREFACE` already given back to the reader.
    replayed: usize,
    /// Frees the connection's place when hyper drops it.
    _slot: Slot,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replayed < PREFACE.len() {
            let rest = &PREFACE[self.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Raises this process's soft open-file limit to its hard limit (an
/// unprivileged process may). Returns the limit before and after.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok((soft, hard.max(soft)))
}

/// The connection limit to use: `requested`, or less if `fd_limit`
/// descriptors minus `reserve` (database pool, SSH sessions, listeners,
/// logs) cannot hold that many, but never below 16 for that reason.
pub fn connection_cap(requested: usize, fd_limit: u64, reserve: u64) -> usize {
    let room = usize::try_from(fd_limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    requested.min(room.max(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_connections_by_descriptors() {
        assert_eq!(connection_cap(4096, 1_048_576, 100), 4096);
        assert_eq!(connection_cap(4096, 256, 78), 178);
        assert_eq!(connection_cap(4096, 50, 78), 16);
        assert_eq!(connection_cap(4, 1_048_576, 100), 4);
    }

    #[test]
    fn displaces_the_oldest_unfinished_handshake() {
        let entry = |done: bool| Handshaking {
            cancel: CancellationToken::new(),
            done: Arc::new(AtomicBool::new(done)),
        };
        let mut queue: VecDeque<Handshaking> = [entry(true), entry(false), entry(false)].into();
        let second = queue[1].cancel.clone();
        assert!(displace_oldest(&mut queue));
        assert!(second.is_cancelled());
        assert_eq!(queue.len(), 1);
        queue[0].done.store(true, Ordering::Release);
        assert!(!displace_oldest(&mut queue));
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn replays_the_preface_then_reads_the_stream() {
        let (mut client, server) = tokio::io::duplex(64);
        let open = Arc::new(AtomicUsize::new(0));
        let mut conn = Conn {
            io: server,
            replayed: 0,
            _slot: Slot::take(&open),
        };
        tokio::io::AsyncWriteExt::write_all(&mut client, b"rest")
            .await
            .expect("write");
        drop(client);
        let mut all = Vec::new();
        conn.read_to_end(&mut all).await.expect("read");
        assert_eq!(&all[..24], PREFACE);
        assert_eq!(&all[24..], b"rest");
        assert_eq!(open.load(Ordering::Acquire), 1);
        drop(conn);
        assert_eq!(open.load(Ordering::Acquire), 0);
    }
}
