//! `shoal-loadgen`: the command line of the load generator (see the library for what it does).
//! Prints one summary line per mode at the end; exits 0 even when requests failed (the scenario
//! that runs it judges), non-zero only when it could not run at all.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use shoal_loadgen::{run, Config, Target};

/// HTTP load for shoal's testnet scenarios: GETs at the target URLs, in turn, counting every
/// request that fails (connect error, timeout, connection closed before the full answer, status
/// not 2xx).
#[derive(Parser, Debug)]
#[command(name = "shoal-loadgen", version)]
struct Args {
    /// Target URLs, `http://IP:PORT/PATH`; requests go to them in turn.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Requests per second, each on a new TCP connection (`Connection: close`), started on a
    /// timer.
    #[arg(long, default_value_t = 0.0)]
    new_conn_rate: f64,
    /// Keep-alive connections sending requests back to back (reconnecting when one closes).
    #[arg(long, default_value_t = 0)]
    keepalive_clients: usize,
    /// How long to send, in seconds (requests in flight at the end are still awaited).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Longest a request may take, connect to last byte, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
    /// Write `SECOND MODE SENT FAILED [errors=...]` per second (Unix time, by the second the
    /// requests ended in) to this file as the seconds pass.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Stop early once this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Do not describe the first failures of each mode on stderr.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        eprintln!("shoal-loadgen: --duration must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let mut targets = Vec::new();
    for url in &args.targets {
        match Target::parse(url).await {
            Ok(t) => targets.push(t),
            Err(e) => {
                eprintln!("shoal-loadgen: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let config = Config {
        targets,
        new_conn_rate: args.new_conn_rate,
        keepalive_clients: args.keepalive_clients,
        duration: Duration::from_secs_f64(args.duration),
        timeout: Duration::from_millis(args.timeout),
        timeline: args.timeline,
        stop_file: args.stop_file,
        log_failures: !args.quiet,
    };
    match run(config).await {
        Ok(summaries) => {
            for s in summaries {
                println!("{s}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
