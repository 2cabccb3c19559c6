//! `berth events`: prints the daemon's events as they happen, one line each.

use anyhow::Result;
use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use tokio_stream::StreamExt;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Subscribes (all namespaces unless filtered) and prints until interrupted.
pub async fn run(env: &Env, filters: Vec<String>) -> Result<()> {
    let mut s = EventsClient::new(env.channel.clone())
        .subscribe(pb::SubscribeRequest { filters })
        .await
        .map_err(rpc_error("subscribing to events"))?
        .into_inner();
    while let Some(e) = s.next().await {
        let e = e.map_err(rpc_error("receiving events"))?;
        let kind = e
            .event
            .as_ref()
            .map(|a| a.type_url.clone())
            .unwrap_or_default();
        match env.format {
            Format::Json => output::json(&serde_json::json!({
                "timestamp": output::time(&e.timestamp),
                "namespace": e.namespace,
                "topic": e.topic,
                "type": kind,
                "event": e.event.as_ref().map(describe),
            }))?,
            Format::Table => println!(
                "{} {} {} {}",
                output::time(&e.timestamp),
                e.namespace,
                e.topic,
                e.event.as_ref().map_or(kind, describe)
            ),
        }
    }
    Ok(())
}

/// An event's payload as text: the decoded message for containerd's event types (what `ctr
/// events` shows), else its type URL.
fn describe(any: &prost_types::Any) -> String {
    use berth_proto::containerd::events as ev;
    use prost::Message;
    macro_rules! decode {
        ($($name:literal => $ty:ty),* $(,)?) => {
            match any.type_url.rsplit('/').next().unwrap_or_default() {
                $(concat!("containerd.events.", $name) => <$ty>::decode(any.value.as_slice())
                    .map(|m| format!("{m:?}"))
                    .unwrap_or_else(|e| format!("{} (undecodable: {e})", any.type_url)),)*
                _ => any.type_url.clone(),
            }
        };
    }
    decode! {
        "TaskCreate" => ev::TaskCreate,
        "TaskStart" => ev::TaskStart,
        "TaskDelete" => ev::TaskDelete,
        "TaskExit" => ev::TaskExit,
        "TaskOOM" => ev::TaskOom,
        "TaskExecAdded" => ev::TaskExecAdded,
        "TaskExecStarted" => ev::TaskExecStarted,
        "TaskPaused" => ev::TaskPaused,
        "TaskResumed" => ev::TaskResumed,
        "ContainerCreate" => ev::ContainerCreate,
        "ContainerUpdate" => ev::ContainerUpdate,
        "ContainerDelete" => ev::ContainerDelete,
        "ImageCreate" => ev::ImageCreate,
        "ImageUpdate" => ev::ImageUpdate,
        "ImageDelete" => ev::ImageDelete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn known_events_are_decoded_and_others_named() {
        let oom = berth_proto::containerd::events::TaskOom {
            container_id: "c1".into(),
        };
        let any = prost_types::Any {
            type_url: "containerd.events.TaskOOM".into(),
            value: oom.encode_to_vec(),
        };
        assert_eq!(describe(&any), r#"TaskOom { container_id: "c1" }"#);
        let other = prost_types::Any {
            type_url: "example.com/Other".into(),
            value: vec![1, 2],
        };
        assert_eq!(describe(&other), "example.com/Other");
    }
}
