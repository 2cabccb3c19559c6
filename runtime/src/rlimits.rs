//! process.rlimits through setrlimit(2). Raising a hard limit above the current one needs
//! CAP_SYS_RESOURCE: without it the error says so, it is not hidden.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

/// The resource number of an rlimit type.
pub fn resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    (match typ {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}

/// The config's name of an rlimit (`RLIMIT_NOFILE`).
pub fn name(typ: PosixRlimitType) -> String {
    serde_json::to_value(typ)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{typ:?}"))
}

/// Set every rlimit; the first failure names the limit and the values.
pub fn apply(limits: &[PosixRlimit]) -> Result<(), String> {
    for l in limits {
        if l.soft() > l.hard() {
            return Err(format!(
                "rlimit {}: soft limit {} is above hard limit {}",
                name(l.typ()),
                l.soft(),
                l.hard()
            ));
        }
        let rl = libc::rlimit {
            rlim_cur: l.soft(),
            rlim_max: l.hard(),
        };
        if unsafe { libc::setrlimit(resource(l.typ()), &rl) } != 0 {
            return Err(format!(
                "setting rlimit {} to soft={} hard={}: {}",
                name(l.typ()),
                l.soft(),
                l.hard(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_config_names() {
        assert_eq!(name(PosixRlimitType::RlimitNofile), "RLIMIT_NOFILE");
        assert_eq!(
            resource(PosixRlimitType::RlimitNofile),
            libc::RLIMIT_NOFILE as libc::__rlimit_resource_t
        );
    }
}
