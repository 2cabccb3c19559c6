//! The five capability sets of process.capabilities. The bounding set is reduced first (that
//! needs CAP_SETPCAP, so before the uid changes); then, after setuid with keep-caps, one capset()
//! sets effective, permitted and inheritable together; ambient is raised last.

use std::str::FromStr;

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

/// A capability set as a bit mask (bit n = capability number n).
pub fn mask(set: Option<&Capabilities>) -> Result<u64, String> {
    let mut m = 0u64;
    for cap in set.into_iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let c = caps::Capability::from_str(&name)
            .map_err(|_| format!("unknown capability {name:?}"))?;
        m |= c.bitmask();
    }
    Ok(m)
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The masks of the five sets, computed before anything changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapMasks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapMasks {
    /// From config.json's process.capabilities (absent sets are empty).
    pub fn from_config(caps: &LinuxCapabilities) -> Result<CapMasks, String> {
        Ok(CapMasks {
            bounding: mask(caps.bounding().as_ref())?,
            effective: mask(caps.effective().as_ref())?,
            permitted: mask(caps.permitted().as_ref())?,
            inheritable: mask(caps.inheritable().as_ref())?,
            ambient: mask(caps.ambient().as_ref())?,
        })
    }
}

/// Drop every capability outside `bounding` from the bounding set.
pub fn drop_bounding(bounding: u64) -> Result<(), String> {
    for n in 0..=last_cap().min(63) {
        if bounding & (1u64 << n) == 0 {
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(format!(
                        "dropping capability {n} from the bounding set: {err}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Set effective, permitted and inheritable in one capset().
pub fn set_process_caps(m: &CapMasks) -> Result<(), String> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: m.effective as u32,
            permitted: m.permitted as u32,
            inheritable: m.inheritable as u32,
        },
        CapData {
            effective: (m.effective >> 32) as u32,
            permitted: (m.permitted >> 32) as u32,
            inheritable: (m.inheritable >> 32) as u32,
        },
    ];
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "setting capabilities (effective {:#x}, permitted {:#x}, inheritable {:#x}): {}",
            m.effective,
            m.permitted,
            m.inheritable,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Raise the ambient set. The kernel only allows what is both permitted and inheritable; like
/// runc, a capability it refuses is skipped (logged at debug level) rather than failing the
/// container: runc's own default spec lists ambient capabilities that are not inheritable.
pub fn set_ambient(ambient: u64) -> Result<(), String> {
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    for n in 0..=last_cap().min(63) {
        if ambient & (1u64 << n) != 0 {
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    n as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc != 0 {
                tracing::debug!(
                    "cannot raise ambient capability {n}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_from_names() {
        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_KILL"]}"#,
        )
        .unwrap();
        let m = CapMasks::from_config(&caps).unwrap();
        assert_eq!(m.bounding, (1 << 0) | (1 << 5));
        assert_eq!(m.effective, 1 << 5);
        assert_eq!(m.ambient, 0);
    }
}
