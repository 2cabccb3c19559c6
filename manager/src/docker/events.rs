//! Docker's event stream (`GET /events`): what the Docker API does to containers, networks,
//! volumes and images, as Docker's JSON messages (`Type`, `Action`, `Actor`, `scope`, `time`,
//! `timeNano`, and for containers and images the older `status`/`id`/`from`).
//!
//! Handlers call [`Events::emit`]; every event goes to the listeners of the moment (a
//! broadcast channel) and into a ring of the last [`RING`] events, which is what `since` in the
//! past replays (dockerd keeps 256). Image events still come from the engine's event bus
//! (the store publishes them), translated by [`Events::relay_images`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::errors::ApiError;
use super::server::{self, line, Chunk, Filters, Reply, Req};
use super::{images, Api, NAMESPACE};

/// Events kept for `since`: 256, as dockerd. Each holds its actor's attributes (a compose
/// container's carry a dozen labels), about 1.5 KB; 1,024 of them were most of what berthd's
/// RSS grew over a long client session (`hack/bench-rss.sh`).
pub const RING: usize = 256;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// container, image, network, volume.
    pub ty: &'static str,
    /// create, start, die, `health_status: healthy`, ...
    pub action: String,
    /// The actor's ID (container ID, image name, network ID, volume name).
    pub id: String,
    /// The actor's attributes (name, image, exitCode, the container's labels, ...).
    pub attrs: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub time_nano: i64,
}

impl Event {
    /// Docker's JSON message.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.ty,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attrs},
            "scope": "local",
            "time": self.time_nano.div_euclid(1_000_000_000),
            "timeNano": self.time_nano,
        });
        // moby fills the deprecated fields for containers and images only.
        if matches!(self.ty, "container" | "image") {
            v["status"] = json!(self.action);
            v["id"] = json!(self.id);
            if let Some(img) = self.attrs.get("image").filter(|_| self.ty == "container") {
                v["from"] = json!(img);
            }
        }
        v
    }
}

/// The event hub of the Docker API.
pub struct Events {
    ring: Mutex<VecDeque<Arc<Event>>>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            tx: broadcast::channel(RING).0,
        }
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Events {
    /// Records and announces an event of `ty` about `id`.
    pub fn emit(
        &self,
        ty: &'static str,
        action: impl Into<String>,
        id: &str,
        attrs: BTreeMap<String, String>,
    ) {
        let ev = Arc::new(Event {
            ty,
            action: action.into(),
            id: id.to_string(),
            attrs,
            time_nano: now_nanos(),
        });
        tracing::debug!(ty, action = %ev.action, id, "docker event");
        // Ring and broadcast under one lock: a subscriber that reads the ring right after
        // subscribing sees every event exactly once.
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// A container event: its attributes are its labels, image and name, plus `extra`.
    pub fn container(
        &self,
        id: &str,
        m: &super::lifecycle::Meta,
        action: &str,
        extra: &[(&str, String)],
    ) {
        let mut attrs: BTreeMap<String, String> = m.config["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        attrs.insert(
            "image".into(),
            m.config["Image"].as_str().unwrap_or("").to_string(),
        );
        attrs.insert("name".into(), m.name.clone());
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        self.emit("container", action, id, attrs);
    }

    /// A network event (`extra`: the container of a connect or disconnect).
    pub fn network(&self, id: &str, name: &str, action: &str, extra: &[(&str, String)]) {
        let mut attrs = BTreeMap::from([
            ("name".to_string(), name.to_string()),
            ("type".to_string(), "bridge".to_string()),
        ]);
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        self.emit("network", action, id, attrs);
    }

    /// A volume event (`extra`: the container and destination of a mount or unmount).
    pub fn volume(&self, name: &str, action: &str, extra: &[(&str, String)]) {
        let mut attrs = BTreeMap::from([("driver".to_string(), "local".to_string())]);
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        self.emit("volume", action, name, attrs);
    }

    /// The live events from now on, and the ring's events at or after `since` (nanoseconds),
    /// with no event in both.
    fn subscribe(&self, since: Option<i64>) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        let past = match since {
            Some(s) => ring.iter().filter(|e| e.time_nano >= s).cloned().collect(),
            None => Vec::new(),
        };
        (past, rx)
    }

    /// Turns the engine's image events (the store publishes them on the bus) into Docker's
    /// `tag`/`untag` events, for as long as berthd runs.
    pub fn relay_images(self: &Arc<Self>) {
        let me = self.clone();
        let mut sub = crate::daemon::services::events::subscribe();
        tokio::spawn(async move {
            loop {
                let env = match sub.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if env.namespace != NAMESPACE {
                    continue;
                }
                let action = match env.topic.as_str() {
                    "/images/create" | "/images/update" => "tag",
                    "/images/delete" => "untag",
                    _ => continue,
                };
                let name = env
                    .event
                    .as_ref()
                    .and_then(|a| image_name(&a.value))
                    .unwrap_or_default();
                let name = images::familiar(&name);
                let attrs = BTreeMap::from([("name".to_string(), name.clone())]);
                me.emit("image", action, &name, attrs);
            }
        });
    }
}

