//! `kubectl ck8s mitigate kaniko-cache | build-ref --ref VALUE`: the runbook's mitigation, made
//! to take effect.
//!
//! 1. Find how `codex-k8s-control-plane` reads `codex-k8s-runtime`: a ConfigMap or a Secret,
//!    through `envFrom`, `valueFrom` or a volume; say so plainly when it reads neither.
//! 2. Patch it: server-side dry run first, then for real (`--dry-run=none|client|server`).
//! 3. When the pods take the value only at start (environment, `subPath` mount), restart the
//!    Deployment as `kubectl rollout restart` does and wait, by watch, until the new
//!    ReplicaSet is rolled out (`kubectl rollout status`'s conditions).
//! 4. Verify that every running control-plane pod started after the patch; exit 1 when that
//!    cannot be verified within `--timeout`.

use crate::cluster::Ctx;
use crate::cluster::objects::{self, pod_started};
use crate::cluster::wait::{self, Waited};
use crate::exit::Failure;
use crate::names::*;
use crate::output::{Progress, progress};
use crate::report::{Check, Outcome, Report};
use crate::rollout::{Rollout, rollout_status};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MitigateCommand {
    /// Signature A: set CODEXK8S_KANIKO_CACHE_ENABLED=false.
    KanikoCache(MitigateArgs),
    /// Signature B: set CODEXK8S_BUILD_REF to a valid git ref (main, feature/<branch>, a commit SHA).
    BuildRef {
        #[arg(long = "ref", value_name = "VALUE")]
        value: String,
        #[command(flatten)]
        args: MitigateArgs,
    },
}

/// `--dry-run`, as kubectl's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DryRun {
    /// Change the cluster (after a server-side dry run of every change).
    None,
    /// Print the patches that would be sent; send nothing that writes.
    Client,
    /// Send every change as a server-side dry run (admission and validation run), persist nothing.
    Server,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MitigateArgs {
    /// How long to wait for the control-plane rollout and its verification.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// none: apply; server: server-side dry run only; client: print the patches only.
    #[arg(long, value_enum, default_value_t = DryRun::None, require_equals = true, num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Kept for scripts written before the restart became automatic: the control plane is
    /// restarted whenever it reads the value only at start.
    #[arg(long, hide = true)]
    pub restart: bool,
}

/// Where `codex-k8s-runtime` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Store {
    ConfigMap,
    Secret,
}

impl Store {
    /// As kubectl names the kind: `configmap`, `secret`.
    fn prefix(self) -> &'static str {
        match self {
            Store::ConfigMap => "configmap",
            Store::Secret => "secret",
        }
    }
}

/// How a container reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Via {
    /// `envFrom`: every key becomes an env var, at container start.
    EnvFrom,
    /// `env[].valueFrom` of our key, as env var `env`, at container start.
    ValueFrom { env: String },
    /// A volume mounted at `path`; with `subPath` the file is never refreshed.
    Volume { path: String, sub_path: bool },
}

