//! The machine kotel runs on: its name and the Kubernetes node name from the environment. In a
//! cluster the node's name is the host's (`host.name`): the hostname kotel's own UTS namespace
//! reports there is its pod's.

use std::path::Path;

use super::semconv::NODE_NAME_VARS;

/// The machine kotel runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// `host.name`: the Kubernetes node name where it is known, else the kernel's hostname
    /// (in kotel's UTS namespace).
    pub host_name: String,
    /// `k8s.node.name`, from `KOTEL_NODE_NAME`, else `NODE_NAME`.
    pub node_name: Option<String>,
}

impl HostInfo {
    /// Reads the node name from the environment, and the hostname from
    /// `<proc_root>/sys/kernel/hostname` (falling back to `gethostname`) where it is not set.
    pub fn detect(proc_root: &Path) -> HostInfo {
        Self::with_node(proc_root, node_name_from_env())
    }

    /// The host named by `node_name` when known, else by its hostname.
    fn with_node(proc_root: &Path, node_name: Option<String>) -> HostInfo {
        HostInfo {
            host_name: node_name
                .clone()
                .unwrap_or_else(|| read_hostname(proc_root)),
            node_name,
        }
    }
}

/// The node name from the first non-empty of [`NODE_NAME_VARS`] in kotel's environment.
pub(super) fn node_name_from_env() -> Option<String> {
    node_name_from(|name| std::env::var(name).ok())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::proc::tests::FakeProc;

    #[test]
    fn hostname_from_proc_else_gethostname() {
        let fake = FakeProc::new("hostname");
        std::fs::create_dir_all(fake.root.join("sys/kernel")).unwrap();
        std::fs::write(fake.root.join("sys/kernel/hostname"), "box-1\n").unwrap();
        assert_eq!(HostInfo::with_node(&fake.root, None).host_name, "box-1");
        // In a pod the UTS namespace's hostname is the pod's: the node names the host.
        let in_pod = HostInfo::with_node(&fake.root, Some("node-a".into()));
        assert_eq!(
            (in_pod.host_name.as_str(), in_pod.node_name.as_deref()),
            ("node-a", Some("node-a"))
        );

        let missing = FakeProc::new("no-hostname");
        let fallback = HostInfo::with_node(&missing.root, None).host_name;
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
            node_name_from(env(&[("NODE_NAME", "b")])).as_deref(),
            Some("b")
        );
        assert_eq!(
            node_name_from(env(&[("NODE_NAME", "b"), ("KOTEL_NODE_NAME", "a")])).as_deref(),
            Some("a")
        );
        assert_eq!(
            node_name_from(env(&[("KOTEL_NODE_NAME", " "), ("NODE_NAME", " b ")])).as_deref(),
            Some("b"),
            "blank values are skipped, values are trimmed"
        );
        // Only the variables the DaemonSet sets and the docs name count.
        assert_eq!(node_name_from(env(&[("K8S_NODE_NAME", "c")])), None);
        assert_eq!(NODE_NAME_VARS, ["KOTEL_NODE_NAME", "NODE_NAME"]);
    }
}
