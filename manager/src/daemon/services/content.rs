//! `containerd.services.content.v1.Content`: blobs and resumable ingests.
//!
//! Streams are memory-bounded: reads go out in chunks of [`CHUNK`] through a channel of one
//! slot, so at most two chunks per stream are in memory; a write stream hands each message to
//! a blocking task that owns the ingest (and its lock) for the stream's lifetime.

use std::pin::Pin;

use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::content_server::Content;
use berth_store::content::Status as IngestStatus;
use berth_store::metadata::ContentInfo;
use berth_store::{Ctx, Digest, Store, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::daemon::errors::{blocking, join_error, status};
use crate::daemon::meta::{ctx, digest, labels, paths, system_time, timestamp, wire_labels};
use crate::daemon::state::State;

/// Bytes per Read response message.
pub const CHUNK: usize = 1 << 20;
/// Infos per List response message.
const LIST_BATCH: usize = 100;

/// Content of a namespace.
pub struct ContentService {
    /// Shared state.
    pub state: State,
}

fn wire_info(c: &ContentInfo) -> pb::Info {
    pb::Info {
        digest: c.digest.to_string(),
        size: c.size as i64,
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        labels: wire_labels(&c.labels),
    }
}

fn wire_status(s: &IngestStatus) -> pb::Status {
    pb::Status {
        started_at: Some(timestamp(s.started_at)),
        updated_at: Some(timestamp(s.updated_at)),
        r#ref: s.r#ref.clone(),
        offset: s.offset as i64,
        total: s.total as i64,
        expected: s
            .expected
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let c = ctx(&req)?;
        let d = digest("digest", &req.into_inner().digest)?;
        let store = self.state.store().clone();
        let info = blocking(move || store.content_info(&c, &d)).await?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(wire_info(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let ci = ContentInfo {
            digest: digest("info.digest", &info.digest)?,
            size: info.size.max(0) as u64,
            created_at: system_time(info.created_at.as_ref()),
            updated_at: system_time(info.updated_at.as_ref()),
            labels: labels(info.labels),
        };
        let fieldpaths = paths(r.update_mask);
        let store = self.state.store().clone();
        let info = blocking(move || store.content_update(&c, &ci, &fieldpaths)).await?;
        Ok(Response::new(pb::UpdateResponse {
            info: Some(wire_info(&info)),
        }))
    }

    type ListStream = BoxStream<pb::ListContentResponse>;

    async fn list(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let c = ctx(&req)?;
        let filters = req.into_inner().filters;
        let store = self.state.store().clone();
        let infos = blocking(move || store.content_list(&c, &filters)).await?;
        let batches: Vec<Result<pb::ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|b| {
                Ok(pb::ListContentResponse {
                    info: b.iter().map(wire_info).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let d = digest("digest", &req.into_inner().digest)?;
        let store = self.state.store().clone();
        blocking(move || store.content_delete(&c, &d)).await?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<pb::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let d = digest("digest", &r.digest)?;
        let store = self.state.store().clone();
        let reader = blocking(move || store.content_reader(&c, &d)).await?;
        let size = reader.size();
        let start = r.offset.max(0) as u64;
        if start > size {
            return Err(Status::out_of_range(format!(
                "read offset {start} is past the end of {} ({size} bytes)",
                r.digest
            )));
        }
        let end = if r.size > 0 {
            (start + r.size as u64).min(size)
        } else {
            size
        };
        let (tx, rx) = mpsc::channel(1);
        tokio::task::spawn_blocking(move || {
            let mut off = start;
            while off < end {
                let n = ((end - off) as usize).min(CHUNK);
                let mut buf = vec![0u8; n];
                let msg = match read_exact_at(&reader, &mut buf, off) {
                    Ok(()) => Ok(pb::ReadContentResponse {
                        offset: off as i64,
                        data: buf,
                    }),
                    Err(e) => Err(status(e)),
                };
                let failed = msg.is_err();
                if tx.blocking_send(msg).is_err() || failed {
                    return;
                }
                off += n as u64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner().r#ref;
        let store = self.state.store().clone();
        let s = blocking(move || store.content_status(&c, &r)).await?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(wire_status(&s)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let c = ctx(&req)?;
        let filters = req.into_inner().filters;
        let store = self.state.store().clone();
        let ss = blocking(move || store.content_statuses(&c, &filters)).await?;
        Ok(Response::new(pb::ListStatusesResponse {
            statuses: ss.iter().map(wire_status).collect(),
        }))
    }

    type WriteStream = BoxStream<pb::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let c = ctx(&req)?;
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let store = self.state.store().clone();
        tokio::spawn(async move {
            if let Err(e) = write_stream(store, c, inbound, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner().r#ref;
        let store = self.state.store().clone();
        blocking(move || store.content_abort(&c, &r)).await?;
        Ok(Response::new(()))
    }
}

fn read_exact_at(
    r: &berth_store::content::ReaderAt,
    buf: &mut [u8],
    mut off: u64,
) -> Result<(), StoreError> {
    let mut done = 0;
    while done < buf.len() {
        let n = r.read_at(&mut buf[done..], off)?;
        if n == 0 {
            return Err(StoreError::FailedPrecondition(format!(
                "blob shorter than expected at offset {off}"
            )));
        }
        done += n;
        off += n as u64;
    }
    Ok(())
}

/// The state of one write stream between messages.
struct Ingest {
    writer: berth_store::ContentWriter,
    total: u64,
    expected: Option<Digest>,
}

fn optional_digest(s: &str) -> Result<Option<Digest>, Status> {
    if s.is_empty() {
        Ok(None)
    } else {
        digest("expected", s).map(Some)
    }
}

/// Serves one Write stream, following containerd's protocol: the first message names the ref;
/// every message is answered; a write at offset 0 on a non-empty ingest restarts it, at any
/// other offset it must continue where the ingest is; COMMIT verifies and ends the stream.
/// A client that disconnects leaves the ingest for a later stream to resume.
async fn write_stream(
    store: Store,
    c: Ctx,
    mut inbound: Streaming<pb::WriteContentRequest>,
    tx: &mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let Some(first) = inbound.next().await.transpose()? else {
        return Ok(());
    };
    if first.r#ref.is_empty() {
        return Err(Status::invalid_argument(
            "first message must have a reference",
        ));
    }
    let r = first.r#ref.clone();
    let expected = optional_digest(&first.expected)?;
    let total = (first.total > 0).then_some(first.total as u64);
    let writer = {
        let (store, c, r, exp) = (store.clone(), c.clone(), r.clone(), expected.clone());
        blocking(move || store.content_writer(&c, &r, total, exp)).await?
    };
    let mut ingest = Some(Ingest {
        writer,
        total: total.unwrap_or(0),
        expected,
    });
    let mut msg = Some(first);
    while let Some(req) = msg.take() {
        if !req.r#ref.is_empty() && req.r#ref != r {
            return Err(Status::invalid_argument(format!(
                "write stream for ref {r:?} got a message for ref {:?}",
                req.r#ref
            )));
        }
        let action = pb::WriteAction::try_from(req.action).map_err(|_| {
            Status::invalid_argument(format!("unknown write action {}", req.action))
        })?;
        let ing = ingest
            .take()
            .ok_or_else(|| Status::internal("ingest lost"))?;
        let (ing, resp) = tokio::task::spawn_blocking(move || handle(ing, req, action))
            .await
            .map_err(join_error)?;
        let done = ing.is_none();
        ingest = ing;
        let resp = resp?;
        if tx.send(Ok(resp)).await.is_err() {
            return Ok(()); // client went away
        }
        if done {
            return Ok(());
        }
        msg = match inbound.next().await {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => {
                tracing::debug!(r#ref = r, error = %e, "write stream broken; ingest kept for resume");
                return Ok(());
            }
            None => None,
        };
    }
    Ok(())
}

/// Applies one message to the ingest; returns the ingest (None once committed) and the reply.
fn handle(
    mut ing: Ingest,
    req: pb::WriteContentRequest,
    action: pb::WriteAction,
) -> (Option<Ingest>, Result<pb::WriteContentResponse, Status>) {
    let res = (|| -> Result<Option<pb::WriteContentResponse>, Status> {
        if req.total > 0 {
            ing.total = req.total as u64;
            ing.writer.set_total(ing.total).map_err(status)?;
        }
        if !req.expected.is_empty() {
            ing.expected = optional_digest(&req.expected)?;
        }
        if action == pb::WriteAction::Stat {
            return Ok(None);
        }
        let cur = ing.writer.offset();
        if req.offset > 0 && req.offset as u64 != cur {
            return Err(Status::out_of_range(format!(
                "write at offset {} must occur at the current offset {cur}",
                req.offset
            )));
        }
        if req.offset == 0 && cur > 0 && (!req.data.is_empty() || action == pb::WriteAction::Write)
        {
            ing.writer.truncate(0).map_err(status)?;
        }
        if !req.data.is_empty() {
            ing.writer.write(&req.data).map_err(status)?;
        }
        Ok(None)
    })();
    if let Err(e) = res {
        return (Some(ing), Err(e));
    }
    let status_now = match ing.writer.status() {
        Ok(s) => s,
        Err(e) => return (Some(ing), Err(status(e))),
    };
    let mut resp = pb::WriteContentResponse {
        action: action as i32,
        started_at: Some(timestamp(status_now.started_at)),
        updated_at: Some(timestamp(status_now.updated_at)),
        offset: ing.writer.offset() as i64,
        total: ing.total as i64,
        digest: ing.writer.digest().to_string(),
    };
    if action != pb::WriteAction::Commit {
        return (Some(ing), Ok(resp));
    }
    let Ingest {
        writer,
        total,
        expected,
    } = ing;
    match writer.commit(total, expected.as_ref(), labels(req.labels)) {
        Ok(d) => {
            resp.digest = d.to_string();
            (None, Ok(resp))
        }
        Err(e) => (None, Err(status(e))),
    }
}
