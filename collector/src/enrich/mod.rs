//! The `enrich` transform: who a pid is — process, container, pod and host metadata read from
//! `/proc` and cgroups — as an OTLP Resource, with a bounded cache in front of `/proc`.

pub mod cgroup;
pub mod container;
pub mod k8s;
pub mod proc;
pub mod resources;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// How long the minimal info of a process that was already gone stays cached, so that a burst
/// of events from a dead pid does not re-read `/proc` for each one.
pub const DEAD_PROCESS_TTL: Duration = Duration::from_secs(5);

/// `service.name` when a process has neither a declared service name nor an executable name.
const UNKNOWN_SERVICE: &str = "unknown_service";

const SERVICE_NAME: &str = "service.name";
const PROCESS_PID: &str = "process.pid";
const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
const PROCESS_COMMAND_LINE: &str = "process.command_line";
const CONTAINER_ID: &str = "container.id";
const K8S_POD_UID: &str = "k8s.pod.uid";
const HOST_NAME: &str = "host.name";
const K8S_NODE_NAME: &str = "k8s.node.name";

/// Attributes that kotel sets itself; extra attributes with these keys are dropped, whether or
/// not kotel has a value for them.
const RESERVED_KEYS: [&str; 8] = [
    SERVICE_NAME,
    PROCESS_PID,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_COMMAND_LINE,
    CONTAINER_ID,
    K8S_POD_UID,
    HOST_NAME,
    K8S_NODE_NAME,
];

/// Environment variables naming the Kubernetes node, in order of preference.
const NODE_NAME_VARS: [&str; 3] = ["KOTEL_NODE_NAME", "NODE_NAME", "K8S_NODE_NAME"];

/// Why resource metadata could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    /// An `OTEL_RESOURCE_ATTRIBUTES` entry without `=` or with an empty key.
    #[error(
        "resource attribute {0:?} is not key=value; write entries as key=value separated by \
         commas, percent-encoding any ',' or '=' in values"
    )]
    MalformedPair(String),
    /// An `OTEL_RESOURCE_ATTRIBUTES` value whose percent-encoding is broken or not UTF-8.
    #[error(
        "resource attribute {0:?} has an invalid percent-encoding; '%' must be followed by two \
         hex digits and the decoded bytes must be UTF-8"
    )]
    BadEncoding(String),
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: comma-separated `key=value` pairs, whitespace around keys
/// and values trimmed, values percent-decoded. Empty entries (`a=1,,b=2`, a trailing comma) are
/// skipped; pairs keep their order and duplicates are kept.
pub fn parse_resource_attributes(s: &str) -> Result<Vec<(String, String)>, EnrichError> {
    let mut pairs = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| EnrichError::MalformedPair(pair.to_owned()))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(EnrichError::MalformedPair(pair.to_owned()));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| EnrichError::BadEncoding(pair.to_owned()))?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What kotel knows about one observed process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id, in the PID namespace of the proc root it was read from.
    pub pid: u32,
    /// The kernel's name for the process (`comm`, at most 15 bytes).
    pub comm: String,
    /// Basename of the executable; `comm` when the executable is unreadable (kernel threads,
    /// missing privileges, a process already gone).
    pub exe_name: String,
    /// Arguments joined by spaces; empty for kernel threads or when unreadable.
    pub command_line: String,
    /// The process's `OTEL_SERVICE_NAME` (or `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`)
    /// when readable, else `exe_name`, else `unknown_service`.
    pub service_name: String,
    /// The 64-hex id of the container the process runs in.
    pub container_id: Option<String>,
    /// The UID of the Kubernetes pod the process runs in.
    pub pod_uid: Option<String>,
    /// The process's pid in each PID namespace it is in, outermost first (`NSpid`); empty when
    /// unreadable.
    pub ns_pids: Vec<u32>,
}

impl ProcessInfo {
    /// Reads process `pid` under `proc_root` (`/proc` in production); `None` when it is gone.
    /// Whatever is unreadable falls back as documented on each field.
    pub fn read(proc_root: &Path, pid: u32) -> Option<ProcessInfo> {
        proc::read_process(proc_root, pid).map(|facts| Self::from_facts(pid, facts, ""))
    }

