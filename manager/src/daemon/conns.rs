//! What a client may hold on berthd's sockets: a bounded number of connections per socket,
//! a deadline for a new connection's first bytes, and the open-files limit they all count
//! against. Both fronts (gRPC and the Docker API) accept through [`accept`].
//!
//! Without it, idle connections were unbounded: each holds an fd, and at the open-files
//! limit `accept` fails with EMFILE, which tonic's accept loop retries at once (a busy loop)
//! while every new client, `berth version` included, hangs in the listen backlog.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
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
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
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
    type ConnectInfo = <UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
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
) -> mpsc::Receiver<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
            let Ok(slot) = slots.clone().try_acquire_owned() else {
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
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.header_timeout, stream.readable()).await {
                    Ok(Ok(())) => {
                        let _ = tx
                            .send(Ok(Conn {
                                io: stream,
                                _slot: slot,
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
