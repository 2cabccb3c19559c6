//! The supervisor's loop: reap children (signalfd), answer requests on `BUNDLE/shim.sock`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}

impl Server {
    /// Binds the socket; `init` is the init process's pid (exec id "").
    pub fn bind(
        args: Args,
        sigfd: OwnedFd,
        init: u32,
        logs: crate::logs::Logs,
    ) -> Result<Server, String> {
        let path = args.bundle.join("shim.sock");
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
        let mut procs = HashMap::new();
        procs.insert(
            String::new(),
            Proc {
                pid: init,
                exit: None,
            },
        );
        Ok(Server {
            args,
            listener,
            sigfd,
            procs,
            orphans: HashMap::new(),
            waiters: Vec::new(),
            logs,
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
            ];
            fds.extend(self.logs.fds().into_iter().map(pollfd));
            // SAFETY: poll on valid pollfds, `fds.len()` of them.
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
            for p in &fds[2..] {
                if p.revents != 0 {
                    self.logs.ready(p.fd);
                }
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
        // Its output is in the log before anyone learns that it ended.
        self.logs.drain();
        if let Some(p) = self.procs.get_mut(id) {
            p.exit = Some(exit);
        }
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

    /// Answers one request; true on `shutdown`.
    fn handle(&mut self, s: UnixStream) -> bool {
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
                        Ok(pid) => {
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
