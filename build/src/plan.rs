//! Build planning: stages, ARG scoping, stage references, dependency graph, pruning,
//! order and parallelism, expanded steps and their cache keys.
//!
//! Rules (BuildKit's):
//! - ARGs before the first FROM are global: they can be used in FROM lines only; a
//!   stage sees one only after redeclaring it (`ARG NAME`, which inherits the global
//!   value). `--build-arg` values override defaults. The predefined proxy args
//!   ([`PROXY_ARGS`]) reach RUN without a declaration and are left out of history.
//! - In the stage, variables resolve to ENV first, then to ARGs in scope.
//! - `FROM name` refers to an *earlier* stage named `name`; otherwise it is an image.
//! - `COPY --from=x` and `RUN --mount=...,from=x` refer to a stage by index, or by name
//!   anywhere in the file (a later stage too, so cycles are possible and refused);
//!   anything else is an image.
//! - The target (last stage by default) and the stages it depends on are planned; the
//!   others are pruned and never expanded (their errors do not matter) and their base
//!   images are never passed to the [`ImageResolver`].
//! - The ONBUILD triggers of a needed stage's base (an image's `OnBuild`, or the
//!   ONBUILD instructions of a base stage) run first in that stage; a trigger's
//!   `--from` adds a dependency like any other.
//!
//! History text ([`Step::created_by`]), chosen to look like BuildKit's:
//! - `RUN [|N K=V ...] argv... # buildkit`: argv is the shell plus the command for the
//!   shell form; the `|N` prefix lists the non-proxy ARGs in scope, as Docker does.
//! - `COPY [flags] srcs... dest # buildkit` and `ADD ...` (heredoc sources as `<<name`).
//! - `ENV K=V ...`, `LABEL k=v ...`, `ARG K=V`, `WORKDIR /p`, `USER u`,
//!   `EXPOSE 80/tcp ...`, `VOLUME ["/v"]`, `STOPSIGNAL s`, `CMD ["a"]`,
//!   `ENTRYPOINT ["a"]`, `SHELL ["a"]`, `HEALTHCHECK {json}`, `ONBUILD expr`,
//!   `MAINTAINER m` — with expanded values and JSON arrays for commands.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::config::{onbuild_triggers, ConfigBuilder, ImageConfig};
use crate::error::{ParseError, PlanError};
use crate::expand::{Lexer, Lookup};
use crate::instructions::{
    self, ArgDecl, Command, CommandLine, InlineFile, Instruction, KeyValue, Mount, MountType,
    NetworkMode, Stages, Transfer,
};

/// Build args that are always allowed, reach RUN without an ARG, and are not recorded
/// in history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What the caller asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name; the last stage when `None`.
    pub target: Option<String>,
    /// Automatic global ARGs such as `TARGETPLATFORM`, `TARGETARCH` or `BUILDPLATFORM`
    /// (see [`platform_args`]): usable in FROM lines without a declaration, and in a
    /// stage after `ARG NAME`. Never reported as unused.
    pub platform_args: BTreeMap<String, String>,
}

/// BuildKit's automatic platform ARGs for a build platform and a target platform, each
/// written `os/arch[/variant]` (e.g. `linux/amd64`, `linux/arm/v7`).
pub fn platform_args(build: &str, target: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (prefix, platform) in [("BUILD", build), ("TARGET", target)] {
        let mut parts = platform.splitn(3, '/');
        let os = parts.next().unwrap_or_default();
        let arch = parts.next().unwrap_or_default();
        let variant = parts.next().unwrap_or_default();
        out.insert(format!("{prefix}PLATFORM"), platform.to_string());
        out.insert(format!("{prefix}OS"), os.to_string());
        out.insert(format!("{prefix}ARCH"), arch.to_string());
        out.insert(format!("{prefix}VARIANT"), variant.to_string());
    }
    out
}

/// Gives the config of external base images (for their Env, used in expansion, and
/// their OnBuild triggers). The planner never pulls anything itself.
pub trait ImageResolver {
    /// The config of `image` for `platform`, or `None` when unknown (planned as empty).
    fn config(&self, image: &str, platform: Option<&str>) -> Option<ImageConfig>;
}

/// A resolver that knows no image: every base image is planned with an empty config.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoImages;

impl ImageResolver for NoImages {
    fn config(&self, _: &str, _: Option<&str>) -> Option<ImageConfig> {
        None
    }
}

/// Configs by image reference.
impl ImageResolver for BTreeMap<String, ImageConfig> {
    fn config(&self, image: &str, _: Option<&str>) -> Option<ImageConfig> {
        self.get(image).cloned()
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An image reference (expanded).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where a step reads files from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The build context.
    Context,
    /// Another stage's result, by index.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// One planned instruction of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The instruction's line (for an ONBUILD trigger, its stage's FROM line).
    pub line: usize,
    /// The instruction with Docker's expansion applied (RUN mounts parsed with their
    /// values expanded; RUN/CMD/ENTRYPOINT text left to the shell).
    pub instruction: Instruction,
    /// The history text (see the module documentation).
    pub created_by: String,
    /// Where the step reads files from (COPY/ADD, RUN bind/cache mounts).
    pub sources: Vec<Source>,
    /// RUN only: the argv to execute (SHELL or `/bin/sh -c` put in front of the shell form).
    pub argv: Vec<String>,
    /// RUN only: files the executor must provide read-only, mode 0755, under
    /// `/dev/pipes/<name>` (a lone heredoc script starting with `#!` is run that way).
    pub pipes: Vec<InlineFile>,
    /// RUN only: the process environment (config Env, then ARGs in scope not shadowed by
    /// it, then proxy build args).
    pub env: Vec<String>,
    /// The image config after this step (what RUN/COPY see: WorkingDir, User, ...).
    pub config: ImageConfig,
    /// True for a step injected from the base image's ONBUILD triggers.
    pub onbuild: bool,
}

/// A stage the target needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    /// Index in the Dockerfile (0-based, over all stages).
    pub index: usize,
    /// `AS name`.
    pub name: Option<String>,
    /// The name, or `stage-N` for an unnamed stage.
    pub display_name: String,
    /// The FROM's line.
    pub line: usize,
    /// The base.
    pub base: Base,
    /// `--platform` (expanded).
    pub platform: Option<String>,
    /// Stages this one needs (its base stage and `--from`/mount stages).
    pub deps: BTreeSet<usize>,
    /// External images used (base, `--from`, mounts).
    pub images: BTreeSet<String>,
    /// The steps, ONBUILD triggers of the base first.
    pub steps: Vec<Step>,
    /// The stage's resulting image config.
    pub config: ImageConfig,
}

/// A build plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The planned (needed) stages, by ascending index.
    pub stages: Vec<PlannedStage>,
    /// The target stage's index.
    pub target: usize,
    /// Indices of stages the target does not need.
    pub pruned: Vec<usize>,
    /// A topological order of the planned stages (dependencies first, then by index).
    pub order: Vec<usize>,
    /// The planned stages grouped by depth: every stage of a group depends only on
    /// earlier groups, so the stages of one group can be built in parallel.
    pub parallel: Vec<Vec<usize>>,
    /// Non-fatal findings: parser warnings, unused build args, duplicate stage names.
    pub warnings: Vec<String>,
    /// The `# syntax=` directive.
    pub syntax: Option<String>,
}

