//! Waits by watch: kube's watcher (list, then watch from the list's resourceVersion, relisting
//! when the server says the version is gone), resumed with kube's default backoff across
//! transient errors and API server restarts, bounded by a deadline, with a progress line.

use super::Ctx;
use crate::exit::Failure;
use crate::output::Progress;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// How a wait ended.
#[derive(Debug)]
pub enum Waited<T> {
    /// The condition held; its answer.
    Done(T),
    /// The deadline passed first; `last` says where things stood.
    TimedOut { last: String },
}

/// Watches the `resource` objects (as kubectl names them, for messages: `deployments.apps`)
/// of the context's namespace that `config` selects until `cond` answers `Ok(Some(_))` for the current
/// set, or `timeout` passes. `cond` sees every object the watch holds after each change;
/// `Err(message)` means "not yet", and the message goes to the progress line.
/// Permanent errors (forbidden, unauthorized, unknown resource) end the wait as a failure;
/// any other error is retried.
pub async fn until<K, T>(
    ctx: &Ctx,
    resource: &str,
    config: watcher::Config,
    timeout: Duration,
    progress: &Progress,
    mut cond: impl FnMut(&[Arc<K>]) -> Result<T, String>,
) -> Result<Waited<T>, Failure>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer): (Store<K>, _) = reflector::store();
    let stream = reflector::reflector(writer, watcher(ctx.ns::<K>(), config)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut last = String::from("no answer from the API server yet");
    // The error of a watch that has not resumed since: a timeout names it, so an outage is
    // not mistaken for a slow rollout.
    let mut interrupted: Option<String> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => {
                return Ok(Waited::TimedOut {
                    last: match interrupted {
                        Some(e) => format!(
                            "{last}; the watch of {resource} was interrupted and had not resumed: {e}"
                        ),
                        None => last,
                    },
                });
            }
            Ok(Some(next)) => next,
        };
        if next.is_ok() {
            interrupted = None;
        }
        match next {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => match cond(&store.state()) {
                Ok(answer) => return Ok(Waited::Done(answer)),
                Err(why) => {
                    progress.set(&why);
                    last = why;
                }
            },
            Err(e) => {
                let text = chain(&e);
                let (verb, e) = source(e);
                if let Some(failure) = permanent(ctx, resource, verb, text.clone(), e) {
                    return Err(failure);
                }
                // Transient (connection refused while the server restarts, 5xx, 410 Gone, a
                // cut stream): the backoff retries; say so on the progress line.
                progress.set(&format!("{last} (watch interrupted, resuming)"));
                interrupted = Some(text);
            }
        }
    }
}

/// An error and its causes (`connection refused` is a cause, several levels down).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

/// The request the authorizer saw (the initial list, or the watch) and its error.
fn source(e: watcher::Error) -> (&'static str, Option<kube::Error>) {
    match e {
        watcher::Error::InitialListFailed(e) => ("list", Some(e)),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => ("watch", Some(e)),
        watcher::Error::WatchError(status) => ("watch", Some(kube::Error::Api(status))),
        watcher::Error::NoResourceVersion => ("watch", None),
    }
}

/// The errors waiting longer cannot cure.
fn permanent(
    ctx: &Ctx,
    resource: &str,
    verb: &str,
    text: String,
    e: Option<kube::Error>,
) -> Option<Failure> {
    match e {
        Some(kube::Error::Api(s)) if matches!(s.code, 401 | 403 | 404) => {
            Some(ctx.err(verb, resource, Some(&ctx.namespace), kube::Error::Api(s)))
        }
        None => Some(Failure::connection(format!(
            "cannot watch {resource} in namespace {}: {text}",
            ctx.namespace
        ))),
        Some(_) => None,
    }
}

/// A watch of the one object called `name`.
pub fn named(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}
