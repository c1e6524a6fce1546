//! Process plumbing: configuration, telemetry, HTTP endpoints, leader election.
//!
//! - [`config`]: the clap [`Config`] (every flag has an environment variable).
//! - [`telemetry`]: tracing to stderr, text or JSON.
//! - [`metrics`]: the Prometheus registry and the operator's series.
//! - [`kube_client`]: the Kubernetes client, counting its requests.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`leader`]: leader election on a Lease, and the shutdown signal.

pub mod config;
pub mod http;
pub mod identity;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod telemetry;

pub use config::{Config, LogFormat};
pub use http::{Health, LeaderState, serve};
pub use leader::{LeaderElection, LeaderElectionError, shutdown_signal};
pub use metrics::Metrics;

/// Keeps glibc's allocator small: one arena instead of one per thread (8 per core), whose
/// fragments add up to more than the operator's whole heap, and large buffers (Nuclia lists,
/// watch pages) in their own mappings, returned at once when freed, instead of growing the
/// heap. Call it first in `main`, before any thread starts. Other C libraries: nothing to do.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Installs rustls' ring provider as the process-wide default, for kube and reqwest alike.
/// Call it first in `main`; calling it again is harmless.
pub fn install_crypto() {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
