//! Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 for one test.
//!
//! [`Registry::start`] picks a free port, writes a config with storage in a temp dir (and, with
//! [`Registry::start_with_auth`], an htpasswd file of bcrypt entries made by Python's `crypt`,
//! since no bcrypt crate or `htpasswd` is at hand), starts `docker-registry serve` with its log
//! in the temp dir, and waits for `/v2/` to answer. Dropping it kills the registry by pid.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The registry binary.
pub const REGISTRY: &str = "/usr/bin/docker-registry";

/// How the registry authenticates.
enum Auth {
    /// Basic auth against one htpasswd line.
    Htpasswd(String),
    /// A ready `auth:` section.
    Raw(String),
}

/// A running registry.
pub struct Registry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    ca: Option<PathBuf>,
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`:
/// (CA certificate, server certificate, server key).
pub fn make_certs(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl (hack/setup.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=berth-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    run(&ca)?;
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run(&csr)?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ])?;
    Ok((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// One `GET path` on 127.0.0.1:`port`: the status code, or `None` if nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A bcrypt htpasswd line for `user`:`password`.
pub fn htpasswd_line(user: &str, password: &str) -> Result<String> {
    let out = Command::new("python3")
        .arg("-W")
        .arg("ignore")
        .arg("-c")
        .arg("import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))")
        .arg(password)
        .output()
        .context("running python3 for bcrypt")?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !hash.starts_with("$2") {
        bail!(
            "python3 crypt gave no bcrypt hash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!("{user}:{hash}"))
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Result<Registry> {
        Self::start_inner(None, false)
    }

    /// A registry in `auth: token` mode, sending clients to `tokens` for Bearer tokens.
    pub fn start_with_tokens(tokens: &super::token::TokenServer) -> Result<Registry> {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
             rootcertbundle: {}\n",
            tokens.realm(),
            super::token::SERVICE,
            super::token::ISSUER,
            tokens.cert().display()
        );
        Self::start_inner(Some(Auth::Raw(auth)), false)
    }

    /// A registry requiring HTTP Basic auth as `user`:`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Result<Registry> {
        Self::start_inner(Some(Auth::Htpasswd(htpasswd_line(user, password)?)), false)
    }

    /// An anonymous registry speaking HTTPS with a certificate of a test CA ([`Registry::ca`]).
    pub fn start_tls() -> Result<Registry> {
        Self::start_inner(None, true)
    }

    fn start_inner(auth: Option<Auth>, tls: bool) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("registry-it-")
            .tempdir_in("/var/tmp")
            .context("creating the registry's temp dir")?;
        let certs = if tls {
            Some(make_certs(dir.path())?)
        } else {
            None
        };
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test\n",
                dir.path().join("data").display()
            );
            if let Some((_, cert, key)) = &certs {
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            match &auth {
                Some(Auth::Htpasswd(line)) => {
                    let p = dir.path().join("htpasswd");
                    std::fs::write(&p, format!("{line}\n"))?;
                    cfg.push_str(&format!(
                        "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                        p.display()
                    ));
                }
                Some(Auth::Raw(section)) => cfg.push_str(section),
                None => {}
            }
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg)?;
            let log = std::fs::File::create(dir.path().join("registry.log"))?;
            let child = Command::new(REGISTRY)
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {REGISTRY}"))?;
            let mut child = child;
            let log_path = dir.path().join("registry.log");
            let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(c)) = child.try_wait() {
                    last = Some(format!("exited with {c}: {}", read_log()));
                    break;
                }
                // A TLS port answers a plain request with 400 ("HTTP request to an HTTPS
                // server"): up all the same.
                let want: &[u16] = if tls { &[400] } else { &[200, 401] };
                if http_status(port, "/v2/").is_some_and(|s| want.contains(&s)) {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                return Ok(Registry {
                    dir,
                    child: Some(child),
                    port,
                    ca: certs.map(|(ca, _, _)| ca),
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            if last.is_none() {
                last = Some(format!("no answer on port {port}: {}", read_log()));
            }
        }
        bail!("registry did not start: {}", last.unwrap_or_default())
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The test CA's certificate (PEM) of a [`Registry::start_tls`] registry.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir (config, log, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's storage root.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
