//! `create` (and the first half of `run`): validate, claim the id, make the cgroup, clone the init
//! into its namespaces, write its id maps, place it in the cgroup, wait for "ready", save state.
//! Any failure undoes everything: the child is killed, the cgroup and state dir removed.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_cgroups::{Cgroup, CgroupVersion};
use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use super::Settings;
use crate::config::{self, Config};
use crate::hooks::{self, HookKind};
use crate::init::{self, InitArgs, StartGate};
use crate::mounts::CgroupMountSource;
use crate::state::{proc_stat, ContainerState, StateDir};
use crate::sync::{self, Message};
use crate::{devices, namespaces, tty};

/// What `create` is asked to do.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
}

/// How the new init will be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// By a later `start` (the exec fifo).
    Fifo,
    /// By this process (run), over the sync socket.
    Sync,
}

/// A created container whose init waits to be started.
pub struct Spawned {
    pub dir: StateDir,
    pub state: ContainerState,
    pub config: Config,
    /// The sync socket (for a [`Gate::Sync`] start).
    pub sync: OwnedFd,
    /// Our end of the console socketpair when `run` holds the terminal itself.
    pub console_peer: Option<std::os::unix::net::UnixStream>,
}

/// `create`: the init is left waiting on the exec fifo, in all its namespaces and its cgroup.
pub fn create(ctx: &Settings, opts: &CreateOptions) -> Result<()> {
    let spawned = spawn(ctx, opts, Gate::Fifo)?;
    drop(spawned);
    Ok(())
}

