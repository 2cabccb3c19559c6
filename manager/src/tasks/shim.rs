//! Talking to a task's `berth-shim`: starting it, and one-line requests on `<bundle>/shim.sock`.

use std::path::Path;
use std::process::Command;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Result, TaskError};

/// What `berth-shim` needs to create the container.
pub struct Launch<'a> {
    /// The shim binary.
    pub shim: &'a Path,
    /// The bundle.
    pub bundle: &'a Path,
    /// Container id.
    pub id: &'a str,
    /// Runtime binary.
    pub runtime: &'a Path,
    /// Runtime root.
    pub runtime_root: &'a Path,
    /// stdin, stdout, stderr paths (empty: /dev/null).
    pub stdio: [&'a str; 3],
    /// The init process gets a terminal, relayed to stdin and stdout.
    pub terminal: bool,
}

/// Starts the supervisor and waits until the container is created; returns the init pid.
/// The supervisor detaches itself (it forks; its parent exits once the container exists).
pub fn launch(l: &Launch<'_>) -> Result<u32> {
    let out = Command::new(l.shim)
        .arg(l.bundle)
        .arg(l.id)
        .arg(l.runtime)
        .arg(l.runtime_root)
        .args(l.stdio)
        .args(l.terminal.then_some("terminal"))
        .env(
            super::runtime::SHIM_TIMEOUT_ENV,
            super::runtime::timeout().as_millis().to_string(),
        )
        .output()
        .map_err(|e| {
            TaskError::Internal(format!("starting the supervisor {}: {e}", l.shim.display()))
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(
            if msg.contains("executable file not found") || msg.contains("no such file") {
                TaskError::FailedPrecondition(msg)
            } else if msg.contains("within the runtime timeout") {
                TaskError::Timeout(format!("creating the container: {msg}"))
            } else {
                TaskError::Internal(format!("creating the container: {msg}"))
            },
        );
    }
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim()
        .parse()
        .map_err(|e| TaskError::Internal(format!("supervisor printed {s:?} instead of a pid: {e}")))
}

/// Sends one request and reads the one-line reply.
pub async fn request(bundle: &Path, line: &str) -> std::io::Result<String> {
    // Through an fd of the bundle: `/proc/self/fd/N/shim.sock` fits a unix socket path's 107
    // bytes whatever the length of the bundle's path (the shim binds it likewise).
    let dir = std::fs::File::open(bundle)?;
    let short = format!(
        "/proc/self/fd/{}/shim.sock",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    );
    let mut s = UnixStream::connect(&short).await?;
    drop(dir);
    s.write_all(format!("{line}\n").as_bytes()).await?;
    let mut r = BufReader::new(s);
    let mut reply = String::new();
    r.read_line(&mut reply).await?;
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "supervisor closed the connection",
        ));
    }
    Ok(reply.trim_end().to_string())
}

/// `ok X` → X; `err M` → error M.
pub fn ok(reply: &str) -> Result<&str> {
    if let Some(v) = reply.strip_prefix("ok") {
        return Ok(v.trim_start());
    }
    let m = reply.strip_prefix("err ").unwrap_or(reply);
    Err(if m.contains("executable file not found") {
        TaskError::FailedPrecondition(m.to_string())
    } else if m.contains("not registered") || m.contains("no process") {
        TaskError::NotFound(m.to_string())
    } else {
        TaskError::Internal(m.to_string())
    })
}
