//! Typed errors and the one place they become exit codes and `error: ...` / `help: ...` lines.

use std::process::ExitCode;

/// The verdict of a command that ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed (warnings allowed).
    Pass = 0,
    /// A check failed or a violation was found.
    Fail = 1,
}

impl Verdict {
    /// `Pass` when `ok`, else `Fail`.
    pub fn pass_if(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }
}

/// Exit code for usage, connection, permission, missing-object and internal errors.
pub const ERROR: u8 = 2;

/// What kind of failure stopped a command: scripts and tests tell them apart by this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Bad flags or input, a file that cannot be read, a value the policy rejects.
    Usage,
    /// The API server cannot be reached, or refused the credentials, or answered 5xx.
    Connection,
    /// The authorizer refused `verb` on `resource` (as kubectl names them: `deployments.apps`).
    Forbidden { verb: String, resource: String },
    /// An object the command needs does not exist.
    NotFound,
    /// ck8s itself failed (the policy runtime did not start, a report could not be encoded):
    /// nothing the user's flags or input can fix.
    Internal,
}

/// A command that could not run to the end.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    pub help: Option<String>,
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            help: None,
        }
    }
    /// The `error:`/`help:` pair on stderr.
    pub fn eprint(&self) {
        eprintln!("error: {}", self.message);
        if let Some(help) = &self.help {
            eprintln!("help: {help}");
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }
    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(Kind::Connection, message)
    }
    pub fn forbidden(verb: &str, resource: &str, message: impl Into<String>) -> Self {
        Self::new(
            Kind::Forbidden {
                verb: verb.into(),
                resource: resource.into(),
            },
            message,
        )
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The exit code of this failure (see [`code`]).
    pub fn exit_code(&self) -> u8 {
        // A failed check is not an error: it is a report whose verdict is fail (exit 1).
        match self.kind {
            Kind::Usage
            | Kind::Connection
            | Kind::Forbidden { .. }
            | Kind::NotFound
            | Kind::Internal => ERROR,
        }
    }
}

/// Every exit code the plugin returns comes from here: 0 pass, 1 a check failed (a report
/// with verdict fail), 2 usage, connection, permission, missing-object or internal error.
pub fn code(result: &Result<Verdict, Failure>) -> u8 {
    match result {
        Ok(v) => *v as u8,
        Err(f) => f.exit_code(),
    }
}

/// Prints the failure (if any) on stderr and returns the process exit code.
pub fn finish(result: Result<Verdict, Failure>) -> ExitCode {
    let code = code(&result);
    if let Err(failure) = result {
        failure.eprint();
    }
    ExitCode::from(code)
}

/// Logs on stderr. By default only ck8s's own warnings: a dependency's log line (the kube
/// client's `ERROR ... failed with error`) would say again, less clearly, what the
/// `error:`/`help:` pair says. `-v` brings the dependencies' warnings and ck8s's info, `-vv`
/// everything at debug; `CK8S_LOG` (an env filter) overrides both. Colours only on a
/// terminal, never with `NO_COLOR` set and not empty (no-color.org).
pub fn init_tracing(verbose: u8) {
    use std::io::IsTerminal;
    let filter = match verbose {
        0 => "off,kubectl_ck8s=warn",
        1 => "warn,kubectl_ck8s=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CK8S_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_exit_code() {
        for (result, want) in [
            (Ok(Verdict::Pass), 0),
            (Ok(Verdict::Fail), 1),
            (Err(Failure::usage("x")), 2),
            (Err(Failure::connection("x")), 2),
            (Err(Failure::forbidden("list", "pods", "x")), 2),
            (Err(Failure::not_found("x")), 2),
            (Err(Failure::internal("x")), 2),
        ] {
            assert_eq!(code(&result), want, "{result:?}");
        }
    }
}
