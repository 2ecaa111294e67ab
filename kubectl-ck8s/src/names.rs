//! The runbooks' literal names, defined once.

pub const SYSTEM_NAMESPACE: &str = "codex-k8s-system";
pub const CONTROL_PLANE: &str = "codex-k8s-control-plane";
/// api-gateway + staff UI.
pub const API_GATEWAY: &str = "codex-k8s";
pub const WORKER: &str = "codex-k8s-worker";
pub const OAUTH2_PROXY: &str = "oauth2-proxy";
pub const WEB_CONSOLE: &str = "codex-k8s-web-console";
pub const REGISTRY: &str = "codex-k8s-registry";
pub const MIGRATE_PREFIX: &str = "codex-k8s-migrate-";
pub const INGRESS: &str = "codex-k8s";
pub const TLS_SECRET: &str = "codex-k8s-production-tls";
pub const TLS_REUSE_PREFIX: &str = "codex-k8s-tls-";
pub const GC_CRONJOB: &str = "codex-k8s-registry-gc";
pub const GC_JOB_SELECTOR: &str = "app.kubernetes.io/name=codex-k8s-registry-gc";
pub const CODEGEN_CHECK_JOB: &str = "codex-k8s-codegen-check";
pub const RUNTIME_CONFIG: &str = "codex-k8s-runtime";
pub const WEBHOOK_PATH: &str = "/api/v1/webhooks/github";
pub const WEBHOOK_SKIP_REGEX: &str = "^/api/v1/webhooks/.*";
pub const HEAVY_RETENTION: &str = "CODEXK8S_RUN_HEAVY_FIELDS_RETENTION_DAYS";
pub const LEGACY_RETENTION: &str = "CODEXK8S_RUN_AGENT_LOGS_RETENTION_DAYS";
pub const KANIKO_CACHE: &str = "CODEXK8S_KANIKO_CACHE_ENABLED";
pub const BUILD_REF: &str = "CODEXK8S_BUILD_REF";
pub const RUN_NS_SELECTOR: &str =
    "codex-k8s.dev/managed-by=codex-k8s-worker,codex-k8s.dev/namespace-purpose=run";
pub const RUN_POD_SELECTOR: &str = "app.kubernetes.io/name=codex-k8s-run";
pub const RUN_ENV_NAMES: [&str; 5] = [
    "CODEXK8S_OPENAI_API_KEY",
    "CODEXK8S_GIT_BOT_TOKEN",
    "CODEXK8S_GIT_BOT_USERNAME",
    "CODEXK8S_GIT_BOT_MAIL",
    "CODEXK8S_AGENT_DISPLAY_NAME",
];
pub const LEGACY_LABEL_PREFIX: &str = "codexk8s.io/";
pub const LABEL_PREFIX: &str = "codex-k8s.dev/";
