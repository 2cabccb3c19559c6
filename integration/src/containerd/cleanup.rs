//! Finding what a containerd left behind: its shims (by the `-address` on their command line) and
//! their sockets under `/run/containerd/s`.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest as _, Sha256};

use crate::runtime::kernel;

/// Where containerd 1.6 puts shim sockets, whatever its config says.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// A running `containerd-shim-*` process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shim {
    /// Its pid.
    pub pid: i32,
    /// Its start time (field 22 of /proc/<pid>/stat), to never signal a recycled pid.
    pub started: Option<u64>,
    /// `-namespace`.
    pub namespace: String,
    /// `-id`.
    pub id: String,
    /// `-address`: the containerd socket it reports to.
    pub address: String,
}

/// The shim socket containerd 1.6 uses for container `id` in `ns` of the containerd listening
/// on `address`: `/run/containerd/s/<hex sha256 of "address/ns/id">`.
pub fn shim_socket(address: &Path, ns: &str, id: &str) -> PathBuf {
    let key = address.join(ns).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SHIM_SOCKET_DIR).join(hex)
}

/// Parses a shim's NUL-separated command line; None unless it is a containerd shim.
pub fn parse_shim_cmdline(pid: i32, raw: &[u8]) -> Option<Shim> {
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let prog = args.first()?;
    if !Path::new(prog)
        .file_name()?
        .to_string_lossy()
        .starts_with("containerd-shim")
    {
        return None;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag || a.strip_prefix('-') == Some(flag))
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Some(Shim {
        pid,
        started: None,
        namespace: value("-namespace")?,
        id: value("-id")?,
        address: value("-address")?.trim_start_matches("unix://").to_string(),
    })
}

/// Every running shim reporting to the containerd at `address`.
pub fn shims_for(address: &Path) -> Vec<Shim> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = address.to_string_lossy();
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let mut shim = parse_shim_cmdline(pid, &raw)?;
            shim.started = kernel::start_time(pid);
            (shim.address == want).then_some(shim)
        })
        .collect()
}

/// SIGKILLs a shim if it is still the same process.
pub fn kill_shim(shim: &Shim) {
    if kernel::alive(shim.pid) && kernel::start_time(shim.pid) == shim.started {
        let _ = kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_runc_v2_shim() {
        let raw = b"/usr/bin/containerd-shim-runc-v2\0-namespace\0ns1\0-id\0c1\0-address\0/var/tmp/x/containerd.sock\0-debug\0";
        let shim = parse_shim_cmdline(42, raw).unwrap();
        assert_eq!(shim.namespace, "ns1");
        assert_eq!(shim.id, "c1");
        assert_eq!(shim.address, "/var/tmp/x/containerd.sock");
    }

    #[test]
    fn ignores_other_processes() {
        assert_eq!(parse_shim_cmdline(1, b"/bin/sleep\0-id\0x\0"), None);
        assert_eq!(
            parse_shim_cmdline(1, b"containerd-shim-runc-v2\0-id\0x\0"),
            None
        );
    }

    #[test]
    fn socket_name_is_sha256_of_address_ns_id() {
        // Checked against a shim started by containerd 1.6.20 on this host kind:
        // echo -n /var/tmp/ctrd-explore/c.sock/expl/t7 | sha256sum
        let p = shim_socket(Path::new("/var/tmp/ctrd-explore/c.sock"), "expl", "t7");
        assert_eq!(
            p,
            Path::new(
                "/run/containerd/s/00d11eb6476be530c5311ebfc9353ec5ba022ebdb0105ff0c3872338aa413d66"
            )
        );
    }
}
