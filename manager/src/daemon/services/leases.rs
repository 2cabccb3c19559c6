//! `containerd.services.leases.v1.Leases`.

use berth_proto::containerd::services::leases::v1 as pb;
use berth_proto::containerd::services::leases::v1::leases_server::Leases;
use berth_store::metadata::{Lease, LeaseResource};
use tonic::{Request, Response, Status};

use crate::daemon::errors::blocking;
use crate::daemon::meta::{ctx, labels, timestamp, wire_labels};
use crate::daemon::state::State;

/// Leases keep resources from garbage collection while they exist.
pub struct LeasesService {
    /// Shared state.
    pub state: State,
}

fn wire(l: &Lease) -> pb::Lease {
    pb::Lease {
        id: l.id.clone(),
        created_at: Some(timestamp(l.created_at)),
        labels: wire_labels(&l.labels),
    }
}

fn resource(r: Option<pb::Resource>) -> Result<LeaseResource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource must be set"))?;
    if r.id.is_empty() || r.r#type.is_empty() {
        return Err(Status::invalid_argument("resource id and type must be set"));
    }
    Ok(LeaseResource {
        kind: r.r#type,
        id: r.id,
    })
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let store = self.state.store().clone();
        let l = blocking(move || store.lease_create(&c, &r.id, labels(r.labels))).await?;
        Ok(Response::new(pb::CreateResponse {
            lease: Some(wire(&l)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let store = self.state.store().clone();
        blocking(move || {
            store.lease_delete(&c, &r.id)?;
            if r.sync {
                store.collect()?;
            }
            Ok(())
        })
        .await?;
        if !r.sync {
            super::collect_in_background(self.state.clone());
        }
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let c = ctx(&req)?;
        let filters = req.into_inner().filters;
        let store = self.state.store().clone();
        let ls = blocking(move || store.lease_list(&c, &filters)).await?;
        Ok(Response::new(pb::ListResponse {
            leases: ls.iter().map(wire).collect(),
        }))
    }

    async fn add_resource(
        &self,
        req: Request<pb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let res = resource(r.resource)?;
        let store = self.state.store().clone();
        blocking(move || store.lease_add_resource(&c, &r.id, res)).await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let res = resource(r.resource)?;
        let store = self.state.store().clone();
        blocking(move || store.lease_delete_resource(&c, &r.id, &res)).await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let c = ctx(&req)?;
        let id = req.into_inner().id;
        let store = self.state.store().clone();
        let rs = blocking(move || store.lease_resources(&c, &id)).await?;
        Ok(Response::new(pb::ListResourcesResponse {
            resources: rs
                .into_iter()
                .map(|r| pb::Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
