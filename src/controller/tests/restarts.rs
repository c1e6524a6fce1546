//! Rollout restarts: coalescing and pacing of the restarter, and the engine starting the
//! replaced token's grace period only once the restart was asked.

use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use serde_json::json;

use super::World;
use super::apiserver::ApiServer;
use crate::controller::restart::{ANNOTATION_RESTARTED_AT, Restarter};
use crate::crd::{ANNOTATION_ROTATE, RolloutRestartTarget, WorkloadKind};

fn deployment_path(ns: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
}

fn put_deployment(server: &ApiServer, ns: &str, name: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    }))
    .expect("a Deployment");
    server.put(&deployment_path(ns, name), &d);
}

fn restarted_at(server: &ApiServer, ns: &str, name: &str) -> Option<String> {
    let d: Deployment = server.get(&deployment_path(ns, name))?;
    d.spec?
        .template
        .metadata?
        .annotations?
        .get(ANNOTATION_RESTARTED_AT)
        .cloned()
}

fn target(name: &str) -> RolloutRestartTarget {
    RolloutRestartTarget {
        kind: WorkloadKind::Deployment,
        name: name.into(),
    }
}

fn restarter(server: &ApiServer) -> Restarter {
    crate::runtime::install_crypto();
    Restarter::new(server.client(), Duration::from_secs(1)).with_settle(Duration::from_millis(200))
}

/// Several resources rotating together restart a shared workload once; one that asks after
/// that restart waits for the interval and gets a restart of its own.
#[tokio::test]
async fn requests_made_together_restart_a_workload_once_and_later_ones_wait_the_interval() {
    let server = ApiServer::default();
    put_deployment(&server, "ns", "web");
    let r = restarter(&server);
    let start = tokio::time::Instant::now();
    let targets = [target("web")];
    let (a, b, c) = tokio::join!(
        r.restart("ns", &targets),
        r.restart("ns", &targets),
        r.restart("ns", &targets)
    );
    for (_, failures) in [&a, &b, &c] {
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert_eq!(server.requests("PATCH /apis/apps/v1").len(), 1);
    assert!(restarted_at(&server, "ns", "web").is_some());

    let (_, failures) = r.restart("ns", &targets).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(server.requests("PATCH /apis/apps/v1").len(), 2);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the second restart came {:?} after the first request",
        start.elapsed()
    );

    // Past the interval nothing is remembered: the map does not grow with time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_deployment(&server, "ns", "other");
    r.restart("ns", &[target("other")]).await;
    assert_eq!(r.tracked(), 1, "only the workload just restarted is kept");
}

/// A missing workload or one the operator may not patch is a message, not a retry.
#[tokio::test]
async fn a_missing_or_forbidden_workload_is_reported_once() {
    let server = ApiServer::default();
    put_deployment(&server, "ns", "locked");
    server.fail(Method::PATCH, "/deployments/locked", 403, false);
    let r = restarter(&server);
    let (_, failures) = r.restart("ns", &[target("gone"), target("locked")]).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures
            .iter()
            .any(|f| f.contains("Deployment gone not found"))
    );
    assert!(
        failures
            .iter()
            .any(|f| f.contains("Deployment locked") && f.contains("rbac.restartWorkloads"))
    );
    assert_eq!(server.requests("PATCH /apis/apps/v1").len(), 2);
}

/// A rotation restarts the targets after the Secret holds the new token, records it, and the
/// replaced token's grace period starts only then.
#[tokio::test]
async fn a_rotation_restarts_the_targets_and_the_grace_period_starts_after() {
    let w = World::new();
    put_deployment(&w.server, &w.ns, "web");
    let mut obj = w.issued("old");
    obj.spec.lifecycle.rollout_restart_targets = vec![target("web"), target("missing")];
    obj.annotations_mut()
        .insert(ANNOTATION_ROTATE.into(), "now".into());
    w.store(&obj);

    w.reconcile().await.expect("rotated");
    let status = w.status();
    assert_eq!(status.token_id.as_deref(), Some("minted-1"));
    assert_eq!(w.secret_token().as_deref(), Some("value-minted-1"));
    let restart = status.rollout_restart.clone().expect("a restart recorded");
    assert_eq!(restart.token_id, status.token_id);
    assert_eq!(restart.failures.len(), 1, "{:?}", restart.failures);
    let asked = restart.requested_at.expect("when");
    let old = &status.previous_tokens[0];
    assert_eq!(old.id, "old");
    assert!(
        old.revoke_at >= asked + chrono::Duration::hours(1) - chrono::Duration::seconds(1),
        "grace ends {} but the restart was asked at {asked}",
        old.revoke_at
    );
    assert!(restarted_at(&w.server, &w.ns, "web").is_some());
    let ready = status.condition("Ready").expect("Ready");
    assert_eq!(ready.status, "True");
    assert!(
        ready.message.contains("Deployment missing not found"),
        "{}",
        ready.message
    );
    let events = w.events();
    assert!(
        events.iter().any(|e| e == "RolloutRestartFailed"),
        "{events:?}"
    );

    // Nothing more to do: no second restart, no retry of the failed one.
    w.reconcile().await.expect("idle");
    assert_eq!(w.server.requests("PATCH /apis/apps/v1").len(), 2);
}
