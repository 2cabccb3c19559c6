//! The seccomp profile `berth run` applies unless told `--security-opt seccomp=unconfined`.
//!
//! Docker's default profile allows the syscalls ordinary programs use and refuses, with EPERM,
//! those that let a container act on the host's kernel as a whole: loading modules or a new
//! kernel, rebooting, the clock, swap, accounting, raw I/O ports, kernel keyrings, BPF and perf,
//! new namespaces, mounting, handle-based opens (the "shocker" escape), other processes' memory.
//! Ours states the same intent the other way round, as the list of what is refused (everything
//! else is allowed); the effect for a container with Docker's default capabilities is the same
//! set of refusals, and a list of refusals does not break programs that use a syscall newer than
//! this table.

use serde_json::{json, Value};

/// Refused with EPERM: kernel-wide or escape-prone operations.
pub const REFUSED: &[&str] = &[
    // modules and kernels
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    // clocks, swap, accounting, quotas, syslog
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "nfsservctl",
    "lookup_dcookie",
    "uselib",
    "sysfs",
    "_sysctl",
    "ustat",
    // raw hardware access
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
    // keyrings, BPF, perf, userfaultfd
    "add_key",
    "request_key",
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    // namespaces and mounts
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // handles and other processes' memory
    "open_by_handle_at",
    "name_to_handle_at",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    // NUMA policy of other processes
    "move_pages",
    "migrate_pages",
];

/// Namespace flags of clone(2) that Docker's profile refuses to a container without
/// CAP_SYS_ADMIN: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
pub const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// ENOSYS: what clone3 gets, so that libc falls back to clone, whose flags a filter can see.
const ENOSYS: u32 = 38;

/// The OCI `linux.seccomp` object: allow by default; EPERM for [`REFUSED`] and for a clone(2)
/// that asks for any of [`CLONE_NAMESPACE_FLAGS`] (one masked-equal rule per flag: rules on
/// one syscall are alternatives); ENOSYS for clone3, as Docker's profile does.
pub fn default_profile() -> Value {
    let mut rules = vec![json!({
        "names": REFUSED,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": 1
    })];
    for flag in CLONE_NAMESPACE_FLAGS {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
    }
    rules.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ENOSYS
    }));
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": rules
    })
}
