//! Why `kotel run` failed, and the exit code each failure gets.

use std::io;

use kotel_bpf::LoadError;

use crate::config::ConfigError;

/// Why `kotel run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration (file, environment or flags) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An environment variable is unusable.
    #[error("{0}")]
    Env(String),
    /// Loading or reading the BPF side failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The exporter could not be built.
    #[error("export: {0}")]
    Export(String),
    /// The OTLP receiver could not start.
    #[error("OTLP receiver: {0}")]
    Receiver(String),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What kotel was doing.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl RunError {
    /// Exit code: 2 for what must be fixed before starting, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_)
            | RunError::Env(_)
            | RunError::Export(_)
            | RunError::Receiver(_) => 2,
            RunError::Load(e) if e.is_precondition() => 2,
            _ => 1,
        }
    }
}

/// Wraps an I/O error with what kotel was doing.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}
