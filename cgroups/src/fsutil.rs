//! Small file helpers for cgroup filesystems: exact writes that never create files, reads that
//! name the file on error, tracked mkdir and careful rmdir.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Writes `value` to `dir/file` in a single write(2). The file must exist: cgroup files are
/// made by the kernel, so a missing one means a missing controller and is reported as such.
/// O_TRUNC is a no-op on cgroupfs (as with `echo > file`) and gives plain files the same
/// replace semantics, which the fake trees in tests rely on.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    write_path(&path, value)
}

/// Like [`write`] with a full path.
pub(crate) fn write_path(path: &Path, value: &str) -> Result<()> {
    let result = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source: explain_missing(path, source),
    })
}

/// A bare ENOENT on a cgroup file says little; say whether the file or the cgroup is missing.
fn explain_missing(path: &Path, e: io::Error) -> io::Error {
    if e.kind() != ErrorKind::NotFound {
        return e;
    }
    let why = match path.parent() {
        Some(dir) if dir.is_dir() => {
            "no such file: its controller is not available (or not enabled) for this cgroup"
        }
        _ => "the cgroup directory does not exist",
    };
    io::Error::new(ErrorKind::NotFound, why)
}

/// Reads `dir/file` as a string.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
}

/// Reads `dir/file`, returning `None` when the file does not exist.
pub(crate) fn read_opt(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// Parses a single unsigned number (or "max", returned as `None`) from `dir/file`.
pub(crate) fn read_u64_or_max(dir: &Path, file: &str) -> Result<Option<u64>> {
    let s = read(dir, file)?;
    parse_u64_or_max(&dir.join(file), &s)
}

/// Like [`read_u64_or_max`] but a missing file gives `Ok(None)` too; a "max" gives `u64::MAX`.
pub(crate) fn read_u64_opt(dir: &Path, file: &str) -> Result<Option<u64>> {
    match read_opt(dir, file)? {
        None => Ok(None),
        Some(s) => Ok(Some(
            parse_u64_or_max(&dir.join(file), &s)?.unwrap_or(u64::MAX),
        )),
    }
}

pub(crate) fn parse_u64_or_max(path: &Path, s: &str) -> Result<Option<u64>> {
    let t = s.trim();
    if t == "max" {
        return Ok(None);
    }
    t.parse::<u64>().map(Some).map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        content: t.to_string(),
    })
}

/// Parses "key value" lines (memory.stat, cpu.stat, cgroup.events, ...) into pairs; lines that
/// do not have that shape are skipped.
pub(crate) fn parse_flat_keyed(s: &str) -> Vec<(&str, u64)> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k, v))
        })
        .collect()
}

