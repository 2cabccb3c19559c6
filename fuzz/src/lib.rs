//! A small fuzzing engine that runs on the stable toolchain, inside `cargo test`.
//!
//! Each target is a test that calls [`run`] with a generator and a check. The engine:
//!
//! 1. replays every file of `fuzz/corpus/<target>/` (the seeds, and every failure ever found,
//!    kept as regression cases);
//! 2. then, until the time budget is spent, makes inputs — byte-level mutations of corpus
//!    entries (bit flips, interesting values, dictionary tokens, splices, truncations),
//!    JSON-aware mutations for JSON targets, and the target's own structure-aware generator —
//!    and runs the check on each;
//! 3. keeps, in memory, every input whose outcome (the check's label for what happened, e.g.
//!    the kind of error) is new, as a cheap stand-in for coverage feedback;
//! 4. treats as a failure: a panic, a check that says a property broke, a peak RSS above the
//!    bound, and (through a watchdog thread) an input that runs longer than the per-input
//!    timeout. Each failing input is written to the corpus directory as `crash-<hash>` (or
//!    `hang-<hash>`) and named in the output, so it is replayed from then on.
//!
//! Knobs (environment): `BERTH_FUZZ_SECONDS` (budget per target, default 4),
//! `BERTH_FUZZ_SEED` (to replay a run), `BERTH_FUZZ_TIMEOUT` (seconds per input, default 30),
//! `BERTH_FUZZ_RSS_MB` (peak resident memory bound, default 384), `BERTH_FUZZ_SAVE=0` (do not
//! write failing inputs to the corpus).
//!
//! Targets run one at a time (a process-wide lock), so the memory bound and the execution
//! counts belong to the target that ran.

pub mod json;
pub mod mutate;
pub mod tars;

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

pub use fastrand::Rng;

/// What a check says about one input.
pub type Outcome = Result<String, String>;

/// Per-target settings.
pub struct Target<'a> {
    /// The target's name: its corpus is `fuzz/corpus/<name>/`.
    pub name: &'a str,
    /// Tokens the byte mutator inserts (JSON punctuation, path pieces...).
    pub dict: &'a [&'a [u8]],
    /// Whether inputs are JSON documents (enables the JSON-aware mutator).
    pub json: bool,
    /// Chance (0..=1) that an input comes from the structure-aware generator rather than
    /// from mutating the corpus.
    pub generate: f64,
}

/// What one target's run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: String,
    pub execs: u64,
    pub failures: Vec<String>,
    pub corpus: usize,
    pub outcomes: usize,
    /// Replay and fuzzing.
    pub seconds: f64,
    pub seed: u64,
}

/// The corpus a generator may draw from (seeds, regressions, and inputs kept this run).
pub struct Corpus {
    pub inputs: Vec<Vec<u8>>,
}

impl Corpus {
    /// A random corpus entry (empty if the corpus is).
    pub fn pick<'a>(&'a self, rng: &mut Rng) -> &'a [u8] {
        if self.inputs.is_empty() {
            &[]
        } else {
            &self.inputs[rng.usize(..self.inputs.len())]
        }
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The corpus directory of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every file of the corpus directory, sorted by name (a missing directory is empty).
pub fn load_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                std::fs::read(e.path()).ok().map(|d| (name, d))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// A stable 64-bit FNV-1a hash, to name saved inputs.
pub fn hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Saves a failing input as `<kind>-<hash>` in the target's corpus; returns the path.
fn save(target: &str, kind: &str, data: &[u8]) -> Option<PathBuf> {
    if std::env::var("BERTH_FUZZ_SAVE").is_ok_and(|v| v == "0") {
        return None;
    }
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).ok()?;
    let p = dir.join(format!("{kind}-{:016x}", hash(data)));
    std::fs::write(&p, data).ok()?;
    Some(p)
}

/// The input shown in a failure message: escaped, cut at 160 bytes.
pub fn show(data: &[u8]) -> String {
    let cut = &data[..data.len().min(160)];
    let mut s = String::new();
    for c in cut.escape_ascii() {
        s.push(c as char);
    }
    if data.len() > cut.len() {
        s.push_str(&format!("... ({} bytes)", data.len()));
    }
    s
}

/// Kilobytes of a `/proc/self/status` field.
fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resets the process's peak RSS (VmHWM) to its current RSS. False where the kernel does not
/// support it (then the bound is checked on the RSS after each input only).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

static LOCK: Mutex<()> = Mutex::new(());
static HOOK: Once = Once::new();

