//! Idmapped bind mounts (runtime-spec 1.2: a mount's `uidMappings`/`gidMappings`, options
//! `idmap` and `ridmap`).
//!
//! The kernel wants CAP_SYS_ADMIN in the user namespace of the source's filesystem (the host's)
//! to idmap a mount, which an init inside a new user namespace lacks. So the runtime builds each
//! idmapped mount on the host before clone: a throwaway user namespace holding the mappings,
//! `open_tree(OPEN_TREE_CLONE)` of the source, `mount_setattr(MOUNT_ATTR_IDMAP)`. The init
//! inherits the detached mount's fd and attaches it with `move_mount` onto the destination it
//! opened inside the rootfs.
//!
//! Without explicit mappings, `idmap`/`ridmap` use the container's own user namespace mappings
//! (runc's behaviour), so that a host directory owned by root appears owned by the container's
//! root.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxIdMapping, Mount};

use crate::config::Config;
use crate::mounts::parse_options;
use crate::namespaces::{id_map_text, write_id_maps};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// The detached idmapped mounts, one slot per entry of config.json's `mounts`.
#[derive(Debug, Default)]
pub struct IdmappedMounts {
    fds: Vec<Option<OwnedFd>>,
}

impl IdmappedMounts {
    /// The detached mount for mount entry `index`, if that entry is idmapped.
    pub fn get(&self, index: usize) -> Option<&OwnedFd> {
        self.fds.get(index).and_then(Option::as_ref)
    }
}

/// Whether a mount asks to be idmapped, and recursively so.
fn wants_idmap(m: &Mount) -> Option<bool> {
    let opts = m.options().as_deref().unwrap_or(&[]);
    let ridmap = opts.iter().any(|o| o == "ridmap");
    let idmap = ridmap
        || opts.iter().any(|o| o == "idmap")
        || m.uid_mappings().is_some()
        || m.gid_mappings().is_some();
    idmap.then_some(ridmap)
}

/// Check the idmapped mounts of a config without touching anything (part of validation).
pub fn validate(cfg: &Config) -> Result<(), String> {
    for m in cfg.spec.mounts().as_deref().unwrap_or(&[]) {
        mappings_for(cfg, m)?;
    }
    Ok(())
}

/// An idmapped mount's uid and gid mappings.
type Mappings<'a> = (&'a [LinuxIdMapping], &'a [LinuxIdMapping]);

/// The (uid, gid) mappings of an idmapped mount, or None for a plain mount.
fn mappings_for<'a>(cfg: &'a Config, m: &'a Mount) -> Result<Option<Mappings<'a>>, String> {
    if wants_idmap(m).is_none() {
        return Ok(None);
    }
    let dest = m.destination().display();
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    if !(m.typ().as_deref() == Some("bind") || opts.is_bind()) {
        return Err(format!(
            "mount {dest}: idmapped mounts must be bind mounts (type \"bind\" or option \"bind\")"
        ));
    }
    let pair = match (m.uid_mappings(), m.gid_mappings()) {
        (Some(u), Some(g)) => (u.as_slice(), g.as_slice()),
        (None, None) => {
            let linux = cfg.spec.linux().as_ref();
            match (
                linux.and_then(|l| l.uid_mappings().as_deref()),
                linux.and_then(|l| l.gid_mappings().as_deref()),
            ) {
                (Some(u), Some(g)) if !u.is_empty() && !g.is_empty() => (u, g),
                _ => {
                    return Err(format!(
                        "mount {dest}: idmap without uidMappings/gidMappings needs the \
                         container's linux.uidMappings and linux.gidMappings"
                    ))
                }
            }
        }
        _ => {
            return Err(format!(
                "mount {dest}: uidMappings and gidMappings must be given together"
            ))
        }
    };
    if pair.0.is_empty() || pair.1.is_empty() {
        return Err(format!(
            "mount {dest}: uidMappings and gidMappings must not be empty"
        ));
    }
    Ok(Some(pair))
}

