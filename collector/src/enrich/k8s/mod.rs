//! Kubernetes pod metadata: a watcher of the pods on this node (kube-rs list + watch, field
//! selector `spec.nodeName`) keeping a bounded map by pod uid and container id, and the
//! `k8s.*` resource attributes it yields for a process.

mod store;
mod watch;

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::host::node_name_from_env;
use super::semconv::{
    K8S_CONTAINER_NAME, K8S_DEPLOYMENT_NAME, K8S_NAMESPACE_NAME, K8S_NODE_NAME, K8S_POD_NAME,
    K8S_POD_UID,
};
pub use store::PodMeta;
use store::Store;

/// Set by Kubernetes in every container; its presence means kotel runs in a cluster.
pub const SERVICE_HOST_VAR: &str = "KUBERNETES_SERVICE_HOST";

/// Why pod metadata could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// In a cluster, but neither `KOTEL_NODE_NAME` nor `NODE_NAME` is set.
    #[error(
        "the node name is unknown; set NODE_NAME from the downward API (fieldRef spec.nodeName) \
         or KOTEL_NODE_NAME"
    )]
    NoNodeName,
    /// The in-cluster configuration (service account token, CA, service host) is unusable.
    #[error(
        "the in-cluster Kubernetes configuration is unusable ({0}); check that the pod mounts \
         its service account token"
    )]
    Config(String),
    /// The API client could not be built from the configuration.
    #[error("the Kubernetes API client could not be built ({0})")]
    Client(String),
}

/// Tuning of the watcher; [`Default`] suits production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Most pods held; the oldest inserted pod is evicted beyond this (a node runs at most a
    /// few hundred pods, so evictions mean something is wrong).
    pub capacity: usize,
    /// Most ReplicaSet → Deployment answers cached.
    pub owner_cache: usize,
    /// First wait after a failed API call; doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Timeout of one ReplicaSet read.
    pub request_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            capacity: 2048,
            owner_cache: 4096,
            min_backoff: Duration::from_millis(800),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The `k8s.*` attributes of one process, as [`PodMetadata::lookup`] answers them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAttrs {
    /// `k8s.pod.name`.
    pub pod_name: String,
    /// `k8s.namespace.name`.
    pub namespace: String,
    /// `k8s.pod.uid`.
    pub pod_uid: String,
    /// `k8s.container.name`, when the lookup named a known container id.
    pub container_name: Option<String>,
    /// `k8s.deployment.name`, when the pod's ReplicaSet is owned by a Deployment.
    pub deployment_name: Option<String>,
    /// `k8s.node.name`.
    pub node_name: String,
}

/// Counters of a [`PodMetadata`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodStats {
    /// Pods held now.
    pub pods: usize,
    /// Container ids held now.
    pub containers: usize,
    /// Failed API calls (list, watch, ReplicaSet reads) since start.
    pub api_errors: u64,
    /// Pods evicted to stay within [`WatchOptions::capacity`].
    pub evictions: u64,
    /// Full lists made: the initial one plus one per relist (410 Gone, restarts).
    pub lists: u64,
    /// Whether a list has completed at least once.
    pub synced: bool,
}

/// State shared by the handles and the watcher task.
pub(crate) struct Shared {
    store: RwLock<Store>,
    api_errors: AtomicU64,
    lists: AtomicU64,
    synced: AtomicBool,
}

impl Shared {
    fn store_mut(&self) -> RwLockWriteGuard<'_, Store> {
        // A panic while holding the lock cannot leave the maps half-linked in a way that makes
        // lookups unsafe, so a poisoned lock is used as is.
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Aborts the watcher task when the last handle is dropped.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handle on the pod metadata of this node: cheap to clone, `Send + Sync`; lookups never
/// block on the API (they read what the watcher has stored, so they answer `None` while the
/// API has not been reached). The watcher stops when the last handle is dropped.
#[derive(Clone)]
pub struct PodMetadata {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl std::fmt::Debug for PodMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodMetadata")
            .field("stats", &self.stats())
            .finish()
    }
}

