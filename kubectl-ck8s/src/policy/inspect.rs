//! `policy inspect`, `policy webhook-rules` and `policy list`: what policies declare.

use super::{PolicySelection, is_vap_file, policy_set, runtime, table};
use crate::exit::{Failure, Verdict};
use crate::report::{Outcome, Report as Envelope};
use ck8s_policy_runtime::api::{Operation, Rule, SettingSpec};
use ck8s_policy_runtime::{ConfigSource, LoadedPolicy, PolicySet, PolicySource};
use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A policy `.wasm` file, `FILE.wasm#NAME` for one policy of a bundle, `builtin:NAME`, or
    /// a file of ValidatingAdmissionPolicies (`.yaml`, `.yml`).
    #[arg(value_name = "FILE.wasm[#NAME]|builtin:NAME|FILE.yaml")]
    pub policy: String,
}

/// One ValidatingAdmissionPolicy of a file, as `policy inspect` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VapView {
    name: String,
    failure_policy: &'static str,
    rules: Vec<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    param_kind: Option<String>,
    variables: Vec<String>,
    validations: Vec<String>,
    /// `NAME [actions]`; none: judged as if bound with `[Deny]`.
    bindings: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VapInspection {
    source: String,
    loads: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_error: Option<String>,
    policies: Vec<VapView>,
    /// Read from the cluster by the webhook (offline: unknown, and such a policy fails closed).
    needs_namespaces: bool,
}

/// `policy inspect FILE.yaml`: what each policy matches, its variables and rules, its bindings;
/// exit 1 if the file does not load, with the API server's words for why.
fn inspect_vap(path: &str) -> Result<Outcome, Failure> {
    use ck8s_policy_runtime::cel::FailurePolicy;
    let runtime = runtime()?;
    let built = PolicySet::build(
        &runtime,
        &ck8s_policy_runtime::PolicySources::new().vap_file(path),
    );
    let views = |set: &PolicySet| {
        set.vap_policies()
            .iter()
            .map(|p| VapView {
                name: p.name.clone(),
                failure_policy: match p.failure_policy {
                    FailurePolicy::Fail => "Fail",
                    FailurePolicy::Ignore => "Ignore",
                },
                rules: PolicySet::vap_rules(p),
                param_kind: p
                    .param_kind
                    .as_ref()
                    .map(|k| format!("{}/{}", k.api_version, k.kind)),
                variables: p.variable_names().map(String::from).collect(),
                validations: p.validation_expressions().map(String::from).collect(),
                bindings: set
                    .vap_bindings()
                    .iter()
                    .filter(|b| b.policy_name == p.name)
                    .map(|b| {
                        let a = b.actions;
                        let actions: Vec<&str> =
                            [(a.deny, "Deny"), (a.warn, "Warn"), (a.audit, "Audit")]
                                .into_iter()
                                .filter_map(|(on, name)| on.then_some(name))
                                .collect();
                        format!("{} [{}]", b.name, actions.join(", "))
                    })
                    .collect(),
            })
            .collect()
    };
    let report = VapInspection {
        source: path.to_string(),
        loads: built.is_ok(),
        load_error: built.as_ref().err().map(|e| e.to_string()),
        policies: built.as_ref().map(views).unwrap_or_default(),
        needs_namespaces: built.as_ref().is_ok_and(|set| set.vap_needs().namespaces),
    };
    let text = vap_text(&report);
    Ok(Outcome::text(
        Envelope::structured("policy inspect", Verdict::pass_if(report.loads), &report),
        text,
    ))
}