impl Plan {
    /// The planned stage with this index.
    pub fn stage(&self, index: usize) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// The target stage.
    pub fn target_stage(&self) -> Option<&PlannedStage> {
        self.stage(self.target)
    }
}

/// Parses and plans a Dockerfile.
pub fn plan_dockerfile(
    src: &str,
    opts: &BuildOptions,
    images: &dyn ImageResolver,
) -> Result<Plan, PlanError> {
    plan(&instructions::parse_dockerfile(src)?, opts, images)
}

/// Variables in a stage: ENV first, then ARGs.
struct Scope<'a> {
    env: &'a [String],
    args: &'a [(String, String)],
}

impl Lookup for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.env.lookup(name).or_else(|| {
            self.args
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }
}

struct Header {
    name: Option<String>,
    base: Base,
    platform: Option<String>,
}

fn err_at(line: usize, message: impl Into<String>) -> PlanError {
    PlanError::Parse(ParseError::new(line, message))
}

/// Plans parsed stages.
pub fn plan(
    stages: &Stages,
    opts: &BuildOptions,
    images: &dyn ImageResolver,
) -> Result<Plan, PlanError> {
    let lex = Lexer::new(stages.escape);
    let mut warnings = stages.warnings.clone();
    let mut consumed: BTreeSet<String> = BTreeSet::new();

    // Global ARGs, after the automatic platform ones.
    let mut meta: Vec<(String, Option<String>)> = opts
        .platform_args
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for cmd in &stages.meta_args {
        let Instruction::Arg(decls) = &cmd.instruction else {
            continue;
        };
        for d in decls {
            let value = if let Some(v) = opts.build_args.get(&d.name) {
                consumed.insert(d.name.clone());
                Some(v.clone())
            } else if let Some(def) = &d.default {
                let known = meta_values(&meta);
                let scope = Scope {
                    env: &[],
                    args: &known,
                };
                Some(
                    lex.process_word(def, &scope)
                        .map_err(|e| err_at(cmd.line, e.0))?,
                )
            } else {
                None
            };
            meta.push((d.name.clone(), value));
        }
    }
    let meta_vals = meta_values(&meta);

    // Stage headers: names, bases, platforms.
    let mut headers: Vec<Header> = Vec::new();
    for (i, st) in stages.stages.iter().enumerate() {
        let scope = Scope {
            env: &[],
            args: &meta_vals,
        };
        let image = lex
            .process_word(&st.from.image, &scope)
            .map_err(|e| err_at(st.line, e.0))?;
        if image.is_empty() {
            return Err(err_at(
                st.line,
                format!("base name ({}) should not be blank", st.from.image),
            ));
        }
        let platform = match &st.from.platform {
            Some(p) => Some(
                lex.process_word(p, &scope)
                    .map_err(|e| err_at(st.line, e.0))?,
            ),
            None => None,
        };
        let lower = image.to_ascii_lowercase();
        let base = match headers[..i]
            .iter()
            .rposition(|h| h.name.as_deref() == Some(&lower))
        {
            Some(j) => Base::Stage(j),
            None if image == "scratch" => Base::Scratch,
            None => Base::Image(image),
        };
        if let Some(name) = &st.from.name {
            if headers.iter().any(|h| h.name.as_ref() == Some(name)) {
                warnings.push(format!(
                    "duplicate stage name {name:?} (line {}): the last one is used",
                    st.line
                ));
            }
        }
        headers.push(Header {
            name: st.from.name.clone(),
            base,
            platform,
        });
    }
    let display = |i: usize| -> String {
        headers[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{i}"))
    };

    // Dependencies: base stages and --from / mount from.
    let mut sources: Vec<Vec<Vec<Source>>> = Vec::new();
    let mut deps: Vec<BTreeSet<usize>> = Vec::new();
    for (i, st) in stages.stages.iter().enumerate() {
        let mut d = BTreeSet::new();
        if let Base::Stage(j) = headers[i].base {
            d.insert(j);
        }
        let mut arg_scope: Vec<(String, String)> = Vec::new();
        let mut per_cmd = Vec::new();
        for cmd in &st.commands {
            let srcs = command_sources(cmd, &lex, &mut arg_scope, opts, &meta, &headers)?;
            for s in &srcs {
                if let Source::Stage(j) = s {
                    d.insert(*j);
                }
            }
            per_cmd.push(srcs);
        }
        sources.push(per_cmd);
        deps.push(d);
    }

    // Target.
    let target = match &opts.target {
        None => stages
            .stages
            .len()
            .checked_sub(1)
            .ok_or(PlanError::NoStages)?,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            headers
                .iter()
                .rposition(|h| h.name.as_deref() == Some(&lower))
                .ok_or_else(|| PlanError::UnknownTarget(t.clone()))?
        }
    };

    // Cycles, checked over all stages as BuildKit does.
    if let Some(root) = find_cycle(&deps) {
        return Err(PlanError::Cycle(display(root)));
    }

    // Base configs and ONBUILD triggers of the needed stages. Triggers may add
    // dependencies (`ONBUILD COPY --from=x`), which may make more stages needed, so this
    // runs to a fixed point; images of stages that stay unneeded are never resolved.
    let mut base_configs: BTreeMap<usize, ImageConfig> = BTreeMap::new();
    let mut triggers: BTreeMap<usize, Vec<(Command, Vec<Source>)>> = BTreeMap::new();
    let needed = loop {
        let needed = reachable(target, &deps);
        let mut changed = false;
        for &i in &needed {
            if triggers.contains_key(&i) {
                continue;
            }
            let h = &headers[i];
            let on_build = match &h.base {
                Base::Scratch => Vec::new(),
                Base::Image(r) => {
                    let cfg = images.config(r, h.platform.as_deref()).unwrap_or_default();
                    let on_build = cfg.on_build.clone();
                    base_configs.insert(i, cfg);
                    on_build
                }
                // A stage's config carries exactly its own ONBUILD instructions.
                Base::Stage(j) => stages.stages[*j]
                    .commands
                    .iter()
                    .filter_map(|c| match &c.instruction {
                        Instruction::Onbuild(o) => Some(o.expression.clone()),
                        _ => None,
                    })
                    .collect(),
            };
            let cfg = ImageConfig {
                on_build,
                ..ImageConfig::default()
            };
            let line = stages.stages[i].line;
            let mut with_sources = Vec::new();
            for cmd in onbuild_triggers(&cfg, line)? {
                let srcs = command_sources(&cmd, &lex, &mut Vec::new(), opts, &meta, &headers)?;
                for s in &srcs {
                    if let Source::Stage(j) = s {
                        changed |= deps[i].insert(*j);
                    }
                }
                with_sources.push((cmd, srcs));
            }
            triggers.insert(i, with_sources);
        }
        if !changed {
            break needed;
        }
        if let Some(root) = find_cycle(&deps) {
            return Err(PlanError::Cycle(display(root)));
        }
    };

    // Order and parallel groups.
    let pruned: Vec<usize> = (0..headers.len()).filter(|i| !needed.contains(i)).collect();
    let order = topo_order(&needed, &deps);
    let mut level: BTreeMap<usize, usize> = BTreeMap::new();
    for &i in &order {
        let l = deps[i].iter().map(|d| level[d] + 1).max().unwrap_or(0);
        level.insert(i, l);
    }
    let mut parallel: Vec<Vec<usize>> = Vec::new();
    for (&i, &l) in &level {
        if parallel.len() <= l {
            parallel.resize(l + 1, Vec::new());
        }
        parallel[l].push(i);
    }

    // Expand and plan the needed stages.
    let mut planned: BTreeMap<usize, PlannedStage> = BTreeMap::new();
    for &i in &order {
        let st = &stages.stages[i];
        let h = &headers[i];
        let mut stage_images = BTreeSet::new();
        let base_cfg = match &h.base {
            Base::Scratch => ImageConfig::scratch(),
            Base::Image(r) => {
                stage_images.insert(r.clone());
                base_configs.remove(&i).unwrap_or_default()
            }
            Base::Stage(j) => planned.get(j).map(|p| p.config.clone()).unwrap_or_default(),
        };
        let mut ctx = StageCtx {
            lex: &lex,
            opts,
            meta: &meta,
            builder: ConfigBuilder::new(base_cfg),
            args: Vec::new(),
            consumed: &mut consumed,
        };
        let mut steps = Vec::new();
        for (cmd, srcs) in triggers.remove(&i).unwrap_or_default() {
            steps.push(ctx.step(&cmd, srcs, true)?);
        }
        for (cmd, srcs) in st.commands.iter().zip(&sources[i]) {
            steps.push(ctx.step(cmd, srcs.clone(), false)?);
        }
        for step in &steps {
            for s in &step.sources {
                if let Source::Image(r) = s {
                    stage_images.insert(r.clone());
                }
            }
        }
        let config = ctx.builder.config;
        planned.insert(
            i,
            PlannedStage {
                index: i,
                name: h.name.clone(),
                display_name: display(i),
                line: st.line,
                base: h.base.clone(),
                platform: h.platform.clone(),
                deps: deps[i].clone(),
                images: stage_images,
                steps,
                config,
            },
        );
    }

    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .filter(|k| {
            !consumed.contains(*k)
                && !PROXY_ARGS.contains(&k.as_str())
                && !opts.platform_args.contains_key(*k)
        })
        .map(String::as_str)
        .collect();
    if !unused.is_empty() {
        warnings.push(format!(
            "[Warning] One or more build-args [{}] were not consumed",
            unused.join(" ")
        ));
    }

    Ok(Plan {
        stages: planned.into_values().collect(),
        target,
        pruned,
        order,
        parallel,
        warnings,
        syntax: stages.syntax.clone(),
    })
}

