//! Whose tokens are whose (issue 26, defects 1, 3 and 4): the deletion policy at deletion time
//! is recorded durably and the orphan sweep honours it; a restored-looking Secret is adopted
//! only with proof; a token that does not expire at Nuclia (a NUA key) is never taken for
//! expired, and an abandonment is reported once.

use std::sync::Arc;

use chrono::Duration;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};

use super::scripted::{Op, Scripted};
use super::{NAME, World, requeues, settings};
use crate::controller::reconcile;
use crate::controller::resource_index::ResourceIndex;
use crate::controller::{Context, Stores};
use crate::crd::{
    ANNOTATION_TOKEN_ID, DeletionPolicy, FINALIZER, LABEL_MANAGED_BY, LABEL_OWNER_KIND,
    LABEL_OWNER_NAME, MANAGED_BY, NucliaNuaKey, NucliaPersonalToken, PreviousToken, k8s_time,
};
use crate::issuer::Marker;

/// The kept record as the in-memory apiserver holds it.
fn kept_record(w: &World) -> Option<ConfigMap> {
    let s = settings();
    w.server.get(&format!(
        "/api/v1/namespaces/{}/configmaps/{}",
        s.operator_namespace, s.kept_configmap
    ))
}

/// Every controller cache loaded, knowing only `live` (the resources that exist).
fn caches_knowing(ctx: &Context, live: &[&Scripted]) {
    let index = Arc::new(ResourceIndex::default());
    for o in live {
        index.observe(&watcher::Event::Apply((*o).clone()));
    }
    let (pts, mut a) = reflector::store::<NucliaPersonalToken>();
    a.apply_watcher_event(&watcher::Event::InitDone);
    let (kbs, mut b) = reflector::store::<crate::crd::NucliaKbApiKey>();
    b.apply_watcher_event(&watcher::Event::InitDone);
    let (nuas, mut c) = reflector::store::<NucliaNuaKey>();
    c.apply_watcher_event(&watcher::Event::InitDone);
    let none = Arc::new(ResourceIndex::default());
    let stores: Stores = vec![
        Arc::new((pts, index)),
        Arc::new((kbs, none.clone())),
        Arc::new((nuas, none)),
    ];
    assert!(ctx.stores.set(stores).is_ok());
    assert!(ctx.caches_ready());
}

