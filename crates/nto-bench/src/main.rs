//! `nto-bench`: how many credentials the operator handles, how fast, how quietly and in how
//! little memory, against the floor the apiserver itself sets on the same machine.
//!
//! Runs against the cluster in `KUBECONFIG` with `nuclia-fake` and the operator as processes
//! (release builds from `--bin-dir`); `tests/bench.sh` starts a private control plane and runs
//! it. Phases: baseline, write floor, issue burst, steady state, rotation storm, optional soak;
//! footprint for each; with several `--n`, a growth table at the end. See
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
    /// Number of resources (and of Secrets in the baseline). A comma-separated list (e.g.
    /// 200,1000,5000) runs the benchmark once per N, one after the other, and ends with a growth
    /// table.
    #[arg(
        long = "n",
        value_name = "N[,N...]",
        value_delimiter = ',',
        default_value = "1000",
        num_args = 1
    )]
    pub ns: Vec<usize>,
    /// The N of the run in progress (one of `--n`).
    #[arg(skip)]
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
    /// The operator's --worker-threads (default: the operator's own), for A/B runs.
    #[arg(long)]
    pub worker_threads: Option<usize>,
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
    /// After the storm, rotate self-renewing personal tokens for this long (e.g. 2m) and report
    /// the operator's cache sizes (`nuclia_operator_cache_entries`); off by default. With several
    /// `--n`, only the last run soaks.
    #[arg(long, value_parser = nuclia_token_operator::duration::parse)]
    pub soak: Option<Duration>,
    /// Self-renewing personal tokens the soak rotates, each with its own login Secret.
    #[arg(long, default_value_t = 20)]
    pub soak_resources: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nuclia_token_operator::runtime::install_crypto();
    let args = Args::parse();
    anyhow::ensure!(
        !args.ns.is_empty() && args.ns.iter().all(|n| *n > 0),
        "--n must be positive"
    );
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
    anyhow::ensure!(
        args.soak.is_none() || args.soak_resources > 0,
        "--soak-resources must be positive"
    );
    let mut reports = Vec::new();
    for (k, &n) in args.ns.iter().enumerate() {
        let mut a = args.clone();
        a.n = n;
        if k + 1 < args.ns.len() {
            a.soak = None; // the soak runs once, in the last run
        }
        if args.ns.len() > 1 {
            eprintln!(
                "[bench] ==== run {} of {}: N = {n} ====",
                k + 1,
                args.ns.len()
            );
        }
        let report = run::run(&a, k + 1 < args.ns.len()).await?;
        report::print(&report);
        reports.push(report);
    }
    let json = if let [one] = reports.as_slice() {
        serde_json::to_value(one)?
    } else {
        let growth = report::growth(&reports);
        report::print_growth(&growth);
        serde_json::json!({"reports": reports, "growth": growth})
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
