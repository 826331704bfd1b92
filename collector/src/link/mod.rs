//! Links kernel events under the application's own spans. For each received span whose
//! resource (or connection) names a process kotel sees, the kernel events of that process —
//! or of that thread, when the span has a native `thread.id` — that overlap the span become
//! its children (same trace, `parent_span_id` = the span), and the span gains summary
//! attributes: `kotel.offcpu.duration`, `kotel.runqueue.delay`, `kotel.writev.duration`,
//! `kotel.tcp.send.duration` (seconds, clipped to the span) and `kotel.kernel.events`.
//!
//! A resource that names a process (`process.pid`) is linked to that process or to nothing:
//! the connection's owner is used only when the resource names none, since the sender may be
//! a forwarder relaying other processes' spans. When the named process cannot be found its
//! spans get `kotel.link.unresolved = <reason>` and nothing else, and are counted by reason.

pub mod buffer;
pub mod resolve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kotel_bpf::Probe;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::enrich::semconv::{
    CONTAINER_ID, KOTEL_KERNEL_EVENTS, KOTEL_LINK_MATCH, KOTEL_LINK_PID_SOURCE,
    KOTEL_LINK_UNRESOLVED, KOTEL_OFFCPU_DURATION, KOTEL_RUNQUEUE_DELAY, KOTEL_TCP_SEND_DURATION,
    KOTEL_WRITEV_DURATION, PROCESS_PID, THREAD_ID,
};
use crate::model::KernelEvent;
use crate::otlp::pending::PendingSpan;
use crate::otlp::profiles::Observation;
use crate::otlp::{attrs, scope};
use crate::telemetry::RateLimit;
use buffer::{BufferStats, LinkBuffer};
use resolve::{PeerCache, Unresolved};

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
    /// Application spans left unlinked because the process their resource names could not
    /// be found, by reason ([`Unresolved::index`]).
    pub unresolved: [u64; Unresolved::ALL.len()],
}

/// Application spans left unlinked since the agent started, by reason ([`Unresolved::index`]):
/// process-wide, as the export's TLS failures are, so that the self-metrics read them without
/// a handle on the linker (one agent runs per process).
static UNRESOLVED_SPANS: [AtomicU64; Unresolved::ALL.len()] =
    [const { AtomicU64::new(0) }; Unresolved::ALL.len()];

/// Application spans left unlinked since the process started, by reason
/// ([`Unresolved::index`]), summed over every [`Linker`]: the `kotel.link.unresolved`
/// self-metric.
pub fn unresolved_spans() -> [u64; Unresolved::ALL.len()] {
    std::array::from_fn(|i| crate::telemetry::get(&UNRESOLVED_SPANS[i]))
}

/// A kernel event that became a child span of an application span, so that exemplars and
/// profile samples can point into the application's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedChild {
    /// The application's trace.
    pub trace_id: [u8; 16],
    /// The child span's id.
    pub span_id: [u8; 8],
    /// The event (process, probe, times, state) and its stacks.
    pub observation: Observation,
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
    processes: HashMap<ProcessKey, (Result<u32, Unresolved>, Instant)>,
    stats: LinkStats,
    /// One log line a second about unresolved resources.
    unresolved_log: RateLimit,
}

/// Which process a resource's spans belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    /// This host pid, found from the `resource` or the `connection`.
    Process(u32, &'static str),
    /// The resource names a process that cannot be found.
    Unresolved(Unresolved),
    /// The resource names no process, and the connection's owner is unknown.
    Unknown,
}

/// (reported pid, connection owner, container id): what a host pid is resolved from.
type ProcessKey = (u32, Option<u32>, Option<String>);

/// How long a resolved process or thread id is trusted.
const RESOLVED_TTL: Duration = Duration::from_secs(10);
/// Most resolutions remembered of each kind.
const RESOLVED_CACHE: usize = 16_384;

