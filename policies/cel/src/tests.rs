//! Table-driven tests of the whole flow: load, match, evaluate, decide.

use crate::*;
use serde_json::json;

fn deployment(replicas: i64, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team-a", "labels": labels},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "app", "image": "registry.example/app:1.2"}
        ]}}}
    })
}

fn req(object: serde_json::Value) -> Request<'static> {
    let mut r = Request::for_object(Operation::Create, object);
    r.namespace_object = Some(
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"env": "prod"}}})
        .into(),
    );
    r
}

const HEAD: &str = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n";
const RULES: &str = "  matchConstraints:\n    resourceRules:\n    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}\n";

fn policy(name: &str, body: &str) -> String {
    format!("{HEAD}metadata: {{name: {name}}}\nspec:\n{RULES}{body}")
}

fn binding(name: &str, policy: &str, actions: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: {name}}}\nspec:\n  policyName: {policy}\n  validationActions: {actions}\n{extra}"
    )
}

#[test]
fn decisions() {
    struct Case {
        name: &'static str,
        yaml: String,
        object: serde_json::Value,
        allowed: bool,
        messages: &'static [&'static str],
        warnings: &'static [&'static str],
    }
    let max5 = "  validations:\n  - expression: object.spec.replicas <= 5\n    message: at most 5 replicas\n";
    let cases = vec![
        Case {
            name: "no binding: denied with the policy's message",
            yaml: policy("max", max5),
            object: deployment(7, json!({})),
            allowed: false,
            messages: &["ValidatingAdmissionPolicy 'max' denied request: at most 5 replicas"],
            warnings: &[],
        },
        Case {
            name: "no binding: allowed",
            yaml: policy("max", max5),
            object: deployment(3, json!({})),
            allowed: true,
            messages: &[],
            warnings: &[],
        },
        Case {
            name: "default message",
            yaml: policy(
                "max",
                "  validations:\n  - expression: \" object.spec.replicas <= 5 \"\n",
            ),
            object: deployment(7, json!({})),
            allowed: false,
            messages: &[
                "ValidatingAdmissionPolicy 'max' denied request: failed expression: object.spec.replicas <= 5",
            ],
            warnings: &[],
        },
        Case {
            name: "Warn binding",
            yaml: policy("max", max5) + &binding("max-b", "max", "[Warn]", ""),
            object: deployment(7, json!({})),
            allowed: true,
            messages: &[],
            warnings: &[
                "Validation failed for ValidatingAdmissionPolicy 'max' with binding 'max-b': at most 5 replicas",
            ],
        },
        Case {
            name: "Deny binding names the binding",
            yaml: policy("max", max5) + &binding("max-b", "max", "[Deny, Audit]", ""),
            object: deployment(7, json!({})),
            allowed: false,
            messages: &[
                "ValidatingAdmissionPolicy 'max' with binding 'max-b' denied request: at most 5 replicas",
            ],
            warnings: &[],
        },
        Case {
            name: "binding's matchResources narrows (namespaceSelector)",
            yaml: policy("max", max5)
                + &binding(
                    "max-b",
                    "max",
                    "[Deny]",
                    "  matchResources:\n    namespaceSelector: {matchLabels: {env: dev}}\n",
                ),
            object: deployment(7, json!({})),
            allowed: true,
            messages: &[],
            warnings: &[],
        },
        Case {
            name: "objectSelector",
            yaml: policy("max", &format!("{max5}  # selector\n")).replace(
                "  matchConstraints:\n",
                "  matchConstraints:\n    objectSelector: {matchLabels: {tier: web}}\n",
            ),
            object: deployment(7, json!({"tier": "db"})),
            allowed: true,
            messages: &[],
            warnings: &[],
        },
        Case {
            name: "messageExpression, variables",
            yaml: policy(
                "max",
                "  variables:\n  - {name: r, expression: object.spec.replicas}\n  - {name: big, expression: variables.r > 5}\n  validations:\n  - expression: '!variables.big'\n    messageExpression: \"'replicas ' + string(variables.r) + ' > 5'\"\n",
            ),
            object: deployment(9, json!({})),
            allowed: false,
            messages: &["ValidatingAdmissionPolicy 'max' denied request: replicas 9 > 5"],
            warnings: &[],
        },
        Case {
            name: "messageExpression with an error falls back to message",
            yaml: policy(
                "max",
                "  validations:\n  - expression: object.spec.replicas <= 5\n    message: fallback\n    messageExpression: object.nosuch\n",
            ),
            object: deployment(9, json!({})),
            allowed: false,
            messages: &["ValidatingAdmissionPolicy 'max' denied request: fallback"],
            warnings: &[],
        },
        Case {
            name: "matchConditions false skips",
            yaml: policy(
                "max",
                &format!(
                    "  matchConditions:\n  - {{name: labelled, expression: \"'x' in object.metadata.labels\"}}\n{max5}"
                ),
            ),
            object: deployment(9, json!({})),
            allowed: true,
            messages: &[],
            warnings: &[],
        },
        Case {
            name: "error with failurePolicy Fail denies",
            yaml: policy(
                "max",
                "  validations:\n  - expression: object.spec.nosuch > 1\n",
            ),
            object: deployment(1, json!({})),
            allowed: false,
            messages: &[
                "ValidatingAdmissionPolicy 'max' denied request: expression 'object.spec.nosuch > 1' resulted in error: No such key: nosuch",
            ],
            warnings: &[],
        },
        Case {
            name: "error with failurePolicy Ignore allows",
            yaml: policy(
                "max",
                "  failurePolicy: Ignore\n  validations:\n  - expression: object.spec.nosuch > 1\n",
            ),
            object: deployment(1, json!({})),
            allowed: true,
            messages: &[],
            warnings: &[],
        },
        Case {
            name: "params from a ConfigMap beside the policy",
            yaml: policy(
                "max",
                "  paramKind: {apiVersion: v1, kind: ConfigMap}\n  validations:\n  - expression: object.spec.replicas <= int(params.data.max)\n    messageExpression: \"'at most ' + params.data.max\"\n",
            ) + &binding(
                "max-b",
                "max",
                "[Deny]",
                "  paramRef: {name: limits, namespace: ck8s, parameterNotFoundAction: Deny}\n",
            ) + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: limits, namespace: ck8s}\ndata: {max: \"4\"}\n",
            object: deployment(5, json!({})),
            allowed: false,
            messages: &[
                "ValidatingAdmissionPolicy 'max' with binding 'max-b' denied request: at most 4",
            ],
            warnings: &[],
        },
        Case {
            name: "params not found, Allow",
            yaml: policy(
                "max",
                "  paramKind: {apiVersion: v1, kind: ConfigMap}\n  validations:\n  - expression: object.spec.replicas <= int(params.data.max)\n",
            ) + &binding(
                "max-b",
                "max",
                "[Deny]",
                "  paramRef: {name: nope, namespace: ck8s, parameterNotFoundAction: Allow}\n",
            ),
            object: deployment(5, json!({})),
            allowed: true,
            messages: &[],
            warnings: &[],
        },
        Case {
            name: "params not found, Deny",
            yaml: policy(
                "max",
                "  paramKind: {apiVersion: v1, kind: ConfigMap}\n  validations:\n  - expression: object.spec.replicas <= int(params.data.max)\n",
            ) + &binding(
                "max-b",
                "max",
                "[Deny]",
                "  paramRef: {name: nope, namespace: ck8s, parameterNotFoundAction: Deny}\n",
            ),
            object: deployment(5, json!({})),
            allowed: false,
            messages: &[
                "ValidatingAdmissionPolicy 'max' with binding 'max-b' denied request: no params found for policy binding with `Deny` parameterNotFoundAction",
            ],
            warnings: &[],
        },
        Case {
            name: "Kubernetes libraries",
            yaml: policy(
                "libs",
                "  validations:\n  - expression: object.spec.template.spec.containers.all(c, c.image.split(':')[1] != 'latest' && url('https://' + c.image).getHost() == 'registry.example')\n    reason: Forbidden\n",
            ),
            object: deployment(1, json!({})),
            allowed: true,
            messages: &[],
            warnings: &[],
        },
    ];
    for c in cases {
        let set = PolicySet::load(c.name, &c.yaml).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let d = set.evaluate(&req(c.object.clone()), None).decision();
        let messages: Vec<&str> = d.denials.iter().map(|x| x.message.as_str()).collect();
        assert_eq!(d.allowed, c.allowed, "{}: {d:?}", c.name);
        assert_eq!(messages, c.messages, "{}", c.name);
        assert_eq!(d.warnings, c.warnings, "{}", c.name);
    }
}

