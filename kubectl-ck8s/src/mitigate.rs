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

use crate::cluster::objects::{self, pod_started};
use crate::cluster::wait::{self, Waited, Watched};
use crate::cluster::{Ctx, not_found_is_none};
use crate::exit::{Failure, Verdict};
use crate::names::*;
use crate::report::{Check, Report};
use crate::rollout::{Rollout, rollout_status};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use serde::Serialize;
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
    pub fn resource(self) -> &'static str {
        match self {
            Store::ConfigMap => "configmaps",
            Store::Secret => "secrets",
        }
    }
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
        !matches!(
            self,
            Via::Volume {
                sub_path: false,
                ..
            }
        )
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
    let at = format!("{patched:.0}");
    if starts.is_empty() {
        return Err((format!("no running {CONTROL_PLANE} pod yet"), starts));
    }
    let old: Vec<&PodStart> = starts.iter().filter(|s| !s.after_patch).collect();
    if old.is_empty() {
        Ok(starts)
    } else {
        let names: Vec<&str> = old.iter().map(|s| s.name.as_str()).collect();
        Err((
            format!(
                "{} of {} running pods started before the patch at {at}: {}",
                old.len(),
                starts.len(),
                names.join(", ")
            ),
            starts,
        ))
    }
}

fn rfc(t: Timestamp) -> String {
    format!("{t:.0}")
}

