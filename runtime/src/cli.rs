//! The command line: runc's commands and flags, flag for flag where containerd's runc shim calls
//! them (see shared/runc-contract.md), parsed with clap and dispatched to [`crate::container`].

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::container::{self, CreateOptions, ExecOptions, ListFormat, Settings};
use crate::logging::LogFormat;

/// berth-runc: a runc-compatible OCI runtime.
#[derive(Parser, Debug)]
#[command(name = "berth-runc", disable_version_flag = true, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    /// Print the version (first line `runc version ...`, as tools parse it).
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags that every command takes.
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = "/run/berth-runc")]
    pub root: PathBuf,
    /// Log file (default: standard error).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format.
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: LogFormat,
    /// Log debug messages too.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (cgroupsPath as slice:prefix:name).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto.
    #[arg(long, global = true, default_value = "auto")]
    pub rootless: String,
    /// Accepted for compatibility with runc; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container: its init waits in all its namespaces and its cgroup until `start`.
    Create(CreateArgs),
    /// Start a created container: run the process that config.json names.
    Start { id: String },
    /// Create, start and wait for a container; the exit code is the container's.
    Run(RunArgs),
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (name or number; default SIGTERM) to a container's init.
    Kill {
        /// Send the signal to every process of the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container's state and cgroup.
    Delete {
        /// Kill the container first if it is still running.
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Only print the container ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json into the bundle.
    Spec {
        /// The bundle directory.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for a container run by an unprivileged user.
        #[arg(long = "rootless", id = "spec_rootless", num_args = 0..=1, default_missing_value = "true")]
        rootless: Option<bool>,
    },
    /// Print what this runtime supports, as the OCI features JSON.
    Features,
    /// Run another process in a running container.
    Exec(ExecArgs),
    /// List a container's processes (`--format json`: host pids).
    Ps {
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// Arguments for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's cgroup limits.
    Update(UpdateArgs),
    /// Print a container's statistics (`--stats`) or stream its events.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Time between stats events of the stream.
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
}

/// Flags of `exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// A JSON file with the OCI process to run (`-` for standard input).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket to which the pty master is sent.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Return once the process started.
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Extra environment variables (KEY=VALUE).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (CAP_...).
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Pass this many fds after stdio into the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Exec into a paused container too: the process waits, frozen, until `resume`.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Run in a sub-cgroup of the container's: PATH, or CONTROLLER[,CONTROLLER]:PATH (repeatable).
    #[arg(long = "cgroup")]
    pub cgroup: Vec<String>,
    /// Accepted for compatibility with runc.
    #[arg(long = "process-label", hide = true)]
    pub process_label: Option<String>,
    /// Accepted for compatibility with runc.
    #[arg(long, hide = true)]
    pub apparmor: Option<String>,
    /// The container's id.
    pub id: String,
    /// The command and its arguments (when there is no --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Flags of `update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// A file with an OCI LinuxResources JSON (`-` for standard input).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with k/m/g).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1: unlimited).
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds.
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU realtime period in microseconds.
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds.
    #[arg(long = "cpu-rt-runtime")]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs the container may use (0-3, 0,1).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10-1000).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// The container's id.
    pub id: String,
}

/// Flags of `create` (shared with `run`).
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// The bundle: a directory with config.json and the rootfs.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to which the pty master of a terminal container is sent.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// File to write the init's pid to (decimal, no newline).
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Move the rootfs onto / and chroot instead of pivot_root (for ramdisks).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many fds after stdio (3, 4, ...) into the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for compatibility with runc; a pidfd is not sent.
    #[arg(long = "pidfd-socket", hide = true)]
    pub pidfd_socket: Option<PathBuf>,
    /// The container's id.
    pub id: String,
}

/// Flags of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container started, do not wait for it.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
}

/// The first line of `--version` starts with `runc version` because tools (go-runc, Docker)
/// parse that prefix.
pub fn version_text() -> String {
    format!(
        "runc version {} (berth-runc)\ncommit: berth-runc-{}\nspec: {}\n",
        crate::VERSION,
        crate::VERSION,
        crate::OCI_VERSION
    )
}

