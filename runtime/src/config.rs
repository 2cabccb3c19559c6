//! Reading and validating a bundle's config.json completely before anything on the system is
//! touched: a bad config costs nothing and leaves nothing behind.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use thiserror::Error;

/// What is wrong with a bundle or its config.json.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("bundle {0}: no such directory")]
    NoBundle(PathBuf),
    #[error("config.json not found in bundle {0}")]
    NoConfig(PathBuf),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config.json: field {field}: {message}")]
    Field { field: String, message: String },
    #[error("invalid config.json: {0}")]
    Invalid(String),
    #[error("rootfs {0} does not exist or is not a directory")]
    NoRootfs(PathBuf),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// A config.json that passed validation, with the paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: Spec,
    /// The bundle directory, absolute.
    pub bundle: PathBuf,
    /// The rootfs, absolute and canonical.
    pub rootfs: PathBuf,
}

impl Config {
    /// The config's namespaces.
    pub fn namespaces(&self) -> &[oci_spec::runtime::LinuxNamespace] {
        self.spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or(&[])
    }

    /// Whether the config asks for (new or joined) namespace `typ`.
    pub fn has_namespace(&self, typ: LinuxNamespaceType) -> bool {
        self.namespaces().iter().any(|ns| ns.typ() == typ)
    }

    /// The process to run (validation guarantees it exists).
    pub fn process(&self) -> &oci_spec::runtime::Process {
        // Validation rejects a config without a process.
        self.spec
            .process()
            .as_ref()
            .expect("validated config has a process")
    }
}

/// Read `<bundle>/config.json`, parse it (errors name the field) and validate it.
pub fn load(bundle: &Path) -> Result<Config, ConfigError> {
    if !bundle.is_dir() {
        return Err(ConfigError::NoBundle(bundle.to_path_buf()));
    }
    let bundle = fs::canonicalize(bundle).map_err(|source| ConfigError::Read {
        path: bundle.to_path_buf(),
        source,
    })?;
    let path = bundle.join("config.json");
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NoConfig(bundle))
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let spec = parse(&text)?;
    validate(spec, bundle)
}

/// Parse config.json text; an error names the field that is wrong.
pub fn parse(text: &[u8]) -> Result<Spec, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        if field == "." || field.is_empty() {
            ConfigError::Invalid(inner.to_string())
        } else {
            ConfigError::Field {
                field,
                message: inner.to_string(),
            }
        }
    })
}

