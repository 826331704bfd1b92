//! kotel-collector: turns what kotel's BPF probes capture into domain events and histograms,
//! and the commands that present and export them.

pub mod artifacts;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod enrich;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
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
