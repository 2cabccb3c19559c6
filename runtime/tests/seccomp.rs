//! seccomp: profiles compiled, cached and loaded into forked children, checked by what the
//! syscalls then return (errno values, signals, an agent's answer).
//!
//! Each child sets no_new_privs, loads the filter, makes the syscalls under test and reports
//! through its exit status; the parent never loads a filter.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_runtime::seccomp::{self, Filter};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::json;

const DOCKER_DEFAULT: &str = include_str!("seccomp-fixtures/docker-default.json");

fn profile(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("test profile parses")
}

fn docker_default() -> LinuxSeccomp {
    serde_json::from_str(DOCKER_DEFAULT).expect("fixture parses")
}

/// A forked child, killed and reaped if the test ends before it is.
struct Child(Option<Pid>);

impl Child {
    fn wait(mut self) -> WaitStatus {
        let pid = self.0.take().expect("waited once");
        waitpid(pid, None).expect("waitpid")
    }
    fn pid(&self) -> Pid {
        self.0.expect("child running")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Fork; the child sets no_new_privs, disables core dumps (SIGSYS would leave one), loads the
/// filter and exits with `body`'s code (100 when loading failed).
fn spawn_filtered(filter: &Filter, body: impl FnOnce(Option<OwnedFd>) -> i32) -> Child {
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => Child(Some(child)),
        ForkResult::Child => {
            let code = unsafe {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                match filter.load() {
                    Ok(listener) => body(listener),
                    Err(_) => 100,
                }
            };
            unsafe { libc::_exit(code) }
        }
    }
}

fn run_filtered(filter: &Filter, body: impl FnOnce() -> i32) -> WaitStatus {
    spawn_filtered(filter, |_| body()).wait()
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        other => panic!("child did not exit normally: {other:?}"),
    }
}

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// The errno of a raw syscall, 0 when it succeeded.
fn syscall_errno(rc: libc::c_long) -> i32 {
    if rc < 0 {
        errno()
    } else {
        0
    }
}

fn c_path(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL in temp path")
}

#[test]
fn denied_syscall_returns_eperm_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("made-by-child");
    let c_target = c_path(&target);
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    })))
    .unwrap();
    assert!(!filter.from_cache());
    let code = exit_code(run_filtered(&filter, || {
        let rc = unsafe { libc::mkdir(c_target.as_ptr(), 0o755) };
        if rc == 0 {
            0
        } else {
            errno()
        }
    }));
    assert_eq!(code, libc::EPERM, "mkdir should fail with EPERM");
    assert!(!target.exists(), "the denied mkdir created {target:?}");
}

#[test]
fn errno_ret_is_what_the_syscall_returns() {
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    })))
    .unwrap();
    let code = exit_code(run_filtered(&filter, || {
        let mut buf = [0u8; 256];
        let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
        syscall_errno(rc)
    }));
    assert_eq!(code, libc::ENOSYS);
}

#[test]
fn default_errno_ret_applies_to_everything_not_allowed() {
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENXIO,
        "syscalls": [{"names": ["exit_group", "exit", "getpid"], "action": "SCMP_ACT_ALLOW"}]
    })))
    .unwrap();
    let code = exit_code(run_filtered(&filter, || {
        let allowed = unsafe { libc::syscall(libc::SYS_getpid) };
        let denied = unsafe { libc::syscall(libc::SYS_getppid) };
        if allowed <= 0 {
            return 99;
        }
        syscall_errno(denied)
    }));
    assert_eq!(code, libc::ENXIO);
}

#[test]
fn argument_filters_on_the_same_index_are_ored() {
    // Docker's personality rules: only these values may be passed.
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["exit_group", "exit"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}
            ]}
        ]
    })))
    .unwrap();
    let code = exit_code(run_filtered(&filter, || {
        let query = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
        let eight = unsafe { libc::syscall(libc::SYS_personality, 8u64) };
        let zero = unsafe { libc::syscall(libc::SYS_personality, 0u64) };
        let zero_errno = syscall_errno(zero);
        (query >= 0) as i32 | ((eight >= 0) as i32) << 1 | ((zero_errno == libc::EPERM) as i32) << 2
    }));
    assert_eq!(
        code, 0b111,
        "personality(0xffffffff) and (8) allowed, (0) EPERM; got bits {code:#b}"
    );
}