/// What `-o table` shows of a file of ValidatingAdmissionPolicies.
fn vap_text(report: &VapInspection) -> String {
    let mut text = String::new();
    kv(&mut text, "Source", &report.source);
    if let Some(e) = &report.load_error {
        kv(&mut text, "Loads", &format!("no: {e}"));
        return text;
    }
    for p in &report.policies {
        text.push('\n');
        kv(&mut text, "Policy", &p.name);
        kv(&mut text, "Failure", p.failure_policy);
        let matches: Vec<String> = p
            .rules
            .iter()
            .map(|r| {
                let ops: Vec<&str> = r.operations.iter().map(|o| o.as_str()).collect();
                format!("{} {}", r.resources.join(","), ops.join(","))
            })
            .collect();
        kv(&mut text, "Matches", &matches.join("; "));
        if let Some(k) = &p.param_kind {
            kv(&mut text, "Params", k);
        }
        kv(&mut text, "Variables", &p.variables.join(", "));
        for (i, v) in p.validations.iter().enumerate() {
            kv(&mut text, if i == 0 { "Validations" } else { "" }, v);
        }
        kv(
            &mut text,
            "Bindings",
            &if p.bindings.is_empty() {
                "none: judged as if bound with [Deny]".to_string()
            } else {
                p.bindings.join("; ")
            },
        );
    }
    if report.needs_namespaces {
        text.push_str("\nReads Namespaces: the webhook watches them; offline they are not known and such a policy fails closed.\n");
    }
    text
}

