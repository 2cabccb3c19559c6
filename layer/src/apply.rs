//! Applying a layer tar onto a root directory.
//!
//! Everything is done relative to directory fds: the parent of each entry is resolved once inside
//! the root (see [`crate::resolve`]) and the entry itself is created with `*at` calls that never
//! follow its final component. The parent fd is cached while consecutive entries share a parent
//! (tar streams are depth-first), and dropped whenever an entry may have replaced a directory on
//! the cached path.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid};
use tar::EntryType;

use crate::fsutil;
use crate::path::{clean, is_within, join, split};
use crate::readahead::ReadAhead;
use crate::resolve::Root;
use crate::{decompressed, LayerError, OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// Size of the buffer file content is copied through.
const COPY_BUFFER: usize = 1 << 20;

/// How whiteout entries are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Apply onto a full merged tree: a whiteout deletes the path; an opaque dir marker empties the
    /// dir of what lower layers put there (entries of the same layer stay).
    Delete,
    /// Apply into an overlayfs upper dir of a fresh snapshot: a whiteout becomes a 0/0 char device,
    /// an opaque dir gets xattr `trusted.overlay.opaque=y`. No mount needed.
    ///
    /// Parent directories a layer does not list are created 0755 root-owned (by the caller) in the
    /// upper dir and so hide the lower dir's metadata; layers written by docker, buildkit and
    /// containerd always list them.
    OverlayUpper,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are applied.
    pub whiteouts: WhiteoutMode,
    /// Chown entries to the tar's uid/gid and keep setuid/setgid bits (true when running as root).
    pub same_owner: bool,
    /// Apply PAX `SCHILY.xattr.*` records as extended attributes.
    pub xattrs: bool,
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries applied (including whiteouts).
    pub entries: u64,
    /// Uncompressed bytes of file content written.
    pub bytes: u64,
}

/// Apply an uncompressed or compressed (sniffed: gzip, zstd) layer from `reader` onto `root`.
///
/// Every path is resolved inside `root`: a name, hardlink target or whiteout whose `..` would
/// leave it is refused ([`LayerError::PathEscape`]), and symlinks met while resolving parents
/// are interpreted as if `root` were `/` (so `etc -> /etc` then `etc/passwd` writes
/// `root/etc/passwd`). The final component of an entry is never followed.
///
/// The stream is decompressed on a helper thread while this thread writes; it is read to its end
/// (so a gzip/zstd checksum is verified). A tar normally ends with zero blocks; one that ends
/// right after its last entry's data (no end blocks, the entry's zero padding complete, partial
/// or missing, as umoci 0.4's `insert` writes them) is accepted as Go's archive/tar accepts it,
/// with a warning. A stream that ends inside a header or inside an entry's data is refused
/// ([`LayerError::Corrupt`], naming the entry and the offset), as is an empty one.
/// Nothing is fsynced: the caller syncs when it commits.
///
/// On error, `root` is left partially applied — entries before the failing one are on disk, the
/// failing file may be partly written under its final name, directory mtimes are not restored —
/// and the caller must discard it.
pub fn apply_layer<R: Read + Send + 'static>(
    reader: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    apply_impl(reader, root, opts, false)
}

/// Test hook: apply with the component-by-component resolver instead of openat2.
#[doc(hidden)]
pub fn apply_layer_without_openat2<R: Read + Send + 'static>(
    reader: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    apply_impl(reader, root, opts, true)
}

