//! `exec`: run another process in a running container. The runtime joins the container's pid
//! namespace (so its child is born there), forks, places the child in the container's cgroup,
//! and the child joins every other namespace of the init (user first, mount last but cgroup),
//! then applies the process's rlimits, user, capabilities, no_new_privs and seccomp and execs.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{LinuxCapabilities, Process};

use super::create::write_pid_file;
use super::Settings;
use crate::config;
use crate::state::{self, ContainerState, Status};
use crate::sync::{self, Message};
use crate::{identity, init, sys, tty};

/// What `exec` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub id: String,
    /// A file holding an OCI `process` object (`-` for standard input).
    pub process_file: Option<PathBuf>,
    /// The command, when there is no process file.
    pub args: Vec<String>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `uid[:gid]`.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub preserve_fds: u32,
    /// Exec into a paused container too (the process stays frozen until it is resumed).
    pub ignore_paused: bool,
    /// Sub-cgroups of the container's cgroup to run in: `path` or `controller[,controller]:path`.
    pub cgroup: Vec<String>,
}

/// The process to run: the process file, or the container's own process with the flags applied.
/// `stdin_text` is the process file when it is `-` and standard input was already read.
pub fn build_process(
    opts: &ExecOptions,
    base: &Process,
    stdin_text: Option<&[u8]>,
) -> Result<Process> {
    if let Some(path) = &opts.process_file {
        let text = if path.as_os_str() == "-" {
            match stdin_text {
                Some(t) => t.to_vec(),
                None => crate::sealed::stdin_process()
                    .context("reading the process from standard input")?,
            }
        } else {
            std::fs::read(path)
                .with_context(|| format!("reading process file {}", path.display()))?
        };
        let de = &mut serde_json::Deserializer::from_slice(&text);
        let p: Process = serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow!(
                "invalid process file {}: field {}: {}",
                path.display(),
                e.path(),
                e.inner()
            )
        })?;
        match p.args() {
            Some(a) if !a.is_empty() => {}
            _ => bail!(
                "invalid process file {}: args must name the program to run",
                path.display()
            ),
        }
        return Ok(p);
    }
    if opts.args.is_empty() {
        bail!("exec needs a command or --process");
    }
    let mut p = base.clone();
    p.set_args(Some(opts.args.clone()));
    p.set_terminal(Some(opts.tty));
    let mut env = base.env().clone().unwrap_or_default();
    for e in &opts.env {
        if !e.contains('=') {
            bail!("--env {e:?} is not KEY=VALUE");
        }
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &opts.user {
        let (u, g) = user.split_once(':').unwrap_or((user, ""));
        let uid: u32 = u
            .parse()
            .map_err(|_| anyhow!("--user {user:?}: uid must be a number"))?;
        p.user_mut().set_uid(uid);
        if !g.is_empty() {
            let gid: u32 = g
                .parse()
                .map_err(|_| anyhow!("--user {user:?}: gid must be a number"))?;
            p.user_mut().set_gid(gid);
        }
    }
    if !opts.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(opts.additional_gids.clone()));
    }
    if !opts.caps.is_empty() {
        let mut caps = base.capabilities().clone().unwrap_or_default();
        let extra: Vec<oci_spec::runtime::Capability> = opts
            .caps
            .iter()
            .map(|c| {
                serde_json::from_value(serde_json::Value::String(c.clone()))
                    .map_err(|_| anyhow!("unknown capability {c:?}"))
            })
            .collect::<Result<_>>()?;
        add_caps(&mut caps, &extra);
        p.set_capabilities(Some(caps));
    }
    if opts.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn add_caps(caps: &mut LinuxCapabilities, extra: &[oci_spec::runtime::Capability]) {
    let add = |set: Option<&oci_spec::runtime::Capabilities>| {
        let mut s = set.cloned().unwrap_or_default();
        s.extend(extra.iter().copied());
        Some(s)
    };
    let b = add(caps.bounding().as_ref());
    let e = add(caps.effective().as_ref());
    let p = add(caps.permitted().as_ref());
    caps.set_bounding(b);
    caps.set_effective(e);
    caps.set_permitted(p);
}

/// Namespace files to join, each with its clone flag.
type Joins = Vec<(File, CloneFlags)>;

