//! The HTTP/1.1 server on the Docker socket: accepting connections, the API version prefix,
//! routing to the resource handlers, request decoding (query, filters, JSON bodies with a size
//! limit) and the response helpers (JSON, chunked JSON progress streams, raw streams).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::errors::ApiError;
use super::version::{ApiVersion, CURRENT, MIN};
use super::{
    archive, build, changes, commit, containers, create, events, exec, images, networks, registry,
    stats, system, update, version, volumes, Api,
};

/// Largest JSON request body (network and volume definitions are a few hundred bytes).
pub const MAX_JSON_BODY: usize = 1 << 20;

/// A response body: whole, or streamed chunk by chunk.
pub type Body = BoxBody<Bytes, io::Error>;

/// What a handler answers.
pub type Reply = Result<Response<Body>, ApiError>;

/// Serves the Docker API on `listener` until `stop` turns true; connections in progress are
/// closed gracefully. `limits` bounds the connections and the time for a request's headers
/// (hyper's header read timeout, which also closes idle keep-alive connections).
pub async fn serve(
    api: Api,
    listener: UnixListener,
    limits: crate::daemon::conns::Limits,
    mut stop: watch::Receiver<bool>,
) {
    let api = Arc::new(api);
    let mut incoming =
        crate::daemon::conns::accept(listener, limits, "docker", crate::daemon::conns::Idle::Keep);
    loop {
        tokio::select! {
            r = incoming.recv() => match r {
                Some(Ok(stream)) => {
                    let api = api.clone();
                    let mut stop = stop.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let api = api.clone();
                            async move { Ok::<_, Infallible>(handle(&api, req).await) }
                        });
                        // Upgrades: attach and exec start take the connection over.
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(limits.header_timeout)
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades();
                        tokio::pin!(conn);
                        tokio::select! {
                            r = conn.as_mut() => {
                                if let Err(e) = r {
                                    tracing::debug!(error = %e, "docker api connection");
                                }
                            }
                            _ = stop.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = tokio::time::timeout(
                                    std::time::Duration::from_secs(5), conn).await;
                            }
                        }
                    });
                }
                Some(Err(e)) => tracing::warn!(error = %e, "docker api: accept failed"),
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
}

/// Headers dockerd puts on every answer; the client reads the API version from them.
fn common_headers(h: &mut HeaderMap) {
    h.insert(
        "Api-Version",
        HeaderValue::from_static(version::CURRENT_STR),
    );
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Berth/{} (linux)",
        crate::daemon::services::version::VERSION
    )) {
        h.insert(http::header::SERVER, v);
    }
}

async fn handle(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = match route(api, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, status = e.status.as_u16(), message = %e.message, "docker api error");
            error_response(&e)
        }
    };
    common_headers(resp.headers_mut());
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "docker api");
    resp
}

/// A decoded request: the path without its `/v1.NN` prefix, the version asked for, the query.
pub struct Req {
    /// The method.
    pub method: Method,
    /// The path, percent-decoded, without the version prefix.
    pub path: String,
    /// The API version of the request (the prefix's, else the current one).
    pub version: ApiVersion,
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body, unread.
    pub body: Incoming,
    /// The connection's upgrade, for the handlers that take the connection over.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Req {
    /// The first value of query parameter `k`.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `k` (`names=a&names=b`).
    pub fn q_all(&self, k: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean query parameter as Go's API reads them: 1/true (any case) or 0/false/empty.
    pub fn q_bool(&self, k: &str) -> Result<bool, ApiError> {
        match self.q(k) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "" | "0" | "false" | "no" => Ok(false),
                "1" | "true" | "yes" => Ok(true),
                _ => Err(ApiError::bad_request(format!(
                    "invalid boolean value for {k}: {v:?}"
                ))),
            },
        }
    }

    /// The `filters` parameter: JSON `{"key": {"value": true}}`, or the older
    /// `{"key": ["value"]}`.
    pub fn filters(&self) -> Result<Filters, ApiError> {
        Filters::parse(self.q("filters").unwrap_or(""))
    }

    /// The body as JSON of type `T` (at most [`MAX_JSON_BODY`] bytes; malformed: 400).
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        parse_body(&read_limited(self.body).await?)
    }

    /// The body as a blocking reader for a `spawn_blocking` consumer (an image archive),
    /// streamed: memory stays flat whatever its size.
    pub fn body_reader(self) -> BodyReader {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let mut body = self.body;
        tokio::spawn(async move {
            loop {
                match body.frame().await {
                    None => break,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(io::Error::other(e))).await;
                        break;
                    }
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            if tx.send(Ok(data)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        BodyReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

/// A JSON request body as berthd reads it: at most [`MAX_JSON_BODY`] bytes (more: 413), not
/// blank, and well-formed JSON of type `T` (else 400). Pure, so the fuzz targets call it too.
pub fn parse_body<T: DeserializeOwned>(data: &[u8]) -> Result<T, ApiError> {
    if data.len() > MAX_JSON_BODY {
        return Err(too_large());
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; JSON expected",
        ));
    }
    serde_json::from_slice(data)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON in the request body: {e}")))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {MAX_JSON_BODY} bytes"),
    )
}

