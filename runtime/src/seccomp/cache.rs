//! The on-disk cache of compiled filters, as crun has: compiling Docker's default profile with
//! libseccomp takes milliseconds, reading the program back takes microseconds.
//!
//! The key is the profile's canonical JSON (serde's field order is fixed) plus everything else
//! the program depends on: the libseccomp version, the native architecture and the kernel
//! release. Each entry stores its whole key and is used only when the stored key equals the
//! wanted one byte for byte, so the file name is just a 128-bit SipHash of the key: a hash
//! collision can cost a recompile, never a wrong filter, which is why no cryptographic hash (and
//! no extra dependency) is needed. Entries are written to a temp file and renamed into place; a
//! torn, truncated or foreign file fails validation and is recompiled and replaced. The
//! directory (under the runtime's `--root`) must be writable by root only: whoever can write an
//! entry decides the filter of every container that uses that profile.
//!
//! Entry layout: magic, u32 LE key length, key, u32 LE instruction count, the instructions.

use std::fs::{self, DirBuilder, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use libseccomp::ScmpArch;
use oci_spec::runtime::LinuxSeccomp;

use super::{compile, kernel_flags, libseccomp_version, uses_notify, Filter};

const MAGIC: &[u8] = b"berth-seccomp-bpf v1\n";

/// [`compile`] through the cache in `cache_dir` (created 0700 if missing; the runtime passes
/// `<--root>/seccomp-cache/`). A hit skips libseccomp entirely ([`Filter::from_cache`] is true);
/// a miss compiles and stores the program. A cache that cannot be read or written is only a
/// warning: the filter is then compiled as if there were no cache.
pub fn compile_cached(seccomp: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter, String> {
    // Flags are checked on every call: they are cheap and not part of the stored program.
    let flags = kernel_flags(seccomp)?;
    let notify = uses_notify(seccomp);
    let key = cache_key(seccomp)?;
    let path = cache_dir.join(file_name(&key));
    match read_entry(&path, &key) {
        Ok(Some(bpf)) => match Filter::from_bpf(&bpf, flags, notify, true) {
            Ok(f) => return Ok(f),
            Err(e) => tracing::warn!(path = %path.display(), "seccomp cache entry unusable: {e}"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(path = %path.display(), "reading the seccomp cache: {e}"),
    }
    let filter = compile(seccomp)?;
    if let Err(e) = write_entry(cache_dir, &path, &key, &filter) {
        tracing::warn!(path = %path.display(), "writing the seccomp cache: {e}");
    }
    Ok(filter)
}

/// The cache key: the profile's JSON and what else the compiled program depends on.
fn cache_key(seccomp: &LinuxSeccomp) -> Result<Vec<u8>, String> {
    let mut key = serde_json::to_vec(seccomp)
        .map_err(|e| format!("serialising the seccomp profile for the cache key: {e}"))?;
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let extra = format!(
        "\0libseccomp={}\0arch={:?}\0kernel={kernel}",
        libseccomp_version(),
        ScmpArch::native()
    );
    key.extend_from_slice(extra.as_bytes());
    Ok(key)
}

/// `<32 hex digits>.bpf` from two differently seeded SipHashes of the key.
fn file_name(key: &[u8]) -> String {
    let hash = |seed: u8| {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}.bpf", hash(1), hash(2))
}

/// The stored program if the entry exists and its key matches; `Ok(None)` on a miss (absent
/// file or another key); `Err` when the file exists but is malformed or unreadable.
fn read_entry(path: &Path, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let rest = data
        .strip_prefix(MAGIC)
        .ok_or_else(|| "not a berth seccomp cache entry (bad magic)".to_string())?;
    let (key_len, rest) = take_u32(rest)?;
    let key_len = key_len as usize;
    if rest.len() < key_len {
        return Err("truncated entry (key)".to_string());
    }
    let (stored_key, rest) = rest.split_at(key_len);
    if stored_key != key {
        return Ok(None);
    }
    let (count, rest) = take_u32(rest)?;
    if rest.len() != count as usize * 8 {
        return Err(format!(
            "entry holds {} bytes of program, its header says {count} instructions",
            rest.len()
        ));
    }
    Ok(Some(rest.to_vec()))
}

fn take_u32(b: &[u8]) -> Result<(u32, &[u8]), String> {
    if b.len() < 4 {
        return Err("truncated entry".to_string());
    }
    let (n, rest) = b.split_at(4);
    Ok((u32::from_le_bytes([n[0], n[1], n[2], n[3]]), rest))
}

/// Write the entry to a temp file in the directory and rename it over `path`.
fn write_entry(dir: &Path, path: &Path, key: &[u8], filter: &Filter) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let bpf = filter.bpf();
    let mut entry = Vec::with_capacity(MAGIC.len() + 8 + key.len() + bpf.len());
    entry.extend_from_slice(MAGIC);
    entry.extend_from_slice(&(key.len() as u32).to_le_bytes());
    entry.extend_from_slice(key);
    entry.extend_from_slice(&(filter.instructions() as u32).to_le_bytes());
    entry.extend_from_slice(&bpf);

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&entry))
        .and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(format!("{}: {e}", tmp.display()));
    }
    Ok(())
}
