//! The container's init: the child that clone() made, from its first instruction to execve().
//!
//! It waits for the parent's "go" (id maps written, cgroup joined), joins namespaces given by path,
//! unshares the cgroup namespace, builds the rootfs and pivots into it, sets hostname, terminal,
//! rlimits, user and capabilities, then says "ready" and blocks until `start` (on the exec fifo)
//! or, under `run`, until the parent's second "go". Every failure goes back to the parent as text.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{setresgid, setresuid, setsid, Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;

use crate::config::Config;
use crate::hooks::{self, HookKind};
use crate::mounts::CgroupMountSource;
use crate::sync::{self, Message};
use crate::{identity, namespaces, rootfs, sched, sys, tty};

/// How the init waits between "ready" and exec.
pub enum StartGate<'a> {
    /// `create`: block opening the exec fifo (an O_PATH fd of it) for writing until `start`.
    Fifo(&'a OwnedFd),
    /// `run`: wait for the parent's second "go" on the sync socket.
    Sync,
}

/// What the init needs; it lives in the parent's memory, which clone() copied.
pub struct InitArgs<'a> {
    pub cfg: &'a Config,
    /// The runtime's own descriptors (its end of the sync socket, the state dir's lock), which
    /// the init closes before anything else (-1: none).
    pub parent_fds: &'a [std::os::fd::RawFd],
    pub sync: &'a OwnedFd,
    pub gate: StartGate<'a>,
    pub console: Option<&'a OwnedFd>,
    pub joins: &'a [(File, CloneFlags)],
    pub cgroup_mount: Option<&'a CgroupMountSource>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    /// The compiled seccomp filter, loaded as late as the process's privileges allow.
    pub seccomp: Option<&'a crate::seccomp::Filter>,
    /// The seccomp agent's socket (listenerPath), connected by the parent, for NOTIFY filters.
    pub notify: Option<&'a std::os::unix::net::UnixStream>,
    /// The idmapped mounts, built by the parent on the host (the init attaches them).
    pub idmapped: &'a crate::idmap::IdmappedMounts,
    /// The cgroup the init moves itself into on "go" (see `Cgroup::join_self`); None when
    /// the parent places it (a new user namespace has no right to the host's cgroup files).
    pub join_cgroup: Option<&'a berth_cgroups::Cgroup>,
}

/// The init's entry point: never returns on success (execve), returns the exit code on failure
/// after telling the parent why.
pub fn run(args: &InitArgs<'_>) -> isize {
    match init(args) {
        Ok(never) => match never {},
        Err(Failure::Setup(msg)) => {
            let _ = sync::send(args.sync, &Message::Error(msg));
            1
        }
        Err(Failure::Exec(msg)) => {
            // After "ready" nobody listens on the sync socket: say it on the container's stderr.
            let line = format!("berth-runc: {msg}\n");
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            127
        }
    }
}

enum Failure {
    Setup(String),
    Exec(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Setup(s)
    }
}

