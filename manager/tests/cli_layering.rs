//! The `berth` CLI knows the API and, below it, only `berth-distribution` (Docker credentials
//! and image references). berthd and the CLI share this crate, so the compiler cannot check
//! that the CLI's modules leave the store and the layer code alone; this test does.

use std::path::{Path, PathBuf};

/// The CLI's source files: `src/cli/`, `src/bin/berth.rs` and the gRPC client.
fn cli_sources() -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("bin/berth.rs"), src.join("client.rs")];
    let mut dirs = vec![src.join("cli")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn the_cli_uses_no_crate_below_the_api_but_distribution() {
    let files = cli_sources();
    assert!(files.len() > 5, "found {files:?}");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, line) in text.lines().enumerate() {
            for name in ["berth_store", "berth_layer"] {
                if line.contains(name) {
                    found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the CLI uses crates below the API:\n{found:#?}"
    );
}