fn apply_impl<R: Read + Send + 'static>(
    reader: R,
    root: &Path,
    opts: &ApplyOptions,
    force_fallback: bool,
) -> Result<ApplyStats, LayerError> {
    let resolver =
        Root::open(root, force_fallback).map_err(|e| LayerError::io(root, "open layer root", e))?;
    let stream = ReadAhead::spawn(move || {
        decompressed(reader).map_err(|e| match e {
            LayerError::Corrupt { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })
    })
    .map_err(|e| LayerError::io(root, "start the layer reader thread", e))?;
    let pos = Position {
        offset: Cell::new(0),
        limit: Cell::new(u64::MAX),
        eof: Cell::new(false),
    };
    let mut ap = Applier {
        root: resolver,
        opts,
        pos: &pos,
        cache: None,
        unpacked: HashSet::new(),
        dir_times: HashMap::new(),
        buf: vec![0; COPY_BUFFER],
        stats: ApplyStats::default(),
        last: String::new(),
        last_data_end: None,
    };
    let mut archive = tar::Archive::new(Tracked {
        inner: stream,
        pos: &pos,
    });
    let end = read_entries(&mut archive, &mut ap)?;
    let mut stream = archive.into_inner();
    let at = pos.offset.get();
    match end {
        End::Marker => {
            stream.inner.drain().map_err(|e| LayerError::Corrupt {
                context: "reading past the tar end-of-archive marker".into(),
                source: e,
            })?;
        }
        End::Eof if at == 0 => {
            return Err(LayerError::Corrupt {
                context: "empty stream".into(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "no tar header and no end-of-archive marker",
                ),
            });
        }
        // Go's archive/tar (containerd, umoci) takes the end of the stream at an entry
        // boundary, or inside the zero padding after an entry's data, as the end of the
        // archive; umoci 0.4's `insert` writes such layers. Every entry is complete: accept.
        End::Eof | End::EofInPadding => tracing::warn!(
            root = %root.display(),
            last_entry = %ap.last,
            end = at,
            missing = if end == End::EofInPadding {
                "the last entry's padding and the end-of-archive blocks"
            } else {
                "the end-of-archive blocks"
            },
            "layer tar ends right after its last entry, without end-of-archive blocks; \
             its entries are complete, applied"
        ),
    }
    ap.restore_dir_times()?;
    tracing::debug!(
        root = %root.display(),
        entries = ap.stats.entries,
        bytes = ap.stats.bytes,
        "applied layer"
    );
    Ok(ap.stats)
}

/// How the tar stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// At a zero block: the end-of-archive marker.
    Marker,
    /// At the end of the stream, on an entry boundary (or before any byte).
    Eof,
    /// At the end of the stream, after an entry's data but before the end of its padding.
    EofInPadding,
}

/// Applies every entry of `archive`, and says how the stream ended. A stream that ends inside a
/// header or inside an entry's data is an error naming the entry and the offset.
fn read_entries(
    archive: &mut tar::Archive<Tracked<'_>>,
    ap: &mut Applier<'_>,
) -> Result<End, LayerError> {
    let pos = ap.pos;
    let mut entries = archive.entries().map_err(|e| LayerError::Corrupt {
        context: "starting to read the tar".into(),
        source: e,
    })?;
    loop {
        // To reach the next entry the tar crate skips the rest of the last entry's data and
        // its padding, then reads the next header and the metadata records before it (PAX
        // records, GNU long names and link names, sparse maps), which it keeps in memory whole
        // whatever size their headers claim. Bound that part of the stream.
        let next_header = ap.last_data_end.map_or(0, padded).max(pos.offset.get());
        pos.limit
            .set(next_header.saturating_add(MAX_ENTRY_METADATA));
        let next = entries.next();
        pos.limit.set(u64::MAX);
        let Some(entry) = next else { break };
        let mut entry = match entry {
            Ok(entry) => entry,
            // The tar crate reports the end of the stream anywhere but at a header boundary as
            // an error; inside the last entry's padding it is an end like Go's archive/tar's.
            Err(e) if pos.eof.get() => {
                let at = pos.offset.get();
                return match ap.last_data_end {
                    Some(d) if d <= at && at < padded(d) => Ok(End::EofInPadding),
                    _ => Err(ap.truncated(at, e)),
                };
            }
            Err(e) => {
                return Err(LayerError::Corrupt {
                    context: if ap.last.is_empty() {
                        "reading the first entry header".into()
                    } else {
                        format!("reading the entry header after {:?}", ap.last)
                    },
                    source: e,
                })
            }
        };
        ap.apply_entry(&mut entry)?;
        // Where the entry's data ends in the stream. A file the apply read is read to its end
        // (exact even for a GNU sparse file, whose data follows extension headers); for other
        // entries, the header's data size (the on-archive size for a sparse one).
        let size = if entry.header().entry_type().is_gnu_sparse() {
            entry.header().entry_size().unwrap_or(0)
        } else {
            entry.size()
        };
        let computed = entry.raw_file_position().saturating_add(size);
        ap.last_data_end = Some(computed.max(pos.offset.get()));
    }
    Ok(if pos.eof.get() { End::Eof } else { End::Marker })
}

