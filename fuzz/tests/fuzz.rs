//! The fuzz targets: everything berthd and berth-runc read from outside. Each test replays its
//! corpus (`fuzz/corpus/<target>/`) then fuzzes for `BERTH_FUZZ_SECONDS` (default 4); see the
//! engine's documentation in `fuzz/src/lib.rs`, and `hack/fuzz.sh` for longer runs.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_fuzz::tars::{Member, TarGen};
use berth_fuzz::{fuzz, hash, json, label, Corpus, Outcome, Rng, Target};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// config.json (berth-runc)

const JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"\"\":",
    b"\"path\":",
    b"\"type\":",
    b"\"mediaType\":",
    b"\"digest\":",
    b"\"size\":",
    b"\"sha256:",
];

fn config_check(bundle: &Path, data: &[u8]) -> Outcome {
    fs::write(bundle.join("config.json"), data).map_err(|e| format!("test setup: {e}"))?;
    match berth_runtime::config::load(bundle) {
        Ok(cfg) => {
            // What berth-runc computes from a loaded config before touching the system.
            let p = cfg.process();
            let caps = p.capabilities().as_ref().is_none_or(|c| {
                [
                    c.bounding(),
                    c.effective(),
                    c.permitted(),
                    c.inheritable(),
                    c.ambient(),
                ]
                .iter()
                .all(|s| berth_runtime::capabilities::mask(s.as_ref()).is_ok())
            });
            if let Some(linux) = cfg.spec.linux() {
                if let Some(s) = linux.seccomp() {
                    let _ = berth_runtime::seccomp::compile(s);
                }
                let _ =
                    berth_runtime::devices::nodes(linux.devices().as_deref().unwrap_or(&[]), true);
            }
            for m in cfg.spec.mounts().as_deref().unwrap_or(&[]) {
                let _ = berth_runtime::mounts::parse_options(m.options().as_deref().unwrap_or(&[]));
            }
            Ok(format!("ok caps={caps}"))
        }
        Err(e) => Ok(label(&e)),
    }
}

fn default_config() -> Value {
    let mut v = berth_runtime::spec::default_spec(false);
    v["root"]["path"] = json!("rootfs");
    v
}

#[test]
fn config_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    fs::create_dir_all(bundle.join("rootfs")).expect("rootfs");
    let base = serde_json::to_vec(&default_config()).expect("json");
    fuzz(
        &Target {
            name: "config_json",
            dict: JSON_DICT,
            json: true,
            generate: 0.3,
        },
        |rng, corpus| {
            let start = if rng.bool() {
                &base[..]
            } else {
                corpus.pick(rng)
            };
            let mut d = start.to_vec();
            for _ in 0..1 + rng.usize(..4) {
                if let Some(m) = json::mutate(rng, &d) {
                    d = m;
                }
            }
            d
        },
        |data| config_check(&bundle, data),
    );
}

// ---------------------------------------------------------------------------------------
// image references, digests, platforms, registry auth headers

fn reference_check(data: &[u8]) -> Outcome {
    use berth_distribution::Reference;
    let s = String::from_utf8_lossy(data);
    let mut what = Vec::new();
    let parsed = Reference::parse(&s);
    if let Ok(r) = &parsed {
        let text = r.to_string();
        let again = Reference::parse(&text)
            .map_err(|e| format!("{s:?} parses to {text:?}, which does not parse: {e}"))?;
        if &again != r {
            return Err(format!(
                "{s:?} parses to {r:?}, printed {text:?}, which parses to {again:?}"
            ));
        }
        if again.to_string() != text {
            return Err(format!("{text:?} prints as {again}"));
        }
        what.push("ref");
    }
    match berth_store::images::normalize_name(&s) {
        Ok(n) => {
            let twice = berth_store::images::normalize_name(&n)
                .map_err(|e| format!("{s:?} normalises to {n:?}, which is refused: {e}"))?;
            if twice != n {
                return Err(format!("{s:?} normalises to {n:?}, then to {twice:?}"));
            }
            // The CLI (Reference) and the store (normalize_name) must name an image alike.
            if let Ok(r) = &parsed {
                if r.to_string() != n {
                    return Err(format!(
                        "{s:?}: the CLI's reference is {r} but the store names it {n:?}"
                    ));
                }
            }
            what.push("name");
        }
        Err(e) => what.push(if e.to_string().is_empty() {
            "?"
        } else {
            "noname"
        }),
    }
    if let Ok(d) = berth_store::Digest::parse(&s) {
        if d.to_string() != s {
            return Err(format!("digest {s:?} prints as {d}"));
        }
        what.push("digest");
    }
    if let Ok(p) = berth_store::oci::Platform::parse(&s) {
        let again = berth_store::oci::Platform::parse(&p.to_string())
            .map_err(|e| format!("platform {s:?} prints as {p}, which is refused: {e}"))?;
        if again != p {
            return Err(format!("platform {s:?} is {p:?} but {p} is {again:?}"));
        }
        what.push("platform");
    }
    if berth_distribution::auth::parse_challenge(&s).is_some() {
        what.push("challenge");
    }
    if berth_distribution::Credentials::parse(&s).is_ok() {
        what.push("creds");
    }
    Ok(what.join(","))
}

fn gen_reference(rng: &mut Rng) -> Vec<u8> {
    const HOSTS: &[&str] = &[
        "",
        "docker.io/",
        "example.com/",
        "localhost/",
        "127.0.0.1:5000/",
        "[::1]:5000/",
        "Example.COM/",
        "a:b/",
        "index.docker.io/",
        "host:/",
        ".:/",
        "localhost:/",
    ];
    const PATHS: &[&str] = &[
        "busybox",
        "library/busybox",
        "a/b/c",
        "A",
        "a..b",
        "a__b",
        "-a",
        "a-",
        "x:y",
        "a//b",
        "",
        "é",
        "library",
        "docker.io",
        "a.b",
        "localhost",
        "a@b",
    ];
    const TAGS: &[&str] = &[
        "", ":latest", ":1.0", ":", ":a/b", ":A", ":-x", "::", ":é", ":@", ":5000",
    ];
    const DIGESTS: &[&str] = &[
        "",
        "@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "@sha256:abc",
        "@sha512:00",
        "@:",
        "@a:b@c:d",
        "@sha256:",
        "@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ];
    let pick = |rng: &mut Rng, l: &[&str]| l[rng.usize(..l.len())].to_string();
    let s = match rng.u8(..6) {
        0 => pick(
            rng,
            &[
                "linux",
                "linux/arm64/v8",
                "linux/arm",
                "/",
                "a//b",
                "a/b/c/d",
            ],
        ),
        1 => pick(
            rng,
            &[
                "Bearer realm=\"https://auth/token\",service=\"reg\",scope=\"repository:a:pull\"",
                "Basic realm=x",
                "bearer realm=",
                "Bearer realm=\"unterminated",
                "Bearer ,,,=,=\"\"",
                "user:pass",
                ":x",
            ],
        ),
        _ => format!(
            "{}{}{}{}",
            pick(rng, HOSTS),
            pick(rng, PATHS),
            pick(rng, TAGS),
            pick(rng, DIGESTS)
        ),
    };
    s.into_bytes()
}

#[test]
fn reference() {
    fuzz(
        &Target {
            name: "reference",
            dict: &[
                b"/",
                b":",
                b"@",
                b".",
                b"sha256:",
                b"docker.io/",
                b"localhost",
                b"library/",
                b"\"",
            ],
            json: false,
            generate: 0.4,
        },
        |rng, _| gen_reference(rng),
        reference_check,
    );
}

// ---------------------------------------------------------------------------------------
// image index / manifest / config JSON, Docker's config.json

fn round_trip<T>(what: &str, data: &[u8]) -> Result<Option<T>, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(v) = serde_json::from_slice::<T>(data) else {
        return Ok(None);
    };
    let out =
        serde_json::to_vec(&v).map_err(|e| format!("{what}: parsed but cannot be written: {e}"))?;
    let again: T = serde_json::from_slice(&out).map_err(|e| {
        format!(
            "{what}: written as {} which does not parse: {e}",
            String::from_utf8_lossy(&out)
        )
    })?;
    if again != v {
        return Err(format!("{what}: {v:?} written and read back is {again:?}"));
    }
    Ok(Some(v))
}