impl Via {
    /// The value is read only when the container starts.
    pub fn at_start_only(&self) -> bool {
        match self {
            Via::Volume { sub_path, .. } => *sub_path,
            Via::EnvFrom | Via::ValueFrom { .. } => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub container: String,
    pub store: Store,
    pub via: Via,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let via = match &self.via {
            Via::EnvFrom => "envFrom".to_string(),
            Via::ValueFrom { env } => format!("valueFrom (env {env})"),
            Via::Volume { path, sub_path } => format!(
                "a volume at {path}{}",
                if *sub_path { " (subPath)" } else { "" }
            ),
        };
        write!(
            f,
            "container {} reads {}/{RUNTIME_CONFIG} through {via}",
            self.container,
            self.store.prefix()
        )
    }
}

/// Every way the Deployment's pod template reads `key` of `codex-k8s-runtime`: pure.
pub fn references(d: &Deployment, key: &str) -> Vec<Reference> {
    let Some(pod) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return vec![];
    };
    let named = |n: &Option<String>| n.as_deref() == Some(RUNTIME_CONFIG);
    let named_str = |n: &str| n == RUNTIME_CONFIG;
    // Volumes holding codex-k8s-runtime (directly or projected), by volume name.
    let mut volumes: Vec<(String, Store)> = Vec::new();
    for v in pod.volumes.iter().flatten() {
        if v.config_map.as_ref().is_some_and(|c| named_str(&c.name)) {
            volumes.push((v.name.clone(), Store::ConfigMap));
        }
        if v.secret.as_ref().is_some_and(|s| named(&s.secret_name)) {
            volumes.push((v.name.clone(), Store::Secret));
        }
        for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if s.config_map.as_ref().is_some_and(|c| named_str(&c.name)) {
                volumes.push((v.name.clone(), Store::ConfigMap));
            }
            if s.secret.as_ref().is_some_and(|c| named_str(&c.name)) {
                volumes.push((v.name.clone(), Store::Secret));
            }
        }
    }
    let mut out = Vec::new();
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let mut push = |store, via| {
            out.push(Reference {
                container: c.name.clone(),
                store,
                via,
            })
        };
        for e in c.env_from.iter().flatten() {
            if e.config_map_ref
                .as_ref()
                .is_some_and(|r| named_str(&r.name))
            {
                push(Store::ConfigMap, Via::EnvFrom);
            }
            if e.secret_ref.as_ref().is_some_and(|r| named_str(&r.name)) {
                push(Store::Secret, Via::EnvFrom);
            }
        }
        for e in c.env.iter().flatten() {
            let from = e.value_from.as_ref();
            let env = || Via::ValueFrom {
                env: e.name.clone(),
            };
            if from
                .and_then(|f| f.config_map_key_ref.as_ref())
                .is_some_and(|r| named_str(&r.name) && r.key == key)
            {
                push(Store::ConfigMap, env());
            }
            if from
                .and_then(|f| f.secret_key_ref.as_ref())
                .is_some_and(|r| named_str(&r.name) && r.key == key)
            {
                push(Store::Secret, env());
            }
        }
        for m in c.volume_mounts.iter().flatten() {
            for (_, store) in volumes.iter().filter(|(v, _)| *v == m.name) {
                let sub_path = m.sub_path.as_deref().is_some_and(|s| !s.is_empty());
                // A subPath mount of another key does not carry ours.
                if sub_path && m.sub_path.as_deref() != Some(key) {
                    continue;
                }
                push(
                    *store,
                    Via::Volume {
                        path: m.mount_path.clone(),
                        sub_path,
                    },
                );
            }
        }
    }
    out
}

/// The merge patch setting one key: `data` of a ConfigMap, `stringData` of a Secret.
pub fn config_patch(store: Store, key: &str, value: &str) -> serde_json::Value {
    match store {
        Store::ConfigMap => serde_json::json!({ "data": { key: value } }),
        Store::Secret => serde_json::json!({ "stringData": { key: value } }),
    }
}

/// The patch `kubectl rollout restart` sends.
pub fn restart_patch(at: Timestamp) -> serde_json::Value {
    serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT: format!("{at:.0}")
    }}}}})
}

/// One control-plane pod as the verification saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStart {
    pub name: String,
    pub started: Option<Timestamp>,
    pub after_patch: bool,
}

/// The verification: every running (not terminating) pod started at or after `patched`
/// (to the second: the API's times are whole seconds), and at least one runs. Pure.
pub fn verify_pods<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    patched: Timestamp,
) -> Result<Vec<PodStart>, (String, Vec<PodStart>)> {
    let patched = Timestamp::from_second(patched.as_second()).unwrap_or(patched);
    let starts: Vec<PodStart> = pods
        .into_iter()
        .filter(|p| objects::pod_phase(p) == "Running" && p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let started = pod_started(p);
            PodStart {
                name: p.metadata.name.clone().unwrap_or_default(),
                started,
                after_patch: started.is_some_and(|s| s >= patched),
            }
        })
        .collect();
    if starts.is_empty() {
        return Err((format!("no running {CONTROL_PLANE} pod yet"), starts));
    }
    let old: Vec<&str> = starts
        .iter()
        .filter(|s| !s.after_patch)
        .map(|s| s.name.as_str())
        .collect();
    if old.is_empty() {
        return Ok(starts);
    }
    let why = format!(
        "{} of {} running pods started before the patch at {}: {}",
        old.len(),
        starts.len(),
        rfc(patched),
        old.join(", ")
    );
    Err((why, starts))
}

fn rfc(t: Timestamp) -> String {
    format!("{t:.0}")
}

/// How the control plane reads `codex-k8s-runtime`, when it reads it from one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    pub store: Store,
    /// The pods take the value only at start: the change needs a restart.
    pub at_start_only: bool,
    /// Every reference, as the `mitigate.wiring` check states them.
    pub how: String,
}

