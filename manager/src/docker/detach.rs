//! Detach keys: the key sequence (ctrl-p ctrl-q unless the client names another with
//! `detachKeys` on attach, or `DetachKeys` in an exec's config) that, typed on a terminal
//! attached to a container or an exec, ends the attachment and leaves the process running,
//! as dockerd's escape proxy does. Only a terminal's input is watched, as by dockerd.
//!
//! Written here rather than taken from a crate: it is Docker's own syntax (moby/term's
//! `ToBytes`) and a few lines of matching, which no crate on crates.io carries.

use super::errors::ApiError;

/// Docker's default: ctrl-p, ctrl-q.
const DEFAULT: &[u8] = &[0x10, 0x11];

/// A parsed detach key sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(Vec<u8>);

impl DetachKeys {
    /// Parses Docker's syntax: comma-separated keys, each a single character or `ctrl-X`
    /// with X one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_` (any case). Empty: the default.
    /// The error names the key that is not one.
    pub fn parse(s: &str) -> Result<DetachKeys, String> {
        if s.is_empty() {
            return Ok(DetachKeys(DEFAULT.to_vec()));
        }
        let mut keys = Vec::new();
        for key in s.split(',') {
            let b = key.as_bytes();
            if b.len() == 1 {
                keys.push(b[0]);
                continue;
            }
            let lower = key.to_ascii_lowercase();
            let code = lower
                .strip_prefix("ctrl-")
                .filter(|c| c.len() == 1)
                .map(|c| c.as_bytes()[0])
                .and_then(|c| match c {
                    b'a'..=b'z' => Some(c - b'a' + 1),
                    b'@' => Some(0),
                    b'[' => Some(27),
                    b'\\' => Some(28),
                    b']' => Some(29),
                    b'^' => Some(30),
                    b'_' => Some(31),
                    _ => None,
                });
            match code {
                Some(c) => keys.push(c),
                None => return Err(format!("Unknown character: '{key}'")),
            }
        }
        Ok(DetachKeys(keys))
    }

    /// [`DetachKeys::parse`] of an attach's `detachKeys`, with dockerd's 400.
    pub fn for_attach(s: &str) -> Result<DetachKeys, ApiError> {
        DetachKeys::parse(s)
            .map_err(|e| ApiError::bad_request(format!("Invalid detach keys ({s}) provided: {e}")))
    }

    /// [`DetachKeys::parse`] of an exec's `DetachKeys`, with dockerd's words.
    pub fn for_exec(s: &str) -> Result<DetachKeys, ApiError> {
        DetachKeys::parse(s)
            .map_err(|e| ApiError::bad_request(format!("Invalid escape keys ({s}) provided: {e}")))
    }

    /// A matcher for one input stream.
    pub fn watch(&self) -> Escape {
        Escape {
            keys: self.0.clone(),
            pos: 0,
        }
    }
}

/// Watches an input stream for the sequence, holding back a partial match until it is
/// either completed (a detach) or broken (then it is passed on).
#[derive(Debug)]
pub struct Escape {
    keys: Vec<u8>,
    pos: usize,
}

impl Escape {
    /// Appends to `out` what of `input` goes on to the process; true when the sequence was
    /// completed (what followed it in `input` is dropped, as the client is leaving).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if b == self.keys[self.pos] {
                self.pos += 1;
            } else {
                // A broken prefix goes on as typed; the byte may start a new match.
                out.extend_from_slice(&self.keys[..self.pos]);
                self.pos = 0;
                if b == self.keys[0] {
                    self.pos = 1;
                } else {
                    out.push(b);
                }
            }
            if self.pos == self.keys.len() {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockers_syntax() {
        assert_eq!(DetachKeys::parse("").unwrap().0, vec![16, 17]);
        assert_eq!(DetachKeys::parse("ctrl-p,ctrl-q").unwrap().0, vec![16, 17]);
        assert_eq!(DetachKeys::parse("CTRL-A,a").unwrap().0, vec![1, b'a']);
        assert_eq!(
            DetachKeys::parse("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_")
                .unwrap()
                .0,
            vec![0, 27, 28, 29, 30, 31]
        );
        let e = DetachKeys::parse("ctrl-p,bogus").unwrap_err();
        assert!(e.contains("'bogus'"), "{e}");
        assert!(DetachKeys::parse("ctrl-1").is_err());
        assert!(DetachKeys::parse("a,,b").is_err());
        let e = DetachKeys::for_attach("x,yy").unwrap_err();
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("Invalid detach keys (x,yy)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn passes_input_on_and_stops_at_the_sequence() {
        let keys = DetachKeys::parse("").unwrap();
        let mut e = keys.watch();
        let mut out = Vec::new();
        assert!(!e.feed(b"ls\r", &mut out));
        assert_eq!(out, b"ls\r");
        // A prefix split across reads is held, then passed on when broken.
        out.clear();
        assert!(!e.feed(b"a\x10", &mut out));
        assert_eq!(out, b"a");
        assert!(!e.feed(b"b", &mut out));
        assert_eq!(out, b"a\x10b");
        // A broken prefix that starts a new match.
        out.clear();
        assert!(e.feed(b"\x10\x10\x11rest", &mut out));
        assert_eq!(out, b"\x10");
        // Split across reads.
        let mut e = keys.watch();
        out.clear();
        assert!(!e.feed(b"x\x10", &mut out));
        assert!(e.feed(b"\x11", &mut out));
        assert_eq!(out, b"x");
    }
}
