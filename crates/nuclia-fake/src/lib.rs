//! `nuclia-fake`: an in-memory Nuclia API server speaking the wire format of
//! `shared/nuclia-api.md`, for tests, the demo and users' CI (`docs/nuclia-fake.md`). A crate of
//! its own, with no dependency on the operator: [`spawn`] runs it inside a test process, the
//! `nuclia-fake` binary (`src/main.rs`) as a server.
//!
//! It serves the global and the regional routes on one address (point the global URL and
//! every zone origin at it). Credentials are random, really expire on the fake's clock and
//! are refused once revoked or expired. `/_fake/` holds an unauthenticated admin API for
//! tests: credentials, out-of-band revocation, clock, call counts, fault injection.
//!
//! - [`state`]: the model (one mutex over everything), fault rules and NUA clients included.
//! - [`api`]: the Nuclia routes, and the auth, errors and fields every route uses.
//! - [`admin`]: the `/_fake/` routes.
//! - [`faults`]: the fault-injection middleware.
//! - [`nua`]: NUA clients (their routes and the model's methods for them).
//! - [`seed`]: the `--seed` file format.
//! - [`time`]: dates as the wire writes and reads them (the fake's own copy).

pub mod admin;
pub mod api;
pub mod faults;
pub mod nua;
pub mod seed;
pub mod state;
pub mod time;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use seed::Seed;
pub use state::{Bootstrap, BootstrapKb, BootstrapUser, FaultRule, KbRole, Malformed};

/// How to start the fake.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Extra accounts, zones, KBs, users and credentials.
    pub seed: Seed,
    /// Lifetime of user tokens (real OAuth tokens live ~30 minutes).
    pub user_token_ttl: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: Seed::default(),
            user_token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// State shared by all handlers. Outside the crate it is test-support API: the operator's engine
/// tests and lifecycle simulation read and steer the model directly (freeze the clock, inject
/// faults, look up credentials) through `FakeHandle::shared`.
pub struct Shared {
    state: Mutex<state::State>,
    bootstrap: Bootstrap,
}

impl Shared {
    /// Locks the state (a panicked handler does not poison the fake).
    pub fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeHandle {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    /// The same values the binary prints on its first line.
    pub bootstrap: Bootstrap,
    /// The model, for tests that look inside or steer it without HTTP (the operator's
    /// lifecycle simulation freezes the fake's clock here). Test-support API: users talk to the
    /// fake over HTTP, its admin routes included.
    #[doc(hidden)]
    pub shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl FakeHandle {
    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Waits until the server stops (for the binary).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds, builds the world and serves in a background task.
pub async fn spawn(cfg: FakeConfig) -> std::io::Result<FakeHandle> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let ttl = chrono::Duration::from_std(cfg.user_token_ttl)
        .map_err(|e| std::io::Error::other(format!("user token lifetime: {e}")))?;
    let (state, bootstrap) = state::State::new(&url, ttl, &cfg.seed)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        bootstrap: bootstrap.clone(),
    });
    let app = router(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%url, "nuclia-fake listening");
    Ok(FakeHandle {
        url,
        bootstrap,
        shared,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// The whole fake: the Nuclia routes (NUA clients' included) behind the fault layer, plus the
/// admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let nuclia =
        api::router()
            .merge(nua::router())
            .route_layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                faults::layer,
            ));
    Router::new()
        .merge(nuclia)
        .merge(admin::router())
        .merge(nua::admin_router())
        .fallback(|| async { api::detail(StatusCode::NOT_FOUND, "Not Found").into_response() })
        .method_not_allowed_fallback(|| async {
            api::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response()
        })
        .with_state(shared)
}
