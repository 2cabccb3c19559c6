//! Named volumes: a record per volume in the metadata store (table `volumes`, keyed by
//! namespace) and its data under `<root>/volumes/<ns>/<name>/_data`.
//!
//! A volume is "in use" while a container record names it in its [`LABEL_VOLUMES`] label
//! (a comma list, set by the client that builds the container's mounts); such a volume cannot
//! be removed or pruned. Volumes are no GC roots and no GC objects: GC never looks at them.
//!
//! Paths are safe by construction: namespace and volume names are validated (a volume name is
//! Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, so never `..` or a `/`), and every directory on the
//! way is checked to be a real directory, not a symlink.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{Result, StoreError};
use crate::metadata::{validate_namespace, Labels, MetaRead, Volume};
use crate::{Ctx, Store};

/// Container label listing the volumes a container uses (comma-separated names).
pub const LABEL_VOLUMES: &str = "berth.io/volumes";
/// Volume label marking an anonymous volume (made for an image's VOLUME or a `-v /path`).
pub const LABEL_ANONYMOUS: &str = "berth.io/anonymous";
/// The only driver.
pub const DRIVER: &str = "local";
/// Longest volume name (a file name).
pub const MAX_NAME_LEN: usize = 255;

/// Serialises create, delete and prune (record and directory change together).
static LOCK: Mutex<()> = Mutex::new(());

/// Validates a volume name as Docker's local driver does: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "volume name {name:?} is invalid: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]+ \
             (at most {MAX_NAME_LEN} characters)"
        )))
    }
}

/// Validates the `local` driver's options: none (a directory under the volumes dir), or
/// `type=tmpfs` (`o` = tmpfs options), or `type=none,o=bind,device=/abs/dir`.
pub fn validate_options(opts: &BTreeMap<String, String>) -> Result<()> {
    let bad = |m: String| Err(StoreError::InvalidArgument(m));
    for k in opts.keys() {
        if !matches!(k.as_str(), "type" | "device" | "o") {
            return bad(format!(
                "volume option {k:?} is not known to the local driver (type, device, o)"
            ));
        }
    }
    if opts.is_empty() {
        return Ok(());
    }
    let o = opts.get("o").map(String::as_str).unwrap_or("");
    match opts.get("type").map(String::as_str) {
        Some("tmpfs") => Ok(()),
        Some("none") if o.split(',').any(|x| x == "bind" || x == "rbind") => {
            let Some(dev) = opts.get("device") else {
                return bad("volume option type=none with o=bind needs device=/host/dir".into());
            };
            let p = Path::new(dev);
            if !p.is_absolute() {
                return bad(format!("volume device {dev:?} must be an absolute path"));
            }
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => bad(format!("volume device {dev:?} is not a directory")),
                Err(e) => bad(format!("volume device {dev:?}: {e}")),
            }
        }
        Some(t) => bad(format!(
            "volume type {t:?} is not supported: type=tmpfs, or type=none with o=bind"
        )),
        None => bad("volume options need type= (tmpfs, or none with o=bind)".into()),
    }
}

/// Names listed in a container's [`LABEL_VOLUMES`] label.
pub fn label_names(labels: &Labels) -> impl Iterator<Item = &str> {
    labels
        .get(LABEL_VOLUMES)
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Containers of the namespace (as seen by `r`) that use volume `name`.
fn users<R: MetaRead + ?Sized>(r: &R, ns: &str, name: &str) -> Result<Vec<String>> {
    Ok(r.containers(ns)?
        .into_iter()
        .filter(|c| label_names(&c.labels).any(|n| n == name))
        .map(|c| c.id)
        .collect())
}

/// Makes `dir` (mode `mode`) unless it exists as a real directory; refuses a symlink or file.
fn real_dir(dir: &Path, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => Err(StoreError::FailedPrecondition(format!(
            "{} is not a directory (a symlink is never followed)",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .map_err(|e| StoreError::io("create directory", dir, e)),
        Err(e) => Err(StoreError::io("stat", dir, e)),
    }
}

/// Removes `path` (a volume's directory) without following symlinks; missing is fine.
fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("stat", path, e)),
        Ok(m) if m.file_type().is_dir() => {
            std::fs::remove_dir_all(path).map_err(|e| StoreError::io("remove", path, e))
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| StoreError::io("remove", path, e)),
    }
}

