//! `/containers/...`: list, inspect, start, stop, restart, kill, wait, pause, unpause,
//! rename, remove, prune, logs, attach and top, over the lifecycle in [`super::lifecycle`].

use std::collections::BTreeMap;

use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_store::metadata::Container;
use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::errors::ApiError;
use super::exec::OutputEnd;
use super::lifecycle::{parse_signal, rq, task_error, Meta, RunState};
use super::logs;
use super::server::{empty, json as json_reply, Body, Reply, Req};
use super::{blocking, images, short_id, Api, NAMESPACE};

fn unix_of(rfc: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

/// "Up 5 seconds", "Exited (0) 3 minutes ago", as `docker ps` prints them.
fn human(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn status_text(st: &RunState, m: &Meta) -> String {
    let now = chrono::Utc::now().timestamp();
    match st.status {
        "running" => format!(
            "Up {}{}",
            human(now - unix_of(&m.started_at)),
            super::health::ps_suffix(m)
        ),
        "paused" => format!("Up {} (Paused)", human(now - unix_of(&m.started_at))),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            m.exit_code,
            human(now - unix_of(&m.finished_at))
        ),
        "exited" => format!(
            "Exited ({}) {} ago",
            m.exit_code,
            human(now - unix_of(&m.finished_at))
        ),
        _ => "Created".into(),
    }
}

/// Published ports from the container's network attachment.
fn ports(api: &Api, id: &str) -> Vec<(String, u16, u16, String)> {
    api.state
        .networks()
        .attachment(NAMESPACE, id)
        .map(|a| {
            a.ports
                .iter()
                .map(|p| {
                    (
                        p.host_ip
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        p.host_port,
                        p.container_port,
                        p.protocol.to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The networks a container is on (its task's attachment), or, when it is not running, the
/// ones it will join (from its record), without addresses.
fn networks_of(api: &Api, c: &Container) -> serde_json::Map<String, Value> {
    let id = c.id.as_str();
    let mut out = serde_json::Map::new();
    let attached = api.state.networks().attachment(NAMESPACE, id);
    if attached.is_none() {
        let joins: Vec<crate::networks::Join> = c
            .labels
            .get(crate::networks::NETWORKS_LABEL)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        for j in joins {
            out.insert(
                j.name.clone(),
                json!({
                    "IPAMConfig": null, "Links": null, "Aliases": j.aliases,
                    "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
                    "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": null,
                }),
            );
        }
    }
    if let Some(a) = attached {
        for j in &a.joined {
            let prefix = j
                .network
                .subnet
                .split_once('/')
                .and_then(|(_, p)| p.parse::<u32>().ok())
                .unwrap_or(0);
            out.insert(
                j.network.name.clone(),
                json!({
                    "IPAMConfig": null,
                    "Links": null,
                    "Aliases": j.aliases,
                    "NetworkID": j.network.id,
                    "EndpointID": format!("{}-{}", short_id(id), j.ifname),
                    "Gateway": j.network.gateway,
                    "IPAddress": j.ip,
                    "IPPrefixLen": prefix,
                    "IPv6Gateway": "",
                    "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0,
                    "MacAddress": "",
                    "DriverOpts": null,
                }),
            );
        }
    }
    out
}

fn command_line(m: &Meta) -> String {
    std::iter::once(m.path.clone())
        .chain(m.args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn summary(api: &Api, c: &Container, st: &RunState) -> Value {
    let m = Meta::of(c);
    let mut ps: Vec<Value> = ports(api, &c.id)
        .into_iter()
        .map(|(ip, hp, cp, proto)| json!({"IP": ip, "PrivatePort": cp, "PublicPort": hp, "Type": proto}))
        .collect();
    if let Some(exposed) = m.config["ExposedPorts"].as_object() {
        for k in exposed.keys() {
            let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            if !ps
                .iter()
                .any(|p| p["PrivatePort"] == port && p["Type"] == proto)
            {
                ps.push(json!({"PrivatePort": port, "Type": proto}));
            }
        }
    }
    let labels: BTreeMap<String, String> = m.config["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", m.name)],
        "Image": m.config["Image"],
        "ImageID": m.image_id,
        "Command": command_line(&m),
        "Created": unix_of(&m.created),
        "Ports": ps,
        "Labels": labels,
        "State": st.status,
        "Status": status_text(st, &m),
        "HostConfig": {"NetworkMode": m.host_config["NetworkMode"]},
        "NetworkSettings": {"Networks": networks_of(api, c)},
        "Mounts": mounts_of(c),
    })
}

fn mounts_of(c: &Container) -> Vec<Value> {
    let spec: Value = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or(Value::Null);
    let defaults = [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ];
    let vols: Vec<&str> = c
        .labels
        .get(crate::tasks::volumes::LABEL_VOLUMES)
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| !defaults.contains(&m["destination"].as_str().unwrap_or("")))
        .map(|m| {
            let src = m["source"].as_str().unwrap_or("");
            let rw = !m["options"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x == "ro"));
            let vol = vols
                .iter()
                .find(|v| src.contains(&format!("/{v}/")))
                .map(|v| v.to_string());
            let ty = match (&vol, m["type"].as_str()) {
                (Some(_), _) => "volume",
                (None, Some("tmpfs")) => "tmpfs",
                _ => "bind",
            };
            json!({
                "Type": ty,
                "Name": vol.clone().unwrap_or_default(),
                "Source": src,
                "Destination": m["destination"],
                "Driver": if vol.is_some() { "local" } else { "" },
                "Mode": "",
                "RW": rw,
                "Propagation": if ty == "bind" { "rprivate" } else { "" },
            })
        })
        .collect()
}

/// `GET /containers/json`.
pub async fn list(api: &Api, req: Req) -> Reply {
    let all = req.q_bool("all")?;
    let limit: Option<usize> = req
        .q("limit")
        .filter(|l| !l.is_empty())
        .map(|l| l.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid limit"))?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let f = req.filters()?;
    f.only(&[
        "id", "name", "label", "status", "exited", "ancestor", "network", "health",
    ])?;
    for h in f.get("health") {
        if !matches!(h.as_str(), "starting" | "healthy" | "unhealthy" | "none") {
            return Err(ApiError::bad_request(format!(
                "Unrecognised filter value for health: {h}"
            )));
        }
    }
    for s in f.get("status") {
        if !matches!(
            s.as_str(),
            "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
        ) {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'status={s}'"
            )));
        }
    }
    let ancestors: Vec<String> = {
        let names = f.get("ancestor").to_vec();
        let (store, ctx) = (api.state.store().clone(), api.ctx());
        blocking(move || {
            Ok(names
                .iter()
                .filter_map(|n| images::find(&store, &ctx, n).ok())
                .map(|(i, _)| i.id.to_string())
                .collect())
        })
        .await?
    };
    let mut out = Vec::new();
    let mut recs = api.containers().await?;
    recs.retain(|c| c.extensions.contains_key(super::lifecycle::META_EXTENSION));
    recs.sort_by_key(|c| std::cmp::Reverse(unix_of(&Meta::of(c).created)));
    for c in recs {
        let m = Meta::of(&c);
        let st = api.run_state(&c).await;
        let wants_all = all || !f.get("status").is_empty() || !f.get("exited").is_empty();
        if !wants_all && !st.running() && st.status != "restarting" {
            continue;
        }
        if !f.get("id").is_empty() && !f.get("id").iter().any(|p| c.id.starts_with(p.as_str())) {
            continue;
        }
        if !f.get("name").is_empty()
            && !f.get("name").iter().any(|n| {
                let n = n.trim_start_matches('/');
                m.name.contains(n)
            })
        {
            continue;
        }
        let labels: BTreeMap<String, String> = m.config["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        if !f.labels_match(&labels) {
            continue;
        }
        if !f.get("status").is_empty() && !f.get("status").iter().any(|s| s == st.status) {
            continue;
        }
        if !f.get("exited").is_empty()
            && (st.status != "exited"
                || !f
                    .get("exited")
                    .iter()
                    .any(|e| e == &m.exit_code.to_string()))
        {
            continue;
        }
        if !f.get("ancestor").is_empty() && !ancestors.contains(&m.image_id) {
            continue;
        }
        if !f.get("health").is_empty() && {
            // Only a running container has a health status (dockerd's rule).
            let h = if st.running() {
                super::health::status_for_filter(&m)
            } else {
                "none"
            };
            !f.get("health").iter().any(|x| x == h)
        } {
            continue;
        }
        if !f.get("network").is_empty() {
            let nets = networks_of(api, &c);
            if !f.get("network").iter().any(|n| nets.contains_key(n)) {
                continue;
            }
        }
        out.push(summary(api, &c, &st).await);
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(json_reply(StatusCode::OK, &out))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(api: &Api, _req: Req, name: &str) -> Reply {
    let c = api.find_container(name).await?;
    let m = Meta::of(&c);
    let st = api.run_state(&c).await;
    let mut port_map = serde_json::Map::new();
    if let Some(exposed) = m.config["ExposedPorts"].as_object() {
        for k in exposed.keys() {
            port_map.insert(k.clone(), Value::Null);
        }
    }
    if st.running() {
        for (ip, hp, cp, proto) in ports(api, &c.id) {
            let key = format!("{cp}/{proto}");
            let entry = port_map.entry(key).or_insert(Value::Null);
            if !entry.is_array() {
                *entry = json!([]);
            }
            if let Some(a) = entry.as_array_mut() {
                a.push(json!({"HostIp": ip, "HostPort": hp.to_string()}));
            }
        }
    }
    let nets = networks_of(api, &c);
    let first = nets.values().next().cloned().unwrap_or(Value::Null);
    let log = crate::tasks::log_path(api.state.state_dir(), NAMESPACE, &c.id);
    let zero_time = "0001-01-01T00:00:00Z";
    let or_zero = |s: &str| {
        if s.is_empty() {
            zero_time.to_string()
        } else {
            s.to_string()
        }
    };
    let exec_ids = match api.execs.running_of(&c.id) {
        ids if ids.is_empty() => Value::Null,
        ids => json!(ids),
    };
    let v = json!({
        "Id": c.id,
        "Created": m.created,
        "Path": m.path,
        "Args": m.args,
        "State": {
            "Status": st.status,
            "Running": st.running(),
            "Paused": st.status == "paused",
            "Restarting": st.status == "restarting",
            "OOMKilled": false,
            "Dead": false,
            "Pid": st.pid,
            "ExitCode": if st.running() { 0 } else { m.exit_code },
            "Error": m.error,
            "StartedAt": or_zero(&m.started_at),
            "FinishedAt": or_zero(&m.finished_at),
        },
        "Image": m.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": log,
        "Name": format!("/{}", m.name),
        "RestartCount": m.restart_count,
        "Driver": api.state.snapshotter_name(),
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids,
        "HostConfig": m.host_config,
        "GraphDriver": {"Name": api.state.snapshotter_name(), "Data": null},
        "Mounts": mounts_of(&c),
        "Config": m.config,
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": port_map,
            "SandboxKey": "",
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": first["EndpointID"].as_str().unwrap_or(""),
            "Gateway": first["Gateway"].as_str().unwrap_or(""),
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": first["IPAddress"].as_str().unwrap_or(""),
            "IPPrefixLen": first["IPPrefixLen"].as_u64().unwrap_or(0),
            "IPv6Gateway": "",
            "MacAddress": "",
            "Networks": nets,
        },
    });
    let mut v = v;
    if let Some(h) = super::health::inspect_value(&m) {
        v["State"]["Health"] = h;
    }
    Ok(json_reply(StatusCode::OK, &v))
}

/// `POST /containers/{id}/resize?h=&w=`: the size of the container's terminal. Like dockerd,
/// a running container without one takes it and nothing changes; one not running is a 409.
pub async fn resize(api: &Api, req: Req, name: &str) -> Reply {
    let (height, width) = super::exec::size_q(&req)?;
    let c = api.find_container(name).await?;
    if !api.run_state(&c).await.running() {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.id
        )));
    }
    if !Meta::of(&c).tty() {
        return Ok(empty(StatusCode::OK));
    }
    api.tasks
        .resize_pty(rq(tpb::ResizePtyRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
            width,
            height,
        }))
        .await
        .map_err(|s| task_error("resizing the container's terminal", s))?;
    Ok(empty(StatusCode::OK))
}

