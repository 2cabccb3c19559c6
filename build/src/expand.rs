//! Shell-word expansion as BuildKit's Dockerfile shell lexer does it.
//!
//! Supported: `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`,
//! `${NAME+word}`, `${NAME:?msg}`, `${NAME?msg}`, `${NAME#pat}`, `${NAME##pat}`,
//! `${NAME%pat}`, `${NAME%%pat}` (as in recent Dockerfile syntax), single quotes (literal), double quotes
//! (where the escape character only escapes `"`, `$` and itself), the escape character
//! outside quotes (the next character is literal), and unset variables expanding to
//! nothing. The `word` of a modifier is itself expanded.
//!
//! Which instructions are expanded by the builder is given by [`expands`]: RUN, CMD,
//! ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD and MAINTAINER are not (the shell in the
//! container does it for RUN/CMD/ENTRYPOINT).

use std::collections::BTreeMap;

use crate::error::ExpandError;

/// Where variable values come from.
pub trait Lookup {
    /// The value of `name`, or `None` when it is not set.
    fn lookup(&self, name: &str) -> Option<String>;
}

impl Lookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// `KEY=VALUE` strings as in an image config's `Env`; the last entry for a key wins.
impl Lookup for [String] {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter().rev().find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => Some(v.to_string()),
            None if kv == name => Some(String::new()),
            _ => None,
        })
    }
}

impl Lookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Whether the builder expands variables in the arguments of `keyword` (lower case).
/// ARG values and the flags of expanding instructions are expanded too.
pub fn expands(keyword: &str) -> bool {
    matches!(
        keyword,
        "add"
            | "arg"
            | "copy"
            | "env"
            | "expose"
            | "from"
            | "label"
            | "stopsignal"
            | "user"
            | "volume"
            | "workdir"
    )
}

/// A lexer for one escape character.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer { escape: '\\' }
    }
}

impl Lexer {
    /// A lexer whose escape character is `escape` (`\` or `` ` ``).
    pub fn new(escape: char) -> Self {
        Lexer { escape }
    }

    /// Expands `word` to one string: quotes removed, variables substituted, blanks kept.
    pub fn process_word(&self, word: &str, env: &dyn Lookup) -> Result<String, ExpandError> {
        let mut st = State::new(word, self.escape, env);
        let (s, _) = st.process_stop_on(None)?;
        Ok(s)
    }

    /// Expands `word` and splits it into words on unquoted blanks (including blanks that
    /// come from an unquoted variable's value), as a shell would.
    pub fn process_words(&self, word: &str, env: &dyn Lookup) -> Result<Vec<String>, ExpandError> {
        let mut st = State::new(word, self.escape, env);
        let (_, words) = st.process_stop_on(None)?;
        Ok(words)
    }
}

impl Lexer {
    /// Expands the body of an unquoted heredoc: `$V` and `${V...}` are substituted and
    /// a backslash escapes `$` and `\`; quotes are ordinary characters, as in a shell
    /// here-document.
    pub fn process_heredoc(&self, body: &str, env: &dyn Lookup) -> Result<String, ExpandError> {
        let mut st = State::new(body, '\\', env);
        let mut out = String::new();
        while let Some(c) = st.peek() {
            match c {
                '\\' => {
                    st.next();
                    match st.peek() {
                        Some(n) if n == '$' || n == '\\' => {
                            st.next();
                            out.push(n);
                        }
                        _ => out.push('\\'),
                    }
                }
                '$' => out.push_str(&st.dollar()?),
                c => {
                    st.next();
                    out.push(c);
                }
            }
        }
        Ok(out)
    }
}

#[derive(Default)]
struct Words {
    words: Vec<String>,
    cur: String,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word {
                self.words.push(std::mem::take(&mut self.cur));
                self.in_word = false;
            }
        } else {
            self.cur.push(c);
            self.in_word = true;
        }
    }
    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw(&mut self, s: &str) {
        self.cur.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if self.in_word {
            self.words.push(self.cur);
        }
        self.words
    }
}

struct State<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Lookup,
}