/// The `name` (field 1) of an ImageCreate/Update/Delete event payload (the other fields are
/// skipped as unknown).
fn image_name(data: &[u8]) -> Option<String> {
    use berth_proto::prost::Message;
    berth_proto::containerd::events::ImageDelete::decode(data)
        .ok()
        .map(|e| e.name)
}

/// The filter keys `/events` takes.
const KEYS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "label",
    "network",
    "volume",
    "scope",
];
/// The event types berthd emits (dockerd's others never happen here, but are valid).
const TYPES: &[&str] = &[
    "container",
    "image",
    "network",
    "volume",
    "daemon",
    "plugin",
    "service",
    "node",
    "secret",
    "config",
];

/// Whether `f`'s values for `key` are absent, or one of them equals `v` or is a prefix of
/// it (moby's FuzzyMatch).
fn fuzzy(f: &Filters, key: &str, v: &str) -> bool {
    let vals = f.get(key);
    vals.is_empty()
        || vals
            .iter()
            .any(|x| !x.is_empty() && v.starts_with(x.as_str()))
}

fn exact(f: &Filters, key: &str, v: &str) -> bool {
    let vals = f.get(key);
    vals.is_empty() || vals.iter().any(|x| x == v)
}

/// Checks the filters of an `/events` request (unknown keys and types: 400).
pub fn check_filters(f: &Filters) -> Result<(), ApiError> {
    f.only(KEYS)?;
    for t in f.get("type") {
        if !TYPES.contains(&t.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'type={t}': unknown event type"
            )));
        }
    }
    for s in f.get("scope") {
        if !matches!(s.as_str(), "local" | "swarm") {
            return Err(ApiError::bad_request(format!("invalid filter 'scope={s}'")));
        }
    }
    Ok(())
}

/// Whether `ev` passes the filters, as moby's events filter decides.
pub fn matches(f: &Filters, ev: &Event) -> bool {
    let event_ok = {
        let fuzzy_actions = ["health_status", "exec_create", "exec_start"];
        if f.get("event")
            .iter()
            .any(|e| fuzzy_actions.contains(&e.as_str()))
        {
            fuzzy(f, "event", &ev.action)
        } else {
            exact(f, "event", &ev.action)
        }
    };
    let name = ev.attrs.get("name").map(String::as_str).unwrap_or("");
    let name_or_id = |key: &str| fuzzy(f, key, &ev.id) || (!name.is_empty() && fuzzy(f, key, name));
    let image_ok = f.get("image").is_empty() || {
        let img = if ev.ty == "image" {
            ev.id.as_str()
        } else {
            ev.attrs.get("image").map(String::as_str).unwrap_or("")
        };
        let bare = img.split_once(':').map(|(n, _)| n).unwrap_or(img);
        f.get("image").iter().any(|x| x == img || x == bare)
    };
    let network_ok = f.get("network").is_empty() || (ev.ty == "network" && name_or_id("network"));
    let volume_ok = f.get("volume").is_empty() || (ev.ty == "volume" && exact(f, "volume", &ev.id));
    event_ok
        && exact(f, "type", ev.ty)
        && exact(f, "scope", "local")
        && (f.get("container").is_empty() || name_or_id("container"))
        && image_ok
        && f.labels_match(&ev.attrs)
        && network_ok
        && volume_ok
}

/// A `since`/`until` value (`1700000000`, `1700000000.123456789`, or an RFC 3339 time) in
/// nanoseconds since the epoch.
pub fn parse_time(k: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid value for {k}: {s:?} (a unix timestamp or an RFC 3339 time is expected)"
        ))
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt().ok_or_else(bad);
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .ok_or_else(bad)
}

