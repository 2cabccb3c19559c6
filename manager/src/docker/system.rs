//! `/info` and `/system/df` (`/events` is [`super::events`]).

use std::path::Path;

use http::StatusCode;
use serde_json::{json, Value};

use super::server::{self, Reply, Req};
use super::version::{goarch, kernel_version};
use super::{blocking, images, volumes, Api, NAMESPACE};

fn os_release() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The bytes under `dir`, never following a symlink (0 if it cannot be read).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

/// `GET /info`.
pub async fn info(api: &Api, _req: Req) -> Reply {
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let (containers, image_count) = blocking(move || {
        let c = store.container_list(&ctx, &[])?.len();
        let i = images::all(&store, &ctx)?.len();
        Ok((c, i))
    })
    .await?;
    let runtime = api
        .state
        .default_runtime()
        .unwrap_or("berth-runc")
        .to_string();
    let cgroup_version = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    let hostname = nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let arch = std::env::consts::ARCH;
    let v = json!({
        "ID": format!("berthd:{}", api.state.root().display()),
        "Containers": containers,
        // Containers are not served by this API yet; their states are not counted here.
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": image_count,
        "Driver": api.state.snapshotter_name(),
        "DriverStatus": [["Backing Filesystem", ""], ["Store namespace", NAMESPACE]],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "null"],
            "Authorization": null,
            "Log": ["berth"],
        },
        "MemoryLimit": true,
        "SwapLimit": false,
        "KernelMemory": false,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "BridgeNfIptables": false,
        "BridgeNfIp6tables": false,
    });
    let mid = json!({
        "Debug": false,
        "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": super::rfc3339(std::time::SystemTime::now()),
        "LoggingDriver": "berth",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": os_release(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": arch,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true},
            },
            "Mirrors": [],
        },
    });
    let more = json!({
        "NCPU": ncpu,
        "MemTotal": mem_total(),
        "GenericResources": null,
        "DockerRootDir": api.state.root().display().to_string(),
        "HttpProxy": std::env::var("HTTP_PROXY").unwrap_or_default(),
        "HttpsProxy": std::env::var("HTTPS_PROXY").unwrap_or_default(),
        "NoProxy": std::env::var("NO_PROXY").unwrap_or_default(),
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": crate::daemon::services::version::VERSION,
        "Runtimes": {
            "berth-runc": {"path": "berth-runc"},
            "runc": {"path": "runc"},
            "crun": {"path": "crun"},
        },
        "DefaultRuntime": runtime,
        "Swarm": {
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
            "ControlAvailable": false, "Error": "", "RemoteManagers": null,
        },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": [],
    });
    let mut v = v;
    if let Some(a) = v.as_object_mut() {
        for part in [mid, more] {
            if let Value::Object(b) = part {
                a.extend(b);
            }
        }
    }
    let _ = goarch;
    Ok(server::json(StatusCode::OK, &v))
}

/// `GET /system/df`: images, volumes (with their size and users), no build cache.
pub async fn df(api: &Api, _req: Req) -> Reply {
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let v = blocking(move || {
        let imgs = images::all(&store, &ctx)?;
        let layers: u64 = imgs.iter().map(|i| i.size()).sum();
        let containers = store.container_list(&ctx, &[])?;
        let images: Vec<Value> = imgs
            .iter()
            .map(|i| {
                let mut s = i.summary();
                let names: Vec<&str> = i.records.iter().map(|r| r.name.as_str()).collect();
                s["Containers"] = json!(containers
                    .iter()
                    .filter(|c| names.contains(&c.image.as_str()))
                    .count());
                s
            })
            .collect();
        let mut vols = Vec::new();
        for vol in store.volume_list(&ctx)? {
            let users = store.volume_users(&ctx, &vol.name)?;
            let mut v = volumes::shape(&store, &ctx, &vol);
            let size = if vol.options.is_empty() {
                store
                    .volume_data(&ctx, &vol.name)
                    .map(|p| dir_size(&p) as i64)
                    .unwrap_or(-1)
            } else {
                -1
            };
            v["UsageData"] = json!({"Size": size, "RefCount": users.len()});
            vols.push(v);
        }
        Ok(json!({
            "LayersSize": layers,
            "Images": images,
            "Containers": [],
            "Volumes": vols,
            "BuildCache": [],
        }))
    })
    .await?;
    Ok(server::json(StatusCode::OK, &v))
}
