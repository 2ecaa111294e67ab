//! The connection to the API server and the one place its errors become user messages.
//!
//! Every read or write goes through [`Ctx`]; a 403 names the missing RBAC verb and
//! resource, an unreachable server says so, both exit 2.

use crate::cli::GlobalArgs;
use crate::exit::Failure;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use std::time::Duration;

/// The client plus the namespace and flags every flow needs.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub namespace: String,
    pub server: String,
}

pub async fn connect(global: &GlobalArgs) -> Result<Ctx, Failure> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        cluster: None,
        user: None,
    };
    let config = match &global.kubeconfig {
        // A single file: read it ourselves so a missing file is reported by name.
        Some(path) if !path.to_string_lossy().contains(':') => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                Failure::usage(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        _ => Config::from_kubeconfig(&options).await,
    };
    let mut config = match config {
        Ok(config) => config,
        // No kubeconfig inside a pod (the audit CronJob): its ServiceAccount, as kubectl does.
        Err(_)
            if global.kubeconfig.is_none()
                && global.context.is_none()
                && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() =>
        {
            Config::incluster()
                .map_err(|e| Failure::usage(format!("cannot use the pod's service account: {e}")))?
        }
        Err(e) => {
            return Err(Failure::usage(format!("cannot load the kubeconfig: {e}"))
                .with_help("pass --kubeconfig FILE and --context NAME, as for kubectl"));
        }
    };
    config.read_timeout = Some(global.request_timeout);
    config.write_timeout = Some(global.request_timeout);
    config.connect_timeout = Some(global.request_timeout.min(Duration::from_secs(10)));
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .map_err(|e| Failure::usage(format!("cannot build the client: {e}")))?;
    Ok(Ctx {
        client,
        namespace: global.namespace.clone(),
        server,
    })
}

impl Ctx {
    pub fn ns<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn in_ns<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn all<K>(&self) -> Api<K>
    where
        K: kube::Resource,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::all(self.client.clone())
    }

    /// Turns a client error into the user's message: what was asked, of what, and what to do.
    pub fn err(
        &self,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        e: kube::Error,
    ) -> Failure {
        let scope = namespace
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        match e {
            kube::Error::Api(status) if status.code == 403 => Failure::usage(format!(
                "forbidden: cannot {verb} {resource}{scope}: {}",
                status.message
            ))
            .with_help(format!(
                "grant the verb \"{verb}\" on resource \"{resource}\"{scope} to your user (Role/ClusterRole + binding); see README \"RBAC\""
            )),
            kube::Error::Api(status) if status.code == 401 => {
                Failure::usage(format!("unauthorized: {}", status.message)).with_help("refresh your kubeconfig credentials")
            }
            kube::Error::Api(status) => Failure::usage(format!(
                "the API server refused to {verb} {resource}{scope}: {} ({})",
                status.message, status.code
            )),
            other => Failure::usage(format!("cannot reach the API server at {}: {other}", self.server))
                .with_help("check that the cluster is up and that --kubeconfig/--context point at it"),
        }
    }
}

/// `Ok(None)` for 404, the object otherwise; other errors are kept for the caller.
pub fn not_found_is_none<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A spinner on stderr, only when stderr is a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn start(message: &str) -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress(Some(bar))
    }
    pub fn set(&self, message: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(message.to_string());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
