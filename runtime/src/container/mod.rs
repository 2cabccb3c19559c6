//! Container operations, one per command: create, start, run, state, kill, delete, list.

mod create;
mod exec;
mod ops;
mod run;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;

pub use create::{create, spawn, CreateOptions, Gate, Spawned};
pub use exec::{build_process, exec, ExecOptions};
pub use ops::{
    events, parse_duration, parse_size, pause, ps, resume, stats_json, update, update_resources,
    UpdateFlags,
};
pub use run::run;

use crate::hooks::HookKind;
use crate::signals;
use crate::state::{self, ContainerState, OciState, StateDir, StateError, Status};

/// What every container operation needs from the caller: where the containers' state lives and
/// whether this runtime runs rootless. The command line builds it from its global flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory holding one state directory per container (`--root`).
    pub root: std::path::PathBuf,
    /// Whether to run rootless: cgroups that cannot be created are then skipped.
    pub rootless: bool,
}

/// `start`: let a created container's init exec its process.
pub fn start(ctx: &Settings, id: &str) -> Result<()> {
    let dir = StateDir::open(&ctx.root, id)?;
    let st = dir.load()?;
    match st.status(&dir.path) {
        Status::Created => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        Status::Running => bail!("cannot start an already running container"),
        other => bail!("cannot start a container in the {other} state"),
    }
    let fifo_path = dir.fifo_path();
    let fifo = nix::fcntl::open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening {}", fifo_path.display()))?;
    // Our open unblocked the init's; it writes one byte and then execs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1];
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        match nix::unistd::read(&fifo, &mut buf) {
            Ok(1) => break,
            Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(e) => return Err(anyhow!("reading {}: {e}", fifo_path.display())),
        }
        if !st.init_alive() {
            bail!("container init exited before it was started");
        }
        if Instant::now() > deadline {
            bail!("container init did not answer on the exec fifo");
        }
    }
    // Then until the init's end of the fifo closes: at execve (it is close-on-exec), after
    // its startContainer hooks, so that poststart hooks run after them (or when it died).
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        match nix::unistd::read(&fifo, &mut buf) {
            Ok(0) => break,
            Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(e) => return Err(anyhow!("reading {}: {e}", fifo_path.display())),
        }
        if !st.init_alive() {
            break;
        }
    }
    std::fs::remove_file(&fifo_path)
        .with_context(|| format!("removing {}", fifo_path.display()))?;
    if let Err(e) = run_hooks(&st, HookKind::Poststart, "running") {
        // A failed poststart hook fails start and stops the container.
        let _ = send_signal(Pid::from_raw(st.pid), Signal::SIGKILL);
        return Err(e);
    }
    Ok(())
}

/// Run the config's hooks of `kind` with the container's state (`status`) on their stdin. The
/// config is read again from the bundle.
pub fn run_hooks(st: &ContainerState, kind: HookKind, status: &str) -> Result<()> {
    let text = match std::fs::read(st.bundle.join("config.json")) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                "{kind} hooks: reading {}/config.json: {e}",
                st.bundle.display()
            );
            return Ok(());
        }
    };
    let spec = crate::config::parse(&text)?;
    let Some(hooks) = spec.hooks().as_ref() else {
        return Ok(());
    };
    if kind.of(hooks).is_empty() {
        return Ok(());
    }
    let mut v = serde_json::to_value(st.to_oci(Status::Running))?;
    v["status"] = serde_json::Value::String(status.to_string());
    crate::hooks::run(hooks, kind, v.to_string().as_bytes()).map_err(|e| anyhow!(e))
}

/// `state`: the OCI state of a container.
pub fn state(ctx: &Settings, id: &str) -> Result<OciState> {
    let st = state::read(&ctx.root, id)?;
    let status = st.status(&ctx.root.join(id));
    Ok(st.to_oci(status))
}

/// `kill`: send a signal to the init, or with `all` to every process in the cgroup.
pub fn kill(ctx: &Settings, id: &str, signal: &str, all: bool) -> Result<()> {
    let sig = signals::parse(signal).map_err(|e| anyhow!(e))?;
    let st = state::read(&ctx.root, id)?;
    let status = st.status(&ctx.root.join(id));
    if status == Status::Stopped {
        bail!("container not running");
    }
    if all {
        signal_all(&st, sig)?;
        return Ok(());
    }
    match raw_kill(st.pid, sig) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => bail!("container not running"),
        Err(e) => Err(anyhow!("sending signal {sig} to {}: {e}", st.pid)),
    }
}

