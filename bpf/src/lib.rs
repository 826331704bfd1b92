//! kotel-bpf: kotel's BPF programs, the kernel ABI types and the safe loader.
//!
//! The BPF C lives in `src/bpf/`; `build.rs` compiles it and generates the
//! libbpf-rs skeleton. [`Tracer`] loads, configures and attaches it, and hands
//! out raw ring-buffer records and histogram snapshots; the collector decodes
//! them into its own domain types. The `bench` feature adds `floor`: empty
//! programs on the same hooks, which only benchmarks attach.

#![warn(missing_docs)]

pub mod abi;
pub mod buckets;
mod error;
#[cfg(feature = "bench")]
pub mod floor;
mod libbpf_log;
pub mod preflight;
pub mod probe;
mod stack_maps;
mod tracer;

#[allow(
    clippy::all,
    missing_docs,
    non_camel_case_types,
    dead_code,
    unused_imports
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/kotel.skel.rs"));
}

pub use error::LoadError;
pub use probe::{
    Attach, Hook, HookPlan, HookSet, Probe, ProbeSet, ProbeSpec, DEFAULT_PROBES, PROBES,
};
pub use stack_maps::{DEFAULT_STACK_STORAGE, MAX_STACK_HOLD, SWITCH_OUT_GENERATION};
pub use tracer::{
    CgroupFilter, DropCounts, HistogramSnapshot, Tracer, TracerConfig, OVERFLOW_PID, RETIRE_GRACE,
};
