//! The gRPC services, thin: decode, take the namespace, call the stores off the async thread,
//! map errors.

pub mod archives;
pub mod builds;
pub mod check;
pub mod containers;
pub mod content;
pub mod diff;
pub mod distribution;
pub mod events;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod networks;
pub mod snapshots;
pub mod tasks;
pub mod version;
pub mod volumes;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use berth_proto::berth::services::builds::v1::builds_server::BuildsServer;
use berth_proto::berth::services::check::v1::check_server::CheckServer;
use berth_proto::berth::services::distribution::v1::distribution_server::DistributionServer;
use berth_proto::berth::services::images::v1::archives_server::ArchivesServer;
use berth_proto::berth::services::networks::v1::networks_server::NetworksServer;
use berth_proto::berth::services::volumes::v1::volumes_server::VolumesServer;
use berth_proto::containerd::services::containers::v1::containers_server::ContainersServer;
use berth_proto::containerd::services::content::v1::content_server::ContentServer;
use berth_proto::containerd::services::diff::v1::diff_server::DiffServer;
use berth_proto::containerd::services::events::v1::events_server::EventsServer;
use berth_proto::containerd::services::images::v1::images_server::ImagesServer;
use berth_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_proto::containerd::services::leases::v1::leases_server::LeasesServer;
use berth_proto::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_proto::containerd::services::tasks::v1::tasks_server::TasksServer;
use berth_proto::containerd::services::version::v1::version_server::VersionServer;
use tonic::transport::server::Router;
use tonic::transport::Server;

use super::state::State;

/// The layers every gRPC request goes through: [`crate::daemon::conns::TrackRequestsLayer`].
pub type GrpcLayers = tower::layer::util::Stack<
    crate::daemon::conns::TrackRequestsLayer,
    tower::layer::util::Identity,
>;

/// Largest message accepted or sent (a content write chunk is ~1 MiB; ctr sends up to 1 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// Every service, mounted on one router.
pub fn router(state: State) -> Result<Router<GrpcLayers>> {
    let introspection = introspection::IntrospectionService::new(state.root())?;
    macro_rules! svc {
        ($server:ident, $svc:expr) => {
            $server::new($svc)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        };
    }
    Ok(Server::builder()
        .layer(crate::daemon::conns::TrackRequestsLayer)
        .trace_fn(|req| tracing::debug_span!("rpc", path = %req.uri().path()))
        .add_service(svc!(VersionServer, version::VersionService))
        .add_service(svc!(IntrospectionServer, introspection))
        .add_service(svc!(
            NamespacesServer,
            namespaces::NamespacesService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            ContentServer,
            content::ContentService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            ImagesServer,
            images::ImagesService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            LeasesServer,
            leases::LeasesService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            SnapshotsServer,
            snapshots::SnapshotsService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            DiffServer,
            diff::DiffService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            ContainersServer,
            containers::ContainersService {
                state: state.clone()
            }
        ))
        .add_service(svc!(TasksServer, tasks::TasksService::new(state.clone())))
        .add_service(svc!(EventsServer, events::EventsService))
        .add_service(svc!(
            DistributionServer,
            distribution::DistributionService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            NetworksServer,
            networks::NetworksService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            CheckServer,
            check::CheckService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            VolumesServer,
            volumes::VolumesService {
                state: state.clone()
            }
        ))
        .add_service(svc!(
            BuildsServer,
            builds::BuildsService::new(state.clone())
        ))
        .add_service(svc!(ArchivesServer, archives::ArchivesService { state })))
}

/// Runs garbage collection off the request path (at most one queued run at a time), as
/// containerd does after a non-sync delete.
pub fn collect_in_background(state: State) {
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::task::spawn_blocking(move || {
        PENDING.store(false, Ordering::Release);
        match state.store().collect() {
            Ok(report) => tracing::info!(?report, "background gc"),
            Err(e) => tracing::warn!(error = %e, "background gc failed"),
        }
        crate::daemon::trim_heap();
    });
}
