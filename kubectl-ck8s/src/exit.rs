//! Exit codes and the one way errors reach the user (`error: ...` then `help: ...`).

use std::process::ExitCode;

/// The verdict of a command that ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed (warnings allowed).
    Pass = 0,
    /// A check failed or a violation was found.
    Fail = 1,
}

impl From<Verdict> for ExitCode {
    fn from(v: Verdict) -> Self {
        ExitCode::from(v as u8)
    }
}

/// Exit code for usage, connection and permission errors.
pub const ERROR: u8 = 2;

/// A command that could not run to the end: always exit code 2.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub help: Option<String>,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::usage(e.to_string())
    }
}

pub fn report(failure: Failure) -> ExitCode {
    eprintln!("error: {}", failure.message);
    if let Some(help) = failure.help {
        eprintln!("help: {help}");
    }
    ExitCode::from(ERROR)
}

pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CK8S_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
