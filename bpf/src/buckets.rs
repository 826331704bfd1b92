//! OTLP base-2 exponential bucket mapping, and the integer-nanosecond boundary table the kernel
//! searches so that its buckets agree exactly with the specification's reference mapping.
//!
//! Durations are measured in nanoseconds and reported in seconds: a duration of `n` ns is the
//! value `n as f64 / 1e9`. Bucket `index` holds values in `(2^(index / 2^scale), 2^((index+1) /
//! 2^scale)]`, as in the OTLP data model.

use crate::abi::MAX_BUCKETS;

/// Smallest supported scale.
pub const MIN_SCALE: i32 = 0;
/// Largest supported scale: the kernel table holds [`MAX_BUCKETS`] entries.
pub const MAX_SCALE: i32 = 4;
/// Durations at or above this many nanoseconds (about 18 minutes) are clamped into the last
/// bucket (`KOTEL_MAX_VALUE_NS`).
pub const MAX_VALUE_NS: u64 = 1 << 40;

/// Converts nanoseconds to the seconds value that OTLP histograms carry.
pub fn ns_to_seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The OTLP specification's reference `MapToIndex` for a positive, finite value: the logarithm
/// method with the exact power-of-two correction for `scale > 0`, the exponent method for
/// `scale <= 0`.
pub fn reference_index(value: f64, scale: i32) -> i32 {
    debug_assert!(value > 0.0 && value.is_finite());
    let (frac, exp) = frexp(value);
    if scale <= 0 {
        // getBase2Exponent is frexp's exponent minus one; exact powers of two belong to the
        // bucket below.
        let mut e = exp - 1;
        if frac == 0.5 {
            e -= 1;
        }
        return e >> -scale;
    }
    if frac == 0.5 {
        return ((exp - 1) << scale) - 1;
    }
    let scale_factor = std::f64::consts::LOG2_E * f64::from(1u32 << scale);
    (value.ln() * scale_factor).floor() as i32
}

/// `frexp` for positive normal and subnormal doubles: `value = frac * 2^exp`, `frac` in
/// `[0.5, 1)`.
fn frexp(value: f64) -> (f64, i32) {
    let bits = value.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: normalise first.
        let (f, e) = frexp(value * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (f, e - 54);
    }
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, biased - 1022)
}

/// The boundary table for one scale, as loaded into the kernel's `.rodata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTable {
    scale: i32,
    offset: i32,
    bounds: Vec<u64>,
}

/// A scale outside [`MIN_SCALE`]..=[`MAX_SCALE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("histogram scale {0} is out of range: use {MIN_SCALE}..={MAX_SCALE}")]
pub struct ScaleError(
    /// The scale that was asked for.
    pub i32,
);