/// A `Key:` line, the values aligned.
fn kv(text: &mut String, key: &str, value: &str) {
    text.push_str(&format!("{:<13}{value}\n", format!("{key}:")));
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection {
    source: String,
    wasm_bytes: usize,
    sha256: String,
    loads: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_error: Option<String>,
    load_time_ms: f64,
    limits: LimitsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    settings: Vec<SettingSpec>,
    rules: Vec<Rule>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LimitsView {
    deadline_ms: u128,
    memory_bytes: usize,
    max_output_bytes: usize,
}

pub fn run(args: InspectArgs) -> Result<Outcome, Failure> {
    if is_vap_file(&args.policy) {
        return inspect_vap(&args.policy);
    }
    let runtime = runtime()?;
    let (source, wasm, member) = read_policy(&args.policy)?;
    let limits = runtime.limits();
    let start = Instant::now();
    let loaded = runtime
        .load_module(source.clone(), &wasm)
        .map_err(|e| e.to_string())
        .and_then(|policies| {
            super::pick(policies, member, &source.to_string()).map_err(|f| match f.help {
                Some(help) => format!("{} ({help})", f.message),
                None => f.message,
            })
        });
    let load_time = start.elapsed();
    let policy = loaded.as_ref().ok().map(|p| &p.metadata);
    let report = Inspection {
        source: source.to_string(),
        wasm_bytes: wasm.len(),
        sha256: hex::encode(Sha256::digest(&wasm)),
        loads: loaded.is_ok(),
        load_error: loaded.as_ref().err().cloned(),
        load_time_ms: (load_time.as_secs_f64() * 1e6).round() / 1e3,
        limits: LimitsView {
            deadline_ms: limits.deadline.as_millis(),
            memory_bytes: limits.memory_bytes,
            max_output_bytes: limits.max_output_bytes,
        },
        name: policy.map(|m| m.name.clone()),
        version: policy.map(|m| m.version.clone()),
        description: policy.map(|m| m.description.clone()),
        settings: policy.map(|m| m.settings.clone()).unwrap_or_default(),
        rules: policy.map(|m| m.rules.clone()).unwrap_or_default(),
    };
    let text = wasm_text(&report, loaded.as_ref().ok())?;
    Ok(Outcome::text(
        Envelope::structured("policy inspect", Verdict::pass_if(report.loads), &report),
        text,
    ))
}

/// What `-o table` shows of a `.wasm` policy (`loaded`: the policy, when it loads).
fn wasm_text(report: &Inspection, loaded: Option<&LoadedPolicy>) -> Result<String, Failure> {
    let mut text = String::new();
    kv(&mut text, "Source", &report.source);
    if let Some(p) = loaded {
        kv(&mut text, "Name", &p.metadata.name);
        kv(&mut text, "Version", &p.metadata.version);
        kv(&mut text, "Description", &p.metadata.description);
    }
    kv(
        &mut text,
        "Size",
        &format!(
            "{} bytes ({:.1} KiB)",
            report.wasm_bytes,
            report.wasm_bytes as f64 / 1024.0
        ),
    );
    kv(&mut text, "SHA256", &report.sha256);
    let limits_text = format!(
        "time {} ms, memory {} MiB, output {} MiB, no imports",
        report.limits.deadline_ms,
        report.limits.memory_bytes >> 20,
        report.limits.max_output_bytes >> 20
    );
    match &report.load_error {
        None => kv(
            &mut text,
            "Loads",
            &format!(
                "yes, in {:.1} ms, within the runtime's limits ({limits_text})",
                report.load_time_ms
            ),
        ),
        Some(e) => kv(&mut text, "Loads", &format!("NO: {e}")),
    }
    if let Some(p) = loaded {
        text.push_str("\nSettings:\n");
        if p.metadata.settings.is_empty() {
            text.push_str("  (none)\n");
        } else {
            let mut t = table(["NAME", "DEFAULT", "DESCRIPTION"]);
            for s in &p.metadata.settings {
                t.add_row([s.name.clone(), s.default.to_string(), s.description.clone()]);
            }
            text.push_str(&format!("{t}\n"));
        }
        text.push_str("\nRules:\n");
        let mut t = table(["API GROUPS", "API VERSIONS", "RESOURCES", "OPERATIONS"]);
        for r in &p.metadata.rules {
            let groups: Vec<&str> = r
                .api_groups
                .iter()
                .map(|g| if g.is_empty() { "\"\" (core)" } else { g })
                .collect();
            let ops: Vec<&str> = r.operations.iter().map(|o| o.as_str()).collect();
            t.add_row([
                groups.join(","),
                r.api_versions.join(","),
                r.resources.join(","),
                ops.join(","),
            ]);
        }
        text.push_str(&format!("{t}\n\nValidatingWebhookConfiguration rules:\n"));
        text.push_str(&rules_yaml(&p.metadata.rules)?);
    }
    Ok(text)
}

/// The bytes of `FILE.wasm` (with the NAME of `FILE.wasm#NAME`, one policy of a bundle) or
/// of the built-in `builtin:NAME`.
fn read_policy(reference: &str) -> Result<(PolicySource, Vec<u8>, Option<&str>), Failure> {
    if let Some(name) = reference.strip_prefix("builtin:") {
        let bytes = ck8s_builtin_policies::get(name).ok_or_else(|| {
            let names: Vec<&str> = ck8s_builtin_policies::BUILTIN.iter().map(|n| n.0).collect();
            Failure::usage(format!("no built-in policy called {name:?}"))
                .with_help(format!("built-in policies: {}", names.join(", ")))
        })?;
        let source = PolicySource::Builtin(name.to_string());
        return Ok((source, bytes.to_vec(), None));
    }
    let (file, member) = super::split_member(reference);
    let path = PathBuf::from(file);
    let wasm = std::fs::read(&path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok((PolicySource::File(path), wasm, member))
}

/// The `rules:` snippet of a `ValidatingWebhookConfiguration` webhook.
fn rules_yaml(rules: &[Rule]) -> Result<String, Failure> {
    #[derive(Serialize)]
    struct Snippet<'a> {
        rules: &'a [Rule],
    }
    // Quoted in single quotes, so the core group reads `''` as kubectl prints it.
    let options = serde_saphyr::ser_options! { quote_all: true };
    serde_saphyr::to_string_with_options(&Snippet { rules }, options)
        .map_err(|e| Failure::internal(e.to_string()))
}

/// The union of every policy's rules, merged: rules that differ only in resources become
/// one, and a rule another rule's wildcards already cover is dropped.
pub fn merge_rules<'a>(all: impl IntoIterator<Item = &'a Rule>) -> Vec<Rule> {
    fn norm(list: &[String]) -> Vec<String> {
        let mut v = list.to_vec();
        v.sort();
        v.dedup();
        if v.iter().any(|x| x == "*") {
            vec!["*".to_string()]
        } else {
            v
        }
    }
    let mut merged: Vec<Rule> = Vec::new();
    for r in all {
        let mut ops = r.operations.clone();
        ops.sort_by_key(|o| Operation::ALL.iter().position(|x| x == o));
        ops.dedup();
        let r = Rule {
            api_groups: norm(&r.api_groups),
            api_versions: norm(&r.api_versions),
            resources: norm(&r.resources),
            operations: ops,
        };
        match merged.iter_mut().find(|m| {
            m.api_groups == r.api_groups
                && m.api_versions == r.api_versions
                && m.operations == r.operations
        }) {
            Some(m) => {
                m.resources.extend(r.resources);
                m.resources = norm(&m.resources);
            }
            None => merged.push(r),
        }
    }
    let covers = |big: &Rule, small: &Rule| {
        let sub = |b: &[String], s: &[String]| {
            b.iter().any(|x| x == "*") || s.iter().all(|x| b.contains(x))
        };
        small.operations.iter().all(|o| big.operations.contains(o))
            && sub(&big.api_groups, &small.api_groups)
            && sub(&big.api_versions, &small.api_versions)
            && sub(&big.resources, &small.resources)
    };
    let mut out: Vec<Rule> = Vec::new();
    for (i, r) in merged.iter().enumerate() {
        let covered = merged
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && covers(other, r) && (!covers(r, other) || j < i));
        if !covered {
            out.push(r.clone());
        }
    }
    out
}

