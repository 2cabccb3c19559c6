//! berthd started on temp dirs for one test, and the commands that talk to it.
//!
//! [`Berthd`] owns a temp dir holding `root/`, `state/` and the socket. Dropping it stops the
//! daemon (SIGTERM, then SIGKILL after 5 s, by pid), lazily unmounts anything still mounted under
//! the temp dir (deepest first) and removes the dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bins;

/// Debian's docker CLI (package docker.io, 20.10).
pub const DOCKER: &str = "/usr/bin/docker";

/// A berthd for one test.
pub struct Berthd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    config: Option<PathBuf>,
    /// Run berthd (and so its shims and runtimes) in a private mount namespace whose
    /// /sys/fs/cgroup/unified is an empty tmpfs: crun 1.8 refuses this host's hybrid layout
    /// otherwise (see shared/runc-contract.md). Nothing changes on the host.
    hide_unified: bool,
    /// Run berthd (its shims, containers, bridges, iptables rules) in a network namespace of
    /// the test's own with only loopback: nothing it does reaches the host's network, and
    /// everything goes with the namespace.
    netns: Option<PathBuf>,
    /// Extra environment for berthd.
    env: Vec<(String, String)>,
    /// A caller's dir used instead of `dir` for everything (see [`Berthd::start_on`]).
    on: Option<PathBuf>,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the command exited 0; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Panics unless the command failed; returns stderr.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stderr
    }

    /// Parses stdout as JSON (panicking with the text if it is not).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let s = self.ok();
        serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
    }
}

impl Berthd {
    /// Starts berthd on a fresh temp dir and waits for its socket.
    pub fn start() -> Result<Berthd> {
        Self::start_inner(None)
    }

    /// Starts berthd with `toml` as its `--config` file.
    pub fn start_with_config(toml: &str) -> Result<Berthd> {
        Self::start_inner(Some(toml))
    }

    /// Starts berthd where crun can run on this host: in a private mount namespace with an
    /// empty tmpfs over /sys/fs/cgroup/unified. Its mounts are invisible to the test.
    pub fn start_for_crun() -> Result<Berthd> {
        let mut d = Self::new_inner(None)?;
        d.hide_unified = true;
        d.spawn()?;
        Ok(d)
    }

    /// Starts berthd in a network namespace of its own (see [`Berthd::netns`]), with `env`
    /// added to its environment.
    pub fn start_in_netns(env: &[(&str, &str)]) -> Result<Berthd> {
        let mut d = Self::new_inner(None)?;
        let ns = berth_network::netns::Netns::create(&d.dir().join("netns"), "net")
            .context("creating the test's network namespace")?;
        d.netns = Some(ns.path().to_path_buf());
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.spawn()?;
        Ok(d)
    }

    /// Starts berthd (in the host's network namespace) with `env` added to its environment,
    /// e.g. short registry or runtime timeouts.
    pub fn start_with_env(env: &[(&str, &str)]) -> Result<Berthd> {
        let mut d = Self::new_inner(None)?;
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.spawn()?;
        Ok(d)
    }

    /// Starts berthd on `dir` (a directory the caller made, e.g. a small tmpfs) instead of a
    /// fresh temp dir under /var/tmp, with `env` added. `dir` holds root, state and sockets
    /// as [`Berthd::dir`] does; it is not removed on drop (its owner removes it).
    pub fn start_on(dir: &Path, env: &[(&str, &str)]) -> Result<Berthd> {
        let mut d = Self::new_inner(None)?;
        d.on = Some(dir.to_path_buf());
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.spawn()?;
        Ok(d)
    }

    /// The network namespace berthd runs in, if it has one of its own.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Runs `args` in berthd's network namespace (nsenter), e.g. to reach a port it published
    /// on 127.0.0.1 or to list its veths.
    pub fn in_netns(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("nsenter");
        if let Some(ns) = &self.netns {
            cmd.arg(format!("--net={}", ns.display()));
        }
        self.run(cmd.args(args))
    }

