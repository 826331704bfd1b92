//! Converts the kernel's CLOCK_MONOTONIC timestamps to Unix nanoseconds with an offset that is
//! re-sampled, so kernel times line up with wall-clock application times.

use std::time::{Duration, Instant};

/// Monotonic → Unix time conversion.
#[derive(Debug, Clone)]
pub struct Clock {
    offset_ns: i128,
    sampled_at: Instant,
    resample_every: Duration,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Realtime minus monotonic, taken from the tightest of a few sandwiched readings.
fn sample_offset() -> i128 {
    let mut best: Option<(i128, i128)> = None; // (window, offset)
    for _ in 0..5 {
        let m1 = now_ns(libc::CLOCK_MONOTONIC);
        let r = now_ns(libc::CLOCK_REALTIME);
        let m2 = now_ns(libc::CLOCK_MONOTONIC);
        let window = m2 - m1;
        let offset = r - (m1 + window / 2);
        if best.is_none_or(|(w, _)| window < w) {
            best = Some((window, offset));
        }
    }
    best.map(|(_, o)| o).unwrap_or(0)
}

impl Clock {
    /// Samples the offset now; re-samples at most every `resample_every` in [`Clock::refresh`].
    pub fn new(resample_every: Duration) -> Self {
        Clock {
            offset_ns: sample_offset(),
            sampled_at: Instant::now(),
            resample_every,
        }
    }

    /// A clock with a fixed offset, for tests and benchmarks.
    pub fn with_offset(offset_ns: i128) -> Self {
        Clock {
            offset_ns,
            sampled_at: Instant::now(),
            resample_every: Duration::MAX,
        }
    }

    /// Re-samples the offset when it is due (NTP may step or slew the wall clock).
    pub fn refresh(&mut self) {
        if self.sampled_at.elapsed() >= self.resample_every {
            self.offset_ns = sample_offset();
            self.sampled_at = Instant::now();
        }
    }

    /// Unix nanoseconds for a CLOCK_MONOTONIC reading.
    pub fn to_unix_nanos(&self, monotonic_ns: u64) -> u64 {
        let t = i128::from(monotonic_ns) + self.offset_ns;
        t.clamp(0, i128::from(u64::MAX)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_now_is_close_to_system_time() {
        let clock = Clock::new(Duration::from_secs(1));
        let mono = now_ns(libc::CLOCK_MONOTONIC) as u64;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let converted = i128::from(clock.to_unix_nanos(mono));
        // Two readings a few microseconds apart; allow generous scheduling noise.
        assert!(
            (converted - unix).abs() < 50_000_000,
            "off by {} ns",
            converted - unix
        );
    }

    #[test]
    fn fixed_offsets_apply_and_clamp() {
        assert_eq!(Clock::with_offset(10).to_unix_nanos(5), 15);
        assert_eq!(Clock::with_offset(-10).to_unix_nanos(5), 0);
    }
}
