//! The embedding host of the `api-publish` scenario: a program that links the wsguard core, serves
//! the benchmark's configuration exactly as `wsguard serve` does (same runtime, same log
//! subscriber and level), and publishes to one channel through `ServerHandle::publish` at a fixed
//! rate, with the payload the load generator's API publisher sends (`{"t", "n", "pad"}`, `t` the
//! wall clock in nanoseconds, read by the subscribers for the latency).
//!
//! The publisher is one task on the server's own runtime: a timer, one `serde_json::Value` built
//! per publication and the call, which is all an embedding application pays for a publication. It
//! starts with the server; publications before the subscribers are in reach nobody and fall
//! outside the measured window. Stop it with SIGTERM (run.sh does, by PID).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use wsguard::observe::LogFormat;
use wsguard::{Config, Server};
use wsguard_bench::{PAYLOAD_PAD_BYTES, clock_nanos};

#[derive(Parser)]
struct Args {
    /// The wsguard configuration to serve (bench/config/wsguard.toml.in, rendered by run.sh).
    #[arg(long)]
    config: PathBuf,
    /// Publications per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// The channel to publish to.
    #[arg(long, default_value = "bench")]
    channel: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        eprintln!("error: --rate must be a positive number");
        return ExitCode::FAILURE;
    }
    let config = match Config::from_file(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // What `wsguard serve` installs (cli/src/main.rs): the same filter and writer, so neither
    // side of the comparison logs more than the other.
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSGUARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.observability.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.observability.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Pretty => logs.with_ansi(false).init(),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        runtime.worker_threads(config.server.worker_threads as usize);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve_and_publish(config, args))
}

async fn serve_and_publish(config: Config, args: Args) -> ExitCode {
    let server = match Server::builder(config).bind().await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = server.handle();
    let publisher = tokio::spawn(async move {
        let pad = "x".repeat(PAYLOAD_PAD_BYTES);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        // As the load generator's publishers: late ticks are caught up, so the rate holds.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for n in 1u64.. {
            ticker.tick().await;
            let payload = json!({"t": clock_nanos(), "n": n, "pad": pad});
            if let Err(e) = handle.publish(&args.channel, &payload) {
                eprintln!("publish failed: {e}");
                return;
            }
        }
    });
    let stop = server.handle();
    tokio::spawn(async move {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            stop.shutdown();
        }
    });
    let result = server.serve().await;
    publisher.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
