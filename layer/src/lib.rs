//! berth-layer: OCI image layers — apply a (compressed) layer tar onto a directory, confined to
//! that directory, and diff two trees (or an overlayfs upper dir) into a new layer tar.
//!
//! Layer rules follow the OCI image spec (`layer.md`): entry names are relative to the root,
//! `.wh.NAME` deletes `NAME` from lower layers, `.wh..wh..opq` hides everything lower layers put
//! in its directory.

mod apply;
mod compression;
mod diff;
mod error;
mod fsutil;
mod path;
mod readahead;
mod resolve;

#[doc(hidden)]
pub use apply::apply_layer_without_openat2;
pub use apply::{
    apply_layer, ApplyOptions, ApplyStats, WhiteoutMode, MAX_ENTRY_METADATA, MAX_SPARSE_FILE_SIZE,
};
pub use compression::{compressor, decompressed, detect_compression, Compression, Compressor};
pub use diff::{diff_overlay_upper, diff_trees, DiffStats};
pub use error::LayerError;

/// Prefix of a whiteout entry's base name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Base name of the opaque-directory marker entry.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// The xattr overlayfs sets on an opaque directory of an upper dir (value `y`).
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
