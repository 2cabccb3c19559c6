//! seccomp: an OCI `linux.seccomp` profile compiled with libseccomp into a classic BPF program,
//! cached on disk by content ([`compile_cached`]), and loaded with the raw `seccomp(2)` syscall.
//!
//! libseccomp only builds the program (and is only needed when the cache misses); loading never
//! goes through it, so the cached and the freshly compiled filter take the same path into the
//! kernel. libseccomp's own no_new_privs handling is thereby out of the picture: setting
//! no_new_privs (or keeping CAP_SYS_ADMIN until the filter is loaded) is the caller's job.
//!
//! Behaviour kept from runc:
//! - a syscall name that libseccomp does not know at all is skipped with a warning, not an error
//!   (profiles list syscalls of newer kernels and other architectures). Names that exist on some
//!   architecture but not on the native one are known to libseccomp (as pseudo-syscalls) and are
//!   added for the architectures that have them;
//! - a rule whose action equals the default action is skipped (libseccomp refuses it);
//! - several conditions on the same argument index are ORed: each becomes its own rule;
//! - `SCMP_ACT_KILL` is `SCMP_ACT_KILL_THREAD`; ERRNO and TRACE without `errnoRet` use EPERM;
//! - `SCMP_ACT_NOTIFY` cannot be the default action nor apply to `write` (nor, here, to
//!   `sendmsg`, which the init uses to hand the listener fd to the runtime);
//! - with more than 32 syscall names libseccomp's binary-tree optimisation is enabled (a larger
//!   program, log-time lookup for every syscall the container makes).
//!
//! Stricter than runc (runc silently truncates or ignores these): `errnoRet` on an action other
//! than ERRNO/TRACE, an errno above 4095 (the kernel's MAX_ERRNO) or a TRACE value above 65535,
//! an argument index above 5, and `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` without any NOTIFY
//! rule (the kernel would refuse the flag) are errors. Unknown action, operator, architecture and
//! flag strings are already rejected when config.json is parsed (oci-spec's enums).

mod cache;
mod notify;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde_json::{json, Value};

pub use cache::compile_cached;
pub use notify::{process_state, send_listener, send_listener_on};

/// The kernel's limit on instructions in one classic BPF program (BPF_MAXINSNS).
const BPF_MAXINSNS: usize = 4096;
/// The kernel's largest errno (MAX_ERRNO); a larger SECCOMP_RET_ERRNO value is clamped.
const MAX_ERRNO: u32 = 4095;
/// Syscalls take at most six arguments.
const MAX_ARGS: usize = 6;
/// Above this many syscall names libseccomp's binary-tree optimisation pays off (and libseccomp
/// <= 2.5.4 misbehaves with it on an empty rule set).
const OPTIMIZE_ABOVE_RULES: usize = 32;
/// Syscalls that may not be answered by a notify agent: the init needs them to hand the listener
/// fd to the runtime (sendmsg) and to report errors (write) before any agent has the fd.
const NO_NOTIFY_SYSCALLS: &[&str] = &["write", "sendmsg"];

/// A compiled filter, ready to load: the classic BPF program plus the `seccomp(2)` flags.
///
/// Compile in the parent (or early in the child, before pivot_root, so the cache directory is
/// reachable); load as the very last step before execve, after capabilities and no_new_privs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// One `struct sock_filter` per element, in native byte order (8 bytes each).
    insns: Vec<u64>,
    /// SECCOMP_FILTER_FLAG_* from the profile's `flags` (without NEW_LISTENER).
    flags: u32,
    /// Whether the profile has a SCMP_ACT_NOTIFY rule: load asks for a listener fd.
    notify: bool,
    /// Whether the program came from the on-disk cache.
    from_cache: bool,
}

impl Filter {
    /// Build from exported BPF bytes (a whole number of 8-byte instructions).
    fn from_bpf(
        bytes: &[u8],
        flags: u32,
        notify: bool,
        from_cache: bool,
    ) -> Result<Filter, String> {
        if bytes.is_empty() || bytes.len() % 8 != 0 {
            return Err(format!(
                "a seccomp BPF program of {} bytes is not a whole number of instructions",
                bytes.len()
            ));
        }
        let insns: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if insns.len() > BPF_MAXINSNS {
            return Err(format!(
                "the seccomp filter needs {} BPF instructions, more than the kernel's limit of \
                 {BPF_MAXINSNS}; split or shorten the profile",
                insns.len()
            ));
        }
        Ok(Filter {
            insns,
            flags,
            notify,
            from_cache,
        })
    }

