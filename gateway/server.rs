//! Listeners and connections.

use crate::cli::Failure;
use crate::config::Config;

/// Runs the gateway until SIGTERM or SIGINT.
///
/// # Errors
/// Bad configuration or schema (exit 2), or a listener that cannot be bound.
pub async fn serve(config: Config) -> Result<(), Failure> {
    let problems = config.serve_problems();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        return Err(Failure::config(format!("invalid configuration:\n{}", list.join("\n"))));
    }
    let pool = crate::db::connect(&config.database)?;
    crate::migrate::ensure_current(&pool).await.map_err(Failure::config)?;
    Err(Failure::op("the proxy is not built yet"))
}
