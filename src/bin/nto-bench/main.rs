//! `nto-bench`: how many credentials the operator handles, how fast, how quietly and in how
//! little memory, against the floor the apiserver itself sets on the same machine.
//!
//! Runs against the cluster in `KUBECONFIG` with `nuclia-fake` and the operator as processes
//! (release builds from `--bin-dir`); `tests/bench.sh` starts a private control plane and runs
//! it. Phases: baseline, issue burst, steady state, rotation storm; footprint for each. See
//! `docs/benchmark.md`.

mod probes;
mod report;
mod run;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Benchmark of nuclia-token-operator against a real apiserver and nuclia-fake.
#[derive(Parser, Debug, Clone)]
#[command(name = "nto-bench")]
pub struct Args {
    /// Number of resources (and of Secrets in the baseline).
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Share of the resources that are NucliaKbApiKeys; the rest are NucliaPersonalTokens.
    #[arg(long, default_value_t = 0.2)]
    pub kb_share: f64,
    /// Share of the resources that are NucliaNuaKeys (taken from the personal tokens' share).
    #[arg(long, default_value_t = 0.1)]
    pub nua_share: f64,
    /// Resources per Nuclia credential (login Secret); each credential has its own budget.
    #[arg(long, default_value_t = 10)]
    pub per_credential: usize,
    /// The operator's per-credential Nuclia budget, requests per second (--nuclia-rps).
    #[arg(long, default_value_t = 5.0)]
    pub nuclia_rps: f64,
    /// The operator's per-credential burst above the rate (--nuclia-burst).
    #[arg(long, default_value_t = 10)]
    pub nuclia_burst: u32,
    /// The operator's parallel reconciles (--concurrency), and the benchmark's parallel creates.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The operator's --verify-interval; the steady state watches two of them.
    #[arg(long, default_value = "20s", value_parser = nuclia_token_operator::duration::parse)]
    pub verify_interval: Duration,
    /// Longest wait for any one phase.
    #[arg(long, default_value = "20m", value_parser = nuclia_token_operator::duration::parse)]
    pub phase_timeout: Duration,
    /// Directory holding the nuclia-token-operator and nuclia-fake binaries.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory for the operator's and the fake's logs (default: a new temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Leave the namespaces and the resources in place at the end.
    #[arg(long)]
    pub keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nuclia_token_operator::runtime::install_crypto();
    let args = Args::parse();
    anyhow::ensure!(args.n > 0, "--n must be positive");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.kb_share),
        "--kb-share must be between 0 and 1"
    );
    anyhow::ensure!(
        args.nua_share >= 0.0 && args.kb_share + args.nua_share <= 1.0,
        "--nua-share must be at least 0 and --kb-share + --nua-share at most 1"
    );
    anyhow::ensure!(
        args.per_credential > 0 && args.concurrency > 0,
        "--per-credential and --concurrency must be positive"
    );
    anyhow::ensure!(
        args.verify_interval >= Duration::from_secs(2),
        "--verify-interval must be at least 2s"
    );
    let report = run::run(&args).await?;
    report::print(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
