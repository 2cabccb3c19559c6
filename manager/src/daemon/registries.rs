//! Per-registry settings from berthd's config file: TLS (a private CA, a client certificate,
//! skip-verify), plain HTTP, and pull mirrors.
//!
//! ```toml
//! [registries."registry.internal:5000"]
//! ca_file = "/etc/berth/certs/internal-ca.pem"
//! mirrors = ["mirror.internal:5000", "http://127.0.0.1:5001"]
//!
//! [registries."127.0.0.1:5001"]
//! plain_http = true
//! ```
//!
//! A mirror is `host[:port]`, or `http://host[:port]` for plain HTTP; its own section (if any)
//! gives its TLS settings. Mirrors are tried in order for pulls; pushes go to the registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_distribution::{ClientOptions, TlsOptions};
use serde::Deserialize;

/// One `[registries."host"]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Speak plain HTTP to this registry (as `--plain-http` does per request).
    #[serde(default)]
    pub plain_http: bool,
    /// Extra trusted roots (PEM) for this registry.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Accept any certificate from this registry.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Mirrors tried first for pulls.
    #[serde(default)]
    pub mirrors: Vec<String>,
}

/// Every configured registry, checked.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    hosts: BTreeMap<String, RegistryConfig>,
    /// The read timeout and download retries every client gets (berthd's `registry_timeout`,
    /// `pull_attempts`, `pull_retry_delay`).
    transfer: Transfer,
}

/// How long a registry may stall and how downloads are retried, for every registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transfer {
    /// One read or write's timeout (None: the client's default, 60 s).
    pub timeout: Option<std::time::Duration>,
    /// Blob download retries.
    pub retries: berth_distribution::Retries,
}

impl RegistryConfig {
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }
}

/// `http://h` → (h, plain); `https://h` or `h` → (h, TLS).
fn mirror_endpoint(m: &str) -> Result<(String, bool)> {
    let (host, plain) = if let Some(h) = m.strip_prefix("http://") {
        (h, true)
    } else {
        (m.strip_prefix("https://").unwrap_or(m), false)
    };
    let host = host.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        bail!("mirror {m:?}: expected host[:port], optionally with http:// or https://");
    }
    Ok((host.to_string(), plain))
}

impl Registries {
    /// Check every section: paired client cert and key, readable TLS files, valid mirrors.
    pub fn new(hosts: BTreeMap<String, RegistryConfig>) -> Result<Registries> {
        for (host, c) in &hosts {
            let ctx = || format!("registries.{host:?}");
            if c.client_cert.is_some() != c.client_key.is_some() {
                bail!("{}: client_cert and client_key go together", ctx());
            }
            c.tls().check().with_context(ctx)?;
            for m in &c.mirrors {
                mirror_endpoint(m).with_context(ctx)?;
            }
        }
        Ok(Registries {
            hosts,
            transfer: Transfer::default(),
        })
    }

    /// The same registries with `transfer` for every client.
    pub fn with_transfer(mut self, transfer: Transfer) -> Registries {
        self.transfer = transfer;
        self
    }

    /// `base` (from the request) with this host's settings applied.
    pub fn client_options(&self, host: &str, base: &ClientOptions) -> ClientOptions {
        let mut o = base.clone();
        o.timeout = o.timeout.or(self.transfer.timeout);
        o.retries = self.transfer.retries;
        if let Some(c) = self.hosts.get(host) {
            o.plain_http |= c.plain_http;
            o.tls = c.tls();
        }
        o
    }

    /// Whether the config file has a section for `host` (the Docker API then lets it decide
    /// between HTTP and HTTPS instead of treating loopback registries as insecure).
    pub fn configured(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// The pull mirrors of `host`, each with its own section's TLS settings and the request's
    /// credentials.
    pub fn mirrors(&self, host: &str, base: &ClientOptions) -> Vec<ClientOptions> {
        let Some(c) = self.hosts.get(host) else {
            return Vec::new();
        };
        c.mirrors
            .iter()
            .filter_map(|m| mirror_endpoint(m).ok())
            .map(|(h, plain)| {
                let mut o = self.client_options(&h, base);
                o.plain_http |= plain;
                o.endpoint = Some(h);
                o
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Registries> {
        #[derive(Deserialize)]
        struct F {
            registries: BTreeMap<String, RegistryConfig>,
        }
        let f: F = toml::from_str(text)?;
        Registries::new(f.registries)
    }

    #[test]
    fn mirrors_and_settings_apply_per_host() {
        let r = parse(
            r#"
            [registries."up:5000"]
            mirrors = ["http://127.0.0.1:5001", "m2:443"]
            [registries."m2:443"]
            insecure_skip_verify = true
            "#,
        )
        .unwrap();
        let base = ClientOptions::default();
        let ms = r.mirrors("up:5000", &base);
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].endpoint.as_deref(), Some("127.0.0.1:5001"));
        assert!(ms[0].plain_http);
        assert_eq!(ms[1].endpoint.as_deref(), Some("m2:443"));
        assert!(!ms[1].plain_http && ms[1].tls.insecure_skip_verify);
        assert!(r.mirrors("other", &base).is_empty());
        assert!(!r.client_options("up:5000", &base).plain_http);
    }

    #[test]
    fn bad_sections_are_refused_by_name() {
        let e = parse("[registries.\"r\"]\nclient_cert = \"/x\"").unwrap_err();
        assert!(format!("{e:#}").contains("client_key"), "{e:#}");
        let e = parse("[registries.\"r\"]\nca_file = \"/no/such/ca.pem\"").unwrap_err();
        assert!(format!("{e:#}").contains("/no/such/ca.pem"), "{e:#}");
        let e = parse("[registries.\"r\"]\nmirrors = [\"a/b\"]").unwrap_err();
        assert!(format!("{e:#}").contains("mirror \"a/b\""), "{e:#}");
        let e = parse("[registries.\"r\"]\ncafile = \"/x\"").unwrap_err();
        assert!(format!("{e:#}").contains("cafile"), "{e:#}");
    }
}
