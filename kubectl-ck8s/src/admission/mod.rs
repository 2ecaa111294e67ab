//! `kubectl ck8s admission ...`: the health of the guards on the cluster's write path.
//!
//! - `lint`: every validating and mutating webhook configuration, of any vendor, judged for
//!   what can lock the cluster out or slow every write.

pub(crate) mod lint;

use crate::cluster::Ctx;
use crate::exit::{Failure, Verdict};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AdmissionCommand {
    /// Judge every webhook configuration for lockouts, slow writes, outages and certificates.
    Lint(lint::LintArgs),
}

pub async fn run(cmd: AdmissionCommand, ctx: &Ctx) -> Result<Verdict, Failure> {
    match cmd {
        AdmissionCommand::Lint(args) => lint::run(args, ctx).await,
    }
}
