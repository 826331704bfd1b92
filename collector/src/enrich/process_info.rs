//! What kotel knows about one process, read from `/proc`, and the OTLP Resource it makes with
//! the host's metadata and the configured extra attributes.

use std::path::Path;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::host::HostInfo;
use super::proc;
use super::semconv::{
    CONTAINER_ID, HOST_NAME, K8S_NODE_NAME, K8S_POD_UID, PROCESS_COMMAND_LINE,
    PROCESS_EXECUTABLE_NAME, PROCESS_PID, SERVICE_NAME,
};

/// `service.name` when a process has neither a declared service name nor an executable name.
const UNKNOWN_SERVICE: &str = "unknown_service";

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

    /// What `facts` say of process `pid`, falling back as documented on each field;
    /// `comm_hint` stands in for an unreadable `comm`.
    pub(super) fn from_facts(pid: u32, facts: proc::ProcFacts, comm_hint: &str) -> ProcessInfo {
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

/// How process resources are built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceOptions {
    /// Whether to add `process.command_line` (off by default: command lines can carry secrets).
    pub include_command_line: bool,
    /// Attributes added to every resource, as parsed by
    /// [`parse_resource_attributes`](super::parse_resource_attributes); they
    /// never replace the attributes kotel sets.
    pub extra: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::enrich::proc::tests::FakeProc;
    use crate::enrich::ProcessCache;

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
}