fn raw_kill(pid: i32, sig: i32) -> nix::Result<()> {
    Errno::result(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Signal every process of the container's cgroup (thawing a frozen one so it can act).
fn signal_all(st: &ContainerState, sig: i32) -> Result<()> {
    let Some(cg) = &st.cgroup else {
        return raw_kill(st.pid, sig).map_err(|e| anyhow!("sending signal {sig}: {e}"));
    };
    let pids = cg.pids().context("listing the container's processes")?;
    for p in pids {
        let _ = raw_kill(p, sig);
    }
    if cg.is_frozen().unwrap_or(false) {
        cg.thaw().context("thawing the cgroup")?;
    }
    Ok(())
}

/// `delete`: remove a stopped (or, with `force`, any) container's cgroup and state.
pub fn delete(ctx: &Settings, id: &str, force: bool) -> Result<()> {
    let dir = match StateDir::open(&ctx.root, id) {
        Ok(d) => d,
        Err(StateError::NotExist(_)) if force => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let st = match dir.load() {
        Ok(st) => st,
        // A directory without state: a create that died before it saved anything. If it got
        // as far as making the cgroup, what runs there (an init the create had cloned) is
        // killed and the cgroup removed with the directory.
        Err(StateError::NotExist(_)) => {
            if let Some(cg) = dir.load_creating_cgroup()? {
                let st = ContainerState {
                    id: id.to_string(),
                    pid: 0,
                    pid_start: 0,
                    bundle: Default::default(),
                    rootfs: Default::default(),
                    created: String::new(),
                    annotations: Default::default(),
                    owner: String::new(),
                    cgroup: Some(cg),
                    shared_ns_rootfs_mount: None,
                };
                kill_and_remove_cgroup(&st)?;
            }
            dir.remove()?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    match st.status(&dir.path) {
        Status::Stopped | Status::Created => {}
        status if !force => bail!("cannot delete container {id} that is not stopped: {status}"),
        _ => {}
    }
    destroy(&st)?;
    dir.remove()?;
    // As runc: the container is gone whatever the poststop hooks do; they run in order until
    // one fails, which is logged as an error, and the delete succeeds.
    if let Err(e) = run_hooks(&st, HookKind::Poststop, "stopped") {
        tracing::error!("{e:#}");
    }
    Ok(())
}

/// Kill whatever is left of the container, remove its cgroup and, for a container that had no
/// mount namespace of its own, the mounts it left over its rootfs in the caller's namespace.
pub fn destroy(st: &ContainerState) -> Result<()> {
    kill_and_remove_cgroup(st)?;
    if let Some(id) = st.shared_ns_rootfs_mount {
        crate::sys::unmount_if_still(&st.rootfs, id).map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

fn kill_and_remove_cgroup(st: &ContainerState) -> Result<()> {
    if st.init_alive() {
        let _ = send_signal(Pid::from_raw(st.pid), Signal::SIGKILL);
    }
    if let Some(cg) = &st.cgroup {
        // Without a pid namespace the init's children outlive it: kill every process.
        let _ = signal_all(st, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = cg.pids().unwrap_or_default();
            if pids.is_empty() && !st.init_alive() {
                break;
            }
            if Instant::now() > deadline {
                bail!("processes {pids:?} of container {} did not die", st.id);
            }
            for p in &pids {
                let _ = raw_kill(*p, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Child cgroups the container (or its owner, for `exec --cgroup`) made inside its own
        // go with it, as with runc; nothing outside it is touched.
        cg.destroy_with_descendants()
            .with_context(|| format!("removing cgroup {}", cg.cgroups_path()))?;
    } else {
        let deadline = Instant::now() + Duration::from_secs(5);
        while st.init_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// Output formats of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

/// `list`: every container under --root.
pub fn list(ctx: &Settings, format: ListFormat, quiet: bool) -> Result<()> {
    let mut states = Vec::new();
    for id in state::list_ids(&ctx.root)? {
        match state::read(&ctx.root, &id) {
            Ok(st) => {
                let status = st.status(&ctx.root.join(&id));
                states.push(st.to_oci(status));
            }
            Err(StateError::NotExist(_)) => continue,
            Err(e) => tracing::warn!("skipping {id}: {e}"),
        }
    }
    let mut out = std::io::stdout().lock();
    if quiet {
        for s in &states {
            writeln!(out, "{}", s.id)?;
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string(&states)?)?,
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = states
                .iter()
                .map(|s| {
                    [
                        s.id.clone(),
                        s.pid.to_string(),
                        s.status.to_string(),
                        s.bundle.display().to_string(),
                        s.created.clone(),
                        s.owner.clone(),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                table(["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], &rows)
            )?;
        }
    }
    Ok(())
}

/// Columns padded to their widest cell, separated by three spaces (as runc's tabwriter).
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut s = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            ["ID", "PID"],
            &[["abc".into(), "1".into()], ["a".into(), "22".into()]],
        );
        assert_eq!(t, "ID    PID\nabc   1\na     22\n");
    }
}