#[test]
fn argument_filters_on_different_indexes_are_anded() {
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES, "args": [
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": 100, "op": "SCMP_CMP_EQ"}
        ]}]
    })))
    .unwrap();
    let code = exit_code(run_filtered(&filter, || {
        let both = syscall_errno(unsafe { libc::syscall(libc::SYS_dup3, 0, 100, 0) });
        let first_only = syscall_errno(unsafe { libc::syscall(libc::SYS_dup3, 0, 101, 0) });
        let second_only = syscall_errno(unsafe { libc::syscall(libc::SYS_dup3, 1, 100, 0) });
        (both == libc::EACCES) as i32
            | ((first_only == 0) as i32) << 1
            | ((second_only == 0) as i32) << 2
    }));
    assert_eq!(
        code, 0b111,
        "only dup3(0, 100) is denied; got bits {code:#b}"
    );
}

#[test]
fn masked_eq_compares_the_masked_argument_with_value_two() {
    // Deny umask(m) when m has no group/other bits: (m & 0o077) == 0.
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EINVAL, "args": [
            {"index": 0, "value": 0o077, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
        ]}]
    })))
    .unwrap();
    let code = exit_code(run_filtered(&filter, || {
        let allowed = syscall_errno(unsafe { libc::syscall(libc::SYS_umask, 0o022) });
        let denied = syscall_errno(unsafe { libc::syscall(libc::SYS_umask, 0o700) });
        (allowed == 0) as i32 | ((denied == libc::EINVAL) as i32) << 1
    }));
    assert_eq!(
        code, 0b11,
        "umask(022) allowed, umask(0700) EINVAL; got bits {code:#b}"
    );
}

#[test]
fn kill_rule_kills_the_child_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
    ] {
        let filter = seccomp::compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": action}]
        })))
        .unwrap();
        let status = run_filtered(&filter, || {
            unsafe { libc::syscall(libc::SYS_getppid) };
            0
        });
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "{action}: expected death by SIGSYS, got {status:?}"
        );
    }
}

#[test]
fn trap_rule_raises_sigsys() {
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}]
    })))
    .unwrap();
    let status = run_filtered(&filter, || {
        unsafe { libc::syscall(libc::SYS_getppid) };
        0
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "expected SIGSYS, got {status:?}"
    );
}

#[test]
fn filter_flags_are_passed_to_the_kernel() {
    let filter = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EIO}]
    })))
    .unwrap();
    assert_eq!(
        filter.flags(),
        (libc::SECCOMP_FILTER_FLAG_TSYNC | libc::SECCOMP_FILTER_FLAG_LOG) as u32
    );
    let code = exit_code(run_filtered(&filter, || {
        syscall_errno(unsafe { libc::syscall(libc::SYS_getppid) })
    }));
    assert_eq!(code, libc::EIO);
}

fn bpf_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "bpf"));
    v
}

#[test]
fn cached_filter_behaves_the_same_and_the_second_compile_hits() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("seccomp-cache");
    let p = profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    }));
    let first = seccomp::compile_cached(&p, &cache).unwrap();
    assert!(!first.from_cache(), "an empty cache cannot hit");
    let files = bpf_files(&cache);
    assert_eq!(files.len(), 1, "one entry written: {files:?}");
    let second = seccomp::compile_cached(&p, &cache).unwrap();
    assert!(
        second.from_cache(),
        "the second compile must come from the cache"
    );
    assert_eq!(second.bpf(), first.bpf());
    assert_eq!(second.bpf(), seccomp::compile(&p).unwrap().bpf());
    let code = exit_code(run_filtered(&second, || {
        let mut buf = [0u8; 256];
        syscall_errno(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })
    }));
    assert_eq!(
        code,
        libc::ENOSYS,
        "the cached filter must deny like the compiled one"
    );

    // Another profile gets its own entry, not the first one's program.
    let other = profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]
    }));
    let o = seccomp::compile_cached(&other, &cache).unwrap();
    assert!(!o.from_cache());
    assert_ne!(o.bpf(), first.bpf());
    assert_eq!(bpf_files(&cache).len(), 2);
}

