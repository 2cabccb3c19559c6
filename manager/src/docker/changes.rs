//! A container's filesystem as data: `GET /containers/{id}/changes` (`docker diff`), the
//! changes of its writable layer, and `GET /containers/{id}/export` (`docker export`), a tar of
//! its whole filesystem. [`with_layer`] gives the writable layer as a layer tar, which
//! `docker commit` (`commit.rs`) stores as a new image layer.
//!
//! The layer tar is made the way the builder makes a RUN step's: the snapshot's overlay
//! upper dir with the layer crate's `diff_overlay_upper` (whiteouts and opaque dirs become
//! `.wh.` entries), or for the plain-copy snapshotter `diff_trees` against a read-only view of
//! the image, an `extract-docker-*` snapshot inside a temporary lease, so a crash leaves
//! nothing behind. `docker diff` needs no content: with overlayfs it walks the upper dir and
//! looks paths up in the lower dirs, as dockerd's overlay driver does. Mount points the
//! runtime made are left out of both, as dockerd leaves out its init layer.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_layer::{DiffStats, LayerError, WhiteoutMode};
use berth_store::metadata::{Container, Labels};
use berth_store::StoreError;
use http::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;

use super::archive::{add, cstr, lstatat, rootfs, ChanWriter};
use super::errors::ApiError;
use super::server::{json as json_reply, stream, Chunk, Reply, Req};
use super::Api;
use crate::daemon::mounts::TempMount;

/// A container's writable layer and the image below it, for the time of an operation.
pub struct Layer<'a> {
    /// The snapshot's upper dir (overlay) or whole tree (plain copy).
    pub upper: &'a Path,
    /// How to read `upper`.
    pub mode: WhiteoutMode,
    /// The image's tree, mounted read-only.
    pub lower: &'a Path,
    /// The destinations of the container's mounts, relative to the root ("proc",
    /// "etc/hosts"): the runtime makes those missing from the image as mount points in the
    /// writable layer, and they are not the process's changes (dockerd keeps them in an
    /// "init" layer that diff and commit leave out).
    pub mount_points: HashSet<String>,
}

impl Layer<'_> {
    fn raw_diff(&self, out: &mut dyn Write) -> Result<DiffStats, LayerError> {
        if self.mode == WhiteoutMode::OverlayUpper {
            berth_layer::diff_overlay_upper(self.upper, out)
        } else {
            berth_layer::diff_trees(self.lower, self.upper, out)
        }
    }

    /// Whether a layer entry is a mount point the runtime made.
    fn made_by_runtime(&self, rel: &str) -> bool {
        self.mount_points.contains(rel) && std::fs::symlink_metadata(self.lower.join(rel)).is_err()
    }

    /// Writes the writable layer as an uncompressed layer tar, without the runtime's mount
    /// points; returns the entries written.
    pub fn diff(&self, out: &mut dyn Write) -> Result<DiffStats, ApiError> {
        let (reader, mut writer) = pipe()?;
        std::thread::scope(|s| {
            let w = s.spawn(move || {
                let r = self.raw_diff(&mut writer);
                drop(writer);
                r
            });
            let kept = drop_entries(reader, out, |p| self.made_by_runtime(p));
            let written = w
                .join()
                .map_err(|_| ApiError::internal("the diff thread panicked"))?;
            // A failed diff explains a reader error better than the reader does.
            written.map_err(|e| ApiError::internal(format!("diffing the container: {e}")))?;
            let entries =
                kept.map_err(|e| ApiError::internal(format!("filtering the diff: {e}")))?;
            Ok(DiffStats {
                entries,
                ..DiffStats::default()
            })
        })
    }
}

