//! Producing a layer tar from two trees or from an overlayfs upper dir.
//!
//! Trees are walked with directory fds (`openat`/`fstatat` with `O_NOFOLLOW`), children in byte
//! order, so the output is deterministic: the same trees give the same bytes. Headers are GNU
//! format (long names via GNU extensions), xattrs are PAX `SCHILY.xattr.*` records, mtimes are
//! whole seconds, user/group names and atimes are left out.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::Mode;
use tar::{EntryType, Header};

use crate::fsutil;
use crate::path::join;
use crate::{LayerError, OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// Set on a zero-size file in an upper dir that stands for a whiteout (Linux 6.7+ "xwhiteouts").
const OVERLAY_WHITEOUT_XATTR: &str = "trusted.overlay.whiteout";

/// What a diff wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written (including whiteouts).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Write an uncompressed tar layer holding the changes from `lower` to `upper` (two full trees):
/// added/changed files, dirs, symlinks, hardlinks (by inode), devices, fifos, xattrs, and
/// `.wh.NAME` whiteouts for deletions. Sockets are skipped (they cannot be archived).
///
/// An entry counts as changed when its type, mode, owner, mtime, size, xattrs, symlink target,
/// device number or content differ (content is compared byte for byte when all else is equal).
/// Entries are in sorted order (but for a directory whose own metadata is unchanged while its
/// children changed: it follows them), so the same trees give the same bytes. A file whose name starts
/// with `.wh.` cannot be expressed (it would read back as a whiteout) and is refused
/// ([`LayerError::Unrepresentable`]), as are mtimes before 1970 written as 0.
pub fn diff_trees<W: Write>(lower: &Path, upper: &Path, out: W) -> Result<DiffStats, LayerError> {
    let lfd = open_root(lower)?;
    let ufd = open_root(upper)?;
    let mut t = TarOut::new(out, upper);
    t.diff_dir(lfd.as_fd(), ufd.as_fd(), lower, b"")?;
    t.finish()
}

/// Write an uncompressed tar layer from an overlayfs upper dir directly: a 0/0 char device (or a
/// file with the `trusted.overlay.whiteout` xattr) becomes `.wh.NAME`, a dir with
/// `trusted.overlay.opaque=y` is followed by a `.wh..wh..opq` entry. `trusted.overlay.*` xattrs
/// are not copied. Upper dirs using `redirect_dir` or `metacopy` cannot be expressed as a layer
/// without the lower dirs and are refused ([`LayerError::Unrepresentable`]), as is a file whose
/// name starts with `.wh.`.
pub fn diff_overlay_upper<W: Write>(upper: &Path, out: W) -> Result<DiffStats, LayerError> {
    let ufd = open_root(upper)?;
    let mut t = TarOut::new(out, upper);
    t.overlay_dir(ufd.as_fd(), b"")?;
    t.finish()
}

fn open_root(p: &Path) -> Result<OwnedFd, LayerError> {
    fcntl::open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io(p, "open tree", e))
}

fn open_subdir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

/// Children of a directory with their lstat, sorted by name bytes.
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, libc::stat)>> {
    let mut d = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let st = fsutil::lstat_at(dir, &n)?;
            Ok((n, st))
        })
        .collect()
}