fn init(a: &InitArgs<'_>) -> Result<Infallible, Failure> {
    // A process of its own, as runc's init is: `ps` and `pgrep` must not take the container's
    // init, waiting for `start`, for the runtime's `create` (the torture's runtime kill
    // SIGKILLed it in start's last moment, and `start` reported a process that never ran).
    sys::set_process_title("berth-runc init");
    for &fd in a.parent_fds.iter().filter(|fd| **fd >= 0) {
        // SAFETY: our copies of descriptors only the runtime uses; nothing here owns them.
        unsafe { libc::close(fd) };
    }
    match sync::recv(a.sync) {
        Ok(Some(Message::Go)) => {}
        Ok(_) | Err(_) => return Err("the runtime went away during create".to_string().into()),
    }
    if let Some(cg) = a.join_cgroup {
        // First, while still in the host's cgroup namespace and before any join by path.
        cg.join_self()
            .map_err(|e| format!("placing init in its cgroup: {e}"))?;
    }
    let cfg = a.cfg;
    let time_offsets = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref());
    // Opened while we are still the host's root and dumpable: once non-dumpable, and as root
    // of a new user namespace, our /proc files are no longer ours to write. The offsets are
    // written after the time namespace is unshared (the file acts on the namespace our
    // children will get, as the kernel reads it at write time).
    let offsets_file = match time_offsets {
        Some(_) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/timens_offsets")
                .map_err(|e| format!("opening /proc/self/timens_offsets: {e}"))?,
        ),
        None => None,
    };
    sys::set_non_dumpable().map_err(|e| format!("making the init non-dumpable: {e}"))?;
    let namespaces_list = cfg.namespaces();
    let new_userns = namespaces_list
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let in_userns = cfg.has_namespace(LinuxNamespaceType::User);

    namespaces::join(a.joins)?;
    if new_userns || in_userns {
        // Become root of the user namespace, which the parent's maps made possible.
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| format!("becoming root in the user namespace (setresgid): {e}"))?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| format!("becoming root in the user namespace (setresuid): {e}"))?;
    }
    let unshare_flags = namespaces::unshare_flags(namespaces_list);
    if !unshare_flags.is_empty() {
        unshare(unshare_flags)
            .map_err(|e| format!("unsharing namespaces {unshare_flags:?}: {e}"))?;
    }
    if let (Some(offsets), Some(file)) = (time_offsets, offsets_file) {
        sched::write_time_offsets(offsets, file)?;
    }
    setsid().map_err(|e| format!("setsid: {e}"))?;

    let own_mount_ns = cfg.has_namespace(LinuxNamespaceType::Mount);
    rootfs::prepare(cfg, in_userns, a.cgroup_mount, a.idmapped, own_mount_ns)?;
    // Hooks the init runs inside the container see the container process's environment,
    // never the caller's (which this process still carries from the runtime).
    let process_env: Vec<String> = cfg.process().env().clone().unwrap_or_default();
    // The state for this process's own hooks; the parent sends it with its go-ahead.
    let mut state_json = String::new();
    let hooks = cfg.spec.hooks().as_ref();
    if hooks.is_some_and(wants_round_trip) || a.notify.is_some() {
        sync::send(a.sync, &Message::Hooks).map_err(|e| format!("asking for hooks: {e}"))?;
        match sync::recv(a.sync) {
            Ok(Some(Message::State(s))) => state_json = s,
            Ok(Some(Message::Error(e))) => return Err(e.into()),
            _ => {
                return Err("the runtime went away during the createRuntime hooks"
                    .to_string()
                    .into())
            }
        }
        if let Some(hooks) = hooks {
            hooks::run_with_env(
                hooks,
                HookKind::CreateContainer,
                state_json.as_bytes(),
                Some(&process_env),
            )?;
        }
    }
    // The seccomp agent's message: the container process state, with our host pid. The agent
    // gets it during `create` (see below), so the status it reads is "creating".
    let agent_body = match a.notify {
        Some(_) => {
            let mut state: serde_json::Value = serde_json::from_str(&state_json)
                .map_err(|e| format!("the container state from the runtime: {e}"))?;
            let pid = state["pid"].as_i64().unwrap_or(0) as i32;
            state["status"] = serde_json::Value::from("creating");
            let state_json = state.to_string();
            let metadata = cfg
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().as_ref())
                .and_then(|s| s.listener_metadata().clone());
            crate::seccomp::process_state(state_json.as_bytes(), pid, metadata.as_deref())?
        }
        None => Vec::new(),
    };
    let notify = a.notify.map(|sock| (sock, agent_body.as_slice()));
    rootfs::pivot(cfg, a.no_pivot, own_mount_ns)?;

    if let Some(h) = cfg.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| format!("setting hostname {h:?}: {e}"))?;
    }
    if let Some(d) = cfg.spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if rc != 0 {
            return Err(format!(
                "setting domainname {d:?}: {}",
                std::io::Error::last_os_error()
            )
            .into());
        }
    }

    let process = cfg.process();
    if process.terminal().unwrap_or(false) {
        let socket = a
            .console
            .ok_or_else(|| "terminal is true but there is no console socket".to_string())?;
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        tty::setup(socket, size, true)?;
    }

    // /proc/sys etc. are read-only from here: after tty (which binds /dev/console).
    rootfs::finalize(cfg)?;

    if let Some(linux) = cfg.spec.linux().as_ref() {
        sched::apply_linux(linux)?;
    }
    let env = identity::with_home(
        process.env().clone().unwrap_or_default(),
        process.user().uid(),
    );
    let args: &[String] = process.args().as_deref().unwrap_or(&[]);
    let no_new_privs = identity::become_process(process, in_userns, a.seccomp, notify)?;
    // Whether the filter is still to be loaded, right before execve.
    let mut filter_at_exec = no_new_privs;
    if let (Some(filter), true, Some(_)) = (a.seccomp, no_new_privs, a.notify) {
        // A NOTIFY filter is loaded and its listener handed to the agent during `create`, as
        // runc does: an agent may act on the container before it is started. The few
        // syscalls left before execve then pass through the filter (and the agent).
        identity::load_seccomp(filter, notify)?;
        filter_at_exec = false;
    }

    let program = find_executable(&args[0], &env)?;
    let argv = to_cstrings(args)?;
    let envp = to_cstrings(&env)?;
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", program.display()))?;

    // Nothing of the runtime's may reach the program but stdio and the preserved fds.
    sys::cloexec_from(3 + a.preserve_fds as i32)
        .map_err(|e| format!("marking fds close-on-exec: {e}"))?;

    sync::send(a.sync, &Message::Ready)
        .map_err(|e| format!("telling the runtime we are ready: {e}"))?;
    // The fifo's write end stays open (close-on-exec) until execve: `start` reads to its end,
    // so it returns (and runs poststart hooks) only once startContainer hooks ran and the
    // process was executed, as the runtime-spec orders them.
    let _fifo = match &a.gate {
        StartGate::Fifo(fifo) => {
            // The runtime says "go" once it has saved the state `start` needs; without it (the
            // runtime died) nothing could ever start us: exit rather than wait forever.
            match sync::recv(a.sync) {
                Ok(Some(Message::Go)) => {}
                _ => {
                    return Err(Failure::Exec(
                        "the runtime went away before it saved the container's state".into(),
                    ))
                }
            }
            // Blocks until `start` opens the fifo for reading.
            let f = nix::fcntl::open(
                &sys::fd_path(*fifo),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| Failure::Exec(format!("opening exec fifo: {e}")))?;
            nix::unistd::write(&f, b"0")
                .map_err(|e| Failure::Exec(format!("writing exec fifo: {e}")))?;
            Some(f)
        }
        StartGate::Sync => match sync::recv(a.sync) {
            Ok(Some(Message::Go)) => None,
            _ => return Err(Failure::Exec("the runtime went away before start".into())),
        },
    };
    if let Some(hooks) = cfg.spec.hooks().as_ref() {
        if !HookKind::StartContainer.of(hooks).is_empty() {
            hooks::run_with_env(
                hooks,
                HookKind::StartContainer,
                state_json.as_bytes(),
                Some(&env),
            )
            .map_err(Failure::Exec)?;
        }
    }
    if let (Some(filter), true) = (a.seccomp, filter_at_exec) {
        // As late as possible: only execve runs under the filter from here (unless it was
        // loaded during create for its agent, above).
        identity::load_seccomp(filter, notify).map_err(Failure::Exec)?;
    }
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(Failure::Exec(format!("exec {}: {err}", program.display())))
}

/// Whether the init must stop before pivot_root for hooks: createRuntime/prestart run by the
/// parent then, createContainer by the init, and startContainer needs the state the parent sends.
pub fn wants_round_trip(hooks: &oci_spec::runtime::Hooks) -> bool {
    [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
    ]
    .iter()
    .any(|k| !k.of(hooks).is_empty())
}

fn to_cstrings(list: &[String]) -> Result<Vec<CString>, String> {
    list.iter().map(|s| sys::cstring(s)).collect()
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Find the program as execvp would, with PATH from the process's env; the error is the one
/// users know from runc and Docker.
pub fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, String> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        if is_exec(&p) {
            return Ok(p);
        }
        return Err(format!(
            "exec: {name:?}: executable file not found or not executable"
        ));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if is_exec(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_found_on_path() {
        assert_eq!(
            find_executable("sh", &["PATH=/bin".into()]).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let err = find_executable("no-such-program-xyz", &[]).unwrap_err();
        assert!(err.contains("executable file not found in $PATH"), "{err}");
        assert!(find_executable("/etc/passwd", &[]).is_err());
    }
}
