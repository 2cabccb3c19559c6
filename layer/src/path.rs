//! Lexical cleaning of layer entry names (no filesystem access).

/// Clean a tar entry name: strip leading `/`, drop `.` and empty components, apply `..`
/// lexically. Returns the components joined with `/` (empty for the root itself), or `None` when
/// a `..` would climb above the root — such a name is refused, not clamped, because a layer that
/// contains one is malformed or hostile.
pub(crate) fn clean(name: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(name.len());
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return None;
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

/// Split a cleaned path into (parent dir, base name). The parent of a top-level name is `""`.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

/// Join a cleaned dir and a base name.
pub(crate) fn join(dir: &[u8], base: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + base.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(base);
    p
}

/// Whether cleaned path `p` is `ancestor` itself or lies under it.
pub(crate) fn is_within(p: &[u8], ancestor: &[u8]) -> bool {
    ancestor.is_empty()
        || (p.starts_with(ancestor) && (p.len() == ancestor.len() || p[ancestor.len()] == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<String> {
        clean(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn clean_strips_and_resolves_lexically() {
        assert_eq!(c("./etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(c("/etc//passwd/").as_deref(), Some("etc/passwd"));
        assert_eq!(c("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(c("a/..").as_deref(), Some(""));
        assert_eq!(c("./").as_deref(), Some(""));
        assert_eq!(c("...").as_deref(), Some("..."));
    }

    #[test]
    fn clean_refuses_escapes() {
        for bad in [
            "..",
            "../x",
            "../../canary",
            "/../canary",
            "a/../../canary",
            "./a/b/../../..",
        ] {
            assert_eq!(c(bad), None, "{bad} must be refused");
        }
    }

    #[test]
    fn split_join_within() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a/b", b"x"), b"a/b/x");
        assert!(is_within(b"a/b/c", b"a/b"));
        assert!(is_within(b"a/b", b"a/b"));
        assert!(!is_within(b"a/bc", b"a/b"));
        assert!(is_within(b"x", b""));
    }
}