    /// The BPF program as bytes (what `seccomp_export_bpf` wrote).
    pub fn bpf(&self) -> Vec<u8> {
        self.insns.iter().flat_map(|i| i.to_ne_bytes()).collect()
    }

    /// The number of BPF instructions.
    pub fn instructions(&self) -> usize {
        self.insns.len()
    }

    /// The SECCOMP_FILTER_FLAG_* bits passed to `seccomp(2)` (NEW_LISTENER is added by
    /// [`Filter::load`] when [`Filter::uses_notify`]).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Whether loading returns a notify listener fd.
    pub fn uses_notify(&self) -> bool {
        self.notify
    }

    /// Whether the program was read from the cache rather than compiled.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Load the filter into the calling thread (every thread with SECCOMP_FILTER_FLAG_TSYNC).
    ///
    /// Returns the notify listener fd when the profile has a SCMP_ACT_NOTIFY rule. The process
    /// needs no_new_privs or CAP_SYS_ADMIN in its user namespace. Allocation-free on success,
    /// so it is safe right before execve in a forked child.
    pub fn load(&self) -> Result<Option<OwnedFd>, String> {
        let mut flags = self.flags as libc::c_ulong;
        if self.notify {
            flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
            if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
                // TSYNC reports failure as a thread id, which collides with the listener fd.
                flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            }
        }
        let prog = libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points at `len` valid 8-byte sock_filter instructions (u64 storage is
        // suitably aligned) that outlive the call; the kernel copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(load_error(std::io::Error::last_os_error(), flags));
        }
        if self.notify {
            // SAFETY: with NEW_LISTENER the kernel returns a new fd that we now own.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as i32) }));
        }
        if rc > 0 {
            return Err(format!(
                "loading the seccomp filter with SECCOMP_FILTER_FLAG_TSYNC: thread {rc} could \
                 not be synchronized"
            ));
        }
        Ok(None)
    }
}

fn load_error(err: std::io::Error, flags: libc::c_ulong) -> String {
    match err.raw_os_error() {
        Some(libc::EACCES) => {
            let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1;
            format!(
                "loading the seccomp filter: permission denied: the process has no_new_privs {} \
                 and lacks CAP_SYS_ADMIN; set process.noNewPrivileges or load the filter before \
                 capabilities are dropped",
                if nnp { "set" } else { "unset" }
            )
        }
        Some(libc::EINVAL) => format!(
            "loading the seccomp filter: the kernel refused it (EINVAL); flags {flags:#x} may not \
             be supported by this kernel"
        ),
        Some(libc::EBUSY) => "loading the seccomp filter: another filter of this process already \
                              has a notify listener (EBUSY)"
            .to_string(),
        Some(libc::ESRCH) => "loading the seccomp filter with SECCOMP_FILTER_FLAG_TSYNC: another \
                              thread could not be synchronized (ESRCH)"
            .to_string(),
        Some(libc::ENOMEM) => "loading the seccomp filter: the process's filters together \
                               exceed the kernel's limit of 32768 instructions (ENOMEM)"
            .to_string(),
        _ => format!("loading the seccomp filter: {err}"),
    }
}

