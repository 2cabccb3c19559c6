//! Connecting to berthd: a tonic channel over the unix socket, and an interceptor that puts the
//! namespace (and optionally a lease) into every request's metadata, as containerd clients do.

use std::path::PathBuf;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Opens a channel to the daemon listening on the unix socket `path`.
pub async fn connect(path: impl Into<PathBuf>) -> Result<Channel> {
    let path: PathBuf = path.into();
    let p = path.clone();
    // The URI is required by the API but unused: the connector below dials the socket.
    Endpoint::try_from("http://berthd.local")?
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .map_err(|e| {
            if is_permission_denied(&e) {
                anyhow::anyhow!(permission_denied(&path))
            } else {
                anyhow::Error::new(e).context(format!("connecting to berthd at {}", path.display()))
            }
        })
}

fn is_permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// What to say when the socket refuses the caller: who may use it.
fn permission_denied(path: &std::path::Path) -> String {
    format!(
        "permission denied on {}: berthd's socket is for root, and for the group berthd's \
         --group names if it was started with one",
        path.display()
    )
}

/// Adds `containerd-namespace` (and `containerd-lease` when set) to each request.
#[derive(Clone)]
pub struct NamespaceInterceptor {
    namespace: MetadataValue<tonic::metadata::Ascii>,
    lease: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl NamespaceInterceptor {
    /// An interceptor for `namespace`, optionally under `lease`.
    pub fn new(namespace: &str, lease: Option<&str>) -> Result<NamespaceInterceptor> {
        Ok(NamespaceInterceptor {
            namespace: namespace
                .parse()
                .with_context(|| format!("namespace {namespace:?} is not valid metadata"))?,
            lease: lease
                .map(|l| l.parse().with_context(|| format!("lease {l:?}")))
                .transpose()?,
        })
    }
}

impl tonic::service::Interceptor for NamespaceInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(crate::daemon::meta::NAMESPACE_KEY, self.namespace.clone());
        if let Some(l) = &self.lease {
            req.metadata_mut()
                .insert(crate::daemon::meta::LEASE_KEY, l.clone());
        }
        Ok(req)
    }
}

/// A channel that tags requests with a namespace.
pub type NsChannel = InterceptedService<Channel, NamespaceInterceptor>;