fn meta_values(meta: &[(String, Option<String>)]) -> Vec<(String, String)> {
    meta.iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
        .collect()
}

/// The value an `ARG` declaration takes: the build arg, else its default, else the
/// global ARG's value.
fn arg_value(
    d: &ArgDecl,
    opts: &BuildOptions,
    meta: &[(String, Option<String>)],
    expand_default: impl Fn(&str) -> Result<String, PlanError>,
) -> Result<Option<String>, PlanError> {
    if let Some(v) = opts.build_args.get(&d.name) {
        return Ok(Some(v.clone()));
    }
    if let Some(def) = &d.default {
        return Ok(Some(expand_default(def)?));
    }
    // The last global declaration that has a value (`ARG TARGETOS` at the top does not
    // hide the automatic value).
    Ok(meta
        .iter()
        .rev()
        .filter(|(k, _)| *k == d.name)
        .find_map(|(_, v)| v.clone()))
}

fn set_arg(args: &mut Vec<(String, String)>, name: &str, value: String) {
    args.retain(|(k, _)| k != name);
    args.push((name.to_string(), value));
}

/// Resolves a `--from` value: a stage index, a stage name (anywhere), or an image.
fn resolve_from(from: &str, headers: &[Header], line: usize) -> Result<Source, PlanError> {
    if let Ok(n) = from.parse::<usize>() {
        return if n < headers.len() {
            Ok(Source::Stage(n))
        } else {
            Err(err_at(line, format!("invalid stage index {n}")))
        };
    }
    let lower = from.to_ascii_lowercase();
    Ok(
        match headers
            .iter()
            .rposition(|h| h.name.as_deref() == Some(&lower))
        {
            Some(j) => Source::Stage(j),
            None => Source::Image(from.to_string()),
        },
    )
}

