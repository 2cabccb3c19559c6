//! `POST /build`: `docker build` (the classic builder's API) and docker-compose's build, on
//! berthd's own builder (`crate::build`, the same engine, cache and store `berth build` uses).
//! The body is the context as a tar; the answer is the classic builder's JSON stream:
//! `{"stream": ...}` lines, the image ID as `{"aux": {"ID": ...}}` and as the "Successfully
//! built" line docker-compose reads, an error as the stream's last line.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::server::{line, stream, Chunk, Reply, Req};
use super::{short_id, Api};
use crate::build::{BuildError, Event, NetworkMode};

fn json_map(req: &Req, k: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(raw) = req.q(k).filter(|s| !s.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid {k}: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request(format!("invalid {k}: not a JSON object")))?;
    Ok(obj
        .iter()
        // A null build arg means "from the client's environment": the CLI already filled it.
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect())
}

pub(super) fn api_error(e: BuildError) -> ApiError {
    match e {
        BuildError::Invalid(m) => ApiError::bad_request(m),
        BuildError::NotFound(m) => ApiError::not_found(m),
        BuildError::Store(s) => s.into(),
        other => ApiError::internal(other.to_string()),
    }
}

/// `POST /build`.
pub async fn build(api: &Api, req: Req) -> Reply {
    if req.q("version") == Some("2") {
        return Err(ApiError::unsupported(
            "BuildKit (version=2; build with DOCKER_BUILDKIT=0)",
        ));
    }
    if req.q("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::unsupported(
            "building from a remote context (remote=)",
        ));
    }
    if let Some(p) = req.q("platform").filter(|p| !p.is_empty()) {
        if !p.starts_with("linux") {
            return Err(ApiError::unsupported(format!("platform {p:?}")));
        }
    }
    for k in ["cachefrom", "extrahosts", "squash", "outputs"] {
        if req
            .q(k)
            .is_some_and(|v| !v.is_empty() && v != "[]" && v != "0" && v != "false")
        {
            return Err(ApiError::unsupported(format!("build option {k}")));
        }
    }
    let network = NetworkMode::parse(req.q("networkmode").unwrap_or("")).map_err(api_error)?;
    let tags = crate::build::check_tags(&req.q_all("t")).map_err(api_error)?;
    let quiet = req.q_bool("q")?;
    let request = crate::build::Request {
        dockerfile: req.q("dockerfile").unwrap_or("").to_string(),
        dockerfile_content: None,
        build_args: json_map(&req, "buildargs")?,
        target: req
            .q("target")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        tags: tags.clone(),
        no_cache: req.q_bool("nocache")?,
        pull: req.q_bool("pull")?,
        network,
        labels: json_map(&req, "labels")?,
    };
    let mut reader = req.body_reader();
    // A gzip'd context (docker build --compress) is unpacked on the way.
    let mut head = [0u8; 2];
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let abort = Arc::new(AtomicBool::new(false));
    let watch_abort = abort.clone();
    let watch_tx = tx.clone();
    let watcher = tokio::spawn(async move {
        watch_tx.closed().await;
        watch_abort.store(true, Ordering::Release);
    });
    let eng = crate::daemon::services::builds::engine(&api.state);
    let ctx = api.ctx();
    let state = api.state.clone();
    tokio::task::spawn_blocking(move || {
        let n = match read_head(&mut reader, &mut head) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(ApiError::bad_request(format!(
                    "reading the build context: {e}"
                ))));
                return;
            }
        };
        let prefix = std::io::Cursor::new(head[..n].to_vec());
        let chained = prefix.chain(reader);
        let context: Box<dyn Read + Send> = if n == 2 && head == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(chained))
        } else {
            Box::new(chained)
        };
        let steps = std::sync::Mutex::new(0usize);
        let emit_tx = tx.clone();
        let emit = move |e: Event| {
            if quiet {
                return;
            }
            let text = match e {
                Event::Start(s) => {
                    let mut n = steps.lock().unwrap_or_else(|e| e.into_inner());
                    *n += 1;
                    format!("Step {} : {s}\n", *n)
                }
                Event::Cached(_) => " ---> Using cache\n".to_string(),
                Event::Output { data, .. } => String::from_utf8_lossy(&data).into_owned(),
                Event::Done(..) => return,
                Event::Warning(w) => format!("[WARNING]: {w}\n"),
            };
            let _ = emit_tx.blocking_send(Ok(line(&json!({ "stream": text }))));
        };
        let res = eng.build(&ctx, &request, context, &emit, &abort);
        match res {
            Ok(out) => {
                for name in &out.names {
                    if let Ok(img) = state.store().image(&ctx, name) {
                        crate::daemon::services::images::publish_image(super::NAMESPACE, &img);
                    }
                }
                let id = out.image_id.to_string();
                let _ = tx.blocking_send(Ok(line(&json!({"aux": {"ID": id}}))));
                if quiet {
                    // The CLI's -q prints the stream's text: the ID alone.
                    let _ = tx.blocking_send(Ok(line(&json!({ "stream": format!("{id}\n") }))));
                } else {
                    let mut text = format!("Successfully built {}\n", short_id(&id));
                    for t in &out.names {
                        text.push_str(&format!(
                            "Successfully tagged {}\n",
                            super::images::familiar(t)
                        ));
                    }
                    let _ = tx.blocking_send(Ok(line(&json!({ "stream": text }))));
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "docker api: build failed");
                let _ = tx.blocking_send(Err(api_error(e)));
                crate::daemon::services::collect_in_background(state);
            }
        }
        watcher.abort();
    });
    stream(rx, "application/json", true).await
}

fn read_head(r: &mut impl Read, buf: &mut [u8; 2]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
