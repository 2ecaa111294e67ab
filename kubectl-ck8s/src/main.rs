//! `kubectl ck8s`: the codex-k8s runbooks as one kubectl plugin.
//!
//! Exit codes (stable, for scripts): 0 every check passed, 1 a check failed or a violation
//! was found, 2 usage, connection or permission error.

mod buildref;
mod cli;
mod cluster;
mod completion;
mod diagnose;
mod exit;
mod gc;
mod labels;
mod legacy;
mod mitigate;
mod names;
mod output;
mod policy;
mod ports;
mod report;
mod rollout;
mod runs;
mod smoke;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    exit::init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return exit::report(exit::Failure::usage(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code.into(),
        Err(failure) => exit::report(failure),
    }
}
