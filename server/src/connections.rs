//! Accepting connections within limits: a header-read timeout (slowloris), an idle timeout, at
//! most `max_connections` open sockets (kept below the file-descriptor limit), and accept errors
//! that back off instead of spinning.
//!
//! When every slot is taken, a new connection takes the slot of the oldest connection that has
//! no request in flight (an idle keep-alive or one that never sent a byte), so a crowd of idle
//! sockets cannot lock out `/healthz` or a real client; only when every connection is busy is
//! the new one closed at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// Connection limits and timeouts.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose answer the client has not read for this long is closed.
    pub send_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Most headers the connection's parser reads; the router refuses more than
/// [`crate::routes::fallback::MAX_HEADERS`] with a JSON 431, past this the parser answers a bare
/// 431.
const MAX_PARSED_HEADERS: usize = 400;
/// The connection's read buffer: bounds the memory of a request's headers.
pub const MAX_HEADER_BUFFER: usize = 256 << 10;

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// File descriptors kept free of connections: the database, log files, the listener.
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard one and returns how many connections fit below
/// it: `wanted`, or fewer when the limit is lower.
pub fn fit_to_fd_limit(wanted: usize) -> usize {
    let soft = raise_nofile_limit();
    match soft {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVED_FDS).max(1);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

/// `setrlimit(RLIMIT_NOFILE)` soft := hard; returns the soft limit in force afterwards.
#[allow(unsafe_code)]
fn raise_nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer, which lives
    // on this stack frame for the duration of each call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// What the accept loop knows about one open connection.
#[derive(Default)]
struct Tracked {
    /// Requests whose response has not been fully sent.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_active: AtomicU64,
    /// 1 + milliseconds since `epoch` when a write started waiting for the client to read;
    /// 0 while writes go through.
    write_blocked_since: AtomicU64,
    /// Told to close (its slot was given to a newer connection).
    shed: Notify,
}

/// The open connections, oldest first.
struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Tracked>>>,
    /// Sockets not yet closed (a shed connection counts until its socket is dropped).
    live: AtomicUsize,
    /// Told whenever a socket is closed.
    closed: Notify,
    epoch: Instant,
}

impl Registry {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the oldest connection without a request in flight; false when all are busy.
    fn shed_one(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let victim = open
            .iter()
            .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(conn) => {
                conn.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Serves `app` on `listener` within `limits` until `shutdown`, then lets in-flight requests
/// finish. With `tls`, every connection is TLS; its handshake must finish within the header
/// timeout, in the connection's own task (a slow handshake never holds up the accept loop).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let registry = Arc::new(Registry {
        open: Mutex::new(BTreeMap::new()),
        live: AtomicUsize::new(0),
        closed: Notify::new(),
        epoch: Instant::now(),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut next_id: u64 = 0;
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        // Make room before taking another socket, so open files never pass the limit.
        if registry.live.load(Ordering::Acquire) >= limits.max_connections && registry.shed_one() {
            let closed = registry.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if registry.live.load(Ordering::Acquire) >= limits.max_connections {
                let _ = tokio::time::timeout(Duration::from_millis(100), closed).await;
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(err) if is_per_connection_error(&err) => continue,
            Err(err) => {
                // Out of file descriptors or memory: wait for some to be freed, never spin.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(error = %err, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if registry.live.load(Ordering::Acquire) >= limits.max_connections {
            // Every connection is busy (none could be shed): refuse this one at once.
            tracing::debug!(
                "connection limit reached and every connection busy; closing a new one"
            );
            drop(stream);
            continue;
        }
        registry.live.fetch_add(1, Ordering::AcqRel);
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let tracked = Arc::new(Tracked::default());
        tracked.last_active.store(registry.now(), Ordering::Release);
        registry
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tracked.clone());

        let stream = ActivityStream {
            inner: stream,
            tracked: tracked.clone(),
            registry: registry.clone(),
        };
        let service = {
            let app = app.clone();
            let tracked = tracked.clone();
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                let guard = InFlight::new(tracked.clone());
                async move {
                    let response = app.oneshot(request.map(Body::new)).await?;
                    // The request stays in flight until its body is sent (or dropped).
                    Ok::<_, std::convert::Infallible>(response.map(move |body| {
                        Body::new(body.map_frame(move |frame| {
                            let _ = &guard;
                            frame
                        }))
                    }))
                }
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_headers(MAX_PARSED_HEADERS)
            .max_buf_size(MAX_HEADER_BUFFER)
            .keep_alive(true);
        let watcher = graceful.watcher();
        let registry = registry.clone();
        let idle_timeout = limits.idle_timeout;
        let send_timeout = limits.send_timeout;
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let io: Option<Box<dyn Connection>> = match acceptor {
                None => Some(Box::new(stream)),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => Some(Box::new(tls)),
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "TLS handshake failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            None
                        }
                    }
                }
            };
            if let Some(io) = io {
                let connection = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
                tokio::select! {
                    _ = connection => {}
                    () = tracked.shed.notified() => {}
                    () = idle(&registry, &tracked, idle_timeout) => {}
                    () = stalled(&registry, &tracked, send_timeout) => {
                        tracing::debug!("the client stopped reading its answer; connection closed");
                    }
                }
            }
            registry
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            // The select dropped the connection, and with it the socket.
            registry.live.fetch_sub(1, Ordering::AcqRel);
            registry.closed.notify_waiters();
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open at shutdown were cut");
    }
    Ok(())
}

