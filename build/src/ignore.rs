//! `.dockerignore` with Docker's rules (the semantics of moby/patternmatcher).
//!
//! Reading a file: lines starting with `#` are comments; each line is trimmed; a leading
//! `!` makes it an exception; the pattern is cleaned as a path (`a//b/./c/` → `a/b/c`)
//! and a leading `/` is dropped. Matching: `*` is any run of characters except `/`, `?`
//! one such character, `[a-z]`/`[^a-z]` classes, `\` escapes, `**` any number of
//! directories (including none). A pattern also matches everything under a directory
//! it matches. Rules are applied in order and the last one that matches decides, so
//! `!` exceptions after an exclusion re-include paths.
//!
//! [`Matcher::walk`] lists a context directory's included paths. An excluded directory
//! is skipped unless an exception could match something inside it, in which case it
//! is walked and only the re-included children are listed.

use std::path::Path;

use thiserror::Error;

use crate::error::WalkError;

/// A bad pattern in a `.dockerignore` file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IgnoreError {
    /// A line that is only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// An unclosed `[` class or a trailing escape inside one.
    #[error("syntax error in pattern: {0}")]
    BadPattern(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `*`: any run of non-`/` characters.
    Star,
    /// `?`: one non-`/` character.
    Any,
    /// `**` not at the end: empty, or anything ending with `/`.
    DirStar,
    /// `**` at the end: anything.
    All,
    /// `[...]`: ranges, negated or not.
    Class(Vec<(char, char)>, bool),
}

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The cleaned pattern text (without `!`).
    pub text: String,
    /// True for a `!` exception.
    pub exception: bool,
    tokens: Vec<Token>,
}

impl Pattern {
    fn new(text: &str, exception: bool) -> Result<Pattern, IgnoreError> {
        Ok(Pattern {
            text: text.to_string(),
            exception,
            tokens: compile(text)?,
        })
    }

    /// Whether the pattern matches `path` itself (no parent rule).
    pub fn matches_exact(&self, path: &str) -> bool {
        glob_match(&self.tokens, &path.chars().collect::<Vec<_>>())
    }

    /// Whether the pattern matches `path` or one of its parent directories.
    fn matches_or_parent(&self, path: &str) -> bool {
        if self.matches_exact(path) {
            return true;
        }
        path.match_indices('/')
            .any(|(i, _)| self.matches_exact(&path[..i]))
    }
}

fn compile(p: &str) -> Result<Vec<Token>, IgnoreError> {
    let chars: Vec<char> = p.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                let slash = chars.get(i) == Some(&'/');
                if slash {
                    i += 1;
                }
                // A leading `**` not followed by `/` before a literal rest is a plain
                // suffix match in patternmatcher (`**foo` matches `xfoo`).
                let literal_rest = chars[i..].iter().all(|c| !"*?[\\".contains(*c));
                let leading_suffix = tokens.is_empty() && !slash && literal_rest;
                tokens.push(if i >= chars.len() || leading_suffix {
                    Token::All
                } else {
                    Token::DirStar
                });
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Any),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    tokens.push(Token::Char(n));
                    i += 1;
                }
                None => tokens.push(Token::Char('\\')),
            },
            '[' => {
                let mut negated = false;
                if matches!(chars.get(i), Some('^') | Some('!')) {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                while i < chars.len() {
                    let mut lo = chars[i];
                    i += 1;
                    if lo == ']' && !ranges.is_empty() {
                        closed = true;
                        break;
                    }
                    if lo == '\\' {
                        lo = *chars
                            .get(i)
                            .ok_or_else(|| IgnoreError::BadPattern(p.to_string()))?;
                        i += 1;
                    }
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
                        hi = chars[i + 1];
                        i += 2;
                        if hi == '\\' {
                            hi = *chars
                                .get(i)
                                .ok_or_else(|| IgnoreError::BadPattern(p.to_string()))?;
                            i += 1;
                        }
                    }
                    ranges.push((lo, hi));
                }
                if !closed {
                    return Err(IgnoreError::BadPattern(p.to_string()));
                }
                tokens.push(Token::Class(ranges, negated));
            }
            c => tokens.push(Token::Char(c)),
        }
    }
    Ok(tokens)
}

/// Dynamic-programming glob match: `m[t][s]` = tokens[t..] match path[s..].
fn glob_match(tokens: &[Token], path: &[char]) -> bool {
    let (nt, np) = (tokens.len(), path.len());
    let mut m = vec![vec![false; np + 1]; nt + 1];
    m[nt][np] = true;
    for t in (0..nt).rev() {
        for s in (0..=np).rev() {
            let one = |pred: &dyn Fn(char) -> bool| s < np && pred(path[s]) && m[t + 1][s + 1];
            m[t][s] = match &tokens[t] {
                Token::Char(c) => one(&|x| x == *c),
                Token::Any => one(&|x| x != '/'),
                Token::Class(ranges, neg) => {
                    one(&|x| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi) != *neg && x != '/')
                }
                Token::Star => m[t + 1][s] || (s < np && path[s] != '/' && m[t][s + 1]),
                Token::All => (s..=np).any(|e| m[t + 1][e]),
                // Empty, or any prefix ending in '/'.
                Token::DirStar => m[t + 1][s] || (s..np).any(|e| path[e] == '/' && m[t + 1][e + 1]),
            };
        }
    }
    m[0][0]
}

