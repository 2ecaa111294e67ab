//! `kubectl ck8s policy ...`: the policy author's and CI's side of the admission webhook.
//!
//! Every subcommand runs policies through `ck8s-policy-runtime`, the runtime the webhook
//! uses, with the same limits and the same [`ck8s_policy_runtime::Decision`] logic, so what
//! passes here passes there:
//!
//! - `check`: judge manifests offline (CI, pre-commit), exit 1 on a denial;
//! - `audit`: judge what is already in the cluster, as PolicyReports if asked;
//! - `test`: run YAML test suites (`*.ck8s-test.yaml`) against built `.wasm` files;
//! - `new`: scaffold a policy crate that builds to `.wasm` with one command;
//! - `inspect`: what a `.wasm` declares and whether it loads within the limits;
//! - `webhook-rules`: the `ValidatingWebhookConfiguration` rules all policies need;
//! - `list`: the policies in service.

mod audit;
mod check;
mod inspect;
mod manifests;
mod scaffold;
mod suite;

use crate::cluster::Ctx;
use crate::exit::Failure;
use crate::output::OutputFormat;
use crate::report::Outcome;
use ck8s_policy_runtime::cel::{LabelSelector, LocalParams, ParamKind, ParamSource};
use ck8s_policy_runtime::{
    BuildError, ClusterReads, ConfigSource, LoadError, LoadedPolicy, PolicySet, PolicySource,
    PolicySources, Runtime, SetError, Source,
};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate manifests offline with the webhook's policies; exit 1 on any denial.
    Check(check::CheckArgs),
    /// Judge what is in the cluster with the webhook's policies and config; exit 1 on any
    /// violation. `-o policyreport` / `--apply`: wgpolicyk8s.io PolicyReports.
    Audit(audit::AuditArgs),
    /// Run policy test suites (`*.ck8s-test.yaml`); exit 1 if a case fails.
    Test(suite::TestArgs),
    /// Scaffold a new policy crate that builds to `.wasm` with one command.
    New(scaffold::NewArgs),
    /// Show a policy's metadata, settings, rules, size, digest, and whether it loads.
    Inspect(inspect::InspectArgs),
    /// Print the merged `rules:` of the ValidatingWebhookConfiguration for all policies.
    WebhookRules(PolicySelection),
    /// List the policies in service (built-in plus --policies DIR).
    List(PolicySelection),
}

/// Which policies are in service: the built-ins, plus a directory of `.wasm` files.
#[derive(Debug, Clone, Args)]
pub struct PolicySelection {
    /// Directory of extra policy `.wasm` files, loaded beside the built-ins (as
    /// `ck8s-admission --policies DIR` does).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Leave the built-in policies out (judge with --policies DIR only).
    #[arg(long)]
    pub no_builtin: bool,
}

impl PolicySelection {
    /// The built-ins (unless excluded), then every policy file in `--policies DIR`.
    fn sources(&self) -> PolicySources {
        let mut sources = PolicySources::new();
        if !self.no_builtin {
            sources = sources.builtin(ck8s_builtin_policies::BUNDLE);
        }
        if let Some(dir) = &self.policies {
            sources = sources.dir(dir);
        }
        sources
    }
}

/// `connect` is called only by the subcommand that reads the cluster (`audit`); the others
/// run offline. `format` tells `audit` whether PolicyReports are wanted (`-o policyreport`).
pub async fn run<F>(
    cmd: PolicyCommand,
    format: OutputFormat,
    connect: impl FnOnce() -> F,
) -> Result<Outcome, Failure>
where
    F: Future<Output = Result<Ctx, Failure>>,
{
    match cmd {
        PolicyCommand::Check(args) => check::run(args),
        PolicyCommand::Audit(args) => audit::run(args, &connect().await?, format).await,
        PolicyCommand::Test(args) => suite::run(args),
        PolicyCommand::New(args) => scaffold::run(args),
        PolicyCommand::Inspect(args) => inspect::run(args),
        PolicyCommand::WebhookRules(sel) => inspect::webhook_rules(&sel),
        PolicyCommand::List(sel) => inspect::list(&sel),
    }
}

/// The runtime every subcommand uses: the webhook's default limits and artifact cache.
fn runtime() -> Result<Runtime, Failure> {
    Runtime::new(Default::default(), Runtime::default_artifact_dir())
        .map_err(|e| Failure::internal(format!("cannot start the policy runtime: {e}")))
}

