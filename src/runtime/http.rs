//! The HTTP endpoints kubelet and Prometheus use: `/healthz`, `/readyz`, `/metrics`.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::task::JoinHandle;

use super::metrics::Metrics;

/// The content type of `/metrics` (OpenMetrics text, which Prometheus negotiates).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// This replica's part in leader election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LeaderState {
    /// Leader election is off: this replica always acts.
    Disabled = 0,
    /// Holds the Lease and acts.
    Leading = 1,
    /// Waits for the Lease; healthy, ready to take over.
    Standby = 2,
}

impl LeaderState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Leading,
            2 => Self::Standby,
            _ => Self::Disabled,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Leading => "leading",
            Self::Standby => "standby",
        }
    }
}

/// Process health, shared by the controllers (caches), leader election and shutdown.
#[derive(Debug)]
pub struct Health {
    caches_synced: AtomicBool,
    leader_state: AtomicU8,
    shutting_down: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Not ready, leader election disabled, not shutting down.
    pub fn new() -> Self {
        Self {
            caches_synced: AtomicBool::new(false),
            leader_state: AtomicU8::new(LeaderState::Disabled as u8),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The controllers' watch caches have (or no longer have) their initial list.
    pub fn set_caches_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::SeqCst);
    }

    /// Records the leader-election state.
    pub fn set_leader_state(&self, state: LeaderState) {
        self.leader_state.store(state as u8, Ordering::SeqCst);
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Current leader-election state.
    pub fn leader_state(&self) -> LeaderState {
        LeaderState::from_u8(self.leader_state.load(Ordering::SeqCst))
    }

    /// Whether caches are synced.
    pub fn caches_synced(&self) -> bool {
        self.caches_synced.load(Ordering::SeqCst)
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Ready: not shutting down, and either caches are synced or this replica is a standby
    /// (standing by is healthy; a standby need not run controllers).
    pub fn is_ready(&self) -> bool {
        !self.shutting_down()
            && (self.caches_synced() || self.leader_state() == LeaderState::Standby)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Binds `addr` and serves the endpoints on a spawned task until `shutdown` resolves.
/// Returns the bound address (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { metrics, health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((bound, task))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let h = &state.health;
    let body = format!(
        "caches_synced={} leader={} shutting_down={}\n",
        h.caches_synced(),
        h.leader_state().as_str(),
        h.shutting_down()
    );
    let code = if h.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_rules() {
        let h = Health::new();
        assert!(!h.is_ready(), "not ready before caches sync");
        h.set_caches_synced(true);
        assert!(h.is_ready());
        h.set_leader_state(LeaderState::Leading);
        assert!(h.is_ready());
        h.set_caches_synced(false);
        h.set_leader_state(LeaderState::Standby);
        assert!(
            h.is_ready(),
            "a standby is ready without running controllers"
        );
        h.set_leader_state(LeaderState::Leading);
        assert!(!h.is_ready(), "a new leader is ready once its caches sync");
        h.set_caches_synced(true);
        h.begin_shutdown();
        assert!(!h.is_ready(), "not ready while shutting down");
    }
}
