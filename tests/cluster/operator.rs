//! The operator as a real process against the real kube-apiserver and `nuclia-fake` over HTTP:
//! issue, rotation without an outage, conflicts, bad credentials, KB keys, untrusted endpoints
//! and deletion. Every test ends by scanning the operator's log for every token value the fake
//! minted. (Repair, a crash between mint and record, an interrupted first issue, an abandoned
//! deletion and `Orphan` are in `tests/cluster/every_kind.rs`, for every kind.)

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::operator::{HasStatus, World, ready, reason, wait_status};
use kube::api::{Api, DeleteParams};
use nuclia_token_operator::crd::{NucliaKbApiKey, NucliaPersonalToken};

const MINUTE: Duration = Duration::from_secs(60);

fn pt_manifest(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {{name: {name}}}\nspec:\n  description: test token\n  days: 1\n  auth: {{secretRef: {{name: login}}}}\n{extra_spec}"
    )
}

async fn uid_of<
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasStatus,
>(
    api: &Api<K>,
    name: &str,
) -> String {
    api.get(name).await.unwrap().uid_str()
}

/// Issue, two rotations with a 200 ms sampler proving the Secret always holds a working token,
/// previous tokens revoked after the grace period, then delete: everything revoked, Secret gone.
#[tokio::test]
async fn personal_token_issue_rotate_and_delete() {
    let mut w = World::new("pt-life").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("ci", "  renewBefore: 23h59m52s\n  rotation: {revokePreviousAfter: 3s}\n  secret: {name: ci-token, labels: {team: search}}\n"));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "ci", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "ci").await;
    let token = w
        .secret_value("ci-token", "token")
        .await
        .expect("Secret has the token");
    assert!(
        w.pat_works(&token).await,
        "the issued token is accepted by Nuclia"
    );
    let secret = w.secrets().get("ci-token").await.unwrap();
    assert_eq!(
        secret
            .metadata
            .labels
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("search")
    );
    assert_eq!(first.secret_name.as_deref(), Some("ci-token"));

    // Sampler: every 200 ms the Secret's token must be accepted.
    let samples = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (secrets, http, url) = (w.secrets(), w.http.clone(), w.fake.url.clone());
        let (samples, failures, stop) = (samples.clone(), failures.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let s = secrets.get("ci-token").await.unwrap();
                let tok = String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap();
                let ok = http
                    .get(format!("{url}/api/v1/user/welcome"))
                    .bearer_auth(&tok)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                samples.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let first_id = first.token_id.clone().unwrap();
    let second = wait_status(&api, "ci", MINUTE, "first rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&first_id)
    })
    .await;
    let second_id = second.token_id.clone().unwrap();
    assert!(
        second.previous_tokens.iter().any(|p| p.id == first_id),
        "the old token waits out its grace period"
    );
    let third = wait_status(&api, "ci", MINUTE, "second rotation", |s| {
        ready(s)
            && s.token_id.as_ref() != Some(&second_id)
            && s.token_id.as_ref() != Some(&first_id)
    })
    .await;
    // Grace periods end: only the current token (and at most one in grace) stay live.
    let settled = common::poll(Duration::from_secs(30), || async {
        let live = w.live_marked(&uid).await;
        let s = api.get("ci").await.ok()?.status?;
        (s.previous_tokens.is_empty() && live == vec![s.token_id.clone()?]).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(
        settled.is_some(),
        "previous tokens were not revoked after the grace period"
    );
    let (n, bad) = (
        samples.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    println!("rotation sampler: {n} samples, {bad} failures over two rotations");
    assert!(n > 20, "sampler ran {n} times");
    assert_eq!(
        bad, 0,
        "the Secret held a refused token in {bad} of {n} samples"
    );
    assert!(third.renewal_time.unwrap() > third.issued_at.unwrap());

    // Steady state is quiet: a resource that is not due writes nothing.
    api.delete("ci", &DeleteParams::default()).await.unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("ci").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the finalizer never let the resource go");
    assert!(
        w.live_marked(&uid).await.is_empty(),
        "tokens left at Nuclia after delete"
    );
    assert!(
        w.secrets().get_opt("ci-token").await.unwrap().is_none(),
        "Secret left after delete"
    );
    w.assert_log_has_no_tokens().await;
}

/// A 30-minute user token bootstraps a PAT that renews itself with its own current token.
#[tokio::test]
async fn self_renew_outlives_the_bootstrap_token() {
    let mut w = World::new("pt-self").await;
    w.create_secret("login", "token", &w.fake.bootstrap.user_token.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("boot", "  renewBefore: 23h59m55s\n  rotation: {revokePreviousAfter: 1s}\n  auth: {secretRef: {name: login}, selfRenew: true}\n"));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "boot", MINUTE, "Ready", ready).await;
    // The bootstrap token is revoked: successors must be minted with the managed token.
    let user_token_id = w
        .admin("credentials")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "user_token")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .unwrap();
    w.admin_post(&format!("revoke/{user_token_id}"), serde_json::json!({}))
        .await;
    let first_id = first.token_id.clone().unwrap();
    let next = wait_status(&api, "boot", MINUTE, "a self-renewed rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&first_id)
    })
    .await;
    let token = w.secret_value("boot", "token").await.unwrap();
    assert!(w.pat_works(&token).await);
    assert!(next.token_id.is_some());
    w.assert_log_has_no_tokens().await;
}