/// The set `check` and `audit` judge with: the selected policies with `config`, built by the
/// constructor the webhook builds its own with.
fn policy_set(sel: &PolicySelection, config: ConfigSource) -> Result<PolicySet, Failure> {
    let runtime = runtime()?;
    let set = PolicySet::build(&runtime, &sel.sources().config(config)).map_err(|e| match e {
        BuildError::Load(e @ LoadError::Vap { .. }) => Failure::usage(e.to_string()),
        BuildError::Load(e) => Failure::usage(e.to_string()).with_help(
            "build policies with `cargo build --release --target wasm32-unknown-unknown`",
        ),
        // A config for policies, and none loaded: say what is missing first.
        BuildError::Set(SetError::NotLoaded { loaded, .. }) if loaded.is_empty() => no_policies(),
        e => Failure::usage(e.to_string()),
    })?;
    if set.is_empty() {
        return Err(no_policies());
    }
    Ok(set)
}

/// A policy reference that names a file of ValidatingAdmissionPolicies, not a `.wasm`.
fn is_vap_file(reference: &str) -> bool {
    reference.ends_with(".yaml") || reference.ends_with(".yml")
}

/// A borderless table with `header`, as the policy subcommands print their rows.
fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header);
    t
}

/// What ValidatingAdmissionPolicies read beside the request, held in memory: Namespaces by
/// name and params. `check` has the Namespaces among the manifests; `audit --cluster-vaps`
/// the cluster's Namespaces and params, listed once.
#[derive(Default)]
struct ClusterSnapshot {
    namespaces: BTreeMap<String, Value>,
    params: Vec<Value>,
}

impl ParamSource for ClusterSnapshot {
    fn get(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String> {
        LocalParams(&self.params).get(kind, namespace, name)
    }

    fn list(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<Vec<Value>, String> {
        LocalParams(&self.params).list(kind, namespace, selector)
    }
}

impl ClusterReads for ClusterSnapshot {
    fn namespace(&self, name: &str) -> Result<Option<Value>, String> {
        Ok(self.namespaces.get(name).cloned())
    }
}

fn no_policies() -> Failure {
    Failure::usage("no policies to evaluate")
        .with_help("drop --no-builtin or pass --policies DIR with .wasm files")
}

/// A policy reference: `builtin:NAME`, a path to a `.wasm` file (relative to `base`), or
/// `FILE.wasm#NAME` for one policy of a bundle.
fn load_ref(runtime: &Runtime, reference: &str, base: &Path) -> Result<LoadedPolicy, Failure> {
    if let Some(name) = reference.strip_prefix("builtin:") {
        let all = Source::Builtin(ck8s_builtin_policies::BUNDLE)
            .load(runtime)
            .map_err(|e| Failure::usage(e.to_string()))?;
        let names: Vec<String> = all.iter().map(|p| p.name().to_string()).collect();
        return all.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            Failure::usage(format!("no built-in policy called {name:?}"))
                .with_help(format!("built-in policies: {}", names.join(", ")))
        });
    }
    let (file, member) = split_member(reference);
    let path = clean(&base.join(file));
    let wasm = std::fs::read(&path).map_err(|e| {
        Failure::usage(format!("cannot read policy {}: {e}", path.display()))
            .with_help("build it first: `cargo build --release --target wasm32-unknown-unknown` in the policy crate")
    })?;
    let shown = path.display().to_string();
    let policies = runtime
        .load_module(PolicySource::File(path), &wasm)
        .map_err(|e| Failure::usage(e.to_string()))?;
    pick(policies, member, &shown)
}

/// `FILE.wasm#NAME` as `(FILE.wasm, Some(NAME))`.
fn split_member(reference: &str) -> (&str, Option<&str>) {
    match reference.rsplit_once('#') {
        Some((file, name)) if !name.is_empty() => (file, Some(name)),
        _ => (reference, None),
    }
}

/// The policy a reference means among those of its module: the only one, or the one called
/// `member` of a bundle.
fn pick(
    mut policies: Vec<LoadedPolicy>,
    member: Option<&str>,
    file: &str,
) -> Result<LoadedPolicy, Failure> {
    let names = policies
        .iter()
        .map(|p| p.name().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match member {
        Some(name) => match policies.iter().position(|p| p.name() == name) {
            Some(i) => Ok(policies.swap_remove(i)),
            None => Err(
                Failure::usage(format!("{file} has no policy called {name:?}"))
                    .with_help(format!("its policies: {names}")),
            ),
        },
        None if policies.len() == 1 => Ok(policies.remove(0)),
        None => Err(
            Failure::usage(format!("{file} is a bundle of {} policies", policies.len()))
                .with_help(format!("name one as {file}#NAME; its policies: {names}")),
        ),
    }
}

/// `a/./b/../c` as `a/c`, lexically, so messages show the path a user would type.
fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}
