//! An in-process Kubernetes API server for tests: fixture objects over the real REST paths.
//!
//! Plain HTTP on `127.0.0.1:0`. It serves discovery (`/api`, `/apis`, `/api/v1`,
//! `/apis/<group>/<version>`), get, list (labelSelector, fieldSelector on metadata.name /
//! metadata.namespace, Table and PartialObjectMetadata views), watch (held open, no events),
//! create (POST; uid/creationTimestamp/resourceVersion; 409 AlreadyExists), patch (merge and
//! strategic-merge as a JSON merge patch; server-side apply by one field manager as
//! create-or-replace; `dryRun=All` honoured; a Deployment's generation goes up when its spec
//! changes), paged lists (`limit`/`continue`), pod logs (per container, `previous`,
//! tailLines, sinceSeconds, timestamps; without `container`, the first one) and `Status` error
//! bodies (404, 403 for a deny-list, 409, 503 for injected transient failures and for an
//! unavailable API group's discovery). Only JSON bodies: kubectl's protobuf writes (`create
//! job --from`) are the real control plane's (`tests/src/cluster.rs`). Every request is
//! recorded so tests can assert what the client did (and did not) write.
//!
//! It is not a controller manager: nothing reconciles. The exceptions, opt-in, are
//! [`TestApiServer::complete_jobs`], which marks new Jobs Complete and gives them a pod and a
//! log, and [`TestApiServer::roll_out_deployments`], which finishes a Deployment's rollout at
//! once when its pod template changes (new pods, started now).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One resource the server knows: enough for discovery and for routing.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
}

const fn r(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short,
    }
}

pub const RESOURCES: &[Resource] = &[
    r(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
    ),
    r("", "v1", "pods", "pod", "Pod", true, &["po"]),
    r("", "v1", "secrets", "secret", "Secret", true, &[]),
    r(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
    ),
    r("", "v1", "services", "service", "Service", true, &["svc"]),
    r(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
    ),
    r(
        "",
        "v1",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
    ),
    r(
        "",
        "v1",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        &["limits"],
    ),
    r("", "v1", "events", "event", "Event", true, &["ev"]),
    r(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
    ),
    r(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
    ),
    r(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
    ),
    r(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
    ),
    r(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
    ),
    r("batch", "v1", "jobs", "job", "Job", true, &[]),
    r(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
    ),
    r(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        &["ing"],
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
    ),
    r(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        "ValidatingWebhookConfiguration",
        false,
        &[],
    ),
    r(
        "wgpolicyk8s.io",
        "v1alpha2",
        "policyreports",
        "policyreport",
        "PolicyReport",
        true,
        &["polr"],
    ),
    r(
        "wgpolicyk8s.io",
        "v1alpha2",
        "clusterpolicyreports",
        "clusterpolicyreport",
        "ClusterPolicyReport",
        false,
        &["cpolr"],
    ),
];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `deployments.apps`, `pods`: as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    fn of(obj: &Value) -> Option<&'static Resource> {
        let (av, kind) = (obj["apiVersion"].as_str()?, obj["kind"].as_str()?);
        RESOURCES
            .iter()
            .find(|r| r.api_version() == av && r.kind == kind)
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Accept` header: `as=PartialObjectMetadataList` marks a metadata-only list.
    pub accept: String,
}

impl Recorded {
    /// A request that changes state (not a dry run).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
            && !self.query.contains("dryRun=All")
    }
}

/// Pod logs: `(namespace, pod)` -> text of the pod's first container; `(namespace,
/// "pod/container")` for a named container; `(namespace, "pod/container#previous")` for the
/// previous instance of a container.
pub type Logs = HashMap<(String, String), String>;

#[derive(Default)]
struct State {
    objects: Vec<Value>,
    /// `(namespace, pod)` -> log text; lines may start with an RFC 3339 timestamp.
    logs: HashMap<(String, String), String>,
    /// `(verb, resource)`, resource as plural or `pods/log`; `*` matches any.
    deny: Vec<(String, String)>,
    requests: Vec<Recorded>,
    rv: u64,
    /// Jobs whose name starts with the prefix complete at once, with this log.
    complete_jobs: Option<(String, String)>,
    /// A Deployment whose pod template changes rolls out at once.
    roll_out: bool,
    /// `(verb, resource, n)`: the next n such requests answer 503.
    failures: Vec<(String, String, usize)>,
    /// API groups whose discovery answers 503, like an aggregated API that is down.
    unavailable_groups: Vec<String>,
}

/// A running test API server; stops when dropped.
pub struct TestApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The fixture clusters directory: `tests/fixtures/clusters`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clusters")
}