/// Copies a tar from `input` to `out` entry by entry, as they are (raw headers, GNU long
/// names and PAX records kept with their entry), leaving out the entries whose path `drop`
/// picks (with their extension records). Returns the entries written.
fn drop_entries(
    input: impl Read,
    out: &mut dyn Write,
    drop: impl Fn(&str) -> bool,
) -> io::Result<u64> {
    let mut a = tar::Archive::new(input);
    let mut b = tar::Builder::new(out);
    let mut pending: Vec<(tar::Header, Vec<u8>)> = Vec::new();
    let mut kept = 0;
    for e in a.entries()?.raw(true) {
        let mut e = e?;
        let ty = e.header().entry_type();
        if ty.is_gnu_longname()
            || ty.is_gnu_longlink()
            || ty.is_pax_local_extensions()
            || ty.is_pax_global_extensions()
        {
            let mut data = Vec::new();
            e.read_to_end(&mut data)?;
            pending.push((e.header().clone(), data));
            continue;
        }
        // A long name is never a mount point of the runtime's (those are short).
        let long = pending
            .iter()
            .any(|(h, _)| h.entry_type().is_gnu_longname());
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let rel = name.trim_start_matches("./").trim_end_matches('/');
        if !long && drop(rel) {
            pending.clear();
            continue;
        }
        for (h, d) in pending.drain(..) {
            b.append(&h, d.as_slice())?;
        }
        let h = e.header().clone();
        b.append(&h, &mut e)?;
        kept += 1;
    }
    b.finish()?;
    Ok(kept)
}

/// Files berthd's networks mount into every container with a network namespace of its own, at
/// task create (so they are not in the stored spec).
const NETWORK_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// The mount destinations of a container's spec, relative to the root, and the network files.
fn mount_points(c: &Container) -> HashSet<String> {
    let spec: serde_json::Value = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or_default();
    spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["destination"].as_str())
        .map(|d| {
            d.split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect::<Vec<_>>()
                .join("/")
        })
        .filter(|d| !d.is_empty())
        .chain(NETWORK_FILES.iter().map(|f| f.to_string()))
        .collect()
}

/// A pipe (close-on-exec) carrying a layer tar from a diff thread to its reader.
fn pipe() -> Result<(std::fs::File, std::fs::File), ApiError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ApiError::internal(format!("a pipe for the diff: {e}")))?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

/// Removes a view snapshot on drop.
struct ViewGuard<'a> {
    api: &'a Api,
    ctx: &'a berth_store::Ctx,
    key: Option<String>,
}

impl Drop for ViewGuard<'_> {
    fn drop(&mut self) {
        if let Some(k) = &self.key {
            if let Err(e) = self.api.state.store().snapshotter().remove(self.ctx, k) {
                tracing::warn!(key = %k, error = %e, "docker api: removing a view");
            }
        }
    }
}

/// Runs `f` on container `c`'s writable layer (in a blocking thread).
pub fn with_layer<R>(
    api: &Api,
    c: &Container,
    f: impl FnOnce(&Layer) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    if c.snapshot_key.is_empty() {
        return Err(ApiError::internal(format!(
            "container {} has no snapshot",
            c.id
        )));
    }
    let store = api.state.store();
    let r: Result<Result<R, ApiError>, StoreError> = store.with_temp_lease(&api.ctx(), |ctx| {
        let sn = store.snapshotter();
        let (upper, mode) = sn.apply_target(ctx, &c.snapshot_key)?;
        let parent = sn.stat(ctx, &c.snapshot_key)?.parent;
        let mut guard = ViewGuard {
            api,
            ctx,
            key: None,
        };
        let mounts = match &parent {
            Some(p) => {
                let key = format!("extract-docker-{}-view-{}", c.id, fastrand::u64(..));
                let m = sn.view(ctx, &key, Some(p), Labels::new())?;
                guard.key = Some(key);
                m
            }
            None => Vec::new(),
        };
        let tm = match TempMount::new(api.state.state_dir(), &mounts) {
            Ok(t) => t,
            Err(e) => {
                return Ok(Err(ApiError::internal(format!(
                    "mounting the image of container {}: {e}",
                    c.id
                ))))
            }
        };
        let r = f(&Layer {
            upper: &upper,
            mode,
            lower: tm.path(),
            mount_points: mount_points(c),
        });
        drop(tm);
        drop(guard);
        Ok(r)
    });
    r?
}

/// One change as Docker reports it: 0 modified, 1 added, 2 deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The path in the container.
    pub path: String,
    /// The kind.
    pub kind: u8,
}

