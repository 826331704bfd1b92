//! The rule that says whether a kernel event becomes a span of its own, and whether it may
//! become a child span under an application span. The kernel applies the same thresholds
//! before an event reaches the ring buffer ([`SpanRule::tracer_thresholds`]); userspace calls
//! [`SpanRule::standalone`] and [`SpanRule::child`] for every event it gets, because a link
//! target's events all come through, however short.

use std::time::Duration;

use crate::model::{KernelEvent, OffcpuState};

/// The default sleep threshold (`capture.sleep_threshold`, `--sleep-threshold`), as the
/// configuration and the flags spell it; docs/probes.md gives the measurements behind it.
pub const DEFAULT_SLEEP_THRESHOLD: &str = "1s";

/// Parses a sleep threshold: a duration (`1s`, `250ms`, `0`), or `off` (`None`).
pub fn parse_sleep_threshold(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "off" => Ok(None),
        "0" => Ok(Some(Duration::ZERO)),
        d => humantime::parse_duration(d)
            .map(Some)
            .map_err(|e| format!("{s:?}: {e} (a duration such as 1s or 250ms, or \"off\")")),
    }
}

/// The span thresholds: every event at or above `span_ns` is a span, except an interruptible
/// off-CPU wait (an idle sleep), which is a span of its own only at or above `sleep_ns` (and
/// never when `None`). A sleep inside an application span still becomes its child from
/// `span_ns` on, like any other event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRule {
    /// Events at least this long are spans (and may be children).
    pub span_ns: u64,
    /// Interruptible off-CPU waits at least this long are spans of their own; `None`: never.
    /// A value below `span_ns` counts as `span_ns`.
    pub sleep_ns: Option<u64>,
}

impl SpanRule {
    /// The rule for a span threshold and a sleep threshold (`None`: off).
    pub fn new(span: Duration, sleep: Option<Duration>) -> SpanRule {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        SpanRule {
            span_ns: ns(span),
            sleep_ns: sleep.map(ns),
        }
    }

    /// Whether `ev` becomes a span of its own (when no application span takes it as a child).
    pub fn standalone(&self, ev: &KernelEvent) -> bool {
        match ev.offcpu_state {
            Some(OffcpuState::Interruptible) => self
                .sleep_threshold_ns()
                .is_some_and(|min| ev.duration_ns >= min),
            _ => ev.duration_ns >= self.span_ns,
        }
    }

    /// Whether `ev` may become a child span of an application span it overlaps: at or above the
    /// span threshold, whatever the state it waited in (shorter events only add to the span's
    /// sums).
    pub fn child(&self, ev: &KernelEvent) -> bool {
        ev.duration_ns >= self.span_ns
    }

    /// The sleep threshold as it applies: never below the span threshold; `None` when off.
    pub fn sleep_threshold_ns(&self) -> Option<u64> {
        self.sleep_ns.map(|s| s.max(self.span_ns))
    }

    /// The probes' options that make the kernel send what this rule can make a span of:
    /// `(min_latency_ns, min_sleep_latency_ns)` of [`kotel_bpf::TracerConfig`].
    pub fn tracer_thresholds(&self) -> (u64, Option<u64>) {
        (self.span_ns, self.sleep_threshold_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_bpf::Probe;

    const MS: u64 = 1_000_000;

    fn ev(kind: Probe, state: Option<OffcpuState>, duration_ns: u64) -> KernelEvent {
        KernelEvent {
            offcpu_state: state,
            ..KernelEvent::sample(kind, 1, 2, 0, duration_ns)
        }
    }

    fn sleep(ms: u64) -> KernelEvent {
        ev(Probe::Offcpu, Some(OffcpuState::Interruptible), ms * MS)
    }

    fn blocked(ms: u64) -> KernelEvent {
        ev(Probe::Offcpu, Some(OffcpuState::Uninterruptible), ms * MS)
    }

    #[test]
    fn sleep_thresholds_parse() {
        assert_eq!(parse_sleep_threshold("off"), Ok(None));
        assert_eq!(parse_sleep_threshold("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(
            parse_sleep_threshold("250ms"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert!(parse_sleep_threshold(DEFAULT_SLEEP_THRESHOLD).is_ok());
        let err = parse_sleep_threshold("never").unwrap_err();
        assert!(err.contains("never") && err.contains("off"), "{err}");
    }

    #[test]
    fn sleeps_need_their_own_threshold_everything_else_the_span_threshold() {
        let rule = SpanRule::new(Duration::from_millis(1), Some(Duration::from_secs(1)));
        assert!(
            rule.standalone(&blocked(1)),
            "a blocked wait at the threshold"
        );
        assert!(!rule.standalone(&blocked(0)), "below it");
        assert!(rule.standalone(&ev(Probe::Runqueue, None, MS)));
        assert!(rule.standalone(&ev(Probe::Writev, None, 5 * MS)));
        assert!(
            !rule.standalone(&sleep(999)),
            "a sleep below the sleep threshold"
        );
        assert!(
            rule.standalone(&sleep(1_000)),
            "a sleep at the sleep threshold"
        );
    }

    #[test]
    fn children_only_need_the_span_threshold_whatever_the_state() {
        let rule = SpanRule::new(Duration::from_millis(1), Some(Duration::from_secs(1)));
        for e in [sleep(1), blocked(1), ev(Probe::TcpSend, None, MS)] {
            assert!(rule.child(&e), "{e:?}");
        }
        assert!(!rule.child(&sleep(0)));
        let off = SpanRule::new(Duration::from_millis(1), None);
        assert!(
            off.child(&sleep(5)),
            "a linked sleep is a child even with sleeps off"
        );
    }

    #[test]
    fn off_means_no_sleep_is_a_span_of_its_own() {
        let rule = SpanRule::new(Duration::from_millis(1), None);
        assert!(!rule.standalone(&sleep(3_600_000)));
        assert!(rule.standalone(&blocked(2)));
        assert_eq!(rule.tracer_thresholds(), (MS, None));
    }

    #[test]
    fn a_sleep_threshold_below_the_span_threshold_is_the_span_threshold() {
        let rule = SpanRule::new(Duration::from_millis(10), Some(Duration::ZERO));
        assert!(!rule.standalone(&sleep(9)));
        assert!(rule.standalone(&sleep(10)));
        assert_eq!(rule.tracer_thresholds(), (10 * MS, Some(10 * MS)));
        let far = SpanRule::new(Duration::MAX, Some(Duration::from_secs(1)));
        assert_eq!(far.tracer_thresholds(), (u64::MAX, Some(u64::MAX)));
    }
}