impl PodMetadata {
    /// Builds a client from the in-cluster configuration and starts watching this node's pods
    /// on `runtime`. `Ok(None)` outside a cluster (no `KUBERNETES_SERVICE_HOST`).
    pub fn from_env(runtime: &tokio::runtime::Handle) -> Result<Option<PodMetadata>, K8sError> {
        if std::env::var_os(SERVICE_HOST_VAR).is_none() {
            return Ok(None);
        }
        let node = node_name_from_env().ok_or(K8sError::NoNodeName)?;
        let config = kube::Config::incluster().map_err(|e| K8sError::Config(e.to_string()))?;
        // The client spawns its request buffer on the current runtime.
        let _entered = runtime.enter();
        let client = kube::Client::try_from(config).map_err(|e| K8sError::Client(e.to_string()))?;
        Ok(Some(start(client, &node, runtime)))
    }

    /// The pod of `container_id` (with that container's name), else the pod `pod_uid`; `None`
    /// when neither is known (not a pod, not yet listed, or the API unreachable).
    pub fn lookup(&self, pod_uid: Option<&str>, container_id: Option<&str>) -> Option<PodAttrs> {
        let store = self
            .shared
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (meta, container_name) = store.lookup(pod_uid, container_id)?;
        Some(PodAttrs {
            pod_name: meta.pod_name.clone(),
            namespace: meta.namespace.clone(),
            pod_uid: meta.pod_uid.clone(),
            container_name,
            deployment_name: meta.deployment_name.clone(),
            node_name: meta.node_name.clone(),
        })
    }

    /// Current sizes and counters.
    pub fn stats(&self) -> PodStats {
        let (pods, containers, evictions) = {
            let store = self
                .shared
                .store
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (store.pods(), store.containers(), store.evictions())
        };
        PodStats {
            pods,
            containers,
            api_errors: self.shared.api_errors.load(Ordering::Relaxed),
            evictions,
            lists: self.shared.lists.load(Ordering::Relaxed),
            synced: self.shared.synced.load(Ordering::Relaxed),
        }
    }
}

/// Starts watching the pods on `node` with `client` on `runtime`, with default options.
pub fn start(client: kube::Client, node: &str, runtime: &tokio::runtime::Handle) -> PodMetadata {
    start_with(client, node, runtime, WatchOptions::default())
}

/// [`start`] with explicit options.
pub fn start_with(
    client: kube::Client,
    node: &str,
    runtime: &tokio::runtime::Handle,
    opts: WatchOptions,
) -> PodMetadata {
    let shared = Arc::new(Shared {
        store: RwLock::new(Store::new(opts.capacity)),
        api_errors: AtomicU64::new(0),
        lists: AtomicU64::new(0),
        synced: AtomicBool::new(false),
    });
    let task = runtime.spawn(watch::run(
        client,
        node.to_owned(),
        Arc::clone(&shared),
        opts,
    ));
    PodMetadata {
        shared,
        _task: Arc::new(TaskGuard(task)),
    }
}

/// The semantic-convention `k8s.*` attributes of `attrs`, in a fixed order: pod name,
/// namespace, container name, deployment name, pod uid, node name; each when non-empty.
pub fn k8s_attributes(attrs: &PodAttrs) -> Vec<KeyValue> {
    [
        (K8S_POD_NAME, Some(attrs.pod_name.as_str())),
        (K8S_NAMESPACE_NAME, Some(attrs.namespace.as_str())),
        (K8S_CONTAINER_NAME, attrs.container_name.as_deref()),
        (K8S_DEPLOYMENT_NAME, attrs.deployment_name.as_deref()),
        (K8S_POD_UID, Some(attrs.pod_uid.as_str())),
        (K8S_NODE_NAME, Some(attrs.node_name.as_str())),
    ]
    .into_iter()
    .filter_map(|(key, value)| {
        let value = value.filter(|v| !v.is_empty())?;
        Some(KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        })
    })
    .collect()
}

/// Appends [`k8s_attributes`] to `resource`, skipping keys it already has (the enrich stage
/// sets `k8s.pod.uid` and `k8s.node.name` itself).
pub fn extend_resource(resource: &mut Resource, attrs: &PodAttrs) {
    for kv in k8s_attributes(attrs) {
        if !resource.attributes.iter().any(|have| have.key == kv.key) {
            resource.attributes.push(kv);
        }
    }
}
