//! kotel-collector: turns what kotel's BPF probes capture into domain events and histograms,
//! and the commands that present and export them.

pub mod artifacts;
pub mod capture;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod enrich;
pub mod export;
// Test code: compiled for the fuzz targets (feature `fuzzing`) and the unit tests only.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod k8s;
pub mod link;
pub mod model;
pub mod otlp;
pub mod output;
pub mod quantile;
pub mod receiver;
pub mod run;
mod signals;
pub mod symbolize;
pub mod telemetry;
