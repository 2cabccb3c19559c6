//! config.json's mounts: option strings to mount(2) flags, and mounting each entry onto a target
//! opened inside the rootfs (so a symlinked destination can never lead out of it).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;

use crate::sys::{fd_path, mkdir_all_in_root, touch_in_root};

/// What a mount's options mean for mount(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags set.
    pub flags: MsFlags,
    /// Flags the options clear explicitly (`rw`, `suid`, ...).
    pub cleared: MsFlags,
    /// Propagation changes applied after the mount, in order.
    pub propagation: Vec<MsFlags>,
    /// Options passed to the filesystem as data (`mode=755`, `size=64k`).
    pub data: Vec<String>,
    /// Recursive attributes (`rro`, `rnosuid`...): (set, clear) for mount_setattr(AT_RECURSIVE).
    pub recursive: (u64, u64),
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            recursive: (0, 0),
        }
    }
}

impl MountOptions {
    /// Whether this is a bind mount.
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags besides bind/rec/remount, which a bind mount needs a remount to apply.
    pub fn remount_flags(&self) -> MsFlags {
        self.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }

    /// The data string, or None when empty.
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Parse mount options the way runc does; unknown options go to the filesystem as data.
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions::default();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "nosymfollow" => (MsFlags::from_bits_retain(256), MsFlags::empty()),
            "symfollow" => (MsFlags::empty(), MsFlags::from_bits_retain(256)),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation
                    .push(propagation_flag(opt).unwrap_or(MsFlags::empty()));
                continue;
            }
            // Handled elsewhere (tmpcopyup; idmap/ridmap in crate::idmap) or not for mount(2).
            "tmpcopyup" | "idmap" | "ridmap" => continue,
            r if recursive_attr(r).is_some() => {
                if let Some((set, clear)) = recursive_attr(r) {
                    o.recursive.0 = (o.recursive.0 & !clear) | set;
                    o.recursive.1 = (o.recursive.1 & !set) | clear;
                }
                continue;
            }
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags = (o.flags - clear) | set;
        o.cleared = (o.cleared - set) | clear;
    }
    o
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME: u64 = 0x70;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x200000;