async fn patch_and_verify(
    ctx: &Ctx,
    key: &str,
    value: &str,
    args: &MitigateArgs,
) -> Result<Verdict, Failure> {
    let ns = ctx.namespace.clone();
    let here = Some(ns.as_str());
    let progress = ctx.progress(&format!("mitigate: {key}={value}"));
    let deploys = ctx.ns::<Deployment>();
    let deployment = not_found_is_none(deploys.get(CONTROL_PLANE).await)
        .map_err(|e| ctx.err("get", "deployments.apps", here, e))?
        .ok_or_else(|| {
            Failure::not_found(format!(
                "deployment {CONTROL_PLANE} not found in namespace {ns}"
            ))
            .with_help("check -n/--namespace (the production namespace)")
        })?;
    let refs = references(&deployment, key);
    let mut checks = Vec::new();
    let mut details = serde_json::json!({
        "key": key, "value": value, "dryRun": args.dry_run, "references": refs,
    });
    let report = |checks: Vec<Check>, details: serde_json::Value| {
        Report::new("mitigate", &ns, checks)
            .with_details(details)
            .print(ctx.out.format, None)
    };
    let stores: Vec<Store> = {
        let mut s: Vec<Store> = refs.iter().map(|r| r.store).collect();
        s.dedup();
        s
    };
    let store = match stores.as_slice() {
        [] => {
            checks.push(Check::fail("mitigate.wiring", format!("deployment {CONTROL_PLANE} reads {RUNTIME_CONFIG} neither as a ConfigMap nor as a Secret (no envFrom, no valueFrom of {key}, no volume): patching it would change nothing")).remedy(format!("kubectl -n {ns} get deploy/{CONTROL_PLANE} -o yaml: find where the control plane takes {key} from and set it there")));
            drop(progress);
            return report(checks, details);
        }
        [store] => *store,
        _ => {
            checks.push(Check::fail("mitigate.wiring", format!("deployment {CONTROL_PLANE} reads {RUNTIME_CONFIG} both as a ConfigMap and as a Secret: which one wins is not clear; nothing changed")).remedy(format!("kubectl -n {ns} get deploy/{CONTROL_PLANE} -o yaml")));
            drop(progress);
            return report(checks, details);
        }
    };
    let at_start_only = refs.iter().any(|r| r.via.at_start_only());
    checks.push(Check::pass(
        "mitigate.wiring",
        refs.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    ));
    details["store"] = serde_json::json!({"kind": store, "name": RUNTIME_CONFIG});
    let object = format!("{}/{RUNTIME_CONFIG}", store.prefix());
    // The old value, for the report: only a ConfigMap's (a Secret's is never read).
    let before = match store {
        Store::ConfigMap => {
            let cm = not_found_is_none(ctx.ns::<ConfigMap>().get(RUNTIME_CONFIG).await)
                .map_err(|e| ctx.err("get", "configmaps", here, e))?
                .ok_or_else(|| {
                    Failure::not_found(format!(
                        "{object} not found in namespace {ns}, though {CONTROL_PLANE} reads it"
                    ))
                })?;
            Some(cm.data.and_then(|d| d.get(key).cloned()))
        }
        Store::Secret => None,
    };
    let change = match &before {
        Some(Some(old)) => format!("{object} {key}: {old:?} -> {value:?}"),
        Some(None) => format!("{object} {key}: unset -> {value:?}"),
        None => format!("{object} {key} set (a Secret's old value is not read)"),
    };
    if let Some(old) = &before {
        details["before"] = serde_json::json!(old);
    }
    let patch = config_patch(store, key, value);
    let restart_at = Timestamp::now();
    let restart = restart_patch(restart_at);
    if args.dry_run == DryRun::Client {
        drop(progress);
        checks.push(Check::pass(
            "mitigate.patch",
            format!("--dry-run=client: would merge-patch {object} with {patch} ({change})"),
        ));
        checks.push(if at_start_only {
            Check::pass("mitigate.restart", format!("--dry-run=client: would patch deployment/{CONTROL_PLANE} with {restart} (the pods read {key} only at start)"))
        } else {
            Check::skip("mitigate.restart", "mounted as files: the kubelet refreshes them in place, no restart needed")
        });
        checks.push(Check::skip(
            "mitigate.rollout",
            "--dry-run=client: nothing changed",
        ));
        checks.push(Check::skip(
            "mitigate.verify",
            "--dry-run=client: nothing changed",
        ));
        return report(checks, details);
    }
    let dry = PatchParams::default().dry_run();
    let send = |params: PatchParams, what: &'static str| {
        let patch = &patch;
        let restart = &restart;
        async move {
            match what {
                "config" => match store {
                    Store::ConfigMap => ctx
                        .ns::<ConfigMap>()
                        .patch(RUNTIME_CONFIG, &params, &Patch::Merge(patch))
                        .await
                        .map(|_| None),
                    Store::Secret => ctx
                        .ns::<Secret>()
                        .patch(RUNTIME_CONFIG, &params, &Patch::Merge(patch))
                        .await
                        .map(|_| None),
                }
                .map_err(|e| ctx.err("patch", store.resource(), here, e)),
                _ => ctx
                    .ns::<Deployment>()
                    .patch(CONTROL_PLANE, &params, &Patch::Strategic(restart))
                    .await
                    .map(Some)
                    .map_err(|e| ctx.err("patch", "deployments.apps", here, e)),
            }
        }
    };
    // Every change passes the server-side dry run before any is made.
    send(dry.clone(), "config").await?;
    if at_start_only {
        send(dry.clone(), "restart").await?;
    }
    if args.dry_run == DryRun::Server {
        drop(progress);
        checks.push(Check::pass(
            "mitigate.patch",
            format!("--dry-run=server: the API server accepts {change}; nothing persisted"),
        ));
        checks.push(if at_start_only {
            Check::pass("mitigate.restart", format!("--dry-run=server: the API server accepts the restart of deployment/{CONTROL_PLANE}; nothing persisted"))
        } else {
            Check::skip("mitigate.restart", "mounted as files: the kubelet refreshes them in place, no restart needed")
        });
        checks.push(Check::skip(
            "mitigate.rollout",
            "--dry-run=server: nothing changed",
        ));
        checks.push(Check::skip(
            "mitigate.verify",
            "--dry-run=server: nothing changed",
        ));
        return report(checks, details);
    }
    send(PatchParams::default(), "config").await?;
    let patched_at = Timestamp::now();
    details["patchedAt"] = serde_json::json!(rfc(patched_at));
    checks.push(Check::pass(
        "mitigate.patch",
        format!(
            "{change} (server dry-run passed, then applied at {})",
            rfc(patched_at)
        ),
    ));
    if !at_start_only {
        checks.push(Check::skip("mitigate.restart", format!("{object} is mounted as files: the kubelet refreshes them in place (within about a minute), no restart needed")));
        checks.push(Check::skip("mitigate.rollout", "no restart"));
        checks.push(Check::skip(
            "mitigate.verify",
            "no restart: the files change in place",
        ));
        drop(progress);
        return report(checks, details);
    }
    let restarted = send(PatchParams::default(), "restart")
        .await?
        .unwrap_or_default();
    let generation = restarted.metadata.generation.unwrap_or(0);
    details["restartedAt"] = serde_json::json!(rfc(restart_at));
    details["generation"] = serde_json::json!(generation);
    checks.push(Check::pass(
        "mitigate.restart",
        format!("deployment/{CONTROL_PLANE} restarted as kubectl rollout restart does ({RESTARTED_AT}={}, generation {generation}): the pods read {key} only at start", rfc(restart_at)),
    ));
    let deadline = tokio::time::Instant::now() + args.timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let remedy = format!(
        "kubectl -n {ns} rollout status deploy/{CONTROL_PLANE} --timeout=180s; kubectl -n {ns} get pods -l <selector> -o wide; then retry the ai-slot task and run kubectl ck8s diagnose build --verify"
    );
    let timeout = humantime::format_duration(args.timeout).to_string();
    // Wait for the rollout the restart started.
    progress.set(&format!(
        "mitigate: waiting for the {CONTROL_PLANE} rollout"
    ));
    let watched = Watched {
        server: &ctx.server,
        resource: "deployments.apps",
        namespace: &ns,
    };
    let rollout = wait::until(
        ctx.ns::<Deployment>(),
        wait::named(CONTROL_PLANE),
        &watched,
        left(),
        &progress,
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
    let selector = match rollout {
        Waited::Done((Rollout::Complete(m), selector)) => {
            details["rollout"] = serde_json::json!(m);
            checks.push(Check::pass(
                "mitigate.rollout",
                format!("{CONTROL_PLANE}: {m}"),
            ));
            selector
        }
        Waited::Done((Rollout::Failed(m) | Rollout::Waiting(m), _)) => {
            details["rollout"] = serde_json::json!(m);
            checks.push(
                Check::fail("mitigate.rollout", format!("{CONTROL_PLANE}: {m}"))
                    .remedy(remedy.clone()),
            );
            checks.push(
                Check::fail(
                    "mitigate.verify",
                    "the rollout failed: the new value is not confirmed",
                )
                .remedy(remedy),
            );
            drop(progress);
            return report(checks, details);
        }
        Waited::TimedOut { last } => {
            details["rollout"] = serde_json::json!(last);
            checks.push(
                Check::fail(
                    "mitigate.rollout",
                    format!("{CONTROL_PLANE} not rolled out within --timeout {timeout}: {last}"),
                )
                .remedy(remedy.clone()),
            );
            checks.push(
                Check::fail(
                    "mitigate.verify",
                    format!("not verified within --timeout {timeout}"),
                )
                .remedy(remedy),
            );
            drop(progress);
            return report(checks, details);
        }
    };
    // Every running pod must have started after the patch: only those read the new value.
    progress.set("mitigate: verifying the control-plane pods started after the patch");
    let labels = selector
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
    let watched = Watched {
        server: &ctx.server,
        resource: "pods",
        namespace: &ns,
    };
    let mut seen = Vec::new();
    let verified = wait::until(
        ctx.ns::<Pod>(),
        watcher::Config::default().labels(&labels.to_string()),
        &watched,
        left(),
        &progress,
        |pods: &[std::sync::Arc<Pod>]| match verify_pods(
            pods.iter().map(|p| p.as_ref()),
            patched_at,
        ) {
            Ok(starts) => Ok(starts),
            Err((why, starts)) => {
                seen = starts;
                Err(why)
            }
        },
    )
    .await?;
    drop(progress);
    match verified {
        Waited::Done(starts) => {
            let list: Vec<String> = starts
                .iter()
                .map(|s| format!("{} ({})", s.name, s.started.map(rfc).unwrap_or_default()))
                .collect();
            checks.push(Check::pass(
                "mitigate.verify",
                format!(
                    "all {} running {CONTROL_PLANE} pods started after the patch at {}: {}",
                    starts.len(),
                    rfc(patched_at),
                    list.join(", ")
                ),
            ));
            details["pods"] = serde_json::json!(starts);
        }
        Waited::TimedOut { last } => {
            checks.push(
                Check::fail(
                    "mitigate.verify",
                    format!("not verified within --timeout {timeout}: {last}"),
                )
                .remedy(remedy),
            );
            details["pods"] = serde_json::json!(seen);
        }
    }
    report(checks, details)
}

pub async fn run(cmd: MitigateCommand, ctx: &Ctx) -> Result<Verdict, Failure> {
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
    use serde_json::json;

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
}