/// Replaces `{{now}}` and `{{now-<duration>}}` (s, m, h, d) with RFC 3339 times.
pub fn render_times(text: &str, now: Timestamp) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{now") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let expr = &rest[start + 5..start + end];
        let t = match expr.strip_prefix('-') {
            Some(d) => {
                let (n, unit) = d.split_at(d.len() - 1);
                let n: i64 = n.parse().unwrap_or(0);
                let secs = match unit {
                    "s" => n,
                    "m" => n * 60,
                    "h" => n * 3600,
                    _ => n * 86400,
                };
                now - jiff::SignedDuration::from_secs(secs)
            }
            None => now,
        };
        out.push_str(&format!("{t:.0}"));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

fn key(o: &Value) -> (String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        s(&o["apiVersion"]),
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

/// Loads a fixture cluster: `*.yaml` (multi-document), `logs/<ns>/<pod>.log`, and optionally
/// `_base` (the name of a fixture to start from) and `_remove` (lines `Kind namespace/name`).
pub fn load_fixture(name: &str) -> anyhow::Result<(Vec<Value>, Logs)> {
    let dir = fixtures_dir().join(name);
    anyhow::ensure!(dir.is_dir(), "no fixture cluster {}", dir.display());
    let now = Timestamp::now();
    let (mut objects, mut logs) = match std::fs::read_to_string(dir.join("_base")) {
        Ok(base) => load_fixture(base.trim())?,
        Err(_) => (Vec::new(), HashMap::new()),
    };
    if let Ok(remove) = std::fs::read_to_string(dir.join("_remove")) {
        for line in remove.lines().filter(|l| !l.trim().is_empty()) {
            let (kind, id) = line.trim().split_once(' ').unwrap_or((line, ""));
            let (ns, n) = id.split_once('/').unwrap_or(("", id));
            objects.retain(|o| {
                !(o["kind"] == kind
                    && o["metadata"]["name"] == n
                    && o["metadata"]["namespace"].as_str().unwrap_or("") == ns)
            });
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = render_times(&std::fs::read_to_string(&f)?, now);
        for v in serde_saphyr::from_multiple::<Value>(&text)? {
            anyhow::ensure!(
                Resource::of(&v).is_some(),
                "{}: unknown kind {} {}",
                f.display(),
                v["apiVersion"],
                v["kind"]
            );
            objects.retain(|o| key(o) != key(&v));
            objects.push(v);
        }
    }
    let logs_dir = dir.join("logs");
    if logs_dir.is_dir() {
        for ns in std::fs::read_dir(&logs_dir)?.filter_map(|e| e.ok()) {
            let ns_name = ns.file_name().to_string_lossy().to_string();
            for pod in std::fs::read_dir(ns.path())?.filter_map(|e| e.ok()) {
                let stem = |p: &Path| {
                    p.file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string()
                };
                let path = pod.path();
                if path.is_dir() {
                    // logs/<ns>/<pod>/<container>.log and <container>.previous.log
                    for c in std::fs::read_dir(&path)?.filter_map(|e| e.ok()) {
                        let text = render_times(&std::fs::read_to_string(c.path())?, now);
                        let name = stem(&c.path());
                        let key = match name.strip_suffix(".previous") {
                            Some(c) => format!("{}/{c}#previous", stem(&path)),
                            None => format!("{}/{name}", stem(&path)),
                        };
                        logs.insert((ns_name.clone(), key), text);
                    }
                } else {
                    let text = render_times(&std::fs::read_to_string(&path)?, now);
                    logs.insert((ns_name.clone(), stem(&path)), text);
                }
            }
        }
    }
    Ok((objects, logs))
}

impl TestApiServer {
    /// Starts a server on its own thread serving the fixture cluster `name`.
    pub fn start(name: &str) -> Self {
        let (objects, logs) =
            load_fixture(name).unwrap_or_else(|e| panic!("fixture {name}: {e:#}"));
        Self::with_objects(objects, logs)
    }

    pub fn with_objects(mut objects: Vec<Value>, logs: Logs) -> Self {
        let mut rv = 100;
        for o in &mut objects {
            rv += 1;
            let m = &mut o["metadata"];
            if m.get("uid").is_none() {
                m["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
            }
            if m.get("resourceVersion").is_none() {
                m["resourceVersion"] = json!(rv.to_string());
            }
            if m.get("creationTimestamp").is_none() {
                m["creationTimestamp"] = json!("2026-02-20T00:00:00Z");
            }
        }
        let state = Arc::new(Mutex::new(State {
            objects,
            logs,
            rv,
            ..Default::default()
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let app = axum::Router::new().fallback(handle).with_state(st);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = shutdown_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("server address");
        TestApiServer {
            addr,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server into `dir` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: codex-k8s-prod\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: test-token\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Answer 403 to `verb` on `resource` (`list secrets`, `get pods/log`, `*` for any).
    pub fn deny(&self, verb: &str, resource: &str) {
        self.state
            .lock()
            .unwrap()
            .deny
            .push((verb.into(), resource.into()));
    }

    /// A Deployment whose pod template changes (e.g. `kubectl rollout restart`) rolls out at
    /// once: status complete for the new generation, its pods replaced by new ones started now.
    pub fn roll_out_deployments(&self) {
        self.state.lock().unwrap().roll_out = true;
    }

    /// The next `n` requests of `verb` (`list`, `watch`, `get`, ...) on `resource` answer 503,
    /// as an API server that is restarting.
    pub fn fail_next(&self, verb: &str, resource: &str, n: usize) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push((verb.into(), resource.into(), n));
    }

    /// Discovery of `group` (`/apis/<group>/...`) answers 503 ServiceUnavailable, as the API
    /// server does for an aggregated API whose backend is down.
    pub fn unavailable_group(&self, group: &str) {
        self.state
            .lock()
            .unwrap()
            .unavailable_groups
            .push(group.into());
    }

    /// New Jobs named `prefix*` complete at once; their pod logs `log`.
    pub fn complete_jobs(&self, prefix: &str, log: &str) {
        self.state.lock().unwrap().complete_jobs = Some((prefix.into(), log.into()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write())
            .collect()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// The stored object, if any.
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && o["metadata"]["namespace"].as_str().unwrap_or("") == namespace
            })
            .cloned()
    }

    pub fn objects(&self, kind: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect()
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "details": details, "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Splits a selector on commas outside parentheses.
fn terms(sel: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in sel.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Label selector matching: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`.
pub fn labels_match(selector: &str, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(|v| v.as_str());
    terms(selector).iter().all(|t| {
        let set = |rest: &str| {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        };
        if let Some((k, rest)) = t.split_once(" notin ") {
            get(k.trim()).is_none_or(|v| !set(rest).iter().any(|s| s == v))
        } else if let Some((k, rest)) = t.split_once(" in ") {
            get(k.trim()).is_some_and(|v| set(rest).iter().any(|s| s == v))
        } else if let Some((k, v)) = t.split_once("!=") {
            get(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            get(k.trim()) == Some(v.trim())
        } else if let Some(k) = t.strip_prefix('!') {
            get(k.trim()).is_none()
        } else {
            get(t).is_some()
        }
    })
}

fn fields_match(selector: &str, obj: &Value) -> bool {
    terms(selector).iter().all(|t| {
        let (k, v, neg) = match t.split_once("!=") {
            Some((k, v)) => (k, v, true),
            None => match t.split_once("==").or_else(|| t.split_once('=')) {
                Some((k, v)) => (k, v, false),
                None => return true,
            },
        };
        let actual = k
            .trim()
            .split('.')
            .fold(obj, |o, p| &o[p])
            .as_str()
            .unwrap_or("");
        (actual == v.trim()) != neg
    })
}

/// RFC 7386 JSON merge patch (also used for strategic-merge patches of plain maps).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if k.starts_with("$") {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Where a resource request points.
struct Target {
    res: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    let res = RESOURCES.iter().find(|r| {
        r.group == group && r.version == version && r.plural == rest.first().copied().unwrap_or("")
    })?;
    Some(Target {
        res,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn discovery(path: &str, addr: &str) -> Option<Value> {
    let trimmed = path.trim_end_matches('/');
    if trimmed == "/api" {
        return Some(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]}),
        );
    }
    if trimmed == "/apis" {
        let mut groups: Vec<(&str, &str)> = RESOURCES
            .iter()
            .map(|r| (r.group, r.version))
            .filter(|(g, _)| !g.is_empty())
            .collect();
        groups.dedup();
        let groups: Vec<Value> = groups
            .iter()
            .map(|(g, v)| {
                let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                json!({"name": g, "versions": [gv], "preferredVersion": gv})
            })
            .collect();
        return Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}));
    }
    if trimmed == "/version" {
        return Some(
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-ck8s-test", "platform": "linux/amd64"}),
        );
    }
    let gv = trimmed
        .strip_prefix("/api/")
        .or_else(|| trimmed.strip_prefix("/apis/"))?;
    let (group, version) = gv.split_once('/').unwrap_or(("", gv));
    if version.contains('/') {
        return None;
    }
    let list: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if list.is_empty() {
        return None;
    }
    let verbs = json!([
        "create", "delete", "get", "list", "patch", "update", "watch"
    ]);
    let mut resources: Vec<Value> = list
        .iter()
        .map(|r| json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs, "shortNames": r.short}))
        .collect();
    if group.is_empty() {
        resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        resources.push(json!({"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET
            if t.name.is_none() && q.get("watch").is_some_and(|w| w == "true" || w == "1") =>
        {
            "watch"
        }
        Method::GET if t.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

fn partial(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    state.lock().unwrap().requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        accept: headers
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string(),
    });
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let unavailable = {
        let st = state.lock().unwrap();
        st.unavailable_groups
            .iter()
            .any(|g| path.starts_with(&format!("/apis/{g}/")) || path == format!("/apis/{g}"))
    };
    if unavailable {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
            json!({}),
        );
    }
    if method == Method::GET
        && let Some(d) = discovery(&path, &host)
    {
        return ok_json(StatusCode::OK, &d);
    }
    let Some(t) = route(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        );
    };
    let q = query_map(&query);
    let verb = verb_of(&method, &t, &q);
    let res_name = match &t.sub {
        Some(sub) => format!("{}/{sub}", t.res.plural),
        None => t.res.plural.to_string(),
    };
    let denied = state
        .lock()
        .unwrap()
        .deny
        .iter()
        .any(|(v, r)| (v == "*" || v == verb) && (r == "*" || *r == res_name));
    let failing = {
        let mut st = state.lock().unwrap();
        let hit = st
            .failures
            .iter_mut()
            .find(|(v, r, n)| *n > 0 && v == verb && *r == res_name);
        hit.map(|f| f.2 -= 1).is_some()
    };
    if failing {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the API server is shutting down (injected by the test)".into(),
            json!({}),
        );
    }
    if denied {
        let scope = t
            .namespace
            .as_ref()
            .map(|n| format!(" in the namespace \"{n}\""))
            .unwrap_or_else(|| " at the cluster scope".into());
        let name = t
            .name
            .as_ref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{}{name} is forbidden: User \"system:serviceaccount:codex-k8s-prod:sre\" cannot {verb} resource \"{res_name}\" in API group \"{}\"{scope}",
                t.res.qualified(),
                t.res.group
            ),
            json!({"kind": t.res.plural, "name": t.name.clone().unwrap_or_default()}),
        );
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let mut st = state.lock().unwrap();
    let in_scope = |o: &Value| {
        o["apiVersion"] == t.res.api_version().as_str()
            && o["kind"] == t.res.kind
            && t.namespace
                .as_ref()
                .is_none_or(|n| o["metadata"]["namespace"] == n.as_str())
    };
    let not_found = |name: &str| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", t.res.qualified(),),
            json!({"name": name, "kind": t.res.plural, "group": t.res.group}),
        )
    };
    match (verb, t.sub.as_deref()) {
        ("watch", _) => {
            drop(st);
            let secs: u64 = q
                .get("timeoutSeconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(30)
                .min(60);
            let stream = futures::stream::once(async move {
                tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                Ok::<_, std::convert::Infallible>(Bytes::new())
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        ("list", None) => {
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|o| in_scope(o))
                .filter(|o| {
                    q.get("labelSelector")
                        .is_none_or(|s| labels_match(s, &o["metadata"]["labels"]))
                })
                .filter(|o| q.get("fieldSelector").is_none_or(|s| fields_match(s, o)))
                .cloned()
                .collect();
            let mut meta = json!({"resourceVersion": st.rv.to_string()});
            // Paging: `limit` items from the offset the `continue` token carries, in the
            // store's order (the real server's order is by key; clients must not rely on it).
            let mut items = items;
            if let Some(limit) = q
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|&l| l > 0)
            {
                let from = match q.get("continue").filter(|c| !c.is_empty()) {
                    Some(token) => match token
                        .strip_prefix("offset-")
                        .and_then(|o| o.parse::<usize>().ok())
                    {
                        Some(from) => from,
                        None => {
                            return status(
                                StatusCode::BAD_REQUEST,
                                "BadRequest",
                                format!("invalid continue token {token:?}"),
                                json!({}),
                            );
                        }
                    },
                    None => 0,
                };
                let total = items.len();
                items = items.into_iter().skip(from).take(limit).collect();
                if from + limit < total {
                    meta["continue"] = json!(format!("offset-{}", from + limit));
                    meta["remainingItemCount"] = json!(total - from - limit);
                }
            }
            if accept.contains("as=Table") {
                let rows: Vec<Value> = items.iter().map(|o| json!({"cells": [o["metadata"]["name"], o["metadata"]["creationTimestamp"]], "object": o})).collect();
                let cols = json!([{"name": "Name", "type": "string", "format": "name", "description": "Name"}, {"name": "Created At", "type": "date", "format": "", "description": "creation"}]);
                return ok_json(
                    StatusCode::OK,
                    &json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows}),
                );
            }
            if accept.contains("as=PartialObjectMetadataList") {
                let items: Vec<Value> = items.iter().map(partial).collect();
                return ok_json(
                    StatusCode::OK,
                    &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                );
            }
            ok_json(
                StatusCode::OK,
                &json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(), "metadata": meta, "items": items}),
            )
        }
        ("get", None) => {
            let name = t.name.clone().unwrap_or_default();
            match st
                .objects
                .iter()
                .find(|o| in_scope(o) && o["metadata"]["name"] == name.as_str())
            {
                Some(o) if accept.contains("as=PartialObjectMetadata") => {
                    ok_json(StatusCode::OK, &partial(o))
                }
                Some(o) if accept.contains("as=Table") => {
                    let cols = json!([{"name": "Name", "type": "string", "format": "name", "description": "Name"}, {"name": "Created At", "type": "date", "format": "", "description": "creation"}]);
                    ok_json(
                        StatusCode::OK,
                        &json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": st.rv.to_string()}, "columnDefinitions": cols, "rows": [{"cells": [o["metadata"]["name"], o["metadata"]["creationTimestamp"]], "object": o}]}),
                    )
                }
                Some(o) => ok_json(StatusCode::OK, o),
                None => not_found(&name),
            }
        }
        ("get", Some("log")) if t.res.plural == "pods" => {
            let name = t.name.clone().unwrap_or_default();
            if !st
                .objects
                .iter()
                .any(|o| in_scope(o) && o["metadata"]["name"] == name.as_str())
            {
                return not_found(&name);
            }
            let ns = t.namespace.clone().unwrap_or_default();
            let pod = st
                .objects
                .iter()
                .find(|o| in_scope(o) && o["metadata"]["name"] == name.as_str())
                .cloned()
                .unwrap_or_default();
            let containers: Vec<String> = ["initContainers", "containers"]
                .iter()
                .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect();
            let bad = |m: String| status(StatusCode::BAD_REQUEST, "BadRequest", m, json!({}));
            let container = match q.get("container") {
                Some(c) if !containers.contains(c) => {
                    return bad(format!("container {c} is not valid for pod {name}"));
                }
                Some(c) => c.clone(),
                // The real API server's 400 for a pod of several containers is tested on the
                // real control plane (tests/tests/real_plugin.rs); here: the first container.
                None => containers.first().cloned().unwrap_or_default(),
            };
            let text = if q.get("previous").is_some_and(|p| p == "true") {
                match st
                    .logs
                    .get(&(ns.clone(), format!("{name}/{container}#previous")))
                {
                    Some(t) => t.clone(),
                    None => {
                        return bad(format!(
                            "previous terminated container \"{container}\" in pod \"{name}\" not found"
                        ));
                    }
                }
            } else {
                st.logs
                    .get(&(ns.clone(), format!("{name}/{container}")))
                    .or_else(|| {
                        (containers.first() == Some(&container))
                            .then(|| st.logs.get(&(ns.clone(), name.clone())))
                            .flatten()
                    })
                    .cloned()
                    .unwrap_or_default()
            };
            let since = q
                .get("sinceSeconds")
                .and_then(|s| s.parse::<i64>().ok())
                .map(|s| Timestamp::now() - jiff::SignedDuration::from_secs(s));
            let timestamps = q.get("timestamps").is_some_and(|t| t == "true");
            let mut lines: Vec<String> = text
                .lines()
                .filter_map(|l| {
                    let (ts, rest) =
                        match l.split_once(' ').map(|(a, b)| (a.parse::<Timestamp>(), b)) {
                            Some((Ok(ts), rest)) => (Some(ts), rest),
                            _ => (None, l),
                        };
                    if let (Some(since), Some(ts)) = (since, ts)
                        && ts < since
                    {
                        return None;
                    }
                    Some(if timestamps || ts.is_none() {
                        l.to_string()
                    } else {
                        rest.to_string()
                    })
                })
                .collect();
            if let Some(n) = q.get("tailLines").and_then(|s| s.parse::<usize>().ok()) {
                let skip = lines.len().saturating_sub(n);
                lines.drain(..skip);
            }
            let mut body = lines.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
        }
        ("create", None) => {
            let mut obj: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("cannot decode the object: {e}"),
                        json!({}),
                    );
                }
            };
            if obj["kind"].is_null() {
                obj["kind"] = json!(t.res.kind);
            }
            if obj["apiVersion"].is_null() {
                obj["apiVersion"] = json!(t.res.api_version());
            }
            if let Some(ns) = &t.namespace {
                obj["metadata"]["namespace"] = json!(ns);
            }
            st.rv += 1;
            let rv = st.rv;
            if obj["metadata"]["name"].as_str().unwrap_or("").is_empty() {
                let prefix = obj["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or("obj-")
                    .to_string();
                obj["metadata"]["name"] = json!(format!("{prefix}{:05x}", rv % 0xfffff));
            }
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if st.objects.iter().any(|o| key(o) == key(&obj)) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", t.res.qualified()),
                    json!({"name": name, "kind": t.res.plural, "group": t.res.group}),
                );
            }
            let now = format!("{:.0}", Timestamp::now());
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
            obj["metadata"]["creationTimestamp"] = json!(now);
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            obj["metadata"]["generation"] = json!(1);
            if !dry_run {
                let ns = obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if let Some((prefix, log)) = st
                    .complete_jobs
                    .clone()
                    .filter(|(p, _)| t.res.kind == "Job" && name.starts_with(p.as_str()))
                {
                    let _ = prefix;
                    obj["status"] = json!({"startTime": now, "completionTime": now, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]});
                    let pod_name = format!("{name}-x7k2p");
                    st.objects.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "namespace": ns, "uid": format!("pod-{rv}"), "creationTimestamp": now, "resourceVersion": rv.to_string(),
                        "labels": {"job-name": name, "batch.kubernetes.io/job-name": name}}, "spec": {"containers": [{"name": "gc", "image": "registry:2"}]}, "status": {"phase": "Succeeded"}}));
                    st.logs.insert((ns, pod_name), log);
                }
                st.objects.push(obj.clone());
            }
            ok_json(StatusCode::CREATED, &obj)
        }
        ("patch", None) if content_type.contains("apply-patch") => {
            // Server-side apply by one field manager that owns every field it sends: the
            // object is created, or its content replaced (metadata identity kept).
            let name = t.name.clone().unwrap_or_default();
            if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "PATCH with apply-patch requires a fieldManager".into(),
                    json!({}),
                );
            }
            // kube-rs sends JSON (which is YAML); kubectl may send YAML.
            let mut obj: Value = match serde_saphyr::from_slice::<Value>(&body) {
                Ok(v) => v,
                Err(e) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("cannot decode the applied object: {e}"),
                        json!({}),
                    );
                }
            };
            if obj["apiVersion"] != t.res.api_version().as_str()
                || obj["kind"] != t.res.kind
                || obj["metadata"]["name"] != name.as_str()
            {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("the applied object is not {} {name}", t.res.qualified()),
                    json!({}),
                );
            }
            if let Some(ns) = &t.namespace {
                obj["metadata"]["namespace"] = json!(ns);
            }
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            let existing = st
                .objects
                .iter()
                .position(|o| in_scope(o) && o["metadata"]["name"] == name.as_str());
            let code = match existing {
                Some(idx) => {
                    for k in ["uid", "creationTimestamp"] {
                        obj["metadata"][k] = st.objects[idx]["metadata"][k].clone();
                    }
                    if !dry_run {
                        st.objects[idx] = obj.clone();
                    }
                    StatusCode::OK
                }
                None => {
                    obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
                    obj["metadata"]["creationTimestamp"] =
                        json!(format!("{:.0}", Timestamp::now()));
                    if !dry_run {
                        st.objects.push(obj.clone());
                    }
                    StatusCode::CREATED
                }
            };
            ok_json(code, &obj)
        }
        ("patch", None) => {
            let name = t.name.clone().unwrap_or_default();
            if !(content_type.contains("merge-patch")
                || content_type.contains("strategic-merge-patch"))
            {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("the test API server does not support patch type {content_type:?}"),
                    json!({}),
                );
            }
            let patch: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("cannot decode the patch: {e}"),
                        json!({}),
                    );
                }
            };
            let Some(idx) = st
                .objects
                .iter()
                .position(|o| in_scope(o) && o["metadata"]["name"] == name.as_str())
            else {
                return not_found(&name);
            };
            let old = st.objects[idx].clone();
            let mut obj = old.clone();
            merge_patch(&mut obj, &patch);
            let spec_changed = t.res.kind == "Deployment" && obj["spec"] != old["spec"];
            if spec_changed {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                obj["metadata"]["generation"] = json!(g + 1);
            }
            if !dry_run {
                st.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                if spec_changed && st.roll_out && obj["spec"]["template"] != old["spec"]["template"]
                {
                    roll_out(&mut st, &mut obj);
                }
                st.objects[idx] = obj.clone();
            }
            ok_json(StatusCode::OK, &obj)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the test API server does not support {method} {path}"),
            json!({}),
        ),
    }
}

/// What the deployment and replica set controllers would end with: the new generation
/// observed and available, the old pods gone, new pods from the template started now.
fn roll_out(st: &mut State, d: &mut Value) {
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let selector = d["spec"]["selector"]["matchLabels"].clone();
    let selected = |o: &Value| {
        o["kind"] == "Pod"
            && o["metadata"]["namespace"] == ns.as_str()
            && selector.as_object().is_some_and(|m| {
                !m.is_empty() && m.iter().all(|(k, v)| o["metadata"]["labels"][k] == *v)
            })
    };
    st.objects.retain(|o| !selected(o));
    let now = format!("{:.0}", Timestamp::now());
    let hash = format!("{:x}", st.rv % 0xfffffff);
    for i in 0..replicas {
        st.rv += 1;
        let template = &d["spec"]["template"];
        let containers = template["spec"]["containers"].clone();
        let statuses: Vec<Value> = containers
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!({"name": c["name"], "ready": true, "restartCount": 0, "image": c["image"], "imageID": "", "started": true}))
            .collect();
        st.objects.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-{hash}-{i}"), "namespace": ns, "uid": format!("pod-{}", st.rv),
                "creationTimestamp": now, "resourceVersion": st.rv.to_string(),
                "labels": template["metadata"]["labels"], "annotations": template["metadata"]["annotations"]},
            "spec": template["spec"],
            "status": {"phase": "Running", "startTime": now,
                "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": statuses}}));
    }
    d["status"] = json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                       {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels = json!({"codex-k8s.dev/managed-by": "codex-k8s-worker", "codex-k8s.dev/namespace-purpose": "run"});
        for (sel, want) in [
            (
                "codex-k8s.dev/managed-by=codex-k8s-worker,codex-k8s.dev/namespace-purpose=run",
                true,
            ),
            ("codex-k8s.dev/managed-by=other", false),
            ("codex-k8s.dev/managed-by", true),
            ("!codex-k8s.dev/managed-by", false),
            ("codex-k8s.dev/namespace-purpose in (run,deploy)", true),
            ("codex-k8s.dev/namespace-purpose notin (run)", false),
            ("codex-k8s.dev/managed-by!=x", true),
        ] {
            assert_eq!(labels_match(sel, &labels), want, "{sel}");
        }
        assert!(fields_match(
            "metadata.name=a",
            &json!({"metadata": {"name": "a"}})
        ));
        assert!(!fields_match(
            "metadata.name=b",
            &json!({"metadata": {"name": "a"}})
        ));
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"data": {"A": "1", "B": "2"}, "metadata": {"labels": {"x": "y"}}});
        merge_patch(
            &mut t,
            &json!({"data": {"A": "0", "B": null}, "metadata": {"labels": {"z": "w"}}}),
        );
        assert_eq!(
            t,
            json!({"data": {"A": "0"}, "metadata": {"labels": {"x": "y", "z": "w"}}})
        );
    }

    #[test]
    fn times_render_relative_to_now() {
        let now = "2026-02-26T12:00:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(
            render_times("a {{now-5m}} b {{now}}", now),
            "a 2026-02-26T11:55:00Z b 2026-02-26T12:00:00Z"
        );
        assert_eq!(render_times("{{now-2d}}", now), "2026-02-24T12:00:00Z");
    }

    #[test]
    fn every_fixture_cluster_loads() {
        for e in std::fs::read_dir(fixtures_dir()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            load_fixture(&name).unwrap_or_else(|err| panic!("{name}: {err:#}"));
        }
    }
}
