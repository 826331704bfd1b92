//! OTLP resources per process: /proc (cached, dropped on exec and exit), the host, and this
//! node's pods when `[kubernetes]` is on.

use std::collections::HashMap;

use opentelemetry_proto::tonic::resource::v1::Resource;

use super::k8s::{self, PodMetadata};
use super::semconv::{HOST_NAME, K8S_NODE_NAME, PROCESS_PID, SERVICE_NAME, SERVICE_VERSION};
use super::{HostInfo, ProcessCache, ResourceOptions};
use crate::model::Comm;
use crate::otlp::{attrs, SCOPE_VERSION};

/// Resources per process, from /proc, dropped on exec and exit.
pub struct Resources {
    /// What /proc said about each process; the owner invalidates a pid on exec and exit.
    pub cache: ProcessCache,
    /// The machine kotel runs on.
    pub host: HostInfo,
    /// How each process's resource is built.
    pub options: ResourceOptions,
    /// The kernel's name of each process seen in an event, the hint for processes already gone.
    pub comms: HashMap<u32, Comm>,
    /// This node's pods, when `[kubernetes]` is on and the API client could be built.
    pub pods: Option<PodMetadata>,
}

impl Resources {
    /// The resource of process `pid`: its /proc metadata, the host, and its pod when known.
    pub fn of(&mut self, pid: u32) -> Resource {
        let hint = self
            .comms
            .get(&pid)
            .map(Comm::to_string_lossy)
            .unwrap_or_default();
        let info = self.cache.get(pid, &hint);
        let mut resource = info.resource(&self.host, &self.options);
        let pod = self
            .pods
            .as_ref()
            .and_then(|pods| pods.lookup(info.pod_uid.as_deref(), info.container_id.as_deref()));
        if let Some(pod) = pod {
            k8s::extend_resource(&mut resource, &pod);
        }
        resource
    }

    /// The resource of kotel itself, for its self metrics.
    pub fn agent(&self) -> Resource {
        let mut a = vec![
            attrs::string(SERVICE_NAME, "kotel"),
            attrs::string(SERVICE_VERSION, SCOPE_VERSION),
            attrs::int(PROCESS_PID, i64::from(std::process::id())),
            attrs::string(HOST_NAME, self.host.host_name.clone()),
        ];
        if let Some(node) = &self.host.node_name {
            a.push(attrs::string(K8S_NODE_NAME, node.clone()));
        }
        Resource {
            attributes: a,
            ..Default::default()
        }
    }
}

/// This node's pod metadata when `mode` asks for it; the agent runs on without it when the
/// client cannot be built.
pub fn pod_metadata(
    mode: crate::config::KubernetesMode,
    runtime: &tokio::runtime::Handle,
) -> Option<PodMetadata> {
    let in_cluster = std::env::var_os(k8s::SERVICE_HOST_VAR).is_some();
    if !mode.wanted(in_cluster) {
        return None;
    }
    match PodMetadata::from_env(runtime) {
        Ok(Some(pods)) => Some(pods),
        Ok(None) => {
            tracing::warn!(var = k8s::SERVICE_HOST_VAR, "kotel.k8s.not_in_cluster");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "kotel.k8s.unavailable");
            None
        }
    }
}