/// The (set, clear) mount attributes of a recursive option (`rro`, `rnoexec`, `ratime`...).
pub fn recursive_attr(name: &str) -> Option<(u64, u64)> {
    Some(match name {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        // The atime modes share one field: clearing it with a value selects that mode, and
        // relatime is the value 0 (the kernel's default). Clearing a mode that is not set
        // changes nothing, so "rnorelatime" leaves each mount as it is, as with runc; "ratime"
        // (not noatime) goes back to the default, relatime.
        "rrelatime" | "rnostrictatime" | "ratime" => (0, MOUNT_ATTR_ATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME),
        "rnorelatime" => (0, 0),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE) with the recursive attributes.
fn set_recursive_attrs(fd: &impl AsRawFd, (set, clear): (u64, u64)) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        // Setting an atime mode requires clearing the whole atime field.
        attr_clr: clear
            | if set & MOUNT_ATTR_ATIME != 0 {
                MOUNT_ATTR_ATIME
            } else {
                0
            },
        propagation: 0,
        userns_fd: 0,
    };
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// The mount(2) flag of a propagation name (`rslave`, `private`...).
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Flags that a bind remount must keep because the source mount has them (the kernel refuses
/// to clear them inside a user namespace, and we never loosen what the host set).
pub fn locked_flags(path: &Path) -> MsFlags {
    let mut flags = MsFlags::empty();
    if let Ok(st) = statvfs(path) {
        let f = st.flags();
        if f.contains(FsFlags::ST_NOSUID) {
            flags |= MsFlags::MS_NOSUID;
        }
        if f.contains(FsFlags::ST_NODEV) {
            flags |= MsFlags::MS_NODEV;
        }
        if f.contains(FsFlags::ST_NOEXEC) {
            flags |= MsFlags::MS_NOEXEC;
        }
        if f.contains(FsFlags::ST_RDONLY) {
            flags |= MsFlags::MS_RDONLY;
        }
    }
    flags
}

/// Mount one entry of config.json under the rootfs whose fd is `root`.
/// `bundle` resolves relative bind sources; `cgroup_dirs` are the container's cgroup directories
/// per hierarchy (for `cgroup` mounts); `idmapped` is the entry's detached idmapped mount, made
/// by the runtime on the host (see [`crate::idmap`]).
pub fn mount_entry(
    root: &impl AsFd,
    m: &Mount,
    bundle: &Path,
    cgroup: Option<&CgroupMountSource>,
    idmapped: Option<&OwnedFd>,
) -> Result<(), String> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let ctx =
        |e: &dyn std::fmt::Display| format!("mounting {} on {}: {e}", describe(m), dest.display());

    if typ == "bind" || opts.is_bind() {
        let source = m
            .source()
            .as_ref()
            .ok_or_else(|| ctx(&"bind mount without a source"))?;
        let source = if source.is_absolute() {
            source.clone()
        } else {
            bundle.join(source)
        };
        let meta = std::fs::metadata(&source)
            .map_err(|e| ctx(&format!("source {}: {e}", source.display())))?;
        let target = if meta.is_dir() {
            mkdir_all_in_root(root, dest, 0o755)
        } else {
            touch_in_root(root, dest)
        }
        .map_err(|e| ctx(&e))?;
        match idmapped {
            Some(tree) => crate::idmap::attach(tree, &target)
                .map_err(|e| ctx(&format!("attaching the idmapped mount: {e}")))?,
            None => mount(
                Some(&source),
                &fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC),
                None::<&str>,
            )
            .map_err(|e| ctx(&e))?,
        }
        let extra = opts.remount_flags();
        if !extra.is_empty() {
            // Reopen: the fd still names the covered directory, the remount wants the new mount.
            let target = reopen(root, dest).map_err(|e| ctx(&e))?;
            let tpath = fd_path(&target);
            let flags = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | extra
                | (locked_flags(&tpath) - opts.cleared);
            mount(None::<&str>, &tpath, None::<&str>, flags, None::<&str>).map_err(|e| ctx(&e))?;
        }
        return apply_propagation(root, dest, &opts).map_err(|e| ctx(&e));
    }

    if matches!(typ, "proc" | "sysfs") {
        // Mounting through a symlink here has been an escape before (a /proc that points at
        // a path where procfs shadows something else): like runc, refuse any destination
        // that exists and is not an ordinary directory.
        ensure_plain_dir(root, dest).map_err(|e| ctx(&e))?;
    }
    let target = mkdir_all_in_root(root, dest, 0o755).map_err(|e| ctx(&e))?;
    let tpath = fd_path(&target);
    match typ {
        "cgroup" | "cgroup2" => {
            let source = cgroup.ok_or_else(|| ctx(&"no cgroup to mount"))?;
            mount_cgroup(root, dest, &tpath, &opts, source).map_err(|e| ctx(&e))?;
        }
        "sysfs" => {
            let data = opts.data_string();
            let res = mount(
                Some("sysfs"),
                &tpath,
                Some("sysfs"),
                opts.flags,
                data.as_deref(),
            );
            if let Err(nix::errno::Errno::EPERM) = res {
                // Without a network namespace of its own a container may not mount sysfs:
                // bind the host's instead, read-only when asked.
                mount(
                    Some("/sys"),
                    &tpath,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| ctx(&e))?;
                if opts.flags.contains(MsFlags::MS_RDONLY) {
                    let target = reopen(root, dest).map_err(|e| ctx(&e))?;
                    mount(
                        None::<&str>,
                        &fd_path(&target),
                        None::<&str>,
                        MsFlags::MS_BIND
                            | MsFlags::MS_REMOUNT
                            | MsFlags::MS_RDONLY
                            | locked_flags(&fd_path(&target)),
                        None::<&str>,
                    )
                    .map_err(|e| ctx(&e))?;
                }
            } else {
                res.map_err(|e| ctx(&e))?;
            }
        }
        _ => {
            let source: PathBuf = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
            let data = opts.data_string();
            mount(
                Some(&source),
                &tpath,
                Some(typ),
                opts.flags,
                data.as_deref(),
            )
            .map_err(|e| ctx(&e))?;
        }
    }
    apply_propagation(root, dest, &opts).map_err(|e| ctx(&e))
}

/// `dest` under `root` either does not exist yet or is a directory itself, not a symlink or
/// anything else (its parents resolve inside the root as usual).
fn ensure_plain_dir(root: &impl AsFd, dest: &Path) -> Result<(), String> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Ok(());
    };
    let parent = match crate::sys::open_in_root(
        root,
        parent,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    match nix::sys::stat::fstatat(&parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.to_string()),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(()),
        Ok(st) => Err(format!(
            "the destination must be an ordinary directory, but it is a {}",
            match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => "symlink",
                libc::S_IFREG => "file",
                _ => "special file",
            }
        )),
    }
}

