//! FIFOs through which a task's (or an exec'd process's) stdout and stderr reach this
//! terminal: ctr's way, since berthd and its shims open the paths the client names.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A private directory holding `stdout` and `stderr` FIFOs, opened for reading.
pub struct OutputFifos {
    dir: PathBuf,
    out: std::fs::File,
    err: std::fs::File,
}

/// Creates a FIFO and opens its read side without blocking.
fn fifo(path: &Path) -> Result<std::fs::File> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", path.display()))?;
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn set_blocking(f: &std::fs::File) {
    // SAFETY: fcntl on an fd owned by `f`.
    unsafe {
        let fd = f.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
}

impl OutputFifos {
    /// Makes the directory and both FIFOs.
    pub fn new() -> Result<OutputFifos> {
        let dir = std::env::temp_dir().join(format!(
            "berth-io-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let opened = fifo(&dir.join("stdout")).and_then(|o| Ok((o, fifo(&dir.join("stderr"))?)));
        match opened {
            Ok((out, err)) => Ok(OutputFifos { dir, out, err }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The stdout FIFO's path, for the request.
    pub fn stdout(&self) -> String {
        self.dir.join("stdout").display().to_string()
    }

    /// The stderr FIFO's path, for the request.
    pub fn stderr(&self) -> String {
        self.dir.join("stderr").display().to_string()
    }

    /// Starts copying both FIFOs to this process's stdout and stderr until their writers close.
    pub fn copy(self) -> Copying {
        set_blocking(&self.out);
        set_blocking(&self.err);
        let spawn = |f: &std::fs::File, to_err: bool| {
            let f = f.try_clone();
            std::thread::spawn(move || {
                let Ok(mut f) = f else { return };
                let _ = if to_err {
                    std::io::copy(&mut f, &mut std::io::stderr())
                } else {
                    std::io::copy(&mut f, &mut std::io::stdout())
                };
                let _ = std::io::stdout().flush();
            })
        };
        let threads = vec![spawn(&self.out, false), spawn(&self.err, true)];
        Copying {
            _fifos: self,
            threads,
        }
    }
}

impl Drop for OutputFifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Output being copied; [`Copying::finish`] waits for the writers to close.
pub struct Copying {
    _fifos: OutputFifos,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Copying {
    /// Waits until everything written has been copied, then removes the FIFOs.
    pub async fn finish(self) {
        let Copying { _fifos, threads } = self;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}