/// Defect 1: a token minted under `Revoke` (plain marker), kept because the policy was
/// `Orphan` when the resource was deleted. The deletion records the resource in the kept
/// ConfigMap before it lets go; another resource's orphan sweep on the same login, in an
/// operator started afterwards (nothing in memory), leaves that token alone and still revokes
/// the token of a resource deleted without its finalizer.
#[tokio::test]
async fn a_token_kept_by_the_policy_at_deletion_is_never_swept() {
    let w = World::new();
    // The resource that stays, on the same login: its verification lists and sweeps.
    w.store(&w.issued("live-tok"));
    // The one deleted with Orphan, whose token was minted while the policy was Revoke.
    let gone_uid = uuid::Uuid::new_v4().to_string();
    w.up.share(&gone_uid);
    let minted_under_revoke = Marker {
        uid: gone_uid.clone(),
        ..w.marker(false)
    };
    let expires = w.now + Duration::days(29);
    w.up.seed("kept-tok", Some(minted_under_revoke), expires);
    let mut gone = w.resource();
    gone.metadata.name = Some("gone".into());
    gone.metadata.uid = Some(gone_uid.clone());
    gone.metadata.finalizers = Some(vec![FINALIZER.into()]);
    gone.metadata.deletion_timestamp = Some(k8s_time(w.now));
    // Switched to Orphan just before the deletion: the token's marker says nothing of it.
    gone.spec.lifecycle.deletion_policy = DeletionPolicy::Orphan;
    gone.status = Some(
        crate::crd::CredentialStatus {
            token_id: Some("kept-tok".into()),
            not_after: Some(expires),
            scope: w.status().scope,
            ..Default::default()
        }
        .into(),
    );
    let gone_path = format!("{}/gone", Scripted::url_path(&(), Some(&w.ns)));
    w.server.put(&gone_path, &gone);

    let action = reconcile(Arc::new(gone), w.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(w.server.get::<Scripted>(&gone_path).is_none(), "released");
    assert!(w.up.calls().is_empty(), "{:?}", w.up.calls());
    let record = kept_record(&w).expect("the kept record was written");
    let entry = &record.data.unwrap_or_default()[&gone_uid];
    assert!(entry.contains("kept-tok"), "{entry}");

    // And a token of a resource deleted without its finalizer: an orphan to sweep.
    let lost = Marker {
        uid: "lost-uid".into(),
        ..w.marker(false)
    };
    w.up.seed("stray", Some(lost), expires);

    // A new operator process: only what the apiserver holds.
    let ctx = Context::new(
        w.server.client(),
        crate::nuclia::Client::new(crate::nuclia::ClientConfig::default()).unwrap(),
        settings(),
        w.metrics.clone(),
    );
    let live = w.current().unwrap();
    caches_knowing(&ctx, &[&live]);
    reconcile(Arc::new(live), ctx).await.expect("verifies");
    assert!(w.up.ops().contains(&Op::List), "{:?}", w.up.calls());
    assert_eq!(w.up.revoked(), ["stray"]);
    assert_eq!(w.up.live_ids(), ["kept-tok", "live-tok"]);
}

/// The kept record is bounded: an entry whose tokens have all expired at Nuclia goes at the
/// next write; one whose tokens never expire there stays.
#[tokio::test]
async fn kept_entries_go_once_their_tokens_have_expired() {
    let w = World::new();
    let entry = |until: Option<chrono::DateTime<chrono::Utc>>| crate::controller::kept::Entry {
        kind: "Scripted".into(),
        namespace: w.ns.clone(),
        name: NAME.into(),
        kept_at: w.now,
        tokens: Vec::new(),
        until,
    };
    let now = w.now;
    let update = |uid: &'static str, e| {
        let ctx = w.ctx.clone();
        async move {
            crate::controller::kept::update(&ctx, Some((uid, &e)), &[], now)
                .await
                .unwrap()
        }
    };
    update("expired", entry(Some(now + Duration::days(1)))).await;
    update("nua", entry(None)).await;
    let later = now + Duration::days(2);
    crate::controller::kept::update(&w.ctx, Some(("new", &entry(None))), &[], later)
        .await
        .unwrap();
    let record = crate::controller::kept::read(&w.ctx).await.unwrap();
    let uids: Vec<&str> = record.entries.keys().map(String::as_str).collect();
    assert_eq!(uids, ["new", "nua"]);
}