/// Undoes a half-made container unless disarmed.
struct Rollback {
    dir: Option<StateDir>,
    cgroup: Option<Cgroup>,
    child: Option<Pid>,
    /// Without a mount namespace of its own, the init mounts in the caller's: the rootfs and
    /// the id of the mount that was there before, so that what the init stacked on it goes.
    shared_ns_rootfs: Option<(PathBuf, Option<u64>)>,
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if let Some(pid) = self.child.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some((rootfs, before)) = self.shared_ns_rootfs.take() {
            if let Some(now) = crate::sys::mount_id(&rootfs).filter(|id| Some(*id) != before) {
                if let Err(e) = crate::sys::unmount_if_still(&rootfs, now) {
                    tracing::warn!("after a failed create: {e}");
                }
            }
        }
        if let Some(cg) = self.cgroup.take() {
            if let Ok(pids) = cg.pids() {
                for p in pids {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            if let Err(e) = cg.destroy() {
                tracing::warn!("removing cgroup after a failed create: {e}");
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }
}

/// Create the container; `gate` says who will start it.
pub fn spawn(ctx: &Settings, opts: &CreateOptions, gate: Gate) -> Result<Spawned> {
    let cfg = config::load(&opts.bundle)?;
    let process = cfg.process();
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() && gate == Gate::Fifo {
        bail!("process.terminal is true: --console-socket is required");
    }
    if !terminal && opts.console_socket.is_some() {
        bail!("--console-socket given but process.terminal is false");
    }
    // Before anything exists: a container with CAP_SYS_PTRACE in the host's user namespace
    // gets a runtime running from a sealed copy of itself (see crate::sealed).
    if !cfg.has_namespace(LinuxNamespaceType::User) && crate::sealed::has_ptrace(process) {
        crate::sealed::ensure_sealed(None).map_err(|e| anyhow!(e))?;
    }

    let dir = StateDir::create(&ctx.root, &opts.id)?;
    let mut rb = Rollback {
        dir: Some(dir),
        cgroup: None,
        child: None,
        shared_ns_rootfs: None,
    };
    let dir_path = rb.dir.as_ref().map(|d| d.path.clone()).unwrap_or_default();

    // The cgroup, with its limits, before the init exists.
    let linux = cfg
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| anyhow!("linux is required"))?;
    let cg_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let cg = setup_cgroup(ctx, linux, cg_path.as_deref(), &opts.id, &mut rb)?;
    let cgroup_mount = cg.as_ref().and_then(|cg| cgroup_mount_source(&cfg, cg));

    // The start fifo: `start` opens it for reading, which lets the init exec.
    let fifo_fd = if gate == Gate::Fifo {
        let fifo = dir_path.join(crate::state::FIFO_NAME);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .with_context(|| format!("creating {}", fifo.display()))?;
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))
            .with_context(|| format!("chmod {}", fifo.display()))?;
        Some(
            nix::fcntl::open(
                &fifo,
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .with_context(|| format!("opening {}", fifo.display()))?,
        )
    } else {
        None
    };

    // The console: the given socket, or (run) a socketpair whose other end we keep.
    let (console, console_peer) = match (&opts.console_socket, terminal) {
        (Some(path), _) => (Some(tty::connect(path).map_err(|e| anyhow!(e))?), None),
        (None, true) => {
            let (a, b) = std::os::unix::net::UnixStream::pair().context("console socketpair")?;
            (Some(OwnedFd::from(a)), Some(b))
        }
        (None, false) => (None, None),
    };

    let namespaces_list = cfg.namespaces().to_vec();
    let joins = namespaces::open_joins(&namespaces_list).map_err(|e| anyhow!(e))?;
    if let Some(path) = namespaces::pid_join_path(&namespaces_list) {
        // Joining a pid namespace only affects children: join it here, clone the init into it.
        let f = File::open(path)
            .with_context(|| format!("opening pid namespace {}", path.display()))?;
        setns(&f, CloneFlags::CLONE_NEWPID)
            .with_context(|| format!("joining pid namespace {}", path.display()))?;
    }

    let filter = compile_seccomp(ctx, &cfg)?;
    let notify = notify_socket(&cfg, filter.as_ref())?;
    let idmapped = crate::idmap::prepare(&cfg).map_err(|e| anyhow!(e))?;
    let (parent_sock, child_sock) = sync::pair().context("creating sync socketpair")?;
    let new_userns = cfg
        .namespaces()
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    // The runtime's own end of the sync socket and the state dir's lock: the init closes its
    // copies first thing, so that it sees the runtime's death as the end of the socket (and
    // exits) instead of waiting on it forever, holding the lock.
    let parent_fds = [
        std::os::fd::AsRawFd::as_raw_fd(&parent_sock),
        rb.dir.as_ref().map_or(-1, StateDir::lock_fd),
    ];
    let init_args = InitArgs {
        cfg: &cfg,
        parent_fds: &parent_fds,
        sync: &child_sock,
        gate: match &fifo_fd {
            Some(f) => StartGate::Fifo(f),
            None => StartGate::Sync,
        },
        console: console.as_ref(),
        joins: &joins,
        cgroup_mount: cgroup_mount.as_ref(),
        no_pivot: opts.no_pivot,
        preserve_fds: opts.preserve_fds,
        seccomp: filter.as_ref(),
        notify: notify.as_ref(),
        idmapped: &idmapped,
        join_cgroup: cg.as_ref().filter(|_| !new_userns),
    };
    // Inherited by the init, which lives inside the container until it execs. An unprivileged
    // runtime must still write the init's id maps, which a non-dumpable process's /proc files
    // (owned by root then) would refuse: there the init makes itself non-dumpable on "go".
    if nix::unistd::geteuid().is_root() {
        crate::sys::set_non_dumpable().context("making the runtime non-dumpable")?;
    }
    let own_mount_ns = cfg.has_namespace(LinuxNamespaceType::Mount);
    if !own_mount_ns {
        rb.shared_ns_rootfs = Some((cfg.rootfs.clone(), crate::sys::mount_id(&cfg.rootfs)));
    }
    let flags = namespaces::clone_flags(&namespaces_list);
    // The init's stack: the child runs on it in its own copy of our memory (no CLONE_VM).
    let mut stack = vec![0u8; 1 << 20];
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| init::run(&init_args)),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
    .with_context(|| format!("clone with {flags:?}"))?;
    rb.child = Some(pid);
    drop(child_sock);
    drop(console);