/// Check everything that can be checked without touching the system.
pub fn validate(spec: Spec, bundle: PathBuf) -> Result<Config, ConfigError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root is required"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = match fs::canonicalize(&rootfs) {
        Ok(p) if p.is_dir() => p,
        _ => return Err(ConfigError::NoRootfs(rootfs)),
    };

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process is required"))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(invalid("process.args must name the program to run")),
    }
    if !process.cwd().is_absolute() {
        return Err(ConfigError::Field {
            field: "process.cwd".into(),
            message: format!("{} is not an absolute path", process.cwd().display()),
        });
    }
    let (initial, last) = crate::sched::exec_affinity(process);
    for (name, list) in [("initial", initial), ("final", last)] {
        if let Some(Err(message)) = list.map(crate::sched::parse_cpus) {
            return Err(ConfigError::Field {
                field: format!("process.execCPUAffinity.{name}"),
                message,
            });
        }
    }
    if let Some(env) = process.env() {
        if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
            return Err(ConfigError::Field {
                field: "process.env".into(),
                message: format!("{bad:?} is not KEY=VALUE"),
            });
        }
    }

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux is required on Linux"))?;
    let mut seen = HashSet::new();
    for ns in linux.namespaces().as_deref().unwrap_or(&[]) {
        if !seen.insert(ns.typ()) {
            return Err(ConfigError::Field {
                field: "linux.namespaces".into(),
                message: format!("namespace {} is listed twice", ns.typ()),
            });
        }
        if let Some(path) = ns.path() {
            if !path.exists() {
                return Err(ConfigError::Field {
                    field: "linux.namespaces".into(),
                    message: format!(
                        "{} namespace path {} does not exist",
                        ns.typ(),
                        path.display()
                    ),
                });
            }
        }
    }
    let has = |t| seen.contains(&t);
    // Without a mount namespace of its own the container shares the caller's: its mounts are
    // made there (under the rootfs, as runc makes them), but masking or remounting /proc and
    // /sys paths cannot be confined to the container.
    if !has(LinuxNamespaceType::Mount)
        && (linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty())
            || linux
                .readonly_paths()
                .as_ref()
                .is_some_and(|p| !p.is_empty()))
    {
        return Err(invalid(
            "linux.maskedPaths and linux.readonlyPaths need a mount namespace of the container's \
             own (linux.namespaces has no \"mount\")",
        ));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(invalid("hostname is set but there is no uts namespace"));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts)
    {
        return Err(invalid("domainname is set but there is no uts namespace"));
    }
    let new_userns = linux
        .namespaces()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_none());
    let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if new_userns && !has_maps {
        return Err(invalid(
            "a new user namespace needs linux.uidMappings and linux.gidMappings",
        ));
    }
    if !has(LinuxNamespaceType::User)
        && (linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()))
    {
        return Err(invalid(
            "linux.uidMappings/gidMappings are set but there is no user namespace",
        ));
    }
    if let Some(cg) = linux.cgroups_path() {
        if cg
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(ConfigError::Field {
                field: "linux.cgroupsPath".into(),
                message: format!("{} must not contain \"..\"", cg.display()),
            });
        }
    }
    for (i, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        if !m.destination().is_absolute() {
            return Err(ConfigError::Field {
                field: format!("mounts[{i}].destination"),
                message: format!("{} is not an absolute path", m.destination().display()),
            });
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            if key.contains("..") || key.contains('/') && key.starts_with('/') || key.is_empty() {
                return Err(ConfigError::Field {
                    field: "linux.sysctl".into(),
                    message: format!("invalid key {key:?}"),
                });
            }
            if let Err(message) = sysctl_namespace_check(key, &has) {
                return Err(ConfigError::Field {
                    field: "linux.sysctl".into(),
                    message,
                });
            }
        }
    }
    let cfg = Config {
        spec,
        bundle,
        rootfs,
    };
    crate::idmap::validate(&cfg).map_err(|message| ConfigError::Field {
        field: "mounts".into(),
        message,
    })?;
    Ok(cfg)
}

/// A sysctl may only be set where the container has its own copy of it (runc's rule): the
/// network ones in a network namespace, the IPC ones in an IPC namespace, hostname and
/// domainname in a UTS namespace. Anything else would change the host.
fn sysctl_namespace_check(
    key: &str,
    has: &dyn Fn(LinuxNamespaceType) -> bool,
) -> Result<(), String> {
    let key = key.replace('/', ".");
    const IPC: [&str; 7] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
    ];
    let (needs, name) = if IPC.contains(&key.as_str())
        || key == "kernel.shm_rmid_forced"
        || key.starts_with("fs.mqueue.")
    {
        (LinuxNamespaceType::Ipc, "ipc")
    } else if key.starts_with("net.") {
        (LinuxNamespaceType::Network, "network")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        (LinuxNamespaceType::Uts, "uts")
    } else {
        return Err(format!(
            "{key:?} is not in a separate kernel namespace: setting it would change the host"
        ));
    };
    if has(needs) {
        Ok(())
    } else {
        Err(format!(
            "{key:?} needs a {name} namespace of the container's own (linux.namespaces has no \"{name}\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse(br#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":"sh"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("process.args"), "{err}");
    }

    #[test]
    fn broken_json_is_an_error() {
        let err = parse(b"{\"ociVersion\": ").unwrap_err().to_string();
        assert!(err.starts_with("invalid config.json"), "{err}");
    }

    #[test]
    fn a_config_without_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        let spec = parse(br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"mount"}]}}"#)
            .unwrap();
        let err = validate(spec, dir.path().to_path_buf())
            .unwrap_err()
            .to_string();
        assert!(err.contains("process is required"), "{err}");
    }

    #[test]
    fn a_missing_rootfs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = parse(br#"{"ociVersion":"1.0.2","root":{"path":"nope"},"process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"]},"linux":{"namespaces":[{"type":"mount"}]}}"#)
            .unwrap();
        let err = validate(spec, dir.path().to_path_buf())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn cgroups_path_with_dotdot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        let spec = parse(br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"]},"linux":{"cgroupsPath":"/a/../../b","namespaces":[{"type":"mount"}]}}"#)
            .unwrap();
        let err = validate(spec, dir.path().to_path_buf())
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux.cgroupsPath"), "{err}");
    }
}
