//! Credentials: Docker's `config.json`, and parsing of `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{DistributionError, Result};

/// A user name and password (or identity token as password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

impl Credentials {
    /// Parses `user:password` (as given to `--user`).
    pub fn parse(s: &str) -> Result<Credentials> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(DistributionError::Invalid(
                "credentials must be user:password with a non-empty user".into(),
            )),
        }
    }

    /// The value of a Basic `Authorization` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// Docker's `config.json`: `auths`, and the credential helpers of `credHelpers` (per registry)
/// and `credsStore` (for every other registry), run as `docker-credential-<name> get`.
#[derive(Default)]
pub struct DockerConfig {
    auths: BTreeMap<String, AuthEntry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

/// What a credential helper prints for `get`.
#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Run `docker-credential-<helper> get` for `server`; `None` when it has no credentials.
pub fn run_credential_helper(helper: &str, server: &str) -> Result<Option<Credentials>> {
    if helper.is_empty() || helper.contains('/') {
        return Err(DistributionError::Invalid(format!(
            "credential helper {helper:?}: not a helper name"
        )));
    }
    helper_get(Path::new(&format!("docker-credential-{helper}")), server)
}

/// `PROGRAM get` with `server` on stdin, per Docker's credential helper protocol.
fn helper_get(program: &Path, server: &str) -> Result<Option<Credentials>> {
    use std::io::Write as _;
    let program = program.display().to_string();
    let err = |m: String| DistributionError::Invalid(format!("credential helper {program}: {m}"));
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(format!(
                "cannot run it ({e}); is it installed on berthd's PATH?"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that answers without reading its input (one that fails early, say) may be
        // gone already: its exit status and output below tell what happened, not our EPIPE.
        if let Err(e) = stdin.write_all(server.as_bytes()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(err(format!("writing the server address: {e}")));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for it: {e}")))?;
    let said = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if !out.status.success() {
        let msg = [said(&out.stdout), said(&out.stderr)].join(" ");
        // The protocol's way of saying "nothing stored for this server".
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(format!(
            "get {server} failed ({}): {}",
            out.status,
            msg.trim()
        )));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .map_err(|e| err(format!("get {server}: unreadable reply: {e}")))?;
    if reply.username.is_empty() && reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
    }))
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(d).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let err = |m: String| DistributionError::Config {
            path: path.display().to_string(),
            message: m,
        };
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig::default())
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let f: ConfigFile = serde_json::from_slice(&data).map_err(|e| err(e.to_string()))?;
        Ok(DockerConfig {
            auths: f.auths,
            cred_helpers: f.cred_helpers,
            creds_store: f.creds_store.filter(|s| !s.is_empty()),
        })
    }

    /// The credentials stored for `registry` (`docker.io` also matches Docker Hub's legacy
    /// `https://index.docker.io/v1/` key; `https://host` and `host` keys both match).
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let strip = |k: &str| {
            k.trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let want = if registry == "docker.io" {
            vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
        } else {
            vec![registry]
        };
        // Helpers are asked with Docker's server address for the registry.
        let server = if registry == "docker.io" {
            "https://index.docker.io/v1/"
        } else {
            registry
        };
        let helper = self
            .cred_helpers
            .iter()
            .find(|(k, _)| want.contains(&strip(k).as_str()))
            .map(|(_, h)| h);
        if let Some(h) = helper.or(self.creds_store.as_ref()) {
            if let Some(c) = run_credential_helper(h, server)? {
                return Ok(Some(c));
            }
        }
        for (k, e) in &self.auths {
            if !want.contains(&strip(k).as_str()) {
                continue;
            }
            if let (Some(u), Some(p)) = (&e.username, &e.password) {
                return Ok(Some(Credentials {
                    username: u.clone(),
                    password: p.clone(),
                }));
            }
            if let Some(a) = &e.auth {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|e| {
                        DistributionError::Invalid(format!("auths.{k}.auth is not base64: {e}"))
                    })?;
                let s = String::from_utf8(raw).map_err(|_| {
                    DistributionError::Invalid(format!("auths.{k}.auth is not UTF-8"))
                })?;
                return Credentials::parse(&s).map(Some);
            }
        }
        Ok(None)
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter.
        service: Option<String>,
        /// `scope` parameter.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match v.find(',') {
                Some(end) => (v[..end].to_string(), &v[end..]),
                None => (v.to_string(), ""),
            }
        };
        params.insert(k, val);
        s = next.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("docker-credential-test");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn credential_helpers_answer_found_missing_and_broken() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(
            dir.path(),
            r#"read s; [ "$1" = get ] && printf '{"ServerURL":"%s","Username":"u-%s","Secret":"pw"}' "$s" "$s""#,
        );
        let c = helper_get(&ok, "reg.example:5000").unwrap().unwrap();
        assert_eq!(c.username, "u-reg.example:5000");
        assert_eq!(c.password, "pw");
        let none = script(
            dir.path(),
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert!(helper_get(&none, "x").unwrap().is_none());
        let broken = script(dir.path(), "echo boom >&2; exit 3");
        let e = helper_get(&broken, "x").unwrap_err().to_string();
        assert!(
            e.contains("boom") && e.contains("docker-credential-test"),
            "{e}"
        );
        let garbage = script(dir.path(), "echo not-json");
        let e = helper_get(&garbage, "x").unwrap_err().to_string();
        assert!(e.contains("unreadable reply"), "{e}");
        let e = run_credential_helper("berth-no-such-helper", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker-credential-berth-no-such-helper"), "{e}");
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.io/token".into(),
                service: Some("reg.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn docker_config_auths_decode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#
            ),
        )
        .unwrap();
        let c = DockerConfig::load(&p).unwrap();
        let want = Credentials::parse("alice:s3cret").unwrap();
        assert_eq!(c.credentials("127.0.0.1:5000").unwrap(), Some(want.clone()));
        assert_eq!(c.credentials("docker.io").unwrap(), Some(want));
        assert_eq!(c.credentials("other.io").unwrap(), None);
        std::fs::write(&p, r#"{"auths":{"x.io":{"auth":"!!"}}}"#).unwrap();
        let c = DockerConfig::load(&p).unwrap();
        assert!(c.credentials("x.io").is_err());
        std::fs::write(&p, "not json").unwrap();
        assert!(DockerConfig::load(&p).is_err());
        assert!(DockerConfig::load(&dir.path().join("missing")).is_ok());
    }
}
