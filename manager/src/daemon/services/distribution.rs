//! `berth.services.distribution.v1.Distribution`: pull from and push to OCI registries, done by
//! the daemon (berth-store's pipelines), with progress streamed back.
//!
//! Progress events are sent with `try_send` on a bounded channel: a slow client loses
//! intermediate progress, never the result, and never slows the download.

use std::pin::Pin;
use std::sync::Arc;

use berth_distribution::{ClientOptions, Credentials};
use berth_proto::berth::services::distribution::v1 as pb;
use berth_proto::berth::services::distribution::v1::distribution_server::Distribution;
use berth_proto::containerd::types::Platform as PbPlatform;
use berth_store::oci::Platform;
use berth_store::pull::{Progress, ProgressFn, PullOptions};
use berth_store::push::PushOptions;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::images::wire_descriptor;
use crate::daemon::errors::{join_error, status};
use crate::daemon::meta::ctx;
use crate::daemon::state::State;

/// Progress and results buffered for the client.
const CHANNEL_DEPTH: usize = 64;

/// Registry pull/push.
pub struct DistributionService {
    /// Shared state.
    pub state: State,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn client_options(r: Option<pb::RegistryOptions>) -> Result<ClientOptions, Status> {
    let r = r.unwrap_or_default();
    let credentials = match (r.username.is_empty(), r.password.is_empty()) {
        (true, true) => None,
        (true, false) => {
            return Err(Status::invalid_argument(
                "registry password given without a user name",
            ))
        }
        _ => Some(Credentials {
            username: r.username,
            password: r.password,
        }),
    };
    Ok(ClientOptions {
        plain_http: r.plain_http,
        credentials,
        ..ClientOptions::default()
    })
}

/// The registry part of a reference (the key of its `[registries."..."]` section).
fn registry_of(reference: &str) -> Result<String, Status> {
    berth_distribution::Reference::parse(reference)
        .map(|r| r.registry)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn platform(p: Option<PbPlatform>) -> Result<Option<Platform>, Status> {
    match p {
        None => Ok(None),
        Some(p) if p.os.is_empty() && p.architecture.is_empty() => Ok(None),
        Some(p) if p.os.is_empty() || p.architecture.is_empty() => Err(Status::invalid_argument(
            "platform needs both os and architecture",
        )),
        Some(p) => Ok(Some(Platform {
            os: p.os,
            architecture: p.architecture,
            variant: p.variant,
            ..Platform::default()
        })),
    }
}

fn wire_progress(p: &Progress) -> pb::Progress {
    pb::Progress {
        id: p.id.clone(),
        kind: p.kind.into(),
        status: p.status.into(),
        offset: p.offset as i64,
        total: p.total as i64,
    }
}

/// A progress callback feeding `tx` with `wrap(progress)`, dropping events when it is full.
fn progress_fn<T: Send + 'static>(
    tx: mpsc::Sender<Result<T, Status>>,
    wrap: fn(pb::Progress) -> T,
) -> ProgressFn {
    Arc::new(move |p: &Progress| {
        let _ = tx.try_send(Ok(wrap(wire_progress(p))));
    })
}

#[tonic::async_trait]
impl Distribution for DistributionService {
    type PullStream = BoxStream<pb::PullResponse>;

    async fn pull(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("pull: reference is empty"));
        }
        let host = registry_of(&r.reference)?;
        let base = client_options(r.registry)?;
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let opts = PullOptions {
            client: self.state.registries().client_options(&host, &base),
            mirrors: self.state.registries().mirrors(&host, &base),
            platform: platform(r.platform)?,
            unpack: r.unpack,
            concurrency: r.concurrency as usize,
            progress: Some(progress_fn(tx.clone(), |p| pb::PullResponse {
                event: Some(pb::pull_response::Event::Progress(p)),
            })),
        };
        let store = self.state.store().clone();
        let ns = c.namespace.clone();
        let reference = r.reference;
        let job = tokio::task::spawn_blocking(move || {
            berth_store::pull::pull(&store, &c, &reference, &opts)
        });
        tokio::spawn(async move {
            let msg = match job.await {
                Err(e) => Err(join_error(e)),
                Ok(Err(e)) => Err(status(e)),
                Ok(Ok(rep)) => Ok({
                    super::images::publish_image(&ns, &rep.image);
                    pb::PullResponse {
                        event: Some(pb::pull_response::Event::Result(pb::PullResult {
                            name: rep.image.name.clone(),
                            target: Some(wire_descriptor(&rep.image.target)),
                            manifest: Some(wire_descriptor(&rep.manifest)),
                            layers_fetched: rep.layers_fetched as u32,
                            layers_present: rep.layers_present as u32,
                            bytes_fetched: rep.bytes_fetched,
                            chain_id: rep
                                .unpack
                                .map(|u| u.chain_id.to_string())
                                .unwrap_or_default(),
                        })),
                    }
                }),
            };
            let _ = tx.send(msg).await;
            let _ = tokio::task::spawn_blocking(crate::daemon::trim_heap).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type PushStream = BoxStream<pb::PushResponse>;

    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("push: image name is empty"));
        }
        let host = registry_of(if r.remote.is_empty() {
            &r.name
        } else {
            &r.remote
        })?;
        let base = client_options(r.registry)?;
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let opts = PushOptions {
            client: self.state.registries().client_options(&host, &base),
            platform: platform(r.platform)?,
            concurrency: 0,
            chunk_size: r.chunk_size as usize,
            progress: Some(progress_fn(tx.clone(), |p| pb::PushResponse {
                event: Some(pb::push_response::Event::Progress(p)),
            })),
        };
        let store = self.state.store().clone();
        let (name, remote) = (r.name, r.remote);
        let job = tokio::task::spawn_blocking(move || {
            let remote = (!remote.is_empty()).then_some(remote.as_str());
            berth_store::push::push(&store, &c, &name, remote, &opts)
        });
        tokio::spawn(async move {
            let msg = match job.await {
                Err(e) => Err(join_error(e)),
                Ok(Err(e)) => Err(status(e)),
                Ok(Ok(rep)) => Ok(pb::PushResponse {
                    event: Some(pb::push_response::Event::Result(pb::PushResult {
                        target: rep.target.as_ref().map(wire_descriptor),
                        uploaded: rep.uploaded as u32,
                        present: rep.present as u32,
                        mounted: rep.mounted as u32,
                        manifests: rep.manifests as u32,
                    })),
                }),
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
