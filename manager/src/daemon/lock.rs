//! The root's lock: berthd holds an exclusive `flock` on `<root>/berthd.lock` for as long as
//! it runs, so a second berthd, or `berthd check` (which must not repair a store a running
//! daemon is changing), on the same root is refused with a clear error. The lock goes with
//! the process (a SIGKILLed berthd leaves nothing to clean up); the fd is close-on-exec, so
//! supervisors and runtimes never hold it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name under the root.
pub const LOCK_FILE: &str = "berthd.lock";

/// A held lock on a root; released on drop.
pub struct RootLock {
    _lock: Flock<std::fs::File>,
    path: PathBuf,
}

impl RootLock {
    /// Takes the lock of `root` (which must exist) without waiting; `what` says who asks,
    /// for the error ("berthd", "berthd check").
    pub fn take(root: &Path, what: &str) -> Result<RootLock> {
        let path = root.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(RootLock { _lock: lock, path }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => anyhow::bail!(
                "a berthd is running on {} (it holds {}); stop it first{}",
                root.display(),
                path.display(),
                if what == "berthd check" {
                    ", or run `berth check` against it"
                } else {
                    ""
                }
            ),
            Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let first = RootLock::take(t.path(), "berthd").unwrap();
        let err = RootLock::take(t.path(), "berthd check").err().unwrap();
        let msg = format!("{err:#}");
        assert!(msg.contains("a berthd is running on"), "{msg}");
        assert!(msg.contains("berth check"), "{msg}");
        assert_eq!(first.path(), t.path().join(LOCK_FILE));
        drop(first);
        RootLock::take(t.path(), "berthd check").unwrap();
    }
}
