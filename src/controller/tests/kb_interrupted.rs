//! A Knowledge Box key whose first issue was interrupted (the intent written, the key and its
//! service account minted at Nuclia, nothing recorded) and which is then deleted: the real KB
//! issuer against `nuclia-fake` in process, over HTTP, and the in-memory apiserver.
//! Nothing recorded names the KB, so the deletion finds it from `spec.kbUrl` (the account by
//! discovery) and revokes what is marked for the resource there; when it cannot, it claims
//! nothing: the intent stays unresolved until `RevokeAbandoned` reports it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::controller::Action;

use super::apiserver::ApiServer;
use super::{requeues, secs, settings};
use crate::controller::engine::marker;
use crate::controller::reconcile;
use crate::controller::{Context, Kind};
use crate::crd::{ANNOTATION_ISSUE_INTENT, FINALIZER, IssueIntent, NucliaKbApiKey, k8s_time};
use crate::issuer::Issuer;
use crate::nuclia::ApiToken;
use crate::runtime::metrics::Metrics;
use nuclia_fake::{FakeConfig, FakeHandle};

const NAME: &str = "search";

struct World {
    server: ApiServer,
    fake: FakeHandle,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    ns: String,
    uid: String,
    now: DateTime<Utc>,
}

impl World {
    async fn new() -> World {
        crate::runtime::install_crypto();
        let fake = nuclia_fake::spawn(FakeConfig::default())
            .await
            .expect("nuclia-fake");
        let nuclia = super::fake_client(&fake, Duration::from_secs(5));
        let server = ApiServer::default();
        let metrics = Arc::new(Metrics::new());
        let ctx = Context::new(server.client(), nuclia, settings(), metrics.clone());
        let uid = uuid::Uuid::new_v4().to_string();
        let w = World {
            server,
            fake,
            ctx,
            metrics,
            ns: format!("t-{}", &uid[..8]),
            uid,
            now: secs(Utc::now()),
        };
        let login = Secret {
            metadata: ObjectMeta {
                name: Some("login".into()),
                namespace: Some(w.ns.clone()),
                ..Default::default()
            },
            data: Some(
                [(
                    "token".to_owned(),
                    ByteString(w.fake.bootstrap.pat.as_bytes().to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        w.server.put(&w.secret_path("login"), &login);
        w
    }

    fn secret_path(&self, name: &str) -> String {
        format!("/api/v1/namespaces/{}/secrets/{name}", self.ns)
    }

    fn path(&self) -> String {
        format!("{}/{NAME}", NucliaKbApiKey::url_path(&(), Some(&self.ns)))
    }

    /// The key as its first issue left it: the finalizer and an intent written five minutes
    /// ago (past the intent grace), no status; then what that issue minted at Nuclia with the
    /// real issuer (a service account created for it, a key in it). Returns the key's value.
    async fn interrupted_first_issue(&self) -> String {
        let intent = IssueIntent {
            nonce: "n1".into(),
            at: self.now - chrono::Duration::minutes(5),
            expires: Some(self.now + chrono::Duration::days(90)),
        };
        let obj: NucliaKbApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
            "metadata": {"name": NAME, "namespace": self.ns, "uid": self.uid,
                         "generation": 1, "finalizers": [FINALIZER],
                         "annotations": {ANNOTATION_ISSUE_INTENT: intent.render()}},
            "spec": {"kbUrl": self.fake.bootstrap.kbs[0].url, "role": "SMEMBER", "days": 90,
                     "auth": {"secretRef": {"name": "login", "key": "token"}}},
        }))
        .expect("a NucliaKbApiKey");
        let login = ApiToken::new(self.fake.bootstrap.pat.clone());
        let mut issuer = obj
            .issuer(&self.ctx, vec![login], &Default::default())
            .await
            .expect("the issuer");
        let minted = issuer
            .issue(&marker(&self.ctx, &obj), intent.expires.unwrap())
            .await
            .expect("minted");
        self.server.put(&self.path(), &obj);
        assert!(self.key_works(minted.token.expose()));
        assert_eq!(self.marked_service_accounts().len(), 1);
        minted.token.expose().to_owned()
    }

    fn current(&self) -> Option<NucliaKbApiKey> {
        self.server.get(&self.path())
    }

    /// Marks the stored resource deleted `ago` (the finalizer keeps it).
    fn delete(&self, ago: chrono::Duration) {
        let at = k8s_time(self.now - ago);
        self.server.edit(&self.path(), |v| {
            v["metadata"]["deletionTimestamp"] = serde_json::to_value(at).unwrap();
        });
    }

    async fn reconcile(&self) -> crate::error::Result<Action> {
        let obj = self.current().expect("the resource exists");
        let result = reconcile(Arc::new(obj), self.ctx.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        result
    }

    fn key_works(&self, value: &str) -> bool {
        self.fake.shared.lock().authenticate(value).is_ok()
    }

    /// The fake's service accounts whose title carries this resource's marker.
    fn marked_service_accounts(&self) -> Vec<String> {
        let st = self.fake.shared.lock();
        st.service_accounts
            .values()
            .filter(|sa| sa.title.contains(&self.uid))
            .map(|sa| sa.id.clone())
            .collect()
    }

    /// Requests the fake has answered so far.
    fn nuclia_calls(&self) -> u64 {
        self.fake.shared.lock().calls.values().sum()
    }

    fn intent_resolved(&self) -> bool {
        let obj = self.current().expect("the resource exists");
        crate::controller::engine::pending_intent(&obj, &obj.status.clone().unwrap_or_default())
            .is_none()
    }

    fn abandoned(&self) -> u64 {
        let series = r#"nuclia_operator_revocations_abandoned_total{kind="NucliaKbApiKey"} "#;
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .map_or(0, |n| n.parse().expect("a count"))
    }
}

/// Nothing recorded names the KB: the deletion locates it from `spec.kbUrl` (the account by
/// discovery), revokes the key marked for the resource and deletes the service account the
/// interrupted issue created.
#[tokio::test]
async fn a_deletion_after_an_interrupted_first_issue_finds_the_kb_from_the_spec() {
    let w = World::new().await;
    let key = w.interrupted_first_issue().await;
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert!(w.current().is_none(), "the finalizer was removed");
    assert!(!w.key_works(&key), "the interrupted issue's key is revoked");
    assert!(
        w.marked_service_accounts().is_empty(),
        "the service account created for it is deleted"
    );
    assert_eq!(w.abandoned(), 0);
}

/// The credentials are gone: nothing can be listed, so the deletion claims nothing. It
/// retries (`RevokeFailed`, the intent unresolved) until `--revoke-timeout`, then reports the
/// interrupted issue with `RevokeAbandoned`.
#[tokio::test]
async fn an_interrupted_first_issue_without_credentials_is_abandoned_not_resolved() {
    let w = World::new().await;
    let key = w.interrupted_first_issue().await;
    w.server.remove(&w.secret_path("login"));
    w.delete(chrono::Duration::minutes(1));

    let action = w.reconcile().await.expect("retries");
    assert!(requeues(&action), "{action:?}");
    assert!(w.current().is_some(), "the finalizer stays");
    assert!(!w.intent_resolved(), "the intent stays unresolved");
    assert!(
        w.server
            .event_reasons(&w.ns)
            .contains(&"RevokeFailed".to_owned())
    );

    w.delete(chrono::Duration::minutes(11));
    let action = w.reconcile().await.expect("gives up");
    assert_eq!(action, Action::await_change());
    assert!(w.current().is_none(), "the finalizer was removed");
    let notes = w.server.event_notes(&w.ns, "RevokeAbandoned");
    assert_eq!(notes.len(), 1, "{:?}", w.server.event_reasons(&w.ns));
    assert!(notes[0].contains("interrupted issue"), "{}", notes[0]);
    assert!(!notes[0].contains(&key), "never a value");
    assert!(w.key_works(&key), "left valid, and reported");
}

/// The spec now names a host the operator is not configured for: no request is made (no
/// credential goes there), and the deletion does not claim the interrupted issue's key.
#[tokio::test]
async fn an_interrupted_first_issue_with_an_untrusted_kb_url_sends_nothing() {
    let w = World::new().await;
    w.interrupted_first_issue().await;
    w.server.edit(&w.path(), |v| {
        v["spec"]["kbUrl"] = "https://kb.evil.example/api/v1/kb/stolen".into();
    });
    w.delete(chrono::Duration::minutes(1));
    let before = w.nuclia_calls();

    let action = w.reconcile().await.expect("retries");
    assert!(requeues(&action), "{action:?}");
    assert_eq!(w.nuclia_calls(), before, "no request at all");
    assert!(!w.intent_resolved(), "the intent stays unresolved");
    assert_eq!(w.marked_service_accounts().len(), 1);
}
