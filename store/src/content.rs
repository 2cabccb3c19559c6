//! The on-disk content store, laid out as containerd's:
//! `<root>/blobs/sha256/<hex>` for committed blobs and `<root>/ingest/<sha256 of ref>/` for
//! writes in progress (`data`, `ref`, `startedat`, `total`, `expected`).
//!
//! This layer knows nothing of namespaces or labels: the [`crate::Store`] facade keeps those in
//! the metadata database. A blob only ever appears in `blobs/` by an atomic rename of a fully
//! written, fsynced and verified ingest file, so a half blob is never visible.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::debug;

use crate::digest::{Digest, Hasher};
use crate::error::{IoContext, Result, StoreError};
use crate::fsutil;

/// Size and times of a committed blob as the file system knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobStat {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed (the file's mtime).
    pub created_at: SystemTime,
}

/// The state of an ingest (a write in progress), as containerd's `content.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The ref the ingest was opened with.
    pub r#ref: String,
    /// Bytes written so far.
    pub offset: u64,
    /// Expected total size, if the writer said (0 = unknown).
    pub total: u64,
    /// Expected digest, if the writer said.
    pub expected: Option<Digest>,
    /// When the ingest was started.
    pub started_at: SystemTime,
    /// When data was last written.
    pub updated_at: SystemTime,
}

/// The content store on disk. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    locked: Mutex<HashSet<String>>,
}