    /// What is known of a process that could not be read: its pid and the name an event gave.
    pub fn minimal(pid: u32, comm_hint: &str) -> ProcessInfo {
        Self::from_facts(pid, proc::ProcFacts::default(), comm_hint)
    }

    fn from_facts(pid: u32, facts: proc::ProcFacts, comm_hint: &str) -> ProcessInfo {
        let comm = facts.comm.unwrap_or_else(|| comm_hint.to_owned());
        let exe_name = facts.exe_name.unwrap_or_else(|| comm.clone());
        let service_name = facts.service_name.unwrap_or_else(|| {
            if exe_name.is_empty() {
                UNKNOWN_SERVICE.to_owned()
            } else {
                exe_name.clone()
            }
        });
        ProcessInfo {
            pid,
            comm,
            exe_name,
            command_line: facts.command_line,
            service_name,
            container_id: facts.container_id,
            pod_uid: facts.pod_uid,
            ns_pids: facts.ns_pids,
        }
    }

    /// The OTLP Resource of this process on `host`, with semantic-convention attribute names in
    /// a fixed order: `service.name`, `process.pid`, `process.executable.name`,
    /// `process.command_line` (only when enabled), `container.id`, `k8s.pod.uid`, `host.name`,
    /// `k8s.node.name` — each when known — then `opts.extra` in its order. Extra attributes
    /// never replace these keys (even ones left out); among extras with the same key the last
    /// value wins.
    pub fn resource(&self, host: &HostInfo, opts: &ResourceOptions) -> Resource {
        let mut attributes = Vec::with_capacity(RESERVED_KEYS.len() + opts.extra.len());
        attributes.push(string_kv(SERVICE_NAME, &self.service_name));
        attributes.push(KeyValue {
            key: PROCESS_PID.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(i64::from(self.pid))),
            }),
            ..Default::default()
        });
        let optional = [
            (PROCESS_EXECUTABLE_NAME, Some(self.exe_name.as_str())),
            (
                PROCESS_COMMAND_LINE,
                opts.include_command_line
                    .then_some(self.command_line.as_str()),
            ),
            (CONTAINER_ID, self.container_id.as_deref()),
            (K8S_POD_UID, self.pod_uid.as_deref()),
            (HOST_NAME, Some(host.host_name.as_str())),
            (K8S_NODE_NAME, host.node_name.as_deref()),
        ];
        for (key, value) in optional {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                attributes.push(string_kv(key, value));
            }
        }
        let own = attributes.len();
        for (key, value) in &opts.extra {
            if key.is_empty() || RESERVED_KEYS.contains(&key.as_str()) {
                continue;
            }
            match attributes[own..].iter_mut().find(|kv| kv.key == *key) {
                Some(existing) => *existing = string_kv(key, value),
                None => attributes.push(string_kv(key, value)),
            }
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// The machine kotel runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// `host.name`: the kernel's hostname (in kotel's UTS namespace).
    pub host_name: String,
    /// `k8s.node.name`, from `KOTEL_NODE_NAME`, else `NODE_NAME`, else `K8S_NODE_NAME`.
    pub node_name: Option<String>,
}

impl HostInfo {
    /// Reads the hostname from `<proc_root>/sys/kernel/hostname` (falling back to
    /// `gethostname`) and the node name from the environment.
    pub fn detect(proc_root: &Path) -> HostInfo {
        HostInfo {
            host_name: read_hostname(proc_root),
            node_name: node_name_from(|name| std::env::var(name).ok()),
        }
    }
}

fn read_hostname(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(gethostname)
        .unwrap_or_default()
}

fn gethostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// The first non-empty of [`NODE_NAME_VARS`] as `var` reports them.
fn node_name_from(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    NODE_NAME_VARS.iter().find_map(|name| {
        var(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    })
}

/// How process resources are built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceOptions {
    /// Whether to add `process.command_line` (off by default: command lines can carry secrets).
    pub include_command_line: bool,
    /// Attributes added to every resource, as parsed by [`parse_resource_attributes`]; they
    /// never replace the attributes kotel sets.
    pub extra: Vec<(String, String)>,
}

/// Counters of a [`ProcessCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that read `/proc` (including re-reads of expired dead processes).
    pub misses: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
}

