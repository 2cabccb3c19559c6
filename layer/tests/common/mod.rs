//! Helpers shared by the integration tests: building layer tars (including malformed ones),
//! reading back what landed on disk, overlay mounts with a Drop guard.
#![allow(dead_code)]

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_layer::{ApplyOptions, WhiteoutMode};
use tar::{EntryType, Header};

/// Builds a layer tar in memory.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

/// Metadata for an entry.
#[derive(Clone)]
pub struct M {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(&'static str, &'static [u8])>,
}

impl Default for M {
    fn default() -> Self {
        M {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            xattrs: Vec::new(),
        }
    }
}

impl M {
    pub fn mode(mode: u32) -> M {
        M {
            mode,
            ..M::default()
        }
    }
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(&mut self, et: EntryType, m: &M) -> Header {
        if !m.xattrs.is_empty() {
            let keys: Vec<String> = m
                .xattrs
                .iter()
                .map(|(k, _)| format!("SCHILY.xattr.{k}"))
                .collect();
            self.b
                .append_pax_extensions(
                    keys.iter()
                        .map(String::as_str)
                        .zip(m.xattrs.iter().map(|(_, v)| *v)),
                )
                .unwrap();
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(et);
        h.set_mode(m.mode);
        h.set_uid(m.uid);
        h.set_gid(m.gid);
        h.set_mtime(m.mtime);
        h.set_size(0);
        h
    }

    pub fn dir(&mut self, path: &str, m: M) -> &mut Self {
        let mut h = self.header(EntryType::Directory, &m);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn file(&mut self, path: &str, content: &[u8], m: M) -> &mut Self {
        let mut h = self.header(EntryType::Regular, &m);
        h.set_size(content.len() as u64);
        self.b.append_data(&mut h, path, content).unwrap();
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = self.header(EntryType::Symlink, &M::mode(0o777));
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = self.header(EntryType::Link, &M::default());
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn node(&mut self, path: &str, et: EntryType, major: u32, minor: u32, m: M) -> &mut Self {
        let mut h = self.header(et, &m);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// An entry whose name and link name are written into the header as raw bytes, bypassing the
    /// tar crate's checks (which refuse `..`): how a hostile layer is made.
    pub fn raw(&mut self, name: &str, et: EntryType, link: &str, data: &[u8]) -> &mut Self {
        let mut h = Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(et);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    /// A PAX `path` record naming the next entry (overrides its header name), unchecked.
    pub fn pax_path(&mut self, path: &str) -> &mut Self {
        self.b
            .append_pax_extensions([("path", path.as_bytes())])
            .unwrap();
        self
    }

    /// A GNU long-name record naming the next entry, unchecked.
    pub fn gnu_long_name(&mut self, path: &str) -> &mut Self {
        let mut h = Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(path.len() as u64 + 1);
        h.set_entry_type(EntryType::GNULongName);
        h.set_cksum();
        let mut data = path.as_bytes().to_vec();
        data.push(0);
        self.b.append(&h, &data[..]).unwrap();
        self
    }

    /// A GNU sparse file (type 'S') of `real_size` bytes whose data is `blocks` (offset, bytes;
    /// each but the last a multiple of 512 bytes long), the rest holes; the last block must end
    /// at `real_size` (an empty one there for a trailing hole). Past four blocks the map goes on in
    /// GNU extension headers, as GNU tar writes it.
    pub fn sparse(&mut self, path: &str, real_size: u64, blocks: &[(u64, &[u8])]) -> &mut Self {
        let mut h = self.header(EntryType::GNUSparse, &M::default());
        h.set_path(path).unwrap();
        let data: Vec<u8> = blocks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        h.set_size(data.len() as u64);
        let (first, rest) = blocks.split_at(blocks.len().min(4));
        let g = h.as_gnu_mut().unwrap();
        for (s, (off, d)) in g.sparse.iter_mut().zip(first) {
            s.set_offset(*off);
            s.set_length(d.len() as u64);
        }
        g.set_real_size(real_size);
        g.set_is_extended(!rest.is_empty());
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        let mut chunks = rest.chunks(21).peekable();
        while let Some(chunk) = chunks.next() {
            let mut ext = tar::GnuExtSparseHeader::new();
            for (s, (off, d)) in ext.sparse.iter_mut().zip(chunk) {
                s.set_offset(*off);
                s.set_length(d.len() as u64);
            }
            ext.set_is_extended(chunks.peek().is_some());
            raw.extend_from_slice(ext.as_bytes());
        }
        raw.extend_from_slice(&data);
        raw.resize(raw.len().div_ceil(512) * 512, 0);
        self.b.get_mut().extend_from_slice(&raw);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

pub fn delete_opts() -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        same_owner: true,
        xattrs: true,
    }
}

pub fn upper_opts() -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::OverlayUpper,
        same_owner: true,
        xattrs: true,
    }
}

/// Apply with openat2 (false) or the fallback walker (true).
pub fn apply(
    tar: Vec<u8>,
    root: &Path,
    opts: &ApplyOptions,
    fallback: bool,
) -> Result<berth_layer::ApplyStats, berth_layer::LayerError> {
    let r = std::io::Cursor::new(tar);
    if fallback {
        berth_layer::apply_layer_without_openat2(r, root, opts)
    } else {
        berth_layer::apply_layer(r, root, opts)
    }
}

/// Read an xattr without following symlinks.
pub fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and buffer.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

pub fn setxattr(p: &Path, name: &str, v: &[u8]) {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(cp.as_ptr(), cn.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// All xattrs of a path (not following symlinks), sorted.
pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out: Vec<(String, Vec<u8>)> = names[..n as usize]
        .split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let k = String::from_utf8_lossy(k).into_owned();
            let v = getxattr(p, &k).unwrap_or_default();
            (k, v)
        })
        .collect();
    out.sort();
    out
}

pub fn mknod(p: &Path, kind: libc::mode_t, perm: libc::mode_t, major: u32, minor: u32) {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(cp.as_ptr(), kind | perm, libc::makedev(major, minor)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// A file outside the root that no layer may touch.
pub struct Canary {
    pub path: PathBuf,
}

pub const CANARY: &[u8] = b"canary: must stay untouched\n";

impl Canary {
    pub fn new(dir: &Path) -> Canary {
        let path = dir.join("canary");
        std::fs::write(&path, CANARY).unwrap();
        Canary { path }
    }

    pub fn assert_untouched(&self) {
        let md = std::fs::symlink_metadata(&self.path).expect("canary must still exist");
        use std::os::unix::fs::MetadataExt;
        assert!(md.file_type().is_file(), "canary must stay a regular file");
        assert_eq!(md.nlink(), 1, "canary must not gain hardlinks");
        assert_eq!(
            std::fs::read(&self.path).unwrap(),
            CANARY,
            "canary content changed"
        );
    }
}

/// An overlay mount, unmounted (lazily) on drop.
pub struct OverlayMount {
    pub target: PathBuf,
}

impl OverlayMount {
    pub fn new(lower: &Path, upper: &Path, work: &Path, target: &Path) -> OverlayMount {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount overlay {opts}: {e}"));
        OverlayMount {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Entry names of a tar, in order.
pub fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            String::from_utf8_lossy(&e.path_bytes()).into_owned()
        })
        .collect()
}

/// What a tree comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<PathBuf>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A tree as path → Node, plus its hardlink groups (paths sharing an inode, size > 1, sorted).
pub fn snapshot(root: &Path) -> (std::collections::BTreeMap<String, Node>, Vec<Vec<String>>) {
    use std::os::unix::fs::MetadataExt;
    let mut nodes = std::collections::BTreeMap::new();
    let mut inodes: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    fn walk(
        root: &Path,
        dir: &Path,
        nodes: &mut std::collections::BTreeMap<String, Node>,
        inodes: &mut std::collections::BTreeMap<u64, Vec<String>>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let kind = md.mode() & libc::S_IFMT;
            if kind != libc::S_IFDIR {
                inodes.entry(md.ino()).or_default().push(rel.clone());
            }
            nodes.insert(
                rel,
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    rdev: md.rdev(),
                    content: (kind == libc::S_IFREG).then(|| std::fs::read(&p).unwrap()),
                    target: (kind == libc::S_IFLNK).then(|| std::fs::read_link(&p).unwrap()),
                    xattrs: xattrs(&p)
                        .into_iter()
                        .filter(|(k, _)| !k.starts_with("trusted.overlay."))
                        .collect(),
                },
            );
            if kind == libc::S_IFDIR {
                walk(root, &p, nodes, inodes);
            }
        }
    }
    walk(root, root, &mut nodes, &mut inodes);
    let mut groups: Vec<Vec<String>> = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    (nodes, groups)
}

/// Assert two trees are equal (type, mode, owner, content, link targets, xattrs, devices,
/// hardlink groups), naming the first difference.
pub fn assert_same_tree(got: &Path, want: &Path) {
    let (g, gl) = snapshot(got);
    let (w, wl) = snapshot(want);
    let gk: Vec<_> = g.keys().collect();
    let wk: Vec<_> = w.keys().collect();
    assert_eq!(gk, wk, "paths differ");
    for (k, wn) in &w {
        assert_eq!(&g[k], wn, "{k} differs");
    }
    assert_eq!(gl, wl, "hardlink groups differ");
}

/// Set every mtime under `root` (not root itself) to a fixed time, without following symlinks.
pub fn settle_times(root: &Path) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(1_500_000_000, 123_456_789);
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            settle_times(&p);
        }
        utimensat(
            nix::fcntl::AT_FDCWD,
            &p,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}
