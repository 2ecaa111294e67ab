//! The one Kubernetes layer every cluster flow goes through: the connection and its context
//! ([`Ctx`]), the one place API errors become typed [`Failure`]s, the object helpers
//! ([`objects`]: Jobs, pods, conditions, times, selectors), pod logs read line by line
//! ([`logs`]), waits by watch ([`wait`]) and what the API server sends a webhook
//! ([`webhooks`]).

pub mod logs;
pub mod objects;
pub mod wait;
pub mod webhooks;

use crate::exit::Failure;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the cluster (kubectl's flags).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub request_timeout: Duration,
}

/// What every cluster flow is handed: the client and the namespace (no output: flows return
/// their [`crate::report::Outcome`], rendered by `cli::run`).
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub namespace: String,
    pub server: String,
    /// The kubeconfig context used (as errors name it), or `in-cluster`.
    pub context: String,
    /// The production domain (`--domain` / `CODEXK8S_PRODUCTION_DOMAIN`).
    pub domain: Option<String>,
    /// `--request-timeout`: the bound of one server request (and of a step made of several
    /// that the client would otherwise retry for minutes, as discovery of one API group).
    pub request_timeout: Duration,
}

/// The kubeconfig `--kubeconfig` names (or the default chain), with a missing file named.
pub fn kubeconfig(path: Option<&PathBuf>) -> Result<Option<Kubeconfig>, Failure> {
    match path {
        // A single file: read it ourselves so a missing file is reported by name.
        Some(path) if !path.to_string_lossy().contains(':') => Kubeconfig::read_from(path)
            .map(Some)
            .map_err(|e| Failure::usage(format!("cannot read kubeconfig {}: {e}", path.display()))),
        _ => Ok(None),
    }
}

pub async fn connect(
    opts: &ConnectOptions,
    namespace: &str,
    domain: Option<String>,
) -> Result<Ctx, Failure> {
    let options = KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let file = kubeconfig(opts.kubeconfig.as_ref())?;
    // The context's name, for messages: --context, else the kubeconfig's current-context.
    let mut context = opts.context.clone().or_else(|| match &file {
        Some(k) => k.current_context.clone(),
        None => Kubeconfig::read().ok().and_then(|k| k.current_context),
    });
    let config = match file {
        Some(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options).await,
        None => Config::from_kubeconfig(&options).await,
    };
    let mut config = match config {
        Ok(config) => config,
        // No kubeconfig inside a pod (the audit CronJob): its ServiceAccount, as kubectl does.
        Err(_)
            if opts.kubeconfig.is_none()
                && opts.context.is_none()
                && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() =>
        {
            context = Some("in-cluster".into());
            Config::incluster()
                .map_err(|e| Failure::usage(format!("cannot use the pod's service account: {e}")))?
        }
        Err(e) => {
            return Err(Failure::usage(format!("cannot load the kubeconfig: {e}"))
                .with_help("pass --kubeconfig FILE and --context NAME, as for kubectl"));
        }
    };
    config.read_timeout = Some(opts.request_timeout);
    config.write_timeout = Some(opts.request_timeout);
    config.connect_timeout = Some(opts.request_timeout.min(Duration::from_secs(10)));
    // kube's default retry would resend a request the server answers 503/429 for up to 15
    // times over minutes, far past --request-timeout: fail fast instead, and let the waits
    // (cluster/wait.rs) resume on their own backoff.
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .map_err(|e| Failure::usage(format!("cannot build the client: {e}")))?;
    Ok(Ctx {
        client,
        namespace: namespace.to_string(),
        server,
        context: context.unwrap_or_else(|| "(none)".into()),
        domain,
        request_timeout: opts.request_timeout,
    })
}

/// What the up-front look at the production namespace found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceCheck {
    Exists,
    /// The user may not read namespaces (403): the flow goes on, unverified.
    Unverified(String),
}