const MODIFIED: u8 = 0;
const ADDED: u8 = 1;
const DELETED: u8 = 2;

/// What one entry of a writable layer says.
enum Seen {
    /// The path was deleted (a whiteout).
    Whiteout,
    /// The directory hides what the image had in it (an opaque dir).
    Opaque,
    /// The path was written: a directory or not, with its permission bits and mtime.
    Entry { is_dir: bool, mode: u32, mtime: u64 },
}

/// The metadata of a path of the image (relative to the root), `None` when it has none.
type Lower<'a> = &'a dyn Fn(&str) -> Option<std::fs::Metadata>;

/// Docker's changes from a writable layer's entries, in the order of a walk: a whiteout
/// deletes its path, an opaque dir is reported deleted (as dockerd's overlay driver reports
/// it), an entry the image has is modified (a directory whose mode and mtime did not change
/// is left out), other entries are added; the parent of an added or deleted path is marked
/// modified unless it already is.
#[derive(Default)]
struct Collector {
    out: Vec<Change>,
    index: HashMap<String, usize>,
    dirs: HashSet<String>,
}

impl Collector {
    fn push(&mut self, path: String, kind: u8) {
        self.index.insert(path.clone(), self.out.len());
        self.out.push(Change { path, kind });
    }

    fn add(&mut self, rel: &str, seen: Seen, lower: Lower) {
        let path = format!("/{rel}");
        let parent = match path.rsplit_once('/') {
            Some(("", _)) | None => "/".to_string(),
            Some((p, _)) => p.to_string(),
        };
        let kind = match seen {
            Seen::Opaque => {
                match self.index.get(&path) {
                    Some(&i) => self.out[i].kind = DELETED,
                    None => self.push(path.clone(), DELETED),
                }
                self.dirs.insert(path);
                return;
            }
            Seen::Whiteout => DELETED,
            Seen::Entry {
                is_dir,
                mode,
                mtime,
            } => {
                let kind = match lower(rel) {
                    Some(md) => {
                        let same_dir = is_dir
                            && md.is_dir()
                            && mode == md.mode() & 0o7777
                            && mtime == md.mtime().max(0) as u64;
                        if same_dir {
                            return;
                        }
                        MODIFIED
                    }
                    None => ADDED,
                };
                if is_dir {
                    self.dirs.insert(path.clone());
                }
                kind
            }
        };
        if (kind == ADDED || kind == DELETED) && parent != "/" && !self.dirs.contains(&parent) {
            self.dirs.insert(parent.clone());
            self.push(parent, MODIFIED);
        }
        self.push(path, kind);
    }
}

/// Docker's changes from a layer tar (`.wh.` whiteouts, `.wh..wh..opq` opaque markers).
fn changes_from_tar(tar: impl Read, lower: Lower) -> io::Result<Vec<Change>> {
    let mut c = Collector::default();
    let mut a = tar::Archive::new(tar);
    for e in a.entries()? {
        let e = e?;
        let raw = e.path_bytes().into_owned();
        let rel = String::from_utf8_lossy(&raw)
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if rel.is_empty() || rel == "." {
            continue;
        }
        let (dir, base) = match rel.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), rel.clone()),
        };
        let join = |n: &str| {
            if dir.is_empty() {
                n.to_string()
            } else {
                format!("{dir}/{n}")
            }
        };
        if base == berth_layer::WHITEOUT_OPAQUE {
            c.add(&dir, Seen::Opaque, lower);
        } else if let Some(name) = base.strip_prefix(berth_layer::WHITEOUT_PREFIX) {
            c.add(&join(name), Seen::Whiteout, lower);
        } else {
            let h = e.header();
            let seen = Seen::Entry {
                is_dir: h.entry_type().is_dir(),
                mode: h.mode().unwrap_or(0) & 0o7777,
                mtime: h.mtime().unwrap_or(0),
            };
            c.add(&rel, seen, lower);
        }
    }
    Ok(c.out)
}

