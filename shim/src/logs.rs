//! berth's container logs: a stdio path `log:/abs/file` makes the shim hand the runtime a pipe
//! and copy what arrives into that file, one line per record in CRI's format
//! (`2026-11-24T14:20:00.123456789Z stdout F text`; `P` marks a line cut at 16 KiB), rotating
//! to `file.1` when the file would pass its size bound (default 10 MiB,
//! `$BERTH_SHIM_LOG_MAX` bytes), so a chatty container cannot fill the disk.
//!
//! The pipes are read from the shim's poll loop, and drained completely when a process exits,
//! so the file is complete by the time the exit is reported.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The stdio path prefix that asks for a log file.
pub const PREFIX: &str = "log:";
/// Default size bound of one log file.
pub const DEFAULT_MAX: u64 = 10 << 20;
/// Longest line kept whole.
const MAX_LINE: usize = 16 << 10;

struct Sink {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl Sink {
    fn open(path: PathBuf, max: u64) -> Result<Sink, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("opening log {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Sink {
            path,
            file,
            size,
            max,
        })
    }

    fn write_record(&mut self, stream: &str, tag: char, line: &[u8]) {
        let mut rec = Vec::with_capacity(line.len() + 48);
        rec.extend_from_slice(timestamp().as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_bytes());
        rec.push(b' ');
        rec.push(tag as u8);
        rec.push(b' ');
        rec.extend_from_slice(line);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.max {
            let old = self.path.with_extension("log.1");
            let _ = std::fs::rename(&self.path, &old);
            match File::options().create(true).append(true).open(&self.path) {
                Ok(f) => {
                    self.file = f;
                    self.size = 0;
                }
                Err(e) => eprintln!("berth-shim: reopening {}: {e}", self.path.display()),
            }
        }
        if self.file.write_all(&rec).is_ok() {
            self.size += rec.len() as u64;
        }
    }
}

struct Source {
    fd: OwnedFd,
    stream: &'static str,
    sink: usize,
    partial: Vec<u8>,
}

/// Every log pipe of this container and the files they go to.
pub struct Logs {
    sinks: Vec<Sink>,
    sources: Vec<Source>,
    max: u64,
}

impl Logs {
    /// No logs yet; files are bounded by `$BERTH_SHIM_LOG_MAX` bytes (default 10 MiB).
    pub fn from_env() -> Logs {
        let max = std::env::var("BERTH_SHIM_LOG_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&m: &u64| m > 0)
            .unwrap_or(DEFAULT_MAX);
        Logs::with_max(max)
    }

    /// No logs yet; files are bounded by `max` bytes.
    pub fn with_max(max: u64) -> Logs {
        Logs {
            sinks: Vec::new(),
            sources: Vec::new(),
            max,
        }
    }

    /// A pipe whose write end is the stdio of a process (`stream`: "stdout" or "stderr") and
    /// whose read end feeds the log file named by `spec` (`log:/path`).
    pub fn pipe_for(&mut self, spec: &str, stream: &'static str) -> Result<File, String> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array; the read end is ours, the write end goes to the
        // runtime (close-on-exec here; Command dup2s it onto the child's stdio).
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("log pipe: {}", std::io::Error::last_os_error()));
        }
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        self.add_source(spec, stream, rd)?;
        Ok(wr)
    }

    /// Logs what can be read from `fd` (a pipe's read end, a terminal's master) as `stream`
    /// into the log file named by `spec` (`log:/path`); `fd` becomes nonblocking.
    pub fn add_source(
        &mut self,
        spec: &str,
        stream: &'static str,
        fd: OwnedFd,
    ) -> Result<(), String> {
        let path = PathBuf::from(spec.trim_start_matches(PREFIX));
        if !path.is_absolute() {
            return Err(format!("log path {} is not absolute", path.display()));
        }
        let sink = match self.sinks.iter().position(|s| s.path == path) {
            Some(i) => i,
            None => {
                self.sinks.push(Sink::open(path, self.max)?);
                self.sinks.len() - 1
            }
        };
        // SAFETY: fcntl on the fd we own.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        self.sources.push(Source {
            fd,
            stream,
            sink,
            partial: Vec::new(),
        });
        Ok(())
    }

    /// The read ends to poll.
    pub fn fds(&self) -> Vec<RawFd> {
        self.sources.iter().map(|s| s.fd.as_raw_fd()).collect()
    }

    /// Copies what `fd` has now; closes it at end of file.
    pub fn ready(&mut self, fd: RawFd) {
        if let Some(i) = self.sources.iter().position(|s| s.fd.as_raw_fd() == fd) {
            if !self.pump(i) {
                self.close(i);
            }
        }
    }

    /// Copies everything every pipe holds (a process exited: its output must be in the file
    /// before its exit is reported).
    pub fn drain(&mut self) {
        let mut i = 0;
        while i < self.sources.len() {
            if self.pump(i) {
                i += 1;
            } else {
                self.close(i);
            }
        }
    }

    fn close(&mut self, i: usize) {
        let s = self.sources.remove(i);
        if !s.partial.is_empty() {
            self.sinks[s.sink].write_record(s.stream, 'F', &s.partial);
        }
    }

    /// Reads until the pipe is empty; false at end of file.
    fn pump(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 16 << 10];
        loop {
            let fd = self.sources[i].fd.as_raw_fd();
            // SAFETY: read into a local buffer from a nonblocking pipe we own.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return false;
            }
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted;
            }
            let Source {
                stream,
                sink,
                partial,
                ..
            } = &mut self.sources[i];
            partial.extend_from_slice(&buf[..n as usize]);
            let sink = &mut self.sinks[*sink];
            while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
                sink.write_record(stream, 'F', &partial[..nl]);
                partial.drain(..=nl);
            }
            while partial.len() >= MAX_LINE {
                sink.write_record(stream, 'P', &partial[..MAX_LINE]);
                partial.drain(..MAX_LINE);
            }
        }
    }
}

/// Now as RFC 3339 UTC with nanoseconds.
fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_recorded_and_the_file_rotates() {
        let dir = tempfile_dir();
        let path = dir.join("c.log");
        let mut logs = Logs::with_max(200);
        let spec = format!("{PREFIX}{}", path.display());
        let mut out = logs.pipe_for(&spec, "stdout").unwrap();
        let mut err = logs.pipe_for(&spec, "stderr").unwrap();
        writeln!(out, "hello").unwrap();
        write!(err, "oops\nhalf").unwrap();
        logs.drain();
        drop(err);
        logs.drain();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("Z stdout F hello"), "{text}");
        assert!(lines[1].ends_with(" stderr F oops"), "{text}");
        assert!(lines[2].ends_with(" stderr F half"), "{text}");
        assert!(lines[0].starts_with("20"), "{text}");
        for i in 0..10 {
            writeln!(out, "line {i}").unwrap();
        }
        logs.drain();
        let now = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(path.with_extension("log.1")).unwrap();
        assert!(now.len() <= 200, "{now}");
        assert!(now.contains("line 9"), "{now}");
        assert!(old.contains(" stdout F "), "{old}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-shim-logs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
