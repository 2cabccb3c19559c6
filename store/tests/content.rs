//! Content store: writes, resume, verification, locking, namespaces, labels.

mod common;

use berth_store::digest::Digest;
use berth_store::metadata::Labels;
use berth_store::{Ctx, ErrorKind, SnapshotterChoice};
use common::open_store;

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// A crash between a commit's move of the data into the blobs and its removal of the ingest
/// leaves an ingest without data: the next writer of that ref starts again instead of
/// failing until the ingest expires (found by hack/torture.sh: pulls failed after a kill).
#[test]
fn an_ingest_whose_data_is_gone_is_written_again() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let ctx = Ctx::new("default");
    let blob = data(50_000);
    let d = Digest::of(&blob);
    {
        let mut w = s.content_writer(&ctx, "ref-crash", None, None).unwrap();
        w.write(&blob[..10_000]).unwrap();
    }
    let ingests = s.content_store().root().join("ingest");
    let dirs: Vec<_> = std::fs::read_dir(&ingests)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    std::fs::remove_file(dirs[0].join("data")).unwrap();
    let mut w = s.content_writer(&ctx, "ref-crash", None, None).unwrap();
    assert_eq!(w.offset(), 0);
    w.write(&blob).unwrap();
    assert_eq!(
        w.commit(blob.len() as u64, Some(&d), Labels::new())
            .unwrap(),
        d
    );
    assert_eq!(s.content_read_all(&ctx, &d, 1 << 20).unwrap(), blob);
}

/// A crash in the middle of removing an ingest left its dir without the `ref` file, and every
/// later pull of that blob failed (hack/torture.sh): the writer starts such an ingest again.
#[test]
fn an_ingest_without_its_ref_file_is_started_again() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let ctx = Ctx::new("default");
    let blob = data(20_000);
    let d = Digest::of(&blob);
    {
        let mut w = s.content_writer(&ctx, "ref-half", None, None).unwrap();
        w.write(&blob[..5_000]).unwrap();
    }
    let ingests = s.content_store().root().join("ingest");
    let dir = std::fs::read_dir(&ingests)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    std::fs::remove_file(dir.join("ref")).unwrap();
    let mut w = s.content_writer(&ctx, "ref-half", None, None).unwrap();
    assert_eq!(w.offset(), 0);
    w.write(&blob).unwrap();
    assert_eq!(
        w.commit(blob.len() as u64, Some(&d), Labels::new())
            .unwrap(),
        d
    );
    // Nothing of the ingest is left, not even under a temporary name.
    assert_eq!(std::fs::read_dir(&ingests).unwrap().count(), 0);
}

#[test]
fn write_resume_commit_and_read_back() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let ctx = Ctx::new("default");
    let blob = data(300_000);
    let d = Digest::of(&blob);
    {
        let mut w = s
            .content_writer(&ctx, "ref-1", Some(blob.len() as u64), Some(d.clone()))
            .unwrap();
        w.write(&blob[..100_000]).unwrap();
        // No half blob is visible while writing.
        assert!(!s.content_store().blob_path(&d).exists());
        assert!(s.content_info(&ctx, &d).unwrap_err().is_not_found());
    }
    let st = s.content_status(&ctx, "ref-1").unwrap();
    assert_eq!(
        (st.offset, st.total, st.expected.clone()),
        (100_000, 300_000, Some(d.clone()))
    );
    assert_eq!(s.content_statuses(&ctx, &[]).unwrap().len(), 1);
    assert!(s
        .content_statuses(&Ctx::new("other"), &[])
        .unwrap()
        .is_empty());

    let mut w = s.content_writer(&ctx, "ref-1", None, None).unwrap();
    assert_eq!(w.offset(), 100_000, "resumed at what was written");
    w.write(&blob[100_000..]).unwrap();
    let mut labels = Labels::new();
    labels.insert("x".into(), "y".into());
    assert_eq!(w.commit(blob.len() as u64, Some(&d), labels).unwrap(), d);

    let info = s.content_info(&ctx, &d).unwrap();
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.labels.get("x").map(String::as_str), Some("y"));
    let r = s.content_reader(&ctx, &d).unwrap();
    let mut buf = vec![0u8; 10];
    assert_eq!(r.read_at(&mut buf, 123_456).unwrap(), 10);
    assert_eq!(&buf[..], &blob[123_456..123_466]);
    assert_eq!(s.content_read_all(&ctx, &d, 1 << 20).unwrap(), blob);
    assert!(
        s.content_status(&ctx, "ref-1").unwrap_err().is_not_found(),
        "ingest gone after commit"
    );
    // Committing the same digest again in the namespace: AlreadyExists at open.
    let e = s
        .content_writer(&ctx, "ref-2", None, Some(d.clone()))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
}