impl<'a> State<'a> {
    fn new(word: &str, escape: char, env: &'a dyn Lookup) -> Self {
        State {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            env,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (consumed) or the end; returns the joined result and the
    /// words.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match c {
                '\'' => {
                    let s = self.single_quote()?;
                    result.push_str(&s);
                    words.add_raw(&s);
                }
                '"' => {
                    let s = self.double_quote()?;
                    result.push_str(&s);
                    words.add_raw(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    result.push_str(&s);
                    words.add_str(&s);
                }
                c if c == self.escape => {
                    self.next();
                    match self.next() {
                        // An escape at the very end is dropped.
                        None => break,
                        Some(n) => {
                            result.push(n);
                            words.add_raw(&n.to_string());
                        }
                    }
                }
                c => {
                    self.next();
                    result.push(c);
                    words.add_char(c);
                }
            }
        }
        if stop.is_some() {
            return Err(ExpandError("syntax error: missing '}'".to_string()));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, ExpandError> {
        self.next();
        let mut s = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(ExpandError(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    ))
                }
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ExpandError> {
        self.next();
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ExpandError(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    ))
                }
                Some('"') => {
                    self.next();
                    return Ok(s);
                }
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) if c == self.escape => {
                    self.next();
                    match self.peek() {
                        None => {}
                        Some(n) if n == '"' || n == '$' || n == self.escape => {
                            self.next();
                            s.push(n);
                        }
                        Some(_) => s.push(c),
                    }
                }
                Some(c) => {
                    self.next();
                    s.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.next();
                return c.to_string();
            }
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.next();
            } else {
                break;
            }
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.env.lookup(&name).unwrap_or_default());
        }
        self.next(); // '{'
        let name = self.name();
        if name.is_empty() {
            return Err(ExpandError("bad substitution".to_string()));
        }
        let value = self.env.lookup(&name);
        let Some(c) = self.next() else {
            return Err(ExpandError("syntax error: missing '}'".to_string()));
        };
        let (colon, modifier) = match c {
            '}' => return Ok(value.unwrap_or_default()),
            ':' => match self.next() {
                Some(m) => (true, m),
                None => return Err(ExpandError("syntax error: missing '}'".to_string())),
            },
            m => (false, m),
        };
        if !colon && (modifier == '#' || modifier == '%') {
            let longest = self.peek() == Some(modifier);
            if longest {
                self.next();
            }
            let (pattern, _) = self.process_stop_on(Some('}'))?;
            return Ok(trim_pattern(
                &value.unwrap_or_default(),
                &pattern,
                modifier == '#',
                longest,
            ));
        }
        if !matches!(modifier, '-' | '+' | '?') {
            let shown = if colon {
                format!(":{modifier}")
            } else {
                modifier.to_string()
            };
            return Err(ExpandError(format!(
                "unsupported modifier ({shown}) in substitution"
            )));
        }
        let (word, _) = self.process_stop_on(Some('}'))?;
        // With the colon an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match modifier {
            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
            '+' => Ok(if set { word } else { String::new() }),
            _ => {
                if set {
                    Ok(value.unwrap_or_default())
                } else if word.is_empty() {
                    Err(ExpandError(format!("{name}: is not allowed to be unset")))
                } else {
                    Err(ExpandError(format!("{name}: {word}")))
                }
            }
        }
    }
}

/// `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`: removes the shortest/longest prefix or
/// suffix of `value` matching the shell pattern `pattern` (`*`, `?`).
fn trim_pattern(value: &str, pattern: &str, prefix: bool, longest: bool) -> String {
    let v: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let n = v.len();
    let cuts: Vec<usize> = match (prefix, longest) {
        (true, false) => (0..=n).collect(),
        (true, true) => (0..=n).rev().collect(),
        (false, false) => (0..=n).rev().collect(),
        (false, true) => (0..=n).collect(),
    };
    for cut in cuts {
        let (part, keep) = if prefix {
            (&v[..cut], &v[cut..])
        } else {
            (&v[cut..], &v[..cut])
        };
        if shell_glob(&p, part) {
            return keep.iter().collect();
        }
    }
    value.to_string()
}

