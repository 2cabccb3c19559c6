//! Measure apply throughput by hand (not a test, not a cargo bench):
//!
//!     cargo run --release -p berth-layer --example apply_bench -- LAYER [DEST_PARENT] [delete|upper]
//!
//! Applies LAYER (plain, gzip or zstd tar) into a fresh directory under DEST_PARENT (default:
//! the system temp dir), prints entries, bytes and MB/s, then also times decompression alone,
//! and removes the directory.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::time::Instant;

use berth_layer::{apply_layer, decompressed, ApplyOptions, WhiteoutMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let layer = PathBuf::from(
        args.next()
            .ok_or("usage: apply_bench LAYER [DEST_PARENT] [delete|upper]")?,
    );
    let parent = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let whiteouts = match args.next().as_deref().and_then(|s| s.to_str()) {
        Some("upper") => WhiteoutMode::OverlayUpper,
        _ => WhiteoutMode::Delete,
    };
    let compressed = std::fs::metadata(&layer)?.len();
    let mb = |b: u64, s: f64| b as f64 / 1e6 / s;

    // Decompression alone (stream → sink).
    let c = cpu_seconds();
    let t = Instant::now();
    let mut r = decompressed(BufReader::with_capacity(1 << 20, File::open(&layer)?))?;
    let tar_bytes = io::copy(&mut r, &mut io::sink())?;
    let dt = t.elapsed().as_secs_f64();
    let dc = cpu_seconds() - c;
    println!(
        "decompress only: {tar_bytes} tar bytes in {dt:.3}s (cpu {dc:.3}s) = {:.0} MB/s (tar), {:.0} MB/s (compressed)",
        mb(tar_bytes, dt),
        mb(compressed, dt)
    );

    let dest = tempfile_dir(&parent)?;
    let opts = ApplyOptions {
        whiteouts,
        same_owner: true,
        xattrs: true,
    };
    let c = cpu_seconds();
    let t = Instant::now();
    let stats = apply_layer(File::open(&layer)?, &dest, &opts)?;
    let dt = t.elapsed().as_secs_f64();
    let dc = cpu_seconds() - c;
    println!(
        "apply: {} entries, {} content bytes in {dt:.3}s (cpu {dc:.3}s) = {:.0} MB/s (tar), {:.0} MB/s (compressed), {:.0} entries/s",
        stats.entries,
        stats.bytes,
        mb(tar_bytes, dt),
        mb(compressed, dt),
        stats.entries as f64 / dt
    );
    std::fs::remove_dir_all(&dest)?;
    Ok(())
}

fn tempfile_dir(parent: &std::path::Path) -> io::Result<PathBuf> {
    let p = parent.join(format!("berth-apply-bench-{}", std::process::id()));
    std::fs::create_dir(&p)?;
    Ok(p)
}

/// User + system CPU time of this process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}
