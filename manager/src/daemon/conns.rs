//! What a client may hold on berthd's sockets: a bounded number of connections per socket,
//! a deadline for a new connection's first bytes, and the open-files limit they all count
//! against. Both fronts (gRPC and the Docker API) accept through [`accept`]. On the gRPC
//! socket a connection with no request in flight is closed after the same timeout (HTTP/2
//! has no request headers to time, and a client that sent only its preface, or nothing the
//! first-bytes wait saw, held its slot for good).
//!
//! Without it, idle connections were unbounded: each holds an fd, and at the open-files
//! limit `accept` fails with EMFILE, which tonic's accept loop retries at once (a busy loop)
//! while every new client, `berth version` included, hangs in the listen backlog.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Default bound on the connections open at once on one socket.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// Default time a new connection has to send its first bytes (and, on the Docker socket, a
/// request's headers).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Open files kept for everything but client connections (store, logs, shims' sockets...).
const RESERVED_FDS: u64 = 512;

/// The limits one socket is served with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time for a new connection's first bytes (Docker socket: also each request's headers).
    pub header_timeout: Duration,
}

/// Raises the soft open-files limit to the hard one, as Go's runtime does for dockerd and
/// containerd, and returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "getrlimit(RLIMIT_NOFILE)");
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                tracing::warn!(error = %io::Error::last_os_error(), "raising RLIMIT_NOFILE");
            }
        }
    }
    lim.rlim_cur
}

impl Limits {
    /// The configured limits, with the connection bound cut so that `sockets` sockets at
    /// their bound still leave [`RESERVED_FDS`] of the open-files limit `nofile` free.
    pub fn new(
        max_connections: usize,
        header_timeout: Duration,
        nofile: u64,
        sockets: u64,
    ) -> Self {
        let budget = nofile.saturating_sub(RESERVED_FDS) / sockets.max(1);
        let fit = usize::try_from(budget).unwrap_or(usize::MAX).max(16);
        if fit < max_connections {
            tracing::warn!(
                max_connections,
                nofile,
                per_socket = fit,
                "the open-files limit cannot hold max_connections per socket; lowering it"
            );
        }
        Limits {
            max_connections: max_connections.min(fit).max(1),
            header_timeout,
        }
    }
}

/// An accepted connection that holds one of its socket's connection slots until dropped.
pub struct Conn {
    io: UnixStream,
    _slot: Slot,
    /// Its requests, counted by [`TrackRequestsLayer`] (the gRPC socket's connect info).
    activity: Arc<Activity>,
    /// Closes the connection (its reads end) once no request has been in flight for this
    /// long: the gRPC socket's idle deadline. None on the Docker socket, where hyper's header
    /// timeout does that and hijacked connections may rightly sit quiet.
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

/// One of a socket's connection slots, taken from accept to close.
struct Slot {
    _permit: OwnedSemaphorePermit,
    load: Arc<Load>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.load.closed();
    }
}

/// Connections open on one socket, and the most open since the heap was last trimmed.
#[derive(Debug, Default)]
struct Load {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// A storm: at least this many connections open at once on a socket...
const STORM: usize = 128;
/// ...is over when no more than this many are left open.
const CALM: usize = 8;

/// Connections accepted on all sockets since berthd started (see [`trim_when_quiet`]).
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// How long no new connection must arrive before berthd counts as quiet.
const QUIET: Duration = Duration::from_secs(5);

/// Trims the heap once after each busy spell: when connections were accepted since the last
/// trim and then none for [`QUIET`]. What clients' requests freed (JSON bodies, progress
/// streams, HTTP buffers, build and pull state) otherwise stays in the allocator's free lists,
/// counted in berthd's RSS: over a long client session (`hack/bench-rss.sh`) it crept up
/// about 5 MB over its idle figure. A trim of berthd's small heap takes well under a
/// millisecond; a quiet daemon is never woken for it more than once.
pub async fn trim_when_quiet() {
    let mut seen = ACCEPTED.load(Ordering::SeqCst);
    let mut trimmed = seen;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = ACCEPTED.load(Ordering::SeqCst);
        if now != seen {
            seen = now;
            continue;
        }
        if now != trimmed {
            trimmed = now;
            let _ = tokio::task::spawn_blocking(super::trim_heap).await;
            tracing::debug!(accepted = now, "quiet; heap trimmed");
        }
    }
}

impl Load {
    fn opened(&self) {
        ACCEPTED.fetch_add(1, Ordering::SeqCst);
        let n = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }

    /// After a storm the freed per-connection buffers (HTTP/2 state, read buffers) sit in the
    /// allocator's free lists, counted in RSS for good (1,000 idle connections per socket
    /// took berthd from 11 to 44 MB, and it stayed there): give them back to the kernel.
    fn closed(&self) {
        let n = self.open.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        if n <= CALM && self.peak.load(Ordering::SeqCst) >= STORM {
            let peak = self.peak.swap(n, Ordering::SeqCst);
            if peak >= STORM {
                super::trim_heap();
                tracing::debug!(peak, open = n, "connection storm over; heap trimmed");
            }
        }
    }
}

