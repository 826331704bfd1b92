//! The bounded in-memory map of the pods on this node, keyed by pod uid and by container id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What kotel knows about one pod on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.name`.
    pub pod_name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`, lowercased.
    pub pod_uid: String,
    /// Container name by container id (runtime prefix such as `containerd://` stripped,
    /// lowercased), for every container, init container and ephemeral container that has an id.
    pub containers: BTreeMap<String, String>,
    /// The Deployment that owns the pod's ReplicaSet, when there is one and it could be read.
    pub deployment_name: Option<String>,
    /// `spec.nodeName`.
    pub node_name: String,
}

struct Entry {
    meta: Arc<PodMeta>,
    /// Insertion tick; the key of this entry in `Store::order`.
    seq: u64,
}

/// Pods by uid and container ids by pod, at most `capacity` pods; the oldest inserted pod is
/// evicted to make room. Not synchronised: the owner wraps it in a lock.
pub(crate) struct Store {
    capacity: usize,
    pods: HashMap<String, Entry>,
    /// Container id → pod uid.
    containers: HashMap<String, String>,
    /// Pod uids by insertion tick, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    evictions: u64,
    /// Uids seen since the start of a (re)list, while one is in progress.
    relisting: Option<HashSet<String>>,
}

impl Store {
    /// An empty store holding at most `capacity` pods (at least one).
    pub(crate) fn new(capacity: usize) -> Store {
        Store {
            capacity: capacity.max(1),
            pods: HashMap::new(),
            containers: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            evictions: 0,
            relisting: None,
        }
    }

    /// Inserts or replaces `meta`, evicting the oldest pods when full.
    pub(crate) fn upsert(&mut self, meta: PodMeta) {
        if let Some(seen) = self.relisting.as_mut() {
            seen.insert(meta.pod_uid.clone());
        }
        let seq = match self.pods.get(&meta.pod_uid) {
            Some(old) => {
                let seq = old.seq;
                let old = Arc::clone(&old.meta);
                self.unlink_containers(&old);
                seq
            }
            None => {
                while self.pods.len() >= self.capacity {
                    let Some((_, oldest)) = self.order.pop_first() else {
                        break;
                    };
                    if let Some(entry) = self.pods.remove(&oldest) {
                        self.unlink_containers(&entry.meta);
                        self.evictions += 1;
                    }
                }
                self.tick += 1;
                self.order.insert(self.tick, meta.pod_uid.clone());
                self.tick
            }
        };
        for id in meta.containers.keys() {
            self.containers.insert(id.clone(), meta.pod_uid.clone());
        }
        self.pods.insert(
            meta.pod_uid.clone(),
            Entry {
                meta: Arc::new(meta),
                seq,
            },
        );
    }

    /// Forgets the pod `uid` and its containers.
    pub(crate) fn remove(&mut self, uid: &str) {
        if let Some(entry) = self.pods.remove(uid) {
            self.order.remove(&entry.seq);
            self.unlink_containers(&entry.meta);
        }
    }

    fn unlink_containers(&mut self, meta: &PodMeta) {
        for id in meta.containers.keys() {
            if self.containers.get(id) == Some(&meta.pod_uid) {
                self.containers.remove(id);
            }
        }
    }

    /// A (re)list starts: pods not upserted before [`finish_relist`](Store::finish_relist) are
    /// removed then.
    pub(crate) fn begin_relist(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// A (re)list is complete: removes the pods it did not list.
    pub(crate) fn finish_relist(&mut self) {
        let Some(seen) = self.relisting.take() else {
            return;
        };
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.remove(&uid);
        }
    }

    /// The pod of `container_id` with that container's name, else the pod `pod_uid`.
    pub(crate) fn lookup(
        &self,
        pod_uid: Option<&str>,
        container_id: Option<&str>,
    ) -> Option<(Arc<PodMeta>, Option<String>)> {
        if let Some(id) = container_id.filter(|id| !id.is_empty()) {
            let id = id.to_ascii_lowercase();
            if let Some(entry) = self.containers.get(&id).and_then(|uid| self.pods.get(uid)) {
                let name = entry.meta.containers.get(&id).cloned();
                return Some((Arc::clone(&entry.meta), name));
            }
        }
        let uid = pod_uid.filter(|uid| !uid.is_empty())?.to_ascii_lowercase();
        self.pods
            .get(&uid)
            .map(|entry| (Arc::clone(&entry.meta), None))
    }

    /// Pods held.
    pub(crate) fn pods(&self) -> usize {
        self.pods.len()
    }

    /// Container ids held.
    pub(crate) fn containers(&self) -> usize {
        self.containers.len()
    }

    /// Pods evicted to stay within capacity since creation.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, containers: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            pod_name: format!("pod-{uid}"),
            namespace: "default".into(),
            pod_uid: uid.into(),
            containers: containers
                .iter()
                .map(|(id, name)| ((*id).to_owned(), (*name).to_owned()))
                .collect(),
            deployment_name: None,
            node_name: "node-a".into(),
        }
    }

    #[test]
    fn lookup_by_container_then_uid() {
        let mut store = Store::new(8);
        store.upsert(pod("u1", &[("c1", "app"), ("c2", "sidecar")]));
        let (meta, name) = store.lookup(None, Some("C2")).unwrap();
        assert_eq!(
            (meta.pod_uid.as_str(), name.as_deref()),
            ("u1", Some("sidecar"))
        );
        let (meta, name) = store.lookup(Some("u1"), Some("unknown")).unwrap();
        assert_eq!((meta.pod_uid.as_str(), name), ("u1", None));
        assert!(store.lookup(Some("u2"), None).is_none());
        assert!(store.lookup(None, None).is_none());
    }

    #[test]
    fn replace_and_remove_unlink_containers() {
        let mut store = Store::new(8);
        store.upsert(pod("u1", &[("c1", "app")]));
        store.upsert(pod("u1", &[("c9", "app")]));
        assert!(store.lookup(None, Some("c1")).is_none());
        assert_eq!(store.containers(), 1);
        store.remove("u1");
        assert_eq!((store.pods(), store.containers()), (0, 0));
        assert!(store.order.is_empty());
    }

    #[test]
    fn capacity_evicts_oldest_and_counts() {
        let mut store = Store::new(2);
        for i in 0..5 {
            store.upsert(pod(&format!("u{i}"), &[(&format!("c{i}"), "app")]));
        }
        assert_eq!((store.pods(), store.containers()), (2, 2));
        assert_eq!(store.evictions(), 3);
        assert!(store.lookup(Some("u4"), None).is_some());
        assert!(store.lookup(Some("u0"), Some("c0")).is_none());
    }

    #[test]
    fn relist_removes_unlisted_pods() {
        let mut store = Store::new(8);
        store.upsert(pod("u1", &[("c1", "app")]));
        store.upsert(pod("u2", &[("c2", "app")]));
        store.begin_relist();
        store.upsert(pod("u2", &[("c2", "app")]));
        store.upsert(pod("u3", &[("c3", "app")]));
        store.finish_relist();
        assert!(store.lookup(Some("u1"), Some("c1")).is_none());
        assert_eq!(store.pods(), 2);
    }
}