/// Whole-string match of a shell pattern where `*` is any run and `?` any character.
fn shell_glob(p: &[char], s: &[char]) -> bool {
    // m[j] = p[i..] matches s[j..], computed from the end of the pattern.
    let mut next = vec![false; s.len() + 1];
    next[s.len()] = true;
    for pc in p.iter().rev() {
        let mut cur = vec![false; s.len() + 1];
        for j in (0..=s.len()).rev() {
            cur[j] = match pc {
                '*' => next[j] || (j < s.len() && cur[j + 1]),
                '?' => j < s.len() && next[j + 1],
                c => j < s.len() && s[j] == *c && next[j + 1],
            };
        }
        next = cur;
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("A", "hello"),
            ("B", "two words"),
            ("EMPTY", ""),
            ("abc", "def"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn process_word_table() {
        let lex = Lexer::default();
        let cases = [
            ("plain", "plain"),
            ("$A", "hello"),
            ("${A}", "hello"),
            ("${A}_x", "hello_x"),
            ("$A_x", ""),
            ("$abc", "def"),
            ("pre$A.post", "prehello.post"),
            ("$UNSET", ""),
            ("${UNSET}", ""),
            ("${UNSET:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${UNSET-dflt}", "dflt"),
            ("${A:-dflt}", "hello"),
            ("${A:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${UNSET:-$A}", "hello"),
            ("${UNSET:-${A:+nested}}", "nested"),
            ("${UNSET:-a b}", "a b"),
            ("'$A'", "$A"),
            ("\"$A\"", "hello"),
            ("\"'$A'\"", "'hello'"),
            ("'\"$A\"'", "\"$A\""),
            ("\\$A", "$A"),
            ("\\\\$A", "\\hello"),
            ("\"\\$A\"", "$A"),
            ("\"a\\b\"", "a\\b"),
            ("\"a\\\"b\"", "a\"b"),
            ("a\\ b", "a b"),
            ("trailing\\", "trailing"),
            ("$", "$"),
            ("a$", "a$"),
            ("$-", "$-"),
            ("$1", ""),
            ("x${B}y", "xtwo wordsy"),
        ];
        for (input, want) in cases {
            assert_eq!(
                lex.process_word(input, &env()).as_deref(),
                Ok(want),
                "{input}"
            );
        }
    }

    #[test]
    fn pattern_trimming() {
        let lex = Lexer::default();
        let mut e = env();
        e.insert("F".into(), "/home/u/book.tar.bz2".into());
        e.insert("V".into(), "v1.2.3".into());
        let cases = [
            ("${F#*/}", "home/u/book.tar.bz2"),
            ("${F##*/}", "book.tar.bz2"),
            ("${F%.*}", "/home/u/book.tar"),
            ("${F%%.*}", "/home/u/book"),
            ("${V#v}", "1.2.3"),
            ("${V#x}", "v1.2.3"),
            ("${V%.?}", "v1.2"),
            ("${UNSET#x}", ""),
            ("${F##*/$UNSET}", "book.tar.bz2"),
        ];
        for (input, want) in cases {
            assert_eq!(lex.process_word(input, &e).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        let e = env();
        assert_eq!(lex.process_word("`$A", &e).as_deref(), Ok("$A"));
        assert_eq!(lex.process_word("c:\\$A", &e).as_deref(), Ok("c:\\hello"));
        assert_eq!(lex.process_word("\"`\"\"", &e).as_deref(), Ok("\""));
    }

    #[test]
    fn process_words_splits_unquoted_values() {
        let lex = Lexer::default();
        let cases: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            ("$B", &["two", "words"]),
            ("\"$B\"", &["two words"]),
            ("x$B", &["xtwo", "words"]),
            ("'a b' c", &["a b", "c"]),
            ("a\\ b", &["a b"]),
            ("", &[]),
        ];
        for (input, want) in cases {
            let got = lex.process_words(input, &env()).expect(input);
            assert_eq!(got, *want, "{input}");
        }
    }

    #[test]
    fn errors() {
        let lex = Lexer::default();
        let cases = [
            ("${A", "syntax error: missing '}'"),
            ("${UNSET:-abc", "syntax error: missing '}'"),
            ("${}", "bad substitution"),
            ("${A/x/y}", "unsupported modifier (/) in substitution"),
            ("${A:=x}", "unsupported modifier (:=) in substitution"),
            ("${UNSET:?must be set}", "UNSET: must be set"),
            ("${EMPTY:?}", "EMPTY: is not allowed to be unset"),
            (
                "'abc",
                "unexpected end of statement while looking for matching single-quote",
            ),
            (
                "\"abc",
                "unexpected end of statement while looking for matching double-quote",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                lex.process_word(input, &env()),
                Err(ExpandError(want.to_string())),
                "{input}"
            );
        }
        assert_eq!(lex.process_word("${EMPTY?}", &env()).as_deref(), Ok(""));
    }

    #[test]
    fn heredoc_bodies() {
        let lex = Lexer::default();
        assert_eq!(
            lex.process_heredoc("echo \"$A\" '${UNSET:-x}' \\$A \\\\ \\n\n", &env())
                .as_deref(),
            Ok("echo \"hello\" 'x' $A \\ \\n\n")
        );
    }

    #[test]
    fn env_list_lookup_last_wins() {
        let env = vec!["A=1".to_string(), "B".to_string(), "A=2=3".to_string()];
        assert_eq!(env.as_slice().lookup("A").as_deref(), Some("2=3"));
        assert_eq!(env.as_slice().lookup("B").as_deref(), Some(""));
        assert_eq!(env.as_slice().lookup("C"), None);
    }

    #[test]
    fn which_instructions_expand() {
        for k in [
            "add",
            "copy",
            "env",
            "expose",
            "from",
            "label",
            "stopsignal",
            "user",
            "volume",
            "workdir",
            "arg",
        ] {
            assert!(expands(k), "{k}");
        }
        for k in [
            "run",
            "cmd",
            "entrypoint",
            "shell",
            "healthcheck",
            "onbuild",
            "maintainer",
        ] {
            assert!(!expands(k), "{k}");
        }
    }
}
