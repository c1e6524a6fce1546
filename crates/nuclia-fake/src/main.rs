//! The `nuclia-fake` binary: runs the in-memory Nuclia API server of this crate's library (see
//! `docs/nuclia-fake.md`; `cargo run -p nuclia-fake -- --listen 127.0.0.1:8080`).
//!
//! Prints one JSON line with the URL and bootstrap credentials on stdout, logs on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nuclia_fake::{FakeConfig, Seed};

/// An in-memory Nuclia API server for tests and CI.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the URL is printed on stdout).
    #[arg(long, env = "NUCLIA_FAKE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// JSON file adding accounts, zones, KBs, users and credentials to the default ones.
    #[arg(long, env = "NUCLIA_FAKE_SEED")]
    seed: Option<PathBuf>,
    /// Lifetime of user tokens, in seconds.
    #[arg(long, env = "NUCLIA_FAKE_USER_TOKEN_TTL", default_value_t = 86_400)]
    user_token_ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let seed = match &args.seed {
        Some(path) => Seed::load(path).map_err(anyhow::Error::msg)?,
        None => Seed::default(),
    };
    let handle = nuclia_fake::spawn(FakeConfig {
        listen: args.listen,
        seed,
        user_token_ttl: Duration::from_secs(args.user_token_ttl),
    })
    .await
    .context("starting nuclia-fake")?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &handle.bootstrap)?;
    writeln!(out)?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    handle.shutdown().await.context("stopping nuclia-fake")
}
