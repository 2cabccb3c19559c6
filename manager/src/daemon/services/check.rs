//! `berth.services.check.v1.Check`: a thin front over [`crate::check`].

use berth_proto::berth::services::check::v1 as pb;
use berth_proto::berth::services::check::v1::check_server::Check;
use tonic::{Request, Response, Status};

use crate::daemon::errors::join_error;
use crate::daemon::state::State;

/// While berthd runs, files this young may belong to an operation in flight.
const GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The check service.
pub struct CheckService {
    /// Shared state.
    pub state: State,
}

#[tonic::async_trait]
impl Check for CheckService {
    async fn run(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let repair = req.into_inner().repair;
        let state = self.state.clone();
        let report = tokio::task::spawn_blocking(move || {
            crate::check::run(
                state.store(),
                state.networks(),
                state.state_dir(),
                repair,
                GRACE,
            )
        })
        .await
        .map_err(join_error)?
        .map_err(|e| Status::internal(format!("check: {e}")))?;
        Ok(Response::new(pb::CheckResponse::from(report)))
    }
}
