//! The registry client: one repository of one registry, blocking I/O.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tracing::debug;

use crate::auth::{parse_challenge, Challenge, Credentials};
use crate::error::{DistributionError, Result};
use crate::reference::Reference;
use crate::{sha256_digest, MANIFEST_ACCEPT};

/// Largest manifest or index accepted.
pub const MAX_MANIFEST: u64 = 16 << 20;
/// Default size of one upload chunk (`PATCH`).
pub const DEFAULT_CHUNK: usize = 8 << 20;

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Speak plain HTTP instead of HTTPS (a local test registry).
    pub plain_http: bool,
    /// Credentials for Basic auth or for the token endpoint.
    pub credentials: Option<Credentials>,
    /// Ask tokens for push as well as pull.
    pub push: bool,
    /// How long one read or write may wait for the registry (default 60 s): a body that
    /// stalls longer fails the download (which is then retried, see [`Retries`]).
    pub timeout: Option<Duration>,
    /// How often a blob download is tried, and how long to wait in between.
    pub retries: Retries,
    /// TLS settings for this registry (private CA, client certificate, skip-verify).
    pub tls: crate::tls::TlsOptions,
    /// Reach this `host[:port]` instead of the reference's registry (a mirror); the
    /// repository path stays the same.
    pub endpoint: Option<String>,
}

/// Retries of a blob download that failed on the way (connection reset, read timeout, body
/// cut short, HTTP 5xx or 429), as Docker's download manager does: up to `attempts` tries in
/// all, waiting `delay` × the number of tries so far before the next (Docker: 5 tries, 5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// The wait after the first failure; the n-th failure waits n times as long.
    pub delay: Duration,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries {
            attempts: 5,
            delay: Duration::from_secs(5),
        }
    }
}

impl Retries {
    /// The wait after the `failed`-th failed try (1-based).
    pub fn backoff(&self, failed: u32) -> Duration {
        self.delay.saturating_mul(failed)
    }
}

/// A manifest or index as fetched.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Its bytes, unchanged.
    pub data: Vec<u8>,
    /// `Content-Type` (or the document's `mediaType` when the header is generic).
    pub media_type: String,
    /// sha256 of `data` (checked against the digest asked for, if any).
    pub digest: String,
}

/// A blob body being downloaded.
pub struct BlobBody {
    /// The bytes, from `offset` on.
    pub reader: Box<dyn Read + Send + Sync + 'static>,
    /// Where the body starts: the offset asked for if the registry honoured the Range, else 0.
    pub offset: u64,
    /// Bytes in the body, if the registry said (`Content-Length`).
    pub length: Option<u64>,
}

