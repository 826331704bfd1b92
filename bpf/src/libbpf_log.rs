//! libbpf's own messages around a load attempt. While kotel finds out which probes a kernel
//! accepts, libbpf's warnings (a refused program's whole verifier log among them) are held
//! back rather than printed, and the line that says why is kept for kotel's own message.

use std::sync::Mutex;

use libbpf_rs::PrintLevel;

static CAPTURED: Mutex<String> = Mutex::new(String::new());

fn keep(_: PrintLevel, msg: String) {
    if let Ok(mut all) = CAPTURED.lock() {
        all.push_str(&msg);
    }
}

/// Runs `f` with libbpf's messages captured instead of printed; returns them with its result.
/// Not reentrant, and meant for the loader's own thread.
pub(crate) fn captured<T>(f: impl FnOnce() -> T) -> (T, String) {
    let previous = libbpf_rs::set_print(Some((PrintLevel::Info, keep)));
    let out = f();
    libbpf_rs::set_print(previous);
    let log = CAPTURED
        .lock()
        .map(|mut all| std::mem::take(&mut *all))
        .unwrap_or_default();
    (out, log)
}

/// The line of a libbpf log that says why a program was refused: an unresolved CO-RE
/// relocation, else the verifier's last word, else libbpf's own failure line.
pub(crate) fn why_refused(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(l) = lines
        .iter()
        .find(|l| l.contains("failed to resolve CO-RE relocation"))
    {
        return Some((*l).to_string());
    }
    if let Some(end) = lines
        .iter()
        .position(|l| l.contains("-- END PROG LOAD LOG --"))
    {
        if let Some(l) = lines[..end]
            .iter()
            .rev()
            .find(|l| !l.starts_with("processed ") && !l.starts_with("verification time"))
        {
            return Some((*l).to_string());
        }
    }
    lines
        .iter()
        .find(|l| l.contains("failed to load"))
        .map(|l| (*l).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_relocation_then_the_verifier_then_libbpf() {
        let core = "libbpf: prog 'p': BPF program load failed: -EINVAL\n\
            -- BEGIN PROG LOAD LOG --\n0: (79) r9 = *(u64 *)(r1 +0)\n\
            failed to resolve CO-RE relocation <byte_off> [381] struct sock_common.skc_v6_daddr\n\
            processed 10 insns\n-- END PROG LOAD LOG --\n\
            libbpf: prog 'p': failed to load: -EINVAL\n";
        assert!(why_refused(core)
            .unwrap()
            .contains("sock_common.skc_v6_daddr"));
        let verifier = "-- BEGIN PROG LOAD LOG --\n0: r1 = 0\nR1 invalid mem access 'scalar'\n\
            processed 3 insns (limit 1000000)\nverification time 5 usec\n-- END PROG LOAD LOG --\n";
        assert_eq!(
            why_refused(verifier).unwrap(),
            "R1 invalid mem access 'scalar'"
        );
        let plain = "libbpf: prog 'p': failed to load: -E2BIG\n";
        assert!(why_refused(plain).unwrap().ends_with("-E2BIG"));
        assert_eq!(why_refused(""), None);
    }
}
