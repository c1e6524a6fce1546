//! Engine scenarios without a cluster or a network: the real `reconcile` and `cleanup` run
//! against an in-memory apiserver ([`apiserver`]) and a scripted Nuclia ([`scripted`]), and
//! each scenario checks what the engine asked of Nuclia and what it left in the apiserver.
//! They cover the paths a cluster test reaches only by luck: a mint that never reached the
//! Secret, an issue interrupted between mint and status, and each way a deletion finishes.

mod apiserver;
mod kb_interrupted;
mod ownership;
mod restarts;
mod scripted;
mod sim;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use kube::{Resource, ResourceExt};

use self::apiserver::ApiServer;
use self::scripted::{Op, Scripted, ScriptedSpec, Upstream};
use super::reconcile;
use super::resource_index::ResourceIndex;
use super::{Context, Kind, Settings};
use crate::crd::{
    ANNOTATION_ISSUE_INTENT, ANNOTATION_ROTATE, ANNOTATION_TOKEN_ID, CredentialStatus,
    DeletionPolicy, FINALIZER, IssueIntent, NucliaKbApiKey, SECRET_FINALIZER, SecretKeyRef,
    TokenScope, k8s_time,
};
use crate::issuer::Marker;
use crate::lifecycle::token_hash;
use crate::runtime::metrics::Metrics;

const NAME: &str = "pat";
const LOGIN: &str = "login-token";

fn settings() -> Settings {
    Settings {
        cluster_id: "test-cluster".into(),
        cluster_id_unique: false,
        installation_id: "inst1".into(),
        verify_interval: Duration::from_secs(3600),
        requeue_max: Duration::from_secs(3600),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        intent_grace: Duration::from_secs(60),
        revoke_timeout: Duration::from_secs(600),
        min_issue_interval: Duration::from_secs(10),
        rollout_restart_interval: Duration::from_secs(30),
        default_rotation_windows: Default::default(),
        concurrency: 1,
        namespaces: Vec::new(),
        label_selector: None,
        cluster_credential_namespace: Some("operator".into()),
        operator_namespace: "operator".into(),
        kept_configmap: "nto-installation-kept".into(),
    }
}

/// A Nuclia client whose every endpoint (global, the zone's origin) is `fake`.
fn fake_client(fake: &nuclia_fake::FakeHandle, timeout: Duration) -> crate::nuclia::Client {
    let origin = url::Url::parse(&fake.url).expect("the fake's URL");
    let mut endpoints = crate::nuclia::Endpoints {
        global: origin.clone(),
        ..Default::default()
    };
    endpoints
        .zone_origins
        .insert(fake.bootstrap.zone.clone(), origin);
    crate::nuclia::Client::new(crate::nuclia::ClientConfig {
        endpoints,
        timeout,
        per_credential_rps: 0.0,
        ..Default::default()
    })
    .expect("a Nuclia client")
}

fn secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("a time")
}

/// One test's apiserver, Nuclia and context, with one `Scripted` resource named [`NAME`] whose
/// credential is the Secret `login` (holding [`LOGIN`]).
struct World {
    server: ApiServer,
    up: Upstream,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    ns: String,
    uid: String,
    now: DateTime<Utc>,
}

impl World {
    fn new() -> Self {
        crate::runtime::install_crypto();
        let server = ApiServer::default();
        let uid = uuid::Uuid::new_v4().to_string();
        let ns = format!("t-{}", &uid[..8]);
        let up = Upstream::register(&uid, &[LOGIN]);
        let nuclia = crate::nuclia::Client::new(crate::nuclia::ClientConfig::default())
            .expect("a Nuclia client (never called)");
        let metrics = Arc::new(Metrics::new());
        let ctx = Context::new(server.client(), nuclia, settings(), metrics.clone());
        let w = World {
            server,
            up,
            ctx,
            metrics,
            ns,
            uid,
            now: secs(Utc::now()),
        };
        w.put_secret("login", &[("token", LOGIN)], None);
        w
    }

    fn secret_path(&self, name: &str) -> String {
        format!("/api/v1/namespaces/{}/secrets/{name}", self.ns)
    }

    fn path(&self) -> String {
        format!("{}/{NAME}", Scripted::url_path(&(), Some(&self.ns)))
    }

