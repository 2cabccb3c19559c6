//! `ADD <url>`: the file is downloaded into the build's work dir, checked against
//! `--checksum` when given, and copied like a context file but never unpacked. As Docker
//! does, it is named after the URL path's last segment, gets mode 0600 (unless `--chmod`)
//! and keeps the `Last-Modified` time of the answer.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::BuildError;

/// Largest download (Docker sets none; a limit keeps a wrong URL from filling the disk).
pub const MAX_DOWNLOAD: u64 = 8 << 30;

/// A downloaded source.
pub struct Download {
    /// The file, in the dir given to [`fetch`].
    pub path: PathBuf,
    /// Its base name in a destination directory.
    pub name: String,
    /// `sha256:<hex>` of its content.
    pub digest: String,
}

/// The file name a URL gives: its path's last segment, without query or fragment.
pub fn file_name(url: &str) -> Result<String, BuildError> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => Ok(n.to_string()),
        _ => Err(BuildError::Invalid(format!(
            "ADD {url}: cannot determine a file name from the URL"
        ))),
    }
}

/// Downloads `url` into `dir` (which must exist), checking `checksum` (`sha256:<hex>`).
pub fn fetch(url: &str, dir: &Path, checksum: Option<&str>) -> Result<Download, BuildError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(BuildError::Invalid(format!(
            "ADD {url}: only http and https URLs are supported by berth build (not git)"
        )));
    }
    if let Some(c) = checksum {
        let ok = c
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(BuildError::Invalid(format!(
                "invalid checksum {c:?}: expected sha256:<64 hex digits>"
            )));
        }
    }
    let name = file_name(url)?;
    let fail = |e: &dyn std::fmt::Display| BuildError::Failed(format!("ADD {url}: {e}"));
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(BuildError::Failed(format!(
                "ADD {url}: invalid response status {code} {}",
                r.status_text()
            )))
        }
        Err(e) => return Err(fail(&e)),
    };
    let modified = resp
        .header("last-modified")
        .and_then(|d| httpdate::parse_http_date(d).ok());
    let path = dir.join(&name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| fail(&e))?;
    let mut h = Sha256::new();
    let mut body = resp.into_reader().take(MAX_DOWNLOAD + 1);
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(|e| fail(&e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_DOWNLOAD {
            return Err(fail(&format!("larger than {MAX_DOWNLOAD} bytes")));
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(|e| fail(&e))?;
    }
    let digest = format!("sha256:{:x}", h.finalize());
    if let Some(c) = checksum {
        if !c.eq_ignore_ascii_case(&digest) {
            return Err(BuildError::Invalid(format!(
                "ADD {url}: digest mismatch: expected {c}, got {digest}"
            )));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(&e))?;
    if let Some(t) = modified {
        f.set_modified(t).map_err(|e| fail(&e))?;
    }
    Ok(Download { path, name, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_path_segment() {
        assert_eq!(file_name("http://h/a/b.tgz?x=1#f").unwrap(), "b.tgz");
        assert_eq!(file_name("https://h:80/file").unwrap(), "file");
        assert!(file_name("http://h/").is_err());
        assert!(file_name("http://h").is_err());
        assert!(file_name("http://h/a/..").is_err());
    }

    #[test]
    fn bad_urls_and_checksums_are_refused_before_any_request() {
        let d = tempfile::tempdir().unwrap();
        let e = fetch("git@github.com:x/y.git", d.path(), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not git"), "{e}");
        let e = fetch("http://127.0.0.1:1/x", d.path(), Some("md5:abc"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("invalid checksum"), "{e}");
    }
}