/// The init's pid namespace (joined by the parent) and the others to join in the child, user
/// first, mount after the rest.
fn namespaces_of(st: &ContainerState) -> Result<(Option<File>, Joins)> {
    let order = [
        ("user", CloneFlags::CLONE_NEWUSER),
        // Joined from inside the user namespace (it owns the time namespace), before the
        // process has more than one thread; the process sees the container's clock offsets.
        ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let same = |name: &str| {
        let ours = std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/{name}", st.pid)).ok();
        ours.is_some() && ours == theirs
    };
    let mut joins = Vec::new();
    for (name, flag) in order {
        if same(name) {
            continue;
        }
        let path = format!("/proc/{}/ns/{name}", st.pid);
        let f = File::open(&path).with_context(|| format!("opening {path}"))?;
        joins.push((f, flag));
    }
    let pid = if same("pid") {
        None
    } else {
        let path = format!("/proc/{}/ns/pid", st.pid);
        Some(File::open(&path).with_context(|| format!("opening {path}"))?)
    };
    Ok((pid, joins))
}

/// `exec`: returns the exit code (0 with --detach).
pub fn exec(ctx: &Settings, opts: &ExecOptions) -> Result<u8> {
    let st = state::read(&ctx.root, &opts.id)?;
    match st.status(&ctx.root.join(&opts.id)) {
        Status::Running | Status::Created => {}
        // Its process joins the frozen cgroup and waits there until `resume`, as with runc.
        Status::Paused if opts.ignore_paused => {}
        Status::Paused => {
            bail!("cannot exec in a paused container (use --ignore-paused to override)")
        }
        Status::Stopped => bail!("cannot exec in a stopped container: container not running"),
        other => bail!("cannot exec in a container in the {other} state"),
    }
    let cfg = config::load(&st.bundle).context("reading the container's config.json")?;
    let stdin_text = match &opts.process_file {
        Some(p) if p.as_os_str() == "-" => Some(
            crate::sealed::stdin_process().context("reading the process from standard input")?,
        ),
        _ => None,
    };
    let process = build_process(opts, cfg.process(), stdin_text.as_deref())?;
    // A container process with CAP_SYS_PTRACE in the host's user namespace could open our
    // /proc/PID/exe despite non-dumpable: then run from a sealed copy (see crate::sealed).
    if !cfg.has_namespace(oci_spec::runtime::LinuxNamespaceType::User)
        && (crate::sealed::has_ptrace(cfg.process()) || crate::sealed::has_ptrace(&process))
    {
        crate::sealed::ensure_sealed(stdin_text.as_deref()).map_err(|e| anyhow!(e))?;
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() {
        bail!("exec with a terminal needs --console-socket");
    }
    let console: Option<OwnedFd> = match &opts.console_socket {
        Some(p) if terminal => Some(tty::connect(p).map_err(|e| anyhow!(e))?),
        _ => None,
    };
    let cgroup = match (&st.cgroup, opts.cgroup.is_empty()) {
        (Some(cg), true) => Some(cg.clone()),
        (Some(cg), false) => Some(
            cg.sub_cgroup(&opts.cgroup)
                .with_context(|| format!("--cgroup {}", opts.cgroup.join(" --cgroup ")))?,
        ),
        (None, true) => None,
        (None, false) => bail!("--cgroup: container {} has no cgroup", opts.id),
    };
    let (pidns, joins) = namespaces_of(&st)?;
    // Without a user namespace the child moves itself into the cgroup (see
    // `Cgroup::join_self`); in one, it may not write the host's cgroup files.
    let join_cgroup = cgroup
        .as_ref()
        .filter(|_| !joins.iter().any(|(_, f)| *f == CloneFlags::CLONE_NEWUSER));
    let (initial_cpus, _) = crate::sched::exec_affinity(&process);
    if let Some(list) = initial_cpus {
        let mask = crate::sched::cpu_mask(list).map_err(|e| anyhow!(e))?;
        tracing::debug!("exec: initial CPU affinity: 0x{mask:x}");
    }
    if let Some(f) = &pidns {
        setns(f, CloneFlags::CLONE_NEWPID).context("joining the container's pid namespace")?;
    }
    let filter = super::create::compile_seccomp(ctx, &cfg)?;
    // A NOTIFY filter's agent is reached now, on the host, before the child joins the
    // container's mount namespace; the child sends it the listener fd, as the init does.
    let notify = super::create::notify_socket(&cfg, filter.as_ref())?;
    let (parent_sock, child_sock) = sync::pair().context("creating sync socketpair")?;
    // Inherited by the child, which becomes visible inside the container.
    sys::set_non_dumpable().context("making the runtime non-dumpable")?;

    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    let old = mask
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .ok();

    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            if let Some(old) = old {
                let _ = old.thread_set_mask();
            }
            drop(parent_sock);
            // Before it joins the container's cgroup, the process runs on the initial CPUs.
            let initial = initial_cpus.map(crate::sched::set_affinity).transpose();
            let code = match initial.and_then(|_| {
                exec_child(
                    &child_sock,
                    &process,
                    ChildJoins {
                        cgroup: join_cgroup,
                        namespaces: &joins,
                    },
                    console.as_ref(),
                    opts.preserve_fds,
                    Seccomp {
                        filter: filter.as_ref(),
                        notify: notify.as_ref(),
                    },
                    cfg.spec.linux().as_ref(),
                )
            }) {
                Ok(never) => match never {},
                Err(msg) => {
                    let _ = sync::send(&child_sock, &Message::Error(msg));
                    1
                }
            };
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_sock);
            drop(console);
            drop(notify);
            let agent = match &filter {
                Some(f) if f.uses_notify() => Some(agent_body(&st, &cfg, &opts.id, child)?),
                _ => None,
            };
            let parent_places = cgroup.as_ref().filter(|_| join_cgroup.is_none());
            let res = exec_parent(child, &parent_sock, opts, agent, parent_places);
            if res.is_err() {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return res;
            }
            if opts.detach {
                return Ok(0);
            }
            super::run::wait_forwarding(child, &mask)
        }
    }
}

