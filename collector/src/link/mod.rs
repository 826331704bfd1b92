//! Links kernel events under the application's own spans. For each received span whose
//! resource (or connection) names a process kotel sees, the kernel events of that process —
//! or of that thread, when the span has a native `thread.id` — that overlap the span become
//! its children (same trace, `parent_span_id` = the span), and the span gains summary
//! attributes: `kotel.offcpu.duration`, `kotel.runqueue.delay`, `kotel.writev.duration`,
//! `kotel.tcp.send.duration` (seconds, clipped to the span) and `kotel.kernel.events`.

pub mod buffer;
pub mod resolve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kotel_bpf::Probe;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

use crate::enrich::semconv::{
    CONTAINER_ID, KOTEL_KERNEL_EVENTS, KOTEL_LINK_MATCH, KOTEL_LINK_PID_SOURCE,
    KOTEL_OFFCPU_DURATION, KOTEL_RUNQUEUE_DELAY, KOTEL_TCP_SEND_DURATION, KOTEL_WRITEV_DURATION,
    PROCESS_PID, THREAD_ID,
};
use crate::model::KernelEvent;
use crate::otlp::ids::IdGenerator;
use crate::otlp::spans::{kernel_span, SpanIds};
use crate::otlp::{attrs, scope};
use buffer::{BufferStats, LinkBuffer};
use resolve::PeerCache;

/// What linking did, cumulatively.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Application spans seen.
    pub app_spans: u64,
    /// Application spans whose process was identified.
    pub matched_spans: u64,
    /// Kernel child spans added.
    pub child_spans: u64,
    /// Child spans not added because a span already had the most allowed.
    pub children_capped: u64,
}

/// A kernel event that became a child span of an application span, so that exemplars can
/// point into the application's trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkedChild {
    /// The process.
    pub pid: u32,
    /// The probe.
    pub kind: Probe,
    /// When the event ended (Unix ns).
    pub end: u64,
    /// Its length.
    pub duration_ns: u64,
    /// The application's trace.
    pub trace_id: [u8; 16],
    /// The child span's id.
    pub span_id: [u8; 8],
}

/// What one [`Linker::link`] call made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linked {
    /// The host pids identified, each once, in the order their resources came: they become
    /// link targets.
    pub pids: Vec<u32>,
    /// The kernel events that became child spans, so that exemplars can point at them.
    pub children: Vec<LinkedChild>,
}

/// Most kernel child spans under one application span; the sums still count every event.
const MAX_CHILDREN_PER_SPAN: usize = 256;

/// The linker. Single-threaded; owns the event buffer.
#[derive(Debug)]
pub struct Linker {
    /// Kernel events waiting for their application spans.
    buffer: LinkBuffer,
    proc_root: PathBuf,
    peers: Arc<PeerCache>,
    /// (host pid, reported tid) → host tid, and (reported pid, peer pid) → host pid: /proc
    /// reads are far slower than linking itself.
    threads: HashMap<(u32, u32), (Option<u32>, Instant)>,
    processes: HashMap<ProcessKey, (Option<u32>, Instant)>,
    stats: LinkStats,
}

/// (reported pid, connection owner, container id): what a host pid is resolved from.
type ProcessKey = (u32, Option<u32>, Option<String>);

/// How long a resolved process or thread id is trusted.
const RESOLVED_TTL: Duration = Duration::from_secs(10);
/// Most resolutions remembered of each kind.
const RESOLVED_CACHE: usize = 16_384;