fn image_json_check(docker_cfg: &Path, data: &[u8]) -> Outcome {
    use berth_store::oci::{chain_ids, media_kind, ImageConfig, Index, Manifest, Platform};
    let mut what = Vec::new();
    let host = Platform::host();
    if let Some(i) = round_trip::<Index>("index", data)? {
        for d in &i.manifests {
            let _ = media_kind(&d.media_type);
            if let Some(p) = &d.platform {
                let _ = host.matches(p);
            }
        }
        let parent = berth_store::oci::Descriptor::new(
            i.media_type
                .as_deref()
                .unwrap_or(berth_store::oci::MEDIA_TYPE_OCI_INDEX),
            berth_store::Digest::of(data),
            data.len() as u64,
        );
        let _ = berth_store::images::gc_child_labels(&parent, &i.manifests);
        what.push("index");
    }
    if let Some(m) = round_trip::<Manifest>("manifest", data)? {
        let parent = berth_store::oci::Descriptor::new(
            m.media_type
                .as_deref()
                .unwrap_or(berth_store::oci::MEDIA_TYPE_OCI_MANIFEST),
            berth_store::Digest::of(data),
            data.len() as u64,
        );
        let mut kids = vec![m.config.clone()];
        kids.extend(m.layers.iter().cloned());
        let _ = berth_store::images::gc_child_labels(&parent, &kids);
        what.push("manifest");
    }
    if let Some(c) = round_trip::<ImageConfig>("config", data)? {
        let ids = chain_ids(&c.rootfs.diff_ids);
        if ids.len() != c.rootfs.diff_ids.len() || ids.first() != c.rootfs.diff_ids.first() {
            return Err(format!("chain ids {ids:?} of {:?}", c.rootfs.diff_ids));
        }
        what.push("config");
    }
    // Docker's config.json, without credential helpers (those run programs).
    if let Ok(mut v) = serde_json::from_slice::<Value>(data) {
        if let Some(o) = v.as_object_mut() {
            o.remove("credHelpers");
            o.remove("credsStore");
        }
        let text = serde_json::to_vec(&v).unwrap_or_default();
        fs::write(docker_cfg, text).map_err(|e| format!("test setup: {e}"))?;
        if let Ok(c) = berth_distribution::DockerConfig::load(docker_cfg) {
            for r in ["docker.io", "example.com", ""] {
                if let Ok(Some(_)) = c.credentials(r) {
                    what.push("creds");
                }
            }
        }
    }
    Ok(what.join(","))
}

const HEX0: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn gen_image_json(rng: &mut Rng) -> Vec<u8> {
    let desc = |rng: &mut Rng| {
        let mt = json::STRINGS[11 + rng.usize(..9)];
        let mut d =
            json!({"mediaType": mt, "digest": format!("sha256:{HEX0}"), "size": rng.u64(..1000)});
        if rng.bool() {
            d["platform"] = json!({"architecture": "amd64", "os": "linux", "variant": "", "os.features": ["x"]});
        }
        if rng.bool() {
            d["annotations"] = json!({"org.opencontainers.image.ref.name": "1.0"});
        }
        d
    };
    let v = match rng.u8(..4) {
        0 => json!({"schemaVersion": 2, "mediaType": json::STRINGS[11],
                     "manifests": (0..rng.usize(..3)).map(|_| desc(rng)).collect::<Vec<_>>()}),
        1 => json!({"schemaVersion": 2, "config": desc(rng),
                     "layers": (0..rng.usize(..3)).map(|_| desc(rng)).collect::<Vec<_>>()}),
        2 => json!({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": (0..rng.usize(..3)).map(|_| format!("sha256:{HEX0}")).collect::<Vec<_>>()}}),
        _ => json!({"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                               "example.com": {"username": "u", "password": "p"}}}),
    };
    let mut d = serde_json::to_vec(&v).expect("json");
    for _ in 0..rng.usize(..4) {
        if let Some(m) = json::mutate(rng, &d) {
            d = m;
        }
    }
    d
}

#[test]
fn image_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docker_cfg = dir.path().join("config.json");
    fuzz(
        &Target {
            name: "image_json",
            dict: JSON_DICT,
            json: true,
            generate: 0.3,
        },
        |rng, _| gen_image_json(rng),
        |data| image_json_check(&docker_cfg, data),
    );
}

// ---------------------------------------------------------------------------------------
// layer tar apply

/// What a tree looks like, not following symlinks: path → (mode, uid, gid, nlink, size,
/// mtime, content hash, link target, device number). [`tree`] leaves out the subtrees in
/// `skip` (the layer roots).
type Tree = BTreeMap<String, (u32, u32, u32, u64, u64, i64, u64, Option<PathBuf>, u64)>;

fn tree(root: &Path, skip: &[&Path]) -> Tree {
    fn walk(root: &Path, skip: &[&Path], dir: &Path, out: &mut Tree) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if skip.contains(&p.as_path()) {
                continue;
            }
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            let content = if md.is_file() {
                hash(&fs::read(&p).unwrap_or_default())
            } else {
                0
            };
            let link = fs::read_link(&p).ok();
            let size = if md.is_dir() { 0 } else { md.size() };
            out.insert(
                rel,
                (
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.nlink(),
                    size,
                    md.mtime(),
                    content,
                    link,
                    md.rdev(),
                ),
            );
            if md.is_dir() {
                walk(root, skip, &p, out);
            }
        }
    }
    let mut out = Tree::new();
    walk(root, skip, root, &mut out);
    out
}

/// A temp dir with the layer root deep inside it and a sentinel directory beside it:
/// `top/a/b/root` (the target) and `top/outside` (must stay exactly as it was).
///
/// Where it can (as root), `top` is a tmpfs of its own, of [`SANDBOX_MB`]: much quicker than
/// ext4 for creating and deleting thousands of small trees, and an input that makes the
/// applier write without end fills it (ENOSPC) instead of the machine's disk or memory.
struct Sandbox {
    mounted: Option<PathBuf>,
    _dir: tempfile::TempDir,
    top: PathBuf,
    root: PathBuf,
    /// Scratch roots beside `root` for the diff target, left out of the comparison too.
    lower: PathBuf,
    check: PathBuf,
    outside: PathBuf,
    before: Tree,
    etc_passwd_links: u64,
}

fn outside_files(outside: &Path) {
    fs::create_dir_all(outside.join("sub")).expect("outside");
    fs::write(outside.join("keep"), b"must stay").expect("keep");
    fs::write(outside.join("sub/keep"), b"must stay too").expect("keep");
    std::os::unix::fs::symlink("keep", outside.join("alias")).expect("alias");
}

fn passwd_links() -> u64 {
    fs::symlink_metadata("/etc/passwd")
        .map(|m| m.nlink())
        .unwrap_or(0)
}

/// Makes `dir` afresh, holding what a lower layer left.
fn fresh(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir.join("etc"))?;
    fs::create_dir_all(dir.join("lower/dir"))?;
    fs::write(dir.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n")?;
    fs::write(dir.join("lower/keep"), b"lower")?;
    // Fixed times, so two fresh trees are equal for a diff.
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    for p in ["etc/passwd", "lower/keep", "lower/dir", "lower", "etc", ""] {
        fs::File::open(dir.join(p))?
            .set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))?;
    }
    Ok(())
}

/// Size of the sandbox's tmpfs.
const SANDBOX_MB: u32 = 512;

fn mount_tmpfs(at: &Path) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(target), Ok(opts)) = (
        CString::new(at.as_os_str().as_bytes()),
        CString::new(format!("size={SANDBOX_MB}m,mode=0700")),
    ) else {
        return false;
    };
    // SAFETY: valid NUL-terminated strings; mount(2) does not keep the pointers.
    unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            opts.as_ptr().cast(),
        ) == 0
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(p) = &self.mounted {
            if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid path; MNT_DETACH so a busy mount still goes.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("berth-fuzz-")
            .tempdir()
            .expect("tempdir");
        let top = dir.path().canonicalize().expect("canonical");
        let mounted = mount_tmpfs(&top).then(|| top.clone());
        let root = top.join("a/b/root");
        let lower = top.join("a/b/lower");
        let check = top.join("a/b/check");
        let outside = top.join("outside");
        outside_files(&outside);
        fs::create_dir_all(&root).expect("root");
        let before = tree(&top, &[&root, &lower, &check]);
        Sandbox {
            mounted,
            _dir: dir,
            top,
            root,
            lower,
            check,
            outside,
            before,
            etc_passwd_links: passwd_links(),
        }
    }

    /// A fresh root holding what a lower layer left.
    fn fresh_root(&self) -> std::io::Result<()> {
        fresh(&self.root)
    }

    /// Nothing outside the root changed.
    fn check_outside(&self) -> Result<(), String> {
        let mut now = tree(&self.top, &[&self.root, &self.lower, &self.check]);
        let mut before = self.before.clone();
        // The mtimes of a/ and a/b/ change when the roots are recreated, and a/b's link count
        // with the scratch roots beside the root; the rest is exact.
        for t in [&mut now, &mut before] {
            for k in ["a", "a/b"] {
                if let Some(v) = t.get_mut(k) {
                    v.3 = 0;
                    v.5 = 0;
                }
            }
        }
        if now != before {
            let added: Vec<_> = now.keys().filter(|k| !before.contains_key(*k)).collect();
            let gone: Vec<_> = before.keys().filter(|k| !now.contains_key(*k)).collect();
            let changed: Vec<_> = now
                .iter()
                .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
                .map(|(k, _)| k)
                .collect();
            return Err(format!(
                "written outside the root: added {added:?}, removed {gone:?}, changed {changed:?}"
            ));
        }
        if passwd_links() != self.etc_passwd_links {
            return Err("/etc/passwd gained or lost a hard link".into());
        }
        Ok(())
    }
}