/// An extended attribute of `p` itself (not followed).
fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: valid C strings and a buffer of the size given.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// Whether an overlay upper entry is a whiteout: a 0/0 character device, or (Linux 6.7+
/// "xwhiteouts") an empty file with the whiteout xattr.
fn is_whiteout(p: &Path, md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    (ft.is_char_device() && md.rdev() == 0)
        || (ft.is_file() && md.len() == 0 && xattr(p, "trusted.overlay.whiteout").is_some())
}

/// Docker's changes straight from an overlay upper dir, as dockerd's overlay driver reads
/// it: only names and metadata, no file content (a layer tar would read every byte).
fn changes_from_upper(
    upper: &Path,
    lower: Lower,
    hide: &dyn Fn(&str) -> bool,
) -> io::Result<Vec<Change>> {
    fn walk(
        c: &mut Collector,
        dir: &Path,
        rel: &str,
        lower: Lower,
        hide: &dyn Fn(&str) -> bool,
    ) -> io::Result<()> {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for n in names {
            let name = n.to_string_lossy();
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let p = dir.join(&n);
            let md = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if is_whiteout(&p, &md) {
                c.add(&child, Seen::Whiteout, lower);
                continue;
            }
            if hide(&child) {
                continue;
            }
            let is_dir = md.is_dir();
            let seen = Seen::Entry {
                is_dir,
                mode: md.mode() & 0o7777,
                mtime: md.mtime().max(0) as u64,
            };
            c.add(&child, seen, lower);
            if is_dir {
                if xattr(&p, berth_layer::OVERLAY_OPAQUE_XATTR).as_deref() == Some(b"y") {
                    c.add(&child, Seen::Opaque, lower);
                }
                walk(c, &p, &child, lower, hide)?;
            }
        }
        Ok(())
    }
    let mut c = Collector::default();
    walk(&mut c, upper, "", lower, hide)?;
    Ok(c.out)
}

/// The metadata of `rel` in an overlay's lower dirs (top first): the first layer that has
/// it, unless that is a whiteout. (An opaque directory or a whiteout of a parent in a higher
/// layer is not looked for: it would only tell an added path from a modified one.)
fn in_lowers(lowers: &[PathBuf], rel: &str) -> Option<std::fs::Metadata> {
    for l in lowers {
        let p = l.join(rel);
        if let Ok(md) = std::fs::symlink_metadata(&p) {
            return (!is_whiteout(&p, &md)).then_some(md);
        }
    }
    None
}

/// The changes of container `c`'s writable layer (blocking). With overlayfs the upper dir
/// is walked and the lower dirs named by the snapshot's mount are looked up: nothing is
/// written to the store, no file is read. With the plain-copy snapshotter the layer tar
/// against a view of the image is read.
fn changes_of(api: &Api, c: &Container) -> Result<Vec<Change>, ApiError> {
    if c.snapshot_key.is_empty() {
        return Err(ApiError::internal(format!(
            "container {} has no snapshot",
            c.id
        )));
    }
    let ctx = api.ctx();
    let sn = api.state.store().snapshotter();
    let (upper, mode) = sn.apply_target(&ctx, &c.snapshot_key)?;
    if mode == WhiteoutMode::OverlayUpper {
        let mounts = sn.mounts(&ctx, &c.snapshot_key)?;
        let lowers: Vec<PathBuf> = mounts
            .iter()
            .flat_map(|m| m.options.iter())
            .filter_map(|o| o.strip_prefix("lowerdir="))
            .flat_map(|l| l.split(':'))
            .map(PathBuf::from)
            .collect();
        let hidden = mount_points(c);
        let lower = |rel: &str| in_lowers(&lowers, rel);
        let hide = |rel: &str| hidden.contains(rel) && lower(rel).is_none();
        return changes_from_upper(&upper, &lower, &hide)
            .map_err(|e| ApiError::internal(format!("reading the container's changes: {e}")));
    }
    with_layer(api, c, |l| {
        let (reader, mut writer) = pipe()?;
        std::thread::scope(|s| {
            let w = s.spawn(move || {
                let r = l.diff(&mut writer);
                drop(writer);
                r
            });
            let lower = |rel: &str| std::fs::symlink_metadata(l.lower.join(rel)).ok();
            let got = changes_from_tar(reader, &lower);
            w.join()
                .map_err(|_| ApiError::internal("the diff thread panicked"))??;
            got.map_err(|e| ApiError::internal(format!("reading the diff: {e}")))
        })
    })
}