/// Compile an OCI `LinuxSeccomp` profile with libseccomp.
///
/// See the module documentation for what is skipped with a warning and what is an error.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter, String> {
    let flags = kernel_flags(seccomp)?;
    let notify = uses_notify(seccomp);
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())
        .map_err(|e| format!("seccomp defaultAction: {e}"))?;
    if default == ScmpAction::Notify {
        return Err(
            "seccomp defaultAction cannot be SCMP_ACT_NOTIFY: the init could not hand \
                    the listener to the runtime"
                .to_string(),
        );
    }
    let mut ctx =
        ScmpFilterContext::new(default).map_err(|e| format!("creating the seccomp filter: {e}"))?;
    for arch in seccomp.architectures().as_deref().unwrap_or(&[]) {
        let name = arch_name(arch);
        let scmp = ScmpArch::from_str(&name)
            .map_err(|_| format!("seccomp architecture {name} is not known to libseccomp"))?;
        ctx.add_arch(scmp).map_err(|e| {
            format!(
                "seccomp architecture {name} is not supported by libseccomp {}: {e}",
                libseccomp_version()
            )
        })?;
    }
    let rules = seccomp.syscalls().as_deref().unwrap_or(&[]);
    let rule_count: usize = rules.iter().map(|r| r.names().len()).sum();
    if rule_count > OPTIMIZE_ABOVE_RULES {
        if let Err(e) = ctx.set_ctl_optimize(2) {
            tracing::debug!("seccomp binary tree optimisation unavailable: {e}");
        }
    }
    for (i, rule) in rules.iter().enumerate() {
        add_rule(&mut ctx, default, rule).map_err(|e| format!("seccomp syscalls[{i}]: {e}"))?;
    }
    let bpf = export(&ctx)?;
    Filter::from_bpf(&bpf, flags, notify, false)
}

/// Add one `syscalls[]` entry: one libseccomp rule per known name (per condition when several
/// conditions share an argument index).
fn add_rule(
    ctx: &mut ScmpFilterContext,
    default: ScmpAction,
    rule: &LinuxSyscall,
) -> Result<(), String> {
    let names = rule.names();
    let act = action(rule.action(), rule.errno_ret()).map_err(|e| format!("{names:?}: {e}"))?;
    if act == ScmpAction::Notify {
        if let Some(n) = names
            .iter()
            .find(|n| NO_NOTIFY_SYSCALLS.contains(&n.as_str()))
        {
            return Err(format!(
                "SCMP_ACT_NOTIFY cannot be used for {n:?}: the init needs it to hand the \
                 listener fd to the runtime"
            ));
        }
    }
    let args = rule.args().as_deref().unwrap_or(&[]);
    let (conds, shared_index) = conditions(args).map_err(|e| format!("{names:?}: {e}"))?;
    if let Some(n) = names.iter().find(|n| n.is_empty()) {
        return Err(format!("{n:?} is not a syscall name (empty)"));
    }
    if act == default {
        tracing::debug!(?names, "seccomp rule with the default action skipped");
        return Ok(());
    }
    for name in names {
        let syscall = match ScmpSyscall::from_name(name) {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!(
                    syscall = %name,
                    "seccomp: syscall {name:?} is unknown to libseccomp {}; rule skipped",
                    libseccomp_version()
                );
                continue;
            }
        };
        let added = if conds.is_empty() {
            ctx.add_rule(act, syscall).map(|_| ())
        } else if shared_index {
            conds
                .iter()
                .try_for_each(|c| ctx.add_rule_conditional(act, syscall, &[*c]).map(|_| ()))
        } else {
            ctx.add_rule_conditional(act, syscall, &conds).map(|_| ())
        };
        added.map_err(|e| format!("adding the rule for syscall {name:?}: {e}"))?;
    }
    Ok(())
}

/// The libseccomp action for an OCI action and its errnoRet.
fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction, String> {
    use LinuxSeccompAction as A;
    if let Some(e) = errno_ret {
        if !matches!(a, A::ScmpActErrno | A::ScmpActTrace) {
            return Err(format!(
                "errnoRet {e} is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {a}"
            ));
        }
    }
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => {
            let e = errno_ret.unwrap_or(libc::EPERM as u32);
            if e > MAX_ERRNO {
                return Err(format!(
                    "errnoRet {e} is out of range: the kernel's errno values stop at {MAX_ERRNO}"
                ));
            }
            ScmpAction::Errno(e as i32)
        }
        A::ScmpActTrace => {
            let e = errno_ret.unwrap_or(libc::EPERM as u32);
            let v = u16::try_from(e).map_err(|_| {
                format!("errnoRet {e} is out of range for SCMP_ACT_TRACE (0..=65535)")
            })?;
            ScmpAction::Trace(v)
        }
        A::ScmpActNotify => ScmpAction::Notify,
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActAllow => ScmpAction::Allow,
    })
}

