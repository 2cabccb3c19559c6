//! The build cache: one record per step in the store's `records` table (kind
//! [`KIND`], name = the step's cache key), surviving berthd restarts with the database.
//!
//! A step that changed the filesystem keeps its result in the store as a committed snapshot
//! named by its chain ID (shared with images that contain the same layers) and a compressed
//! layer blob. Both are held by a lease of their own, `build-cache-<key>`, labelled
//! `containerd.io/gc.expire` ([`KEEP_DAYS`] days on): until then GC keeps them; after, GC
//! reclaims them and a lookup finds the record stale (its lease gone) and drops it. `berth
//! build prune` drops every record and lease at once. Metadata-only steps (ENV, LABEL, ...)
//! have a record without a lease: it only keeps their history time, so an unchanged rebuild
//! makes the very same image.

use serde::{Deserialize, Serialize};

use berth_store::metadata::{Labels, LeaseResource};
use berth_store::oci::Descriptor;
use berth_store::{Ctx, Digest, Store, StoreError, LABEL_GC_EXPIRE};

/// The records' kind.
pub const KIND: &str = "build-cache";
/// How long a cached layer is kept from GC after it was made.
pub const KEEP_DAYS: i64 = 7;
/// Label naming the cache key a lease belongs to.
pub const LABEL_CACHE_KEY: &str = "berth.io/build-cache";

/// A layer a step produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layer {
    /// The compressed blob.
    pub desc: Descriptor,
    /// Its uncompressed digest.
    pub diff_id: Digest,
    /// The chain ID of the layers up to and including this one (the snapshot's name).
    pub chain: Digest,
}

/// A cached step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The history time of the step (RFC 3339).
    pub created: String,
    /// The layer, for steps that changed the filesystem.
    pub layer: Option<Layer>,
}

fn lease_id(key: &str) -> String {
    format!("build-cache-{}", &key[..key.len().min(40)])
}

/// The entry for `key`, if it is still usable (its snapshot and blob still in the store).
pub fn lookup(store: &Store, ctx: &Ctx, key: &str) -> Result<Option<Entry>, StoreError> {
    let Some(e) = store.record::<Entry>(ctx, KIND, key)? else {
        return Ok(None);
    };
    if let Some(l) = &e.layer {
        let ok = store.lease_resources(ctx, &lease_id(key)).is_ok()
            && store.snapshotter().stat(ctx, l.chain.as_str()).is_ok()
            && store.content_info(ctx, &l.desc.digest).is_ok();
        if !ok {
            remove(store, ctx, key);
            return Ok(None);
        }
    }
    Ok(Some(e))
}

/// Records `entry` for `key` (replacing an older one), holding its snapshot and blob.
pub fn store_entry(store: &Store, ctx: &Ctx, key: &str, entry: &Entry) -> Result<(), StoreError> {
    let plain = Ctx::new(ctx.namespace.clone());
    if store.record::<Entry>(&plain, KIND, key)?.is_some() {
        remove(store, &plain, key);
    }
    if let Some(l) = &entry.layer {
        let mut labels = Labels::new();
        labels.insert(LABEL_CACHE_KEY.into(), key.to_string());
        let exp = chrono::Utc::now() + chrono::Duration::days(KEEP_DAYS);
        labels.insert(LABEL_GC_EXPIRE.into(), exp.to_rfc3339());
        let id = lease_id(key);
        match store.lease_create(&plain, &id, labels) {
            Ok(_) => {}
            // The same step finished in a parallel stage or build: share its lease.
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        }
        store.lease_add_resource(
            &plain,
            &id,
            LeaseResource {
                kind: "content".into(),
                id: l.desc.digest.to_string(),
            },
        )?;
        store.lease_add_resource(
            &plain,
            &id,
            LeaseResource {
                kind: format!("snapshots/{}", store.snapshotter().name()),
                id: l.chain.to_string(),
            },
        )?;
    }
    match store.record_create(&plain, KIND, key, entry) {
        Ok(()) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()), // a parallel build stored the same step
        Err(e) => Err(e),
    }
}

/// Drops one entry and its lease (best effort).
pub fn remove(store: &Store, ctx: &Ctx, key: &str) {
    let plain = Ctx::new(ctx.namespace.clone());
    let _ = store.record_delete(&plain, KIND, key);
    let _ = store.lease_delete(&plain, &lease_id(key));
}

/// Drops every entry of the namespace; returns how many.
pub fn prune(store: &Store, ctx: &Ctx) -> Result<u64, StoreError> {
    let all = store.records::<serde_json::Value>(ctx, KIND)?;
    for (key, _) in &all {
        remove(store, ctx, key);
    }
    Ok(all.len() as u64)
}