    fn start_inner(toml: Option<&str>) -> Result<Berthd> {
        let mut d = Self::new_inner(toml)?;
        d.spawn()?;
        Ok(d)
    }

    fn new_inner(toml: Option<&str>) -> Result<Berthd> {
        // Under /var/tmp, not /tmp: overlayfs needs a real file system for upper/work dirs, and a
        // test machine's /tmp may be tmpfs with limited size.
        let dir = tempfile::Builder::new()
            .prefix("berthd-it-")
            .tempdir_in("/var/tmp")
            .context("creating berthd's temp dir")?;
        let config = match toml {
            Some(t) => {
                let p = dir.path().join("berthd.toml");
                std::fs::write(&p, t)?;
                Some(p)
            }
            None => None,
        };
        Ok(Berthd {
            dir,
            child: None,
            config,
            hide_unified: false,
            netns: None,
            env: Vec::new(),
            on: None,
        })
    }

    /// The temp dir holding everything.
    pub fn dir(&self) -> &Path {
        self.on.as_deref().unwrap_or(self.dir.path())
    }

    /// `--root`.
    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    /// `--state`.
    pub fn state(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// Waits (up to 30 s) until berthd has released the networks of deleted tasks: it tears
    /// them down on a thread of its own after the delete returns
    /// (`<state>/networks-releasing` empty).
    #[track_caller]
    pub fn networks_released(&self) {
        let queue = self.state().join("networks-releasing");
        until("berthd to release deleted tasks' networks", 30, || {
            std::fs::read_dir(&queue).map_or(true, |mut r| r.next().is_none())
        });
    }

    /// `--address`.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("berthd.sock")
    }

    /// `--docker-address`: the Docker Engine API's socket.
    pub fn docker_socket(&self) -> PathBuf {
        self.dir().join("docker.sock")
    }

    /// Runs Debian's docker CLI (`/usr/bin/docker`, 20.10; not the newer one in /usr/local)
    /// against berthd's Docker socket, with a config dir of its own (no credentials or
    /// contexts of the host's).
    pub fn docker(&self, args: &[&str]) -> Out {
        self.run(&mut self.docker_command(args))
    }

