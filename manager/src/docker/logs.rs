//! A container's output for `logs` and `attach`: the records the supervisor keeps in berth's
//! size-bounded log file (`TIMESTAMP STREAM F|P TEXT`, rotated to `.log.1`), filtered by
//! stream, time and count, and framed as Docker frames them: raw for a terminal, else the
//! 8-byte multiplexed header (stream, 0, 0, 0, big-endian length) before each piece.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::lifecycle::Exits;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// Whether it came on stderr.
    pub stderr: bool,
    /// The text, with its newline unless the record was a partial line.
    pub text: String,
}

impl Record {
    /// Parses one line of the log file.
    pub fn parse(line: &str) -> Option<Record> {
        let mut parts = line.splitn(4, ' ');
        let time = parts.next()?.to_string();
        let stderr = match parts.next()? {
            "stderr" => true,
            "stdout" => false,
            _ => return None,
        };
        let tag = parts.next()?;
        let mut text = parts.next().unwrap_or("").to_string();
        if tag != "P" {
            text.push('\n');
        }
        Some(Record { time, stderr, text })
    }

    /// Seconds since the epoch (0 when the time does not parse).
    pub fn unix(&self) -> f64 {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
            .unwrap_or(0.0)
    }
}

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// stdout records.
    pub stdout: bool,
    /// stderr records.
    pub stderr: bool,
    /// Only records at or after (seconds since the epoch).
    pub since: Option<f64>,
    /// Only records before.
    pub until: Option<f64>,
    /// Only the last N of the records already written.
    pub tail: Option<usize>,
    /// Prefix each record with its time.
    pub timestamps: bool,
    /// The container has a terminal: no framing.
    pub tty: bool,
}

impl Options {
    fn wants(&self, r: &Record) -> bool {
        (if r.stderr { self.stderr } else { self.stdout })
            && self.since.is_none_or(|s| r.unix() >= s)
            && self.until.is_none_or(|u| r.unix() < u)
    }

    /// The bytes a record becomes on the wire.
    pub fn frame(&self, r: &Record) -> Bytes {
        let mut text = Vec::new();
        if self.timestamps {
            text.extend_from_slice(r.time.as_bytes());
            text.push(b' ');
        }
        text.extend_from_slice(r.text.as_bytes());
        if self.tty {
            return text.into();
        }
        frame(if r.stderr { 2 } else { 1 }, &text)
    }
}

/// Docker's multiplexed frame: stream (0 stdin, 1 stdout, 2 stderr), three zero bytes, the
/// length (big endian u32), the data.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.into()
}

fn read_records(path: &Path) -> Vec<Record> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| Record::parse(&l))
        .collect()
}

/// The records written so far (the rotated file first), as `o` selects them.
pub fn existing(log: &Path, o: &Options) -> Vec<Record> {
    let mut all = read_records(&log.with_extension("log.1"));
    all.extend(read_records(log));
    let mut v: Vec<Record> = all.into_iter().filter(|r| o.wants(r)).collect();
    if let Some(n) = o.tail {
        let skip = v.len().saturating_sub(n);
        v.drain(..skip);
    }
    v
}

/// Runs a log reader that may follow on a thread of its own, which ends with it. A follower
/// polls the file for as long as the container runs: on tokio's blocking pool (8 threads by
/// default) eight attached `docker run`s took every thread, and the store and task calls that
/// would have started their containers waited behind them for ever.
pub fn spawn_follower(f: impl FnOnce() + Send + 'static) {
    // In the runtime's context, so that `follow` can wait on the exit channel.
    let rt = tokio::runtime::Handle::try_current().ok();
    if let Err(e) = std::thread::Builder::new()
        .name("log-follow".into())
        .spawn(move || {
            let _in_rt = rt.as_ref().map(|h| h.enter());
            f()
        })
    {
        tracing::warn!(error = %e, "cannot start a log reader thread");
    }
}

/// Sends the records written so far, as `o` selects them; then, with `then_follow` (the
/// container's exits and the count seen), those written later until it exits, from the
/// size the file had when the old ones were read (no record twice, none lost). Runs on a
/// thread of its own ([`spawn_follower`]); `logs` and attach's `logs=1` use it.
pub fn replay(
    log: PathBuf,
    o: Options,
    then_follow: Option<(watch::Receiver<Exits>, u64)>,
    tx: mpsc::Sender<Bytes>,
) {
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    for r in existing(&log, &o) {
        if tx.blocking_send(o.frame(&r)).is_err() {
            return;
        }
    }
    if let Some((exits, seen)) = then_follow {
        let o = Options { tail: None, ..o };
        follow(log, o, Some(size), exits, seen, tx);
    }
}