/// The one store `refs` read, or the failed `mitigate.wiring` check saying why a patch would
/// change nothing or the wrong thing: pure.
pub fn wiring(refs: &[Reference], key: &str, ns: &str) -> Result<Wiring, Check> {
    let mut stores: Vec<Store> = refs.iter().map(|r| r.store).collect();
    stores.dedup();
    let remedy = format!("kubectl -n {ns} get deploy/{CONTROL_PLANE} -o yaml");
    match stores.as_slice() {
        [] => Err(Check::fail("mitigate.wiring", format!("deployment {CONTROL_PLANE} reads {RUNTIME_CONFIG} neither as a ConfigMap nor as a Secret (no envFrom, no valueFrom of {key}, no volume): patching it would change nothing")).remedy(format!("{remedy}: find where the control plane takes {key} from and set it there"))),
        [store] => Ok(Wiring {
            store: *store,
            at_start_only: refs.iter().any(|r| r.via.at_start_only()),
            how: refs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "),
        }),
        _ => Err(Check::fail("mitigate.wiring", format!("deployment {CONTROL_PLANE} reads {RUNTIME_CONFIG} both as a ConfigMap and as a Secret: which one wins is not clear; nothing changed")).remedy(remedy)),
    }
}

/// What the mitigation is planned from: read from the cluster, then judged by [`plan`].
#[derive(Debug, Clone)]
pub struct State {
    pub key: String,
    pub value: String,
    pub dry_run: DryRun,
    pub wiring: Wiring,
    /// The ConfigMap's value of the key before the patch (`Some(None)`: unset); `None` for a
    /// Secret, whose values are never read.
    pub before: Option<Option<String>>,
    /// The time the restart stamps on the pod template.
    pub restart_at: Timestamp,
}

impl State {
    fn object(&self) -> String {
        format!("{}/{RUNTIME_CONFIG}", self.wiring.store.prefix())
    }

    /// The change, as the checks state it.
    fn change(&self) -> String {
        let (object, key, value) = (self.object(), &self.key, &self.value);
        match &self.before {
            Some(Some(old)) => format!("{object} {key}: {old:?} -> {value:?}"),
            Some(None) => format!("{object} {key}: unset -> {value:?}"),
            None => format!("{object} {key} set (a Secret's old value is not read)"),
        }
    }
}

/// A write the mitigation makes; every one is sent first as a server-side dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The merge patch of the runtime config's key.
    Config,
    /// The control plane's restart, as `kubectl rollout restart` does it.
    Restart,
}

/// One step of a plan; carried out, each gives one check of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A check the plan decides alone: the wiring, what a dry run would do, what is not needed.
    Decided(Check),
    /// Makes the change.
    Send(Change),
    /// Waits, by watch, until the restart is rolled out.
    AwaitRollout,
    /// Waits until every running control-plane pod started after the patch.
    VerifyPods,
}

/// What the mitigation will do: the server-side dry runs, all passed before anything is
/// changed, then the steps in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub preflight: Vec<Change>,
    pub steps: Vec<Step>,
}

/// The plan for `state`: pure.
pub fn plan(state: &State) -> Plan {
    use Step::{AwaitRollout, Decided, Send, VerifyPods};
    let restart = state.wiring.at_start_only;
    let (key, object, change) = (&state.key, state.object(), state.change());
    let in_place = "mounted as files: the kubelet refreshes them in place";
    let steps = match (state.dry_run, restart) {
        (DryRun::None, true) => vec![
            Send(Change::Config),
            Send(Change::Restart),
            AwaitRollout,
            VerifyPods,
        ],
        (DryRun::None, false) => vec![
            Send(Change::Config),
            Decided(Check::skip(
                "mitigate.restart",
                format!("{object} is {in_place} (within about a minute), no restart needed"),
            )),
            Decided(Check::skip("mitigate.rollout", "no restart")),
            Decided(Check::skip(
                "mitigate.verify",
                "no restart: the files change in place",
            )),
        ],
        (dry_run, _) => {
            let (flag, patched, restarted) = if dry_run == DryRun::Client {
                let patch = config_patch(state.wiring.store, key, &state.value);
                let restart = restart_patch(state.restart_at);
                (
                    "--dry-run=client",
                    format!("would merge-patch {object} with {patch} ({change})"),
                    format!(
                        "would patch deployment/{CONTROL_PLANE} with {restart} (the pods read {key} only at start)"
                    ),
                )
            } else {
                (
                    "--dry-run=server",
                    format!("the API server accepts {change}; nothing persisted"),
                    format!(
                        "the API server accepts the restart of deployment/{CONTROL_PLANE}; nothing persisted"
                    ),
                )
            };
            vec![
                Decided(Check::pass("mitigate.patch", format!("{flag}: {patched}"))),
                Decided(if restart {
                    Check::pass("mitigate.restart", format!("{flag}: {restarted}"))
                } else {
                    Check::skip("mitigate.restart", format!("{in_place}, no restart needed"))
                }),
                Decided(Check::skip(
                    "mitigate.rollout",
                    format!("{flag}: nothing changed"),
                )),
                Decided(Check::skip(
                    "mitigate.verify",
                    format!("{flag}: nothing changed"),
                )),
            ]
        }
    };
    let preflight = match (state.dry_run, restart) {
        // A client dry run sends nothing that writes.
        (DryRun::Client, _) => vec![],
        (_, true) => vec![Change::Config, Change::Restart],
        (_, false) => vec![Change::Config],
    };
    let wiring = Decided(Check::pass("mitigate.wiring", &state.wiring.how));
    Plan {
        preflight,
        steps: std::iter::once(wiring).chain(steps).collect(),
    }
}