/// `POST /containers/{id}/start`: 204, or 304 when it is running already.
pub async fn start(api: &Api, req: Req, name: &str) -> Reply {
    if req.q("checkpoint").is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::unsupported("start from a checkpoint"));
    }
    let c = api.find_container(name).await?;
    let st = api.run_state(&c).await;
    if st.running() {
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    if let Err(e) = api.start_task(&c).await {
        // As moby's containerStart: the error is kept, the exit code is 128 unless one was
        // set, and an AutoRemove container goes.
        let msg = e.message.clone();
        let _ = api
            .update_meta(&c.id, move |m| {
                m.error = msg;
                if m.exit_code == 0 {
                    m.exit_code = start_failure_code(&m.error);
                }
            })
            .await;
        if Meta::of(&c).host_config["AutoRemove"].as_bool() == Some(true) {
            let _ = api.remove_container(&c.id, true).await;
        }
        return Err(e);
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// moby's exit code for a start that failed (`translateContainerdStartErr`, then 128).
fn start_failure_code(msg: &str) -> i64 {
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        127
    } else if msg.contains("permission denied") {
        126
    } else {
        128
    }
}

fn timeout_q(req: &Req) -> Result<Option<i64>, ApiError> {
    req.q("t")
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid value for t: {t:?}")))
        })
        .transpose()
}

