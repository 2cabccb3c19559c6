//! `containerd.services.version.v1.Version`.

use berth_proto::containerd::services::version::v1::{version_server::Version, VersionResponse};
use tonic::{Request, Response, Status};

/// The daemon's version (the crate version) and revision (the git commit, when built from git).
pub struct VersionService;

/// The version string reported.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The revision reported: `BERTH_REVISION` at build time, else "unknown".
pub const REVISION: &str = match option_env!("BERTH_REVISION") {
    Some(r) => r,
    None => "unknown",
};

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_string(),
            revision: REVISION.to_string(),
        }))
    }
}
