//! `kubectl ck8s mitigate kaniko-cache | build-ref --ref VALUE`: the runbook's mitigation,
//! applied to ConfigMap `codex-k8s-runtime`: server-side dry-run first, then the patch, then
//! wait for the `codex-k8s-control-plane` rollout.

use crate::cluster::Ctx;
use crate::exit::{Failure, Verdict};
use crate::names::*;
use crate::report::{Check, Report};
use crate::rollout::{Rollout, rollout_status};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use std::time::Duration;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MitigateCommand {
    /// Signature A: set CODEXK8S_KANIKO_CACHE_ENABLED=false.
    KanikoCache(WaitArgs),
    /// Signature B: set CODEXK8S_BUILD_REF to a valid git ref (main, feature/<branch>, a commit SHA).
    BuildRef {
        #[arg(long = "ref", value_name = "VALUE")]
        value: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// How long to wait for the control-plane rollout.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Also restart the control-plane (as `kubectl rollout restart`) so it reads the new value.
    #[arg(long)]
    pub restart: bool,
}

/// The merge patch setting one key of the runtime configuration: pure.
pub fn config_patch(key: &str, value: &str) -> serde_json::Value {
    serde_json::json!({ "data": { key: value } })
}

async fn patch_and_wait(
    ctx: &Ctx,
    key: &str,
    value: &str,
    wait: &WaitArgs,
) -> Result<Verdict, Failure> {
    let ns = ctx.namespace.clone();
    let cms = ctx.ns::<ConfigMap>();
    let patch = config_patch(key, value);
    let progress = ctx.progress(&format!("mitigate: {key}={value}"));
    cms.patch(
        RUNTIME_CONFIG,
        &PatchParams::default().dry_run(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| ctx.err("patch", "configmaps", Some(&ns), e))?;
    cms.patch(
        RUNTIME_CONFIG,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| ctx.err("patch", "configmaps", Some(&ns), e))?;
    let mut checks = vec![Check::pass(
        "mitigate.patch",
        format!("configmap/{RUNTIME_CONFIG} {key}={value:?} (server dry-run passed, then applied)"),
    )];
    let deploys = ctx.ns::<Deployment>();
    if wait.restart {
        let restart = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": chrono::Utc::now().to_rfc3339()}}}}});
        deploys
            .patch(
                CONTROL_PLANE,
                &PatchParams::default(),
                &Patch::Strategic(&restart),
            )
            .await
            .map_err(|e| ctx.err("patch", "deployments.apps", Some(&ns), e))?;
    }
    progress.set(&format!(
        "mitigate: waiting for the {CONTROL_PLANE} rollout"
    ));
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let rollout = loop {
        let d = deploys
            .get(CONTROL_PLANE)
            .await
            .map_err(|e| ctx.err("get", "deployments.apps", Some(&ns), e))?;
        match rollout_status(&d) {
            Rollout::Waiting(m) if tokio::time::Instant::now() < deadline => {
                progress.set(&format!("mitigate: {m}"));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => break other,
        }
    };
    drop(progress);
    checks.push(match rollout {
        Rollout::Complete(m) => Check::pass("mitigate.rollout", format!("{CONTROL_PLANE}: {m}")),
        Rollout::Waiting(m) | Rollout::Failed(m) => Check::fail("mitigate.rollout", format!("{CONTROL_PLANE}: {m}")).remedy(format!("kubectl -n {ns} rollout status deploy/{CONTROL_PLANE} --timeout=180s; then retry the ai-slot task and run kubectl ck8s diagnose build --verify")),
    });
    Report::new("mitigate", &ns, checks).print(ctx.out.format, None)
}

pub async fn run(cmd: MitigateCommand, ctx: &Ctx) -> Result<Verdict, Failure> {
    match cmd {
        MitigateCommand::KanikoCache(wait) => {
            patch_and_wait(ctx, KANIKO_CACHE, "false", &wait).await
        }
        MitigateCommand::BuildRef { value, wait } => {
            if let Err(problems) = crate::buildref::judge(&value)? {
                return Err(Failure::usage(format!(
                    "refusing --ref {value:?}: the build-ref policy rejects it: {}",
                    problems.join("; ")
                ))
                .with_help(
                    "use a valid git ref without CLI flags: main, feature/<branch> or a commit SHA",
                ));
            }
            patch_and_wait(ctx, BUILD_REF, &value, &wait).await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patch_sets_one_key() {
        assert_eq!(
            super::config_patch("CODEXK8S_KANIKO_CACHE_ENABLED", "false"),
            serde_json::json!({"data": {"CODEXK8S_KANIKO_CACHE_ENABLED": "false"}})
        );
    }
}
