//! `POST /containers/{id}/update` (`docker update`): new resource limits and restart policy.
//!
//! Limits are applied to a running container through the task service's `Update` (the
//! runtime's `update`, as `ctr tasks update` does), then kept in the container record: in the
//! Docker HostConfig that inspect shows and in the OCI spec's `linux.resources`, which the next
//! start reads, so a restart keeps them. As in Docker, a zero value leaves a limit as it is.

use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::create::{is_zero, only};
use super::errors::ApiError;
use super::lifecycle::{rq, task_error, Meta};
use super::server::{json as json_reply, Reply, Req};
use super::{blocking, Api};
use crate::runspec;

/// The fields of Docker's UpdateConfig berthd applies; any other non-zero one is refused.
const FIELDS: &[&str] = &[
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuPeriod",
    "CpuQuota",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "RestartPolicy",
];

/// What an update changes: HostConfig fields to store, and the OCI `LinuxResources` to apply.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// HostConfig fields and their new values.
    pub host: Map<String, Value>,
    /// OCI LinuxResources (only the parts that change); empty: no limit changes.
    pub resources: Map<String, Value>,
}

fn int(body: &Value, k: &str) -> Result<i64, ApiError> {
    match &body[k] {
        Value::Null => Ok(0),
        v => v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request(format!("{k}: {v} is not an integer"))),
    }
}

fn set(res: &mut Map<String, Value>, section: &str, k: &str, v: Value) {
    let s = res.entry(section.to_string()).or_insert_with(|| json!({}));
    s[k] = v;
}

