//! SCMP_ACT_NOTIFY with `listenerPath`: the listener fd goes to the seccomp agent's unix socket
//! with SCM_RIGHTS, the runtime-spec's container process state as the message body.

use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::{ContainerProcessStateBuilder, State, SECCOMP_FD_NAME};

/// The runtime-spec `ContainerProcessState` for the agent: the container's state (the JSON
/// `state` prints), the pid of the process the filter applies to, the profile's
/// `listenerMetadata`, and `fds: ["seccompFd"]`.
pub fn process_state(
    state_json: &[u8],
    pid: i32,
    metadata: Option<&str>,
) -> Result<Vec<u8>, String> {
    let state: State = serde_json::from_slice(state_json)
        .map_err(|e| format!("the container state for the seccomp agent is not valid: {e}"))?;
    let mut b = ContainerProcessStateBuilder::default()
        .version(crate::OCI_VERSION)
        .fds(vec![SECCOMP_FD_NAME.to_string()])
        .pid(pid)
        .state(state);
    if let Some(m) = metadata {
        b = b.metadata(m);
    }
    let s = b
        .build()
        .map_err(|e| format!("building the state for the seccomp agent: {e}"))?;
    serde_json::to_vec(&s).map_err(|e| format!("serialising the state for the seccomp agent: {e}"))
}

/// Connect to the agent's stream socket at `listener_path` and send `fd` with SCM_RIGHTS, with
/// `state_json` (see [`process_state`]) as the message body, then close the connection.
pub fn send_listener(
    fd: BorrowedFd<'_>,
    listener_path: &Path,
    state_json: &[u8],
) -> Result<(), String> {
    if state_json.is_empty() {
        return Err("the state sent to the seccomp agent must not be empty".to_string());
    }
    let ctx = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "seccomp listenerPath {}: {what}: {e}",
            listener_path.display()
        )
    };
    let sock = UnixStream::connect(listener_path).map_err(|e| ctx("connecting", &e))?;
    send_listener_on(&sock, fd, state_json).map_err(|e| ctx("sending", &e))
}

/// Send `fd` with SCM_RIGHTS and `state_json` as the body on an already connected socket (the
/// init connects before pivot_root, while the agent's path is still reachable).
pub fn send_listener_on(
    mut sock: &UnixStream,
    fd: BorrowedFd<'_>,
    state_json: &[u8],
) -> Result<(), String> {
    if state_json.is_empty() {
        return Err("the state sent to the seccomp agent must not be empty".to_string());
    }
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(state_json)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("the listener fd: {e}")),
        }
    };
    // A stream socket may take part of the body; the fd went with the first byte.
    sock.write_all(&state_json[sent..])
        .map_err(|e| format!("the state: {e}"))?;
    Ok(())
}
