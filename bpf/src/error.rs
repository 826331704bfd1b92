//! Why loading or running the BPF side failed, with what to do about it.

use std::path::PathBuf;

/// An error from preflight checks, loading, attaching or reading the BPF object.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The process lacks the privileges BPF tracing needs.
    #[error("missing privileges: {missing}; run as root or grant CAP_BPF and CAP_PERFMON")]
    Privileges {
        /// Names of what is missing, e.g. "CAP_BPF, CAP_PERFMON".
        missing: String,
    },
    /// The kernel exposes no BTF, which CO-RE needs.
    #[error(
        "kernel BTF not found at {path}: kotel needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf {
        /// Where BTF was looked for.
        path: PathBuf,
    },
    /// None of the requested probes can run on this kernel.
    #[error("none of the requested probes can run on this kernel (missing: {missing})")]
    NothingToAttach {
        /// Tracepoints that were missing.
        missing: String,
    },
    /// A configuration value the loader cannot use.
    #[error("invalid tracer setting: {0}")]
    Config(String),
    /// A program could not be attached to its tracepoint.
    #[error("attaching to tracepoint {tracepoint} failed: {source}{hint}", hint = attach_hint(tracepoint))]
    Attach {
        /// The tracepoint, as `category/name`.
        tracepoint: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// libbpf refused at some step.
    #[error("{step} failed: {source}")]
    Libbpf {
        /// What kotel was doing.
        step: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
}

/// What to check when a tracepoint was found but could not be attached.
fn attach_hint(tracepoint: &str) -> &'static str {
    if tracepoint.starts_with("syscalls/") {
        " (syscall tracepoints attach through tracefs: is it mounted and readable, at \
         /sys/kernel/tracing?)"
    } else {
        ""
    }
}

impl LoadError {
    /// Whether the user must fix something before kotel can start (privileges, kernel
    /// support, settings), as opposed to a failure while loading or running: exit 2 vs 1.
    pub fn is_precondition(&self) -> bool {
        matches!(
            self,
            LoadError::Privileges { .. }
                | LoadError::NoBtf { .. }
                | LoadError::NothingToAttach { .. }
                | LoadError::Config(_)
        )
    }

    pub(crate) fn libbpf(step: &'static str) -> impl FnOnce(libbpf_rs::Error) -> Self {
        move |source| Self::Libbpf { step, source }
    }
}
