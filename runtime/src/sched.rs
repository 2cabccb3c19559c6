//! The newer process and linux fields of runtime-spec 1.1/1.2 that runc 1.1 lacks: I/O priority,
//! scheduler, CPU affinity at exec, personality, memory policy and time namespace offsets.
//! Each is applied by the init (or exec'd process) just before execve, through its syscall.

use oci_spec::runtime::{
    IOPriorityClass, LinuxMemoryPolicy, LinuxPersonality, LinuxPersonalityDomain,
    LinuxSchedulerFlag, LinuxSchedulerPolicy, MemoryPolicyFlagType, MemoryPolicyModeType, Process,
    Scheduler,
};

/// ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level).
pub fn set_io_priority(class: IOPriorityClass, priority: i64) -> Result<(), String> {
    let class_num: libc::c_long = match class {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&priority) {
        return Err(format!(
            "process.ioPriority.priority {priority} is not in 0..7"
        ));
    }
    let value = (class_num << 13) | priority as libc::c_long;
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            1 as libc::c_long,
            0 as libc::c_long,
            value,
        )
    };
    if rc != 0 {
        return Err(format!(
            "setting I/O priority: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// sched_setattr with process.scheduler.
pub fn set_scheduler(s: &Scheduler) -> Result<(), String> {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().as_deref().unwrap_or(&[]) {
        flags |= match f {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0).max(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    };
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::c_long,
            &attr as *const SchedAttr,
            0 as libc::c_long,
        )
    };
    if rc != 0 {
        return Err(format!(
            "setting scheduler {:?}: {}",
            s.policy(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Parse a CPU list ("0-3,6") into a cpu_set_t.
pub fn parse_cpus(list: &str) -> Result<libc::cpu_set_t, String> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a
            .trim()
            .parse()
            .map_err(|_| format!("invalid CPU list {list:?}"))?;
        let b: usize = b
            .trim()
            .parse()
            .map_err(|_| format!("invalid CPU list {list:?}"))?;
        if a > b || b >= libc::CPU_SETSIZE as usize {
            return Err(format!("invalid CPU list {list:?}"));
        }
        for cpu in a..=b {
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    Ok(set)
}

/// sched_setaffinity with the given CPU list.
pub fn set_affinity(list: &str) -> Result<(), String> {
    let set = parse_cpus(list)?;
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "setting CPU affinity {list:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// personality(2) with linux.personality.
pub fn set_personality(p: &LinuxPersonality) -> Result<(), String> {
    let persona: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    if unsafe { libc::personality(persona) } < 0 {
        return Err(format!(
            "setting personality {}: {}",
            p.domain(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// set_mempolicy(2) with linux.memoryPolicy.
pub fn set_memory_policy(m: &LinuxMemoryPolicy) -> Result<(), String> {
    let mut mode: libc::c_int = match m.mode() {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    };
    for f in m.flags().as_deref().unwrap_or(&[]) {
        mode |= match f {
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
        };
    }
    let mut mask = [0 as libc::c_ulong; 16];
    let mut maxnode = 0usize;
    if let Some(nodes) = m.nodes().as_deref().filter(|n| !n.is_empty()) {
        for part in nodes.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: usize = a
                .trim()
                .parse()
                .map_err(|_| format!("invalid linux.memoryPolicy.nodes {nodes:?}"))?;
            let b: usize = b
                .trim()
                .parse()
                .map_err(|_| format!("invalid linux.memoryPolicy.nodes {nodes:?}"))?;
            if a > b || b >= mask.len() * 64 {
                return Err(format!("invalid linux.memoryPolicy.nodes {nodes:?}"));
            }
            for n in a..=b {
                mask[n / 64] |= 1 << (n % 64);
            }
        }
        maxnode = mask.len() * 64;
    }
    let ptr = if maxnode == 0 {
        std::ptr::null()
    } else {
        mask.as_ptr()
    };
    let rc = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            mode as libc::c_long,
            ptr,
            maxnode as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(format!(
            "setting memory policy {}: {}",
            m.mode(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Apply linux.personality and linux.memoryPolicy.
pub fn apply_linux(linux: &oci_spec::runtime::Linux) -> Result<(), String> {
    if let Some(p) = linux.personality() {
        set_personality(p)?;
    }
    if let Some(m) = linux.memory_policy() {
        set_memory_policy(m)?;
    }
    Ok(())
}

/// Apply the process's I/O priority and scheduler. (Exec CPU affinity is `exec`'s alone: see
/// [`exec_affinity`].)
pub fn apply_process(p: &Process) -> Result<(), String> {
    if let Some(io) = p.io_priority() {
        set_io_priority(io.class(), io.priority())?;
    }
    if let Some(s) = p.scheduler() {
        set_scheduler(s)?;
    }
    Ok(())
}

/// The CPU lists of process.execCPUAffinity, `(initial, final)`: an exec'd process runs on
/// `initial` until it has joined the container's cgroup and on `final` from there to execve
/// (without `final`, on what the cgroup's cpuset gives it). The container's init keeps the
/// caller's affinity, as runc's does: the field is for `exec` only.
pub fn exec_affinity(p: &Process) -> (Option<&str>, Option<&str>) {
    match p.exec_cpu_affinity() {
        Some(a) => (a.initial().as_deref(), a.cpu_affinity_final().as_deref()),
        None => (None, None),
    }
}

/// The bit mask of a CPU list, as runc's debug log prints it ("0,1" → 0x3); CPUs past 63 are
/// left out of the figure.
pub fn cpu_mask(list: &str) -> Result<u64, String> {
    let set = parse_cpus(list)?;
    Ok((0..64)
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .fold(0u64, |m, cpu| m | 1 << cpu))
}

/// Write linux.timeOffsets to `file`, the process's /proc/self/timens_offsets (after unsharing
/// the time namespace, before any process is in it).
pub fn write_time_offsets(
    offsets: &std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset>,
    mut file: std::fs::File,
) -> Result<(), String> {
    let mut text = String::new();
    for (clock, off) in offsets {
        let name = match clock.as_str() {
            "monotonic" | "boottime" => clock.as_str(),
            other => return Err(format!("linux.timeOffsets: unknown clock {other:?}")),
        };
        text.push_str(&format!(
            "{name} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("writing time namespace offsets: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        let set = parse_cpus("0-1,3").unwrap();
        assert!(unsafe {
            libc::CPU_ISSET(0, &set) && libc::CPU_ISSET(1, &set) && libc::CPU_ISSET(3, &set)
        });
        assert!(unsafe { !libc::CPU_ISSET(2, &set) });
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