impl ContentStore {
    /// Opens (creating if needed) a content store rooted at `root`
    /// (`<store root>/io.containerd.content.v1.content`).
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore> {
        let root = root.into();
        for d in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&d).ctx("create directory", &d)?;
        }
        Ok(ContentStore {
            inner: Arc::new(Inner {
                root,
                locked: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob of `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(d.hex())
    }

    fn ingest_dir(&self, r: &str) -> PathBuf {
        self.inner
            .root
            .join("ingest")
            .join(Digest::of(r.as_bytes()).hex())
    }

    /// Size and commit time of a blob; `NotFound` if it is not committed.
    pub fn stat(&self, d: &Digest) -> Result<BlobStat> {
        let p = self.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(BlobStat {
                digest: d.clone(),
                size: m.len(),
                created_at: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(format!("content {d}")))
            }
            Err(e) => Err(StoreError::io("stat", p, e)),
        }
    }

    /// True if the blob is committed.
    pub fn exists(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    /// Opens a blob for reading at any offset.
    pub fn reader_at(&self, d: &Digest) -> Result<ReaderAt> {
        let p = self.blob_path(d);
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(format!("content {d}")))
            }
            Err(e) => return Err(StoreError::io("open", p, e)),
        };
        let size = file.metadata().ctx("stat", &p)?.len();
        Ok(ReaderAt {
            file,
            size,
            path: p,
        })
    }

    /// Reads a whole (small) blob into memory, refusing blobs larger than `limit` bytes.
    pub fn read_all(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let r = self.reader_at(d)?;
        if r.size > limit {
            return Err(StoreError::InvalidArgument(format!(
                "content {d} is {} bytes, more than the {limit} allowed here",
                r.size
            )));
        }
        let mut buf = Vec::with_capacity(r.size as usize);
        r.reader(0)?.read_to_end(&mut buf).ctx("read", &r.path)?;
        Ok(buf)
    }

    /// Removes a committed blob; `NotFound` if it is not there.
    pub fn delete(&self, d: &Digest) -> Result<()> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(format!("content {d}")))
            }
            Err(e) => Err(StoreError::io("remove", p, e)),
        }
    }

    /// Every committed blob (names in `blobs/sha256` that are not valid digests are skipped).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.inner.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            if let Some(name) = e.file_name().to_str() {
                if let Ok(d) = Digest::from_hex(name) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Opens a writer for `ref`, resuming the ingest if one exists (its [`Writer::offset`] is
    /// then the bytes already there). `total` and `expected`, when given, are recorded and
    /// checked at commit. Fails with `Unavailable` ("ref ... is locked") while another writer
    /// holds the same ref. (Whether `expected` exists already is the caller's question: in
    /// containerd it depends on the namespace.)
    pub fn writer(
        &self,
        r#ref: &str,
        total: Option<u64>,
        expected: Option<Digest>,
    ) -> Result<Writer> {
        if r#ref.is_empty() {
            return Err(StoreError::InvalidArgument(
                "ingest ref must not be empty".into(),
            ));
        }
        let lock = self.lock(r#ref)?;
        let dir = self.ingest_dir(r#ref);
        if dir.exists() && !dir.join("ref").exists() {
            // What a crash in the middle of removing an ingest leaves (before removals went
            // through a rename): not an ingest any more.
            self.remove_ingest_dir(&dir)?;
        }
        if !dir.exists() {
            // Build the ingest directory under a temporary name, then rename it into place:
            // a crash never leaves an ingest without its `ref` and `startedat` files.
            let tmp = self
                .inner
                .root
                .join("ingest")
                .join(format!(".tmp-{}", fsutil::random_suffix()));
            fs::create_dir(&tmp).ctx("create directory", &tmp)?;
            let res = (|| {
                fsutil::write_file_sync(&tmp.join("ref"), r#ref.as_bytes())?;
                fsutil::write_file_sync(
                    &tmp.join("startedat"),
                    fsutil::nanos(SystemTime::now()).to_string().as_bytes(),
                )?;
                let data = tmp.join("data");
                File::create(&data).ctx("create", &data)?;
                fs::rename(&tmp, &dir).ctx("rename", &dir)?;
                fsutil::sync_dir(&self.inner.root.join("ingest"))
            })();
            if let Err(e) = res {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
        if let Some(t) = total {
            fsutil::write_file_atomic(&dir.join("total"), t.to_string().as_bytes())?;
        }
        if let Some(d) = &expected {
            fsutil::write_file_atomic(&dir.join("expected"), d.as_str().as_bytes())?;
        }
        let data = dir.join("data");
        // `create`: a commit moves `data` into the blobs before it removes the ingest, so a
        // crash between the two leaves an ingest without data; writing starts again at 0.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data)
            .ctx("open", &data)?;
        // Resume: rebuild the hash state from the bytes already written.
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).ctx("read", &data)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let status = read_status(&dir)?;
        debug!(r#ref, offset = hasher.len(), "content writer opened");
        Ok(Writer {
            store: self.clone(),
            lock,
            dir,
            file,
            hasher,
            total: status.total,
            expected: status.expected,
            started_at: status.started_at,
        })
    }

    /// Removes an ingest dir atomically as far as a crash can tell: renamed to
    /// `ingest/.tmp-*` first (which [`cleanup_ingests`](Self::cleanup_ingests) removes), so a
    /// crash never leaves half an ingest under its ref's name.
    fn remove_ingest_dir(&self, dir: &Path) -> Result<()> {
        let tmp = self
            .inner
            .root
            .join("ingest")
            .join(format!(".tmp-{}", fsutil::random_suffix()));
        let gone = match fs::rename(dir, &tmp) {
            Ok(()) => tmp,
            Err(_) => dir.to_path_buf(),
        };
        fs::remove_dir_all(&gone).ctx("remove", &gone)
    }

    fn lock(&self, r#ref: &str) -> Result<RefLock> {
        let mut set = self
            .inner
            .locked
            .lock()
            .map_err(|_| StoreError::Db("ingest lock table poisoned".into()))?;
        if !set.insert(r#ref.to_string()) {
            return Err(StoreError::Unavailable(format!(
                "ref {ref:?} is locked: another writer holds it"
            )));
        }
        Ok(RefLock {
            store: self.inner.clone(),
            r#ref: r#ref.to_string(),
        })
    }

    /// The status of the ingest `ref`; `NotFound` if there is none.
    pub fn status(&self, r#ref: &str) -> Result<Status> {
        let dir = self.ingest_dir(r#ref);
        if !dir.join("ref").exists() {
            return Err(StoreError::NotFound(format!("ingest {ref:?}")));
        }
        read_status(&dir)
    }

    /// The statuses of every ingest.
    pub fn list_statuses(&self) -> Result<Vec<Status>> {
        let dir = self.inner.root.join("ingest");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match read_status(&e.path()) {
                Ok(s) => out.push(s),
                Err(err) => debug!(path = %e.path().display(), %err, "skipping unreadable ingest"),
            }
        }
        out.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
        Ok(out)
    }

    /// Removes the ingest `ref` (`NotFound` if none; `Unavailable` if a writer holds it).
    pub fn abort(&self, r#ref: &str) -> Result<()> {
        let _lock = self.lock(r#ref)?;
        let dir = self.ingest_dir(r#ref);
        if !dir.exists() {
            return Err(StoreError::NotFound(format!("ingest {ref:?}")));
        }
        self.remove_ingest_dir(&dir)
    }

    /// Removes leftovers of interrupted ingest creation (`ingest/.tmp-*`) and ingests not
    /// written to since `older_than`. Returns the refs of the removed ingests.
    pub fn cleanup_ingests(&self, older_than: Option<SystemTime>) -> Result<Vec<String>> {
        let dir = self.inner.root.join("ingest");
        let mut removed = Vec::new();
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_dir_all(&p).ctx("remove", &p)?;
                continue;
            }
            let Some(limit) = older_than else { continue };
            let Ok(st) = read_status(&p) else {
                fs::remove_dir_all(&p).ctx("remove", &p)?;
                continue;
            };
            if st.updated_at < limit {
                if let Ok(_lock) = self.lock(&st.r#ref) {
                    fs::remove_dir_all(&p).ctx("remove", &p)?;
                    removed.push(st.r#ref);
                }
            }
        }
        Ok(removed)
    }
}

fn read_status(dir: &Path) -> Result<Status> {
    let r = fs::read_to_string(dir.join("ref")).ctx("read", dir.join("ref"))?;
    let started = fs::read_to_string(dir.join("startedat"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(fsutil::from_nanos)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let total = fs::read_to_string(dir.join("total"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let expected = fs::read_to_string(dir.join("expected"))
        .ok()
        .and_then(|s| Digest::parse(s.trim()).ok());
    let data = dir.join("data");
    let m = fs::metadata(&data).ctx("stat", &data)?;
    Ok(Status {
        r#ref: r,
        offset: m.len(),
        total,
        expected,
        started_at: started,
        updated_at: m.modified().unwrap_or(started),
    })
}

struct RefLock {
    store: Arc<Inner>,
    r#ref: String,
}

impl Drop for RefLock {
    fn drop(&mut self) {
        if let Ok(mut set) = self.store.locked.lock() {
            set.remove(&self.r#ref);
        }
    }
}

/// A committed blob opened for reading at any offset.
pub struct ReaderAt {
    file: File,
    size: u64,
    path: PathBuf,
}

impl ReaderAt {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Reads at `offset` into `buf`; returns the bytes read (0 at the end).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.file.read_at(buf, offset).ctx("read", &self.path)
    }
    /// A sequential reader starting at `offset`.
    pub fn reader(&self, offset: u64) -> Result<File> {
        let mut f = self.file.try_clone().ctx("dup", &self.path)?;
        f.seek(SeekFrom::Start(offset)).ctx("seek", &self.path)?;
        Ok(f)
    }
    /// Consumes it into a sequential reader from the start.
    pub fn into_file(self) -> File {
        self.file
    }
}

/// A writer into an ingest. Holds the ref's lock until dropped or committed.
pub struct Writer {
    store: ContentStore,
    #[allow(dead_code)] // held for its Drop
    lock: RefLock,
    dir: PathBuf,
    file: File,
    hasher: Hasher,
    total: u64,
    expected: Option<Digest>,
    started_at: SystemTime,
}

impl Writer {
    /// The ingest's ref.
    pub fn r#ref(&self) -> &str {
        &self.lock.r#ref
    }

    /// Bytes written so far (including those of a resumed ingest).
    pub fn offset(&self) -> u64 {
        self.hasher.len()
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.digest()
    }

    /// The current status of this ingest.
    pub fn status(&self) -> Result<Status> {
        let mut s = read_status(&self.dir)?;
        s.started_at = self.started_at;
        Ok(s)
    }

    /// Records the expected total size.
    pub fn set_total(&mut self, total: u64) -> Result<()> {
        fsutil::write_file_atomic(&self.dir.join("total"), total.to_string().as_bytes())?;
        self.total = total;
        Ok(())
    }

    /// Appends `data` at the current offset.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let off = self.offset();
        if self.total > 0 && off + data.len() as u64 > self.total {
            return Err(StoreError::InvalidArgument(format!(
                "ref {:?}: write of {} bytes at offset {off} exceeds the expected total {}",
                self.r#ref(),
                data.len(),
                self.total
            )));
        }
        let p = self.dir.join("data");
        self.file.write_all_at(data, off).ctx("write", &p)?;
        self.hasher.update(data);
        Ok(())
    }

    /// Cuts the ingest back to `size` bytes (at most the current offset) and rehashes.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        let p = self.dir.join("data");
        if size > self.offset() {
            return Err(StoreError::InvalidArgument(format!(
                "ref {:?}: cannot truncate to {size}, only {} bytes written",
                self.r#ref(),
                self.offset()
            )));
        }
        self.file.set_len(size).ctx("truncate", &p)?;
        let mut h = Hasher::new();
        let mut f = (&self.file).take(size);
        (&self.file).seek(SeekFrom::Start(0)).ctx("seek", &p)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).ctx("read", &p)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        self.hasher = h;
        Ok(())
    }

    /// Verifies and publishes the ingest as a blob. `size` 0 means "don't check"; `expected`
    /// overrides the expected digest given at open. A size or digest mismatch is
    /// `FailedPrecondition` and leaves the ingest in place (it can be truncated or aborted). If
    /// the blob exists already, the ingest is removed and `AlreadyExists` returned.
    pub fn commit(mut self, size: u64, expected: Option<&Digest>) -> Result<Digest> {
        let off = self.offset();
        let want_size = if size > 0 { size } else { self.total };
        if want_size > 0 && want_size != off {
            return Err(StoreError::FailedPrecondition(format!(
                "ref {:?}: unexpected commit size {off}, expected {want_size}",
                self.r#ref()
            )));
        }
        let digest = self.hasher.digest();
        if let Some(want) = expected.or(self.expected.as_ref()) {
            if *want != digest {
                return Err(StoreError::FailedPrecondition(format!(
                    "ref {:?}: unexpected commit digest {digest}, expected {want}",
                    self.r#ref()
                )));
            }
        }
        let data = self.dir.join("data");
        self.file.flush().ctx("flush", &data)?;
        self.file.sync_all().ctx("fsync", &data)?;
        let target = self.store.blob_path(&digest);
        let blobs = target.parent().map(Path::to_path_buf).unwrap_or_default();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o444)).ctx("chmod", &data)?;
        match fsutil::rename_noreplace(&data, &target) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.store.remove_ingest_dir(&self.dir)?;
                return Err(StoreError::AlreadyExists(format!("content {digest}")));
            }
            Err(e) => return Err(StoreError::io("rename", &target, e)),
        }
        fsutil::sync_dir(&blobs)?;
        self.store.remove_ingest_dir(&self.dir)?;
        debug!(%digest, size = off, "content committed");
        Ok(digest)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Writer::write(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
