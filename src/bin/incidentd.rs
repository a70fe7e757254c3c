//! `incidentd`: parse arguments, install signal handlers, load the config, run the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use incidentd::daemon::{self, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "incidentd",
    version,
    about = "Turn a host's events and logs into incidents."
)]
struct Args {
    /// Main config file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "/etc/incidentd/incidentd.toml"
    )]
    config: PathBuf,
    /// Validate FILE (and its rules.d) and exit 0 when valid, 1 otherwise.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Override `[daemon] state_dir` (relative to the current directory).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Override `[daemon] runtime_dir`, where the sockets live.
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Work on the state store while the daemon is stopped.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

#[derive(clap::Subcommand, Debug)]
enum StoreAction {
    /// Check that snapshots, the incident log and the indexes agree; exit 1 on any problem.
    Verify,
    /// Rebuild the snapshots from the incident log, and the indexes from the snapshots.
    Rebuild,
}

/// `incidentd store verify|rebuild`: the state folder from `--state-dir`, else from the
/// config.
fn store_command(args: &Args, action: &StoreAction) -> ExitCode {
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => match incidentd::config::load(&args.config) {
            Ok(c) => c.daemon.state_dir,
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::FAILURE;
            }
        },
    };
    let store = match incidentd::store::SledStore::open(&dir) {
        Ok((s, None)) => s,
        Ok((_, Some(aside))) => {
            eprintln!(
                "incidentd: {} was corrupt and has been moved aside to {}",
                dir.display(),
                aside.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("incidentd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let StoreAction::Rebuild = action {
        return match store.rebuild() {
            Ok(r) => {
                for p in &r.problems {
                    println!("{p}");
                }
                println!(
                    "{}: rebuilt {} incidents from {} timeline entries; {} snapshot(s) changed{}",
                    dir.display(),
                    r.incidents,
                    r.entries,
                    r.rewritten.len(),
                    if r.problems.is_empty() {
                        String::new()
                    } else {
                        format!("; {} problem(s)", r.problems.len())
                    }
                );
                if r.problems.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("incidentd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match store.verify() {
        Ok(v) if v.problems.is_empty() => {
            println!(
                "{}: OK ({} incidents, {} timeline entries)",
                dir.display(),
                v.incidents,
                v.entries
            );
            ExitCode::SUCCESS
        }
        Ok(v) => {
            for p in &v.problems {
                println!("{p}");
            }
            println!(
                "{}: {} problem(s) in {} incidents, {} timeline entries",
                dir.display(),
                v.problems.len(),
                v.incidents,
                v.entries
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("incidentd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::Store { action }) = &args.command {
        return store_command(&args, action);
    }
    if let Some(file) = args.check_config {
        return match incidentd::config::load(&file) {
            Ok(c) => {
                println!("{}: OK ({} rules)", file.display(), c.rules.len());
                // What this process could not do of the enabled actions (run it as the
                // service's user to see what the service cannot).
                let p = incidentd::remediation::preflight::Privileges::current();
                for w in incidentd::remediation::preflight::check(&c.actions, &p) {
                    eprintln!("warning: {w}");
                }
                // Run as ExecStartPre=, this sees the unit's address policy.
                let policy = incidentd::notification::reach::AddressPolicy::current();
                for (channel, problem) in
                    incidentd::notification::reach::unreachable(&c.notify.channels, &policy)
                {
                    eprintln!("warning: channel {channel}: {problem}");
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", file.display(), errors.0.len());
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("incidentd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        // First: SIGHUP's default action would kill us during a slow start.
        let signals = match daemon::signals() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("incidentd: {e}");
                return ExitCode::FAILURE;
            }
        };
        let overrides = Overrides {
            state_dir: args.state_dir,
            runtime_dir: args.runtime_dir,
        };
        let config = match daemon::load_config(&args.config, &overrides) {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "incidentd: {} error(s) in the configuration; not starting",
                    errors.0.len()
                );
                let status = format!(
                    "invalid configuration: {}",
                    errors.0.first().map(|e| e.to_string()).unwrap_or_default()
                );
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
                return ExitCode::FAILURE;
            }
        };
        incidentd::telemetry::init_logging(config.daemon.log_format);
        match daemon::run(config, overrides, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "incidentd failed");
                eprintln!("incidentd: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // Everything of the daemon has stopped in order by now; what may still run is a user
    // lookup stuck in a network directory (see `access::Lookups`), which must not hold the
    // exit (dropping a runtime waits for its blocking threads without end).
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

// glibc's malloc serialises threads that free what another thread allocated (events are
// built by the sources and dropped by the engine); mimalloc does not. Its 2.x line (the `v2`
// feature in Cargo.toml): under a dense attack 3.x kept a quarter to a third more of what
// sled's writes free, for the same speed (docs/PERFORMANCE.md, twelfth session).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
