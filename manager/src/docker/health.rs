//! Health checks (`Config.Healthcheck`, a Dockerfile's HEALTHCHECK), as dockerd runs them:
//! while the container runs, every `Interval` its probe (`CMD`: a command, `CMD-SHELL`: a
//! shell line) runs as an exec in the container; a probe over its `Timeout` is killed and
//! fails. A pass makes the container `healthy`; `Retries` failures in a row make it
//! `unhealthy`, except that failures within `StartPeriod` of the start do not count while it
//! is still `starting`. `State.Health` (status, failing streak, the last five results) lives in
//! the record's [`Meta`]; a change of status is a `health_status: ...` event.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::errors::ApiError;
use super::lifecycle::Meta;
use super::Api;

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u64 = 3;
/// Results kept in `State.Health.Log`.
const LOG_ENTRIES: usize = 5;
/// The shortest duration Docker takes (1 ms).
const MINIMUM_NANOS: i64 = 1_000_000;

/// One probe's result, as inspect shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Probe {
    /// When it started, RFC 3339.
    pub start: String,
    /// When it ended.
    pub end: String,
    /// Its exit code (0 healthy, -1 timed out).
    pub exit_code: i64,
    /// The start of its output.
    pub output: String,
}

/// `State.Health`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Health {
    /// starting, healthy, unhealthy.
    pub status: String,
    /// Failures in a row.
    pub failing_streak: u64,
    /// The last results, oldest first.
    pub log: Vec<Probe>,
}

/// A container's health check, read from its Config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The command a probe runs.
    pub cmd: Vec<String>,
    /// Between probes.
    pub interval: Duration,
    /// A probe's limit.
    pub timeout: Duration,
    /// Failures in this long after the start do not count while starting.
    pub start_period: Duration,
    /// Failures in a row that make it unhealthy.
    pub retries: u64,
}

fn nanos(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn or_default(n: i64, d: Duration) -> Duration {
    if n > 0 {
        Duration::from_nanos(n as u64)
    } else {
        d
    }
}

impl Check {
    /// The check of a container (none: it has none, or `NONE`).
    pub fn of(m: &Meta) -> Option<Check> {
        let hc = &m.config["Healthcheck"];
        let test: Vec<String> = hc["Test"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let cmd = match test.first().map(String::as_str) {
            Some("CMD") if test.len() > 1 => test[1..].to_vec(),
            Some("CMD-SHELL") if test.len() > 1 => {
                let mut sh: Vec<String> = m.config["Shell"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                if sh.is_empty() {
                    sh = vec!["/bin/sh".into(), "-c".into()];
                }
                sh.push(test[1..].join(" "));
                sh
            }
            _ => return None,
        };
        Some(Check {
            cmd,
            interval: or_default(nanos(&hc["Interval"]), DEFAULT_INTERVAL),
            timeout: or_default(nanos(&hc["Timeout"]), DEFAULT_TIMEOUT),
            start_period: or_default(nanos(&hc["StartPeriod"]), Duration::ZERO),
            retries: hc["Retries"]
                .as_u64()
                .filter(|r| *r > 0)
                .unwrap_or(DEFAULT_RETRIES),
        })
    }
}

/// Checks a create request's `Healthcheck` with dockerd's rules and words (400).
pub fn validate(hc: &Value) -> Result<(), ApiError> {
    if hc.is_null() {
        return Ok(());
    }
    if !hc.is_object() {
        return Err(ApiError::bad_request("Healthcheck: expected an object"));
    }
    for k in ["Interval", "Timeout", "StartPeriod"] {
        let v = &hc[k];
        if v.is_null() {
            continue;
        }
        let n = v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!("Healthcheck.{k}: expected nanoseconds, got {v}"))
        })?;
        if n != 0 && n < MINIMUM_NANOS {
            return Err(ApiError::bad_request(format!(
                "{k} in Healthcheck cannot be less than 1ms"
            )));
        }
    }
    if hc["Retries"].as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::bad_request(
            "Retries in Healthcheck cannot be negative",
        ));
    }
    let test = &hc["Test"];
    if !test.is_null() {
        let list = test
            .as_array()
            .ok_or_else(|| ApiError::bad_request("Healthcheck.Test: expected a list of strings"))?;
        match list.first().and_then(Value::as_str) {
            None if list.is_empty() => {}
            Some("NONE") => {}
            Some("CMD") | Some("CMD-SHELL") if list.len() > 1 => {}
            Some(t @ ("CMD" | "CMD-SHELL")) => {
                return Err(ApiError::bad_request(format!(
                    "Healthcheck.Test: {t} needs a command after it"
                )))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Healthcheck.Test: unknown type {:?} (NONE, CMD or CMD-SHELL expected)",
                    other.unwrap_or("")
                )))
            }
        }
    }
    Ok(())
}