#[test]
fn corrupt_cache_entry_is_recompiled_and_replaced() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let p = docker_default();
    let good = seccomp::compile_cached(&p, &cache).unwrap();
    let entry = bpf_files(&cache).pop().expect("entry written");
    let len = std::fs::metadata(&entry).unwrap().len();
    // Truncated (as after a crash mid-write), then garbage.
    for damage in [
        std::fs::read(&entry).unwrap()[..(len / 2) as usize].to_vec(),
        b"not a filter".to_vec(),
    ] {
        std::fs::write(&entry, damage).unwrap();
        let again = seccomp::compile_cached(&p, &cache).unwrap();
        assert!(!again.from_cache(), "a damaged entry must not be used");
        assert_eq!(again.bpf(), good.bpf());
        assert_eq!(
            std::fs::metadata(&entry).unwrap().len(),
            len,
            "entry rewritten"
        );
        assert!(seccomp::compile_cached(&p, &cache).unwrap().from_cache());
    }
}

#[test]
fn unwritable_cache_dir_still_compiles() {
    let root = tempfile::tempdir().unwrap();
    let not_a_dir = root.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let f = seccomp::compile_cached(&docker_default(), &not_a_dir.join("cache")).unwrap();
    assert!(!f.from_cache());
    assert_eq!(f.bpf(), seccomp::compile(&docker_default()).unwrap().bpf());
}

#[test]
fn docker_default_profile_from_the_cache_denies_what_docker_denies() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("seccomp-cache");
    seccomp::compile_cached(&docker_default(), &cache).unwrap();
    let filter = seccomp::compile_cached(&docker_default(), &cache).unwrap();
    assert!(filter.from_cache());
    let code = exit_code(run_filtered(&filter, || {
        let mut bits = 0;
        // Allowed: getpid, personality query, unix sockets.
        bits |= (unsafe { libc::syscall(libc::SYS_getpid) } > 0) as i32;
        bits |=
            ((unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) } >= 0) as i32) << 1;
        let unix = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        bits |= ((unix >= 0) as i32) << 2;
        // Denied: keyctl (not listed → EPERM), AF_VSOCK sockets, clone3 (ENOSYS).
        let keyctl = syscall_errno(unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) });
        bits |= ((keyctl == libc::EPERM) as i32) << 3;
        let vsock = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
        bits |= ((vsock < 0 && errno() == libc::EPERM) as i32) << 4;
        let clone3 = syscall_errno(unsafe {
            libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize)
        });
        bits |= ((clone3 == libc::ENOSYS) as i32) << 5;
        bits
    }));
    assert_eq!(code, 0b111111, "got bits {code:#b}");
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unknown_syscall_name_is_skipped_with_a_warning() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    let p = profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall_xyz", "getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    }));
    let filter = tracing::subscriber::with_default(subscriber, || seccomp::compile(&p))
        .expect("an unknown name is not an error");
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("WARN") && text.contains("no_such_syscall_xyz"),
        "expected a warning naming the syscall, got: {text}"
    );
    let code = exit_code(run_filtered(&filter, || {
        let mut buf = [0u8; 64];
        syscall_errno(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })
    }));
    assert_eq!(
        code,
        libc::ENOSYS,
        "the known names of the rule still apply"
    );
}

fn compile_err(v: serde_json::Value) -> String {
    match seccomp::compile(&profile(v)) {
        Ok(_) => panic!("profile should be rejected"),
        Err(e) => e,
    }
}

#[test]
fn invalid_profiles_are_clear_errors() {
    let cases: &[(serde_json::Value, &[&str])] = &[
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]}),
            &["syscalls[0]", "errnoRet 1", "SCMP_ACT_KILL"],
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
            &["defaultAction", "errnoRet", "SCMP_ACT_ALLOW"],
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}]}),
            &["errnoRet 5000", "4095"],
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                 "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            &["argument index 6", "read"],
        ),
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            &["defaultAction", "SCMP_ACT_NOTIFY"],
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}),
            &["SCMP_ACT_NOTIFY", "\"write\""],
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}),
            &["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SCMP_ACT_NOTIFY"],
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": [""], "action": "SCMP_ACT_ERRNO"}]}),
            &["syscalls[0]", "empty"],
        ),
    ];
    for (v, needles) in cases {
        let err = compile_err(v.clone());
        for n in *needles {
            assert!(err.contains(n), "error for {v} should mention {n:?}: {err}");
        }
        // The cached path refuses the same profiles, and caches nothing for them.
        let dir = tempfile::tempdir().unwrap();
        assert!(seccomp::compile_cached(&profile(v.clone()), dir.path()).is_err());
        assert!(bpf_files(dir.path()).is_empty());
    }
}

