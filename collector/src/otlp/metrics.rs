//! OTLP metrics from the kernel's histograms: one exponential-histogram data point (seconds)
//! and, for probes that move bytes, one byte sum per (process, probe); each histogram point
//! carries an exemplar of the slowest spanned event of its interval. Cumulative temporality
//! by default, delta on request; a per-metric cardinality limit folds further processes into
//! one `otel.metric.overflow=true` series on the agent's own resource.
//!
//! Processes exit: their final histograms ([`MetricsBuilder::retire`]) are exported once more
//! and their series then end, freeing their place under the limit. A process that was folded
//! into the overflow series stays there until it exits; in cumulative temporality the
//! overflow series keeps the final counts of every folded process that exited, so it never
//! goes down. Memory is bounded by the live processes, not by how many ever ran. The kernel's
//! overflow histograms (pid [`kotel_bpf::OVERFLOW_PID`]: events that found no histogram slot)
//! join the overflow series too, so every counted event is in some series.
//!
//! Off-CPU time is counted per state: `kotel.sched.offcpu.duration` has one data point per
//! (process, `kotel.offcpu.state`), the interruptible (idle) waits apart from the
//! uninterruptible (blocking) ones; their sum is every off-CPU interval. Both states of a
//! process take one place under the cardinality limit (they are admitted or folded together),
//! and each point's exemplar is the slowest spanned event of its own state.

use std::collections::{BTreeMap, HashMap, HashSet};

use kotel_bpf::buckets::ns_to_seconds;
use kotel_bpf::Probe;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::{attrs, bytes_metric, duration_metric, expo, scope};
use crate::enrich::semconv::{KOTEL_OFFCPU_STATE, OTEL_METRIC_OVERFLOW};
use crate::model::{Histogram, OffcpuState};

/// What tells one data point's series apart: process, probe and (off-CPU) state.
type SeriesKey = (u32, Probe, Option<OffcpuState>);

/// How data points relate to each other over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Every point covers the time since the agent started.
    Cumulative,
    /// Every point covers the time since the previous export.
    Delta,
}

impl Temporality {
    fn otlp(self) -> i32 {
        match self {
            Temporality::Cumulative => AggregationTemporality::Cumulative as i32,
            Temporality::Delta => AggregationTemporality::Delta as i32,
        }
    }
}

/// The slowest spanned event of an interval, kept for the exemplar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExemplarCandidate {
    /// Its duration.
    pub duration_ns: u64,
    /// When it ended (Unix nanoseconds).
    pub time_unix_nano: u64,
    /// Trace of its span.
    pub trace_id: [u8; 16],
    /// Its span.
    pub span_id: [u8; 8],
    /// How its thread waited, for an off-CPU event: the exemplar rides on that state's point.
    pub offcpu_state: Option<OffcpuState>,
}

/// A counter or gauge of the agent about itself (declared in `telemetry::catalog`).
#[derive(Debug, Clone, PartialEq)]
pub struct SelfMetric {
    /// Metric name, `kotel.*`.
    pub name: &'static str,
    /// What it counts.
    pub description: &'static str,
    /// UCUM unit (`{event}`, `{item}`, …).
    pub unit: &'static str,
    /// Data point attributes.
    pub attributes: Vec<KeyValue>,
    /// Cumulative value.
    pub value: u64,
}

/// Builds metric export requests interval after interval. Single-threaded.
#[derive(Debug)]
pub struct MetricsBuilder {
    temporality: Temporality,
    cardinality_limit: usize,
    start_unix_nano: u64,
    last_unix_nano: u64,
    previous: HashMap<SeriesKey, Histogram>,
    /// The interval's slowest spanned event per (process, probe), whatever its state: what
    /// the pictures show.
    slowest: HashMap<(u32, Probe), ExemplarCandidate>,
    /// The same per data point: off-CPU per state.
    slowest_per_point: HashMap<SeriesKey, ExemplarCandidate>,
    admitted: HashMap<Probe, HashSet<u32>>,
    /// Live processes whose series are folded into the overflow series, per probe.
    folded: HashMap<Probe, HashSet<u32>>,
    /// Cumulative: what exited folded processes left in the overflow series, per probe and
    /// state.
    folded_exited: BTreeMap<(Probe, Option<OffcpuState>), Histogram>,
    /// Final histograms of exited processes, exported in the next build.
    finals: Vec<Histogram>,
    overflowed: u64,
    artifacts: HashMap<(u32, Probe), Vec<KeyValue>>,
    gauges: Vec<SelfMetric>,
}

