//! The init's code: `berth-init [--] COMMAND [ARG...]`.
//!
//! It blocks every signal, starts the command as its child with an empty mask (std's
//! posix_spawn path would pass the full mask on), then loops: reap every exited process (as PID 1 it
//! inherits the container's orphans), and wait up to a second for a signal, which it sends on
//! to the child (SIGCHLD only wakes the reaping). When the child is reaped it exits with the
//! child's code, or 128+N when signal N killed it, as tini does; the kernel then ends the rest
//! of the pid namespace.
//!
//! std only, no crates: build.rs compiles this file alone with rustc. The few libc calls std
//! does not wrap are declared here, with glibc's Linux layouts.

use std::ffi::OsString;
use std::os::raw::{c_int, c_long};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// glibc's sigset_t: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

/// siginfo_t: 128 bytes, the signal number first.
#[repr(C)]
struct SigInfo {
    signo: c_int,
    rest: [c_int; 31],
}

#[repr(C)]
struct Timespec {
    sec: c_long,
    nsec: c_long,
}

extern "C" {
    fn sigfillset(set: *mut SigSet) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigtimedwait(set: *const SigSet, info: *mut SigInfo, timeout: *const Timespec) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn getpid() -> c_int;
    fn prctl(option: c_int, arg2: std::os::raw::c_ulong, ...) -> c_int;
}

const SIG_BLOCK: c_int = 0;
const SIG_SETMASK: c_int = 2;
const SIGCHLD: c_int = 17;
const WNOHANG: c_int = 1;
const PR_SET_CHILD_SUBREAPER: c_int = 36;

/// What an exit status says as an exit code: the code, or 128+N for signal N.
pub fn exit_code(status: c_int) -> i32 {
    let sig = status & 0x7f;
    if sig == 0 {
        (status >> 8) & 0xff
    } else {
        128 + sig
    }
}

/// The command in `berth-init [--] COMMAND [ARG...]`.
pub fn command(args: &[OsString]) -> Option<&[OsString]> {
    let args = match args.first() {
        Some(a) if a == "--" => &args[1..],
        _ => args,
    };
    (!args.is_empty()).then_some(args)
}

/// Runs the init; returns its exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let Some(cmd) = command(&args) else {
        eprintln!("berth-init: no command given (usage: berth-init [--] COMMAND [ARG...])");
        return 2;
    };
    let mut set = SigSet([0; 16]);
    // SAFETY: plain libc calls on a sigset_t-sized buffer we own.
    let blocked = unsafe {
        sigfillset(&mut set) == 0 && sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()) == 0
    };
    if !blocked {
        eprintln!(
            "berth-init: blocking signals: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    // SAFETY: getpid and prctl take no pointers.
    unsafe {
        if getpid() != 1 {
            // Not PID 1 (a shared pid namespace): orphans still come to us.
            prctl(PR_SET_CHILD_SUBREAPER, 1);
        }
    }
    let mut command = Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    // SAFETY: between fork and exec the closure only calls sigprocmask, async-signal-safe,
    // on a set on its own stack.
    unsafe {
        command.pre_exec(|| {
            let empty = SigSet([0; 16]);
            if sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(c) => c.id() as c_int,
        Err(e) => {
            eprintln!("berth-init: cannot run {:?}: {e}", cmd[0]);
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    loop {
        loop {
            let mut status: c_int = 0;
            // SAFETY: status is ours to write.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                return exit_code(status);
            }
        }
        let mut info = SigInfo {
            signo: 0,
            rest: [0; 31],
        };
        let timeout = Timespec { sec: 1, nsec: 0 };
        // SAFETY: the set, info and timeout are ours and of the kernel's sizes.
        let sig = unsafe { sigtimedwait(&set, &mut info, &timeout) };
        if sig > 0 && sig != SIGCHLD {
            // SAFETY: kill takes no pointers; the child is not reaped yet, so its pid is its.
            unsafe {
                kill(child, sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_exit_codes() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(15), 143);
        assert_eq!(exit_code(9 | 0x80), 137); // killed, core dumped
    }

    #[test]
    fn the_command_follows_an_optional_double_dash() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(command(&a(&["--", "ps", "x"])), Some(&a(&["ps", "x"])[..]));
        assert_eq!(command(&a(&["ps"])), Some(&a(&["ps"])[..]));
        assert_eq!(command(&a(&["--"])), None);
        assert_eq!(command(&[]), None);
    }
}
