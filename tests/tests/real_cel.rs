//! The API server is the oracle of the CEL policy engine (`ck8s-policy-cel`).
//!
//! On the real control plane (tests/src/cluster.rs):
//! - every policy of `policies/cel/testdata/policies/` is created as a native
//!   ValidatingAdmissionPolicy with its binding, and every object of
//!   `policies/cel/testdata/objects.json` is created with `dryRun=All`; the crate judges the same
//!   object **as the API server sent it** (its normal form, taken from a dry-run create made
//!   before the policies existed) and must give the same decision, the same warnings and a
//!   message that contains the API server's;
//! - every policy of `policies/cel/testdata/refused/` is refused by the API server at create
//!   and by the crate at load, except the documented exceptions (`# expect: server-only` /
//!   `crate-only`, listed in policies/cel/README.md).
//!
//! `cargo test -p ck8s-tests --test real_cel`

use ck8s_policy_cel::{Decision, FailureKind, Gvr, Operation, PolicySet, Request, UserInfo};
use ck8s_tests::cluster::ControlPlane;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("policies/cel/testdata")
}

/// The REST path of a kind, and whether it is namespaced.
fn rest(api_version: &str, kind: &str) -> (String, Gvr, bool) {
    let gvr = ck8s_policy_cel::resource_for(api_version, kind);
    let namespaced = !matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
    );
    let base = if gvr.group.is_empty() {
        format!("/api/{}", gvr.version)
    } else {
        format!("/apis/{}/{}", gvr.group, gvr.version)
    };
    (base, gvr, namespaced)
}

struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    server: String,
}

/// One answer of the API server: status, body, and the `Warning` headers' texts.
struct Answer {
    status: u16,
    body: Value,
    warnings: Vec<String>,
}

impl Api {
    fn new(cp: &ControlPlane) -> Api {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Api {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client,
            server: cp.server.clone(),
        }
    }

    fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        self.rt.block_on(async {
            let mut req = self
                .client
                .request(method, format!("{}{path}", self.server))
                .bearer_auth("admin-token");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("the API server answers");
            let status = resp.status().as_u16();
            let warnings = resp
                .headers()
                .get_all("warning")
                .iter()
                .filter_map(|h| h.to_str().ok())
                .map(warning_text)
                .collect();
            let body = resp.json().await.unwrap_or(Value::Null);
            Answer {
                status,
                body,
                warnings,
            }
        })
    }

    /// POST of `object` to its collection (`dry_run`: `?dryRun=All`).
    fn create(&self, object: &Value, dry_run: bool) -> Answer {
        let (base, gvr, namespaced) = rest(
            object["apiVersion"].as_str().unwrap(),
            object["kind"].as_str().unwrap(),
        );
        let ns = object["metadata"]["namespace"].as_str();
        let path = match (namespaced, ns) {
            (true, Some(ns)) => format!("{base}/namespaces/{ns}/{}", gvr.resource),
            _ => format!("{base}/{}", gvr.resource),
        };
        let q = if dry_run { "?dryRun=All" } else { "" };
        self.send(reqwest::Method::POST, &format!("{path}{q}"), Some(object))
    }

    fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None)
    }
}

/// `299 - "text"` → `text`.
fn warning_text(h: &str) -> String {
    let t = h.trim();
    let t = t
        .strip_prefix("299 - \"")
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t);
    t.replace("\\\"", "\"").replace("\\\\", "\\")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn ensure(api: &Api, object: &Value) {
    let a = api.create(object, false);
    assert!(
        a.status < 300 || a.status == 409,
        "create {}: {} {}",
        object["metadata"]["name"],
        a.status,
        a.body
    );
}

/// The request the API server builds for a dry-run create by admin.
fn request_for<'a>(object: &'a Value, namespaces: &'a BTreeMap<String, Value>) -> Request<'a> {
    let (_, gvr, _) = rest(
        object["apiVersion"].as_str().unwrap(),
        object["kind"].as_str().unwrap(),
    );
    let mut r = Request::new(Operation::Create, gvr, Some(object.into()));
    r.user_info = UserInfo {
        username: "admin".into(),
        uid: "admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
        ..Default::default()
    };
    r.dry_run = true;
    r.options = Some(
        json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]}).into(),
    );
    if object["kind"] != "Namespace" {
        r.namespace_object = namespaces.get(&r.namespace).map(Into::into);
    }
    r
}

