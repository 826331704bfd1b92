//! Arithmetic on exponential histograms: merging (for the cardinality overflow series) and
//! subtracting a previous cumulative snapshot (for delta temporality).

use crate::model::Histogram;

/// Count at absolute bucket `index`, 0 outside the stored range.
fn at(h: &Histogram, index: i32) -> u64 {
    usize::try_from(index - h.offset)
        .ok()
        .and_then(|i| h.bucket_counts.get(i))
        .copied()
        .unwrap_or(0)
}

/// Rewrites `h` at a coarser `scale` (each step halves the resolution).
pub fn downscale(h: &mut Histogram, scale: i32) {
    if scale >= h.scale || h.bucket_counts.is_empty() {
        h.scale = h.scale.min(scale);
        return;
    }
    let shift = h.scale - scale;
    let first = h.offset >> shift;
    let last = (h.offset + h.bucket_counts.len() as i32 - 1) >> shift;
    let mut counts = vec![0u64; (last - first + 1) as usize];
    for (i, &c) in h.bucket_counts.iter().enumerate() {
        let slot = &mut counts[(((h.offset + i as i32) >> shift) - first) as usize];
        *slot = slot.saturating_add(c);
    }
    h.scale = scale;
    h.offset = first;
    h.bucket_counts = counts;
}

/// Adds `other` into `acc`, at the coarser of the two scales. Counters saturate at
/// `u64::MAX` rather than wrap: the overflow series folds in every process beyond the
/// cardinality limit, and off-CPU nanoseconds summed over thousands of long-lived processes
/// can pass 2^64 (584 years).
pub fn merge(acc: &mut Histogram, other: &Histogram) {
    let mut other = other.clone();
    let scale = acc.scale.min(other.scale);
    downscale(acc, scale);
    downscale(&mut other, scale);
    acc.count = acc.count.saturating_add(other.count);
    acc.sum_ns = acc.sum_ns.saturating_add(other.sum_ns);
    acc.max_ns = acc.max_ns.max(other.max_ns);
    acc.zero_count = acc.zero_count.saturating_add(other.zero_count);
    acc.bytes = acc.bytes.saturating_add(other.bytes);
    acc.clamped = acc.clamped.saturating_add(other.clamped);
    if other.bucket_counts.is_empty() {
        return;
    }
    if acc.bucket_counts.is_empty() {
        acc.offset = other.offset;
        acc.bucket_counts = other.bucket_counts;
        return;
    }
    let first = acc.offset.min(other.offset);
    let last = (acc.offset + acc.bucket_counts.len() as i32)
        .max(other.offset + other.bucket_counts.len() as i32);
    let counts = (first..last)
        .map(|i| at(acc, i).saturating_add(at(&other, i)))
        .collect();
    acc.offset = first;
    acc.bucket_counts = counts;
}

/// `current - previous` for two cumulative snapshots of one series, or `None` when some
/// counter went down (the series was reset, so the current snapshot is itself the delta).
/// `max_ns` stays the cumulative maximum: a delta maximum is not recoverable.
pub fn subtract(current: &Histogram, previous: &Histogram) -> Option<Histogram> {
    if current.scale != previous.scale {
        return None;
    }
    let first = current.offset.min(previous.offset);
    let last = (current.offset + current.bucket_counts.len() as i32)
        .max(previous.offset + previous.bucket_counts.len() as i32);
    let mut counts = Vec::with_capacity((last - first).max(0) as usize);
    for i in first..last {
        counts.push(at(current, i).checked_sub(at(previous, i))?);
    }
    let lead = counts.iter().position(|&c| c != 0);
    let (offset, bucket_counts) = match lead {
        None => (0, Vec::new()),
        Some(lead) => {
            let tail = counts.iter().rposition(|&c| c != 0).unwrap_or(lead);
            (first + lead as i32, counts[lead..=tail].to_vec())
        }
    };
    Some(Histogram {
        count: current.count.checked_sub(previous.count)?,
        sum_ns: current.sum_ns.checked_sub(previous.sum_ns)?,
        zero_count: current.zero_count.checked_sub(previous.zero_count)?,
        bytes: current.bytes.checked_sub(previous.bytes)?,
        clamped: current.clamped.checked_sub(previous.clamped)?,
        offset,
        bucket_counts,
        ..current.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_bpf::Probe;
    use proptest::prelude::*;

    fn hist(scale: i32, values: &[u64]) -> Histogram {
        Histogram::of(Probe::Writev, 1, scale, values)
    }

    fn total(h: &Histogram) -> u64 {
        h.zero_count + h.bucket_counts.iter().sum::<u64>()
    }

    /// Found by the `decode` fuzz target (histograms through the metrics builder): merging
    /// into the overflow series overflowed its counters (a panic with overflow checks, a
    /// wrapped, tiny sum without).
    #[test]
    fn merge_saturates() {
        let mut acc = hist(3, &[1_000, 2_000]);
        acc.sum_ns = u64::MAX - 10;
        acc.bucket_counts[0] = u64::MAX;
        let other = acc.clone();
        merge(&mut acc, &other);
        assert_eq!(acc.sum_ns, u64::MAX);
        assert_eq!(acc.count, 4);
        assert_eq!(acc.bucket_counts[0], u64::MAX);
        let mut coarse = acc.clone();
        downscale(&mut coarse, 0);
        assert_eq!(coarse.bucket_counts.iter().max(), Some(&u64::MAX));
    }

    proptest! {
        /// Merging conserves counts, sums and every bucket.
        #[test]
        fn merge_conserves_totals(a in proptest::collection::vec(prop_oneof![Just(0u64), 0u64..10_000_000_000], 0..50),
                                  b in proptest::collection::vec(prop_oneof![Just(0u64), 0u64..10_000_000_000], 0..50)) {
            let (ha, hb) = (hist(3, &a), hist(3, &b));
            let mut m = ha.clone();
            merge(&mut m, &hb);
            prop_assert_eq!(m.count, (a.len() + b.len()) as u64);
            prop_assert_eq!(total(&m), m.count);
            prop_assert_eq!(m.sum_ns, a.iter().sum::<u64>() + b.iter().sum::<u64>());
            let both: Vec<u64> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(m, hist(3, &both));
        }

        /// Subtracting what came before gives exactly what came after.
        #[test]
        fn subtract_undoes_merge(a in proptest::collection::vec(0u64..10_000_000_000, 0..50),
                                 b in proptest::collection::vec(0u64..10_000_000_000, 0..50)) {
            let (ha, hb) = (hist(3, &a), hist(3, &b));
            let mut cumulative = ha.clone();
            merge(&mut cumulative, &hb);
            let delta = subtract(&cumulative, &ha).expect("no reset");
            prop_assert_eq!(delta.count, hb.count);
            prop_assert_eq!(&delta.bucket_counts, &hb.bucket_counts);
            prop_assert_eq!(delta.offset, if hb.bucket_counts.is_empty() { 0 } else { hb.offset });
            prop_assert_eq!(delta.sum_ns, hb.sum_ns);
        }

        /// Downscaling keeps every count and puts each value where the coarser table does.
        #[test]
        fn downscale_matches_the_coarser_table(v in proptest::collection::vec(1u64..10_000_000_000, 1..40)) {
            let mut fine = hist(4, &v);
            downscale(&mut fine, 2);
            prop_assert_eq!(fine, Histogram { ..hist(2, &v) });
        }
    }

    #[test]
    fn a_reset_series_has_no_delta() {
        let before = hist(3, &[5, 6, 7]);
        let after = hist(3, &[5]);
        assert!(subtract(&after, &before).is_none());
    }
}
