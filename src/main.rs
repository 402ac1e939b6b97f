//! The `seawall` binary: parse the command line, load the configuration, run.
//!
//! Exit statuses: 0 after a clean shutdown, 64 (EX_USAGE) for bad arguments or configuration,
//! 1 when seawall cannot start with a valid configuration (store locked, port taken), 70
//! (EX_SOFTWARE) when the watchdog ends a process whose runtime stopped running tasks. The
//! `audit` checks exit 1 when they find a break; `audit witness` exits 69 (EX_UNAVAILABLE) when
//! it cannot reach or read the digest feed, 65 (EX_DATAERR) or 74 (EX_IOERR) for its state file.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use seawall::audit::witness::{self, Unchecked};
use seawall::cli::{self, Command};
use seawall::config::{Config, ProcessEnv};
use seawall::server::{self, Listeners};
use seawall::state::AppState;
use seawall::{fd_limit, logging, shutdown};

const EX_USAGE: u8 = 64;
/// sysexits' EX_UNAVAILABLE: a service the command needs (the digest feed) did not answer.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits' EX_DATAERR: an input file (the witness state) is not what it should be.
const EX_DATAERR: u8 = 65;
/// sysexits' EX_IOERR: a file could not be read or written.
const EX_IOERR: u8 = 74;

/// jemalloc instead of the C library's allocator: under load, buffers are allocated on the
/// runtime's threads and freed on others (the audit writer, sled's threads), which glibc
/// serialises on per-arena locks. See README "Benchmarks" for the measured difference.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("seawall: {message}\n\n{}", cli::USAGE);
            return ExitCode::from(EX_USAGE);
        }
    };
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("seawall {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match Config::load(config.as_deref(), &ProcessEnv) {
            Ok(config) => {
                println!("{}", config.to_masked_json());
                for warning in &config.warnings {
                    eprintln!("seawall: warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("seawall: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Backup { config, to } => {
            let config = match load(config) {
                Ok(config) => config,
                Err(status) => return status,
            };
            match seawall::backup::offline(&config.store, &config.audit.origin, &to) {
                Ok(report) => {
                    let json = serde_json::to_string_pretty(&report).expect("reports serialize");
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("seawall: backup failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::AuditVerify {
            config,
            data,
            pubkey,
        } => {
            let config = match load(config) {
                Ok(config) => config,
                Err(status) => return status,
            };
            let pinned = match pubkey
                .as_deref()
                .map(seawall::audit::digest::parse_public_key)
            {
                None => None,
                Some(Some(key)) => Some(key),
                Some(None) => {
                    eprintln!("seawall: --pubkey must be a 64-digit hex Ed25519 public key");
                    return ExitCode::from(EX_USAGE);
                }
            };
            match seawall::audit::verify::data_dir(&data, &config.audit.origin, pinned) {
                Ok(report) => print_verdict(&report, report.ok),
                Err(e) => {
                    eprintln!("seawall: audit verify failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::AuditVerifyExport { file, pubkey } => verify_export(&file, &pubkey),
        Command::AuditWitness {
            url,
            token_file,
            pubkey,
            state,
            metrics_file,
        } => witness(&url, &token_file, &pubkey, &state, metrics_file.as_deref()),
        Command::Run { config } => match load(config) {
            Ok(config) => run(config),
            Err(status) => status,
        },
    }
}

/// `seawall audit verify-export`: the report on standard output, 1 when anything breaks.
fn verify_export(file: &std::path::Path, pubkey: &str) -> ExitCode {
    let Some(pinned) = seawall::audit::digest::parse_public_key(pubkey) else {
        eprintln!("seawall: --pubkey must be a 64-digit hex Ed25519 public key");
        return ExitCode::from(EX_USAGE);
    };
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let checked = text
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
        .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}")))
        .and_then(|document| seawall::audit::export_check::check(&document, &pinned));
    match checked {
        Ok(report) => print_verdict(&report, report.ok),
        Err(e) => {
            eprintln!("seawall: audit verify-export: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `seawall audit witness`: the report on standard output, 1 when anything breaks, 69 when
/// the feed could not be checked at all, 65 or 74 when its state file is not a witness state
/// or cannot be read or written.
fn witness(
    url: &str,
    token_file: &Path,
    pubkey: &str,
    state: &Path,
    metrics_file: Option<&Path>,
) -> ExitCode {
    let Some(pinned) = seawall::audit::digest::parse_public_key(pubkey) else {
        eprintln!("seawall: --pubkey must be a 64-digit hex Ed25519 public key");
        return ExitCode::from(EX_USAGE);
    };
    let token = match std::fs::read_to_string(token_file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        Ok(_) => {
            eprintln!("seawall: {} is empty", token_file.display());
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            eprintln!("seawall: cannot read {}: {e}", token_file.display());
            return ExitCode::from(EX_USAGE);
        }
    };
    match witness::run(url, &token, &pinned, state) {
        Ok(report) => {
            let verdict = print_verdict(&report, report.ok);
            if let Some(path) = metrics_file {
                let text = witness::exposition(&report, url, std::time::SystemTime::now());
                if let Err(e) = witness::write_whole(path, &text) {
                    eprintln!("seawall: audit witness: {e}");
                    // A break outranks the metrics file: its status stays 1.
                    if report.ok {
                        return ExitCode::from(EX_IOERR);
                    }
                }
            }
            verdict
        }
        Err(e) => {
            eprintln!("seawall: audit witness: {e}");
            ExitCode::from(match e {
                Unchecked::Feed(_) => EX_UNAVAILABLE,
                Unchecked::StateInvalid(_) => EX_DATAERR,
                Unchecked::StateIo(_) => EX_IOERR,
            })
        }
    }
}

/// A verification report on standard output; exit status 1 unless it passed.
fn print_verdict(report: &impl serde::Serialize, passed: bool) -> ExitCode {
    let json = serde_json::to_string_pretty(report).expect("reports serialize");
    println!("{json}");
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The configuration, or the exit status for a bad one (reported on stderr).
fn load(path: Option<std::path::PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.as_deref(), &ProcessEnv).map_err(|e| {
        eprintln!("seawall: {e}");
        ExitCode::from(EX_USAGE)
    })
}

fn run(config: Config) -> ExitCode {
    logging::init(&config.log);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    fd_limit::raise(fd_limit::needed(&config)).log();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let outcome = runtime.block_on(async {
        let signal =
            shutdown::on_signal().map_err(|e| format!("cannot install signal handler: {e}"))?;
        // Bind first: a taken port fails before the store and pools are opened.
        let listeners = Listeners::bind(&config.server)
            .await
            .map_err(|e| e.to_string())?;
        let state = tokio::task::spawn_blocking(move || AppState::build(config))
            .await
            .expect("startup task does not panic")
            .map_err(|e| e.to_string())?;
        let state = Arc::new(state);
        if let seawall::admin_token::TokenSource::File { path, created } = &state.admin_token.source
        {
            tracing::info!(path = %path.display(), created, "admin token is in this file");
        }
        server::run(listeners, state, signal).await;
        Ok::<(), String>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("seawall: {message}");
            ExitCode::FAILURE
        }
    }
}
