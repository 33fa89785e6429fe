//! The `loadtest` command line: parses the subcommand, binds what it needs and hands off to
//! the library. Each subcommand is one small function here; bad flags exit with 64 before
//! anything is started.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadtest::{netem, report, run, sample, seed, select, soak};
use tokio::net::TcpListener;

/// Exit status for a bad command line (sysexits `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load-test harness for the gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the echo upstream: every request is answered with a JSON description of itself.
    Echo {
        /// Address to listen on (HTTP/1.1 and h2c on the same port), e.g. 127.0.0.1:9000.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
    /// Fill a migrated database with users and sessions; write the raw tokens to a file.
    Seed(seed::SeedArgs),
    /// Drive one scenario for a duration and report throughput, latency and errors.
    ///
    /// Scenarios: direct (the upstream, the baseline), proxy (authenticated GETs through the
    /// gateway), cold (every token used once: cache misses), login, otp (request + verify via
    /// the built-in SMTP sink), revoke (revocation latency across two instances), mixed,
    /// forged (a new made-up token per request, 401 expected: the guessing flood).
    ///
    /// `requests` counts successful and failed steps started in the measured window;
    /// throughput and latency are those of the successful ones. Errors are counted by kind:
    /// connect, timeout, status_4xx, status_5xx, other, backlog (open loop only).
    Run(Box<run::RunArgs>),
    /// Chart several runs side by side (SVG) and print them as a markdown table.
    Report(report::ReportArgs),
    /// Sample a process's RSS, threads and open file descriptors (and, with --metrics, the
    /// gateway's cache and connection gauges) into a CSV file, until it exits or SIGTERM.
    Sample(sample::SampleArgs),
    /// Judge a soak (no errors; RSS and open FDs flat) from a run with --interval and the
    /// samples of the process under load; print the figures, draw them as SVG. Exits 1
    /// when a check fails.
    SoakReport(soak::SoakReportArgs),
    /// The gateway's session lookup run straight against the database through a pool of the
    /// gateway's size: the floor under a cache miss, to set beside the `cold` scenario.
    Select(select::SelectArgs),
    /// Delay and drop the packets a firewall rule sends to an NFQUEUE, as `tc ... netem delay
    /// D loss P%` would, until SIGTERM (for kernels without sch_netem; needs root).
    Netem(netem::NetemArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Echo { listen } => echo(listen).await,
        Command::Seed(args) => match args.validate() {
            Ok(()) => seed::execute(args).await.map(drop),
            Err(err) => return usage(&err),
        },
        Command::Run(args) => match args.validate() {
            Ok(config) => run::execute(config).await.map(drop),
            Err(err) => return usage(&err),
        },
        Command::Report(args) => report::execute(&args),
        Command::Sample(args) => match args.validate() {
            Ok(()) => sample(&args).await,
            Err(err) => return usage(&err),
        },
        Command::SoakReport(args) => match args.validate() {
            Ok(limits) => soak::execute(&args, limits),
            Err(err) => return usage(&err),
        },
        Command::Select(args) => select::select(args).await.map(drop),
        Command::Netem(args) => match args.validate() {
            Ok(()) => impair(args).await,
            Err(err) => return usage(&err),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadtest: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(err: &anyhow::Error) -> ExitCode {
    eprintln!("loadtest: {err:#}");
    ExitCode::from(EXIT_USAGE)
}

async fn echo(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--listen)"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    println!("echo listening on {bound}");
    loadtest::echo::run(listener, shutdown_signal()).await;
    Ok(())
}

async fn sample(args: &sample::SampleArgs) -> anyhow::Result<()> {
    println!(
        "sampling process {} every {:?} into {}",
        args.pid,
        args.every,
        args.out.display()
    );
    let rows = sample::run(args, shutdown_signal()).await?;
    println!("{rows} samples written to {}", args.out.display());
    Ok(())
}

async fn impair(args: netem::NetemArgs) -> anyhow::Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || netem::run(&args, &stop))
    };
    println!("netem: holding queued packets");
    tokio::pin!(worker);
    let counts = tokio::select! {
        done = &mut worker => done,
        () = shutdown_signal() => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            worker.await
        }
    }
    .context("the netem thread panicked")??;
    println!(
        "netem: {} packets passed, {} dropped",
        counts.passed, counts.dropped
    );
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        // An error here means no handler could be installed: then only SIGTERM stops us.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