/// `POST /containers/{id}/stop?t=`: 204, or 304 when it was not running.
pub async fn stop(api: &Api, req: Req, name: &str) -> Reply {
    let t = timeout_q(&req)?;
    let sig = req
        .q("signal")
        .filter(|s| !s.is_empty())
        .map(parse_signal)
        .transpose()?;
    let c = api.find_container(name).await?;
    if !api.run_state(&c).await.running() {
        let _ = api.update_meta(&c.id, |m| m.manually_stopped = true).await;
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    api.stop_container(&c, t, sig).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/restart?t=`.
pub async fn restart(api: &Api, req: Req, name: &str) -> Reply {
    let t = timeout_q(&req)?;
    let c = api.find_container(name).await?;
    if api.run_state(&c).await.running() {
        api.stop_container(&c, t, None).await?;
    }
    let c = api.find_container(&c.id).await?;
    api.start_task(&c).await?;
    api.events.container(&c.id, &Meta::of(&c), "restart", &[]);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(api: &Api, req: Req, name: &str) -> Reply {
    let sig = match req.q("signal").filter(|s| !s.is_empty()) {
        Some(s) => parse_signal(s)?,
        None => 9,
    };
    let c = api.find_container(name).await?;
    if !api.run_state(&c).await.running() {
        return Err(ApiError::conflict(format!(
            "Cannot kill container: {name}: Container {} is not running",
            c.id
        )));
    }
    if matches!(sig, 9 | 15 | 2) {
        // A signal that ends it: the restart policy must not bring it back.
        api.update_meta(&c.id, |m| m.manually_stopped = true)
            .await?;
    }
    let mut exits = api.notifier.get(&c.id).subscribe();
    let seen = exits.borrow().count;
    api.signal(&c, sig).await?;
    if sig == 9 {
        // As dockerd: a SIGKILL is answered once the exit is recorded, so a `docker rm`
        // right after it finds the container stopped (bounded: an unkillable process).
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            exits.wait_for(|e| e.count > seen),
        )
        .await;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`: the answer's
/// headers go out at once (the client starts the container after that), its body when the
/// condition is met.
pub async fn wait(api: &Api, req: Req, name: &str) -> Reply {
    let cond = req.q("condition").unwrap_or("not-running").to_string();
    if !matches!(cond.as_str(), "" | "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {cond:?}"
        )));
    }
    let c = api.find_container(name).await?;
    let chan = api.notifier.get(&c.id);
    let mut rx = chan.subscribe();
    let seen = *rx.borrow();
    let st = api.run_state(&c).await;
    let meta = Meta::of(&c);
    let (tx, body_rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let answer = |code: i64| {
        let mut b =
            serde_json::to_vec(&json!({"StatusCode": code, "Error": null})).unwrap_or_default();
        b.push(b'\n');
        Frame::data(Bytes::from(b))
    };
    let api2 = api.clone();
    let id = c.id.clone();
    tokio::spawn(async move {
        let code = match cond.as_str() {
            "removed" => rx.wait_for(|e| e.removed).await.map(|e| e.code).ok(),
            "next-exit" => rx
                .wait_for(|e| e.count > seen.count)
                .await
                .map(|e| e.code)
                .ok(),
            _ if !st.running() && st.status != "created" => Some(meta.exit_code),
            _ => rx
                .wait_for(|e| e.count > seen.count || e.removed)
                .await
                .map(|e| e.code)
                .ok(),
        };
        let code = match code {
            Some(c) => c,
            // The channel closed (container removed and forgotten): its last code.
            None => api2
                .find_container(&id)
                .await
                .map(|c| Meta::of(&c).exit_code)
                .unwrap_or(0),
        };
        let _ = tx.send(Ok(answer(code))).await;
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(
        body_rx,
    ))));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `POST /containers/{id}/pause` and `/unpause`.