#[test]
fn load_refusals() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "syntax",
            policy(
                "p",
                "  validations:\n  - expression: object.spec.replicas <=\n",
            ),
            "spec.validations[0].expression",
        ),
        (
            "unknown variable",
            policy(
                "p",
                "  validations:\n  - expression: objekt.spec.replicas <= 5\n",
            ),
            "spec.validations[0].expression",
        ),
        (
            "params without paramKind",
            policy("p", "  validations:\n  - expression: params.x == 1\n"),
            "spec.validations[0].expression",
        ),
        (
            "authorizer",
            policy(
                "p",
                "  validations:\n  - expression: authorizer.requestResource.check('get').allowed()\n",
            ),
            "spec.validations[0].expression",
        ),
        (
            "messageExpression",
            policy(
                "p",
                "  validations:\n  - expression: 'true'\n    messageExpression: \"'a' +\"\n",
            ),
            "spec.validations[0].messageExpression",
        ),
        (
            "matchCondition",
            policy(
                "p",
                "  matchConditions:\n  - {name: x, expression: nosuchfn(1)}\n  validations:\n  - expression: 'true'\n",
            ),
            "spec.matchConditions[0].expression",
        ),
        (
            "variable order",
            policy(
                "p",
                "  variables:\n  - {name: a, expression: variables.b}\n  - {name: b, expression: '1'}\n  validations:\n  - expression: 'true'\n",
            ),
            "spec.variables[0].expression",
        ),
        (
            "audit annotation",
            policy(
                "p",
                "  auditAnnotations:\n  - {key: k, valueExpression: \"object.metadata.name +\"}\n",
            ),
            "spec.auditAnnotations[0].valueExpression",
        ),
        (
            "no validations",
            policy("p", "  failurePolicy: Fail\n"),
            "spec.validations",
        ),
        (
            "bad reason",
            policy(
                "p",
                "  validations:\n  - {expression: 'true', reason: Nope}\n",
            ),
            "spec.validations[0].reason",
        ),
        (
            "Deny and Warn",
            policy("p", "  validations:\n  - expression: 'true'\n")
                + &binding("b", "p", "[Deny, Warn]", ""),
            "spec.validationActions",
        ),
        (
            "paramRef without action",
            policy("p", "  validations:\n  - expression: 'true'\n")
                + &binding("b", "p", "[Deny]", "  paramRef: {name: x}\n"),
            "spec.paramRef.parameterNotFoundAction",
        ),
    ];
    for (name, yaml, path) in cases {
        let e = PolicySet::load(name, &yaml).expect_err(name);
        assert_eq!(e.path(), Some(path), "{name}: {e}");
    }
}