/// Carries out a plan: what each step learned, for the steps after it and the report.
struct Mitigation<'a> {
    ctx: &'a Ctx,
    state: &'a State,
    timeout: Duration,
    deadline: tokio::time::Instant,
    progress: Progress,
    details: serde_json::Value,
    /// When the config was patched (set by sending it).
    patched_at: Timestamp,
    /// The Deployment's generation the restart stored.
    generation: i64,
    selector: Option<LabelSelector>,
    /// Why the rollout left the new value unconfirmed: the verification's failure.
    unconfirmed: Option<String>,
}

impl Mitigation<'_> {
    /// Sends one change (a dry run with `PatchParams::dry_run`); a restart answers with the
    /// Deployment as stored.
    async fn send(
        &self,
        change: Change,
        params: &PatchParams,
    ) -> Result<Option<Deployment>, Failure> {
        let (ctx, state) = (self.ctx, self.state);
        let here = Some(ctx.namespace.as_str());
        let store = state.wiring.store;
        match change {
            Change::Config => {
                let patch = Patch::Merge(config_patch(store, &state.key, &state.value));
                let sent = match store {
                    Store::ConfigMap => ctx
                        .ns::<ConfigMap>()
                        .patch(RUNTIME_CONFIG, params, &patch)
                        .await
                        .map(drop),
                    Store::Secret => ctx
                        .ns::<Secret>()
                        .patch(RUNTIME_CONFIG, params, &patch)
                        .await
                        .map(drop),
                };
                let resource = format!("{}s", store.prefix());
                sent.map(|()| None)
                    .map_err(|e| ctx.err("patch", &resource, here, e))
            }
            Change::Restart => ctx
                .ns::<Deployment>()
                .patch(
                    CONTROL_PLANE,
                    params,
                    &Patch::Strategic(restart_patch(state.restart_at)),
                )
                .await
                .map(Some)
                .map_err(|e| ctx.err("patch", "deployments.apps", here, e)),
        }
    }

    fn remedy(&self) -> String {
        let ns = &self.ctx.namespace;
        format!(
            "kubectl -n {ns} rollout status deploy/{CONTROL_PLANE} --timeout=180s; kubectl -n {ns} get pods -l <selector> -o wide; then retry the ai-slot task and run kubectl ck8s diagnose build --verify"
        )
    }

    async fn apply(&mut self, step: Step) -> Result<Check, Failure> {
        match step {
            Step::Decided(check) => Ok(check),
            Step::Send(Change::Config) => {
                self.send(Change::Config, &PatchParams::default()).await?;
                self.patched_at = Timestamp::now();
                self.details["patchedAt"] = json!(rfc(self.patched_at));
                Ok(Check::pass(
                    "mitigate.patch",
                    format!(
                        "{} (server dry-run passed, then applied at {})",
                        self.state.change(),
                        rfc(self.patched_at)
                    ),
                ))
            }
            Step::Send(Change::Restart) => {
                let restarted = self
                    .send(Change::Restart, &PatchParams::default())
                    .await?
                    .unwrap_or_default();
                self.generation = restarted.metadata.generation.unwrap_or(0);
                let at = rfc(self.state.restart_at);
                self.details["restartedAt"] = json!(at);
                self.details["generation"] = json!(self.generation);
                // The rollout and its verification share --timeout from the restart on.
                self.deadline = tokio::time::Instant::now() + self.timeout;
                Ok(Check::pass(
                    "mitigate.restart",
                    format!(
                        "deployment/{CONTROL_PLANE} restarted as kubectl rollout restart does ({RESTARTED_AT}={at}, generation {}): the pods read {} only at start",
                        self.generation, self.state.key
                    ),
                ))
            }
            Step::AwaitRollout => self.await_rollout().await,
            Step::VerifyPods => self.verify_pods().await,
        }
    }

    async fn await_rollout(&mut self) -> Result<Check, Failure> {
        let ctx = self.ctx;
        self.progress.set(&format!(
            "mitigate: waiting for the {CONTROL_PLANE} rollout"
        ));
        let generation = self.generation;
        let rollout = wait::until(
            ctx,
            "deployments.apps",
            wait::named(CONTROL_PLANE),
            self.deadline - tokio::time::Instant::now(),
            &self.progress,
            |ds: &[std::sync::Arc<Deployment>]| {
                let Some(d) = ds.first() else {
                    return Err(format!("deployment {CONTROL_PLANE} is gone"));
                };
                if d.metadata.generation.unwrap_or(0) < generation {
                    return Err("waiting for the restart to be stored".into());
                }
                match rollout_status(d) {
                    Rollout::Waiting(m) => Err(m),
                    done => Ok((done, d.spec.as_ref().map(|s| s.selector.clone()))),
                }
            },
        )
        .await?;
        let timeout = humantime::format_duration(self.timeout);
        let failed = match rollout {
            Waited::Done((Rollout::Complete(m), selector)) => {
                self.details["rollout"] = json!(m);
                self.selector = selector;
                return Ok(Check::pass(
                    "mitigate.rollout",
                    format!("{CONTROL_PLANE}: {m}"),
                ));
            }
            Waited::Done((Rollout::Failed(m) | Rollout::Waiting(m), _)) => {
                self.details["rollout"] = json!(m);
                self.unconfirmed =
                    Some("the rollout failed: the new value is not confirmed".into());
                format!("{CONTROL_PLANE}: {m}")
            }
            Waited::TimedOut { last } => {
                self.details["rollout"] = json!(last);
                self.unconfirmed = Some(format!("not verified within --timeout {timeout}"));
                format!("{CONTROL_PLANE} not rolled out within --timeout {timeout}: {last}")
            }
        };
        Ok(Check::fail("mitigate.rollout", failed).remedy(self.remedy()))
    }

    /// Every running pod must have started after the patch: only those read the new value.
    async fn verify_pods(&mut self) -> Result<Check, Failure> {
        if let Some(why) = self.unconfirmed.take() {
            return Ok(Check::fail("mitigate.verify", why).remedy(self.remedy()));
        }
        let ctx = self.ctx;
        self.progress
            .set("mitigate: verifying the control-plane pods started after the patch");
        let labels = self
            .selector
            .as_ref()
            .map(objects::selector)
            .transpose()
            .map_err(|e| {
                Failure::usage(format!(
                    "deployment {CONTROL_PLANE} has an invalid selector: {e}"
                ))
            })?
            .filter(|s| !s.selects_all())
            .ok_or_else(|| {
                Failure::usage(format!("deployment {CONTROL_PLANE} has an empty selector"))
            })?;
        let (patched_at, mut seen) = (self.patched_at, Vec::new());
        let verified = wait::until(
            ctx,
            "pods",
            watcher::Config::default().labels(&labels.to_string()),
            self.deadline - tokio::time::Instant::now(),
            &self.progress,
            |pods: &[std::sync::Arc<Pod>]| {
                verify_pods(pods.iter().map(|p| p.as_ref()), patched_at).map_err(|(why, starts)| {
                    seen = starts;
                    why
                })
            },
        )
        .await?;
        match verified {
            Waited::Done(starts) => {
                let list: Vec<String> = starts
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.started.map(rfc).unwrap_or_default()))
                    .collect();
                self.details["pods"] = json!(starts);
                Ok(Check::pass(
                    "mitigate.verify",
                    format!(
                        "all {} running {CONTROL_PLANE} pods started after the patch at {}: {}",
                        starts.len(),
                        rfc(patched_at),
                        list.join(", ")
                    ),
                ))
            }
            Waited::TimedOut { last } => {
                self.details["pods"] = json!(seen);
                let timeout = humantime::format_duration(self.timeout);
                Ok(Check::fail(
                    "mitigate.verify",
                    format!("not verified within --timeout {timeout}: {last}"),
                )
                .remedy(self.remedy()))
            }
        }
    }
}

