//! `berth run`: an image's config becomes an OCI spec (Docker-like defaults), a snapshot of its
//! layers the rootfs, then a container and its task on berthd; output is streamed through FIFOs
//! and the process's exit code becomes berth's.

use anyhow::{bail, Context, Result};
use berth_proto::containerd::services::containers::v1 as cpb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::GetImageRequest;
use berth_proto::containerd::services::snapshots::v1 as spb;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use clap::Args as ClapArgs;
use serde_json::Value;

use super::{content, rpc_error, Env};
use crate::runspec::{self, RunOptions};

/// The spec's type URL, as containerd's clients send it.
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const SNAPSHOTTER: &str = "overlayfs";

/// `berth run` options.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Remove the container and its snapshot when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Start it and return; its output is kept in a size-bounded log (`berth logs`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Give the process a terminal (a pty relayed by its supervisor); with `-i` and a terminal
    /// here, this terminal goes into raw mode and its size follows along.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Pass this process's stdin to the container (not with `-d`: berth has no attach).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Extra environment, KEY=VALUE.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// USER[:GROUP] to run as, names or ids (berthd resolves names against the container's
    /// /etc/passwd and /etc/group when it starts it, as Docker does).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// More supplementary groups (names or gids), as Docker's `--group-add`.
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Mounts, Docker's syntax: `type=volume|bind|tmpfs,source=…,target=…[,readonly]…`
    /// (or SRC:DST[:ro], a bind).
    #[arg(long)]
    pub mount: Vec<String>,
    /// Volumes and binds: `NAME:/path[:ro]` (made when missing, filled from the image when
    /// empty), `/host/path:/path[:ro|rw]`, or `/path` (an anonymous volume).
    #[arg(long = "volume", short = 'v')]
    pub volume: Vec<String>,
    /// A tmpfs at `/path[:size=…,mode=…]`.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Memory limit: bytes, or with a unit b, k, m, g (1024-based, as Docker's `--memory`).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<i64>,
    /// CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Most processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Security options: `seccomp=unconfined` turns off the default seccomp profile.
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Docker's `--privileged`: every capability, no seccomp profile, no masked or read-only
    /// paths, /sys and the cgroup tree writable, and the host's devices.
    #[arg(long)]
    pub privileged: bool,
    /// Run berthd's init (berth-init) as PID 1, the command as its child: signals are passed
    /// on and zombies reaped, as with Docker's `--init`.
    #[arg(long)]
    pub init: bool,
    /// Runtime binary or name (berth-runc, runc, crun, or a path).
    #[arg(long, default_value = "io.containerd.runc.v2")]
    pub runtime: String,
    /// Networks and ports.
    #[command(flatten)]
    pub net: crate::runspec::net::NetFlags,
    /// The image.
    pub image: String,
    /// The container id.
    pub id: String,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub use crate::runspec::parse_size;

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The OCI spec for `cfg` (the image config's `config` object) and the flags (the defaults
/// and the checks are `crate::runspec`'s, shared with the Docker API).
pub fn spec(ns: &str, a: &Args, cfg: &Value) -> Result<Value> {
    // -v, --mount and --tmpfs: checked here, added by `mounts::apply`.
    super::mounts::plan(&a.volume, &a.mount, &a.tmpfs, cfg)?;
    let o = RunOptions {
        cmd: a.args.clone(),
        env: a.env.clone(),
        cwd: a.cwd.clone(),
        user: a.user.clone(),
        group_add: a.group_add.clone(),
        tty: a.tty,
        memory: a.memory,
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        security_opt: a.security_opt.clone(),
        privileged: a.privileged,
        init: a.init,
        ..Default::default()
    };
    runspec::spec(ns, &a.id, &o, cfg).map_err(|e| anyhow::anyhow!("{} {}", e.field.flag(), e))
}

/// The image's config JSON and the chain id of its layers.
async fn image_config(env: &Env, name: &str) -> Result<(Value, String)> {
    let img = ImagesClient::new(env.ns.clone())
        .get(GetImageRequest {
            name: name.to_string(),
        })
        .await
        .map_err(rpc_error(format!("image {name}")))?
        .into_inner()
        .image
        .context("berthd returned no image")?;
    let target = img.target.context("image has no target")?;
    let mut digest = target.digest;
    let mut doc: Value = serde_json::from_slice(&content::read_all(env, &digest).await?)
        .with_context(|| format!("parsing {digest}"))?;
    for _ in 0..4 {
        let Some(ms) = doc["manifests"].as_array() else {
            break;
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let pick = ms
            .iter()
            .find(|m| {
                m["platform"]["architecture"].as_str() == Some(arch)
                    && m["platform"]["os"].as_str() == Some("linux")
            })
            .or(ms.first())
            .with_context(|| format!("index {digest} has no manifests"))?;
        digest = pick["digest"].as_str().unwrap_or_default().to_string();
        doc = serde_json::from_slice(&content::read_all(env, &digest).await?)
            .with_context(|| format!("parsing {digest}"))?;
    }
    let cfg_digest = doc["config"]["digest"]
        .as_str()
        .with_context(|| format!("manifest {digest} has no config"))?
        .to_string();
    let cfg: Value = serde_json::from_slice(&content::read_all(env, &cfg_digest).await?)
        .with_context(|| format!("parsing config {cfg_digest}"))?;
    let mut chain = String::new();
    for id in strs(&cfg["rootfs"]["diff_ids"]) {
        chain = if chain.is_empty() {
            id
        } else {
            use sha2::Digest;
            let h = sha2::Sha256::digest(format!("{chain} {id}").as_bytes());
            format!(
                "sha256:{}",
                h.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        };
    }
    Ok((cfg, chain))
}

/// Removes the container and its snapshot, then `volumes` (best effort: used on failure and
/// for --rm).
async fn remove(env: &Env, id: &str, volumes: &[String]) {
    // Independent of each other: both at once.
    let mut containers = ContainersClient::new(env.ns.clone());
    let mut snapshots = SnapshotsClient::new(env.ns.clone());
    let _ = tokio::join!(
        containers.delete(cpb::DeleteContainerRequest { id: id.into() }),
        snapshots.remove(spb::RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
        })
    );
    super::mounts::remove_volumes(env, volumes).await;
}

/// Runs `berth run`; returns the exit code berth should exit with.
pub async fn run(env: &Env, a: Args) -> Result<i32> {
    if a.detach && a.interactive {
        bail!("-i cannot be used with -d: berth has no attach to give the input later");
    }
    if a.detach && a.rm {
        bail!("--rm cannot be used with -d: berth removes a container when it waits for it");
    }
    super::stdio::check_interactive_terminal(a.interactive, a.tty)?;
    crate::identifiers::validate(&a.id).map_err(|e| anyhow::anyhow!("container id: {e}"))?;
    let image = super::image_name(env, &a.image).await?;
    let (cfg, chain) = image_config(env, &image).await?;
    let mut spec = spec(&env.namespace, &a, &cfg["config"])?;
    let labels = crate::runspec::net::apply(&a.net, &cfg["config"], &mut spec)?;
    if a.tty {
        super::stdio::set_console_size(&mut spec["process"]);
    }
    let mut containers = ContainersClient::new(env.ns.clone());
    // Refuse a duplicate id before touching snapshots.
    if containers
        .get(cpb::GetContainerRequest { id: a.id.clone() })
        .await
        .is_ok()
    {
        bail!("container {:?}: already exists", a.id);
    }
    let vols = super::mounts::apply(
        env,
        &a.volume,
        &a.mount,
        &a.tmpfs,
        &cfg["config"],
        &mut spec,
    )
    .await?;
    let prepared = SnapshotsClient::new(env.ns.clone())
        .prepare(spb::PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: a.id.clone(),
            parent: chain,
            labels: Default::default(),
        })
        .await;
    let mut mounts = match prepared {
        Ok(r) => r.into_inner().mounts,
        Err(e) => {
            super::mounts::remove_volumes(env, &vols.created).await;
            return Err(rpc_error(format!("preparing the rootfs of {}", a.id))(e));
        }
    };
    if a.rm && !a.detach {
        // Removed on exit: its writable layer need not survive a host crash (see VOLATILE).
        for m in mounts.iter_mut().filter(|m| m.r#type == "overlay") {
            m.options.push(crate::tasks::mounts::VOLATILE.to_string());
        }
    }
    let created = containers
        .create(cpb::CreateContainerRequest {
            container: Some(cpb::Container {
                id: a.id.clone(),
                image,
                runtime: Some(cpb::container::Runtime {
                    name: a.runtime.clone(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE.into(),
                    value: serde_json::to_vec(&spec)?,
                }),
                snapshotter: SNAPSHOTTER.into(),
                snapshot_key: a.id.clone(),
                labels: {
                    let mut l = vols.labels.clone();
                    l.extend(labels);
                    l
                },
                ..Default::default()
            }),
        })
        .await;
    if let Err(e) = created {
        let _ = SnapshotsClient::new(env.ns.clone())
            .remove(spb::RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: a.id.clone(),
            })
            .await;
        super::mounts::remove_volumes(env, &vols.created).await;
        return Err(rpc_error(format!("creating container {}", a.id))(e));
    }
    let io = if a.detach {
        None
    } else {
        Some(super::stdio::ClientIo::new(a.interactive, a.tty)?)
    };
    // Detached: the shim keeps the output in berth's log file (`berth logs`); a terminal has
    // only one output stream.
    let log = |stderr: bool| {
        if stderr && a.tty {
            String::new()
        } else {
            crate::tasks::LOG_STDIO.to_string()
        }
    };
    let mut tasks = TasksClient::new(env.ns.clone());
    let created = tasks
        .create(tpb::CreateTaskRequest {
            container_id: a.id.clone(),
            rootfs: mounts,
            stdin: io.as_ref().map(|f| f.stdin()).unwrap_or_default(),
            stdout: io.as_ref().map_or_else(|| log(false), |f| f.stdout()),
            stderr: io.as_ref().map_or_else(|| log(true), |f| f.stderr()),
            terminal: a.tty,
            ..Default::default()
        })
        .await;
    if let Err(e) = created {
        remove(env, &a.id, &vols.created).await;
        if e.message().contains("executable file not found") {
            eprintln!("berth: {}", e.message());
            return Ok(127);
        }
        return Err(rpc_error(format!("creating the task of {}", a.id))(e));
    }
    let raw = (a.tty && a.interactive && io.is_some())
        .then(super::stdio::RawMode::enter)
        .flatten();
    let copying = io.map(super::stdio::ClientIo::copy);
    let mut waiter = TasksClient::new(env.ns.clone());
    let wid = a.id.clone();
    let wait = tokio::spawn(async move {
        waiter
            .wait(tpb::WaitRequest {
                container_id: wid,
                exec_id: String::new(),
            })
            .await
    });
    let forwarding = (!a.detach).then(|| super::stdio::forward(env, &a.id, "", a.tty));
    if let Err(e) = tasks
        .start(tpb::StartRequest {
            container_id: a.id.clone(),
            exec_id: String::new(),
        })
        .await
    {
        let _ = tasks
            .delete(tpb::DeleteTaskRequest {
                container_id: a.id.clone(),
            })
            .await;
        remove(env, &a.id, &vols.created).await;
        return Err(rpc_error(format!("starting {}", a.id))(e));
    }
    if a.detach {
        println!("{}", a.id);
        return Ok(0);
    }
    if a.tty {
        super::stdio::send_size(tasks.clone(), &a.id, "").await;
    }
    let code = wait
        .await
        .context("waiting for the task")?
        .map_err(rpc_error(format!("waiting for {}", a.id)))?
        .into_inner()
        .exit_status as i32;
    drop(forwarding);
    if let Some(c) = copying {
        c.finish().await;
    }
    drop(raw);
    tasks
        .delete(tpb::DeleteTaskRequest {
            container_id: a.id.clone(),
        })
        .await
        .map_err(rpc_error(format!("deleting the task of {}", a.id)))?;
    if a.rm {
        remove(env, &a.id, &vols.anonymous).await;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    fn args(v: &[&str]) -> Args {
        T::parse_from(std::iter::once("run").chain(v.iter().copied())).a
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("100k"), Ok(102_400));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("9999999999g").is_err());
    }

    #[test]
    fn image_config_and_flags_make_the_process() {
        let cfg = json!({"Entrypoint": ["/bin/ep"], "Cmd": ["x"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/w", "User": "5"});
        let s = spec(
            "ns",
            &args(&["--env", "A=2", "--memory", "64m", "img", "c1", "y", "-z"]),
            &cfg,
        )
        .unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/ep", "y", "-z"]));
        assert_eq!(s["process"]["env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(s["process"]["cwd"], "/w");
        assert_eq!(s["process"]["user"]["uid"], 5);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(s["linux"]["cgroupsPath"], "/ns/c1");
        let s = spec("ns", &args(&["img", "c1"]), &cfg).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/ep", "x"]));
        let s = spec("ns", &args(&["img", "c1", "sh"]), &json!({"Cmd": ["x"]})).unwrap();
        assert_eq!(s["process"]["args"], json!(["sh"]));
    }

    #[test]
    fn bad_flags_are_refused_by_name() {
        let cfg = json!({"Cmd": ["x"]});
        let e = spec("ns", &args(&["--mount", "rel:/x", "img", "c"]), &cfg).unwrap_err();
        assert!(format!("{e:#}").contains("--mount"), "{e:#}");
        let e = spec("ns", &args(&["img", "c"]), &json!({})).unwrap_err();
        assert!(format!("{e:#}").contains("no command"), "{e:#}");
    }
}