/// ConfigMaps updated in place (UPDATE requests, with oldObject): (old, new).
fn update_subjects() -> Vec<(Value, Value)> {
    (0..12)
        .map(|i| {
            let mut labels = serde_json::Map::new();
            if i % 3 != 2 {
                labels.insert("team".into(), json!("a"));
            }
            let mut data = json!({"k0": "v", "k1": "v"});
            if i % 4 == 0 {
                data["CODEXK8S_BUILD_REF"] = json!("main");
            }
            let old = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("upd-{i}"), "namespace": "cel-b", "labels": labels},
                "data": data});
            let mut new = old.clone();
            match i % 6 {
                0 => new["metadata"]["labels"]["team"] = json!("b"),
                1 => {
                    new["data"].as_object_mut().unwrap().remove("k0");
                }
                2 => new["data"]["k2"] = json!("v"),
                3 => new["data"]["CODEXK8S_BUILD_REF"] = json!("-b x"),
                4 => new["metadata"]["labels"]["codexk8s.io/run-id"] = json!("r"),
                _ => {
                    new["metadata"].as_object_mut().unwrap().remove("labels");
                }
            }
            (old, new)
        })
        .collect()
}

/// What the API server decided, in the crate's terms.
#[derive(Debug)]
struct Server {
    allowed: bool,
    message: String,
    code: u16,
    warnings: Vec<String>,
}

fn compare(name: &str, ours: &Decision, errors: bool, server: &Server) -> Result<(), String> {
    let mut problems = Vec::new();
    if ours.allowed != server.allowed {
        problems.push(format!(
            "decision: ck8s allowed={}, API server allowed={} ({})",
            ours.allowed, server.allowed, server.message
        ));
    }
    if !server.allowed && !ours.allowed {
        // The part after `<resource> "<name>" is forbidden: `.
        let theirs = server
            .message
            .split_once(" is forbidden: ")
            .map(|(_, m)| m)
            .unwrap_or(&server.message);
        let same = ours.denials.iter().any(|d| d.message.contains(theirs));
        // Evaluation errors are worded by each CEL implementation: only the policy, binding
        // and expression must agree.
        let same_error = errors
            && ours.denials.iter().any(|d| {
                d.message.contains("resulted in error")
                    && theirs.split(" denied request: ").next()
                        == d.message.split(" denied request: ").next()
            });
        if !same && !same_error {
            problems.push(format!(
                "message: the API server's {theirs:?} is in none of ck8s's {:?}",
                ours.denials.iter().map(|d| &d.message).collect::<Vec<_>>()
            ));
        }
        if !ours.denials.iter().any(|d| d.code == server.code) {
            problems.push(format!(
                "code: API server {}, ck8s {:?}",
                server.code, ours.denials
            ));
        }
    }
    let mut theirs: Vec<&String> = server
        .warnings
        .iter()
        .filter(|w| w.contains("ValidatingAdmissionPolicy"))
        .collect();
    theirs.sort();
    let mut mine: Vec<&String> = ours.warnings.iter().collect();
    mine.sort();
    if server.allowed && theirs != mine {
        problems.push(format!("warnings: API server {theirs:?}, ck8s {mine:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}:\n    {}", problems.join("\n    ")))
    }
}

#[test]
fn cel_policies_decide_as_the_api_server_does() {
    let cp = ControlPlane::shared();
    let api = Api::new(cp);
    let started = Instant::now();

    // Namespaces, and the params of the corpus (everything in its files that is neither a
    // policy nor a binding).
    for (name, labels) in [
        ("cel-a", json!({"env": "prod", "team": "a"})),
        ("cel-b", json!({"env": "dev", "team": "b"})),
        ("cel-params", json!({"env": "ops"})),
    ] {
        ensure(
            &api,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
        );
    }
    for ns in ["cel-a", "cel-b"] {
        cp.wait_until(Duration::from_secs(60), "default ServiceAccount", || {
            Ok(api
                .get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/default"))
                .status
                == 200)
        })
        .unwrap();
    }
    let mut corpus = String::new();
    let mut policies = Vec::new();
    for f in files("policies") {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in yaml_docs(&f) {
            match d["kind"].as_str() {
                Some("ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding") => {
                    policies.push(d)
                }
                _ => ensure(&api, &d),
            }
        }
        corpus.push_str(&text);
        corpus.push_str("\n---\n");
    }
    let set = PolicySet::load("policies/cel/testdata/policies", &corpus)
        .unwrap_or_else(|e| panic!("the corpus loads: {e}"));
    let npolicies = set.policies.len();
    assert!(npolicies >= 20, "{npolicies} policies");
    let namespaces: BTreeMap<String, Value> = ["cel-a", "cel-b", "cel-params"]
        .iter()
        .map(|ns| {
            (
                ns.to_string(),
                api.get(&format!("/api/v1/namespaces/{ns}")).body,
            )
        })
        .collect();

    // The objects' normal form: a dry-run create before any policy exists.
    let objects: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("objects.json")).unwrap())
            .unwrap();
    assert!(objects.len() >= 200);
    let normal: Vec<Value> = objects
        .iter()
        .map(|o| {
            let a = api.create(o, true);
            assert!(
                a.status < 300,
                "the API server refuses {} {} without policies: {}",
                o["kind"],
                o["metadata"]["name"],
                a.body
            );
            a.body
        })
        .collect();

    // UPDATE subjects: stored for real, and the normal form of each update (a dry-run PUT).
    let updates: Vec<(Value, Value, String)> = update_subjects()
        .into_iter()
        .map(|(old, new)| {
            let path = format!(
                "/api/v1/namespaces/cel-b/configmaps/{}",
                old["metadata"]["name"].as_str().unwrap()
            );
            api.send(reqwest::Method::DELETE, &path, None);
            ensure(&api, &old);
            let stored = api.get(&path).body;
            let mut new = new;
            new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
            let a = api.send(
                reqwest::Method::PUT,
                &format!("{path}?dryRun=All"),
                Some(&new),
            );
            assert!(a.status < 300, "update {path} without policies: {}", a.body);
            (new, a.body, path)
        })
        .collect();

    // The policies, then a canary created last: once it is in force, the others are.
    for p in &policies {
        let a = api.create(p, false);
        assert!(
            a.status < 300,
            "create {}: {}",
            p["metadata"]["name"],
            a.body
        );
    }
    let canary: Vec<Value> = serde_saphyr::from_multiple(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: zz-cel-canary}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: "object.metadata.name != 'cel-canary'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: zz-cel-canary}