#[test]
fn unknown_action_operator_arch_and_flag_are_rejected_when_parsing() {
    let cases = [
        (json!({"defaultAction": "SCMP_ACT_BOGUS"}), "SCMP_ACT_BOGUS"),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
            "SCMP_ARCH_Z80",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}),
            "SECCOMP_FILTER_FLAG_NOPE",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                   "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}),
            "SCMP_CMP_ABOUT",
        ),
    ];
    for (v, bad) in cases {
        let err = serde_json::from_value::<LinuxSeccomp>(v.clone())
            .expect_err("must not parse")
            .to_string();
        assert!(err.contains(bad), "error for {v} should name {bad}: {err}");
    }
}

#[test]
fn architecture_unknown_to_this_libseccomp_is_a_clear_error() {
    // LoongArch arrived in libseccomp 2.6; Debian 12 ships 2.5.4.
    let version = seccomp::libseccomp_version();
    let older_than_2_6 = version.starts_with("2.5.") || version.starts_with("2.4.");
    let result = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_LOONGARCH64"]
    })));
    if older_than_2_6 {
        let err = result.expect_err("libseccomp < 2.6 has no LoongArch");
        assert!(
            err.contains("SCMP_ARCH_LOONGARCH64") && err.contains(&version),
            "{err}"
        );
        assert!(!seccomp::supported_arches().contains(&"SCMP_ARCH_LOONGARCH64"));
    } else {
        result.expect("libseccomp >= 2.6 knows LoongArch");
    }
}

#[test]
fn multi_arch_profile_adds_every_architecture() {
    let native_only = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]
    })))
    .unwrap();
    let three = seccomp::compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]
    })))
    .unwrap();
    assert!(
        three.instructions() > native_only.instructions(),
        "x86 and x32 need their own checks: {} vs {}",
        three.instructions(),
        native_only.instructions()
    );
}

#[test]
fn features_report_what_this_host_supports() {
    let f = seccomp::features();
    assert_eq!(f["enabled"], true);
    let archs: Vec<&str> = f["archs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(archs.contains(&"SCMP_ARCH_X86_64"), "{archs:?}");
    let flags = f["supportedFlags"].as_array().unwrap();
    // Every kernel with seccomp() (3.17+) has TSYNC.
    assert!(
        flags.iter().any(|v| v == "SECCOMP_FILTER_FLAG_TSYNC"),
        "{flags:?}"
    );
    assert!(f["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "SCMP_ACT_NOTIFY"));
}

#[test]
fn loading_without_no_new_privs_or_cap_sys_admin_says_why() {
    let filter = seccomp::compile(&profile(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]})))
    .unwrap();
    let (mut rd, wr) = std::io::pipe().unwrap();
    let child = match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => Child(Some(child)),
        ForkResult::Child => {
            drop(rd);
            let mut wr = wr;
            let dropped = caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_ADMIN,
            );
            let msg = match (dropped, filter.load()) {
                (Err(e), _) => format!("dropping CAP_SYS_ADMIN failed: {e}"),
                (Ok(()), Ok(_)) => "loaded".to_string(),
                (Ok(()), Err(e)) => e,
            };
            let _ = wr.write_all(msg.as_bytes());
            unsafe { libc::_exit(0) }
        }
    };
    drop(wr);
    let mut msg = String::new();
    rd.read_to_string(&mut msg).unwrap();
    child.wait();
    assert!(
        msg.contains("permission denied")
            && msg.contains("no_new_privs unset")
            && msg.contains("CAP_SYS_ADMIN"),
        "{msg}"
    );
}

/// Accept one connection within `limit`.
fn accept_within(l: &UnixListener, limit: Duration) -> std::os::unix::net::UnixStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("no connection from the child: {e}"),
        }
    }
}

