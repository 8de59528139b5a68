//! The process-level errors: [`Error`], what stopped a command, and its exit code (spec §3);
//! [`ConfigError`]; [`describe`], any error with its causes. HTTP's are `http::error`'s.

/// Why a command failed. `main` prints it as one line and exits with [`Error::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line: exit 2, naming the flag.
    #[error("{0} (see --help)")]
    Usage(String),
    /// Bad environment: exit 2, naming the variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Start-up, migration or serving failed: exit 1. Never holds a password.
    #[error("{0}")]
    Startup(String),
    /// `healthcheck` got no 200 in time: exit 1.
    #[error("healthcheck failed: {0}")]
    Probe(String),
}

/// A variable missing or malformed, as `VAR: reason` (quoting a value only if it is no secret).
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The variable's name, as the user must fix it.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// `var` is wrong, and why.
    pub fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError { var, reason: reason.into() }
    }
}

impl Error {
    /// 2 for bad usage or configuration, 1 for failures at run time (spec §3).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::Startup(_) | Error::Probe(_) => 1,
        }
    }
}

/// An error and its causes, `a: b: c` (tokio-postgres's `Display` alone says no more than
/// "error performing TLS handshake").
pub fn describe(err: &dyn std::error::Error) -> String {
    let causes = std::iter::successors(err.source(), |cause| cause.source());
    causes.fold(err.to_string(), |text, cause| format!("{text}: {cause}"))
}
