//! `berth.services.networks.v1.Networks`: the namespace's bridge networks (create, get, list,
//! delete, connect, disconnect). A thin front over [`crate::networks`]; containers join
//! networks through their labels when their task is created, or through connect.

use berth_proto::berth::services::networks::v1 as pb;
use berth_proto::berth::services::networks::v1::networks_server::Networks;
use tonic::{Request, Response, Status};

use crate::daemon::errors::join_error;
use crate::daemon::meta::ctx;
use crate::daemon::state::State;
use crate::networks::{status, Join, NetworkRecord};

/// The networks service.
pub struct NetworksService {
    /// Shared state.
    pub state: State,
}

impl NetworksService {
    /// A record on the wire, with the containers attached now.
    fn wire(&self, ctx: &berth_store::Ctx, r: NetworkRecord) -> Result<pb::Network, Status> {
        let endpoints = self
            .state
            .networks()
            .endpoints(ctx, &r.name)
            .map_err(status)?
            .into_iter()
            .map(|(a, j)| pb::Endpoint {
                container_id: a.container_id.clone(),
                ip: j.ip.clone(),
                aliases: j.aliases.clone(),
                ports: if j.publishes {
                    a.ports
                        .iter()
                        .map(|p| {
                            format!(
                                "{}:{}->{}/{}",
                                p.host_ip
                                    .map(|i| i.to_string())
                                    .unwrap_or_else(|| "0.0.0.0".into()),
                                p.host_port,
                                p.container_port,
                                p.protocol
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        Ok(pb::Network {
            name: r.name,
            id: r.id,
            subnet: r.subnet,
            gateway: r.gateway,
            bridge: r.bridge,
            internal: r.internal,
            labels: r.labels.into_iter().collect(),
            endpoints,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::networks::Networks) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let nets = self.state.networks().clone();
        tokio::task::spawn_blocking(move || f(&nets))
            .await
            .map_err(join_error)?
    }
}

#[tonic::async_trait]
impl Networks for NetworksService {
    async fn create(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::NetworkResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("a network needs a name"));
        }
        let c2 = c.clone();
        let rec = self
            .run(move |n| {
                n.create(
                    &c2,
                    &r.name,
                    &r.subnet,
                    &r.gateway,
                    r.internal,
                    r.labels.into_iter().collect(),
                )
                .map_err(status)
            })
            .await?;
        Ok(Response::new(pb::NetworkResponse {
            network: Some(self.wire(&c, rec)?),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::NetworkResponse>, Status> {
        let c = ctx(&req)?;
        let name = req.into_inner().name;
        let c2 = c.clone();
        let rec = self.run(move |n| n.get(&c2, &name).map_err(status)).await?;
        Ok(Response::new(pb::NetworkResponse {
            network: Some(self.wire(&c, rec)?),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let c = ctx(&req)?;
        let c2 = c.clone();
        let recs = self.run(move |n| n.list(&c2).map_err(status)).await?;
        let networks = recs
            .into_iter()
            .map(|r| self.wire(&c, r))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListNetworksResponse { networks }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNetworkRequest>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        let c = ctx(&req)?;
        let name = req.into_inner().name;
        self.run(move |n| n.remove(&c, &name).map_err(status))
            .await?;
        Ok(Response::new(pb::DeleteNetworkResponse {}))
    }

    async fn connect_container(
        &self,
        req: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::ConnectResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        if r.network.is_empty() || r.container_id.is_empty() {
            return Err(Status::invalid_argument(
                "connect needs a network and a container",
            ));
        }
        let join = Join {
            name: r.network,
            aliases: r.aliases,
            ip: r.ip,
        };
        self.run(move |n| n.connect(&c, &r.container_id, &join).map_err(status))
            .await?;
        Ok(Response::new(pb::ConnectResponse {}))
    }

    async fn disconnect_container(
        &self,
        req: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        self.run(move |n| {
            n.disconnect(&c, &r.container_id, &r.network)
                .map_err(status)
        })
        .await?;
        Ok(Response::new(pb::DisconnectResponse {}))
    }
}