impl Ctx {
    /// The production namespace exists: checked once, before a flow reads anything in it, so
    /// a wrong `-n` or `--context` is one error (exit 2) naming both, never a report of
    /// every check failing (or passing) on nothing. A user who may not read namespaces goes
    /// on, with a warning on stderr that the namespace could not be verified.
    pub async fn verify_namespace(&self) -> Result<NamespaceCheck, Failure> {
        use k8s_openapi::api::core::v1::Namespace;
        let ns = &self.namespace;
        match self.all::<Namespace>().get(ns).await {
            Ok(_) => Ok(NamespaceCheck::Exists),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(Failure::not_found(format!(
                "namespace {ns} not found (context {}, server {}): nothing to check there",
                self.context, self.server
            ))
            .with_help(format!(
                "name the production namespace with -n/--namespace or $CODEXK8S_PRODUCTION_NAMESPACE (now {ns}), or the cluster with --context (now {})",
                self.context
            ))),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                let why = format!(
                    "cannot verify that namespace {ns} exists (context {}, server {}): forbidden: {}; going on",
                    self.context, self.server, s.message
                );
                Ok(NamespaceCheck::Unverified(why))
            }
            Err(e) => Err(self.err("get", "namespaces", None, e)),
        }
    }

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

    /// The object `name` of `api`, `None` when it does not exist; any other error fails,
    /// naming `resource` as kubectl does (`deployments.apps`).
    pub async fn get_opt<K>(
        &self,
        api: Api<K>,
        resource: &str,
        name: &str,
    ) -> Result<Option<K>, Failure>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        not_found_is_none(api.get(name).await)
            .map_err(|e| self.err("get", resource, api.namespace(), e))
    }

    /// The objects of `api` that `lp` selects; an error fails, naming `resource`.
    pub async fn list<K>(
        &self,
        api: Api<K>,
        resource: &str,
        lp: &ListParams,
    ) -> Result<Vec<K>, Failure>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let list = api.list(lp).await;
        Ok(list
            .map_err(|e| self.err("list", resource, api.namespace(), e))?
            .items)
    }

    /// Turns a client error into a typed failure: what was asked, of what, and what to do.
    pub fn err(
        &self,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        e: kube::Error,
    ) -> Failure {
        api_failure(&self.server, verb, resource, namespace, e)
    }
}

/// The one mapping of API errors: 403 forbidden (naming the refused verb and resource),
/// 404 not found, 401 and 5xx and transport errors connection, other refusals usage.
pub fn api_failure(
    server: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    e: kube::Error,
) -> Failure {
    let scope = namespace
        .map(|n| format!(" in namespace {n}"))
        .unwrap_or_default();
    match e {
        kube::Error::Api(status) if status.code == 403 => Failure::forbidden(
            verb,
            resource,
            format!("forbidden: cannot {verb} {resource}{scope}: {}", status.message),
        )
        .with_help(format!(
            "grant the verb \"{verb}\" on resource \"{resource}\"{scope} to your user (Role/ClusterRole + binding); see README \"RBAC\""
        )),
        kube::Error::Api(status) if status.code == 401 => {
            Failure::connection(format!("unauthorized: {}", status.message))
                .with_help("refresh your kubeconfig credentials")
        }
        kube::Error::Api(status) if status.code == 404 => Failure::not_found(format!(
            "not found: {resource}{scope}: {}",
            status.message
        )),
        kube::Error::Api(status) if status.code >= 500 => Failure::connection(format!(
            "the API server at {server} failed to {verb} {resource}{scope}: {} ({})",
            status.message, status.code
        )),
        kube::Error::Api(status) => Failure::usage(format!(
            "the API server refused to {verb} {resource}{scope}: {} ({})",
            status.message, status.code
        )),
        other => Failure::connection(format!("cannot reach the API server at {server}: {other}"))
            .with_help("check that the cluster is up and that --kubeconfig/--context point at it"),
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