struct CacheEntry {
    info: Arc<ProcessInfo>,
    /// Recency tick of the last use; the key of this entry in `ProcessCache::recency`.
    used: u64,
    /// For a process that was already gone when read: when to read it again.
    expires: Option<Instant>,
}

/// A bounded least-recently-used cache of [`ProcessInfo`] by pid, reading `/proc` on a miss.
///
/// Single-threaded: every method takes `&mut self`, and the owner (the enrich stage) is the only
/// caller; share the returned `Arc<ProcessInfo>`s, not the cache. Entries of live processes stay
/// until evicted or [`invalidated`](ProcessCache::invalidate), so the owner must invalidate a
/// pid on exec and exit. A process already gone when read is cached from the event's hint for
/// [`DEAD_PROCESS_TTL`].
pub struct ProcessCache {
    proc_root: PathBuf,
    capacity: usize,
    entries: HashMap<u32, CacheEntry>,
    /// Pids by recency tick, least recently used first.
    recency: BTreeMap<u64, u32>,
    tick: u64,
    stats: CacheStats,
}

impl ProcessCache {
    /// An empty cache reading from `proc_root` (`/proc` in production) and holding at most
    /// `capacity` processes (at least one).
    pub fn new(proc_root: PathBuf, capacity: usize) -> ProcessCache {
        let capacity = capacity.max(1);
        ProcessCache {
            proc_root,
            capacity,
            entries: HashMap::with_capacity(capacity.min(4096)),
            recency: BTreeMap::new(),
            tick: 0,
            stats: CacheStats::default(),
        }
    }

    /// The info of `pid`, read from `/proc` on a miss. When the process is already gone, a
    /// minimal info named `comm_hint` (the name the event carried).
    pub fn get(&mut self, pid: u32, comm_hint: &str) -> Arc<ProcessInfo> {
        self.get_at(pid, comm_hint, Instant::now())
    }

