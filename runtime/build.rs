//! Link berth-runc with packed relative relocations (DT_RELR) where the toolchain supports
//! them: the PIE's ~15 000 relative relocations then take a few KiB instead of ~350 KiB of
//! `.rela.dyn`, which the dynamic loader would otherwise read (fault in) on every start.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
