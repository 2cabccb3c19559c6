//! Signal names and numbers as `kill` takes them: `9`, `KILL`, `SIGKILL`, `sigkill`.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// Parse a signal given as a number or a name (with or without the `SIG` prefix).
pub fn parse(text: &str) -> Result<i32, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        if n > 0 && n <= libc::SIGRTMAX() {
            return Ok(n);
        }
        return Err(format!("unknown signal {text:?}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(rest) = name.strip_prefix("SIGRTMIN+") {
        if let Ok(n) = rest.parse::<i32>() {
            let sig = libc::SIGRTMIN() + n;
            if sig <= libc::SIGRTMAX() {
                return Ok(sig);
            }
        }
    }
    Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| format!("unknown signal {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("KILL"), Ok(9));
        assert_eq!(parse("SIGKILL"), Ok(9));
        assert_eq!(parse("term"), Ok(15));
        assert_eq!(parse("SIGRTMIN+1"), Ok(libc::SIGRTMIN() + 1));
        assert!(parse("FOO").unwrap_err().contains("unknown signal"));
        assert!(parse("0").is_err());
        assert!(parse("999").is_err());
    }
}
