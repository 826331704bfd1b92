//! kotel-collector: turns what kotel's BPF probes capture into domain events and histograms,
//! and the commands that present and export them.

#![warn(missing_docs)]

pub mod agent;
pub mod artifacts;
pub mod cli;
pub mod commands;
pub mod config;
pub mod enrich;
pub mod export;
// Test code: compiled for the fuzz targets (feature `fuzzing`) and the unit tests only.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod kernel;
pub mod link;
pub mod model;
pub mod otlp;
pub mod output;
pub mod picture_files;
pub mod quantile;
pub mod receiver;
pub mod report;
mod signals;
pub mod spans;
pub mod telemetry;
