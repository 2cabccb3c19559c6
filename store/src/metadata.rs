//! The metadata database: namespaces, images, per-namespace content records, snapshots, leases
//! and containers, in one embedded [`redb`] file.
//!
//! Why redb: pure Rust (no C library, nothing to link), ACID transactions with a crash-safe
//! commit protocol of its own (two alternating commit slots with checksums: a torn write falls
//! back to the last good commit), MVCC readers that never block the single writer, and an
//! exclusive file lock so two daemons cannot open one root. That is what containerd gets from
//! bbolt.
//!
//! Every table maps a composite string key to a JSON record. Keys join their parts with NUL
//! (`ns \0 name`), which sorts a namespace's objects together so a prefix scan lists them;
//! names therefore must not contain NUL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::fsutil::time_nanos;
use crate::oci::Descriptor;

/// Labels of any object.
pub type Labels = BTreeMap<String, String>;

type Tbl = TableDefinition<'static, &'static str, &'static [u8]>;
const NAMESPACES: Tbl = TableDefinition::new("namespaces");
const IMAGES: Tbl = TableDefinition::new("images");
const CONTENT: Tbl = TableDefinition::new("content");
const SNAPSHOTS: Tbl = TableDefinition::new("snapshots");
const LEASES: Tbl = TableDefinition::new("leases");
const CONTAINERS: Tbl = TableDefinition::new("containers");
const COUNTERS: Tbl = TableDefinition::new("counters");
/// Records of the engine's own kinds (networks, ...), keyed by namespace, kind and name.
const RECORDS: Tbl = TableDefinition::new("records");
/// Named volumes (`ns \0 name`); see [`crate::volumes`].
const VOLUMES: Tbl = TableDefinition::new("volumes");
const ALL: [Tbl; 9] = [
    NAMESPACES, IMAGES, CONTENT, SNAPSHOTS, LEASES, CONTAINERS, COUNTERS, RECORDS, VOLUMES,
];

/// Longest namespace name containerd accepts.
pub const MAX_NAMESPACE_LEN: usize = 76;

/// Validates a namespace name: `^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`, at most 76 chars.
pub fn validate_namespace(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(StoreError::InvalidArgument(format!(
            "namespace {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return Err(StoreError::InvalidArgument("namespace is required".into()));
    }
    if name.len() > MAX_NAMESPACE_LEN {
        return bad(&format!("longer than {MAX_NAMESPACE_LEN} characters"));
    }
    let mut prev_sep = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') {
            if prev_sep {
                return bad("must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$");
            }
            prev_sep = true;
        } else {
            return bad("must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$");
        }
    }
    if prev_sep {
        return bad("must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$");
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "{what} name must not be empty"
        )));
    }
    if name.contains('\0') {
        return Err(StoreError::InvalidArgument(format!(
            "{what} name {name:?} must not contain NUL"
        )));
    }
    Ok(())
}

fn key2(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

fn key3(a: &str, b: &str, c: &str) -> String {
    format!("{a}\0{b}\0{c}")
}

/// A namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: Labels,
}

/// An image record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Full name (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The root descriptor (index or manifest).
    pub target: Descriptor,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Creation time.
    #[serde(with = "time_nanos")]
    pub created_at: SystemTime,
    /// Last update.
    #[serde(with = "time_nanos")]
    pub updated_at: SystemTime,
}

/// A blob's record in one namespace (containerd's `content.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When it was committed in this namespace.
    #[serde(with = "time_nanos")]
    pub created_at: SystemTime,
    /// Last label update.
    #[serde(with = "time_nanos")]
    pub updated_at: SystemTime,
    /// Labels (`containerd.io/gc.ref.*`, `containerd.io/uncompressed`, ...).
    #[serde(default)]
    pub labels: Labels,
}

/// The kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum SnapshotKind {
    /// Read-only view of a committed snapshot.
    View,
    /// Writable, not committed.
    Active,
    /// Committed, immutable, can be a parent.
    Committed,
}

