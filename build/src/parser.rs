//! Dockerfile text → a flat list of [`Node`]s.
//!
//! This layer knows the line structure of a Dockerfile: parser directives at the top
//! (`# escape=`, `# syntax=`, `# check=`), comments, line continuations with the escape
//! character, empty continuation lines (kept with a warning, as BuildKit does), heredocs
//! (`<<EOF`, `<<-EOF`, quoted delimiters, several per line) and the split of each
//! instruction into keyword, `--flags`, argument text and — for the instructions that
//! accept it — the JSON (exec) form. It does not give meaning to the arguments: that is
//! [`crate::instructions`]' job, which is also where unknown instructions are refused
//! (as in BuildKit, where the low-level parser keeps them).

use std::collections::BTreeSet;

use crate::error::ParseError;

/// The escape character used when a Dockerfile has no `# escape=` directive.
pub const DEFAULT_ESCAPE: char = '\\';

/// A here-document attached to a `RUN`, `COPY` or `ADD` line (or an `ONBUILD` of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with its quotes removed, e.g. `EOF`.
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub fd: u32,
    /// False when any part of the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): then the
    /// content is used as written, with no variable expansion.
    pub expand: bool,
    /// True for `<<-EOF`: leading tabs are stripped from each content line and from the
    /// terminator.
    pub chomp: bool,
    /// The lines between the instruction and the terminator, each with its newline, as
    /// written (tabs not yet stripped; see [`Heredoc::data`]).
    pub content: String,
}

impl Heredoc {
    /// The content as the heredoc delivers it: with leading tabs stripped from every line
    /// when `chomp` is set.
    pub fn data(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// One instruction as it appears in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword, lower-cased (`run`, `copy`, ...).
    pub keyword: String,
    /// The keyword as written, for error messages.
    pub raw_keyword: String,
    /// Leading `--name[=value]` words, quotes removed, in order.
    pub flags: Vec<String>,
    /// The argument text after the flags, trimmed (continuations joined).
    pub args: String,
    /// For RUN/CMD/ENTRYPOINT/SHELL/ADD/COPY/VOLUME (and the command of HEALTHCHECK):
    /// the JSON array when the arguments are one.
    pub json: Option<Vec<String>>,
    /// Heredocs read after this line, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The whole logical line (continuations joined, comments dropped).
    pub original: String,
    /// For ONBUILD: the wrapped instruction.
    pub child: Option<Box<Node>>,
    /// 1-based line of the instruction's first line.
    pub start_line: usize,
    /// 1-based line of the instruction's last line (heredoc terminators included).
    pub end_line: usize,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// The value of a `# syntax=` directive, if any (recorded, not acted on).
    pub syntax: Option<String>,
    /// The instructions, in file order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings (empty continuation lines), in BuildKit's wording.
    pub warnings: Vec<String>,
}

const DIRECTIVES: [&str; 3] = ["escape", "syntax", "check"];

struct Directives {
    escape: char,
    syntax: Option<String>,
    done: bool,
    seen: BTreeSet<String>,
}

impl Directives {
    /// Looks at one line while directives may still appear; the first line that is not a
    /// known directive ends the directive section.
    fn possible_directive(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = parse_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !DIRECTIVES.contains(&key.as_str()) {
            self.done = true;
            return Ok(());
        }
        if !self.seen.insert(key.clone()) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        match key.as_str() {
            "escape" => {
                if value != "`" && value != "\\" {
                    return Err(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    ));
                }
                self.escape = if value == "`" { '`' } else { '\\' };
            }
            "syntax" => self.syntax = Some(value.to_string()),
            _ => {} // check=: lint settings, ignored here
        }
        Ok(())
    }
}

/// `#\s*name\s*=\s*value\s*` with a name of `[a-zA-Z][a-zA-Z0-9]*` and a non-empty value.
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, after) = rest.split_at(name_len);
    let value = after.trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

/// Removes a trailing escape character (followed only by blanks) that is not itself
/// escaped; returns the line and whether it ended the instruction.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

/// Instructions whose arguments may be a JSON array kept as one command.
const MAYBE_JSON: [&str; 4] = ["run", "cmd", "entrypoint", "shell"];
/// Instructions whose arguments are a JSON array or whitespace-separated words.
const JSON_TO_LIST: [&str; 3] = ["add", "copy", "volume"];
/// Instructions that may carry heredocs.
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["run", "copy", "add"];