/// `GET /events?since=&until=&filters=`: the ring's events since `since` (when given), then
/// live ones until `until` (a time in the past ends the stream after the replay) or the
/// client leaves.
pub async fn serve(api: &Api, req: Req) -> Reply {
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        req.q(k)
            .filter(|s| !s.is_empty())
            .map(|s| parse_time(k, s))
            .transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(ApiError::bad_request(
                "since time must be before until time",
            ));
        }
    }
    let f = req.filters()?;
    check_filters(&f)?;
    let (past, mut live) = api.events.subscribe(since);
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let _ = tx.send(Ok(Bytes::new())).await;
    tokio::spawn(async move {
        let in_range = |e: &Event| until.is_none_or(|u| e.time_nano <= u);
        for e in past {
            if !in_range(&e) {
                return;
            }
            if matches(&f, &e) && tx.send(Ok(line(&e.to_json()))).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|u| {
            let wait = (u - now_nanos()).max(0) as u64;
            tokio::time::Instant::now() + std::time::Duration::from_nanos(wait)
        });
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, live.recv()).await.ok(),
                    None => Some(live.recv().await),
                }
            };
            let e = tokio::select! {
                _ = tx.closed() => return,
                r = next => match r {
                    None | Some(Err(broadcast::error::RecvError::Closed)) => return,
                    Some(Err(broadcast::error::RecvError::Lagged(n))) => {
                        tracing::debug!(skipped = n, "docker api: an events client lagged");
                        continue;
                    }
                    Some(Ok(e)) => e,
                },
            };
            if !in_range(&e) {
                return;
            }
            if matches(&f, &e) && tx.send(Ok(line(&e.to_json()))).await.is_err() {
                return;
            }
        }
    });
    server::stream(rx, "application/json", true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ty: &'static str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            ty,
            action: action.into(),
            id: id.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_nano: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn container_events_carry_the_old_fields_and_others_do_not() {
        let v = ev(
            "container",
            "die",
            "abc",
            &[("image", "busybox"), ("exitCode", "3")],
        )
        .to_json();
        assert_eq!(v["status"], "die");
        assert_eq!(v["id"], "abc");
        assert_eq!(v["from"], "busybox");
        assert_eq!(v["time"], 1_700_000_000i64);
        assert_eq!(v["Actor"]["Attributes"]["exitCode"], "3");
        let v = ev("network", "create", "n1", &[("name", "net")]).to_json();
        assert!(v.get("status").is_none() && v.get("from").is_none());
        assert_eq!(v["scope"], "local");
    }

    #[test]
    fn filters_match_as_mobys() {
        let e = ev(
            "container",
            "health_status: healthy",
            "abcdef",
            &[("name", "web"), ("image", "busybox:latest"), ("a", "b")],
        );
        let f = |s: &str| Filters::parse(s).unwrap();
        assert!(matches(&f(r#"{"event":["health_status"]}"#), &e));
        assert!(!matches(&f(r#"{"event":["health"]}"#), &e));
        assert!(matches(
            &f(r#"{"container":["web"],"type":["container"]}"#),
            &e
        ));
        assert!(matches(&f(r#"{"container":["abc"]}"#), &e));
        assert!(!matches(&f(r#"{"container":["other"]}"#), &e));
        assert!(matches(&f(r#"{"image":["busybox"]}"#), &e));
        assert!(matches(&f(r#"{"label":["a=b"]}"#), &e));
        assert!(!matches(&f(r#"{"label":["a=c"]}"#), &e));
        assert!(!matches(&f(r#"{"type":["network"]}"#), &e));
        assert!(!matches(&f(r#"{"network":["web"]}"#), &e));
        let n = ev(
            "network",
            "connect",
            "n1",
            &[("name", "front"), ("container", "abc")],
        );
        assert!(matches(&f(r#"{"network":["front"]}"#), &n));
        let v = ev("volume", "mount", "data", &[("container", "abc")]);
        assert!(matches(&f(r#"{"volume":["data"]}"#), &v));
        assert!(!matches(&f(r#"{"volume":["dat"]}"#), &v));
    }

    #[test]
    fn bad_filters_and_times_are_refused() {
        let f = Filters::parse(r#"{"nope":["x"]}"#).unwrap();
        assert_eq!(
            check_filters(&f).unwrap_err().message,
            "invalid filter 'nope'"
        );
        let f = Filters::parse(r#"{"type":["thing"]}"#).unwrap();
        assert!(check_filters(&f)
            .unwrap_err()
            .message
            .contains("type=thing"));
        assert_eq!(parse_time("since", "12.5").unwrap(), 12_500_000_000);
        assert_eq!(
            parse_time("since", "1700000000.000000001").unwrap(),
            1_700_000_000_000_000_001
        );
        assert_eq!(
            parse_time("until", "1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        assert!(parse_time("since", "yesterday")
            .unwrap_err()
            .message
            .contains("since"));
        assert!(parse_time("since", "1.x").is_err());
    }

    #[test]
    fn the_ring_replays_since_and_stays_bounded() {
        let hub = Events::default();
        for i in 0..(RING + 10) {
            hub.emit("volume", "create", &format!("v{i}"), BTreeMap::new());
        }
        let (all, _rx) = hub.subscribe(Some(0));
        assert_eq!(all.len(), RING);
        assert_eq!(all[0].id, "v10");
        let (none, _rx) = hub.subscribe(None);
        assert!(none.is_empty());
    }
}