    /// The resource as a user creates it.
    fn resource(&self) -> Scripted {
        let mut obj = Scripted::new(
            NAME,
            ScriptedSpec {
                auth: SecretKeyRef {
                    name: "login".into(),
                    key: "token".into(),
                },
                self_renew: false,
                secret: Default::default(),
                lifecycle: Default::default(),
            },
        );
        obj.metadata = ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(self.ns.clone()),
            uid: Some(self.uid.clone()),
            generation: Some(1),
            ..Default::default()
        };
        obj
    }

    fn marker(&self, keep: bool) -> Marker {
        Marker {
            cluster: settings().cluster_id,
            namespace: self.ns.clone(),
            uid: self.uid.clone(),
            keep,
            installation: Some(settings().installation_id),
        }
    }

    /// A resource that holds `id` (value `value-<id>`, live upstream and in its Secret),
    /// issued a day ago by an issue that completed, with the finalizer.
    fn issued(&self, id: &str) -> Scripted {
        self.up.seed(
            id,
            Some(self.marker(false)),
            self.now + chrono::Duration::days(29),
        );
        let mut obj = self.resource();
        let intent = IssueIntent {
            nonce: "n0".into(),
            at: self.now - chrono::Duration::days(1),
            expires: Some(self.now + chrono::Duration::days(29)),
        };
        obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
        obj.metadata.annotations =
            Some([(ANNOTATION_ISSUE_INTENT.to_owned(), intent.render())].into());
        let policy = obj.policy().unwrap();
        obj.status = Some(
            crate::crd::CredentialStatus {
                token_id: Some(id.into()),
                token_hash: Some(token_hash(&format!("value-{id}"))),
                issued_at: Some(intent.at),
                not_after: intent.expires,
                spec_hash: Some(policy.spec_hash),
                scope: Some(TokenScope {
                    credential: Some(obj.spec.auth.clone()),
                    ..Default::default()
                }),
                resolved_intent: Some("n0".into()),
                secret_name: Some(NAME.into()),
                ..Default::default()
            }
            .into(),
        );
        self.put_secret(NAME, &[("token", &format!("value-{id}"))], Some(id));
        obj
    }

    /// A Secret; with `token_id`, one the resource owns (as the operator writes it).
    fn put_secret(&self, name: &str, data: &[(&str, &str)], token_id: Option<&str>) {
        let mut meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.ns.clone()),
            ..Default::default()
        };
        if let Some(id) = token_id {
            meta.owner_references = Some(vec![OwnerReference {
                api_version: "test.nuclia.dev/v1".into(),
                kind: "Scripted".into(),
                name: NAME.into(),
                uid: self.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
            meta.finalizers = Some(vec![SECRET_FINALIZER.into()]);
            meta.annotations = Some([(ANNOTATION_TOKEN_ID.to_owned(), id.to_owned())].into());
        }
        let secret = Secret {
            metadata: meta,
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.server.put(&self.secret_path(name), &secret);
    }

    fn store(&self, obj: &Scripted) {
        self.server.put(&self.path(), obj);
    }

    /// The resource as the apiserver holds it (None: gone).
    fn current(&self) -> Option<Scripted> {
        self.server.get(&self.path())
    }

    /// Status names token `id` as the current one and says Ready, and `id` is the only token
    /// alive upstream.
    fn assert_ready_with(&self, id: &str) -> CredentialStatus {
        let status = self.status();
        assert_eq!(status.token_id.as_deref(), Some(id));
        assert_eq!(self.up.live_ids(), [id]);
        let ready = status.condition(super::status::READY).unwrap();
        assert_eq!(ready.status, "True", "{ready:?}");
        status
    }

    fn status(&self) -> CredentialStatus {
        self.current()
            .and_then(|o| o.status)
            .expect("a resource with a status")
            .common
    }

    fn secret(&self) -> Option<Secret> {
        self.server.get(&self.secret_path(NAME))
    }

    /// The token value the managed Secret holds.
    fn secret_token(&self) -> Option<String> {
        let data = self.secret()?.data?;
        String::from_utf8(data.get("token")?.0.clone()).ok()
    }

    /// One reconcile of the stored resource, as the controller would run it; then lets the
    /// Events it published land.
    async fn reconcile(&self) -> crate::error::Result<Action> {
        let obj = self.current().expect("the resource exists");
        let result = reconcile(Arc::new(obj), self.ctx.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        result
    }

    fn events(&self) -> Vec<String> {
        self.server.event_reasons(&self.ns)
    }

    fn abandoned(&self) -> u64 {
        let text = self.metrics.encode();
        let series = r#"nuclia_operator_revocations_abandoned_total{kind="Scripted"} "#;
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .map_or(0, |n| n.parse().expect("a count"))
    }

    /// Moves the stored resource's issue intent back past the intent grace, as if the
    /// reconcile that wrote it had been interrupted long ago.
    fn age_intent(&self) {
        let intent = intent_of(&self.current().expect("the resource exists"));
        let aged = IssueIntent {
            at: intent.at - chrono::Duration::minutes(5),
            ..intent
        };
        self.server.edit(&self.path(), |v| {
            v["metadata"]["annotations"][ANNOTATION_ISSUE_INTENT] = aged.render().into();
        });
    }

    /// Time passes: the backoff of a failed reconcile is over, and so is the minimum interval
    /// after the last mint attempt (its intent moved back).
    fn later(&self) {
        self.ctx.memo.fall_due(&self.uid);
        self.age_intent();
    }

    /// The requests that wrote the resource (metadata or status) so far.
    fn resource_writes(&self) -> usize {
        self.server
            .requests(&format!("PATCH {}", self.path()))
            .len()
    }

    /// Marks the stored resource deleted `ago` (finalizers keep it).
    fn delete(&self, ago: chrono::Duration) {
        let at = k8s_time(self.now - ago);
        self.server.edit(&self.path(), |v| {
            v["metadata"]["deletionTimestamp"] = serde_json::to_value(at).unwrap();
        });
    }
}

fn requeues(a: &Action) -> bool {
    *a != Action::await_change()
}

/// The intent annotation of `obj`.
fn intent_of(obj: &Scripted) -> IssueIntent {
    IssueIntent::parse(&obj.annotations()[ANNOTATION_ISSUE_INTENT]).expect("an intent")
}

// --- issue ---------------------------------------------------------------------------------

/// A first mint whose Secret cannot be created: the token is revoked at once, status never
/// records it, the intent is resolved (nothing for the guard to sweep), and the next reconcile
/// mints again at once rather than wait for the intent grace.
#[tokio::test]
async fn a_mint_that_never_reached_the_secret_is_revoked_at_once() {
    let w = World::new();
    w.store(&w.resource());
    w.server.fail(Method::POST, "/secrets", 500, false);

    let err = w.reconcile().await.expect_err("the Secret write failed");
    assert_eq!(err.label(), "KubernetesError", "{err}");
    assert_eq!(w.up.ops(), [Op::Issue, Op::Revoke]);
    assert_eq!(w.up.revoked(), ["minted-1"]);
    assert!(w.up.live_ids().is_empty(), "nothing minted is left live");
    assert!(w.secret().is_none());
    let obj = w.current().unwrap();
    let status = obj.status.clone().unwrap();
    assert_eq!(status.token_id, None);
    assert_eq!(status.resolved_intent, Some(intent_of(&obj).nonce));
    assert!(obj.finalizers().contains(&FINALIZER.to_owned()));
    let ready = status.condition(super::status::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "KubernetesError")
    );

    // Woken at once by its own writes: it waits for the backoff, and writes nothing.
    let writes = w.resource_writes();
    w.reconcile().await.expect("waits");
    assert_eq!(w.up.ops(), [Op::Issue, Op::Revoke]);
    assert_eq!(w.resource_writes(), writes);

    w.later();
    w.reconcile().await.expect("the second attempt succeeds");
    assert_eq!(w.up.ops(), [Op::Issue, Op::Revoke, Op::Issue]);
    assert_eq!(w.status().token_id.as_deref(), Some("minted-2"));
    assert_eq!(w.secret_token().as_deref(), Some("value-minted-2"));
    assert_eq!(w.up.live_ids(), ["minted-2"]);
}

/// A rotation whose Secret update fails: the new token is revoked, the old one stays current
/// and in the Secret, untouched.
#[tokio::test]
async fn a_rotation_that_never_reached_the_secret_keeps_the_old_token() {
    let w = World::new();
    let mut obj = w.issued("old");
    obj.annotations_mut()
        .insert(ANNOTATION_ROTATE.into(), "now".into());
    w.store(&obj);
    w.server.fail(Method::PATCH, "/secrets/", 500, false);

    w.reconcile().await.expect_err("the Secret write failed");
    assert_eq!(w.up.ops(), [Op::Issue, Op::Revoke]);
    assert_eq!(w.up.revoked(), ["minted-1"]);
    assert_eq!(w.up.live_ids(), ["old"]);
    let status = w.status();
    assert_eq!(status.token_id.as_deref(), Some("old"));
    assert!(status.previous_tokens.is_empty());
    assert_eq!(w.secret_token().as_deref(), Some("value-old"));
    assert_eq!(
        status.resolved_intent,
        Some(intent_of(&w.current().unwrap()).nonce)
    );
}

/// The rollback's own revocation fails: the intent stays unresolved, so once the intent
/// grace is over the leak guard finds the token and revokes it.
#[tokio::test]
async fn a_rollback_that_cannot_revoke_leaves_the_token_to_the_guard() {
    let w = World::new();
    w.store(&w.resource());
    w.server.fail(Method::POST, "/secrets", 500, false);
    w.up.nuclia().unavailable.push_back(Op::Revoke);

    w.reconcile().await.expect_err("the Secret write failed");
    assert_eq!(w.up.live_ids(), ["minted-1"], "the revocation failed");
    let obj = w.current().unwrap();
    let intent = intent_of(&obj);
    assert_ne!(
        obj.status.unwrap().resolved_intent,
        Some(intent.nonce.clone())
    );

    // Within the grace: the mint may still be in flight elsewhere; nothing is done.
    let action = w.reconcile().await.expect("waits");
    assert!(requeues(&action));
    assert_eq!(w.up.ops(), [Op::Issue, Op::Revoke]);

    // After it: the guard lists, revokes the stray token, and the issue goes ahead.
    w.age_intent();
    w.reconcile().await.expect("sweeps, then issues");
    assert_eq!(
        w.up.ops(),
        [Op::Issue, Op::Revoke, Op::List, Op::Revoke, Op::Issue]
    );
    assert_eq!(w.up.revoked(), ["minted-1", "minted-1"]);
    assert_eq!(w.up.live_ids(), ["minted-2"]);
    assert_eq!(w.status().token_id.as_deref(), Some("minted-2"));
}

/// Interrupted between the Secret write and the status write (both status writes fail): the
/// next reconcile past the intent grace adopts the token the Secret holds; nothing is revoked
/// and nothing minted again.
#[tokio::test]
async fn an_issue_interrupted_before_status_is_adopted() {
    let w = World::new();
    w.store(&w.resource());
    w.server.fail(Method::PATCH, "/status", 500, false);
    w.server.fail(Method::PATCH, "/status", 500, false);

    w.reconcile().await.expect_err("the status write failed");
    assert_eq!(w.secret_token().as_deref(), Some("value-minted-1"));
    let obj = w.current().unwrap();
    assert_eq!(obj.status, None, "no status was written");
    let intent = intent_of(&obj);
    w.age_intent();

    w.reconcile().await.expect("adopts");
    assert!(!w.up.ops().contains(&Op::Revoke), "{:?}", w.up.calls());
    assert_eq!(w.up.ops().iter().filter(|o| **o == Op::Issue).count(), 1);
    let status = w.assert_ready_with("minted-1");
    assert_eq!(status.resolved_intent, Some(intent.nonce));
}

/// A resource left by a crash with an unresolved intent older than the grace: the marked
/// token in the Secret that status does not reference is adopted (the one status had becomes
/// a replaced token, in its grace period); another marked unreferenced token is revoked;
/// tokens of other resources and unmarked ones are left alone.
#[tokio::test]
async fn the_guard_adopts_the_secrets_token_and_revokes_the_other_strays() {
    let w = World::new();
    let mut obj = w.issued("current");
    let expires = w.now + chrono::Duration::days(30);
    w.up.seed("in-secret", Some(w.marker(false)), expires);
    w.up.seed("stray", Some(w.marker(false)), expires);
    let other = Marker {
        uid: "another-uid".into(),
        ..w.marker(false)
    };
    w.up.seed("of-another", Some(other), expires);
    w.up.seed("unmarked", None, expires);
    w.put_secret(NAME, &[("token", "value-in-secret")], Some("in-secret"));
    let intent = IssueIntent {
        nonce: "n1".into(),
        at: w.now - chrono::Duration::minutes(10),
        expires: Some(expires),
    };
    obj.annotations_mut()
        .insert(ANNOTATION_ISSUE_INTENT.into(), intent.render());
    w.store(&obj);

    w.reconcile().await.expect("sweeps");
    assert_eq!(w.up.revoked(), ["stray"]);
    assert!(!w.up.ops().contains(&Op::Issue));
    assert_eq!(
        w.up.live_ids(),
        ["current", "in-secret", "of-another", "unmarked"]
    );
    let status = w.status();
    assert_eq!(status.token_id.as_deref(), Some("in-secret"));
    assert_eq!(status.resolved_intent.as_deref(), Some("n1"));
    let previous: Vec<&str> = status
        .previous_tokens
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(previous, ["current"]);
    assert!(status.previous_tokens[0].revoke_at > w.now);
}

/// The Secret create failed after it landed (an answer lost on the way back): the engine took
/// the token back although the Secret holds it; the next reconcile repairs the Secret with a
/// new token, and Ready is True again.
#[tokio::test]
async fn a_secret_write_that_failed_after_landing_heals() {
    let w = World::new();
    w.store(&w.resource());
    w.server.fail(Method::POST, "/secrets", 500, true);

    w.reconcile().await.expect_err("the Secret write failed");
    assert_eq!(w.up.revoked(), ["minted-1"]);
    assert_eq!(w.secret_token().as_deref(), Some("value-minted-1"));

    w.later();
    w.reconcile().await.expect("repairs");
    assert_eq!(w.secret_token().as_deref(), Some("value-minted-2"));
    w.assert_ready_with("minted-2");
}

/// A user deletes the Secret of a live resource: the token-in-use finalizer holds it, the
/// engine lets it go and writes a new one with a new token (the old one keeps its grace).
#[tokio::test]
async fn a_secret_deleted_under_a_live_resource_is_repaired() {
    let w = World::new();
    w.store(&w.issued("old"));
    let secrets: kube::Api<Secret> = kube::Api::namespaced(w.server.client(), &w.ns);
    secrets.delete(NAME, &Default::default()).await.unwrap();
    assert!(w.secret().unwrap().metadata.deletion_timestamp.is_some());

    w.reconcile().await.expect("repairs");
    assert_eq!(w.up.ops(), [Op::Issue]);
    let secret = w.secret().expect("a new Secret");
    assert!(secret.metadata.deletion_timestamp.is_none());
    assert!(secret.finalizers().contains(&SECRET_FINALIZER.to_owned()));
    assert_eq!(w.secret_token().as_deref(), Some("value-minted-1"));
    let status = w.status();
    assert_eq!(status.token_id.as_deref(), Some("minted-1"));
    assert_eq!(status.previous_tokens[0].id, "old");
    assert!(status.previous_tokens[0].revoke_at > w.now);
    assert!(w.events().contains(&"SecretRepaired".to_owned()));
}

/// Defect 2: the login was revoked at Nuclia and the managed Secret deleted. The repair's mint
/// is refused; the reconciles that its own writes wake (the intent, the failure in status) and
/// one that a Secret event wakes wait for the backoff: no mint, no write, the failure stays
/// reported. Once the backoff is over the minimum interval after the refused attempt still
/// holds (no `issuedAt` recorded it); after that, one more attempt.
#[tokio::test]
async fn a_refused_repair_backs_off_and_writes_nothing_meanwhile() {
    let w = World::new();
    w.store(&w.issued("old"));
    w.up.nuclia().logins.clear();
    w.up.nuclia().tokens.clear();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(w.server.client(), &w.ns);
    secrets.delete(NAME, &Default::default()).await.unwrap();

    let err = w.reconcile().await.expect_err("the mint is refused");
    assert_eq!(err.label(), "Unauthorized");
    assert_eq!(w.up.ops(), [Op::Issue]);
    let writes = w.resource_writes();
    for _ in 0..5 {
        w.reconcile().await.expect("waits for the backoff");
    }
    // A Secret event the failed reconcile did not cause: a full reconcile, which still waits.
    w.ctx.memo.secret_seen(&w.uid, Some("someone-else"));
    w.reconcile().await.expect("waits for the backoff");
    assert_eq!(w.up.ops(), [Op::Issue]);
    assert_eq!(
        w.resource_writes(),
        writes,
        "{:?}",
        w.server.requests("PATCH")
    );
    let status = w.status();
    let ready = status.condition(super::status::READY).unwrap();
    assert_eq!(ready.reason, "Unauthorized", "{ready:?}");

    // The backoff is over, the minimum interval after the refused attempt is not.
    w.ctx.memo.fall_due(&w.uid);
    w.reconcile().await.expect("waits for the minimum interval");
    assert_eq!(w.up.ops(), [Op::Issue]);

    w.later();
    w.reconcile().await.expect_err("refused again");
    assert_eq!(w.up.ops(), [Op::Issue, Op::Issue]);
}

/// Defect 6: a resource name of more than 63 characters whose 63rd is a `-`: the owner-name
/// label is cut to a valid value (the apiserver refuses an invalid one with 422, which rolled
/// every mint back), and the Secret is written at the first mint.
#[tokio::test]
async fn a_long_name_gets_a_valid_owner_label() {
    let w = World::new();
    let long = format!("{}-{}", "a".repeat(62), "b".repeat(20));
    let mut obj = w.resource();
    obj.metadata.name = Some(long.clone());
    let path = format!("{}/{long}", Scripted::url_path(&(), Some(&w.ns)));
    w.server.put(&path, &obj);

    let stored: Scripted = w.server.get(&path).unwrap();
    reconcile(Arc::new(stored), w.ctx.clone())
        .await
        .expect("issued");
    assert_eq!(w.up.ops(), [Op::Issue]);
    assert_eq!(w.up.live_ids(), ["minted-1"]);
    let secret: Secret = w.server.get(&w.secret_path(&long)).expect("the Secret");
    let label = &secret.labels()[crate::crd::LABEL_OWNER_NAME];
    assert_eq!(*label, "a".repeat(62));
    let status = w.server.get::<Scripted>(&path).unwrap().status.unwrap();
    assert_eq!(status.token_id.as_deref(), Some("minted-1"));
    let ready = status.condition(super::status::READY).unwrap();
    assert_eq!(ready.status, "True", "{ready:?}");
    assert_eq!(super::secret::owner_name_label("a.b-"), "a.b");
    assert_eq!(
        super::secret::owner_name_label(&"x".repeat(70)),
        "x".repeat(63)
    );
}

/// Defect 5, a rename the minimum interval holds back: the waiting reconcile keeps the name of
/// the Secret that holds the token, and the deletion releases that Secret too (it would stay
/// Terminating on the token-in-use finalizer).
#[tokio::test]
async fn a_rename_waiting_for_its_token_still_releases_the_old_secret() {
    let w = World::new();
    let mut obj = w.issued("tok");
    // issued a moment ago
    obj.status.as_mut().unwrap().issued_at = Some(w.now);
    let intent = IssueIntent {
        at: w.now,
        ..intent_of(&obj)
    };
    obj.annotations_mut()
        .insert(ANNOTATION_ISSUE_INTENT.into(), intent.render());
    obj.spec.secret.name = Some("renamed".into());
    w.store(&obj);

    w.reconcile().await.expect("waits for the minimum interval");
    assert_eq!(w.up.ops(), [] as [Op; 0]);
    assert_eq!(w.status().secret_name.as_deref(), Some(NAME));
    let status = w.status();
    let issuing = status.condition(super::status::ISSUING).unwrap();
    assert_eq!(issuing.reason, "Waiting", "{issuing:?}");

    w.delete(chrono::Duration::zero());
    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert!(w.current().is_none());
    assert_eq!(w.up.revoked(), ["tok"]);
    assert!(w.secret().is_none(), "the old Secret was let go");
}

/// Defect 5, a rename to a name someone else's Secret has: `SecretConflict`, then deletion.
/// The Secret the resource wrote under its old name is released; the other is not touched.
#[tokio::test]
async fn a_rename_into_a_conflict_then_deletion_releases_the_old_secret() {
    let w = World::new();
    let mut obj = w.issued("tok");
    obj.spec.secret.name = Some("taken".into());
    w.store(&obj);
    w.put_secret("taken", &[("token", "theirs")], None);

    let err = w.reconcile().await.expect_err("conflict");
    assert_eq!(err.label(), "SecretConflict");
    assert_eq!(w.status().secret_name.as_deref(), Some(NAME));

    w.delete(chrono::Duration::zero());
    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert!(w.current().is_none());
    assert_eq!(w.up.revoked(), ["tok"]);
    assert!(w.secret().is_none(), "the old Secret was let go");
    let theirs: Secret = w.server.get(&w.secret_path("taken")).expect("untouched");
    assert!(theirs.metadata.deletion_timestamp.is_none());
}

/// ENGINE GAP: a self-renewing token whose bootstrap login has expired (the README's own
/// pattern) rotates with the managed token; if that rotation is interrupted after the Secret
/// write (both status writes fail), the leak guard lists with the mint credentials, which
/// offer the managed token only while status vouches for it, so only the dead login is
/// offered: every later reconcile fails Unauthorized before deciding anything, and the
/// token is never renewed again.
#[tokio::test]
async fn an_interrupted_self_renewal_with_an_expired_login_is_adopted() {
    let w = World::new();
    let mut obj = w.issued("old");
    obj.spec.self_renew = true;
    obj.annotations_mut()
        .insert(ANNOTATION_ROTATE.into(), "now".into());
    w.store(&obj);
    w.up.nuclia().logins.clear();
    w.server.fail(Method::PATCH, "/status", 500, false);
    w.server.fail(Method::PATCH, "/status", 500, false);

    w.reconcile().await.expect_err("the status write failed");
    let calls = w.up.calls();
    assert_eq!(
        calls[0].used.as_deref(),
        Some("value-old"),
        "minted by itself"
    );
    assert_eq!(w.secret_token().as_deref(), Some("value-minted-1"));
    w.age_intent();

    w.reconcile().await.expect("adopts the token in the Secret");
    assert_eq!(w.status().token_id.as_deref(), Some("minted-1"));
}

/// A verification that falls due while the watch shows the Secret as the last reconcile left
/// it starts from the view the memo kept: the Secret is not read. With `selfRenew` the token
/// it holds is the credential, so it is read then, once; and a token that changed behind the
/// watch's back is not taken for the one the view describes (the login speaks instead).
#[tokio::test]
async fn a_verification_reads_the_unchanged_secret_only_for_its_token() {
    for (self_renew, changed_behind, gets, used) in [
        (false, false, 0, LOGIN),
        (true, false, 1, "value-t1"),
        (true, true, 1, LOGIN),
    ] {
        let case = format!("selfRenew {self_renew}, changed behind the watch {changed_behind}");
        let w = World::new();
        let mut obj = w.issued("t1");
        obj.spec.self_renew = self_renew;
        w.store(&obj);
        w.reconcile().await.expect("verifies");
        // The watch delivers the Secret as that reconcile left it; then verification falls due.
        let rv = w.secret().and_then(|s| s.metadata.resource_version);
        w.ctx.memo.secret_seen(&w.uid, rv.as_deref());
        w.ctx
            .mark_verified(&w.uid, w.now - chrono::Duration::hours(2));
        w.ctx.memo.fall_due(&w.uid);
        // and the list that reconcile made is forgotten: this one asks Nuclia again.
        super::caches::evict(&w.ctx, Duration::ZERO);
        if changed_behind {
            // to another live token, one that could speak for the user
            w.up.seed("t2", None, w.now + chrono::Duration::days(29));
            w.server.edit(&w.secret_path(NAME), |v| {
                v["data"]["token"] =
                    serde_json::to_value(ByteString(b"value-t2".to_vec())).expect("bytes");
            });
        }
        let get = format!("GET {}", w.secret_path(NAME));
        let before = w.server.requests(&get).len();
        let lists = |w: &World| w.up.ops().iter().filter(|o| **o == Op::List).count();
        let listed = lists(&w);

        let started = secs(Utc::now());
        w.reconcile().await.expect("verifies again");
        let ended = Utc::now();
        assert_eq!(w.server.requests(&get).len() - before, gets, "{case}");
        assert_eq!(lists(&w), listed + 1, "{case}: verified upstream");
        let call = w.up.calls().into_iter().rev().find(|c| c.op == Op::List);
        assert_eq!(call.and_then(|c| c.used).as_deref(), Some(used), "{case}");
        // Verified by this reconcile (in whole seconds, as the engine keeps time).
        let verified = w.ctx.last_verified(&w.uid).expect("verified");
        assert!(
            started <= verified && verified <= ended,
            "{case}: verified at {verified}"
        );

        // Deleted: its token is revoked and the resource goes.
        w.delete(chrono::Duration::zero());
        let action = w.reconcile().await.expect("cleans up");
        assert_eq!(action, Action::await_change(), "{case}");
        assert!(w.current().is_none(), "{case}: the resource is gone");
        assert!(
            w.up.revoked().contains(&"t1".to_owned()),
            "{case}: t1 revoked"
        );
        assert!(
            !w.up.live_ids().contains(&"t1".to_owned()),
            "{case}: t1 live"
        );
    }
}

// --- deletion ------------------------------------------------------------------------------

/// Nothing minted (the first mint was refused; its intent resolved): the finalizer goes at
/// once, without a single call to Nuclia, even though the login no longer works.
#[tokio::test]
async fn deleting_what_never_minted_calls_nobody() {
    let w = World::new();
    w.store(&w.resource());
    w.up.nuclia().logins.clear();
    let err = w.reconcile().await.expect_err("the mint is refused");
    assert_eq!(err.label(), "Unauthorized");
    assert_eq!(w.up.ops(), [Op::Issue]);
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert_eq!(w.up.ops(), [Op::Issue], "no call beyond the refused mint");
    assert!(w.current().is_none(), "the resource is gone");
}

/// No credential can revoke: within --revoke-timeout the deletion retries (RevokeFailed, the
/// finalizer stays); after it, the finalizer goes with RevokeAbandoned naming the token, the
/// abandoned counter counts it, and the Secret is let go.
#[tokio::test]
async fn a_deletion_no_credential_can_revoke_gives_up_after_the_timeout() {
    let w = World::new();
    w.store(&w.issued("tok"));
    w.up.nuclia().refuse_all = true;
    w.delete(chrono::Duration::minutes(1));

    let action = w.reconcile().await.expect("retries");
    assert!(requeues(&action));
    let calls = w.up.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].op, calls[0].id.as_deref()),
        (Op::Revoke, Some("tok"))
    );
    assert_eq!(
        calls[0].credentials,
        [LOGIN, "value-tok"],
        "login first, then the token itself"
    );
    assert!(
        w.current()
            .unwrap()
            .finalizers()
            .contains(&FINALIZER.to_owned())
    );
    assert!(
        w.events().contains(&"RevokeFailed".to_owned()),
        "{:?}",
        w.events()
    );
    assert_eq!(w.abandoned(), 0);
    assert!(w.secret().is_some());

    w.delete(chrono::Duration::minutes(11));
    let action = w.reconcile().await.expect("gives up");
    assert_eq!(action, Action::await_change());
    assert!(w.current().is_none(), "the finalizer was removed");
    assert_eq!(w.abandoned(), 1);
    let notes = w.server.event_notes(&w.ns, "RevokeAbandoned");
    assert_eq!(notes.len(), 1, "{:?}", w.events());
    assert!(notes[0].contains("tok (expires "), "{}", notes[0]);
    assert!(
        !notes[0].contains("value-tok"),
        "never a value: {}",
        notes[0]
    );
    assert!(w.secret().is_none(), "the Secret was let go");
    assert_eq!(w.up.live_ids(), ["tok"], "left to expire");
}

