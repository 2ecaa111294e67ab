//! Ready-made [`Rule`] sets for the common targets, so metadata states them once.

use ck8s_policy_api::{Operation, Rule};

fn rule(group: &str, resources: &[&str]) -> Rule {
    Rule {
        api_groups: vec![group.to_string()],
        api_versions: vec!["*".to_string()],
        resources: resources.iter().map(|r| r.to_string()).collect(),
        operations: vec![Operation::Create, Operation::Update],
    }
}

/// Every built-in kind that carries a pod spec, CREATE and UPDATE.
pub fn pod_bearing() -> Vec<Rule> {
    vec![
        rule("", &["pods", "podtemplates", "replicationcontrollers"]),
        rule(
            "apps",
            &["deployments", "statefulsets", "daemonsets", "replicasets"],
        ),
        rule("batch", &["jobs", "cronjobs"]),
    ]
}

/// [`pod_bearing`] plus ConfigMaps and Secrets: everywhere an environment variable's
/// literal value can be written.
pub fn env_and_config() -> Vec<Rule> {
    let mut rules = pod_bearing();
    rules[0]
        .resources
        .extend(["configmaps".to_string(), "secrets".to_string()]);
    rules
}

/// Every resource of every group, CREATE and UPDATE (subresources are never judged).
pub fn all_objects() -> Vec<Rule> {
    vec![rule("*", &["*"])]
}
