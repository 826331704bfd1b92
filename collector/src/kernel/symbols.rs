//! Kernel stack symbolization from `/proc/kallsyms`: instruction pointers to kernel
//! [`Frame`]s, `function+0xoff`. User stacks are symbolized in [`super::ustack`].

use std::path::Path;

use super::frame::Frame;

/// Sorted text symbols of the running kernel.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    /// (start address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms`. Addresses read as zero (kptr_restrict without privileges) give
    /// an empty table, so every frame falls back to its address.
    pub fn load() -> Self {
        Self::from_file(Path::new("/proc/kallsyms"))
    }

    /// Reads a kallsyms-format file.
    pub fn from_file(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Parses kallsyms text: `address type name [module]` lines; keeps text symbols.
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W"))
                    .then(|| (addr, name.to_string()))
            })
            .collect();
        symbols.sort_unstable_by_key(|s| s.0);
        KernelSymbols { symbols }
    }

    /// Whether any symbol is known.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The frame of `ip`: the symbol that covers it and the offset into it, or the bare
    /// address when no symbol covers it.
    pub fn resolve(&self, ip: u64) -> Frame {
        let i = self.symbols.partition_point(|s| s.0 <= ip);
        let covering = i.checked_sub(1).and_then(|i| self.symbols.get(i));
        Frame::kernel(
            ip,
            covering.map(|(start, name)| (name.as_str(), ip - start)),
        )
    }
}

/// Symbolized kernel frames, innermost first, without the frames of the tracing machinery
/// itself (the BPF program and its trampoline) at the top.
pub fn kernel_frames(symbols: &KernelSymbols, ips: &[u64]) -> Vec<Frame> {
    ips.iter()
        .map(|&ip| symbols.resolve(ip))
        .skip_while(|frame| {
            let f = frame.function.as_deref().unwrap_or_default();
            f.starts_with("bpf_prog_")
                || f.starts_with("bpf_trace_run")
                || f.starts_with("__bpf_trace_")
                || f.starts_with("__traceiter_")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_to_the_covering_symbol() {
        let k = KernelSymbols::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t schedule\nffffffff81000200 D some_data\n\
             ffffffff81000300 T io_schedule [kernel]\n0000000000000000 T hidden\n",
        );
        let text = |ip| k.resolve(ip).to_string();
        assert_eq!(text(0xffffffff81000142), "schedule+0x42");
        assert_eq!(text(0xffffffff81000300), "io_schedule+0x0");
        assert_eq!(
            text(0xffffffff81000250),
            "schedule+0x150",
            "data symbols are skipped"
        );
        assert_eq!(text(0x10), "0x10");
    }

    #[test]
    fn tracing_frames_are_dropped_from_the_top_only() {
        let k = KernelSymbols::parse(
            "ffffffff81000000 t bpf_prog_abc_sched_switch\nffffffff81000100 T bpf_trace_run4\n\
             ffffffff81000200 T schedule\nffffffff81000300 T bpf_trace_run2\n",
        );
        let frames = kernel_frames(
            &k,
            &[
                0xffffffff81000010,
                0xffffffff81000110,
                0xffffffff81000210,
                0xffffffff81000310,
            ],
        );
        assert_eq!(
            super::super::frame::texts(&frames),
            vec!["schedule+0x10", "bpf_trace_run2+0x10"]
        );
    }

    #[test]
    fn the_running_kernel_has_schedule() {
        let k = KernelSymbols::load();
        if k.is_empty() {
            eprintln!("kallsyms addresses are hidden here (not root?); nothing to check");
            return;
        }
        assert!(k.symbols.iter().any(|(_, n)| n == "schedule"));
    }
}
