//! Leader election on a `coordination.k8s.io/v1` Lease, over `kube-lease-manager`, and the
//! shutdown signal.
//!
//! What this wrapper adds to the crate:
//! - **Step down when the apiserver is unreachable.** Every request of the lease manager runs with
//!   a timeout of a quarter of the lease duration, and any error while leading publishes
//!   `false` at once, so a leader that cannot renew stops acting well before its lease expires
//!   (renewal happens a third of the way into the lease). After the error, a fresh manager is
//!   built; if the Lease still names this replica it leads again.
//! - **Fast hand-over on release.** The crate lets a standby sleep until the holder's lease
//!   would expire; here a standby also reads the Lease every few seconds and, once the holder
//!   released it, competes for it right away.
//! - **`release` vs drop.** [`LeaderElection::release`] clears the holder (graceful shutdown);
//!   dropping the value only stops renewing (as a crash would): others take over when the lease
//!   expires.
//!
//! Consumers must stop acting as soon as the channel reads `false`, and should stop their
//! controllers before calling `release` so two replicas never act together.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

/// Shortest lease duration accepted (the crate counts in whole seconds and needs
/// renewal < duration).
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(3);

/// Errors of [`LeaderElection::start`].
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    /// The lease duration is shorter than [`MIN_LEASE_DURATION`].
    #[error("lease duration {0:?} is shorter than 3s")]
    DurationTooShort(Duration),
    /// The lease name, namespace or identity is empty.
    #[error("lease {0} must not be empty")]
    Empty(&'static str),
}

/// Timings derived from the lease duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timings {
    /// Lease duration in seconds.
    duration: u64,
    /// The crate renews `grace` seconds before expiry: `duration - grace` ≈ duration / 3.
    grace: u64,
    /// Timeout of each apiserver request.
    request_timeout: Duration,
    /// How often a standby reads the Lease to notice a release.
    standby_poll: Duration,
}

impl Timings {
    fn new(duration: Duration) -> Self {
        let secs = duration.as_secs().max(3);
        let renew_every = (secs / 3).max(1);
        Self {
            duration: secs,
            grace: secs - renew_every,
            request_timeout: Duration::from_millis(secs * 1000 / 4),
            standby_poll: Duration::from_millis((secs * 1000 / 8).clamp(500, 5000)),
        }
    }
}

/// A running leader election. See the module documentation.
#[derive(Debug)]
pub struct LeaderElection {
    is_leader: watch::Receiver<bool>,
    release: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    identity: String,
    timings: Timings,
}

