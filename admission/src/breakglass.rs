//! The end of a break-glass pause (`kubectl ck8s admission pause`, see [`ck8s_guard`]): every
//! replica watches its own ValidatingWebhookConfiguration and, when the recorded end has
//! passed, restores it, so the end does not depend on the operator's terminal. A replica
//! that starts after the end restores it at once. Replicas race harmlessly: the restore is a
//! `replace` with the object's `resourceVersion`, and the losers see it done.
//!
//! On only with `--restore-pause` (deploy/ sets it): without it ck8s-admission keeps no
//! connection to the API server for this.

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::time::Duration;

/// Watches `name` and restores it when its pause ends; runs until the process stops.
pub async fn restore_loop(client: kube::Client, name: String, paused: Gauge, restores: Counter) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    let mut latest: Option<ValidatingWebhookConfiguration> = None;
    loop {
        // Until the next change, or until the pause seen last ends.
        let wait = latest.as_ref().and_then(ck8s_guard::time_left);
        paused.set(i64::from(wait.is_some()));
        let ended = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(v)) => latest = Some(v),
                Some(Err(e)) => tracing::warn!(configuration = %name, error = %e, "watch of the webhook configuration failed; retrying"),
                None => return,
            },
            () = ended => {
                match restore(&api, &name).await {
                    Ok(Some(by)) => {
                        restores.inc();
                        tracing::warn!(configuration = %name, paused_by = %by, "break-glass pause ended: webhook configuration restored, writes are judged again");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(configuration = %name, error = %e, "cannot restore the webhook configuration after its pause; retrying in 5 s");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
                // As it is now: restored, extended, or (after an error) still to restore.
                latest = api.get(&name).await.ok();
            }
        }
    }
}

/// Restores `name` if its pause has ended: who had paused it, `None` when there was nothing
/// to do (resumed or extended meanwhile, or restored by another replica).
async fn restore(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
) -> Result<Option<String>, kube::Error> {
    let mut vwc = api.get(name).await?;
    if ck8s_guard::time_left(&vwc) != Some(Duration::ZERO) {
        return Ok(None);
    }
    let by = ck8s_guard::pause_of(&vwc)
        .ok()
        .flatten()
        .map(|p| p.by)
        .unwrap_or_default();
    ck8s_guard::restore(&mut vwc);
    match api.replace(name, &PostParams::default(), &vwc).await {
        Ok(_) => Ok(Some(by)),
        // Changed meanwhile: the watch brings the new object and the loop decides again.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}
