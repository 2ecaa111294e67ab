//! Flags, defined once with their help text, and the dispatch to each flow.

use crate::exit::{Failure, Verdict};
use crate::output::OutputFormat;
use crate::report::{Outcome, Report};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-ck8s",
    bin_name = "kubectl ck8s",
    version,
    about = "The codex-k8s runbooks as one kubectl plugin",
    long_about = "The codex-k8s runbooks as one kubectl plugin.\n\nExit codes: 0 all checks passed, 1 a check failed or a violation was found, 2 usage, connection or permission error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags kubectl users expect on every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file to use.
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The name of the kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The production namespace.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "CODEXK8S_PRODUCTION_NAMESPACE",
        default_value = "codex-k8s-prod"
    )]
    pub namespace: String,
    /// The production domain.
    #[arg(long, global = true, env = "CODEXK8S_PRODUCTION_DOMAIN")]
    pub domain: Option<String>,
    /// How long to wait for a single server request (e.g. 10s, 1m).
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// More logging on stderr (-v, -vv).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The production smoke check: pods, rollouts, migrations, health, TLS, webhook, ingress, GC, retention.
    Smoke(crate::smoke::SmokeArgs),
    /// External port check: only 22, 80, 443 open.
    Ports(crate::ports::PortsArgs),
    /// Run namespaces and their objects; `runs env`: agent run pods' env names.
    Runs(crate::runs::RunsArgs),
    /// Legacy codexk8s.io/ label and annotation keys; --fix rewrites them to codex-k8s.dev/.
    Labels(crate::labels::LabelsArgs),
    /// Registry GC CronJob codex-k8s-registry-gc: status, run, logs.
    #[command(subcommand)]
    Gc(crate::gc::GcCommand),
    /// Diagnose AI slot build failures (runbook RB-CK8S-AISLOT-BUILD-0001).
    #[command(subcommand)]
    Diagnose(crate::diagnose::DiagnoseCommand),
    /// Apply the AI slot build runbook's mitigation to the runtime configuration.
    #[command(subcommand)]
    Mitigate(crate::mitigate::MitigateCommand),
    /// The guards on the write path: `lint` every webhook configuration of the cluster.
    #[command(subcommand)]
    Admission(crate::admission::AdmissionCommand),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// kubectl plugin completion (cobra protocol), called by kubectl_complete-ck8s.
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Evaluate, test, scaffold and inspect WASM policies.
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
}

impl GlobalArgs {
    /// The context a cluster-wide flow is handed (`policy audit`: it does not read the
    /// production namespace).
    async fn connect_cluster(&self) -> Result<crate::cluster::Ctx, Failure> {
        let options = crate::cluster::ConnectOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            request_timeout: self.request_timeout,
        };
        crate::cluster::connect(&options, &self.namespace, self.domain.clone()).await
    }

    /// The context a flow of the production namespace is handed, once that namespace is
    /// known to exist (exit 2 naming `-n`, `--context` and the environment variable when it
    /// does not; a warning when the user may not read namespaces): the one place every such
    /// flow checks it.
    async fn connect(&self) -> Result<crate::cluster::Ctx, Failure> {
        let ctx = self.connect_cluster().await?;
        if let crate::cluster::NamespaceCheck::Unverified(why) = ctx.verify_namespace().await? {
            eprintln!("warning: {why}");
        }
        Ok(ctx)
    }
}

/// Commands whose output is a script or a stream of text, not a report: `-o` is refused
/// there rather than ignored.
fn text_only(command: &Command) -> Option<&'static str> {
    match command {
        Command::Completion { .. } => Some("completion"),
        Command::Policy(crate::policy::PolicyCommand::New(_)) => Some("policy new"),
        Command::Policy(crate::policy::PolicyCommand::Test(_)) => Some("policy test"),
        _ => None,
    }
}

/// Runs the command and renders its outcome once, in the `-o` format.
pub async fn run(cli: Cli) -> Result<Verdict, Failure> {
    let format = cli.global.output;
    outcome(cli).await?.render(format)
}

async fn outcome(cli: Cli) -> Result<Outcome, Failure> {
    let g = &cli.global;
    // Refused before any flow runs, so nothing is written for an output that cannot be shown.
    if g.output == OutputFormat::Policyreport
        && !matches!(
            cli.command,
            Command::Policy(crate::policy::PolicyCommand::Audit(_))
        )
    {
        return Err(crate::report::policyreport_refused());
    }
    if g.output != OutputFormat::Table
        && let Some(name) = text_only(&cli.command)
    {
        return Err(Failure::usage(format!(
            "`{name}` prints text only; -o {} is not supported there",
            OutputFormat::names()[g.output as usize]
        )));
    }
    match cli.command {
        Command::Smoke(args) => crate::smoke::run(args, &g.connect().await?).await,
        Command::Ports(args) => crate::ports::run(args, g.domain.clone()).await,
        Command::Runs(args) => crate::runs::run(args, &g.connect().await?).await,
        Command::Labels(args) => crate::labels::run(args, &g.connect().await?).await,
        Command::Gc(cmd) => crate::gc::run(cmd, &g.connect().await?).await,
        Command::Diagnose(cmd) => crate::diagnose::run(cmd, &g.connect().await?).await,
        Command::Mitigate(cmd) => crate::mitigate::run(cmd, &g.connect().await?).await,
        Command::Admission(cmd) => crate::admission::run(cmd, &g.connect_cluster().await?).await,
        Command::Completion { shell } => Ok(crate::completion::generate(shell)),
        Command::Complete { args } => {
            let answer = crate::completion::cobra(&args).await;
            Ok(Outcome::text(Report::of("__complete", vec![]), answer))
        }
        Command::Policy(cmd) => crate::policy::run(cmd, g.output, || g.connect_cluster()).await,
    }
}