/// Checks an UpdateConfig against the container's HostConfig `host` and says what changes.
pub fn plan(body: &Value, host: &Value) -> Result<Plan, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the update must be a JSON object"))?;
    only("", obj, FIELDS)?;
    let mut p = Plan::default();
    let memory = int(body, "Memory")?;
    let swap = int(body, "MemorySwap")?;
    let reservation = int(body, "MemoryReservation")?;
    if memory < 0 {
        return Err(ApiError::bad_request(format!(
            "Memory: {memory} is not a number of bytes"
        )));
    }
    if memory > 0 && memory < runspec::MIN_MEMORY {
        return Err(ApiError::bad_request("Minimum memory limit allowed is 6MB"));
    }
    let cur_memory = host["Memory"].as_i64().unwrap_or(0);
    let cur_swap = host["MemorySwap"].as_i64().unwrap_or(0);
    let new_memory = if memory > 0 { memory } else { cur_memory };
    if memory > 0 && swap == 0 && cur_swap > 0 && memory > cur_swap {
        return Err(ApiError::conflict(
            "Cannot update container: Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
        ));
    }
    if swap < -1 || (swap > 0 && swap < new_memory) {
        return Err(ApiError::bad_request(format!(
            "MemorySwap: {swap} must be at least the memory limit ({new_memory}), or -1 for unlimited swap"
        )));
    }
    if swap > 0 && new_memory <= 0 {
        return Err(ApiError::bad_request(
            "MemorySwap: a swap limit needs a memory limit as well",
        ));
    }
    if reservation < 0 || (reservation > 0 && new_memory > 0 && reservation > new_memory) {
        return Err(ApiError::bad_request(format!(
            "MemoryReservation: {reservation} must be positive and below the memory limit"
        )));
    }
    if memory > 0 {
        p.host.insert("Memory".into(), json!(memory));
        set(&mut p.resources, "memory", "limit", json!(memory));
    }
    if swap != 0 {
        p.host.insert("MemorySwap".into(), json!(swap));
        set(&mut p.resources, "memory", "swap", json!(swap));
    }
    if reservation > 0 {
        p.host
            .insert("MemoryReservation".into(), json!(reservation));
        set(
            &mut p.resources,
            "memory",
            "reservation",
            json!(reservation),
        );
    }
    let nano = int(body, "NanoCpus")?;
    let period = int(body, "CpuPeriod")?;
    let quota = int(body, "CpuQuota")?;
    if nano < 0 {
        return Err(ApiError::bad_request(format!(
            "NanoCpus: {nano} must be positive"
        )));
    }
    if nano > 0 && (period > 0 || quota > 0) {
        return Err(ApiError::bad_request(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    let has_nano = host["NanoCpus"].as_i64().unwrap_or(0) > 0;
    let has_quota =
        host["CpuQuota"].as_i64().unwrap_or(0) > 0 || host["CpuPeriod"].as_i64().unwrap_or(0) > 0;
    if nano > 0 && has_quota {
        return Err(ApiError::conflict(
            "Conflicting options: CPU Quota or CPU Period cannot be updated when Nano CPUs is already set",
        ));
    }
    if (period > 0 || quota > 0) && has_nano {
        return Err(ApiError::conflict(
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
        ));
    }
    if nano > 0 {
        // Below 0.01 CPU the quota would be under the kernel's 1 ms (or 0: no limit at all).
        runspec::cpu_quota(nano as f64 / 1e9).map_err(ApiError::bad_request)?;
        p.host.insert("NanoCpus".into(), json!(nano));
        set(
            &mut p.resources,
            "cpu",
            "period",
            json!(runspec::CPU_PERIOD),
        );
        set(&mut p.resources, "cpu", "quota", json!(nano / 10_000));
    }
    if period > 0 {
        if !(1000..=1_000_000).contains(&period) {
            return Err(ApiError::bad_request(
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
            ));
        }
        p.host.insert("CpuPeriod".into(), json!(period));
        set(&mut p.resources, "cpu", "period", json!(period));
    }
    if quota != 0 {
        if quota > 0 && quota < 1000 {
            return Err(ApiError::bad_request(
                "CPU cfs quota can not be less than 1ms (i.e. 1000)",
            ));
        }
        p.host.insert("CpuQuota".into(), json!(quota));
        set(&mut p.resources, "cpu", "quota", json!(quota));
    }
    let shares = int(body, "CpuShares")?;
    if shares != 0 {
        if !(2..=262_144).contains(&shares) {
            return Err(ApiError::bad_request(format!(
                "CpuShares: {shares} must be 2 to 262144"
            )));
        }
        p.host.insert("CpuShares".into(), json!(shares));
        set(&mut p.resources, "cpu", "shares", json!(shares));
    }
    for (k, oci) in [("CpusetCpus", "cpus"), ("CpusetMems", "mems")] {
        let v = match &body[k] {
            Value::Null => "",
            Value::String(s) => s.as_str(),
            v => return Err(ApiError::bad_request(format!("{k}: {v} is not a string"))),
        };
        if v.is_empty() {
            continue;
        }
        let ok = v.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            ends.all(|n| n.parse::<u32>().is_ok())
        });
        if !ok {
            return Err(ApiError::bad_request(format!(
                "Invalid value {v} for {k}: expected a list like 0-2,4"
            )));
        }
        p.host.insert(k.into(), json!(v));
        set(&mut p.resources, "cpu", oci, json!(v));
    }
    // A pointer in Docker's API: absent leaves the limit, 0 or -1 lifts it.
    if !body["PidsLimit"].is_null() {
        let pids = int(body, "PidsLimit")?;
        if pids < -1 {
            return Err(ApiError::bad_request(format!(
                "PidsLimit: {pids} must be positive, or 0 or -1 for unlimited"
            )));
        }
        let limit = if pids <= 0 { -1 } else { pids };
        p.host.insert("PidsLimit".into(), json!(pids.max(0)));
        set(&mut p.resources, "pids", "limit", json!(limit));
    }
    let rp = &body["RestartPolicy"];
    if !is_zero(rp) {
        let name = rp["Name"].as_str().unwrap_or("");
        let max = rp["MaximumRetryCount"].as_i64().unwrap_or(0);
        if !matches!(name, "" | "no" | "always" | "unless-stopped" | "on-failure") {
            return Err(ApiError::bad_request(format!(
                "invalid restart policy '{name}'"
            )));
        }
        if max < 0 {
            return Err(ApiError::bad_request(
                "maximum retry count cannot be negative",
            ));
        }
        if max != 0 && name != "on-failure" {
            return Err(ApiError::bad_request(format!(
                "maximum retry count cannot be used with restart policy '{name}'"
            )));
        }
        if host["AutoRemove"].as_bool() == Some(true) && !matches!(name, "" | "no") {
            return Err(ApiError::conflict(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            ));
        }
        p.host.insert(
            "RestartPolicy".into(),
            json!({"Name": name, "MaximumRetryCount": max}),
        );
    }
    Ok(p)
}

/// Writes `resources` over a spec's `linux.resources`, section by section.
fn merge_resources(spec: &mut Value, resources: &Map<String, Value>) {
    if !spec["linux"].is_object() {
        spec["linux"] = json!({});
    }
    if !spec["linux"]["resources"].is_object() {
        spec["linux"]["resources"] = json!({});
    }
    let r = &mut spec["linux"]["resources"];
    for (section, fields) in resources {
        if !r[section].is_object() {
            r[section] = json!({});
        }
        for (k, v) in fields.as_object().into_iter().flatten() {
            r[section][k] = v.clone();
        }
    }
}

