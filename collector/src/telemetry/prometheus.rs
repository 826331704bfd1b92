//! `/metrics`: the self-metrics of [`super::catalog`] as Prometheus text exposition format
//! 0.0.4. Label names are the OTLP attribute keys without their `kotel.` prefix.

use super::catalog::{Kind, Readings, CATALOG};

/// One line of `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Prometheus metric name.
    pub name: String,
    /// Help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: u64,
}

/// Every self-metric's points, as samples.
pub fn samples(r: &Readings) -> Vec<Sample> {
    let mut out = Vec::new();
    for def in CATALOG {
        for p in (def.read)(r) {
            out.push(Sample {
                name: def.prometheus.to_string(),
                help: def.help,
                kind: def.kind,
                labels: def
                    .labels
                    .iter()
                    .map(|k| k.strip_prefix("kotel.").unwrap_or(k))
                    .zip(p.labels)
                    .collect(),
                value: p.value,
            });
        }
    }
    out
}

/// Renders samples as Prometheus text, one `HELP`/`TYPE` header per name.
pub fn render_prometheus(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for s in samples {
        if !seen.contains(&s.name.as_str()) {
            seen.push(&s.name);
            let kind = match s.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {kind}\n",
                s.name, s.help, s.name
            ));
        }
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            out.push_str(&format!("{{{}}}", labels.join(",")));
        }
        out.push_str(&format!(" {}\n", s.value));
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_groups_by_name_and_escapes_labels() {
        let s = |name: &str, kind, labels: Vec<(&'static str, String)>, value| Sample {
            name: name.into(),
            help: "h",
            kind,
            labels,
            value,
        };
        let text = render_prometheus(&[
            s(
                "kotel_events_lost_total",
                Kind::Counter,
                vec![("kind", "writev".into())],
                3,
            ),
            s(
                "kotel_events_lost_total",
                Kind::Counter,
                vec![("kind", "a\"b".into())],
                4,
            ),
            s("kotel_cache_size", Kind::Gauge, vec![], 9),
        ]);
        assert_eq!(
            text.matches("# TYPE kotel_events_lost_total counter")
                .count(),
            1
        );
        assert!(text.contains("# TYPE kotel_cache_size gauge\n"));
        assert!(text.contains("kotel_events_lost_total{kind=\"writev\"} 3\n"));
        assert!(text.contains("kotel_events_lost_total{kind=\"a\\\"b\"} 4\n"));
        assert!(text.contains("kotel_cache_size 9\n"));
    }
}
