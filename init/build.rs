//! Compiles the init (static/main.rs, which includes src/program.rs) into a statically linked
//! executable in OUT_DIR with the rustc cargo runs, for the target being built. glibc's static
//! libc.a (Debian's libc6-dev) is all it needs; no musl target, nothing downloaded.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=static/main.rs");
    println!("cargo:rerun-if-changed=src/program.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let bin = out.join("berth-init");
    let status = Command::new(&rustc)
        .args([
            "--edition=2021",
            "--crate-type=bin",
            "--crate-name=berth_init",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=1",
        ])
        .args(["-C", "strip=symbols", "-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(&bin)
        .arg("static/main.rs")
        .status()
        .unwrap_or_else(|e| panic!("running {rustc:?} to build berth-init: {e}"));
    assert!(
        status.success(),
        "building the static berth-init failed ({status}); it needs glibc's static libc.a \
         (Debian: libc6-dev)"
    );
}