impl BucketTable {
    /// Builds the table for `scale`: entry `i` is the smallest whole number of nanoseconds whose
    /// reference index is `offset + i`. Fails with [`ScaleError`] for a scale outside
    /// [`MIN_SCALE`]..=[`MAX_SCALE`].
    pub fn new(scale: i32) -> Result<Self, ScaleError> {
        if !(MIN_SCALE..=MAX_SCALE).contains(&scale) {
            return Err(ScaleError(scale));
        }
        let index = |ns: u64| reference_index(ns_to_seconds(ns), scale);
        let offset = index(1);
        let last = index(MAX_VALUE_NS - 1);
        let bounds: Vec<u64> = (offset..=last)
            .map(|k| {
                if k == offset {
                    return 1;
                }
                // Smallest n in [1, MAX_VALUE_NS) with index(n) >= k.
                let (mut lo, mut hi) = (1u64, MAX_VALUE_NS - 1);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if index(mid) >= k {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                lo
            })
            .collect();
        assert!(
            bounds.len() <= MAX_BUCKETS,
            "scale {scale} needs {} buckets",
            bounds.len()
        );
        Ok(Self {
            scale,
            offset,
            bounds,
        })
    }

    /// The scale this table was built for.
    pub fn scale(&self) -> i32 {
        self.scale
    }

    /// OTLP index of bucket 0 (the bucket of 1 ns).
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Lower bounds in nanoseconds, one per bucket.
    pub fn bounds(&self) -> &[u64] {
        &self.bounds
    }

    /// Which table slot the kernel puts `ns` (> 0) in: the last bound at or below it, as the
    /// kernel's bounded binary search finds it. Values past the table land in the last slot.
    pub fn slot_of(&self, ns: u64) -> usize {
        self.bounds.partition_point(|&b| b <= ns).saturating_sub(1)
    }

    /// OTLP bucket index of `ns` (> 0) through the table.
    pub fn index_of(&self, ns: u64) -> i32 {
        self.offset + self.slot_of(ns) as i32
    }

    /// Smallest value in nanoseconds of OTLP bucket `index`, if the table covers it.
    pub fn lower_bound_ns(&self, index: i32) -> Option<u64> {
        let slot = usize::try_from(index - self.offset).ok()?;
        self.bounds.get(slot).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn table(scale: i32) -> &'static BucketTable {
        static TABLES: OnceLock<Vec<BucketTable>> = OnceLock::new();
        let all = TABLES.get_or_init(|| {
            (MIN_SCALE..=MAX_SCALE)
                .map(|s| BucketTable::new(s).unwrap())
                .collect()
        });
        &all[(scale - MIN_SCALE) as usize]
    }

    #[test]
    fn frexp_matches_definition() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(8.0), (0.5, 4));
        let (f, e) = frexp(f64::MIN_POSITIVE / 4.0);
        assert_eq!(f, 0.5);
        assert_eq!(e, -1023);
    }

    #[test]
    fn reference_index_follows_the_spec_examples() {
        // Powers of two are upper-inclusive: 1.0 lies in bucket -1 at every scale.
        for scale in 0..=4 {
            assert_eq!(reference_index(1.0, scale), -1);
            assert_eq!(reference_index(2.0, scale), (1 << scale) - 1);
        }
        // At scale 0, (1, 2] is bucket 0 and (2, 4] bucket 1.
        assert_eq!(reference_index(1.5, 0), 0);
        assert_eq!(reference_index(3.0, 0), 1);
        // At scale 1 the base is sqrt(2): 1.2 in (1, 1.414] is bucket 0, 1.5 bucket 1.
        assert_eq!(reference_index(1.2, 1), 0);
        assert_eq!(reference_index(1.5, 1), 1);
    }

    #[test]
    fn tables_fit_the_kernel_and_never_decrease() {
        for scale in MIN_SCALE..=MAX_SCALE {
            let t = BucketTable::new(scale).unwrap();
            assert!(t.bounds().len() <= MAX_BUCKETS);
            // Buckets narrower than 1 ns hold no whole nanosecond; they repeat the next bound
            // and the search skips them.
            assert!(t.bounds().windows(2).all(|w| w[0] <= w[1]), "scale {scale}");
            assert_eq!(t.bounds()[0], 1);
        }
        assert_eq!(
            BucketTable::new(3).unwrap().offset(),
            reference_index(1e-9, 3)
        );
        assert!(BucketTable::new(5).is_err());
        assert!(BucketTable::new(-1).is_err());
    }

    /// Every boundary, and its neighbours, maps exactly as the reference does.
    #[test]
    fn every_boundary_agrees_with_the_reference() {
        for scale in MIN_SCALE..=MAX_SCALE {
            let t = BucketTable::new(scale).unwrap();
            for &b in t.bounds() {
                for ns in [b.saturating_sub(1).max(1), b, b + 1] {
                    assert_eq!(
                        t.index_of(ns),
                        reference_index(ns_to_seconds(ns), scale),
                        "scale {scale} ns {ns}"
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// Any whole number of nanoseconds in range maps as the reference does.
        #[test]
        fn table_agrees_with_reference(scale in MIN_SCALE..=MAX_SCALE, ns in 1u64..MAX_VALUE_NS) {
            let t = table(scale);
            prop_assert_eq!(t.index_of(ns), reference_index(ns_to_seconds(ns), scale));
        }

        /// Small values, where the float rounding of ns/1e9 matters most, agree too.
        #[test]
        fn small_values_agree(scale in MIN_SCALE..=MAX_SCALE, ns in 1u64..100_000) {
            let t = table(scale);
            prop_assert_eq!(t.index_of(ns), reference_index(ns_to_seconds(ns), scale));
        }
    }
}