/// `GET /containers/{id}/changes`.
pub async fn changes(api: &Api, _req: Req, name: &str) -> Reply {
    let c = api.find_container(name).await?;
    let api2 = api.clone();
    let list = super::blocking(move || changes_of(&api2, &c)).await?;
    let body: Vec<_> = list
        .iter()
        .map(|ch| json!({"Path": ch.path, "Kind": ch.kind}))
        .collect();
    Ok(json_reply(StatusCode::OK, &body))
}

/// Writes the tree at `root` as a tar whose entries are named from the root down (`bin/`,
/// `etc/passwd`), with archive.rs's walker: no symlink is ever followed.
fn export_tree(root: &Path, out: impl Write) -> io::Result<()> {
    let dir = crate::build::fsops::open_root(root)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(root)?
        .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for n in names {
        let c = cstr(&n)?;
        let st = match lstatat(&dir, &c) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        add(&mut b, &dir, &c, &st, &String::from_utf8_lossy(&n))?;
    }
    b.finish()?;
    b.into_inner()?.flush()
}

/// `GET /containers/{id}/export`.
pub async fn export(api: &Api, _req: Req, name: &str) -> Reply {
    let c = api.find_container(name).await?;
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let api2 = api.clone();
    tokio::task::spawn_blocking(move || {
        let fs = match rootfs(&api2, &c) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let w = ChanWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = export_tree(&fs.path, w) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(container = %c.id, error = %e, "docker api: exporting a container");
                let _ = tx.blocking_send(Err(ApiError::internal(format!(
                    "exporting container {}: {e}",
                    c.id
                ))));
            }
        }
        drop(fs);
    });
    stream(rx, "application/x-tar", false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn layer(entries: &[(&str, tar::EntryType)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(if ty.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(1);
            h.set_size(0);
            b.append_data(&mut h, name, io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn from_tar(t: &[u8], lower: &Path) -> io::Result<Vec<Change>> {
        changes_from_tar(t, &|r: &str| std::fs::symlink_metadata(lower.join(r)).ok())
    }

    #[test]
    fn an_upper_dir_is_read_without_a_tar_and_hides_the_runtimes_mount_points() {
        let (upper, low1, low2) = (tree(), tree(), tree());
        std::fs::create_dir(low2.path().join("etc")).unwrap();
        std::fs::write(low2.path().join("etc/hosts"), "x").unwrap();
        std::fs::write(low1.path().join("top"), "y").unwrap();
        std::fs::create_dir(upper.path().join("etc")).unwrap();
        std::fs::set_permissions(
            upper.path().join("etc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(upper.path().join("etc/hosts"), "changed").unwrap();
        std::fs::write(upper.path().join("etc/resolv.conf"), "").unwrap();
        std::fs::write(upper.path().join("top"), "z").unwrap();
        std::fs::create_dir(upper.path().join("proc")).unwrap();
        std::fs::write(upper.path().join("new"), "n").unwrap();
        let lowers = vec![low1.path().to_path_buf(), low2.path().to_path_buf()];
        let lower = |r: &str| in_lowers(&lowers, r);
        let hide = |r: &str| (r == "proc" || r == "etc/resolv.conf") && lower(r).is_none();
        let got = changes_from_upper(upper.path(), &lower, &hide).unwrap();
        let etc_kind = got.iter().find(|c| c.path == "/etc").map(|c| c.kind);
        // /etc's mode differs from the image's: modified.
        assert_eq!(etc_kind, Some(MODIFIED), "{got:?}");
        let rest: Vec<(String, u8)> = kinds(&got)
            .into_iter()
            .filter(|(p, _)| p != "/etc")
            .collect();
        assert_eq!(
            rest,
            [
                ("/etc/hosts".to_string(), MODIFIED),
                ("/new".to_string(), ADDED),
                ("/top".to_string(), MODIFIED),
            ]
        );
    }

    fn kinds(v: &[Change]) -> Vec<(String, u8)> {
        v.iter().map(|c| (c.path.clone(), c.kind)).collect()
    }

    #[test]
    fn added_changed_and_deleted_with_parents_marked_changed() {
        let lower = tree();
        std::fs::create_dir(lower.path().join("etc")).unwrap();
        std::fs::write(lower.path().join("etc/hosts"), "x").unwrap();
        std::fs::write(lower.path().join("etc/gone"), "x").unwrap();
        let t = layer(&[
            ("etc/", tar::EntryType::Directory),
            ("etc/.wh.gone", tar::EntryType::Regular),
            ("etc/hosts", tar::EntryType::Regular),
            ("new/", tar::EntryType::Directory),
            ("new/file", tar::EntryType::Regular),
            ("top", tar::EntryType::Regular),
        ]);
        let got = from_tar(&t, lower.path()).unwrap();
        assert_eq!(
            kinds(&got),
            [
                ("/etc".to_string(), MODIFIED),
                ("/etc/gone".to_string(), DELETED),
                ("/etc/hosts".to_string(), MODIFIED),
                ("/new".to_string(), ADDED),
                ("/new/file".to_string(), ADDED),
                ("/top".to_string(), ADDED),
            ]
        );
    }

    #[test]
    fn an_unchanged_directory_is_left_out_but_a_parent_of_a_change_is_not() {
        let lower = tree();
        std::fs::create_dir(lower.path().join("var")).unwrap();
        std::fs::set_permissions(
            lower.path().join("var"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        std::fs::File::open(lower.path().join("var"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        let t = layer(&[
            ("var/", tar::EntryType::Directory),
            ("var/log", tar::EntryType::Regular),
        ]);
        let got = from_tar(&t, lower.path()).unwrap();
        assert_eq!(
            kinds(&got),
            [
                ("/var".to_string(), MODIFIED),
                ("/var/log".to_string(), ADDED)
            ]
        );
        let t = layer(&[("var/", tar::EntryType::Directory)]);
        assert!(from_tar(&t, lower.path()).unwrap().is_empty());
    }

    #[test]
    fn an_opaque_directory_is_reported_deleted_as_dockerd_does() {
        let lower = tree();
        std::fs::create_dir(lower.path().join("d")).unwrap();
        let t = layer(&[
            ("d/", tar::EntryType::Directory),
            ("d/.wh..wh..opq", tar::EntryType::Regular),
            ("d/n", tar::EntryType::Regular),
        ]);
        let got = from_tar(&t, lower.path()).unwrap();
        assert_eq!(
            kinds(&got),
            [("/d".to_string(), DELETED), ("/d/n".to_string(), ADDED)]
        );
    }

    #[test]
    fn dropped_entries_go_with_their_long_names_and_the_rest_is_kept_as_is() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("d/{}", "n".repeat(150));
        for (name, data) in [("proc/", &b""[..]), (long.as_str(), b"long"), ("x", b"x")] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if name.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        }
        let t = b.into_inner().unwrap();
        let mut out = Vec::new();
        let kept = drop_entries(t.as_slice(), &mut out, |p| p == "proc" || p == "x").unwrap();
        assert_eq!(kept, 1);
        let mut a = tar::Archive::new(out.as_slice());
        let got: Vec<(String, Vec<u8>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                (e.path().unwrap().display().to_string(), d)
            })
            .collect();
        assert_eq!(got, [(long.clone(), b"long".to_vec())]);
    }

    #[test]
    fn export_names_entries_from_the_root_and_keeps_symlinks() {
        let root = tree();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), "root\n").unwrap();
        std::os::unix::fs::symlink("/", root.path().join("evil")).unwrap();
        let mut out = Vec::new();
        export_tree(root.path(), &mut out).unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let names: Vec<(String, bool)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type().is_symlink(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("etc/".to_string(), false),
                ("etc/passwd".to_string(), false),
                ("evil".to_string(), true)
            ]
        );
    }
}
