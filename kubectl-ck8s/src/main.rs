//! `kubectl ck8s`: the codex-k8s runbooks as one kubectl plugin.
//!
//! Exit codes (stable, for scripts; mapped in one place, [`exit::code`]): 0 every check
//! passed, 1 a check failed or a violation was found, 2 usage, connection, permission,
//! missing-object or internal error.
//!
//! Every flow fetches into a typed state, judges it with pure functions and returns a
//! [`report::Outcome`]; [`cli::run`] renders it once. The cluster layer ([`cluster`]) knows
//! nothing of output.

mod admission;
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
    // kubectl's plugin completion passes the typed words raw: `__complete --context ""` must
    // not be read as this binary's own --context.
    let argv: Vec<String> = std::env::args().collect();
    let completing = argv.get(1).is_some_and(|a| a == "__complete");
    let cli = (!completing).then(cli::Cli::parse);
    if let Some(cli) = &cli {
        exit::init_tracing(cli.global.verbose);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return exit::finish(Err(exit::Failure::usage(format!(
                "cannot start the async runtime: {e}"
            ))));
        }
    };
    match cli {
        Some(cli) => exit::finish(runtime.block_on(cli::run(cli))),
        None => {
            print!("{}", runtime.block_on(completion::cobra(&argv[2..])));
            ExitCode::SUCCESS
        }
    }
}
