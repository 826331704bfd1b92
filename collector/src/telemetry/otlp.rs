//! The OTLP self-metrics: the self-metrics of [`super::catalog`] as [`SelfMetric`]s, which the
//! metrics builder exports on the agent's own resource (counters as monotonic sums, gauges as
//! gauges).

use super::catalog::{Kind, Readings, CATALOG};
use crate::otlp::attrs;
use crate::otlp::metrics::SelfMetric;

/// Every self-metric's points: `(counters, gauges)`.
pub fn self_metrics(r: &Readings) -> (Vec<SelfMetric>, Vec<SelfMetric>) {
    let (mut counters, mut gauges) = (Vec::new(), Vec::new());
    for def in CATALOG {
        let out = match def.kind {
            Kind::Counter => &mut counters,
            Kind::Gauge => &mut gauges,
        };
        for p in (def.read)(r) {
            out.push(SelfMetric {
                name: def.name,
                description: def.help,
                unit: def.unit,
                attributes: def
                    .labels
                    .iter()
                    .zip(p.labels)
                    .map(|(k, v)| attrs::string(k, v))
                    .collect(),
                value: p.value,
            });
        }
    }
    (counters, gauges)
}
