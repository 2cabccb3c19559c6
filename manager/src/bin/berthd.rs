//! berthd: the Berth manager daemon. See `berthd --help`.

use std::path::PathBuf;

use anyhow::Result;
use berth_manager::daemon::config::{Config, FileConfig};
use clap::{Parser, Subcommand};

/// Serves containerd's v1 gRPC API (version, namespaces, content, images, leases, snapshots,
/// diff, introspection) and Berth's archive API on a unix socket.
#[derive(Parser, Debug)]
#[command(name = "berthd", version)]
struct Args {
    /// Persistent root: content, metadata, snapshots [default: /var/lib/berth].
    #[arg(long)]
    root: Option<PathBuf>,
    /// State dir: sockets, temporary mounts [default: /run/berth].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Socket path [default: /run/berth/berthd.sock].
    #[arg(long, short = 'a')]
    address: Option<PathBuf>,
    /// Socket of the Docker Engine API (1.41, for the docker CLI; objects in namespace
    /// "moby"), mode 0660; an empty value turns it off [default: /run/berth/docker.sock].
    #[arg(long)]
    docker_address: Option<String>,
    /// Group (name or gid) given access to both sockets, which become 0660 owned by it
    /// [default: none: the gRPC socket is 0600 root, the Docker socket 0660 root's group].
    #[arg(long)]
    group: Option<String>,
    /// TOML config file (keys: root, state, address, docker_address, log_level, max_blocking_threads, runtime,
    /// log_max_size, group, max_connections, header_timeout_secs, registry_timeout,
    /// pull_attempts, pull_retry_delay, runtime_timeout (these four also $BERTH_<KEY>, which
    /// wins), and
    /// [registries."host:port"] sections with plain_http, ca_file, client_cert, client_key,
    /// insecure_skip_verify, mirrors).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Default OCI runtime for containers that name none: a path, or berth-runc, runc, crun
    /// (looked up next to berthd, then on PATH) [default: $BERTH_RUNTIME, else berth-runc].
    #[arg(long)]
    runtime: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info].
    #[arg(long, short = 'l')]
    log_level: Option<String>,
    /// Without a command, berthd serves.
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check the stores and state of a berthd that is not running (`berth check` asks a
    /// running one): the same checks and output; exit 0 only when clean, 1 when problems
    /// were found (or left after --repair), 2 when the check could not run. Refused while a
    /// berthd holds the root.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// berthd's persistent root.
    #[arg(long)]
    root: PathBuf,
    /// berthd's state dir.
    #[arg(long)]
    state: PathBuf,
    /// Remove orphans and quarantine corrupt blobs, then check again.
    #[arg(long)]
    repair: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: berth_manager::cli::output::Format,
}

/// `berthd check`: exit 0 clean, 1 problems, 2 could not check.
fn check(a: CheckArgs) -> std::process::ExitCode {
    use berth_manager::cli::check as out;
    use berth_proto::berth::services::check::v1::CheckResponse;
    let code = berth_manager::check::offline(&a.root, &a.state, a.repair)
        .and_then(|(first, recheck)| {
            out::print(
                &CheckResponse::from(first),
                recheck.map(CheckResponse::from).as_ref(),
                a.repair,
                a.format,
            )
        })
        .unwrap_or_else(|e| {
            eprintln!("berthd check: {e:#}");
            out::FAILED
        });
    std::process::ExitCode::from(code as u8)
}

fn main() -> Result<std::process::ExitCode> {
    let mut args = Args::parse();
    if let Some(Cmd::Check(a)) = args.command.take() {
        // Warnings (a store opened without recovery, ...) go to stderr.
        let filter =
            tracing_subscriber::EnvFilter::try_new(args.log_level.as_deref().unwrap_or("warn"))
                .map_err(|e| anyhow::anyhow!("invalid --log-level: {e}"))?;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        return Ok(check(a));
    }
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mut config = Config::resolve(file, args.root, args.state, args.address, args.log_level)?;
    if args.runtime.is_some() {
        config.runtime = args.runtime;
    }
    if let Some(g) = args.group {
        config.group = Some(g).filter(|g| !g.is_empty());
    }
    if let Some(d) = args.docker_address {
        config.docker_address = Some(PathBuf::from(d)).filter(|p| !p.as_os_str().is_empty());
    }
    if let Some(max) = config.log_max_size {
        if max < 4096 {
            anyhow::bail!("log_max_size {max}: must be at least 4096 bytes");
        }
        // Every berth-shim inherits it (set before any thread exists).
        std::env::set_var("BERTH_SHIM_LOG_MAX", max.to_string());
    }
    // A bare level applies to Berth's crates; the HTTP/2 stack stays at warn unless asked.
    let directive = if config.log_level.contains('=') || config.log_level.contains(',') {
        config.log_level.clone()
    } else {
        let l = &config.log_level;
        format!("warn,berth_manager={l},berth_store={l},berth_layer={l},berthd={l}")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", config.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // At debug, every RPC's span is logged when it opens: the calls a client makes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .init();
    let res = berth_manager::daemon::run(config);
    if let Err(e) = &res {
        tracing::error!(error = format!("{e:#}"), "berthd failed");
    }
    res.map(|()| std::process::ExitCode::SUCCESS)
}