impl MetricsBuilder {
    /// A builder whose cumulative points start at `start_unix_nano`. `cardinality_limit` is
    /// the most processes one metric reports separately.
    pub fn new(temporality: Temporality, cardinality_limit: usize, start_unix_nano: u64) -> Self {
        MetricsBuilder {
            temporality,
            cardinality_limit: cardinality_limit.max(1),
            start_unix_nano,
            last_unix_nano: start_unix_nano,
            previous: HashMap::new(),
            slowest: HashMap::new(),
            slowest_per_point: HashMap::new(),
            admitted: HashMap::new(),
            folded: HashMap::new(),
            folded_exited: BTreeMap::new(),
            finals: Vec::new(),
            overflowed: 0,
            artifacts: HashMap::new(),
            gauges: Vec::new(),
        }
    }

    /// Final histograms of processes that exited (their kernel slots were recycled): each is
    /// exported in the next build as its series' last point, after which the series ends.
    pub fn retire(&mut self, finals: impl IntoIterator<Item = Histogram>) {
        self.finals.extend(finals);
    }

    /// Final histograms waiting for the next build.
    pub fn pending_finals(&self) -> &[Histogram] {
        &self.finals
    }

    /// Gauges of the agent about itself (`value` is the current value), exported on the
    /// agent's resource in the next build.
    pub fn set_gauges(&mut self, gauges: Vec<SelfMetric>) {
        self.gauges = gauges;
    }

    /// Processes with a series of their own, summed over probes (bounded by the limit per
    /// probe).
    pub fn admitted_series(&self) -> usize {
        self.admitted.values().map(HashSet::len).sum()
    }

    /// Offers a span, standalone or a linked child, as this interval's exemplar for its
    /// series (for off-CPU: the series of its state, `candidate.offcpu_state`): the slowest is
    /// kept.
    pub fn observe(&mut self, pid: u32, probe: Probe, candidate: ExemplarCandidate) {
        for slot in [
            self.slowest.entry((pid, probe)).or_insert(candidate),
            self.slowest_per_point
                .entry((pid, probe, candidate.offcpu_state))
                .or_insert(candidate),
        ] {
            // The same span again is a claim: it now belongs to the application's trace.
            if candidate.duration_ns > slot.duration_ns || candidate.span_id == slot.span_id {
                *slot = candidate;
            }
        }
    }

