//! The `gateway` binary: parses the command line and hands it to [`gateway::cli::run`].

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = gateway::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