impl SnapshotKind {
    /// containerd's lowercase name (`view`, `active`, `committed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            SnapshotKind::View => "view",
            SnapshotKind::Active => "active",
            SnapshotKind::Committed => "committed",
        }
    }
}

/// A snapshot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Backend id: the directory `snapshots/<id>`.
    pub id: u64,
    /// Kind.
    pub kind: SnapshotKind,
    /// Parent's key (a committed snapshot), if any.
    pub parent: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Creation time.
    #[serde(with = "time_nanos")]
    pub created_at: SystemTime,
    /// Last update.
    #[serde(with = "time_nanos")]
    pub updated_at: SystemTime,
}

/// A resource held by a lease (containerd's `leases.Resource`): `kind` is `content`,
/// `ingests` or `snapshots/<snapshotter>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
pub struct LeaseResource {
    /// Resource type (`content`, `ingests`, `snapshots/overlayfs`).
    pub kind: String,
    /// Its id (digest, ref or snapshot key).
    pub id: String,
}

/// A lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Its id.
    pub id: String,
    /// Labels (`containerd.io/gc.expire` = RFC 3339 time).
    #[serde(default)]
    pub labels: Labels,
    /// Creation time.
    #[serde(with = "time_nanos")]
    pub created_at: SystemTime,
    /// What it holds.
    #[serde(default)]
    pub resources: BTreeSet<LeaseResource>,
}

/// An opaque protobuf `Any`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AnyValue {
    /// Type URL.
    pub type_url: String,
    /// Encoded value.
    pub value: Vec<u8>,
}

/// A container record (filled by the containers service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Its id.
    pub id: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Image name.
    #[serde(default)]
    pub image: String,
    /// Runtime name and options.
    #[serde(default)]
    pub runtime_name: String,
    /// Runtime options.
    #[serde(default)]
    pub runtime_options: Option<AnyValue>,
    /// OCI spec.
    #[serde(default)]
    pub spec: Option<AnyValue>,
    /// Snapshotter of its rootfs.
    #[serde(default)]
    pub snapshotter: String,
    /// Snapshot key of its rootfs.
    #[serde(default)]
    pub snapshot_key: String,
    /// Extensions.
    #[serde(default)]
    pub extensions: BTreeMap<String, AnyValue>,
    /// Sandbox id.
    #[serde(default)]
    pub sandbox: String,
    /// Creation time.
    #[serde(with = "time_nanos", default = "epoch")]
    pub created_at: SystemTime,
    /// Last update.
    #[serde(with = "time_nanos", default = "epoch")]
    pub updated_at: SystemTime,
}

/// A named volume's record; its data is `<root>/volumes/<ns>/<name>/_data` (see
/// [`crate::volumes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
    pub name: String,
    /// Driver: always `local`.
    pub driver: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// The `local` driver's options (`type`, `device`, `o`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Creation time.
    #[serde(with = "time_nanos", default = "epoch")]
    pub created_at: SystemTime,
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

impl Default for Container {
    fn default() -> Self {
        Container {
            id: String::new(),
            labels: Labels::new(),
            image: String::new(),
            runtime_name: String::new(),
            runtime_options: None,
            spec: None,
            snapshotter: String::new(),
            snapshot_key: String::new(),
            extensions: BTreeMap::new(),
            sandbox: String::new(),
            created_at: epoch(),
            updated_at: epoch(),
        }
    }
}

/// The metadata database. `Send + Sync`.
///
/// redb refuses every transaction after one failed with an I/O error (a full disk) until the
/// database is opened again; [`Metadata`] does that itself at the next transaction, so a
/// freed disk makes berthd work again without a restart.
pub struct Metadata {
    path: std::path::PathBuf,
    /// `None` while being reopened, or after a reopen failed (the next call tries again).
    db: std::sync::RwLock<Option<Database>>,
    /// Set when a transaction failed on I/O: reopen before the next one.
    broken: std::sync::atomic::AtomicBool,
}

