//! containerd's filter syntax, the subset the list calls need:
//! `field==value`, `field!=value`, `field~=regex`, bare `field` (present), `labels."a.b"==x`;
//! clauses joined by `,` must all match; several filter strings are alternatives (OR).

use regex::Regex;

use crate::error::{Result, StoreError};

/// Something a filter can look at: the value of a field path (`["labels", "a.b"]`), if any.
pub trait Adaptor {
    /// The value at `path`, or `None` if the field is absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
    Re(Regex),
}

#[derive(Debug, Clone)]
struct Clause {
    path: Vec<String>,
    op: Op,
}

/// A parsed set of alternative filters. The empty set matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    alternatives: Vec<Vec<Clause>>,
}

impl Filter {
    /// Parses filter strings (each an AND of comma-separated clauses; the strings are ORed).
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Filter> {
        let mut alternatives = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                continue;
            }
            let clauses = split_unquoted(f, ',')
                .into_iter()
                .map(|c| parse_clause(c.trim(), f))
                .collect::<Result<Vec<_>>>()?;
            alternatives.push(clauses);
        }
        Ok(Filter { alternatives })
    }

    /// True if `a` matches one of the alternatives (or there are none).
    pub fn matches(&self, a: &dyn Adaptor) -> bool {
        self.alternatives.is_empty()
            || self.alternatives.iter().any(|cl| {
                cl.iter().all(|c| {
                    let v = a.field(&c.path);
                    match (&c.op, v) {
                        (Op::Present, v) => v.is_some(),
                        (Op::Eq(want), Some(v)) => &v == want,
                        (Op::Ne(want), Some(v)) => &v != want,
                        (Op::Ne(_), None) => true,
                        (Op::Re(re), Some(v)) => re.is_match(&v),
                        _ => false,
                    }
                })
            })
    }
}

fn bad(filter: &str, why: &str) -> StoreError {
    StoreError::InvalidArgument(format!("invalid filter {filter:?}: {why}"))
}

fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match (c, quote) {
            ('\\', Some(_)) => {
                cur.push(c);
                escaped = true;
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                cur.push(c);
            }
            (q, Some(open)) if q == open => {
                quote = None;
                cur.push(c);
            }
            (c, None) if c == sep => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        let inner = &s[1..s.len() - 1];
        let mut out = String::new();
        let mut esc = false;
        for c in inner.chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else {
                out.push(c);
            }
        }
        out
    } else {
        s.to_string()
    }
}

fn parse_clause(c: &str, whole: &str) -> Result<Clause> {
    let (field, op) = if let Some(i) = find_op(c, "==") {
        (&c[..i], Op::Eq(unquote(&c[i + 2..])))
    } else if let Some(i) = find_op(c, "!=") {
        (&c[..i], Op::Ne(unquote(&c[i + 2..])))
    } else if let Some(i) = find_op(c, "~=") {
        let pat = unquote(&c[i + 2..]);
        let re = Regex::new(&pat).map_err(|e| bad(whole, &format!("bad regex {pat:?}: {e}")))?;
        (&c[..i], Op::Re(re))
    } else {
        (c, Op::Present)
    };
    let path: Vec<String> = split_unquoted(field.trim(), '.')
        .iter()
        .map(|p| unquote(p))
        .collect();
    if path.is_empty() || path.iter().any(|p| p.is_empty()) {
        return Err(bad(whole, &format!("empty field path in {c:?}")));
    }
    Ok(Clause { path, op })
}

fn find_op(c: &str, op: &str) -> Option<usize> {
    // The first occurrence outside quotes.
    let mut quote: Option<char> = None;
    let bytes = c.as_bytes();
    for (i, ch) in c.char_indices() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if c[i..].starts_with(op) && (i == 0 || bytes[i - 1] != b'\\') => return Some(i),
            None => {}
        }
    }
    None
}

/// Looks up `labels.<key>` in a label map for an [`Adaptor`].
pub(crate) fn label_field(
    labels: &std::collections::BTreeMap<String, String>,
    path: &[String],
) -> Option<String> {
    if path.len() < 2 {
        return if labels.is_empty() {
            None
        } else {
            Some(String::new())
        };
    }
    labels.get(&path[1..].join(".")).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct T(BTreeMap<String, String>, String);
    impl Adaptor for T {
        fn field(&self, path: &[String]) -> Option<String> {
            match path[0].as_str() {
                "name" => Some(self.1.clone()),
                "labels" => label_field(&self.0, path),
                _ => None,
            }
        }
    }

    #[test]
    fn filters_match_like_containerd() {
        let mut l = BTreeMap::new();
        l.insert("containerd.io/gc.root".to_string(), "x".to_string());
        let t = T(l, "docker.io/library/busybox:latest".into());
        let m = |f: &[&str]| Filter::parse(f).unwrap().matches(&t);
        assert!(m(&[]));
        assert!(m(&["name==docker.io/library/busybox:latest"]));
        assert!(!m(&["name==other"]));
        assert!(m(&["name==other", "name~=busybox"]));
        assert!(m(&[r#"labels."containerd.io/gc.root""#]));
        assert!(m(&[r#"labels."containerd.io/gc.root"==x,name!=y"#]));
        assert!(!m(&[r#"labels."containerd.io/gc.root"==x,name==y"#]));
        assert!(!m(&["labels.missing"]));
        assert!(Filter::parse(&["name~=("]).is_err());
    }
}