fn layer_check(sb: &Sandbox, data: &[u8]) -> Outcome {
    use berth_layer::{ApplyOptions, WhiteoutMode};
    sb.fresh_root().map_err(|e| format!("test setup: {e}"))?;
    // The options come from the input's hash, so a saved input replays the same way.
    let h = hash(data);
    let opts = ApplyOptions {
        whiteouts: if h & 1 == 0 {
            WhiteoutMode::Delete
        } else {
            WhiteoutMode::OverlayUpper
        },
        same_owner: true,
        xattrs: h & 2 == 0,
    };
    let reader = std::io::Cursor::new(data.to_vec());
    let res = if h & 4 == 0 {
        berth_layer::apply_layer(reader, &sb.root, &opts)
    } else {
        berth_layer::apply_layer_without_openat2(reader, &sb.root, &opts)
    };
    // Sometimes the same layer again, on top of itself: every entry then meets one of its own.
    let res = match res {
        Ok(_) if h & 8 != 0 => {
            let reader = std::io::Cursor::new(data.to_vec());
            berth_layer::apply_layer(reader, &sb.root, &opts).map(|s| (s, 2))
        }
        other => other.map(|s| (s, 1)),
    };
    sb.check_outside()
        .map_err(|e| format!("{e} (apply returned {res:?})"))?;
    // Disk taken is bounded by the uncompressed tar: a block of data per data block, a few
    // per header (a 4 KiB block for each tiny file or dir); never the size a sparse file or a
    // header declares.
    let plain = plain_len(data);
    let used = disk_usage(&sb.root).map_err(|e| format!("test setup: {e}"))?;
    if used > 16 * plain + (1 << 20) {
        return Err(format!(
            "a {plain}-byte tar took {used} bytes of disk (apply returned {res:?})"
        ));
    }
    Ok(match res {
        Ok((s, n)) => format!("ok {} x{n}", s.entries.min(3)),
        Err(e) => label(&e),
    })
}

/// Bytes of the input once decompressed (the input's own length if it does not decompress).
fn plain_len(data: &[u8]) -> u64 {
    berth_layer::decompressed(std::io::Cursor::new(data.to_vec()))
        .ok()
        .and_then(|mut r| std::io::copy(&mut r, &mut std::io::sink()).ok())
        .unwrap_or(0)
        .max(data.len() as u64)
}

/// Bytes of disk (st_blocks) a tree takes, without following symlinks.
fn disk_usage(p: &Path) -> std::io::Result<u64> {
    let m = fs::symlink_metadata(p)?;
    let mut n = m.blocks() * 512;
    if m.is_dir() {
        for e in fs::read_dir(p)? {
            n += disk_usage(&e?.path())?;
        }
    }
    Ok(n)
}

/// Applies the input onto a root, diffs the result against the untouched lower tree, applies
/// that diff onto another copy of the lower tree, and checks the two trees are the same; the
/// overlay-upper diff of an upper-mode apply must apply cleanly too.
fn diff_check(sb: &Sandbox, data: &[u8]) -> Outcome {
    use berth_layer::{ApplyOptions, WhiteoutMode};
    let setup = |e: std::io::Error| format!("test setup: {e}");
    let h = hash(data);
    let opts = |whiteouts| ApplyOptions {
        whiteouts,
        same_owner: true,
        xattrs: h & 2 == 0,
    };
    let upper_mode = h & 1 != 0;
    let cursor = || std::io::Cursor::new(data.to_vec());
    if upper_mode {
        // An overlay upper dir starts empty.
        let _ = fs::remove_dir_all(&sb.root);
        fs::create_dir_all(&sb.root).map_err(setup)?;
        if let Err(e) =
            berth_layer::apply_layer(cursor(), &sb.root, &opts(WhiteoutMode::OverlayUpper))
        {
            sb.check_outside()?;
            return Ok(format!("apply: {}", label(&e)));
        }
        let mut out = Vec::new();
        let res = berth_layer::diff_overlay_upper(&sb.root, &mut out);
        let _ = fs::remove_dir_all(&sb.check);
        fs::create_dir_all(&sb.check).map_err(setup)?;
        let outcome = match res {
            Ok(_) => {
                berth_layer::apply_layer(
                    std::io::Cursor::new(out.clone()),
                    &sb.check,
                    &opts(WhiteoutMode::OverlayUpper),
                )
                .map_err(|e| {
                    format!(
                        "the overlay diff of an applied layer does not apply: {e}; diff: {}",
                        berth_fuzz::show(&out)
                    )
                })?;
                "upper ok".to_string()
            }
            Err(e) => format!("upper diff: {}", label(&e)),
        };
        sb.check_outside()?;
        return Ok(outcome);
    }
    fresh(&sb.root).map_err(setup)?;
    fresh(&sb.lower).map_err(setup)?;
    if let Err(e) = berth_layer::apply_layer(cursor(), &sb.root, &opts(WhiteoutMode::Delete)) {
        sb.check_outside()?;
        return Ok(format!("apply: {}", label(&e)));
    }
    let mut out = Vec::new();
    let stats = match berth_layer::diff_trees(&sb.lower, &sb.root, &mut out) {
        Ok(s) => s,
        Err(e) => return Ok(format!("diff: {}", label(&e))),
    };
    fresh(&sb.check).map_err(setup)?;
    berth_layer::apply_layer(
        std::io::Cursor::new(out.clone()),
        &sb.check,
        &opts(WhiteoutMode::Delete),
    )
    .map_err(|e| {
        format!(
            "the diff of an applied layer does not apply: {e}; diff: {}",
            berth_fuzz::show(&out)
        )
    })?;
    // Layers carry whole-second mtimes from 1970 on (diff writes an earlier one as 0).
    let clamp = |mut t: Tree| {
        for v in t.values_mut() {
            v.5 = v.5.max(0);
        }
        t
    };
    let (want, got) = (clamp(tree(&sb.root, &[])), clamp(tree(&sb.check, &[])));
    if want != got {
        let diff: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}: {v:?} became {:?}", got.get(k)))
            .chain(
                got.keys()
                    .filter(|k| !want.contains_key(*k))
                    .map(|k| format!("{k}: appeared")),
            )
            .take(4)
            .collect();
        return Err(format!(
            "apply(diff(lower, apply(layer))) differs from apply(layer): {diff:?}"
        ));
    }
    sb.check_outside()?;
    Ok(format!("round trip {}", stats.entries.min(3)))
}

#[test]
fn layer_diff() {
    let sb = Sandbox::new();
    let outside = sb.outside.display().to_string();
    let g = TarGen {
        outside: &outside,
        outside_rel: "../../../outside",
    };
    fuzz(
        &Target {
            name: "layer_diff",
            dict: &[b"../", b"/", b".wh.", b".wh..wh..opq", b"\0", b"ustar\0"],
            json: false,
            generate: 0.6,
        },
        |rng, _| g.layer(rng),
        |data| diff_check(&sb, data),
    );
}

#[test]
fn layer_apply() {
    let sb = Sandbox::new();
    let outside = sb.outside.display().to_string();
    let g = TarGen {
        outside: &outside,
        outside_rel: "../../../outside",
    };
    fuzz(
        &Target {
            name: "layer_apply",
            dict: &[
                b"../",
                b"/",
                b".wh.",
                b".wh..wh..opq",
                b"\0",
                b"ustar\0",
                b"ustar  \0",
                b"00000000000",
            ],
            json: false,
            generate: 0.5,
        },
        |rng, _| g.layer(rng),
        |data| layer_check(&sb, data),
    );
}

// ---------------------------------------------------------------------------------------
// docker-save and OCI archive import (berthd's image import)

fn digest_hex(data: &[u8]) -> String {
    berth_store::Digest::of(data).hex().to_string()
}

fn simple_layer(rng: &mut Rng) -> Vec<u8> {
    let n = rng.u8(..255);
    berth_fuzz::tars::archive(&[
        ("etc/".into(), Member::Dir),
        (format!("etc/f{n}"), Member::File(vec![n; rng.usize(..100)])),
        ("lnk".into(), Member::Symlink("etc".into())),
    ])
}

