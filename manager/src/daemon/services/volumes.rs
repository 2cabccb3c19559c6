//! `berth.services.volumes.v1.Volumes`: named volumes, records in the store
//! (`berth_store::volumes`).

use berth_proto::berth::services::volumes::v1 as pb;
use berth_proto::berth::services::volumes::v1::volumes_server::Volumes;
use berth_store::metadata::Volume;
use berth_store::{Ctx, Store};
use tonic::{Request, Response, Status};

use crate::daemon::errors::blocking;
use crate::daemon::meta::{ctx, labels, timestamp, wire_labels};
use crate::daemon::state::State;

/// Volumes of a namespace.
pub struct VolumesService {
    /// Shared state.
    pub state: State,
}

/// The wire form; `mountpoint` is the data dir of a volume without options.
fn wire(store: &Store, ctx: &Ctx, v: &Volume, used_by: Vec<String>) -> pb::Volume {
    let mountpoint = if v.options.is_empty() {
        store
            .volume_data(ctx, &v.name)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    pb::Volume {
        name: v.name.clone(),
        driver: v.driver.clone(),
        labels: wire_labels(&v.labels),
        options: v
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        mountpoint,
        created_at: Some(timestamp(v.created_at)),
        used_by,
    }
}

#[tonic::async_trait]
impl Volumes for VolumesService {
    async fn create(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        if !(r.driver.is_empty() || r.driver == berth_store::volumes::DRIVER) {
            return Err(Status::invalid_argument(format!(
                "volume driver {:?} is not supported: only \"local\"",
                r.driver
            )));
        }
        let store = self.state.store().clone();
        let v = blocking(move || {
            let v = store.volume_create(
                &ctx,
                &r.name,
                labels(r.labels),
                r.options.into_iter().collect(),
            )?;
            Ok(wire(&store, &ctx, &v, Vec::new()))
        })
        .await?;
        Ok(Response::new(pb::CreateVolumeResponse { volume: Some(v) }))
    }

    async fn get(
        &self,
        req: Request<pb::GetVolumeRequest>,
    ) -> Result<Response<pb::GetVolumeResponse>, Status> {
        let ctx = ctx(&req)?;
        let name = req.into_inner().name;
        let store = self.state.store().clone();
        let v = blocking(move || {
            let v = store.volume(&ctx, &name)?;
            let users = store.volume_users(&ctx, &name)?;
            Ok(wire(&store, &ctx, &v, users))
        })
        .await?;
        Ok(Response::new(pb::GetVolumeResponse { volume: Some(v) }))
    }

    async fn list(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let ctx = ctx(&req)?;
        let store = self.state.store().clone();
        let volumes = blocking(move || {
            let vs = store.volume_list(&ctx)?;
            Ok(vs
                .iter()
                .map(|v| wire(&store, &ctx, v, Vec::new()))
                .collect())
        })
        .await?;
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn delete(&self, req: Request<pb::DeleteVolumeRequest>) -> Result<Response<()>, Status> {
        let ctx = ctx(&req)?;
        let name = req.into_inner().name;
        let store = self.state.store().clone();
        blocking(move || store.volume_delete(&ctx, &name)).await?;
        Ok(Response::new(()))
    }

    async fn prune(
        &self,
        req: Request<pb::PruneVolumesRequest>,
    ) -> Result<Response<pb::PruneVolumesResponse>, Status> {
        let ctx = ctx(&req)?;
        let all = req.into_inner().all;
        let store = self.state.store().clone();
        let deleted = blocking(move || store.volume_prune(&ctx, all)).await?;
        Ok(Response::new(pb::PruneVolumesResponse { deleted }))
    }
}
