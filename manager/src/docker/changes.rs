//! A container's filesystem as data: `GET /containers/{id}/changes` (`docker diff`), the
//! changes of its writable layer, and `GET /containers/{id}/export` (`docker export`), a tar of
//! its whole filesystem. [`with_layer`] gives the writable layer as a layer tar, which
//! `docker commit` (`commit.rs`) stores as a new image layer.
//!
//! The writable layer is read the way the builder reads a RUN step's: the snapshot's overlay
//! upper dir with the layer crate's `diff_overlay_upper` (whiteouts and opaque dirs become
//! `.wh.` entries), or for the plain-copy snapshotter `diff_trees` against a read-only view of
//! the image. The view (also used to tell an added path from a changed one) is an
//! `extract-docker-*` snapshot inside a temporary lease, so a crash leaves nothing behind.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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

/// Docker's changes from a layer tar: `.wh.NAME` deletes NAME, an opaque marker marks its
/// directory deleted (as dockerd's overlay driver reports it), an entry that `lower` has is
/// modified (a directory whose mode and mtime did not change is left out), other entries are
/// added; the parent of an added or deleted path is marked modified unless it already is.
pub fn changes_from_tar(tar: impl Read, lower: &Path) -> io::Result<Vec<Change>> {
    let mut out: Vec<Change> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut dirs: HashSet<String> = HashSet::new();
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
        let (parent, base) = match rel.rsplit_once('/') {
            Some((p, b)) => (format!("/{p}"), b.to_string()),
            None => ("/".to_string(), rel.clone()),
        };
        let (path, kind) = if base == ".wh..wh..opq" {
            match index.get(&parent) {
                Some(&i) => out[i].kind = DELETED,
                None => {
                    index.insert(parent.clone(), out.len());
                    out.push(Change {
                        path: parent.clone(),
                        kind: DELETED,
                    });
                }
            }
            dirs.insert(parent);
            continue;
        } else if let Some(name) = base.strip_prefix(".wh.") {
            let p = if parent == "/" {
                format!("/{name}")
            } else {
                format!("{parent}/{name}")
            };
            (p, DELETED)
        } else {
            let p = format!("/{rel}");
            let is_dir = e.header().entry_type().is_dir();
            match std::fs::symlink_metadata(lower.join(&rel)) {
                Ok(md) => {
                    let same_dir = is_dir
                        && md.is_dir()
                        && e.header().mode().ok() == Some(md.mode() & 0o7777)
                        && e.header().mtime().ok() == Some(md.mtime().max(0) as u64);
                    if same_dir {
                        continue;
                    }
                    (p, MODIFIED)
                }
                Err(_) => (p, ADDED),
            }
        };
        if e.header().entry_type().is_dir() && kind != DELETED {
            dirs.insert(path.clone());
        }
        if (kind == ADDED || kind == DELETED) && parent != "/" && !dirs.contains(&parent) {
            dirs.insert(parent.clone());
            index.insert(parent.clone(), out.len());
            out.push(Change {
                path: parent,
                kind: MODIFIED,
            });
        }
        index.insert(path.clone(), out.len());
        out.push(Change { path, kind });
    }
    Ok(out)
}

/// The changes of container `c`'s writable layer (blocking).
fn changes_of(api: &Api, c: &Container) -> Result<Vec<Change>, ApiError> {
    with_layer(api, c, |l| {
        let (reader, mut writer) = pipe()?;
        std::thread::scope(|s| {
            let w = s.spawn(move || {
                let r = l.diff(&mut writer);
                drop(writer);
                r
            });
            let got = changes_from_tar(reader, l.lower);
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
        let got = changes_from_tar(t.as_slice(), lower.path()).unwrap();
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
        let got = changes_from_tar(t.as_slice(), lower.path()).unwrap();
        assert_eq!(
            kinds(&got),
            [
                ("/var".to_string(), MODIFIED),
                ("/var/log".to_string(), ADDED)
            ]
        );
        let t = layer(&[("var/", tar::EntryType::Directory)]);
        assert!(changes_from_tar(t.as_slice(), lower.path())
            .unwrap()
            .is_empty());
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
        let got = changes_from_tar(t.as_slice(), lower.path()).unwrap();
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
