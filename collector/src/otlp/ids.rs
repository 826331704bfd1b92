//! Trace and span ids: random, never all zero (the W3C and OTLP "invalid" value).

/// Generates ids from a fast non-cryptographic generator seeded from the OS.
#[derive(Debug)]
pub struct IdGenerator {
    rng: fastrand::Rng,
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    /// A generator seeded from OS entropy.
    pub fn new() -> Self {
        IdGenerator {
            rng: fastrand::Rng::new(),
        }
    }

    /// A generator with a fixed seed, for tests and benchmarks.
    pub fn with_seed(seed: u64) -> Self {
        IdGenerator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A 16-byte trace id.
    pub fn trace_id(&mut self) -> [u8; 16] {
        loop {
            let v = self.rng.u128(..);
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    /// An 8-byte span id.
    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let v = self.rng.u64(..);
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }
}

/// Lower-case hex of an id, as the OTLP JSON encoding and trace UIs show it.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let mut g = IdGenerator::with_seed(7);
        let traces: HashSet<[u8; 16]> = (0..10_000).map(|_| g.trace_id()).collect();
        let spans: HashSet<[u8; 8]> = (0..10_000).map(|_| g.span_id()).collect();
        assert_eq!(traces.len(), 10_000);
        assert_eq!(spans.len(), 10_000);
        assert!(!traces.contains(&[0; 16]) && !spans.contains(&[0; 8]));
    }

    #[test]
    fn hex_matches_the_otlp_json_form() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        let mut g = IdGenerator::new();
        assert_eq!(hex(&g.trace_id()).len(), 32);
        assert_eq!(hex(&g.span_id()).len(), 16);
    }
}
