//! The `berth` command line: ctr-style commands, each a client of berthd's gRPC API only.

pub mod build;
pub mod check;
pub mod containers;
pub mod content;
pub mod events;
pub mod images;
pub mod leases;
pub mod logs;
pub mod mounts;
pub mod namespaces;
pub mod networks;
pub mod output;
pub mod progress;
pub mod run;
pub mod snapshots;
pub mod stdio;
pub mod tasks;
pub mod volumes;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tonic::transport::Channel;

use crate::client::{NamespaceInterceptor, NsChannel};
use output::Format;

/// The default socket.
pub const DEFAULT_ADDRESS: &str = crate::daemon::config::DEFAULT_ADDRESS;

/// berth: manage images, content, snapshots and leases of a berthd.
#[derive(Parser, Debug)]
#[command(name = "berth", version)]
pub struct Cli {
    /// berthd's socket.
    #[arg(long, short = 'a', env = "BERTH_ADDRESS", default_value = DEFAULT_ADDRESS, global = true)]
    pub address: PathBuf,
    /// Namespace to work in.
    #[arg(
        long,
        short = 'n',
        env = "BERTH_NAMESPACE",
        default_value = "default",
        global = true
    )]
    pub namespace: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Client and server versions.
    Version,
    /// Namespaces.
    #[command(subcommand, visible_alias = "ns")]
    Namespaces(namespaces::Cmd),
    /// Images: import, export, list, remove, check.
    #[command(subcommand, visible_alias = "i")]
    Images(images::Cmd),
    /// Content blobs.
    #[command(subcommand)]
    Content(content::Cmd),
    /// Snapshots.
    #[command(subcommand, visible_alias = "snapshot")]
    Snapshots(snapshots::Cmd),
    /// Leases.
    #[command(subcommand)]
    Leases(leases::Cmd),
    /// Run a container from an image; exits with its exit code.
    Run(Box<run::Args>),
    /// Build an image from a Dockerfile and a context.
    Build(Box<build::Args>),
    /// The build cache.
    #[command(subcommand)]
    Builder(build::BuilderCmd),
    /// A container's output (kept for `run -d`): `-f` follows until the task exits.
    Logs(logs::Args),
    /// Bridge networks containers join with `run --net`.
    #[command(subcommand, visible_alias = "networks")]
    Network(networks::Cmd),
    /// Container records.
    #[command(subcommand, visible_alias = "c")]
    Containers(containers::Cmd),
    /// Tasks: a container's running processes.
    #[command(subcommand, visible_alias = "t")]
    Tasks(tasks::Cmd),
    /// Named volumes.
    #[command(subcommand, visible_alias = "volumes")]
    Volume(volumes::Cmd),
    /// Verify berthd's stores and state (blobs, references, snapshots, tasks, mounts, cgroups,
    /// networks); exit 0 only when clean (1: problems, 2: could not check).
    Check(check::Args),
    /// Print the daemon's events as they happen.
    Events {
        /// containerd-style filters (`topic=="/tasks/exit"`, `namespace==default`).
        filters: Vec<String>,
    },
}

/// What every command needs: the channel, the namespace and the format.
pub struct Env {
    /// Raw channel (namespaces and version are not namespaced).
    pub channel: Channel,
    /// Channel that tags each request with the namespace.
    pub ns: NsChannel,
    /// The namespace.
    pub namespace: String,
    /// Output format.
    pub format: Format,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    crate::identifiers::validate(&cli.namespace)
        .map_err(|e| anyhow::anyhow!("--namespace: {e}"))?;
    let check = matches!(cli.command, Command::Check(_));
    let channel = match crate::client::connect(&cli.address).await {
        Ok(c) => c,
        // `berth check` keeps exit code 1 for "problems found".
        Err(e) if check => {
            eprintln!("berth: {e:#}");
            std::process::exit(check::FAILED)
        }
        Err(e) => return Err(e),
    };
    let ns = tonic::service::interceptor::InterceptedService::new(
        channel.clone(),
        NamespaceInterceptor::new(&cli.namespace, None)?,
    );
    let env = Env {
        channel,
        ns,
        namespace: cli.namespace,
        format: cli.format,
    };
    match cli.command {
        Command::Version => version(&env).await,
        Command::Namespaces(c) => namespaces::run(&env, c).await,
        Command::Images(c) => images::run(&env, c).await,
        Command::Content(c) => content::run(&env, c).await,
        Command::Snapshots(c) => snapshots::run(&env, c).await,
        Command::Leases(c) => leases::run(&env, c).await,
        Command::Run(a) => {
            let code = run::run(&env, *a).await?;
            std::process::exit(code)
        }
        Command::Build(a) => build::run(&env, *a).await,
        Command::Builder(build::BuilderCmd::Prune) => build::prune(&env).await,
        Command::Containers(c) => containers::run(&env, c).await,
        Command::Network(c) => networks::run(&env, c).await,
        Command::Logs(a) => logs::run(&env, a).await,
        Command::Volume(c) => volumes::run(&env, c).await,
        Command::Events { filters } => events::run(&env, filters).await,
        Command::Check(a) => match check::run(&env, a).await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("berth: {e:#}");
                std::process::exit(check::FAILED)
            }
        },
        Command::Tasks(c) => {
            let code = tasks::run(&env, c).await?;
            if code != 0 {
                std::process::exit(code)
            }
            Ok(())
        }
    }
}

async fn version(env: &Env) -> Result<()> {
    use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
    use berth_proto::containerd::services::version::v1::version_client::VersionClient;
    let v = VersionClient::new(env.channel.clone())
        .version(())
        .await
        .map_err(rpc_error("version"))?
        .into_inner();
    let uuid = IntrospectionClient::new(env.channel.clone())
        .server(())
        .await
        .map(|r| r.into_inner().uuid)
        .unwrap_or_default();
    let client = env!("CARGO_PKG_VERSION");
    match env.format {
        Format::Json => output::json(&serde_json::json!({
            "client": { "version": client },
            "server": { "version": v.version, "revision": v.revision, "uuid": uuid },
        }))?,
        Format::Table => {
            println!("Client:\n  Version:  {client}\n\nServer:\n  Version:  {}\n  Revision: {}\n  UUID: {uuid}", v.version, v.revision);
        }
    }
    Ok(())
}

/// The name berthd knows an image by: `name` itself when it has that (containerd's exact
/// names, as `ctr` uses them), else its normalized form when it has that (`busybox` →
/// `docker.io/library/busybox:latest`), as Docker and nerdctl read a short name.
pub async fn image_name(env: &Env, name: &str) -> Result<String> {
    use berth_proto::containerd::services::images::v1::{
        images_client::ImagesClient, GetImageRequest,
    };
    let mut c = ImagesClient::new(env.ns.clone());
    let get = |n: &str| GetImageRequest {
        name: n.to_string(),
    };
    match c.get(get(name)).await {
        Ok(_) => Ok(name.to_string()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            match berth_distribution::Reference::parse(name).map(|r| r.to_string()) {
                Ok(n) if n != name && c.get(get(&n)).await.is_ok() => Ok(n),
                // The caller's own request reports the name as given.
                _ => Ok(name.to_string()),
            }
        }
        Err(s) => Err(rpc_error(format!("image {name}"))(s)),
    }
}

/// Turns a gRPC status into an error naming the operation and the server's message.
pub fn rpc_error(what: impl std::fmt::Display) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |s| anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
}