fn cached<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, (Option<u32>, Instant)>,
    key: K,
    resolve: impl FnOnce() -> Option<u32>,
) -> Option<u32> {
    if let Some((v, at)) = map.get(&key) {
        if at.elapsed() < RESOLVED_TTL {
            return *v;
        }
    }
    if map.len() >= RESOLVED_CACHE {
        map.clear();
    }
    let v = resolve();
    map.insert(key, (v, Instant::now()));
    v
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attrs::find(attributes, key)? {
        Value::IntValue(v) => Some(*v),
        Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn str_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attrs::find(attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

impl Linker {
    /// A linker reading `/proc` at `proc_root`, with its buffer.
    pub fn new(proc_root: PathBuf, buffer: LinkBuffer) -> Self {
        let peers = Arc::new(PeerCache::new(proc_root.clone()));
        Linker {
            buffer,
            proc_root,
            peers,
            threads: HashMap::new(),
            processes: HashMap::new(),
            stats: LinkStats::default(),
        }
    }

    /// Keeps a kernel event until its application span arrives or its window passes; `child`
    /// says whether it may become a child span of its own (else it only adds to the sums).
    pub fn remember(&mut self, ev: &KernelEvent, child: bool) {
        self.buffer.push(ev, child);
    }

    /// Forgets the events older than the window, as of `now` (Unix nanoseconds).
    pub fn expire(&mut self, now: u64) {
        self.buffer.expire(now);
    }

    /// The event buffer's counters.
    pub fn buffer_stats(&self) -> BufferStats {
        self.buffer.stats()
    }

    /// The connection-owner cache, to share with the receiver.
    pub fn peers(&self) -> Arc<PeerCache> {
        Arc::clone(&self.peers)
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    fn peer_pid(&mut self, peer: Option<SocketAddr>) -> Option<u32> {
        self.peers.resolve(peer?)
    }

    /// Links `req` in place: summary attributes on every matched application span, and one
    /// extra `kotel` scope per resource holding the kernel child spans. Returns the host pids
    /// that were identified and the children made.
    #[must_use = "the pids become link targets and the children feed exemplars"]
    pub fn link(
        &mut self,
        req: &mut ExportTraceServiceRequest,
        peer: Option<SocketAddr>,
        ids: &mut IdGenerator,
    ) -> Linked {
        let mut linked = Linked::default();
        for rs in &mut req.resource_spans {
            let resource_attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let reported =
                int_attr(resource_attrs, PROCESS_PID).and_then(|p| u32::try_from(p).ok());
            let container = str_attr(resource_attrs, CONTAINER_ID).map(str::to_string);
            let peer_pid = self.peer_pid(peer);
            let (pid, source) = match reported {
                Some(r) => {
                    let root = &self.proc_root;
                    let key = (r, peer_pid, container.clone());
                    match cached(&mut self.processes, key, || {
                        resolve::host_pid(root, r, container.as_deref(), peer_pid)
                    }) {
                        Some(p) => (Some(p), "resource"),
                        None => (peer_pid, "connection"),
                    }
                }
                None => (peer_pid, "connection"),
            };
            tracing::debug!(
                ?reported,
                ?peer,
                ?peer_pid,
                ?pid,
                source,
                "kotel.link.resolved"
            );
            let span_count: usize = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
            self.stats.app_spans += span_count as u64;
            let Some(pid) = pid else { continue };
            if !linked.pids.contains(&pid) {
                linked.pids.push(pid);
            }
            let mut children = Vec::new();
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    self.stats.matched_spans += 1;
                    children.extend(self.link_span(span, pid, source, ids, &mut linked.children));
                }
            }
            if !children.is_empty() {
                self.stats.child_spans += children.len() as u64;
                rs.scope_spans.push(ScopeSpans {
                    scope: Some(scope()),
                    spans: children,
                    ..Default::default()
                });
            }
        }
        linked
    }

    /// Links one application span of process `pid`: adds its summary attributes and returns its
    /// kernel child spans, recording each in `linked`.
    fn link_span(
        &mut self,
        span: &mut Span,
        pid: u32,
        source: &'static str,
        ids: &mut IdGenerator,
        linked: &mut Vec<LinkedChild>,
    ) -> Vec<Span> {
        let root = &self.proc_root;
        let threads = &mut self.threads;
        let tid = int_attr(&span.attributes, THREAD_ID)
            .and_then(|t| u32::try_from(t).ok())
            .and_then(|t| cached(threads, (pid, t), || resolve::host_tid(root, pid, t)));
        let how = if tid.is_some() { "thread" } else { "process" };
        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        if end <= start {
            return Vec::new(); // an empty or inverted span overlaps nothing
        }
        let (Ok(trace_id), Ok(parent)) = (
            <[u8; 16]>::try_from(span.trace_id.as_slice()),
            <[u8; 8]>::try_from(span.span_id.as_slice()),
        ) else {
            return Vec::new();
        };
        let mut sums: HashMap<Probe, u64> = HashMap::new();
        let mut count = 0i64;
        let mut children = Vec::new();
        for e in self.buffer.overlapping(pid, tid, start, end) {
            count += 1;
            *sums.entry(e.kind).or_default() += e.end.min(end).saturating_sub(e.start.max(start));
            if children.len() >= MAX_CHILDREN_PER_SPAN {
                self.stats.children_capped += 1;
                continue;
            }
            if let Some(full) = &e.full {
                let mut child = kernel_span(
                    full,
                    SpanIds {
                        trace_id,
                        span_id: ids.span_id(),
                        parent_span_id: Some(parent),
                    },
                );
                child.attributes.push(attrs::string(KOTEL_LINK_MATCH, how));
                child
                    .attributes
                    .push(attrs::string(KOTEL_LINK_PID_SOURCE, source));
                if let Ok(span_id) = <[u8; 8]>::try_from(child.span_id.as_slice()) {
                    linked.push(LinkedChild {
                        pid,
                        kind: e.kind,
                        end: e.end,
                        duration_ns: full.duration_ns,
                        trace_id,
                        span_id,
                    });
                }
                children.push(child);
            }
        }
        let secs = |p| sums.get(&p).copied().unwrap_or(0) as f64 / 1e9;
        span.attributes
            .push(attrs::double(KOTEL_OFFCPU_DURATION, secs(Probe::Offcpu)));
        span.attributes
            .push(attrs::double(KOTEL_RUNQUEUE_DELAY, secs(Probe::Runqueue)));
        span.attributes
            .push(attrs::double(KOTEL_WRITEV_DURATION, secs(Probe::Writev)));
        span.attributes
            .push(attrs::double(KOTEL_TCP_SEND_DURATION, secs(Probe::TcpSend)));
        span.attributes.push(attrs::int(KOTEL_KERNEL_EVENTS, count));
        span.attributes.push(attrs::string(KOTEL_LINK_MATCH, how));
        span.attributes
            .push(attrs::string(KOTEL_LINK_PID_SOURCE, source));
        children
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Comm, KernelEvent};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

    fn ev(kind: Probe, tid: u32, start: u64, dur: u64) -> KernelEvent {
        KernelEvent {
            kind,
            pid: std::process::id(),
            tid,
            comm: Comm::default(),
            cpu: 0,
            start_unix_nano: start,
            duration_ns: dur,
            bytes: (kind == Probe::Writev).then_some(10),
            errno: None,
            fd: None,
            iovcnt: None,
            local: None,
            peer: None,
            kernel_stack_id: None,
            user_stack_id: None,
            offcpu_state: None,
        }
    }

    fn request(pid: Option<i64>, thread: Option<i64>) -> ExportTraceServiceRequest {
        let mut attributes = vec![attrs::string("service.name", "app")];
        if let Some(p) = pid {
            attributes.push(attrs::int("process.pid", p));
        }
        let mut span = Span {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            name: "handle_request".into(),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            ..Default::default()
        };
        if let Some(t) = thread {
            span.attributes.push(attrs::int("thread.id", t));
        }
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn attr_f64(span: &Span, key: &str) -> f64 {
        match attrs::find(&span.attributes, key) {
            Some(Value::DoubleValue(v)) => *v,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn overlapping_events_become_children_and_sums() {
        let me = std::process::id();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(100, u64::MAX));
        linker
            .buffer
            .push(&ev(Probe::Offcpu, tid, 1_100, 300), true); // inside
        linker
            .buffer
            .push(&ev(Probe::Writev, tid, 1_900, 200), false); // straddles the end: 100 ns inside
        linker
            .buffer
            .push(&ev(Probe::Runqueue, tid + 1, 1_200, 100), true); // other thread
        linker
            .buffer
            .push(&ev(Probe::Offcpu, tid, 5_000, 100), true); // outside
        let mut req = request(Some(i64::from(me)), Some(i64::from(tid)));
        let linked = linker.link(&mut req, None, &mut IdGenerator::with_seed(1));
        assert_eq!(linked.pids, vec![me]);
        let rs = &req.resource_spans[0];
        let app = &rs.scope_spans[0].spans[0];
        assert_eq!(app.name, "handle_request", "the application span is kept");
        assert_eq!(attr_f64(app, "kotel.offcpu.duration"), 300e-9);
        assert_eq!(
            attr_f64(app, "kotel.writev.duration"),
            100e-9,
            "clipped to the span"
        );
        assert_eq!(
            attr_f64(app, "kotel.runqueue.delay"),
            0.0,
            "other threads do not count"
        );
        let kids = &rs.scope_spans[1].spans;
        assert_eq!(kids.len(), 1, "only events kept whole become children");
        assert_eq!(kids[0].trace_id, vec![7; 16]);
        assert_eq!(kids[0].parent_span_id, vec![8; 8]);
        assert_eq!(
            attrs::find(&kids[0].attributes, "kotel.link.match"),
            Some(&Value::StringValue("thread".into()))
        );
        assert_eq!(
            attrs::find(&kids[0].attributes, "kotel.link.pid_source"),
            Some(&Value::StringValue("resource".into()))
        );
        assert_eq!(
            linked.children,
            vec![LinkedChild {
                pid: me,
                kind: Probe::Offcpu,
                end: 1_400,
                duration_ns: 300,
                trace_id: [7; 16],
                span_id: kids[0].span_id.as_slice().try_into().unwrap(),
            }],
            "what it made is returned, to point exemplars at the child span"
        );

        // Each call returns only what it made.
        linker
            .buffer
            .push(&ev(Probe::Runqueue, tid, 1_500, 50), true);
        let mut req = request(Some(i64::from(me)), Some(i64::from(tid)));
        let again = linker.link(&mut req, None, &mut IdGenerator::with_seed(2));
        assert_eq!(again.pids, vec![me]);
        assert_eq!(
            again
                .children
                .iter()
                .map(|c| (c.kind, c.end))
                .collect::<Vec<_>>(),
            vec![(Probe::Offcpu, 1_400), (Probe::Runqueue, 1_550)]
        );
    }

    #[test]
    fn inverted_spans_link_nothing_and_children_are_capped() {
        let me = std::process::id();
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(1_000, u64::MAX));
        linker.buffer.push(&ev(Probe::Offcpu, 1, 0, 10_000), true); // covers everything
        let mut req = request(Some(i64::from(me)), None);
        let span = &mut req.resource_spans[0].scope_spans[0].spans[0];
        (span.start_time_unix_nano, span.end_time_unix_nano) = (2_000, 1_000);
        let linked = linker.link(&mut req, None, &mut IdGenerator::with_seed(1));
        assert!(linked.children.is_empty());
        assert_eq!(
            req.resource_spans[0].scope_spans.len(),
            1,
            "no children under an inverted span"
        );

        for i in 0..300 {
            linker
                .buffer
                .push(&ev(Probe::Runqueue, 1, 1_100 + i, 1), true);
        }
        let mut req = request(Some(i64::from(me)), None);
        let linked = linker.link(&mut req, None, &mut IdGenerator::with_seed(1));
        assert_eq!(
            req.resource_spans[0].scope_spans[1].spans.len(),
            MAX_CHILDREN_PER_SPAN
        );
        assert_eq!(linked.children.len(), MAX_CHILDREN_PER_SPAN);
        assert_eq!(
            linker.stats().children_capped,
            301 - MAX_CHILDREN_PER_SPAN as u64
        );
        let app = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            attrs::find(&app.attributes, "kotel.kernel.events"),
            Some(&Value::IntValue(301)),
            "sums count every event"
        );
    }

    #[test]
    fn without_a_thread_the_whole_process_counts_and_unknown_senders_are_left_alone() {
        let me = std::process::id();
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(100, u64::MAX));
        linker
            .buffer
            .push(&ev(Probe::Runqueue, 1, 1_200, 100), true);
        linker
            .buffer
            .push(&ev(Probe::Runqueue, 2, 1_300, 100), true);
        let mut req = request(Some(i64::from(me)), None);
        let linked = linker.link(&mut req, None, &mut IdGenerator::with_seed(1));
        assert_eq!(req.resource_spans[0].scope_spans[1].spans.len(), 2);
        assert_eq!(linked.children.len(), 2);
        let mut unknown = request(None, None);
        let before = unknown.clone();
        assert_eq!(
            linker.link(&mut unknown, None, &mut IdGenerator::with_seed(1)),
            Linked::default()
        );
        assert_eq!(unknown, before, "no process, no change");
    }
}
