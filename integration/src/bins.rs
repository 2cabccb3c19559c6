//! Where the binaries under test are.
//!
//! The tests run the release binaries that `hack/setup.sh` builds (`target/release/`). Each can be
//! overridden by an environment variable, which is also how a suite runs against a peer as its
//! control, e.g. `BERTH_RUNC=/usr/bin/runc cargo test -p berth-integration --test runtime_lifecycle`.

use std::path::PathBuf;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The directory holding the release binaries (`$CARGO_TARGET_DIR/release` or `target/release`).
pub fn release_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir.join("release")
            } else {
                workspace_root().join(dir).join("release")
            }
        }
        None => workspace_root().join("target").join("release"),
    }
}

fn binary(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| release_dir().join(name))
}

/// The OCI runtime under test: `$BERTH_RUNC` or the release `berth-runc`.
pub fn berth_runc() -> PathBuf {
    binary("BERTH_RUNC", "berth-runc")
}

/// The daemon under test: `$BERTHD` or the release `berthd`.
pub fn berthd() -> PathBuf {
    binary("BERTHD", "berthd")
}

/// The admin CLI under test: `$BERTH` or the release `berth`.
pub fn berth() -> PathBuf {
    binary("BERTH", "berth")
}