/// `offset` rounded up to the next tar block.
fn padded(offset: u64) -> u64 {
    offset.saturating_add(BLOCK - 1) / BLOCK * BLOCK
}

/// Tar block size.
const BLOCK: u64 = 512;

/// How far the tar parser has read the uncompressed stream, shared between the reader the
/// parser owns and the code that reports how and where the stream ended.
/// Most bytes of metadata records (PAX extended headers, GNU long names and link names, GNU
/// sparse maps) before one entry. The tar crate reads them into memory whole, so without a
/// bound a small gzip layer whose PAX header claims gigabytes of records (zeros compress a
/// thousandfold) takes that much memory. Real records are a path, a link target and a few
/// extended attributes (at most 64 KiB each on Linux): kilobytes.
pub const MAX_ENTRY_METADATA: u64 = 16 << 20;

struct Position {
    /// Bytes handed to the parser so far.
    offset: Cell<u64>,
    /// The parser may not read past this offset (u64::MAX: no limit): set while it reads an
    /// entry's header and metadata records.
    limit: Cell<u64>,
    /// A read returned 0: the stream has ended. (The tar crate reports both this and the
    /// zero blocks that end an archive as "no more entries".)
    eof: Cell<bool>,
}

/// The uncompressed stream, counting what the parser reads (the tar crate reads exactly the
/// blocks it parses, so the count is the parser's offset in the archive).
struct Tracked<'a> {
    inner: ReadAhead,
    pos: &'a Position,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.pos.limit.get().saturating_sub(self.pos.offset.get());
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "an entry's metadata records (PAX headers, GNU long names, sparse maps) \
                     run past {} MiB",
                    MAX_ENTRY_METADATA >> 20
                ),
            ));
        }
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..take])?;
        if n == 0 && !buf.is_empty() {
            self.pos.eof.set(true);
        }
        self.pos.offset.set(self.pos.offset.get() + n as u64);
        Ok(n)
    }
}

/// Largest size a GNU sparse file may declare. Its holes take no disk here (they are kept as
/// holes), but a tiny layer can declare terabytes of them, and whatever later reads or copies
/// the file without keeping holes (a volume's copy-up, `docker cp`, a diff) would produce that
/// many zeros. Docker and containerd write the zeros out at pull time. Real sparse files in
/// layers (GNU tar `--sparse`: lastlog, disk images) stay far below this.
pub const MAX_SPARSE_FILE_SIZE: u64 = 64 << 30;

/// Refuses a GNU sparse entry whose declared (real) size is over [`MAX_SPARSE_FILE_SIZE`].
fn check_sparse_size<R: Read>(name: &str, entry: &tar::Entry<'_, R>) -> Result<(), LayerError> {
    let size = entry.size();
    if size <= MAX_SPARSE_FILE_SIZE {
        return Ok(());
    }
    let data = entry.header().entry_size().unwrap_or(0);
    Err(invalid(
        name,
        format!(
            "GNU sparse file declares a size of {size} bytes ({} GiB) with {data} bytes of \
             data; sparse files over {} GiB are refused",
            size >> 30,
            MAX_SPARSE_FILE_SIZE >> 30
        ),
    ))
}

/// Metadata of one entry, read from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// What an entry creates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    File,
    Dir,
    Symlink,
    Hardlink,
    Node,
}

/// What kind of object metadata is applied to (decides which xattr failures are tolerated).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Other,
}

