//! Failures and the exit codes they map to. This is the only place that decides an exit code.

use std::fmt;

use crate::config::Diagnostic;

/// The documented exit codes (DESIGN.md), the same for every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// `diff` found differences, `plan` has changes, `render --check` found stale files.
    Changes = 1,
    /// Usage or configuration error; nothing was touched.
    Usage = 2,
    /// The deploy failed and the previous release was put back.
    RolledBack = 3,
    /// A failure that needs a person: rollback failed, or the state is unknown.
    NeedsPerson = 4,
    /// The region is locked by someone else.
    Locked = 5,
    /// A target (Docker, Kubernetes, registry) could not be reached.
    Unreachable = 6,
}

/// Serialized as the number the process exits with.
impl serde::Serialize for ExitCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_i32(*self as i32)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Problems in region files; every one is printed.
    #[error("{} problem(s) in the configuration", .0.len())]
    Config(Vec<Diagnostic>),
    /// A wrong argument or a request that cannot be met without touching anything.
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
    /// Any other failure, with its exit code.
    #[error("{error}")]
    Failed {
        code: ExitCode,
        error: anyhow::Error,
        hint: Option<String>,
    },
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn failed(code: ExitCode, error: impl Into<anyhow::Error>) -> Self {
        Error::Failed {
            code,
            error: error.into(),
            hint: None,
        }
    }

    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        match self {
            Error::Usage { message, .. } => Error::Usage {
                message,
                hint: Some(hint.into()),
            },
            Error::Failed { code, error, .. } => Error::Failed {
                code,
                error,
                hint: Some(hint.into()),
            },
            other => other,
        }
    }

    pub fn code(&self) -> ExitCode {
        match self {
            Error::Config(_) | Error::Usage { .. } => ExitCode::Usage,
            Error::Failed { code, .. } => *code,
        }
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Config(vec![d])
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::failed(ExitCode::NeedsPerson, e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `Caused by:` chain of an error, one cause per line, as cargo prints it.
pub struct Chain<'a>(pub &'a anyhow::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut causes = self.0.chain().skip(1).peekable();
        if causes.peek().is_some() {
            write!(f, "\n\nCaused by:")?;
            for c in causes {
                write!(f, "\n  {c}")?;
            }
        }
        Ok(())
    }
}
