//! `berth.services.builds.v1.Builds`: the thin front of the build engine (`crate::build`).
//!
//! The context arrives as chunks through a bounded channel into the engine's blocking
//! extraction; progress goes back on the response stream. When the client goes away (the
//! response stream is dropped, e.g. Ctrl-C), the build is told to stop: a running RUN
//! container is killed and everything the build made is removed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_proto::berth::services::builds::v1 as pb;
use berth_proto::berth::services::builds::v1::builds_server::Builds;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::archives::CHANNEL_DEPTH;
use crate::build::{BuildError, Engine, Event, NetworkMode};
use crate::daemon::errors::{blocking, join_error};
use crate::daemon::meta::ctx;
use crate::daemon::state::State;

/// Builds.
pub struct BuildsService {
    /// Shared state.
    pub state: State,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl BuildsService {
    /// The service; removes what builds interrupted by a crash left in the state dir.
    pub fn new(state: State) -> BuildsService {
        let svc = BuildsService { state };
        svc.engine().recover();
        svc
    }

    fn engine(&self) -> Engine {
        engine(&self.state)
    }
}

/// The builder for the daemon's settings (also the Docker API's `/build`).
pub fn engine(state: &State) -> Engine {
    let runtime = match state.default_runtime() {
        Some(r) if r.contains('/') => std::path::PathBuf::from(r),
        Some(r) => crate::tasks::helper_binary("BERTH_RUNTIME_UNUSED", r),
        None => crate::tasks::helper_binary("BERTH_RUNTIME", "berth-runc"),
    };
    Engine {
        store: state.store().clone(),
        state_dir: state.state_dir().to_path_buf(),
        runtime,
        cache_mounts: state.root().join("build-cache-mounts"),
        registries: state.registries().clone(),
        networks: state.networks().clone(),
    }
}

fn status(e: BuildError) -> Status {
    use crate::daemon::errors::{is_disk_full, with_disk_full};
    match e {
        BuildError::Invalid(m) | BuildError::NotFound(m) | BuildError::Failed(m)
            if is_disk_full(&m) =>
        {
            Status::resource_exhausted(with_disk_full(m))
        }
        BuildError::Invalid(m) => Status::invalid_argument(m),
        BuildError::NotFound(m) => Status::not_found(m),
        BuildError::Failed(m) => Status::unknown(m),
        BuildError::Cancelled => Status::cancelled("build cancelled"),
        BuildError::Store(e) => crate::daemon::errors::status(e),
    }
}

fn wire(e: Event) -> pb::BuildResponse {
    use pb::build_event::Kind;
    let ev = |step: String, kind: Kind| pb::BuildEvent {
        step,
        kind: kind.into(),
        ..Default::default()
    };
    let event = match e {
        Event::Start(s) => ev(s, Kind::Start),
        Event::Cached(s) => ev(s, Kind::Cached),
        Event::Output { step, data, stderr } => pb::BuildEvent {
            data,
            stderr,
            ..ev(step, Kind::Output)
        },
        Event::Done(s, t) => pb::BuildEvent {
            elapsed: t,
            ..ev(s, Kind::Done)
        },
        Event::Warning(m) => pb::BuildEvent {
            message: m,
            ..ev(String::new(), Kind::Warning)
        },
    };
    pb::BuildResponse {
        part: Some(pb::build_response::Part::Event(event)),
    }
}

/// The receiving end of the context stream as a blocking `Read`.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(v)) => {
                    self.cur = v;
                    self.pos = 0;
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[tonic::async_trait]
impl Builds for BuildsService {
    type BuildStream = BoxStream<pb::BuildResponse>;

    async fn build(
        &self,
        req: Request<Streaming<pb::BuildRequest>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let c = ctx(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .next()
            .await
            .transpose()?
            .ok_or_else(|| Status::invalid_argument("build stream is empty"))?;
        let Some(pb::build_request::Part::Options(o)) = first.part else {
            return Err(Status::invalid_argument(
                "the first build message must carry the options",
            ));
        };
        let network = NetworkMode::parse(&o.network).map_err(status)?;
        let tags = crate::build::check_tags(&o.tags).map_err(status)?;
        let dockerfile_content = if o.dockerfile_content.is_empty() {
            None
        } else {
            Some(
                String::from_utf8(o.dockerfile_content)
                    .map_err(|_| Status::invalid_argument("the Dockerfile is not UTF-8 text"))?,
            )
        };
        let request = crate::build::Request {
            dockerfile: o.dockerfile,
            dockerfile_content,
            build_args: o.build_args.into_iter().collect(),
            target: (!o.target.is_empty()).then_some(o.target),
            tags,
            no_cache: o.no_cache,
            pull: o.pull,
            network,
            labels: o.labels.into_iter().collect(),
        };
        let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Vec<u8>>>(CHANNEL_DEPTH);
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::BuildResponse, Status>>(64);
        let abort = Arc::new(AtomicBool::new(false));

        // Network → engine.
        tokio::spawn(async move {
            loop {
                let item = match inbound.next().await {
                    None => break,
                    Some(Ok(m)) => match m.part {
                        Some(pb::build_request::Part::Chunk(b)) => Ok(b),
                        _ => Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "build: options may only be sent first",
                        )),
                    },
                    Some(Err(e)) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("build stream broken: {}", e.message()),
                    )),
                };
                let failed = item.is_err();
                if chunk_tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        // The client going away stops the build.
        let watch_tx = out_tx.clone();
        let watch_abort = abort.clone();
        let watcher = tokio::spawn(async move {
            watch_tx.closed().await;
            watch_abort.store(true, Ordering::Release);
        });

        let engine = self.engine();
        let state = self.state.clone();
        let ns = c.namespace.clone();
        let events = out_tx.clone();
        let job_abort = abort.clone();
        let job = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx: chunk_rx,
                cur: Vec::new(),
                pos: 0,
            };
            let emit = move |e: Event| {
                let _ = events.blocking_send(Ok(wire(e)));
            };
            engine.build(&c, &request, Box::new(reader), &emit, &job_abort)
        });
        tokio::spawn(async move {
            let res = job.await;
            let failed = !matches!(res, Ok(Ok(_)));
            let msg = match res {
                Err(e) => Err(join_error(e)),
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "build failed");
                    Err(status(e))
                }
                Ok(Ok(out)) => {
                    for name in &out.names {
                        if let Ok(img) = state
                            .store()
                            .image(&berth_store::Ctx::new(ns.clone()), name)
                        {
                            super::images::publish_image(&ns, &img);
                        }
                    }
                    tracing::info!(image = %out.image_id, names = ?out.names, "build done");
                    Ok(pb::BuildResponse {
                        part: Some(pb::build_response::Part::Result(pb::BuildResult {
                            image_id: out.image_id.to_string(),
                            manifest_digest: out.manifest.to_string(),
                            names: out.names,
                        })),
                    })
                }
            };
            // The watcher holds a sender: the stream ends only once it is gone too.
            watcher.abort();
            let _ = out_tx.send(msg).await;
            if failed {
                // What a failed or cancelled build left to its lease goes now.
                super::collect_in_background(state);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn prune(
        &self,
        req: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneResponse>, Status> {
        let c = ctx(&req)?;
        let engine = self.engine();
        let entries = blocking(move || {
            let n = engine.prune(&c)?;
            engine.store.collect()?;
            Ok(n)
        })
        .await?;
        Ok(Response::new(pb::PruneResponse { entries }))
    }
}
