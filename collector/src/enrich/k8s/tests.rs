//! The pod watcher against [`FakeApi`], a fake API server written to the Kubernetes API's list
//! and watch semantics because no Kubernetes can run here (see `fake_api.rs`). Every wait polls
//! with a deadline.

use std::time::{Duration, Instant};

use super::fake_api::{pod, replicaset, FakeApi};
use super::*;

const NODE: &str = "node-a";
const DEADLINE: Duration = Duration::from_secs(20);

const UID_A: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const UID_B: &str = "bbbbbbbb-0000-0000-0000-000000000002";
const UID_C: &str = "cccccccc-0000-0000-0000-000000000003";
const UID_OTHER: &str = "dddddddd-0000-0000-0000-000000000004";
const CID_A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const CID_A2: &str = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";
const CID_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const CID_C: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn fast() -> WatchOptions {
    WatchOptions {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        ..WatchOptions::default()
    }
}

/// A client for `url` without auth; must run inside the runtime (the client spawns a task).
fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("fake url"));
    kube::Client::try_from(config).expect("kube client")
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn name_of(pods: &PodMetadata, uid: &str) -> Option<String> {
    pods.lookup(Some(uid), None).map(|a| a.pod_name)
}

#[test]
fn list_then_watch_events_update_the_map() {
    let rt = runtime();
    rt.block_on(async {
        let api = FakeApi::start().await;
        api.apply_pod(pod(UID_A, "shop", "web-1", NODE, &[("app", CID_A)], None));
        let pods = start_with(client(&api.url()), NODE, rt.handle(), fast());
        wait_for("initial list", || pods.stats().synced).await;

        let a = pods
            .lookup(None, Some(CID_A))
            .expect("listed pod by container id");
        assert_eq!(
            a,
            PodAttrs {
                pod_name: "web-1".into(),
                namespace: "shop".into(),
                pod_uid: UID_A.into(),
                container_name: Some("app".into()),
                deployment_name: None,
                node_name: NODE.into(),
            }
        );

        // ADDED
        api.apply_pod(pod(UID_B, "shop", "web-2", NODE, &[("app", CID_B)], None));
        wait_for("ADDED", || name_of(&pods, UID_B).is_some()).await;

        // MODIFIED: a second container started.
        api.apply_pod(pod(
            UID_A,
            "shop",
            "web-1",
            NODE,
            &[("app", CID_A), ("sidecar", CID_A2)],
            None,
        ));
        wait_for("MODIFIED", || pods.lookup(None, Some(CID_A2)).is_some()).await;
        assert_eq!(
            pods.lookup(Some(UID_A), Some(CID_A2))
                .and_then(|a| a.container_name),
            Some("sidecar".into())
        );

        // DELETED frees the pod and its containers.
        api.delete_pod(UID_B);
        wait_for("DELETED", || name_of(&pods, UID_B).is_none()).await;
        assert!(pods.lookup(None, Some(CID_B)).is_none());
        let stats = pods.stats();
        assert_eq!((stats.pods, stats.containers), (1, 2));
        assert_eq!(stats.api_errors, 0);
        assert_eq!(stats.lists, 1);
    });
}

#[test]
fn field_selector_names_the_node_and_other_nodes_stay_out() {
    let rt = runtime();
    rt.block_on(async {
        let api = FakeApi::start().await;
        api.apply_pod(pod(UID_A, "shop", "web-1", NODE, &[("app", CID_A)], None));
        api.apply_pod(pod(UID_OTHER, "shop", "far", "node-b", &[], None));
        let pods = start_with(client(&api.url()), NODE, rt.handle(), fast());
        wait_for("initial list", || pods.stats().synced).await;
        api.apply_pod(pod(UID_B, "shop", "web-2", NODE, &[], None));
        wait_for("ADDED", || name_of(&pods, UID_B).is_some()).await;
        assert!(name_of(&pods, UID_OTHER).is_none());

        let requests = api.requests();
        let pod_requests: Vec<&String> = requests
            .iter()
            .filter(|r| r.starts_with("/api/v1/pods"))
            .collect();
        assert!(pod_requests.len() >= 2, "{requests:?}");
        for r in &pod_requests {
            assert!(r.contains("fieldSelector=spec.nodeName=node-a"), "{r}");
        }
        assert!(pod_requests.iter().any(|r| r.contains("watch=true")));
    });
}