/// libseccomp conditions for a rule's args, and whether two of them share an argument index.
fn conditions(args: &[LinuxSeccompArg]) -> Result<(Vec<ScmpArgCompare>, bool), String> {
    let mut seen = [0u8; MAX_ARGS];
    let mut conds = Vec::with_capacity(args.len());
    for a in args {
        let index = a.index();
        if index >= MAX_ARGS {
            return Err(format!(
                "argument index {index} is out of range: syscalls have arguments 0..=5"
            ));
        }
        seen[index] += 1;
        use LinuxSeccompOperator as O;
        let (op, datum) = match a.op() {
            O::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
            O::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
            O::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
            O::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
            O::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
            O::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
            // value is the mask, valueTwo the value the masked argument must equal.
            O::ScmpCmpMaskedEq => (
                ScmpCompareOp::MaskedEqual(a.value()),
                a.value_two().unwrap_or(0),
            ),
        };
        conds.push(ScmpArgCompare::new(index as u32, op, datum));
    }
    Ok((conds, seen.iter().any(|&n| n > 1)))
}

/// The profile's `flags` as SECCOMP_FILTER_FLAG_* bits.
fn kernel_flags(seccomp: &LinuxSeccomp) -> Result<u32, String> {
    let mut bits = 0u32;
    for f in seccomp.flags().as_deref().unwrap_or(&[]) {
        bits |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                if !uses_notify(seccomp) {
                    return Err(
                        "seccomp flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a \
                                SCMP_ACT_NOTIFY rule"
                            .to_string(),
                    );
                }
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
        } as u32;
    }
    Ok(bits)
}

/// Whether any rule notifies a userspace agent.
fn uses_notify(seccomp: &LinuxSeccomp) -> bool {
    seccomp
        .syscalls()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify && !r.names().is_empty())
}

/// The profile's spelling of an architecture (`SCMP_ARCH_X86_64`), which is libseccomp's too.
fn arch_name(arch: &Arch) -> String {
    serde_json::to_value(arch)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{arch:?}"))
}

/// The libseccomp library version in use, as "2.5.4".
pub fn libseccomp_version() -> String {
    ScmpVersion::current()
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Export the filter's BPF program through a memfd (libseccomp 2.5 has no in-memory export).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>, String> {
    // SAFETY: plain syscall with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "exporting the seccomp filter: memfd_create: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a new descriptor we own.
    let mut file = unsafe { File::from_raw_fd(fd) };
    ctx.export_bpf(&file)
        .map_err(|e| format!("exporting the seccomp filter: {e}"))?;
    let mut bpf = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|e| format!("exporting the seccomp filter: reading it back: {e}"))?;
    Ok(bpf)
}

/// Every action, operator and flag name this module accepts.
pub const ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];
/// The argument comparison operators.
pub const OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];
/// The filter flags understood (whether the kernel has them is [`supported_flags`]).
pub const KNOWN_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];
const ALL_ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// The architectures the libseccomp in use can add to a filter.
pub fn supported_arches() -> Vec<&'static str> {
    let Ok(mut ctx) = ScmpFilterContext::new(ScmpAction::Allow) else {
        return Vec::new();
    };
    ALL_ARCHES
        .iter()
        .copied()
        .filter(|name| {
            ScmpArch::from_str(name)
                .ok()
                .is_some_and(|a| ctx.add_arch(a).is_ok())
        })
        .collect()
}

/// The filter flags this kernel accepts, probed the way libseccomp does: `seccomp(2)` with a
/// NULL program fails with EFAULT for a known flag and EINVAL for an unknown one.
pub fn supported_flags() -> Vec<&'static str> {
    let probe = |flags: libc::c_ulong| {
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                std::ptr::null::<libc::sock_fprog>(),
            )
        };
        rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
    };
    let mut out = Vec::new();
    for (name, bits) in [
        ("SECCOMP_FILTER_FLAG_TSYNC", libc::SECCOMP_FILTER_FLAG_TSYNC),
        ("SECCOMP_FILTER_FLAG_LOG", libc::SECCOMP_FILTER_FLAG_LOG),
        (
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
        ),
        (
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
            libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        ),
    ] {
        if probe(bits) {
            out.push(name);
        }
    }
    out
}

/// The `linux.seccomp` object of the OCI features document.
pub fn features() -> Value {
    json!({
        "enabled": true,
        "actions": ACTIONS,
        "operators": OPERATORS,
        "archs": supported_arches(),
        "knownFlags": KNOWN_FLAGS,
        "supportedFlags": supported_flags(),
    })
}