/// The sources of one command, computed with ARG values only (ENV of base images is
/// not known yet when dependencies are computed). Updates `arg_scope` for ARGs.
fn command_sources(
    cmd: &Command,
    lex: &Lexer,
    arg_scope: &mut Vec<(String, String)>,
    opts: &BuildOptions,
    meta: &[(String, Option<String>)],
    headers: &[Header],
) -> Result<Vec<Source>, PlanError> {
    let expand = |w: &str, scope: &[(String, String)]| {
        lex.process_word(
            w,
            &Scope {
                env: &[],
                args: scope,
            },
        )
        .map_err(|e| err_at(cmd.line, e.0))
    };
    let mut out = Vec::new();
    match &cmd.instruction {
        Instruction::Arg(decls) => {
            for d in decls {
                let scope = arg_scope.clone();
                // A default that does not expand is reported when (and only if) the
                // stage is planned; here it just leaves the ARG unset.
                if let Ok(Some(v)) = arg_value(d, opts, meta, |w| expand(w, &scope)) {
                    set_arg(arg_scope, &d.name, v);
                }
            }
        }
        Instruction::Copy(t) | Instruction::Add(t) => match &t.from {
            Some(f) => out.push(resolve_from(&expand(f, arg_scope)?, headers, cmd.line)?),
            None if !t.sources.is_empty() && !t.sources.iter().all(|s| Transfer::is_url(s)) => {
                out.push(Source::Context)
            }
            None => {}
        },
        Instruction::Run(r) => {
            for m in &r.mounts {
                match (&m.from, m.kind) {
                    (Some(f), _) => out.push(resolve_from(f, headers, cmd.line)?),
                    (None, MountType::Bind) => out.push(Source::Context),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    out.dedup();
    Ok(out)
}

/// The stages `target` needs, itself included.
fn reachable(target: usize, deps: &[BTreeSet<usize>]) -> BTreeSet<usize> {
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(deps[i].iter().copied());
        }
    }
    needed
}

/// The first stage (in index order) from which a dependency cycle is reachable.
fn find_cycle(deps: &[BTreeSet<usize>]) -> Option<usize> {
    fn visit(
        i: usize,
        deps: &[BTreeSet<usize>],
        visited: &mut BTreeSet<usize>,
        path: &mut BTreeSet<usize>,
    ) -> bool {
        if !visited.insert(i) {
            return false;
        }
        path.insert(i);
        for &d in &deps[i] {
            if path.contains(&d) || visit(d, deps, visited, path) {
                return true;
            }
        }
        path.remove(&i);
        false
    }
    let mut visited = BTreeSet::new();
    (0..deps.len()).find(|&i| visit(i, deps, &mut visited, &mut BTreeSet::new()))
}

/// Kahn's algorithm over `nodes`, lowest index first among ready stages.
fn topo_order(nodes: &BTreeSet<usize>, deps: &[BTreeSet<usize>]) -> Vec<usize> {
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < nodes.len() {
        let Some(&next) = nodes
            .iter()
            .find(|&&i| !done.contains(&i) && deps[i].iter().all(|d| done.contains(d)))
        else {
            break; // unreachable: cycles were refused before
        };
        done.insert(next);
        order.push(next);
    }
    order
}

struct StageCtx<'a> {
    lex: &'a Lexer,
    opts: &'a BuildOptions,
    meta: &'a [(String, Option<String>)],
    builder: ConfigBuilder,
    args: Vec<(String, String)>,
    consumed: &'a mut BTreeSet<String>,
}

impl StageCtx<'_> {
    fn expand(&self, word: &str, line: usize) -> Result<String, PlanError> {
        let scope = Scope {
            env: &self.builder.config.env,
            args: &self.args,
        };
        self.lex
            .process_word(word, &scope)
            .map_err(|e| err_at(line, e.0))
    }

    fn expand_opt(&self, word: &Option<String>, line: usize) -> Result<Option<String>, PlanError> {
        word.as_ref().map(|w| self.expand(w, line)).transpose()
    }

    fn expand_kvs(&self, kvs: &[KeyValue], line: usize) -> Result<Vec<KeyValue>, PlanError> {
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.expand(&kv.key, line)?,
                    value: self.expand(&kv.value, line)?,
                })
            })
            .collect()
    }

    /// ARGs in scope for history (`|N K=V`), proxies excluded.
    fn history_args(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    fn step(
        &mut self,
        cmd: &Command,
        sources: Vec<Source>,
        onbuild: bool,
    ) -> Result<Step, PlanError> {
        let line = cmd.line;
        let mut argv = Vec::new();
        let mut pipes = Vec::new();
        let mut env = Vec::new();
        let instruction = match &cmd.instruction {
            Instruction::Arg(decls) => {
                let mut out = Vec::new();
                for d in decls {
                    if self.opts.build_args.contains_key(&d.name) {
                        self.consumed.insert(d.name.clone());
                    }
                    let v = arg_value(d, self.opts, self.meta, |w| self.expand(w, line))?;
                    if let Some(v) = &v {
                        set_arg(&mut self.args, &d.name, v.clone());
                    }
                    out.push(ArgDecl {
                        name: d.name.clone(),
                        default: v,
                    });
                }
                Instruction::Arg(out)
            }
            Instruction::Env(kvs) => Instruction::Env(self.expand_kvs(kvs, line)?),
            Instruction::Label(kvs) => Instruction::Label(self.expand_kvs(kvs, line)?),
            Instruction::Expose(specs) => {
                let scope = Scope {
                    env: &self.builder.config.env,
                    args: &self.args,
                };
                let mut out = Vec::new();
                for s in specs {
                    out.extend(
                        self.lex
                            .process_words(s, &scope)
                            .map_err(|e| err_at(line, e.0))?,
                    );
                }
                Instruction::Expose(out)
            }
            Instruction::Volume(vols) => Instruction::Volume(
                vols.iter()
                    .map(|v| self.expand(v, line))
                    .collect::<Result<_, _>>()?,
            ),
            Instruction::User(u) => Instruction::User(self.expand(u, line)?),
            Instruction::Workdir(w) => Instruction::Workdir(self.expand(w, line)?),
            Instruction::StopSignal(s) => Instruction::StopSignal(self.expand(s, line)?),
            Instruction::Copy(t) => Instruction::Copy(self.expand_transfer(t, line, "COPY")?),
            Instruction::Add(t) => Instruction::Add(self.expand_transfer(t, line, "ADD")?),
            Instruction::Run(r) => {
                let mut r = r.clone();
                let scope_env = self.builder.config.env.clone();
                let scope_args = self.args.clone();
                let lex = *self.lex;
                let expander = move |w: &str| {
                    lex.process_word(
                        w,
                        &Scope {
                            env: &scope_env,
                            args: &scope_args,
                        },
                    )
                };
                r.mounts = r
                    .mount_specs
                    .iter()
                    .map(|m| instructions::parse_mount(m, Some(&expander)))
                    .collect::<Result<_, _>>()
                    .map_err(|m| err_at(line, m))?;
                (argv, pipes) = run_argv(&r.command, self.builder.config.shell_or_default());
                env = self.builder.config.env.clone();
                for (k, v) in &self.args {
                    if self.builder.config.env_value(k).is_none() {
                        env.push(format!("{k}={v}"));
                    }
                }
                for p in PROXY_ARGS {
                    if let Some(v) = self.opts.build_args.get(p) {
                        if !env
                            .iter()
                            .any(|e| e.split_once('=').map(|(k, _)| k) == Some(p))
                        {
                            env.push(format!("{p}={v}"));
                        }
                    }
                }
                Instruction::Run(r)
            }
            other => other.clone(),
        };
        self.builder
            .apply(&instruction)
            .map_err(|m| err_at(line, m))?;
        let created_by = created_by(
            &instruction,
            &argv,
            &self.history_args(),
            &self.builder.config,
        );
        Ok(Step {
            line,
            instruction,
            created_by,
            sources,
            argv,
            pipes,
            env,
            config: self.builder.config.clone(),
            onbuild,
        })
    }

    fn expand_transfer(&self, t: &Transfer, line: usize, cmd: &str) -> Result<Transfer, PlanError> {
        let mut out = t.clone();
        out.sources = t
            .sources
            .iter()
            .map(|s| self.expand(s, line))
            .collect::<Result<_, _>>()?;
        out.dest = self.expand(&t.dest, line)?;
        out.from = self.expand_opt(&t.from, line)?;
        out.chown = self.expand_opt(&t.chown, line)?;
        out.chmod = self.expand_opt(&t.chmod, line)?;
        out.checksum = self.expand_opt(&t.checksum, line)?;
        out.excludes = t
            .excludes
            .iter()
            .map(|s| self.expand(s, line))
            .collect::<Result<_, _>>()?;
        let scope = Scope {
            env: &self.builder.config.env,
            args: &self.args,
        };
        for f in &mut out.inline {
            if f.expand {
                f.data = self
                    .lex
                    .process_heredoc(&f.data, &scope)
                    .map_err(|e| err_at(line, e.0))?;
            }
        }
        if out.sources.len() + out.inline.len() > 1 && !out.dest.ends_with('/') {
            return Err(err_at(
                line,
                format!("When using {cmd} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        Ok(out)
    }
}

/// The argv of a RUN, with BuildKit's heredoc handling for the shell form: a command
/// that is only a heredoc marker runs the heredoc's body with the shell (or, when the
/// body starts with `#!`, as the script `/dev/pipes/<name>`); any other command with
/// heredocs gets the bodies and terminators appended, for the shell to read.
fn run_argv(cmd: &CommandLine, shell: Vec<String>) -> (Vec<String>, Vec<InlineFile>) {
    if !cmd.shell_form {
        return (cmd.args.clone(), Vec::new());
    }
    let text = cmd.args.first().cloned().unwrap_or_default();
    let mut argv = shell;
    match cmd.files.first() {
        None => argv.push(text),
        Some(first) if crate::parser::parse_heredoc_marker(&text).is_some() => {
            if first.data.starts_with("#!") {
                return (
                    vec![format!("/dev/pipes/{}", first.name)],
                    vec![first.clone()],
                );
            }
            argv.push(first.data.clone());
        }
        Some(_) => {
            let mut full = text;
            for f in &cmd.files {
                full.push('\n');
                full.push_str(&f.data);
                full.push_str(&f.name);
            }
            argv.push(full);
        }
    }
    (argv, Vec::new())
}

fn json_array(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn transfer_text(cmd: &str, t: &Transfer) -> String {
    let mut parts = vec![cmd.to_string()];
    let mut flag = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.push(format!("--{name}={v}"));
        }
    };
    flag("from", &t.from);
    flag("chown", &t.chown);
    flag("chmod", &t.chmod);
    flag("checksum", &t.checksum);
    if t.link {
        parts.push("--link".to_string());
    }
    if t.parents {
        parts.push("--parents".to_string());
    }
    if t.keep_git_dir {
        parts.push("--keep-git-dir".to_string());
    }
    for e in &t.excludes {
        parts.push(format!("--exclude={e}"));
    }
    parts.extend(t.sources.iter().cloned());
    parts.extend(t.inline.iter().map(|f| format!("<<{}", f.name)));
    parts.push(t.dest.clone());
    parts.push("# buildkit".to_string());
    parts.join(" ")
}

fn kv_text(cmd: &str, kvs: &[KeyValue]) -> String {
    let mut s = cmd.to_string();
    for kv in kvs {
        s.push_str(&format!(" {}={}", kv.key, kv.value));
    }
    s
}

/// The history text of an expanded instruction.
fn created_by(
    instruction: &Instruction,
    argv: &[String],
    args: &[(String, String)],
    config: &ImageConfig,
) -> String {
    match instruction {
        Instruction::Run(_) => {
            let mut s = "RUN ".to_string();
            if !args.is_empty() {
                s.push_str(&format!("|{} ", args.len()));
                for (k, v) in args {
                    s.push_str(&format!("{k}={v} "));
                }
            }
            s.push_str(&argv.join(" "));
            s.push_str(" # buildkit");
            s
        }
        Instruction::Copy(t) => transfer_text("COPY", t),
        Instruction::Add(t) => transfer_text("ADD", t),
        Instruction::Env(kvs) => kv_text("ENV", kvs),
        Instruction::Label(kvs) => kv_text("LABEL", kvs),
        Instruction::Arg(decls) => {
            let mut s = "ARG".to_string();
            for d in decls {
                match &d.default {
                    Some(v) => s.push_str(&format!(" {}={}", d.name, v)),
                    None => s.push_str(&format!(" {}", d.name)),
                }
            }
            s
        }
        Instruction::Workdir(_) => format!("WORKDIR {}", config.working_dir),
        Instruction::User(u) => format!("USER {u}"),
        Instruction::Expose(_) => {
            let ports: Vec<&str> = config.exposed_ports.keys().map(String::as_str).collect();
            format!("EXPOSE {}", ports.join(" "))
        }
        Instruction::Volume(v) => format!("VOLUME {}", json_array(v)),
        Instruction::StopSignal(s) => format!("STOPSIGNAL {s}"),
        Instruction::Cmd(_) => format!("CMD {}", json_array(config.cmd.as_deref().unwrap_or(&[]))),
        Instruction::Entrypoint(_) => format!(
            "ENTRYPOINT {}",
            json_array(config.entrypoint.as_deref().unwrap_or(&[]))
        ),
        Instruction::Shell(s) => format!("SHELL {}", json_array(s)),
        Instruction::Healthcheck(_) => format!(
            "HEALTHCHECK {}",
            serde_json::to_string(&config.healthcheck).unwrap_or_default()
        ),
        Instruction::Onbuild(o) => format!("ONBUILD {}", o.expression),
        Instruction::Maintainer(m) => format!("MAINTAINER {m}"),
        Instruction::From(f) => format!("FROM {}", f.image),
    }
}

fn mount_text(m: &Mount) -> String {
    format!(
        "type={} from={:?} source={:?} target={:?} ro={} id={:?} sharing={:?} required={} mode={:?} uid={:?} gid={:?} size={:?} env={:?}",
        m.kind.as_str(),
        m.from,
        m.source,
        m.target,
        m.read_only,
        m.id,
        m.sharing,
        m.required,
        m.mode,
        m.uid,
        m.gid,
        m.size,
        m.env
    )
}

/// The cache key of a step: sha256 (hex) over the parent's key (the previous step's
/// key, or the base image's digest for the first step), the step's history text, what
/// else changes its result without appearing there (RUN mounts, network and security
/// modes; heredoc contents), and `sources_digest` — a digest of the files the step
/// reads (context files for COPY/ADD, computed by the caller), `None` when it reads
/// none.
pub fn cache_key(parent: &str, step: &Step, sources_digest: Option<&str>) -> String {
    let mut h = Sha256::new();
    let mut field = |label: &str, value: &str| {
        h.update(label.as_bytes());
        h.update((value.len() as u64).to_be_bytes());
        h.update(value.as_bytes());
    };
    field("berth-build cache v1", "");
    field("parent", parent);
    field("created_by", &step.created_by);
    match &step.instruction {
        Instruction::Run(r) => {
            for m in &r.mounts {
                field("mount", &mount_text(m));
            }
            let net = match r.network {
                None | Some(NetworkMode::Default) => "default",
                Some(NetworkMode::None) => "none",
                Some(NetworkMode::Host) => "host",
            };
            field("network", net);
            field("security", r.security.as_deref().unwrap_or(""));
            for f in &r.command.files {
                field("file", &f.name);
                field("data", &f.data);
            }
        }
        Instruction::Copy(t) | Instruction::Add(t) => {
            for f in &t.inline {
                field("file", &f.name);
                field("data", &f.data);
            }
        }
        _ => {}
    }
    field("sources", sources_digest.unwrap_or("-"));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
        BuildOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: target.map(str::to_string),
            ..BuildOptions::default()
        }
    }

    fn plan_src(src: &str, o: &BuildOptions) -> Result<Plan, PlanError> {
        plan_dockerfile(src, o, &NoImages)
    }

    fn created(p: &Plan, stage: usize) -> Vec<String> {
        p.stage(stage)
            .expect("stage planned")
            .steps
            .iter()
            .map(|s| s.created_by.clone())
            .collect()
    }

    const MULTI: &str = "\
ARG GO=1.22
FROM golang:${GO} AS build
RUN go build -o /app
FROM alpine AS test
COPY --from=build /app /app
COPY --from=docs /index.html /
RUN /app -test
FROM build AS lint
RUN golint
FROM nginx AS docs
COPY site /usr/share/nginx/html
FROM scratch
COPY --from=build /app /app
COPY --from=docs /index.html /
";

    #[test]
    fn multi_stage_default_target() {
        let p = plan_src(MULTI, &BuildOptions::default()).expect("plans");
        assert_eq!(p.target, 4);
        let s = p.stage(4).expect("final");
        assert_eq!(s.display_name, "stage-4");
        assert_eq!(s.base, Base::Scratch);
        assert_eq!(s.deps, BTreeSet::from([0, 3]));
        assert_eq!(p.pruned, vec![1, 2]);
        assert_eq!(p.order, vec![0, 3, 4]);
        assert_eq!(p.parallel, vec![vec![0, 3], vec![4]]);
        let b = p.stage(0).expect("build");
        assert_eq!(b.base, Base::Image("golang:1.22".into()));
        assert_eq!(b.images, BTreeSet::from(["golang:1.22".to_string()]));
        assert_eq!(s.steps[1].sources, vec![Source::Stage(3)]);
        assert_eq!(
            p.stage(3).expect("docs").steps[0].sources,
            vec![Source::Context]
        );
    }

    #[test]
    fn target_pruning() {
        let p = plan_src(MULTI, &opts(&[("GO", "1.23")], Some("LINT"))).expect("plans");
        assert_eq!(p.target, 2);
        assert_eq!(p.order, vec![0, 2]);
        assert_eq!(p.pruned, vec![1, 3, 4]);
        assert_eq!(p.stage(2).expect("lint").base, Base::Stage(0));
        assert_eq!(
            p.stage(0).expect("build").base,
            Base::Image("golang:1.23".into())
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // `test` copies from `docs`, defined after it: still a stage dependency.
        let p = plan_src(MULTI, &opts(&[], Some("test"))).expect("plans");
        assert_eq!(p.stage(1).expect("test").deps, BTreeSet::from([0, 3]));
        assert_eq!(p.order, vec![0, 3, 1]);
        assert_eq!(p.parallel, vec![vec![0, 3], vec![1]]);
        assert_eq!(p.pruned, vec![2, 4]);
    }

    #[test]
    fn no_stages() {
        let e = plan_src("ARG A=1\n", &BuildOptions::default()).expect_err("no FROM");
        assert_eq!(e.to_string(), "dockerfile contains no stages to build");
    }

    #[test]
    fn unknown_target() {
        let e = plan_src(MULTI, &opts(&[], Some("nope"))).expect_err("unknown");
        assert_eq!(e, PlanError::UnknownTarget("nope".into()));
        assert_eq!(e.to_string(), "target stage nope could not be found");
    }

    #[test]
    fn cycles() {
        let e = plan_src(
            "FROM busybox AS stage0\nCOPY --from=stage0 f1 /sub/\n",
            &BuildOptions::default(),
        )
        .expect_err("self cycle");
        assert_eq!(
            e.to_string(),
            "circular dependency detected on stage: stage0"
        );
        let src = "FROM busybox AS stage0\nCOPY --from=stage2 f1 /sub/\nFROM busybox AS stage1\nCOPY --from=stage0 f2 /sub/\nFROM busybox AS stage2\nCOPY --from=stage1 f2 /sub/\n";
        let e = plan_src(src, &BuildOptions::default()).expect_err("cycle");
        assert_eq!(e, PlanError::Cycle("stage0".into()));
        let e = plan_src("FROM a\nCOPY --from=0 x /x\n", &BuildOptions::default())
            .expect_err("index self");
        assert_eq!(
            e.to_string(),
            "circular dependency detected on stage: stage-0"
        );
        // Cycles among pruned stages still fail, as in BuildKit.
        let src = "FROM a AS x\nCOPY --from=y f /f\nFROM a AS y\nCOPY --from=x f /f\nFROM a AS z\n";
        assert_eq!(
            plan_src(src, &opts(&[], Some("z"))).expect_err("cycle"),
            PlanError::Cycle("x".into())
        );
    }

    #[test]
    fn from_refs() {
        // FROM a later stage's name is an image; COPY --from a name that is no stage is
        // an image; an index past the end is an error.
        let src = "FROM later AS first\nCOPY --from=busybox:1 /bin/sh /sh\nRUN --mount=type=bind,from=2,target=/m true\nFROM first\nFROM alpine AS later\n";
        let p = plan_src(src, &opts(&[], Some("first"))).expect("plans");
        let s = p.stage(0).expect("first");
        assert_eq!(s.base, Base::Image("later".into()));
        assert_eq!(s.steps[0].sources, vec![Source::Image("busybox:1".into())]);
        assert_eq!(s.steps[1].sources, vec![Source::Stage(2)]);
        assert_eq!(s.deps, BTreeSet::from([2]));
        assert!(s.images.contains("busybox:1"));
        assert_eq!(p.stage(1), None);
        let e =
            plan_src("FROM a\nCOPY --from=5 x /x\n", &BuildOptions::default()).expect_err("index");
        assert_eq!(
            e.to_string(),
            "dockerfile parse error line 2: invalid stage index 5"
        );
    }

    #[test]
    fn arg_scoping() {
        let src = "\
ARG BASE=alpine
ARG TAG
ARG V=${BASE}-x
FROM ${BASE}:${TAG:-latest}
RUN echo $BASE
ENV E=[$BASE]
ARG BASE
ENV F=[$BASE] G=$V
ARG N=1
ARG N2=$N$N
ENV H=$N2
ARG BUILD
LABEL b=$BUILD
";
        let p = plan_src(
            src,
            &opts(
                &[("BUILD", "7"), ("UNUSED", "x"), ("HTTP_PROXY", "http://p")],
                None,
            ),
        )
        .expect("plans");
        let s = p.stage(0).expect("stage");
        assert_eq!(s.base, Base::Image("alpine:latest".into()));
        assert_eq!(
            s.config.env_value("E"),
            Some("[]"),
            "global ARG not visible before redeclaring"
        );
        assert_eq!(s.config.env_value("F"), Some("[alpine]"));
        assert_eq!(s.config.env_value("G"), Some(""));
        assert_eq!(s.config.env_value("H"), Some("11"));
        assert_eq!(s.config.labels.get("b").map(String::as_str), Some("7"));
        let run = &s.steps[0];
        assert_eq!(run.argv, vec!["/bin/sh", "-c", "echo $BASE"]);
        assert_eq!(run.created_by, "RUN /bin/sh -c echo $BASE # buildkit");
        assert!(run.env.contains(&"HTTP_PROXY=http://p".to_string()));
        assert!(!run.env.iter().any(|e| e.starts_with("BASE=")));
        assert_eq!(
            p.warnings,
            vec!["[Warning] One or more build-args [UNUSED] were not consumed"]
        );
        let h = created(&p, 0);
        assert_eq!(h[2], "ARG BASE=alpine");
        assert_eq!(h[3], "ENV F=[alpine] G=");
    }

    #[test]
    fn env_beats_arg_and_run_env() {
        let src = "FROM scratch\nARG X=arg\nENV Y=$X\nENV X=env\nARG Z=$X\nRUN [\"env\"]\n";
        let p = plan_src(src, &opts(&[("http_proxy", "p")], None)).expect("plans");
        let s = p.stage(0).expect("stage");
        assert_eq!(s.config.env_value("Y"), Some("arg"));
        let run = s.steps.last().expect("run");
        assert_eq!(run.argv, vec!["env"]);
        assert_eq!(
            run.env,
            vec![
                format!("PATH={}", crate::config::DEFAULT_PATH),
                "Y=arg".to_string(),
                "X=env".to_string(),
                "Z=env".to_string(),
                "http_proxy=p".to_string(),
            ]
        );
        assert_eq!(run.created_by, "RUN |2 X=arg Z=env env # buildkit");
    }

    #[test]
    fn expansion_per_instruction() {
        let src = "\
FROM scratch
ARG P=8080 D=/srv U=app
ENV PORTS=\"80 443/udp\"
EXPOSE $P $PORTS
WORKDIR $D
WORKDIR sub
USER $U
VOLUME $D/data
STOPSIGNAL SIG${S:-TERM}
COPY --chown=$U ${D}/a b/ ./
ADD --chmod=644 https://example.com/x.tgz $D/
CMD echo $P
ENTRYPOINT [\"/bin/$U\"]
SHELL [\"/bin/bash\", \"-c\"]
RUN echo $P
HEALTHCHECK --interval=1s CMD true
ONBUILD COPY . $D
MAINTAINER me
LABEL k=\"v w\"
";
        let p = plan_src(src, &BuildOptions::default()).expect("plans");
        let s = p.stage(0).expect("stage");
        let c = &s.config;
        assert_eq!(
            c.exposed_ports.keys().cloned().collect::<Vec<_>>(),
            vec!["443/udp", "80/tcp", "8080/tcp"]
        );
        assert_eq!(c.working_dir, "/srv/sub");
        assert_eq!(c.user, "app");
        assert!(c.volumes.contains_key("/srv/data"));
        assert_eq!(c.stop_signal, "SIGTERM");
        assert_eq!(
            c.cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo $P".into()])
        );
        assert_eq!(
            c.entrypoint,
            Some(vec!["/bin/$U".into()]),
            "exec form is not expanded"
        );
        assert_eq!(c.on_build, vec!["COPY . $D"]);
        assert_eq!(c.labels.get("k").map(String::as_str), Some("v w"));
        let h = created(&p, 0);
        let want = [
            "ARG P=8080 D=/srv U=app",
            "ENV PORTS=80 443/udp",
            "EXPOSE 443/udp 80/tcp 8080/tcp",
            "WORKDIR /srv",
            "WORKDIR /srv/sub",
            "USER app",
            "VOLUME [\"/srv/data\"]",
            "STOPSIGNAL SIGTERM",
            "COPY --chown=app /srv/a b/ ./ # buildkit",
            "ADD --chmod=644 https://example.com/x.tgz /srv/ # buildkit",
            "CMD [\"/bin/sh\",\"-c\",\"echo $P\"]",
            "ENTRYPOINT [\"/bin/$U\"]",
            "SHELL [\"/bin/bash\",\"-c\"]",
            "RUN |3 P=8080 D=/srv U=app /bin/bash -c echo $P # buildkit",
            "HEALTHCHECK {\"Test\":[\"CMD-SHELL\",\"true\"],\"Interval\":1000000000}",
            "ONBUILD COPY . $D",
            "MAINTAINER me",
            "LABEL k=v w",
        ];
        assert_eq!(h, want);
        assert_eq!(
            s.steps[10].sources,
            Vec::<Source>::new(),
            "ADD of a URL reads no context"
        );
        assert_eq!(s.steps[13].config.working_dir, "/srv/sub");
    }

    #[test]
    fn plan_errors() {
        let cases = [
            ("FROM a\nARG X=${Y\n", "dockerfile parse error line 2: syntax error: missing '}'"),
            ("ARG B\nFROM $B\n", "dockerfile parse error line 2: base name ($B) should not be blank"),
            ("FROM a\nCOPY a b c\n", "dockerfile parse error line 2: When using COPY with more than one source file, the destination must be a directory and end with a /"),
            ("FROM a\nEXPOSE 80/xyz\n", "dockerfile parse error line 2: invalid proto: xyz"),
            ("FROM a\nSTOPSIGNAL NOPE\n", "dockerfile parse error line 2: Invalid signal: NOPE"),
            ("FROM a\nARG M=9\nRUN --mount=type=cache,target=/c,mode=$M true\n", "dockerfile parse error line 3: invalid value 9 for mode"),
            ("FROM a\nENV A=${B:?required}\n", "dockerfile parse error line 2: B: required"),
        ];
        for (src, want) in cases {
            assert_eq!(
                plan_src(src, &BuildOptions::default())
                    .expect_err(src)
                    .to_string(),
                want,
                "{src:?}"
            );
        }
        // Errors in pruned stages do not matter.
        plan_src(
            "FROM a AS bad\nSTOPSIGNAL NOPE\nARG X=${Y\nFROM b AS good\n",
            &opts(&[], Some("good")),
        )
        .expect("pruned stage is not expanded");
    }

    #[test]
    fn mounts_expanded_in_plan() {
        let src = "FROM a\nARG DIR=/cache ID=go\nRUN --mount=type=cache,target=$DIR,id=${ID} --mount=type=secret,id=tok --mount=target=/src go build\n";
        let p = plan_src(src, &BuildOptions::default()).expect("plans");
        let run = &p.stage(0).expect("stage").steps[1];
        let Instruction::Run(r) = &run.instruction else {
            panic!("not RUN")
        };
        assert_eq!(r.mounts[0].target.as_deref(), Some("/cache"));
        assert_eq!(r.mounts[0].id.as_deref(), Some("go"));
        assert_eq!(
            run.sources,
            vec![Source::Context],
            "a bind mount without from reads the context"
        );
    }

    #[test]
    fn heredocs_in_plan() {
        let src = "FROM a\nARG NAME=world\nCOPY <<greet.txt <<'raw' /d/\nhello $NAME \"q\"\ngreet.txt\n$NAME\nraw\nRUN <<EOF\necho $NAME\nEOF\n";
        let p = plan_src(src, &BuildOptions::default()).expect("plans");
        let s = p.stage(0).expect("stage");
        let Instruction::Copy(t) = &s.steps[1].instruction else {
            panic!("not COPY")
        };
        assert_eq!(t.inline[0].data, "hello world \"q\"\n");
        assert_eq!(t.inline[1].data, "$NAME\n");
        assert_eq!(
            s.steps[1].created_by,
            "COPY <<greet.txt <<raw /d/ # buildkit"
        );
        assert_eq!(s.steps[1].sources, Vec::<Source>::new());
        let Instruction::Run(r) = &s.steps[2].instruction else {
            panic!("not RUN")
        };
        assert_eq!(r.command.files[0].data, "echo $NAME\n");
    }

    /// Records which images the planner asked for.
    struct Recorder {
        asked: std::cell::RefCell<Vec<(String, Option<String>)>>,
    }

    impl ImageResolver for Recorder {
        fn config(&self, image: &str, platform: Option<&str>) -> Option<ImageConfig> {
            self.asked
                .borrow_mut()
                .push((image.to_string(), platform.map(str::to_string)));
            (image == "debian").then(|| ImageConfig {
                env: vec!["PATH=/usr/bin".into()],
                working_dir: "/root".into(),
                ..ImageConfig::default()
            })
        }
    }

    #[test]
    fn base_configs_are_asked_only_for_needed_stages() {
        let src = "\
FROM --platform=linux/arm64 debian AS app
ENV PATH=$PATH:/opt/bin
WORKDIR sub
FROM private.example/secret-base AS unused
FROM app
";
        let r = Recorder {
            asked: Default::default(),
        };
        let p = plan_dockerfile(src, &BuildOptions::default(), &r).expect("plans");
        assert_eq!(
            *r.asked.borrow(),
            vec![("debian".to_string(), Some("linux/arm64".to_string()))]
        );
        assert_eq!(p.pruned, vec![1]);
        let last = p.target_stage().expect("target");
        assert_eq!(last.base, Base::Stage(0));
        assert_eq!(last.config.env_value("PATH"), Some("/usr/bin:/opt/bin"));
        assert_eq!(last.config.working_dir, "/root/sub");
        assert!(last.steps.is_empty());
    }

    #[test]
    fn run_heredoc_argv() {
        let src = "FROM a\nRUN <<EOF\necho $A\nEOF\nRUN <<-py\n\t#!/usr/bin/env python3\n\tprint(1)\npy\nRUN cat <<EOF > /x\nhello\nEOF\nRUN [\"true\"]\n";
        let p = plan_src(src, &BuildOptions::default()).expect("plans");
        let steps = &p.stage(0).expect("stage").steps;
        assert_eq!(steps[0].argv, vec!["/bin/sh", "-c", "echo $A\n"]);
        assert!(steps[0].pipes.is_empty());
        assert_eq!(steps[1].argv, vec!["/dev/pipes/py"]);
        assert_eq!(steps[1].pipes[0].data, "#!/usr/bin/env python3\nprint(1)\n");
        assert_eq!(
            steps[2].argv,
            vec!["/bin/sh", "-c", "cat <<EOF > /x\nhello\nEOF"]
        );
        assert_eq!(steps[3].argv, vec!["true"]);
        assert_eq!(steps[3].created_by, "RUN true # buildkit");
    }

    #[test]
    fn onbuild_triggers_injected_after_from() {
        let mut images = BTreeMap::new();
        images.insert(
            "base:1".to_string(),
            ImageConfig {
                env: vec!["HOME=/root".into()],
                on_build: vec!["COPY . /app".into(), "RUN make -C $HOME".into()],
                ..ImageConfig::default()
            },
        );
        let src = "FROM base:1 AS one\nENV A=$HOME\nONBUILD RUN echo child\nFROM one\nRUN true\n";
        let p = plan_dockerfile(src, &BuildOptions::default(), &images).expect("plans");
        let one = p.stage(0).expect("one");
        assert_eq!(one.steps.len(), 4);
        assert!(one.steps[0].onbuild && one.steps[1].onbuild && !one.steps[2].onbuild);
        assert_eq!(one.steps[0].line, 1);
        assert_eq!(one.steps[0].created_by, "COPY . /app # buildkit");
        assert_eq!(
            one.steps[1].created_by,
            "RUN /bin/sh -c make -C $HOME # buildkit"
        );
        assert_eq!(one.config.env_value("A"), Some("/root"));
        assert_eq!(
            one.config.on_build,
            vec!["RUN echo child"],
            "base triggers are not inherited"
        );
        let last = p.stage(1).expect("last");
        assert_eq!(
            last.steps[0].created_by,
            "RUN /bin/sh -c echo child # buildkit"
        );
        assert!(last.steps[0].onbuild);
        assert!(last.config.on_build.is_empty());
    }

    #[test]
    fn automatic_platform_args() {
        let o = BuildOptions {
            platform_args: platform_args("linux/amd64", "linux/arm/v7"),
            ..BuildOptions::default()
        };
        let src = "ARG TARGETARCH\nFROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETARCH TARGETVARIANT\nENV GOARCH=$TARGETARCH V=${TARGETVARIANT#v} OS=$TARGETOS\n";
        let p = plan_dockerfile(src, &o, &NoImages).expect("plans");
        let s = p.stage(0).expect("stage");
        assert_eq!(s.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(s.config.env_value("GOARCH"), Some("arm"));
        assert_eq!(s.config.env_value("V"), Some("7"));
        assert_eq!(
            s.config.env_value("OS"),
            Some(""),
            "not declared in the stage"
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn docker_reference_style_expansion() {
        // Our own cases in the spirit of the reference's examples: a variable set by ENV
        // is used by later instructions, an escaped `$` stays literal, and a
        // replacement within one ENV line uses the value from before that line.
        let src = "\
FROM busybox
ENV DIR=/opt/app
WORKDIR ${DIR}
ADD . $DIR
COPY \\$DIR /lit
ENV who=alice
ENV who=bob greeting=hi-$who
ENV final=$who
";
        let p = plan_src(src, &BuildOptions::default()).expect("plans");
        let s = p.stage(0).expect("stage");
        assert_eq!(s.config.working_dir, "/opt/app");
        let h = created(&p, 0);
        assert_eq!(h[2], "ADD . /opt/app # buildkit");
        assert_eq!(h[3], "COPY $DIR /lit # buildkit");
        assert_eq!(s.config.env_value("greeting"), Some("hi-alice"));
        assert_eq!(s.config.env_value("final"), Some("bob"));
    }

    #[test]
    fn onbuild_trigger_dependencies() {
        // A base image's trigger copies from a stage: that stage becomes a dependency
        // (and so is planned first) even though no instruction of the file names it.
        let mut images = BTreeMap::new();
        images.insert(
            "toolbox".to_string(),
            ImageConfig {
                on_build: vec!["COPY --from=assets /a /a".into()],
                ..ImageConfig::default()
            },
        );
        let src = "FROM toolbox AS app\nRUN true\nFROM alpine AS assets\nRUN make\nFROM scratch AS other\n";
        let p = plan_dockerfile(src, &opts(&[], Some("app")), &images).expect("plans");
        assert_eq!(p.order, vec![1, 0]);
        assert_eq!(p.pruned, vec![2]);
        let app = p.stage(0).expect("app");
        assert_eq!(app.deps, BTreeSet::from([1]));
        assert_eq!(app.steps[0].sources, vec![Source::Stage(1)]);
        assert!(app.steps[0].onbuild);
        // Stage triggers: a later stage FROM a stage with ONBUILD gets that dependency.
        let src = "FROM a AS x\nONBUILD COPY --from=y /f /f\nFROM x AS z\nFROM b AS y\n";
        let p = plan_dockerfile(src, &opts(&[], Some("z")), &NoImages).expect("plans");
        assert_eq!(p.stage(1).expect("z").deps, BTreeSet::from([0, 2]));
        assert_eq!(p.order, vec![0, 2, 1]);
        // A trigger that closes a loop is a cycle.
        let src = "FROM a AS x\nONBUILD COPY --from=z /f /f\nFROM x AS z\n";
        assert_eq!(
            plan_dockerfile(src, &BuildOptions::default(), &NoImages).expect_err("cycle"),
            PlanError::Cycle("z".into())
        );
    }

    #[test]
    fn cache_keys() {
        let p = plan_src(
            "FROM a\nRUN echo 1\nRUN echo 2\nCOPY x /x\n",
            &BuildOptions::default(),
        )
        .expect("plans");
        let steps = &p.stage(0).expect("stage").steps;
        let k1 = cache_key("sha256:base", &steps[0], None);
        assert_eq!(k1.len(), 64);
        assert!(k1.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            k1,
            cache_key("sha256:base", &steps[0], None),
            "deterministic"
        );
        assert_ne!(k1, cache_key("sha256:other", &steps[0], None));
        assert_ne!(k1, cache_key("sha256:base", &steps[1], None));
        let k3 = cache_key(&k1, &steps[2], Some("sha256:aaa"));
        assert_ne!(k3, cache_key(&k1, &steps[2], Some("sha256:bbb")));
        assert_ne!(k3, cache_key(&k1, &steps[2], None));
        // Mount options change the key though not the history text.
        let a = plan_src(
            "FROM a\nRUN --mount=type=cache,target=/a make\n",
            &BuildOptions::default(),
        )
        .expect("a");
        let b = plan_src(
            "FROM a\nRUN --mount=type=cache,target=/b make\n",
            &BuildOptions::default(),
        )
        .expect("b");
        let (sa, sb) = (&a.stages[0].steps[0], &b.stages[0].steps[0]);
        assert_eq!(sa.created_by, sb.created_by);
        assert_ne!(cache_key("p", sa, None), cache_key("p", sb, None));
        // Heredoc content changes the key.
        let a = plan_src("FROM a\nCOPY <<f /f\n1\nf\n", &BuildOptions::default()).expect("a");
        let b = plan_src("FROM a\nCOPY <<f /f\n2\nf\n", &BuildOptions::default()).expect("b");
        assert_ne!(
            cache_key("p", &a.stages[0].steps[0], None),
            cache_key("p", &b.stages[0].steps[0], None)
        );
    }
}
