//! Dockerfile parsing and build planning for berthd — no execution.
//!
//! The crate turns a Dockerfile, build arguments and a target into a [`plan::Plan`]:
//! a list of stages, each with its base and a list of expanded steps, plus the order in
//! which stages can be built and which of them may run in parallel. An executor (outside
//! this crate) runs the plan; this crate never touches containers or images.
//!
//! Pipeline, one module per concern:
//! 1. [`parser`]: text → [`parser::Dockerfile`] (directives, continuations, comments,
//!    heredocs, flags, JSON form; every node keeps its line numbers).
//! 2. [`instructions`]: nodes → typed [`instructions::Instruction`]s, checking arity and
//!    flags with Docker's messages. Values are kept unexpanded.
//! 3. [`expand`]: BuildKit's shell-word expansion (`$V`, `${V:-w}`, quotes, escapes),
//!    applied by the planner to the instructions Docker expands.
//! 4. [`plan`]: stages, ARG scoping, stage references, dependency graph, pruning for the
//!    target, cycle detection, topological order and parallel groups, expanded steps with
//!    their history text, and [`plan::cache_key`].
//! 5. [`config`]: the image-config effects of steps (Env, Cmd, Entrypoint, ...), with
//!    Docker's JSON field names, and the ONBUILD triggers of base images.
//! 6. [`ignore`]: `.dockerignore` matching and context walking.
//!
//! Errors follow Docker's/BuildKit's wording, prefixed with
//! `dockerfile parse error line N:` when tied to a line ([`error::ParseError`]).

pub mod config;
pub mod error;
pub mod expand;
pub mod ignore;
pub mod instructions;
pub mod parser;
pub mod plan;

pub use error::{ExpandError, ParseError, PlanError, WalkError};
