//! Thin helpers over syscalls that the rest of the runtime shares: resolving paths inside the
//! container's root without following anything out of it, and fd hygiene.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// How resolution inside the root works: the root is "/" for every symlink met on the way
/// (absolute or `..`-laden ones are clamped into it), magic links are refused.
fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `path` made relative (leading `/` dropped) for resolution under a root fd.
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

/// Open `path` under `root` with `flags`, resolving every symlink as if `root` were `/`.
pub fn open_in_root(root: &impl AsFd, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    openat2(
        root,
        &rel,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(in_root()),
    )
}

/// Resolve `path` under the directory `root` the way the kernel would if `root` were `/`:
/// symlinks are read and followed, absolute ones and `..` never climb above `root`. Missing
/// components are kept as they are. Returns the path relative to `root`, free of symlinks in
/// the parts that exist.
pub fn secure_join(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = relative(path)
        .components()
        .rev()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&comp);
        match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(root.join(&candidate))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(resolved)
}

/// Create the directory `path` and its parents under the rootfs, never leaving it (symlinks on
/// the way resolve inside it, as [`secure_join`] says), and return an O_PATH fd of it, opened
/// with openat2 RESOLVE_IN_ROOT so that even a racing rename cannot lead outside.
pub fn mkdir_all_in_root(root: &impl AsFd, path: &Path, mode: u32) -> nix::Result<OwnedFd> {
    let root_path = fd_path(&root.as_fd());
    let rel = secure_join(&root_path, path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let mut current = PathBuf::new();
    let mut fd = open_in_root(root, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    for comp in rel.components() {
        current.push(comp);
        match open_in_root(root, &current, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(next) => fd = next,
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(&fd, comp.as_os_str(), Mode::from_bits_truncate(mode))
                {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                fd = open_in_root(root, &current, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(fd)
}

/// Make sure a file exists at `path` under `root` (creating parents) and return an O_PATH fd.
pub fn touch_in_root(root: &impl AsFd, path: &Path) -> nix::Result<OwnedFd> {
    let root_path = fd_path(&root.as_fd());
    let path = &secure_join(&root_path, path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    if let Some(parent) = path.parent() {
        mkdir_all_in_root(root, parent, 0o755)?;
    }
    match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) => {
            let fd = openat2(
                root,
                &relative(path),
                OpenHow::new()
                    .flags(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC)
                    .mode(Mode::from_bits_truncate(0o644))
                    .resolve(in_root()),
            )?;
            drop(fd);
            open_in_root(root, path, OFlag::O_PATH)
        }
        Err(e) => Err(e),
    }
}

/// The magic-link path by which a syscall that takes a path reaches an fd.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Mark every fd from `first` up close-on-exec (close_range with CLOSE_RANGE_CLOEXEC, or a walk
/// of /proc/self/fd on kernels without it).
pub fn cloexec_from(first: RawFd) -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            if fd >= first {
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    Ok(())
}

/// Make this process non-dumpable: other processes, root in a container included, can then no
/// longer open /proc/<pid>/exe (the runtime's binary on the host, CVE-2019-5736), fd/ or mem
/// without CAP_SYS_PTRACE. The flag is inherited by clone/fork and reset by execve, so the
/// container's own program is not affected.
pub fn set_non_dumpable() -> std::io::Result<()> {
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Renames this process as `ps` and `pgrep` see it: its comm (`/proc/self/stat`, 15 bytes at
/// most) and its command line, overwritten in place in the argument area (the memory is this
/// process's own copy: the init calls it right after clone, the runtime keeps its name). Best
/// effort: without the area's bounds (`/proc/self/stat` fields 48 and 49) only comm changes.
pub fn set_process_title(title: &str) {
    if let Ok(name) = CString::new(
        title
            .as_bytes()
            .iter()
            .take(15)
            .copied()
            .collect::<Vec<u8>>(),
    ) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of ours.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the parenthesised comm start with field 3 (state).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return;
    };
    if start == 0 || end <= start {
        return;
    }
    let len = end - start;
    let n = title.len().min(len - 1);
    // SAFETY: [start, end) is this process's argument area (the kernel's arg_start/arg_end),
    // mapped writable on its stack; nothing else runs in this single-threaded process.
    unsafe {
        std::ptr::copy_nonoverlapping(title.as_ptr(), start as *mut u8, n);
        std::ptr::write_bytes((start + n) as *mut u8, 0, len - n);
    }
}

/// Fail unless the working directory is reachable from our root. A cwd given as a path through
/// a leaked fd (`/proc/self/fd/N`, CVE-2024-21626) lands outside the container's root, which
/// the kernel reports as "(unreachable)".
pub fn check_cwd_inside_root() -> Result<(), String> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if rc < 0 {
        return Err(format!(
            "the working directory is outside the container: {}",
            std::io::Error::last_os_error()
        ));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let cwd = String::from_utf8_lossy(&buf[..end]);
    if !cwd.starts_with('/') {
        return Err(format!(
            "the working directory {cwd} is outside the container"
        ));
    }
    Ok(())
}

/// A C string from a Rust string, with a clear error for interior NULs.
pub fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// Whether the process is root in the initial user namespace (for choosing rootless paths).
pub fn in_initial_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
        })
        .unwrap_or(false)
}

/// The id of the mount at `path` (the topmost one mounted there, or the one containing it), by
/// statx(STATX_MNT_ID); `None` where the kernel cannot say (before 5.8).
pub fn mount_id(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    (rc == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

/// Take away the mount at `path` if it is still the one with id `id` (MNT_DETACH): what a
/// container without its own mount namespace mounted over its rootfs in the caller's namespace.
pub fn unmount_if_still(path: &Path, id: u64) -> Result<(), String> {
    if mount_id(path) != Some(id) {
        return Ok(());
    }
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("unmounting the container's rootfs {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.path().join("evil")).unwrap();
        symlink("../../../../..", root.path().join("up")).unwrap();
        let rootfd = std::fs::File::open(root.path()).unwrap();
        // The absolute link is taken as relative to the root: the dir lands inside it.
        mkdir_all_in_root(&rootfd, Path::new("/evil/x"), 0o755).unwrap();
        assert!(root
            .path()
            .join(relative(outside.path()))
            .join("x")
            .is_dir());
        assert!(!outside.path().join("x").exists());
        touch_in_root(&rootfd, Path::new("up/etc/y")).unwrap();
        assert!(root.path().join("etc/y").is_file());
    }
}
