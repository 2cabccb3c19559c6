//! The supervisor's loop: reap children (signalfd), answer requests on `BUNDLE/shim.sock`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::console::Tty;
use crate::oom::OomWatch;
use crate::proc;
use crate::Args;

/// How a process ended: exit code and when.
#[derive(Debug, Clone, Copy)]
struct Exit {
    code: u32,
    secs: u64,
    nanos: u32,
}

impl Exit {
    fn now(code: u32) -> Exit {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Exit {
            code,
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    fn line(&self) -> String {
        format!("{} {} {}", self.code, self.secs, self.nanos)
    }
}

struct Proc {
    pid: u32,
    exit: Option<Exit>,
}

/// Exits of pids not (yet) known as one of ours: an exec can end before its pid file is read.
const MAX_ORPHANS: usize = 256;

/// The supervisor's state.
pub struct Server {
    args: Args,
    listener: UnixListener,
    sigfd: OwnedFd,
    procs: HashMap<String, Proc>,
    orphans: HashMap<u32, Exit>,
    waiters: Vec<(String, UnixStream)>,
    logs: crate::logs::Logs,
    /// Terminals by exec id ("" for the init), until their output has ended.
    ttys: HashMap<String, Tty>,
    oom: Option<OomWatch>,
    /// OOM kills seen since the shim started.
    ooms: u64,
    /// `oom N` requests waiting for the count to pass N.
    oom_waiters: Vec<(u64, UnixStream)>,
}

impl Server {
    /// Binds the socket; `init` is the init process (exec id "").
    pub fn bind(
        args: Args,
        sigfd: OwnedFd,
        init: proc::Started,
        oom: Option<OomWatch>,
        logs: crate::logs::Logs,
    ) -> Result<Server, String> {
        let path = args.bundle.join("shim.sock");
        let _ = std::fs::remove_file(&path);
        // Bound through an fd of the bundle: `/proc/self/fd/N/shim.sock` fits a unix socket
        // path's 107 bytes whatever the length of the bundle's path (berthd connects likewise).
        let dir = std::fs::File::open(&args.bundle)
            .map_err(|e| format!("opening {}: {e}", args.bundle.display()))?;
        let short = format!("/proc/self/fd/{}/shim.sock", dir.as_raw_fd());
        let listener =
            UnixListener::bind(&short).map_err(|e| format!("binding {}: {e}", path.display()))?;
        drop(dir);
        let mut procs = HashMap::new();
        procs.insert(
            String::new(),
            Proc {
                pid: init.pid,
                exit: None,
            },
        );
        let mut ttys = HashMap::new();
        if let Some(t) = init.tty {
            ttys.insert(String::new(), t);
        }
        Ok(Server {
            args,
            listener,
            sigfd,
            procs,
            orphans: HashMap::new(),
            waiters: Vec::new(),
            logs,
            ttys,
            oom,
            ooms: 0,
            oom_waiters: Vec::new(),
        })
    }

    /// Serves until `shutdown`.
    pub fn run(&mut self) {
        // A child may have ended before SIGCHLD was watched.
        self.reap();
        loop {
            let pollfd = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let mut fds = vec![
                pollfd(self.listener.as_raw_fd()),
                pollfd(self.sigfd.as_raw_fd()),
                pollfd(self.oom.as_ref().map_or(-1, OomWatch::fd)),
            ];
            let fixed = fds.len();
            fds.extend(self.logs.fds().into_iter().map(pollfd));
            let logs_end = fds.len();
            for t in self.ttys.values() {
                t.poll_fds(&mut fds);
            }
            // SAFETY: poll on valid pollfds, `fds.len()` of them (a negative fd is skipped).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("berth-shim: poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            // OOM first: the kill also ends a process, and the event should precede its exit.
            if fds[2].revents != 0 {
                self.oom_ready();
            }
            for p in &fds[fixed..logs_end] {
                if p.revents != 0 {
                    self.logs.ready(p.fd);
                }
            }
            if fds[logs_end..].iter().any(|p| p.revents != 0) {
                self.pump_ttys();
            }
            if fds[1].revents != 0 {
                self.drain_signals();
                self.reap();
            }
            if fds[0].revents != 0 {
                match self.listener.accept() {
                    Ok((s, _)) => {
                        if self.handle(s) {
                            let _ = std::fs::remove_file(self.args.bundle.join("shim.sock"));
                            return;
                        }
                    }
                    Err(e) => eprintln!("berth-shim: accept: {e}"),
                }
            }
        }
    }

    /// Moves terminal input and output; forgets terminals whose process has ended and whose
    /// output is delivered.
    fn pump_ttys(&mut self) {
        for t in self.ttys.values_mut() {
            t.pump();
        }
        let procs = &self.procs;
        self.ttys
            .retain(|id, t| !t.finished() || procs.get(id).is_some_and(|p| p.exit.is_none()));
    }

    fn oom_ready(&mut self) {
        let Some(w) = self.oom.as_mut() else { return };
        let new = w.ready();
        if new == 0 {
            return;
        }
        self.ooms += new;
        let (count, mut keep) = (self.ooms, Vec::new());
        for (seen, mut s) in self.oom_waiters.drain(..) {
            if count > seen {
                let _ = writeln!(s, "oom {count}");
            } else {
                keep.push((seen, s));
            }
        }
        self.oom_waiters = keep;
    }

    fn drain_signals(&self) {
        let mut buf = [0u8; 128 * 4];
        loop {
            // SAFETY: read into a local buffer from the nonblocking signalfd.
            let n =
                unsafe { libc::read(self.sigfd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let exit = Exit::now(proc::exit_code(status));
            self.record(pid as u32, exit);
        }
    }

    fn record(&mut self, pid: u32, exit: Exit) {
        let id = self
            .procs
            .iter()
            .find(|(_, p)| p.pid == pid && p.exit.is_none())
            .map(|(id, _)| id.clone());
        match id {
            Some(id) => self.exited(&id, exit),
            None => {
                if self.orphans.len() >= MAX_ORPHANS {
                    self.orphans.clear();
                }
                self.orphans.insert(pid, exit);
            }
        }
    }

    fn exit_file(&self, id: &str) -> std::path::PathBuf {
        if id.is_empty() {
            self.args.bundle.join("exit")
        } else {
            self.args.bundle.join(format!("exec-{id}.exit"))
        }
    }

    fn exited(&mut self, id: &str, exit: Exit) {
        // Its output is in the log (or on its way to the client) before anyone learns that it
        // ended; a last OOM kill is counted before the exit is told.
        self.logs.drain();
        if id.is_empty() {
            self.oom_ready();
            for (_, mut s) in self.oom_waiters.drain(..) {
                let _ = writeln!(s, "exit");
            }
        }
        if let Some(p) = self.procs.get_mut(id) {
            p.exit = Some(exit);
        }
        self.pump_ttys();
        let path = self.exit_file(id);
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, exit.line()).and_then(|_| std::fs::rename(&tmp, &path))
        {
            eprintln!("berth-shim: writing {}: {e}", path.display());
        }
        let line = format!("{}\n", exit.line());
        let mut keep = Vec::new();
        for (wid, mut s) in self.waiters.drain(..) {
            if wid == id {
                let _ = s.write_all(line.as_bytes());
            } else {
                keep.push((wid, s));
            }
        }
        self.waiters = keep;
    }

    /// Tells those waiting for an exec that failed to start.
    fn fail_waiters(&mut self, id: &str, msg: &str) {
        let mut keep = Vec::new();
        for (wid, mut s) in self.waiters.drain(..) {
            if wid == id {
                let _ = writeln!(s, "err {msg}");
            } else {
                keep.push((wid, s));
            }
        }
        self.waiters = keep;
    }

    /// Forgets parked requests whose client went away (a berthd that died or restarted), so
    /// they do not pile up over the container's life.
    fn prune_waiters(&mut self) {
        self.waiters.retain(|(_, s)| peer_alive(s));
        self.oom_waiters.retain(|(_, s)| peer_alive(s));
    }

    /// Answers one request; true on `shutdown`.
    fn handle(&mut self, s: UnixStream) -> bool {
        self.prune_waiters();
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let mut r = BufReader::new(&s);
        if r.read_line(&mut line).is_err() {
            return false;
        }
        let line = line.trim_end_matches('\n');
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        let mut s = s;
        match cmd {
            "wait" => match self.procs.get(arg) {
                Some(Proc {
                    exit: Some(exit), ..
                }) => {
                    let _ = writeln!(s, "{}", exit.line());
                }
                Some(_) => self.waiters.push((arg.to_string(), s)),
                // A registered exec not started yet: clients wait before they start.
                None if !arg.is_empty()
                    && self.args.bundle.join(format!("exec-{arg}.json")).exists() =>
                {
                    self.waiters.push((arg.to_string(), s))
                }
                None => {
                    let _ = writeln!(s, "err no process {arg:?}");
                }
            },
            "exec" => {
                let reply = if arg.is_empty() || self.procs.contains_key(arg) {
                    format!("err exec id {arg:?} is empty or already started")
                } else {
                    match proc::exec(&self.args, arg, &mut self.logs) {
                        Ok(proc::Started { pid, tty }) => {
                            if let Some(t) = tty {
                                self.ttys.insert(arg.to_string(), t);
                            }
                            self.procs.insert(arg.to_string(), Proc { pid, exit: None });
                            if let Some(exit) = self.orphans.remove(&pid) {
                                self.exited(arg, exit);
                            }
                            format!("ok {pid}")
                        }
                        Err(e) => {
                            let e = e.replace('\n', " ");
                            self.fail_waiters(arg, &e);
                            format!("err {e}")
                        }
                    }
                };
                let _ = writeln!(s, "{reply}");
                // The runtime's exit may have left other children to reap.
                self.reap();
            }
            "resize" => {
                let mut it = arg.split_whitespace();
                let size = (it.next().map(str::parse), it.next().map(str::parse));
                let id = it.next().unwrap_or("");
                let reply = match (size, self.ttys.get(id)) {
                    ((Some(Ok(w)), Some(Ok(h))), Some(t)) => match t.resize(w, h) {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("err {e}"),
                    },
                    ((Some(Ok(_)), Some(Ok(_))), None) => {
                        format!("err process {id:?} has no terminal")
                    }
                    _ => format!("err bad resize request {arg:?}"),
                };
                let _ = writeln!(s, "{reply}");
            }
            "closein" => {
                if let Some(t) = self.ttys.get_mut(arg) {
                    t.close_input();
                }
                let _ = writeln!(s, "ok");
            }
            "oom" => {
                let ended = self.procs.get("").is_some_and(|p| p.exit.is_some());
                match arg.parse::<u64>() {
                    _ if arg.is_empty() => {
                        let _ = writeln!(s, "oom {}", self.ooms);
                    }
                    Ok(seen) if self.ooms > seen => {
                        let _ = writeln!(s, "oom {}", self.ooms);
                    }
                    Ok(_) if ended => {
                        let _ = writeln!(s, "exit");
                    }
                    Ok(seen) => self.oom_waiters.push((seen, s)),
                    Err(_) => {
                        let _ = writeln!(s, "err bad oom request {arg:?}");
                    }
                }
            }
            "shutdown" => {
                let _ = writeln!(s, "ok");
                return true;
            }
            other => {
                let _ = writeln!(s, "err unknown request {other:?}");
            }
        }
        false
    }
}

/// False once the other end of a parked request has closed (it will never send more, so a
/// peek that reads zero bytes means end of file).
fn peer_alive(s: &UnixStream) -> bool {
    let mut b = 0u8;
    // SAFETY: a nonblocking peek of one byte into a local.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
}
