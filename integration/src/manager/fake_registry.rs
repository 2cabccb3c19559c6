//! A fake registry on 127.0.0.1 whose answers a test scripts: [`Fake::start`] runs a small
//! HTTP/1.1 server that asks a handler for each request's [`Reply`] (status, headers, body,
//! and faults: the body cut after N bytes, a connection reset, a stall, a trickle), and logs
//! every request line with its Range header. [`serving`] serves an [`image::Image`] under
//! any tag unless an override answers first. It stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::manager::image;

/// One canned answer.
#[derive(Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers (Content-Length is added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Send only this many body bytes (with the full Content-Length), then close.
    pub cut: Option<usize>,
    /// After the `cut` bytes, hold the connection open (a registry that stalls) for this long.
    pub stall: Option<std::time::Duration>,
    /// Close with a TCP reset (SO_LINGER 0) instead of a FIN after `cut`.
    pub reset: bool,
    /// Send the body in chunks of this many bytes with this pause after each (a slow link).
    pub trickle: Option<(usize, std::time::Duration)>,
}

impl Reply {
    /// An answer with a Content-Type and a body.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            cut: None,
            stall: None,
            reset: false,
            trickle: None,
        }
    }
}

/// Request lines with their Range header, in arrival order.
pub type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

pub type Handler = dyn Fn(&str, &str, &HashMap<String, String>, usize) -> Reply + Send + Sync;

/// A fake registry on 127.0.0.1: `handler(method, path, headers, nth request to this path)`.
/// Every request line and its Range header is logged. Stops when dropped (the listener thread
/// ends at the next connection, which Drop makes).
pub struct Fake {
    port: u16,
    log: RequestLog,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Fake {
    /// Starts serving on a free port of 127.0.0.1.
    pub fn start(handler: Arc<Handler>) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log: RequestLog = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
            for s in l.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                let (counts, log2, handler) = (counts.clone(), log2.clone(), handler.clone());
                // One thread per connection: clients keep idle connections open.
                std::thread::spawn(move || {
                    let Ok(c) = s.try_clone() else { return };
                    let mut r = BufReader::new(c);
                    // Keep-alive: serve requests on this connection until it closes.
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        let mut headers = HashMap::new();
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_string();
                        let path = parts.next().unwrap_or("").to_string();
                        let n = {
                            let mut c = counts.lock().unwrap();
                            let n = c.entry(format!("{method} {path}")).or_default();
                            *n += 1;
                            *n
                        };
                        log2.lock()
                            .unwrap()
                            .push((format!("{method} {path}"), headers.get("range").cloned()));
                        let rep = handler(&method, &path, &headers, n);
                        let mut head = format!("HTTP/1.1 {} X\r\n", rep.status);
                        for (k, v) in &rep.headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str(&format!("Content-Length: {}\r\n\r\n", rep.body.len()));
                        let _ = s.write_all(head.as_bytes());
                        if method != "HEAD" {
                            let end = rep.cut.unwrap_or(rep.body.len());
                            match rep.trickle {
                                Some((n, pause)) => {
                                    for c in rep.body[..end].chunks(n.max(1)) {
                                        if s.write_all(c).and_then(|_| s.flush()).is_err() {
                                            break;
                                        }
                                        std::thread::sleep(pause);
                                    }
                                }
                                None => {
                                    let _ = s.write_all(&rep.body[..end]);
                                }
                            }
                        }
                        let _ = s.flush();
                        if let Some(t) = rep.stall {
                            std::thread::sleep(t);
                        }
                        if rep.reset {
                            // SO_LINGER 0: close() sends a RST, as a dying peer or a
                            // middlebox does.
                            let _ = nix::sys::socket::setsockopt(
                                &s,
                                nix::sys::socket::sockopt::Linger,
                                &libc::linger {
                                    l_onoff: 1,
                                    l_linger: 0,
                                },
                            );
                            break;
                        }
                        if rep.cut.is_some() {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                });
            }
        });
        Fake { port, log, stop }
    }

    /// `127.0.0.1:<port>/<repo_tag>`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// The requests so far: (`METHOD path`, Range header).
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Serves `img` (manifest under any tag, blobs by digest) unless `over` answers first.
pub fn serving(
    img: &image::Image,
    over: impl Fn(&str, &str, &HashMap<String, String>, usize) -> Option<Reply> + Send + Sync + 'static,
) -> Arc<Handler> {
    let img = img.clone();
    Arc::new(move |method, path, headers, n| {
        if let Some(r) = over(method, path, headers, n) {
            return r;
        }
        if path == "/v2/" {
            return Reply::new(200, "application/json", b"{}".to_vec());
        }
        if path.contains("/manifests/") {
            return Reply::new(200, OCI_MANIFEST, img.manifest.clone());
        }
        if let Some((_, d)) = path.split_once("/blobs/") {
            if d == image::sha256(&img.config) {
                return Reply::new(200, "application/octet-stream", img.config.clone());
            }
            for l in &img.layers {
                if d == l.digest {
                    return Reply::new(200, "application/octet-stream", l.gz.clone());
                }
            }
        }
        Reply::new(
            404,
            "application/json",
            br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
                .to_vec(),
        )
    })
}

/// A 206 answer with `blob` from the offset of a `Range: bytes=N-` request; None without one.
pub fn range_reply(blob: &[u8], headers: &HashMap<String, String>) -> Option<Reply> {
    let from: usize = headers
        .get("range")?
        .strip_prefix("bytes=")?
        .trim_end_matches('-')
        .parse()
        .ok()?;
    let mut r = Reply::new(206, "application/octet-stream", blob.get(from..)?.to_vec());
    r.headers.push((
        "Content-Range".into(),
        format!("bytes {from}-{}/{}", blob.len() - 1, blob.len()),
    ));
    Some(r)
}

/// The image's biggest layer (the one the resume tests cut).
pub fn biggest_layer(img: &image::Image) -> image::Layer {
    img.layers
        .iter()
        .max_by_key(|l| l.gz.len())
        .expect("the image has layers")
        .clone()
}

/// Every layer but `cut` was GET at most once over all pulls: a second pull fetched only what
/// was missing.
#[track_caller]
pub fn assert_others_fetched_at_most_once(fake: &Fake, img: &image::Image, cut: &image::Layer) {
    let requests = fake.requests();
    for l in img.layers.iter().filter(|l| l.digest != cut.digest) {
        let n = requests
            .iter()
            .filter(|(r, _)| r.starts_with("GET") && r.ends_with(&l.digest))
            .count();
        assert!(n <= 1, "layer {} fetched {n} times: {requests:?}", l.digest);
    }
}
