//! `kotel run`: builds the agent from the file, the `OTEL_*` environment and the flags, runs it
//! for `--duration` or until SIGINT/SIGTERM, stops it (flushing within the grace period and
//! writing `summary.json`) and prints what it did.

use std::io::{self, Write};

use crate::agent::{effective_config, Agent, Report, RunError};
use crate::cli::RunArgs;
use crate::export::Signal;
use crate::output::table;

/// Runs the agent until the duration passes or a signal arrives.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    let (cfg, export_cfg) = effective_config(args, &|k| std::env::var(k).ok())?;
    let mut agent = Agent::start(&cfg, &export_cfg, args.duration)?;
    let looped = agent.run_until_stopped();
    let report = agent.stop(looped)?;
    print_report(&mut io::stdout().lock(), &report).map_err(|source| RunError::Io {
        what: "writing the summary".into(),
        source,
    })
}

/// The per-process table, each signal's outcome, and where everything went.
fn print_report(out: &mut impl Write, r: &Report) -> io::Result<()> {
    table::write_summary(out, &r.summary)?;
    for sig in [Signal::Traces, Signal::Metrics, Signal::Profiles] {
        let s = r.export.signal(sig);
        if sig == Signal::Profiles && s.offered_items == 0 {
            continue;
        }
        write!(
            out,
            "{:<8} offered {}  exported {}  rejected {}  dropped {} (queue full {}, permanent {}, retries exhausted {}, shutdown {}",
            sig.as_str(),
            s.offered_items,
            s.exported_items,
            s.rejected_items,
            s.dropped_items,
            s.dropped_queue_full,
            s.dropped_permanent,
            s.dropped_retries_exhausted,
            s.dropped_shutdown
        )?;
        if s.dropped_unsupported > 0 {
            write!(out, ", unsupported {}", s.dropped_unsupported)?;
        }
        writeln!(out, ")")?;
    }
    let summary_json = r.out_dir.join("summary.json");
    match &r.endpoint {
        Some(ep) => writeln!(
            out,
            "exported to {}; summary in {}",
            crate::export::redact_endpoint(ep),
            summary_json.display()
        ),
        None => {
            let profiles = match r.export.signal(Signal::Profiles).offered_items {
                0 => String::new(),
                _ => format!(", {}", r.out_dir.join("profiles.jsonl").display()),
            };
            writeln!(
                out,
                "wrote {}, {}{profiles} and {}",
                r.out_dir.join("traces.jsonl").display(),
                r.out_dir.join("metrics.jsonl").display(),
                summary_json.display()
            )?;
            let files = r.export.files();
            for sig in Signal::ALL {
                let rotated = files.rotated(sig);
                if rotated > 0 {
                    writeln!(
                        out,
                        "{sig}.jsonl rotated {rotated} times, {} oldest backups deleted (export.rotation)",
                        files.removed(sig)
                    )?;
                }
            }
            Ok(())
        }
    }
}