impl Metadata {
    /// Opens (creating) the database file at `path`.
    pub fn open(path: &Path) -> Result<Metadata> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
        }
        let db = open_db(path)?;
        Ok(Metadata {
            path: path.to_path_buf(),
            db: std::sync::RwLock::new(Some(db)),
            broken: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `f` in a read transaction (a consistent snapshot; never blocks on writers).
    pub fn read<R>(&self, f: impl FnOnce(&ReadTx) -> Result<R>) -> Result<R> {
        self.heal()?;
        let txn = self.with_db(|db| db.begin_read().map_err(|e| self.failed(e)))?;
        f(&ReadTx { txn })
    }

    /// Runs `f` in a write transaction, committed if `f` returns `Ok`, aborted otherwise.
    pub fn write<R>(&self, f: impl FnOnce(&WriteTx) -> Result<R>) -> Result<R> {
        self.heal()?;
        let txn = self.with_db(|db| db.begin_write().map_err(|e| self.failed(e)))?;
        let tx = WriteTx { txn };
        match f(&tx) {
            Ok(r) => {
                tx.txn.commit().map_err(|e| self.failed(e))?;
                Ok(r)
            }
            Err(e) => {
                if e.to_string().contains("Previous I/O error") || is_io(&e) {
                    self.mark_broken();
                }
                let _ = tx.txn.abort();
                Err(e)
            }
        }
    }

    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let g = self
            .db
            .read()
            .map_err(|_| StoreError::Db("metadata database lock poisoned".into()))?;
        match g.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Unavailable(format!(
                "metadata database {} is being reopened after an I/O error",
                self.path.display()
            ))),
        }
    }

    /// Converts a redb error, noting an I/O failure for [`Metadata::heal`].
    fn failed(&self, e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.mark_broken();
        }
        StoreError::Db(e.to_string())
    }

    fn mark_broken(&self) {
        tracing::warn!(path = %self.path.display(), "metadata database: I/O error, reopening it before the next transaction");
        self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reopens the database after an I/O error (or a failed reopen). Transactions still open
    /// on the old handle keep its file locked: their end is waited for, up to 10 s.
    fn heal(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut g = self
            .db
            .write()
            .map_err(|_| StoreError::Db("metadata database lock poisoned".into()))?;
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(()); // another caller reopened it
        }
        drop(g.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open_db(&self.path) {
                Ok(db) => {
                    *g = Some(db);
                    self.broken.store(false, Ordering::SeqCst);
                    tracing::info!(path = %self.path.display(), "metadata database reopened");
                    return Ok(());
                }
                Err(e)
                    if std::time::Instant::now() < deadline
                        && e.to_string().contains("already open") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e.context("reopening the metadata database after an I/O error"))
                }
            }
        }
    }
}

fn is_io(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { .. })
}

/// Opens (creating) the redb file and its tables.
fn open_db(path: &Path) -> Result<Database> {
    let db = Database::create(path)
        .map_err(|e| StoreError::Db(format!("opening {}: {e}", path.display())))?;
    let txn = db.begin_write()?;
    for t in ALL {
        txn.open_table(t)?;
    }
    txn.commit()?;
    Ok(db)
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        what: what.replace('\0', "/"),
        source,
    })
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|source| StoreError::Corrupt {
        what: what.replace('\0', "/"),
        source,
    })
}

fn prefix_end(prefix: &str) -> String {
    // Keys sharing `prefix` (which ends in NUL) sort before prefix-without-NUL + "\x01".
    let mut s = prefix[..prefix.len() - 1].to_string();
    s.push('\u{1}');
    s
}

