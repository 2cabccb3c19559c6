//! berthd's settings: command-line flags over an optional TOML file over defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

/// Default socket path.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";
/// Default socket of the Docker Engine API front.
pub const DEFAULT_DOCKER_ADDRESS: &str = "/run/berth/docker.sock";
/// Default persistent root (content, metadata, snapshots).
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default state dir (mounts in progress, runtime state).
pub const DEFAULT_STATE: &str = "/run/berth";

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Persistent root.
    pub root: Option<PathBuf>,
    /// State dir.
    pub state: Option<PathBuf>,
    /// Socket path.
    pub address: Option<PathBuf>,
    /// Socket of the Docker Engine API; empty: no Docker API.
    pub docker_address: Option<PathBuf>,
    /// `tracing` filter, e.g. "info" or "berth_manager=debug".
    pub log_level: Option<String>,
    /// Threads for blocking store work (default 8).
    pub max_blocking_threads: Option<usize>,
    /// The default OCI runtime: a path, or a name looked up next to berthd and on PATH.
    pub runtime: Option<String>,
    /// Size bound of one container log file in bytes (default 10 MiB; one rotated copy kept).
    pub log_max_size: Option<u64>,
    /// Seconds one read from a registry may stall before the download fails (default 60).
    pub registry_timeout: Option<f64>,
    /// Tries of a blob download in all (default 5, as Docker's max-download-attempts).
    pub pull_attempts: Option<u32>,
    /// Seconds waited after a failed blob download's first try; the n-th waits n times as
    /// long (default 5, as Docker).
    pub pull_retry_delay: Option<f64>,
    /// Seconds a runtime command (create, start, kill, delete, ...) may take before it is
    /// killed and the operation fails (default 60).
    pub runtime_timeout: Option<f64>,
    /// Group (name or gid) given access to both sockets: they become 0660 owned by it.
    pub group: Option<String>,
    /// Connections open at once on one socket (default 2048; cut to fit the open-files
    /// limit); more are closed as soon as they are accepted.
    pub max_connections: Option<usize>,
    /// Seconds a new connection has to send its first bytes, and on the Docker socket each
    /// request's headers (default 30).
    pub header_timeout_secs: Option<u64>,
    /// Per-registry settings: `[registries."host:port"]` (see `daemon::registries`).
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, super::registries::RegistryConfig>,
}

impl FileConfig {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
}

/// The settings berthd runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Persistent root.
    pub root: PathBuf,
    /// State dir.
    pub state: PathBuf,
    /// Socket path.
    pub address: PathBuf,
    /// Socket of the Docker Engine API (None: off).
    pub docker_address: Option<PathBuf>,
    /// `tracing` filter.
    pub log_level: String,
    /// Threads for blocking store work.
    pub max_blocking_threads: usize,
    /// The default OCI runtime (None: `$BERTH_RUNTIME`, else berth-runc).
    pub runtime: Option<String>,
    /// Size bound of one container log file in bytes.
    pub log_max_size: Option<u64>,
    /// Per-registry TLS, plain HTTP and mirrors, and every registry's timeout and retries.
    pub registries: super::registries::Registries,
    /// Group given access to both sockets (None: the gRPC socket is root's alone, the Docker
    /// socket root's and its group's).
    pub group: Option<String>,
    /// Connections open at once on one socket.
    pub max_connections: usize,
    /// Deadline for a connection's first bytes and a Docker API request's headers.
    pub header_timeout: std::time::Duration,
    /// How long a runtime command may take.
    pub runtime_timeout: Duration,
}

/// Default of `runtime_timeout`.
pub const DEFAULT_RUNTIME_TIMEOUT: Duration = Duration::from_secs(60);

/// `BERTH_<KEY>` from the environment, over the file's `key`: the environment wins so that one
/// run (a test, a slow machine) can change a setting without a config file.
fn env_or<T: std::str::FromStr>(key: &str, file: Option<T>) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    let var = format!("BERTH_{}", key.to_ascii_uppercase());
    match std::env::var(&var) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{var}={v:?}: {e}")),
        Err(_) => Ok(file),
    }
}

/// A setting in seconds: `BERTH_<KEY>` or the file's `key`, checked to be a positive number.
fn seconds(key: &str, file: Option<f64>) -> Result<Option<Duration>> {
    let Some(s) = env_or(key, file)? else {
        return Ok(None);
    };
    if !s.is_finite() || s <= 0.0 || s > 1e9 {
        anyhow::bail!(
            "{key} (BERTH_{}): {s} is not a positive number of seconds",
            key.to_ascii_uppercase()
        );
    }
    Ok(Some(Duration::from_secs_f64(s)))
}

