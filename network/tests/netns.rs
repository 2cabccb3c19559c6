//! Persistent network namespaces, for real (needs root).

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_network::netns::{self, Netns, NetnsError};

/// Releases the test's netns directory even when an assertion fails.
struct DirGuard<'a>(&'a Path);

impl Drop for DirGuard<'_> {
    fn drop(&mut self) {
        let _ = netns::remove_path(&self.0.join("c1"));
        let _ = netns::release_dir(self.0);
    }
}

fn ino(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn create_run_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("netns");
    let _guard = DirGuard(&dir);
    let own = ino("/proc/self/ns/net");

    let ns = Netns::create(&dir, "c1").unwrap();
    assert_eq!(ns.path(), dir.join("c1"));
    let theirs = std::fs::metadata(ns.path()).unwrap().ino();
    assert_ne!(theirs, own, "the file holds a different namespace");
    // Nothing of ours moved.
    assert_eq!(ino("/proc/self/ns/net"), own);
    assert!(matches!(
        Netns::create(&dir, "c1"),
        Err(NetnsError::Exists(_))
    ));

    // Inside: the namespace is the file's, and lo is up (a loopback connection works).
    let (inside, talked) = ns
        .run(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let ok = TcpStream::connect(("127.0.0.1", port)).is_ok();
            (ino("/proc/thread-self/ns/net"), ok)
        })
        .unwrap();
    assert_eq!(inside, theirs);
    assert!(talked, "lo is up in the new namespace");
    assert_eq!(ino("/proc/self/ns/net"), own);

    ns.remove().unwrap();
    assert!(!ns.path().exists());
    ns.remove().unwrap();
    assert!(ns.run(|| ()).is_err());
}