/// A namespace deletion: the credentials Secret is gone already, the managed Secret is
/// terminating (held by the token-in-use finalizer). The managed token, alone, revokes the
/// replaced token and then itself; then the Secret is let go.
#[tokio::test]
async fn a_deletion_without_the_login_revokes_with_the_managed_token() {
    let w = World::new();
    let mut obj = w.issued("tok");
    w.up.seed(
        "replaced",
        Some(w.marker(false)),
        w.now + chrono::Duration::days(20),
    );
    let status: &mut crate::crd::CredentialStatus = obj.status.as_mut().unwrap();
    status.previous_tokens.push(crate::crd::PreviousToken {
        id: "replaced".into(),
        revoke_at: w.now + chrono::Duration::hours(1),
        in_window: false,
        reissue_handled: None,
        not_after: Some(w.now + chrono::Duration::days(20)),
        service_account_id: None,
        scope: status.scope.clone(),
    });
    w.store(&obj);
    w.server.remove(&w.secret_path("login"));
    let at = k8s_time(w.now);
    w.server.edit(&w.secret_path(NAME), |v| {
        v["metadata"]["deletionTimestamp"] = serde_json::to_value(at).unwrap();
    });
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert_eq!(w.up.revoked(), ["replaced", "tok"]);
    for c in w.up.calls() {
        assert_eq!(c.credentials, ["value-tok"], "{c:?}");
        assert_eq!(c.used.as_deref(), Some("value-tok"));
    }
    assert!(w.up.live_ids().is_empty());
    assert!(w.current().is_none());
    assert!(w.secret().is_none());
}

