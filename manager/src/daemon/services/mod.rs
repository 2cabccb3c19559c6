//! The gRPC services, thin: decode, take the namespace, call the stores off the async thread,
//! map errors.

pub mod introspection;
pub mod version;

use anyhow::Result;
use berth_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_proto::containerd::services::version::v1::version_server::VersionServer;
use tonic::transport::server::Router;
use tonic::transport::Server;

use super::state::State;

/// Every service, mounted on one router.
pub fn router(state: State) -> Result<Router> {
    let introspection = introspection::IntrospectionService::new(state.root())?;
    Ok(Server::builder()
        .add_service(VersionServer::new(version::VersionService))
        .add_service(IntrospectionServer::new(introspection)))
}