/// `POST /containers/{id}/update`.
pub async fn update(api: &Api, req: Req, name: &str) -> Reply {
    let c = api.find_container(name).await?;
    let body: Value = req.json().await?;
    let meta = Meta::of(&c);
    let p = plan(&body, &meta.host_config)?;
    if !p.resources.is_empty() && api.run_state(&c).await.running() {
        let value = serde_json::to_vec(&Value::Object(p.resources.clone()))
            .map_err(|e| ApiError::internal(format!("encoding the resources: {e}")))?;
        api.tasks
            .update(rq(tpb::UpdateTaskRequest {
                container_id: c.id.clone(),
                resources: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                        .into(),
                    value,
                }),
                annotations: Default::default(),
            }))
            .await
            .map_err(|s| {
                let e = task_error(&format!("Cannot update container {}", c.id), s);
                // The kernel's refusals (a limit below the usage) are the request's fault.
                if e.status == StatusCode::INTERNAL_SERVER_ERROR {
                    ApiError::bad_request(e.message)
                } else {
                    e
                }
            })?;
    }
    let (store, ctx, id) = (api.state.store().clone(), api.ctx(), c.id.clone());
    blocking(move || {
        let mut c = store.container(&ctx, &id)?;
        let mut m = Meta::of(&c);
        if !m.host_config.is_object() {
            m.host_config = json!({});
        }
        for (k, v) in &p.host {
            m.host_config[k] = v.clone();
        }
        m.put(&mut c);
        if !p.resources.is_empty() {
            if let Some(any) = c.spec.as_mut() {
                let mut spec: Value = serde_json::from_slice(&any.value)
                    .map_err(|e| ApiError::internal(format!("the spec of {id}: {e}")))?;
                merge_resources(&mut spec, &p.resources);
                any.value = serde_json::to_vec(&spec)
                    .map_err(|e| ApiError::internal(format!("encoding the spec: {e}")))?;
            }
        }
        store.container_update(&ctx, &c)?;
        Ok(())
    })
    .await?;
    Ok(json_reply(StatusCode::OK, &json!({"Warnings": []})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_change_nothing_and_limits_become_oci_resources() {
        let body = json!({"Memory": 67108864, "MemorySwap": 0, "CpuShares": 0, "NanoCpus": 500000000,
                          "CpusetCpus": "0", "PidsLimit": 50, "BlkioWeight": 0, "Devices": [],
                          "RestartPolicy": {"Name": "", "MaximumRetryCount": 0}});
        let p = plan(&body, &json!({})).unwrap();
        assert_eq!(p.resources["memory"], json!({"limit": 67108864}));
        assert_eq!(
            p.resources["cpu"],
            json!({"period": 100000, "quota": 50000, "cpus": "0"})
        );
        assert_eq!(p.resources["pids"], json!({"limit": 50}));
        assert!(!p.host.contains_key("RestartPolicy"));
        assert_eq!(p.host["Memory"], 67108864);
    }

    #[test]
    fn unsupported_fields_and_bad_values_are_refused_by_name() {
        let e = plan(&json!({"BlkioWeight": 300}), &json!({})).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("BlkioWeight"), "{}", e.message);
        let e = plan(&json!({"Memory": 1024}), &json!({})).unwrap_err();
        assert!(e.message.contains("6MB"), "{}", e.message);
        let e = plan(
            &json!({"Memory": 100_000_000}),
            &json!({"Memory": 10_000_000, "MemorySwap": 20_000_000}),
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        // Under 0.01 CPU the quota is under the kernel's 1 ms (found by the fuzz target).
        let e = plan(&json!({"NanoCpus": 5_000_000}), &json!({})).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Range of CPUs"), "{}", e.message);
        let p = plan(&json!({"NanoCpus": 10_000_000}), &json!({})).unwrap();
        assert_eq!(p.resources["cpu"]["quota"], 1000);
        let e = plan(&json!({"CpuShares": 1}), &json!({})).unwrap_err();
        assert!(e.message.contains("CpuShares"), "{}", e.message);
        let e = plan(&json!({"RestartPolicy": {"Name": "sometimes"}}), &json!({})).unwrap_err();
        assert!(e.message.contains("sometimes"), "{}", e.message);
        let e = plan(
            &json!({"RestartPolicy": {"Name": "always"}}),
            &json!({"AutoRemove": true}),
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
    }

    #[test]
    fn pids_zero_lifts_the_limit_and_restart_policy_is_kept() {
        let p = plan(
            &json!({"PidsLimit": 0, "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}}),
            &json!({}),
        )
        .unwrap();
        assert_eq!(p.resources["pids"], json!({"limit": -1}));
        assert_eq!(
            p.host["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 2})
        );
    }

    #[test]
    fn resources_merge_into_the_spec() {
        let mut spec =
            json!({"linux": {"resources": {"memory": {"limit": 1, "swap": 5}, "devices": []}}});
        let p = plan(&json!({"Memory": 8_000_000}), &json!({})).unwrap();
        merge_resources(&mut spec, &p.resources);
        assert_eq!(
            spec["linux"]["resources"]["memory"],
            json!({"limit": 8_000_000, "swap": 5})
        );
        assert_eq!(spec["linux"]["resources"]["devices"], json!([]));
    }
}
