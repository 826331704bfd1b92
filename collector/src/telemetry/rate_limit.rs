//! Counting and logging what goes wrong, without flooding the log: every occurrence is counted
//! (that is what the self-metrics export), and at most one line per interval is logged, saying
//! how many were held back since the last one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one log line through per interval and counts the ones held back. Shareable between
/// threads.
#[derive(Debug)]
pub struct RateLimit {
    origin: Instant,
    every_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// One line per `every`.
    pub fn new(every: Duration) -> RateLimit {
        RateLimit {
            origin: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn check(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Adds `n` to `counter`, then calls `log` with the number of lines held back when a line
    /// may be logged now. The one way the agent reports a failure it goes on after.
    pub fn count_and_log(&self, counter: &AtomicU64, n: u64, log: impl FnOnce(u64)) {
        counter.fetch_add(n, Ordering::Relaxed);
        if let Some(suppressed) = self.check() {
            log(suppressed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_every_occurrence_counted() {
        let r = RateLimit::new(Duration::from_secs(3600));
        let counter = AtomicU64::new(0);
        let mut logged = Vec::new();
        for _ in 0..3 {
            r.count_and_log(&counter, 2, |held| logged.push(held));
        }
        assert_eq!(counter.load(Ordering::Relaxed), 6);
        assert_eq!(logged, vec![0], "only the first of three logs");
        r.next_ms.store(0, Ordering::Relaxed); // the interval has passed
        r.count_and_log(&counter, 1, |held| logged.push(held));
        assert_eq!(logged, vec![0, 2], "the next line says two were held back");
        assert_eq!(counter.load(Ordering::Relaxed), 7);
    }
}
