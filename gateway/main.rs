//! The `gateway` binary: parses the command line and hands it to [`gateway::cli::run`].

use clap::Parser as _;

/// mimalloc instead of the system allocator: per-thread free lists suit one runtime per
/// worker thread, and its smaller per-allocation overhead shrinks the session cache (about
/// 90 bytes less per cached session; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = gateway::cli::Cli::parse();
    // The control runtime: commands, and for `serve` the accept loop and the background
    // tasks; `serve` runs its request path on worker threads of its own (server.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(gateway::cli::run(cli))
}
