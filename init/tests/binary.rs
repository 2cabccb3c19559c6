//! The executable berthd carries: statically linked, and doing what an init must (exit codes,
//! signals forwarded, a missing command named).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Held for writing while a test writes its copy of the init, and for reading while one
/// spawns: a fork in another thread while the file is open for writing would carry that fd
/// into the child until its exec, and exec'ing the file then fails with ETXTBSY.
static SPAWN: RwLock<()> = RwLock::new(());

fn binary(dir: &tempfile::TempDir) -> PathBuf {
    let _writing = SPAWN.write().unwrap_or_else(|e| e.into_inner());
    let p = dir.path().join("berth-init");
    std::fs::write(&p, berth_init::BINARY).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn spawn(cmd: &mut Command) -> Child {
    let _spawning = SPAWN.read().unwrap_or_else(|e| e.into_inner());
    cmd.spawn().unwrap()
}

fn output(cmd: &mut Command) -> Output {
    spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
        .wait_with_output()
        .unwrap()
}

fn status(cmd: &mut Command) -> std::process::ExitStatus {
    spawn(cmd).wait().unwrap()
}

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}

#[test]
fn it_is_static_elf_with_no_interpreter() {
    let b = berth_init::BINARY;
    assert_eq!(&b[..4], b"\x7fELF");
    assert_eq!(b[4], 2, "a 64-bit ELF");
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(b, 0x36), u16_at(b, 0x38));
    assert!(count > 0);
    for i in 0..count {
        let at = phoff + i * size;
        let ty = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        assert_ne!(
            ty, 3,
            "program header {i} is PT_INTERP: the init is dynamically linked"
        );
    }
}

#[test]
fn exit_codes_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let init = binary(&dir);
    let st = status(Command::new(&init).args(["--", "sh", "-c", "exit 7"]));
    assert_eq!(st.code(), Some(7));
    let st = status(Command::new(&init).args(["sh", "-c", "kill -KILL $$"]));
    assert_eq!(st.code(), Some(137));
}

#[test]
fn a_missing_command_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let init = binary(&dir);
    let out = output(Command::new(&init).args(["--", "/no/such/cmd"]));
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/cmd"), "{err}");
    let out = output(Command::new(&init).arg("--"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command"));
}

#[test]
fn signals_reach_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let init = binary(&dir);
    let mut child = spawn(
        Command::new(&init)
            .args(["--", "sleep", "100"])
            .stdin(Stdio::null()),
    );
    let pid = child.id();
    // Wait until the init has its child, so the signal is not taken before the spawn.
    let children = format!("/proc/{pid}/task/{pid}/children");
    let start = Instant::now();
    while std::fs::read_to_string(&children)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no child started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = status(Command::new("kill").args(["-TERM", &pid.to_string()]));
    assert!(st.success());
    // sleep dies of the forwarded SIGTERM: 128 + 15.
    assert_eq!(child.wait().unwrap().code(), Some(143));
}
