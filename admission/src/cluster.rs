//! What ValidatingAdmissionPolicies read from the cluster, served from watches: Namespaces
//! (`namespaceSelector`, `namespaceObject`) and params (`paramKind`). A review only reads
//! memory; nothing is watched (and no client made) until a policy set in service needs it, so
//! a webhook with WASM policies only keeps no connection to the API server.
//!
//! Until a watch has listed its objects, or without cluster access, a lookup fails, and a
//! policy that needs it fails closed with the reason (its `failurePolicy` decides), exactly
//! as a lookup of something that does not exist would not.

use ck8s_policy_runtime::cel::{LabelSelector, ParamKind, ParamSource, selector_matches};
use ck8s_policy_runtime::{ClusterReads, VapNeeds};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One watched kind: its store, and whether its first list has arrived.
struct Watched<K: kube::Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    synced: Arc<AtomicBool>,
}

impl<K> Watched<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    fn start(api: Api<K>, dyntype: K::DynamicType, what: String) -> Self {
        let writer = reflector::store::Writer::new(dyntype);
        let store = writer.as_reader();
        let synced = Arc::new(AtomicBool::new(false));
        let ready = store.clone();
        let flag = synced.clone();
        let shown = what.clone();
        tokio::spawn(async move {
            if ready.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
                tracing::info!(kind = %shown, "watching for ValidatingAdmissionPolicies");
            }
        });
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::warn!(kind = %what, error = %e, "watch failed; retrying");
                }
            }
        });
        Watched { store, synced }
    }

    fn ready(&self, what: &str) -> Result<&Store<K>, String> {
        if self.synced.load(Ordering::Acquire) {
            Ok(&self.store)
        } else {
            Err(format!("ck8s-admission has not listed {what} yet"))
        }
    }
}

/// The params' watches, by `(apiVersion, kind)`.
type ParamWatches = BTreeMap<(String, String), Arc<Watched<DynamicObject>>>;

/// The watches, made on first need.
#[derive(Default)]
pub struct ClusterCache {
    kubeconfig: Option<PathBuf>,
    client: OnceLock<Result<Client, String>>,
    namespaces: OnceLock<Watched<Namespace>>,
    params: Mutex<ParamWatches>,
}

impl ClusterCache {
    /// `kubeconfig`: the file to read; `None`: in-cluster, or `$KUBECONFIG`.
    pub fn new(kubeconfig: Option<PathBuf>) -> Self {
        ClusterCache {
            kubeconfig,
            ..Default::default()
        }
    }

    /// Starts what `needs` asks for and is not watched yet. Called whenever a policy set goes
    /// into service.
    pub async fn watch(&self, needs: &VapNeeds) {
        if !needs.namespaces && needs.param_kinds.is_empty() {
            return;
        }
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "ValidatingAdmissionPolicies need the cluster, and ck8s-admission cannot reach it: their lookups fail closed");
                return;
            }
        };
        if needs.namespaces {
            self.namespaces
                .get_or_init(|| Watched::start(Api::all(client.clone()), (), "namespaces".into()));
        }
        for kind in &needs.param_kinds {
            let key = (kind.api_version.clone(), kind.kind.clone());
            if self.params.lock().unwrap().contains_key(&key) {
                continue;
            }
            let (group, version) = match kind.api_version.split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", kind.api_version.as_str()),
            };
            let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
            match kube::discovery::pinned_kind(&client, &gvk).await {
                Ok((resource, _)) => {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                    let what = format!("{} params", resource.plural);
                    let watched = Watched::start(api, resource, what);
                    self.params.lock().unwrap().insert(key, Arc::new(watched));
                }
                Err(e) => tracing::error!(
                    param_kind = %format!("{}/{}", kind.api_version, kind.kind),
                    error = %e,
                    "cannot find the params' kind: policies with it fail closed"
                ),
            }
        }
    }

    pub(crate) async fn client(&self) -> Result<Client, String> {
        if let Some(made) = self.client.get() {
            return made.clone();
        }
        let made = async {
            let config = match &self.kubeconfig {
                Some(path) => {
                    let kc = kube::config::Kubeconfig::read_from(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    kube::Config::from_custom_kubeconfig(kc, &Default::default())
                        .await
                        .map_err(|e| e.to_string())?
                }
                None => kube::Config::infer().await.map_err(|e| e.to_string())?,
            };
            Client::try_from(config).map_err(|e| e.to_string())
        }
        .await;
        self.client.get_or_init(|| made).clone()
    }

    fn param_store(&self, kind: &ParamKind) -> Result<Arc<Watched<DynamicObject>>, String> {
        self.params
            .lock()
            .unwrap()
            .get(&(kind.api_version.clone(), kind.kind.clone()))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "ck8s-admission does not watch {}/{} (no cluster access, or the kind is not served)",
                    kind.api_version, kind.kind
                )
            })
    }
}

fn to_json<T: serde::Serialize>(object: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(object).map_err(|e| e.to_string())
}

impl ParamSource for ClusterCache {
    fn get(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        let watched = self.param_store(kind)?;
        let store = watched.ready(&format!("{} params", kind.kind))?;
        let found = store.state().into_iter().find(|o| {
            o.metadata.name.as_deref() == Some(name)
                && namespace.is_none_or(|ns| o.metadata.namespace.as_deref() == Some(ns))
        });
        found.map(|o| to_json(&*o)).transpose()
    }

    fn list(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<Vec<serde_json::Value>, String> {
        let watched = self.param_store(kind)?;
        let store = watched.ready(&format!("{} params", kind.kind))?;
        let mut out = Vec::new();
        for o in store.state() {
            if namespace.is_some_and(|ns| o.metadata.namespace.as_deref() != Some(ns)) {
                continue;
            }
            let labels = o.metadata.labels.clone().unwrap_or_default();
            if selector_matches(selector, &labels)? {
                out.push(to_json(&*o)?);
            }
        }
        Ok(out)
    }
}

impl ClusterReads for ClusterCache {
    fn namespace(&self, name: &str) -> Result<Option<serde_json::Value>, String> {
        let watched = self
            .namespaces
            .get()
            .ok_or("ck8s-admission does not watch namespaces (no cluster access)")?;
        let store = watched.ready("namespaces")?;
        store
            .get(&ObjectRef::new(name))
            .map(|ns| to_json(&*ns))
            .transpose()
    }
}