pub async fn pause(api: &Api, _req: Req, name: &str, on: bool) -> Reply {
    let c = api.find_container(name).await?;
    let st = api.run_state(&c).await;
    if !st.running() {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.id
        )));
    }
    if on && st.status == "paused" {
        return Err(ApiError::conflict(format!(
            "Container {} is already paused",
            c.id
        )));
    }
    if !on && st.status != "paused" {
        return Err(ApiError::conflict(format!(
            "Container {} is not paused",
            c.id
        )));
    }
    let r = if on {
        api.tasks
            .pause(rq(tpb::PauseTaskRequest {
                container_id: c.id.clone(),
            }))
            .await
    } else {
        api.tasks
            .resume(rq(tpb::ResumeTaskRequest {
                container_id: c.id.clone(),
            }))
            .await
    };
    r.map_err(|s| task_error(if on { "pausing" } else { "unpausing" }, s))?;
    api.events.container(
        &c.id,
        &Meta::of(&c),
        if on { "pause" } else { "unpause" },
        &[],
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(api: &Api, req: Req, name: &str) -> Reply {
    let new = req
        .q("name")
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    if !super::create::valid_name(&new) {
        return Err(ApiError::bad_request(format!(
            "Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let _guard = api.create_lock.lock().await;
    let c = api.find_container(name).await?;
    let all = api.containers().await?;
    if let Some(o) = all.iter().find(|o| Meta::of(o).name == new) {
        if o.id != c.id {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{new}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                o.id
            )));
        }
    }
    let (store, ctx, id, n2) = (
        api.state.store().clone(),
        api.ctx(),
        c.id.clone(),
        new.clone(),
    );
    let m = blocking(move || {
        let mut c = store.container(&ctx, &id)?;
        let mut m = Meta::of(&c);
        m.name = n2.clone();
        m.put(&mut c);
        c.labels.insert(super::lifecycle::NAME_LABEL.into(), n2);
        store.container_update(&ctx, &c)?;
        Ok(m)
    })
    .await?;
    let old = Meta::of(&c).name;
    api.events
        .container(&c.id, &m, "rename", &[("oldName", format!("/{old}"))]);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(api: &Api, req: Req, name: &str) -> Reply {
    let force = req.q_bool("force")?;
    let volumes = req.q_bool("v")?;
    if req.q_bool("link")? {
        return Err(ApiError::unsupported("container links (rm --link)"));
    }
    let c = api.find_container(name).await?;
    let st = api.run_state(&c).await;
    if st.running() {
        if !force {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                c.id
            )));
        }
        api.update_meta(&c.id, |m| m.manually_stopped = true)
            .await?;
        let mut rx = api.notifier.get(&c.id).subscribe();
        let seen = rx.borrow().count;
        if st.status == "paused" {
            let _ = api
                .tasks
                .resume(rq(tpb::ResumeTaskRequest {
                    container_id: c.id.clone(),
                }))
                .await;
        }
        let _ = api.signal(&c, 9).await;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            rx.wait_for(|e| e.count > seen),
        )
        .await;
    }
    api.remove_container(&c.id, volumes).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/prune`: removes every stopped container.
pub async fn prune(api: &Api, req: Req) -> Reply {
    let f = req.filters()?;
    f.only(&["label", "until"])?;
    if !f.get("until").is_empty() {
        return Err(ApiError::unsupported("the until filter of container prune"));
    }
    let mut deleted = Vec::new();
    for c in api.containers().await? {
        if !c.extensions.contains_key(super::lifecycle::META_EXTENSION) {
            continue;
        }
        let m = Meta::of(&c);
        let labels: BTreeMap<String, String> = m.config["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        if !f.labels_match(&labels) || api.run_state(&c).await.running() {
            continue;
        }
        if api.remove_container(&c.id, false).await.is_ok() {
            deleted.push(c.id.clone());
        }
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({"ContainersDeleted": deleted, "SpaceReclaimed": 0}),
    ))
}

fn time_q(req: &Req, k: &str) -> Result<Option<f64>, ApiError> {
    match req.q(k).filter(|s| !s.is_empty() && *s != "0") {
        None => Ok(None),
        Some(s) => s
            .parse::<f64>()
            .map(Some)
            .or_else(|_| {
                chrono::DateTime::parse_from_rfc3339(s).map(|t| Some(t.timestamp() as f64))
            })
            .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {s:?}"))),
    }
}

/// The content type of a log or attach stream (API 1.41 names both kinds of stream alike).
fn raw_stream_type(_req: &Req, _tty: bool) -> &'static str {
    "application/vnd.docker.raw-stream"
}

/// `GET /containers/{id}/logs`.
pub async fn logs(api: &Api, req: Req, name: &str) -> Reply {
    let c = api.find_container(name).await?;
    let m = Meta::of(&c);
    let o = logs::Options {
        stdout: req.q_bool("stdout")?,
        stderr: req.q_bool("stderr")?,
        since: time_q(&req, "since")?,
        until: time_q(&req, "until")?,
        tail: match req.q("tail").unwrap_or("all") {
            "all" | "" => None,
            n => Some(
                n.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for tail: {n:?}")))?,
            ),
        },
        timestamps: req.q_bool("timestamps")?,
        tty: m.tty(),
    };
    if !o.stdout && !o.stderr {
        return Err(ApiError::bad_request("You must choose at least one stream"));
    }
    let follow = req.q_bool("follow")? && o.until.is_none();
    let log = crate::tasks::log_path(api.state.state_dir(), NAMESPACE, &c.id);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let running = api.run_state(&c).await.running();
    let exits = api.notifier.get(&c.id).subscribe();
    let seen = exits.borrow().count;
    let o2 = o.clone();
    let then_follow = (follow && running).then_some((exits, seen));
    logs::spawn_follower(move || logs::replay(log, o2, then_follow, tx));
    let body = ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(raw_stream_type(&req, o.tty)),
    );
    Ok(r)
}

/// `POST /containers/{id}/attach`: the connection is taken over (`Upgrade: tcp`) and the
/// container's output is written to it, framed unless it has a terminal, until it exits. With
/// `stdin=1` on a container made with OpenStdin, the client's input goes to the process's
/// stdin (`super::stdin`); with StdinOnce, the client's half-close ends that input.
pub async fn attach(api: &Api, mut req: Req, name: &str) -> Reply {
    let c = api.find_container(name).await?;
    let m = Meta::of(&c);
    let o = logs::Options {
        stdout: req.q_bool("stdout")?,
        stderr: req.q_bool("stderr")?,
        tty: m.tty(),
        ..Default::default()
    };
    let stream = req.q_bool("stream")?;
    let replay = req.q_bool("logs")?;
    let keys = super::detach::DetachKeys::for_attach(req.q("detachKeys").unwrap_or(""))?;
    let hijack = req.headers.contains_key(UPGRADE);
    // Input needs the hijacked connection; a container without OpenStdin has none to take.
    let stdin = req.q_bool("stdin")? && m.open_stdin() && hijack;
    let log = crate::tasks::log_path(api.state.state_dir(), NAMESPACE, &c.id);
    let exits = api.notifier.get(&c.id).subscribe();
    let seen = *exits.borrow();
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let running = api.run_state(&c).await.running();
    let started_already = !m.started_at.is_empty();
    // A container not started yet writes from the start of a new log; a running one from now.
    let from_start = !running && !started_already;
    let follows = stream && (running || !started_already);
    if replay {
        // What the log holds first (dockerd's logs=1), then what comes after it.
        let (o2, exits) = (o.clone(), exits.clone());
        let then_follow = follows.then_some((exits, seen.count));
        logs::spawn_follower(move || logs::replay(log, o2, then_follow, tx));
    } else if follows {
        let (o2, exits) = (o.clone(), exits.clone());
        logs::spawn_follower(move || {
            logs::follow(log, o2, from_start.then_some(0), exits, seen.count, tx);
        });
    } else {
        drop(tx);
    }
    let input = if stdin && follows {
        Some(api.stdins.writer(api.state.state_dir(), &c.id).await?)
    } else {
        None
    };
    api.events.container(&c.id, &m, "attach", &[]);
    let content_type = raw_stream_type(&req, o.tty);
    let upgrade = req.upgrade.take();
    match upgrade {
        Some(on) if hijack => {
            let (api, id, once, tty) = (api.clone(), c.id.clone(), m.stdin_once(), m.tty());
            // Only a terminal's input is watched for the detach keys, as by dockerd.
            let escape = tty.then(|| keys.watch());
            tokio::spawn(async move {
                let Ok(up) = on.await else { return };
                let (mut rd, mut wr) = tokio::io::split(hyper_util::rt::TokioIo::new(up));
                let (detached_tx, detached_rx) = tokio::sync::oneshot::channel::<()>();
                let pump = input.map(|mut w| {
                    let mut exits = exits.clone();
                    let api = api.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        let ended = async move {
                            let _ = exits.wait_for(|e| e.count > seen.count || e.removed).await;
                        };
                        let end = super::exec::copy_input(&mut rd, &mut w, escape, ended).await;
                        drop(w);
                        if end == super::exec::InputEnd::Detached {
                            let _ = detached_tx.send(());
                        } else if once && !tty {
                            // A terminal's input stays open for the next attach (dockerd
                            // closes StdinOnce input only without one).
                            api.stdins.close(&api, &id).await;
                        }
                    })
                });
                match super::exec::copy_output(&mut rx, &mut wr, detached_rx).await {
                    // The client left; its input side ends by itself.
                    OutputEnd::ClientGone => return,
                    OutputEnd::Detached => {
                        let _ = wr.shutdown().await;
                        if let Ok(c) = api.find_container(&id).await {
                            api.events.container(&id, &Meta::of(&c), "detach", &[]);
                        }
                        tracing::debug!(container = %id, "docker api: attach detached");
                        return;
                    }
                    OutputEnd::Done => {}
                }
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
                if let Some(p) = pump {
                    let _ = p.await;
                }
            });
            let mut r: Response<Body> = empty(StatusCode::SWITCHING_PROTOCOLS);
            let h = r.headers_mut();
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(UPGRADE, HeaderValue::from_static("tcp"));
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            Ok(r)
        }
        _ => {
            let body = ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            Ok(r)
        }
    }
}

/// `GET /containers/{id}/top`: the container's processes, as `ps -ef` shows them.
pub async fn top(api: &Api, req: Req, name: &str) -> Reply {
    if req
        .q("ps_args")
        .is_some_and(|a| !a.is_empty() && a != "-ef")
    {
        return Err(ApiError::unsupported("ps_args other than -ef"));
    }
    let c = api.find_container(name).await?;
    if !api.run_state(&c).await.running() {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.id
        )));
    }
    let pids = api
        .tasks
        .list_pids(rq(tpb::ListPidsRequest {
            container_id: c.id.clone(),
        }))
        .await
        .map_err(|s| task_error("listing processes", s))?
        .into_inner()
        .processes;
    let rows = blocking(move || {
        Ok(pids
            .iter()
            .filter_map(|p| proc_row(p.pid))
            .collect::<Vec<Value>>())
    })
    .await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": rows,
        }),
    ))
}

/// One `ps -ef` row from /proc.
fn proc_row(pid: u32) -> Option<Value> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ppid = fields.get(1)?.to_string();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let cpu: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let secs = cpu / ticks;
    let time = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}")).ok()?.uid()
    };
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = cmd
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(json!([
        uid.to_string(),
        pid.to_string(),
        ppid,
        "0",
        "",
        "?",
        time,
        cmd
    ]))
}