/// A Secret that looks restored (the operator's labels for this kind and name, no live owner)
/// and claims token `id` with `value`.
fn put_restored(w: &World, id: &str, value: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(w.ns.clone()),
            labels: Some(
                [
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                    (LABEL_OWNER_KIND.to_owned(), "Scripted".to_owned()),
                    (LABEL_OWNER_NAME.to_owned(), NAME.to_owned()),
                ]
                .into(),
            ),
            annotations: Some([(ANNOTATION_TOKEN_ID.to_owned(), id.to_owned())].into()),
            ..Default::default()
        },
        data: Some([("token".to_owned(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    w.server.put(&w.secret_path(NAME), &secret);
}

/// Defect 3: a tenant imitates a restored Secret naming another tenant's token id. Neither a
/// value that does not authenticate as that token, nor that token's own value when its marker
/// names another namespace, gets it adopted: a new token is issued, the Secret is taken over,
/// and deleting the resource never revokes the claimed token. A real restore (the token of an
/// earlier resource of this namespace, its own value) is still adopted, minting nothing.
#[tokio::test]
async fn a_restored_secret_is_adopted_only_with_proof() {
    for (case, marker_namespace, value, adopted) in [
        ("junk value", "tenant-a", "junk", false),
        (
            "leaked value, another namespace",
            "tenant-a",
            "value-theirs",
            false,
        ),
        (
            "own namespace, value does not match",
            "",
            "value-other",
            false,
        ),
        ("a real restore", "", "value-theirs", true),
    ] {
        let w = World::new();
        let ns = if marker_namespace.is_empty() {
            w.ns.clone()
        } else {
            marker_namespace.to_owned()
        };
        let earlier = Marker {
            namespace: ns,
            uid: "earlier-uid".into(),
            ..w.marker(false)
        };
        let expires = w.now + Duration::days(20);
        w.up.seed("theirs", Some(earlier), expires);
        w.up.seed("other", None, expires);
        put_restored(&w, "theirs", value);
        w.store(&w.resource());

        w.reconcile().await.expect("issued or adopted");
        let status = w.status();
        if adopted {
            assert_eq!(status.token_id.as_deref(), Some("theirs"), "{case}");
            assert!(!w.up.ops().contains(&Op::Issue), "{case}: nothing minted");
            continue;
        }
        assert_eq!(status.token_id.as_deref(), Some("minted-1"), "{case}");
        assert!(
            status.previous_tokens.is_empty(),
            "{case}: the claim is not recorded"
        );
        assert_eq!(
            w.secret_token().as_deref(),
            Some("value-minted-1"),
            "{case}"
        );
        let owners = w.secret().unwrap().metadata.owner_references.unwrap();
        assert_eq!(owners[0].uid, w.uid, "{case}: the Secret was taken over");
        assert!(
            w.events().contains(&"AdoptionRefused".to_owned()),
            "{case}: {:?}",
            w.events()
        );

        w.delete(Duration::zero());
        let action = w.reconcile().await.expect("cleans up");
        assert_eq!(action, Action::await_change(), "{case}");
        assert_eq!(w.up.revoked(), ["minted-1"], "{case}");
        assert!(
            w.up.live_ids().contains(&"theirs".to_owned()),
            "{case}: the claimed token lives"
        );
    }
}

/// A replaced token of a kind that does not expire at Nuclia (a NUA key), past its rotation
/// period, whose revocation fails: it stays recorded (and the reconcile fails, to be retried
/// with backoff), never dropped as "expired on its own".
#[tokio::test]
async fn a_replaced_token_without_upstream_expiry_stays_recorded() {
    let w = World::new();
    w.up.nuclia().no_expiry = true;
    let mut obj = w.issued("tok");
    let period_end = w.now - Duration::days(1);
    w.up.seed("replaced", Some(w.marker(false)), period_end);
    let status: &mut crate::crd::CredentialStatus = obj.status.as_mut().unwrap();
    status.previous_tokens.push(PreviousToken {
        id: "replaced".into(),
        revoke_at: w.now - Duration::days(2),
        in_window: false,
        reissue_handled: None,
        not_after: Some(period_end),
        service_account_id: None,
        scope: status.scope.clone(),
    });
    w.store(&obj);
    w.up.nuclia().unavailable.push_back(Op::Revoke);

    w.reconcile().await.expect_err("the revocation failed");
    let previous: Vec<String> = w
        .status()
        .previous_tokens
        .iter()
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(previous, ["replaced"], "still recorded, to be retried");

    assert_eq!(w.up.live_ids(), ["replaced", "tok"]);
}

/// Defect 4: a deletion that cannot revoke a token which does not expire at Nuclia, past its
/// rotation period, retries and then abandons it with the Event and the metric (it is not
/// dropped as expired); a second run of the clean-up (a stale cache delivering the object as it
/// was) reports nothing again.
#[tokio::test]
async fn a_client_without_upstream_expiry_is_abandoned_once() {
    let w = World::new();
    w.up.nuclia().no_expiry = true;
    let mut obj = w.issued("client");
    obj.status.as_mut().unwrap().not_after = Some(w.now - Duration::days(2));
    w.store(&obj);
    w.up.nuclia().refuse_all = true;
    w.delete(Duration::minutes(1));

    let action = w.reconcile().await.expect("retries");
    assert!(requeues(&action), "not dropped as expired");
    assert!(w.events().contains(&"RevokeFailed".to_owned()));
    assert!(w.current().is_some());

    w.delete(Duration::minutes(11));
    let stale = w.current().unwrap();
    let action = w.reconcile().await.expect("gives up");
    assert_eq!(action, Action::await_change());
    assert!(w.current().is_none(), "released");
    assert_eq!(w.abandoned(), 1);
    let notes = w.server.event_notes(&w.ns, "RevokeAbandoned");
    assert_eq!(notes.len(), 1, "{:?}", w.events());
    assert!(notes[0].contains("client (never expires"), "{}", notes[0]);
    assert!(!notes[0].contains("value-client"), "never a value");
    assert_eq!(w.up.live_ids(), ["client"]);

    // The same deletion again, from the object as the cache had it.
    let action = reconcile(Arc::new(stale), w.ctx.clone())
        .await
        .expect("done");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(w.abandoned(), 1, "counted once");
    assert_eq!(
        w.server.event_notes(&w.ns, "RevokeAbandoned").len(),
        1,
        "reported once"
    );
}
