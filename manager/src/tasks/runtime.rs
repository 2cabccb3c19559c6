//! Calling the runtime binary for what does not need the container's parent: start, kill,
//! state, ps, pause, resume, update, delete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Result, TaskError};

/// A runtime binary with its state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The binary.
    pub binary: PathBuf,
    /// Its `--root`.
    pub root: PathBuf,
    /// Where it logs (`<bundle>/log.json`).
    pub log: PathBuf,
}

impl Runtime {
    /// Runs `args`, feeding `stdin`; returns stdout, or an error carrying the runtime's message.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = args.first().copied().unwrap_or("");
        let mut child = cmd.spawn().map_err(|e| {
            TaskError::Internal(format!(
                "running runtime {} {what}: {e}",
                self.binary.display()
            ))
        })?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(data)
                .map_err(|e| TaskError::Internal(format!("runtime {what}: writing stdin: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| TaskError::Internal(format!("runtime {what}: {e}")))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let msg = last_error(&self.log)
            .or_else(|| {
                let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| format!("exited with {}", out.status));
        Err(classify(&format!("runtime {what}: {msg}")))
    }

    /// The runtime's `state`: status string and pid.
    pub fn state(&self, id: &str) -> Result<(String, u32)> {
        let out = self.run(&["state", id], None)?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| TaskError::Internal(format!("runtime state: bad JSON: {e}")))?;
        Ok((
            v["status"].as_str().unwrap_or("unknown").to_string(),
            v["pid"].as_u64().unwrap_or(0) as u32,
        ))
    }
}

/// Maps the runtime's wording onto error kinds (see the runc contract).
fn classify(msg: &str) -> TaskError {
    let m = msg.to_ascii_lowercase();
    if m.contains("does not exist") || m.contains("not found") && m.contains("container") {
        TaskError::NotFound(msg.to_string())
    } else if m.contains("not running")
        || m.contains("process already finished")
        || m.contains("no such process")
    {
        TaskError::NotFound(format!("process already finished: {msg}"))
    } else {
        TaskError::Internal(msg.to_string())
    }
}

/// The message of the last error line in a runtime log.json.
pub fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error")
            .then(|| v["msg"].as_str().map(str::to_string))
            .flatten()
    })
}