    /// The spans the next [`build`](Self::build) names as exemplars (one per data point).
    pub fn exemplar_span_ids(&self) -> impl Iterator<Item = [u8; 8]> + '_ {
        self.slowest_per_point.values().map(|c| c.span_id)
    }

    /// This interval's exemplar candidates, by (process, probe), off-CPU states together:
    /// one picture per process and probe.
    pub fn slowest(&self) -> &HashMap<(u32, Probe), ExemplarCandidate> {
        &self.slowest
    }

    /// Attributes (artifact URL and id) for the exemplar of series `key` in the next build: on
    /// the data point whose exemplar is the series' slowest event ([`slowest`](Self::slowest)),
    /// whose span carries the same picture.
    pub fn attach(&mut self, key: (u32, Probe), attributes: Vec<KeyValue>) {
        self.artifacts.insert(key, attributes);
    }

    /// Series folded into the overflow point so far (one per process and probe, counted once).
    pub fn overflowed_series(&self) -> u64 {
        self.overflowed
    }

    /// Builds the request for the interval ending `now`, from cumulative kernel histograms.
    /// `resource_of` gives each process's resource; `agent` is kotel's own, which also holds
    /// the overflow series and `self_metrics`.
    pub fn build(
        &mut self,
        histograms: &[Histogram],
        now: u64,
        resource_of: &mut dyn FnMut(u32) -> Resource,
        agent: Resource,
        self_metrics: &[SelfMetric],
    ) -> ExportMetricsServiceRequest {
        let start = match self.temporality {
            Temporality::Cumulative => self.start_unix_nano,
            Temporality::Delta => self.last_unix_nano,
        };
        let mut per_pid: BTreeMap<u32, Vec<Metric>> = BTreeMap::new();
        let mut overflow: BTreeMap<(Probe, Option<OffcpuState>), OverflowPoint> = BTreeMap::new();
        if self.temporality == Temporality::Cumulative {
            for (key, h) in &self.folded_exited {
                overflow.insert(*key, (h.clone(), None));
            }
        }
        let finals = std::mem::take(&mut self.finals);
        // Places under the limit are freed only after the build, so that one request never
        // holds more series than the limit.
        let mut ended = Vec::new();
        let items = histograms
            .iter()
            .map(|h| (h, false))
            .chain(finals.iter().map(|h| (h, true)));

        for (h, last) in items {
            let point = self.point_of(h, last);
            // The kernel's own overflow (events that found no histogram slot) goes straight
            // to the overflow series.
            let admitted = h.pid != kotel_bpf::OVERFLOW_PID && self.admit(h.pid, h.kind);
            if last {
                ended.push((h.pid, h.kind, admitted));
                if !admitted {
                    self.keep_folded(&point);
                }
            }
            if point.count == 0 && (self.temporality == Temporality::Delta || last) {
                continue;
            }
            let exemplar = self.slowest_per_point.get(&h.series()).copied();
            if admitted {
                let mut series = self.series(&point, start, now, exemplar, Vec::new());
                // The picture rides on the exemplar of the (process, probe)'s slowest event, the
                // one whose span carries it too (off-CPU: on one state's point only).
                let pictured = self.slowest.get(&(h.pid, h.kind));
                if let (Some(extra), true) = (
                    self.artifacts.get(&(h.pid, h.kind)),
                    exemplar.is_some_and(|e| pictured.is_some_and(|p| p.span_id == e.span_id)),
                ) {
                    attach_to_exemplars(&mut series, extra);
                }
                per_pid.entry(h.pid).or_default().extend(series);
            } else {
                let (acc, ex) = overflow
                    .entry((h.kind, h.offcpu_state))
                    .or_insert_with(|| (empty_like(&point), None));
                expo::merge(acc, &point);
                if exemplar.is_some_and(|e| ex.is_none_or(|x| e.duration_ns > x.duration_ns)) {
                    *ex = exemplar;
                }
            }
        }
        for (pid, probe, admitted) in ended {
            self.forget(pid, probe, admitted);
        }
        self.slowest.clear();
        self.slowest_per_point.clear();
        self.artifacts.clear();
        self.last_unix_nano = now;

        let mut resource_metrics: Vec<ResourceMetrics> = per_pid
            .into_iter()
            .map(|(pid, metrics)| on_resource(resource_of(pid), metrics))
            .collect();

        let mut agent_metrics: Vec<Metric> = Vec::new();
        for (_, (h, ex)) in overflow {
            agent_metrics.extend(self.series(
                &h,
                start,
                now,
                ex,
                vec![attrs::boolean(OTEL_METRIC_OVERFLOW, true)],
            ));
        }
        agent_metrics.extend(self_metrics.iter().map(|m| self.self_metric(m, now)));
        agent_metrics.extend(self.gauges.iter().map(|g| gauge(g, now)));
        if !agent_metrics.is_empty() {
            resource_metrics.push(on_resource(agent, agent_metrics));
        }
        ExportMetricsServiceRequest { resource_metrics }
    }

    /// The point to export for `h`: itself (cumulative), or what it added since the last
    /// build (delta; `last` ends the series, so nothing is remembered for it).
    fn point_of(&mut self, h: &Histogram, last: bool) -> Histogram {
        if self.temporality == Temporality::Cumulative {
            return h.clone();
        }
        let key = h.series();
        let delta = match self.previous.get(&key) {
            Some(prev) => expo::subtract(h, prev).unwrap_or_else(|| h.clone()),
            None => h.clone(),
        };
        if last {
            self.previous.remove(&key);
        } else {
            self.previous.insert(key, h.clone());
        }
        delta
    }

    /// Whether process `pid` gets its own series for `probe` under the cardinality limit. A
    /// process once folded into the overflow series stays there while it lives.
    fn admit(&mut self, pid: u32, probe: Probe) -> bool {
        let set = self.admitted.entry(probe).or_default();
        if set.contains(&pid) {
            return true;
        }
        let folded = self.folded.entry(probe).or_default();
        if folded.contains(&pid) {
            return false;
        }
        if set.len() < self.cardinality_limit {
            set.insert(pid);
            return true;
        }
        folded.insert(pid);
        self.overflowed += 1;
        false
    }

    /// The series of an exited process has ended: its place under the limit is free.
    fn forget(&mut self, pid: u32, probe: Probe, admitted: bool) {
        let sets = if admitted {
            &mut self.admitted
        } else {
            &mut self.folded
        };
        if let Some(set) = sets.get_mut(&probe) {
            set.remove(&pid);
        }
    }

    /// A folded process's final counts stay in the cumulative overflow series.
    fn keep_folded(&mut self, point: &Histogram) {
        if self.temporality == Temporality::Cumulative {
            let acc = self
                .folded_exited
                .entry((point.kind, point.offcpu_state))
                .or_insert_with(|| empty_like(point));
            expo::merge(acc, point);
        }
    }

    /// The duration histogram and, where the probe moves bytes, the byte sum for one series;
    /// an off-CPU point says its state.
    fn series(
        &self,
        h: &Histogram,
        start: u64,
        now: u64,
        exemplar: Option<ExemplarCandidate>,
        mut attributes: Vec<KeyValue>,
    ) -> Vec<Metric> {
        if let Some(state) = h.offcpu_state {
            attributes.push(attrs::string(KOTEL_OFFCPU_STATE, state.name()));
        }
        let exemplars = exemplar
            .map(|e| Exemplar {
                filtered_attributes: Vec::new(),
                time_unix_nano: e.time_unix_nano,
                span_id: e.span_id.to_vec(),
                trace_id: e.trace_id.to_vec(),
                value: Some(exemplar::Value::AsDouble(ns_to_seconds(e.duration_ns))),
            })
            .into_iter()
            .collect();
        let point = ExponentialHistogramDataPoint {
            attributes: attributes.clone(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            count: h.count,
            sum: Some(ns_to_seconds(h.sum_ns)),
            scale: h.scale,
            zero_count: h.zero_count,
            positive: Some(Buckets {
                offset: h.offset,
                bucket_counts: h.bucket_counts.clone(),
            }),
            negative: Some(Buckets {
                offset: 0,
                bucket_counts: Vec::new(),
            }),
            flags: 0,
            exemplars,
            min: None,
            max: (self.temporality == Temporality::Cumulative && h.count > 0)
                .then(|| ns_to_seconds(h.max_ns)),
            zero_threshold: 0.0,
        };
        let mut out = vec![Metric {
            name: duration_metric(h.kind).to_string(),
            description: format!("Duration of {} events as measured in the kernel", h.kind),
            unit: "s".to_string(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![point],
                aggregation_temporality: self.temporality.otlp(),
            })),
            ..Default::default()
        }];
        if let Some(name) = bytes_metric(h.kind) {
            out.push(Metric {
                name: name.to_string(),
                description: format!("Bytes moved by {} calls", h.kind),
                unit: "By".to_string(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![NumberDataPoint {
                        attributes,
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsInt(h.bytes as i64)),
                        ..Default::default()
                    }],
                    aggregation_temporality: self.temporality.otlp(),
                    is_monotonic: true,
                })),
                ..Default::default()
            });
        }
        out
    }

    fn self_metric(&self, m: &SelfMetric, now: u64) -> Metric {
        Metric {
            name: m.name.to_string(),
            description: m.description.to_string(),
            unit: m.unit.to_string(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: m.attributes.clone(),
                    start_time_unix_nano: self.start_unix_nano,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(m.value as i64)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }
}

/// `metrics` under one resource, in kotel's scope.
fn on_resource(resource: Resource, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Adds `extra` (the picture's link) to every exemplar of a histogram series.
fn attach_to_exemplars(series: &mut [Metric], extra: &[KeyValue]) {
    if let Some(Data::ExponentialHistogram(eh)) = series.first_mut().and_then(|m| m.data.as_mut()) {
        for ex in eh
            .data_points
            .iter_mut()
            .flat_map(|dp| dp.exemplars.iter_mut())
        {
            ex.filtered_attributes.extend(extra.iter().cloned());
        }
    }
}

/// A gauge of the agent about itself.
fn gauge(m: &SelfMetric, now: u64) -> Metric {
    Metric {
        name: m.name.to_string(),
        description: m.description.to_string(),
        unit: m.unit.to_string(),
        data: Some(Data::Gauge(
            opentelemetry_proto::tonic::metrics::v1::Gauge {
                data_points: vec![NumberDataPoint {
                    attributes: m.attributes.clone(),
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(m.value as i64)),
                    ..Default::default()
                }],
            },
        )),
        ..Default::default()
    }
}

/// One overflow data point being summed, with its exemplar.
type OverflowPoint = (Histogram, Option<ExemplarCandidate>);

fn empty_like(h: &Histogram) -> Histogram {
    Histogram {
        kind: h.kind,
        pid: 0,
        offcpu_state: h.offcpu_state,
        count: 0,
        sum_ns: 0,
        max_ns: 0,
        zero_count: 0,
        bytes: 0,
        clamped: 0,
        scale: h.scale,
        offset: 0,
        bucket_counts: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pid: u32, kind: Probe, values: &[u64], bytes: u64) -> Histogram {
        Histogram {
            bytes,
            ..Histogram::of(kind, pid, 3, values)
        }
    }

    fn resource(pid: u32) -> Resource {
        Resource {
            attributes: vec![attrs::int("process.pid", i64::from(pid))],
            ..Default::default()
        }
    }

    fn points(
        req: &ExportMetricsServiceRequest,
        name: &str,
    ) -> Vec<(Resource, ExponentialHistogramDataPoint)> {
        let mut out = Vec::new();
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in sm.metrics.iter().filter(|m| m.name == name) {
                    if let Some(Data::ExponentialHistogram(eh)) = &m.data {
                        for dp in &eh.data_points {
                            out.push((rm.resource.clone().unwrap_or_default(), dp.clone()));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn cumulative_points_per_process_with_the_slowest_exemplar() {
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 10, 100);
        let ex = |d, s: u8| ExemplarCandidate {
            duration_ns: d,
            time_unix_nano: 150,
            trace_id: [s; 16],
            span_id: [s; 8],
            offcpu_state: None,
        };
        b.observe(7, Probe::Writev, ex(2_000, 1));
        b.observe(7, Probe::Writev, ex(9_000, 2));
        b.observe(7, Probe::Writev, ex(5_000, 3));
        let hs = [
            hist(7, Probe::Writev, &[1_000, 2_000, 9_000], 30),
            hist(8, Probe::Offcpu, &[5_000_000], 0),
        ];
        let req = b.build(&hs, 200, &mut resource, Resource::default(), &[]);
        let w = points(&req, "kotel.writev.duration");
        assert_eq!(w.len(), 1);
        assert_eq!(
            attrs::find(&w[0].0.attributes, "process.pid"),
            Some(&opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(7))
        );
        let dp = &w[0].1;
        assert_eq!(
            (dp.count, dp.start_time_unix_nano, dp.time_unix_nano),
            (3, 100, 200)
        );
        assert_eq!(dp.exemplars.len(), 1);
        assert_eq!(dp.exemplars[0].span_id, vec![2; 8], "the slowest one");
        assert_eq!(
            points(&req, "kotel.sched.offcpu.duration")[0]
                .1
                .exemplars
                .len(),
            0
        );
        // Exemplars belong to one interval.
        let req = b.build(&hs, 300, &mut resource, Resource::default(), &[]);
        assert!(points(&req, "kotel.writev.duration")[0]
            .1
            .exemplars
            .is_empty());
        assert_eq!(
            points(&req, "kotel.writev.duration")[0].1.count,
            3,
            "cumulative"
        );
    }

    #[test]
    fn attached_artifacts_ride_on_that_series_exemplar_only() {
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 10, 0);
        let ex = ExemplarCandidate {
            duration_ns: 9,
            time_unix_nano: 5,
            trace_id: [1; 16],
            span_id: [2; 8],
            offcpu_state: None,
        };
        b.observe(7, Probe::Writev, ex);
        b.observe(8, Probe::Writev, ex);
        b.attach(
            (7, Probe::Writev),
            vec![attrs::string("kotel.artifact.url", "file:///x.png")],
        );
        let hs = [
            hist(7, Probe::Writev, &[9], 0),
            hist(8, Probe::Writev, &[9], 0),
        ];
        let req = b.build(&hs, 10, &mut resource, Resource::default(), &[]);
        for (r, dp) in points(&req, "kotel.writev.duration") {
            let pid = attrs::find(&r.attributes, "process.pid").cloned();
            let has =
                attrs::find(&dp.exemplars[0].filtered_attributes, "kotel.artifact.url").is_some();
            assert_eq!(
                has,
                pid == Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(7))
            );
        }
    }

    #[test]
    fn delta_points_cover_only_their_interval() {
        let mut b = MetricsBuilder::new(Temporality::Delta, 10, 100);
        let first = [hist(7, Probe::Writev, &[1_000, 2_000], 10)];
        let second = [hist(7, Probe::Writev, &[1_000, 2_000, 3_000_000], 15)];
        b.build(&first, 200, &mut resource, Resource::default(), &[]);
        let req = b.build(&second, 300, &mut resource, Resource::default(), &[]);
        let dp = &points(&req, "kotel.writev.duration")[0].1;
        assert_eq!(
            (dp.count, dp.start_time_unix_nano, dp.time_unix_nano),
            (1, 200, 300)
        );
        assert_eq!(dp.positive.as_ref().unwrap().bucket_counts, vec![1]);
        // Nothing new: no point at all.
        let req = b.build(&second, 400, &mut resource, Resource::default(), &[]);
        assert!(points(&req, "kotel.writev.duration").is_empty());
    }

    #[test]
    fn processes_past_the_limit_fold_into_one_overflow_series() {
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 2, 0);
        let hs: Vec<Histogram> = (1..=5)
            .map(|pid| hist(pid, Probe::Runqueue, &[pid as u64 * 1_000], 0))
            .collect();
        let req = b.build(&hs, 10, &mut resource, Resource::default(), &[]);
        let pts = points(&req, "kotel.sched.runqueue.delay");
        let (overflow, own): (Vec<_>, Vec<_>) = pts
            .iter()
            .partition(|(_, dp)| attrs::find(&dp.attributes, "otel.metric.overflow").is_some());
        assert_eq!(own.len(), 2, "two processes under the limit");
        assert_eq!(overflow.len(), 1, "one overflow series");
        assert_eq!(overflow[0].1.count, 3, "the other three processes");
        assert_eq!(
            pts.iter().map(|(_, dp)| dp.count).sum::<u64>(),
            5,
            "nothing lost"
        );
        assert_eq!(b.overflowed_series(), 3);
    }

    fn split(req: &ExportMetricsServiceRequest, name: &str) -> (u64, u64, usize) {
        let mut own = (0, 0);
        let mut overflow = 0;
        for (_, dp) in points(req, name) {
            if attrs::find(&dp.attributes, "otel.metric.overflow").is_some() {
                overflow += dp.count;
            } else {
                own.0 += dp.count;
                own.1 += 1;
            }
        }
        (own.0, overflow, own.1)
    }

    #[test]
    fn exited_processes_end_their_series_and_free_their_place() {
        for temporality in [Temporality::Cumulative, Temporality::Delta] {
            let mut b = MetricsBuilder::new(temporality, 2, 0);
            let name = "kotel.writev.duration";
            // Four processes, two of their own, two folded.
            let live: Vec<Histogram> = (1..=4)
                .map(|pid| hist(pid, Probe::Writev, &[1_000; 2], 0))
                .collect();
            let req = b.build(&live, 10, &mut resource, Resource::default(), &[]);
            assert_eq!(split(&req, name), (4, 4, 2), "{temporality:?}");
            // All four exit with one more call each; two new processes arrive.
            b.retire((1..=4).map(|pid| hist(pid, Probe::Writev, &[1_000; 3], 0)));
            let fresh: Vec<Histogram> = (5..=6)
                .map(|pid| hist(pid, Probe::Writev, &[1_000], 0))
                .collect();
            let req = b.build(&fresh, 20, &mut resource, Resource::default(), &[]);
            let (own, overflow, streams) = split(&req, name);
            assert!(streams <= 2, "never more than the limit: {streams}");
            match temporality {
                // Final points 3 + 3 own; the folded ones' 6 in the overflow, plus the new
                // processes (folded: the exited ones still held the places during the build).
                Temporality::Cumulative => assert_eq!((own, overflow), (6, 8)),
                Temporality::Delta => assert_eq!((own, overflow), (2, 4)),
            }
            // The exited processes' places are free again.
            b.retire(fresh.iter().cloned());
            let newer = [hist(7, Probe::Writev, &[1_000], 0)];
            let req = b.build(&newer, 30, &mut resource, Resource::default(), &[]);
            let (own, overflow, streams) = split(&req, name);
            assert_eq!(streams, 1, "process 7 has a series of its own");
            assert_eq!(own, 1);
            match temporality {
                // The overflow series never goes down: it keeps every folded exited process.
                Temporality::Cumulative => assert_eq!(overflow, 8),
                Temporality::Delta => assert_eq!(overflow, 0),
            }
            assert_eq!(b.admitted_series(), 1);
            assert!(
                b.folded.values().all(HashSet::is_empty),
                "no live folded process"
            );
            // Many exits at once never make one request hold more than the limit.
            b.retire((10..20).map(|pid| hist(pid, Probe::Writev, &[1_000], 0)));
            let req = b.build(&newer, 40, &mut resource, Resource::default(), &[]);
            let (_, _, streams) = split(&req, name);
            assert!(streams <= 2, "{temporality:?}: {streams}");
        }
    }

    #[test]
    fn gauges_ride_on_the_agent_resource() {
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 2, 0);
        b.set_gauges(vec![SelfMetric {
            name: "kotel.process_cache.size",
            description: "Processes cached",
            unit: "{process}",
            attributes: vec![],
            value: 12,
        }]);
        let req = b.build(&[], 10, &mut resource, Resource::default(), &[]);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(m.name, "kotel.process_cache.size");
        let Some(Data::Gauge(g)) = &m.data else {
            panic!("a gauge")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsInt(12))
        );
    }

    fn offcpu(pid: u32, state: OffcpuState, values: &[u64]) -> Histogram {
        Histogram {
            offcpu_state: Some(state),
            ..Histogram::of(Probe::Offcpu, pid, 3, values)
        }
    }

    fn state_of(dp: &ExponentialHistogramDataPoint) -> Option<String> {
        match attrs::find(&dp.attributes, "kotel.offcpu.state") {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                Some(s.clone())
            }
            _ => None,
        }
    }

    #[test]
    fn offcpu_points_are_split_by_state_each_with_its_own_exemplar() {
        use OffcpuState::{Interruptible, Uninterruptible};
        for temporality in [Temporality::Cumulative, Temporality::Delta] {
            let mut b = MetricsBuilder::new(temporality, 10, 0);
            let ex = |d, s: u8, state| ExemplarCandidate {
                duration_ns: d,
                time_unix_nano: 50,
                trace_id: [s; 16],
                span_id: [s; 8],
                offcpu_state: Some(state),
            };
            // The slowest event is a sleep; the blocked point still gets its own slowest.
            b.observe(7, Probe::Offcpu, ex(2_000_000_000, 1, Interruptible));
            b.observe(7, Probe::Offcpu, ex(3_000_000, 2, Uninterruptible));
            b.observe(7, Probe::Offcpu, ex(5_000_000, 3, Uninterruptible));
            assert_eq!(
                b.slowest()[&(7, Probe::Offcpu)].span_id,
                [1; 8],
                "pictures see the slowest of both"
            );
            let hs = [
                offcpu(7, Uninterruptible, &[3_000_000, 5_000_000]),
                offcpu(7, Interruptible, &[1_000, 2_000_000_000, 50_000]),
                hist(7, Probe::Runqueue, &[1_000], 0),
            ];
            let req = b.build(&hs, 60, &mut resource, Resource::default(), &[]);
            let pts = points(&req, "kotel.sched.offcpu.duration");
            let by_state: BTreeMap<_, _> = pts
                .iter()
                .map(|(_, dp)| (state_of(dp), (dp.count, dp.exemplars[0].span_id.clone())))
                .collect();
            assert_eq!(
                by_state,
                BTreeMap::from([
                    (Some("interruptible".to_string()), (3, vec![1; 8])),
                    (Some("uninterruptible".to_string()), (2, vec![3; 8])),
                ]),
                "{temporality:?}"
            );
            let rq = points(&req, "kotel.sched.runqueue.delay");
            assert_eq!(state_of(&rq[0].1), None, "other probes have no state");
            assert_eq!(b.admitted_series(), 2, "one place per process and probe");
            // The next interval: each state's delta (or cumulative count) on its own.
            let later = [
                offcpu(7, Uninterruptible, &[3_000_000, 5_000_000, 7_000_000]),
                offcpu(7, Interruptible, &[1_000, 2_000_000_000, 50_000]),
            ];
            let req = b.build(&later, 70, &mut resource, Resource::default(), &[]);
            let counts: BTreeMap<_, _> = points(&req, "kotel.sched.offcpu.duration")
                .iter()
                .map(|(_, dp)| (state_of(dp), dp.count))
                .collect();
            let want = match temporality {
                Temporality::Cumulative => vec![
                    (Some("interruptible".to_string()), 3),
                    (Some("uninterruptible".to_string()), 3),
                ],
                Temporality::Delta => vec![(Some("uninterruptible".to_string()), 1)],
            };
            assert_eq!(counts, want.into_iter().collect(), "{temporality:?}");
        }
    }

    #[test]
    fn the_picture_rides_on_the_exemplar_of_the_slowest_state_only() {
        use OffcpuState::{Interruptible, Uninterruptible};
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 10, 0);
        let ex = |d, s: u8, state| ExemplarCandidate {
            duration_ns: d,
            time_unix_nano: 50,
            trace_id: [s; 16],
            span_id: [s; 8],
            offcpu_state: Some(state),
        };
        b.observe(7, Probe::Offcpu, ex(3_000_000, 1, Uninterruptible));
        b.observe(7, Probe::Offcpu, ex(9_000_000, 2, Interruptible));
        b.attach(
            (7, Probe::Offcpu),
            vec![attrs::string("kotel.artifact.url", "file:///h.png")],
        );
        let hs = [
            offcpu(7, Uninterruptible, &[3_000_000]),
            offcpu(7, Interruptible, &[9_000_000]),
        ];
        let req = b.build(&hs, 60, &mut resource, Resource::default(), &[]);
        let pictured: BTreeMap<_, _> = points(&req, "kotel.sched.offcpu.duration")
            .iter()
            .map(|(_, dp)| {
                let e = &dp.exemplars[0];
                let has = attrs::find(&e.filtered_attributes, "kotel.artifact.url").is_some();
                (state_of(dp), (e.span_id.clone(), has))
            })
            .collect();
        assert_eq!(
            pictured,
            BTreeMap::from([
                (Some("interruptible".to_string()), (vec![2; 8], true)),
                (Some("uninterruptible".to_string()), (vec![1; 8], false)),
            ])
        );
    }

    #[test]
    fn folded_offcpu_states_stay_apart_in_the_overflow_series() {
        use OffcpuState::{Interruptible, Uninterruptible};
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 1, 0);
        let hs = [
            offcpu(1, Uninterruptible, &[1_000]),
            offcpu(1, Interruptible, &[1_000, 2_000]),
            offcpu(2, Uninterruptible, &[1_000; 3]),
            offcpu(2, Interruptible, &[1_000; 4]),
            offcpu(kotel_bpf::OVERFLOW_PID, Interruptible, &[1_000; 5]),
        ];
        let req = b.build(&hs, 10, &mut resource, Resource::default(), &[]);
        let mut got: Vec<_> = points(&req, "kotel.sched.offcpu.duration")
            .iter()
            .map(|(_, dp)| {
                let overflow = attrs::find(&dp.attributes, "otel.metric.overflow").is_some();
                (overflow, state_of(dp), dp.count)
            })
            .collect();
        got.sort();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            got,
            vec![
                (false, s("interruptible"), 2),
                (false, s("uninterruptible"), 1),
                (true, s("interruptible"), 9),
                (true, s("uninterruptible"), 3),
            ]
        );
        assert_eq!(b.overflowed_series(), 1, "process 2, both states at once");
        // Process 2 exits folded: its final counts stay in the overflow, per state.
        b.retire([
            offcpu(2, Uninterruptible, &[1_000; 3]),
            offcpu(2, Interruptible, &[1_000; 4]),
        ]);
        b.build(&hs[..2], 20, &mut resource, Resource::default(), &[]);
        let req = b.build(&hs[..2], 30, &mut resource, Resource::default(), &[]);
        let mut overflow: Vec<_> = points(&req, "kotel.sched.offcpu.duration")
            .iter()
            .filter(|(_, dp)| attrs::find(&dp.attributes, "otel.metric.overflow").is_some())
            .map(|(_, dp)| (state_of(dp), dp.count))
            .collect();
        overflow.sort();
        assert_eq!(
            overflow,
            vec![(s("interruptible"), 4), (s("uninterruptible"), 3)]
        );
    }

    #[test]
    fn the_kernel_overflow_joins_the_overflow_series() {
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 10, 0);
        let hs = [
            hist(kotel_bpf::OVERFLOW_PID, Probe::Writev, &[1_000; 5], 0),
            hist(7, Probe::Writev, &[1_000; 2], 0),
        ];
        let req = b.build(&hs, 10, &mut resource, Resource::default(), &[]);
        assert_eq!(split(&req, "kotel.writev.duration"), (2, 5, 1));
        assert_eq!(b.overflowed_series(), 0, "no process was folded");
    }
}
