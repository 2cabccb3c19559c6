//! Applying a layer tar onto a root directory.

use std::io::Read;
use std::path::Path;

use crate::LayerError;

/// How whiteout entries are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Apply onto a full merged tree: a whiteout deletes the path; an opaque dir marker empties the
    /// dir of what lower layers put there (entries of the same layer stay).
    Delete,
    /// Apply into an overlayfs upper dir of a fresh snapshot: a whiteout becomes a 0/0 char device,
    /// an opaque dir gets xattr `trusted.overlay.opaque=y`. No mount needed.
    OverlayUpper,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are applied.
    pub whiteouts: WhiteoutMode,
    /// Chown entries to the tar's uid/gid and keep setuid/setgid bits (true when running as root).
    pub same_owner: bool,
    /// Apply PAX `SCHILY.xattr.*` records as extended attributes.
    pub xattrs: bool,
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries applied (including whiteouts).
    pub entries: u64,
    /// Uncompressed bytes of file content written.
    pub bytes: u64,
}

/// Apply an uncompressed or compressed (sniffed: gzip, zstd) layer from `reader` onto `root`.
///
/// Every path is resolved inside `root`: `..` that would leave it is an error
/// ([`LayerError::PathEscape`]), and symlinks met while resolving parents are interpreted as if
/// `root` were `/`.
///
/// On error, `root` is left partially applied (entries before the failing one are on disk, the
/// failing file may be partly written under its final name): the caller must discard it.
pub fn apply_layer<R: Read + Send + 'static>(
    reader: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let _ = (reader, opts);
    Err(LayerError::io(
        root,
        "apply layer",
        std::io::Error::other("not implemented yet"),
    ))
}