    /// The command [`Berthd::docker`] runs, for a caller that must spawn it (a streaming
    /// command it stops itself).
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_CONFIG", self.dir().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .arg("-H")
            .arg(format!("unix://{}", self.docker_socket().display()))
            .args(args);
        cmd
    }

    /// One raw HTTP/1.1 request on the Docker socket, for what the CLI cannot say (malformed
    /// JSON, unknown routes, bad query values): (status, head, body). The body is sent with
    /// `content_type`; the answer is read to its end (the request says `Connection: close`).
    pub fn docker_http(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, String, String) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.docker_socket())
            .expect("connecting to the docker socket");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("setting a read timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("writing the request");
        // A server may answer (413) before reading everything: a failed write is fine then.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        // A server that answers without reading the whole body (413) closes with data unread:
        // the kernel then ends our reads with ECONNRESET after the answer, which is kept.
        if let Err(e) = s.read_to_end(&mut out) {
            assert!(!out.is_empty(), "reading the answer: {e}");
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    /// Loads `image` with `docker load` (from a `docker save` archive written in the daemon's
    /// temp dir); panics if the load fails.
    pub fn docker_load(&self, image: &crate::manager::image::Image) {
        let tar = self.dir().join(format!("load-{}.tar", unique("img")));
        image
            .write_docker_archive(&tar)
            .expect("writing the image archive");
        let p = tar.to_string_lossy().into_owned();
        self.docker(&["load", "-i", &p]).ok();
        let _ = std::fs::remove_file(&tar);
    }

    /// The docker CLI's environment as a shell prefix (`DOCKER_CONFIG=... /usr/bin/docker -H
    /// unix://...`), for commands run through `sh -c` or script(1).
    pub fn docker_shell(&self) -> String {
        format!(
            "DOCKER_CONFIG={} {DOCKER} -H unix://{}",
            self.dir().join("docker-config").display(),
            self.docker_socket().display()
        )
    }

    /// Runs `docker ARGS` (a shell-quoted string) on a terminal of script(1)'s, with no
    /// input: exit code, stdout, stderr. A CLI still running after 30 s is killed and the test
    /// fails.
    pub fn docker_on_tty(&self, args: &str) -> (i32, String, String) {
        self.script(&format!("{} {args}", self.docker_shell()), Stdio::null())
    }

    /// [`Berthd::docker_on_tty`], typing `typed` into the terminal a second after the start
    /// (for `-it` runs and execs).
    pub fn docker_typed(&self, args: &str, typed: &str) -> (i32, String, String) {
        self.docker_typed_steps(args, &[typed])
    }

    /// [`Berthd::docker_typed`] typing each of `steps` a second after the one before (so
    /// that, say, a detach key comes after the output of the command typed first).
    pub fn docker_typed_steps(&self, args: &str, steps: &[&str]) -> (i32, String, String) {
        let typing: String = steps
            .iter()
            .map(|t| format!("sleep 1; printf '{t}'; "))
            .collect();
        let mut feed = Command::new("sh")
            .args(["-c", &format!("{typing}sleep 4")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("running the typist");
        let input = feed.stdout.take().expect("the typist's output");
        let out = self.script(&format!("{} {args}", self.docker_shell()), input.into());
        let _ = feed.kill();
        let _ = feed.wait();
        out
    }

    /// Runs `berth --address <socket> -n <ns> <args>` on a terminal of script(1)'s, with no
    /// input: exit code, the terminal's output (stdout and stderr together), script's stderr.
    /// A CLI still running after 30 s is killed and the test fails.
    pub fn berth_on_tty(&self, ns: &str, args: &[&str]) -> (i32, String, String) {
        let cmd = self.berth_command(Some(ns), args);
        let line = format!(
            "env -u BERTH_ADDRESS -u BERTH_NAMESPACE {}",
            crate::containerd::command::describe_command(&cmd)
        );
        self.script(&line, Stdio::null())
    }

    fn script(&self, cmd: &str, stdin: Stdio) -> (i32, String, String) {
        let child = Command::new("script")
            .args(["-qec", cmd, "/dev/null"])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running script(1)");
        wait_timeout(child, Duration::from_secs(30))
    }

    /// Runs the docker CLI with `input` on its stdin (then its end); exit code, stdout, stderr.
    /// A CLI still running after 30 s is killed and the test fails.
    pub fn docker_stdin(&self, args: &[&str], input: &[u8]) -> (i32, String, String) {
        use std::io::Write;
        let mut child = self
            .docker_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running docker");
        let mut stdin = child.stdin.take().expect("docker's stdin");
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = wait_timeout(child, std::time::Duration::from_secs(30));
        let _ = writer.join();
        out
    }

    /// Runs Debian's docker-compose 1.29 in `dir` (its project dir) as project `project`
    /// against berthd's Docker socket (classic builder, no credentials of the host's).
    pub fn compose(&self, dir: &Path, project: &str, args: &[&str]) -> Out {
        self.run(
            Command::new("docker-compose")
                .current_dir(dir)
                .env(
                    "DOCKER_HOST",
                    format!("unix://{}", self.docker_socket().display()),
                )
                .env("DOCKER_CONFIG", dir.join(".docker"))
                .env("COMPOSE_DOCKER_CLI_BUILD", "0")
                .env("DOCKER_BUILDKIT", "0")
                .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
                .env_remove("DOCKER_CONTEXT")
                .args(["-p", project])
                .args(args),
        )
    }

    /// The daemon's log file (stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("berthd.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(bins::berthd());
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Open (close-on-exec) until berthd has started.
        let netns_file = match &self.netns {
            Some(ns) => {
                Some(std::fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?)
            }
            None => None,
        };
        if let Some(f) = &netns_file {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = f.as_raw_fd();
            // SAFETY: only setns between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.hide_unified {
            use nix::mount::{mount, MsFlags};
            use std::os::unix::process::CommandExt;
            // SAFETY: only syscalls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                    mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                        None::<&str>,
                    )?;
                    mount(
                        Some("tmpfs"),
                        "/sys/fs/cgroup/unified",
                        Some("tmpfs"),
                        MsFlags::empty(),
                        None::<&str>,
                    )?;
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--address")
            .arg(self.socket())
            .arg("--docker-address")
            .arg(self.docker_socket())
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bins::berthd().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    self.child = None;
                    bail!("berthd exited early ({st}):\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("berthd did not listen within 10 s:\n{}", self.log())
    }

    /// Stops the daemon with `signal` and waits (SIGKILL after 5 s).
    pub fn stop_with(&mut self, signal: Signal) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the daemon (a crash) and waits for it.
    pub fn crash(&mut self) {
        self.stop_with(Signal::SIGKILL);
    }

    /// Starts the daemon again on the same dirs.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_with(Signal::SIGTERM);
        self.spawn()
    }

    /// Runs `berth --address <socket> -n <ns> <args>`.
    pub fn berth(&self, ns: &str, args: &[&str]) -> Out {
        self.run(
            Command::new(bins::berth())
                .arg("--address")
                .arg(self.socket())
                .arg("-n")
                .arg(ns)
                .args(args),
        )
    }

    /// `berth --address <socket> [-n <ns>] <args>`, not started: for a test that spawns it
    /// (piped stdio, signals, running beside other commands) instead of waiting for it.
    pub fn berth_command(&self, ns: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(bins::berth());
        cmd.arg("--address").arg(self.socket());
        if let Some(ns) = ns {
            cmd.arg("-n").arg(ns);
        }
        cmd.args(args)
            .env_remove("BERTH_ADDRESS")
            .env_remove("BERTH_NAMESPACE");
        cmd
    }

    /// Runs `berth` as [`Berthd::berth`] does, with extra environment variables.
    pub fn berth_env(&self, ns: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(bins::berth());
        cmd.arg("--address")
            .arg(self.socket())
            .arg("-n")
            .arg(ns)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.run(&mut cmd)
    }

    /// Runs Debian's `ctr -a <socket> -n <ns> <args>`.
    pub fn ctr(&self, ns: &str, args: &[&str]) -> Out {
        self.run(
            Command::new("ctr")
                .arg("-a")
                .arg(self.socket())
                .arg("-n")
                .arg(ns)
                .args(args),
        )
    }

    fn run(&self, cmd: &mut Command) -> Out {
        let o = cmd
            .env_remove("BERTH_ADDRESS")
            .env_remove("BERTH_NAMESPACE")
            .stdin(Stdio::null())
            .output();
        match o {
            Ok(o) => Out::from(o),
            Err(e) => Out {
                code: -1,
                stdout: String::new(),
                stderr: format!("spawning {cmd:?}: {e}"),
            },
        }
    }
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

impl Berthd {
    /// Kills what a test that failed half-way left running (supervisors outlive berthd by
    /// design) and removes those containers' cgroups (`/<ns>/<id>` on every hierarchy).
    fn kill_left_containers(&self) {
        use nix::sys::signal::kill;
        use nix::unistd::Pid;
        let tasks = self.state().join("tasks");
        for pid in crate::manager::tasks::supervisors_under(&tasks) {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let hierarchies: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                if !matches!(right.split(' ').next(), Some("cgroup" | "cgroup2")) {
                    return None;
                }
                left.split(' ').nth(4).map(PathBuf::from)
            })
            .collect();
        for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            for id in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                for h in &hierarchies {
                    let cg = h.join(ns.file_name()).join(id.file_name());
                    // The kernel frees a cgroup a moment after its last process is reaped.
                    for _ in 0..50 {
                        if !cg.exists() || std::fs::remove_dir(&cg).is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        // Let queued network releases finish first: a CNI plugin berthd started would outlive
        // it and write its IPAM lock and cache back into the dir as it is being removed.
        let queue = self.state().join("networks-releasing");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.is_some()
            && std::fs::read_dir(&queue).is_ok_and(|mut r| r.next().is_some())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_with(Signal::SIGTERM);
        self.kill_left_containers();
        // The names resolver outlives berthd by design (running containers keep their
        // names across a restart); the test's goes with the test.
        berth_network::dns::Aardvark::new(&self.state().join("networks").join("dns"), 53).stop();
        let own = self.on.clone();
        for m in mounts_under(self.dir())
            .into_iter()
            .filter(|m| Some(m) != own.as_ref())
        {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A unique suffix for names in one test process.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory with mounts on it, unmounted (lazily) and removed on drop.
pub struct MountGuard {
    /// The mount point.
    pub dir: tempfile::TempDir,
    count: usize,
}

impl MountGuard {
    /// Mounts snapshot mounts as `berth --format json snapshots view` prints them
    /// (`[{type, source, options}]`) on a fresh dir.
    pub fn mount_json(mounts: &serde_json::Value) -> Result<MountGuard> {
        let dir = tempfile::Builder::new()
            .prefix("berth-view-")
            .tempdir_in("/var/tmp")?;
        let mut g = MountGuard { dir, count: 0 };
        for m in mounts.as_array().context("mounts must be a list")? {
            let ty = m["type"].as_str().unwrap_or_default();
            let src = m["source"].as_str().unwrap_or_default();
            let opts: Vec<&str> = m["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.as_str())
                .collect();
            let mut cmd = Command::new("mount");
            if ty == "bind" || opts.iter().any(|o| *o == "rbind" || *o == "bind") {
                cmd.arg("--bind");
                let ro = opts.contains(&"ro");
                cmd.arg(src).arg(g.dir.path());
                let o = cmd.output()?;
                if !o.status.success() {
                    bail!("mount --bind {src}: {}", String::from_utf8_lossy(&o.stderr));
                }
                g.count += 1;
                if ro {
                    let o = Command::new("mount")
                        .args(["-o", "remount,bind,ro"])
                        .arg(g.dir.path())
                        .output()?;
                    if !o.status.success() {
                        bail!("remount ro: {}", String::from_utf8_lossy(&o.stderr));
                    }
                }
            } else {
                let o = cmd
                    .args(["-t", ty, src])
                    .arg(g.dir.path())
                    .args(["-o", &opts.join(",")])
                    .output()?;
                if !o.status.success() {
                    bail!("mount -t {ty}: {}", String::from_utf8_lossy(&o.stderr));
                }
                g.count += 1;
            }
        }
        Ok(g)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..self.count {
            let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A small tmpfs on a private temp dir under /var/tmp, to fill a disk on purpose: unmounted
/// (lazily) and removed on drop, pass or fail.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` bytes.
    pub fn mount(size: u64) -> Result<SmallDisk> {
        let dir = tempfile::Builder::new()
            .prefix("berth-small-disk-")
            .tempdir_in("/var/tmp")?;
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0755").as_str()),
        )
        .with_context(|| format!("mounting a tmpfs on {}", dir.path().display()))?;
        Ok(SmallDisk { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows (or shrinks) the tmpfs to `size` bytes, keeping its files.
    pub fn resize(&self, size: u64) -> Result<()> {
        nix::mount::mount(
            None::<&str>,
            self.dir.path(),
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT
                | nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size}").as_str()),
        )
        .with_context(|| format!("resizing the tmpfs on {}", self.dir.path().display()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        for m in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Every regular file under `dir` (recursively), relative paths.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p.strip_prefix(dir).unwrap_or(&p).to_path_buf()),
                _ => {}
            }
        }
    }
    out
}

/// Waits for a child with a deadline (killed after it: a hang is a failure, not a stuck
/// test); exit code, stdout, stderr.
pub fn wait_timeout(
    child: std::process::Child,
    limit: std::time::Duration,
) -> (i32, String, String) {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(o)) => (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        _ => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the command did not finish within {limit:?}");
        }
    }
}

/// Polls `f` every 100 ms until it holds; panics naming `what` after `secs` seconds.
#[track_caller]
pub fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
