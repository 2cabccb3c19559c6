//! `containerd.services.snapshots.v1.Snapshots`, served by the store's snapshotter under its
//! own name (`overlayfs`, or `native` where overlay mounts do not work). An empty snapshotter
//! name means that one.

use std::pin::Pin;

use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use berth_proto::containerd::types::Mount as PbMount;
use berth_store::metadata::SnapshotKind;
use berth_store::snapshots::{Mount, SnapshotInfo};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::daemon::errors::blocking;
use crate::daemon::meta::{ctx, labels, paths, system_time, timestamp, wire_labels};
use crate::daemon::state::State;

/// Snapshots of a namespace.
pub struct SnapshotsService {
    /// Shared state.
    pub state: State,
}

/// Store mounts on the wire.
pub fn wire_mounts(ms: Vec<Mount>) -> Vec<PbMount> {
    ms.into_iter()
        .map(|m| PbMount {
            r#type: m.kind,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

/// Wire mounts for the store.
pub fn store_mounts(ms: Vec<PbMount>) -> Vec<Mount> {
    ms.into_iter()
        .map(|m| Mount {
            kind: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

fn kind_to_wire(k: SnapshotKind) -> pb::Kind {
    match k {
        SnapshotKind::View => pb::Kind::View,
        SnapshotKind::Active => pb::Kind::Active,
        SnapshotKind::Committed => pb::Kind::Committed,
    }
}

fn wire_info(i: &SnapshotInfo) -> pb::Info {
    pb::Info {
        name: i.name.clone(),
        parent: i.parent.clone().unwrap_or_default(),
        kind: kind_to_wire(i.kind) as i32,
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        labels: wire_labels(&i.labels),
    }
}

impl SnapshotsService {
    /// Prepare (`Active`) or View: the same request handling, one store call apart.
    async fn create(
        &self,
        c: berth_store::Ctx,
        kind: SnapshotKind,
        snapshotter: &str,
        key_: &str,
        parent_: String,
        wire: std::collections::HashMap<String, String>,
    ) -> Result<Vec<PbMount>, Status> {
        self.check(snapshotter)?;
        let k = key(key_)?;
        let store = self.state.store().clone();
        let ms = blocking(move || {
            let s = store.snapshotter();
            let (p, l) = (parent(parent_), labels(wire));
            if kind == SnapshotKind::View {
                s.view(&c, &k, p.as_deref(), l)
            } else {
                s.prepare(&c, &k, p.as_deref(), l)
            }
        })
        .await?;
        Ok(wire_mounts(ms))
    }

    fn check(&self, name: &str) -> Result<(), Status> {
        let ours = self.state.snapshotter_name();
        if name.is_empty() || name == ours {
            Ok(())
        } else {
            Err(Status::invalid_argument(format!(
                "snapshotter not loaded: {name} (berthd serves {ours:?})"
            )))
        }
    }
}

fn key(k: &str) -> Result<String, Status> {
    if k.is_empty() {
        Err(Status::invalid_argument("snapshot key must not be empty"))
    } else {
        Ok(k.to_string())
    }
}

fn parent(p: String) -> Option<String> {
    (!p.is_empty()).then_some(p)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let mounts = self
            .create(
                c,
                SnapshotKind::Active,
                &r.snapshotter,
                &r.key,
                r.parent,
                r.labels,
            )
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let mounts = self
            .create(
                c,
                SnapshotKind::View,
                &r.snapshotter,
                &r.key,
                r.parent,
                r.labels,
            )
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.check(&r.snapshotter)?;
        let k = key(&r.key)?;
        let store = self.state.store().clone();
        let ms = blocking(move || store.snapshotter().mounts(&c, &k)).await?;
        Ok(Response::new(pb::MountsResponse {
            mounts: wire_mounts(ms),
        }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.check(&r.snapshotter)?;
        let k = key(&r.key)?;
        let name = key(&r.name)?;
        let store = self.state.store().clone();
        blocking(move || store.snapshotter().commit(&c, &name, &k, labels(r.labels))).await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.check(&r.snapshotter)?;
        let k = key(&r.key)?;
        let store = self.state.store().clone();
        blocking(move || store.snapshotter().remove(&c, &k)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.check(&r.snapshotter)?;
        let k = key(&r.key)?;
        let store = self.state.store().clone();
        let i = blocking(move || store.snapshotter().stat(&c, &k)).await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(wire_info(&i)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.check(&r.snapshotter)?;
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let si = SnapshotInfo {
            name: key(&info.name)?,
            parent: parent(info.parent),
            kind: SnapshotKind::Committed,
            labels: labels(info.labels),
            created_at: system_time(info.created_at.as_ref()),
            updated_at: system_time(info.updated_at.as_ref()),
        };
        let fieldpaths = paths(r.update_mask);
        let store = self.state.store().clone();
        let i = blocking(move || store.snapshotter().update(&c, &si, &fieldpaths)).await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(wire_info(&i)),
        }))
    }

    type ListStream = BoxStream<pb::ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.check(&r.snapshotter)?;
        let store = self.state.store().clone();
        let infos = blocking(move || store.snapshotter().list(&c, &r.filters)).await?;
        let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> = infos
            .chunks(100)
            .map(|b| {
                Ok(pb::ListSnapshotsResponse {
                    info: b.iter().map(wire_info).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.check(&r.snapshotter)?;
        let k = key(&r.key)?;
        let store = self.state.store().clone();
        let u = blocking(move || store.snapshotter().usage(&c, &k)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: u.size as i64,
            inodes: u.inodes as i64,
        }))
    }

    async fn cleanup(&self, req: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let _ = ctx(&req)?;
        self.check(&req.into_inner().snapshotter)?;
        let store = self.state.store().clone();
        blocking(move || store.snapshotter().cleanup().map(|_| ())).await?;
        Ok(Response::new(()))
    }
}