/// Follows the log from byte `start` (None: its current end) and sends each
/// wanted record's frame to `tx`, until the container has exited after `exits` (then what is
/// left is drained) or the receiver is gone. Runs on a thread of its own ([`spawn_follower`]).
pub fn follow(
    log: PathBuf,
    o: Options,
    start: Option<u64>,
    mut exits: watch::Receiver<Exits>,
    done_after: u64,
    tx: mpsc::Sender<Bytes>,
) {
    let mut pos: u64 =
        start.unwrap_or_else(|| std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0));
    let mut ino = inode(&log);
    let mut partial = String::new();
    let mut finishing = 0u8;
    loop {
        let ended = {
            let e = exits.borrow();
            e.count > done_after || e.removed
        };
        // The file was rotated: what is left of the old one is in `.log.1`.
        let now_ino = inode(&log);
        if now_ino.is_some() && now_ino != ino {
            if ino.is_some()
                && !send_from(
                    &log.with_extension("log.1"),
                    &mut pos,
                    &mut partial,
                    &o,
                    &tx,
                )
            {
                return;
            }
            pos = 0;
            ino = now_ino;
        }
        if !send_from(&log, &mut pos, &mut partial, &o, &tx) {
            return;
        }
        if ended {
            // Exits are announced after the task is deleted, when its supervisor has written
            // everything: this pass read the rest; one more (5 ms on) for a slow file system.
            finishing += 1;
            if finishing > 1 {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        if ended {
            std::thread::sleep(Duration::from_millis(5));
        } else {
            pause(&mut exits, Duration::from_millis(20));
        }
    }
}

/// Waits `d`, or less when the container's exits change: an attached `docker run` then ends
/// as soon as its container has, not up to a polling period later.
fn pause(exits: &mut watch::Receiver<Exits>, d: Duration) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(async {
            tokio::select! {
                // A closed channel wakes at once: then sleep the period out.
                r = exits.changed() => if r.is_err() { tokio::time::sleep(d).await },
                _ = tokio::time::sleep(d) => {}
            }
        }),
        Err(_) => std::thread::sleep(d),
    }
}

fn inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// Sends the whole records after `pos`; false when the receiver is gone.
fn send_from(
    path: &Path,
    pos: &mut u64,
    partial: &mut String,
    o: &Options,
    tx: &mpsc::Sender<Bytes>,
) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return true;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *pos {
        // Truncated underneath us: start over.
        *pos = 0;
    }
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return true;
    }
    let mut r = std::io::BufReader::new(f);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if !line.ends_with('\n') {
                    // A record still being written: read again next time.
                    return true;
                }
                *pos += n as u64;
                partial.clear();
                if let Some(rec) = Record::parse(line.trim_end_matches('\n')) {
                    if o.wants(&rec) && tx.blocking_send(o.frame(&rec)).is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_frame() {
        let r = Record::parse("2026-12-04T08:00:00.5Z stderr F oops").unwrap();
        assert!(r.stderr);
        assert_eq!(r.text, "oops\n");
        assert!((r.unix().fract() - 0.5).abs() < 1e-3, "{}", r.unix());
        let o = Options {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        assert_eq!(&o.frame(&r)[..], b"\x02\x00\x00\x00\x00\x00\x00\x05oops\n");
        let p = Record::parse("2026-12-04T08:00:00Z stdout P abc").unwrap();
        assert_eq!(p.text, "abc");
        assert!(Record::parse("garbage").is_none());
    }

    #[test]
    fn existing_filters_by_stream_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        std::fs::write(
            &log,
            "2026-12-04T08:00:00Z stdout F a\n2026-12-04T08:00:01Z stderr F b\n2026-12-04T08:00:02Z stdout F c\n",
        )
        .unwrap();
        let o = Options {
            stdout: true,
            tail: Some(1),
            tty: true,
            ..Default::default()
        };
        let v = existing(&log, &o);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].text, "c\n");
        let o = Options {
            stdout: true,
            stderr: true,
            since: Some(
                Record::parse("2026-12-04T08:00:01Z stdout F x")
                    .unwrap()
                    .unix(),
            ),
            ..Default::default()
        };
        assert_eq!(existing(&log, &o).len(), 2);
    }
}
