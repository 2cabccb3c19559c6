//! `containerd.services.containers.v1.Containers`: container records on the store's containers
//! table. A record holds the OCI spec (an `Any` whose value is JSON), the rootfs snapshot and the
//! runtime; it has no state of its own (tasks do).

use std::pin::Pin;

use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::containers::v1::containers_server::Containers;
use berth_store::metadata::{AnyValue, Container};
use prost_types::Any;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::events::{any, publish};
use crate::daemon::errors::blocking;
use crate::daemon::meta::{ctx, labels, paths, timestamp, wire_labels};
use crate::daemon::state::State;

/// Container records of a namespace.
pub struct ContainersService {
    /// Shared state.
    pub state: State,
}

fn store_any(a: Any) -> AnyValue {
    AnyValue {
        type_url: a.type_url,
        value: a.value,
    }
}

fn wire_any(a: &AnyValue) -> Any {
    Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    }
}

/// A store record on the wire.
pub fn wire(c: &Container) -> pb::Container {
    pb::Container {
        id: c.id.clone(),
        labels: wire_labels(&c.labels),
        image: c.image.clone(),
        runtime: Some(pb::container::Runtime {
            name: c.runtime_name.clone(),
            options: c.runtime_options.as_ref().map(wire_any),
        }),
        spec: c.spec.as_ref().map(wire_any),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), wire_any(v)))
            .collect(),
        sandbox: c.sandbox.clone(),
    }
}

fn store(c: pb::Container) -> Result<Container, Status> {
    crate::identifiers::validate(&c.id)
        .map_err(|e| Status::invalid_argument(format!("container id: {e}")))?;
    let runtime = c.runtime.unwrap_or_default();
    Ok(Container {
        id: c.id,
        labels: labels(c.labels),
        image: c.image,
        runtime_name: runtime.name,
        runtime_options: runtime.options.map(store_any),
        spec: c.spec.map(store_any),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, store_any(v)))
            .collect(),
        sandbox: c.sandbox,
        ..Container::default()
    })
}

/// Applies `new` onto `cur` as containerd does: an empty mask replaces every mutable field;
/// `labels.<k>` / `extensions.<k>` touch one key; id, runtime and snapshotter never change.
fn apply_update(cur: &mut Container, new: Container, mask: &[String]) -> Result<(), Status> {
    if new.runtime_name != cur.runtime_name && !new.runtime_name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "container {:?}: runtime field is immutable",
            cur.id
        )));
    }
    if new.snapshotter != cur.snapshotter && !new.snapshotter.is_empty() {
        return Err(Status::invalid_argument(format!(
            "container {:?}: snapshotter field is immutable",
            cur.id
        )));
    }
    if mask.is_empty() {
        cur.labels = new.labels;
        cur.spec = new.spec;
        cur.extensions = new.extensions;
        cur.image = new.image;
        cur.snapshot_key = new.snapshot_key;
        return Ok(());
    }
    for p in mask {
        if let Some(k) = p.strip_prefix("labels.") {
            match new.labels.get(k) {
                Some(v) => cur.labels.insert(k.to_string(), v.clone()),
                None => cur.labels.remove(k),
            };
            continue;
        }
        if let Some(k) = p.strip_prefix("extensions.") {
            match new.extensions.get(k) {
                Some(v) => cur.extensions.insert(k.to_string(), v.clone()),
                None => cur.extensions.remove(k),
            };
            continue;
        }
        match p.as_str() {
            "labels" => cur.labels = new.labels.clone(),
            "spec" => cur.spec = new.spec.clone(),
            "extensions" => cur.extensions = new.extensions.clone(),
            "image" => cur.image = new.image.clone(),
            "snapshotkey" | "snapshot_key" => cur.snapshot_key = new.snapshot_key.clone(),
            other => {
                return Err(Status::invalid_argument(format!(
                    "cannot update {other:?} field on container {:?}",
                    cur.id
                )))
            }
        }
    }
    Ok(())
}

