//! Request metadata as containerd reads it: the namespace (`containerd-namespace`) and the
//! lease (`containerd-lease`) that new resources are attached to.

use tonic::{Request, Status};

/// gRPC metadata key naming the request's namespace.
pub const NAMESPACE_KEY: &str = "containerd-namespace";
/// gRPC metadata key naming the lease new resources are added to.
pub const LEASE_KEY: &str = "containerd-lease";

/// The request's namespace, validated. Missing is refused as containerd does
/// ("namespace is required", FailedPrecondition), a malformed name with InvalidArgument.
pub fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let ns = req
        .metadata()
        .get(NAMESPACE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ns.is_empty() {
        return Err(Status::failed_precondition("namespace is required"));
    }
    crate::identifiers::validate(ns)
        .map_err(|e| Status::invalid_argument(format!("namespace validation: {e}")))?;
    Ok(ns.to_string())
}

/// The lease named by the request, if any.
pub fn lease<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(LEASE_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Converts a `SystemTime` into a protobuf timestamp.
pub fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// Converts a protobuf timestamp into a `SystemTime` (the epoch when absent or invalid).
pub fn system_time(t: Option<&prost_types::Timestamp>) -> std::time::SystemTime {
    t.and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// The store context of a request: its namespace and lease.
pub fn ctx<T>(req: &Request<T>) -> Result<berth_store::Ctx, Status> {
    Ok(berth_store::Ctx {
        namespace: namespace(req)?,
        lease: lease(req),
    })
}

/// Parses a digest from the wire, naming the field on error.
pub fn digest(field: &str, s: &str) -> Result<berth_store::Digest, Status> {
    berth_store::Digest::parse(s).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Field-mask paths, or none.
pub fn paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

/// Labels from the wire into the store's ordered map.
pub fn labels(m: std::collections::HashMap<String, String>) -> berth_store::metadata::Labels {
    m.into_iter().collect()
}

/// Labels from the store onto the wire.
pub fn wire_labels(m: &berth_store::metadata::Labels) -> std::collections::HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