/// A random OCI layout or docker-save archive, mostly well formed, with hostile layers,
/// wrong sizes and digests, links between members, and mutated JSON.
fn gen_archive(rng: &mut Rng, g: &TarGen<'_>) -> Vec<u8> {
    use berth_store::oci::*;
    let mut layers: Vec<Vec<u8>> = Vec::new();
    for _ in 0..rng.usize(..3) {
        layers.push(if rng.u8(..3) == 0 {
            g.layer(rng)
        } else {
            simple_layer(rng)
        });
    }
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| {
            let plain = berth_layer::decompressed(std::io::Cursor::new(l.clone()))
                .ok()
                .and_then(|r| {
                    // Bounded: a decompression bomb gets a wrong diff ID, not all our memory.
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::Read::take(r, 64 << 20), &mut v)
                        .ok()
                        .map(|_| v)
                })
                .unwrap_or_else(|| l.clone());
            format!("sha256:{}", digest_hex(&plain))
        })
        .collect();
    let host = Platform::host();
    let mut config = serde_json::to_vec(&json!({
        "architecture": host.architecture, "os": host.os, "variant": host.variant,
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .expect("json");
    let mutate = |rng: &mut Rng, d: &mut Vec<u8>| {
        if rng.u8(..6) == 0 {
            if let Some(m) = json::mutate(rng, d) {
                *d = m;
            }
        }
    };
    mutate(rng, &mut config);
    let name = [
        "example.com/fuzz:1",
        "fuzz",
        "Bad Name",
        "x@sha256:00",
        "localhost/a/b:c",
    ][rng.usize(..5)];
    let mut members: Vec<(String, Member)> = Vec::new();
    if rng.bool() {
        // OCI layout.
        let blob = |members: &mut Vec<(String, Member)>, data: &[u8]| {
            let hex = digest_hex(data);
            members.push((format!("blobs/sha256/{hex}"), Member::File(data.to_vec())));
            hex
        };
        let size = |rng: &mut Rng, n: usize| {
            if rng.u8(..12) == 0 {
                n as u64 + 1
            } else {
                n as u64
            }
        };
        let cfg_hex = blob(&mut members, &config);
        let mut ls = Vec::new();
        for l in &layers {
            let hex = blob(&mut members, l);
            let mt = [
                MEDIA_TYPE_OCI_LAYER,
                MEDIA_TYPE_OCI_LAYER_GZIP,
                MEDIA_TYPE_DOCKER_LAYER_GZIP,
                "text/plain",
            ][rng.usize(..4)];
            ls.push(json!({"mediaType": mt, "digest": format!("sha256:{hex}"), "size": size(rng, l.len())}));
        }
        let mut manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": format!("sha256:{cfg_hex}"), "size": size(rng, config.len())},
            "layers": ls
        }))
        .expect("json");
        mutate(rng, &mut manifest);
        let m_hex = blob(&mut members, &manifest);
        let mut top = json!({"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": format!("sha256:{m_hex}"),
                             "size": size(rng, manifest.len()),
                             "annotations": {ANNOTATION_IMAGE_NAME: name}});
        if rng.u8(..4) == 0 {
            // A nested index in between.
            let nested = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX,
                "manifests": [{"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": format!("sha256:{m_hex}"),
                               "size": manifest.len(), "platform": {"architecture": host.architecture, "os": host.os}}]}))
            .expect("json");
            let n_hex = blob(&mut members, &nested);
            top = json!({"mediaType": MEDIA_TYPE_OCI_INDEX, "digest": format!("sha256:{n_hex}"),
                         "size": nested.len(), "annotations": {ANNOTATION_REF_NAME: name}});
        }
        let mut index =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).expect("json");
        mutate(rng, &mut index);
        members.push((
            "oci-layout".into(),
            Member::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ));
        members.push(("index.json".into(), Member::File(index)));
    } else {
        // docker save.
        let cfg_name = format!("{}.json", digest_hex(&config));
        members.push((cfg_name.clone(), Member::File(config)));
        let mut names = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let p = format!("l{i}/layer.tar");
            members.push((format!("l{i}/"), Member::Dir));
            match rng.u8(..8) {
                0 => members.push((
                    p.clone(),
                    Member::Symlink(format!("../l{}/layer.tar", i + 1)),
                )),
                1 => members.push((p.clone(), Member::Symlink("../../../../etc/passwd".into()))),
                2 => members.push((p.clone(), Member::Hardlink("/etc/passwd".into()))),
                3 => {
                    members.push((p.clone(), Member::Symlink("x".into())));
                    members.push((format!("l{i}/x"), Member::Symlink("layer.tar".into())));
                }
                _ => members.push((p.clone(), Member::File(l.clone()))),
            }
            names.push(p);
        }
        let mut manifest =
            serde_json::to_vec(&json!([{"Config": cfg_name, "RepoTags": [name], "Layers": names}]))
                .expect("json");
        mutate(rng, &mut manifest);
        members.push(("manifest.json".into(), Member::File(manifest)));
    }
    if rng.u8(..8) == 0 && !members.is_empty() {
        let i = rng.usize(..members.len());
        members.remove(i);
    }
    if rng.u8(..10) == 0 {
        members.push((
            "../../../../outside/pwned".into(),
            Member::File(b"pwned".to_vec()),
        ));
    }
    let mut out = berth_fuzz::tars::archive(&members);
    if rng.u8(..10) == 0 {
        let at = rng.usize(..out.len());
        out.truncate(at);
    }
    out
}

fn import_check(s: &berth_store::Store, sb: &Sandbox, data: &[u8]) -> Outcome {
    use berth_store::images::ImportOptions;
    let ctx = berth_store::Ctx::new("fuzz");
    let opts = ImportOptions {
        unpack: hash(data) & 1 == 0,
        ..ImportOptions::default()
    };
    let res = s.import(&ctx, std::io::Cursor::new(data), &opts);
    let images = s
        .image_list(&ctx, &[])
        .map_err(|e| format!("image_list: {e}"))?;
    let outcome = match &res {
        Ok(imgs) => {
            for i in imgs {
                if berth_store::images::normalize_name(&i.name).ok().as_deref() != Some(&i.name) {
                    return Err(format!(
                        "image recorded under an unnormalised name {:?}",
                        i.name
                    ));
                }
                s.content_info(&ctx, &i.target.digest)
                    .map_err(|e| format!("image {} names a missing blob: {e}", i.name))?;
            }
            for i in &images {
                s.image_delete(&ctx, &i.name)
                    .map_err(|e| format!("image_delete: {e}"))?;
            }
            format!("ok {}", imgs.len().min(2))
        }
        Err(e) => {
            if !images.is_empty() {
                return Err(format!(
                    "import failed ({e}) but left image records {images:?}"
                ));
            }
            label(e)
        }
    };
    let leases = s
        .lease_list(&ctx, &[])
        .map_err(|e| format!("lease_list: {e}"))?;
    if !leases.is_empty() {
        return Err(format!("import left leases {leases:?} ({res:?})"));
    }
    let ingests = s
        .content_statuses(&ctx, &[])
        .map_err(|e| format!("content_statuses: {e}"))?;
    if !ingests.is_empty() {
        return Err(format!("import left ingests {ingests:?} ({res:?})"));
    }
    s.collect().map_err(|e| format!("collect: {e}"))?;
    let content = s
        .content_list(&ctx, &[])
        .map_err(|e| format!("content_list: {e}"))?;
    let snaps = s
        .snapshotter()
        .list(&ctx, &[])
        .map_err(|e| format!("snapshots: {e}"))?;
    if !content.is_empty() || !snaps.is_empty() {
        return Err(format!(
            "after the import ({}) and GC, {} blobs and {} snapshots remain",
            match &res {
                Ok(_) => "ok, images deleted".to_string(),
                Err(e) => e.to_string(),
            },
            content.len(),
            snaps.len()
        ));
    }
    sb.check_outside()?;
    Ok(outcome)
}

#[test]
fn archive_import() {
    let sb = Sandbox::new();
    let mut cfg = berth_store::StoreConfig::new(sb.root.clone());
    cfg.snapshotter = berth_store::SnapshotterChoice::Native;
    let store = berth_store::Store::open(&cfg).expect("open store");
    let outside = sb.outside.display().to_string();
    let g = TarGen {
        outside: &outside,
        outside_rel: "../../../outside",
    };
    fuzz(
        &Target {
            name: "archive_import",
            dict: &[
                b"../",
                b"/",
                b"\"",
                b"sha256:",
                b"blobs/sha256/",
                b"index.json",
                b"manifest.json",
                b"ustar\0",
            ],
            json: false,
            generate: 0.6,
        },
        |rng, _: &Corpus| gen_archive(rng, &g),
        |data| import_check(&store, &sb, data),
    );
}

// ---------------------------------------------------------------------------------------
// Seeds: `cargo test -p berth-fuzz --release --test fuzz -- --ignored write_seeds` rewrites
// the seed files (the regression files, crash-* and hang-*, are kept as found).

