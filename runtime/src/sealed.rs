//! CVE-2019-5736 for containers granted CAP_SYS_PTRACE.
//!
//! The runtime's first guard is one prctl: it makes itself non-dumpable before clone/fork, so a
//! process in the container may not open `/proc/PID/exe` of the init (before it execs the
//! container's program) or of an exec'd process (before its execve). The kernel lifts that
//! check for a caller with CAP_SYS_PTRACE in the user namespace that owns the runtime's memory,
//! the host's: a container that shares the host's user namespace and is granted CAP_SYS_PTRACE
//! could still reach the binary through `/proc/PID/exe`, hold the fd until the runtime is gone,
//! and write it.
//!
//! For such containers only, the runtime runs from a sealed copy of itself: it copies
//! `/proc/self/exe` into a memfd, seals it against writes, and re-executes from it with the same
//! arguments, so `/proc/PID/exe` is the sealed copy and never the file on disk. Every other
//! container keeps the free path (no copy on every start, unlike runc's fix).

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use oci_spec::runtime::{Capability, Process};

/// Set in the environment of a runtime that already runs from its sealed copy.
const SEALED_ENV: &str = "_BERTH_RUNC_SEALED";
/// `exec --process -` read standard input before the re-exec: the text travels here.
const PROCESS_ENV: &str = "_BERTH_RUNC_STDIN_PROCESS";

/// Whether `process` holds CAP_SYS_PTRACE in any set.
pub fn has_ptrace(process: &Process) -> bool {
    let Some(c) = process.capabilities() else {
        return false;
    };
    [
        c.bounding(),
        c.effective(),
        c.permitted(),
        c.inheritable(),
        c.ambient(),
    ]
    .iter()
    .any(|set| {
        set.as_ref()
            .is_some_and(|s| s.contains(&Capability::SysPtrace))
    })
}

/// Keep the runtime's private variables out of a child's environment (hooks that inherit it).
pub fn scrub(cmd: &mut std::process::Command) {
    cmd.env_remove(SEALED_ENV).env_remove(PROCESS_ENV);
}

/// Whether this runtime process already runs from a sealed copy.
pub fn is_sealed() -> bool {
    std::env::var_os(SEALED_ENV).is_some()
}

/// The process JSON that `exec --process -` gets: what the pre-re-exec runtime read from
/// standard input, or standard input itself.
pub fn stdin_process() -> std::io::Result<Vec<u8>> {
    if is_sealed() {
        if let Some(text) = std::env::var_os(PROCESS_ENV) {
            return Ok(text.as_bytes().to_vec());
        }
    }
    let mut s = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)?;
    Ok(s)
}

/// Re-execute from a sealed memfd copy of the runtime unless already there. `stdin_process`
/// is the `exec --process -` text already read. Returns only when already sealed.
pub fn ensure_sealed(stdin_process: Option<&[u8]>) -> Result<(), String> {
    if is_sealed() {
        return Ok(());
    }
    let err = reexec(stdin_process).unwrap_err();
    Err(format!(
        "re-executing from a sealed copy of the runtime: {err}"
    ))
}

fn reexec(stdin_process: Option<&[u8]>) -> Result<Infallible, String> {
    let fd = memfd()?;
    let mut src = File::open("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let mut dst = File::from(fd.try_clone().map_err(|e| format!("dup: {e}"))?);
    std::io::copy(&mut src, &mut dst).map_err(|e| format!("copying the binary: {e}"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    drop(dst);
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(format!("sealing: {}", std::io::Error::last_os_error()));
    }
    let cstr =
        |b: &[u8]| CString::new(b).map_err(|_| "an argument contains a NUL byte".to_string());
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != SEALED_ENV && k != PROCESS_ENV)
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()?;
    envp.push(cstr(format!("{SEALED_ENV}=1").as_bytes())?);
    if let Some(text) = stdin_process {
        envp.push(cstr(&[PROCESS_ENV.as_bytes(), b"=", text].concat())?);
    }
    tracing::debug!("the container may hold CAP_SYS_PTRACE: re-executing from a sealed copy");
    let e = nix::unistd::fexecve(&fd, &argv, &envp).unwrap_err();
    Err(format!("fexecve: {e}"))
}

fn memfd() -> Result<OwnedFd, String> {
    let fd = unsafe {
        libc::memfd_create(
            c"berth-runc".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
