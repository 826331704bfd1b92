//! The names kotel writes and reads that others define: OpenTelemetry semantic-convention
//! attribute keys, kotel's own `kotel.*` attribute keys, and the environment variables that
//! name the Kubernetes node. Every place that writes or looks up one of these uses the constant
//! here; the values are part of kotel's output and never change.

/// Environment variables naming the Kubernetes node, in order of preference: the DaemonSet
/// (deploy/kubernetes/daemonset.yaml) sets both from the downward API (`spec.nodeName`).
pub const NODE_NAME_VARS: [&str; 2] = ["KOTEL_NODE_NAME", "NODE_NAME"];

// OpenTelemetry semantic conventions: resource attributes.

/// `service.name`: the logical service a process belongs to.
pub const SERVICE_NAME: &str = "service.name";
/// `service.version`: the version of the service (kotel's own, on its agent resource).
pub const SERVICE_VERSION: &str = "service.version";
/// `process.pid`.
pub const PROCESS_PID: &str = "process.pid";
/// `process.executable.name`: the basename of the executable.
pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
/// `process.command_line`: the arguments joined by spaces (off by default).
pub const PROCESS_COMMAND_LINE: &str = "process.command_line";
/// `container.id`.
pub const CONTAINER_ID: &str = "container.id";
/// `host.name`.
pub const HOST_NAME: &str = "host.name";
/// `k8s.pod.name`.
pub const K8S_POD_NAME: &str = "k8s.pod.name";
/// `k8s.namespace.name`.
pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
/// `k8s.container.name`.
pub const K8S_CONTAINER_NAME: &str = "k8s.container.name";
/// `k8s.deployment.name`.
pub const K8S_DEPLOYMENT_NAME: &str = "k8s.deployment.name";
/// `k8s.pod.uid`.
pub const K8S_POD_UID: &str = "k8s.pod.uid";
/// `k8s.node.name`.
pub const K8S_NODE_NAME: &str = "k8s.node.name";

// OpenTelemetry semantic conventions: span and data-point attributes.

/// `thread.id`: on kernel spans the kernel's tid; on received spans, what links by thread.
pub const THREAD_ID: &str = "thread.id";
/// `thread.name`: the kernel's `comm` of the thread.
pub const THREAD_NAME: &str = "thread.name";
/// `network.transport` (`tcp`).
pub const NETWORK_TRANSPORT: &str = "network.transport";
/// `network.peer.address`.
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
/// `network.peer.port`.
pub const NETWORK_PEER_PORT: &str = "network.peer.port";
/// `network.local.address`.
pub const NETWORK_LOCAL_ADDRESS: &str = "network.local.address";
/// `network.local.port`.
pub const NETWORK_LOCAL_PORT: &str = "network.local.port";
/// `otel.metric.overflow`: marks the series that processes beyond the cardinality limit fold
/// into.
pub const OTEL_METRIC_OVERFLOW: &str = "otel.metric.overflow";

// kotel's own attributes, where no semantic convention exists.