/// The seccomp agent's message for an exec'd process: the container's state and the process's
/// host pid (the child's own getpid() answers in the container's pid namespace).
fn agent_body(st: &ContainerState, cfg: &config::Config, id: &str, child: Pid) -> Result<String> {
    let state = super::create::hook_state(id, st.pid, cfg, "running");
    let metadata = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .and_then(|s| s.listener_metadata().clone());
    let body = crate::seccomp::process_state(state.as_bytes(), child.as_raw(), metadata.as_deref())
        .map_err(|e| anyhow!(e))?;
    String::from_utf8(body).context("the seccomp agent's message is not UTF-8")
}

/// The parent's side of exec: place the child in `cgroup` when it cannot join it itself, let
/// it go, wait until it has exec'd (or says why not), write the pid file.
fn exec_parent(
    child: Pid,
    sock: &OwnedFd,
    opts: &ExecOptions,
    agent: Option<String>,
    cgroup: Option<&berth_cgroups::Cgroup>,
) -> Result<u8> {
    if let Some(cg) = cgroup {
        cg.add_process(child.as_raw())
            .with_context(|| format!("placing process {child} in the container's cgroup"))?;
    }
    sync::send(sock, &Message::Go).context("starting exec process")?;
    if let Some(body) = agent {
        sync::send(sock, &Message::State(body)).context("sending the seccomp agent's state")?;
    }
    match sync::recv(sock).context("waiting for exec process")? {
        // The socket closes on exec (close-on-exec): no message means it is running.
        None => {}
        Some(Message::Error(msg)) => bail!("{msg}"),
        Some(other) => bail!("unexpected message from exec process: {other:?}"),
    }
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, child.as_raw())?;
    }
    Ok(0)
}

/// The exec'd process's seccomp filter and, for NOTIFY, the agent's connected socket.
struct Seccomp<'a> {
    filter: Option<&'a crate::seccomp::Filter>,
    notify: Option<&'a std::os::unix::net::UnixStream>,
}

/// What the exec'd process joins: the container's cgroup (when it moves itself there) and
/// namespaces.
struct ChildJoins<'a> {
    cgroup: Option<&'a berth_cgroups::Cgroup>,
    namespaces: &'a [(File, CloneFlags)],
}

fn exec_child(
    sock: &OwnedFd,
    process: &Process,
    joins: ChildJoins<'_>,
    console: Option<&OwnedFd>,
    preserve_fds: u32,
    seccomp: Seccomp<'_>,
    linux: Option<&oci_spec::runtime::Linux>,
) -> Result<std::convert::Infallible, String> {
    let Seccomp { filter, notify } = seccomp;
    match sync::recv(sock) {
        Ok(Some(Message::Go)) => {}
        _ => return Err("the runtime went away during exec".into()),
    }
    let ChildJoins {
        cgroup: join_cgroup,
        namespaces: joins,
    } = joins;
    if let Some(cg) = join_cgroup {
        cg.join_self()
            .map_err(|e| format!("placing the process in the container's cgroup: {e}"))?;
    }
    let agent_body = match notify {
        Some(_) => match sync::recv(sock) {
            Ok(Some(Message::State(body))) => body,
            _ => return Err("the runtime went away during exec".into()),
        },
        None => String::new(),
    };
    let notify = notify.map(|s| (s, agent_body.as_bytes()));
    for (f, flag) in joins {
        setns(f, *flag).map_err(|e| format!("joining the container's namespace {flag:?}: {e}"))?;
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if let Some(socket) = console {
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        tty::setup(socket, size, false)?;
    }
    if let Some(linux) = linux {
        crate::sched::apply_linux(linux)?;
    }
    let env = identity::with_home(
        process.env().clone().unwrap_or_default(),
        process.user().uid(),
    );
    let args: &[String] = process.args().as_deref().unwrap_or(&[]);
    let in_userns = joins
        .iter()
        .any(|(_, flag)| *flag == CloneFlags::CLONE_NEWUSER);
    if let (_, Some(list)) = crate::sched::exec_affinity(process) {
        // In the container's cgroup now: the final CPUs, kept across execve (set before the
        // process's seccomp filter could refuse it).
        crate::sched::set_affinity(list)?;
    }
    let no_new_privs = identity::become_process(process, in_userns, filter, notify)?;
    let program = init::find_executable(&args[0], &env)?;
    let argv: Vec<CString> = args
        .iter()
        .map(|s| sys::cstring(s))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|s| sys::cstring(s))
        .collect::<Result<_, _>>()?;
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", program.display()))?;
    sys::cloexec_from(3 + preserve_fds as i32)
        .map_err(|e| format!("marking fds close-on-exec: {e}"))?;
    if let (Some(f), true) = (filter, no_new_privs) {
        identity::load_seccomp(f, notify)?;
    }
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(format!("exec {}: {err}", program.display()))
}