thread_local! {
    /// The message of the last panic caught on this thread while fuzzing.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that records the message and location of panics raised on a
/// fuzzing thread instead of printing each one; other panics are printed as usual.
fn install_hook() {
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    s.to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "(non-string panic payload)".to_string()
                };
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Writes a line to the real stderr (not the test harness's captured output), so the counts
/// show in every `cargo test` log.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Runs one target: replays its corpus, then fuzzes for the budget. Panics (failing the test)
/// if any input failed, after printing each one and where it was saved.
pub fn run(
    t: &Target<'_>,
    mut generate: impl FnMut(&mut Rng, &Corpus) -> Vec<u8>,
    mut check: impl FnMut(&[u8]) -> Outcome,
) -> Report {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    install_hook();
    let budget = Duration::from_secs_f64(env_f64("BERTH_FUZZ_SECONDS", 4.0).max(0.0));
    let timeout = Duration::from_secs_f64(env_f64("BERTH_FUZZ_TIMEOUT", 30.0).max(1.0));
    let rss_bound_kb = (env_f64("BERTH_FUZZ_RSS_MB", 384.0) * 1024.0) as u64;
    let seed = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ hash(t.name.as_bytes())
        });
    let mut rng = Rng::with_seed(seed);
    let peak_ok = reset_peak_rss();

    // Watchdog: an input running past the timeout is saved as a hang, and the process ends
    // (an in-process run cannot be interrupted).
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let dog = {
        let (current, started, done) = (current.clone(), started.clone(), done.clone());
        let name = t.name.to_string();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let s = started.load(Ordering::Relaxed);
                if s != 0 && epoch.elapsed().as_millis() as u64 - s > timeout.as_millis() as u64 {
                    let data = current.lock().map(|d| d.clone()).unwrap_or_default();
                    let at = save(&name, "hang", &data);
                    say(&format!(
                        "fuzz {name}: an input ran longer than {timeout:?} (saved to {}): {}",
                        at.map(|p| p.display().to_string()).unwrap_or_default(),
                        show(&data)
                    ));
                    std::process::exit(101);
                }
            }
        })
    };

    let mut failures: Vec<String> = Vec::new();
    let mut execs: u64 = 0;
    let mut outcomes: HashSet<String> = HashSet::new();
    let mut exec_one = |data: &[u8], replay: Option<&str>, failures: &mut Vec<String>| -> bool {
        if let Ok(mut c) = current.lock() {
            c.clear();
            c.extend_from_slice(data);
        }
        if peak_ok {
            reset_peak_rss();
        }
        started.store(
            (epoch.elapsed().as_millis() as u64).max(1),
            Ordering::Relaxed,
        );
        QUIET.with(|q| q.set(true));
        let res = panic::catch_unwind(AssertUnwindSafe(|| check(data)));
        QUIET.with(|q| q.set(false));
        started.store(0, Ordering::Relaxed);
        execs += 1;
        let peak = if peak_ok {
            status_kb("VmHWM:")
        } else {
            status_kb("VmRSS:")
        }
        .unwrap_or(0);
        let problem = match res {
            Ok(Ok(label)) => {
                if peak > rss_bound_kb {
                    Some(format!(
                        "peak RSS {} MiB is over the bound of {} MiB",
                        peak / 1024,
                        rss_bound_kb / 1024
                    ))
                } else {
                    return outcomes.insert(label);
                }
            }
            Ok(Err(why)) => Some(why),
            Err(_) => Some(format!(
                "panic: {}",
                PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| "(no message)".into())
            )),
        };
        let why = problem.unwrap_or_default();
        let at = match replay {
            Some(file) => format!("corpus file {file}"),
            None => save(t.name, "crash", data)
                .map(|p| format!("saved to {}", p.display()))
                .unwrap_or_else(|| "not saved".into()),
        };
        let msg = format!("{why} ({at}); input: {}", show(data));
        say(&format!("fuzz {}: FAILURE: {msg}", t.name));
        failures.push(msg);
        false
    };

    // 1. Replay the corpus.
    let began = Instant::now();
    let files = load_corpus(t.name);
    let mut corpus = Corpus {
        inputs: Vec::with_capacity(files.len()),
    };
    for (name, data) in &files {
        exec_one(data, Some(name), &mut failures);
        corpus.inputs.push(data.clone());
    }
    let seeds = corpus.inputs.len();

    // 2. Fuzz for the budget (stopping early after a handful of failures).
    let start = Instant::now();
    while start.elapsed() < budget && failures.len() < 8 {
        let input = if corpus.inputs.is_empty() || rng.f64() < t.generate {
            generate(&mut rng, &corpus)
        } else {
            let base = corpus.pick(&mut rng).to_vec();
            if t.json && rng.bool() {
                json::mutate(&mut rng, &base)
                    .unwrap_or_else(|| mutate::bytes(&mut rng, &base, t.dict, &corpus))
            } else {
                mutate::bytes(&mut rng, &base, t.dict, &corpus)
            }
        };
        if exec_one(&input, None, &mut failures) && corpus.inputs.len() < seeds + 2000 {
            corpus.inputs.push(input);
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = dog.join();

    let report = Report {
        target: t.name.to_string(),
        execs,
        failures,
        corpus: corpus.inputs.len(),
        outcomes: outcomes.len(),
        seconds: began.elapsed().as_secs_f64(),
        seed,
    };
    say(&format!(
        "fuzz {}: {} execs in {:.1} s, {} failures, {} corpus files replayed, {} distinct outcomes, seed {}",
        report.target,
        report.execs,
        report.seconds,
        report.failures.len(),
        seeds,
        report.outcomes,
        report.seed
    ));
    report
}

/// Runs a target and fails the calling test if any input failed.
pub fn fuzz(
    t: &Target<'_>,
    generate: impl FnMut(&mut Rng, &Corpus) -> Vec<u8>,
    check: impl FnMut(&[u8]) -> Outcome,
) {
    let r = run(t, generate, check);
    assert!(
        r.failures.is_empty(),
        "fuzz target {} (seed {}): {} failing input(s):\n{}",
        r.target,
        r.seed,
        r.failures.len(),
        r.failures.join("\n")
    );
}

/// A short label for an error: its text with digits and quoted parts blanked, cut at 60
/// characters — so "the same error with another value" is one outcome.
pub fn label(e: &dyn std::fmt::Display) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in e.to_string().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                out.push('"');
            }
            _ if quoted => {}
            c if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#')
                }
            }
            c => out.push(c),
        }
        if out.len() >= 60 {
            break;
        }
    }
    out
}