/// Parses a Dockerfile's text.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut d = Directives {
        escape: DEFAULT_ESCAPE,
        syntax: None,
        done: false,
        seen: BTreeSet::new(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start_line = i + 1;
        let first =
            process_line(&mut d, lines[i], true).map_err(|m| ParseError::new(start_line, m))?;
        i += 1;
        let (mut line, mut end) = trim_continuation(&first, d.escape);
        if end && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !end && i < lines.len() {
            let raw = lines[i];
            let processed =
                process_line(&mut d, raw, false).map_err(|m| ParseError::new(i + 1, m))?;
            i += 1;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, e) = trim_continuation(&processed, d.escape);
            line.push_str(&part);
            end = e;
        }
        if empty_continuation {
            warnings.push(format!(
                "[WARNING]: Empty continuation line found in:\n    {line}"
            ));
        }
        let mut node = node_from_line(&line).map_err(|m| ParseError::new(start_line, m))?;
        if can_contain_heredoc(&node) {
            for mut heredoc in heredocs_from_line(&line) {
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    let mut candidate = trim_newline(raw);
                    if heredoc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(raw);
                }
                if !terminated {
                    return Err(ParseError::new(start_line, "unterminated heredoc"));
                }
                node.heredocs.push(heredoc);
            }
        }
        node.start_line = start_line;
        node.end_line = i;
        nodes.push(node);
    }
    if !warnings.is_empty() {
        warnings.push(
            "[WARNING]: Empty continuation lines will become errors in a future release."
                .to_string(),
        );
    }
    if nodes.is_empty() {
        return Err(ParseError::new(lines.len(), "file with no instructions"));
    }
    Ok(Dockerfile {
        escape: d.escape,
        syntax: d.syntax,
        nodes,
        warnings,
    })
}

/// Strips the newline (and, for a first line, leading blanks), checks for a directive,
/// and drops the line when it is a comment.
fn process_line(d: &mut Directives, raw: &str, strip_left: bool) -> Result<String, String> {
    let mut token = trim_newline(raw);
    if strip_left {
        token = token.trim_start();
    }
    d.possible_directive(token)?;
    if token.starts_with('#') {
        return Ok(String::new());
    }
    Ok(token.to_string())
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.keyword[..], &node.child) {
        ("onbuild", Some(child)) => child,
        _ => node,
    };
    HEREDOC_INSTRUCTIONS.contains(&node.keyword.as_str()) && node.json.is_none()
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// Splits a logical line into keyword, flags and arguments, and reads the JSON form
/// where the instruction has one.
pub(crate) fn node_from_line(line: &str) -> Result<Node, String> {
    let line_trimmed = line.trim();
    let (raw_keyword, rest) = match line_trimmed.find(is_blank) {
        Some(p) => (
            &line_trimmed[..p],
            line_trimmed[p..].trim_start_matches(is_blank),
        ),
        None => (line_trimmed, ""),
    };
    let keyword = raw_keyword.to_ascii_lowercase();
    let (args, flags) = extract_flags(rest);
    let args = args.trim().to_string();
    let mut node = Node {
        keyword: keyword.clone(),
        raw_keyword: raw_keyword.to_string(),
        flags,
        args,
        json: None,
        heredocs: Vec::new(),
        original: line.to_string(),
        child: None,
        start_line: 0,
        end_line: 0,
    };
    if MAYBE_JSON.contains(&keyword.as_str()) || JSON_TO_LIST.contains(&keyword.as_str()) {
        node.json = parse_json(&node.args)?;
    } else if keyword == "healthcheck" {
        let cmd = node
            .args
            .find(char::is_whitespace)
            .map_or("", |p| node.args[p..].trim_start());
        node.json = parse_json(cmd)?;
    } else if keyword == "onbuild" && !node.args.is_empty() {
        node.child = Some(Box::new(node_from_line(&node.args)?));
    }
    Ok(node)
}

