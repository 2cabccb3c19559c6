//! `GET /containers/{id}/stats` (`docker stats`): one sample of the container's cgroup (CPU,
//! memory, pids, block I/O, read with berth-cgroups on v1 and v2 alike) and of its network
//! namespace's interfaces (`/proc/<pid>/net/dev`), in Docker's JSON shape.
//!
//! As dockerd: `stream=true` (the default) sends a sample a second, each with the previous
//! one's CPU figures as `precpu_stats`; `stream=false` waits for a second sample so that the
//! CPU percentage can be computed; `one-shot=true` with `stream=false` answers at once, without
//! `precpu_stats`. A container that does not run gives zeros.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_store::metadata::Container;
use http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::lifecycle::Meta;
use super::server::{json as json_reply, line, stream, Chunk, Reply, Req};
use super::{blocking, rfc3339, Api, NAMESPACE};

/// What a sample reads: the cgroup and the init's network namespace.
struct Target {
    cgroup: berth_cgroups::Cgroup,
    pid: u32,
}

/// The zero time Go prints for a time never set.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The container's cgroup: the spec's `cgroupsPath` (berthd gives `/<ns>/<id>`).
fn cgroup_of(c: &Container) -> Result<berth_cgroups::Cgroup, ApiError> {
    let spec: Value = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or(Value::Null);
    let fallback = format!("/{NAMESPACE}/{}", c.id);
    let path = spec["linux"]["cgroupsPath"]
        .as_str()
        .filter(|p| !p.is_empty())
        .unwrap_or(&fallback)
        .to_string();
    berth_cgroups::Cgroup::resolve(Some(&path), &c.id)
        .map_err(|e| ApiError::internal(format!("the cgroup of container {}: {e}", c.id)))
}

/// The host's CPU time so far in nanoseconds (the `cpu` line of /proc/stat) and the number of
/// CPUs online.
fn system_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ns_per_tick = if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    };
    let mut total = 0;
    let mut cpus = 0;
    for l in text.lines() {
        let mut it = l.split_whitespace();
        match it.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal (guest time is in user).
                total = it
                    .take(8)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>()
                    * ns_per_tick;
            }
            Some(n) if n.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total, cpus)
}

/// The host's memory in bytes (MemTotal), dockerd's limit for an unlimited container.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// Per interface counters of a `/proc/<pid>/net/dev` text, loopback left out (dockerd
/// reports the container's endpoints only).
pub fn parse_net_dev(text: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" || name.is_empty() {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            json!({
                "rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11],
            }),
        );
    }
    out
}

fn entries(list: &[berth_cgroups::IoEntry]) -> Value {
    Value::Array(
        list.iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
            .collect(),
    )
}

/// An empty sample, as dockerd gives for a container that does not run.
fn zero_sample(c: &Container) -> Value {
    json!({
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                      "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                         "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "memory_stats": {},
        "name": format!("/{}", Meta::of(c).name),
        "id": c.id,
    })
}

/// One sample (without name, id and the precpu part). Runs in a blocking thread.
fn sample(t: &Target) -> Result<Value, ApiError> {
    let s = t
        .cgroup
        .stats()
        .map_err(|e| ApiError::internal(format!("reading the cgroup: {e}")))?;
    let (system, online) = system_cpu();
    let cpu = s.cpu.unwrap_or_default();
    let mut usage = json!({
        "total_usage": cpu.usage_total,
        "usage_in_kernelmode": cpu.usage_kernel,
        "usage_in_usermode": cpu.usage_user,
    });
    // v2 has no per-CPU figures; dockerd leaves the field out then.
    if !cpu.usage_percpu.is_empty() {
        usage["percpu_usage"] = json!(cpu.usage_percpu);
    }
    let online = if cpu.usage_percpu.is_empty() {
        online
    } else {
        online.max(1)
    };
    let mut out = json!({
        "read": rfc3339(SystemTime::now()),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {
            "cpu_usage": usage,
            "system_cpu_usage": system,
            "online_cpus": online,
            "throttling_data": {
                "periods": cpu.throttling_periods,
                "throttled_periods": cpu.throttled_periods,
                "throttled_time": cpu.throttled_time,
            },
        },
        "memory_stats": {},
        "pids_stats": {},
    });
    if let Some(m) = s.memory {
        let mut mem = json!({
            "usage": m.usage,
            "stats": m.raw,
            "limit": m.limit.unwrap_or_else(host_memory),
        });
        if let Some(max) = m.max_usage {
            mem["max_usage"] = json!(max);
        }
        if m.failcnt > 0 {
            mem["failcnt"] = json!(m.failcnt);
        }
        out["memory_stats"] = mem;
    }
    if let Some(p) = s.pids {
        out["pids_stats"] = json!({"current": p.current});
        if let Some(l) = p.limit {
            out["pids_stats"]["limit"] = json!(l);
        }
    }
    let io = s.io.unwrap_or_default();
    out["blkio_stats"] = json!({
        "io_service_bytes_recursive": entries(&io.service_bytes),
        "io_serviced_recursive": entries(&io.serviced),
        "io_queue_recursive": null, "io_service_time_recursive": null,
        "io_wait_time_recursive": null, "io_merged_recursive": null,
        "io_time_recursive": null, "sectors_recursive": null,
    });
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/net/dev", t.pid)) {
        let nets = parse_net_dev(&text);
        if !nets.is_empty() {
            out["networks"] = json!(nets);
        }
    }
    Ok(out)
}

