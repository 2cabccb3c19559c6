//! `containerd.services.events.v1.Events`: an in-process bus. Services publish through
//! [`publish`]; subscribers get every envelope that matches their containerd filters
//! (`topic`, `namespace`, `event.<field>` is not supported).
//!
//! The bus is a process-wide broadcast channel rather than a field of the shared state, so every
//! service can publish without threading a handle through constructors; events are best-effort
//! (a subscriber too slow to keep up skips what it missed, as in containerd).

use std::pin::Pin;
use std::sync::OnceLock;

use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::containerd::services::events::v1::events_server::Events;
use berth_proto::prost::Message;
use berth_store::filters::{Adaptor, Filter};
use prost_types::Any;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::daemon::meta::{namespace, timestamp};

/// How many envelopes a subscriber may lag behind before it skips.
const CAPACITY: usize = 1024;

fn bus() -> &'static broadcast::Sender<pb::Envelope> {
    static BUS: OnceLock<broadcast::Sender<pb::Envelope>> = OnceLock::new();
    BUS.get_or_init(|| broadcast::channel(CAPACITY).0)
}

/// The `Any` of a `containerd.events.<name>` message, with the type URL containerd's typeurl
/// gives it (the bare full name).
pub fn any<M: Message>(name: &str, m: &M) -> Any {
    Any {
        type_url: format!("containerd.events.{name}"),
        value: m.encode_to_vec(),
    }
}

/// Publishes an event on `topic` in namespace `ns` (nobody listening is fine).
pub fn publish(ns: &str, topic: &str, event: Any) {
    let env = pb::Envelope {
        timestamp: Some(timestamp(std::time::SystemTime::now())),
        namespace: ns.to_string(),
        topic: topic.to_string(),
        event: Some(event),
    };
    tracing::debug!(namespace = ns, topic, "event");
    let _ = bus().send(env);
}

/// A receiver of every envelope published from now on (the Docker API's `/events`).
pub fn subscribe() -> broadcast::Receiver<pb::Envelope> {
    bus().subscribe()
}

struct EnvelopeFields<'a>(&'a pb::Envelope);

impl Adaptor for EnvelopeFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("topic") => Some(self.0.topic.clone()),
            Some("namespace") => Some(self.0.namespace.clone()),
            _ => None,
        }
    }
}

fn check_topic(topic: &str) -> Result<(), Status> {
    if !topic.starts_with('/') || topic.len() < 2 {
        return Err(Status::invalid_argument(format!(
            "topic {topic:?} must start with '/' and name something"
        )));
    }
    Ok(())
}

/// The events service.
pub struct EventsService;

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<pb::Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        check_topic(&r.topic)?;
        let event = r
            .event
            .ok_or_else(|| Status::invalid_argument("event must be set"))?;
        publish(&ns, &r.topic, event);
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<pb::ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
        check_topic(&env.topic)?;
        crate::identifiers::validate(&env.namespace)
            .map_err(|e| Status::invalid_argument(format!("envelope namespace: {e}")))?;
        let _ = bus().send(env);
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = Filter::parse(&req.into_inner().filters)
            .map_err(|e| Status::invalid_argument(format!("filters: {e}")))?;
        let mut rx = bus().subscribe();
        let stream = async_stream(move |tx| async move {
            loop {
                match rx.recv().await {
                    Ok(env) => {
                        if filter.matches(&EnvelopeFields(&env)) && tx.send(Ok(env)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "event subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a spawned task through a small channel; the task ends when the client goes.
fn async_stream<F, Fut>(f: F) -> EnvelopeStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::Envelope, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
