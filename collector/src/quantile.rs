//! Quantiles of an exponential histogram, for the human-readable summary.

use crate::model::Histogram;

/// Upper bound in nanoseconds of the bucket holding quantile `q` (0..=1), capped at the
/// largest value seen. `None` for an empty histogram.
pub fn quantile_ns(h: &Histogram, q: f64) -> Option<u64> {
    if h.count == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * h.count as f64).ceil() as u64).max(1);
    let mut seen = h.zero_count;
    if seen >= rank {
        return Some(0);
    }
    for (i, &c) in h.bucket_counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let index = h.offset + i as i32;
            let upper_s = ((index + 1) as f64 / f64::from(1u32 << h.scale.max(0))).exp2();
            let upper_ns = (upper_s * 1e9).round() as u64;
            return Some(upper_ns.min(h.max_ns.max(1)));
        }
    }
    Some(h.max_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_bpf::Probe;

    fn hist(values: &[u64]) -> Histogram {
        Histogram::of(Probe::Writev, 1, 3, values)
    }

    #[test]
    fn quantiles_bound_the_true_value_within_one_bucket() {
        let values: Vec<u64> = (1..=100).map(|i| i * 10_000).collect(); // 10µs .. 1ms
        let h = hist(&values);
        let p50 = quantile_ns(&h, 0.5).unwrap();
        let p99 = quantile_ns(&h, 0.99).unwrap();
        // The true p50 is 500µs, p99 990µs; at scale 3 a bucket is 2^(1/8) ≈ 9% wide.
        assert!((500_000..=500_000 * 110 / 100).contains(&p50), "p50 {p50}");
        assert!((990_000..=1_000_000).contains(&p99), "p99 {p99}");
        assert_eq!(quantile_ns(&h, 1.0), Some(1_000_000));
    }

    #[test]
    fn empty_histograms_have_no_quantile() {
        let mut h = hist(&[5]);
        h.count = 0;
        assert_eq!(quantile_ns(&h, 0.5), None);
    }
}