impl LeaderElection {
    /// Starts competing for the Lease `namespace/name` (created if missing) as `identity`.
    /// Must be called inside a Tokio runtime. Apiserver errors are retried in the background.
    pub fn start(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Result<Self, LeaderElectionError> {
        if duration < MIN_LEASE_DURATION {
            return Err(LeaderElectionError::DurationTooShort(duration));
        }
        for (what, value) in [
            ("namespace", namespace),
            ("name", name),
            ("identity", identity),
        ] {
            if value.is_empty() {
                return Err(LeaderElectionError::Empty(what));
            }
        }
        let timings = Timings::new(duration);
        let (tx, rx) = watch::channel(false);
        let (release_tx, release_rx) = oneshot::channel();
        let elector = Elector {
            client: with_timeout(client, timings.request_timeout),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            tx,
        };
        let task = tokio::spawn(elector.run(release_rx));
        Ok(Self {
            is_leader: rx,
            release: Some(release_tx),
            task: Some(task),
            identity: identity.to_owned(),
            timings,
        })
    }

    /// A receiver of "this replica is the leader"; starts `false`.
    pub fn is_leader(&self) -> watch::Receiver<bool> {
        self.is_leader.clone()
    }

    /// This replica's identity in the Lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Gives the Lease up at once (if held) so another replica takes over immediately;
    /// the channel reads `false` before the Lease is released. Bounded by the lease duration.
    pub async fn release(mut self) {
        let Some(task) = self.task.take() else { return };
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        let limit = Duration::from_secs(self.timings.duration);
        let abort = task.abort_handle();
        if tokio::time::timeout(limit, task).await.is_err() {
            tracing::warn!("leader election did not release the lease in time");
            abort.abort();
        }
    }
}

impl Drop for LeaderElection {
    /// Stops renewing without releasing, as a crash would.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Elector {
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    timings: Timings,
    tx: watch::Sender<bool>,
}

enum Exit {
    /// Rebuild the manager (after an error, or a standby saw the lease released).
    Rebuild,
    /// Released on request.
    Released,
}

impl Elector {
    async fn run(self, mut release: oneshot::Receiver<()>) {
        let mut failures: u32 = 0;
        loop {
            let built = tokio::select! {
                biased;
                _ = &mut release => { self.set(false); return; }
                built = self.build() => built,
            };
            let manager = match built {
                Ok(manager) => manager,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, lease = %self.name, "cannot reach the leader-election lease");
                    let delay = backoff(failures, self.timings.duration);
                    tokio::select! {
                        biased;
                        _ = &mut release => { self.set(false); return; }
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            match self.drive(&manager, &mut release, &mut failures).await {
                Exit::Released => {
                    // Consumers see `false` before another replica can take over.
                    self.set(false);
                    if let Err(error) = manager.release().await {
                        tracing::warn!(%error, lease = %self.name, "could not release the lease; it expires by itself");
                    } else {
                        tracing::info!(lease = %self.name, identity = %self.identity, "released the lease");
                    }
                    return;
                }
                Exit::Rebuild => continue,
            }
        }
    }

    async fn build(&self) -> kube_lease_manager::Result<LeaseManager> {
        LeaseManagerBuilder::new(self.client.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .with_duration(self.timings.duration)
            .with_grace(self.timings.grace)
            .with_field_manager(format!("nuclia-token-operator-{}", self.identity))
            .build()
            .await
    }

    async fn drive(
        &self,
        manager: &LeaseManager,
        release: &mut oneshot::Receiver<()>,
        failures: &mut u32,
    ) -> Exit {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let start = tokio::time::Instant::now() + self.timings.standby_poll;
        let mut poll = tokio::time::interval_at(start, self.timings.standby_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Only a release seen after the lease was held by another replica triggers a rebuild:
        // a lease that is free from the start is taken by `changed()` itself.
        let mut seen_held = false;
        loop {
            let leading = *self.tx.borrow();
            tokio::select! {
                biased;
                _ = &mut *release => return Exit::Released,
                changed = manager.changed() => match changed {
                    Ok(is_leader) => {
                        *failures = 0;
                        self.set(is_leader);
                    }
                    Err(error) => {
                        *failures = failures.saturating_add(1);
                        if leading {
                            tracing::warn!(%error, lease = %self.name, "lost contact with the lease: stepping down");
                        } else {
                            tracing::warn!(%error, lease = %self.name, "leader election error");
                        }
                        self.set(false);
                        let delay = backoff(*failures, self.timings.duration);
                        tokio::select! {
                            biased;
                            _ = &mut *release => return Exit::Released,
                            _ = tokio::time::sleep(delay) => return Exit::Rebuild,
                        }
                    }
                },
                _ = poll.tick(), if !leading => {
                    // A standby: has the holder released the lease? Then compete now instead
                    // of sleeping until its old expiry.
                    if let Ok(lease) = leases.get(&self.name).await {
                        let held = lease.spec.as_ref().and_then(|s| s.holder_identity.as_ref()).is_some();
                        if held {
                            seen_held = true;
                        } else if seen_held {
                            tracing::debug!(lease = %self.name, "lease released by its holder");
                            return Exit::Rebuild;
                        }
                    }
                }
            }
        }
    }

    fn set(&self, leader: bool) {
        let changed = self.tx.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
        if changed {
            if leader {
                tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
            } else {
                tracing::info!(lease = %self.name, identity = %self.identity, "not the leader");
            }
        }
    }
}

/// Retry delay after `failures` consecutive errors: 0.5s doubling, capped at a third of the
/// lease duration so a replica comes back quickly once the apiserver does.
fn backoff(failures: u32, duration_secs: u64) -> Duration {
    let cap = Duration::from_millis(duration_secs * 1000 / 3);
    let exp = Duration::from_millis(500).saturating_mul(1 << failures.min(10).saturating_sub(1));
    exp.min(cap)
}

/// The same client, but every request (response headers and body) must finish within
/// `timeout`. The lease manager makes only small get/create/patch calls, so buffering the
/// body is fine. Without this a hung connection could keep a leader "leading" past its lease.
fn with_timeout(client: Client, timeout: Duration) -> Client {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let client = client.clone();
        async move {
            let call = async {
                let response = client.send(request).await?;
                let (parts, body) = response.into_parts();
                let bytes = body.collect_bytes().await?;
                Ok::<_, kube::Error>(http::Response::from_parts(
                    parts,
                    kube::client::Body::from(bytes),
                ))
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result.map_err(BoxError::from),
                Err(_) => Err(BoxError::from(format!(
                    "apiserver request timed out after {timeout:?}"
                ))),
            }
        }
    });
    Client::new(service, namespace)
}

/// Resolves on SIGTERM (what kubelet sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        _ = term => tracing::info!("received SIGTERM, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_renew_at_a_third_and_time_out_before_expiry() {
        for secs in [3, 4, 10, 15, 30, 60, 137] {
            let t = Timings::new(Duration::from_secs(secs));
            let renew_after = t.duration - t.grace;
            assert!(renew_after >= 1 && renew_after <= secs / 3, "{secs}: {t:?}");
            assert!(t.grace > 0 && t.grace < t.duration, "{secs}: {t:?}");
            // Worst case while leading: renew patch + re-read both time out, then step down,
            // still before the lease expires for the others.
            let worst = Duration::from_secs(renew_after) + 2 * t.request_timeout;
            assert!(worst < Duration::from_secs(secs), "{secs}: {t:?}");
            assert!(t.standby_poll >= Duration::from_millis(500));
            assert!(t.standby_poll <= Duration::from_secs(5));
        }
        assert_eq!(Timings::new(Duration::from_secs(15)).grace, 10);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, 15), Duration::from_millis(500));
        assert_eq!(backoff(2, 15), Duration::from_secs(1));
        assert_eq!(backoff(3, 15), Duration::from_secs(2));
        assert_eq!(backoff(30, 15), Duration::from_secs(5));
    }
}