#[test]
#[ignore]
fn write_seeds() {
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = berth_fuzz::corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };
    let cfg = default_config();
    put(
        "config_json",
        "seed-default.json",
        &serde_json::to_vec_pretty(&cfg).unwrap(),
    );
    let mut rootless = berth_runtime::spec::default_spec(true);
    rootless["root"]["path"] = json!("rootfs");
    put(
        "config_json",
        "seed-rootless.json",
        &serde_json::to_vec_pretty(&rootless).unwrap(),
    );
    let mut full = cfg.clone();
    full["hostname"] = json!("fuzz");
    full["process"]["execCPUAffinity"] = json!({"initial": "0-1", "final": "0"});
    full["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1"});
    full["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]}]});
    full["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": "/tmp",
        "options": ["rbind", "ro", "idmap", "uids=0-1000-10", "gids=0-1000-10"]}),
    );
    put(
        "config_json",
        "seed-full.json",
        &serde_json::to_vec_pretty(&full).unwrap(),
    );

    for (i, r) in [
        "busybox",
        "docker.io/library/busybox:latest",
        "127.0.0.1:5000/a/b:v1",
        "localhost/x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "example.com/a/b:t@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "linux/arm64/v8",
        "Bearer realm=\"https://auth.example.com/token\",service=\"registry\",scope=\"repository:a/b:pull\"",
    ]
    .iter()
    .enumerate()
    {
        put("reference", &format!("seed-{i}"), r.as_bytes());
    }

    for i in 0..4 {
        put("image_json", &format!("seed-{i}.json"), &{
            let mut r = Rng::with_seed(i);
            // One generated document of each kind.
            loop {
                let d = gen_image_json(&mut r);
                let v: Value = serde_json::from_slice(&d).unwrap_or(Value::Null);
                let kind = ["manifests", "layers", "rootfs", "auths"][i as usize];
                if v.get(kind).is_some() {
                    break d;
                }
            }
        });
    }

    let g = TarGen {
        outside: "/nonexistent/outside",
        outside_rel: "../../../outside",
    };
    let layer = berth_fuzz::tars::archive(&[
        ("etc/".into(), Member::Dir),
        (
            "etc/passwd".into(),
            Member::File(b"root:x:0:0::/root:/bin/sh\n".to_vec()),
        ),
        ("bin/".into(), Member::Dir),
        ("bin/sh".into(), Member::Symlink("busybox".into())),
        (
            "bin/busybox".into(),
            Member::File(vec![0x7f, b'E', b'L', b'F']),
        ),
        ("bin/ash".into(), Member::Hardlink("bin/busybox".into())),
        ("lower/.wh.keep".into(), Member::File(Vec::new())),
        ("lower/dir/.wh..wh..opq".into(), Member::File(Vec::new())),
    ]);
    put("layer_apply", "seed-plain.tar", &layer);
    put(
        "layer_apply",
        "seed-plain.tar.gz",
        &berth_fuzz::tars::gzip(&layer),
    );
    // Found by layer_apply: 512 MiB of PAX records in a small compressed layer were read into
    // memory whole.
    put(
        "layer_apply",
        "crash-pax-bomb.tar.zst",
        berth_fuzz::tars::bomb(),
    );
    // A GNU sparse file declaring a terabyte: refused, naming it (written out as zeros it would
    // fill the disk).
    put(
        "layer_apply",
        "seed-sparse-terabyte.tar",
        &berth_fuzz::tars::sparse_terabyte(),
    );
    let mut r = Rng::with_seed(11);
    for i in 0..6 {
        put(
            "layer_apply",
            &format!("seed-hostile-{i}.tar"),
            &g.layer(&mut r),
        );
    }
    let mut r = Rng::with_seed(13);
    let mut made = 0;
    while made < 4 {
        let a = gen_archive(&mut r, &g);
        if a.len() < 64 << 10 {
            put("archive_import", &format!("seed-{made}.tar"), &a);
            made += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dockerfiles: parse, group into stages and plan (what berthd does with a build's
// Dockerfile before anything runs). Property: an answer (a plan or an error naming a line),
// never a panic or a hang.

/// Lines a generated Dockerfile is made of: every instruction, the directives, heredocs,
/// continuations, expansions and what Docker refuses.
const DOCKERFILE_LINES: &[&str] = &[
    "# syntax=docker/dockerfile:1",
    "# escape=`",
    "# escape=\\",
    "ARG BASE=busybox",
    "ARG V",
    "FROM ${BASE:-busybox} AS build",
    "FROM --platform=$BUILDPLATFORM scratch",
    "FROM build",
    "FROM busybox AS a",
    "FROM a AS a",
    "RUN echo ${V:+set} ${V:-unset} $V",
    "RUN [\"sh\", \"-c\", \"echo hi\"]",
    "RUN --mount=type=cache,target=/c --network=none true",
    "RUN --mount=type=bind,from=a,source=/x,target=/y cat /y",
    "RUN <<EOF\necho one\necho two\nEOF",
    "COPY <<EOF /f\ncontent\nEOF",
    "RUN echo a \\\n  b \\\n  c",
    "COPY --from=a --chown=1:1 --chmod=755 /src /dst",
    "COPY --link . /app",
    "ADD https://example.com/x.tar.gz /x",
    "ADD --checksum=sha256:00 x /y",
    "ENV A=1 B=\"two words\" C=${A}",
    "ENV K V",
    "LABEL a=b \"c d\"=e",
    "EXPOSE 80/tcp 53/udp ${PORT}",
    "VOLUME [\"/data\"]",
    "USER 1000:1000",
    "WORKDIR /app/${DIR}",
    "SHELL [\"/bin/sh\", \"-ec\"]",
    "CMD [\"run\"]",
    "ENTRYPOINT exec app",
    "HEALTHCHECK --interval=5s --retries=3 CMD true",
    "HEALTHCHECK NONE",
    "STOPSIGNAL SIGTERM",
    "ONBUILD RUN echo child",
    "ONBUILD ONBUILD RUN x",
    "MAINTAINER someone",
    "BOGUS instruction",
    "RUN",
    "COPY",
    "FROM",
    "ENV",
    "ARG =x",
    "EXPOSE 99999",
    "# a comment",
    "",
    "  ",
];

fn gen_dockerfile(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    let mut text = if rng.bool() {
        String::from_utf8_lossy(corpus.pick(rng)).into_owned()
    } else {
        String::new()
    };
    for _ in 0..1 + rng.usize(..12) {
        text.push_str(DOCKERFILE_LINES[rng.usize(..DOCKERFILE_LINES.len())]);
        text.push('\n');
    }
    text.into_bytes()
}

fn dockerfile_check(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok("not utf-8".into());
    };
    let stages = match berth_build::parse_dockerfile(text) {
        Ok(s) => s,
        Err(e) => return Ok(format!("parse error: {}", label(&e))),
    };
    let opts = berth_build::plan::BuildOptions {
        build_args: BTreeMap::from([("V".to_string(), "x".to_string())]),
        ..Default::default()
    };
    match berth_build::plan::plan(&stages, &opts, &berth_build::plan::NoImages) {
        Ok(p) => Ok(format!("planned {} stage(s)", p.stages.len().min(4))),
        Err(e) => Ok(format!("plan error: {}", label(&e))),
    }
}

#[test]
fn dockerfile() {
    fuzz(
        &Target {
            name: "dockerfile",
            dict: &[
                b"\n",
                b"\\\n",
                b"${",
                b"}",
                b":-",
                b":+",
                b"<<EOF\n",
                b"EOF\n",
                b"\"",
                b"[",
                b"]",
                b"--from=",
                b"--mount=",
                b"AS ",
                b"FROM ",
                b"RUN ",
                b"ARG ",
                b"`",
            ],
            json: false,
            generate: 0.5,
        },
        gen_dockerfile,
        dockerfile_check,
    );
}

// ---------------------------------------------------------------------------------------
// Docker Engine API request bodies: what berthd's Docker front reads from a client's body,
// through the same functions the handlers call (`server::parse_body`, then each endpoint's
// pure check) before anything is looked up. Properties: an answer, never a panic; an error
// is a 4xx (bad input is never a 500) with a message; a plan keeps the invariants below.

use berth_manager::docker::errors::ApiError;

/// The outcome of an error answer: its status and label, or a failure if it is not a 4xx
/// with a message.
fn api_error(what: &str, e: &ApiError) -> Outcome {
    if !e.status.is_client_error() {
        return Err(format!(
            "{what}: bad input answered {} ({})",
            e.status, e.message
        ));
    }
    if e.message.trim().is_empty() {
        return Err(format!("{what}: a {} without a message", e.status));
    }
    Ok(format!(
        "{what} {} {}",
        e.status.as_u16(),
        label(&e.message)
    ))
}

/// Names the create query may carry (with Docker's leading slash too), and names Docker's
/// rule refuses.
const CREATE_NAMES: &[&str] = &["", "web", "/web", "app_web_1", "w.1-x"];
const BAD_NAMES: &[&str] = &["a", "-x", "a/b", "é1", "/"];

/// Image configs the spec is made against: none, busybox's, one with ports and volumes.
fn image_configs() -> [Value; 3] {
    [
        json!({}),
        json!({"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}),
        json!({"Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
               "Env": ["PATH=/bin", "NGINX_VERSION=1.25"], "ExposedPorts": {"80/tcp": {}},
               "Volumes": {"/data": {}, "/var/cache/nginx/": {}}, "WorkingDir": "/srv",
               "User": "101:101", "StopSignal": "SIGQUIT"}),
    ]
}

/// What berthd's create does with `data` as the body of `POST /containers/create`, up to
/// (not including) the store: parse, plan, spec, networks and mounts.
fn docker_create_check(data: &[u8], images: &[Value]) -> Outcome {
    use berth_manager::docker::{create, server};
    let body: Value = match server::parse_body(data) {
        Ok(v) => v,
        Err(e) => return api_error("body", &e),
    };
    let h = hash(data);
    // The query, from the input's hash: now and then a bad name or platform.
    let name = match h % 64 {
        0..=3 => BAD_NAMES[(h / 64 % BAD_NAMES.len() as u64) as usize],
        _ => CREATE_NAMES[(h / 64 % CREATE_NAMES.len() as u64) as usize],
    };
    let platform = match h / 4096 % 32 {
        0 => Some("windows"),
        1..=8 => Some("linux/amd64"),
        _ => None,
    };
    let p = match create::plan(name, platform, &body) {
        Ok(p) => p,
        Err(e) => return api_error("plan", &e),
    };
    if p.image.is_empty() {
        return Err("a plan without an image".into());
    }
    if let Some(n) = &p.name {
        if !create::valid_name(n) {
            return Err(format!("a plan named {n:?}, which Docker's rule refuses"));
        }
    }
    let policy = p.host["RestartPolicy"]["Name"].as_str().unwrap_or("");
    if !matches!(
        policy,
        "" | "no" | "always" | "unless-stopped" | "on-failure"
    ) {
        return Err(format!("a plan with restart policy {policy:?}"));
    }
    if p.host["AutoRemove"] == json!(true) && !matches!(policy, "" | "no") {
        return Err("a plan with AutoRemove and a restart policy".into());
    }
    let id = format!("{:016x}", h).repeat(4);
    let mut flags = p.net_flags(p.name.as_deref().unwrap_or("brave_turing"), &id[..12]);
    let user_net = flags.net.first().is_some_and(|m| {
        !matches!(m.as_str(), "bridge" | "none" | "host") && !m.starts_with("container:")
    });
    if user_net && flags.network_alias.get(1).map(String::as_str) != Some(&id[..12]) {
        return Err(format!(
            "on network {:?} the aliases {:?} lack the short ID",
            flags.net, flags.network_alias
        ));
    }
    let image_cfg = &images[(h / 131_072 % images.len() as u64) as usize];
    let mut spec = match p.spec(&id, image_cfg) {
        Ok(s) => s,
        Err(e) => return api_error("spec", &e),
    };
    spec_invariants(&spec, &p)?;
    // create() resolves `container:NAME` to the container's ID before attaching.
    if let Some(m) = flags.net.first().cloned() {
        if m.starts_with("container:") {
            flags.net = vec![format!("container:{id}")];
        }
    }
    let (_labels, reqs) = match p.attach(&flags, image_cfg, &mut spec) {
        Ok(x) => x,
        Err(e) => return api_error("attach", &e),
    };
    let mut seen = std::collections::HashSet::new();
    for r in &reqs {
        let dst = r.dst();
        if !dst.starts_with('/') {
            return Err(format!("mount destination {dst:?} is not absolute"));
        }
        if !seen.insert(dst.trim_end_matches('/').to_string()) {
            return Err(format!("two mounts at {dst:?}"));
        }
    }
    serde_json::to_vec(&spec).map_err(|e| format!("the spec does not serialise: {e}"))?;
    Ok(format!(
        "ok mounts={} nets={} tty={} priv={}",
        reqs.len().min(3),
        flags.net.len().min(2),
        p.opts.tty,
        p.opts.privileged
    ))
}

/// What a spec made from a request must hold whatever the request said.
fn spec_invariants(spec: &Value, p: &berth_manager::docker::create::Plan) -> Result<(), String> {
    let proc_ = &spec["process"];
    let args = proc_["args"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if args.is_empty() || !args.iter().all(Value::is_string) {
        return Err(format!("process args {:?}", proc_["args"]));
    }
    for e in proc_["env"].as_array().into_iter().flatten() {
        let e = e.as_str().unwrap_or("");
        if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(format!("environment entry {e:?} is not KEY=VALUE"));
        }
    }
    if spec["hostname"].as_str().is_none_or(str::is_empty) {
        return Err("an empty host name".into());
    }
    let r = &spec["linux"]["resources"];
    let limit = r["memory"]["limit"].as_i64();
    // dockerd's least memory limit, which `docker update` keeps to as well.
    if limit.is_some_and(|m| m < 6 << 20) {
        return Err(format!("memory limit {limit:?}"));
    }
    if let Some(s) = r["memory"]["swap"].as_i64() {
        if s != -1 && limit.is_none_or(|m| s < m) {
            return Err(format!("swap {s} with memory limit {limit:?}"));
        }
    }
    if r["pids"]["limit"].as_i64().is_some_and(|n| n <= 0) {
        return Err(format!("pids limit {}", r["pids"]["limit"]));
    }
    if let Some(s) = r["cpu"]["shares"].as_u64() {
        if !(2..=262_144).contains(&s) {
            return Err(format!("cpu shares {s}"));
        }
    }
    if r["cpu"]["quota"].as_i64().is_some_and(|q| q <= 0) {
        return Err(format!("cpu quota {}", r["cpu"]["quota"]));
    }
    for l in proc_["rlimits"].as_array().into_iter().flatten() {
        if l["soft"].as_u64() > l["hard"].as_u64() {
            return Err(format!("rlimit {l} has soft above hard"));
        }
    }
    if p.opts.privileged && !spec["linux"]["seccomp"].is_null() {
        return Err("a privileged container with a seccomp profile".into());
    }
    Ok(())
}

/// One of `list`, cloned.
fn one(rng: &mut Rng, list: &[Value]) -> Value {
    list[rng.usize(..list.len())].clone()
}

/// An object with each of `fields` present with chance `p`: its first (plausible) value, or
/// with chance `hostile` another of its values or (1 in 8 of those) a random JSON value. Few
/// hostile fields a body, so that most bodies get past the checks into the translation.
fn fill(
    rng: &mut Rng,
    fields: &[(&str, Vec<Value>)],
    p: f64,
    hostile: f64,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (k, vals) in fields {
        if rng.f64() < p {
            let v = if rng.f64() >= hostile {
                vals[0].clone()
            } else if rng.u8(..8) == 0 {
                json::value(rng, 2)
            } else {
                one(rng, vals)
            };
            m.insert((*k).to_string(), v);
        }
    }
    m
}

/// A create body with the fields `docker run`/`docker create` (Config, HostConfig,
/// NetworkingConfig) and docker-compose send, each present at random with a plausible or a
/// hostile value; now and then a random JSON value in place of one.
fn gen_docker_create(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    if rng.u8(..4) == 0 {
        let mut d = corpus.pick(rng).to_vec();
        for _ in 0..1 + rng.usize(..4) {
            if let Some(m) = json::mutate(rng, &d) {
                d = m;
            }
        }
        return d;
    }
    let config: Vec<(&str, Vec<Value>)> = vec![
        (
            "Image",
            vec![
                json!("busybox"),
                json!("nginx:1.25"),
                json!(""),
                json!("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
                json!(7),
            ],
        ),
        (
            "Cmd",
            vec![
                json!(null),
                json!(["sh", "-c", "echo hi"]),
                json!([]),
                json!("top"),
                json!([1]),
                json!({"a": 1}),
            ],
        ),
        (
            "Entrypoint",
            vec![
                json!(null),
                json!(["/bin/sh"]),
                json!([""]),
                json!([]),
                json!("x"),
                json!(false),
            ],
        ),
        (
            "Env",
            vec![
                json!(["A=1", "B=two words"]),
                json!(["NOEQUALS"]),
                json!(["=x"]),
                json!(["PATH="]),
                json!([null]),
                json!("A=1"),
            ],
        ),
        (
            "User",
            vec![
                json!(""),
                json!("1000:1000"),
                json!("root"),
                json!("4294967296"),
                json!("a:b:c"),
                json!(":"),
            ],
        ),
        (
            "WorkingDir",
            vec![
                json!("/w"),
                json!("rel"),
                json!(""),
                json!("/../.."),
                json!(1),
            ],
        ),
        (
            "Hostname",
            vec![
                json!(""),
                json!("h1"),
                json!("-bad-"),
                json!("x".repeat(300)),
                json!(1),
            ],
        ),
        (
            "Labels",
            vec![
                json!({"com.docker.compose.project": "app", "a": "b"}),
                json!({"n": 1}),
                json!([]),
            ],
        ),
        ("Tty", vec![json!(true), json!(false), json!("yes")]),
        ("OpenStdin", vec![json!(true), json!(false)]),
        ("StdinOnce", vec![json!(true)]),
        ("AttachStdout", vec![json!(true)]),
        (
            "ExposedPorts",
            vec![
                json!({"80/tcp": {}}),
                json!({"53/udp": {}, "99999/tcp": {}}),
                json!({"x": {}}),
                json!(["80"]),
            ],
        ),
        (
            "Volumes",
            vec![json!({"/data": {}}), json!({"rel": {}}), json!({"/": {}})],
        ),
        (
            "StopSignal",
            vec![json!("SIGTERM"), json!("9"), json!("SIGNOPE")],
        ),
        ("StopTimeout", vec![json!(10), json!(-1), json!(null)]),
        (
            "Healthcheck",
            vec![
                json!({"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 5_000_000_000u64, "Timeout": 1_000_000_000u64, "Retries": 3}),
                json!({"Test": ["NONE"]}),
                json!({"Test": ["CMD"]}),
                json!({"Interval": 5}),
                json!({"Interval": -1}),
                json!({"Timeout": "1s"}),
                json!({"StartPeriod": i64::MAX}),
                json!("curl"),
            ],
        ),
        ("Shell", vec![json!(["/bin/bash", "-c"])]),
        ("Domainname", vec![json!(""), json!("example.com")]),
        ("NetworkDisabled", vec![json!(false), json!(true)]),
        ("MacAddress", vec![json!(""), json!("02:42:ac:11:00:02")]),
    ];
    let host: Vec<(&str, Vec<Value>)> = vec![
        (
            "Binds",
            vec![
                json!(["data:/data"]),
                json!(["/srv/www:/usr/share/nginx/html:ro"]),
                json!(["/a:/b:z,rw,rshared"]),
                json!(["a"]),
                json!([":/x"]),
                json!(["/x:rel"]),
                json!(["v:/d", "w:/d/"]),
                json!(["/h:/c:bogus"]),
                json!("x:/y"),
            ],
        ),
        (
            "Mounts",
            vec![
                json!([{"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"}}}]),
                json!([{"Type": "bind", "Source": "/srv", "Target": "/s", "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}}]),
                json!([{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 1023}}]),
                json!([{"Type": "npipe", "Target": "/p"}]),
                json!([{"Type": "bind", "Source": "rel", "Target": "/x"}]),
                json!([{"Target": ""}]),
                json!([{"Type": "volume", "Target": "/x", "Consistency": "cached"}]),
                json!([{"Type": "volume", "Source": "a,b=c", "Target": "/y"}]),
                json!([7]),
            ],
        ),
        (
            "Tmpfs",
            vec![
                json!({"/run": "size=64m"}),
                json!({"/t": ""}),
                json!({"rel": "x"}),
                json!({"/t": "a b"}),
                json!({"/t": 1}),
            ],
        ),
        (
            "PortBindings",
            vec![
                json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}),
                json!({"53/udp": [{"HostIp": "", "HostPort": ""}]}),
                json!({"80/tcp": []}),
                json!({"80/tcp": null}),
                json!({"8000-8010/tcp": [{"HostPort": "9000-9010"}]}),
                json!({"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]}),
                json!({"80/sctp": [{}]}),
                json!({"0/tcp": [{"HostPort": "70000"}]}),
                json!({"x": [{"HostIp": "not-an-ip", "HostPort": "1"}]}),
                json!({"80/tcp": [{"HostPort": 8080}]}),
                json!({"80": "8080"}),
            ],
        ),
        ("PublishAllPorts", vec![json!(true)]),
        (
            "NetworkMode",
            vec![
                json!("default"),
                json!("bridge"),
                json!("host"),
                json!("none"),
                json!("app_default"),
                json!("container:web"),
                json!("container:"),
                json!("-bad"),
                json!(1),
            ],
        ),
        (
            "RestartPolicy",
            vec![
                json!({"Name": "always", "MaximumRetryCount": 0}),
                json!({"Name": "on-failure", "MaximumRetryCount": 3}),
                json!({"Name": "no", "MaximumRetryCount": 2}),
                json!({"Name": "sometimes"}),
                json!({"Name": "unless-stopped"}),
                json!({"MaximumRetryCount": -1}),
                json!("always"),
            ],
        ),
        ("AutoRemove", vec![json!(false), json!(true)]),
        (
            "Memory",
            vec![
                json!(67108864),
                json!(-1),
                json!(1),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(1.5),
                json!("64m"),
            ],
        ),
        (
            "MemorySwap",
            vec![
                json!(0),
                json!(-1),
                json!(134217728),
                json!(1),
                json!(-2),
                json!(i64::MIN),
            ],
        ),
        (
            "NanoCpus",
            vec![
                json!(500_000_000),
                json!(-1),
                json!(1),
                json!(i64::MAX),
                json!(i64::MIN),
            ],
        ),
        (
            "CpuShares",
            vec![
                json!(512),
                json!(1),
                json!(-5),
                json!(262_145),
                json!(i64::MAX),
            ],
        ),
        (
            "CpusetCpus",
            vec![
                json!("0-1"),
                json!("0,2"),
                json!("1-"),
                json!("a"),
                json!(""),
                json!(3),
            ],
        ),
        (
            "PidsLimit",
            vec![json!(100), json!(-1), json!(0), json!(-2), json!(null)],
        ),
        (
            "CapAdd",
            vec![
                json!(["NET_ADMIN"]),
                json!(["CAP_SYS_ADMIN"]),
                json!(["ALL"]),
                json!(["NOPE"]),
                json!([""]),
            ],
        ),
        (
            "CapDrop",
            vec![
                json!(["MKNOD"]),
                json!(["ALL"]),
                json!(["cap_chown"]),
                json!(["x"]),
            ],
        ),
        ("ReadonlyRootfs", vec![json!(true)]),
        (
            "SecurityOpt",
            vec![
                json!(["no-new-privileges"]),
                json!(["seccomp=unconfined"]),
                json!(["no-new-privileges:false"]),
                json!(["apparmor=x"]),
                json!(["label:disable"]),
            ],
        ),
        (
            "ExtraHosts",
            vec![
                json!(["db:127.0.0.2"]),
                json!(["host.docker.internal:host-gateway"]),
                json!(["nocolon"]),
                json!(["a:not-ip"]),
                json!([":"]),
            ],
        ),
        (
            "Dns",
            vec![
                json!(["127.0.0.53"]),
                json!(["x"]),
                json!([]),
                json!(["::1"]),
            ],
        ),
        (
            "Ulimits",
            vec![
                json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}]),
                json!([{"Name": "nofile", "Soft": 4096, "Hard": 1}]),
                json!([{"Name": "bogus", "Soft": 1, "Hard": 1}]),
                json!([{"Name": "nproc", "Soft": -1, "Hard": u64::MAX}]),
                json!([{}]),
            ],
        ),
        (
            "LogConfig",
            vec![
                json!({"Type": "", "Config": {}}),
                json!({"Type": "json-file", "Config": {"max-size": "1m"}}),
                json!({"Type": "syslog"}),
            ],
        ),
        (
            "ConsoleSize",
            vec![
                json!([0, 0]),
                json!([40, 120]),
                json!([u64::MAX, 1]),
                json!([1]),
            ],
        ),
        ("Privileged", vec![json!(true), json!(false), json!(1)]),
        ("Init", vec![json!(true), json!(null), json!("true")]),
        ("IpcMode", vec![json!(""), json!("private"), json!("host")]),
        ("PidMode", vec![json!(""), json!("host")]),
        ("UTSMode", vec![json!(""), json!("host")]),
        (
            "CgroupnsMode",
            vec![json!("private"), json!("host"), json!("x")],
        ),
        (
            "UsernsMode",
            vec![json!(""), json!("host"), json!("keep-id")],
        ),
        ("MemorySwappiness", vec![json!(null), json!(-1), json!(60)]),
        ("OomKillDisable", vec![json!(false), json!(true)]),
        (
            "Devices",
            vec![
                json!([]),
                json!([{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"}]),
            ],
        ),
        ("ShmSize", vec![json!(0), json!(67108864)]),
        ("VolumesFrom", vec![json!(null), json!(["other"])]),
        ("Links", vec![json!(null), json!(["db:db"])]),
        ("ContainerIDFile", vec![json!("")]),
    ];
    let hostile = rng.f64() * 0.25;
    let mut body = fill(rng, &config, 0.3, hostile);
    if rng.u8(..8) != 0 {
        body.insert(
            "Image".into(),
            one(rng, &[json!("busybox"), json!("nginx:1.25")]),
        );
    }
    let hc = fill(rng, &host, 0.2, hostile);
    match rng.u8(..6) {
        0 => {}
        1 => {
            body.insert(
                "HostConfig".into(),
                one(rng, &[json!(null), json!([]), json!("x")]),
            );
        }
        _ => {
            body.insert("HostConfig".into(), Value::Object(hc));
        }
    }
    if rng.bool() {
        let net = one(
            rng,
            &[
                json!("app_default"),
                json!("bridge"),
                json!("default"),
                json!("other"),
            ],
        );
        let ep = one(
            rng,
            &[
                json!({"Aliases": ["web", "www"]}),
                json!({"Aliases": ["web"], "IPAMConfig": {}, "Links": null, "MacAddress": ""}),
                json!({"IPAMConfig": {"IPv4Address": "172.20.0.5"}}),
                json!({"Aliases": "web"}),
                json!({"Aliases": [1]}),
                json!({"Links": ["db"]}),
                json!(null),
            ],
        );
        let mut eps = serde_json::Map::new();
        eps.insert(net.as_str().unwrap_or("x").to_string(), ep);
        body.insert("NetworkingConfig".into(), json!({"EndpointsConfig": eps}));
    }
    if rng.u8(..10) == 0 {
        body.insert(
            json::STRINGS[rng.usize(..json::STRINGS.len())].into(),
            json::value(rng, 2),
        );
    }
    let v = Value::Object(body);
    if rng.bool() {
        serde_json::to_vec(&v).unwrap_or_default()
    } else {
        serde_json::to_vec_pretty(&v).unwrap_or_default()
    }
}

const DOCKER_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"9223372036854775807",
    b"18446744073709551616",
    b"1e999",
    b"\\u0000",
    b"\"HostConfig\":",
    b"\"NetworkingConfig\":",
    b"\"EndpointsConfig\":",
    b"\"Image\":",
    b"\"Binds\":",
    b"\"Mounts\":",
    b"\"PortBindings\":",
    b"\"NetworkMode\":",
    b"\"Memory\":",
    b"\"RestartPolicy\":",
    b"container:",
    b"/tcp",
    b"/udp",
];

#[test]
fn docker_create() {
    let images = image_configs();
    fuzz(
        &Target {
            name: "docker_create",
            dict: DOCKER_DICT,
            json: true,
            generate: 0.5,
        },
        gen_docker_create,
        |data| docker_create_check(data, &images),
    );
}

/// Current HostConfigs an update is checked against.
fn update_hosts() -> [Value; 4] {
    [
        json!({}),
        json!({"Memory": 67108864, "MemorySwap": 134217728}),
        json!({"NanoCpus": 500_000_000, "AutoRemove": true}),
        json!({"CpuQuota": 50000, "CpuPeriod": 100000, "RestartPolicy": {"Name": "always"}}),
    ]
}

/// `data` as the body of each other endpoint whose body berthd checks: exec create, network
/// create, volume create and container update (each through the handler's own check).
fn docker_bodies_check(data: &[u8], hosts: &[Value]) -> Outcome {
    use berth_manager::docker::{exec, networks, server, update, volumes};
    let mut what = Vec::new();
    // exec create
    match server::parse_body::<exec::ExecConfig>(data).and_then(|c| c.check().map(|()| c)) {
        Ok(c) => {
            if c.cmd().is_empty() {
                return Err("an exec without a command passed".into());
            }
            what.push("exec ok".to_string());
        }
        Err(e) => what.push(api_error("exec", &e)?),
    }
    // network create
    let net = server::parse_body::<networks::CreateRequest>(data)
        .and_then(|r| r.check())
        .and_then(|(subnet, gateway)| {
            let id = format!("{:016x}", hash(data)).repeat(4);
            berth_manager::networks::plan_network(&id, &subnet, &gateway, &[])
                .map_err(ApiError::from)
        });
    match net {
        Ok(n) => {
            n.validate()
                .map_err(|e| format!("a planned network does not validate: {e}"))?;
            what.push("network ok".to_string());
        }
        Err(e) => what.push(api_error("network", &e)?),
    }
    // volume create
    match server::parse_body::<volumes::CreateRequest>(data).and_then(|r| r.check()) {
        Ok(()) => what.push("volume ok".to_string()),
        Err(e) => what.push(api_error("volume", &e)?),
    }
    // container update
    let host = &hosts[(hash(data) % hosts.len() as u64) as usize];
    match server::parse_body::<Value>(data).and_then(|b| update::plan(&b, host)) {
        Ok(p) => {
            let r = &p.resources;
            let mem = r.get("memory");
            let limit = mem.and_then(|m| m["limit"].as_i64());
            if limit.is_some_and(|m| m < 6 << 20) {
                return Err(format!("update to a memory limit of {limit:?}"));
            }
            if let Some(s) = mem.and_then(|m| m["swap"].as_i64()) {
                let lim = limit.or(host["Memory"].as_i64());
                if s != -1 && lim.is_none_or(|m| s < m) {
                    return Err(format!("update to swap {s} with memory {lim:?}"));
                }
            }
            let cpu = r.get("cpu");
            if let Some(s) = cpu.and_then(|c| c["shares"].as_i64()) {
                if !(2..=262_144).contains(&s) {
                    return Err(format!("update to cpu shares {s}"));
                }
            }
            if let Some(q) = cpu.and_then(|c| c["quota"].as_i64()) {
                if q == 0 || (0..1000).contains(&q) {
                    return Err(format!("update to cpu quota {q}"));
                }
            }
            if r.get("pids")
                .and_then(|p| p["limit"].as_i64())
                .is_some_and(|n| n == 0 || n < -1)
            {
                return Err(format!("update to pids {:?}", r.get("pids")));
            }
            what.push(format!("update ok {}", r.len()));
        }
        Err(e) => what.push(api_error("update", &e)?),
    }
    Ok(what.join("; "))
}

/// A body for one of exec create, network create, volume create or update, with the fields
/// the docker CLI and compose send, plausible or hostile.
fn gen_docker_bodies(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    if rng.u8(..4) == 0 {
        let mut d = corpus.pick(rng).to_vec();
        for _ in 0..1 + rng.usize(..3) {
            if let Some(m) = json::mutate(rng, &d) {
                d = m;
            }
        }
        return d;
    }
    let kind = rng.u8(..4);
    let fields: Vec<(&str, Vec<Value>)> = match kind {
        0 => vec![
            ("AttachStdin", vec![json!(true), json!(false)]),
            ("AttachStdout", vec![json!(true)]),
            ("AttachStderr", vec![json!(true)]),
            ("Tty", vec![json!(true), json!("no")]),
            (
                "DetachKeys",
                vec![
                    json!(""),
                    json!("ctrl-p,ctrl-q"),
                    json!("ctrl-"),
                    json!("ctrl-@,a"),
                    json!("x,,y"),
                    json!("ctrl-é"),
                ],
            ),
            (
                "Cmd",
                vec![
                    json!(["sh", "-c", "echo hi"]),
                    json!([]),
                    json!(null),
                    json!([""]),
                    json!("ls"),
                ],
            ),
            (
                "Env",
                vec![
                    json!(["A=1"]),
                    json!([""]),
                    json!(["=x"]),
                    json!(["A"]),
                    json!(null),
                ],
            ),
            ("Privileged", vec![json!(true)]),
            ("User", vec![json!("1000"), json!("")]),
            ("WorkingDir", vec![json!("/w"), json!("rel"), json!("")]),
        ],
        1 => vec![
            (
                "Name",
                vec![
                    json!("app_default"),
                    json!(""),
                    json!("-x"),
                    json!("a/b"),
                    json!("x".repeat(300)),
                    json!("bridge"),
                ],
            ),
            ("CheckDuplicate", vec![json!(true)]),
            (
                "Driver",
                vec![
                    json!("bridge"),
                    json!(""),
                    json!("overlay"),
                    json!("macvlan"),
                ],
            ),
            ("Scope", vec![json!("local"), json!("swarm")]),
            ("Internal", vec![json!(true)]),
            ("Attachable", vec![json!(true)]),
            ("Ingress", vec![json!(false), json!(true)]),
            ("EnableIPv6", vec![json!(false), json!(true)]),
            (
                "IPAM",
                vec![
                    json!({"Driver": "default", "Config": [{"Subnet": "172.30.0.0/16", "Gateway": "172.30.0.1"}]}),
                    json!({"Config": [{"Subnet": "10.1.2.0/24"}]}),
                    json!({"Config": [{"Subnet": "10.1.2.3/32"}]}),
                    json!({"Config": [{"Subnet": "10.1.2.0/31"}]}),
                    json!({"Config": [{"Subnet": "0.0.0.0/0"}]}),
                    json!({"Config": [{"Subnet": "10.0.0.0/8", "Gateway": "11.0.0.1"}]}),
                    json!({"Config": [{"Subnet": "10.0.0.0/8", "Gateway": "10.0.0.0"}]}),
                    json!({"Config": [{"Subnet": "10.0.0.0/8", "Gateway": "10.255.255.255"}]}),
                    json!({"Config": [{"Subnet": "fd00::/64"}]}),
                    json!({"Config": [{"Subnet": "10.0.0.0/33"}]}),
                    json!({"Config": [{"Subnet": "300.0.0.0/8"}]}),
                    json!({"Config": [{"Gateway": "10.0.0.1"}]}),
                    json!({"Config": [{"Subnet": "10.0.0.0/24", "IPRange": "10.0.0.0/25"}]}),
                    json!({"Config": [{}, {}]}),
                    json!({"Driver": "dhcp"}),
                    json!({"Options": {"a": "b"}}),
                ],
            ),
            (
                "Options",
                vec![json!({}), json!({"com.docker.network.bridge.name": "br0"})],
            ),
            (
                "Labels",
                vec![
                    json!({"com.docker.compose.network": "default"}),
                    json!({"a": 1}),
                ],
            ),
            ("ConfigFrom", vec![json!(null), json!({"Network": "x"})]),
        ],
        2 => vec![
            (
                "Name",
                vec![
                    json!("data"),
                    json!(""),
                    json!("a/b"),
                    json!(".."),
                    json!("x".repeat(300)),
                ],
            ),
            ("Driver", vec![json!("local"), json!(""), json!("nfs")]),
            (
                "DriverOpts",
                vec![
                    json!({}),
                    json!({"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}),
                    json!({"a": 1}),
                ],
            ),
            ("Labels", vec![json!({"com.docker.compose.volume": "data"})]),
            ("ClusterVolumeSpec", vec![json!(null), json!({})]),
        ],
        _ => vec![
            (
                "Memory",
                vec![
                    json!(67108864),
                    json!(1),
                    json!(-1),
                    json!(i64::MAX),
                    json!(0),
                ],
            ),
            (
                "MemorySwap",
                vec![
                    json!(0),
                    json!(-1),
                    json!(134217728),
                    json!(-2),
                    json!(1),
                    json!(i64::MIN),
                ],
            ),
            (
                "MemoryReservation",
                vec![json!(33554432), json!(-1), json!(i64::MAX)],
            ),
            (
                "NanoCpus",
                vec![json!(500_000_000), json!(-1), json!(i64::MAX), json!(1)],
            ),
            ("CpuShares", vec![json!(512), json!(1), json!(-1)]),
            (
                "CpuPeriod",
                vec![json!(100000), json!(999), json!(i64::MAX)],
            ),
            (
                "CpuQuota",
                vec![json!(50000), json!(-1), json!(999), json!(i64::MIN)],
            ),
            ("CpusetCpus", vec![json!("0-1"), json!("x"), json!(1)]),
            ("CpusetMems", vec![json!("0"), json!("-")]),
            (
                "PidsLimit",
                vec![json!(100), json!(0), json!(-1), json!(-2)],
            ),
            (
                "RestartPolicy",
                vec![
                    json!({"Name": "on-failure", "MaximumRetryCount": 3}),
                    json!({"Name": "always", "MaximumRetryCount": 1}),
                    json!({"Name": "no"}),
                    json!({"Name": "x"}),
                    json!({"MaximumRetryCount": -1}),
                ],
            ),
            ("BlkioWeight", vec![json!(0), json!(500)]),
            ("KernelMemory", vec![json!(0), json!(1)]),
        ],
    };
    let hostile = rng.f64() * 0.5;
    let mut m = fill(rng, &fields, 0.4, hostile);
    // What exec and network create need, nearly always there.
    if kind < 2 && rng.u8(..10) != 0 {
        let (k, vals) = &fields[if kind == 0 { 5 } else { 0 }];
        m.entry(k.to_string()).or_insert_with(|| vals[0].clone());
    }
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

#[test]
fn docker_bodies() {
    let hosts = update_hosts();
    fuzz(
        &Target {
            name: "docker_bodies",
            dict: DOCKER_DICT,
            json: true,
            generate: 0.5,
        },
        gen_docker_bodies,
        |data| docker_bodies_check(data, &hosts),
    );
}