/// Reads the state, plans, then carries out the plan step by step.
async fn patch_and_verify(
    ctx: &Ctx,
    key: &str,
    value: &str,
    args: &MitigateArgs,
) -> Result<Outcome, Failure> {
    let ns = &ctx.namespace;
    let progress = progress(&format!("mitigate: {key}={value}"));
    let deployment = ctx
        .get_opt(ctx.ns::<Deployment>(), "deployments.apps", CONTROL_PLANE)
        .await?
        .ok_or_else(|| {
            Failure::not_found(format!(
                "deployment {CONTROL_PLANE} not found in namespace {ns}"
            ))
            .with_help("check -n/--namespace (the production namespace)")
        })?;
    let refs = references(&deployment, key);
    let mut details =
        json!({"key": key, "value": value, "dryRun": args.dry_run, "references": refs});
    let outcome = |checks, details| {
        Outcome::checks(Report::new("mitigate", ns, checks).with_details(details))
    };
    let wiring = match wiring(&refs, key, ns) {
        Ok(wiring) => wiring,
        Err(refused) => return Ok(outcome(vec![refused], details)),
    };
    details["store"] = json!({"kind": wiring.store, "name": RUNTIME_CONFIG});
    // The old value, for the report: only a ConfigMap's (a Secret's is never read).
    let before = match wiring.store {
        Store::ConfigMap => {
            let cm = ctx
                .get_opt(ctx.ns::<ConfigMap>(), "configmaps", RUNTIME_CONFIG)
                .await?
                .ok_or_else(|| Failure::not_found(format!("configmap/{RUNTIME_CONFIG} not found in namespace {ns}, though {CONTROL_PLANE} reads it")))?;
            let old = cm.data.and_then(|d| d.get(key).cloned());
            details["before"] = json!(old);
            Some(old)
        }
        Store::Secret => None,
    };
    let state = State {
        key: key.into(),
        value: value.into(),
        dry_run: args.dry_run,
        wiring,
        before,
        restart_at: Timestamp::now(),
    };
    let plan = plan(&state);
    let mut run = Mitigation {
        ctx,
        state: &state,
        timeout: args.timeout,
        deadline: tokio::time::Instant::now(),
        progress,
        details,
        patched_at: Timestamp::now(),
        generation: 0,
        selector: None,
        unconfirmed: None,
    };
    for change in plan.preflight {
        run.send(change, &PatchParams::default().dry_run()).await?;
    }
    let mut checks = Vec::new();
    for step in plan.steps {
        checks.push(run.apply(step).await?);
    }
    Ok(outcome(checks, run.details))
}