/// Cleans a slash path like Go's `path.Clean`: no empty or `.` elements, `..` resolved,
/// no trailing slash; `""` becomes `.`.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Parses the contents of a `.dockerignore` file.
    pub fn parse(contents: &str) -> Result<Matcher, IgnoreError> {
        let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
        let mut patterns = Vec::new();
        for line in contents.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exception = p.starts_with('!');
            if exception {
                p = p[1..].trim();
                if p.is_empty() {
                    return Err(IgnoreError::IllegalExclusion);
                }
            }
            let mut cleaned = clean_path(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            patterns.push(Pattern::new(&cleaned, exception)?);
        }
        Ok(Matcher { patterns })
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Adds exceptions for `paths` (relative to the context) after all other rules, so
    /// they are always included: Docker always sends the Dockerfile and `.dockerignore`
    /// even when the file excludes them.
    pub fn with_always_included(mut self, paths: &[&str]) -> Matcher {
        for p in paths {
            let cleaned = clean_path(p.trim_start_matches('/'));
            // A literal path: escape the glob characters.
            let escaped: String = cleaned
                .chars()
                .flat_map(|c| {
                    let esc = matches!(c, '*' | '?' | '[' | ']' | '\\');
                    esc.then_some('\\').into_iter().chain(std::iter::once(c))
                })
                .collect();
            if let Ok(p) = Pattern::new(&escaped, true) {
                self.patterns.push(p);
            }
        }
        self
    }

    /// Whether `rel_path` (relative to the context, `/`-separated) is excluded.
    pub fn matches(&self, rel_path: &str) -> bool {
        let path = clean_path(rel_path.trim_start_matches('/'));
        if path == "." {
            return false;
        }
        let mut excluded = false;
        for p in &self.patterns {
            // Only a rule that could change the result is evaluated.
            if p.exception != excluded {
                continue;
            }
            if p.matches_or_parent(&path) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether some exception could match a path strictly inside directory `dir`.
    fn exception_may_match_inside(&self, dir: &str) -> bool {
        let dir_parts: Vec<&str> = dir.split('/').collect();
        self.patterns.iter().filter(|p| p.exception).any(|p| {
            let pat_parts: Vec<&str> = p.text.split('/').collect();
            for (i, d) in dir_parts.iter().enumerate() {
                let Some(pp) = pat_parts.get(i) else {
                    return false;
                };
                if pp.contains("**") {
                    return true;
                }
                match compile(pp) {
                    Ok(t) if glob_match(&t, &d.chars().collect::<Vec<_>>()) => {}
                    _ => return false,
                }
            }
            pat_parts.len() > dir_parts.len()
        })
    }

    /// Walks `root` and returns the included paths relative to it (`/`-separated,
    /// sorted): files, symlinks (not followed) and directories that are not excluded.
    /// An excluded directory that is entered only because an exception may re-include
    /// something inside it is not listed itself; its re-included children are.
    pub fn walk(&self, root: &Path) -> Result<Vec<String>, WalkError> {
        let mut out = Vec::new();
        self.walk_dir(root, "", &mut out)?;
        out.sort();
        Ok(out)
    }

    fn walk_dir(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), WalkError> {
        let err = |source| WalkError {
            path: dir.display().to_string(),
            source,
        };
        let mut entries = std::fs::read_dir(dir)
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().map_err(|source| WalkError {
                path: entry.path().display().to_string(),
                source,
            })?;
            let excluded = self.matches(&path);
            if !excluded {
                out.push(path.clone());
            }
            if ft.is_dir() && (!excluded || self.exception_may_match_inside(&path)) {
                self.walk_dir(&entry.path(), &path, out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean() {
        let cases = [
            ("a//b/./c/", "a/b/c"),
            ("/a/../b", "/b"),
            ("../a", "../a"),
            ("a/..", "."),
            ("", "."),
            ("/", "/"),
            ("./x", "x"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input), want, "{input}");
        }
    }

    #[test]
    fn parse_rules() {
        let m = Matcher::parse(
            "# comment\n\n  *.md  \n/abs/path/\n! keep.md\n ./x//y\n #not a comment\n",
        )
        .expect("parses");
        let texts: Vec<(&str, bool)> = m
            .patterns()
            .iter()
            .map(|p| (p.text.as_str(), p.exception))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("*.md", false),
                ("abs/path", false),
                ("keep.md", true),
                ("x/y", false),
                ("#not a comment", false)
            ]
        );
        assert_eq!(Matcher::parse("a\n!\n"), Err(IgnoreError::IllegalExclusion));
        assert!(matches!(
            Matcher::parse("[abc\n"),
            Err(IgnoreError::BadPattern(_))
        ));
    }

    #[test]
    fn matching_table() {
        // (rules, path, excluded)
        let cases: &[(&str, &str, bool)] = &[
            ("*.md", "README.md", true),
            ("*.md", "docs/README.md", false),
            ("*/*.md", "docs/README.md", true),
            ("**/*.md", "docs/a/README.md", true),
            ("**/*.md", "README.md", true),
            ("docs/**", "docs/a/b", true),
            ("docs/**", "docsx", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/x/y/bc", false),
            ("**", "anything/at/all", true),
            ("**foo", "a/xfoo", true),
            ("**/foo", "a/xfoo", false),
            ("**/foo", "foo", true),
            ("a**b", "axb", false),
            ("a**b", "ax/b", true),
            ("**/foo/**", "x/foo/y/z", true),
            ("node_modules", "node_modules/x/y.js", true),
            ("node_modules", "src/node_modules", false),
            ("/build", "build/out", true),
            ("b?ild", "build", true),
            ("b?ild", "b/ild", false),
            ("[a-c]at", "bat", true),
            ("[^a-c]at", "bat", false),
            ("[^a-c]at", "rat", true),
            ("\\*star", "*star", true),
            ("\\*star", "xstar", false),
            ("file.txt", "fileatxt", false),
            ("*\nmain.go", "x", true),
            ("*\n!main.go", "main.go", false),
            ("*\n!main.go", "other.go", true),
            ("*.md\n!README.md", "README.md", false),
            ("*.md\n!README.md\nREADME.md", "README.md", true),
            ("docs\n!docs/keep", "docs/keep", false),
            ("docs\n!docs/keep", "docs/keep/inner.txt", false),
            ("docs\n!docs/keep", "docs/other", true),
            ("docs\n!docs/keep", "docs", true),
            ("!x\nx", "x", true),
            ("a", ".", false),
            ("", "anything", false),
        ];
        for (rules, path, want) in cases {
            let m = Matcher::parse(rules).expect(rules);
            assert_eq!(m.matches(path), *want, "rules {rules:?} path {path:?}");
        }
    }

    #[test]
    fn always_included() {
        let m = Matcher::parse("*\n")
            .expect("parses")
            .with_always_included(&["Dockerfile", ".dockerignore"]);
        assert!(!m.matches("Dockerfile"));
        assert!(!m.matches(".dockerignore"));
        assert!(m.matches("src"));
        let m = Matcher::parse("*\n")
            .expect("parses")
            .with_always_included(&["sub/Docker[file]"]);
        assert!(!m.matches("sub/Docker[file]"));
        assert!(m.matches("sub/Dockerf"));
    }

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, b"x").expect("write");
    }

    #[test]
    fn walk_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for f in [
            "Dockerfile",
            ".dockerignore",
            "src/main.rs",
            "src/lib.md",
            "target/debug/app",
            "docs/a.md",
            "docs/keep/b.md",
            "docs/keep/sub/c.txt",
            "logs/x/y.log",
            "logs/x/important.log",
            "README.md",
        ] {
            touch(root, f);
        }
        let rules = "target\n*.md\n!README.md\ndocs\n!docs/keep\nlogs\n!**/important.log\nDockerfile\n.dockerignore\n";
        let m = Matcher::parse(rules)
            .expect("parses")
            .with_always_included(&["Dockerfile", ".dockerignore"]);
        let got = m.walk(root).expect("walks");
        assert_eq!(
            got,
            vec![
                ".dockerignore",
                "Dockerfile",
                "README.md",
                "docs/keep",
                "docs/keep/b.md",
                "docs/keep/sub",
                "docs/keep/sub/c.txt",
                "logs/x/important.log",
                "src",
                "src/lib.md",
                "src/main.rs",
            ]
        );
        // Without exceptions an excluded directory is not walked at all.
        let m = Matcher::parse("src\n").expect("parses");
        let got = m.walk(root).expect("walks");
        assert!(!got.iter().any(|p| p.starts_with("src")));
        assert!(got.contains(&"target/debug/app".to_string()));
    }

    #[test]
    fn walk_missing_root_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = Matcher::default().walk(&missing).expect_err("missing root");
        assert!(
            err.to_string().starts_with("walking build context at "),
            "{err}"
        );
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn exception_lookahead() {
        let m = Matcher::parse("a\n!a/b/c\n!x/**/y\n").expect("parses");
        assert!(m.exception_may_match_inside("a"));
        assert!(m.exception_may_match_inside("a/b"));
        assert!(!m.exception_may_match_inside("a/b/c"));
        assert!(!m.exception_may_match_inside("a/z"));
        assert!(m.exception_may_match_inside("x/q/r"));
    }
}
