//! Flags of `ck8s-admission`, defined once with their help text.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ck8s-admission",
    version,
    about = "Validating admission webhook for codex-k8s: admission.k8s.io/v1 over HTTPS, decisions by WASM policies and ValidatingAdmissionPolicy files",
    long_about = "Validating admission webhook for codex-k8s.\n\nServes POST /validate (admission.k8s.io/v1 AdmissionReview) over HTTPS only, and /healthz, /readyz, /metrics on the metrics listener (plain HTTP) and over HTTPS.\nWithout --tls-cert/--tls-key it starts in development mode with a generated self-signed certificate."
)]
pub struct Args {
    /// HTTPS address for admission reviews.
    #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// PEM certificate chain served to the API server (reloaded when the file changes).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (reloaded when the file changes).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, clients (the API server) must present a certificate it signed.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Directory of extra policies, loaded beside the built-in ones and reloaded on change:
    /// `.wasm` modules and ValidatingAdmissionPolicy files (`.yaml`, `.yml`).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Do not load the built-in policies (only those in --policies).
    #[arg(long)]
    pub no_builtin: bool,
    /// Per-policy modes and settings (YAML); reloaded on change.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090", value_name = "ADDR:PORT")]
    pub metrics_listen: SocketAddr,
    /// Directory for precompiled policy artifacts (default: $CK8S_CACHE_DIR, else ~/.cache/ck8s).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// CPU deadline of one policy evaluation.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub policy_timeout: Duration,
    /// Memory cap of one policy instance, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub policy_memory_mib: usize,
    /// Reviews evaluated at once; more wait up to --queue-timeout, then get an explicit
    /// "overloaded" denial instead of piling up.
    #[arg(long, default_value_t = 64)]
    pub max_inflight: usize,
    /// How long a review may wait for room in --max-inflight-bytes and for an evaluation
    /// slot, in all; then it gets the "overloaded" answer.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub queue_timeout: Duration,
    /// Memory budget for request bodies being read or judged at once, in bytes. A body is
    /// read only once its Content-Length (or, chunked, each piece) fits; see RELIABILITY.md
    /// for how the default keeps the process within its 128 MiB memory limit.
    #[arg(long, default_value_t = 24 << 20, value_name = "BYTES")]
    pub max_inflight_bytes: usize,
    /// Open HTTPS connections at most; at the cap idle keep-alive connections are closed
    /// first, else new ones wait in the listen queue.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Time a client has to finish the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Time a client has to send a request's headers once it started sending them.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Time a request body may take, plus its size at --body-min-rate.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Slowest accepted body upload, in bytes per second (see --body-timeout).
    #[arg(long, default_value_t = 2 << 20, value_name = "BYTES_PER_SEC")]
    pub body_min_rate: u64,
    /// How long a keep-alive connection may wait for its next request.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// The kubeconfig for what ValidatingAdmissionPolicies read from the cluster (Namespaces,
    /// params), watched only when a policy needs them. Default: in-cluster, or `$KUBECONFIG`.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Restore this ValidatingWebhookConfiguration when a break-glass pause recorded on it
    /// (`kubectl ck8s admission pause`) ends; watches it through the API server.
    #[arg(long, value_name = "CONFIGURATION")]
    pub restore_pause: Option<String>,
    /// How often certificate, policies and config are checked for changes, beside the file
    /// events that start a check at once.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// Largest request body. The API server limits objects to 3 MiB and a review may carry
    /// object and oldObject, so the default leaves room for both.
    #[arg(long, default_value_t = 8 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// The runtime limits these flags ask for.
    pub fn limits(&self) -> ck8s_policy_runtime::Limits {
        ck8s_policy_runtime::Limits {
            deadline: self.policy_timeout,
            memory_bytes: self.policy_memory_mib << 20,
            // every in-flight review holds one instance at a time (one per module, in turn)
            max_instances: (self.max_inflight as u32).clamp(16, 1024),
            ..Default::default()
        }
    }
}

impl Args {
    /// The policies in service: the built-ins unless `--no-builtin`, `--policies DIR`,
    /// `--config FILE`. Read again at every reload.
    pub fn policy_sources(&self) -> ck8s_policy_runtime::PolicySources {
        let mut sources = ck8s_policy_runtime::PolicySources::new();
        if !self.no_builtin {
            sources = sources.builtin(ck8s_builtin_policies::BUNDLE);
        }
        if let Some(dir) = &self.policies {
            sources = sources.dir(dir);
        }
        if let Some(config) = &self.config {
            sources = sources.config_file(config);
        }
        sources
    }

    /// The directories whose file events start a reload: the policies directory and the
    /// directories of the config, the certificate and the client CA.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let parent = |p: &PathBuf| {
            p.parent().map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d.to_path_buf()
                }
            })
        };
        let mut dirs: Vec<PathBuf> = self.policies.iter().cloned().collect();
        for file in [&self.config, &self.tls_cert, &self.tls_key, &self.client_ca]
            .into_iter()
            .flatten()
        {
            dirs.extend(parent(file));
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Flag combinations that cannot work, as a usage error.
    pub fn check(&self) -> Result<(), String> {
        if self.max_inflight_bytes < self.max_body_bytes {
            return Err(format!(
                "--max-inflight-bytes ({}) must be at least --max-body-bytes ({}), or a largest body could never be read",
                self.max_inflight_bytes, self.max_body_bytes
            ));
        }
        if self.max_body_bytes > u32::MAX as usize {
            return Err("--max-body-bytes must be below 4 GiB".into());
        }
        if self.max_connections == 0 || self.body_min_rate == 0 {
            return Err("--max-connections and --body-min-rate must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let a = Args::try_parse_from(["ck8s-admission"]).unwrap();
        assert_eq!(a.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(a.metrics_listen.to_string(), "0.0.0.0:9090");
        assert!(a.tls_cert.is_none());
        assert_eq!(a.check(), Ok(()));
    }

    #[test]
    fn the_body_budget_holds_a_largest_body() {
        let a = Args::try_parse_from([
            "ck8s-admission",
            "--max-body-bytes=1000",
            "--max-inflight-bytes=999",
        ])
        .unwrap();
        assert!(a.check().unwrap_err().contains("--max-inflight-bytes"));
    }

    #[test]
    fn cert_and_key_go_together() {
        assert!(Args::try_parse_from(["ck8s-admission", "--tls-cert", "c.pem"]).is_err());
        assert!(
            Args::try_parse_from(["ck8s-admission", "--tls-cert", "c", "--tls-key", "k"]).is_ok()
        );
    }
}