pub fn webhook_rules(sel: &PolicySelection) -> Result<Outcome, Failure> {
    let set = policy_set(sel, ConfigSource::Defaults)?;
    let vap_rules: Vec<Rule> = set
        .vap_policies()
        .iter()
        .flat_map(PolicySet::vap_rules)
        .collect();
    let rules = merge_rules(
        set.policies()
            .flat_map(|(p, _)| p.metadata.rules.iter())
            .chain(&vap_rules),
    );
    let names: Vec<&str> = set.names().collect();
    let text = format!(
        "# generated by `kubectl ck8s policy webhook-rules` from: {}\n{}",
        names.join(", "),
        rules_yaml(&rules)?
    );
    let report = Envelope::structured(
        "policy webhook-rules",
        Verdict::Pass,
        &serde_json::json!({ "rules": rules }),
    );
    Ok(Outcome::text(report, text))
}

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    version: &'a str,
    source: String,
    description: &'a str,
    sha256: &'a str,
    rules: std::borrow::Cow<'a, [Rule]>,
}

pub fn list(sel: &PolicySelection) -> Result<Outcome, Failure> {
    let set = policy_set(sel, ConfigSource::Defaults)?;
    let listed: Vec<Listed> = set
        .policies()
        .map(|(p, _)| Listed {
            name: &p.metadata.name,
            version: &p.metadata.version,
            source: p.source.to_string(),
            description: &p.metadata.description,
            sha256: &p.digest,
            rules: p.metadata.rules.as_slice().into(),
        })
        .chain(set.vap_policies().iter().map(|p| Listed {
            name: &p.name,
            version: "",
            source: "ValidatingAdmissionPolicy".into(),
            description: "",
            sha256: "",
            rules: PolicySet::vap_rules(p).into(),
        }))
        .collect();
    let mut t = table(["NAME", "VERSION", "SOURCE", "RESOURCES", "DESCRIPTION"]);
    for l in &listed {
        let resources: Vec<String> = l
            .rules
            .iter()
            .flat_map(|r| r.resources.iter().cloned())
            .collect();
        t.add_row([
            l.name.to_string(),
            l.version.to_string(),
            l.source.clone(),
            resources.join(","),
            l.description.to_string(),
        ]);
    }
    let report = Envelope::structured(
        "policy list",
        Verdict::Pass,
        &serde_json::json!({ "policies": listed }),
    );
    Ok(Outcome::text(report, format!("{t}\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str]) -> Rule {
        Rule {
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            api_versions: vec!["*".into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            operations: vec![Operation::Create, Operation::Update],
        }
    }

    #[test]
    fn merge_unions_resources_and_drops_covered_rules() {
        let a = [rule(&[""], &["pods"]), rule(&["apps"], &["deployments"])];
        let b = [rule(&[""], &["configmaps", "pods"])];
        let got = merge_rules(a.iter().chain(b.iter()));
        assert_eq!(
            got,
            [
                rule(&[""], &["configmaps", "pods"]),
                rule(&["apps"], &["deployments"])
            ]
        );
        let all = [rule(&["*"], &["*"])];
        assert_eq!(merge_rules(a.iter().chain(all.iter())), all);
    }
}