/// Run the command that `cli` names; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<u8> {
    if cli.version {
        print!("{}", version_text());
        return Ok(0);
    }
    let Some(command) = cli.command else {
        bail!("no command given; see --help");
    };
    let global = settings(&cli.global);
    if cli.global.systemd_cgroup {
        bail!(
            "--systemd-cgroup is not supported: berth-runc manages cgroups through cgroupfs only \
             (give linux.cgroupsPath as a path)"
        );
    }
    match command {
        Command::Create(args) => {
            container::create(&global, &create_options(&args))?;
            Ok(0)
        }
        Command::Start { id } => {
            container::start(&global, &id)?;
            Ok(0)
        }
        Command::Run(args) => container::run(
            &global,
            &create_options(&args.create),
            args.detach,
            args.keep,
        ),
        Command::State { id } => {
            let state = container::state(&global, &id)?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            container::kill(&global, &id, signal.as_deref().unwrap_or("SIGTERM"), all)?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            container::delete(&global, &id, force)?;
            Ok(0)
        }
        Command::List { format, quiet } => {
            let format = match format.as_str() {
                "table" => ListFormat::Table,
                "json" => ListFormat::Json,
                other => bail!("invalid format {other:?}: use table or json"),
            };
            container::list(&global, format, quiet)?;
            Ok(0)
        }
        Command::Spec { bundle, rootless } => {
            crate::spec::write_default(&bundle, rootless.unwrap_or(false))?;
            Ok(0)
        }
        Command::Exec(args) => container::exec(&global, &exec_options(args)),
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            let json = match format.as_str() {
                "table" => false,
                "json" => true,
                other => bail!("invalid format {other:?}: use table or json"),
            };
            container::ps(&global, &id, json, &ps_args)?;
            Ok(0)
        }
        Command::Pause { id } => {
            container::pause(&global, &id)?;
            Ok(0)
        }
        Command::Resume { id } => {
            container::resume(&global, &id)?;
            Ok(0)
        }
        Command::Update(args) => {
            let json = match &args.resources {
                Some(p) if p.as_os_str() == "-" => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                    Some(v)
                }
                Some(p) => Some(
                    std::fs::read(p)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let flags = container::UpdateFlags {
                memory: args.memory,
                memory_reservation: args.memory_reservation,
                memory_swap: args.memory_swap,
                cpu_shares: args.cpu_shares,
                cpu_quota: args.cpu_quota,
                cpu_period: args.cpu_period,
                cpu_rt_period: args.cpu_rt_period,
                cpu_rt_runtime: args.cpu_rt_runtime,
                cpuset_cpus: args.cpuset_cpus,
                cpuset_mems: args.cpuset_mems,
                pids_limit: args.pids_limit,
                blkio_weight: args.blkio_weight,
            };
            let resources = container::update_resources(json.as_deref(), &flags)?;
            container::update(&global, &args.id, &resources)?;
            Ok(0)
        }
        Command::Events {
            stats,
            interval,
            id,
        } => {
            let interval = container::parse_duration(&interval)?;
            container::events(&global, &id, stats, interval)?;
            Ok(0)
        }
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::features::features())?
            );
            Ok(0)
        }
    }
}

/// What the container operations need of the global flags. `--rootless auto` (the default) means
/// rootless when the caller is not root.
fn settings(global: &GlobalOpts) -> Settings {
    Settings {
        root: global.root.clone(),
        rootless: match global.rootless.as_str() {
            "true" => true,
            "false" => false,
            _ => !nix::unistd::geteuid().is_root(),
        },
    }
}

fn exec_options(args: ExecArgs) -> ExecOptions {
    ExecOptions {
        id: args.id,
        process_file: args.process,
        args: args.command,
        tty: args.tty,
        console_socket: args.console_socket,
        detach: args.detach,
        pid_file: args.pid_file,
        env: args.env,
        cwd: args.cwd,
        user: args.user,
        additional_gids: args.additional_gids,
        caps: args.cap,
        no_new_privs: args.no_new_privs,
        preserve_fds: args.preserve_fds,
        ignore_paused: args.ignore_paused,
        cgroup: args.cgroup,
    }
}

fn create_options(args: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        no_pivot: args.no_pivot,
        preserve_fds: args.preserve_fds,
    }
}