#[test]
fn size_and_digest_mismatch_fail_and_keep_the_ingest() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let ctx = Ctx::new("default");
    let mut w = s.content_writer(&ctx, "bad", None, None).unwrap();
    w.write(b"hello").unwrap();
    let e = w.commit(6, None, Labels::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(
        e.to_string()
            .contains("unexpected commit size 5, expected 6"),
        "{e}"
    );
    assert_eq!(s.content_status(&ctx, "bad").unwrap().offset, 5);

    let w = s.content_writer(&ctx, "bad", None, None).unwrap();
    let wrong = Digest::of(b"world");
    let e = w.commit(5, Some(&wrong), Labels::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains(&format!("expected {wrong}")), "{e}");
    assert!(!s.content_store().blob_path(&Digest::of(b"hello")).exists());
    assert!(s.content_store().list().unwrap().is_empty());

    s.content_abort(&ctx, "bad").unwrap();
    assert!(s.content_status(&ctx, "bad").unwrap_err().is_not_found());
    assert!(s.content_abort(&ctx, "bad").unwrap_err().is_not_found());
}

#[test]
fn a_locked_ref_refuses_a_second_writer() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let ctx = Ctx::new("default");
    let w = s.content_writer(&ctx, "busy", None, None).unwrap();
    let e = s.content_writer(&ctx, "busy", None, None).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("locked"), "{e}");
    assert_eq!(
        s.content_abort(&ctx, "busy").unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    drop(w);
    s.content_writer(&ctx, "busy", None, None).unwrap();
}

#[test]
fn truncate_rehashes() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    let mut w = t.store.content_writer(&ctx, "t", None, None).unwrap();
    w.write(b"garbage-and-more").unwrap();
    w.truncate(0).unwrap();
    w.write(b"good").unwrap();
    assert_eq!(
        w.commit(4, Some(&Digest::of(b"good")), Labels::new())
            .unwrap(),
        Digest::of(b"good")
    );
    assert!(w_err_truncate_beyond(&t.store, &ctx));
}

fn w_err_truncate_beyond(s: &berth_store::Store, ctx: &Ctx) -> bool {
    let mut w = s.content_writer(ctx, "t2", None, None).unwrap();
    w.write(b"ab").unwrap();
    w.truncate(3).unwrap_err().kind() == ErrorKind::InvalidArgument
}

#[test]
fn blobs_are_per_namespace_and_the_file_goes_with_the_last_one() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let (a, b) = (Ctx::new("ns-a"), Ctx::new("ns-b"));
    let d = Digest::of(b"shared");
    for ctx in [&a, &b] {
        let mut w = s.content_writer(ctx, "r", None, None).unwrap();
        w.write(b"shared").unwrap();
        w.commit(6, Some(&d), Labels::new()).unwrap();
    }
    assert_eq!(s.content_list(&a, &[]).unwrap().len(), 1);
    s.content_delete(&a, &d).unwrap();
    assert!(s.content_info(&a, &d).unwrap_err().is_not_found());
    assert!(
        s.content_store().blob_path(&d).exists(),
        "ns-b still has it"
    );
    assert!(s.content_reader(&a, &d).err().unwrap().is_not_found());
    s.content_delete(&b, &d).unwrap();
    assert!(!s.content_store().blob_path(&d).exists());
    assert!(s.content_delete(&b, &d).unwrap_err().is_not_found());
}

#[test]
fn labels_update_with_fieldpaths_and_filters() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let ctx = Ctx::new("default");
    let mut digests = Vec::new();
    for i in 0..3u8 {
        let mut w = s
            .content_writer(&ctx, &format!("r{i}"), None, None)
            .unwrap();
        w.write(&[i; 10]).unwrap();
        let mut l = Labels::new();
        l.insert("keep".into(), "1".into());
        l.insert("idx".into(), i.to_string());
        digests.push(w.commit(0, None, l).unwrap());
    }
    let mut info = s.content_info(&ctx, &digests[0]).unwrap();
    info.labels.clear();
    info.labels.insert("new".into(), "v".into());
    let got = s
        .content_update(&ctx, &info, &["labels.new".into(), "labels.idx".into()])
        .unwrap();
    let keys: Vec<&str> = got.labels.keys().map(String::as_str).collect();
    assert_eq!(keys, ["keep", "new"], "idx removed, new set, keep kept");
    let e = s.content_update(&ctx, &info, &["size".into()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let found = s.content_list(&ctx, &["labels.idx==2".into()]).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].digest, digests[2]);
    let found = s
        .content_list(&ctx, &[format!("digest=={}", digests[1])])
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        s.content_list(&ctx, &["labels.new".into()]).unwrap().len(),
        1
    );
}
