//! Assertions shared by the runtime tests.

use super::driver::{Output, Runtime};

/// Asserts that `out` failed with an error that names the problem: its stderr and the `msg` of
/// the last `"level":"error"` line of the runtime's `--log` file each contain one of `needles`
/// (compared case-insensitively). Tests list runc's wording next to Berth's where they differ.
#[track_caller]
pub fn assert_error(runtime: &Runtime, out: &Output, needles: &[&str]) {
    assert!(
        !out.success(),
        "`{}` should have failed: {}",
        out.command,
        out.describe()
    );
    let contains = |text: &str| {
        let text = text.to_lowercase();
        needles.iter().any(|n| text.contains(&n.to_lowercase()))
    };
    assert!(
        contains(&out.stderr),
        "`{}`: stderr names none of {needles:?}: {}",
        out.command,
        out.describe()
    );
    match runtime.last_log_error() {
        Some(msg) => assert!(
            contains(&msg),
            "`{}`: the last error in the log names none of {needles:?}: {msg:?}",
            out.command
        ),
        None => panic!(
            "`{}`: no {{\"level\":\"error\"}} line in the --log file; log:\n{}",
            out.command,
            runtime.log_text()
        ),
    }
}