/// Build every idmapped mount of the config as a detached mount (on the host, before clone).
pub fn prepare(cfg: &Config) -> Result<IdmappedMounts, String> {
    let mounts = cfg.spec.mounts().as_deref().unwrap_or(&[]);
    let mut out = IdmappedMounts::default();
    // Mounts with the same mappings share one user namespace.
    let mut userns: Vec<(String, OwnedFd)> = Vec::new();
    for m in mounts {
        let Some((uids, gids)) = mappings_for(cfg, m)? else {
            out.fds.push(None);
            continue;
        };
        let key = format!("{}|{}", id_map_text(uids), id_map_text(gids));
        let ns = match userns.iter().position(|(k, _)| *k == key) {
            Some(i) => &userns[i].1,
            None => {
                let fd = user_namespace(uids, gids)
                    .map_err(|e| format!("mount {}: {e}", m.destination().display()))?;
                userns.push((key, fd));
                &userns[userns.len() - 1].1
            }
        };
        let fd = detached_idmapped(cfg, m, ns)
            .map_err(|e| format!("mount {}: {e}", m.destination().display()))?;
        out.fds.push(Some(fd));
    }
    Ok(out)
}

/// A user namespace with these mappings, held by an fd: a child that unshares it and waits
/// while we write its maps and open its namespace, then exits.
fn user_namespace(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd, String> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the idmap user namespace: pipe: {e}"))?;
    let (rd_raw, wr_raw) = (rd.as_raw_fd(), wr.as_raw_fd());
    let mut stack = vec![0u8; 64 * 1024];
    let child = unsafe {
        nix::sched::clone(
            Box::new(|| {
                // Wait until the parent closes its end: read returns 0.
                libc::close(wr_raw);
                let mut b = [0u8; 1];
                libc::read(rd_raw, b.as_mut_ptr().cast(), 1);
                0
            }),
            &mut stack,
            nix::sched::CloneFlags::CLONE_NEWUSER,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| format!("creating the idmap user namespace: clone: {e}"))?;
    drop(rd);
    let res = write_id_maps(child.as_raw(), uids, gids).and_then(|()| {
        let path = format!("/proc/{child}/ns/user");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| format!("opening {path}: {e}"))
    });
    drop(wr);
    let _ = nix::sys::wait::waitpid(child, None);
    res.map_err(|e| format!("creating the idmap user namespace: {e}"))
}

/// `open_tree(OPEN_TREE_CLONE)` of the mount's source, idmapped with the user namespace `ns`.
fn detached_idmapped(cfg: &Config, m: &Mount, ns: &OwnedFd) -> Result<OwnedFd, String> {
    let source = m.source().as_ref().ok_or("bind mount without a source")?;
    let source = if source.is_absolute() {
        source.clone()
    } else {
        cfg.bundle.join(source)
    };
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let recursive_tree = opts.flags.contains(nix::mount::MsFlags::MS_REC);
    let ridmap = wants_idmap(m) == Some(true);
    let tree = open_tree(&source, recursive_tree)
        .map_err(|e| format!("open_tree {}: {e}", source.display()))?;
    set_idmap(&tree, ns, ridmap).map_err(|e| match e {
        nix::errno::Errno::EINVAL => format!(
            "idmapping {}: {e} (the filesystem or kernel does not support idmapped mounts)",
            source.display()
        ),
        e => format!("idmapping {}: {e}", source.display()),
    })?;
    Ok(tree)
}

fn open_tree(path: &Path, recursive: bool) -> nix::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    nix::errno::Errno::result(fd).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn set_idmap(tree: &OwnedFd, ns: &OwnedFd, recursive: bool) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// Attach a detached mount onto `target` (an O_PATH fd opened inside the rootfs).
pub fn attach(tree: &OwnedFd, target: &OwnedFd) -> nix::Result<()> {
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// Whether this kernel can idmap mounts (the features document asks).
pub fn supported() -> bool {
    // mount_setattr with no flags on an invalid fd: ENOSYS when the call is missing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<MountAttr>(),
            0usize,
        )
    };
    !(rc == -1 && nix::errno::Errno::last() == nix::errno::Errno::ENOSYS)
}
