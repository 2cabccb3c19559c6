//! `containerd.services.introspection.v1.Introspection`: the plugins berthd is made of, named as
//! containerd names its own so that clients probing for features find what they look for.

use std::path::Path;

use berth_proto::containerd::services::introspection::v1::{
    introspection_server::Introspection, Plugin, PluginsRequest, PluginsResponse, ServerResponse,
};
use berth_proto::containerd::types::Platform;
use tonic::{Request, Response, Status};

/// Serves the plugin list and the server's persistent uuid.
pub struct IntrospectionService {
    uuid: String,
    root: String,
}

impl IntrospectionService {
    /// Loads the uuid from `<root>/uuid`, creating it on first start.
    pub fn new(root: &Path) -> anyhow::Result<IntrospectionService> {
        use anyhow::Context;
        let path = root.join("uuid");
        let uuid = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let u = new_uuid();
                let tmp = root.join("uuid.tmp");
                std::fs::write(&tmp, &u).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("renaming to {}", path.display()))?;
                u
            }
        };
        Ok(IntrospectionService {
            uuid,
            root: root.display().to_string(),
        })
    }

    fn plugins(&self) -> Vec<Plugin> {
        let host = berth_store::oci::Platform::host();
        let platform = Platform {
            os: host.os.clone(),
            architecture: host.architecture.clone(),
            variant: host.variant.clone(),
        };
        let p = |ty: &str, id: &str, requires: &[&str]| Plugin {
            r#type: ty.to_string(),
            id: id.to_string(),
            requires: requires.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut overlay = p("io.containerd.snapshotter.v1", "overlayfs", &[]);
        overlay.platforms = vec![platform.clone()];
        overlay
            .exports
            .insert("root".into(), format!("{}/snapshots", self.root));
        let mut content = p("io.containerd.content.v1", "content", &[]);
        content
            .exports
            .insert("root".into(), format!("{}/content", self.root));
        let mut diff = p(
            "io.containerd.differ.v1",
            "walking",
            &["io.containerd.metadata.v1"],
        );
        diff.platforms = vec![platform];
        vec![
            content,
            overlay,
            p(
                "io.containerd.metadata.v1",
                "bolt",
                &["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
            ),
            diff,
            p(
                "io.containerd.gc.v1",
                "scheduler",
                &["io.containerd.metadata.v1"],
            ),
            p(
                "io.containerd.lease.v1",
                "manager",
                &["io.containerd.metadata.v1"],
            ),
            p(
                "io.containerd.service.v1",
                "content-service",
                &["io.containerd.metadata.v1"],
            ),
            p(
                "io.containerd.service.v1",
                "images-service",
                &["io.containerd.metadata.v1", "io.containerd.gc.v1"],
            ),
            p(
                "io.containerd.service.v1",
                "leases-service",
                &["io.containerd.lease.v1"],
            ),
            p(
                "io.containerd.service.v1",
                "namespaces-service",
                &["io.containerd.metadata.v1"],
            ),
            p(
                "io.containerd.service.v1",
                "snapshots-service",
                &["io.containerd.metadata.v1"],
            ),
            p(
                "io.containerd.service.v1",
                "diff-service",
                &["io.containerd.differ.v1"],
            ),
            p(
                "io.containerd.grpc.v1",
                "content",
                &["io.containerd.service.v1"],
            ),
            p(
                "io.containerd.grpc.v1",
                "images",
                &["io.containerd.service.v1"],
            ),
            p(
                "io.containerd.grpc.v1",
                "leases",
                &["io.containerd.service.v1"],
            ),
            p(
                "io.containerd.grpc.v1",
                "namespaces",
                &["io.containerd.service.v1"],
            ),
            p(
                "io.containerd.grpc.v1",
                "snapshots",
                &["io.containerd.service.v1"],
            ),
            p(
                "io.containerd.grpc.v1",
                "diff",
                &["io.containerd.service.v1"],
            ),
            p("io.containerd.grpc.v1", "introspection", &[]),
            p("io.containerd.grpc.v1", "version", &[]),
            p(
                "io.berth.grpc.v1",
                "archives",
                &["io.containerd.service.v1"],
            ),
        ]
    }
}

/// A random RFC 4122 version-4 uuid.
fn new_uuid() -> String {
    let mut b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Does `plugin` match one containerd-style filter like `type==io.containerd.content.v1` or
/// `id==overlayfs` (clauses joined by `,` must all hold)?
fn matches(plugin: &Plugin, filter: &str) -> bool {
    filter.split(',').all(|clause| {
        let clause = clause.trim();
        let (key, neg, val) = if let Some((k, v)) = clause.split_once("!=") {
            (k, true, v)
        } else if let Some((k, v)) = clause.split_once("==") {
            (k, false, v)
        } else {
            return true;
        };
        let val = val.trim_matches('"');
        let got = match key.trim() {
            "type" => plugin.r#type.as_str(),
            "id" => plugin.id.as_str(),
            _ => return false,
        };
        (got == val) != neg
    })
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filters = req.into_inner().filters;
        let plugins = self
            .plugins()
            .into_iter()
            .filter(|p| filters.is_empty() || filters.iter().any(|f| matches(p, f)))
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<ServerResponse>, Status> {
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|p| {
                let s = p.to_string_lossy().to_string();
                s.trim_start_matches("pid:[")
                    .trim_end_matches(']')
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: std::process::id() as u64,
            pidns,
            deprecations: vec![],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_the_v4_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn filters_select_by_type_and_id() {
        let p = Plugin {
            r#type: "io.containerd.snapshotter.v1".into(),
            id: "overlayfs".into(),
            ..Default::default()
        };
        assert!(matches(&p, "type==io.containerd.snapshotter.v1"));
        assert!(matches(
            &p,
            "type==io.containerd.snapshotter.v1,id==overlayfs"
        ));
        assert!(!matches(&p, "id==native"));
        assert!(matches(&p, "id!=native"));
    }
}