/// `Some(words)` when `s` is a JSON array of strings, `None` when it is not a JSON
/// array at all, and an error when it is an array with a non-string element.
fn parse_json(s: &str) -> Result<Option<Vec<String>>, String> {
    let s = s.trim_start();
    if !s.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(s) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Takes the leading `--flag` words off the arguments. Quotes inside a flag word are
/// removed and a backslash escapes the next character; a lone `--` ends the flags.
fn extract_flags(line: &str) -> (&str, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut flags = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            return ("", flags);
        }
        let start = chars[i].0;
        let is_flag = chars[i].1 == '-' && chars.get(i + 1).is_some_and(|c| c.1 == '-');
        if !is_flag {
            return (&line[start..], flags);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i].1;
            match quote {
                None if c.is_whitespace() => break,
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if let Some(&(_, n)) = chars.get(i + 1) {
                        word.push(n);
                        i += 1;
                    }
                }
                _ => word.push(c),
            }
            i += 1;
        }
        if word == "--" {
            let rest = chars.get(i).map_or("", |&(p, _)| &line[p..]);
            return (rest, flags);
        }
        flags.push(word);
    }
}

/// Splits a line into words on unquoted blanks, keeping quotes and backslashes as
/// written (enough to find heredoc markers).
fn raw_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                word.push(c);
                if c == q {
                    quote = None;
                } else if c == '\\' && q == '"' {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                word.push(c);
                if c == '\'' || c == '"' {
                    quote = Some(c);
                } else if c == '\\' {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Removes shell quoting from a heredoc delimiter: `"EOF"`, `'EOF'`, `E"O"F`, `\EOF`.
fn unquote_delimiter(s: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

/// Recognises one word of the form `[fd]<<[-]DELIM` (DELIM with no `<`).
pub(crate) fn parse_heredoc_marker(word: &str) -> Option<Heredoc> {
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote_delimiter(rest);
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return None;
    }
    let quoted = rest.contains(['\'', '"', '\\']);
    Some(Heredoc {
        name,
        fd: word[..digits].parse().unwrap_or(0),
        expand: !quoted,
        chomp,
        content: String::new(),
    })
}

fn heredocs_from_line(line: &str) -> Vec<Heredoc> {
    raw_words(line)
        .iter()
        .filter_map(|w| parse_heredoc_marker(w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Node {
        let df = parse(src).expect("parses");
        assert_eq!(df.nodes.len(), 1, "{:?}", df.nodes);
        df.nodes.into_iter().next().expect("one node")
    }

    #[test]
    fn keywords_flags_args_and_lines() {
        let df = parse(
            "FROM alpine\n\n# comment\nrun --mount=type=cache,target=/x --network=none echo hi\n",
        )
        .expect("parses");
        assert_eq!(df.nodes.len(), 2);
        assert_eq!(df.nodes[0].keyword, "from");
        assert_eq!(df.nodes[0].args, "alpine");
        assert_eq!(df.nodes[0].start_line, 1);
        let run = &df.nodes[1];
        assert_eq!(run.keyword, "run");
        assert_eq!(run.raw_keyword, "run");
        assert_eq!(
            run.flags,
            vec!["--mount=type=cache,target=/x", "--network=none"]
        );
        assert_eq!(run.args, "echo hi");
        assert_eq!(run.start_line, 4);
        assert_eq!(run.json, None);
    }

    #[test]
    fn flag_values_lose_quotes_and_double_dash_ends_flags() {
        let n = one("COPY --chown=\"1:1\" --link -- --weird /dst\n");
        assert_eq!(n.flags, vec!["--chown=1:1", "--link"]);
        assert_eq!(n.args, "--weird /dst");
    }

    #[test]
    fn json_forms() {
        let cases: &[(&str, Option<Vec<&str>>)] = &[
            ("CMD [\"a\", \"b c\"]", Some(vec!["a", "b c"])),
            ("CMD [\"a\", \"b\"] trailing", None),
            ("CMD [a, b]", None),
            ("CMD echo [\"a\"]", None),
            ("ENTRYPOINT []", Some(vec![])),
            ("COPY [\"a b\", \"/x/\"]", Some(vec!["a b", "/x/"])),
            ("VOLUME [\"/data\"]", Some(vec!["/data"])),
            (
                "HEALTHCHECK CMD [\"curl\", \"-f\"]",
                Some(vec!["curl", "-f"]),
            ),
            ("LABEL [\"a\"]", None),
        ];
        for (src, want) in cases {
            let n = one(src);
            let want = want
                .as_ref()
                .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(n.json, want, "{src}");
        }
    }

    #[test]
    fn json_with_non_string_is_an_error() {
        let err = parse("FROM a\nCMD [\"a\", 1]\n").expect_err("non-string element");
        assert_eq!(
            err.to_string(),
            "dockerfile parse error line 2: when using JSON array syntax, arrays must be comprised of strings only"
        );
    }

    #[test]
    fn continuations_comments_and_empty_lines() {
        let src = "FROM a\nRUN echo a \\\n  # inner comment\n\n    b \\\n c\nENV X=1\n";
        let df = parse(src).expect("parses");
        assert_eq!(df.nodes.len(), 3);
        let run = &df.nodes[1];
        assert_eq!(run.args, "echo a     b  c");
        assert_eq!((run.start_line, run.end_line), (2, 6));
        assert_eq!(df.nodes[2].start_line, 7);
        assert_eq!(df.warnings.len(), 2);
        assert!(df.warnings[0].starts_with("[WARNING]: Empty continuation line found in:"));
    }

    #[test]
    fn escaped_escape_at_end_is_not_a_continuation() {
        let df = parse("FROM a\nRUN echo \\\\\nRUN b\n").expect("parses");
        assert_eq!(df.nodes.len(), 3);
        assert_eq!(df.nodes[1].args, "echo \\\\");
    }

    #[test]
    fn backtick_escape_directive() {
        let src = "# escape=`\n# syntax=docker/dockerfile:1\nFROM windows\nRUN dir c:\\ `\n  && echo done\nCOPY a\\b c:\\\n";
        let df = parse(src).expect("parses");
        assert_eq!(df.escape, '`');
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.nodes[1].args, "dir c:\\   && echo done");
    }

    #[test]
    fn directives() {
        let df = parse("# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=all\nFROM windows\nRUN dir c:\\ `\n  && echo done\nCOPY a\\b c:\\\n")
            .expect("parses");
        assert_eq!(df.escape, '`');
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.nodes.len(), 3);
        assert_eq!(df.nodes[1].args, "dir c:\\   && echo done");
        assert_eq!(df.nodes[2].args, "a\\b c:\\");

        // A directive after a comment, an empty line or an instruction is a comment.
        for src in [
            "# hello\n# escape=`\nFROM a\nRUN a \\\nb\n",
            "\n# escape=`\nFROM a\nRUN a \\\nb\n",
            "FROM a\n# escape=`\nRUN a \\\nb\n",
            "# unknown=x\n# escape=`\nFROM a\nRUN a \\\nb\n",
        ] {
            let df = parse(src).expect("parses");
            assert_eq!(df.escape, '\\', "{src:?}");
            assert_eq!(df.nodes.len(), 2, "{src:?}");
        }
        // Case and spacing of directives.
        let df = parse("#   ESCAPE  =  `  \nFROM a\n").expect("parses");
        assert_eq!(df.escape, '`');
    }

    #[test]
    fn directive_errors() {
        let cases = [
            (
                "# escape=x\nFROM a\n",
                "dockerfile parse error line 1: invalid escape token 'x' does not match ` or \\",
            ),
            (
                "# escape=`\n# escape=\\\nFROM a\n",
                "dockerfile parse error line 2: only one escape parser directive can be used",
            ),
            (
                "# syntax=a\n# syntax=b\nFROM a\n",
                "dockerfile parse error line 2: only one syntax parser directive can be used",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(parse(src).expect_err(src).to_string(), want);
        }
    }

    #[test]
    fn no_instructions() {
        for src in ["", "\n\n", "# just a comment\n", "# escape=`\n"] {
            let err = parse(src).expect_err(src);
            assert_eq!(err.message, "file with no instructions");
        }
        assert_eq!(
            parse("\n# c\n\n").expect_err("empty").to_string(),
            "dockerfile parse error line 3: file with no instructions"
        );
    }

    #[test]
    fn bom_and_crlf() {
        let df = parse("\u{feff}FROM a\r\nRUN b \\\r\n c\r\n").expect("parses");
        assert_eq!(df.nodes[0].args, "a");
        assert_eq!(df.nodes[1].args, "b  c");
    }

    #[test]
    fn heredocs_basic() {
        let src = "FROM a\nRUN <<EOF\necho hi\n  echo there\nEOF\nRUN b\n";
        let df = parse(src).expect("parses");
        let run = &df.nodes[1];
        assert_eq!(run.args, "<<EOF");
        assert_eq!(run.heredocs.len(), 1);
        let h = &run.heredocs[0];
        assert_eq!(h.name, "EOF");
        assert!(h.expand);
        assert!(!h.chomp);
        assert_eq!(h.content, "echo hi\n  echo there\n");
        assert_eq!((run.start_line, run.end_line), (2, 5));
        assert_eq!(df.nodes[2].start_line, 6);
    }

    #[test]
    fn heredoc_variants() {
        let src = "FROM a\nRUN 3<<-\"END\" cat <<'X' >f\n\t\tline $A\n\tEND\nx $B\nX\nCOPY <<one.txt <<two.txt /dst/\n1\none.txt\n2\ntwo.txt\n";
        let df = parse(src).expect("parses");
        let run = &df.nodes[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].name, "END");
        assert_eq!(run.heredocs[0].fd, 3);
        assert!(run.heredocs[0].chomp);
        assert!(!run.heredocs[0].expand);
        assert_eq!(run.heredocs[0].content, "\t\tline $A\n");
        assert_eq!(run.heredocs[0].data(), "line $A\n");
        assert_eq!(run.heredocs[1].name, "X");
        assert!(!run.heredocs[1].expand);
        assert_eq!(run.heredocs[1].content, "x $B\n");
        let copy = &df.nodes[2];
        assert_eq!(copy.start_line, 7);
        let names: Vec<_> = copy.heredocs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["one.txt", "two.txt"]);
        assert_eq!(copy.heredocs[1].content, "2\n");
        assert_eq!(copy.end_line, 11);
    }

    #[test]
    fn heredoc_not_recognised() {
        // JSON form, other instructions and `a<<b` do not start heredocs.
        let df =
            parse("FROM a\nRUN [\"<<EOF\"]\nEOF\nLABEL a=<<EOF\nRUN echo a<<b\n").expect("parses");
        assert!(df.nodes.iter().all(|n| n.heredocs.is_empty()));
        assert_eq!(df.nodes.len(), 5);
    }

    #[test]
    fn heredoc_in_onbuild_and_unterminated() {
        let df = parse("FROM a\nONBUILD RUN <<EOF\nx\nEOF\n").expect("parses");
        assert_eq!(df.nodes[1].heredocs.len(), 1);
        assert_eq!(
            df.nodes[1].child.as_ref().map(|c| c.keyword.as_str()),
            Some("run")
        );
        let err = parse("FROM a\nRUN <<EOF\nx\n").expect_err("unterminated");
        assert_eq!(
            err.to_string(),
            "dockerfile parse error line 2: unterminated heredoc"
        );
    }

    #[test]
    fn heredoc_edge_cases() {
        let src = "FROM a\nRUN \"<<NOHEREDOC\"\nRUN <<EMPTY\nEMPTY\nRUN 3<<FD cat <&3\nx\nFD\nRUN <<'EOF' | python\nprint(\"$HOME\")\nEOF\nRUN <<X\r\n# not a comment \\\r\nX\r\nADD <<EOF foo.txt /bar/\ninline\nEOF\n";
        let df = parse(src).expect("parses");
        let n = &df.nodes;
        assert_eq!(n.len(), 7);
        assert!(n[1].heredocs.is_empty(), "a quoted marker is a plain word");
        assert_eq!(n[2].heredocs[0].content, "");
        assert_eq!((n[2].start_line, n[2].end_line), (3, 4));
        assert_eq!(n[3].heredocs[0].fd, 3);
        assert_eq!(n[3].heredocs[0].content, "x\n");
        assert_eq!(n[4].heredocs[0].name, "EOF");
        assert!(!n[4].heredocs[0].expand);
        assert_eq!(n[4].args, "<<'EOF' | python");
        assert_eq!(
            n[5].heredocs[0].content, "# not a comment \\\r\n",
            "heredoc lines are raw"
        );
        assert_eq!(n[6].heredocs[0].content, "inline\n");
        assert_eq!(n[6].start_line, 14);
        // A heredoc marker on an instruction that takes none is not one: the body lines
        // become instructions of their own.
        let df = parse("FROM a\nUSER <<INVALID\nINVALID\n").expect("parses");
        assert_eq!(df.nodes.len(), 3);
        assert_eq!(df.nodes[2].keyword, "invalid");
        assert_eq!(df.nodes[2].start_line, 3);
    }

    #[test]
    fn markers() {
        assert!(parse_heredoc_marker("<<EOF").is_some());
        assert!(parse_heredoc_marker("<<").is_none());
        assert!(parse_heredoc_marker("<<<EOF").is_none());
        assert!(parse_heredoc_marker("x<<EOF").is_none());
        let h = parse_heredoc_marker("<<E\"O\"F").expect("marker");
        assert_eq!(h.name, "EOF");
        assert!(!h.expand);
    }
}