/// A token already gone at Nuclia (404) counts as revoked.
#[tokio::test]
async fn a_deletion_counts_404_as_revoked() {
    let w = World::new();
    w.store(&w.issued("tok"));
    w.up.nuclia().tokens.clear();
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert_eq!(w.up.revoked(), ["tok"]);
    assert!(w.current().is_none());
    assert!(!w.events().contains(&"RevokeFailed".to_owned()));
    assert_eq!(w.abandoned(), 0);
}

/// An unresolved intent at deletion: the tokens marked for the resource that status does not
/// know are found by a list and revoked with the recorded one.
#[tokio::test]
async fn a_deletion_after_an_interrupted_issue_revokes_the_strays() {
    let w = World::new();
    let mut obj = w.issued("tok");
    w.up.seed(
        "stray",
        Some(w.marker(false)),
        w.now + chrono::Duration::days(30),
    );
    w.up.seed("unmarked", None, w.now + chrono::Duration::days(30));
    let intent = IssueIntent {
        nonce: "n1".into(),
        at: w.now - chrono::Duration::minutes(10),
        expires: None,
    };
    obj.annotations_mut()
        .insert(ANNOTATION_ISSUE_INTENT.into(), intent.render());
    w.store(&obj);
    w.delete(chrono::Duration::zero());

    w.reconcile().await.expect("cleans up");
    assert_eq!(w.up.revoked(), ["tok", "stray"]);
    assert_eq!(w.up.live_ids(), ["unmarked"]);
    assert!(w.current().is_none());
}