spec: {policyName: zz-cel-canary, validationActions: [Deny]}
"#,
    )
    .unwrap();
    for c in &canary {
        assert!(api.create(c, false).status < 300);
    }
    let probe = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cel-canary", "namespace": "cel-params"}});
    cp.wait_until(Duration::from_secs(60), "the policies in force", || {
        Ok(api.create(&probe, true).status >= 400)
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // Every object, judged by both.
    let mut failures = Vec::new();
    let (mut denied, mut warned, mut matched) = (0, 0, 0);
    // The API server's answers, for the same requests through ck8s-admission below.
    let mut native = Vec::new();
    for (o, n) in objects.iter().zip(&normal) {
        let name = format!(
            "{} {}/{}",
            o["kind"].as_str().unwrap(),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap()
        );
        let a = api.create(o, true);
        let server = Server {
            allowed: a.status < 300,
            message: a.body["message"].as_str().unwrap_or("").to_string(),
            code: a.status,
            warnings: a.warnings,
        };
        let eval = set.evaluate(&request_for(n, &namespaces), None);
        let errors = eval
            .outcomes
            .iter()
            .any(|x| x.failures.iter().any(|f| f.kind == FailureKind::Error));
        let ours = eval.decision();
        if !eval.outcomes.is_empty() {
            matched += 1;
        }
        denied += usize::from(!server.allowed);
        warned += usize::from(!server.warnings.is_empty());
        if let Err(e) = compare(&name, &ours, errors, &server) {
            failures.push(e);
        }
        native.push(server);
    }
    // Every update, judged by both (UPDATE, with the stored object as oldObject).
    let mut update_denied = 0;
    for (new, normal_new, path) in &updates {
        let stored = api.get(path).body;
        let a = api.send(
            reqwest::Method::PUT,
            &format!("{path}?dryRun=All"),
            Some(new),
        );
        let server = Server {
            allowed: a.status < 300,
            message: a.body["message"].as_str().unwrap_or("").to_string(),
            code: a.status,
            warnings: a.warnings,
        };
        let mut request = request_for(normal_new, &namespaces);
        request.operation = Operation::Update;
        request.old_object = Some(stored.into());
        request.options = Some(
            json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]})
                .into(),
        );
        let eval = set.evaluate(&request, None);
        let errors = eval
            .outcomes
            .iter()
            .any(|x| x.failures.iter().any(|f| f.kind == FailureKind::Error));
        update_denied += usize::from(!server.allowed);
        if let Err(e) = compare(&format!("UPDATE {path}"), &eval.decision(), errors, &server) {
            failures.push(e);
        }
        native.push(server);
    }
    assert!(update_denied >= 6, "{update_denied} updates denied");

    eprintln!(
        "real_cel: {} objects and {} updates x {npolicies} policies in {:.1?}: {denied} denied, {warned} with warnings, {matched} matched by a policy; {} differences",
        objects.len(),
        updates.len(),
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} objects judged differently:\n{}",
        failures.len(),
        objects.len(),
        failures.join("\n")
    );
    assert!(denied > 30 && warned > 10, "the corpus exercises little");

    for p in policies.iter().chain(&canary) {
        let (base, gvr, _) = rest(
            p["apiVersion"].as_str().unwrap(),
            p["kind"].as_str().unwrap(),
        );
        api.send(
            reqwest::Method::DELETE,
            &format!(
                "{base}/{}/{}",
                gvr.resource,
                p["metadata"]["name"].as_str().unwrap()
            ),
            None,
        );
    }

    // The same files as ck8s-admission's policies, behind the same API server, judge the
    // same requests: one source, two ways to enforce it.
    cp.wait_until(Duration::from_secs(60), "the native policies gone", || {
        Ok(api.create(&probe, true).status < 300)
    })
    .unwrap();
    let requests: Vec<Sent> = objects
        .iter()
        .map(|o| Sent::Create(o.clone()))
        .chain(
            updates
                .iter()
                .map(|(new, _, path)| Sent::Update(new.clone(), path.clone())),
        )
        .collect();
    let differences = through_the_webhook(cp, &api, &files("policies"), &requests, &native);
    assert!(
        differences.is_empty(),
        "{} of {} requests judged differently by ck8s-admission and by the API server's own VAPs:\n{}",
        differences.len(),
        requests.len(),
        differences.join("\n")
    );
}

