//! kotel-collector: turns what kotel's BPF probes capture into domain events and histograms,
//! and the commands that present them.

pub mod capture;
pub mod cli;
pub mod clock;
pub mod decode;
pub mod export;
pub mod model;
pub mod output;
pub mod quantile;
mod signals;