/// `deletionPolicy: Orphan`: nothing is revoked, and the Secret stays, without the owner
/// reference (so the garbage collector leaves it) and without the token-in-use finalizer.
#[tokio::test]
async fn an_orphan_deletion_keeps_token_and_secret() {
    let w = World::new();
    let mut obj = w.issued("tok");
    obj.spec.lifecycle.deletion_policy = DeletionPolicy::Orphan;
    w.store(&obj);
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert!(w.up.calls().is_empty(), "{:?}", w.up.calls());
    assert_eq!(w.up.live_ids(), ["tok"]);
    assert!(w.current().is_none());
    assert!(w.server.requests("DELETE").is_empty());
    let secret = w.secret().expect("the Secret is kept");
    assert_eq!(secret.owner_references(), &[] as &[OwnerReference]);
    assert!(!secret.finalizers().contains(&SECRET_FINALIZER.to_owned()));
    assert_eq!(w.secret_token().as_deref(), Some("value-tok"));
}

/// A Knowledge Box key in the controllers' caches that authenticates with the resource's
/// Secret and is being deleted itself; the returned writer and index take it out again.
fn deleting_reader(
    w: &World,
) -> (
    NucliaKbApiKey,
    reflector::store::Writer<NucliaKbApiKey>,
    Arc<ResourceIndex>,
) {
    let kb: NucliaKbApiKey = serde_json::from_value(serde_json::json!({
        "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
        "metadata": {"name": "search", "namespace": w.ns, "uid": "kb-uid",
                     "finalizers": [FINALIZER], "deletionTimestamp": k8s_time(w.now)},
        "spec": {"kbUrl": "https://europe-1.nuclia.cloud/api/v1/kb/abc",
                 "auth": {"secretRef": {"name": NAME, "key": "token"}}},
    }))
    .unwrap();
    let (kbs, mut writer) = reflector::store::<NucliaKbApiKey>();
    let index = Arc::new(ResourceIndex::default());
    // Loaded (InitDone swaps in the initial list), then the key is seen being deleted.
    writer.apply_watcher_event(&watcher::Event::InitDone);
    writer.apply_watcher_event(&watcher::Event::Apply(kb.clone()));
    index.observe(&watcher::Event::Apply(kb.clone()));
    // Both caches loaded: a deletion waits for nothing else.
    let (pts, mut pts_writer) = reflector::store::<crate::crd::NucliaPersonalToken>();
    pts_writer.apply_watcher_event(&watcher::Event::InitDone);
    let none = Arc::new(ResourceIndex::default());
    let (nuas, mut nuas_writer) = reflector::store::<crate::crd::NucliaNuaKey>();
    nuas_writer.apply_watcher_event(&watcher::Event::InitDone);
    let stores: super::Stores = vec![
        Arc::new((pts, none.clone())),
        Arc::new((kbs, index.clone())),
        Arc::new((nuas, none)),
    ];
    assert!(w.ctx.stores.set(stores).is_ok());
    (kb, writer, index)
}

