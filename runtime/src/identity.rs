//! Becoming the configured process, the same way for the init and for `exec`: rlimits and the
//! newer scheduling fields, seccomp (early when no_new_privs is off), the bounding set, groups,
//! gid and uid with keep-caps, the other capability sets, cwd (checked to be inside the root),
//! umask and no_new_privs. What is left after [`become_process`] is the late seccomp load and
//! execve.

use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::Process;

use crate::capabilities::{self, CapMasks};
use crate::seccomp::Filter;
use crate::{rlimits, sched, sys};

/// The process's environment with HOME added as runc adds it: when `env` has no HOME, the
/// home directory of `uid` in the container's `/etc/passwd` (read after pivot_root, so the
/// container's own), or `/` when it lists no such uid or cannot be read. Software run by
/// containerd and Kubernetes relies on it (`~` in scripts, tools that write a config there).
pub fn with_home(mut env: Vec<String>, uid: u32) -> Vec<String> {
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return env;
    }
    let passwd = read_passwd();
    let home = passwd
        .as_deref()
        .and_then(|p| home_of(p, uid))
        .filter(|h| !h.is_empty())
        .unwrap_or("/");
    env.push(format!("HOME={home}"));
    env
}

/// The biggest /etc/passwd read (a larger one is not looked at: `/` is used).
const PASSWD_MAX: u64 = 4 << 20;

/// Reads `/etc/passwd` when it is a regular file of sane size: a FIFO or device put there by
/// an image must not block or flood the init (opened non-blocking, checked with fstat).
fn read_passwd() -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open("/etc/passwd")
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > PASSWD_MAX {
        return None;
    }
    let mut text = String::new();
    f.take(PASSWD_MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The home directory of the first passwd entry (`name:pw:uid:gid:gecos:home:shell`) with
/// this uid.
pub fn home_of(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5])
    })
}

/// Keep (or stop keeping) capabilities across the uid change.
pub fn set_keepcaps(on: bool) -> Result<(), String> {
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "PR_SET_KEEPCAPS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Where a NOTIFY filter's listener fd goes: the agent's socket (connected before pivot_root)
/// and the message body (the runtime-spec container process state).
pub type NotifyTarget<'a> = Option<(&'a std::os::unix::net::UnixStream, &'a [u8])>;

/// Load a compiled filter; a NOTIFY listener fd is handed to the agent, then closed here.
pub fn load_seccomp(filter: &Filter, notify: NotifyTarget<'_>) -> Result<(), String> {
    let listener = filter.load()?;
    if let Some(fd) = listener {
        let (sock, body) = notify
            .ok_or("the seccomp profile uses SCMP_ACT_NOTIFY but there is no agent socket")?;
        crate::seccomp::send_listener_on(sock, std::os::fd::AsFd::as_fd(&fd), body)
            .map_err(|e| format!("seccomp listenerPath: sending {e}"))?;
    }
    Ok(())
}

/// Apply everything of `process` but the last seccomp load and execve. `in_userns`: the process
/// is in a user namespace (setgroups may be denied there). Returns whether no_new_privs is set,
/// in which case the caller loads `filter` right before execve.
pub fn become_process(
    process: &Process,
    in_userns: bool,
    filter: Option<&Filter>,
    notify: NotifyTarget<'_>,
) -> Result<bool, String> {
    if let Some(limits) = process.rlimits() {
        rlimits::apply(limits)?;
    }
    sched::apply_process(process)?;
    let user = process.user();
    let masks = match process.capabilities() {
        Some(c) => Some(CapMasks::from_config(c)?),
        None => None,
    };
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    if let (Some(filter), false) = (filter, no_new_privs) {
        // Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a filter: load it while
        // we still have it; the syscalls left before execve must then pass the filter.
        load_seccomp(filter, notify)?;
    }
    if let Some(m) = &masks {
        capabilities::drop_bounding(m.bounding)?;
    }
    set_keepcaps(true)?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    // setgroups is refused in a user namespace whose setgroups is "deny"; only call it there
    // when there is something to set.
    if !groups.is_empty() || !in_userns {
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {groups:?}: {e}"))?;
    }
    let gid = Gid::from_raw(user.gid());
    let uid = Uid::from_raw(user.uid());
    setresgid(gid, gid, gid).map_err(|e| format!("setting gid {gid}: {e}"))?;
    setresuid(uid, uid, uid).map_err(|e| format!("setting uid {uid}: {e}"))?;
    set_keepcaps(false)?;
    if let Some(m) = &masks {
        capabilities::set_process_caps(m)?;
        capabilities::set_ambient(m.ambient)?;
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|e| format!("chdir to cwd {}: {e}", cwd.display()))?;
    sys::check_cwd_inside_root().map_err(|e| format!("process.cwd {}: {e}", cwd.display()))?;
    if let Some(mask) = user.umask() {
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    if no_new_privs {
        prctl::set_no_new_privileges(true)
            .map_err(|e| format!("setting no_new_privs: errno {e}"))?;
    }
    Ok(no_new_privs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_of_finds_the_first_entry_of_the_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                      # a comment\n\
                      short:x:5\n\
                      app:x:1000:1000::/home/app:/bin/sh\n\
                      again:x:1000:1000::/elsewhere:/bin/sh\n";
        assert_eq!(home_of(passwd, 0), Some("/root"));
        assert_eq!(home_of(passwd, 1000), Some("/home/app"));
        assert_eq!(home_of(passwd, 5), None);
        assert_eq!(home_of(passwd, 42), None);
        assert_eq!(home_of("", 0), None);
    }

    #[test]
    fn a_configured_home_is_kept() {
        let env = vec!["PATH=/bin".to_string(), "HOME=/here".to_string()];
        assert_eq!(with_home(env.clone(), 0), env);
    }
}
