//! What the API server sends a webhook: its `matchConditions` evaluated as the API server
//! evaluates them, with ck8s's CEL evaluator. One place for `admission lint` (is a webhook
//! sent the control plane's writes?) and `policy audit` (which kinds does ck8s-admission
//! judge?).

use ck8s_policy_runtime::cel::{cel::Value, evaluate_expression};

/// A write the webhook may be sent: an UPDATE of an unlabelled object of this kind.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub kind: &'a str,
    /// `None`: cluster-scoped (or any namespace).
    pub namespace: Option<&'a str>,
}

/// Whether `conditions` (`(name, expression)`) let `write` through to the webhook. The API
/// server skips the webhook when any condition is false; a condition that errors (one
/// calling `authorizer`, which cannot be evaluated here, or a broken one) refuses the
/// request under `Fail` and skips the webhook under `Ignore`: `fail_closed` says which.
pub fn conditions_send(conditions: &[(String, String)], write: Write, fail_closed: bool) -> bool {
    let Write {
        group,
        version,
        resource,
        kind,
        namespace,
    } = write;
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let namespace = namespace.unwrap_or_default();
    let object = serde_json::json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": "ck8s-probe", "namespace": namespace}});
    let request = serde_json::json!({
        "uid": "ck8s-probe", "operation": "UPDATE", "name": "ck8s-probe",
        "namespace": namespace, "subResource": "", "dryRun": false,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "userInfo": {"username": "system:kube-controller-manager", "groups": ["system:authenticated"]},
    });
    let vars = [
        ("request", request),
        ("object", object.clone()),
        ("oldObject", object),
    ];
    let mut errored = false;
    for (_, expression) in conditions {
        match evaluate_expression(expression, &vars) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => return false,
            _ => errored = true,
        }
    }
    !errored || fail_closed
}

/// Whether a condition of `conditions` cannot be evaluated here on any write (it errors):
/// its name and expression, for a note.
pub fn unevaluable<'c>(
    conditions: &'c [(String, String)],
    write: Write,
) -> Vec<&'c (String, String)> {
    conditions
        .iter()
        .filter(|c| {
            conditions_send(std::slice::from_ref(*c), write, true)
                && !conditions_send(std::slice::from_ref(*c), write, false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;

    fn write<'a>(group: &'a str, resource: &'a str, kind: &'a str) -> Write<'a> {
        Write {
            group,
            version: "v1",
            resource,
            kind,
            namespace: Some("default"),
        }
    }

    /// deploy/'s conditions: the control plane's writes skip ck8s-admission, workloads do not.
    #[test]
    fn the_shipped_conditions_as_the_api_server_evaluates_them() {
        let vwc: ValidatingWebhookConfiguration = serde_saphyr::from_str(include_str!(
            "../../../deploy/base/validatingwebhookconfiguration.yaml"
        ))
        .unwrap();
        let conditions: Vec<(String, String)> = vwc.webhooks.unwrap()[0]
            .match_conditions
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.expression.clone()))
            .collect();
        for (group, resource, kind) in [
            ("coordination.k8s.io", "leases", "Lease"),
            ("", "events", "Event"),
            ("events.k8s.io", "events", "Event"),
            ("", "endpoints", "Endpoints"),
            ("discovery.k8s.io", "endpointslices", "EndpointSlice"),
            ("authentication.k8s.io", "tokenreviews", "TokenReview"),
            (
                "authorization.k8s.io",
                "subjectaccessreviews",
                "SubjectAccessReview",
            ),
        ] {
            assert!(
                !conditions_send(&conditions, write(group, resource, kind), true),
                "{resource}.{group} is excluded"
            );
        }
        for (group, resource, kind) in [
            ("apps", "deployments", "Deployment"),
            ("", "configmaps", "ConfigMap"),
            ("", "secrets", "Secret"),
            ("batch", "cronjobs", "CronJob"),
        ] {
            assert!(
                conditions_send(&conditions, write(group, resource, kind), true),
                "{resource}.{group} is judged"
            );
        }
        assert!(unevaluable(&conditions, write("apps", "deployments", "Deployment")).is_empty());
    }

    #[test]
    fn a_condition_that_errors_follows_the_failure_policy() {
        let authz = vec![(
            "authz".to_string(),
            "authorizer.group('').resource('pods').check('get').allowed()".to_string(),
        )];
        let w = write("", "pods", "Pod");
        assert!(conditions_send(&authz, w, true));
        assert!(!conditions_send(&authz, w, false));
        assert_eq!(unevaluable(&authz, w).len(), 1);
        let by_user = vec![(
            "user".to_string(),
            "request.userInfo.username != 'system:kube-controller-manager'".to_string(),
        )];
        assert!(!conditions_send(&by_user, w, true));
    }
}
