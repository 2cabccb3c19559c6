//! Running `ctr` (and `script` around it) with a timeout, output captured in files.
//!
//! Output goes to files, not pipes: `ctr run -d` hands its stdio to the shim, which keeps it open
//! long after ctr exits, and a pipe would never reach end-of-file.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::runtime::driver::wait_with_timeout;

/// What one command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CtrOut {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; -1 when killed by a signal, timed out or could not be spawned.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error (or why the command could not run).
    pub stderr: String,
}

impl CtrOut {
    /// The command, its exit code and both streams, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with stdin from `stdin` (or /dev/null) and stdout/stderr into
/// `out_base.{out,err}`, killing it after `timeout`. Never fails: a spawn error or timeout becomes
/// code -1 with the reason in stderr, so callers can assert on it like any other failure.
pub fn run(cmd: &mut Command, stdin: Option<&Path>, out_base: &Path, timeout: Duration) -> CtrOut {
    let command = describe_command(cmd);
    match run_inner(cmd, stdin, out_base, timeout, &command) {
        Ok(out) => out,
        Err(e) => {
            let (stdout, stderr) = read_outputs(out_base);
            CtrOut {
                command,
                code: -1,
                stdout,
                stderr: format!("{stderr}\n{e:#}"),
            }
        }
    }
}

fn run_inner(
    cmd: &mut Command,
    stdin: Option<&Path>,
    out_base: &Path,
    timeout: Duration,
    what: &str,
) -> Result<CtrOut> {
    let out_path = out_base.with_extension("out");
    let err_path = out_base.with_extension("err");
    let stdout =
        File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let stderr =
        File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
    let stdin = match stdin {
        Some(p) => Stdio::from(File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => Stdio::null(),
    };
    cmd.stdin(stdin).stdout(stdout).stderr(stderr);
    let status = wait_with_timeout(cmd, what, timeout)?;
    let (stdout, stderr) = read_outputs(out_base);
    Ok(CtrOut {
        command: what.to_string(),
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    })
}

fn read_outputs(out_base: &Path) -> (String, String) {
    let read = |ext: &str| {
        fs::read(out_base.with_extension(ext))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    (read("out"), read("err"))
}

/// `cmd` as a shell command line, each word quoted as needed.
pub fn describe_command(cmd: &Command) -> String {
    let mut parts = vec![shell_quote(&cmd.get_program().to_string_lossy())];
    parts.extend(cmd.get_args().map(|a| shell_quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// Quotes `s` for a POSIX shell (single quotes unless it is plainly safe).
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("ctr"), "ctr");
        assert_eq!(shell_quote("/a/b.sock"), "/a/b.sock");
        assert_eq!(shell_quote("tty; exit 5"), "'tty; exit 5'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