    fn get_at(&mut self, pid: u32, comm_hint: &str, now: Instant) -> Arc<ProcessInfo> {
        if let Some(entry) = self.entries.get_mut(&pid) {
            if entry.expires.is_none_or(|expires| now < expires) {
                self.stats.hits += 1;
                self.recency.remove(&entry.used);
                self.tick += 1;
                entry.used = self.tick;
                self.recency.insert(self.tick, pid);
                return Arc::clone(&entry.info);
            }
            self.invalidate(pid);
        }
        self.stats.misses += 1;
        let facts = proc::read_process(&self.proc_root, pid);
        let expires = match facts {
            Some(_) => None,
            None => Some(now.checked_add(DEAD_PROCESS_TTL).unwrap_or(now)),
        };
        let info = Arc::new(ProcessInfo::from_facts(
            pid,
            facts.unwrap_or_default(),
            comm_hint,
        ));
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.stats.evictions += 1;
        }
        self.tick += 1;
        self.recency.insert(self.tick, pid);
        self.entries.insert(
            pid,
            CacheEntry {
                info: Arc::clone(&info),
                used: self.tick,
                expires,
            },
        );
        info
    }

    /// Forgets `pid`, so the next [`get`](ProcessCache::get) reads `/proc` again. Call on exec
    /// and exit.
    pub fn invalidate(&mut self, pid: u32) {
        if let Some(entry) = self.entries.remove(&pid) {
            self.recency.remove(&entry.used);
        }
    }

    /// `pid` exited: its entry stays usable for `keep` (its final spans and metrics still need
    /// its resource), then [`sweep`](ProcessCache::sweep) drops it.
    pub fn exited(&mut self, pid: u32, keep: Duration) {
        let now = Instant::now();
        if let Some(entry) = self.entries.get_mut(&pid) {
            let until = now.checked_add(keep).unwrap_or(now);
            entry.expires = Some(entry.expires.map_or(until, |e| e.min(until)));
        }
    }

    /// Drops every entry whose time is up (exited processes, and processes already gone when
    /// read), so the cache shrinks back once processes stop exiting. Returns how many went.
    pub fn sweep(&mut self) -> usize {
        self.sweep_at(Instant::now())
    }

    fn sweep_at(&mut self, now: Instant) -> usize {
        let expired: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|x| x <= now))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in &expired {
            self.invalidate(*pid);
        }
        expired.len()
    }

    /// Hit, miss and eviction counts since creation.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Number of cached processes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no process is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::proc::tests::FakeProc;
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "0f3a5c9e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";
    const UID: &str = "1f9c2b3a-4d5e-6f70-8192-a3b4c5d6e7f8";

    fn host() -> HostInfo {
        HostInfo {
            host_name: "node-a".into(),
            node_name: Some("k8s-node-a".into()),
        }
    }

    /// The attributes as (key, value) strings, ints printed.
    fn attrs(resource: &Resource) -> Vec<(String, String)> {
        resource
            .attributes
            .iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), value)
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resource_attributes_parse() {
        assert_eq!(parse_resource_attributes(""), Ok(vec![]));
        assert_eq!(parse_resource_attributes("  "), Ok(vec![]));
        assert_eq!(
            parse_resource_attributes(" a = 1 ,b=x%2Cy%3Dz, c=%E2%9C%93 ,d=,e=f=g,"),
            Ok(pairs(&[
                ("a", "1"),
                ("b", "x,y=z"),
                ("c", "✓"),
                ("d", ""),
                ("e", "f=g"),
            ]))
        );
        assert_eq!(
            parse_resource_attributes("a=1,,a=2"),
            Ok(pairs(&[("a", "1"), ("a", "2")]))
        );
    }

    #[test]
    fn malformed_resource_attributes_name_the_pair() {
        assert_eq!(
            parse_resource_attributes("a=1, oops ,b=2"),
            Err(EnrichError::MalformedPair("oops".into()))
        );
        assert_eq!(
            parse_resource_attributes("=1"),
            Err(EnrichError::MalformedPair("=1".into()))
        );
        for bad in ["a=%", "a=%4", "a=%zz", "a=%ff"] {
            assert_eq!(
                parse_resource_attributes(bad),
                Err(EnrichError::BadEncoding(bad.into())),
                "{bad}"
            );
        }
        let message = parse_resource_attributes("x=1,nope")
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"nope\""), "{message}");
    }

    #[test]
    fn read_falls_back_from_exe_to_comm() {
        let fake = FakeProc::new("fallbacks");
        fake.server(100);
        fake.file(2, "comm", "kthreadd\n");
        let server = ProcessInfo::read(&fake.root, 100).expect("exists");
        assert_eq!(
            server,
            ProcessInfo {
                pid: 100,
                comm: "server".into(),
                exe_name: "server".into(),
                command_line: "/usr/local/bin/server --port 8080".into(),
                service_name: "checkout".into(),
                container_id: Some(ID.into()),
                pod_uid: Some(UID.into()),
                ns_pids: vec![100, 1],
            }
        );
        let kthread = ProcessInfo::read(&fake.root, 2).expect("exists");
        assert_eq!(kthread.exe_name, "kthreadd");
        assert_eq!(kthread.service_name, "kthreadd");
        assert_eq!(kthread.command_line, "");
        assert_eq!(ProcessInfo::read(&fake.root, 3), None);
    }

    #[test]
    fn service_name_falls_back_to_the_executable() {
        let fake = FakeProc::new("service");
        fake.file(7, "comm", "python3\n")
            .exe(7, "/usr/bin/python3.12")
            .file(7, "environ", "PATH=/bin\0");
        let info = ProcessInfo::read(&fake.root, 7).expect("exists");
        assert_eq!(info.service_name, "python3.12");
        assert_eq!(ProcessInfo::minimal(8, "").service_name, UNKNOWN_SERVICE);
    }

    #[test]
    fn resource_has_semantic_convention_attributes_in_order() {
        let fake = FakeProc::new("resource");
        fake.server(100);
        let info = ProcessInfo::read(&fake.root, 100).expect("exists");
        let resource = info.resource(&host(), &ResourceOptions::default());
        assert_eq!(
            attrs(&resource),
            pairs(&[
                ("service.name", "checkout"),
                ("process.pid", "int:100"),
                ("process.executable.name", "server"),
                ("container.id", ID),
                ("k8s.pod.uid", UID),
                ("host.name", "node-a"),
                ("k8s.node.name", "k8s-node-a"),
            ])
        );
        assert_eq!(resource.dropped_attributes_count, 0);

        let with_cmdline = ResourceOptions {
            include_command_line: true,
            ..ResourceOptions::default()
        };
        let keys: Vec<_> = attrs(&info.resource(&host(), &with_cmdline))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys[3], "process.command_line");
        // The same input gives the same resource.
        assert_eq!(
            info.resource(&host(), &with_cmdline),
            info.resource(&host(), &with_cmdline)
        );
    }

    #[test]
    fn resource_leaves_out_what_is_unknown() {
        let info = ProcessInfo::minimal(42, "");
        let bare = HostInfo::default();
        let opts = ResourceOptions {
            include_command_line: true,
            extra: vec![],
        };
        assert_eq!(
            attrs(&info.resource(&bare, &opts)),
            pairs(&[("service.name", UNKNOWN_SERVICE), ("process.pid", "int:42")])
        );
    }

    #[test]
    fn extra_attributes_never_override_kotels() {
        let info = ProcessInfo::minimal(42, "worker");
        let host = HostInfo {
            host_name: "node-a".into(),
            node_name: None,
        };
        let opts = ResourceOptions {
            include_command_line: false,
            extra: pairs(&[
                ("deployment.environment.name", "prod"),
                ("service.name", "kotel"),
                ("process.pid", "1"),
                ("container.id", "agent-container"),
                ("k8s.node.name", "from-extra"),
                ("process.command_line", "secret"),
                ("k8s.cluster.name", "c1"),
                ("deployment.environment.name", "staging"),
                ("", "empty-key"),
            ]),
        };
        assert_eq!(
            attrs(&info.resource(&host, &opts)),
            pairs(&[
                ("service.name", "worker"),
                ("process.pid", "int:42"),
                ("process.executable.name", "worker"),
                ("host.name", "node-a"),
                ("deployment.environment.name", "staging"),
                ("k8s.cluster.name", "c1"),
            ])
        );
    }

    #[test]
    fn hostname_from_proc_else_gethostname() {
        let fake = FakeProc::new("hostname");
        std::fs::create_dir_all(fake.root.join("sys/kernel")).unwrap();
        std::fs::write(fake.root.join("sys/kernel/hostname"), "box-1\n").unwrap();
        assert_eq!(HostInfo::detect(&fake.root).host_name, "box-1");

        let missing = FakeProc::new("no-hostname");
        let fallback = HostInfo::detect(&missing.root).host_name;
        if let Ok(real) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(fallback, real.trim());
        }
    }

    #[test]
    fn node_name_precedence() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(node_name_from(env(&[])), None);
        assert_eq!(
            node_name_from(env(&[("K8S_NODE_NAME", "c"), ("NODE_NAME", "b")])).as_deref(),
            Some("b")
        );
        assert_eq!(
            node_name_from(env(&[
                ("K8S_NODE_NAME", "c"),
                ("NODE_NAME", "b"),
                ("KOTEL_NODE_NAME", "a")
            ]))
            .as_deref(),
            Some("a")
        );
        assert_eq!(
            node_name_from(env(&[("KOTEL_NODE_NAME", " "), ("K8S_NODE_NAME", "c")])).as_deref(),
            Some("c")
        );
    }

    #[test]
    fn cache_hits_misses_and_invalidation() {
        let fake = FakeProc::new("cache");
        fake.server(100);
        let mut cache = ProcessCache::new(fake.root.clone(), 8);
        let first = cache.get(100, "server");
        let second = cache.get(100, "server");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                evictions: 0
            }
        );

        // After an exec the process looks different; invalidation makes the cache re-read.
        fake.file(100, "comm", "other\n");
        assert_eq!(cache.get(100, "server").comm, "server");
        cache.invalidate(100);
        assert_eq!(cache.get(100, "server").comm, "other");
        assert_eq!(cache.stats().misses, 2);
        cache.invalidate(12345);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let fake = FakeProc::new("lru");
        for pid in 1..=4 {
            fake.file(pid, "comm", format!("p{pid}\n"));
        }
        let mut cache = ProcessCache::new(fake.root.clone(), 2);
        cache.get(1, "");
        cache.get(2, "");
        cache.get(1, ""); // 2 is now the least recently used
        cache.get(3, ""); // evicts 2
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.stats().evictions, 1);
        cache.get(1, "");
        assert_eq!(cache.stats().hits, 2);
        cache.get(2, ""); // a miss again; evicts 3
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 4,
                evictions: 2
            }
        );
        cache.get(1, "");
        assert_eq!(cache.stats().hits, 3);
        assert!(!cache.is_empty());
    }

    #[test]
    fn exited_processes_are_swept_after_their_grace() {
        let fake = FakeProc::new("sweep");
        for pid in 1..=3 {
            fake.file(pid, "comm", format!("p{pid}\n"));
        }
        let mut cache = ProcessCache::new(fake.root.clone(), 8);
        for pid in 1..=3 {
            cache.get(pid, "");
        }
        cache.get(99, "gone"); // never existed: cached from the hint for a while
        cache.exited(2, Duration::from_secs(3));
        cache.exited(3, Duration::ZERO);
        let now = Instant::now();
        assert_eq!(cache.sweep_at(now), 1, "process 3 goes at once");
        assert_eq!(cache.get(2, "").comm, "p2", "still served within its grace");
        assert_eq!(cache.sweep_at(now + Duration::from_secs(4)), 1);
        assert_eq!(
            cache.sweep_at(now + DEAD_PROCESS_TTL * 2),
            1,
            "the dead one"
        );
        assert_eq!(cache.len(), 1, "only the live process 1 stays");
    }

    #[test]
    fn zero_capacity_still_holds_one() {
        let fake = FakeProc::new("tiny");
        fake.file(1, "comm", "a\n").file(2, "comm", "b\n");
        let mut cache = ProcessCache::new(fake.root.clone(), 0);
        cache.get(1, "");
        cache.get(1, "");
        cache.get(2, "");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                evictions: 1
            }
        );
    }

    #[test]
    fn dead_processes_are_cached_briefly_from_the_hint() {
        let fake = FakeProc::new("dead");
        let mut cache = ProcessCache::new(fake.root.clone(), 8);
        let t0 = Instant::now();
        let info = cache.get_at(77, "gone-worker", t0);
        assert_eq!(*info, ProcessInfo::minimal(77, "gone-worker"));
        assert_eq!(info.exe_name, "gone-worker");
        assert_eq!(info.service_name, "gone-worker");

        // Within the TTL the dead pid is not read again, even if the pid was reused.
        fake.server(77);
        let again = cache.get_at(77, "gone-worker", t0 + DEAD_PROCESS_TTL / 2);
        assert!(Arc::ptr_eq(&info, &again));
        assert_eq!(cache.stats().misses, 1);

        // After it, /proc is read again.
        let later = cache.get_at(77, "gone-worker", t0 + DEAD_PROCESS_TTL);
        assert_eq!(later.service_name, "checkout");
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                evictions: 0
            }
        );
        // A live entry does not expire.
        let much_later = cache.get_at(77, "", t0 + 100 * DEAD_PROCESS_TTL);
        assert!(Arc::ptr_eq(&later, &much_later));
    }

    #[test]
    fn reads_the_real_proc_self() {
        let pid = std::process::id();
        let info = ProcessInfo::read(Path::new("/proc"), pid).expect("this process exists");
        assert_eq!(info.pid, pid);
        let exe = std::env::current_exe().expect("current_exe");
        let exe = exe.file_name().expect("exe has a name").to_string_lossy();
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
        assert_eq!(info.exe_name, exe);
        assert!(!info.comm.is_empty());
        assert!(!info.command_line.is_empty());
        if let Some(&innermost) = info.ns_pids.last() {
            assert_eq!(innermost, pid);
        }
        let resource = info.resource(&HostInfo::detect(Path::new("/proc")), &Default::default());
        assert!(resource.attributes.len() >= 3);

        let mut cache = ProcessCache::new(PathBuf::from("/proc"), 4);
        assert_eq!(cache.get(pid, "ignored").exe_name, exe);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = parse_resource_attributes(&s);
        }

        #[test]
        fn encoded_values_round_trip(
            key in "[a-z][a-z.]{0,12}",
            value in "\\PC{0,24}",
        ) {
            let encoded: String = value
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let parsed = parse_resource_attributes(&format!("{key}={encoded},other=1"));
            prop_assert_eq!(
                parsed,
                Ok(vec![(key, value), ("other".to_string(), "1".to_string())])
            );
        }
    }
}
