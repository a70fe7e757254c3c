//! `incidentctl`: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors.
    let args = incidentd::cli::Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("incidentctl: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(incidentd::cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        // A verdict, not a failure: `alert` says how severe what it raised is.
        Err(incidentd::cli::CliError::Verdict(code)) => ExitCode::from(code),
        // `alert` keeps 1 and 2 for its verdicts; its failures are 3.
        Err(incidentd::cli::CliError::AlertFailed(e)) => {
            eprintln!("incidentctl: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("incidentctl: {e}");
            ExitCode::FAILURE
        }
    }
}

// `rules test` creates and drops a group per new address at a high rate; mimalloc's
// per-thread free lists make that cheaper than glibc's allocator (measured in
// docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
