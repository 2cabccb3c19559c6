//! Dockerfile parsing and build planning for berthd — no execution.
//!
//! The crate turns a Dockerfile, build arguments and a target into a [`Plan`]: the stages
//! the target needs, each with its base and its expanded steps, an order in which to
//! build them and the groups that may be built in parallel. An executor (outside this
//! crate) runs the plan; this crate never touches containers, images or the network.
//!
//! # Pipeline
//!
//! One module per concern, each usable on its own:
//!
//! 1. [`parser`]: text → [`parser::Dockerfile`], a flat list of [`parser::Node`]s.
//!    Handles parser directives (`# escape=`, `# syntax=`, `# check=`), comments, line
//!    continuations with the escape character, empty continuation lines (warning),
//!    heredocs (`<<EOF`, `<<-EOF`, quoted delimiters, several per line, fd prefixes),
//!    `--flags`, and the JSON (exec) form; every node keeps its start and end line.
//! 2. [`instructions`]: nodes → typed [`Instruction`]s grouped into [`Stages`] (global
//!    ARGs + one [`instructions::Stage`] per FROM), with Docker's/BuildKit's checks and
//!    messages. Values stay unexpanded.
//! 3. [`expand`]: BuildKit's shell-word expansion ([`expand::Lexer`]) and the list of
//!    instructions the builder expands ([`expand::expands`]).
//! 4. [`mod@plan`]: [`plan()`] / [`plan_dockerfile`] apply ARG scoping, resolve stage
//!    references, build the dependency graph, prune what the target does not need,
//!    refuse cycles and unknown targets, order the stages, and expand each needed
//!    stage's instructions into [`Step`]s carrying their history text (`created_by`),
//!    sources, RUN argv/env and the config after the step. [`cache_key`] hashes a step
//!    onto its parent's key.
//! 5. [`config`]: [`ImageConfig`] (Docker's JSON field names) and [`ConfigBuilder`],
//!    the config effects of instructions; [`config::onbuild_triggers`] parses a base
//!    image's `OnBuild` so the planner runs those triggers right after FROM.
//! 6. [`ignore`]: `.dockerignore` ([`ignore::Matcher`]): parse, match, walk a context.
//!
//! # Design choices
//!
//! - Our own parser: the crates.io Dockerfile parsers mishandle heredocs and/or the
//!   escape directive (see the commit that added this crate).
//! - Instructions are parsed unexpanded and expanded only during planning, because the
//!   values depend on build args, the target's ARG scope and base-image ENV; stages the
//!   target does not need are never expanded, so their errors do not fail the build (as
//!   in BuildKit).
//! - External images are never fetched here: [`plan::ImageResolver`] lets the caller
//!   supply base-image configs (for ENV and ONBUILD); [`plan::NoImages`] plans with
//!   empty ones.
//! - Errors tied to a line display as `dockerfile parse error line N: message`
//!   ([`ParseError`]); planning adds [`PlanError`] (unknown target, cycles).

pub mod config;
pub mod error;
pub mod expand;
pub mod ignore;
pub mod instructions;
pub mod parser;
pub mod plan;

pub use config::{ConfigBuilder, HealthConfig, ImageConfig};
pub use error::{ExpandError, ParseError, PlanError, WalkError};
pub use ignore::Matcher;
pub use instructions::{parse_dockerfile, Instruction, Stages};
pub use plan::{
    cache_key, plan, plan_dockerfile, platform_args, Base, BuildOptions, ImageResolver, NoImages,
    Plan, PlannedStage, Source, Step,
};
