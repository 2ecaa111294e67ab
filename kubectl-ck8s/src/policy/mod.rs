//! `kubectl ck8s policy ...`: offline evaluation with the webhook's own runtime.

use crate::cli::GlobalArgs;
use crate::exit::{Failure, Verdict};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the built-in policies.
    List,
}

pub async fn run(cmd: PolicyCommand, _global: &GlobalArgs) -> Result<Verdict, Failure> {
    match cmd {
        PolicyCommand::List => {
            let runtime = ck8s_policy_runtime::Runtime::new(Default::default(), ck8s_policy_runtime::Runtime::default_artifact_dir())?;
            for p in runtime.load_builtin()? {
                println!("{}\t{}\t{}", p.metadata.name, p.metadata.version, p.metadata.description);
            }
            Ok(Verdict::Pass)
        }
    }
}