async fn read_limited(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_JSON_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// A request body read from a blocking thread.
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(r) => self.cur = r?,
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Docker's filters: key → values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the JSON of a `filters` parameter (empty: none).
    pub fn parse(s: &str) -> Result<Filters, ApiError> {
        if s.trim().is_empty() {
            return Ok(Filters::default());
        }
        let bad =
            |e: &dyn std::fmt::Display| ApiError::bad_request(format!("invalid filters: {e}"));
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| bad(&e))?;
        let obj = v.as_object().ok_or_else(|| bad(&"not a JSON object"))?;
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            let list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(v, _)| v.clone())
                    .collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(&x)))
                    .collect::<Result<_, _>>()?,
                other => return Err(bad(other)),
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters(out))
    }

    /// Refuses keys outside `known` with Docker's message.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// The values of `key` (none: empty).
    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A boolean filter (`dangling`): None when absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        let vals = self.get(key);
        if vals.is_empty() {
            return Ok(None);
        }
        let mut out = None;
        for v in vals {
            let b = match v.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter '{key}={v}': must be true or false"
                    )))
                }
            };
            if out.is_some_and(|o| o != b) {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{key}': both true and false given"
                )));
            }
            out = Some(b);
        }
        Ok(out)
    }

    /// Whether `labels` satisfy every `label` filter (`key` or `key=value`).
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        self.get("label").iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(f.as_str()),
        })
    }
}

/// A JSON answer.
pub fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An empty answer (201, 204).
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Vec::new()));
    *r.status_mut() = status;
    r
}

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// The error answer: `{"message": ...}`.
pub fn error_response(e: &ApiError) -> Response<Body> {
    json(e.status, &serde_json::json!({ "message": e.message }))
}

/// One item of a streamed answer: data, or the error that ends it.
pub type Chunk = Result<Bytes, ApiError>;