impl Config {
    /// Flags win over the file, the file over defaults.
    pub fn resolve(
        file: FileConfig,
        root: Option<PathBuf>,
        state: Option<PathBuf>,
        address: Option<PathBuf>,
        log_level: Option<String>,
    ) -> Result<Config> {
        let attempts = env_or("pull_attempts", file.pull_attempts)?;
        if attempts == Some(0) {
            anyhow::bail!("pull_attempts (BERTH_PULL_ATTEMPTS): must be at least 1");
        }
        let defaults = berth_distribution::Retries::default();
        let transfer = super::registries::Transfer {
            timeout: seconds("registry_timeout", file.registry_timeout)?,
            retries: berth_distribution::Retries {
                attempts: attempts.unwrap_or(defaults.attempts),
                delay: seconds("pull_retry_delay", file.pull_retry_delay)?
                    .unwrap_or(defaults.delay),
            },
        };
        let runtime_timeout =
            seconds("runtime_timeout", file.runtime_timeout)?.unwrap_or(DEFAULT_RUNTIME_TIMEOUT);
        let registries =
            super::registries::Registries::new(file.registries)?.with_transfer(transfer);
        Ok(Config {
            root: root.or(file.root).unwrap_or_else(|| DEFAULT_ROOT.into()),
            state: state.or(file.state).unwrap_or_else(|| DEFAULT_STATE.into()),
            address: address
                .or(file.address)
                .unwrap_or_else(|| DEFAULT_ADDRESS.into()),
            docker_address: Some(
                file.docker_address
                    .unwrap_or_else(|| DEFAULT_DOCKER_ADDRESS.into()),
            )
            .filter(|p| !p.as_os_str().is_empty()),
            log_level: log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            max_blocking_threads: file.max_blocking_threads.unwrap_or(8).max(1),
            runtime: file.runtime.filter(|r| !r.is_empty()),
            log_max_size: file.log_max_size,
            registries,
            runtime_timeout,
            group: file.group.filter(|g| !g.is_empty()),
            max_connections: file
                .max_connections
                .unwrap_or(super::conns::DEFAULT_MAX_CONNECTIONS),
            header_timeout: match file.header_timeout_secs {
                Some(0) => anyhow::bail!("header_timeout_secs must be at least 1"),
                Some(s) => std::time::Duration::from_secs(s),
                None => super::conns::DEFAULT_HEADER_TIMEOUT,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str("root = \"/srv/b\"\nlog_level = \"debug\"").unwrap();
        let c =
            Config::resolve(file, None, Some("/tmp/s".into()), None, Some("warn".into())).unwrap();
        assert_eq!(c.root, PathBuf::from("/srv/b"));
        assert_eq!(c.state, PathBuf::from("/tmp/s"));
        assert_eq!(c.address, PathBuf::from(DEFAULT_ADDRESS));
        assert_eq!(c.log_level, "warn");
        assert_eq!(
            c.docker_address,
            Some(PathBuf::from(DEFAULT_DOCKER_ADDRESS))
        );
    }

    #[test]
    fn an_empty_docker_address_turns_the_docker_api_off() {
        let file: FileConfig = toml::from_str("docker_address = \"\"").unwrap();
        let c = Config::resolve(file, None, None, None, None).unwrap();
        assert_eq!(c.docker_address, None);
    }

    #[test]
    fn timeouts_and_retries_are_read_and_checked() {
        let file: FileConfig =
            toml::from_str("registry_timeout = 2.5\npull_attempts = 3\nruntime_timeout = 9")
                .unwrap();
        let c = Config::resolve(file, None, None, None, None).unwrap();
        assert_eq!(c.runtime_timeout, Duration::from_secs(9));
        let o = c
            .registries
            .client_options("x", &berth_distribution::ClientOptions::default());
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(o.retries.attempts, 3);
        assert_eq!(o.retries.delay, Duration::from_secs(5));
        for bad in [
            "registry_timeout = 0",
            "runtime_timeout = -1",
            "pull_attempts = 0",
        ] {
            let file: FileConfig = toml::from_str(bad).unwrap();
            let e = Config::resolve(file, None, None, None, None).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn connection_limits_default_and_a_zero_timeout_is_refused() {
        let c = Config::resolve(FileConfig::default(), None, None, None, None).unwrap();
        assert_eq!(
            c.max_connections,
            crate::daemon::conns::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(
            c.header_timeout,
            crate::daemon::conns::DEFAULT_HEADER_TIMEOUT
        );
        assert_eq!(c.group, None);
        let file: FileConfig = toml::from_str("header_timeout_secs = 0").unwrap();
        let err = Config::resolve(file, None, None, None, None).unwrap_err();
        assert!(err.to_string().contains("header_timeout_secs"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("rooot = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("rooot"), "{err}");
    }
}
