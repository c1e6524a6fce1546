//! Rollout restarts of the workloads that read a credential's Secret (`spec.rolloutRestartTargets`),
//! the way `kubectl rollout restart` does them: a pod-template annotation whose value is the
//! time of the restart (never a token or a hash of one).
//!
//! Requests are coalesced per workload: the first one opens a batch that fires a short moment
//! later (and no sooner than the minimum interval after the workload's last restart); every
//! request made before it fires joins it. A request always comes after its Secret was written, so
//! the pods the restart creates read every Secret of the batch. Whoever asked waits for the
//! batch: the previous token's grace period starts when the restart was asked, not before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::crd::{FIELD_MANAGER, RolloutRestartTarget, WorkloadKind};

/// The pod-template annotation a restart sets (kubectl uses `kubectl.kubernetes.io/restartedAt`).
pub const ANNOTATION_RESTARTED_AT: &str = "nuclia.dev/restartedAt";

/// How long a batch stays open for other Secrets of the same wave.
const SETTLE: Duration = Duration::from_secs(2);

/// What became of one restart: when it was asked, or why it could not be.
pub type Outcome = Result<DateTime<Utc>, String>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Workload {
    namespace: String,
    kind: WorkloadKind,
    name: String,
}

#[derive(Default)]
struct Slot {
    last: Option<Instant>,
    /// The open batch, if any: its result arrives on this channel.
    open: Option<watch::Receiver<Option<Outcome>>>,
}

/// Restarts workloads, at most once per `min_interval` each.
pub struct Restarter {
    kube: kube::Client,
    settle: Duration,
    min_interval: Duration,
    slots: Arc<Mutex<HashMap<Workload, Slot>>>,
}

impl Restarter {
    pub fn new(kube: kube::Client, min_interval: Duration) -> Self {
        Self {
            kube,
            settle: SETTLE,
            // Two restarts in the same second would write the same annotation value.
            min_interval: min_interval.max(Duration::from_secs(1)),
            slots: Arc::default(),
        }
    }

    /// Shorter timings for tests.
    #[cfg(test)]
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Restarts `targets` in `namespace` and waits for the batches they join. Returns when the
    /// restarts were asked (the latest) and the failures, one message each.
    pub async fn restart(
        &self,
        namespace: &str,
        targets: &[RolloutRestartTarget],
    ) -> (DateTime<Utc>, Vec<String>) {
        let outcomes =
            futures::future::join_all(targets.iter().map(|t| self.restart_one(namespace, t))).await;
        let mut at = None;
        let mut failures = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(t) => at = at.max(Some(t)),
                Err(e) => failures.push(e),
            }
        }
        (at.unwrap_or_else(crate::clock::now), failures)
    }

    async fn restart_one(&self, namespace: &str, target: &RolloutRestartTarget) -> Outcome {
        let workload = Workload {
            namespace: namespace.to_owned(),
            kind: target.kind,
            name: target.name.clone(),
        };
        let mut rx = self.join(workload);
        let waited = tokio::time::timeout(
            self.settle + self.min_interval + Duration::from_secs(60),
            rx.wait_for(Option::is_some),
        )
        .await;
        match waited {
            Ok(Ok(outcome)) => outcome.clone().unwrap_or_else(|| Err("no outcome".into())),
            _ => Err(format!(
                "{} {}: the restart did not complete in time",
                target.kind.as_str(),
                target.name
            )),
        }
    }

    /// Joins the workload's open batch, or opens one.
    fn join(&self, workload: Workload) -> watch::Receiver<Option<Outcome>> {
        let mut slots = self.slots.lock().expect("restart slots");
        // Workloads not restarted within the interval need no memory: the map stays as small
        // as the restarts in flight.
        let horizon = self.min_interval;
        slots.retain(|_, s| s.open.is_some() || s.last.is_some_and(|l| l.elapsed() < horizon));
        let slot = slots.entry(workload.clone()).or_default();
        if let Some(rx) = &slot.open {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        slot.open = Some(rx.clone());
        let due = match slot.last {
            Some(last) => (Instant::now() + self.settle).max(last + self.min_interval),
            None => Instant::now() + self.settle,
        };
        let slots = self.slots.clone();
        let kube = self.kube.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            {
                // Closed before the patch: a Secret written from now on needs the next batch.
                let mut slots = slots.lock().expect("restart slots");
                if let Some(slot) = slots.get_mut(&workload) {
                    slot.open = None;
                    slot.last = Some(Instant::now());
                }
            }
            let outcome = patch(kube, &workload).await;
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.slots.lock().expect("restart slots").len()
    }
}

async fn patch(kube: kube::Client, w: &Workload) -> Outcome {
    let resource = match w.kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(kube, &w.namespace, &resource);
    // Whole seconds, as kubectl writes it: the value recorded in status is the annotation's.
    let now = crate::clock::now().trunc_subsecs(0);
    let body = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        ANNOTATION_RESTARTED_AT: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }}}}});
    let what = format!("{} {}", w.kind.as_str(), w.name);
    match api
        .patch(
            &w.name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = %w.namespace, workload = %what, "rollout restart requested");
            Ok(now)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Err(format!("{what} not found")),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(format!(
            "{what}: the operator may not patch it (chart value rbac.restartWorkloads)"
        )),
        Err(e) => Err(format!("{what}: {e}")),
    }
}