/// Samples with the previous sample's CPU figures and read time.
struct Sampler {
    c: Container,
    target: Option<Target>,
    pre: Option<(Value, Value)>,
}

impl Sampler {
    fn next(&mut self) -> Result<Value, ApiError> {
        let Some(t) = &self.target else {
            return Ok(zero_sample(&self.c));
        };
        let mut v = sample(t)?;
        let (pre_cpu, pre_read) = self.pre.take().unwrap_or_else(|| {
            (
                json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                       "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}),
                json!(ZERO_TIME),
            )
        });
        self.pre = Some((v["cpu_stats"].clone(), v["read"].clone()));
        v["precpu_stats"] = pre_cpu;
        v["preread"] = pre_read;
        v["name"] = json!(format!("/{}", Meta::of(&self.c).name));
        v["id"] = json!(self.c.id);
        Ok(v)
    }
}

async fn sampler(api: &Api, c: Container) -> Result<Sampler, ApiError> {
    let st = api.run_state(&c).await;
    let target = if st.running() && st.pid > 0 {
        Some(Target {
            cgroup: cgroup_of(&c)?,
            pid: st.pid,
        })
    } else {
        None
    };
    Ok(Sampler {
        c,
        target,
        pre: None,
    })
}

async fn take(s: Sampler) -> Result<(Sampler, Value), ApiError> {
    blocking(move || {
        let mut s = s;
        let v = s.next()?;
        Ok((s, v))
    })
    .await
}

/// `GET /containers/{id}/stats?stream=&one-shot=`.
pub async fn stats(api: &Api, req: Req, name: &str) -> Reply {
    let streaming = match req.q("stream") {
        None => true,
        Some(_) => req.q_bool("stream")?,
    };
    let one_shot = req.q_bool("one-shot")?;
    if streaming && one_shot {
        return Err(ApiError::bad_request(
            "cannot have stream=true and one-shot=true",
        ));
    }
    let c = api.find_container(name).await?;
    let s = sampler(api, c).await?;
    if !streaming {
        let running = s.target.is_some();
        let (mut s, mut v) = take(s).await?;
        if running && !one_shot {
            // A second sample a second later, so that the CPU use can be computed.
            tokio::time::sleep(Duration::from_secs(1)).await;
            (s, v) = take(s).await?;
        }
        drop(s);
        return Ok(json_reply(StatusCode::OK, &v));
    }
    let (tx, rx) = mpsc::channel::<Chunk>(2);
    let api2 = api.clone();
    tokio::spawn(async move {
        let mut s = s;
        loop {
            let v = match take(s).await {
                Ok((back, v)) => {
                    s = back;
                    Ok(line(&v))
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if tx.send(v).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // A container that stopped (or started) since: sample what it is now; a removed
            // one ends the stream.
            let Ok(c) = api2.find_container(&s.c.id).await else {
                return;
            };
            let running = api2.run_state(&c).await.running();
            if running != s.target.is_some() {
                match sampler(&api2, c).await {
                    Ok(n) => s = n,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        }
    });
    stream(rx, "application/json", true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_by_interface_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
 eth0:    5338      36    1    2    0     0          0         0      648       8    3    4    0     0       0          0\n";
        let n = parse_net_dev(text);
        assert_eq!(n.len(), 1, "{n:?}");
        let e = &n["eth0"];
        assert_eq!(e["rx_bytes"], 5338);
        assert_eq!(e["rx_packets"], 36);
        assert_eq!(e["rx_errors"], 1);
        assert_eq!(e["rx_dropped"], 2);
        assert_eq!(e["tx_bytes"], 648);
        assert_eq!(e["tx_packets"], 8);
        assert_eq!(e["tx_errors"], 3);
        assert_eq!(e["tx_dropped"], 4);
    }

    #[test]
    fn the_host_has_cpu_time_and_cpus() {
        let (t, n) = system_cpu();
        assert!(t > 0 && n > 0, "{t} {n}");
        assert!(host_memory() > 0);
    }
}