impl Store {
    /// `<root>/volumes`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root().join("volumes")
    }

    /// `<root>/volumes/<ns>/<name>`: the volume's own directory (its data is `_data` in it).
    /// The caller validates `ns` and `name`.
    fn volume_dir(&self, ns: &str, name: &str) -> PathBuf {
        self.volumes_dir().join(ns).join(name)
    }

    /// Removes a volume's directory, only if the dirs above it are real directories.
    fn remove_volume_dir(&self, ns: &str, name: &str) -> Result<()> {
        for d in [self.volumes_dir(), self.volumes_dir().join(ns)] {
            match std::fs::symlink_metadata(&d) {
                Ok(m) if m.file_type().is_dir() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                _ => {
                    return Err(StoreError::FailedPrecondition(format!(
                        "{} is not a directory (a symlink is never followed)",
                        d.display()
                    )))
                }
            }
        }
        remove_tree(&self.volume_dir(ns, name))
    }

    /// Where volume `name`'s data lives (`<root>/volumes/<ns>/<name>/_data`).
    pub fn volume_data(&self, ctx: &Ctx, name: &str) -> Result<PathBuf> {
        validate_namespace(&ctx.namespace)?;
        validate_name(name)?;
        Ok(self.volume_dir(&ctx.namespace, name).join("_data"))
    }

    /// One volume; `NotFound` if missing.
    pub fn volume(&self, ctx: &Ctx, name: &str) -> Result<Volume> {
        validate_name(name)?;
        self.metadata()
            .read(|r| r.volume(&ctx.namespace, name))?
            .ok_or_else(|| StoreError::NotFound(format!("volume {name:?}")))
    }

    /// The containers using volume `name`.
    pub fn volume_users(&self, ctx: &Ctx, name: &str) -> Result<Vec<String>> {
        self.metadata().read(|r| users(r, &ctx.namespace, name))
    }

    /// Every volume of the namespace, by name.
    pub fn volume_list(&self, ctx: &Ctx) -> Result<Vec<Volume>> {
        self.metadata().read(|r| r.volumes(&ctx.namespace))
    }

    /// Creates volume `name` (record and an empty `_data`); `AlreadyExists` if it exists.
    /// A directory left without a record (a crash mid-delete) is removed first.
    pub fn volume_create(
        &self,
        ctx: &Ctx,
        name: &str,
        labels: Labels,
        options: BTreeMap<String, String>,
    ) -> Result<Volume> {
        validate_namespace(&ctx.namespace)?;
        validate_name(name)?;
        validate_options(&options)?;
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if self
            .metadata()
            .read(|r| r.volume(&ctx.namespace, name))?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("volume {name:?}")));
        }
        // Parents first: a leftover is removed only through real directories.
        real_dir(&self.volumes_dir(), 0o700)?;
        real_dir(&self.volumes_dir().join(&ctx.namespace), 0o700)?;
        let dir = self.volume_dir(&ctx.namespace, name);
        remove_tree(&dir)?;
        let made = (|| {
            real_dir(&dir, 0o700)?;
            let data = dir.join("_data");
            real_dir(&data, 0o755)?;
            // The mode survives the umask: containers of any user may use a new volume.
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| StoreError::io("chmod", &data, e))
        })();
        let v = Volume {
            name: name.to_string(),
            driver: DRIVER.to_string(),
            labels,
            options,
            created_at: SystemTime::now(),
        };
        let rec = made.and_then(|()| {
            self.metadata()
                .write(|tx| tx.create_volume(&ctx.namespace, &v))
        });
        if let Err(e) = rec {
            if let Err(e2) = remove_tree(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e2, "removing a failed volume");
            }
            return Err(e);
        }
        tracing::info!(ns = %ctx.namespace, volume = name, "volume created");
        Ok(v)
    }

    /// Removes volume `name` and its data: `NotFound` if missing, `FailedPrecondition` naming
    /// the containers if one uses it.
    pub fn volume_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        validate_name(name)?;
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.metadata().write(|tx| {
            if tx.volume(&ctx.namespace, name)?.is_none() {
                return Err(StoreError::NotFound(format!("volume {name:?}")));
            }
            let users = users(tx, &ctx.namespace, name)?;
            if !users.is_empty() {
                return Err(StoreError::FailedPrecondition(format!(
                    "volume {name:?} is in use by container(s) {}",
                    users.join(", ")
                )));
            }
            tx.delete_volume(&ctx.namespace, name)
        })?;
        self.remove_volume_dir(&ctx.namespace, name)?;
        tracing::info!(ns = %ctx.namespace, volume = name, "volume removed");
        Ok(())
    }

    /// Removes every volume no container uses: anonymous ones only, or all with `all`.
    /// Returns the names removed.
    pub fn volume_prune(&self, ctx: &Ctx, all: bool) -> Result<Vec<String>> {
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let gone = self.metadata().write(|tx| {
            let used: std::collections::BTreeSet<String> = tx
                .containers(&ctx.namespace)?
                .iter()
                .flat_map(|c| {
                    label_names(&c.labels)
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            let mut gone = Vec::new();
            for v in tx.volumes(&ctx.namespace)? {
                if used.contains(&v.name) || !(all || v.labels.contains_key(LABEL_ANONYMOUS)) {
                    continue;
                }
                tx.delete_volume(&ctx.namespace, &v.name)?;
                gone.push(v.name);
            }
            Ok(gone)
        })?;
        for name in &gone {
            if let Err(e) = self.remove_volume_dir(&ctx.namespace, name) {
                tracing::warn!(volume = %name, error = %e, "removing a pruned volume's data");
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Container;
    use crate::StoreConfig;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["ab", "data", "a.b-c_d", "0x", "Vol1"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "", "a", "..", "../x", "a/b", ".hidden", "-x", "_x", "a b", "a\0b", "é1",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.to_string().contains("is invalid"), "{bad:?}: {e}");
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        }
        validate_name(&"a".repeat(MAX_NAME_LEN)).unwrap();
        validate_name(&"a".repeat(MAX_NAME_LEN + 1)).unwrap_err();
    }

    #[test]
    fn options_of_the_local_driver() {
        let o = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        validate_options(&o(&[])).unwrap();
        validate_options(&o(&[
            ("type", "tmpfs"),
            ("device", "tmpfs"),
            ("o", "size=1m"),
        ]))
        .unwrap();
        validate_options(&o(&[("type", "none"), ("o", "bind"), ("device", "/tmp")])).unwrap();
        for (bad, what) in [
            (o(&[("size", "1")]), "\"size\""),
            (o(&[("type", "nfs")]), "\"nfs\""),
            (o(&[("o", "bind")]), "type="),
            (o(&[("type", "none"), ("o", "bind")]), "device"),
            (
                o(&[("type", "none"), ("o", "bind"), ("device", "/no/such/dir")]),
                "/no/such/dir",
            ),
        ] {
            let e = validate_options(&bad).unwrap_err().to_string();
            assert!(e.contains(what), "{bad:?}: {e}");
        }
    }

    #[test]
    fn create_use_remove_prune() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&StoreConfig {
            recover: true,
            root: dir.path().to_path_buf(),
            snapshotter: crate::SnapshotterChoice::Native,
        })
        .unwrap();
        let ctx = Ctx::new("ns1");
        s.volume_create(&ctx, "v1", Labels::new(), BTreeMap::new())
            .unwrap();
        let data = s.volume_data(&ctx, "v1").unwrap();
        assert!(data.is_dir());
        assert_eq!(data, dir.path().join("volumes/ns1/v1/_data"));
        let e = s
            .volume_create(&ctx, "v1", Labels::new(), BTreeMap::new())
            .unwrap_err();
        assert!(e.is_already_exists(), "{e}");
        assert!(data.is_dir(), "a refused create keeps the existing data");
        // Other namespaces do not see it.
        assert!(s.volume(&Ctx::new("ns2"), "v1").unwrap_err().is_not_found());

        let mut c = Container {
            id: "c1".into(),
            ..Default::default()
        };
        c.labels.insert(LABEL_VOLUMES.into(), "x1,v1".into());
        s.container_create(&ctx, &c).unwrap();
        let e = s.volume_delete(&ctx, "v1").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::FailedPrecondition);
        assert!(e.to_string().contains("in use by container(s) c1"), "{e}");
        assert_eq!(s.volume_prune(&ctx, true).unwrap(), Vec::<String>::new());
        // GC never touches volumes.
        s.collect().unwrap();
        assert!(data.is_dir());

        s.container_delete(&ctx, "c1").unwrap();
        let mut anon = Labels::new();
        anon.insert(LABEL_ANONYMOUS.into(), String::new());
        s.volume_create(&ctx, "anon1", anon, BTreeMap::new())
            .unwrap();
        assert_eq!(s.volume_prune(&ctx, false).unwrap(), vec!["anon1"]);
        assert!(!dir.path().join("volumes/ns1/anon1").exists());
        s.volume_delete(&ctx, "v1").unwrap();
        assert!(!dir.path().join("volumes/ns1/v1").exists());
        assert!(s.volume_delete(&ctx, "v1").unwrap_err().is_not_found());
        assert!(s.volume_list(&ctx).unwrap().is_empty());
    }

    #[test]
    fn a_symlinked_namespace_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let s = Store::open(&StoreConfig {
            recover: true,
            root: dir.path().to_path_buf(),
            snapshotter: crate::SnapshotterChoice::Native,
        })
        .unwrap();
        std::fs::create_dir_all(dir.path().join("volumes")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("volumes/ns1")).unwrap();
        let ctx = Ctx::new("ns1");
        let e = s
            .volume_create(&ctx, "v1", Labels::new(), BTreeMap::new())
            .unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        assert!(s.volume(&ctx, "v1").unwrap_err().is_not_found());
    }
}