/// Answers with a stream fed by `rx`, as moby does: its status is decided by the first item.
/// An error before any data is an ordinary error answer (a pull of a missing tag is a 404, not
/// a 200 with an error inside); an error after data ends the stream, as a JSON error line for
/// `json` streams, by cutting the chunked body short for raw ones (a tar).
pub async fn stream(
    mut rx: mpsc::Receiver<Chunk>,
    content_type: &'static str,
    json: bool,
) -> Reply {
    let first = match rx.recv().await {
        None => Bytes::new(),
        Some(Err(e)) => return Err(e),
        Some(Ok(b)) => b,
    };
    let rest = ReceiverStream::new(rx).map(move |c| match c {
        Ok(b) => Ok(Frame::data(b)),
        Err(e) if json => Ok(Frame::data(e.stream_line())),
        Err(e) => Err(io::Error::other(e.message)),
    });
    let all = tokio_stream::once(Ok(Frame::data(first))).chain(rest);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(all)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// One JSON value as a line of a progress stream.
pub fn line(v: &serde_json::Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    b.into()
}

/// Splits `/v1.41/images/json` into the version and `/images/json`; a path without a prefix is
/// at the current version. Versions outside [`MIN`]..=[`CURRENT`] are refused as dockerd does.
pub fn split_version(path: &str) -> Result<(ApiVersion, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((CURRENT, path));
    };
    let (v, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some(version) = ApiVersion::parse(v) else {
        // Not a version prefix (a path like /volumes is matched without one).
        return Ok((CURRENT, path));
    };
    if version > CURRENT {
        return Err(ApiError::bad_request(format!(
            "client version {} is too new. Maximum supported API version is {}",
            version, CURRENT
        )));
    }
    if version < MIN {
        return Err(ApiError::bad_request(format!(
            "client version {} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
            version, MIN
        )));
    }
    Ok((version, tail))
}

fn not_found() -> ApiError {
    ApiError::not_found("page not found")
}

async fn route(api: &Api, req: Request<Incoming>) -> Reply {
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let raw = parts.uri.path();
    let (version, path) = split_version(raw)?;
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the path is not UTF-8"))?
        .into_owned();
    let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let req = Req {
        method: parts.method,
        path,
        version,
        query,
        headers: parts.headers,
        body,
        upgrade,
    };
    let m = req.method.clone();
    let p = req.path.trim_end_matches('/').to_string();
    let (get, post, delete, head) = (
        m == Method::GET,
        m == Method::POST,
        m == Method::DELETE,
        m == Method::HEAD,
    );
    match p.as_str() {
        "/_ping" if get || head => return version::ping(req).await,
        "/version" if get => return version::version(api, req).await,
        "/info" if get => return system::info(api, req).await,
        "/system/df" if get => return system::df(api, req).await,
        "/events" if get => return events::serve(api, req).await,
        "/images/json" if get => return images::list(api, req).await,
        "/images/create" if post => return images::create(api, req).await,
        "/images/load" if post => return images::load(api, req).await,
        "/images/get" if get => return images::save(api, req, None).await,
        "/images/prune" if post => return images::prune(api, req).await,
        "/images/search" if get => return registry::search(api, req).await,
        "/build" if post => return build::build(api, req).await,
        "/commit" if post => return commit::commit(api, req).await,
        "/auth" if post => return registry::login(api, req).await,
        "/networks" if get => return networks::list(api, req).await,
        "/networks/create" if post => return networks::create(api, req).await,
        "/networks/prune" if post => return networks::prune(api, req).await,
        "/volumes" if get => return volumes::list(api, req).await,
        "/volumes/create" if post => return volumes::create(api, req).await,
        "/volumes/prune" if post => return volumes::prune(api, req).await,
        "/containers/json" if get => return containers::list(api, req).await,
        "/containers/create" if post => return create::create(api, req).await,
        "/containers/prune" if post => return containers::prune(api, req).await,
        _ => {}
    }
    if let Some(rest) = p.strip_prefix("/containers/") {
        let (name, action) = match rest.split_once('/') {
            Some((n, a)) => (n.to_string(), a.to_string()),
            None => (rest.to_string(), String::new()),
        };
        if name.is_empty() {
            return Err(not_found());
        }
        return match (action.as_str(), get, post, delete) {
            ("", _, _, true) => containers::remove(api, req, &name).await,
            ("json", true, _, _) => containers::inspect(api, req, &name).await,
            ("logs", true, _, _) => containers::logs(api, req, &name).await,
            ("top", true, _, _) => containers::top(api, req, &name).await,
            ("start", _, true, _) => containers::start(api, req, &name).await,
            ("stop", _, true, _) => containers::stop(api, req, &name).await,
            ("restart", _, true, _) => containers::restart(api, req, &name).await,
            ("kill", _, true, _) => containers::kill(api, req, &name).await,
            ("wait", _, true, _) => containers::wait(api, req, &name).await,
            ("pause", _, true, _) => containers::pause(api, req, &name, true).await,
            ("unpause", _, true, _) => containers::pause(api, req, &name, false).await,
            ("rename", _, true, _) => containers::rename(api, req, &name).await,
            ("attach", _, true, _) => containers::attach(api, req, &name).await,
            ("exec", _, true, _) => exec::create(api, req, &name).await,
            ("stats", true, _, _) => stats::stats(api, req, &name).await,
            ("changes", true, _, _) => changes::changes(api, req, &name).await,
            ("export", true, _, _) => changes::export(api, req, &name).await,
            ("update", _, true, _) => update::update(api, req, &name).await,
            ("resize", _, true, _) => containers::resize(api, req, &name).await,
            ("archive", _, _, _) => archive::handle(api, req, &name).await,
            _ => Err(not_found()),
        };
    }
    if let Some(rest) = p.strip_prefix("/exec/") {
        let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
        let id = id.to_string();
        return match (action, get, post) {
            ("start", _, true) => exec::start(api, req, &id).await,
            ("resize", _, true) => exec::resize(api, req, &id).await,
            ("json", true, _) => exec::inspect(api, req, &id).await,
            _ => Err(not_found()),
        };
    }
    if let Some(rest) = p.strip_prefix("/images/") {
        let rest = rest.to_string();
        if delete {
            return images::remove(api, req, &rest).await;
        }
        for (suffix, ok) in [
            ("/json", get),
            ("/history", get),
            ("/get", get),
            ("/tag", post),
            ("/push", post),
        ] {
            if let Some(name) = rest.strip_suffix(suffix) {
                if !ok || name.is_empty() {
                    return Err(not_found());
                }
                let name = name.to_string();
                return match suffix {
                    "/json" => images::inspect(api, req, &name).await,
                    "/history" => images::history(api, req, &name).await,
                    "/get" => images::save(api, req, Some(&name)).await,
                    "/tag" => images::tag(api, req, &name).await,
                    _ => images::push(api, req, &name).await,
                };
            }
        }
        return Err(not_found());
    }
    if let Some(rest) = p.strip_prefix("/networks/") {
        if !rest.contains('/') {
            let id = rest.to_string();
            if get {
                return networks::inspect(api, req, &id).await;
            }
            if delete {
                return networks::remove(api, req, &id).await;
            }
        } else if post {
            if let Some(id) = rest.strip_suffix("/connect") {
                let id = id.to_string();
                return networks::connect(api, req, &id).await;
            }
            if let Some(id) = rest.strip_suffix("/disconnect") {
                let id = id.to_string();
                return networks::disconnect(api, req, &id).await;
            }
        }
        return Err(not_found());
    }
    if let Some(rest) = p.strip_prefix("/volumes/") {
        if !rest.contains('/') {
            let name = rest.to_string();
            if get {
                return volumes::inspect(api, req, &name).await;
            }
            if delete {
                return volumes::remove(api, req, &name).await;
            }
        }
        return Err(not_found());
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_are_split_and_checked() {
        let (v, p) = split_version("/v1.41/images/json").unwrap();
        assert_eq!((v, p), (CURRENT, "/images/json"));
        let (v, p) = split_version("/v1.12/_ping").unwrap();
        assert_eq!((v.to_string(), p), ("1.12".to_string(), "/_ping"));
        assert_eq!(split_version("/_ping").unwrap(), (CURRENT, "/_ping"));
        assert_eq!(split_version("/volumes").unwrap(), (CURRENT, "/volumes"));
        let e = split_version("/v1.42/info").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("too new"), "{}", e.message);
        let e = split_version("/v1.11/info").unwrap_err();
        assert!(e.message.contains("too old"), "{}", e.message);
    }

    #[test]
    fn bodies_are_bounded_blank_or_malformed_json_refused() {
        let v: serde_json::Value = parse_body(br#" {"a": 1} "#).unwrap();
        assert_eq!(v["a"], 1);
        let e = parse_body::<serde_json::Value>(b" \n").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("empty"), "{}", e.message);
        let e = parse_body::<serde_json::Value>(b"{nope").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("malformed JSON"), "{}", e.message);
        let big = format!("\"{}\"", "x".repeat(MAX_JSON_BODY));
        let e = parse_body::<serde_json::Value>(big.as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("larger than"), "{}", e.message);
    }

    #[test]
    fn filters_take_both_shapes_and_refuse_unknown_keys() {
        let f = Filters::parse(r#"{"dangling":{"true":true},"label":["a=b"]}"#).unwrap();
        assert_eq!(f.bool("dangling").unwrap(), Some(true));
        assert_eq!(f.get("label"), ["a=b".to_string()]);
        assert!(f.only(&["dangling", "label"]).is_ok());
        let e = f.only(&["label"]).unwrap_err();
        assert_eq!(e.message, "invalid filter 'dangling'");
        assert!(Filters::parse("{nope").is_err());
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "b".to_string());
        assert!(f.labels_match(&labels));
        labels.insert("a".to_string(), "c".to_string());
        assert!(!f.labels_match(&labels));
    }
}