fn describe(m: &Mount) -> String {
    format!(
        "{} ({})",
        m.source()
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_default(),
        m.typ().as_deref().unwrap_or("bind")
    )
}

fn reopen(root: &impl AsFd, dest: &Path) -> nix::Result<OwnedFd> {
    crate::sys::open_in_root(root, dest, nix::fcntl::OFlag::O_PATH)
}

fn apply_propagation(root: &impl AsFd, dest: &Path, opts: &MountOptions) -> nix::Result<()> {
    if opts.propagation.is_empty() && opts.recursive == (0, 0) {
        return Ok(());
    }
    let target = reopen(root, dest)?;
    if opts.recursive != (0, 0) {
        set_recursive_attrs(&target, opts.recursive)?;
    }
    for flag in &opts.propagation {
        mount(
            None::<&str>,
            &fd_path(&target),
            None::<&str>,
            *flag,
            None::<&str>,
        )?;
    }
    Ok(())
}

/// Where a container's cgroups are on the host, for `cgroup` mounts inside it.
#[derive(Debug, Clone)]
pub enum CgroupMountSource {
    /// cgroup v1: (hierarchy name as mounted under /sys/fs/cgroup, container's dir on the host).
    V1(Vec<(String, PathBuf)>),
    /// cgroup v2: the container's dir on the host, and whether it has a cgroup namespace.
    V2 { dir: PathBuf, cgroupns: bool },
}

fn mount_cgroup(
    root: &impl AsFd,
    dest: &Path,
    tpath: &Path,
    opts: &MountOptions,
    source: &CgroupMountSource,
) -> Result<(), String> {
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    match source {
        CgroupMountSource::V2 { dir, cgroupns } => {
            if *cgroupns {
                mount(
                    Some("cgroup2"),
                    tpath,
                    Some("cgroup2"),
                    opts.flags,
                    None::<&str>,
                )
                .map_err(|e| format!("cgroup2: {e}"))?;
            } else {
                bind(root, dest, dir, ro, base)?;
            }
        }
        CgroupMountSource::V1(dirs) => {
            // A tmpfs holding one bind mount of the container's own cgroup per hierarchy: the
            // container sees its cgroup as the root of each, as a cgroup namespace would show it.
            mount(Some("tmpfs"), tpath, Some("tmpfs"), base, Some("mode=755"))
                .map_err(|e| format!("tmpfs for cgroups: {e}"))?;
            for (name, dir) in dirs {
                let sub = dest.join(name);
                mkdir_all_in_root(root, &sub, 0o755)
                    .map_err(|e| format!("{}: {e}", sub.display()))?;
                bind(root, &sub, dir, ro, base)?;
            }
            if ro {
                let fd = reopen(root, dest).map_err(|e| e.to_string())?;
                mount(
                    None::<&str>,
                    &fd_path(&fd),
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
                    Some("mode=755"),
                )
                .map_err(|e| format!("remounting cgroup tmpfs read-only: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Bind `src` onto `dest` under the root, then remount it with `base` flags (and read-only).
fn bind(root: &impl AsFd, dest: &Path, src: &Path, ro: bool, base: MsFlags) -> Result<(), String> {
    let target = reopen(root, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    mount(
        Some(src),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding {}: {e}", src.display()))?;
    // The old fd names the covered directory; the remount needs the new mount on top.
    let target = reopen(root, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let tpath = fd_path(&target);
    let ro_flag = if ro {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base | ro_flag | locked_flags(&tpath);
    mount(None::<&str>, &tpath, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("remounting {}: {e}", src.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_data_and_propagation() {
        let o = opts(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(
            o.data_string().as_deref(),
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5")
        );
        let o = opts(&["rbind", "ro", "rprivate"]);
        assert!(o.is_bind());
        assert_eq!(o.remount_flags(), MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
    }

    #[test]
    fn recursive_attributes_are_not_data() {
        let o = opts(&["rbind", "rro", "rnosuid", "rnoatime"]);
        assert!(o.data.is_empty());
        assert_eq!(
            o.recursive.0,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
        );
    }

    #[test]
    fn later_options_win() {
        let o = opts(&["ro", "rw"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.cleared.contains(MsFlags::MS_RDONLY));
    }
}
