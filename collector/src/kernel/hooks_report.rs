//! Where the probes' hooks are looked up, and what the log says about the hooks each probe
//! got: one line per probe, a warning per fallback and per probe the kernel could not run.

use kotel_bpf::{Tracer, TracerConfig};

/// Where classic tracepoints are looked up: `KOTEL_TRACEFS` (one directory) when set, else
/// the usual tracefs mounts.
pub fn tracefs_roots() -> Vec<std::path::PathBuf> {
    match std::env::var_os("KOTEL_TRACEFS") {
        Some(dir) => vec![dir.into()],
        None => TracerConfig::default().tracefs,
    }
}

/// Says which hooks each probe got (one line each), warns for each probe on a fallback and
/// for every wanted probe the kernel could not run, naming the missing tracepoints.
pub(super) fn report(tracer: &Tracer) {
    for (probe, set) in tracer.hook_plan().iter() {
        let tracepoints: Vec<&str> = set.hooks.iter().map(|h| h.tracepoint).collect();
        tracing::info!(
            "kotel.probe.hooks: probe {probe} on {} ({})",
            set.name,
            tracepoints.join(", ")
        );
    }
    for line in tracer.fallbacks() {
        tracing::warn!("kotel.probe.fallback: {line}");
    }
    for (_, why) in tracer.left_out() {
        tracing::warn!("kotel.probe.skipped: {why}");
    }
}