/// Read access to every table; implemented by both transaction kinds.
pub trait MetaRead {
    /// A raw record.
    fn raw_get(&self, t: Tbl, key: &str) -> Result<Option<Vec<u8>>>;
    /// Every record whose key starts with `prefix` (which ends in NUL), with the prefix removed.
    fn raw_scan(&self, t: Tbl, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Every record of a table.
    fn raw_all(&self, t: Tbl) -> Result<Vec<(String, Vec<u8>)>>;

    /// One namespace.
    fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        self.raw_get(NAMESPACES, name)?
            .map(|b| decode(name, &b))
            .transpose()
    }
    /// Every namespace, sorted by name.
    fn namespaces(&self) -> Result<Vec<Namespace>> {
        self.raw_all(NAMESPACES)?
            .iter()
            .map(|(k, v)| decode(k, v))
            .collect()
    }
    /// One image.
    fn image(&self, ns: &str, name: &str) -> Result<Option<Image>> {
        let k = key2(ns, name);
        self.raw_get(IMAGES, &k)?
            .map(|b| decode(&k, &b))
            .transpose()
    }
    /// Every image of `ns`.
    fn images(&self, ns: &str) -> Result<Vec<Image>> {
        scan_decode(self, IMAGES, ns)
    }
    /// One content record.
    fn content(&self, ns: &str, d: &Digest) -> Result<Option<ContentInfo>> {
        let k = key2(ns, d.as_str());
        self.raw_get(CONTENT, &k)?
            .map(|b| decode(&k, &b))
            .transpose()
    }
    /// Every content record of `ns`.
    fn contents(&self, ns: &str) -> Result<Vec<ContentInfo>> {
        scan_decode(self, CONTENT, ns)
    }
    /// True if any namespace has a record for `d`.
    fn content_referenced(&self, d: &Digest) -> Result<bool> {
        for n in self.namespaces()? {
            if self.content(&n.name, d)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
    /// One snapshot record.
    fn snapshot(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Option<SnapshotRecord>> {
        let k = key3(ns, snapshotter, key);
        self.raw_get(SNAPSHOTS, &k)?
            .map(|b| decode(&k, &b))
            .transpose()
    }
    /// Every snapshot of `ns` in `snapshotter`, as (key, record), sorted by key.
    fn snapshots(&self, ns: &str, snapshotter: &str) -> Result<Vec<(String, SnapshotRecord)>> {
        self.raw_scan(SNAPSHOTS, &format!("{ns}\0{snapshotter}\0"))?
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), decode(&k, &v)?)))
            .collect()
    }
    /// Every snapshot record of every namespace and snapshotter: (ns, snapshotter, key, record).
    fn all_snapshots(&self) -> Result<Vec<(String, String, String, SnapshotRecord)>> {
        let mut out = Vec::new();
        for (k, v) in self.raw_all(SNAPSHOTS)? {
            let mut parts = k.splitn(3, '\0');
            let (Some(ns), Some(sn), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            out.push((
                ns.to_string(),
                sn.to_string(),
                key.to_string(),
                decode(&k, &v)?,
            ));
        }
        Ok(out)
    }
    /// One lease.
    fn lease(&self, ns: &str, id: &str) -> Result<Option<Lease>> {
        let k = key2(ns, id);
        self.raw_get(LEASES, &k)?
            .map(|b| decode(&k, &b))
            .transpose()
    }
    /// Every lease of `ns`.
    fn leases(&self, ns: &str) -> Result<Vec<Lease>> {
        scan_decode(self, LEASES, ns)
    }
    /// One container.
    fn container(&self, ns: &str, id: &str) -> Result<Option<Container>> {
        let k = key2(ns, id);
        self.raw_get(CONTAINERS, &k)?
            .map(|b| decode(&k, &b))
            .transpose()
    }
    /// Every container of `ns`.
    fn containers(&self, ns: &str) -> Result<Vec<Container>> {
        scan_decode(self, CONTAINERS, ns)
    }
    /// The record `name` of `kind` in `ns` (JSON), if any.
    fn record(&self, ns: &str, kind: &str, name: &str) -> Result<Option<Vec<u8>>> {
        self.raw_get(RECORDS, &key3(ns, kind, name))
    }
    /// Every record of `kind` in `ns`, by name.
    fn records(&self, ns: &str, kind: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.raw_scan(RECORDS, &format!("{ns}\0{kind}\0"))
    }
    /// One volume.
    fn volume(&self, ns: &str, name: &str) -> Result<Option<Volume>> {
        let k = key2(ns, name);
        self.raw_get(VOLUMES, &k)?
            .map(|b| decode(&k, &b))
            .transpose()
    }
    /// Volumes of a namespace, by name.
    fn volumes(&self, ns: &str) -> Result<Vec<Volume>> {
        scan_decode(self, VOLUMES, ns)
    }
}

