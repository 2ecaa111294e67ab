//! `admission pause|resume|status`: the break-glass of ck8s-admission. A pause makes the API
//! server skip the webhook (a `false` match condition on every webhook of its configuration),
//! so writes go through whether the guard is down or wrongly denying; who, why and until when
//! are recorded on the configuration ([`ck8s_guard`]). The end does not depend on this
//! process: ck8s-admission restores its configuration when the pause ends (the first replica
//! running then). Every pause and resume is an Event on the configuration.

use crate::cluster::Ctx;
use crate::exit::Failure;
use crate::report::{Check, Outcome, Report};
use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, PostParams};
use std::time::Duration;

/// The configuration `deploy/` ships.
const CONFIGURATION: &str = crate::smoke::guard::CONFIGURATION;
/// The longest pause: a break-glass, not a way to switch the guard off.
const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// How long writes go through unjudged (e.g. 30m, 2h; at most 24h). ck8s-admission
    /// restores its configuration at the end.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Why (recorded on the configuration and in the Event).
    #[arg(long)]
    pub reason: String,
}

pub async fn pause(args: PauseArgs, ctx: &Ctx) -> Result<Outcome, Failure> {
    if args.reason.trim().is_empty() {
        return Err(Failure::usage("--reason must say why the guard is paused"));
    }
    if args.duration.is_zero() || args.duration > MAX_PAUSE {
        return Err(Failure::usage(format!(
            "--for must be between 1s and {}",
            humantime::format_duration(MAX_PAUSE)
        )));
    }
    let who = whoami(ctx).await;
    let until = Timestamp::now()
        .checked_add(args.duration)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let mut vwc = get(ctx).await?;
    ck8s_guard::pause(&mut vwc, until, &who, args.reason.trim());
    replace(ctx, &vwc).await?;
    let message = format!(
        "paused by {who} until {until:.0} ({}): {}",
        humantime::format_duration(args.duration),
        args.reason.trim()
    );
    let event = record(ctx, &vwc, "Paused", &message).await;
    let mut checks = vec![
        Check::warn(
            "admission.pause",
            format!("{message}: the API server skips ck8s-admission, writes are not judged"),
        )
        .remedy("kubectl ck8s admission resume as soon as the guard is fixed; ck8s-admission restores itself at the end"),
    ];
    checks.extend(event);
    Ok(Outcome::checks(Report::of("admission pause", checks)))
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {}

pub async fn resume(_args: ResumeArgs, ctx: &Ctx) -> Result<Outcome, Failure> {
    let mut vwc = get(ctx).await?;
    if !ck8s_guard::restore(&mut vwc) {
        let nothing = Check::pass("admission.pause", "not paused: nothing to resume");
        return Ok(Outcome::checks(Report::of(
            "admission resume",
            vec![nothing],
        )));
    }
    replace(ctx, &vwc).await?;
    let who = whoami(ctx).await;
    let message = format!("resumed by {who}: the API server calls ck8s-admission again");
    let mut checks = vec![Check::pass("admission.pause", message.clone())];
    checks.extend(record(ctx, &vwc, "Resumed", &message).await);
    Ok(Outcome::checks(Report::of("admission resume", checks)))
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

pub async fn status(_args: StatusArgs, ctx: &Ctx) -> Result<Outcome, Failure> {
    let pause = ck8s_guard::pause_of(&get(ctx).await?);
    let check = check_of("admission.pause", &pause, Timestamp::now());
    Ok(Outcome::checks(Report::of("admission status", vec![check])))
}

/// The pause as a check `id`: pass when there is none, warn with the time left while one is
/// in effect (smoke shows the same), fail when a pause is half applied or past its end and
/// not restored (no ck8s-admission replica is running to restore it).
pub fn check_of(
    id: &str,
    pause: &Result<Option<ck8s_guard::Pause>, String>,
    now: Timestamp,
) -> Check {
    match pause {
        Err(e) => Check::fail(id, e.clone()).remedy("kubectl ck8s admission resume"),
        Ok(None) => Check::pass(id, "not paused: the API server calls ck8s-admission"),
        Ok(Some(p)) if !p.complete => Check::fail(
            id,
            format!("a pause by {} is on some webhooks only: some writes are still judged", p.by),
        )
        .remedy("kubectl ck8s admission pause again, or resume"),
        Ok(Some(p)) if p.until <= now => Check::fail(
            id,
            format!(
                "a pause by {} ended {} ago and was not restored: no ck8s-admission replica is running to restore it",
                p.by,
                humantime::format_duration(Duration::from_secs(now.duration_since(p.until).as_secs().max(0) as u64))
            ),
        )
        .remedy("start ck8s-admission (it restores its configuration), or kubectl ck8s admission resume"),
        Ok(Some(p)) => Check::warn(
            id,
            format!(
                "paused by {} ({}), {} left: writes are not judged",
                p.by,
                p.reason,
                humantime::format_duration(Duration::from_secs(p.until.duration_since(now).as_secs().max(0) as u64))
            ),
        )
        .remedy("kubectl ck8s admission resume once the guard is fixed"),
    }
}

async fn get(ctx: &Ctx) -> Result<ValidatingWebhookConfiguration, Failure> {
    let api: Api<ValidatingWebhookConfiguration> = ctx.all();
    ctx.get_opt(api, "validatingwebhookconfigurations", CONFIGURATION)
        .await?
        .ok_or_else(|| {
            Failure::not_found(format!(
                "ValidatingWebhookConfiguration {CONFIGURATION} not found: ck8s-admission is not installed"
            ))
        })
}

/// Replaces the configuration with its `resourceVersion`: an edit made meanwhile (by another
/// operator, or by ck8s-admission restoring it) is never overwritten.
async fn replace(ctx: &Ctx, vwc: &ValidatingWebhookConfiguration) -> Result<(), Failure> {
    let api: Api<ValidatingWebhookConfiguration> = ctx.all();
    api.replace(CONFIGURATION, &PostParams::default(), vwc)
        .await
        .map(|_| ())
        .map_err(|e| ctx.err("update", "validatingwebhookconfigurations", None, e))
}

/// Who the API server says we are (SelfSubjectReview); `unknown` when it cannot say.
async fn whoami(ctx: &Ctx) -> String {
    let api: Api<SelfSubjectReview> = ctx.all();
    let review = SelfSubjectReview::default();
    let review = api.create(&PostParams::default(), &review).await.ok();
    review
        .and_then(|r| r.status?.user_info?.username)
        .unwrap_or_else(|| "unknown".into())
}

/// An Event on the configuration; a check saying so when it could not be written (the pause
/// itself stands). The API server keeps Events about cluster-scoped objects in `default`.
async fn record(
    ctx: &Ctx,
    vwc: &ValidatingWebhookConfiguration,
    reason: &str,
    message: &str,
) -> Option<Check> {
    let ns = "default";
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{CONFIGURATION}-")),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("admissionregistration.k8s.io/v1".into()),
            kind: Some("ValidatingWebhookConfiguration".into()),
            name: Some(CONFIGURATION.into()),
            uid: vwc.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("kubectl-ck8s".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let api: Api<Event> = ctx.in_ns(ns);
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => None,
        Err(e) => Some(
            Check::warn(
                "admission.event",
                format!(
                    "the {reason} Event could not be written in {ns}: {}",
                    ctx.err("create", "events", Some(ns), e).message
                ),
            )
            .remedy("the operator role (deploy/rbac/operator.yaml) may create events in default"),
        ),
    }
}