/// A client for one repository.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    repository: String,
    registry: String,
    opts: ClientOptions,
    auth: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct MediaTypeOnly {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// The registry's explanation in an error response: its `errors` list, else the body.
fn explain(resp: ureq::Response) -> String {
    let mut body = String::new();
    let _ = resp.into_reader().take(64 << 10).read_to_string(&mut body);
    if let Ok(e) = serde_json::from_str::<ErrorBody>(&body) {
        if !e.errors.is_empty() {
            return e
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
    let t = body.trim();
    if t.is_empty() {
        "(no details)".into()
    } else {
        t.chars().take(300).collect()
    }
}

enum Body<'a> {
    None,
    Bytes(&'a [u8]),
}

impl Client {
    /// A client for the registry `registry` itself rather than one of its repositories: for
    /// [`Client::check_login`] and [`Client::catalog`].
    pub fn for_registry(registry: &str, opts: ClientOptions) -> Result<Client> {
        let reference = Reference {
            registry: registry.to_string(),
            repository: String::new(),
            tag: None,
            digest: None,
        };
        Client::new(&reference, opts)
    }

    /// A client for `reference`'s repository.
    pub fn new(reference: &Reference, opts: ClientOptions) -> Result<Client> {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(opts.timeout.unwrap_or(Duration::from_secs(60)))
            .timeout_write(opts.timeout.unwrap_or(Duration::from_secs(60)))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if !opts.plain_http && !opts.tls.is_default() {
            builder = builder.tls_config(opts.tls.client_config()?);
        }
        let agent = builder.build();
        let scheme = if opts.plain_http { "http" } else { "https" };
        let host = opts.endpoint.as_deref().unwrap_or(reference.host());
        Ok(Client {
            agent,
            base: format!("{scheme}://{host}"),
            repository: reference.repository.clone(),
            registry: reference.registry.clone(),
            opts,
            auth: Mutex::new(None),
        })
    }

    /// How blob downloads are retried.
    pub fn retries(&self) -> Retries {
        self.opts.retries
    }

    /// The repository this client talks to.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The registry (as in references).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{}", self.base, self.repository, path)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    fn transport(url: &str, e: impl std::fmt::Display) -> DistributionError {
        DistributionError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        }
    }

    /// Fetches a token or sets Basic auth after a 401 carrying `challenge`.
    fn authenticate(&self, url: &str, challenge: Option<&str>) -> Result<()> {
        let c = challenge.and_then(parse_challenge);
        let header = match c {
            Some(Challenge::Basic) | None => match &self.opts.credentials {
                Some(cr) => cr.basic_header(),
                None => {
                    return Err(DistributionError::Unauthorized {
                        url: url.to_string(),
                        message: "the registry requires credentials (give --user or log in \
                                  via Docker's config.json)"
                            .into(),
                    })
                }
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let actions = if self.opts.push { "pull,push" } else { "pull" };
                // A registry-wide client (login, catalog) asks for no repository's scope.
                let scope = scope.or_else(|| {
                    (!self.repository.is_empty())
                        .then(|| format!("repository:{}:{actions}", self.repository))
                });
                let mut req = self.agent.get(&realm);
                if let Some(scope) = &scope {
                    req = req.query("scope", scope);
                }
                if let Some(s) = &service {
                    req = req.query("service", s);
                }
                if let Some(cr) = &self.opts.credentials {
                    req = req.set("Authorization", &cr.basic_header());
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(401 | 403, r)) => {
                        return Err(DistributionError::Unauthorized {
                            url: realm,
                            message: explain(r),
                        })
                    }
                    Err(ureq::Error::Status(code, r)) => {
                        return Err(DistributionError::Status {
                            method: "GET",
                            url: realm,
                            status: code,
                            message: explain(r),
                        })
                    }
                    Err(e) => return Err(Self::transport(&realm, e)),
                };
                let t: TokenBody = Self::read_json(resp, &realm, "token", 1 << 20)?;
                let tok = t.token.or(t.access_token).ok_or_else(|| {
                    DistributionError::Invalid(format!("token from {realm}: no token"))
                })?;
                format!("Bearer {tok}")
            }
        };
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = Some(header);
        Ok(())
    }

    /// Sends a request, authenticating once on 401. Non-2xx statuses come back as
    /// `Err(ureq::Error::Status)` in the inner result so callers can pick the error.
    fn send(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<std::result::Result<ureq::Response, (u16, ureq::Response)>> {
        let mut authed = false;
        loop {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let sent_auth = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(a) = &sent_auth {
                req = req.set("Authorization", a);
            }
            debug!(method, url, "registry request");
            let r = match &body {
                Body::None => req.call(),
                Body::Bytes(b) => req.send_bytes(b),
            };
            match r {
                Ok(resp) => return Ok(Ok(resp)),
                Err(ureq::Error::Status(401, resp)) if !authed => {
                    let ch = resp.header("www-authenticate").map(str::to_string);
                    let had_auth = sent_auth.is_some();
                    if had_auth && ch.as_deref().and_then(parse_challenge) == Some(Challenge::Basic)
                    {
                        return Err(DistributionError::Unauthorized {
                            url: url.to_string(),
                            message: format!("credentials refused: {}", explain(resp)),
                        });
                    }
                    self.authenticate(url, ch.as_deref())?;
                    authed = true;
                }
                Err(ureq::Error::Status(401, resp)) => {
                    return Err(DistributionError::Unauthorized {
                        url: url.to_string(),
                        message: format!("credentials refused: {}", explain(resp)),
                    })
                }
                Err(ureq::Error::Status(code, resp)) => return Ok(Err((code, resp))),
                Err(e) => return Err(Self::transport(url, e)),
            }
        }
    }

    fn fail(
        method: &'static str,
        url: &str,
        what: &str,
        code: u16,
        resp: ureq::Response,
    ) -> DistributionError {
        let message = explain(resp);
        match code {
            404 => DistributionError::NotFound {
                what: what.to_string(),
                url: url.to_string(),
                message,
            },
            403 => DistributionError::Unauthorized {
                url: url.to_string(),
                message: format!("denied: {message}"),
            },
            _ => DistributionError::Status {
                method,
                url: url.to_string(),
                status: code,
                message,
            },
        }
    }

    /// Fetches the manifest or index `object` (a tag or a digest). When `object` is a digest
    /// the bytes are checked against it.
    pub fn fetch_manifest(&self, object: &str) -> Result<FetchedManifest> {
        let url = self.url(&format!("manifests/{object}"));
        let accept = MANIFEST_ACCEPT.join(", ");
        let resp = match self.send("GET", &url, &[("Accept", accept)], Body::None)? {
            Ok(r) => r,
            Err((code, r)) => {
                return Err(Self::fail(
                    "GET",
                    &url,
                    &format!("manifest {}:{object}", self.repository),
                    code,
                    r,
                ))
            }
        };
        let header_type = resp.content_type().to_string();
        let mut data = Vec::new();
        resp.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut data)
            .map_err(|e| Self::transport(&url, e))?;
        if data.len() as u64 > MAX_MANIFEST {
            return Err(DistributionError::Invalid(format!(
                "{url}: manifest larger than {MAX_MANIFEST} bytes"
            )));
        }
        let parsed: MediaTypeOnly = serde_json::from_slice(&data).map_err(|e| {
            DistributionError::Invalid(format!("{url}: manifest is not valid JSON: {e}"))
        })?;
        let media_type = if MANIFEST_ACCEPT.contains(&header_type.as_str()) {
            header_type
        } else if let Some(m) = parsed.media_type {
            m
        } else if parsed.manifests.is_some() {
            MANIFEST_ACCEPT[0].to_string()
        } else if parsed.config.is_some() {
            MANIFEST_ACCEPT[1].to_string()
        } else {
            return Err(DistributionError::Invalid(format!(
                "{url}: unsupported manifest media type {header_type:?}"
            )));
        };
        let digest = sha256_digest(&data);
        if object.contains(':') && object != digest {
            return Err(DistributionError::DigestMismatch {
                what: format!("manifest {}@{object}", self.repository),
                expected: object.to_string(),
                actual: digest,
            });
        }
        Ok(FetchedManifest {
            data,
            media_type,
            digest,
        })
    }

    /// Starts downloading blob `digest` from `offset` (HTTP Range; the answer's
    /// [`BlobBody::offset`] says whether the registry honoured it).
    pub fn fetch_blob(&self, digest: &str, offset: u64) -> Result<BlobBody> {
        let url = self.url(&format!("blobs/{digest}"));
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("Range", format!("bytes={offset}-")));
        }
        let resp = match self.send("GET", &url, &headers, Body::None)? {
            Ok(r) => r,
            Err((416, _)) if offset > 0 => return self.fetch_blob(digest, 0),
            Err((code, r)) => {
                return Err(Self::fail("GET", &url, &format!("blob {digest}"), code, r))
            }
        };
        let start = if resp.status() == 206 { offset } else { 0 };
        let length = resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok());
        Ok(BlobBody {
            reader: resp.into_reader(),
            offset: start,
            length,
        })
    }

    /// True if the repository has blob `digest` (HEAD).
    pub fn blob_exists(&self, digest: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        match self.send("HEAD", &url, &[], Body::None)? {
            Ok(_) => Ok(true),
            Err((404, _)) => Ok(false),
            Err((code, r)) => Err(Self::fail("HEAD", &url, &format!("blob {digest}"), code, r)),
        }
    }

    /// Asks the registry to mount blob `digest` from repository `from` of the same registry.
    /// True if mounted; false if the registry wants an upload instead.
    pub fn mount_blob(&self, digest: &str, from: &str) -> Result<bool> {
        let url = format!("{}?mount={digest}&from={from}", self.url("blobs/uploads/"));
        match self.send("POST", &url, &[("Content-Length", "0".into())], Body::None)? {
            Ok(r) if r.status() == 201 => Ok(true),
            Ok(r) => {
                // 202: an upload session was opened instead; cancel it.
                if let Some(loc) = r.header("location") {
                    let loc = self.absolute(loc);
                    let _ = self.send("DELETE", &loc, &[], Body::None);
                }
                Ok(false)
            }
            Err((code, r)) => Err(Self::fail(
                "POST",
                &url,
                &format!("mount {digest}"),
                code,
                r,
            )),
        }
    }

    /// Uploads blob `digest` of `size` bytes from `src` in `PATCH` chunks of `chunk` bytes,
    /// then closes the upload with `PUT ?digest=`. `on_progress` gets the bytes sent so far.
    pub fn upload_blob(
        &self,
        digest: &str,
        size: u64,
        mut src: impl Read,
        chunk: usize,
        mut on_progress: impl FnMut(u64),
    ) -> Result<()> {
        let start = self.url("blobs/uploads/");
        let mut location = match self.send(
            "POST",
            &start,
            &[("Content-Length", "0".into())],
            Body::None,
        )? {
            Ok(r) => r
                .header("location")
                .map(|l| self.absolute(l))
                .ok_or_else(|| {
                    DistributionError::Invalid(format!("{start}: upload started without Location"))
                })?,
            Err((code, r)) => {
                return Err(Self::fail(
                    "POST",
                    &start,
                    &format!("upload {digest}"),
                    code,
                    r,
                ))
            }
        };
        let chunk = chunk.max(1 << 16);
        let mut buf = vec![0u8; chunk];
        let mut sent = 0u64;
        loop {
            let mut n = 0;
            while n < buf.len() {
                let m = src
                    .read(&mut buf[n..])
                    .map_err(|e| DistributionError::Invalid(format!("reading {digest}: {e}")))?;
                if m == 0 {
                    break;
                }
                n += m;
            }
            if n == 0 {
                break;
            }
            let range = format!("{}-{}", sent, sent + n as u64 - 1);
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Range", range),
            ];
            match self.send("PATCH", &location, &headers, Body::Bytes(&buf[..n]))? {
                Ok(r) => {
                    if let Some(l) = r.header("location") {
                        location = self.absolute(l);
                    }
                }
                Err((code, r)) => {
                    return Err(Self::fail(
                        "PATCH",
                        &location,
                        &format!("upload {digest}"),
                        code,
                        r,
                    ))
                }
            }
            sent += n as u64;
            on_progress(sent);
            if n < buf.len() {
                break;
            }
        }
        if sent != size {
            return Err(DistributionError::Invalid(format!(
                "blob {digest}: read {sent} bytes, expected {size}"
            )));
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        match self.send("PUT", &url, &[("Content-Length", "0".into())], Body::None)? {
            Ok(_) => Ok(()),
            Err((code, r)) => Err(Self::fail(
                "PUT",
                &url,
                &format!("upload {digest}"),
                code,
                r,
            )),
        }
    }

    /// Pushes a manifest or index under `object` (a tag or its digest).
    pub fn push_manifest(&self, object: &str, media_type: &str, data: &[u8]) -> Result<()> {
        let url = self.url(&format!("manifests/{object}"));
        match self.send(
            "PUT",
            &url,
            &[("Content-Type", media_type.to_string())],
            Body::Bytes(data),
        )? {
            Ok(_) => Ok(()),
            Err((code, r)) => Err(Self::fail(
                "PUT",
                &url,
                &format!("manifest {}:{object}", self.repository),
                code,
                r,
            )),
        }
    }

    /// `GET /v2/` with the client's credentials (Basic, or a token fetched with them): Ok when
    /// the registry accepts them, `Unauthorized` when it does not. What `docker login` checks.
    pub fn check_login(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        match self.send("GET", &url, &[], Body::None)? {
            Ok(_) => Ok(()),
            Err((code, r)) => Err(Self::fail("GET", &url, "the registry's API", code, r)),
        }
    }

    /// Reads a JSON answer of at most `max` bytes (more is cut off, and then not JSON);
    /// `what` names it in the error.
    fn read_json<T: serde::de::DeserializeOwned>(
        resp: ureq::Response,
        url: &str,
        what: &str,
        max: u64,
    ) -> Result<T> {
        let mut raw = Vec::new();
        resp.into_reader()
            .take(max)
            .read_to_end(&mut raw)
            .map_err(|e| Self::transport(url, e))?;
        serde_json::from_slice(&raw).map_err(|e| {
            DistributionError::Invalid(format!("{what} from {url}: invalid JSON: {e}"))
        })
    }

    /// The registry's repositories (`GET /v2/_catalog`, following its `Link` pages), at most
    /// `max` of them. A registry without a catalog answers `NotFound` or `Unauthorized`.
    pub fn catalog(&self, max: usize) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let mut names = Vec::new();
        let mut url = format!("{}/v2/_catalog?n={}", self.base, max.clamp(1, 1000));
        while names.len() < max {
            let resp = match self.send("GET", &url, &[], Body::None)? {
                Ok(r) => r,
                Err((code, r)) => return Err(Self::fail("GET", &url, "the catalog", code, r)),
            };
            let next = resp
                .header("link")
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(u, _)| self.absolute(u));
            let page: Page = Self::read_json(resp, &url, "catalog", MAX_MANIFEST)?;
            let empty = page.repositories.is_empty();
            names.extend(page.repositories);
            match next {
                Some(n) if !empty && n != url => url = n,
                _ => break,
            }
        }
        names.truncate(max);
        Ok(names)
    }

    /// The registry's search API (`GET /v1/search?q=&n=`, Docker Hub's and the old v1
    /// registries'), or None when it has none (404, as a registry v2 answers).
    pub fn v1_search(&self, term: &str, limit: usize) -> Result<Option<Vec<SearchResult>>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            results: Vec<SearchResult>,
        }
        let url = format!("{}/v1/search", self.base);
        let q = format!(
            "{url}?q={}&n={limit}",
            term.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        let resp = match self.send("GET", &q, &[], Body::None)? {
            Ok(r) => r,
            Err((404, _)) => return Ok(None),
            Err((code, r)) => return Err(Self::fail("GET", &url, "search", code, r)),
        };
        let a: Answer = Self::read_json(resp, &url, "search answer", MAX_MANIFEST)?;
        Ok(Some(a.results))
    }
}

/// One repository found by a registry's search API.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchResult {
    /// The repository's name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// Stars on Docker Hub.
    #[serde(default)]
    pub star_count: u64,
    /// A Docker official image.
    #[serde(default)]
    pub is_official: bool,
    /// Built automatically.
    #[serde(default)]
    pub is_automated: bool,
}
