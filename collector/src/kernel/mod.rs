//! The kernel side as one source of data, for both `kotel capture` and `kotel run`: the
//! attached BPF probes ([`Tracer`]), the clock that turns their timestamps into Unix time and
//! the kernel's symbols for their stacks. It drains the ring buffer into decoded events and
//! lifecycle records, hands back the final histograms of exited processes, and stops.

pub mod clock;
pub mod decode;
pub mod folded;
pub mod frame;
mod hooks_report;
pub mod symbols;
pub mod ustack;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use kotel_bpf::{DropCounts, LoadError, Probe, ProbeSet, Tracer, TracerConfig};

use crate::model::{Histogram, KernelEvent};
use clock::Clock;
use decode::{decode_histogram, decode_record, DecodeError, Record};
use frame::Frame;
use symbols::{kernel_frames, KernelSymbols};
use ustack::{CodeLocation, UserSymbolizer, UstackCounts};

pub use hooks_report::tracefs_roots;

/// How often the clock's offset to Unix time is re-sampled.
const CLOCK_REFRESH: Duration = Duration::from_secs(1);

/// What one drain of the ring buffer brought.
#[derive(Debug, Default)]
pub struct Drained {
    /// Timed events, in ring-buffer order.
    pub events: Vec<KernelEvent>,
    /// Processes that called execve (`false`) or exited (`true`), in order.
    pub lifecycle: Vec<(u32, bool)>,
    /// Records that could not be decoded, with the first error.
    pub undecodable: u64,
    /// The first decoding error of this drain.
    pub first_error: Option<DecodeError>,
}

/// An event's stacks, symbolized; cheap to clone (a span, its flame graph line and its
/// profile sample share the frames).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stacks {
    /// Kernel frames, innermost first (`function+0xoff` as text).
    pub kernel: Option<Arc<[Frame]>>,
    /// User frames, innermost first (`function (file:line)`, `module+0xoff [buildid …]` or
    /// `0x… [unknown]` as text; see [`frame`]).
    pub user: Option<Arc<[Frame]>>,
    /// The innermost user frame that resolved to a function.
    pub user_code: Option<CodeLocation>,
}

/// The attached probes with their clock and symbols. Not `Send`: it lives on the thread that
/// loaded it.
pub struct KernelSource {
    tracer: Tracer,
    clock: Clock,
    symbols: KernelSymbols,
    /// User stacks' symbolizer; `stacks` takes `&self`, so it sits in a cell.
    users: RefCell<UserSymbolizer>,
}

