//! The names kotel writes and reads that others define: OpenTelemetry semantic-convention
//! attribute keys, kotel's own `kotel.*` attribute keys, and the environment variables that
//! name the Kubernetes node. Every place that writes or looks up one of these uses the constant
//! here; the values are part of kotel's output and never change.

/// Environment variables naming the Kubernetes node, in order of preference: the DaemonSet
/// (deploy/kubernetes/daemonset.yaml) sets both from the downward API (`spec.nodeName`).
pub const NODE_NAME_VARS: [&str; 2] = ["KOTEL_NODE_NAME", "NODE_NAME"];