#[test]
fn a_policy_or_binding_defined_twice_is_refused() {
    let p = policy("p", "  validations:\n  - expression: 'true'\n");
    let b = binding("b", "p", "[Deny]", "");
    for (yaml, want) in [
        (
            format!("{p}---\n{p}"),
            "ValidatingAdmissionPolicy \"p\" is defined twice",
        ),
        (
            p + &b + &b,
            "ValidatingAdmissionPolicyBinding \"b\" is defined twice",
        ),
    ] {
        let e = PolicySet::load("twice.yaml", &yaml).expect_err(want);
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn compile_error_reads_like_the_api_server() {
    let e = PolicySet::load(
        "f",
        &policy(
            "p",
            "  validations:\n  - expression: object.spec.replicas <=\n",
        ),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("ValidatingAdmissionPolicy \"p\" is invalid: spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": compilation failed: ERROR: <input>:1:"),
        "{text}"
    );
    let LoadError::Compile { line, column, .. } = e else {
        panic!()
    };
    assert_eq!(line, 1);
    assert!(column >= 21, "{column}");
}

#[test]
fn a_failed_load_leaves_the_set_unchanged() {
    let mut set = PolicySet::load(
        "a",
        &policy("a", "  validations:\n  - expression: 'true'\n"),
    )
    .unwrap();
    let bad = policy("b", "  validations:\n  - expression: 'true'\n")
        + "---\n"
        + &policy("c", "  validations:\n  - expression: x\n");
    assert!(set.add("b", &bad).is_err());
    assert_eq!(set.policies.len(), 1);
}

#[test]
fn audit_annotations_and_ratchet_key() {
    let yaml = policy(
        "p",
        "  validations:\n  - expression: object.spec.replicas <= 5\n  auditAnnotations:\n  - {key: replicas, valueExpression: string(object.spec.replicas)}\n",
    ) + &binding("b", "p", "[Audit]", "");
    let set = PolicySet::load("f", &yaml).unwrap();
    let new = set.evaluate(&req(deployment(8, json!({}))), None);
    let old = set.evaluate(&req(deployment(7, json!({}))), None);
    let d = new.decision();
    assert!(d.allowed);
    assert_eq!(d.audit.len(), 1);
    assert_eq!(
        d.annotations,
        vec![("p/replicas".to_string(), "8".to_string())]
    );
    let f = &new.outcomes[0].failures[0];
    assert!(new.outcomes[0].inherited(f, &old.outcomes[0]));
}

#[test]
fn runaway_expressions_are_cut_off() {
    let yaml = policy(
        "p",
        "  validations:\n  - expression: object.spec.items.all(a, object.spec.items.all(b, object.spec.items.all(c, a + b + c >= 0)))\n",
    );
    let set = PolicySet::load("f", &yaml).unwrap();
    let items: Vec<i64> = (0..1000).collect();
    let mut o = deployment(1, json!({}));
    o["spec"]["items"] = json!(items);
    let t = std::time::Instant::now();
    let d = set.evaluate(&req(o), None).decision();
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
    assert!(!d.allowed);
    assert!(d.denial.unwrap().message.contains("operation cancelled"));
}

/// An object above `Limits::max_object_bytes` of JSON is an evaluation error, measured as
/// the JSON text it is (escapes included), not as its characters.
#[test]
fn objects_above_the_size_bound_are_an_error() {
    let yaml = policy("p", "  validations:\n  - expression: 'true'\n");
    let mut set = PolicySet::load("f", &yaml).unwrap();
    set.limits.max_object_bytes = 2000;
    let with = |text: String| {
        let mut o = deployment(1, json!({}));
        o["metadata"]["annotations"] = json!({"note": text});
        set.evaluate(&req(o), None).decision()
    };
    assert!(with("x".repeat(1000)).allowed);
    // 1000 quotes are 2000 bytes of JSON text.
    let d = with("\"".repeat(1000));
    assert!(!d.allowed);
    let message = d.denial.unwrap().message;
    assert!(
        message.contains("above ck8s's bound of 2000 bytes"),
        "{message}"
    );
}

/// The cost bound counts what an expression reads: a variable holding one small list is
/// bounded by that list, not by the object's largest (a 4 KB Deployment with 40 env entries
/// was refused with nested comprehensions over such a variable, where the API server
/// allows it). A variable over the bound names itself in the error of what reads it.
#[test]
fn the_cost_bound_counts_what_an_expression_reads() {
    let yaml = policy(
        "p",
        "  variables:\n  - name: refs\n    expression: \"object.spec.template.spec.containers.map(c, c.env.filter(e, e.name == 'REF').map(e, e.value))\"\n  - name: bad\n    expression: \"variables.refs.map(l, l.filter(v, v.split('/').exists(p, p.startsWith('.')) || v.contains('..') || v.startsWith('-') || v.endsWith('.') || v.contains('//') || v.contains('@{') || v.endsWith('/') || v.startsWith('/'))).filter(l, size(l) > 0)\"\n  validations:\n  - expression: size(variables.bad) == 0\n",
    );
    let set = PolicySet::load("f", &yaml).unwrap();
    let mut o = deployment(1, json!({}));
    let env: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": "some-value-of-a-setting"}))
        .chain([json!({"name": "REF", "value": "main"})])
        .collect();
    o["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
    let d = set.evaluate(&req(o.clone()), None).decision();
    assert!(d.allowed, "{d:?}");
    o["spec"]["template"]["spec"]["containers"][0]["env"][200]["value"] = json!("-b x");
    assert!(!set.evaluate(&req(o.clone()), None).decision().allowed);

    // Over the bound in the variable: the validation that reads it says which and why.
    let set = PolicySet {
        limits: Limits {
            cost: 10.0,
            ..Limits::default()
        },
        ..PolicySet::load("f", &yaml).unwrap()
    };
    let d = set.evaluate(&req(o), None).decision();
    let message = d.denial.unwrap().message;
    assert!(
        message.contains(
            "resulted in error: variable 'bad': variable 'refs': operation cancelled: estimated cost"
        ),
        "{message}"
    );
}

/// The fast path (`fast.rs`) against the `cel` crate on every expression of the corpus
/// (`testdata/policies`) and every object of `testdata/objects.json`, as CREATE and as an
/// UPDATE of itself: where the fast path answers, the same value of the same type; and the
/// three built-in rules evaluated on the fast path alone.
#[test]
fn the_fast_path_agrees_with_the_cel_crate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut set = PolicySet::default();
    let mut files: Vec<_> = std::fs::read_dir(dir.join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in &files {
        set.add(
            &f.display().to_string(),
            &std::fs::read_to_string(f).unwrap(),
        )
        .unwrap();
    }
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("objects.json")).unwrap()).unwrap();
    crate::fast::check::start();
    for o in &objects {
        for op in [Operation::Create, Operation::Update] {
            let mut r = Request::for_object(op, o.clone());
            if op == Operation::Update {
                r.old_object = Some(o.clone().into());
            }
            if !r.namespace.is_empty() && r.kind.kind != "Namespace" {
                r.namespace_object = Some(
                    json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": r.namespace, "labels": {"env": "prod"}}})
                    .into(),
                );
            }
            set.evaluate(&r, None);
        }
    }
    let log = crate::fast::check::finish();
    assert!(log.differences.is_empty(), "{:#?}", log.differences);
    assert!(
        log.fast > 10 * log.slow,
        "the fast path answered {} evaluations, the cel crate {}: {:#?}",
        log.fast,
        log.slow,
        log.slow_sources
    );

    // The built-in rules, on the 4 KB Deployment the benchmark judges.
    let mut builtins = PolicySet::default();
    for f in files
        .iter()
        .filter(|f| f.display().to_string().contains("-ck8s-"))
    {
        builtins
            .add(
                &f.display().to_string(),
                &std::fs::read_to_string(f).unwrap(),
            )
            .unwrap();
    }
    assert_eq!(builtins.policies.len(), 3);
    let deployment: serde_json::Value =
        serde_json::from_str(include_str!("../../runtime/benches/deployment-4k.json")).unwrap();
    let mut r = Request::for_object(Operation::Create, deployment);
    r.namespace_object = Some(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "codex-k8s-prod", "labels": {"kubernetes.io/metadata.name": "codex-k8s-prod"}}}).into());
    crate::fast::check::start();
    let d = builtins.evaluate(&r, None).decision();
    let log = crate::fast::check::finish();
    assert!(d.allowed, "{d:?}");
    assert!(log.differences.is_empty(), "{:#?}", log.differences);
    assert_eq!(log.slow, 0, "{:#?}", log.slow_sources);
    assert!(log.fast >= 8, "{log:?}");
}