#[test]
fn policies_the_api_server_refuses_are_refused_at_load() {
    let cp = ControlPlane::shared();
    let api = Api::new(cp);
    let mut problems = Vec::new();
    for f in files("refused") {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or("both")
            .to_string();
        let doc = yaml_docs(&f).remove(0);
        let a = api.create(&doc, true);
        let server_refused = a.status >= 400;
        let crate_error = PolicySet::load(&f.display().to_string(), &text).err();
        let got = match (server_refused, crate_error.is_some()) {
            (true, true) => "both",
            (true, false) => "server-only",
            (false, true) => "crate-only",
            (false, false) => "neither",
        };
        eprintln!(
            "{}: API server: {}\n    ck8s: {}",
            f.file_name().unwrap().to_string_lossy(),
            a.body["message"].as_str().unwrap_or("accepted"),
            crate_error
                .as_ref()
                .map_or("accepted".to_string(), |e| e.to_string())
        );
        if got != expect {
            problems.push(format!(
                "{}: expected {expect}, got {got} (API server: {})",
                f.display(),
                a.body["message"]
            ));
        }
        // Where both refuse a CEL expression, ck8s's message is the API server's.
        if let (
            true,
            Some(ck8s_policy_cel::LoadError::Compile {
                path,
                expression,
                message,
                ..
            }),
        ) = (server_refused, &crate_error)
        {
            let want =
                format!("{path}: Invalid value: {expression:?}: compilation failed: {message}");
            let msg = a.body["message"].as_str().unwrap_or("");
            if !msg.contains(&want) {
                problems.push(format!(
                    "{}: the API server says\n{msg}\nck8s says\n{want}",
                    f.display()
                ));
            }
        }
        // Where both refuse, both name the same field.
        if let (true, Some(e)) = (server_refused, &crate_error)
            && let Some(path) = e.path()
        {
            let msg = a.body["message"].as_str().unwrap_or("");
            let field = path.split('.').next_back().unwrap_or(path);
            if !msg.contains(field.split('[').next().unwrap()) {
                problems.push(format!(
                    "{}: ck8s names {path}, the API server says {msg}",
                    f.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One expression per function of the evaluator's libraries: the API server and ck8s accept
/// the same ones (a function the API server does not have is refused by ck8s at load, never
/// evaluated).
const FUNCTIONS: &[&str] = &[
    "'abc'.charAt(1) == 'b'",
    "'abc'.indexOf('b') == 1",
    "'abcb'.lastIndexOf('b') == 3",
    "'ABC'.lowerAscii() == 'abc'",
    "'abc'.upperAscii() == 'ABC'",
    "'abc'.replace('b', 'x') == 'axc'",
    "'a,b'.split(',').size() == 2",
    "'abc'.substring(1) == 'bc'",
    "' a '.trim() == 'a'",
    "['a', 'b'].join(',') == 'a,b'",
    "'abc'.reverse() == 'cba'",
    "strings.quote('a') == '\"a\"'",
    "'%s-%d'.format(['a', 1]) == 'a-1'",
    "[1, 2].isSorted()",
    "[1, 2].sum() == 3",
    "[1, 2].min() == 1",
    "[1, 2].max() == 2",
    "[1, 2].indexOf(2) == 1",
    "[1, 2, 1].lastIndexOf(1) == 2",
    "[1, 2, 3].slice(1, 2) == [2]",
    "[[1], [2]].flatten() == [1, 2]",
    "[1, 2].reverse() == [2, 1]",
    "[1, 1].distinct() == [1]",
    "[2, 1].sort() == [1, 2]",
    "lists.range(2) == [0, 1]",
    "[1, 2].first().value() == 1",
    "[1, 2].last().value() == 2",
    "sets.contains([1, 2], [1])",
    "sets.intersects([1, 2], [2])",
    "sets.equivalent([1, 2], [2, 1])",
    "'abc'.find('b') == 'b'",
    "'abcb'.findAll('b').size() == 2",
    "'a1'.matches('^a[0-9]$')",
    "isURL('https://a.example/x')",
    "url('https://a.example:8443/x?y=1').getScheme() == 'https'",
    "url('https://a.example:8443/x').getHost() == 'a.example:8443'",
    "url('https://a.example:8443/x').getHostname() == 'a.example'",
    "url('https://a.example:8443/x').getPort() == '8443'",
    "url('https://a.example/x%20y').getEscapedPath() == '/x%20y'",
    "url('https://a.example/x?y=1').getQuery().y == ['1']",
    "isIP('10.0.0.1')",
    "ip('10.0.0.1').family() == 4",
    "ip('127.0.0.1').isLoopback()",
    "ip('8.8.8.8').isGlobalUnicast()",
    "ip('224.0.0.1').isLinkLocalMulticast()",
    "ip('169.254.0.1').isLinkLocalUnicast()",
    "ip('0.0.0.0').isUnspecified()",
    "ip.isCanonical('10.0.0.1')",
    "isCIDR('10.0.0.0/8')",
    "cidr('10.0.0.0/8').containsIP(ip('10.1.2.3'))",
    "cidr('10.0.0.0/8').containsCIDR(cidr('10.1.0.0/16'))",
    "cidr('10.0.0.0/8').prefixLength() == 8",
    "cidr('10.1.2.3/8').masked() == cidr('10.0.0.0/8')",
    "cidr('10.0.0.0/8').ip() == ip('10.0.0.0')",
    "string(ip('10.0.0.1')) == '10.0.0.1'",
    "isSemver('1.2.3')",
    "semver('1.2.3').major() == 1",
    "semver('1.2.3').minor() == 2",
    "semver('1.2.3').patch() == 3",
    "semver('1.2.3').isLessThan(semver('1.3.0'))",
    "semver('1.2.3').isGreaterThan(semver('1.0.0'))",
    "semver('1.2.3').compareTo(semver('1.2.3')) == 0",
    "isQuantity('1Gi')",
    "quantity('1Gi').isGreaterThan(quantity('1Mi'))",
    "quantity('1Mi').isLessThan(quantity('1Gi'))",
    "quantity('1Gi').compareTo(quantity('1024Mi')) == 0",
    "quantity('1').add(quantity('1')) == quantity('2')",
    "quantity('2').sub(quantity('1')) == quantity('1')",
    "quantity('1').sign() == 1",
    "quantity('1').isInteger()",
    "quantity('1').asInteger() == 1",
    "quantity('1').asApproximateFloat() == 1.0",
    "format.dns1123Label().validate('abc').hasValue() == false",
    "format.named('dns1123Label').hasValue()",
    "format.labelValue().validate('a').hasValue() == false",
    "format.qualifiedName().validate('a').hasValue() == false",
    "format.uri().validate('https://a').hasValue() == false",
    "format.uuid().validate('x').hasValue()",
    "format.byte().validate('YQ==').hasValue() == false",
    "format.date().validate('2024-01-01').hasValue() == false",
    "format.datetime().validate('2024-01-01T00:00:00Z').hasValue() == false",
    "math.greatest(1, 2) == 2",
    "math.least(1, 2) == 1",
    "math.abs(-1) == 1",
    "math.sign(-2) == -1",
    "math.ceil(1.2) == 2.0",
    "math.floor(1.2) == 1.0",
    "math.round(1.5) == 2.0",
    "math.trunc(1.5) == 1.0",
    "math.sqrt(4.0) == 2.0",
    "math.isNaN(1.0) == false",
    "math.isInf(1.0) == false",
    "math.isFinite(1.0)",
    "math.bitAnd(3, 1) == 1",
    "math.bitOr(2, 1) == 3",
    "math.bitXor(3, 1) == 2",
    "math.bitNot(0) == -1",
    "math.bitShiftLeft(1, 2) == 4",
    "math.bitShiftRight(4, 2) == 1",
    "base64.encode(b'a') == 'YQ=='",
    "base64.decode('YQ==') == b'a'",
    "jsonpatch.escapeKey('a/b') == 'a~1b'",
    "timestamp('2024-01-01T00:00:00Z').getFullYear() == 2024",
    "duration('1h') > duration('1m')",
    "optional.of(1).hasValue()",
    "{'a': 1}.?b.orValue(2) == 2",
    "{'a': {'b': 1}}.?a.?b.orValue(2) == 1",
    "string(true) == 'true'",
    "string(1.5) == '1.5'",
    "string(duration('1h')) == '3600s'",
    "string(duration('1.5s')) == '1.5s'",
    "string(timestamp('2024-01-01T00:00:00Z')) == '2024-01-01T00:00:00Z'",
    "int('12') + 1 == 13",
    "[1, 2].exists_one(x, x == 1)",
    "{'a': 1}.all(k, k == 'a')",
    "'a' in {'a': 1}",
    "optional.none().orValue(1) == 1",
    "type(1) == int",
    "dyn(1) == 1",
    "bool('true')",
];

/// What the API server has and ck8s refuses as unsupported (documented exceptions).
const UNSUPPORTED: &[&str] = &["type(", "format.named("];

#[test]
fn the_api_server_and_ck8s_have_the_same_functions() {
    let cp = ControlPlane::shared();
    let api = Api::new(cp);
    let mut differ = Vec::new();
    for (i, expr) in FUNCTIONS.iter().enumerate() {
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": format!("cel-function-{i}")},
            "spec": {
                "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["deployments"]}]},
                "validations": [{"expression": expr}]
            }
        });
        let server = api.create(&policy, true);
        let ours = PolicySet::load("function", &policy.to_string());
        let server_ok = server.status < 300;
        // Refused by ck8s as unsupported, never evaluated wrongly (policies/cel/README.md).
        if server_ok
            && matches!(ours, Err(ck8s_policy_cel::LoadError::Unsupported { .. }))
            && UNSUPPORTED.iter().any(|u| expr.starts_with(u))
        {
            continue;
        }
        if server_ok != ours.is_ok() {
            differ.push(format!(
                "{expr}: API server {}, ck8s {}",
                if server_ok {
                    "accepts".to_string()
                } else {
                    server.body["message"].to_string()
                },
                ours.err().map_or("accepts".to_string(), |e| e.to_string())
            ));
        }
        // Where both accept, both evaluate it to true.
        if server_ok && let Ok(v) = ck8s_policy_cel::evaluate_expression(expr, &[]) {
            if !matches!(v, ck8s_policy_cel::cel::Value::Bool(true)) {
                differ.push(format!("{expr}: ck8s evaluates it to {v:?}"));
            }
        } else if server_ok {
            differ.push(format!(
                "{expr}: ck8s cannot evaluate it: {:?}",
                ck8s_policy_cel::evaluate_expression(expr, &[])
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} differences:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

/// A request of the oracle test, sent again through ck8s-admission.
enum Sent {
    /// A dry-run create of the object.
    Create(Value),
    /// A dry-run PUT of the new object at the stored object's path.
    Update(Value, String),
}

/// Registers ck8s-admission, serving the corpus files from `--policies DIR` (no built-ins,
/// ratcheting off: the API server has none), for the kinds of `requests`, sends each request
/// again and compares the answer with the API server's own (`native`, in order): the same
/// decision, a denial that contains the API server's message, the same warnings. Returns the
/// differences.
fn through_the_webhook(
    cp: &ControlPlane,
    api: &Api,
    corpus: &[PathBuf],
    requests: &[Sent],
    native: &[Server],
) -> Vec<String> {
    use base64::Engine;
    use ck8s_tests::cluster_webhook::{Ck8s, certs, webhook_port};
    let mut files: Vec<(String, Vec<u8>)> = corpus
        .iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(f).unwrap(),
            )
        })
        .collect();
    // A canary of its own: once ck8s-admission denies it, the configuration is in force.
    files.push((
        "zz-canary.yaml".into(),
        br#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: zz-ck8s-canary}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: "object.metadata.name != 'ck8s-canary'"
"#
        .to_vec(),
    ));
    let mut config = String::from("policies:\n");
    for (_, text) in &files {
        for d in serde_saphyr::from_slice_multiple::<Value>(text).unwrap() {
            if d["kind"] == "ValidatingAdmissionPolicy" {
                config.push_str(&format!(
                    "  {}: {{allowExistingViolations: false}}\n",
                    d["metadata"]["name"].as_str().unwrap()
                ));
            }
        }
    }
    let policies: Vec<(&str, Vec<u8>)> =
        files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig().display());
    let ck8s = Ck8s::start(&config, &policies, &["--no-builtin", &kubeconfig]);

    // Every kind the requests hold, in every namespace but the control plane's own.
    let mut rules: Vec<Value> = Vec::new();
    for r in requests {
        let o = match r {
            Sent::Create(o) | Sent::Update(o, _) => o,
        };
        let (_, gvr, _) = rest(
            o["apiVersion"].as_str().unwrap(),
            o["kind"].as_str().unwrap(),
        );
        let rule = json!({"apiGroups": [gvr.group], "apiVersions": [gvr.version],
            "resources": [gvr.resource], "operations": ["CREATE", "UPDATE"], "scope": "*"});
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    let vwc = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "ck8s-cel"},
        "webhooks": [{"name": "cel.ck8s.test",
            "clientConfig": {"url": format!("https://127.0.0.1:{}/validate", webhook_port()),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&certs().ca_pem)},
            "rules": rules,
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                "operator": "NotIn", "values": ["kube-system", "kube-node-lease", "kube-public"]}]},
            "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"]}]});
    let created = api.create(&vwc, false);
    assert!(
        created.status < 300,
        "register ck8s-admission: {}",
        created.body
    );
    let canary = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ck8s-canary", "namespace": "cel-params"}});
    cp.wait_until(Duration::from_secs(60), "ck8s-admission in force", || {
        let a = api.create(&canary, true);
        Ok(a.status >= 400
            && a.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("zz-ck8s-canary"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", ck8s.log()));

    let mut differences = Vec::new();
    for (r, theirs) in requests.iter().zip(native) {
        let (answer, name) = match r {
            Sent::Create(o) => (
                api.create(o, true),
                format!(
                    "{} {}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap()
                ),
            ),
            Sent::Update(o, path) => (
                api.send(reqwest::Method::PUT, &format!("{path}?dryRun=All"), Some(o)),
                format!("UPDATE {path}"),
            ),
        };
        let ours = Server {
            allowed: answer.status < 300,
            message: answer.body["message"].as_str().unwrap_or("").to_string(),
            code: answer.status,
            warnings: answer.warnings,
        };
        if !ours.allowed
            && !ours
                .message
                .contains("admission webhook \"cel.ck8s.test\" denied")
        {
            differences.push(format!(
                "{name}: not denied by ck8s-admission: {}",
                ours.message
            ));
        } else if let Err(e) = same_answer(&name, &ours, theirs) {
            differences.push(e);
        }
    }
    api.send(
        reqwest::Method::DELETE,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/ck8s-cel",
        None,
    );
    eprintln!(
        "real_cel: {} requests through ck8s-admission: {} differences",
        requests.len(),
        differences.len()
    );
    differences
}

/// The webhook's answer (`ours`) against the API server's own VAPs' (`theirs`).
fn same_answer(name: &str, ours: &Server, theirs: &Server) -> Result<(), String> {
    let mut problems = Vec::new();
    if ours.allowed != theirs.allowed {
        problems.push(format!(
            "decision: ck8s-admission allowed={} ({}), API server allowed={} ({})",
            ours.allowed, ours.message, theirs.allowed, theirs.message
        ));
    } else if !theirs.allowed {
        // From `ValidatingAdmissionPolicy '...` on: the API server puts its own prefix
        // (`<resource> "<name>" is forbidden: `, `admission webhook "..." denied the request: `).
        let vap = |m: &str| {
            m.find("ValidatingAdmissionPolicy '")
                .map(|i| m[i..].to_string())
                .unwrap_or_else(|| m.to_string())
        };
        let expected = vap(&theirs.message);
        // Evaluation errors are worded by each CEL implementation: the policy, binding and
        // expression must agree.
        let head = |m: &str| {
            m.split(" denied request: ")
                .next()
                .unwrap_or("")
                .to_string()
        };
        let same_error = expected.contains("resulted in error")
            && ours
                .message
                .contains(&format!("{} denied request: ", head(&expected)));
        if !ours.message.contains(&expected) && !same_error {
            problems.push(format!(
                "message: the API server's {expected:?} is not in ck8s-admission's {:?}",
                ours.message
            ));
        }
    }
    let vap_warnings = |s: &Server| {
        let mut w: Vec<String> = s
            .warnings
            .iter()
            .filter(|w| w.contains("ValidatingAdmissionPolicy"))
            .cloned()
            .collect();
        w.sort();
        w
    };
    if theirs.allowed && vap_warnings(ours) != vap_warnings(theirs) {
        problems.push(format!(
            "warnings: API server {:?}, ck8s-admission {:?}",
            vap_warnings(theirs),
            vap_warnings(ours)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}:\n    {}", problems.join("\n    ")))
    }
}

/// A policy and its binding (one YAML text, both named `name`) in force in the API server and
/// loaded by ck8s, to judge the same objects on both sides; deleted from the API server on drop.
struct OnBothSides<'a> {
    api: &'a Api,
    name: &'static str,
    set: PolicySet,
}

impl<'a> OnBothSides<'a> {
    fn install(api: &'a Api, name: &'static str, text: &str) -> Self {
        let files: Vec<Value> = serde_saphyr::from_multiple(text).unwrap();
        for f in &files {
            ensure(api, f);
        }
        let set = PolicySet::load(name, text).unwrap();
        OnBothSides { api, name, set }
    }

    /// ck8s's decision on a dry-run CREATE of `object`.
    fn ck8s(&self, object: &Value) -> Decision {
        let no_namespaces = BTreeMap::new();
        self.set
            .evaluate(&request_for(object, &no_namespaces), None)
            .decision()
    }
}

impl Drop for OnBothSides<'_> {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicies",
        ] {
            self.api.send(
                reqwest::Method::DELETE,
                &format!("/apis/admissionregistration.k8s.io/v1/{kind}/{}", self.name),
                None,
            );
        }
    }
}