fn cached<K: std::hash::Hash + Eq + Clone, V: Copy>(
    map: &mut HashMap<K, (V, Instant)>,
    key: K,
    resolve: impl FnOnce() -> V,
) -> V {
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

/// The resource's `process.pid`: `None` when it has none, else the pid or why it is none.
fn reported_pid(resource: &[KeyValue]) -> Option<Result<u32, Unresolved>> {
    Some(match attrs::find(resource, PROCESS_PID)? {
        Value::IntValue(v) => resolve::valid_pid(*v),
        Value::StringValue(s) => s
            .parse()
            .map_err(|_| Unresolved::Invalid)
            .and_then(resolve::valid_pid),
        _ => Err(Unresolved::Invalid),
    })
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
            unresolved_log: RateLimit::new(Duration::from_secs(1)),
        }
    }

    /// Keeps a kernel event until its application span arrives or its window passes, with
    /// its built span when it has one (else it only adds to the sums). Returns the unclaimed
    /// spans the buffer's cap pushed out to make room.
    #[must_use = "unclaimed spans still go out on their own"]
    pub fn remember(&mut self, ev: &KernelEvent, pending: Option<PendingSpan>) -> Vec<PendingSpan> {
        self.buffer.push(ev, pending)
    }

    /// Forgets the events older than the window, as of `now` (Unix nanoseconds). Returns the
    /// unclaimed spans among them.
    #[must_use = "unclaimed spans still go out on their own"]
    pub fn expire(&mut self, now: u64) -> Vec<PendingSpan> {
        self.buffer.expire(now)
    }

    /// Empties the buffer at the end of a run. Returns the unclaimed spans, oldest first.
    #[must_use = "unclaimed spans still go out on their own"]
    pub fn release_all(&mut self) -> Vec<PendingSpan> {
        self.buffer.release_all()
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
    ) -> Linked {
        let mut linked = Linked::default();
        for rs in &mut req.resource_spans {
            let resource_attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let resolution = self.resolve(resource_attrs, peer);
            tracing::debug!(
                reported = ?attrs::find(resource_attrs, PROCESS_PID),
                ?peer,
                ?resolution,
                "kotel.link.resolved"
            );
            let span_count: usize = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
            self.stats.app_spans += span_count as u64;
            let (pid, source) = match resolution {
                Resolution::Process(pid, source) => (pid, source),
                Resolution::Unknown => continue,
                Resolution::Unresolved(why) => {
                    self.leave_unlinked(rs, why, span_count as u64);
                    continue;
                }
            };
            if !linked.pids.contains(&pid) {
                linked.pids.push(pid);
            }
            // Innermost (shortest) spans first: an event covered by nested spans becomes the
            // child of the deepest one, and only of that one; every one still sums it.
            let mut order: Vec<(usize, usize, u64)> = Vec::new();
            for (i, ss) in rs.scope_spans.iter().enumerate() {
                for (j, span) in ss.spans.iter().enumerate() {
                    let length = span
                        .end_time_unix_nano
                        .saturating_sub(span.start_time_unix_nano);
                    order.push((i, j, length));
                }
            }
            order.sort_by_key(|&(i, j, length)| (length, i, j));
            let mut children = Vec::new();
            for (i, j, _) in order {
                self.stats.matched_spans += 1;
                let span = &mut rs.scope_spans[i].spans[j];
                children.extend(self.link_span(span, pid, source, &mut linked.children));
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

    /// Which process a resource's spans belong to: the one its `process.pid` names (across PID
    /// namespaces, in its `container.id`), or, only when it names none, the owner of the
    /// connection they came on.
    fn resolve(&mut self, resource: &[KeyValue], peer: Option<SocketAddr>) -> Resolution {
        let peer_pid = self.peer_pid(peer);
        let reported = match reported_pid(resource) {
            None => {
                return peer_pid.map_or(Resolution::Unknown, |p| {
                    Resolution::Process(p, "connection")
                })
            }
            Some(Err(why)) => return Resolution::Unresolved(why),
            Some(Ok(reported)) => reported,
        };
        let container = str_attr(resource, CONTAINER_ID);
        let root = &self.proc_root;
        let key = (reported, peer_pid, container.map(str::to_string));
        match cached(&mut self.processes, key, || {
            resolve::host_pid(root, reported, container, peer_pid)
        }) {
            Ok(pid) => Resolution::Process(pid, "resource"),
            Err(why) => Resolution::Unresolved(why),
        }
    }

    /// Marks every span of a resource whose process cannot be found with
    /// `kotel.link.unresolved = <why>` (no summary, no children) and counts them.
    fn leave_unlinked(&mut self, rs: &mut ResourceSpans, why: Unresolved, spans: u64) {
        for span in rs.scope_spans.iter_mut().flat_map(|ss| &mut ss.spans) {
            span.attributes
                .push(attrs::string(KOTEL_LINK_UNRESOLVED, why.as_str()));
        }
        self.stats.unresolved[why.index()] += spans;
        let reported = rs
            .resource
            .as_ref()
            .and_then(|r| attrs::find(&r.attributes, PROCESS_PID));
        self.unresolved_log
            .count_and_log(&UNRESOLVED_SPANS[why.index()], spans, |held_back| {
                tracing::info!(
                    ?reported,
                    reason = why.as_str(),
                    spans,
                    held_back,
                    "kotel.link.unresolved"
                );
            });
    }

    /// Links one application span of process `pid`: adds its summary attributes and returns its
    /// kernel child spans, recording each in `linked`.
    fn link_span(
        &mut self,
        span: &mut Span,
        pid: u32,
        source: &'static str,
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
            // Claimed once: a span that took it (here or under another application span)
            // leaves none behind, so it is never exported twice.
            if let Some(pending) = e.pending.take() {
                linked.push(LinkedChild {
                    trace_id,
                    span_id: pending.span_id,
                    observation: pending.observation(),
                });
                let mut child = pending.into_child(trace_id, parent);
                child.attributes.push(attrs::string(KOTEL_LINK_MATCH, how));
                child
                    .attributes
                    .push(attrs::string(KOTEL_LINK_PID_SOURCE, source));
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
    use crate::model::KernelEvent;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

    fn ev(kind: Probe, tid: u32, start: u64, dur: u64) -> KernelEvent {
        KernelEvent {
            bytes: (kind == Probe::Writev).then_some(10),
            ..KernelEvent::sample(kind, std::process::id(), tid, start, dur)
        }
    }

    fn keep(linker: &mut Linker, e: KernelEvent, with_span: bool) {
        let released = linker.remember(&e, with_span.then(|| buffer::tests::pend(&e)));
        assert!(released.is_empty(), "the tests' buffers are large enough");
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
        keep(&mut linker, ev(Probe::Offcpu, tid, 1_100, 300), true); // inside
        keep(&mut linker, ev(Probe::Writev, tid, 1_900, 200), false); // straddles the end: 100 ns inside
        keep(&mut linker, ev(Probe::Runqueue, tid + 1, 1_200, 100), true); // other thread
        keep(&mut linker, ev(Probe::Offcpu, tid, 5_000, 100), true); // outside
        let mut req = request(Some(i64::from(me)), Some(i64::from(tid)));
        let linked = linker.link(&mut req, None);
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
        let [child] = &linked.children[..] else {
            panic!("one child: {:?}", linked.children);
        };
        let o = &child.observation;
        assert_eq!(
            (o.pid, o.kind, o.end(), o.duration_ns, o.offcpu_state),
            (me, Probe::Offcpu, 1_400, 300, None),
            "the event, for its exemplar and profile sample"
        );
        assert_eq!(
            (child.trace_id, &child.span_id[..]),
            ([7; 16], &kids[0].span_id[..]),
            "what it made is returned, to point exemplars at the child span"
        );

        // Each call returns only what it made, and a span already claimed is not made again.
        keep(&mut linker, ev(Probe::Runqueue, tid, 1_500, 50), true);
        let mut req = request(Some(i64::from(me)), Some(i64::from(tid)));
        let again = linker.link(&mut req, None);
        assert_eq!(again.pids, vec![me]);
        assert_eq!(
            again
                .children
                .iter()
                .map(|c| (c.observation.kind, c.observation.end()))
                .collect::<Vec<_>>(),
            vec![(Probe::Runqueue, 1_550)]
        );
    }

    #[test]
    fn inverted_spans_link_nothing_and_children_are_capped() {
        let me = std::process::id();
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(1_000, u64::MAX));
        keep(&mut linker, ev(Probe::Offcpu, 1, 0, 10_000), true); // covers everything
        let mut req = request(Some(i64::from(me)), None);
        let span = &mut req.resource_spans[0].scope_spans[0].spans[0];
        (span.start_time_unix_nano, span.end_time_unix_nano) = (2_000, 1_000);
        let linked = linker.link(&mut req, None);
        assert!(linked.children.is_empty());
        assert_eq!(
            req.resource_spans[0].scope_spans.len(),
            1,
            "no children under an inverted span"
        );

        for i in 0..300 {
            keep(&mut linker, ev(Probe::Runqueue, 1, 1_100 + i, 1), true);
        }
        let mut req = request(Some(i64::from(me)), None);
        let linked = linker.link(&mut req, None);
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

    /// A loopback connection this process owns: kotel finds this process as its sender.
    fn own_connection() -> (std::net::TcpStream, std::net::TcpStream, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        (client, server, peer)
    }

    fn unresolved(linker: &Linker, why: Unresolved) -> u64 {
        linker.stats().unresolved[why.index()]
    }

    /// The sender owns the connection and has kernel events overlapping the span, but the
    /// resource names another process: the sender's events are never the span's.
    #[test]
    fn a_resource_naming_a_process_that_cannot_be_found_is_left_unlinked() {
        let me = std::process::id();
        let (_client, _server, peer) = own_connection();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        assert!(child.wait().unwrap().success());
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(100, u64::MAX));
        keep(&mut linker, ev(Probe::Offcpu, me, 1_100, 300), true);
        let cases: [(Value, Option<&str>, Unresolved); 4] = [
            (Value::IntValue(i64::from(gone)), None, Unresolved::Gone),
            (
                Value::IntValue(i64::from(me)),
                Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
                Unresolved::ContainerMismatch,
            ),
            (Value::StringValue("me".into()), None, Unresolved::Invalid),
            (Value::IntValue(-1), None, Unresolved::Invalid),
        ];
        for (i, (pid, container, why)) in cases.into_iter().enumerate() {
            let mut req = request(None, None);
            let resource = req.resource_spans[0].resource.as_mut().unwrap();
            resource.attributes.push(KeyValue {
                key: PROCESS_PID.into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(pid) }),
                ..Default::default()
            });
            if let Some(id) = container {
                resource.attributes.push(attrs::string(CONTAINER_ID, id));
            }
            let before = req.clone();
            let linked = linker.link(&mut req, Some(peer));
            assert_eq!(linked, Linked::default(), "{why:?}: nothing linked");
            let mut want = before;
            want.resource_spans[0].scope_spans[0].spans[0]
                .attributes
                .push(attrs::string("kotel.link.unresolved", why.as_str()));
            assert_eq!(req, want, "{why:?}: only the reason is added");
            assert_eq!(linker.stats().app_spans, i as u64 + 1);
        }
        assert_eq!(linker.stats().matched_spans, 0);
        assert_eq!(unresolved(&linker, Unresolved::Gone), 1);
        assert_eq!(unresolved(&linker, Unresolved::ContainerMismatch), 1);
        assert_eq!(unresolved(&linker, Unresolved::Invalid), 2);
        assert_eq!(unresolved(&linker, Unresolved::Ambiguous), 0);
        assert!(
            unresolved_spans()[Unresolved::Gone.index()] >= 1,
            "the process-wide self-metric counts them too"
        );
    }

    /// Only a resource without `process.pid` is linked to the connection's owner.
    #[test]
    fn the_connection_names_the_process_only_when_the_resource_does_not() {
        let me = std::process::id();
        let (_client, _server, peer) = own_connection();
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(100, u64::MAX));
        keep(&mut linker, ev(Probe::Offcpu, me, 1_100, 300), true);
        let mut req = request(None, None);
        let linked = linker.link(&mut req, Some(peer));
        assert_eq!(linked.pids, vec![me]);
        let rs = &req.resource_spans[0];
        assert_eq!(
            attrs::find(
                &rs.scope_spans[0].spans[0].attributes,
                "kotel.link.pid_source"
            ),
            Some(&Value::StringValue("connection".into()))
        );
        assert_eq!(
            attr_f64(&rs.scope_spans[0].spans[0], "kotel.offcpu.duration"),
            300e-9
        );
        assert_eq!(rs.scope_spans[1].spans.len(), 1);
        assert_eq!(linker.stats().unresolved, [0; Unresolved::ALL.len()]);
    }

    #[test]
    fn without_a_thread_the_whole_process_counts_and_unknown_senders_are_left_alone() {
        let me = std::process::id();
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(100, u64::MAX));
        keep(&mut linker, ev(Probe::Runqueue, 1, 1_200, 100), true);
        keep(&mut linker, ev(Probe::Runqueue, 2, 1_300, 100), true);
        let mut req = request(Some(i64::from(me)), None);
        let linked = linker.link(&mut req, None);
        assert_eq!(req.resource_spans[0].scope_spans[1].spans.len(), 2);
        assert_eq!(linked.children.len(), 2);
        let mut unknown = request(None, None);
        let before = unknown.clone();
        assert_eq!(linker.link(&mut unknown, None), Linked::default());
        assert_eq!(unknown, before, "no process, no change");
    }

    #[test]
    fn nested_spans_share_the_sums_and_the_innermost_gets_the_child() {
        let me = std::process::id();
        let mut linker = Linker::new(PathBuf::from("/proc"), LinkBuffer::new(100, u64::MAX));
        keep(&mut linker, ev(Probe::Offcpu, 1, 1_600, 100), true);
        let mut req = request(Some(i64::from(me)), None);
        let outer = req.resource_spans[0].scope_spans[0].spans[0].clone();
        let inner = Span {
            span_id: vec![9; 8],
            parent_span_id: outer.span_id.clone(),
            name: "query".into(),
            start_time_unix_nano: 1_500,
            end_time_unix_nano: 1_900,
            ..outer.clone()
        };
        // The outer span comes first in the request, as an SDK that ends it later may not.
        req.resource_spans[0].scope_spans[0].spans.push(inner);
        let linked = linker.link(&mut req, None);
        assert_eq!(linked.children.len(), 1, "made once");
        let rs = &req.resource_spans[0];
        let kids = &rs.scope_spans[1].spans;
        assert_eq!(kids.len(), 1);
        assert_eq!(
            kids[0].parent_span_id,
            vec![9; 8],
            "under the innermost span"
        );
        for app in &rs.scope_spans[0].spans {
            assert_eq!(
                attr_f64(app, "kotel.offcpu.duration"),
                100e-9,
                "{}",
                app.name
            );
        }
        // A later request covering the same event sums it but cannot take it again.
        let mut again = request(Some(i64::from(me)), None);
        let linked = linker.link(&mut again, None);
        assert!(linked.children.is_empty());
        assert_eq!(again.resource_spans[0].scope_spans.len(), 1);
        assert_eq!(
            attr_f64(
                &again.resource_spans[0].scope_spans[0].spans[0],
                "kotel.offcpu.duration"
            ),
            100e-9
        );
    }
}