    // From outside: id maps, the cgroup (if the init cannot join it itself), oom score. Then
    // let the init go on.
    if new_userns {
        namespaces::write_id_maps(
            pid.as_raw(),
            linux.uid_mappings().as_deref().unwrap_or(&[]),
            linux.gid_mappings().as_deref().unwrap_or(&[]),
        )
        .map_err(|e| anyhow!(e))?;
    }
    if let (Some(cg), true) = (&cg, new_userns) {
        cg.add_process(pid.as_raw())
            .with_context(|| format!("placing init {pid} in its cgroup"))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string())
            .with_context(|| format!("setting oom_score_adj to {adj}"))?;
    }
    sync::send(&parent_sock, &Message::Go).context("starting init")?;
    let mut reply = sync::recv(&parent_sock).context("waiting for init")?;
    if reply == Some(Message::Hooks) {
        // Namespaces and mounts exist, pivot_root has not happened: the runtime's hooks.
        let state = hook_state(&opts.id, pid.as_raw(), &cfg, "creating");
        let hooks = cfg.spec.hooks().clone().unwrap_or_default();
        let res = hooks::run(&hooks, HookKind::Prestart, state.as_bytes())
            .and_then(|()| hooks::run(&hooks, HookKind::CreateRuntime, state.as_bytes()));
        if let Err(e) = res {
            let _ = sync::send(&parent_sock, &Message::Error(e.clone()));
            bail!("{e}");
        }
        sync::send(
            &parent_sock,
            &Message::State(hook_state(&opts.id, pid.as_raw(), &cfg, "created")),
        )
        .context("resuming init after hooks")?;
        reply = sync::recv(&parent_sock).context("waiting for init")?;
    }
    match reply {
        Some(Message::Ready) => {}
        Some(Message::Error(msg)) => bail!("{msg}"),
        Some(other) => bail!("unexpected message from init: {other:?}"),
        None => bail!("container init exited during setup"),
    }

    let pid_start = proc_stat(pid.as_raw())
        .map(|(start, _)| start)
        .ok_or_else(|| anyhow!("container init {pid} vanished"))?;
    let state = ContainerState {
        id: opts.id.clone(),
        pid: pid.as_raw(),
        pid_start,
        bundle: cfg.bundle.clone(),
        rootfs: cfg.rootfs.clone(),
        created: crate::logging::now_rfc3339(),
        annotations: cfg.spec.annotations().clone().unwrap_or_default(),
        owner: String::new(),
        cgroup: cg,
        shared_ns_rootfs_mount: if own_mount_ns {
            None
        } else {
            crate::sys::mount_id(&cfg.rootfs)
        },
    };
    let dir = rb.dir.take().ok_or_else(|| anyhow!("state dir lost"))?;
    if let Err(e) = dir.save(&state) {
        rb.dir = Some(dir);
        return Err(e.into());
    }
    if let Some(pid_file) = &opts.pid_file {
        if let Err(e) = write_pid_file(pid_file, pid.as_raw()) {
            rb.dir = Some(dir);
            return Err(e);
        }
    }
    if gate == Gate::Fifo {
        // The state is saved: only now may the init wait on the fifo. Had we died before this,
        // it would have seen the socket end and exited instead of waiting for a `start` that
        // no state could ever lead to.
        if let Err(e) = sync::send(&parent_sock, &Message::Go) {
            rb.dir = Some(dir);
            return Err(anyhow!(e).context("container init exited during setup"));
        }
    }
    rb.child = None;
    rb.cgroup = None;
    rb.shared_ns_rootfs = None;
    Ok(Spawned {
        dir,
        state,
        config: cfg,
        sync: parent_sock,
        console_peer,
    })
}