/// A foreign Secret is never overwritten; missing credentials say what to fix and recover.
#[tokio::test]
async fn conflicts_and_missing_credentials_are_reported() {
    let mut w = World::new("pt-bad").await;
    w.create_secret("taken", "token", "not-ours").await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("nocreds", ""));
    w.kubectl_apply(&pt_manifest("clash", "  secret: {name: taken}\n"));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "nocreds", MINUTE, "CredentialsMissing", |s| {
        reason(s).as_deref() == Some("CredentialsMissing")
    })
    .await;
    let msg = &s.condition("Ready").unwrap().message;
    assert!(
        msg.contains("login"),
        "the message names the Secret to create: {msg}"
    );
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    wait_status(
        &api,
        "nocreds",
        MINUTE,
        "Ready once the credentials exist",
        ready,
    )
    .await;
    wait_status(&api, "clash", MINUTE, "SecretConflict", |s| {
        reason(s).as_deref() == Some("SecretConflict")
    })
    .await;
    assert_eq!(
        w.secret_value("taken", "token").await.as_deref(),
        Some("not-ours"),
        "foreign Secret untouched"
    );
    w.assert_log_has_no_tokens().await;
}

/// A KB key: Secret with token, kbUrl, kbId and zone that work against GET {kbUrl}; delete
/// revokes the key and removes the service account the operator created.
#[tokio::test]
async fn kb_key_issue_and_delete() {
    let mut w = World::new("kb-life").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: search}}\nspec:\n  kbUrl: {kb_url}\n  days: 30\n  auth: {{secretRef: {{name: login}}}}\n"
    ));
    let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "search", MINUTE, "Ready", ready).await;
    let kb = s.own.kb.clone().unwrap();
    assert!(kb.service_account_owned);
    assert_eq!(
        kb.account_id.as_deref(),
        Some(w.fake.bootstrap.account_id.as_str()),
        "account discovered"
    );
    let token = w.secret_value("search", "token").await.unwrap();
    let url = w.secret_value("search", "kbUrl").await.unwrap();
    assert_eq!(url, kb_url);
    assert_eq!(
        w.secret_value("search", "kbId").await,
        Some(w.fake.bootstrap.kbs[0].id.clone())
    );
    assert!(
        w.kb_key_works(&url, &token).await,
        "the key works against GET {{kbUrl}}"
    );
    let sa = kb.service_account_id.unwrap();
    api.delete("search", &DeleteParams::default())
        .await
        .unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("search").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the finalizer never let the resource go");
    assert!(!w.kb_key_works(&url, &token).await, "the key is revoked");
    let sas = w.admin("service_accounts").await;
    assert!(
        !sas.to_string().contains(&sa),
        "the owned service account is deleted"
    );
    w.assert_log_has_no_tokens().await;
}

/// A kbUrl on a host the operator is not configured for: refused before any request.
#[tokio::test]
async fn untrusted_kb_url_gets_no_request() {
    let mut w = World::new("kb-untrusted").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    w.start_operator(&[]);
    w.kubectl_apply(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: evil}}\nspec:\n  kbUrl: http://127.0.0.1:{port}/api/v1/kb/abc\n  auth: {{secretRef: {{name: login}}}}\n"
    ));
    let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "evil", MINUTE, "UntrustedEndpoint", |s| {
        reason(s).as_deref() == Some("UntrustedEndpoint")
    })
    .await;
    assert!(s.token_id.is_none());
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "the untrusted listener received a connection"
    );
    w.assert_log_has_no_tokens().await;
}