fn scan_decode<T: DeserializeOwned, R: MetaRead + ?Sized>(
    r: &R,
    t: Tbl,
    ns: &str,
) -> Result<Vec<T>> {
    r.raw_scan(t, &format!("{ns}\0"))?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect()
}

fn scan_table<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let end = prefix_end(prefix);
    let mut out = Vec::new();
    for item in table.range::<&str>(prefix..end.as_str())? {
        let (k, v) = item?;
        out.push((k.value()[prefix.len()..].to_string(), v.value().to_vec()));
    }
    Ok(out)
}

fn all_table<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// A read transaction.
pub struct ReadTx {
    txn: redb::ReadTransaction,
}

impl MetaRead for ReadTx {
    fn raw_get(&self, t: Tbl, key: &str) -> Result<Option<Vec<u8>>> {
        let table = self.txn.open_table(t)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
    fn raw_scan(&self, t: Tbl, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        scan_table(&self.txn.open_table(t)?, prefix)
    }
    fn raw_all(&self, t: Tbl) -> Result<Vec<(String, Vec<u8>)>> {
        all_table(&self.txn.open_table(t)?)
    }
}

/// A write transaction (reads see its own writes).
pub struct WriteTx {
    txn: redb::WriteTransaction,
}

impl MetaRead for WriteTx {
    fn raw_get(&self, t: Tbl, key: &str) -> Result<Option<Vec<u8>>> {
        let table = self.txn.open_table(t)?;
        let v = table.get(key)?.map(|v| v.value().to_vec());
        Ok(v)
    }
    fn raw_scan(&self, t: Tbl, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        scan_table(&self.txn.open_table(t)?, prefix)
    }
    fn raw_all(&self, t: Tbl) -> Result<Vec<(String, Vec<u8>)>> {
        all_table(&self.txn.open_table(t)?)
    }
}

impl WriteTx {
    fn raw_put(&self, t: Tbl, key: &str, value: &[u8]) -> Result<()> {
        let mut table = self.txn.open_table(t)?;
        table.insert(key, value)?;
        Ok(())
    }

    fn raw_delete(&self, t: Tbl, key: &str) -> Result<bool> {
        let mut table = self.txn.open_table(t)?;
        let existed = table.remove(key)?.is_some();
        Ok(existed)
    }