/// The request's Healthcheck over the image's, field by field, as dockerd merges them.
pub fn merge(user: &Value, image: &Value) -> Value {
    if user.is_null() {
        return image.clone();
    }
    let mut out = user.clone();
    if image.is_object() {
        if out["Test"].as_array().is_none_or(|t| t.is_empty()) {
            out["Test"] = image["Test"].clone();
        }
        for k in ["Interval", "Timeout", "StartPeriod", "Retries"] {
            if nanos(&out[k]) == 0 && !image[k].is_null() {
                out[k] = image[k].clone();
            }
        }
    }
    out
}

/// A start: a container with a check begins `starting` (its old results stay).
pub fn reset(m: &mut Meta) {
    if Check::of(m).is_none() {
        m.health = None;
        return;
    }
    let log = m.health.take().map(|h| h.log).unwrap_or_default();
    m.health = Some(Health {
        status: "starting".into(),
        failing_streak: 0,
        log,
    });
}

/// Adds a result (`since_start`: how long after the start the probe began); the new status.
pub fn record(h: &mut Health, check: &Check, p: Probe, since_start: Duration) -> String {
    if p.exit_code == 0 {
        h.failing_streak = 0;
        h.status = "healthy".into();
    } else if !(h.status == "starting" && since_start < check.start_period) {
        h.failing_streak += 1;
        if h.failing_streak >= check.retries {
            h.status = "unhealthy".into();
        }
    }
    h.log.push(p);
    if h.log.len() > LOG_ENTRIES {
        let extra = h.log.len() - LOG_ENTRIES;
        h.log.drain(..extra);
    }
    h.status.clone()
}

/// ` (healthy)`, ` (health: starting)`: what `docker ps` adds to "Up ...".
pub fn ps_suffix(m: &Meta) -> String {
    match &m.health {
        Some(h) if h.status == "starting" => " (health: starting)".into(),
        Some(h) if !h.status.is_empty() => format!(" ({})", h.status),
        _ => String::new(),
    }
}

/// The `health` filter of `docker ps`: starting, healthy, unhealthy or none.
pub fn status_for_filter(m: &Meta) -> &str {
    match &m.health {
        Some(h) if !h.status.is_empty() => h.status.as_str(),
        _ => "none",
    }
}

/// `State.Health` for inspect (absent without a check).
pub fn inspect_value(m: &Meta) -> Option<Value> {
    m.health.as_ref().map(|h| json!(h))
}

/// Runs container `id`'s probes while this run of it lasts (from its start to its exit).
pub fn watch(api: &Api, id: &str, meta: &Meta) {
    let Some(check) = Check::of(meta) else {
        return;
    };
    let (api, id) = (api.clone(), id.to_string());
    let mut exits = api.notifier.get(&id).subscribe();
    let run = *exits.borrow();
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        let gone =
            |e: &super::lifecycle::Exits| e.count > run.count || e.starts > run.starts || e.removed;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(check.interval) => {}
                _ = exits.wait_for(gone) => return,
            }
            let Ok(c) = api.find_container(&id).await else {
                return;
            };
            match api.run_state(&c).await.status {
                "running" => {}
                // A frozen container cannot run a probe; the next interval tries again.
                "paused" => continue,
                _ => return,
            }
            let since_start = started.elapsed();
            let start = super::rfc3339(std::time::SystemTime::now());
            let r = tokio::select! {
                r = super::exec::probe(&api, &c, check.cmd.clone(), check.timeout) => r,
                _ = exits.wait_for(gone) => return,
            };
            if gone(&exits.borrow()) {
                return;
            }
            let p = Probe {
                start,
                end: super::rfc3339(std::time::SystemTime::now()),
                exit_code: r.code,
                output: r.output,
            };
            tracing::debug!(container = %id, code = p.exit_code, "docker api: health probe");
            let check2 = check.clone();
            let (old_tx, old_rx) = tokio::sync::oneshot::channel::<String>();
            let updated = api
                .update_meta(&id, move |m| {
                    let h = m.health.get_or_insert_with(|| Health {
                        status: "starting".into(),
                        ..Default::default()
                    });
                    let _ = old_tx.send(h.status.clone());
                    record(h, &check2, p, since_start);
                })
                .await;
            let Ok(m) = updated else { return };
            let old = old_rx.await.unwrap_or_default();
            let now = m
                .health
                .as_ref()
                .map(|h| h.status.clone())
                .unwrap_or_default();
            if old != now {
                api.events
                    .container(&id, &m, &format!("health_status: {now}"), &[]);
            }
        }
    });
}