/// A new leader sees a deletion before its caches hold the resources that read this
/// resource's Secret: it waits for them instead of revoking what they still need.
#[tokio::test]
async fn a_deletion_waits_until_the_caches_are_loaded() {
    let w = World::new();
    w.store(&w.issued("tok"));
    let (pts, mut pts_writer) = reflector::store::<crate::crd::NucliaPersonalToken>();
    let (kbs, _kb_writer) = reflector::store::<NucliaKbApiKey>();
    let (nuas, mut nuas_writer) = reflector::store::<crate::crd::NucliaNuaKey>();
    nuas_writer.apply_watcher_event(&watcher::Event::InitDone);
    let none = || Arc::new(ResourceIndex::default());
    assert!(
        w.ctx
            .stores
            .set(vec![
                Arc::new((pts, none())),
                Arc::new((kbs, none())),
                Arc::new((nuas, none())),
            ])
            .is_ok()
    );
    pts_writer.apply_watcher_event(&watcher::Event::InitDone);
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("waits");
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert!(
        w.up.calls().is_empty(),
        "nothing revoked before the caches are loaded"
    );
    assert!(w.current().is_some());
}

/// Dependents first: while a Knowledge Box key that authenticates with this resource's
/// Secret is itself being deleted, this deletion waits (no call to Nuclia, finalizer kept);
/// once it is gone, the revocation goes ahead.
#[tokio::test]
async fn a_deletion_waits_for_the_resources_that_authenticate_with_its_secret() {
    let w = World::new();
    w.store(&w.issued("tok"));
    let (kb, mut writer, index) = deleting_reader(&w);
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("waits");
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    assert!(w.up.calls().is_empty());
    assert!(w.current().is_some());

    writer.apply_watcher_event(&watcher::Event::Delete(kb.clone()));
    index.observe(&watcher::Event::Delete(kb));
    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert_eq!(w.up.revoked(), ["tok"]);
    assert!(w.current().is_none());
}