impl KernelSource {
    /// Loads and attaches the probes, says which hooks each probe got (and which it could
    /// not), reads the kernel's symbols while the privilege to do so is still held, then drops
    /// every capability the steady state does not need.
    pub fn start(
        cfg: &TracerConfig,
        symbolize_budget: Duration,
    ) -> Result<KernelSource, LoadError> {
        let tracer = Tracer::start(cfg)?;
        hooks_report::report(&tracer);
        let active = tracer.active_probes();
        let stacks = [Probe::Offcpu, Probe::Writev, Probe::TcpSend]
            .into_iter()
            .any(|p| active.contains(p));
        let symbols = if stacks && cfg.capture_stacks {
            KernelSymbols::load()
        } else {
            KernelSymbols::default()
        };
        match kotel_bpf::preflight::drop_capabilities(&kotel_bpf::preflight::STEADY_STATE_CAPS) {
            Ok(caps) => {
                tracing::info!(
                    effective = format!("{:#x}", caps.effective),
                    "kotel.privileges.dropped"
                );
                if caps.bounding_kept != 0 {
                    tracing::info!(
                        bounding_kept = format!("{:#x}", caps.bounding_kept),
                        "kotel.privileges.bounding_set_kept: without CAP_SETPCAP the kernel \
                         keeps these in the bounding set; kotel can no longer use them (they \
                         left its effective and permitted sets), and it executes no programs"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "kotel.privileges.drop_failed"),
        }
        Ok(KernelSource {
            tracer,
            clock: Clock::new(CLOCK_REFRESH),
            symbols,
            users: RefCell::new(UserSymbolizer::with_budget(symbolize_budget)),
        })
    }

    /// The probes that run.
    pub fn active_probes(&self) -> ProbeSet {
        self.tracer.active_probes()
    }

    /// The BPF programs attached, by name.
    pub fn attached_programs(&self) -> Vec<&'static str> {
        self.tracer.attached_programs()
    }

    /// Waits up to `wait` for records, then decodes everything the ring buffer holds.
    pub fn drain(&mut self, wait: Duration) -> Result<Drained, LoadError> {
        let mut out = Drained::default();
        self.users.get_mut().new_drain();
        let clock = &self.clock;
        self.tracer
            .poll(wait, |record| match decode_record(record, clock) {
                Ok(Record::Event(ev)) => out.events.push(ev),
                Ok(Record::Exec { pid }) => out.lifecycle.push((pid, false)),
                Ok(Record::Exit { pid }) => out.lifecycle.push((pid, true)),
                Err(e) => {
                    out.undecodable += 1;
                    out.first_error.get_or_insert(e);
                }
            })?;
        let users = self.users.get_mut();
        for &(pid, _) in &out.lifecycle {
            users.forget(pid);
        }
        Ok(out)
    }

    /// The symbolized stacks of `ev`, where it has them.
    pub fn stacks(&self, ev: &KernelEvent) -> Stacks {
        let (kernel, user) = self
            .tracer
            .event_stacks(ev.kernel_stack_id, ev.user_stack_id);
        let user = user.map(|ips| self.users.borrow_mut().symbolize(ev.pid, &ips));
        Stacks {
            kernel: kernel.map(|ips| kernel_frames(&self.symbols, &ips).into()),
            user_code: user.as_ref().and_then(|u| u.innermost.clone()),
            user: user.map(|u| u.frames.into()),
        }
    }

    /// What user stack symbolization did since the last call.
    pub fn take_ustack_counts(&self) -> UstackCounts {
        self.users.borrow_mut().take_counts()
    }

    /// Final histograms of processes that exited (their kernel slots go back to the kernel);
    /// with `all`, of every process, because the capture is ending.
    pub fn recycle(&mut self, all: bool) -> Result<Vec<Histogram>, LoadError> {
        let snaps = if all {
            self.tracer.recycle_all()?
        } else {
            self.tracer.recycle()?
        };
        let table = self.tracer.bucket_table();
        Ok(snaps
            .iter()
            .filter_map(|s| decode_histogram(s, table))
            .collect())
    }

    /// Every live histogram, now.
    pub fn histograms(&self) -> Result<Vec<Histogram>, LoadError> {
        let table = self.tracer.bucket_table();
        Ok(self
            .tracer
            .histograms()?
            .iter()
            .filter_map(|s| decode_histogram(s, table))
            .collect())
    }

    /// Histogram slots recycled so far.
    pub fn recycled_histograms(&self) -> u64 {
        self.tracer.recycled_histograms()
    }

    /// What the kernel side could not deliver, so far.
    pub fn drops(&self) -> Result<DropCounts, LoadError> {
        self.tracer.drops()
    }

    /// Sends every event of `pid` through the ring buffer, however short (for linking).
    pub fn add_link_target(&mut self, pid: u32) -> Result<(), LoadError> {
        self.tracer.add_link_target(pid)
    }

    /// Stops sending every event of `pid`.
    pub fn remove_link_target(&mut self, pid: u32) {
        self.tracer.remove_link_target(pid)
    }

    /// Re-samples the clock when it is due.
    pub fn tick(&mut self) {
        self.clock.refresh();
    }

    /// Detaches every probe: nothing new arrives; what the ring buffer holds can still be
    /// drained.
    pub fn stop(&mut self) {
        self.tracer.detach();
    }
}
