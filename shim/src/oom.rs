//! Noticing the OOM killer in the container's memory cgroup, for berthd's `/tasks/oom` event.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`; the
//! kernel signals it when the cgroup goes out of memory, before the OOM killer has counted its
//! kill, so each signal (while the cgroup still exists: its removal signals too) is one event,
//! as containerd counts them. cgroup v2: inotify on `memory.events`, and the `oom_kill` count
//! read back from that file, so a change of another field is not reported.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// A watch on one memory cgroup.
pub struct OomWatch {
    fd: OwnedFd,
    file: PathBuf,
    count: u64,
    /// v1: the `memory.oom_control` the eventfd is registered on, kept open with it.
    _control: Option<File>,
}

impl OomWatch {
    /// Watches the memory cgroup process `pid` is in; Err says why not (no memory controller,
    /// or no cgroup of its own: the supervisor's, whose kills are not the container's).
    pub fn for_pid(pid: u32) -> Result<OomWatch, String> {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| format!("/proc/{pid}/cgroup: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let (dir, v2) = memory_cgroup_dir(&cgroups, &mountinfo)
            .ok_or_else(|| format!("process {pid} is in no memory cgroup"))?;
        if memory_cgroup_dir(&own, &mountinfo).is_some_and(|(d, _)| d == dir) {
            return Err(format!("process {pid} has no memory cgroup of its own"));
        }
        if v2 {
            Self::inotify(dir.join("memory.events"))
        } else {
            Self::eventfd(&dir)
        }
    }

    fn eventfd(dir: &Path) -> Result<OomWatch, String> {
        let file = dir.join("memory.oom_control");
        let control = File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        // SAFETY: eventfd creates a new fd owned below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: just created.
        let fd = unsafe { OwnedFd::from_raw_fd(efd) };
        let reg = dir.join("cgroup.event_control");
        // One write(2): the kernel parses the whole registration from a single call.
        let line = format!("{} {}", fd.as_raw_fd(), control.as_raw_fd());
        File::options()
            .write(true)
            .open(&reg)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| format!("{}: {e}", reg.display()))?;
        Ok(OomWatch {
            count: read_count(&file),
            fd,
            file,
            _control: Some(control),
        })
    }

    fn inotify(file: PathBuf) -> Result<OomWatch, String> {
        // SAFETY: inotify_init1 creates a new fd owned below.
        let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if ifd < 0 {
            return Err(format!("inotify: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: just created.
        let fd = unsafe { OwnedFd::from_raw_fd(ifd) };
        let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
            .map_err(|e| format!("{}: {e}", file.display()))?;
        // SAFETY: a valid inotify fd and NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(format!(
                "watching {}: {}",
                file.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(OomWatch {
            count: read_count(&file),
            fd,
            file,
            _control: None,
        })
    }

    /// The fd to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// After the fd woke: drains it and returns how many new OOM events there are.
    pub fn ready(&mut self) -> u64 {
        let mut buf = [0u8; 1024];
        if self._control.is_some() {
            // v1: the eventfd's counter is the number of signals since the last read.
            let mut n = 0u64;
            // SAFETY: an eventfd read fills 8 bytes.
            let got = unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
            let alive = self.file.exists();
            return if got == 8 && alive { n } else { 0 };
        }
        // SAFETY: nonblocking read into a local buffer, until empty.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        let now = read_count(&self.file);
        let new = now.saturating_sub(self.count);
        self.count = self.count.max(now);
        new
    }
}

/// `oom_kill N` from `memory.oom_control` (v1) or `memory.events` (v2); 0 if unreadable.
fn read_count(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The directory of the memory cgroup named in a `/proc/PID/cgroup` text, found through the
/// mount table; true if it is cgroup v2. The v1 memory hierarchy wins when both exist (on a
/// hybrid host the v2 tree has no memory controller).
fn memory_cgroup_dir(cgroups: &str, mountinfo: &str) -> Option<(PathBuf, bool)> {
    let mut v2_path = None;
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            if let Some(dir) = mount_of(mountinfo, "cgroup", Some("memory"), path) {
                return Some((dir, false));
            }
        } else if controllers.is_empty() {
            v2_path = Some(path);
        }
    }
    let dir = mount_of(mountinfo, "cgroup2", None, v2_path?)?;
    dir.join("memory.events").exists().then_some((dir, true))
}

/// `path` (a cgroup path) under the mount of filesystem `fstype` (whose super options include
/// `option`, if given).
fn mount_of(mountinfo: &str, fstype: &str, option: Option<&str>, path: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 || r[0] != fstype {
            continue;
        }
        if let Some(o) = option {
            if !r[2].split(',').any(|x| x == o) {
                continue;
            }
        }
        let (root, mount_point) = (l[3], l[4]);
        let rel = if root == "/" {
            path
        } else {
            match path.strip_prefix(root) {
                Some(rest) => rest,
                None => continue,
            }
        };
        return Some(Path::new(mount_point).join(rel.trim_start_matches('/')));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
";

    #[test]
    fn the_v1_memory_hierarchy_is_found_through_the_mount_table() {
        let cg = "12:pids:/ns/c1\n9:memory:/ns/c1\n0::/ns/c1\n";
        assert_eq!(
            memory_cgroup_dir(cg, MOUNTS),
            Some((PathBuf::from("/sys/fs/cgroup/memory/ns/c1"), false))
        );
    }

    #[test]
    fn no_memory_controller_means_no_watch() {
        // v2 only, and this unified tree has no memory.events at that (made-up) path.
        assert_eq!(
            memory_cgroup_dir("0::/no/such/berth/cgroup\n", MOUNTS),
            None
        );
    }

    #[test]
    fn oom_kill_is_read_from_either_file() {
        let d = std::env::temp_dir().join(format!("berth-shim-oom-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n").unwrap();
        assert_eq!(read_count(&f), 2);
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n").unwrap();
        assert_eq!(read_count(&f), 7);
        assert_eq!(read_count(&d.join("missing")), 0);
        let _ = std::fs::remove_dir_all(&d);
    }
}