/// Resolves once the connection has had no request in flight and no traffic for `timeout`.
async fn idle(registry: &Registry, tracked: &Tracked, timeout: Duration) {
    let timeout_ms = timeout.as_millis() as u64;
    loop {
        let quiet = registry
            .now()
            .saturating_sub(tracked.last_active.load(Ordering::Acquire));
        if quiet >= timeout_ms && tracked.in_flight.load(Ordering::Acquire) == 0 {
            return;
        }
        let wait = timeout_ms.saturating_sub(quiet).max(timeout_ms / 4).max(10);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// Resolves once a write has waited `timeout` for the client to read: a client that stops
/// reading its answer must not keep what the answer holds (a slot's worth of entries).
async fn stalled(registry: &Registry, tracked: &Tracked, timeout: Duration) {
    let timeout_ms = timeout.as_millis() as u64;
    loop {
        let since = tracked.write_blocked_since.load(Ordering::Acquire);
        let waited = if since == 0 {
            0
        } else {
            registry.now().saturating_sub(since - 1)
        };
        if since != 0 && waited >= timeout_ms {
            return;
        }
        let wait = timeout_ms
            .saturating_sub(waited)
            .max(timeout_ms / 4)
            .max(10);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// Errors of one incoming connection (it was reset before we took it), not of the listener.
fn is_per_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Counts a request in flight on its connection while alive.
struct InFlight(Arc<Tracked>);

impl InFlight {
    fn new(tracked: Arc<Tracked>) -> Self {
        tracked.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(tracked)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that notes when bytes last moved.
struct ActivityStream {
    inner: TcpStream,
    tracked: Arc<Tracked>,
    registry: Arc<Registry>,
}

impl ActivityStream {
    fn touch(&self) {
        self.tracked
            .last_active
            .store(self.registry.now(), Ordering::Release);
    }

    /// Notes whether a write went through or waits for the client to read.
    fn note_write(&self, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Pending => {
                let _ = self.tracked.write_blocked_since.compare_exchange(
                    0,
                    self.registry.now() + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Poll::Ready(result) => {
                self.tracked.write_blocked_since.store(0, Ordering::Release);
                if matches!(result, Ok(n) if *n > 0) {
                    self.touch();
                }
            }
        }
    }
}

impl AsyncRead for ActivityStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for ActivityStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