pub(crate) fn keyed(pairs: &[(&str, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Creates `dir` and any missing ancestors below `mount` (never `mount` itself or anything
/// outside it), appending each directory actually created to `created`, parents first.
/// An existing directory is fine and is not recorded.
///
/// A parent may vanish between its mkdir and the child's: another runtime's delete removes
/// a shared parent (`/<namespace>`, `/berth-build`) it made once it is empty, which it is
/// until our child exists. That is retried a few times rather than failing the create.
pub(crate) fn mkdir_tracked(mount: &Path, dir: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    mkdir_tracked_with(mount, dir, created, &mut |d| fs::create_dir(d))
}

/// How often a mkdir whose parent vanished is tried again.
const PARENT_RACES: usize = 5;

fn mkdir_tracked_with(
    mount: &Path,
    dir: &Path,
    created: &mut Vec<PathBuf>,
    mkdir: &mut dyn FnMut(&Path) -> io::Result<()>,
) -> Result<()> {
    if dir == mount || !dir.starts_with(mount) {
        return Ok(());
    }
    let mut races = 0;
    loop {
        match mkdir(dir) {
            Ok(()) => {
                created.push(dir.to_path_buf());
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && races < PARENT_RACES => {
                races += 1;
                let parent = dir.parent().ok_or_else(|| Error::Create {
                    path: dir.to_path_buf(),
                    source: e,
                })?;
                mkdir_tracked_with(mount, parent, created, mkdir)?;
            }
            Err(source) => {
                return Err(Error::Create {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Names of the sub-directories (child cgroups) of `dir`; empty if `dir` is gone.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the pids listed in `dir/cgroup.procs`. A missing directory gives an empty list.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let s = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path, source }),
    };
    s.split_whitespace()
        .map(|t| {
            t.parse::<i32>().map_err(|_| Error::Parse {
                path: path.clone(),
                content: t.to_string(),
            })
        })
        .collect()
}

/// Pids in `dir` and every cgroup below it, sorted and without duplicates.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        out.extend(procs(&d)?);
        for child in child_dirs(&d)? {
            stack.push(d.join(child));
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// How `rmdir_cgroup` treats a directory that cannot be removed because of child cgroups.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RemoveMode {
    /// The container's own leaf: anything left in it is an error.
    Leaf,
    /// An intermediate directory we created: if another container's cgroup now lives below
    /// it, keep it silently (it is shared).
    Intermediate,
}

/// How long one destroy may keep retrying busy cgroups in all (the kernel releases a cgroup a
/// moment after its last process exits; shared by all directories of a destroy).
pub(crate) const REMOVE_RETRY: Duration = Duration::from_millis(500);

/// Removes one cgroup directory. ENOENT is success; EBUSY is retried until `deadline`, then
/// explained (processes left, or child cgroups).
pub(crate) fn rmdir_cgroup(dir: &Path, mode: RemoveMode, deadline: Instant) -> Result<()> {
    if mode == RemoveMode::Intermediate && !child_dirs(dir)?.is_empty() {
        tracing::debug!(dir = %dir.display(), "keeping shared intermediate cgroup");
        return Ok(());
    }
    let mut delay = Duration::from_millis(1);
    let busy = loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if is_busy(&e) => {
                let children = child_dirs(dir)?;
                if !children.is_empty() {
                    // Child cgroups do not go away by themselves: no point in waiting.
                    if mode == RemoveMode::Intermediate {
                        tracing::debug!(dir = %dir.display(), "keeping shared intermediate cgroup");
                        return Ok(());
                    }
                    return Err(Error::HasChildren {
                        path: dir.to_path_buf(),
                        children,
                    });
                }
                if Instant::now() >= deadline {
                    break e;
                }
            }
            Err(source) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    };
    let pids = procs(dir).unwrap_or_default();
    if !pids.is_empty() {
        return Err(Error::Busy {
            path: dir.to_path_buf(),
            pids,
        });
    }
    let children = child_dirs(dir).unwrap_or_default();
    if !children.is_empty() {
        return Err(Error::HasChildren {
            path: dir.to_path_buf(),
            children,
        });
    }
    Err(Error::Remove {
        path: dir.to_path_buf(),
        source: busy,
    })
}

/// Removes every cgroup below `dir`, deepest first (not `dir` itself).
pub(crate) fn remove_descendants(dir: &Path, deadline: Instant) -> Result<()> {
    for child in child_dirs(dir)? {
        let path = dir.join(child);
        remove_descendants(&path, deadline)?;
        rmdir_cgroup(&path, RemoveMode::Leaf, deadline)?;
    }
    Ok(())
}

fn is_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parent made for a child is removed (another runtime's delete of the empty shared
    /// parent) just before the child's mkdir, twice: the create still succeeds.
    #[test]
    fn a_parent_removed_under_the_mkdir_is_made_again() {
        let mount = tempfile::tempdir().unwrap();
        let parent = mount.path().join("berth-build");
        let child = parent.join("step");
        let mut removals = 2;
        let mut mkdir = |d: &Path| {
            if d == child && removals > 0 && parent.is_dir() {
                removals -= 1;
                fs::remove_dir(&parent).unwrap();
            }
            fs::create_dir(d)
        };
        let mut created = Vec::new();
        mkdir_tracked_with(mount.path(), &child, &mut created, &mut mkdir).unwrap();
        assert!(child.is_dir());
        assert_eq!(removals, 0);
        assert_eq!(created.last(), Some(&child));
    }

    /// A parent that keeps vanishing is an error naming the child, not an endless loop.
    #[test]
    fn a_parent_that_keeps_vanishing_is_an_error() {
        let mount = tempfile::tempdir().unwrap();
        let parent = mount.path().join("ns");
        let child = parent.join("c");
        let mut mkdir = |d: &Path| {
            if d == child && parent.is_dir() {
                fs::remove_dir(&parent).unwrap();
            }
            fs::create_dir(d)
        };
        let err = mkdir_tracked_with(mount.path(), &child, &mut Vec::new(), &mut mkdir)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&child.display().to_string()), "{err}");
    }
}
