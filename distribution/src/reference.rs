//! Image references: `[registry/]repository[:tag][@digest]`, docker's defaults applied.

use crate::error::{DistributionError, Result};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Digest, if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference; `busybox` becomes `docker.io/library/busybox:latest`.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |why: &str| DistributionError::InvalidReference {
            reference: s.to_string(),
            why: why.to_string(),
        };
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("empty or contains whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let ok = d
                    .split_once(':')
                    .is_some_and(|(a, h)| !a.is_empty() && !h.is_empty());
                if !ok {
                    return Err(bad("digest must be algorithm:hex"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (repo, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if repo.is_empty() || tag.as_deref() == Some("") {
            return Err(bad("empty repository or tag"));
        }
        let (registry, path) = match repo.split_once('/') {
            Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => {
                (d.to_string(), p.to_string())
            }
            _ => ("docker.io".to_string(), repo.to_string()),
        };
        if path.is_empty()
            || path
                .chars()
                .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)))
        {
            return Err(bad(
                "repository must be lowercase letters, digits and . _ - /",
            ));
        }
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if any, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host to connect to (`docker.io` is served by `registry-1.docker.io`).
    pub fn host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_apply() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.host(), "registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.object()),
            ("127.0.0.1:5000", "a/b", "v1")
        );
        let r = Reference::parse("localhost/x@sha256:abc").unwrap();
        assert_eq!(r.object(), "sha256:abc");
        assert!(r.tag.is_none());
    }

    #[test]
    fn bad_references_are_refused() {
        for s in ["", "a b", "Foo/Bar", "x:", "x@nodigest", "reg.io/"] {
            assert!(Reference::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
