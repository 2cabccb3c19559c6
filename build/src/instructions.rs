//! Parsed nodes → typed instructions, grouped into stages.
//!
//! Each instruction is checked the way BuildKit checks it (argument counts, allowed
//! flags, JSON-only SHELL, HEALTHCHECK options, RUN `--mount` options, ONBUILD triggers)
//! and errors carry Docker's wording and the instruction's line. Values are kept as
//! written (unexpanded); [`mod@crate::plan`] expands the ones Docker expands.

use std::collections::BTreeMap;

use crate::error::{ExpandError, ParseError};
use crate::parser::{self, Dockerfile, Heredoc, Node};

/// `KEY=value` of ENV and LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The name (unexpanded).
    pub key: String,
    /// The value (unexpanded, quotes still in place).
    pub value: String,
}

/// One name of an ARG line, with its default if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The argument's name.
    pub name: String,
    /// `Some(v)` for `ARG NAME=v` (unexpanded), `None` for `ARG NAME`.
    pub default: Option<String>,
}

/// FROM: the start of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The image or stage reference (unexpanded; may use global ARGs).
    pub image: String,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// `--platform=` (unexpanded).
    pub platform: Option<String>,
}

/// A heredoc used as a file: a RUN heredoc or a COPY/ADD heredoc source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The delimiter (for COPY/ADD, the file name created).
    pub name: String,
    /// The content (tabs already stripped for `<<-`).
    pub data: String,
    /// Whether variables in `data` are to be expanded (unquoted delimiter).
    pub expand: bool,
}

impl InlineFile {
    fn from_heredoc(h: &Heredoc) -> Self {
        InlineFile {
            name: h.name.clone(),
            data: h.data(),
            expand: h.expand,
        }
    }
}

/// The command of RUN, CMD or ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the words. Shell form: one element, the command text.
    pub args: Vec<String>,
    /// True for the shell form: the stage's SHELL is put in front when run.
    pub shell_form: bool,
    /// Heredocs following the line (RUN only).
    pub files: Vec<InlineFile>,
}

/// `RUN --mount=type=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// `type=bind` (the default): files from the context or another stage/image.
    Bind,
    /// `type=cache`: a persistent cache directory.
    Cache,
    /// `type=tmpfs`.
    Tmpfs,
    /// `type=secret`: a secret file or env variable.
    Secret,
    /// `type=ssh`: an SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name as written in the Dockerfile.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Concurrent builds share the cache (default).
    Shared,
    /// Each concurrent writer gets its own copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One `--mount` of RUN, with BuildKit's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount type.
    pub kind: MountType,
    /// `from=`: a stage name/index or an image to take files from.
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// `ro`/`rw`; by default cache and tmpfs mounts are writable, the others read-only.
    pub read_only: bool,
    /// `id=` (cache or secret id).
    pub id: Option<String>,
    /// `sharing=` (cache only; `Shared` when not given for a cache mount).
    pub sharing: Option<Sharing>,
    /// `required` (secret and ssh).
    pub required: bool,
    /// `mode=` (octal; cache, secret, ssh).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// `size=` (tmpfs), as written.
    pub size: Option<String>,
    /// `env=` (secret): expose the secret as this environment variable.
    pub env: Option<String>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default network.
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// The `--mount` values as written (the planner re-parses them after expansion).
    pub mount_specs: Vec<String>,
    /// The mounts, parsed; values that use variables are filled in by the planner.
    pub mounts: Vec<Mount>,
    /// `--network=`.
    pub network: Option<NetworkMode>,
    /// `--security=insecure|sandbox`.
    pub security: Option<String>,
}

/// COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transfer {
    /// `--from=` (COPY only): stage name, stage index or image.
    pub from: Option<String>,
    /// `--chown=`.
    pub chown: Option<String>,
    /// `--chmod=`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude=` patterns.
    pub excludes: Vec<String>,
    /// `--checksum=` (ADD only; only for URL sources).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: bool,
    /// Source paths or (ADD) URLs, unexpanded.
    pub sources: Vec<String>,
    /// Heredoc sources (`COPY <<EOF /dst`).
    pub inline: Vec<InlineFile>,
    /// The destination, unexpanded.
    pub dest: String,
    /// True when written in JSON form.
    pub json: bool,
}

impl Transfer {
    /// Whether `src` is a remote source for ADD (http(s) URL or git).
    pub fn is_url(src: &str) -> bool {
        src.starts_with("http://")
            || src.starts_with("https://")
            || src.starts_with("git@")
            || src.starts_with("git://")
    }
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Cmd {
        /// `["CMD", args...]` (exec form) or `["CMD-SHELL", command]` (shell form).
        test: Vec<String>,
        /// `--interval`, nanoseconds.
        interval: Option<u64>,
        /// `--timeout`, nanoseconds.
        timeout: Option<u64>,
        /// `--start-period`, nanoseconds.
        start_period: Option<u64>,
        /// `--start-interval`, nanoseconds.
        start_interval: Option<u64>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// ONBUILD: a trigger for builds that use this image as their base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBuild {
    /// The trigger as stored in the image's `OnBuild` (the text after `ONBUILD`, with
    /// any heredoc bodies and terminators appended).
    pub expression: String,
    /// The wrapped instruction, parsed (never ONBUILD, FROM or MAINTAINER).
    pub trigger: Box<Instruction>,
}

/// A typed Dockerfile instruction (values unexpanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// CMD.
    Cmd(CommandLine),
    /// ENTRYPOINT (exec form `[]` clears it).
    Entrypoint(CommandLine),
    /// ENV, both `ENV K V` and `ENV K=V ...`.
    Env(Vec<KeyValue>),
    /// ARG, one or more names.
    Arg(Vec<ArgDecl>),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// EXPOSE, the specs as written (sorted, as BuildKit does).
    Expose(Vec<String>),
    /// VOLUME.
    Volume(Vec<String>),
    /// USER.
    User(String),
    /// WORKDIR.
    Workdir(String),
    /// COPY.
    Copy(Transfer),
    /// ADD.
    Add(Transfer),
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// ONBUILD: the wrapped instruction and its text.
    Onbuild(OnBuild),
    /// MAINTAINER (deprecated; becomes the `maintainer` label).
    Maintainer(String),
    /// SHELL (JSON form only).
    Shell(Vec<String>),
}

