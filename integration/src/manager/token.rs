//! A token server for docker-registry's `auth: token` mode, for one test: the registry answers
//! 401 with a `Bearer realm=...` challenge, the client fetches a JWT from this server with its
//! Basic credentials, and the registry checks the JWT's RS256 signature against the
//! certificate this server signs with (its `rootcertbundle`).
//!
//! The JWT is signed with the openssl CLI (RS256 is a plain PKCS#1 v1.5 signature of the
//! signing input), so no JWT crate is needed for a test fixture.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine as _;

/// The issuer and service names the registry is configured with.
pub const ISSUER: &str = "berth-test-issuer";
/// The `service` of the challenge and the tokens' audience.
pub const SERVICE: &str = "berth-test-registry";

/// A running token server.
pub struct TokenServer {
    port: u16,
    cert: PathBuf,
    issued: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenServer {
    /// Starts a server on 127.0.0.1 that issues tokens to `user`:`password` only.
    pub fn start(user: &str, password: &str) -> Result<TokenServer> {
        let dir = tempfile::tempdir()?;
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth-test-token-signer",
                "-keyout",
                "token.key",
                "-out",
                "token.pem",
            ],
        )?;
        let der = openssl(dir.path(), &["x509", "-in", "token.pem", "-outform", "DER"])?;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let issued = Arc::new(AtomicUsize::new(0));
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (key_dir, count, user) = (dir.path().to_path_buf(), issued.clone(), user.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = v.trim().to_string();
                        }
                    }
                }
                let scope = first
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.split_once('?'))
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| {
                        s.replace("%3A", ":")
                            .replace("%2C", ",")
                            .replace("%2F", "/")
                    })
                    .unwrap_or_default();
                let reply = if auth != want {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                     Content-Length: 27\r\nConnection: close\r\n\r\n{\"details\":\"bad credentials\"}"
                        .to_string()
                } else {
                    match sign(&key_dir, &x5c, &user, &scope) {
                        Ok(tok) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            let body = format!("{{\"token\":\"{tok}\"}}");
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                        }
                        Err(e) => {
                            let body = format!("{e:#}");
                            format!(
                                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\
                                 Connection: close\r\n\r\n{body}",
                                body.len()
                            )
                        }
                    }
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        Ok(TokenServer {
            port,
            cert: dir.path().join("token.pem"),
            issued,
            _dir: dir,
        })
    }

    /// The realm the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate tokens are signed with (the registry's `rootcertbundle`).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// How many tokens were issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

/// A JWT granting `scope` (`repository:NAME:ACTIONS`, space-separated if several).
fn sign(dir: &Path, x5c: &str, user: &str, scope: &str) -> Result<String> {
    let access: Vec<serde_json::Value> = scope
        .split(' ')
        .filter_map(|s| {
            let mut p = s.splitn(3, ':');
            let (t, n, a) = (p.next()?, p.next()?, p.next()?);
            Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), &input)?;
    let path = tmp.path().display().to_string();
    let sig = openssl(dir, &["dgst", "-sha256", "-sign", "token.key", &path])?;
    Ok(format!("{input}.{}", b64url(&sig)))
}