/// Dependents first is bounded too: past --revoke-timeout the deletion goes ahead although
/// a reader is still being deleted.
#[tokio::test]
async fn waiting_for_dependents_ends_with_the_revoke_timeout() {
    let w = World::new();
    w.store(&w.issued("tok"));
    let _reader = deleting_reader(&w);
    w.delete(chrono::Duration::minutes(11));

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change());
    assert_eq!(w.up.revoked(), ["tok"]);
    assert!(w.current().is_none());
}

/// `spec.auth` was switched to another login but the rotation has not happened (or was
/// refused), so the current token was minted with the old login, and that login's Secret
/// is gone. The managed token in the Secret is that very token: it revokes itself.
#[tokio::test]
async fn a_deletion_after_a_login_switch_revokes_with_the_token_itself() {
    let w = World::new();
    let mut obj = w.issued("tok");
    obj.status.as_mut().unwrap().scope = Some(TokenScope {
        credential: Some(SecretKeyRef {
            name: "old-login".into(),
            key: "token".into(),
        }),
        ..Default::default()
    });
    w.store(&obj);
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change(), "{:?}", w.events());
    assert_eq!(w.up.revoked(), ["tok"]);
    assert!(w.current().is_none());
}

/// A token past its expiry needs no revocation: a deletion whose credentials are all dead
/// (the login expired, the token too) finishes at once instead of retrying until
/// --revoke-timeout and reporting a token "left valid" that expired long ago.
#[tokio::test]
async fn a_deletion_does_not_wait_on_expired_tokens() {
    let w = World::new();
    let mut obj = w.issued("tok");
    obj.status.as_mut().unwrap().not_after = Some(w.now - chrono::Duration::hours(1));
    w.store(&obj);
    w.up.nuclia().tokens.clear();
    w.up.nuclia().logins.clear();
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("cleans up");
    assert_eq!(action, Action::await_change(), "{:?}", w.events());
    assert!(w.current().is_none());
    assert_eq!(w.abandoned(), 0);
}

/// The other side of the rule: after a login switch was rotated, the token in the Secret
/// belongs to the new login's user; a replaced token minted with the old login is never
/// offered it (at Nuclia it could only answer 404, which would count as revoked). With the
/// old login's Secret gone, the deletion retries instead.
#[tokio::test]
async fn a_replaced_token_is_never_revoked_with_another_logins_token() {
    let w = World::new();
    let mut obj = w.issued("tok");
    let status: &mut crate::crd::CredentialStatus = obj.status.as_mut().unwrap();
    status.previous_tokens.push(crate::crd::PreviousToken {
        id: "replaced".into(),
        revoke_at: w.now + chrono::Duration::hours(1),
        in_window: false,
        reissue_handled: None,
        not_after: Some(w.now + chrono::Duration::days(20)),
        service_account_id: None,
        scope: Some(TokenScope {
            credential: Some(SecretKeyRef {
                name: "old-login".into(),
                key: "token".into(),
            }),
            ..Default::default()
        }),
    });
    w.up.seed("replaced", None, w.now + chrono::Duration::days(20));
    w.store(&obj);
    w.delete(chrono::Duration::zero());

    let action = w.reconcile().await.expect("retries");
    assert!(requeues(&action));
    assert!(w.up.calls().is_empty(), "{:?}", w.up.calls());
    assert!(w.events().contains(&"RevokeFailed".to_owned()));
    assert_eq!(w.up.live_ids(), ["replaced", "tok"]);
}

