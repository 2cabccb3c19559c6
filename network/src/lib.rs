//! Container networking for berthd, with no knowledge of gRPC, HTTP or the daemon: a plain
//! synchronous API over Debian's CNI plugins (bridge, host-local; portmap for attachments
//! older berthds made), berth's own iptables rules per network and per published port, persistent network namespaces, subnets, published ports, the
//! files a container's resolver reads and the aardvark-dns that answers it.

pub mod cni;
pub mod config;
pub mod dns;
pub mod files;
pub mod firewall;
pub mod hostports;
pub mod netns;
pub mod ports;
pub mod subnet;