/// `kotel.cpu`: the CPU an event happened on.
pub const KOTEL_CPU: &str = "kotel.cpu";
/// `kotel.bytes`: bytes a call moved.
pub const KOTEL_BYTES: &str = "kotel.bytes";
/// `kotel.fd`: the file descriptor a call wrote to.
pub const KOTEL_FD: &str = "kotel.fd";
/// `kotel.iovcnt`: the number of buffers a `writev` passed.
pub const KOTEL_IOVCNT: &str = "kotel.iovcnt";
/// `kotel.errno`: the error a failed call returned.
pub const KOTEL_ERRNO: &str = "kotel.errno";
/// `kotel.stack.kernel_id`: the kernel stack's id in the stack map.
pub const KOTEL_STACK_KERNEL_ID: &str = "kotel.stack.kernel_id";
/// `kotel.stack.user_id`: the user stack's id in the stack map.
pub const KOTEL_STACK_USER_ID: &str = "kotel.stack.user_id";
/// `kotel.stack.kernel`: the kernel stack, symbolized.
pub const KOTEL_STACK_KERNEL: &str = "kotel.stack.kernel";
/// `kotel.stack.user`: the user stack, symbolized: `function (file:line)`,
/// `module+0xoff [buildid …]` or `0x… [unknown]`, innermost first.
pub const KOTEL_STACK_USER: &str = "kotel.stack.user";
/// `code.function.name`: the innermost user function of a span's stack.
pub const CODE_FUNCTION_NAME: &str = "code.function.name";
/// `code.file.path`: the source file of [`CODE_FUNCTION_NAME`], where DWARF names it.
pub const CODE_FILE_PATH: &str = "code.file.path";
/// `code.line.number`: the source line of [`CODE_FUNCTION_NAME`], where DWARF names it.
pub const CODE_LINE_NUMBER: &str = "code.line.number";
/// `kotel.offcpu.duration`: seconds an application span's thread or process was blocked.
pub const KOTEL_OFFCPU_DURATION: &str = "kotel.offcpu.duration";
/// `kotel.offcpu.state`: how an off-CPU span's thread waited, `interruptible` (an idle wait)
/// or `uninterruptible` (blocked on a resource); also on the off-CPU histogram's data points,
/// one series per state.
pub const KOTEL_OFFCPU_STATE: &str = "kotel.offcpu.state";
/// `kotel.runqueue.delay`: seconds an application span waited for a CPU.
pub const KOTEL_RUNQUEUE_DELAY: &str = "kotel.runqueue.delay";
/// `kotel.writev.duration`: seconds an application span spent in `writev` (the span attribute;
/// the histogram of the same name comes from the probe table).
pub const KOTEL_WRITEV_DURATION: &str = "kotel.writev.duration";
/// `kotel.tcp.send.duration`: seconds an application span spent sending on TCP (the span
/// attribute; the histogram of the same name comes from the probe table).
pub const KOTEL_TCP_SEND_DURATION: &str = "kotel.tcp.send.duration";
/// `kotel.kernel.events`: how many kernel events overlapped an application span.
pub const KOTEL_KERNEL_EVENTS: &str = "kotel.kernel.events";
/// `kotel.link.match`: whether a span was linked by `thread` or by `process`.
pub const KOTEL_LINK_MATCH: &str = "kotel.link.match";
/// `kotel.link.pid_source`: where the linked process came from, `resource` or `connection`.
pub const KOTEL_LINK_PID_SOURCE: &str = "kotel.link.pid_source";
/// `kotel.link.unresolved`: why an application span was left unlinked although its resource
/// names a process (`gone`, `ambiguous`, `container_mismatch`, `invalid`).
pub const KOTEL_LINK_UNRESOLVED: &str = "kotel.link.unresolved";
/// `kotel.artifact.url`: where the series' heatmap can be seen.
pub const KOTEL_ARTIFACT_URL: &str = "kotel.artifact.url";
/// `kotel.artifact.id`: the sha256 of a picture's SVG.
pub const KOTEL_ARTIFACT_ID: &str = "kotel.artifact.id";
/// `kotel.artifact.media_type`: a picture's media type.
pub const KOTEL_ARTIFACT_MEDIA_TYPE: &str = "kotel.artifact.media_type";
/// `kotel.flame.url`: where the probe's flame graph of the interval can be seen (on the
/// exemplar and span of its slowest series).
pub const KOTEL_FLAME_URL: &str = "kotel.flame.url";
/// `kotel.flame.id`: the sha256 of that flame graph's SVG.
pub const KOTEL_FLAME_ID: &str = "kotel.flame.id";
/// `kotel.flame.media_type`: that flame graph's media type.
pub const KOTEL_FLAME_MEDIA_TYPE: &str = "kotel.flame.media_type";
/// `kotel.kind`: the probe a self metric or a picture is about.
pub const KOTEL_KIND: &str = "kotel.kind";
/// `kotel.signal`: the signal (traces, metrics) an export counter is about.
pub const KOTEL_SIGNAL: &str = "kotel.signal";
/// `kotel.reason`: why items were dropped or refused.
pub const KOTEL_REASON: &str = "kotel.reason";
/// `kotel.outcome`: how one piece of work ended (a user stack's symbolization: `hit`,
/// `miss`, `failed`, `deferred`).
pub const KOTEL_OUTCOME: &str = "kotel.outcome";

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys are kotel's output: a changed value breaks every backend query and dashboard
    /// built on it, so each one is spelled out here once more.
    #[test]
    fn keys_keep_their_values() {
        let keys = [
            (SERVICE_NAME, "service.name"),
            (SERVICE_VERSION, "service.version"),
            (PROCESS_PID, "process.pid"),
            (PROCESS_EXECUTABLE_NAME, "process.executable.name"),
            (PROCESS_COMMAND_LINE, "process.command_line"),
            (CONTAINER_ID, "container.id"),
            (HOST_NAME, "host.name"),
            (K8S_POD_NAME, "k8s.pod.name"),
            (K8S_NAMESPACE_NAME, "k8s.namespace.name"),
            (K8S_CONTAINER_NAME, "k8s.container.name"),
            (K8S_DEPLOYMENT_NAME, "k8s.deployment.name"),
            (K8S_POD_UID, "k8s.pod.uid"),
            (K8S_NODE_NAME, "k8s.node.name"),
            (THREAD_ID, "thread.id"),
            (THREAD_NAME, "thread.name"),
            (NETWORK_TRANSPORT, "network.transport"),
            (NETWORK_PEER_ADDRESS, "network.peer.address"),
            (NETWORK_PEER_PORT, "network.peer.port"),
            (NETWORK_LOCAL_ADDRESS, "network.local.address"),
            (NETWORK_LOCAL_PORT, "network.local.port"),
            (OTEL_METRIC_OVERFLOW, "otel.metric.overflow"),
            (KOTEL_CPU, "kotel.cpu"),
            (KOTEL_BYTES, "kotel.bytes"),
            (KOTEL_FD, "kotel.fd"),
            (KOTEL_IOVCNT, "kotel.iovcnt"),
            (KOTEL_ERRNO, "kotel.errno"),
            (KOTEL_STACK_KERNEL_ID, "kotel.stack.kernel_id"),
            (KOTEL_STACK_USER_ID, "kotel.stack.user_id"),
            (KOTEL_STACK_KERNEL, "kotel.stack.kernel"),
            (KOTEL_STACK_USER, "kotel.stack.user"),
            (CODE_FUNCTION_NAME, "code.function.name"),
            (CODE_FILE_PATH, "code.file.path"),
            (CODE_LINE_NUMBER, "code.line.number"),
            (KOTEL_OFFCPU_DURATION, "kotel.offcpu.duration"),
            (KOTEL_OFFCPU_STATE, "kotel.offcpu.state"),
            (KOTEL_RUNQUEUE_DELAY, "kotel.runqueue.delay"),
            (KOTEL_WRITEV_DURATION, "kotel.writev.duration"),
            (KOTEL_TCP_SEND_DURATION, "kotel.tcp.send.duration"),
            (KOTEL_KERNEL_EVENTS, "kotel.kernel.events"),
            (KOTEL_LINK_MATCH, "kotel.link.match"),
            (KOTEL_LINK_PID_SOURCE, "kotel.link.pid_source"),
            (KOTEL_LINK_UNRESOLVED, "kotel.link.unresolved"),
            (KOTEL_ARTIFACT_URL, "kotel.artifact.url"),
            (KOTEL_ARTIFACT_ID, "kotel.artifact.id"),
            (KOTEL_ARTIFACT_MEDIA_TYPE, "kotel.artifact.media_type"),
            (KOTEL_FLAME_URL, "kotel.flame.url"),
            (KOTEL_FLAME_ID, "kotel.flame.id"),
            (KOTEL_FLAME_MEDIA_TYPE, "kotel.flame.media_type"),
            (KOTEL_KIND, "kotel.kind"),
            (KOTEL_SIGNAL, "kotel.signal"),
            (KOTEL_REASON, "kotel.reason"),
            (KOTEL_OUTCOME, "kotel.outcome"),
        ];
        for (key, value) in keys {
            assert_eq!(key, value);
        }
        let mut distinct: Vec<_> = keys.iter().map(|(key, _)| key).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), keys.len(), "no two constants share a key");
    }
}