type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListContainerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        req: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let c = ctx(&req)?;
        let id = req.into_inner().id;
        let store = self.state.store().clone();
        let rec = blocking(move || store.container(&c, &id)).await?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(wire(&rec)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let c = ctx(&req)?;
        let filters = req.into_inner().filters;
        let store = self.state.store().clone();
        let recs = blocking(move || store.container_list(&c, &filters)).await?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: recs.iter().map(wire).collect(),
        }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let c = ctx(&req)?;
        let filters = req.into_inner().filters;
        let store = self.state.store().clone();
        let recs = blocking(move || store.container_list(&c, &filters)).await?;
        let items: Vec<Result<pb::ListContainerMessage, Status>> = recs
            .iter()
            .map(|r| {
                Ok(pb::ListContainerMessage {
                    container: Some(wire(r)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let c = ctx(&req)?;
        let rec = store(
            req.into_inner()
                .container
                .ok_or_else(|| Status::invalid_argument("container must be set"))?,
        )?;
        if rec.spec.is_none() {
            return Err(Status::invalid_argument(format!(
                "container {:?}: spec must be set",
                rec.id
            )));
        }
        if rec.runtime_name.is_empty() {
            return Err(Status::invalid_argument(format!(
                "container {:?}: runtime name must be set",
                rec.id
            )));
        }
        let ns = c.namespace.clone();
        let store = self.state.store().clone();
        let rec = blocking(move || store.container_create(&c, &rec)).await?;
        publish(
            &ns,
            "/containers/create",
            any(
                "ContainerCreate",
                &ev::ContainerCreate {
                    id: rec.id.clone(),
                    image: rec.image.clone(),
                    runtime: Some(ev::container_create::Runtime {
                        name: rec.runtime_name.clone(),
                        options: rec.runtime_options.as_ref().map(wire_any),
                    }),
                },
            ),
        );
        Ok(Response::new(pb::CreateContainerResponse {
            container: Some(wire(&rec)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::UpdateContainerResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let mask = paths(r.update_mask);
        let new = store(
            r.container
                .ok_or_else(|| Status::invalid_argument("container must be set"))?,
        )?;
        let ns = c.namespace.clone();
        let st = self.state.store().clone();
        let id = new.id.clone();
        let mut cur = blocking(move || st.container(&c, &id)).await?;
        apply_update(&mut cur, new, &mask)?;
        let st = self.state.store().clone();
        let c2 = berth_store::Ctx::new(ns.clone());
        let rec = blocking(move || st.container_update(&c2, &cur)).await?;
        publish(
            &ns,
            "/containers/update",
            any(
                "ContainerUpdate",
                &ev::ContainerUpdate {
                    id: rec.id.clone(),
                    image: rec.image.clone(),
                    labels: wire_labels(&rec.labels),
                    snapshot_key: rec.snapshot_key.clone(),
                },
            ),
        );
        Ok(Response::new(pb::UpdateContainerResponse {
            container: Some(wire(&rec)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let id = req.into_inner().id;
        let ns = c.namespace.clone();
        if crate::tasks::exists(self.state.state_dir(), &ns, &id) {
            return Err(Status::failed_precondition(format!(
                "container {id:?} has a task; delete the task first"
            )));
        }
        let store = self.state.store().clone();
        let id2 = id.clone();
        blocking(move || store.container_delete(&c, &id2)).await?;
        crate::tasks::remove_logs(self.state.state_dir(), &ns, &id);
        publish(
            &ns,
            "/containers/delete",
            any("ContainerDelete", &ev::ContainerDelete { id }),
        );
        super::collect_in_background(self.state.clone());
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_update_touches_only_named_fields() {
        let mut cur = Container {
            id: "c".into(),
            image: "old".into(),
            runtime_name: "io.containerd.runc.v2".into(),
            ..Container::default()
        };
        cur.labels.insert("a".into(), "1".into());
        cur.labels.insert("b".into(), "2".into());
        let mut new = cur.clone();
        new.image = "new".into();
        new.labels.remove("a");
        new.labels.insert("b".into(), "3".into());
        apply_update(&mut cur, new, &["labels.b".to_string()]).unwrap();
        assert_eq!(cur.image, "old");
        assert_eq!(cur.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(cur.labels.get("b").map(String::as_str), Some("3"));
    }

    #[test]
    fn runtime_cannot_change_and_unknown_paths_are_refused() {
        let mut cur = Container {
            id: "c".into(),
            runtime_name: "a".into(),
            ..Container::default()
        };
        let new = Container {
            id: "c".into(),
            runtime_name: "b".into(),
            ..Container::default()
        };
        let e = apply_update(&mut cur, new.clone(), &[]).unwrap_err();
        assert!(e.message().contains("immutable"), "{e:?}");
        let same = Container {
            runtime_name: "a".into(),
            ..new
        };
        let e = apply_update(&mut cur, same, &["bogus".to_string()]).unwrap_err();
        assert!(e.message().contains("bogus"), "{e:?}");
    }
}
