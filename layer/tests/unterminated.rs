//! Layers whose tar ends without the end-of-archive blocks (umoci 0.4's `insert` writes them,
//! Go's archive/tar and containerd accept them): applied completely, with a warning, when the
//! stream ends right after an entry; refused, naming the entry and the offset, when it ends
//! inside a header or inside an entry's data.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use common::*;
use tar::EntryType;

/// Content of the last file: 9 bytes, so 503 bytes of zero padding follow it in the tar.
const LAST: &[u8] = b"inserted\n";

/// A layer (with its end blocks) whose last entry is a 9-byte file, and where that file's
/// data starts.
fn layer() -> (Vec<u8>, usize) {
    let mut l = Layer::new();
    l.dir("etc/", M::mode(0o755))
        .file("etc/big", &vec![b'b'; 1500], M::mode(0o600))
        .symlink("etc/link", "big")
        .dir("ins/", M::mode(0o755))
        .file("ins/f", LAST, M::default());
    let tar = l.finish();
    let data_start = tar.len() - 1024 - 512;
    assert_eq!(&tar[data_start..data_start + LAST.len()], LAST);
    (tar, data_start)
}

/// `tar` without its two trailing zero blocks.
fn strip_end_blocks(mut tar: Vec<u8>) -> Vec<u8> {
    let n = tar.len() - 1024;
    assert!(tar[n..].iter().all(|&b| b == 0), "no end blocks to strip");
    tar.truncate(n);
    tar
}

