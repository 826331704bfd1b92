//! What the sidecar's report page (`GET /`) is built from: the newest heatmap request of each
//! series (process and probe, from the `process.pid` and `kotel.kind` labels), the newest flame
//! graph request, and the artifacts they made. Off unless [`Recent::enable`]d (the in-process
//! renderer keeps nothing); bounded to [`MAX_SERIES`] series, the least recently updated going
//! first. The sidecar sees only the heatmap window, so its table's figures cover that window:
//! counts are exact, p50/p99/max are the upper bounds of their buckets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kotel_proto::render::v1::{RenderFlameRequest, RenderHeatmapRequest, RenderResponse};

use super::data::{Exemplar, Flame, HeatmapColumnData, HeatmapSeries, ReportData, Row};
use crate::escape::hex;

/// Most series kept.
pub const MAX_SERIES: usize = 256;

/// The newest requests, shared by the sidecar's servers.
#[derive(Debug, Default)]
pub struct Recent {
    on: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    heatmaps: HashMap<(u32, String), (u64, RenderHeatmapRequest, Vec<String>)>,
    flame: Option<(RenderFlameRequest, Vec<String>)>,
}

/// The artifacts a response names, as links relative to the sidecar's `/` (SVG first).
fn links(resp: &RenderResponse) -> Vec<String> {
    let mut v: Vec<String> = resp
        .artifacts
        .iter()
        .map(|a| {
            let ext = if a.media_type == "image/png" {
                "png"
            } else {
                "svg"
            };
            format!("artifacts/{}.{ext}", a.id)
        })
        .collect();
    v.sort_by_key(|u| !u.ends_with(".svg"));
    v
}

