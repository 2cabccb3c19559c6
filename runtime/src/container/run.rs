//! `run`: create, start and wait. The runtime stays the container's parent, forwards the signals
//! it receives, and exits with the container's code (128+n when a signal n killed it). With
//! `--detach` it returns once the process started. A terminal container without
//! `--console-socket` gets its pty proxied to our own stdio.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Settings;
use super::{create::spawn, destroy, run_hooks, CreateOptions, Gate};
use crate::hooks::HookKind;
use crate::sync::{self, Message};

/// Create, start and (unless `detach`) wait for the container; returns its exit code.
pub fn run(ctx: &Settings, opts: &CreateOptions, detach: bool, keep: bool) -> Result<u8> {
    let spawned = spawn(ctx, opts, Gate::Sync)?;
    let pid = Pid::from_raw(spawned.state.pid);

    let mut console_master = None;
    if let Some(peer) = &spawned.console_peer {
        let (master, _name) = crate::tty::recv_master(peer).map_err(|e| anyhow!(e))?;
        console_master = Some(master);
    }

    // Block the signals we forward before the container runs, so none is lost.
    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    if !detach {
        mask.thread_block().context("blocking signals")?;
    }
    sync::send(&spawned.sync, &Message::Go).context("starting the container")?;
    if let Err(e) = run_hooks(&spawned.state, HookKind::Poststart, "running") {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = destroy(&spawned.state);
        let _ = spawned.dir.remove();
        return Err(e);
    }
    if detach {
        return Ok(0);
    }

    let _proxy = console_master.map(start_proxy);
    let code = wait_forwarding(pid, &mask)?;

    if !keep {
        destroy(&spawned.state)?;
        if let Err(e) = run_hooks(&spawned.state, HookKind::Poststop, "stopped") {
            tracing::error!("{e:#}");
        }
        spawned.dir.remove()?;
    }
    Ok(code)
}

/// Wait for `pid`, forwarding every signal we receive to it.
pub(super) fn wait_forwarding(pid: Pid, mask: &SigSet) -> Result<u8> {
    let sfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    loop {
        // Reap first: the child may have exited before we looked.
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128u8.wrapping_add(sig as u8)),
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => return Ok(0),
            Err(e) => return Err(anyhow!("waiting for container: {e}")),
        }
        match sfd.read_signal() {
            Ok(Some(info)) => {
                let sig = info.ssi_signo as i32;
                if sig != libc::SIGCHLD {
                    unsafe { libc::kill(pid.as_raw(), sig) };
                }
            }
            Ok(None) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(anyhow!("reading signals: {e}")),
        }
    }
}

/// Copy between our stdio and the container's pty master (raw mode on our terminal).
struct Proxy {
    saved: Option<nix::sys::termios::Termios>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn start_proxy(master: OwnedFd) -> Proxy {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        // Give the pty our window size.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 {
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    }
    let master = std::fs::File::from(master);
    if let Ok(mut to_pty) = master.try_clone() {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut from_pty = master;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        while let Ok(n) = from_pty.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    });
    Proxy { saved }
}
