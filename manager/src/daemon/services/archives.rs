//! `berth.services.images.v1.Archives`: import and export of whole archives by the daemon, and
//! unpack by name.
//!
//! The archive flows through bounded channels ([`CHANNEL_DEPTH`] chunks of ~1 MiB) between the
//! gRPC stream and the store's blocking import/export, so memory stays flat whatever the
//! archive's size. A client that disconnects mid-import makes the import fail; the store's
//! temporary lease then lets GC remove what was written.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use berth_proto::berth::services::images::v1 as pb;
use berth_proto::berth::services::images::v1::archives_server::Archives;
use berth_proto::containerd::types::Platform as PbPlatform;
use berth_store::images::{ExportOptions, ImportOptions};
use berth_store::oci::Platform;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::images::wire_image;
use crate::daemon::errors::{blocking, join_error, status};
use crate::daemon::meta::ctx;
use crate::daemon::state::State;

/// Chunks buffered between the network and the store.
pub const CHANNEL_DEPTH: usize = 4;
/// Bytes per exported chunk.
pub const CHUNK: usize = 1 << 20;
/// A progress message goes out every this many bytes received.
const PROGRESS_EVERY: u64 = 8 << 20;

/// Archive import/export.
pub struct ArchivesService {
    /// Shared state.
    pub state: State,
}

fn platform(p: Option<PbPlatform>) -> Result<Option<Platform>, Status> {
    match p {
        None => Ok(None),
        Some(p) if p.os.is_empty() && p.architecture.is_empty() => Ok(None),
        Some(p) => {
            if p.os.is_empty() || p.architecture.is_empty() {
                return Err(Status::invalid_argument(
                    "platform needs both os and architecture",
                ));
            }
            Ok(Some(Platform {
                os: p.os,
                architecture: p.architecture,
                variant: p.variant,
                ..Platform::default()
            }))
        }
    }
}

/// The receiving end of the archive stream as a blocking `Read`.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
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

/// The sending end of an export stream as a blocking `Write`, in chunks of [`CHUNK`].
struct ChannelWriter {
    tx: mpsc::Sender<Result<pb::ExportResponse, Status>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(pb::ExportResponse { chunk }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "export client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Archives for ArchivesService {
    type ImportStream = BoxStream<pb::ImportResponse>;

    async fn import(
        &self,
        req: Request<Streaming<pb::ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let c = ctx(&req)?;
        let ns = c.namespace.clone();
        let mut inbound = req.into_inner();
        let first = inbound
            .next()
            .await
            .transpose()?
            .ok_or_else(|| Status::invalid_argument("import stream is empty"))?;
        let Some(pb::import_request::Part::Options(o)) = first.part else {
            return Err(Status::invalid_argument(
                "the first import message must carry the options",
            ));
        };
        if !o.snapshotter.is_empty() && o.snapshotter != self.state.snapshotter_name() {
            return Err(Status::invalid_argument(format!(
                "snapshotter not loaded: {}",
                o.snapshotter
            )));
        }
        let opts = ImportOptions {
            base_name: (!o.base_name.is_empty()).then_some(o.base_name),
            unpack: o.unpack,
            platform: platform(o.platform)?,
        };
        let extra_labels = o.labels;
        let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Vec<u8>>>(CHANNEL_DEPTH);
        let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        let received = Arc::new(AtomicU64::new(0));

        // Network → store.
        let progress_tx = out_tx.clone();
        let recv = received.clone();
        tokio::spawn(async move {
            let mut next_progress = PROGRESS_EVERY;
            loop {
                let item = match inbound.next().await {
                    None => break,
                    Some(Ok(m)) => match m.part {
                        Some(pb::import_request::Part::Chunk(b)) => Ok(b),
                        _ => Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "import: options may only be sent first",
                        )),
                    },
                    Some(Err(e)) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("import stream broken: {}", e.message()),
                    )),
                };
                let failed = item.is_err();
                if let Ok(b) = &item {
                    let n = recv.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                    if n >= next_progress {
                        next_progress = n + PROGRESS_EVERY;
                        let _ = progress_tx.try_send(Ok(pb::ImportResponse {
                            part: Some(pb::import_response::Part::Progress(pb::ImportProgress {
                                received: n as i64,
                                stage: "importing".into(),
                            })),
                        }));
                    }
                }
                if chunk_tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });

        // The import itself.
        let store = self.state.store().clone();
        let unpack = opts.unpack;
        let plat = opts.platform.clone();
        let job = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx: chunk_rx,
                cur: Vec::new(),
                pos: 0,
            };
            let mut images = store.import(&c, reader, &opts)?;
            if !extra_labels.is_empty() {
                for img in images.iter_mut() {
                    let mut upd = img.clone();
                    upd.labels.extend(extra_labels.clone());
                    *img = store.image_update(&c, &upd, &["labels".to_string()])?;
                }
            }
            let mut chains = Vec::new();
            for img in &images {
                if unpack {
                    // Already unpacked by the import: this only reports the chain id.
                    chains.push(
                        store
                            .unpack(&c, &img.name, plat.as_ref())?
                            .chain_id
                            .to_string(),
                    );
                } else {
                    chains.push(String::new());
                }
            }
            Ok::<_, berth_store::StoreError>((images, chains))
        });
        tokio::spawn(async move {
            let msg = match job.await {
                Err(e) => Err(join_error(e)),
                Ok(Err(e)) => Err(status(e)),
                Ok(Ok((images, chain_ids))) => {
                    for i in &images {
                        super::images::publish_image(&ns, i);
                    }
                    tracing::info!(
                        images = images.len(),
                        bytes = received.load(Ordering::Relaxed),
                        "import done"
                    );
                    Ok(pb::ImportResponse {
                        part: Some(pb::import_response::Part::Result(pb::ImportResult {
                            images: images.iter().map(wire_image).collect(),
                            chain_ids,
                        })),
                    })
                }
            };
            let _ = out_tx.send(msg).await;
            let _ = tokio::task::spawn_blocking(crate::daemon::trim_heap).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    type ExportStream = BoxStream<pb::ExportResponse>;

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        if r.names.is_empty() {
            return Err(Status::invalid_argument(
                "export needs at least one image name",
            ));
        }
        let opts = ExportOptions {
            platform: if r.all_platforms {
                None
            } else {
                platform(r.platform)?
            },
            docker_manifest: false,
        };
        let store = self.state.store().clone();
        // Fail early, with a status instead of a broken stream, on unknown names.
        {
            let (store, c, names) = (store.clone(), c.clone(), r.names.clone());
            blocking(move || {
                for n in &names {
                    store.image(&c, n)?;
                }
                Ok(())
            })
            .await?;
        }
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let res = store.export(&c, &r.names, &mut w, &opts).and_then(|()| {
                w.flush()
                    .map_err(|e| berth_store::StoreError::io("send", "", e))
            });
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(status(e)));
            }
            drop(w);
            crate::daemon::trim_heap();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn unpack(
        &self,
        req: Request<pb::UnpackRequest>,
    ) -> Result<Response<pb::UnpackResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        if !r.snapshotter.is_empty() && r.snapshotter != self.state.snapshotter_name() {
            return Err(Status::invalid_argument(format!(
                "snapshotter not loaded: {}",
                r.snapshotter
            )));
        }
        let p = platform(r.platform)?;
        let store = self.state.store().clone();
        let rep = blocking(move || store.unpack(&c, &r.name, p.as_ref())).await?;
        Ok(Response::new(pb::UnpackResponse {
            chain_id: rep.chain_id.to_string(),
        }))
    }
}