fn ifmt(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// A reader that yields exactly `want` bytes of `inner` or fails (a file that shrinks or grows
/// while archived must not corrupt the tar).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Whether two regular files have the same bytes.
fn same_content(a: &mut File, b: &mut File) -> io::Result<bool> {
    let mut ba = vec![0u8; 128 * 1024];
    let mut bb = vec![0u8; 128 * 1024];
    loop {
        let na = read_full(a, &mut ba)?;
        let nb = read_full(b, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// First path seen for an inode with several links, and whether it was written to the tar.
struct LinkSeen {
    path: Vec<u8>,
    emitted: bool,
}

struct TarOut<W: Write> {
    b: tar::Builder<W>,
    stats: DiffStats,
    links: HashMap<(u64, u64), LinkSeen>,
    /// The tree being archived, for error messages.
    top: PathBuf,
}

impl<W: Write> TarOut<W> {
    fn new(out: W, top: &Path) -> Self {
        let mut b = tar::Builder::new(out);
        b.mode(tar::HeaderMode::Complete);
        TarOut {
            b,
            stats: DiffStats::default(),
            links: HashMap::new(),
            top: top.to_path_buf(),
        }
    }

    fn finish(self) -> Result<DiffStats, LayerError> {
        let top = self.top.clone();
        self.b
            .into_inner()
            .map_err(|e| LayerError::io(top, "finish the tar", e))?;
        Ok(self.stats)
    }

    fn err(&self, path: &[u8], op: &'static str, e: impl Into<io::Error>) -> LayerError {
        LayerError::io(self.top.join(OsStr::from_bytes(path)), op, e)
    }

    fn whiteout(&mut self, dir: &[u8], name: &[u8]) -> Result<(), LayerError> {
        let mut base = WHITEOUT_PREFIX.as_bytes().to_vec();
        base.extend_from_slice(name);
        let p = join(dir, &base);
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(0);
        self.b
            .append_data(&mut h, OsStr::from_bytes(&p), io::empty())
            .map_err(|e| self.err(&p, "write whiteout entry", e))?;
        self.stats.entries += 1;
        Ok(())
    }

    fn opaque_marker(&mut self, dir: &[u8]) -> Result<(), LayerError> {
        let p = join(dir, WHITEOUT_OPAQUE.as_bytes());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(0);
        self.b
            .append_data(&mut h, OsStr::from_bytes(&p), io::empty())
            .map_err(|e| self.err(&p, "write opaque marker entry", e))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// Write one entry for `name` in `dir` (tar path `path`).
    fn emit(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        st: &libc::stat,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), LayerError> {
        let kind = ifmt(st);
        if kind == libc::S_IFSOCK {
            tracing::warn!(path = %String::from_utf8_lossy(path), "skipping a socket");
            return Ok(());
        }
        if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Written as is, it would be read back as a whiteout: deleting `NAME` from the
            // layers below (or failing, for `.wh..`) instead of creating the file.
            return Err(LayerError::Unrepresentable {
                path: self.top.join(OsStr::from_bytes(path)),
                reason: format!(
                    "a name starting with {WHITEOUT_PREFIX:?} would be read back as a whiteout"
                ),
            });
        }
        let mut link_to = None;
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            match self.links.get_mut(&key) {
                Some(seen) if seen.path != path => link_to = Some(seen.path.clone()),
                Some(seen) => seen.emitted = true,
                None => {
                    self.links.insert(
                        key,
                        LinkSeen {
                            path: path.to_vec(),
                            emitted: true,
                        },
                    );
                }
            }
        }
        let p = OsStr::from_bytes(path);
        let mut h = Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(0);
        if !xattrs.is_empty() {
            let keys: Vec<String> = xattrs
                .iter()
                .map(|(k, _)| format!("SCHILY.xattr.{k}"))
                .collect();
            self.b
                .append_pax_extensions(
                    keys.iter()
                        .map(String::as_str)
                        .zip(xattrs.iter().map(|(_, v)| v.as_slice())),
                )
                .map_err(|e| self.err(path, "write PAX xattr records", e))?;
        }
        if let Some(target) = link_to {
            h.set_entry_type(EntryType::Link);
            self.b
                .append_link(&mut h, p, OsStr::from_bytes(&target))
                .map_err(|e| self.err(path, "write hardlink entry", e))?;
            self.stats.entries += 1;
            return Ok(());
        }
        let res = match kind {
            libc::S_IFREG => {
                let size = u64::try_from(st.st_size).unwrap_or(0);
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                let f = fcntl::openat(
                    dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.err(path, "open file", e))?;
                self.stats.bytes += size;
                self.b.append_data(
                    &mut h,
                    p,
                    Exact {
                        inner: File::from(f),
                        left: size,
                    },
                )
            }
            libc::S_IFDIR => {
                h.set_entry_type(EntryType::Directory);
                self.b.append_data(&mut h, p, io::empty())
            }
            libc::S_IFLNK => {
                let target =
                    fcntl::readlinkat(dir, name).map_err(|e| self.err(path, "readlink", e))?;
                h.set_entry_type(EntryType::Symlink);
                self.symlink_entry(&mut h, path, target.as_bytes())
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                h.set_entry_type(match kind {
                    libc::S_IFCHR => EntryType::Char,
                    libc::S_IFBLK => EntryType::Block,
                    _ => EntryType::Fifo,
                });
                if kind != libc::S_IFIFO {
                    let (ma, mi) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                    h.set_device_major(ma)
                        .and_then(|()| h.set_device_minor(mi))
                        .map_err(|e| self.err(path, "set device number", e))?;
                }
                self.b.append_data(&mut h, p, io::empty())
            }
            _ => {
                return Err(LayerError::Unrepresentable {
                    path: self.top.join(p),
                    reason: format!("unknown file type {kind:o}"),
                })
            }
        };
        res.map_err(|e| self.err(path, "write tar entry", e))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// A symlink entry with the target stored byte for byte (the tar crate's path setter would
    /// normalise `a//b` or `./x`), using a GNU long-link record when it is over 100 bytes.
    fn symlink_entry(&mut self, h: &mut Header, path: &[u8], target: &[u8]) -> io::Result<()> {
        let slot = h.as_old().linkname.len();
        if target.len() <= slot {
            h.set_link_name_literal(target)?;
        } else {
            let mut k = Header::new_gnu();
            k.as_gnu_mut()
                .ok_or_else(|| io::Error::other("GNU header expected"))?
                .name[..13]
                .copy_from_slice(b"././@LongLink");
            k.set_mode(0o644);
            k.set_uid(0);
            k.set_gid(0);
            k.set_mtime(0);
            k.set_size(target.len() as u64 + 1);
            k.set_entry_type(EntryType::GNULongLink);
            k.set_cksum();
            self.b.append(&k, target.chain(&[0u8][..]))?;
            h.as_old_mut().linkname.copy_from_slice(&target[..slot]);
        }
        self.b.append_data(h, OsStr::from_bytes(path), io::empty())
    }

    /// Add `name` (in `dir`, tar path `path`) and, for a directory, everything below it.
    fn add_tree(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        st: &libc::stat,
    ) -> Result<(), LayerError> {
        let x = fsutil::list_xattrs_at(dir, name).map_err(|e| self.err(path, "read xattrs", e))?;
        self.emit(dir, name, path, st, &x)?;
        if ifmt(st) == libc::S_IFDIR {
            let sub = open_subdir(dir, name).map_err(|e| self.err(path, "open directory", e))?;
            let children = list(sub.as_fd()).map_err(|e| self.err(path, "list directory", e))?;
            for (child, cst) in children {
                let cpath = join(path, &child);
                self.add_tree(sub.as_fd(), &child, &cpath, &cst)?;
            }
        }
        Ok(())
    }

    fn diff_dir(
        &mut self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        lower_top: &Path,
        path: &[u8],
    ) -> Result<bool, LayerError> {
        let lerr = |e: io::Error| {
            LayerError::io(lower_top.join(OsStr::from_bytes(path)), "list directory", e)
        };
        let l = list(lower).map_err(lerr)?;
        let u = list(upper).map_err(|e| self.err(path, "list directory", e))?;
        let (mut i, mut j) = (0, 0);
        // Whether applying the entries written for this directory's children adds, removes or
        // replaces a name in it (and so changes its mtime).
        let mut touched = false;
        while i < l.len() || j < u.len() {
            let ord = match (l.get(i), u.get(j)) {
                (Some(a), Some(b)) => a.0.cmp(&b.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    self.whiteout(path, &l[i].0)?;
                    touched = true;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let (name, st) = &u[j];
                    self.add_tree(upper, name, &join(path, name), st)?;
                    touched = true;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (name, lst) = &l[i];
                    let ust = &u[j].1;
                    let before = self.stats.entries;
                    self.diff_entry(lower, upper, lower_top, name, &join(path, name), lst, ust)?;
                    // A directory kept as one is updated in place; anything else is replaced.
                    let both_dirs = ifmt(lst) == libc::S_IFDIR && ifmt(ust) == libc::S_IFDIR;
                    touched |= self.stats.entries != before && !both_dirs;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(touched)
    }

    #[allow(clippy::too_many_arguments)]
    fn diff_entry(
        &mut self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        lower_top: &Path,
        name: &[u8],
        path: &[u8],
        lst: &libc::stat,
        ust: &libc::stat,
    ) -> Result<(), LayerError> {
        let lpath = || lower_top.join(OsStr::from_bytes(path));
        if ifmt(lst) != ifmt(ust) {
            return self.add_tree(upper, name, path, ust);
        }
        let lx = fsutil::list_xattrs_at(lower, name)
            .map_err(|e| LayerError::io(lpath(), "read xattrs", e))?;
        let ux =
            fsutil::list_xattrs_at(upper, name).map_err(|e| self.err(path, "read xattrs", e))?;
        let mut changed = lst.st_mode != ust.st_mode
            || lst.st_uid != ust.st_uid
            || lst.st_gid != ust.st_gid
            || lst.st_mtime != ust.st_mtime
            || lst.st_mtime_nsec != ust.st_mtime_nsec
            || lx != ux;
        match ifmt(ust) {
            libc::S_IFDIR => {
                if changed {
                    self.emit(upper, name, path, ust, &ux)?;
                }
                let lsub = open_subdir(lower, name)
                    .map_err(|e| LayerError::io(lpath(), "open directory", e))?;
                let usub =
                    open_subdir(upper, name).map_err(|e| self.err(path, "open directory", e))?;
                let touched = self.diff_dir(lsub.as_fd(), usub.as_fd(), lower_top, path)?;
                if !changed && touched {
                    // Names in it were added, removed or replaced but its own metadata did not
                    // change (its mtime was set back): without an entry of its own, applying the
                    // layer would leave it with the time of the apply. After the children, as
                    // its time is set last.
                    self.emit(upper, name, path, ust, &ux)?;
                }
                return Ok(());
            }
            libc::S_IFREG => {
                changed = changed || lst.st_size != ust.st_size;
                if !changed {
                    let open = |d: BorrowedFd<'_>| {
                        fcntl::openat(
                            d,
                            name,
                            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map(File::from)
                    };
                    let mut lf =
                        open(lower).map_err(|e| LayerError::io(lpath(), "open file", e))?;
                    let mut uf = open(upper).map_err(|e| self.err(path, "open file", e))?;
                    changed = !same_content(&mut lf, &mut uf)
                        .map_err(|e| self.err(path, "compare content", e))?;
                }
            }
            libc::S_IFLNK => {
                let lt = fcntl::readlinkat(lower, name)
                    .map_err(|e| LayerError::io(lpath(), "readlink", e))?;
                let ut =
                    fcntl::readlinkat(upper, name).map_err(|e| self.err(path, "readlink", e))?;
                changed = changed || lt != ut;
            }
            _ => changed = changed || lst.st_rdev != ust.st_rdev,
        }
        if changed {
            return self.emit(upper, name, path, ust, &ux);
        }
        // Unchanged, but remember (or re-create) its hardlinks with changed names.
        if ust.st_nlink > 1 {
            let key = (ust.st_dev, ust.st_ino);
            match self.links.get(&key) {
                Some(seen) if seen.emitted => return self.emit(upper, name, path, ust, &ux),
                Some(_) => {}
                None => {
                    self.links.insert(
                        key,
                        LinkSeen {
                            path: path.to_vec(),
                            emitted: false,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn overlay_dir(&mut self, dir: BorrowedFd<'_>, path: &[u8]) -> Result<(), LayerError> {
        let children = list(dir).map_err(|e| self.err(path, "list directory", e))?;
        for (name, st) in children {
            let cpath = join(path, &name);
            let kind = ifmt(&st);
            if kind == libc::S_IFCHR && st.st_rdev == 0 {
                self.whiteout(path, &name)?;
                continue;
            }
            let all = fsutil::list_xattrs_at(dir, &name)
                .map_err(|e| self.err(&cpath, "read xattrs", e))?;
            let mut opaque = false;
            let mut xwhiteout = false;
            let mut x = Vec::with_capacity(all.len());
            for (k, v) in all {
                if k == OVERLAY_OPAQUE_XATTR {
                    opaque = v == b"y";
                } else if k == OVERLAY_WHITEOUT_XATTR {
                    xwhiteout = kind == libc::S_IFREG;
                } else if let Some(f @ ("redirect" | "metacopy")) =
                    k.strip_prefix("trusted.overlay.")
                {
                    return Err(LayerError::Unrepresentable {
                        path: self.top.join(OsStr::from_bytes(&cpath)),
                        reason: format!(
                            "overlay {f} xattr: the upper dir depends on its lower dirs \
                             (mount without redirect_dir/metacopy)"
                        ),
                    });
                } else if !k.starts_with("trusted.overlay.") {
                    x.push((k, v));
                }
            }
            if xwhiteout {
                self.whiteout(path, &name)?;
                continue;
            }
            self.emit(dir, &name, &cpath, &st, &x)?;
            if kind == libc::S_IFDIR {
                if opaque {
                    self.opaque_marker(&cpath)?;
                }
                let sub =
                    open_subdir(dir, &name).map_err(|e| self.err(&cpath, "open directory", e))?;
                self.overlay_dir(sub.as_fd(), &cpath)?;
            }
        }
        Ok(())
    }
}
