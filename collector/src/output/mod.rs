//! How `kotel capture` presents what it captured: JSON lines for programs, a table for people.

pub mod jsonl;
pub mod table;

use std::collections::HashMap;

use kotel_bpf::DropCounts;

use crate::model::{Comm, Histogram};

/// What a capture ends with.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// One histogram per (process, probe), every event counted.
    pub histograms: Vec<Histogram>,
    /// Everything the kernel side could not deliver.
    pub drops: DropCounts,
    /// Records userspace could not decode.
    pub undecodable: u64,
    /// Last thread name seen per process, for labelling.
    pub comms: HashMap<u32, Comm>,
}

impl Summary {
    /// Name to show for a process: the last thread name seen, else `/proc/<pid>/comm`.
    pub fn process_name(&self, pid: u32) -> String {
        if let Some(c) = self.comms.get(&pid) {
            return c.to_string_lossy();
        }
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| "?".to_string())
    }
}
