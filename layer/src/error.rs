//! The error type of every public function in this crate.

use std::io;
use std::path::PathBuf;

/// Why applying or diffing a layer failed. Every variant names the entry or path concerned.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum LayerError {
    /// A layer entry (its name, hardlink target or whiteout) would resolve outside the root.
    /// The whole apply fails; the caller must discard the snapshot.
    #[error("layer entry {entry:?} escapes the root ({what})")]
    PathEscape {
        /// The entry's name as found in the tar.
        entry: String,
        /// Which part escapes: "name", "hardlink target", "whiteout".
        what: &'static str,
    },
    /// A filesystem operation for one layer entry failed.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Entry {
        /// The entry's name as found in the tar.
        entry: String,
        /// The operation that failed (e.g. "create file", "lchown", "set xattr user.x").
        op: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on a path (outside the per-entry work: the root, a diffed tree) failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tar holds an entry type this crate does not apply (e.g. a GNU volume label).
    #[error("layer entry {entry:?}: unsupported entry type {kind}")]
    UnsupportedEntry {
        /// The entry's name.
        entry: String,
        /// The type, as the tar type flag or a description.
        kind: String,
    },
    /// The entry is well-formed tar but makes no sense as a layer entry (e.g. an empty whiteout name).
    #[error("invalid layer entry {entry:?}: {reason}")]
    InvalidEntry {
        /// The entry's name.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream is not a valid (compressed) tar: truncated, bad checksum, corrupt gzip/zstd.
    #[error("corrupt layer stream: {context}: {source}")]
    Corrupt {
        /// Where in the stream (e.g. "reading entry header after \"etc/passwd\"").
        context: String,
        /// The decoder's or parser's error.
        #[source]
        source: io::Error,
    },
    /// A tree cannot be expressed as a layer (e.g. an overlay upper dir using redirect_dir or
    /// metacopy, or a socket file).
    #[error("cannot diff {path}: {reason}", path = .path.display())]
    Unrepresentable {
        /// The path concerned.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl LayerError {
    pub(crate) fn entry(entry: &str, op: impl Into<String>, source: impl Into<io::Error>) -> Self {
        LayerError::Entry {
            entry: entry.to_string(),
            op: op.into(),
            source: source.into(),
        }
    }

    pub(crate) fn io(
        path: impl Into<PathBuf>,
        op: &'static str,
        source: impl Into<io::Error>,
    ) -> Self {
        LayerError::Io {
            path: path.into(),
            op,
            source: source.into(),
        }
    }
}