#[test]
fn deployment_is_resolved_through_the_replicaset_and_cached() {
    let rt = runtime();
    rt.block_on(async {
        let api = FakeApi::start().await;
        api.put_replicaset(replicaset("shop", "web-5d9f", Some("web")));
        api.put_replicaset(replicaset("shop", "bare-1", None));
        api.apply_pod(pod(
            UID_A,
            "shop",
            "web-5d9f-x",
            NODE,
            &[],
            Some("web-5d9f"),
        ));
        api.apply_pod(pod(
            UID_B,
            "shop",
            "web-5d9f-y",
            NODE,
            &[],
            Some("web-5d9f"),
        ));
        api.apply_pod(pod(UID_C, "shop", "bare-1-z", NODE, &[], Some("bare-1")));
        api.apply_pod(pod(UID_OTHER, "shop", "orphan", NODE, &[], Some("gone")));
        let pods = start_with(client(&api.url()), NODE, rt.handle(), fast());
        wait_for("initial list", || pods.stats().synced).await;

        let deployment = |uid| pods.lookup(Some(uid), None).and_then(|a| a.deployment_name);
        assert_eq!(deployment(UID_A).as_deref(), Some("web"));
        assert_eq!(deployment(UID_B).as_deref(), Some("web"));
        assert_eq!(deployment(UID_C), None, "a ReplicaSet without a Deployment");
        assert_eq!(deployment(UID_OTHER), None, "a ReplicaSet that is gone");
        // Two pods of one ReplicaSet: one read; a 404 is an answer, not an API error.
        let rs_reads = api
            .requests()
            .iter()
            .filter(|r| r.ends_with("/replicasets/web-5d9f"))
            .count();
        assert_eq!(rs_reads, 1);
        assert_eq!(pods.stats().api_errors, 0);

        let attrs = pods.lookup(Some(UID_A), None).expect("pod");
        let keys: Vec<String> = k8s_attributes(&attrs)
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(
            keys,
            [
                "k8s.pod.name",
                "k8s.namespace.name",
                "k8s.deployment.name",
                "k8s.pod.uid",
                "k8s.node.name"
            ]
        );
    });
}

fn relists_after_expiry(gone_as_http: bool) {
    let rt = runtime();
    rt.block_on(async {
        let api = FakeApi::start().await;
        api.set_gone_as_http(gone_as_http);
        api.apply_pod(pod(UID_A, "shop", "a", NODE, &[("app", CID_A)], None));
        api.apply_pod(pod(UID_B, "shop", "b", NODE, &[("app", CID_B)], None));
        let pods = start_with(client(&api.url()), NODE, rt.handle(), fast());
        wait_for("initial list", || pods.stats().synced).await;
        wait_for("watch open", || {
            api.requests().iter().any(|r| r.contains("watch=true"))
        })
        .await;

        // While the watch is down, B goes and C comes; the history is compacted past both, so
        // the watcher's resourceVersion is too old and only a relist can see the changes.
        api.expire(
            &[UID_B],
            vec![pod(UID_C, "shop", "c", NODE, &[("app", CID_C)], None)],
        );
        wait_for("relist", || {
            name_of(&pods, UID_C).is_some() && name_of(&pods, UID_B).is_none()
        })
        .await;
        let stats = pods.stats();
        assert!(stats.lists >= 2, "{stats:?}");
        assert!(stats.api_errors >= 1, "the 410 is counted: {stats:?}");
        assert_eq!((stats.pods, stats.containers), (2, 2));
        assert!(pods.lookup(None, Some(CID_B)).is_none());
        assert_eq!(name_of(&pods, UID_A).as_deref(), Some("a"));

        // And the watch after the relist streams again.
        api.apply_pod(pod(UID_B, "shop", "b-again", NODE, &[], None));
        wait_for("watch after relist", || name_of(&pods, UID_B).is_some()).await;
    });
}

#[test]
fn expired_resource_version_as_error_event_relists() {
    relists_after_expiry(false);
}

#[test]
fn expired_resource_version_as_http_410_relists() {
    relists_after_expiry(true);
}

#[test]
fn api_down_keeps_cached_pods_and_counts_errors() {
    let rt = runtime();
    rt.block_on(async {
        let api = FakeApi::start().await;
        api.apply_pod(pod(UID_A, "shop", "a", NODE, &[("app", CID_A)], None));
        let pods = start_with(client(&api.url()), NODE, rt.handle(), fast());
        wait_for("initial list", || pods.stats().synced).await;

        api.stop();
        wait_for("api errors", || pods.stats().api_errors >= 3).await;
        assert_eq!(name_of(&pods, UID_A).as_deref(), Some("a"));
        assert!(name_of(&pods, UID_B).is_none());
    });
}

#[test]
fn api_unreachable_from_the_start_answers_none() {
    let rt = runtime();
    rt.block_on(async {
        // A port that was just free: connections are refused.
        let url = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", listener.local_addr().expect("addr"))
        };
        let pods = start_with(client(&url), NODE, rt.handle(), fast());
        wait_for("api errors", || pods.stats().api_errors >= 2).await;
        assert!(pods.lookup(Some(UID_A), Some(CID_A)).is_none());
        let stats = pods.stats();
        assert!(!stats.synced);
        assert_eq!(stats.pods, 0);
    });
}

#[test]
fn extend_resource_skips_keys_already_set() {
    let attrs = PodAttrs {
        pod_name: "p".into(),
        namespace: "ns".into(),
        pod_uid: UID_A.into(),
        container_name: Some("c".into()),
        deployment_name: None,
        node_name: NODE.into(),
    };
    let mut resource = Resource::default();
    resource.attributes.push(KeyValue {
        key: K8S_POD_UID.into(),
        ..Default::default()
    });
    extend_resource(&mut resource, &attrs);
    let keys: Vec<&str> = resource
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            K8S_POD_UID,
            K8S_POD_NAME,
            K8S_NAMESPACE_NAME,
            K8S_CONTAINER_NAME,
            K8S_NODE_NAME
        ]
    );
}