impl Instruction {
    /// The instruction's keyword in upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Shell(_) => "SHELL",
        }
    }
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The instruction.
    pub instruction: Instruction,
    /// First line (1-based).
    pub line: usize,
    /// Last line.
    pub end_line: usize,
    /// The logical line as written (for ONBUILD triggers, the trigger text).
    pub original: String,
}

/// A build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The FROM.
    pub from: From,
    /// The FROM's line.
    pub line: usize,
    /// The instructions after FROM.
    pub commands: Vec<Command>,
}

/// A Dockerfile as stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// The escape character.
    pub escape: char,
    /// The `# syntax=` directive.
    pub syntax: Option<String>,
    /// ARG instructions before the first FROM (global scope).
    pub meta_args: Vec<Command>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
    /// The parser's warnings.
    pub warnings: Vec<String>,
}

/// Parses Dockerfile text into stages.
pub fn parse_dockerfile(src: &str) -> Result<Stages, ParseError> {
    stages(&parser::parse(src)?)
}

/// Groups a parsed Dockerfile's instructions into global ARGs and stages.
pub fn stages(df: &Dockerfile) -> Result<Stages, ParseError> {
    let mut out = Stages {
        escape: df.escape,
        syntax: df.syntax.clone(),
        meta_args: Vec::new(),
        stages: Vec::new(),
        warnings: df.warnings.clone(),
    };
    for node in &df.nodes {
        let cmd = parse_node(node, df.escape)?;
        match (&cmd.instruction, out.stages.last_mut()) {
            (Instruction::From(from), _) => out.stages.push(Stage {
                from: from.clone(),
                line: cmd.line,
                commands: Vec::new(),
            }),
            (Instruction::Arg(_), None) => out.meta_args.push(cmd),
            (_, Some(stage)) => stage.commands.push(cmd),
            (_, None) => {
                return Err(ParseError::new(
                    cmd.line,
                    "no build stage in current context",
                ))
            }
        }
    }
    Ok(out)
}

