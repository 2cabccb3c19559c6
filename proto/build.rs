//! Compiles protos/ into Rust with protox (no protoc needed) and tonic-prost-build.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "containerd/types/descriptor.proto",
    "containerd/types/mount.proto",
    "containerd/types/platform.proto",
    "containerd/types/metrics.proto",
    "containerd/types/task/task.proto",
    "containerd/events/events.proto",
    "google/rpc/status.proto",
    "containerd/services/version/v1/version.proto",
    "containerd/services/namespaces/v1/namespace.proto",
    "containerd/services/content/v1/content.proto",
    "containerd/services/images/v1/images.proto",
    "containerd/services/leases/v1/leases.proto",
    "containerd/services/snapshots/v1/snapshots.proto",
    "containerd/services/diff/v1/diff.proto",
    "containerd/services/introspection/v1/introspection.proto",
    "containerd/services/containers/v1/containers.proto",
    "containerd/services/tasks/v1/tasks.proto",
    "containerd/services/events/v1/events.proto",
    "berth/services/images/v1/archive.proto",
    "berth/services/distribution/v1/distribution.proto",
    "berth/services/networks/v1/networks.proto",
    "berth/services/volumes/v1/volumes.proto",
    "berth/services/check/v1/check.proto",
    "berth/services/builds/v1/builds.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("protos");
    for f in FILES {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(FILES, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