/// Make the container's cgroup and give it its limits. Rootless, a cgroup we may not create is
/// skipped with a warning (as runc does) unless the config asks for limits, which would then
/// silently not hold: that is an error.
fn setup_cgroup(
    ctx: &Settings,
    linux: &oci_spec::runtime::Linux,
    cg_path: Option<&str>,
    id: &str,
    rb: &mut Rollback,
) -> Result<Option<Cgroup>> {
    let mut cg =
        Cgroup::resolve(cg_path, id).with_context(|| format!("cgroup of container {id}"))?;
    // Recorded before the first mkdir, so that a create killed while making the directories
    // leaves a record of them for `delete` (a kill before the record made nothing).
    if let Some(dir) = &rb.dir {
        dir.save_creating_cgroup(&cg.planned())
            .context("recording the container's cgroup")?;
    }
    if let Err(e) = cg.create() {
        let denied = matches!(
            &e,
            berth_cgroups::Error::Create { source, .. }
                if matches!(source.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem)
        );
        if ctx.rootless && denied {
            let r = linux.resources().clone().unwrap_or_default();
            let limits = r.memory().is_some()
                || r.cpu().is_some()
                || r.pids().is_some()
                || r.block_io().is_some();
            if limits {
                return Err(anyhow!(e).context(
                    "rootless: the config sets cgroup limits but the cgroup cannot be created (delegate one to this user)",
                ));
            }
            tracing::warn!("rootless: running without a cgroup: {e}");
            return Ok(None);
        }
        return Err(anyhow!(e).context("creating cgroup"));
    }
    rb.cgroup = Some(cg.clone());
    // Again with what create made (the record above may name directories that appeared in
    // between), before the limits (many writes).
    if let Some(dir) = &rb.dir {
        dir.save_creating_cgroup(&cg)
            .context("recording the container's cgroup")?;
    }
    let mut resources = linux.resources().clone().unwrap_or_default();
    let rules = devices::cgroup_rules(
        resources.devices().as_deref().unwrap_or(&[]),
        linux.devices().as_deref().unwrap_or(&[]),
    );
    if cg.version() == CgroupVersion::V1 || resources.devices().is_some() {
        resources.set_devices(Some(rules));
    }
    cg.set(&resources).context("setting cgroup limits")?;
    Ok(Some(cg))
}

/// The OCI state JSON that hooks read on stdin.
pub fn hook_state(id: &str, pid: i32, cfg: &Config, status: &str) -> String {
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": cfg.bundle,
        "annotations": cfg.spec.annotations().clone().unwrap_or_default(),
    })
    .to_string()
}

/// Compile the config's seccomp profile (from the cache under `<root>/seccomp-cache` when the
/// same profile was compiled before), before anything is created inside the container.
pub fn compile_seccomp(ctx: &Settings, cfg: &Config) -> Result<Option<crate::seccomp::Filter>> {
    let Some(profile) = cfg.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let filter = crate::seccomp::compile_cached(profile, &ctx.root.join("seccomp-cache"))
        .map_err(|e| anyhow!("linux.seccomp: {e}"))?;
    if filter.uses_notify() && profile.listener_path().is_none() {
        bail!("linux.seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath");
    }
    Ok(Some(filter))
}

/// For a NOTIFY filter, connect to the agent at linux.seccomp.listenerPath now, while its path
/// is reachable; the init sends the listener fd on this socket once it has loaded the filter.
pub fn notify_socket(
    cfg: &Config,
    filter: Option<&crate::seccomp::Filter>,
) -> Result<Option<std::os::unix::net::UnixStream>> {
    if !filter.is_some_and(|f| f.uses_notify()) {
        return Ok(None);
    }
    let path = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .and_then(|s| s.listener_path().clone())
        .ok_or_else(|| {
            anyhow!("linux.seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath")
        })?;
    let sock = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("linux.seccomp.listenerPath {}: connecting", path.display()))?;
    Ok(Some(sock))
}

/// The pid file holds the decimal pid and nothing else (no newline), written atomically.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("writing pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing pid file {}", path.display()))?;
    Ok(())
}

/// Where the container's cgroup dirs are, for `cgroup` mounts in its rootfs.
fn cgroup_mount_source(cfg: &Config, cg: &Cgroup) -> Option<CgroupMountSource> {
    let wants = cfg
        .spec
        .mounts()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|m| matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2")));
    if !wants {
        return None;
    }
    match cg.version() {
        CgroupVersion::V2 => Some(CgroupMountSource::V2 {
            dir: cg
                .paths()
                .first()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            cgroupns: cfg
                .namespaces()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup),
        }),
        CgroupVersion::V1 => {
            // One entry per mounted hierarchy; co-mounted ones ("cpu,cpuacct") appear once,
            // their per-controller symlinks are skipped.
            let entries = std::fs::read_dir("/sys/fs/cgroup").ok()?;
            let mut dirs: Vec<(String, PathBuf)> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let first = name.split(',').next()?.to_string();
                    let dir = cg.path_of(&first)?;
                    Some((name, dir))
                })
                .collect();
            dirs.sort();
            Some(CgroupMountSource::V1(dirs))
        }
    }
}