/// Converts one node to a typed instruction; errors carry the node's start line.
/// `escape` is the Dockerfile's escape character.
pub fn parse_node(node: &Node, escape: char) -> Result<Command, ParseError> {
    let instruction = instruction(node, escape).map_err(|m| ParseError::new(node.start_line, m))?;
    let original = match &instruction {
        Instruction::Onbuild(o) => o.expression.clone(),
        _ => node.original.trim().to_string(),
    };
    Ok(Command {
        instruction,
        line: node.start_line,
        end_line: node.end_line,
        original,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    Strings,
}

/// Checks `--flags` against what an instruction accepts, with BuildKit's messages.
fn parse_flags(
    flags: &[String],
    spec: &[(&str, FlagKind)],
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for flag in flags {
        let Some(body) = flag.strip_prefix("--") else {
            return Err(format!("Arg should start with -- : {flag}"));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(_, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            return Err(format!("Unknown flag: {name}"));
        };
        if used.contains_key(name) && kind != FlagKind::Strings {
            return Err(format!("Duplicate flag specified: {name}"));
        }
        let v = match (kind, value) {
            (FlagKind::Bool, None) => "true".to_string(),
            (FlagKind::Bool, Some("")) => return Err(format!("Missing a value on flag: {name}")),
            (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" => "true".to_string(),
                "false" => "false".to_string(),
                _ => return Err(format!("Expecting boolean value for flag {name}, not: {v}")),
            },
            (_, None) => return Err(format!("Missing a value on flag: {name}")),
            (_, Some(v)) => v.to_string(),
        };
        used.entry(name.to_string()).or_default().push(v);
    }
    Ok(used)
}

fn flag_str(f: &BTreeMap<String, Vec<String>>, name: &str) -> Option<String> {
    f.get(name).and_then(|v| v.last().cloned())
}

fn flag_bool(f: &BTreeMap<String, Vec<String>>, name: &str) -> bool {
    flag_str(f, name).as_deref() == Some("true")
}

/// Splits on runs of blanks, as BuildKit's whitespace-delimited arguments.
fn split_ws(s: &str) -> Vec<String> {
    s.split([' ', '\t', '\u{b}', '\u{c}', '\r'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits into words on unquoted whitespace, keeping quotes and escapes in the words
/// (they are removed by expansion later), as BuildKit's parseWords.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            None => {
                if c.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    in_word = false;
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    if i + 1 == chars.len() {
                        i += 1;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        i += 1;
                        quote = None;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(c);
            }
        }
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV and LABEL: `K V` (legacy, one pair) or `K=V K2=V2 ...`.
fn parse_name_val(rest: &str, cmd: &str, escape: char) -> Result<Vec<KeyValue>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{cmd} requires at least one argument"));
    };
    if !first.contains('=') {
        let rest = rest.trim_start();
        let Some(p) = rest.find([' ', '\t', '\u{b}', '\u{c}', '\r']) else {
            return Err(format!("{cmd} must have two arguments"));
        };
        let key = &rest[..p];
        let value = rest[p..].trim_start_matches([' ', '\t', '\u{b}', '\u{c}', '\r']);
        return Ok(vec![KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        }]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{cmd} names can not be blank")),
            Some((k, v)) => Ok(KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            }),
            None => Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

fn command_line(node: &Node) -> CommandLine {
    match &node.json {
        Some(words) => CommandLine {
            args: words.clone(),
            shell_form: false,
            files: Vec::new(),
        },
        None => CommandLine {
            args: if node.args.is_empty() {
                Vec::new()
            } else {
                vec![node.args.clone()]
            },
            shell_form: true,
            files: node.heredocs.iter().map(InlineFile::from_heredoc).collect(),
        },
    }
}

fn no_flags(node: &Node) -> Result<(), String> {
    parse_flags(&node.flags, &[]).map(|_| ())
}

fn exactly_one(node: &Node, cmd: &str) -> Result<String, String> {
    if node.args.is_empty() {
        return Err(format!("{cmd} requires exactly one argument"));
    }
    no_flags(node)?;
    Ok(node.args.clone())
}

fn instruction(node: &Node, escape: char) -> Result<Instruction, String> {
    use FlagKind::*;
    Ok(match node.keyword.as_str() {
        "from" => {
            let args = split_ws(&node.args);
            let name = match args.len() {
                1 => None,
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let name = args[2].to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(format!(
                            "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                            args[2]
                        ));
                    }
                    Some(name)
                }
                _ => return Err("FROM requires either one or three arguments".to_string()),
            };
            let f = parse_flags(&node.flags, &[("platform", Str)])?;
            Instruction::From(From {
                image: args[0].clone(),
                name,
                platform: flag_str(&f, "platform"),
            })
        }
        "run" => {
            let f = parse_flags(
                &node.flags,
                &[("mount", Strings), ("network", Str), ("security", Str)],
            )?;
            let network = match flag_str(&f, "network").as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => return Err(format!("unsupported network mode {other:?}")),
            };
            let security = flag_str(&f, "security");
            if let Some(s) = &security {
                if s != "insecure" && s != "sandbox" {
                    return Err(format!("unsupported security mode {s:?}"));
                }
            }
            let mount_specs = f.get("mount").cloned().unwrap_or_default();
            let mounts = mount_specs
                .iter()
                .map(|m| parse_mount(m, None))
                .collect::<Result<Vec<_>, _>>()?;
            Instruction::Run(Run {
                command: command_line(node),
                mount_specs,
                mounts,
                network,
                security,
            })
        }
        "cmd" => {
            no_flags(node)?;
            Instruction::Cmd(command_line(node))
        }
        "entrypoint" => {
            no_flags(node)?;
            Instruction::Entrypoint(command_line(node))
        }
        "env" => {
            let kv = parse_name_val(&node.args, "ENV", escape)?;
            no_flags(node)?;
            Instruction::Env(kv)
        }
        "label" => {
            no_flags(node)?;
            Instruction::Label(parse_name_val(&node.args, "LABEL", escape)?)
        }
        "maintainer" => Instruction::Maintainer(exactly_one(node, "MAINTAINER")?),
        "arg" => {
            let words = parse_words(&node.args, escape);
            if words.is_empty() {
                return Err("ARG requires at least one argument".to_string());
            }
            let decls = words
                .iter()
                .map(|w| match w.split_once('=') {
                    Some(("", _)) => Err("ARG names can not be blank".to_string()),
                    Some((k, v)) => Ok(ArgDecl {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    }),
                    None => Ok(ArgDecl {
                        name: w.clone(),
                        default: None,
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            no_flags(node)?;
            Instruction::Arg(decls)
        }
        "expose" => {
            let mut ports = split_ws(&node.args);
            if ports.is_empty() {
                return Err("EXPOSE requires at least one argument".to_string());
            }
            no_flags(node)?;
            ports.sort();
            Instruction::Expose(ports)
        }
        "volume" => {
            let vols = node.json.clone().unwrap_or_else(|| split_ws(&node.args));
            if vols.is_empty() {
                return Err("VOLUME requires at least one argument".to_string());
            }
            no_flags(node)?;
            let vols: Vec<String> = vols.iter().map(|v| v.trim().to_string()).collect();
            if vols.iter().any(String::is_empty) {
                return Err("VOLUME specified can not be an empty string".to_string());
            }
            Instruction::Volume(vols)
        }
        "user" => Instruction::User(exactly_one(node, "USER")?),
        "workdir" => Instruction::Workdir(exactly_one(node, "WORKDIR")?),
        "stopsignal" => Instruction::StopSignal(exactly_one(node, "STOPSIGNAL")?),
        "copy" | "add" => transfer(node)?,
        "healthcheck" => healthcheck(node)?,
        "onbuild" => {
            let Some(child) = &node.child else {
                return Err("ONBUILD requires at least one argument".to_string());
            };
            no_flags(node)?;
            let trigger = child.raw_keyword.to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string())
                }
                "MAINTAINER" | "FROM" => {
                    return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"))
                }
                _ => {}
            }
            // The trigger must itself be a valid instruction.
            let mut child = (**child).clone();
            child.heredocs = node.heredocs.clone();
            let trigger = instruction(&child, escape)?;
            let mut expr = strip_onbuild(&node.original).to_string();
            for h in &node.heredocs {
                expr.push('\n');
                expr.push_str(&h.content);
                expr.push_str(&h.name);
            }
            Instruction::Onbuild(OnBuild {
                expression: expr,
                trigger: Box::new(trigger),
            })
        }
        "shell" => {
            no_flags(node)?;
            match &node.json {
                Some(words) if words.is_empty() => {
                    return Err("SHELL requires at least one argument".to_string())
                }
                Some(words) => Instruction::Shell(words.clone()),
                None if node.args.is_empty() => {
                    return Err("SHELL requires at least one argument".to_string())
                }
                None => return Err("SHELL requires the arguments to be in JSON form".to_string()),
            }
        }
        _ => {
            return Err(with_suggestion(
                format!("unknown instruction: {}", node.raw_keyword),
                &node.raw_keyword,
                &INSTRUCTIONS,
                false,
            ))
        }
    })
}

const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

const MOUNT_KEYS: [&str; 16] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "ro",
    "rw",
    "readwrite",
];

/// Appends BuildKit's ` (did you mean X?)` when an option is within edit distance 2 of
/// `value` (the closest, first in `options` order on ties). Without `case_sensitive`,
/// the suggestion takes the case of `value` when that is all-lower or all-upper.
fn with_suggestion(message: String, value: &str, options: &[&str], case_sensitive: bool) -> String {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let v = norm(value);
    let mut best: Option<(usize, &str)> = None;
    for opt in options {
        let o = norm(opt);
        if o == v {
            return message;
        }
        let d = levenshtein(&v, &o);
        if d < best.map_or(3, |(bd, _)| bd) {
            best = Some((d, opt));
        }
    }
    let Some((_, opt)) = best else {
        return message;
    };
    let shown = if case_sensitive {
        opt.to_string()
    } else if value == value.to_lowercase() {
        opt.to_lowercase()
    } else if value == value.to_uppercase() {
        opt.to_uppercase()
    } else {
        opt.to_string()
    };
    format!("{message} (did you mean {shown}?)")
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn strip_onbuild(original: &str) -> &str {
    let t = original.trim_start();
    match (t.get(..7), t.get(7..)) {
        (Some(kw), Some(rest)) if kw.eq_ignore_ascii_case("onbuild") => rest.trim_start(),
        _ => t,
    }
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn transfer(node: &Node) -> Result<Instruction, String> {
    use FlagKind::*;
    let is_add = node.keyword == "add";
    let cmd = if is_add { "ADD" } else { "COPY" };
    let args = node.json.clone().unwrap_or_else(|| split_ws(&node.args));
    if args.len() < 2 {
        return Err(format!(
            "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let spec: &[(&str, FlagKind)] = if is_add {
        &[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("checksum", Str),
            ("keep-git-dir", Bool),
            ("exclude", Strings),
        ]
    } else {
        &[
            ("chown", Str),
            ("from", Str),
            ("chmod", Str),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Strings),
        ]
    };
    let f = parse_flags(&node.flags, spec)?;
    let (srcs, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    if node.json.is_none() && parser::parse_heredoc_marker(&dest).is_some() {
        return Err(format!("{cmd} cannot accept a heredoc as a destination"));
    }
    let mut t = Transfer {
        from: flag_str(&f, "from"),
        chown: flag_str(&f, "chown"),
        chmod: flag_str(&f, "chmod"),
        link: flag_bool(&f, "link"),
        parents: flag_bool(&f, "parents"),
        excludes: f.get("exclude").cloned().unwrap_or_default(),
        checksum: flag_str(&f, "checksum"),
        keep_git_dir: flag_bool(&f, "keep-git-dir"),
        dest,
        json: node.json.is_some(),
        ..Transfer::default()
    };
    for src in srcs {
        let marker = if t.json {
            None
        } else {
            parser::parse_heredoc_marker(src)
        };
        match marker.and_then(|m| node.heredocs.iter().find(|h| h.name == m.name)) {
            Some(h) => t.inline.push(InlineFile::from_heredoc(h)),
            None => t.sources.push(src.clone()),
        }
    }
    if t.checksum.is_some() && !t.sources.iter().all(|s| Transfer::is_url(s)) {
        return Err("checksum can't be specified for non-HTTP(S) sources".to_string());
    }
    Ok(if is_add {
        Instruction::Add(t)
    } else {
        Instruction::Copy(t)
    })
}

fn healthcheck(node: &Node) -> Result<Instruction, String> {
    use FlagKind::*;
    let args = node.args.trim();
    if args.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".to_string());
    }
    let (typ, rest) = match args.find(char::is_whitespace) {
        Some(p) => (&args[..p], args[p..].trim_start()),
        None => (args, ""),
    };
    let typ = typ.to_ascii_uppercase();
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".to_string());
        }
        return Ok(Instruction::Healthcheck(Healthcheck::None));
    }
    let f = parse_flags(
        &node.flags,
        &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
    )?;
    if typ != "CMD" {
        return Err(format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)"));
    }
    let test = match &node.json {
        Some(words) if !words.is_empty() => {
            let mut t = vec!["CMD".to_string()];
            t.extend(words.iter().cloned());
            t
        }
        Some(_) => return Err("Missing command after HEALTHCHECK CMD".to_string()),
        None if rest.is_empty() => return Err("Missing command after HEALTHCHECK CMD".to_string()),
        None => vec!["CMD-SHELL".to_string(), rest.to_string()],
    };
    let interval = |name: &str| -> Result<Option<u64>, String> {
        match flag_str(&f, name) {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => {
                let d = parse_duration(&s)?;
                if d < 1_000_000 {
                    return Err(format!("Interval {name:?} cannot be less than 1ms"));
                }
                Ok(Some(d))
            }
        }
    };
    let retries = match flag_str(&f, "retries").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let n: i64 = s
                .parse()
                .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: invalid syntax"))?;
            if n < 1 {
                return Err(format!("--retries must be at least 1 (not {n})"));
            }
            Some(
                u32::try_from(n)
                    .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: value out of range"))?,
            )
        }
    };
    Ok(Instruction::Healthcheck(Healthcheck::Cmd {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// Parses a Go-style duration (`1h2m3.5s`, `300ms`, `2us`) into nanoseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    if total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total as u64)
}

/// Splits a CSV record (as Go's encoding/csv: `"` quotes a field, `""` is a quote).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut in_quotes = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            '"' if at_start => in_quotes = true,
            c => cur.push(c),
        }
        at_start = false;
    }
    if in_quotes {
        return Err(
            "failed to parse csv mounts: extraneous or missing \" in quoted-field".to_string(),
        );
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// An expansion function for mount values; `None` means "not yet": values using `$`
/// are then left for later (as BuildKit does at parse time).
pub type Expander<'a> = &'a dyn Fn(&str) -> Result<String, ExpandError>;

/// A size as Docker's go-units `RAMInBytes` reads it (`64m`, `1.5g`, `4096`, `2MiB`: binary
/// multiples), with its error text.
pub fn ram_in_bytes(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size: '{s}'");
    let t = s.strip_suffix(['b', 'B']).unwrap_or(s);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                'p' => 1 << 50,
                _ => return Err(invalid()),
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let num = num.strip_suffix(' ').unwrap_or(num);
    if num.is_empty()
        || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
        || num.starts_with('.')
    {
        return Err(invalid());
    }
    let v: f64 = num.parse().map_err(|_| invalid())?;
    Ok((v * mult as f64) as u64)
}

/// Parses one `--mount` value (`type=cache,target=/root/.cache,sharing=locked`) with
/// BuildKit's rules and messages.
pub fn parse_mount(value: &str, expander: Option<Expander>) -> Result<Mount, String> {
    let fields = csv_fields(value)?;
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: false,
        id: None,
        sharing: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
    };
    let mut ro_auto = true;
    let is_secretish = |m: &Mount| matches!(m.kind, MountType::Secret | MountType::Ssh);
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(raw) = val else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if is_secretish(&m) => m.required = true,
                "required" => {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ))
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let v = match expander {
            Some(e) => e(raw).map_err(|e| e.0)?,
            None if key == "from" && raw.contains('$') => {
                return Err(format!(
                    "'{key}' doesn't support variable expansion, define alias stage instead"
                ))
            }
            None if raw.contains('$') => continue,
            None => raw.to_string(),
        };
        let invalid = || format!("invalid value for {key}: {v}");
        match key.as_str() {
            "type" => {
                m.kind = match v.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(with_suggestion(
                            format!("unsupported mount type {v:?}"),
                            &v,
                            &["bind", "cache", "tmpfs", "secret", "ssh"],
                            true,
                        ))
                    }
                }
            }
            "from" => m.from = Some(v),
            "source" | "src" => m.source = Some(v),
            "target" | "dst" | "destination" => m.target = Some(v),
            "readonly" | "ro" => {
                m.read_only = parse_bool(&v).ok_or_else(invalid)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_bool(&v).ok_or_else(invalid)?;
                ro_auto = false;
            }
            "required" if is_secretish(&m) => m.required = parse_bool(&v).ok_or_else(invalid)?,
            "required" => {
                return Err(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    m.kind.as_str()
                ))
            }
            "id" => m.id = Some(v),
            "sharing" => {
                m.sharing = Some(match v.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing value {v:?}")),
                })
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&v, 8)
                        .map_err(|_| format!("invalid value {v} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    v.parse()
                        .map_err(|_| format!("invalid value {v} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    v.parse()
                        .map_err(|_| format!("invalid value {v} for gid"))?,
                )
            }
            "size" if m.kind == MountType::Tmpfs => {
                ram_in_bytes(&v)?;
                m.size = Some(v)
            }
            "env" if m.kind == MountType::Secret => m.env = Some(v),
            "size" | "env" => {
                return Err(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    m.kind.as_str()
                ))
            }
            _ => {
                return Err(with_suggestion(
                    format!("unexpected key '{key}' in '{field}'"),
                    &key,
                    &MOUNT_KEYS,
                    true,
                ))
            }
        }
    }
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    for (set, what) in [
        (m.mode.is_some(), "mode"),
        (m.uid.is_some(), "uid"),
        (m.gid.is_some(), "gid"),
    ] {
        if set && !file_info_allowed {
            return Err(format!(
                "{what} not allowed for {:?} type mounts",
                m.kind.as_str()
            ));
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        ));
    }
    if m.kind == MountType::Cache && m.sharing.is_none() {
        m.sharing = Some(Sharing::Shared);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".to_string());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
            return Err("invalid secret mount. one of source, target required".to_string());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".to_string());
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(src: &str) -> Instruction {
        let st = parse_dockerfile(&format!("FROM base\n{src}\n")).expect(src);
        st.stages[0].commands[0].instruction.clone()
    }

    fn err(src: &str) -> String {
        parse_dockerfile(src).expect_err(src).to_string()
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn from_variants() {
        let st = parse_dockerfile(
            "ARG V=1\nFROM --platform=linux/arm64 alpine:$V AS Build-1\nFROM scratch\n",
        )
        .expect("parses");
        assert_eq!(st.meta_args.len(), 1);
        assert_eq!(
            st.stages[0].from,
            From {
                image: "alpine:$V".into(),
                name: Some("build-1".into()),
                platform: Some("linux/arm64".into())
            }
        );
        assert_eq!(st.stages[0].line, 2);
        assert_eq!(st.stages[1].from.image, "scratch");
        assert_eq!(st.stages[1].from.name, None);
    }

    #[test]
    fn run_forms_and_flags() {
        let Instruction::Run(r) = parse_one("RUN echo $HOME") else {
            panic!()
        };
        assert_eq!(r.command.args, s(&["echo $HOME"]));
        assert!(r.command.shell_form);
        let Instruction::Run(r) = parse_one("RUN [\"echo\", \"$HOME\"]") else {
            panic!()
        };
        assert_eq!(r.command.args, s(&["echo", "$HOME"]));
        assert!(!r.command.shell_form);
        let Instruction::Run(r) = parse_one(
            "RUN --network=none --security=insecure --mount=type=cache,target=/root/.cache,id=c,sharing=locked,mode=0755,uid=1,gid=2 --mount=type=secret,id=tok,required --mount=type=bind,from=build,source=/out,target=/in,rw --mount=type=tmpfs,target=/t,size=64m make",
        ) else { panic!() };
        assert_eq!(r.network, Some(NetworkMode::None));
        assert_eq!(r.security.as_deref(), Some("insecure"));
        assert_eq!(r.mounts.len(), 4);
        let c = &r.mounts[0];
        assert_eq!(c.kind, MountType::Cache);
        assert_eq!(c.target.as_deref(), Some("/root/.cache"));
        assert_eq!(c.id.as_deref(), Some("c"));
        assert_eq!(c.sharing, Some(Sharing::Locked));
        assert_eq!((c.mode, c.uid, c.gid), (Some(0o755), Some(1), Some(2)));
        assert!(!c.read_only);
        let sec = &r.mounts[1];
        assert_eq!(sec.kind, MountType::Secret);
        assert!(sec.required && sec.read_only);
        let b = &r.mounts[2];
        assert_eq!(b.kind, MountType::Bind);
        assert_eq!(b.from.as_deref(), Some("build"));
        assert_eq!(b.source.as_deref(), Some("/out"));
        assert!(!b.read_only);
        let t = &r.mounts[3];
        assert_eq!((t.kind, t.size.as_deref()), (MountType::Tmpfs, Some("64m")));
        assert_eq!(r.command.args, s(&["make"]));
        // Defaults: bind read-only, cache shared.
        let m = parse_mount("target=/x", None).expect("bind");
        assert!(m.read_only && m.kind == MountType::Bind);
        let m = parse_mount("type=cache,target=/x", None).expect("cache");
        assert_eq!(m.sharing, Some(Sharing::Shared));
        // Values with variables are left for the planner.
        let m = parse_mount("type=cache,target=$DIR,id=${ID}", None).expect("deferred");
        assert_eq!((m.target, m.id), (None, None));
        let m = parse_mount("\"type=cache\",\"target=/a,b\"", None).expect("csv quotes");
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(ram_in_bytes("4096"), Ok(4096));
        assert_eq!(ram_in_bytes("64m"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(ram_in_bytes("2 kb"), Ok(2048));
        assert!(
            ram_in_bytes("").is_err() && ram_in_bytes("m").is_err() && ram_in_bytes("-1").is_err()
        );
    }

    #[test]
    fn mount_errors() {
        let cases = [
            ("type=foo", "unsupported mount type \"foo\""),
            (
                "type=cahce",
                "unsupported mount type \"cahce\" (did you mean cache?)",
            ),
            (
                "type=cache,traget=/x",
                "unexpected key 'traget' in 'traget=/x' (did you mean target?)",
            ),
            ("target", "invalid field 'target' must be a key=value pair"),
            (
                "type=bind,required",
                "unexpected key 'required' for mount type 'bind'",
            ),
            ("type=cache,sharing=x", "unsupported sharing value \"x\""),
            (
                "type=bind,sharing=locked",
                "invalid cache sharing set for bind mount",
            ),
            (
                "type=bind,mode=0644",
                "mode not allowed for \"bind\" type mounts",
            ),
            (
                "type=tmpfs,uid=1",
                "uid not allowed for \"tmpfs\" type mounts",
            ),
            ("type=cache,mode=9", "invalid value 9 for mode"),
            ("type=cache,uid=x", "invalid value x for uid"),
            ("type=cache,ro=maybe", "invalid value for ro: maybe"),
            (
                "type=secret",
                "invalid secret mount. one of source, target required",
            ),
            (
                "type=secret,id=a,from=b",
                "secret mount should not have a from",
            ),
            (
                "type=secret,id=a,source=b",
                "both source and id can't be set",
            ),
            ("type=bind,xyz=bar", "unexpected key 'xyz' in 'xyz=bar'"),
            (
                "type=bind,foo=bar",
                "unexpected key 'foo' in 'foo=bar' (did you mean from?)",
            ),
            (
                "type=bind,from=$X",
                "'from' doesn't support variable expansion, define alias stage instead",
            ),
            (
                "type=cache,size=1m",
                "unexpected key 'size' for mount type 'cache'",
            ),
            ("type=tmpfs,size=lots", "invalid size: 'lots'"),
            ("type=tmpfs,size=12q", "invalid size: '12q'"),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_mount(spec, None), Err(want.to_string()), "{spec}");
        }
        assert_eq!(
            err("FROM a\n\nRUN --mount=type=foo true\n"),
            "dockerfile parse error line 3: unsupported mount type \"foo\""
        );
        assert_eq!(
            err("FROM a\nRUN --network=bridge true\n"),
            "dockerfile parse error line 2: unsupported network mode \"bridge\""
        );
    }

    #[test]
    fn cmd_entrypoint_shell() {
        assert_eq!(
            parse_one("CMD [\"a\",\"b\"]"),
            Instruction::Cmd(CommandLine {
                args: s(&["a", "b"]),
                shell_form: false,
                files: vec![]
            })
        );
        assert_eq!(
            parse_one("ENTRYPOINT top -b"),
            Instruction::Entrypoint(CommandLine {
                args: s(&["top -b"]),
                shell_form: true,
                files: vec![]
            })
        );
        assert_eq!(
            parse_one("SHELL [\"pwsh\", \"-c\"]"),
            Instruction::Shell(s(&["pwsh", "-c"]))
        );
    }

    #[test]
    fn env_and_label() {
        let cases: &[(&str, Vec<KeyValue>)] = &[
            ("ENV A B C", vec![kv("A", "B C")]),
            (
                "ENV A=1 B=\"two words\" C=x\\ y",
                vec![kv("A", "1"), kv("B", "\"two words\""), kv("C", "x\\ y")],
            ),
            ("ENV A=", vec![kv("A", "")]),
        ];
        for (src, want) in cases {
            assert_eq!(parse_one(src), Instruction::Env(want.clone()), "{src}");
        }
        assert_eq!(
            parse_one("LABEL \"com.example.vendor\"=\"ACME\" version=1.0"),
            Instruction::Label(vec![
                kv("\"com.example.vendor\"", "\"ACME\""),
                kv("version", "1.0")
            ])
        );
        assert_eq!(
            parse_one("MAINTAINER Jane <j@x>"),
            Instruction::Maintainer("Jane <j@x>".into())
        );
    }

    #[test]
    fn arg_forms() {
        assert_eq!(
            parse_one("ARG A B=2 C=\"x y\""),
            Instruction::Arg(vec![
                ArgDecl {
                    name: "A".into(),
                    default: None
                },
                ArgDecl {
                    name: "B".into(),
                    default: Some("2".into())
                },
                ArgDecl {
                    name: "C".into(),
                    default: Some("\"x y\"".into())
                },
            ])
        );
    }

    #[test]
    fn simple_instructions() {
        assert_eq!(
            parse_one("EXPOSE 8080/udp 80 7000-7002"),
            Instruction::Expose(s(&["7000-7002", "80", "8080/udp"]))
        );
        assert_eq!(
            parse_one("VOLUME /a /b"),
            Instruction::Volume(s(&["/a", "/b"]))
        );
        assert_eq!(
            parse_one("VOLUME [\"/a b\"]"),
            Instruction::Volume(s(&["/a b"]))
        );
        assert_eq!(
            parse_one("USER app:app"),
            Instruction::User("app:app".into())
        );
        assert_eq!(
            parse_one("WORKDIR /a b"),
            Instruction::Workdir("/a b".into())
        );
        assert_eq!(
            parse_one("STOPSIGNAL SIGKILL"),
            Instruction::StopSignal("SIGKILL".into())
        );
        assert_eq!(
            parse_one("onbuild run echo hi"),
            Instruction::Onbuild(OnBuild {
                expression: "run echo hi".into(),
                trigger: Box::new(Instruction::Run(Run {
                    command: CommandLine {
                        args: s(&["echo hi"]),
                        shell_form: true,
                        files: vec![],
                    },
                    mount_specs: vec![],
                    mounts: vec![],
                    network: None,
                    security: None,
                })),
            })
        );
        let Instruction::Onbuild(o) = parse_one("ONBUILD COPY --from=x a /b") else {
            panic!("not ONBUILD")
        };
        assert!(
            matches!(*o.trigger, Instruction::Copy(Transfer { ref from, .. }) if from.as_deref() == Some("x"))
        );
    }

    #[test]
    fn copy_and_add() {
        let Instruction::Copy(c) = parse_one("COPY --from=build --chown=1:2 --chmod=644 --link --parents --exclude=*.md --exclude=x a b /dst/") else { panic!() };
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.chown.as_deref(), Some("1:2"));
        assert_eq!(c.chmod.as_deref(), Some("644"));
        assert!(c.link && c.parents);
        assert_eq!(c.excludes, s(&["*.md", "x"]));
        assert_eq!(c.sources, s(&["a", "b"]));
        assert_eq!(c.dest, "/dst/");
        let Instruction::Copy(c) = parse_one("COPY --link=false [\"a b\", \"/d\"]") else {
            panic!()
        };
        assert!(!c.link && c.json);
        assert_eq!(c.sources, s(&["a b"]));
        let st = parse_dockerfile(
            "FROM a\nCOPY <<one <<-two x /dst/\nhello $X\none\n\t\tworld\n\ttwo\n",
        )
        .expect("heredoc copy");
        let Instruction::Copy(c) = &st.stages[0].commands[0].instruction else {
            panic!()
        };
        assert_eq!(c.sources, s(&["x"]));
        assert_eq!(
            c.inline,
            vec![
                InlineFile {
                    name: "one".into(),
                    data: "hello $X\n".into(),
                    expand: true
                },
                InlineFile {
                    name: "two".into(),
                    data: "world\n".into(),
                    expand: true
                },
            ]
        );
        let Instruction::Add(a) =
            parse_one("ADD --checksum=sha256:abc --keep-git-dir https://x/y.tgz /y")
        else {
            panic!()
        };
        assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
        assert!(a.keep_git_dir);
        assert!(Transfer::is_url(&a.sources[0]));
    }

    #[test]
    fn healthchecks() {
        assert_eq!(
            parse_one("HEALTHCHECK NONE"),
            Instruction::Healthcheck(Healthcheck::None)
        );
        assert_eq!(
            parse_one("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --start-interval=2s --retries=3 CMD curl -f http://localhost/"),
            Instruction::Healthcheck(Healthcheck::Cmd {
                test: s(&["CMD-SHELL", "curl -f http://localhost/"]),
                interval: Some(30_000_000_000),
                timeout: Some(90_000_000_000),
                start_period: Some(500_000_000),
                start_interval: Some(2_000_000_000),
                retries: Some(3),
            })
        );
        assert_eq!(
            parse_one("HEALTHCHECK cmd [\"true\"]"),
            Instruction::Healthcheck(Healthcheck::Cmd {
                test: s(&["CMD", "true"]),
                interval: None,
                timeout: None,
                start_period: None,
                start_interval: None,
                retries: None,
            })
        );
        assert_eq!(parse_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(
            parse_duration("10"),
            Err("time: missing unit in duration \"10\"".into())
        );
    }

    #[test]
    fn errors_with_lines() {
        let cases = [
            ("FROM a\nXYZZY bar\n", "dockerfile parse error line 2: unknown instruction: XYZZY"),
            ("FROM a\nFOO bar\n", "dockerfile parse error line 2: unknown instruction: FOO (did you mean FROM?)"),
            ("FROM a\nrunn x\n", "dockerfile parse error line 2: unknown instruction: runn (did you mean run?)"),
            ("FROM a\nCoppy x y\n", "dockerfile parse error line 2: unknown instruction: Coppy (did you mean COPY?)"),
            ("FROM\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
            ("FROM a b\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
            ("FROM a AS b c\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
            ("FROM a AS 1x\n", "dockerfile parse error line 1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"),
            ("FROM --foo=bar a\n", "dockerfile parse error line 1: Unknown flag: foo"),
            ("RUN x\n", "dockerfile parse error line 1: no build stage in current context"),
            ("ARG A\nENV B=1\nFROM a\n", "dockerfile parse error line 2: no build stage in current context"),
            ("FROM a\nENV\n", "dockerfile parse error line 2: ENV requires at least one argument"),
            ("FROM a\nENV A\n", "dockerfile parse error line 2: ENV must have two arguments"),
            ("FROM a\nENV A=1 B\n", "dockerfile parse error line 2: Syntax error - can't find = in \"B\". Must be of the form: name=value"),
            ("FROM a\nENV =1\n", "dockerfile parse error line 2: ENV names can not be blank"),
            ("FROM a\nLABEL\n", "dockerfile parse error line 2: LABEL requires at least one argument"),
            ("FROM a\nARG\n", "dockerfile parse error line 2: ARG requires at least one argument"),
            ("FROM a\nARG =x\n", "dockerfile parse error line 2: ARG names can not be blank"),
            ("FROM a\nEXPOSE\n", "dockerfile parse error line 2: EXPOSE requires at least one argument"),
            ("FROM a\nVOLUME\n", "dockerfile parse error line 2: VOLUME requires at least one argument"),
            ("FROM a\nVOLUME [\"\"]\n", "dockerfile parse error line 2: VOLUME specified can not be an empty string"),
            ("FROM a\nUSER\n", "dockerfile parse error line 2: USER requires exactly one argument"),
            ("FROM a\nWORKDIR\n", "dockerfile parse error line 2: WORKDIR requires exactly one argument"),
            ("FROM a\nSTOPSIGNAL\n", "dockerfile parse error line 2: STOPSIGNAL requires exactly one argument"),
            ("FROM a\nMAINTAINER\n", "dockerfile parse error line 2: MAINTAINER requires exactly one argument"),
            ("FROM a\nCOPY x\n", "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"),
            ("FROM a\nADD\n", "dockerfile parse error line 2: ADD requires at least two arguments, but only one was provided. Destination could not be determined"),
            ("FROM a\nCOPY --from=x --from=y a b\n", "dockerfile parse error line 2: Duplicate flag specified: from"),
            ("FROM a\nCOPY --chown a b\n", "dockerfile parse error line 2: Missing a value on flag: chown"),
            ("FROM a\nCOPY --link=yes a b\n", "dockerfile parse error line 2: Expecting boolean value for flag link, not: yes"),
            ("FROM a\nCOPY --link= a b\n", "dockerfile parse error line 2: Missing a value on flag: link"),
            ("FROM a\nADD --from=x a b\n", "dockerfile parse error line 2: Unknown flag: from"),
            ("FROM a\nADD --checksum=sha256:x a b\n", "dockerfile parse error line 2: checksum can't be specified for non-HTTP(S) sources"),
            ("FROM a\nCOPY a <<EOF\nx\nEOF\n", "dockerfile parse error line 2: COPY cannot accept a heredoc as a destination"),
            ("FROM a\nENV --x=1 A=1\n", "dockerfile parse error line 2: Unknown flag: x"),
            ("FROM a\nSHELL /bin/sh -c\n", "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form"),
            ("FROM a\nSHELL []\n", "dockerfile parse error line 2: SHELL requires at least one argument"),
            ("FROM a\nHEALTHCHECK\n", "dockerfile parse error line 2: HEALTHCHECK requires at least one argument"),
            ("FROM a\nHEALTHCHECK NONE x\n", "dockerfile parse error line 2: HEALTHCHECK NONE takes no arguments"),
            ("FROM a\nHEALTHCHECK CMD\n", "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD"),
            ("FROM a\nHEALTHCHECK CMD []\n", "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD"),
            ("FROM a\nHEALTHCHECK FOO x\n", "dockerfile parse error line 2: Unknown type \"FOO\" in HEALTHCHECK (try CMD)"),
            ("FROM a\nHEALTHCHECK --interval=0s CMD x\n", "dockerfile parse error line 2: Interval \"interval\" cannot be less than 1ms"),
            ("FROM a\nHEALTHCHECK --timeout=abc CMD x\n", "dockerfile parse error line 2: time: invalid duration \"abc\""),
            ("FROM a\nHEALTHCHECK --retries=0 CMD x\n", "dockerfile parse error line 2: --retries must be at least 1 (not 0)"),
            ("FROM a\nHEALTHCHECK --retries=x CMD x\n", "dockerfile parse error line 2: strconv.ParseInt: parsing \"x\": invalid syntax"),
            ("FROM a\nHEALTHCHECK --foo=1 CMD x\n", "dockerfile parse error line 2: Unknown flag: foo"),
            ("FROM a\nONBUILD\n", "dockerfile parse error line 2: ONBUILD requires at least one argument"),
            ("FROM a\nONBUILD ONBUILD RUN x\n", "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
            ("FROM a\nONBUILD FROM b\n", "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"),
            ("FROM a\nONBUILD maintainer me\n", "dockerfile parse error line 2: MAINTAINER isn't allowed as an ONBUILD trigger"),
            ("FROM a\nONBUILD BAD x\n", "dockerfile parse error line 2: unknown instruction: BAD (did you mean ADD?)"),
            ("FROM a\nRUN \\\n  --mount=type=cache true\nRUN --mount=type=secret true\n", "dockerfile parse error line 4: invalid secret mount. one of source, target required"),
        ];
        for (src, want) in cases {
            assert_eq!(err(src), want, "{src:?}");
        }
    }

    #[test]
    fn onbuild_keeps_heredoc_in_expression() {
        let st = parse_dockerfile("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n").expect("parses");
        let Instruction::Onbuild(o) = &st.stages[0].commands[0].instruction else {
            panic!("not ONBUILD")
        };
        assert_eq!(o.expression, "RUN <<EOF\necho hi\nEOF");
        let Instruction::Run(r) = &*o.trigger else {
            panic!("not RUN")
        };
        assert_eq!(r.command.files[0].data, "echo hi\n");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words("a \"b c\" 'd e' f\\ g", '\\'),
            s(&["a", "\"b c\"", "'d e'", "f\\ g"])
        );
        assert_eq!(parse_words("x=\"\"", '\\'), s(&["x=\"\""]));
    }
}
