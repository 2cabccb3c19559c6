//! Names on user-defined networks, served by aardvark-dns (podman's resolver, Rust, packaged
//! by Debian).
//!
//! One aardvark-dns process serves every network: its config directory holds a file per
//! network, named after it, whose first line is the address(es) to listen on (the bridge's
//! gateway) and whose other lines are `ID IPV4S IPV6S NAMES` (comma-separated lists). It
//! answers a client only with the names of networks the client's address is on, forwards
//! other names to the host's resolvers, re-reads its files on SIGHUP and exits when the last
//! file is gone. It daemonizes itself and keeps its pid in `<dir>/aardvark.pid`: it outlives
//! the daemon that started it, so running containers keep resolving names across a restart.
//!
//! Why not a resolver inside berthd: names would stop resolving whenever berthd is down (a
//! crash, an upgrade), and forwarding, caching and the DNS wire format are aardvark's tested
//! work.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where Debian and Fedora put aardvark-dns (it is not on PATH).
pub const AARDVARK_PATHS: &[&str] = &[
    "/usr/lib/podman/aardvark-dns",
    "/usr/libexec/podman/aardvark-dns",
    "/usr/local/lib/podman/aardvark-dns",
];

/// The resolver could not be configured or started; names the network or the binary.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// No aardvark-dns binary.
    #[error("aardvark-dns not found (looked at $BERTH_AARDVARK_DNS and {searched}); install Debian's aardvark-dns package")]
    NotFound {
        /// The paths searched.
        searched: String,
    },
    /// Writing a network's file.
    #[error("network {network:?}: writing the aardvark-dns config {path}: {source}")]
    Write {
        /// The network.
        network: String,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Starting or signalling the process.
    #[error("aardvark-dns {binary}: {reason}")]
    Process {
        /// The binary.
        binary: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// A container's names on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEntry {
    /// The container's id (aardvark's key).
    pub id: String,
    /// Its address on the network.
    pub ipv4: Ipv4Addr,
    /// The names it answers to (id, host name, aliases).
    pub names: Vec<String>,
}

/// The text of a network's config file.
pub fn config_text(listen: Ipv4Addr, entries: &[DnsEntry]) -> String {
    let mut out = format!("{listen}\n");
    for e in entries {
        let names: Vec<&str> = e
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| valid_name(n))
            .collect();
        if names.is_empty() {
            continue;
        }
        out.push_str(&format!("{} {}  {}\n", e.id, e.ipv4, names.join(",")));
    }
    out
}

/// A DNS name aardvark can hold: no separators of its file format, not empty.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The aardvark-dns serving berthd's networks.
#[derive(Debug, Clone)]
pub struct Aardvark {
    dir: PathBuf,
    port: u16,
}

impl Aardvark {
    /// A resolver whose files live in `dir`, listening on `port` (53 for containers).
    pub fn new(dir: &Path, port: u16) -> Aardvark {
        Aardvark {
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// The binary: `$BERTH_AARDVARK_DNS`, else the first of [`AARDVARK_PATHS`] that exists.
    pub fn binary() -> Result<PathBuf, DnsError> {
        if let Some(p) = std::env::var_os("BERTH_AARDVARK_DNS") {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Ok(p);
            }
            return Err(DnsError::NotFound {
                searched: p.display().to_string(),
            });
        }
        AARDVARK_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| DnsError::NotFound {
                searched: AARDVARK_PATHS.join(", "),
            })
    }

    /// The running process's pid, if its pid file names a live aardvark-dns for this dir.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("aardvark.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = words.first().is_some_and(|w| w.ends_with(b"aardvark-dns"))
            && words
                .windows(2)
                .any(|w| w[0] == b"--config" && w[1] == self.dir.as_os_str().as_encoded_bytes());
        // A zombie (exited, not yet reaped) has an empty cmdline: not running.
        ours.then_some(pid)
    }

    /// Writes network `network`'s file (temp file, then rename) and makes the resolver
    /// serve it: started if it is not running, told to re-read its files if it is. With no
    /// entries the file is removed instead (the process exits with its last file).
    pub fn update(
        &self,
        network: &str,
        listen: Ipv4Addr,
        entries: &[DnsEntry],
    ) -> Result<(), DnsError> {
        if entries.is_empty() {
            return self.remove(network);
        }
        let binary = Self::binary()?;
        let path = self.dir.join(network);
        let write_err = |source| DnsError::Write {
            network: network.to_string(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(write_err)?;
        let tmp = self.dir.join(format!(".{network}.tmp"));
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(config_text(listen, entries).as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(write_err)?;
        match self.pid() {
            Some(pid) => self.reload(&binary, pid),
            None => self.start(&binary),
        }
    }

    /// Removes network `network`'s file and tells the resolver (idempotent).
    pub fn remove(&self, network: &str) -> Result<(), DnsError> {
        match std::fs::remove_file(self.dir.join(network)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(DnsError::Write {
                    network: network.to_string(),
                    path: self.dir.join(network),
                    source,
                })
            }
        }
        if let Some(pid) = self.pid() {
            self.reload(Path::new("aardvark-dns"), pid)?;
        }
        Ok(())
    }

    fn reload(&self, binary: &Path, pid: i32) -> Result<(), DnsError> {
        kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| DnsError::Process {
            binary: binary.to_path_buf(),
            reason: format!("SIGHUP to pid {pid}: {e}"),
        })
    }

    /// Runs `aardvark-dns --config DIR -p PORT run`, which returns once its daemon listens.
    fn start(&self, binary: &Path) -> Result<(), DnsError> {
        let out = Command::new(binary)
            .arg("--config")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "run"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| DnsError::Process {
                binary: binary.to_path_buf(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(DnsError::Process {
                binary: binary.to_path_buf(),
                reason: format!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        tracing::info!(dir = %self.dir.display(), "started aardvark-dns");
        Ok(())
    }

    /// Stops the resolver (for tests and for removing every network).
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_listen_address_then_containers() {
        let text = config_text(
            Ipv4Addr::new(10, 5, 0, 1),
            &[
                DnsEntry {
                    id: "c1".into(),
                    ipv4: Ipv4Addr::new(10, 5, 0, 2),
                    names: vec!["c1".into(), "web".into(), "www.example".into()],
                },
                DnsEntry {
                    id: "c2".into(),
                    ipv4: Ipv4Addr::new(10, 5, 0, 3),
                    names: vec!["bad name".into(), "c2".into()],
                },
            ],
        );
        assert_eq!(
            text,
            "10.5.0.1\nc1 10.5.0.2  c1,web,www.example\nc2 10.5.0.3  c2\n"
        );
    }
}