/// The same storage under another group: the API server judges an `events.k8s.io/v1` Event by
/// a policy on core Events (converted), so ck8s must not let it through unjudged either.
#[test]
fn the_other_group_of_a_resource_is_not_let_through_unjudged() {
    let cp = ControlPlane::shared();
    let api = Api::new(cp);
    ensure(
        &api,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cel-events"}}),
    );
    let text = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: cel-core-event-reason}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [events]}
  validations:
  - expression: object.reason != 'Refused'
    message: the reason Refused is refused
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: cel-core-event-reason}
spec: {policyName: cel-core-event-reason, validationActions: [Deny]}
"#;
    let policy = OnBothSides::install(&api, "cel-core-event-reason", text);
    let core = |reason: &str| {
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "cel-events"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "cel-events"},
            "reason": reason, "message": "m", "type": "Normal"})
    };
    let new_api = |reason: &str| {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "cel-events"},
            "eventTime": "2026-12-04T00:00:00.000000Z", "reportingController": "ck8s.dev/test",
            "reportingInstance": "test-1", "action": "Tested", "reason": reason, "type": "Normal",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "cel-events"}, "note": "m"})
    };
    cp.wait_until(Duration::from_secs(60), "the Event policy in force", || {
        Ok(api.create(&core("Refused"), true).status >= 400)
    })
    .unwrap();

    let judged = |object: &Value| policy.ck8s(object);

    // The API server converts the events.k8s.io Event and denies it by the core policy...
    let refused = new_api("Refused");
    let server = api.create(&refused, true);
    assert!(
        server.status >= 400
            && server.body["message"]
                .to_string()
                .contains("the reason Refused is refused"),
        "the API server judges an events.k8s.io/v1 Event by the core Events policy: {} {}",
        server.status,
        server.body
    );
    // ... and ck8s does not let it through either.
    let ours = judged(&refused);
    assert!(!ours.allowed, "{ours:?}");
    assert!(
        ours.denials[0]
            .message
            .contains("send the object as v1 (the core group)"),
        "{ours:?}"
    );
    // As a core Event, both judge it the same.
    let ours = judged(&core("Refused"));
    assert!(
        !ours.allowed
            && ours.denials[0]
                .message
                .contains("the reason Refused is refused")
    );
    assert!(api.create(&core("Tested"), true).status < 300);
    assert!(judged(&core("Tested")).allowed);
    // The documented difference, as for versions: ck8s cannot convert, so an allowed
    // events.k8s.io Event is an error too.
    assert!(api.create(&new_api("Tested"), true).status < 300);
    assert!(!judged(&new_api("Tested")).allowed);
}

