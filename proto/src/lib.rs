//! Berth's gRPC API.
//!
//! The `containerd` modules are wire-compatible with containerd 1.6's v1 services (same package,
//! service, method, message and field names and numbers), so containerd's clients such as `ctr`
//! talk to `berthd` unchanged. The `berth` module holds Berth's own extensions.

#![allow(
    missing_docs,
    clippy::large_enum_variant,
    clippy::doc_lazy_continuation
)]

/// containerd's v1 API.
pub mod containerd {
    /// Types shared by the services: descriptors, mounts, platforms.
    pub mod types {
        tonic::include_proto!("containerd.types");
    }
    /// `containerd.v1.types`: task process states.
    pub mod v1 {
        /// Process status and info.
        pub mod types {
            tonic::include_proto!("containerd.v1.types");
        }
    }
    /// `containerd.events`: the payloads of the daemon's events.
    pub mod events {
        tonic::include_proto!("containerd.events");
    }
    /// The services, one module each.
    pub mod services {
        macro_rules! service {
            ($name:ident, $pkg:literal) => {
                #[doc = concat!("`", $pkg, "`")]
                pub mod $name {
                    /// Version 1.
                    pub mod v1 {
                        tonic::include_proto!($pkg);
                    }
                }
            };
        }
        service!(version, "containerd.services.version.v1");
        service!(namespaces, "containerd.services.namespaces.v1");
        service!(content, "containerd.services.content.v1");
        service!(images, "containerd.services.images.v1");
        service!(leases, "containerd.services.leases.v1");
        service!(snapshots, "containerd.services.snapshots.v1");
        service!(diff, "containerd.services.diff.v1");
        service!(introspection, "containerd.services.introspection.v1");
        service!(containers, "containerd.services.containers.v1");
        service!(tasks, "containerd.services.tasks.v1");
        service!(events, "containerd.services.events.v1");
    }
}

/// `google.rpc` messages.
pub mod google {
    /// gRPC status.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Berth's own services.
pub mod berth {
    /// Services.
    pub mod services {
        /// Images.
        pub mod images {
            /// Version 1: archive import/export and unpack done by the daemon.
            pub mod v1 {
                tonic::include_proto!("berth.services.images.v1");
            }
        }
        /// Distribution.
        pub mod distribution {
            /// Version 1: pull from and push to registries, done by the daemon.
            pub mod v1 {
                tonic::include_proto!("berth.services.distribution.v1");
            }
        }
        /// Networks.
        pub mod networks {
            /// Version 1: bridge networks on the CNI plugins.
            pub mod v1 {
                tonic::include_proto!("berth.services.networks.v1");
            }
        }
        /// Volumes.
        pub mod volumes {
            /// Version 1: named volumes of a namespace.
            pub mod v1 {
                tonic::include_proto!("berth.services.volumes.v1");
            }
        }
        /// Check.
        pub mod check {
            /// Version 1: verify (and repair) the daemon's stores and state.
            pub mod v1 {
                tonic::include_proto!("berth.services.check.v1");
            }
        }
        /// Builds.
        pub mod builds {
            /// Version 1: Dockerfile builds done by the daemon.
            pub mod v1 {
                tonic::include_proto!("berth.services.builds.v1");
            }
        }
    }
}

pub use prost;
pub use prost_types;
pub use tonic;