pub async fn run(cmd: MitigateCommand, ctx: &Ctx) -> Result<Outcome, Failure> {
    match cmd {
        MitigateCommand::KanikoCache(args) => {
            patch_and_verify(ctx, KANIKO_CACHE, "false", &args).await
        }
        MitigateCommand::BuildRef { value, args } => {
            if let Err(problems) = crate::buildref::judge(&value)? {
                return Err(Failure::usage(format!(
                    "refusing --ref {value:?}: the build-ref policy rejects it: {}",
                    problems.join("; ")
                ))
                .with_help(
                    "use a valid git ref without CLI flags: main, feature/<branch> or a commit SHA",
                ));
            }
            patch_and_verify(ctx, BUILD_REF, &value, &args).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn deployment(pod_spec: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": CONTROL_PLANE},
            "spec": {"selector": {"matchLabels": {"app": "cp"}}, "template": {"spec": pod_spec}}}))
        .unwrap()
    }

    #[test]
    fn patch_sets_one_key() {
        assert_eq!(
            config_patch(Store::ConfigMap, "CODEXK8S_KANIKO_CACHE_ENABLED", "false"),
            json!({"data": {"CODEXK8S_KANIKO_CACHE_ENABLED": "false"}})
        );
        assert_eq!(
            config_patch(Store::Secret, "CODEXK8S_BUILD_REF", "main"),
            json!({"stringData": {"CODEXK8S_BUILD_REF": "main"}})
        );
    }

    #[test]
    fn restart_is_kubectl_rollout_restart() {
        let at = "2026-02-26T10:00:00.5Z".parse::<Timestamp>().unwrap();
        assert_eq!(
            restart_patch(at),
            json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-02-26T10:00:00Z"}}}}})
        );
    }

    #[test]
    fn how_the_control_plane_reads_the_runtime_config() {
        let key = KANIKO_CACHE;
        for (name, spec, want) in [
            (
                "envFrom a ConfigMap",
                json!({"containers": [{"name": "cp", "envFrom": [{"configMapRef": {"name": RUNTIME_CONFIG}}]}]}),
                vec![(Store::ConfigMap, Via::EnvFrom)],
            ),
            (
                "envFrom a Secret",
                json!({"containers": [{"name": "cp", "envFrom": [{"secretRef": {"name": RUNTIME_CONFIG}}]}]}),
                vec![(Store::Secret, Via::EnvFrom)],
            ),
            (
                "valueFrom of our key",
                json!({"containers": [{"name": "cp", "env": [{"name": "CACHE", "valueFrom": {"configMapKeyRef": {"name": RUNTIME_CONFIG, "key": key}}}]}]}),
                vec![(
                    Store::ConfigMap,
                    Via::ValueFrom {
                        env: "CACHE".into(),
                    },
                )],
            ),
            (
                "valueFrom of another key only",
                json!({"containers": [{"name": "cp", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": RUNTIME_CONFIG, "key": "OTHER"}}}]}]}),
                vec![],
            ),
            (
                "a volume, refreshed in place",
                json!({"volumes": [{"name": "cfg", "configMap": {"name": RUNTIME_CONFIG}}],
                       "containers": [{"name": "cp", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}]}),
                vec![(
                    Store::ConfigMap,
                    Via::Volume {
                        path: "/etc/cfg".into(),
                        sub_path: false,
                    },
                )],
            ),
            (
                "another ConfigMap",
                json!({"containers": [{"name": "cp", "envFrom": [{"configMapRef": {"name": "other"}}]}]}),
                vec![],
            ),
        ] {
            let got: Vec<(Store, Via)> = references(&deployment(spec), key)
                .into_iter()
                .map(|r| (r.store, r.via))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        assert!(Via::EnvFrom.at_start_only());
        assert!(
            Via::Volume {
                path: "/x".into(),
                sub_path: true
            }
            .at_start_only()
        );
        assert!(
            !Via::Volume {
                path: "/x".into(),
                sub_path: false
            }
            .at_start_only()
        );
    }

    #[test]
    fn verification_wants_every_running_pod_started_after_the_patch() {
        let patched = "2026-02-26T10:00:00.700Z".parse::<Timestamp>().unwrap();
        let pod = |name: &str, phase: &str, started: &str, deleting: bool| -> Pod {
            let mut p = json!({"metadata": {"name": name}, "status": {"phase": phase, "startTime": started}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-02-26T10:00:05Z");
            }
            serde_json::from_value(p).unwrap()
        };
        let new = pod("new", "Running", "2026-02-26T10:00:00Z", false);
        let old = pod("old", "Running", "2026-02-26T09:00:00Z", false);
        let leaving = pod("leaving", "Running", "2026-02-26T09:00:00Z", true);
        let pending = pod("pending", "Pending", "2026-02-26T09:00:00Z", false);
        assert_eq!(
            verify_pods([&new, &leaving, &pending], patched)
                .unwrap()
                .len(),
            1
        );
        let (why, _) = verify_pods([&new, &old], patched).unwrap_err();
        assert!(
            why.contains("1 of 2 running pods started before the patch") && why.contains("old"),
            "{why}"
        );
        assert!(verify_pods([&pending], patched).is_err());
    }

    /// The state read from a control plane whose pod spec is `spec`, before = `"true"`.
    fn state(spec: serde_json::Value, dry_run: DryRun) -> Result<State, Check> {
        let refs = references(&deployment(spec), KANIKO_CACHE);
        let wiring = wiring(&refs, KANIKO_CACHE, "prod")?;
        let before = (wiring.store == Store::ConfigMap).then(|| Some("true".to_string()));
        Ok(State {
            key: KANIKO_CACHE.into(),
            value: "false".into(),
            dry_run,
            wiring,
            before,
            restart_at: "2026-02-26T10:00:00Z".parse().unwrap(),
        })
    }

    /// A plan as one line per step: a decided check's id and status, or the action.
    fn steps(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|step| match step {
                Step::Decided(c) => format!("{} {}", c.id, c.status.as_str()),
                Step::Send(change) => format!("send {change:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_plan_follows_the_wiring_and_the_dry_run() {
        let env = json!({"containers": [{"name": "cp", "envFrom": [{"configMapRef": {"name": RUNTIME_CONFIG}}]}]});
        let secret = json!({"containers": [{"name": "cp", "envFrom": [{"secretRef": {"name": RUNTIME_CONFIG}}]}]});
        let files = json!({"volumes": [{"name": "cfg", "configMap": {"name": RUNTIME_CONFIG}}],
            "containers": [{"name": "cp", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}]});
        let (both, config) = (vec![Change::Config, Change::Restart], vec![Change::Config]);
        let wired = "mitigate.wiring pass";
        let dry = [wired, "mitigate.patch pass", "mitigate.restart pass"];
        let nothing = ["mitigate.rollout skip", "mitigate.verify skip"];
        for (name, spec, dry_run, preflight, want) in [
            (
                "envFrom: patch, restart, wait, verify",
                &env,
                DryRun::None,
                &both,
                vec![
                    wired,
                    "send Config",
                    "send Restart",
                    "AwaitRollout",
                    "VerifyPods",
                ],
            ),
            (
                "a Secret: the same",
                &secret,
                DryRun::None,
                &both,
                vec![
                    wired,
                    "send Config",
                    "send Restart",
                    "AwaitRollout",
                    "VerifyPods",
                ],
            ),
            (
                "files refreshed in place: no restart",
                &files,
                DryRun::None,
                &config,
                vec![
                    wired,
                    "send Config",
                    "mitigate.restart skip",
                    nothing[0],
                    nothing[1],
                ],
            ),
            (
                "--dry-run=server: every change dry-run, none made",
                &env,
                DryRun::Server,
                &both,
                [&dry[..], &nothing].concat(),
            ),
            (
                "--dry-run=server of files: no restart to dry-run",
                &files,
                DryRun::Server,
                &config,
                [&dry[..2], &["mitigate.restart skip"], &nothing].concat(),
            ),
            (
                "--dry-run=client: nothing sent",
                &env,
                DryRun::Client,
                &vec![],
                [&dry[..], &nothing].concat(),
            ),
        ] {
            let plan = plan(&state(spec.clone(), dry_run).unwrap());
            assert_eq!(&plan.preflight, preflight, "{name}");
            assert_eq!(steps(&plan), want, "{name}");
        }
    }

    #[test]
    fn dry_run_checks_say_what_would_change() {
        let env = json!({"containers": [{"name": "cp", "envFrom": [{"configMapRef": {"name": RUNTIME_CONFIG}}]}]});
        let secret = json!({"containers": [{"name": "cp", "envFrom": [{"secretRef": {"name": RUNTIME_CONFIG}}]}]});
        let detail = |spec: &serde_json::Value, dry_run, id: &str| -> String {
            let plan = plan(&state(spec.clone(), dry_run).unwrap());
            plan.steps
                .into_iter()
                .find_map(|s| match s {
                    Step::Decided(c) if c.id == id => Some(c.detail),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(
            detail(&env, DryRun::Client, "mitigate.patch"),
            r#"--dry-run=client: would merge-patch configmap/codex-k8s-runtime with {"data":{"CODEXK8S_KANIKO_CACHE_ENABLED":"false"}} (configmap/codex-k8s-runtime CODEXK8S_KANIKO_CACHE_ENABLED: "true" -> "false")"#
        );
        assert!(detail(&env, DryRun::Client, "mitigate.restart")
            .contains(r#"{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-02-26T10:00:00Z"}}}}}"#));
        assert_eq!(
            detail(&secret, DryRun::Server, "mitigate.patch"),
            "--dry-run=server: the API server accepts secret/codex-k8s-runtime CODEXK8S_KANIKO_CACHE_ENABLED set (a Secret's old value is not read); nothing persisted"
        );
    }

    #[test]
    fn no_plan_when_the_wiring_is_missing_or_ambiguous() {
        let unwired = json!({"containers": [{"name": "cp", "envFrom": [{"configMapRef": {"name": "other"}}]}]});
        let both = json!({"containers": [{"name": "cp", "envFrom": [
            {"configMapRef": {"name": RUNTIME_CONFIG}}, {"secretRef": {"name": RUNTIME_CONFIG}}]}]});
        for (spec, why) in [
            (unwired, "neither as a ConfigMap nor as a Secret"),
            (both, "both as a ConfigMap and as a Secret"),
        ] {
            let refused = state(spec, DryRun::None).unwrap_err();
            assert_eq!(
                (refused.id.as_str(), refused.status),
                ("mitigate.wiring", Status::Fail)
            );
            assert!(refused.detail.contains(why), "{}", refused.detail);
            assert!(
                refused
                    .remedy
                    .unwrap()
                    .contains("kubectl -n prod get deploy/codex-k8s-control-plane -o yaml")
            );
        }
    }
}
