//! Process plumbing: configuration, telemetry, HTTP endpoints, leader election.
//!
//! - [`config`]: the clap [`Config`] (every flag has an environment variable).
//! - [`telemetry`]: tracing to stderr, text or JSON.
//! - [`metrics`]: the Prometheus registry and the operator's series.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`leader`]: leader election on a Lease, and the shutdown signal.

pub mod config;
pub mod http;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod telemetry;

pub use config::{Config, LogFormat};
pub use http::{Health, LeaderState, serve};
pub use leader::{LeaderElection, LeaderElectionError, shutdown_signal};
pub use metrics::Metrics;

/// Installs rustls' ring provider as the process-wide default, for kube and reqwest alike.
/// Call it first in `main`; calling it again is harmless.
pub fn install_crypto() {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