    /// Next value of a named counter (starting at 1).
    pub fn next_id(&self, counter: &str) -> Result<u64> {
        let cur = match self.raw_get(COUNTERS, counter)? {
            Some(b) if b.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b);
                u64::from_le_bytes(a)
            }
            _ => 0,
        };
        let next = cur + 1;
        self.raw_put(COUNTERS, counter, &next.to_le_bytes())?;
        Ok(next)
    }

    /// Creates the namespace if it does not exist (as containerd does when an object is
    /// created in it). Validates the name.
    pub fn ensure_namespace(&self, ns: &str) -> Result<()> {
        validate_namespace(ns)?;
        if self.raw_get(NAMESPACES, ns)?.is_none() {
            let n = Namespace {
                name: ns.to_string(),
                labels: Labels::new(),
            };
            self.raw_put(NAMESPACES, ns, &encode(ns, &n)?)?;
        }
        Ok(())
    }

    /// Creates a namespace; `AlreadyExists` if it exists.
    pub fn create_namespace(&self, n: &Namespace) -> Result<()> {
        validate_namespace(&n.name)?;
        if self.raw_get(NAMESPACES, &n.name)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("namespace {}", n.name)));
        }
        self.raw_put(NAMESPACES, &n.name, &encode(&n.name, n)?)
    }

    /// Replaces a namespace's labels; `NotFound` if it does not exist.
    pub fn update_namespace(&self, n: &Namespace) -> Result<()> {
        validate_namespace(&n.name)?;
        if self.raw_get(NAMESPACES, &n.name)?.is_none() {
            return Err(StoreError::NotFound(format!("namespace {}", n.name)));
        }
        self.raw_put(NAMESPACES, &n.name, &encode(&n.name, n)?)
    }

    /// Deletes an empty namespace: `NotFound` if missing, `FailedPrecondition` naming what
    /// it still holds otherwise.
    pub fn delete_namespace(&self, ns: &str) -> Result<()> {
        if self.raw_get(NAMESPACES, ns)?.is_none() {
            return Err(StoreError::NotFound(format!("namespace {ns}")));
        }
        let prefix = format!("{ns}\0");
        let mut still = Vec::new();
        for (t, what) in [
            (IMAGES, "images"),
            (CONTENT, "blobs"),
            (SNAPSHOTS, "snapshots"),
            (LEASES, "leases"),
            (CONTAINERS, "containers"),
            (VOLUMES, "volumes"),
        ] {
            if !self.raw_scan(t, &prefix)?.is_empty() {
                still.push(what);
            }
        }
        if !still.is_empty() {
            return Err(StoreError::FailedPrecondition(format!(
                "namespace {ns} must be empty, but it still has {}",
                still.join(", ")
            )));
        }
        self.raw_delete(NAMESPACES, ns)?;
        Ok(())
    }

    /// Inserts or replaces an image record (creating the namespace).
    pub fn put_image(&self, ns: &str, img: &Image) -> Result<()> {
        self.ensure_namespace(ns)?;
        check_name("image", &img.name)?;
        let k = key2(ns, &img.name);
        self.raw_put(IMAGES, &k, &encode(&k, img)?)
    }

    /// Deletes an image record; `NotFound` if missing.
    pub fn delete_image(&self, ns: &str, name: &str) -> Result<()> {
        if !self.raw_delete(IMAGES, &key2(ns, name))? {
            return Err(StoreError::NotFound(format!("image {name:?}")));
        }
        Ok(())
    }

    /// Inserts or replaces a content record (creating the namespace).
    pub fn put_content(&self, ns: &str, c: &ContentInfo) -> Result<()> {
        self.ensure_namespace(ns)?;
        let k = key2(ns, c.digest.as_str());
        self.raw_put(CONTENT, &k, &encode(&k, c)?)
    }

    /// Deletes a content record; returns whether it existed.
    pub fn delete_content(&self, ns: &str, d: &Digest) -> Result<bool> {
        self.raw_delete(CONTENT, &key2(ns, d.as_str()))
    }

    /// Inserts or replaces a snapshot record (creating the namespace).
    pub fn put_snapshot(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
        r: &SnapshotRecord,
    ) -> Result<()> {
        self.ensure_namespace(ns)?;
        check_name("snapshot", key)?;
        let k = key3(ns, snapshotter, key);
        self.raw_put(SNAPSHOTS, &k, &encode(&k, r)?)
    }

    /// Deletes a snapshot record; returns whether it existed.
    pub fn delete_snapshot(&self, ns: &str, snapshotter: &str, key: &str) -> Result<bool> {
        self.raw_delete(SNAPSHOTS, &key3(ns, snapshotter, key))
    }

    /// Inserts or replaces a lease (creating the namespace).
    pub fn put_lease(&self, ns: &str, l: &Lease) -> Result<()> {
        self.ensure_namespace(ns)?;
        check_name("lease", &l.id)?;
        let k = key2(ns, &l.id);
        self.raw_put(LEASES, &k, &encode(&k, l)?)
    }

    /// Deletes a lease; `NotFound` if missing.
    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<()> {
        if !self.raw_delete(LEASES, &key2(ns, id))? {
            return Err(StoreError::NotFound(format!("lease {id:?}")));
        }
        Ok(())
    }

    /// Adds a resource to lease `id`; `NotFound` if the lease does not exist.
    pub fn lease_add(&self, ns: &str, id: &str, r: LeaseResource) -> Result<()> {
        let mut l = self
            .lease(ns, id)?
            .ok_or_else(|| StoreError::NotFound(format!("lease {id:?}")))?;
        if l.resources.insert(r) {
            self.put_lease(ns, &l)?;
        }
        Ok(())
    }

    /// Removes a resource from lease `id`; `NotFound` if the lease does not exist.
    pub fn lease_remove(&self, ns: &str, id: &str, r: &LeaseResource) -> Result<()> {
        let mut l = self
            .lease(ns, id)?
            .ok_or_else(|| StoreError::NotFound(format!("lease {id:?}")))?;
        if l.resources.remove(r) {
            self.put_lease(ns, &l)?;
        }
        Ok(())
    }

    /// Creates a container; `AlreadyExists` if the id is taken.
    pub fn create_container(&self, ns: &str, c: &Container) -> Result<()> {
        self.ensure_namespace(ns)?;
        check_name("container", &c.id)?;
        if self.container(ns, &c.id)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("container {:?}", c.id)));
        }
        let k = key2(ns, &c.id);
        self.raw_put(CONTAINERS, &k, &encode(&k, c)?)
    }

    /// Replaces a container; `NotFound` if missing.
    pub fn update_container(&self, ns: &str, c: &Container) -> Result<()> {
        if self.container(ns, &c.id)?.is_none() {
            return Err(StoreError::NotFound(format!("container {:?}", c.id)));
        }
        let k = key2(ns, &c.id);
        self.raw_put(CONTAINERS, &k, &encode(&k, c)?)
    }

    /// Creates a volume record; `AlreadyExists` if the name is taken.
    pub fn create_volume(&self, ns: &str, v: &Volume) -> Result<()> {
        self.ensure_namespace(ns)?;
        check_name("volume", &v.name)?;
        if self.volume(ns, &v.name)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("volume {:?}", v.name)));
        }
        let k = key2(ns, &v.name);
        self.raw_put(VOLUMES, &k, &encode(&k, v)?)
    }

    /// Deletes a volume record; `NotFound` if missing.
    pub fn delete_volume(&self, ns: &str, name: &str) -> Result<()> {
        if !self.raw_delete(VOLUMES, &key2(ns, name))? {
            return Err(StoreError::NotFound(format!("volume {name:?}")));
        }
        Ok(())
    }

    /// Deletes a container; `NotFound` if missing.
    pub fn delete_container(&self, ns: &str, id: &str) -> Result<()> {
        if !self.raw_delete(CONTAINERS, &key2(ns, id))? {
            return Err(StoreError::NotFound(format!("container {id:?}")));
        }
        Ok(())
    }

    /// Writes record `name` of `kind` in `ns` (JSON bytes), replacing any.
    pub fn put_record(&self, ns: &str, kind: &str, name: &str, value: &[u8]) -> Result<()> {
        self.ensure_namespace(ns)?;
        check_name(kind, name)?;
        self.raw_put(RECORDS, &key3(ns, kind, name), value)
    }

    /// Deletes record `name` of `kind` in `ns`; whether it existed.
    pub fn delete_record(&self, ns: &str, kind: &str, name: &str) -> Result<bool> {
        self.raw_delete(RECORDS, &key3(ns, kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(&dir.path().join("meta.redb")).unwrap();
        (dir, m)
    }

    #[test]
    fn namespace_names_follow_containerd_rules() {
        for ok in ["default", "k8s.io", "a", "a-b_c.d", "A1", &"x".repeat(76)] {
            validate_namespace(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "a b", "ü", &"x".repeat(77)] {
            let e = validate_namespace(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
        assert_eq!(
            validate_namespace("").unwrap_err().to_string(),
            "namespace is required"
        );
    }

    #[test]
    fn non_empty_namespace_cannot_be_deleted() {
        let (_d, m) = db();
        let now = SystemTime::now();
        m.write(|tx| {
            tx.put_image(
                "ns1",
                &Image {
                    name: "x".into(),
                    target: Descriptor::new(
                        crate::oci::MEDIA_TYPE_OCI_MANIFEST,
                        Digest::of(b"x"),
                        1,
                    ),
                    labels: Labels::new(),
                    created_at: now,
                    updated_at: now,
                },
            )?;
            tx.put_lease(
                "ns1",
                &Lease {
                    id: "l".into(),
                    labels: Labels::new(),
                    created_at: now,
                    resources: BTreeSet::new(),
                },
            )
        })
        .unwrap();
        // Implicitly created.
        assert!(m.read(|r| r.namespace("ns1")).unwrap().is_some());
        let e = m.write(|tx| tx.delete_namespace("ns1")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::FailedPrecondition);
        assert_eq!(
            e.to_string(),
            "namespace ns1 must be empty, but it still has images, leases"
        );
        m.write(|tx| {
            tx.delete_image("ns1", "x")?;
            tx.delete_lease("ns1", "l")?;
            tx.delete_namespace("ns1")
        })
        .unwrap();
        assert!(m.read(|r| r.namespace("ns1")).unwrap().is_none());
        let e = m.write(|tx| tx.delete_namespace("ns1")).unwrap_err();
        assert!(e.is_not_found());
    }

    #[test]
    fn scans_stay_within_their_namespace_and_failed_writes_roll_back() {
        let (_d, m) = db();
        let now = SystemTime::now();
        let c = |d: &[u8]| ContentInfo {
            digest: Digest::of(d),
            size: d.len() as u64,
            created_at: now,
            updated_at: now,
            labels: Labels::new(),
        };
        m.write(|tx| {
            tx.put_content("a", &c(b"1"))?;
            tx.put_content("a", &c(b"2"))?;
            tx.put_content("a.b", &c(b"3"))?;
            tx.put_content("ab", &c(b"4"))
        })
        .unwrap();
        assert_eq!(m.read(|r| r.contents("a")).unwrap().len(), 2);
        assert_eq!(m.read(|r| r.contents("a.b")).unwrap().len(), 1);
        let e = m
            .write(|tx| {
                tx.put_content("a", &c(b"5"))?;
                Err::<(), _>(StoreError::InvalidArgument("boom".into()))
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert_eq!(m.read(|r| r.contents("a")).unwrap().len(), 2);
        assert!(m.read(|r| r.content_referenced(&Digest::of(b"4"))).unwrap());
        assert!(!m.read(|r| r.content_referenced(&Digest::of(b"5"))).unwrap());
    }

    #[test]
    fn containers_crud() {
        let (_d, m) = db();
        let c = Container {
            id: "c1".into(),
            image: "busybox".into(),
            ..Container::default()
        };
        m.write(|tx| tx.create_container("default", &c)).unwrap();
        let e = m
            .write(|tx| tx.create_container("default", &c))
            .unwrap_err();
        assert!(e.is_already_exists());
        let mut c2 = c.clone();
        c2.snapshot_key = "k".into();
        m.write(|tx| tx.update_container("default", &c2)).unwrap();
        assert_eq!(m.read(|r| r.container("default", "c1")).unwrap(), Some(c2));
        m.write(|tx| tx.delete_container("default", "c1")).unwrap();
        assert!(m.read(|r| r.containers("default")).unwrap().is_empty());
    }
}
