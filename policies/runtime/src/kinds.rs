//! Kind → resource, for manifests judged offline (the API server tells the webhook).

/// The plural resource of a kind, as Kubernetes' own `UnsafeGuessKindToResource` guesses it
/// (what `kubectl` falls back to without discovery), with the irregular built-ins fixed.
pub fn resource_for_kind(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpoints" => return lower,
        "" => return lower,
        _ => {}
    }
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if lower.ends_with('s')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
        || lower.ends_with('x')
    {
        return format!("{lower}es");
    }
    format!("{lower}s")
}

/// Splits `apiVersion` into `(group, version)`; the core group is `""`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds() {
        for (kind, resource) in [
            ("Deployment", "deployments"),
            ("Pod", "pods"),
            ("NetworkPolicy", "networkpolicies"),
            ("Ingress", "ingresses"),
            ("Endpoints", "endpoints"),
            ("StorageClass", "storageclasses"),
            ("Gateway", "gateways"),
            ("CronJob", "cronjobs"),
            ("ConfigMap", "configmaps"),
            ("PodSecurityPolicy", "podsecuritypolicies"),
        ] {
            assert_eq!(resource_for_kind(kind), resource, "{kind}");
        }
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
    }
}
