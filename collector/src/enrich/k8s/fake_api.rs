//! A fake Kubernetes API server for the pod watcher's tests.
//!
//! No Kubernetes can run where these tests run, so this server is written to the Kubernetes
//! API's documented list and watch semantics (API concepts: "Efficient detection of changes",
//! "Resource versions"), for just the requests the watcher makes:
//!
//! - `GET /api/v1/pods?fieldSelector=spec.nodeName=N` lists the pods on node `N` as a `PodList`
//!   whose `metadata.resourceVersion` is the store's current version.
//! - `GET /api/v1/pods?watch=true&resourceVersion=V&fieldSelector=...` streams, as JSON lines
//!   `{"type":"ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK","object":{...}}`, every change after `V`
//!   and then live changes, each object carrying its new `metadata.resourceVersion`; a
//!   `BOOKMARK` with the current version opens each stream. When `V` is older than the
//!   compacted history the answer is an `ERROR` event with a `Status` of code 410 reason
//!   `Expired` (what the API server does), or, when [`FakeApi::set_gone_as_http`] is set, an
//!   HTTP 410 response.
//! - `GET /apis/apps/v1/namespaces/{ns}/replicasets/{name}` returns the ReplicaSet or a 404
//!   `Status`.
//!
//! Every request's decoded path and query is recorded so tests can check what was sent.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

struct Watch {
    node: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Pods by uid.
    pods: BTreeMap<String, Value>,
    /// ReplicaSets by (namespace, name).
    replicasets: HashMap<(String, String), Value>,
    /// Changes as (resourceVersion, type, object), oldest first.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion older than this are answered 410 Gone.
    compacted: u64,
    watches: Vec<Watch>,
    requests: Vec<String>,
    gone_as_http: bool,
}

impl State {
    fn record(&mut self, kind: &'static str, mut pod: Value) {
        self.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if kind == "DELETED" {
            self.pods.remove(&uid);
        } else {
            self.pods.insert(uid, pod.clone());
        }
        let line = event_line(kind, &pod);
        let node = node_of(&pod);
        self.watches
            .retain(|w| !matches(&w.node, &node) || w.tx.send(line.clone()).is_ok());
        self.history.push((self.rv, kind, pod));
    }
}

fn node_of(pod: &Value) -> Option<String> {
    pod["spec"]["nodeName"].as_str().map(str::to_owned)
}

