//! `terminal: true` with `--console-socket`: the runtime sends the pty master over the socket
//! in one SCM_RIGHTS message and the container's stdio is the pty's other end. Every test also
//! passes against runc (`BERTH_RUNC=/usr/bin/runc`).

use std::time::Duration;

use anyhow::Result;
use berth_integration::runtime::console::{read_until, ConsoleSocket};
use berth_integration::runtime::{assert_error, unique_name, Bundle, Runtime};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn console_socket_receives_the_pty_master() -> Result<()> {
    let rt = Runtime::new()?;
    let socket = ConsoleSocket::new()?;
    let mut bundle = Bundle::new()?;
    bundle.terminal(true).sh(
        "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; [ -c /dev/console ] && echo console; \
         echo ready; exec sleep 100",
    );
    let id = unique_name("console");
    let guard = rt.guard(&id, &bundle);
    let sock = socket.path().display().to_string();
    rt.create_with(&id, &bundle, &["--console-socket", &sock])?
        .ok();
    guard.track_pid(rt.pid(&id)?);
    let received = socket.receive(WAIT)?;
    assert_eq!(received.fd_count, 1, "fds in the console message");
    assert!(
        !received.name.is_empty(),
        "the message body (pty name) is empty"
    );
    rt.start(&id)?.ok();
    let text = read_until(&received.master, "ready", WAIT);
    assert_eq!(
        received.extra_messages(WAIT)?,
        0,
        "messages after the first"
    );
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(
        lines,
        vec!["/dev/pts/0", "all-tty", "console", "ready"],
        "read from the pty master: {text:?} (pty name {:?})",
        received.name
    );
    rt.kill(&id, "KILL")?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn input_written_to_the_master_reaches_the_process() -> Result<()> {
    let rt = Runtime::new()?;
    let socket = ConsoleSocket::new()?;
    let mut bundle = Bundle::new()?;
    bundle
        .terminal(true)
        .sh("stty -echo; echo ready; read line; echo \"got $line\"; sleep 100");
    let id = unique_name("console-in");
    let guard = rt.guard(&id, &bundle);
    let sock = socket.path().display().to_string();
    rt.create_with(&id, &bundle, &["--console-socket", &sock])?
        .ok();
    guard.track_pid(rt.pid(&id)?);
    let received = socket.receive(WAIT)?;
    rt.start(&id)?.ok();
    let text = read_until(&received.master, "ready", WAIT);
    assert!(text.contains("ready"), "{text:?}");
    let written = nix::unistd::write(&received.master, b"hello\n")?;
    assert_eq!(written, 6);
    let text = read_until(&received.master, "got hello", WAIT);
    assert!(text.contains("got hello"), "{text:?}");
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn terminal_without_console_socket_is_refused() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.terminal(true).args(&["true"]);
    let id = unique_name("console-none");
    let guard = rt.guard(&id, &bundle);
    let out = rt.create(&id, &bundle)?;
    assert_error(&rt, &out, &["console"]);
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn console_socket_that_does_not_exist_is_refused() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.terminal(true).args(&["true"]);
    let id = unique_name("console-missing");
    let guard = rt.guard(&id, &bundle);
    let missing = rt.scratch().join("no-such.sock").display().to_string();
    let out = rt.create_with(&id, &bundle, &["--console-socket", &missing])?;
    // runc says "no such file or directory" with the path.
    assert_error(&rt, &out, &["no-such.sock"]);
    guard.assert_no_leftovers();
    Ok(())
}