/// `nuclia.dev/rotate` rotates once per new value; `nuclia.dev/revoke-now` rotates and revokes
/// the old token at once; deletion then revokes the one still in its grace period too.
/// (`deletionPolicy: Orphan` is `every_kind_orphan_is_kept` in `tests/cluster/every_kind.rs`.)
#[tokio::test]
async fn rotate_and_revoke_now_annotations() {
    let mut w = World::new("pt-annot").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest(
        "annot",
        "  rotation: {revokePreviousAfter: 1h}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "annot", MINUTE, "Ready", ready).await;
    let id1 = s.token_id.clone().unwrap();
    let tok1 = w.secret_value("annot", "token").await.unwrap();

    w.kubectl(&["annotate", "npt", "annot", "nuclia.dev/rotate=one"]);
    let s = wait_status(&api, "annot", MINUTE, "rotation on request", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let id2 = s.token_id.clone().unwrap();
    assert_eq!(s.rotate_handled.as_deref(), Some("one"));
    assert!(
        w.pat_works(&tok1).await,
        "a rotated-out token stays valid during its grace period"
    );

    w.kubectl(&[
        "annotate",
        "npt",
        "annot",
        "nuclia.dev/revoke-now=glass",
        "--overwrite",
    ]);
    let s = wait_status(&api, "annot", MINUTE, "break-glass rotation", |s| {
        ready(s)
            && s.token_id.as_ref() != Some(&id2)
            && s.previous_tokens.iter().all(|p| p.id != id2)
    })
    .await;
    let tok3 = w.secret_value("annot", "token").await.unwrap();
    assert!(w.pat_works(&tok3).await);
    let uid = uid_of(&api, "annot").await;
    assert!(
        !w.live_marked(&uid).await.contains(&id2),
        "revoke-now revoked the old token at once"
    );
    // the same annotation value does not rotate again
    let calls_before = w.admin("calls").await["POST /api/v1/user/pa_tokens"]
        .as_u64()
        .unwrap_or(0);
    w.kubectl(&["annotate", "npt", "annot", "unrelated=touch"]);
    let s2 = wait_status(&api, "annot", MINUTE, "steady", ready).await;
    assert_eq!(s2.token_id, s.token_id);
    assert_eq!(
        w.admin("calls").await["POST /api/v1/user/pa_tokens"]
            .as_u64()
            .unwrap_or(0),
        calls_before
    );

    api.delete("annot", &DeleteParams::default()).await.unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("annot").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some());
    assert!(!w.pat_works(&tok3).await, "the current token is revoked");
    assert!(
        !w.pat_works(&tok1).await,
        "the token in its grace period is revoked"
    );
    assert!(w.live_marked(&uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// With Nuclia refusing every call (503) for 60 s, the operator backs off: its call count is
/// bounded, and it recovers once Nuclia answers again.
#[tokio::test]
async fn backs_off_while_nuclia_is_down() {
    let mut w = World::new("pt-backoff").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    let rule = serde_json::json!([{ "route": "*", "status": 503, "rate": 1.0 }]);
    let r = w
        .http
        .put(format!("{}/_fake/faults", w.fake.url))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("down", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(
        &api,
        "down",
        MINUTE,
        "Ready=False while Nuclia is down",
        |s| reason(s).is_some(),
    )
    .await;
    assert_eq!(reason(&s).as_deref(), Some("Transient"));
    let start = tokio::time::Instant::now();
    // The observation window itself (not a wait for a condition): one minute of refusals.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let calls = w.admin("calls").await;
    let total: u64 = calls
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.contains("/_fake/"))
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    println!(
        "calls to Nuclia during {:?} of refusals: {total}",
        start.elapsed()
    );
    // Backoff 1 s doubling to 5 s, and an interrupted mint waits out the intent grace (15 s)
    // before it is swept: far fewer than one call per second. Bound: 30.
    assert!(
        total <= 30,
        "{total} calls in a minute of refusals: backoff is not working"
    );
    w.http
        .delete(format!("{}/_fake/faults", w.fake.url))
        .send()
        .await
        .unwrap();
    wait_status(&api, "down", Duration::from_secs(90), "recovery", ready).await;
    w.assert_log_has_no_tokens().await;
}

/// A resource deleted without its finalizer (forced) leaves its token at Nuclia; the next
/// verification of another resource sharing the credential finds the marked orphan and revokes
/// it. Unmarked tokens (the login PAT itself) are never touched.
#[tokio::test]
async fn orphan_sweep_revokes_tokens_of_vanished_resources() {
    let mut w = World::new("pt-orphan").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("gone", ""));
    w.kubectl_apply(&pt_manifest("stays", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&api, "gone", MINUTE, "Ready", ready).await;
    let stays = wait_status(&api, "stays", MINUTE, "Ready", ready).await;
    let gone_uid = uid_of(&api, "gone").await;
    assert_eq!(w.live_marked(&gone_uid).await.len(), 1);
    // Force the resource away without the operator's cleanup.
    w.kill_operator();
    let patch = serde_json::json!({"metadata": {"finalizers": null}});
    api.patch(
        "gone",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .unwrap();
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    w.start_operator(&[]);
    let swept = common::poll(MINUTE, || async {
        w.live_marked(&gone_uid).await.is_empty().then_some(())
    })
    .await;
    assert!(swept.is_some(), "the orphaned token was not revoked");
    let now = api.get("stays").await.unwrap().status.unwrap();
    assert_eq!(
        now.token_id, stays.token_id,
        "the other resource is untouched"
    );
    assert!(
        w.pat_works(&w.fake.bootstrap.pat.clone()).await,
        "an unmarked token was touched"
    );
    w.assert_log_has_no_tokens().await;
}

/// Two clusters given the same `--cluster-id` share a Nuclia account. Tokens another
/// installation marked with that cluster id, for resources this cluster does not have, are never
/// revoked, and the operator says so (an error log line, `nuclia_operator_foreign_installations`);
/// its own orphans are still swept, and tokens marked before installations had an id are left
/// alone when the cluster id was set by hand (another cluster could carry it).
#[tokio::test]
async fn a_shared_cluster_id_never_sweeps_the_other_clusters_tokens() {
    let mut w = World::new("pt-identity").await;
    let pat = w.fake.bootstrap.pat.clone();
    w.create_secret("login", "token", &pat).await;
    let ns = w.ns.clone();
    w.start_operator(&["--lease-namespace", &ns]);
    w.kubectl_apply(&pt_manifest("mine", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let mine = wait_status(&api, "mine", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "mine").await;
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(w.client.clone(), &ns);
    let ours = maps
        .get("nuclia-token-operator-installation")
        .await
        .expect("the installation ConfigMap, created at start")
        .data
        .and_then(|d| d.get("installationId").cloned())
        .expect("an installation id");
    let own = w
        .credential_view(mine.token_id.as_deref().unwrap())
        .await
        .unwrap();
    assert!(
        own["description_or_title"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{uid}@{ours}]")),
        "the marker names the installation: {own}"
    );

    // Tokens minted with the same login, marked as other installations mark them.
    let mint = |description: String| {
        let (w, pat) = (&w, pat.clone());
        async move {
            let body = serde_json::json!({"description": description, "days": 1});
            let r = w.mint_pat(&pat, body).await;
            r["id"].as_str().expect("a minted id").to_owned()
        }
    };
    let vanished = || uuid::Uuid::new_v4().to_string();
    let foreign = mint(format!(
        "other cluster [nto:test-cluster/{ns}/{}@0ther1nstall]",
        vanished()
    ))
    .await;
    let legacy = mint(format!(
        "older version [nto:test-cluster/{ns}/{}]",
        vanished()
    ))
    .await;
    let orphan = mint(format!(
        "ours, resource gone [nto:test-cluster/{ns}/{}@{ours}]",
        vanished()
    ))
    .await;

    let swept = common::poll(MINUTE, || async {
        (!w.credential_is_live(&orphan).await).then_some(())
    })
    .await;
    assert!(swept.is_some(), "this installation's orphan was not swept");
    let addr = common::operator::served_addr(&w.log_text()).expect("the metrics address");
    let reported = common::poll(MINUTE, || async {
        metrics_text(&w, addr)
            .await?
            .lines()
            .any(|l| l == "nuclia_operator_foreign_installations 1")
            .then_some(())
    })
    .await;
    assert!(reported.is_some(), "the other installation was not counted");
    let log = w.log_text();
    assert!(
        log.contains("another installation marks tokens with this cluster id")
            && log.contains("0ther1nstall"),
        "no error names the other installation; see {}",
        w.log.display()
    );
    assert!(
        w.credential_is_live(&foreign).await,
        "another installation's token was revoked"
    );
    assert!(
        w.credential_is_live(&legacy).await,
        "a token marked before installations had an id was revoked under a hand-set cluster id"
    );

    api.delete("mine", &DeleteParams::default()).await.unwrap();
    assert!(gone_within(&api, "mine", MINUTE).await, "mine never went");
    assert!(
        w.live_marked(&uid).await.is_empty(),
        "mine's token survived"
    );
    for id in [&foreign, &legacy] {
        w.admin_post(&format!("revoke/{id}"), serde_json::json!({}))
            .await;
    }
    w.assert_log_has_no_tokens().await;
}

/// Backup and restore: the resource (spec only, as restores usually bring it) and its Secret
/// (without owner reference or finalizer, as docs/backup-restore.md says) come back after both
/// were lost without the operator's cleanup. The new resource adopts the Secret's token: nothing
/// is minted, consumers keep their credential, the Secret is taken over; the orphan sweep leaves
/// the token alone although its marker names the old UID (a status records it); it rotates and
/// is revoked like any other, and deleting the resource revokes everything.
#[tokio::test]
async fn a_restored_secret_is_adopted_without_a_new_mint() {
    let mut w = World::new("pt-restore").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let manifest = pt_manifest(
        "r",
        "  secret: {name: r-token}\n  rotation: {revokePreviousAfter: 2s}\n",
    );
    w.kubectl_apply(&manifest);
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let before = wait_status(&api, "r", MINUTE, "Ready", ready).await;
    let token_id = before.token_id.clone().unwrap();
    let old_uid = uid_of(&api, "r").await;

    // The disaster, then the restore: the Secret as backed up, then the spec.
    let backup = w.lose_without_cleanup(&api, "r", "r-token").await;
    w.restore_secret(&backup).await;
    w.kubectl_apply(&manifest);
    let mints = w.calls_to("POST /api/v1/user/pa_tokens").await;
    w.start_operator(&[]);
    let after = wait_status(&api, "r", MINUTE, "Ready after the restore", ready).await;
    let new_uid = uid_of(&api, "r").await;
    assert_ne!(new_uid, old_uid);
    assert_eq!(
        after.token_id.as_deref(),
        Some(token_id.as_str()),
        "the restored token is adopted"
    );
    assert_eq!(
        w.calls_to("POST /api/v1/user/pa_tokens").await,
        mints,
        "a token was minted although the restored one works"
    );
    let owners = w
        .secrets()
        .get("r-token")
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].uid, new_uid, "the Secret is taken over");
    assert!(
        w.event_reasons("r").await.iter().any(|r| r == "Adopted"),
        "an Adopted Event"
    );

    // Two verifications later (each lists the tokens and sweeps orphans) it is still alive.
    let lists = w.calls_to("GET /api/v1/user/pa_tokens").await;
    let listed = common::poll(MINUTE, || async {
        (w.calls_to("GET /api/v1/user/pa_tokens").await >= lists + 2).then_some(())
    })
    .await;
    assert!(listed.is_some(), "no verification after the adoption");
    assert!(
        w.credential_is_live(&token_id).await,
        "the orphan sweep revoked the adopted token"
    );

    // From now on it is like any other: rotated, then revoked after its grace.
    w.kubectl(&["annotate", "npt", "r", "nuclia.dev/rotate=after-restore"]);
    let rotated = wait_status(&api, "r", MINUTE, "rotated", |s| {
        ready(s) && s.token_id.as_deref() != Some(token_id.as_str())
    })
    .await;
    let revoked = common::poll(MINUTE, || async {
        (!w.credential_is_live(&token_id).await).then_some(())
    })
    .await;
    assert!(
        revoked.is_some(),
        "the adopted token was not revoked after its grace"
    );

    api.delete("r", &DeleteParams::default()).await.unwrap();
    assert!(gone_within(&api, "r", MINUTE).await, "r never went");
    assert!(
        !w.credential_is_live(rotated.token_id.as_deref().unwrap())
            .await,
        "the current token survived the deletion"
    );
    assert!(w.live_marked(&new_uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// A spec change that shapes the credential rotates it (with Events); a spec that the schema
/// accepts but cannot work says what to fix.
#[tokio::test]
async fn spec_changes_rotate_and_invalid_specs_explain() {
    let mut w = World::new("pt-spec").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("svc", ""));
    w.kubectl_apply(&pt_manifest("odd", "  renewBefore: 48h\n"));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "svc", MINUTE, "Ready", ready).await;
    let id1 = s.token_id.clone().unwrap();
    w.kubectl_apply(&pt_manifest("svc", "").replace("days: 1", "days: 2"));
    let s = wait_status(&api, "svc", MINUTE, "rotation after the spec change", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    assert!(
        s.previous_tokens.iter().any(|p| p.id == id1),
        "the old token gets its grace period"
    );
    let lifetime = s.not_after.unwrap() - s.issued_at.unwrap();
    assert!(
        lifetime >= chrono::Duration::hours(47),
        "days: 2 honoured: {lifetime}"
    );
    assert_eq!(s.observed_generation, Some(2));

    let odd = wait_status(&api, "odd", MINUTE, "InvalidSpec", |s| {
        reason(s).as_deref() == Some("InvalidSpec")
    })
    .await;
    let msg = &odd.condition("Ready").unwrap().message;
    assert!(
        msg.contains("renewBefore") && msg.contains("shorter"),
        "{msg}"
    );
    assert!(odd.token_id.is_none());

    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(w.client.clone(), &w.ns);
    let reasons = common::poll(MINUTE, || async {
        let list = events.list(&Default::default()).await.ok()?;
        let r: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        (r.iter().any(|x| x == "Rotated") && r.iter().any(|x| x == "InvalidSpec")).then_some(r)
    })
    .await;
    let reasons = reasons.expect("Events Rotated and InvalidSpec expected");
    // A first issue is told by the Ready condition alone: one write fewer per resource.
    assert!(
        !reasons.iter().any(|x| x == "Issued"),
        "no Event for a first issue: {reasons:?}"
    );
    w.assert_log_has_no_tokens().await;
}

// ---- issue 16: deletion always finishes, Orphan means orphan, revoke where it was minted,
// ---- Ready tells the truth, no credential in quoted upstream text, bounded mints.

use common::operator::{deletion_state, gone_within};
use k8s_openapi::api::core::v1::Namespace;
use serde_json::json;

/// A personal token in Secret `secret` with `auth` as its `spec.auth`.
fn pt_with_auth(name: &str, auth: &str, extra_spec: &str) -> String {
    pt_manifest(name, extra_spec).replace(
        "  auth: {secretRef: {name: login}}\n",
        &format!("  auth: {auth}\n"),
    )
}

/// Issue 16 (1): a `selfRenew` token whose bootstrap user token was revoked out of band is
/// deleted within a bound, its managed token revoked (with itself: a PAT may delete PATs).
#[tokio::test]
async fn issue16_self_renew_token_deletes_after_its_bootstrap_token_is_revoked() {
    let mut w = World::new("pt-selfdel").await;
    w.create_secret("login", "token", &w.fake.bootstrap.user_token.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_with_auth(
        "boot",
        "{secretRef: {name: login}, selfRenew: true}",
        "",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&api, "boot", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "boot").await;
    let managed = w
        .secret_value("boot", "token")
        .await
        .expect("managed token");
    assert!(w.pat_works(&managed).await, "the managed token works");
    let user_token_id = w
        .credential_id("user_token", "user token")
        .await
        .expect("the bootstrap user token");
    w.admin_post(&format!("revoke/{user_token_id}"), json!({}))
        .await;
    assert!(
        !w.pat_works(&w.fake.bootstrap.user_token.clone()).await,
        "the bootstrap user token is revoked"
    );

    api.delete("boot", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "boot", MINUTE).await,
        "still there 60 s after delete: {}",
        deletion_state(&api, "boot").await
    );
    assert!(
        !w.pat_works(&managed).await,
        "the managed token is still valid after delete"
    );
    assert!(
        w.live_marked(&uid).await.is_empty(),
        "tokens left at Nuclia after delete"
    );
    assert!(w.secrets().get_opt("boot").await.unwrap().is_none());
    w.assert_log_has_no_tokens().await;
}

/// Issue 16 (2): a resource whose first mint was refused (a login Nuclia does not know) minted
/// nothing, so it has nothing to revoke: it is deleted at once.
#[tokio::test]
async fn issue16_refused_first_mint_deletes_at_once() {
    let mut w = World::new("pt-refused").await;
    w.create_secret("login", "token", "not-a-nuclia-token-6f1d2e9a")
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("refused", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "refused", MINUTE, "Unauthorized", |s| {
        reason(s).as_deref() == Some("Unauthorized")
    })
    .await;
    assert!(s.token_id.is_none());
    let uid = uid_of(&api, "refused").await;

    let deleted = tokio::time::Instant::now();
    api.delete("refused", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        gone_within(&api, "refused", Duration::from_secs(20)).await,
        "still there 20 s after delete: {}",
        deletion_state(&api, "refused").await
    );
    println!("refused resource gone {:?} after delete", deleted.elapsed());
    assert!(w.all_marked(&uid).await.is_empty(), "nothing was minted");
    w.assert_log_has_no_tokens().await;
}

/// Issue 16 (3): deleting a namespace that holds a personal token and a KB key authenticated
/// by that token's Secret: the namespace goes away (the KB key is revoked first, then the
/// personal token), and both are revoked at Nuclia.
#[tokio::test]
async fn issue16_namespace_deletion_finishes_and_revokes_chained_credentials() {
    let mut w = World::new("ns-del").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("admin", "  secret: {name: admin-pat}\n"));
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: kb}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{secretRef: {{name: admin-pat}}}}\n"
    ));
    let pts: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&pts, "admin", MINUTE, "PAT Ready", ready).await;
    wait_status(&kbs, "kb", MINUTE, "KB key Ready", ready).await;
    let (pt_uid, kb_uid) = (uid_of(&pts, "admin").await, uid_of(&kbs, "kb").await);
    let pat = w.secret_value("admin-pat", "token").await.unwrap();
    let key = w.secret_value("kb", "token").await.unwrap();
    assert!(w.pat_works(&pat).await && w.kb_key_works(&kb_url, &key).await);

    let namespaces: Api<Namespace> = Api::all(w.client.clone());
    namespaces
        .delete(&w.ns, &DeleteParams::default())
        .await
        .unwrap();
    let deleted = tokio::time::Instant::now();
    let gone = gone_within(&namespaces, &w.ns, Duration::from_secs(90)).await;
    if !gone {
        let secrets: Vec<String> = w
            .secrets()
            .list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|s| {
                        format!(
                            "Secret {} finalizers {:?}",
                            s.metadata.name.as_deref().unwrap_or_default(),
                            s.metadata.finalizers
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let state = format!(
            "{}; {}; {secrets:?}",
            deletion_state(&pts, "admin").await,
            deletion_state(&kbs, "kb").await
        );
        panic!("namespace {} still Terminating after 90 s: {state}", w.ns);
    }
    println!("namespace gone {:?} after delete", deleted.elapsed());
    assert!(
        !w.kb_key_works(&kb_url, &key).await,
        "the KB key is still valid"
    );
    assert!(
        !w.pat_works(&pat).await,
        "the personal token is still valid"
    );
    assert!(w.live_marked(&kb_uid).await.is_empty());
    assert!(w.live_marked(&pt_uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// Issue 16 (5), personal token: `auth.secretRef` switched from user A's login to user B's is
/// a rotation; A's token is revoked (as A) after the grace, B's works.
#[tokio::test]
async fn issue16_switching_the_login_user_revokes_the_old_users_token() {
    let user_b_token = format!("user-b-token-{}", uuid::Uuid::new_v4().simple());
    let seed = serde_json::from_value(json!({
        "users": [{"email": "b@example.com", "token": user_b_token}]
    }))
    .expect("a fake seed with a second user (seed field `users`)");
    let mut w = World::with_fake(
        "pt-user",
        nuclia_fake::FakeConfig {
            seed,
            ..Default::default()
        },
    )
    .await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.create_secret("login-b", "token", &user_b_token).await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest(
        "who",
        "  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s1 = wait_status(&api, "who", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "who").await;
    let id1 = s1.token_id.clone().unwrap();
    let token1 = w.secret_value("who", "token").await.unwrap();

    w.kubectl(&[
        "patch",
        "npt",
        "who",
        "--type=merge",
        "-p",
        r#"{"spec":{"auth":{"secretRef":{"name":"login-b"}}}}"#,
    ]);
    let s2 = wait_status(&api, "who", MINUTE, "a token of user B", |s| {
        ready(s) && s.token_id.as_ref().is_some_and(|t| *t != id1)
    })
    .await;
    let id2 = s2.token_id.clone().unwrap();
    let token2 = w.secret_value("who", "token").await.unwrap();
    assert!(w.pat_works(&token2).await);
    let owner = |v: Option<serde_json::Value>| v.map(|c| c["owner"].clone());
    assert_ne!(
        owner(w.credential_view(&id1).await),
        owner(w.credential_view(&id2).await),
        "the new token belongs to the other user"
    );
    let revoked = common::poll(Duration::from_secs(30), || async {
        (!w.credential_is_live(&id1).await).then_some(())
    })
    .await;
    assert!(
        revoked.is_some(),
        "user A's token is still valid 30 s after the switch (grace 2 s); status: {:?}",
        api.get("who").await.unwrap().status
    );
    assert!(!w.pat_works(&token1).await);

    api.delete("who", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "who", MINUTE).await,
        "{}",
        deletion_state(&api, "who").await
    );
    assert!(!w.pat_works(&token2).await, "user B's token is revoked");
    assert!(w.live_marked(&uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// Issue 16 (6): Ready tells the truth. The login is revoked out of band, then the managed
/// Secret deleted: the re-issue fails, and Ready must say False (not "holds a valid token").
/// A working login again: a new token, Ready, and delete revokes everything.
#[tokio::test]
async fn issue16_ready_is_false_while_the_secret_cannot_be_restored() {
    let mut w = World::new("pt-truth").await;
    w.create_secret("login", "token", &w.fake.bootstrap.user_token.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest(
        "app",
        "  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s1 = wait_status(&api, "app", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "app").await;
    let id1 = s1.token_id.clone().unwrap();
    let login_id = w
        .credential_id("user_token", "user token")
        .await
        .expect("the bootstrap user token");
    w.admin_post(&format!("revoke/{login_id}"), json!({})).await;
    w.secrets()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let s = wait_status(
        &api,
        "app",
        Duration::from_secs(30),
        "Ready=False after the Secret was deleted and could not be restored",
        |s| reason(s).is_some_and(|r| r != "TokenValid"),
    )
    .await;
    println!("Ready=False reason {:?}", reason(&s));

    // A working login: the Secret is restored with a new token.
    let patch = json!({"stringData": {"token": w.fake.bootstrap.pat.clone()}});
    w.secrets()
        .patch(
            "login",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .unwrap();
    wait_status(&api, "app", MINUTE, "Ready with a new token", |s| {
        ready(s) && s.token_id.as_ref().is_some_and(|t| *t != id1)
    })
    .await;
    assert!(
        w.pat_works(&w.secret_value("app", "token").await.unwrap())
            .await
    );
    api.delete("app", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "app", MINUTE).await,
        "{}",
        deletion_state(&api, "app").await
    );
    assert!(w.live_marked(&uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// Issue 16 (7): the create call answers 400 with a body that quotes the request's
/// `Authorization` header. The login token appears nowhere: not in the resource (status,
/// annotations), its Events, or the operator log.
#[tokio::test]
async fn issue16_credentials_echoed_by_an_upstream_error_do_not_leak() {
    let mut w = World::new("pt-echo").await;
    let login = w.fake.bootstrap.pat.clone();
    w.create_secret("login", "token", &login).await;
    w.set_faults(json!([{"route": "POST /api/v1/user/pa_tokens", "echo_credentials": true}]))
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("echo", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&api, "echo", MINUTE, "Ready=False", |s| reason(s).is_some()).await;
    assert!(w.calls_to("POST /api/v1/user/pa_tokens").await >= 1);
    // The Event about the refusal may follow the status write: give it a bounded moment (the
    // scan below runs either way).
    common::poll(Duration::from_secs(15), || async {
        (!w.event_reasons("echo").await.is_empty()).then_some(())
    })
    .await;
    let obj = serde_json::to_string(&api.get("echo").await.unwrap()).unwrap();
    assert!(
        !obj.contains(&login),
        "the login token appears in the resource (status or metadata)"
    );
    assert!(
        !w.events_text().await.contains(&login),
        "the login token appears in an Event"
    );
    w.assert_log_has_no_tokens().await;

    // Every create was refused: nothing to revoke, the delete goes through.
    let uid = uid_of(&api, "echo").await;
    api.delete("echo", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "echo", MINUTE).await,
        "{}",
        deletion_state(&api, "echo").await
    );
    assert!(w.all_marked(&uid).await.is_empty(), "nothing was minted");
    assert!(
        !w.events_text().await.contains(&login),
        "the login token appears in an Event"
    );
    w.assert_log_has_no_tokens().await;
}

/// Issue 16 (8): Nuclia caps the lifetime at 1 hour while `days: 5` was asked. Over 60 s the
/// resource mints at most 2 tokens, `previousTokens` stays ≤ 5, a `LifetimeShortened` Event
/// says so, Ready=True.
#[tokio::test]
async fn issue16_a_shortened_lifetime_does_not_start_a_mint_loop() {
    let mut w = World::new("pt-cap").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.set_faults(json!([{"route": "POST /api/v1/user/pa_tokens", "cap_expires_secs": 3600}]))
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("cap", "").replace("days: 1", "days: 5"));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&api, "cap", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "cap").await;

    // The observation window: 60 s in which a mint loop would show (the poll ends early if so).
    let window = tokio::time::Instant::now();
    let looped = common::poll(MINUTE, || async {
        let minted = w.all_marked(&uid).await.len();
        let previous = api.get("cap").await.ok()?.status?.previous_tokens.len();
        (minted > 2 || previous > 5).then_some((minted, previous))
    })
    .await;
    if let Some((minted, previous)) = looped {
        panic!(
            "{minted} tokens minted ({previous} in previousTokens) {:?} after Ready with a 1 h cap",
            window.elapsed()
        );
    }
    let s = wait_status(&api, "cap", MINUTE, "Ready", ready).await;
    let lifetime = s.not_after.unwrap() - s.issued_at.unwrap();
    assert!(
        lifetime <= chrono::Duration::minutes(61),
        "status.notAfter is the granted expiry: lifetime {lifetime}"
    );
    assert!(s.renewal_time.unwrap() > s.issued_at.unwrap() + chrono::Duration::minutes(1));
    let message = &s.condition("Ready").unwrap().message;
    assert!(
        message.to_lowercase().contains("lifetime shortened"),
        "the Ready message says the lifetime was shortened: {message}"
    );
    let event = common::poll(Duration::from_secs(30), || async {
        w.event_reasons("cap")
            .await
            .iter()
            .any(|r| r == "LifetimeShortened")
            .then_some(())
    })
    .await;
    assert!(
        event.is_some(),
        "no LifetimeShortened Event: {:?}",
        w.event_reasons("cap").await
    );

    w.clear_faults().await;
    api.delete("cap", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "cap", MINUTE).await,
        "{}",
        deletion_state(&api, "cap").await
    );
    assert!(w.live_marked(&uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// The operator's /metrics page.
async fn metrics_text(w: &World, addr: std::net::SocketAddr) -> Option<String> {
    let r = w.http.get(format!("http://{addr}/metrics")).send().await;
    r.ok()?.text().await.ok()
}

/// One `nuclia_operator_cache_entries{cache}` value from the operator's /metrics.
async fn cache_entries(w: &World, addr: std::net::SocketAddr, cache: &str) -> Option<u64> {
    let text = metrics_text(w, addr).await?;
    let series = format!("nuclia_operator_cache_entries{{cache=\"{cache}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
}

/// The operator's own count of its `verb` requests for `resource` to the apiserver.
async fn kube_requests(
    w: &World,
    addr: std::net::SocketAddr,
    verb: &str,
    resource: &str,
) -> Option<u64> {
    let text = metrics_text(w, addr).await?;
    let series =
        format!("nuclia_operator_kube_requests_total{{verb=\"{verb}\",resource=\"{resource}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
}

/// Polls (a minute at most) until the operator's /metrics report `n` cached credentials;
/// panics with `why` and the last value seen otherwise.
async fn cached_credentials_become(w: &World, addr: std::net::SocketAddr, n: u64, why: &str) {
    let seen = common::poll(MINUTE, || async {
        (cache_entries(w, addr, "credentials").await? == n).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "{why}: not {n} cached credentials (credentials {:?})",
        cache_entries(w, addr, "credentials").await
    );
}

/// Issue 15: what the operator keeps per credential goes once no resource uses the credential.
/// A and B use two logins of one user: both credentials are cached. B and its login go: the
/// credential cache forgets B's login, A still works and is verified; A goes: its tokens are
/// revoked and the credential cache is empty.
#[tokio::test]
async fn caches_forget_a_credential_no_resource_uses() {
    let mut w = World::new("pt-caches").await;
    let body = json!({"description": "second login", "days": 1});
    let second = w.mint_pat(&w.fake.bootstrap.user_token, body).await;
    let second = second["token"].as_str().expect("a second login").to_owned();
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.create_secret("login-b", "token", &second).await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("a", ""));
    w.kubectl_apply(
        &pt_manifest("b", "").replace("secretRef: {name: login}", "secretRef: {name: login-b}"),
    );
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&api, "a", MINUTE, "Ready", ready).await;
    wait_status(&api, "b", MINUTE, "Ready", ready).await;
    let (a_uid, b_uid) = (uid_of(&api, "a").await, uid_of(&api, "b").await);
    let addr = common::operator::served_addr(&w.log_text()).expect("the metrics address");

    // Both logins cached (the gauges are published every 5 s in the harness). That they share
    // one list is shown by `controller::verify::tests::personal_lists_are_shared_by_user`.
    cached_credentials_become(&w, addr, 2, "two logins in use").await;
    // The operator counts its own apiserver requests (the benchmark's reads come from these):
    // it created the two Secrets, read the two logins and watches the resources.
    for (verb, resource, least) in [
        ("create", "secrets", 2),
        ("get", "secrets", 2),
        ("watch", "nucliapersonaltokens", 1),
        ("patch", "nucliapersonaltokens/status", 2),
    ] {
        let n = kube_requests(&w, addr, verb, resource).await;
        assert!(
            n.is_some_and(|n| n >= least),
            "{verb} {resource}: {n:?} requests counted, at least {least} expected"
        );
    }

    api.delete("b", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "b", MINUTE).await,
        "{}",
        deletion_state(&api, "b").await
    );
    assert!(w.live_marked(&b_uid).await.is_empty(), "B's tokens left");
    w.secrets()
        .delete("login-b", &DeleteParams::default())
        .await
        .unwrap();
    cached_credentials_become(&w, addr, 1, "a minute after B and its login went").await;
    // A is still verified with its own login.
    let list = "GET /api/v1/user/pa_tokens";
    let before = w.calls_to(list).await;
    let verified = common::poll(MINUTE, || async {
        (w.calls_to(list).await >= before + 2).then_some(())
    })
    .await;
    assert!(verified.is_some(), "A is no longer verified");
    assert!(ready(
        &api.get("a").await.unwrap().status.unwrap_or_default()
    ));

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "a", MINUTE).await,
        "{}",
        deletion_state(&api, "a").await
    );
    assert!(w.live_marked(&a_uid).await.is_empty(), "A's tokens left");
    cached_credentials_become(&w, addr, 0, "a minute after every resource went").await;
    w.assert_log_has_no_tokens().await;
}