/// The per-resource series follow status: a replaced token whose revocation fails stays
/// counted in `nuclia_credential_previous_tokens` with its due time (what the chart's
/// NucliaRevocationOverdue alert reads); revoked, the count drops to 0 and the due time goes;
/// a deleted resource's series all go.
#[tokio::test]
async fn the_previous_tokens_gauge_follows_status_and_goes_with_the_resource() {
    let w = World::new();
    let mut obj = w.issued("tok");
    let not_after = w.now + chrono::Duration::days(20);
    w.up.seed("replaced", Some(w.marker(false)), not_after);
    let due = w.now - chrono::Duration::hours(2);
    let status: &mut crate::crd::CredentialStatus = obj.status.as_mut().unwrap();
    status.previous_tokens.push(crate::crd::PreviousToken {
        id: "replaced".into(),
        revoke_at: due,
        in_window: false,
        reissue_handled: None,
        not_after: Some(not_after),
        service_account_id: None,
        scope: status.scope.clone(),
    });
    w.store(&obj);
    let labels = format!(r#"{{kind="Scripted",namespace="{}",name="{NAME}"}}"#, w.ns);
    let sample = |series: &str| {
        let text = w.metrics.encode();
        let want = format!("{series}{labels} ");
        text.lines()
            .find_map(|l| l.strip_prefix(want.as_str()).map(str::to_owned))
    };

    w.up.nuclia().unavailable.push_back(Op::Revoke);
    w.reconcile().await.expect_err("the revocation failed");
    assert_eq!(w.status().previous_tokens.len(), 1);
    assert_eq!(
        sample("nuclia_credential_previous_tokens").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample("nuclia_credential_revocation_due_timestamp_seconds"),
        Some(due.timestamp().to_string()),
        "the due time of the replaced token, in the past"
    );

    w.later();
    w.reconcile().await.expect("revokes");
    assert_eq!(w.up.revoked(), ["replaced", "replaced"]);
    assert!(w.status().previous_tokens.is_empty());
    assert_eq!(
        sample("nuclia_credential_previous_tokens").as_deref(),
        Some("0")
    );
    assert_eq!(
        sample("nuclia_credential_revocation_due_timestamp_seconds"),
        None
    );
    assert_eq!(sample("nuclia_credential_ready").as_deref(), Some("1"));

    w.delete(chrono::Duration::zero());
    w.reconcile().await.expect("cleans up");
    assert!(w.current().is_none());
    let text = w.metrics.encode();
    assert!(
        !text.contains(&labels),
        "series of a deleted resource:\n{text}"
    );
}

/// The shared Secret watch's store, filled as the watch's first list would with every Secret
/// the in-memory apiserver holds now; the writer delivers later events.
fn watch_secrets(
    w: &World,
) -> (
    reflector::Store<kube::api::PartialObjectMeta<Secret>>,
    reflector::store::Writer<kube::api::PartialObjectMeta<Secret>>,
) {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for name in ["login", NAME] {
        if let Some(meta) = secret_meta(w, name) {
            writer.apply_watcher_event(&watcher::Event::InitApply(meta));
        }
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (reader, writer)
}

fn secret_meta(w: &World, name: &str) -> Option<kube::api::PartialObjectMeta<Secret>> {
    use kube::api::PartialObjectMetaExt;
    let s = w.server.get::<Secret>(&w.secret_path(name))?;
    Some(s.metadata.into_response_partial())
}

/// With the Secret watch's store: a first issue whose Secret the watch shows absent reads no
/// Secret but the credential; a Secret the watch shows present is read; the credential is read
/// again only once the watch shows its Secret changed.
#[tokio::test]
async fn the_secret_watch_spares_reads() {
    let w = World::new();
    let (reader, mut writer) = watch_secrets(&w);
    let _ = w.ctx.secret_stores.set(vec![(None, reader)]);
    let gets = |name: &str| {
        w.server
            .requests(&format!("GET {}", w.secret_path(name)))
            .len()
    };
    w.store(&w.resource());
    w.reconcile().await.expect("issued");
    assert!(w.secret_token().is_some(), "the Secret was written");
    assert_eq!(gets(NAME), 0, "a Secret the watch shows absent is not read");
    assert_eq!(gets("login"), 1);

    // A rotation: the managed Secret exists now, so it is read; the credential is cached.
    let rotate = |value: &str| {
        let mut obj = w.current().unwrap();
        // past the minimum interval between mints
        obj.status.as_mut().unwrap().issued_at = Some(w.now - chrono::Duration::hours(1));
        let intent = intent_of(&obj);
        let aged = IssueIntent {
            at: intent.at - chrono::Duration::hours(1),
            ..intent
        };
        obj.annotations_mut()
            .insert(ANNOTATION_ISSUE_INTENT.into(), aged.render());
        obj.annotations_mut()
            .insert(ANNOTATION_ROTATE.into(), value.into());
        w.store(&obj);
    };
    writer.apply_watcher_event(&watcher::Event::Apply(secret_meta(&w, NAME).unwrap()));
    rotate("one");
    w.reconcile().await.expect("rotated");
    assert_eq!(w.up.ops(), [Op::Issue, Op::Issue]);
    assert_eq!(gets(NAME), 1);
    assert_eq!(gets("login"), 1, "the credential came from the cache");

    // The login Secret changes: until the watch shows it, the cached credential stands; then
    // it is read again.
    w.put_secret("login", &[("token", LOGIN)], None);
    rotate("two");
    w.reconcile().await.expect("rotated");
    assert_eq!(gets("login"), 1, "the watch has not shown the change yet");
    writer.apply_watcher_event(&watcher::Event::Apply(secret_meta(&w, "login").unwrap()));
    rotate("three");
    w.reconcile().await.expect("rotated");
    assert_eq!(gets("login"), 2, "read again at its new version");
    assert_eq!(w.up.ops(), [Op::Issue; 4]);

    // Housekeeping keeps what was used lately, and lets go of what was not.
    let size = |idle: Duration, cache: &str| {
        super::caches::evict(&w.ctx, idle)
            .into_iter()
            .find(|(c, _)| *c == cache)
            .map(|(_, n)| n)
    };
    assert_eq!(size(Duration::from_secs(3600), "credentials"), Some(1));
    assert_eq!(size(Duration::ZERO, "credentials"), Some(0));
    assert_eq!(size(Duration::ZERO, "verification_lists"), Some(0));
}

/// The resources of a wave that share a login reconcile together: while one reads the login
/// Secret the others wait for it and take what it cached, so the Secret is read once.
#[tokio::test]
async fn concurrent_reads_of_one_credential_make_one_request() {
    let w = World::new();
    let (reader, _writer) = watch_secrets(&w);
    let _ = w.ctx.secret_stores.set(vec![(None, reader)]);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(w.ctx.kube.clone(), &w.ns);
    let login = SecretKeyRef {
        name: "login".into(),
        key: "token".into(),
    };
    let reads = (0..8).map(|_| w.ctx.read_credential(&secrets, &w.ns, &login));
    for token in futures::future::join_all(reads).await {
        assert!(
            token.expect("the credential").expose() == LOGIN,
            "the login's credential"
        );
    }
    let gets = w
        .server
        .requests(&format!("GET {}", w.secret_path("login")))
        .len();
    assert_eq!(gets, 1, "eight concurrent reads of one login Secret");
}
