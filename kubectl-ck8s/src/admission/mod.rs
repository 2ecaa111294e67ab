//! `kubectl ck8s admission ...`: the health of the guards on the cluster's write path.
//!
//! - `lint`: every validating and mutating webhook configuration, of any vendor, judged for
//!   what can lock the cluster out or slow every write.
//! - `pause`, `resume`, `status`: the break-glass of ck8s-admission, restored by the guard
//!   itself at the end.

pub(crate) mod lint;
pub(crate) mod pause;

use crate::cluster::Ctx;
use crate::exit::Failure;
use crate::report::Outcome;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AdmissionCommand {
    /// Judge every webhook configuration for lockouts, slow writes, outages and certificates.
    Lint(lint::LintArgs),
    /// Let writes through unjudged for a while (both emergencies: the guard down, or wrongly
    /// denying); ck8s-admission restores itself at the end.
    Pause(pause::PauseArgs),
    /// End a pause now.
    Resume(pause::ResumeArgs),
    /// Whether ck8s-admission is paused, by whom, why and for how long.
    Status(pause::StatusArgs),
}

pub async fn run(cmd: AdmissionCommand, ctx: &Ctx) -> Result<Outcome, Failure> {
    match cmd {
        AdmissionCommand::Lint(args) => lint::run(args, ctx).await,
        AdmissionCommand::Pause(args) => pause::pause(args, ctx).await,
        AdmissionCommand::Resume(args) => pause::resume(args, ctx).await,
        AdmissionCommand::Status(args) => pause::status(args, ctx).await,
    }
}