/// `matchPolicy: Equivalent` across versions, which ck8s cannot do (no conversion): the API
/// server judges an `autoscaling/v1` HorizontalPodAutoscaler by a policy written for
/// `autoscaling/v2`, converted. Before, ck8s let such a request pass unjudged: a way around any
/// policy that names one version. Now it is an error that names the version to send, under the
/// policy's `failurePolicy` (Fail: denied), where the API server would judge the converted
/// object (policies/cel/README.md, "Known differences").
#[test]
fn a_resource_sent_in_another_version_is_not_let_through_unjudged() {
    let cp = ControlPlane::shared();
    let api = Api::new(cp);
    ensure(
        &api,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cel-versions"}}),
    );
    let text = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: cel-hpa-v2-max}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [autoscaling], apiVersions: [v2], operations: [CREATE], resources: [horizontalpodautoscalers]}
  validations:
  - expression: object.spec.maxReplicas <= 10
    message: at most 10 replicas
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: cel-hpa-v2-max}
spec: {policyName: cel-hpa-v2-max, validationActions: [Deny]}
"#;
    let policy = OnBothSides::install(&api, "cel-hpa-v2-max", text);
    let hpa = |version: &str, max: u32| {
        json!({"apiVersion": format!("autoscaling/{version}"), "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "cel-versions"},
            "spec": {"minReplicas": 1, "maxReplicas": max,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}})
    };
    cp.wait_until(Duration::from_secs(60), "the HPA policy in force", || {
        Ok(api.create(&hpa("v2", 50), true).status >= 400)
    })
    .unwrap();

    let judged = |object: &Value| policy.ck8s(object);

    // The API server converts the v1 object and denies it by the v2 policy's rule...
    let over = hpa("v1", 50);
    let server = api.create(&over, true);
    assert!(
        server.status >= 400
            && server.body["message"]
                .to_string()
                .contains("at most 10 replicas"),
        "the API server judges an autoscaling/v1 HPA by the autoscaling/v2 policy: {} {}",
        server.status,
        server.body
    );
    // ... and ck8s does not let it through either.
    let ours = judged(&over);
    assert!(!ours.allowed, "{ours:?}");
    assert!(
        ours.denials[0]
            .message
            .contains("send the object as autoscaling/v2"),
        "{ours:?}"
    );
    // Sent as v2, both judge it the same.
    let ours = judged(&hpa("v2", 50));
    assert!(!ours.allowed && ours.denials[0].message.contains("at most 10 replicas"));
    let within = hpa("v2", 5);
    assert!(api.create(&within, true).status < 300);
    assert!(judged(&within).allowed);
    // The documented difference: a v1 object the converted check would allow is still an
    // error for ck8s (it cannot convert), and the message says what to send.
    assert!(api.create(&hpa("v1", 5), true).status < 300);
    assert!(!judged(&hpa("v1", 5)).allowed);
}
