//! Error types shared by the modules.

use thiserror::Error;

/// A Dockerfile that cannot be parsed or is not valid, with the line of the instruction
/// at fault. Displays as Docker does: `dockerfile parse error line N: message`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("dockerfile parse error line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number (of the instruction's first line).
    pub line: usize,
    /// The message without the location prefix.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

/// A failure of shell-word expansion (`${A:?unset}`, a missing `}` or quote).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// A failure while planning a build (after parsing succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// An instruction failed to parse or expand.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Only global ARGs, no FROM.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `--target` names no stage.
    #[error("target stage {0} could not be found")]
    UnknownTarget(String),
    /// Stages depend on each other in a loop.
    #[error("circular dependency detected on stage: {0}")]
    Cycle(String),
    /// An ONBUILD trigger of a base image does not parse.
    #[error("failed to parse onbuild trigger {trigger:?} of {image}: {message}")]
    OnBuild {
        /// The base image holding the trigger.
        image: String,
        /// The trigger text.
        trigger: String,
        /// What went wrong.
        message: String,
    },
}

/// A failure reading a directory for the build context.
#[derive(Debug, Error)]
#[error("walking build context at {path}: {source}")]
pub struct WalkError {
    /// The path that could not be read.
    pub path: String,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}
