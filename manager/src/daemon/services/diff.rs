//! `containerd.services.diff.v1.Diff`: apply a layer blob onto mounts, or make one from two.
//!
//! Apply mounts the target on a temp dir under `--state`, streams the blob out of the content
//! store through the decompressor into berth-layer's confined apply while hashing the
//! uncompressed bytes, then unmounts: the reply carries that uncompressed digest (the diff id).
//! Diff mounts both sides read-only, writes the changes as a tar (gzip unless the media type
//! says otherwise) straight into a content ingest, and commits it.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use berth_layer::{apply_layer, ApplyOptions, Compression, WhiteoutMode};
use berth_proto::containerd::services::diff::v1 as pb;
use berth_proto::containerd::services::diff::v1::diff_server::Diff;
use berth_proto::containerd::types::Descriptor as PbDescriptor;
use berth_store::{Digest, StoreError};
use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status};

use super::snapshots::store_mounts;
use crate::daemon::errors::blocking;
use crate::daemon::meta::{ctx, digest, labels};
use crate::daemon::mounts::{check_confined, TempMount};
use crate::daemon::state::State;

/// Label containerd puts on a compressed layer blob naming its uncompressed digest.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// Applies and creates layers.
pub struct DiffService {
    /// Shared state.
    pub state: State,
}

/// The decompressed layer stream, its running hash and byte count.
type HashState = (Box<dyn Read + Send>, Sha256, u64);

/// A reader that hashes what passes through; shared so the hash survives the consumer.
struct Hashing {
    inner: Arc<Mutex<HashState>>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let n = g.0.read(buf)?;
        g.1.update(&buf[..n]);
        g.2 += n as u64;
        Ok(n)
    }
}

fn uncompressed_media_type(mt: &str) -> String {
    for suffix in ["+gzip", "+zstd", ".gzip", ".zstd"] {
        if let Some(base) = mt.strip_suffix(suffix) {
            return base.to_string();
        }
    }
    mt.to_string()
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("diff descriptor must be set"))?;
        let d = digest("diff.digest", &desc.digest)?;
        let mounts = store_mounts(r.mounts);
        if mounts.is_empty() {
            return Err(Status::invalid_argument("apply needs at least one mount"));
        }
        check_confined(&mounts, self.state.root())
            .map_err(|e| Status::invalid_argument(format!("diff apply: {e}")))?;
        let store = self.state.store().clone();
        let state_dir = self.state.state_dir().to_path_buf();
        let media_type = desc.media_type.clone();
        let (diff_id, size) = blocking(move || {
            let reader = store.content_reader(&c, &d)?;
            let file = reader.reader(0)?;
            let raw = berth_layer::decompressed(std::io::BufReader::with_capacity(1 << 20, file))
                .map_err(|e| StoreError::from(e).context(format!("layer {d}")))?;
            let shared = Arc::new(Mutex::new((raw, Sha256::new(), 0u64)));
            let tm = TempMount::new(&state_dir, &mounts)
                .map_err(|e| StoreError::io("mount", &state_dir, e))?;
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Delete,
                same_owner: nix::unistd::geteuid().is_root(),
                xattrs: true,
            };
            apply_layer(
                Hashing {
                    inner: shared.clone(),
                },
                tm.path(),
                &opts,
            )
            .map_err(|e| StoreError::from(e).context(format!("applying layer {d}")))?;
            drop(tm);
            let mut g = shared
                .lock()
                .map_err(|_| StoreError::Db("hash lock poisoned".into()))?;
            // The tar may end before the stream does (padding): hash the rest too.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n =
                    g.0.read(&mut buf)
                        .map_err(|e| StoreError::io("read layer", "", e))?;
                if n == 0 {
                    break;
                }
                g.1.update(&buf[..n]);
                g.2 += n as u64;
            }
            let hex: String =
                g.1.clone()
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
            let res = (Digest::from_hex(&hex)?, g.2);
            drop(g);
            crate::daemon::trim_heap();
            Ok(res)
        })
        .await?;
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(PbDescriptor {
                media_type: uncompressed_media_type(&media_type),
                digest: diff_id.to_string(),
                size: size as i64,
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let left = store_mounts(r.left);
        let right = store_mounts(r.right);
        if right.is_empty() {
            return Err(Status::invalid_argument(
                "diff needs the right (newer) mounts",
            ));
        }
        for ms in [&left, &right] {
            check_confined(ms, self.state.root())
                .map_err(|e| Status::invalid_argument(format!("diff: {e}")))?;
        }
        let media_type = if r.media_type.is_empty() {
            "application/vnd.oci.image.layer.v1.tar+gzip".to_string()
        } else {
            r.media_type
        };
        let compression = if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Compression::Gzip
        } else if media_type.ends_with("+zstd") {
            Compression::Zstd
        } else if media_type.ends_with(".tar") || media_type.ends_with(".rootfs.diff.tar") {
            Compression::None
        } else {
            return Err(Status::invalid_argument(format!(
                "unsupported diff media type {media_type:?}"
            )));
        };
        let reference = if r.r#ref.is_empty() {
            format!("diff-{}", fastrand::u64(..))
        } else {
            r.r#ref
        };
        let mut lbls = labels(r.labels);
        let store = self.state.store().clone();
        let state_dir = self.state.state_dir().to_path_buf();
        let (d, size) = blocking(move || {
            let ro = |ms: &[berth_store::snapshots::Mount]| {
                ms.iter()
                    .cloned()
                    .map(|mut m| {
                        if !m.options.iter().any(|o| o == "ro") {
                            m.options.retain(|o| o != "rw");
                            m.options.push("ro".into());
                        }
                        m
                    })
                    .collect::<Vec<_>>()
            };
            let lower = TempMount::new(&state_dir, &ro(&left))
                .map_err(|e| StoreError::io("mount", &state_dir, e))?;
            let upper = TempMount::new(&state_dir, &ro(&right))
                .map_err(|e| StoreError::io("mount", &state_dir, e))?;
            let mut w = store.content_writer(&c, &reference, None, None)?;
            w.truncate(0)?;
            let diff_hex = {
                let mut tee = DiffIdWriter {
                    inner: berth_layer::compressor(&mut w, compression)?,
                    hash: Sha256::new(),
                };
                berth_layer::diff_trees(lower.path(), upper.path(), &mut tee)?;
                let hex: String = tee
                    .hash
                    .clone()
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                tee.inner
                    .finish()
                    .map_err(|e| StoreError::io("finish compression", "", e))?;
                hex
            };
            drop(lower);
            drop(upper);
            let size = w.offset();
            let computed = w.digest();
            lbls.insert(LABEL_UNCOMPRESSED.into(), format!("sha256:{diff_hex}"));
            let d = match w.commit(size, None, lbls) {
                Ok(d) => d,
                // The same layer was made before: it is the answer all the same.
                Err(e) if e.is_already_exists() => computed,
                Err(e) => return Err(e),
            };
            Ok((d, size))
        })
        .await?;
        Ok(Response::new(pb::DiffResponse {
            diff: Some(PbDescriptor {
                media_type,
                digest: d.to_string(),
                size: size as i64,
                annotations: Default::default(),
            }),
        }))
    }
}

/// Hashes the uncompressed tar while passing it to the compressor.
struct DiffIdWriter<W: Write> {
    inner: berth_layer::Compressor<W>,
    hash: Sha256,
}

impl<W: Write> Write for DiffIdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
