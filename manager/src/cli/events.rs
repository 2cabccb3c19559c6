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
            }))?,
            Format::Table => println!(
                "{} {} {} {}",
                output::time(&e.timestamp),
                e.namespace,
                e.topic,
                kind
            ),
        }
    }
    Ok(())
}