fn matches(filter: &Option<String>, node: &Option<String>) -> bool {
    filter.is_none() || filter == node
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": kind, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The fake server, listening on 127.0.0.1 until [`stop`](FakeApi::stop) or drop.
pub(crate) struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeApi {
    /// Starts the server on the current tokio runtime.
    pub(crate) async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let server = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every open connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let state = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(&state, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi {
            addr,
            state,
            server,
        }
    }

    /// The base URL for a kube `Config`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates or replaces a pod, streaming ADDED or MODIFIED.
    pub(crate) fn apply_pod(&self, pod: Value) {
        let mut state = self.state();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let kind = if state.pods.contains_key(uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.record(kind, pod);
    }

    /// Deletes a pod, streaming DELETED.
    pub(crate) fn delete_pod(&self, uid: &str) {
        let mut state = self.state();
        if let Some(pod) = state.pods.get(uid).cloned() {
            state.record("DELETED", pod);
        }
    }

    /// Stores a ReplicaSet.
    pub(crate) fn put_replicaset(&self, rs: Value) {
        let ns = rs["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = rs["metadata"]["name"].as_str().unwrap_or_default();
        let key = (ns.to_owned(), name.to_owned());
        self.state().replicasets.insert(key, rs);
    }

    /// While no watch is open, deletes the pods `deleted` and applies `applied`, then compacts
    /// the history past them, as an API server does after a long disconnection: open watches
    /// are closed, these changes are never streamed, and a watch from any earlier
    /// resourceVersion is answered 410 Gone. All under one lock, so no watch sees a part.
    pub(crate) fn expire(&self, deleted: &[&str], applied: Vec<Value>) {
        let mut state = self.state();
        state.watches.clear();
        for uid in deleted {
            if let Some(pod) = state.pods.get(*uid).cloned() {
                state.record("DELETED", pod);
            }
        }
        for pod in applied {
            state.record("ADDED", pod);
        }
        state.compacted = state.rv;
        state.history.clear();
    }

    /// Answers expired watches with HTTP 410 instead of an `ERROR` event.
    pub(crate) fn set_gone_as_http(&self, yes: bool) {
        self.state().gone_as_http = yes;
    }

    /// Decoded path and query of every request so far.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// Stops listening and drops every connection: the API is now unreachable.
    pub(crate) fn stop(&self) {
        self.server.abort();
        self.state().watches.clear();
    }
}

fn handle(state: &Mutex<State>, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.requests.push(match req.uri().query() {
        Some(q) => format!("{path}?{}", percent_decode(q)),
        None => path.clone(),
    });
    if path == "/api/v1/pods" {
        let node = query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("spec.nodeName="))
            .map(str::to_owned);
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        return if watching {
            let from = query
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            watch(&mut state, node, from)
        } else {
            list(&state, node)
        };
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["apis", "apps", "v1", "namespaces", ns, "replicasets", name] = parts[..] {
        let key = (ns.to_owned(), name.to_owned());
        if let Some(rs) = state.replicasets.get(&key) {
            return json_response(StatusCode::OK, rs);
        }
    }
    json_response(StatusCode::NOT_FOUND, &status(404, "NotFound", "not found"))
}

fn list(state: &State, node: Option<String>) -> Response<Body> {
    let items: Vec<&Value> = state
        .pods
        .values()
        .filter(|pod| matches(&node, &node_of(pod)))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": { "resourceVersion": state.rv.to_string() },
            "items": items,
        }),
    )
}

fn watch(state: &mut State, node: Option<String>, from: u64) -> Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    if from != 0 && from < state.compacted {
        let gone = status(410, "Expired", "too old resource version");
        if state.gone_as_http {
            return json_response(StatusCode::GONE, &gone);
        }
        let _ = tx.send(event_line("ERROR", &gone));
        drop(tx);
        return streaming(rx);
    }
    let bookmark = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": { "resourceVersion": state.rv.to_string(), "annotations": {} },
    });
    let _ = tx.send(event_line("BOOKMARK", &bookmark));
    for (rv, kind, pod) in &state.history {
        if *rv > from && matches(&node, &node_of(pod)) {
            let _ = tx.send(event_line(kind, pod));
        }
    }
    state.watches.push(Watch { node, tx });
    streaming(rx)
}

fn streaming(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<Body> {
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pod as the API serves it: `containers` as (name, `containerd://` id) in its status, owned
/// by ReplicaSet `rs` when given.
pub(crate) fn pod(
    uid: &str,
    ns: &str,
    name: &str,
    node: &str,
    containers: &[(&str, &str)],
    rs: Option<&str>,
) -> Value {
    let owners: Vec<Value> = rs
        .map(|rs| {
            json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                "uid": format!("rs-{rs}"), "controller": true,
            })
        })
        .into_iter()
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(name, id)| {
            json!({
                "name": name, "containerID": format!("containerd://{id}"), "image": "img",
                "imageID": "", "ready": true, "restartCount": 0,
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "uid": uid, "ownerReferences": owners },
        "spec": {
            "nodeName": node,
            "containers": containers.iter().map(|(n, _)| json!({"name": n})).collect::<Vec<_>>(),
        },
        "status": { "phase": "Running", "containerStatuses": statuses },
    })
}

/// A ReplicaSet `name` in `ns`, owned by Deployment `deployment` when given.
pub(crate) fn replicaset(ns: &str, name: &str, deployment: Option<&str>) -> Value {
    let owners: Vec<Value> = deployment
        .map(|d| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "name": d,
                "uid": format!("deploy-{d}"), "controller": true,
            })
        })
        .into_iter()
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": { "name": name, "namespace": ns, "uid": format!("rs-{name}"),
                      "ownerReferences": owners },
        "spec": { "selector": {} },
    })
}
