use ck8s_admission::cli::{Args, LogFormat};
use clap::Parser;
use std::process::ExitCode;

/// mimalloc rather than the C library's allocator: a review allocates and frees its parse, the
/// policies' input and the answer, and musl's malloc (the shipped static binary) made that a
/// fifth of the CPU per review (BENCHMARKS.md, "ck8s-admission's CPU per review").
#[global_allocator]
static ALLOCATOR: ck8s_admission_allocator::MiMalloc = ck8s_admission_allocator::MiMalloc;

fn main() -> ExitCode {
    ck8s_admission_allocator::return_freed_memory_promptly();
    let args = Args::parse();
    if let Err(e) = args.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("CK8S_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal, never with NO_COLOR set (no-color.org): a log collector
    // reads the plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).init(),
        LogFormat::Text => fmt.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(ck8s_admission::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