struct Applier<'a> {
    root: Root,
    opts: &'a ApplyOptions,
    /// How far the stream has been read, for error messages.
    pos: &'a Position,
    /// The last parent directory resolved, by cleaned path.
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Cleaned paths this layer created (whiteouts only hide lower layers' content).
    unpacked: HashSet<Vec<u8>>,
    /// Directory times, set once all entries are in (writing children changes them).
    dir_times: HashMap<Vec<u8>, (TimeSpec, TimeSpec)>,
    buf: Vec<u8>,
    stats: ApplyStats,
    /// Name of the entry being (or last) applied, for error messages.
    last: String,
    /// Offset in the stream where the last entry's data ends (before its padding).
    last_data_end: Option<u64>,
}

fn invalid(entry: &str, reason: impl Into<String>) -> LayerError {
    LayerError::InvalidEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = c.to_digit(10)? as i64;
        nanos += d * 10i64.pow(8 - i as u32);
    }
    if secs < 0 && nanos > 0 {
        // "-1.5" means 1.5 s before the epoch.
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

impl Applier<'_> {
    /// The error for a stream that ended at `at`, inside a header or an entry's data, when the
    /// parser wanted more (`e`).
    fn truncated(&self, at: u64, e: io::Error) -> LayerError {
        let context = match self.last_data_end {
            Some(end) if at < end => format!(
                "stream ends at byte {at}, inside the data of {:?} (which ends at byte {end})",
                self.last
            ),
            Some(_) => format!(
                "stream ends at byte {at}, inside the header after {:?}",
                self.last
            ),
            None => format!("stream ends at byte {at}, inside the first entry header"),
        };
        LayerError::Corrupt {
            context,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated layer ({e})"),
            ),
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw = entry.path_bytes().into_owned();
        self.last = String::from_utf8_lossy(&raw).into_owned();
        let name = self.last.clone();
        let et = entry.header().entry_type();
        if et.is_pax_global_extensions() {
            tracing::debug!(entry = %name, "ignoring a PAX global header");
            return Ok(());
        }
        self.stats.entries += 1;
        let path = clean(&raw).ok_or_else(|| LayerError::PathEscape {
            entry: name.clone(),
            what: "name",
        })?;
        let (dir, base) = split(&path);
        if base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&name, dir, base);
        }
        let op = match et {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Op::File,
            EntryType::Directory => Op::Dir,
            EntryType::Symlink => Op::Symlink,
            EntryType::Link => Op::Hardlink,
            EntryType::Char | EntryType::Block | EntryType::Fifo => Op::Node,
            _ => {
                return Err(LayerError::UnsupportedEntry {
                    entry: name,
                    kind: format!("{et:?} (type flag {:?})", et.as_byte() as char),
                })
            }
        };
        let meta = self.meta(&name, entry)?;
        if path.is_empty() {
            if op != Op::Dir {
                return Err(invalid(&name, "only a directory can name the root"));
            }
            return self.root_dir(&name, meta);
        }
        self.drop_cache_under(&path);
        let parent = self.parent(dir).map_err(|e| {
            LayerError::entry(&name, "resolve the parent directory inside the root", e)
        })?;
        let pfd = parent.as_fd();
        let res = match op {
            Op::File => self.file(&name, pfd, base, entry, &meta),
            Op::Dir => self.dir(&name, pfd, &path, base, &meta),
            Op::Symlink => self.symlink(&name, pfd, base, entry, &meta),
            Op::Hardlink => self.hardlink(&name, pfd, base, entry),
            Op::Node => self.node(&name, pfd, base, et, entry, &meta),
        };
        self.cache = Some((dir.to_vec(), parent));
        res?;
        self.unpacked.insert(path);
        Ok(())
    }

    /// The parent dir fd for cleaned dir path `dir`, from the cache or resolved (creating
    /// missing directories). The caller puts it back into the cache.
    fn parent(&mut self, dir: &[u8]) -> io::Result<OwnedFd> {
        if let Some((p, fd)) = self.cache.take() {
            if p == dir {
                return Ok(fd);
            }
        }
        self.root.open_dir_create(dir)
    }

    /// Forget the cached parent if `path` is it or one of its ancestors (it may be replaced).
    fn drop_cache_under(&mut self, path: &[u8]) {
        if let Some((p, _)) = &self.cache {
            if is_within(p, path) {
                self.cache = None;
            }
        }
    }

    fn meta<R: Read>(&self, name: &str, entry: &mut tar::Entry<'_, R>) -> Result<Meta, LayerError> {
        let h = entry.header();
        let mode = h
            .mode()
            .map_err(|e| invalid(name, format!("bad mode field: {e}")))?;
        let uid = h
            .uid()
            .map_err(|e| invalid(name, format!("bad uid field: {e}")))?;
        let gid = h
            .gid()
            .map_err(|e| invalid(name, format!("bad gid field: {e}")))?;
        let uid = u32::try_from(uid).map_err(|_| invalid(name, format!("uid {uid} too large")))?;
        let gid = u32::try_from(gid).map_err(|_| invalid(name, format!("gid {gid} too large")))?;
        let secs = h.mtime().unwrap_or(0);
        let mut mtime = TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| invalid(name, format!("bad PAX header: {e}")))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|e| invalid(name, format!("bad PAX record: {e}")))?;
                let Ok(key) = ext.key() else { continue };
                if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    if self.opts.xattrs {
                        xattrs.push((x.to_string(), ext.value_bytes().to_vec()));
                    }
                } else if key == "mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                } else if key == "atime" {
                    atime = parse_pax_time(ext.value_bytes());
                }
            }
        }
        let mut mode = mode & 0o7777;
        if !self.opts.same_owner {
            mode &= !0o6000;
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    fn set_xattr(
        &self,
        name: &str,
        kind: Kind,
        key: &str,
        res: io::Result<()>,
    ) -> Result<(), LayerError> {
        match res {
            Ok(()) => Ok(()),
            // The filesystem cannot store it, or user.* on a symlink/device (the kernel allows
            // user.* only on files and dirs): skip, as tar and containerd do.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTSUP)
                    || (e.raw_os_error() == Some(libc::EPERM)
                        && kind == Kind::Other
                        && key.starts_with("user.")) =>
            {
                tracing::warn!(entry = %name, xattr = %key, error = %e, "xattr not applied");
                Ok(())
            }
            Err(e) => Err(LayerError::entry(name, format!("set xattr {key}"), e)),
        }
    }

    /// Owner, mode, xattrs on an open file or directory (in that order: chown clears setuid and
    /// capabilities).
    fn meta_fd(
        &self,
        name: &str,
        fd: BorrowedFd<'_>,
        m: &Meta,
        kind: Kind,
    ) -> Result<(), LayerError> {
        if self.opts.same_owner {
            unistd::fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
                .map_err(|e| LayerError::entry(name, format!("chown to {}:{}", m.uid, m.gid), e))?;
        }
        stat::fchmod(fd, Mode::from_bits_truncate(m.mode))
            .map_err(|e| LayerError::entry(name, format!("chmod {:o}", m.mode), e))?;
        for (k, v) in &m.xattrs {
            self.set_xattr(name, kind, k, fsutil::fsetxattr(fd, k, v))?;
        }
        Ok(())
    }

    /// Owner, mode (unless a symlink), xattrs, times on `base` in `dir`, not following it.
    fn meta_at(
        &self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &[u8],
        m: &Meta,
        is_symlink: bool,
    ) -> Result<(), LayerError> {
        if self.opts.same_owner {
            unistd::fchownat(
                dir,
                base,
                Some(Uid::from_raw(m.uid)),
                Some(Gid::from_raw(m.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| LayerError::entry(name, format!("lchown to {}:{}", m.uid, m.gid), e))?;
        }
        if !is_symlink {
            // Not a symlink (we just created a device or fifo here), so following is moot.
            stat::fchmodat(
                dir,
                base,
                Mode::from_bits_truncate(m.mode),
                stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| LayerError::entry(name, format!("chmod {:o}", m.mode), e))?;
        }
        for (k, v) in &m.xattrs {
            self.set_xattr(name, Kind::Other, k, fsutil::lsetxattr_at(dir, base, k, v))?;
        }
        stat::utimensat(
            dir,
            base,
            &m.atime,
            &m.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| LayerError::entry(name, "set times", e))?;
        Ok(())
    }

    /// Run `create`; if the name is taken, remove whatever is there and run it once more.
    fn replace<T>(
        &self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &[u8],
        op: &str,
        mut create: impl FnMut() -> nix::Result<T>,
    ) -> Result<T, LayerError> {
        match create() {
            Ok(t) => return Ok(t),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(LayerError::entry(name, op, e)),
        }
        fsutil::remove_all_at(dir, base)
            .map_err(|e| LayerError::entry(name, "remove what the entry replaces", e))?;
        create().map_err(|e| LayerError::entry(name, op, e))
    }

    fn file<R: Read>(
        &mut self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &[u8],
        entry: &mut tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), LayerError> {
        let sparse = entry.header().entry_type().is_gnu_sparse();
        if sparse {
            check_sparse_size(name, entry)?;
        }
        // O_EXCL: never write into an existing inode (it may be a hardlink shared with a lower
        // layer's file); O_NOFOLLOW is implied by O_EXCL but stated for the reader.
        let fd = self.replace(name, dir, base, "create file", || {
            fcntl::openat(
                dir,
                base,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        })?;
        let mut file = File::from(fd);
        let want = entry.size();
        let mut got: u64 = 0;
        let mut written: u64 = 0;
        while got < want {
            let before = self.pos.offset.get();
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(LayerError::Corrupt {
                        context: format!("reading the content of {name:?}"),
                        source: e,
                    })
                }
            };
            got += n as u64;
            if sparse && self.pos.offset.get() == before {
                // Bytes that did not come from the stream: a hole of a GNU sparse file (the
                // tar crate hands them out as zeros, one hole per read). Keep it a hole, as
                // GNU tar and the tar crate's own unpack do; the length is set at the end.
                file.seek(SeekFrom::Current(n as i64))
                    .map_err(|e| LayerError::entry(name, "seek over a sparse file's hole", e))?;
                continue;
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| LayerError::entry(name, "write file", e))?;
            written += n as u64;
        }
        if sparse && got == want {
            // A hole at the end: give the file its size.
            file.set_len(want)
                .map_err(|e| LayerError::entry(name, "set the sparse file's size", e))?;
        }
        if got != want {
            return Err(LayerError::Corrupt {
                context: format!("reading the content of {name:?}"),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "stream ends at byte {} after {got} of its {want} bytes (truncated layer)",
                        self.pos.offset.get()
                    ),
                ),
            });
        }
        self.stats.bytes += written;
        self.meta_fd(name, file.as_fd(), m, Kind::File)?;
        stat::futimens(file.as_fd(), &m.atime, &m.mtime)
            .map_err(|e| LayerError::entry(name, "set times", e))?;
        Ok(())
    }

    fn dir(
        &mut self,
        name: &str,
        dir: BorrowedFd<'_>,
        path: &[u8],
        base: &[u8],
        m: &Meta,
    ) -> Result<(), LayerError> {
        match stat::mkdirat(dir, base, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let st = fsutil::lstat_at(dir, base)
                    .map_err(|e| LayerError::entry(name, "stat existing entry", e))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    self.replace(name, dir, base, "create directory", || {
                        stat::mkdirat(dir, base, Mode::from_bits_truncate(0o700))
                    })?;
                }
                // An existing directory keeps its content; its metadata is updated below.
            }
            Err(e) => return Err(LayerError::entry(name, "create directory", e)),
        }
        let fd = fcntl::openat(
            dir,
            base,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LayerError::entry(name, "open the created directory", e))?;
        self.meta_fd(name, fd.as_fd(), m, Kind::Dir)?;
        self.dir_times.insert(path.to_vec(), (m.atime, m.mtime));
        Ok(())
    }

    fn root_dir(&mut self, name: &str, m: Meta) -> Result<(), LayerError> {
        let fd = fcntl::openat(
            self.root.fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LayerError::entry(name, "open the root", e))?;
        self.meta_fd(name, fd.as_fd(), &m, Kind::Dir)?;
        self.dir_times.insert(Vec::new(), (m.atime, m.mtime));
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &[u8],
        entry: &tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), LayerError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| invalid(name, "symlink without a target"))?;
        if target.is_empty() {
            return Err(invalid(name, "symlink with an empty target"));
        }
        // The target is only data: it is never resolved here.
        self.replace(name, dir, base, "create symlink", || {
            unistd::symlinkat(&*target, dir, base)
        })?;
        self.meta_at(name, dir, base, m, true)
    }

    fn hardlink<R: Read>(
        &mut self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &[u8],
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let raw = entry
            .link_name_bytes()
            .ok_or_else(|| invalid(name, "hardlink without a target"))?;
        let target = clean(&raw).ok_or_else(|| LayerError::PathEscape {
            entry: name.to_string(),
            what: "hardlink target",
        })?;
        if target.is_empty() {
            return Err(invalid(name, "hardlink to the root directory"));
        }
        let shown = String::from_utf8_lossy(&target).into_owned();
        let (tdir, tbase) = split(&target);
        let tdir_fd = self.root.open_dir(tdir).map_err(|e| {
            LayerError::entry(
                name,
                format!("resolve hardlink target {shown:?} inside the root"),
                e,
            )
        })?;
        // Flags 0: if the target is a symlink, link the symlink itself, never what it points to.
        self.replace(name, dir, base, &format!("hardlink to {shown:?}"), || {
            unistd::linkat(tdir_fd.as_fd(), tbase, dir, base, AtFlags::empty())
        })
    }

    fn node<R: Read>(
        &mut self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &[u8],
        et: EntryType,
        entry: &tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), LayerError> {
        let h = entry.header();
        let (kind, dev) = match et {
            EntryType::Fifo => (SFlag::S_IFIFO, 0),
            _ => {
                let major = h
                    .device_major()
                    .map_err(|e| invalid(name, format!("bad device major: {e}")))?
                    .unwrap_or(0);
                let minor = h
                    .device_minor()
                    .map_err(|e| invalid(name, format!("bad device minor: {e}")))?
                    .unwrap_or(0);
                let kind = if et == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (kind, libc::makedev(major, minor))
            }
        };
        self.replace(name, dir, base, "mknod", || {
            stat::mknodat(dir, base, kind, Mode::from_bits_truncate(0o600), dev)
        })?;
        self.meta_at(name, dir, base, m, false)
    }

    fn whiteout(&mut self, name: &str, dir: &[u8], base: &[u8]) -> Result<(), LayerError> {
        if base == WHITEOUT_OPAQUE.as_bytes() {
            return self.opaque(name, dir);
        }
        if base.starts_with(b".wh..wh.") {
            // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not part of the image.
            tracing::debug!(entry = %name, "ignoring aufs metadata entry");
            return Ok(());
        }
        let victim = &base[WHITEOUT_PREFIX.len()..];
        match victim {
            b"" | b"." => return Err(invalid(name, "whiteout names no file")),
            b".." => {
                return Err(LayerError::PathEscape {
                    entry: name.to_string(),
                    what: "whiteout",
                })
            }
            _ => {}
        }
        let vpath = join(dir, victim);
        if self.unpacked.contains(&vpath) {
            // Whiteouts hide lower layers only; this layer's own entry stays.
            return Ok(());
        }
        self.drop_cache_under(&vpath);
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let dfd = match self.root.open_dir(dir) {
                    Ok(fd) => fd,
                    // Nothing below to hide.
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) =>
                    {
                        return Ok(())
                    }
                    Err(e) => {
                        return Err(LayerError::entry(
                            name,
                            "resolve the whiteout's directory inside the root",
                            e,
                        ))
                    }
                };
                fsutil::remove_all_at(dfd.as_fd(), victim)
                    .map_err(|e| LayerError::entry(name, "delete the whited-out path", e))
            }
            WhiteoutMode::OverlayUpper => {
                let parent = self.parent(dir).map_err(|e| {
                    LayerError::entry(name, "resolve the whiteout's directory inside the root", e)
                })?;
                let res = self.replace(
                    name,
                    parent.as_fd(),
                    victim,
                    "create whiteout device",
                    || stat::mknodat(parent.as_fd(), victim, SFlag::S_IFCHR, Mode::empty(), 0),
                );
                self.cache = Some((dir.to_vec(), parent));
                res
            }
        }
    }

    fn opaque(&mut self, name: &str, dir: &[u8]) -> Result<(), LayerError> {
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let dfd = match self.root.open_dir(dir) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => {
                        return Err(LayerError::entry(
                            name,
                            "resolve the opaque directory inside the root",
                            e,
                        ))
                    }
                };
                if let Some((p, _)) = &self.cache {
                    if is_within(p, dir) && p.as_slice() != dir {
                        self.cache = None;
                    }
                }
                let d = Dir::openat(
                    dfd.as_fd(),
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| LayerError::entry(name, "open the opaque directory", e))?;
                self.clear_lower(d, dir)
                    .map_err(|e| LayerError::entry(name, "empty the opaque directory", e))
            }
            WhiteoutMode::OverlayUpper => {
                let parent = self.root.open_dir_create(dir).map_err(|e| {
                    LayerError::entry(name, "resolve the opaque directory inside the root", e)
                })?;
                let fd = fcntl::openat(
                    parent.as_fd(),
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| LayerError::entry(name, "open the opaque directory", e))?;
                fsutil::fsetxattr(fd.as_fd(), OVERLAY_OPAQUE_XATTR, b"y").map_err(|e| {
                    LayerError::entry(name, format!("set xattr {OVERLAY_OPAQUE_XATTR}"), e)
                })
            }
        }
    }

    /// Remove from directory `d` (at cleaned path `path`) everything this layer did not create,
    /// descending into directories it did create.
    fn clear_lower(&self, mut d: Dir, path: &[u8]) -> io::Result<()> {
        let mut children = Vec::new();
        for ent in d.iter() {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                children.push((n.to_vec(), ent.file_type()));
            }
        }
        for (child, ty) in children {
            let cpath = join(path, &child);
            if !self.unpacked.contains(&cpath) {
                fsutil::remove_all_at(d.as_fd(), &child)?;
                continue;
            }
            let is_dir = match ty {
                Some(t) => t == Type::Directory,
                None => {
                    fsutil::lstat_at(d.as_fd(), &child)?.st_mode & libc::S_IFMT == libc::S_IFDIR
                }
            };
            if is_dir {
                let sub = Dir::openat(
                    d.as_fd(),
                    child.as_slice(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                self.clear_lower(sub, &cpath)?;
            }
        }
        Ok(())
    }

    /// Set directory times last: creating their children changed them.
    fn restore_dir_times(&mut self) -> Result<(), LayerError> {
        self.cache = None;
        for (path, (atime, mtime)) in &self.dir_times {
            let shown = String::from_utf8_lossy(path);
            let err = |e: io::Error| LayerError::entry(&shown, "set directory times", e);
            if path.is_empty() {
                let fd = fcntl::openat(
                    self.root.fd(),
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err(e.into()))?;
                stat::futimens(fd.as_fd(), atime, mtime).map_err(|e| err(e.into()))?;
                continue;
            }
            let (dir, base) = split(path);
            let dfd = match self.root.open_dir(dir) {
                Ok(fd) => fd,
                // Removed or replaced by a later entry of this layer.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(err(e)),
            };
            match fsutil::lstat_at(dfd.as_fd(), base) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(err(e)),
            }
            stat::utimensat(
                dfd.as_fd(),
                base,
                atime,
                mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| err(e.into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (12, 0));
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 750_000_000));
        assert!(parse_pax_time(b"abc").is_none());
    }
}