impl Recent {
    /// Starts keeping requests.
    pub fn enable(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a rendered heatmap request as its series' newest.
    pub fn heatmap(&self, req: &RenderHeatmapRequest, resp: &RenderResponse) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let pid = req
            .labels
            .get("process.pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let probe = req
            .labels
            .get("kotel.kind")
            .cloned()
            .unwrap_or_else(|| req.title.clone());
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        inner
            .heatmaps
            .insert((pid, probe), (seq, req.clone(), links(resp)));
        while inner.heatmaps.len() > MAX_SERIES {
            let Some(oldest) = inner
                .heatmaps
                .iter()
                .min_by_key(|(_, (s, _, _))| *s)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            inner.heatmaps.remove(&oldest);
        }
    }

    /// Keeps a rendered flame graph request as the newest.
    pub fn flame(&self, req: &RenderFlameRequest, resp: &RenderResponse) {
        if self.on.load(Ordering::Relaxed) {
            self.lock().flame = Some((req.clone(), links(resp)));
        }
    }

    /// The page's data: one row and one heatmap per series kept, and the flame graph.
    pub fn report(&self, trace_url_template: &str, now_unix_nano: u64) -> ReportData {
        let inner = self.lock();
        let mut data = ReportData {
            title: "kotel-render: report".into(),
            generated_unix_nano: now_unix_nano,
            live: true,
            refresh_seconds: 5,
            trace_url_template: trace_url_template.to_string(),
            notes: vec![
                "The sidecar sees each series' heatmap window only: counts cover that window, and p50, p99 and max are the upper bounds of their latency buckets. The agent's terminal summary and index.html cover the whole run.".into(),
            ],
            ..ReportData::default()
        };
        let mut keys: Vec<&(u32, String)> = inner.heatmaps.keys().collect();
        keys.sort();
        for key in keys {
            let (_, req, pictures) = &inner.heatmaps[key];
            let name = req
                .title
                .split(" (pid ")
                .next()
                .unwrap_or_default()
                .to_string();
            data.rows.push(row(key, &name, req));
            data.heatmaps.push(HeatmapSeries {
                pid: key.0,
                name,
                probe: key.1.clone(),
                start_unix_nano: req.start_unix_nano,
                column_width_nanos: req.column_width_nanos,
                scale: req.scale,
                columns: req
                    .columns
                    .iter()
                    .map(|c| HeatmapColumnData {
                        zero_count: c.zero_count,
                        offset: c.offset,
                        counts: c.bucket_counts.clone(),
                    })
                    .collect(),
                exemplar: req
                    .markers
                    .iter()
                    .max_by(|a, b| a.value_seconds.total_cmp(&b.value_seconds))
                    .map(|m| Exemplar {
                        time_unix_nano: m.time_unix_nano,
                        value_ns: (m.value_seconds * 1e9).round() as u64,
                        trace_id: hex(&m.trace_id),
                        span_id: hex(&m.span_id),
                    }),
                pictures: pictures.clone(),
            });
        }
        data.flame = inner.flame.as_ref().map(|(req, pictures)| Flame {
            title: req.title.clone(),
            stacks: req
                .stacks
                .iter()
                .map(|s| (s.stack.clone(), s.weight_nanos))
                .collect(),
            pictures: pictures.clone(),
        });
        data
    }
}

/// A series' row over its window: the columns summed, quantiles as bucket upper bounds.
fn row((pid, probe): &(u32, String), name: &str, req: &RenderHeatmapRequest) -> Row {
    let mut zero = 0u64;
    let mut buckets: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for c in &req.columns {
        zero += c.zero_count;
        for (j, &n) in c.bucket_counts.iter().enumerate() {
            if n > 0 {
                *buckets.entry(i64::from(c.offset) + j as i64).or_default() += n;
            }
        }
    }
    let count = zero + buckets.values().sum::<u64>();
    let upper = |i: i64| ((i + 1) as f64 / 2f64.powi(req.scale)).exp2() * 1e9;
    let quantile = |q: f64| {
        let rank = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = zero;
        if count == 0 || seen >= rank {
            return 0;
        }
        for (&i, &n) in &buckets {
            seen += n;
            if seen >= rank {
                return upper(i).round() as u64;
            }
        }
        0
    };
    Row {
        pid: *pid,
        name: name.to_string(),
        exe: String::new(),
        probe: probe.clone(),
        state: String::new(),
        kernel_thread: false,
        count,
        p50_ns: quantile(0.5),
        p99_ns: quantile(0.99),
        max_ns: buckets
            .keys()
            .next_back()
            .map_or(0, |&i| upper(i).round() as u64),
        bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_proto::render::v1::{Artifact, HeatmapColumn};

    fn req(pid: u32, kind: &str) -> RenderHeatmapRequest {
        RenderHeatmapRequest {
            title: format!("db (pid {pid}) {kind} latency"),
            labels: [
                ("process.pid".to_string(), pid.to_string()),
                ("kotel.kind".to_string(), kind.to_string()),
            ]
            .into_iter()
            .collect(),
            scale: 0,
            column_width_nanos: 1_000_000_000,
            columns: vec![
                HeatmapColumn {
                    zero_count: 0,
                    offset: -10,
                    bucket_counts: vec![3, 0, 1],
                },
                HeatmapColumn {
                    zero_count: 0,
                    offset: -9,
                    bucket_counts: vec![0, 0, 0, 0, 1],
                },
            ],
            ..Default::default()
        }
    }

    fn resp(id: &str) -> RenderResponse {
        RenderResponse {
            artifacts: vec![Artifact {
                id: id.into(),
                media_type: "image/png".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn keeps_nothing_until_enabled_then_the_newest_per_series() {
        let r = Recent::default();
        r.heatmap(&req(7, "offcpu"), &resp("a"));
        assert!(r.report("", 0).rows.is_empty());
        r.enable();
        r.heatmap(&req(7, "offcpu"), &resp("a"));
        r.heatmap(&req(7, "offcpu"), &resp("b"));
        let data = r.report("", 0);
        assert_eq!(data.rows.len(), 1);
        let row = &data.rows[0];
        assert_eq!(
            (row.pid, row.name.as_str(), row.probe.as_str()),
            (7, "db", "offcpu")
        );
        // Buckets at scale 0: index -10 is (2^-10, 2^-9] s. 3 + 1 + 1 events.
        assert_eq!(row.count, 5);
        assert_eq!(row.p50_ns, (2f64.powi(-9) * 1e9).round() as u64);
        assert_eq!(row.max_ns, (2f64.powi(-4) * 1e9).round() as u64);
        assert_eq!(data.heatmaps[0].pictures, ["artifacts/b.png"]);
    }

    #[test]
    fn the_least_recently_updated_series_go_first() {
        let r = Recent::default();
        r.enable();
        for pid in 0..MAX_SERIES as u32 + 3 {
            r.heatmap(&req(pid + 1, "runqueue"), &resp("x"));
        }
        let data = r.report("", 0);
        assert_eq!(data.rows.len(), MAX_SERIES);
        assert!(!data.rows.iter().any(|row| row.pid <= 3));
    }
}
