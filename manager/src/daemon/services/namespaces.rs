//! `containerd.services.namespaces.v1.Namespaces`.

use berth_proto::containerd::services::namespaces::v1 as pb;
use berth_proto::containerd::services::namespaces::v1::namespaces_server::Namespaces;
use berth_store::metadata::Namespace;
use tonic::{Request, Response, Status};

use crate::daemon::errors::blocking;
use crate::daemon::meta::{labels, paths, wire_labels};
use crate::daemon::state::State;

/// Namespaces are global (not namespaced themselves).
pub struct NamespacesService {
    /// Shared state.
    pub state: State,
}

fn wire(n: &Namespace) -> pb::Namespace {
    pb::Namespace {
        name: n.name.clone(),
        labels: wire_labels(&n.labels),
    }
}

fn store_ns(n: Option<pb::Namespace>) -> Result<Namespace, Status> {
    let n = n.ok_or_else(|| Status::invalid_argument("namespace must be set"))?;
    crate::identifiers::validate(&n.name)
        .map_err(|e| Status::invalid_argument(format!("namespace validation: {e}")))?;
    Ok(Namespace {
        name: n.name,
        labels: labels(n.labels),
    })
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::GetNamespaceResponse>, Status> {
        let name = req.into_inner().name;
        let store = self.state.store().clone();
        let n = blocking(move || store.namespace(&name)).await?;
        Ok(Response::new(pb::GetNamespaceResponse {
            namespace: Some(wire(&n)),
        }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let store = self.state.store().clone();
        let ns = blocking(move || store.namespaces()).await?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: ns.iter().map(wire).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let n = store_ns(req.into_inner().namespace)?;
        let store = self.state.store().clone();
        let n2 = n.clone();
        blocking(move || store.namespace_create(&n2)).await?;
        Ok(Response::new(pb::CreateNamespaceResponse {
            namespace: Some(wire(&n)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let n = store_ns(req.namespace)?;
        let fieldpaths = paths(req.update_mask);
        let store = self.state.store().clone();
        let n = blocking(move || store.namespace_update(&n, &fieldpaths)).await?;
        Ok(Response::new(pb::UpdateNamespaceResponse {
            namespace: Some(wire(&n)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let store = self.state.store().clone();
        blocking(move || store.namespace_delete(&name)).await?;
        Ok(Response::new(()))
    }
}
