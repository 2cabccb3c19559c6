//! `containerd.services.images.v1.Images`: image records; Delete triggers garbage collection.

use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::services::images::v1::images_server::Images;
use berth_proto::containerd::types::Descriptor as PbDescriptor;
use berth_store::metadata::Image;
use berth_store::oci::Descriptor;
use tonic::{Request, Response, Status};

use berth_proto::containerd::events as ev;

use super::events::{any, publish};
use crate::daemon::errors::blocking;
use crate::daemon::meta::{ctx, digest, labels, paths, system_time, timestamp, wire_labels};
use crate::daemon::state::State;

/// Image records of a namespace.
pub struct ImagesService {
    /// Shared state.
    pub state: State,
}

/// Publishes `/images/create` for a record just made, `/images/update` for one that existed
/// (its creation time is older than its update), as containerd's images service does; pulls
/// and imports done by berthd publish the same way.
pub fn publish_image(ns: &str, i: &Image) {
    let labels = wire_labels(&i.labels);
    if i.created_at == i.updated_at {
        let e = ev::ImageCreate {
            name: i.name.clone(),
            labels,
        };
        publish(ns, "/images/create", any("ImageCreate", &e));
    } else {
        let e = ev::ImageUpdate {
            name: i.name.clone(),
            labels,
        };
        publish(ns, "/images/update", any("ImageUpdate", &e));
    }
}

/// A store descriptor on the wire.
pub fn wire_descriptor(d: &Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: wire_labels(&d.annotations),
    }
}

/// A wire descriptor for the store, validated.
pub fn store_descriptor(field: &str, d: Option<PbDescriptor>) -> Result<Descriptor, Status> {
    let d = d.ok_or_else(|| Status::invalid_argument(format!("{field} must be set")))?;
    if d.size < 0 {
        return Err(Status::invalid_argument(format!(
            "{field}.size must not be negative"
        )));
    }
    let mut out = Descriptor::new(
        &d.media_type,
        digest(&format!("{field}.digest"), &d.digest)?,
        d.size as u64,
    );
    out.annotations = labels(d.annotations);
    Ok(out)
}

/// An image record on the wire.
pub fn wire_image(i: &Image) -> pb::Image {
    pb::Image {
        name: i.name.clone(),
        labels: wire_labels(&i.labels),
        target: Some(wire_descriptor(&i.target)),
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
    }
}

fn store_image(i: Option<pb::Image>, need_target: bool) -> Result<Image, Status> {
    let i = i.ok_or_else(|| Status::invalid_argument("image must be set"))?;
    if i.name.is_empty() {
        return Err(Status::invalid_argument("image name must not be empty"));
    }
    let target = if need_target || i.target.is_some() {
        store_descriptor("image.target", i.target)?
    } else {
        // An update of labels only: the store keeps the current target for such masks.
        Descriptor::new("", berth_store::Digest::of(b""), 0)
    };
    Ok(Image {
        name: i.name,
        target,
        labels: labels(i.labels),
        created_at: system_time(i.created_at.as_ref()),
        updated_at: system_time(i.updated_at.as_ref()),
    })
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let c = ctx(&req)?;
        let name = req.into_inner().name;
        let store = self.state.store().clone();
        let i = blocking(move || store.image(&c, &name)).await?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(wire_image(&i)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let c = ctx(&req)?;
        let filters = req.into_inner().filters;
        let store = self.state.store().clone();
        let is = blocking(move || store.image_list(&c, &filters)).await?;
        Ok(Response::new(pb::ListImagesResponse {
            images: is.iter().map(wire_image).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let c = ctx(&req)?;
        let ns = c.namespace.clone();
        let img = store_image(req.into_inner().image, true)?;
        let store = self.state.store().clone();
        let i = blocking(move || store.image_create(&c, &img)).await?;
        publish_image(&ns, &i);
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(wire_image(&i)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let c = ctx(&req)?;
        let ns = c.namespace.clone();
        let r = req.into_inner();
        let fieldpaths = paths(r.update_mask);
        let img = store_image(
            r.image,
            fieldpaths.is_empty() || fieldpaths.iter().any(|p| p == "target"),
        )?;
        let store = self.state.store().clone();
        let i = blocking(move || store.image_update(&c, &img, &fieldpaths)).await?;
        let e = ev::ImageUpdate {
            name: i.name.clone(),
            labels: wire_labels(&i.labels),
        };
        publish(&ns, "/images/update", any("ImageUpdate", &e));
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(wire_image(&i)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let ns = c.namespace.clone();
        let r = req.into_inner();
        let (name, sync) = (r.name.clone(), r.sync);
        let store = self.state.store().clone();
        blocking(move || {
            store.image_delete(&c, &r.name)?;
            if r.sync {
                let report = store.collect()?;
                tracing::info!(?report, "gc after image delete");
                crate::daemon::trim_heap();
            }
            Ok(())
        })
        .await?;
        publish(
            &ns,
            "/images/delete",
            any("ImageDelete", &ev::ImageDelete { name }),
        );
        if !sync {
            super::collect_in_background(self.state.clone());
        }
        Ok(Response::new(()))
    }
}