#[test]
fn a_resource_sent_in_a_version_the_rules_leave_out_follows_the_failure_policy() {
    let hpa_policy = |failure: &str| {
        format!(
            "{HEAD}metadata: {{name: hpa-max}}\nspec:\n  failurePolicy: {failure}\n  matchConstraints:\n    resourceRules:\n    - {{apiGroups: [autoscaling], apiVersions: [v2], operations: [CREATE], resources: [horizontalpodautoscalers]}}\n  validations:\n  - expression: object.spec.maxReplicas <= 10\n    message: at most 10 replicas\n"
        )
    };
    let hpa = |version: &str| {
        json!({"apiVersion": format!("autoscaling/{version}"), "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"maxReplicas": 50, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}})
    };
    let fail = PolicySet::load("hpa", &hpa_policy("Fail")).unwrap();
    let d = fail.evaluate(&req(hpa("v2")), None).decision();
    assert!(!d.allowed);
    assert!(
        d.denials[0].message.contains("at most 10 replicas"),
        "{d:?}"
    );
    // Written as autoscaling/v1, the API server would judge it converted to v2; ck8s cannot
    // convert, and does not let it through unjudged either.
    let d = fail.evaluate(&req(hpa("v1")), None).decision();
    assert!(!d.allowed, "{d:?}");
    assert!(
        d.denials[0]
            .message
            .contains("send the object as autoscaling/v2"),
        "{d:?}"
    );
    let ignore = PolicySet::load("hpa", &hpa_policy("Ignore")).unwrap();
    let d = ignore.evaluate(&req(hpa("v1")), None).decision();
    assert!(d.allowed, "{d:?}");
}
