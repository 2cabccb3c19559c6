//! Name rules shared by the daemon and the CLI, as containerd applies them to namespaces and
//! other identifiers: alphanumeric components joined by single `.`, `_` or `-`, at most 76 bytes.

/// Longest identifier accepted.
pub const MAX_LENGTH: usize = 76;

/// Why an identifier is refused; the text matches containerd's so clients see the same message.
pub fn validate(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("identifier must not be empty".into());
    }
    if s.len() > MAX_LENGTH {
        return Err(format!(
            "identifier {s:?} greater than maximum length ({MAX_LENGTH} characters)"
        ));
    }
    let mut prev_sep = true; // the first char must be alphanumeric
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(invalid(s));
        }
    }
    if prev_sep {
        return Err(invalid(s));
    }
    Ok(())
}

fn invalid(s: &str) -> String {
    format!("identifier {s:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_containerd_style_names() {
        for ok in ["default", "k8s.io", "a", "a-b_c.d", "A1"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "-a", "a-", "a..b", "a/b", "é", "a b", &"x".repeat(77)] {
            let err = validate(bad).unwrap_err();
            assert!(err.contains("identifier"), "{bad}: {err}");
        }
    }
}
