//! The pod watcher task: kube's list + watch of this node's pods into the [`Store`], resolving
//! each pod's Deployment through its owner ReplicaSet, retrying with backoff while the API is
//! unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::store::PodMeta;
use super::{Shared, WatchOptions};

/// At most one warning per this interval for API errors; every error is counted.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Exponential backoff between failed API calls, reset by any success.
pub(crate) struct RetryBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl RetryBackoff {
    pub(crate) fn new(min: Duration, max: Duration) -> RetryBackoff {
        let min = min.max(Duration::from_millis(1));
        RetryBackoff {
            min,
            max: max.max(min),
            next: min,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = current.saturating_mul(2).min(self.max);
        // Up to 25% jitter so that the agents of a cluster do not retry in lockstep.
        let jitter = current.mul_f64(fastrand::f64() * 0.25);
        Some((current + jitter).min(self.max))
    }
}

impl kube::runtime::utils::Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Watches the pods on `node` until the task is aborted; never returns on its own.
pub(crate) async fn run(client: Client, node: String, shared: Arc<Shared>, opts: WatchOptions) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut owners = Owners::new(client, opts.owner_cache, opts.request_timeout);
    let mut last_warn: Option<Instant> = None;
    loop {
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut stream = watcher::watcher(pods.clone(), config)
            .backoff(RetryBackoff::new(opts.min_backoff, opts.max_backoff))
            .boxed();
        // `None` only after the backoff gives up, which `RetryBackoff` never does.
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Init) => {
                    shared.lists.fetch_add(1, Ordering::Relaxed);
                    shared.store_mut().begin_relist();
                }
                Ok(Event::InitApply(pod) | Event::Apply(pod)) => {
                    let deployment = owners.deployment(&pod, &shared, &mut last_warn).await;
                    if let Some(meta) = pod_meta(&pod, &node, deployment) {
                        shared.store_mut().upsert(meta);
                    }
                }
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        shared.store_mut().remove(&uid.to_ascii_lowercase());
                    }
                }
                Ok(Event::InitDone) => {
                    shared.store_mut().finish_relist();
                    shared.synced.store(true, Ordering::Relaxed);
                    tracing::debug!(node = %node, "kotel.k8s.synced");
                }
                Err(err) => {
                    api_error(&shared, &mut last_warn, &err);
                    if watch_gone(&err) {
                        // Start over with a fresh list.
                        tracing::debug!(node = %node, "kotel.k8s.relist");
                        break;
                    }
                }
            }
        }
    }
}

/// Whether a watch was refused with HTTP 410 Gone (its resourceVersion expired). kube turns
/// an `ERROR` event with code 410 into a relist by itself, but an HTTP 410 answer (as a failed
/// start, or as a status line in the body) leaves it re-watching from the same version.
fn watch_gone(err: &watcher::Error) -> bool {
    matches!(
        err,
        watcher::Error::WatchStartFailed(kube::Error::Api(resp))
            | watcher::Error::WatchFailed(kube::Error::Api(resp)) if resp.code == 410
    )
}

/// Counts an API error and warns, at most once per [`WARN_EVERY`].
fn api_error(shared: &Shared, last_warn: &mut Option<Instant>, err: &dyn std::fmt::Display) {
    let total = shared.api_errors.fetch_add(1, Ordering::Relaxed) + 1;
    if last_warn.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
        *last_warn = Some(Instant::now());
        tracing::warn!(error = %err, api_errors = total, "kotel.k8s.api_error");
    }
}

/// `pod` as kotel keeps it; `None` for a pod without a uid.
pub(crate) fn pod_meta(pod: &Pod, node: &str, deployment_name: Option<String>) -> Option<PodMeta> {
    let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
    let mut containers = BTreeMap::new();
    if let Some(status) = &pod.status {
        let all = [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for statuses in all.into_iter().flatten() {
            for ContainerStatus {
                name, container_id, ..
            } in statuses
            {
                if let Some(id) = container_id.as_deref().and_then(strip_runtime) {
                    containers.insert(id, name.clone());
                }
            }
        }
    }
    Some(PodMeta {
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod_uid: uid.to_ascii_lowercase(),
        containers,
        deployment_name,
        node_name: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_else(|| node.to_owned()),
    })
}

/// A `status.containerStatuses[].containerID` without its runtime prefix (`containerd://`,
/// `docker://`, `cri-o://`, ...), lowercased; `None` when empty.
pub(crate) fn strip_runtime(id: &str) -> Option<String> {
    let id = id.split_once("://").map_or(id, |(_, rest)| rest).trim();
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

/// The controlling (else the first) ReplicaSet owner of `pod`.
fn replica_set_owner(pod: &Pod) -> Option<&str> {
    let owners = pod.metadata.owner_references.as_deref()?;
    owners
        .iter()
        .filter(|o| o.kind == "ReplicaSet")
        .max_by_key(|o| o.controller == Some(true))
        .map(|o| o.name.as_str())
}

/// Deployment names of ReplicaSets, read through the API and cached.
struct Owners {
    client: Client,
    /// `(namespace, replica set)` → its Deployment; `None` when it has none or is gone.
    cache: HashMap<(String, String), Option<String>>,
    capacity: usize,
    timeout: Duration,
}

impl Owners {
    fn new(client: Client, capacity: usize, timeout: Duration) -> Owners {
        Owners {
            client,
            cache: HashMap::new(),
            capacity: capacity.max(1),
            timeout,
        }
    }

    /// The Deployment owning `pod`'s ReplicaSet; `None` when there is none or the API could not
    /// be read (then counted, and not cached, so the next event of the pod tries again).
    async fn deployment(
        &mut self,
        pod: &Pod,
        shared: &Shared,
        last_warn: &mut Option<Instant>,
    ) -> Option<String> {
        let rs = replica_set_owner(pod)?;
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let key = (ns.to_owned(), rs.to_owned());
        if let Some(cached) = self.cache.get(&key) {
            return cached.clone();
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let deployment = match tokio::time::timeout(self.timeout, api.get_opt(rs)).await {
            Ok(Ok(found)) => found.and_then(|rs| {
                rs.metadata
                    .owner_references?
                    .into_iter()
                    .filter(|o| o.kind == "Deployment")
                    .max_by_key(|o| o.controller == Some(true))
                    .map(|o| o.name)
            }),
            Ok(Err(err)) => {
                api_error(shared, last_warn, &err);
                return None;
            }
            Err(_) => {
                api_error(shared, last_warn, &"reading a ReplicaSet timed out");
                return None;
            }
        };
        if self.cache.len() >= self.capacity {
            // ReplicaSets come and go with rollouts; starting over keeps memory bounded.
            self.cache.clear();
        }
        self.cache.insert(key, deployment.clone());
        deployment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_runtime_prefixes() {
        for raw in [
            "containerd://ABC123",
            "docker://abc123",
            "cri-o://abc123",
            "abc123",
        ] {
            assert_eq!(strip_runtime(raw).as_deref(), Some("abc123"), "{raw}");
        }
        assert_eq!(strip_runtime("containerd://"), None);
        assert_eq!(strip_runtime(""), None);
    }

    #[test]
    fn backoff_grows_to_max_and_resets() {
        use kube::runtime::utils::Backoff;
        let mut b = RetryBackoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let first = b.next().unwrap();
        assert!(first >= Duration::from_millis(10) && first <= Duration::from_millis(13));
        for _ in 0..10 {
            assert!(b.next().unwrap() <= Duration::from_millis(40));
        }
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(13));
    }
}