/// Receive the body and the one fd sent with SCM_RIGHTS.
fn recv_fd_and_body(s: &std::os::unix::net::UnixStream) -> (OwnedFd, Vec<u8>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut body = Vec::new();
    let mut fd: Option<OwnedFd> = None;
    loop {
        let mut buf = [0u8; 4096];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .expect("recvmsg");
        for c in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    (fd.expect("an fd came with the message"), body)
}

#[test]
fn notify_listener_goes_to_the_agent_which_answers_the_syscall() {
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let agent = UnixListener::bind(&sock).unwrap();
    let target = dir.path().join("notified");
    let c_target = c_path(&target);
    let p = profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "meta-42",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    let filter = seccomp::compile(&p).unwrap();
    assert!(filter.uses_notify());
    let container_state = json!({"ociVersion": "1.2.0", "id": "notify-test", "status": "creating",
                                 "pid": 1, "bundle": "/b"});
    let state = seccomp::process_state(
        container_state.to_string().as_bytes(),
        4321,
        p.listener_metadata().as_deref(),
    )
    .unwrap();
    let sock_path = sock.clone();
    let child = spawn_filtered(&filter, |listener| {
        let Some(fd) = listener else { return 101 };
        use std::os::fd::AsFd;
        if seccomp::send_listener(fd.as_fd(), &sock_path, &state).is_err() {
            return 102;
        }
        drop(fd);
        let rc = unsafe { libc::mkdir(c_target.as_ptr(), 0o755) };
        if rc == 0 {
            0
        } else {
            errno()
        }
    });
    let conn = accept_within(&agent, Duration::from_secs(10));
    let (listener, body) = recv_fd_and_body(&conn);
    let got: serde_json::Value = serde_json::from_slice(&body).expect("state is JSON");
    assert_eq!(got["fds"], json!(["seccompFd"]));
    assert_eq!(got["pid"], 4321);
    assert_eq!(got["metadata"], "meta-42");
    assert_eq!(got["state"]["id"], "notify-test");
    assert_eq!(got["state"]["status"], "creating");

    let req = ScmpNotifReq::receive(listener.as_raw_fd()).expect("a notification");
    assert_eq!(req.pid as i32, child.pid().as_raw());
    let name = req.data.syscall.get_name_by_arch(req.data.arch).unwrap();
    assert!(name == "mkdir" || name == "mkdirat", "notified for {name}");
    ScmpNotifResp::new_error(req.id, -libc::EXDEV, ScmpNotifRespFlags::empty())
        .respond(listener.as_raw_fd())
        .expect("respond");
    assert_eq!(
        exit_code(child.wait()),
        libc::EXDEV,
        "the agent's answer reached mkdir"
    );
    assert!(!target.exists());
}

#[test]
fn send_listener_to_a_missing_socket_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody-listens.sock");
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    use std::os::fd::AsFd;
    let err = seccomp::send_listener(a.as_fd(), &missing, b"{}").unwrap_err();
    assert!(
        err.contains("nobody-listens.sock") && err.contains("connecting"),
        "{err}"
    );
    let err = seccomp::process_state(b"not json", 1, None).unwrap_err();
    assert!(err.contains("not valid"), "{err}");
}

/// Not a test: compile times of the Docker-like default profile, uncached vs cached.
/// `cargo test -p berth-runtime --release --test seccomp -- --ignored --nocapture bench`
#[test]
#[ignore = "benchmark; run by hand with --ignored --nocapture"]
fn bench_default_profile_compile_uncached_vs_cached() {
    let p = docker_default();
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("seccomp-cache");
    const N: u32 = 200;
    let t = Instant::now();
    let mut compiled = None;
    for _ in 0..N {
        compiled = Some(seccomp::compile(&p).unwrap());
    }
    let uncached = t.elapsed() / N;
    let compiled = compiled.unwrap();
    seccomp::compile_cached(&p, &cache).unwrap();
    let t = Instant::now();
    let mut cached = None;
    for _ in 0..N {
        cached = Some(seccomp::compile_cached(&p, &cache).unwrap());
    }
    let hit = t.elapsed() / N;
    let cached = cached.unwrap();
    assert!(cached.from_cache());
    assert_eq!(cached.bpf(), compiled.bpf());
    println!(
        "docker-default ({} BPF instructions): compile {:?}, cache hit {:?} (libseccomp {})",
        compiled.instructions(),
        uncached,
        hit,
        seccomp::libseccomp_version()
    );
}
