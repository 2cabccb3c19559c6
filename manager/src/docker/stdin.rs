//! The stdin of containers made with `OpenStdin` (`docker run -i`, `-it`): a FIFO per
//! container, `<state>/docker-stdin/<id>/stdin`, given to the task as its stdin path (the shim
//! hands it to the process, or relays it to the terminal). berthd keeps a writer open on it
//! (opened read-write, so the open never waits and the process never sees an end of input
//! before the client's); every attach with `stdin=1` writes through a duplicate of it.
//!
//! The docker CLI attaches before it starts the container, and a quick client (`echo hi |
//! docker run -i`) has sent everything and half-closed before the process exists. Its bytes
//! wait in the pipe, and with `StdinOnce` the close is put off until the task has the FIFO
//! open: the pipe (and what it holds) lives while one end is open.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use tokio::net::unix::pipe;

use super::errors::ApiError;
use super::lifecycle::rq;
use super::Api;

/// One container's input.
#[derive(Default)]
struct Hub {
    /// berthd's writer; none once the input was closed (until the next start).
    tx: Option<pipe::Sender>,
    /// The running task has the FIFO open.
    task_has_it: bool,
    /// A `StdinOnce` close came before the task had the FIFO open.
    close_pending: bool,
}

/// The stdin FIFOs berthd holds, by container ID.
#[derive(Default)]
pub struct Stdins {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Hub>>>>,
}

fn dir(state: &Path, id: &str) -> PathBuf {
    state.join("docker-stdin").join(id)
}

/// The FIFO of container `id` (made if missing) and berthd's writer on it.
fn open(state: &Path, id: &str) -> Result<(PathBuf, pipe::Sender), ApiError> {
    use std::os::unix::fs::DirBuilderExt;
    let d = dir(state, id);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&d)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", d.display())))?;
    let p = d.join("stdin");
    match nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            return Err(ApiError::internal(format!("mkfifo {}: {e}", p.display())));
        }
    }
    let tx = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(&p)
        .map_err(|e| ApiError::internal(format!("opening {}: {e}", p.display())))?;
    Ok((p, tx))
}

impl Stdins {
    fn hub(&self, id: &str) -> Arc<tokio::sync::Mutex<Hub>> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    /// A writer into container `id`'s input, for one attach.
    pub async fn writer(&self, state: &Path, id: &str) -> Result<pipe::Sender, ApiError> {
        let hub = self.hub(id);
        let mut h = hub.lock().await;
        if h.tx.is_none() {
            h.tx = Some(open(state, id)?.1);
            h.close_pending = false;
        }
        let tx =
            h.tx.as_ref()
                .ok_or_else(|| ApiError::internal("stdin writer vanished"))?;
        let fd = tx
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ApiError::internal(format!("duplicating the stdin writer: {e}")))?;
        pipe::Sender::from_owned_fd(fd)
            .map_err(|e| ApiError::internal(format!("the stdin writer: {e}")))
    }

    /// The stdin path for a task about to be created (the writer is open from now on).
    pub async fn for_start(&self, state: &Path, id: &str) -> Result<String, ApiError> {
        let hub = self.hub(id);
        let mut h = hub.lock().await;
        if h.tx.is_none() {
            h.tx = Some(open(state, id)?.1);
        }
        Ok(dir(state, id).join("stdin").display().to_string())
    }

    /// The task has its stdin: a close that was waiting for it happens now.
    pub async fn started(&self, api: &Api, id: &str) {
        let hub = self.hub(id);
        let mut h = hub.lock().await;
        h.task_has_it = true;
        if std::mem::take(&mut h.close_pending) {
            h.tx = None;
            close_io(api, id).await;
        }
    }

    /// The end of the input (`StdinOnce` and the attached client half-closed): the process
    /// reads an end of file (with a terminal, the relay to it stops).
    pub async fn close(&self, api: &Api, id: &str) {
        let hub = self.hub(id);
        let mut h = hub.lock().await;
        if h.task_has_it {
            h.tx = None;
            close_io(api, id).await;
        } else {
            h.close_pending = true;
        }
    }

    /// The task is gone: the next start gets a fresh input.
    pub async fn exited(&self, id: &str) {
        let hub = self.hub(id);
        let mut h = hub.lock().await;
        *h = Hub::default();
    }

    /// The container is gone: its FIFO too.
    pub fn remove(&self, state: &Path, id: &str) {
        {
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            m.remove(id);
        }
        let d = dir(state, id);
        match std::fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "docker api: removing a stdin FIFO")
            }
        }
    }
}

async fn close_io(api: &Api, id: &str) {
    if let Err(s) = api
        .tasks
        .close_io(rq(tpb::CloseIoRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            stdin: true,
        }))
        .await
    {
        tracing::debug!(container = %id, error = %s.message(), "docker api: closing a container's stdin");
    }
}