fn check_tree(root: &std::path::Path) {
    assert_eq!(fs::read(root.join("etc/big")).unwrap(), vec![b'b'; 1500]);
    assert_eq!(
        fs::metadata(root.join("etc/big")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        fs::read_link(root.join("etc/link")).unwrap().to_str(),
        Some("big")
    );
    assert_eq!(fs::read(root.join("ins/f")).unwrap(), LAST);
}

/// A `MakeWriter` collecting what a tracing subscriber formats.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Apply `data` into a fresh dir, returning the result, the dir and the warnings logged.
fn apply_logged(
    data: Vec<u8>,
    fallback: bool,
) -> (
    Result<berth_layer::ApplyStats, berth_layer::LayerError>,
    tempfile::TempDir,
    String,
) {
    let logs = Logs::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let t = tempfile::tempdir().unwrap();
    let res =
        tracing::subscriber::with_default(sub, || apply(data, t.path(), &delete_opts(), fallback));
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    (res, t, text)
}

#[test]
fn a_complete_tar_applies_without_a_warning() {
    let (tar, _) = layer();
    let (res, t, logs) = apply_logged(tar, false);
    res.unwrap();
    check_tree(t.path());
    assert!(logs.is_empty(), "{logs}");
}

#[test]
fn a_single_end_block_is_enough() {
    let (mut tar, _) = layer();
    tar.truncate(tar.len() - 512);
    let (res, t, logs) = apply_logged(tar, false);
    res.unwrap();
    check_tree(t.path());
    assert!(logs.is_empty(), "{logs}");
}

#[test]
fn without_end_blocks_plain_gzip_and_zstd_apply_completely_with_a_warning() {
    let (tar, _) = layer();
    let tar = strip_end_blocks(tar);
    for (what, data) in [
        ("plain", tar.clone()),
        ("gzip", gzip(&tar)),
        ("zstd", zstd(&tar)),
    ] {
        for fallback in [false, true] {
            let (res, t, logs) = apply_logged(data.clone(), fallback);
            let stats = res.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(stats.entries, 5, "{what}");
            assert_eq!(stats.bytes, 1500 + LAST.len() as u64, "{what}");
            check_tree(t.path());
            assert!(
                logs.contains("WARN") && logs.contains("without end-of-archive blocks"),
                "{what}: {logs:?}"
            );
            assert!(
                logs.contains("ins/f"),
                "{what}: the warning names the last entry"
            );
        }
    }
}

#[test]
fn without_the_last_entrys_padding_too_it_applies() {
    // umoci insert: the stream ends right after the last file's 9 bytes (no padding, no end
    // blocks); also with only part of the padding.
    let (tar, data_start) = layer();
    for keep in [0, 1, 300, 502] {
        let cut = data_start + LAST.len() + keep;
        let data = tar[..cut].to_vec();
        for (what, data) in [("plain", data.clone()), ("gzip", gzip(&data))] {
            let (res, t, logs) = apply_logged(data, false);
            res.unwrap_or_else(|e| panic!("{keep} bytes of padding, {what}: {e}"));
            check_tree(t.path());
            assert!(
                logs.contains("the last entry's padding"),
                "{keep}, {what}: {logs:?}"
            );
        }
    }
}

#[test]
fn ending_after_an_entry_without_data_applies() {
    // The last entries are a directory and a symlink: nothing to pad.
    for last in ["dir", "symlink"] {
        let mut l = Layer::new();
        l.file("a", b"a", M::default());
        if last == "dir" {
            l.dir("d/", M::mode(0o711));
        } else {
            l.symlink("s", "a");
        }
        let tar = strip_end_blocks(l.finish());
        let (res, t, logs) = apply_logged(tar, false);
        res.unwrap_or_else(|e| panic!("{last}: {e}"));
        assert_eq!(fs::read(t.path().join("a")).unwrap(), b"a");
        if last == "dir" {
            assert_eq!(
                fs::metadata(t.path().join("d")).unwrap().mode() & 0o7777,
                0o711
            );
        } else {
            assert_eq!(
                fs::read_link(t.path().join("s")).unwrap().to_str(),
                Some("a")
            );
        }
        assert!(logs.contains("without end-of-archive blocks"), "{logs}");
    }
}

/// Apply `data` and return the error's message, checking it is a `Corrupt` error.
fn refused(what: &str, data: Vec<u8>) -> String {
    let t = tempfile::tempdir().unwrap();
    let err = apply(data, t.path(), &delete_opts(), false).expect_err(what);
    assert!(
        matches!(err, berth_layer::LayerError::Corrupt { .. }),
        "{what}: expected Corrupt, got {err}"
    );
    err.to_string()
}

#[test]
fn ending_inside_a_files_data_is_refused_with_the_entry_and_offset() {
    let (tar, data_start) = layer();
    // One byte short of the last file's data, and in the middle of an earlier file's.
    let cut = data_start + LAST.len() - 1;
    for (what, data) in [
        ("plain", tar[..cut].to_vec()),
        ("gzip", gzip(&tar[..cut])),
        ("zstd", zstd(&tar[..cut])),
    ] {
        let msg = refused(what, data);
        assert!(msg.contains("\"ins/f\""), "{what}: {msg}");
        assert!(msg.contains(&format!("byte {cut}")), "{what}: {msg}");
        assert!(msg.contains("8 of its 9 bytes"), "{what}: {msg}");
    }
    // etc/big's data starts after the "etc/" header and its own.
    let msg = refused("mid big", tar[..1024 + 1000].to_vec());
    assert!(msg.contains("\"etc/big\""), "{msg}");
    assert!(msg.contains("byte 2024"), "{msg}");
}

#[test]
fn ending_inside_a_header_is_refused_with_the_entry_and_offset() {
    let (tar, data_start) = layer();
    let header = data_start - 512; // ins/f's header; ins/ ends right before it
    for into in [1, 100, 511] {
        let cut = header + into;
        let msg = refused("mid header", tar[..cut].to_vec());
        assert!(
            msg.contains(&format!(
                "stream ends at byte {cut}, inside the header after \"ins/\""
            )),
            "{msg}"
        );
    }
    // Inside the very first header.
    let msg = refused("first header", tar[..100].to_vec());
    assert!(
        msg.contains("stream ends at byte 100, inside the first entry header"),
        "{msg}"
    );
    // After a PAX header whose entry never comes.
    let mut l = Layer::new();
    l.file("a", b"a", M::default()).pax_path("named-by-pax");
    let tar = strip_end_blocks(l.finish());
    let msg = refused("pax without its entry", tar);
    assert!(msg.contains("inside the header after \"a\""), "{msg}");
}

#[test]
fn ending_inside_data_the_apply_skips_is_refused() {
    // A whiteout carrying (meaningless) data: the apply does not read it, the parser skips it.
    let mut l = Layer::new();
    l.file("a", b"a", M::default())
        .raw(".wh.gone", EntryType::Regular, "", &[b'x'; 700]);
    let tar = l.finish();
    let data_start = 1024 + 512;
    let cut = data_start + 600;
    let msg = refused("mid whiteout data", tar[..cut].to_vec());
    assert!(
        msg.contains(&format!(
            "stream ends at byte {cut}, inside the data of \".wh.gone\" (which ends at byte {})",
            data_start + 700
        )),
        "{msg}"
    );
    // Ending in its padding instead is an end.
    let (res, _t, _) = apply_logged(tar[..data_start + 800].to_vec(), false);
    res.unwrap();
}
