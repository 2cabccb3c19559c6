//! Container networking for berthd, with no knowledge of gRPC, HTTP or the daemon: a plain
//! synchronous API over Debian's CNI plugins (bridge, host-local, portmap, firewall),
//! persistent network namespaces, subnets, published ports and the files a container's
//! resolver reads.

pub mod cni;
pub mod config;
pub mod files;
pub mod isolation;
pub mod netns;
pub mod ports;
pub mod subnet;