/// What a connection and the requests on it share: how many are in flight, since when none
/// is, and who to wake when the last one ends (the connection's reader, to start its idle
/// deadline).
#[derive(Debug)]
pub struct Activity {
    inflight: AtomicUsize,
    idle_since: std::sync::Mutex<(tokio::time::Instant, Option<Waker>)>,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            inflight: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new((tokio::time::Instant::now(), None)),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, (tokio::time::Instant, Option<Waker>)> {
        self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request starts; it counts until the returned guard (kept with its response body)
    /// is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut idle = self.0.idle();
            idle.0 = tokio::time::Instant::now();
            if let Some(w) = idle.1.take() {
                w.wake();
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some((timeout, sleep)) = this.idle.as_mut() else {
            return res;
        };
        if res.is_ready() {
            return res;
        }
        // Nothing to read: if no request is in flight either, the idle deadline runs.
        let deadline = {
            let mut idle = this.activity.idle();
            idle.1 = Some(cx.waker().clone());
            if this.activity.inflight.load(Ordering::SeqCst) > 0 {
                return res;
            }
            idle.0 + *timeout
        };
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            tracing::debug!(timeout = ?timeout, "gRPC connection idle (no request in flight); closed");
            // The end of the stream: the HTTP/2 server closes the connection.
            return Poll::Ready(Ok(()));
        }
        res
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Arc<Activity>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.activity.clone()
    }
}

/// Counts each gRPC request on its connection's [`Activity`] from its start until its
/// response body is done or dropped (a stream counts for as long as it is open), which is
/// what the connection's idle deadline waits on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests(inner)
    }
}

/// The service [`TrackRequestsLayer`] makes.
#[derive(Debug, Clone)]
pub struct TrackRequests<S>(S);

impl<S, B, RB> tower::Service<http::Request<B>> for TrackRequests<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Tracked<RB>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = req.extensions().get::<Arc<Activity>>().map(Activity::begin);
        let fut = self.0.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|body| Tracked {
                body: Box::pin(body),
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted until it ends or is dropped.
pub struct Tracked<B> {
    body: Pin<Box<B>>,
    _guard: Option<InFlight>,
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Accepts on `listener` until the receiver is dropped. A connection past the socket's bound
/// is closed at once (logged, at most once a second); one that sends nothing within the
/// header timeout is closed; the others are handed over once they have sent their first
/// bytes. An accept error (EMFILE, ENFILE, ...) pauses accepting for 100 ms instead of
/// retrying in a loop.
pub fn accept(
    listener: UnixListener,
    limits: Limits,
    what: &'static str,
    idle: Idle,
) -> mpsc::Receiver<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let load = Arc::new(Load::default());
    tokio::spawn(async move {
        let last_warned = AtomicU64::new(0);
        loop {
            let stream = tokio::select! {
                r = listener.accept() => r,
                _ = tx.closed() => break,
            };
            let stream = match stream {
                Ok((s, _)) => s,
                Err(e) => {
                    warn_once_a_second(&last_warned, || {
                        tracing::warn!(socket = what, error = %e, "accept failed; pausing 100 ms");
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                warn_once_a_second(&last_warned, || {
                    tracing::warn!(
                        socket = what,
                        max_connections = limits.max_connections,
                        "too many connections; closing new ones"
                    );
                });
                drop(stream);
                continue;
            };
            load.opened();
            let slot = Slot {
                _permit: permit,
                load: load.clone(),
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.header_timeout, stream.readable()).await {
                    Ok(Ok(())) => {
                        let idle = match idle {
                            Idle::Close => Some((
                                limits.header_timeout,
                                Box::pin(tokio::time::sleep(limits.header_timeout)),
                            )),
                            Idle::Keep => None,
                        };
                        let _ = tx
                            .send(Ok(Conn {
                                io: stream,
                                _slot: slot,
                                activity: Activity::new(),
                                idle,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(socket = what, error = %e, "connection lost"),
                    Err(_) => tracing::debug!(
                        socket = what,
                        timeout = ?limits.header_timeout,
                        "connection sent nothing in time; closed"
                    ),
                }
            });
        }
    });
    rx
}

/// What [`accept`] does with a connection that has no request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Close it after the header timeout (the gRPC socket, whose HTTP/2 server has no idle
    /// timeout of its own; requests are counted by [`TrackRequestsLayer`]).
    Close,
    /// Leave it to the server (the Docker socket: hyper's header timeout).
    Keep,
}

fn warn_once_a_second(last: &AtomicU64, warn: impl FnOnce()) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if last.swap(now, Ordering::Relaxed) != now {
        warn();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_leaves_reserved_files_free() {
        let t = DEFAULT_HEADER_TIMEOUT;
        assert_eq!(Limits::new(2048, t, 1 << 20, 2).max_connections, 2048);
        assert_eq!(Limits::new(2048, t, 1024, 2).max_connections, 256);
        assert_eq!(Limits::new(2048, t, 100, 2).max_connections, 16);
        assert_eq!(Limits::new(0, t, 1 << 20, 2).max_connections, 1);
    }
}
