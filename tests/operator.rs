//! The operator as a real process against the real kube-apiserver and `nuclia-fake` over HTTP:
//! issue, rotation without an outage, repair, drift, conflicts, bad credentials, KB keys,
//! untrusted endpoints, crash safety and deletion. Every test ends by scanning the operator's log
//! for every token value the fake minted.

mod common;

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
    let first_id = first.token_id.unwrap();
    let next = wait_status(&api, "boot", MINUTE, "a self-renewed rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&first_id)
    })
    .await;
    let token = w.secret_value("boot", "token").await.unwrap();
    assert!(w.pat_works(&token).await);
    assert!(next.token_id.is_some());
    w.assert_log_has_no_tokens().await;
}

/// Secret deleted, Secret edited, token revoked out of band: each gets a new working token.
#[tokio::test]
async fn repairs_secret_and_upstream_drift() {
    let mut w = World::new("pt-repair").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest(
        "app",
        "  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s1 = wait_status(&api, "app", MINUTE, "Ready", ready).await;
    let id1 = s1.token_id.clone().unwrap();

    w.secrets()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let s2 = wait_status(&api, "app", MINUTE, "repair after delete", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let id2 = s2.token_id.clone().unwrap();
    assert!(
        w.pat_works(&w.secret_value("app", "token").await.unwrap())
            .await
    );

    let patch = serde_json::json!({"stringData": {"token": "edited-by-hand"}});
    w.secrets()
        .patch(
            "app",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .unwrap();
    let s3 = wait_status(&api, "app", MINUTE, "repair after edit", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id2)
    })
    .await;
    let id3 = s3.token_id.clone().unwrap();
    assert!(
        w.pat_works(&w.secret_value("app", "token").await.unwrap())
            .await
    );

    w.admin_post(&format!("revoke/{id3}"), serde_json::json!({}))
        .await;
    wait_status(
        &api,
        "app",
        MINUTE,
        "re-issue after out-of-band revocation",
        |s| ready(s) && s.token_id.as_ref() != Some(&id3),
    )
    .await;
    assert!(
        w.pat_works(&w.secret_value("app", "token").await.unwrap())
            .await
    );
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
    let kb = s.kb.clone().unwrap();
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

/// SIGKILL right after the fake mints (latency after commit holds the answer back), restart:
/// the live tokens marked for the resource are exactly those its status references.
#[tokio::test]
async fn crash_between_mint_and_record_leaks_nothing() {
    let mut w = World::new("pt-kill").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    let rule = serde_json::json!([{ "route": "POST /api/v1/user/pa_tokens", "latency_ms": 4000, "latency_after_commit": true, "count": 1 }]);
    let r = w
        .http
        .put(format!("{}/_fake/faults", w.fake.url))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest("crashy", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let uid = common::poll(MINUTE, || async {
        Some(api.get_opt("crashy").await.ok()??.uid_str()).filter(|u| !u.is_empty())
    })
    .await
    .unwrap();
    // wait until the fake has minted (the answer is still held back), then kill
    let minted = common::poll(MINUTE, || async {
        (!w.live_marked(&uid).await.is_empty()).then_some(())
    })
    .await;
    assert!(minted.is_some(), "the fake never minted");
    w.kill_operator();
    let orphan = w.live_marked(&uid).await;
    w.start_operator(&[]);
    let s = wait_status(
        &api,
        "crashy",
        Duration::from_secs(90),
        "Ready after restart",
        ready,
    )
    .await;
    let settled = common::poll(MINUTE, || async {
        let live = w.live_marked(&uid).await;
        let mut referenced: Vec<String> = s.token_id.iter().cloned().collect();
        referenced.extend(s.previous_tokens.iter().map(|p| p.id.clone()));
        referenced.sort();
        (live == referenced).then_some(live)
    })
    .await;
    assert!(
        settled.is_some(),
        "live marked tokens differ from those the status references (orphan was {orphan:?})"
    );
    assert!(
        !settled.unwrap().iter().any(|id| orphan.contains(id))
            || s.token_id.as_ref() == orphan.first(),
        "the orphan was revoked or adopted"
    );
    w.assert_log_has_no_tokens().await;
}

/// `nuclia.dev/rotate` rotates once per new value; `nuclia.dev/revoke-now` rotates and revokes
/// the old token at once; `deletionPolicy: Orphan` leaves the token valid after delete.
#[tokio::test]
async fn annotations_and_orphan_policy() {
    let mut w = World::new("pt-annot").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest(
        "keep",
        "  deletionPolicy: Orphan\n  rotation: {revokePreviousAfter: 1h}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "keep", MINUTE, "Ready", ready).await;
    let id1 = s.token_id.unwrap();
    let tok1 = w.secret_value("keep", "token").await.unwrap();

    w.kubectl(&["annotate", "npt", "keep", "nuclia.dev/rotate=one"]);
    let s = wait_status(&api, "keep", MINUTE, "rotation on request", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let id2 = s.token_id.unwrap();
    assert_eq!(s.rotate_handled.as_deref(), Some("one"));
    assert!(
        w.pat_works(&tok1).await,
        "a rotated-out token stays valid during its grace period"
    );

    w.kubectl(&[
        "annotate",
        "npt",
        "keep",
        "nuclia.dev/revoke-now=glass",
        "--overwrite",
    ]);
    let s = wait_status(&api, "keep", MINUTE, "break-glass rotation", |s| {
        ready(s)
            && s.token_id.as_ref() != Some(&id2)
            && s.previous_tokens.iter().all(|p| p.id != id2)
    })
    .await;
    let tok3 = w.secret_value("keep", "token").await.unwrap();
    assert!(w.pat_works(&tok3).await);
    let uid = uid_of(&api, "keep").await;
    assert!(
        !w.live_marked(&uid).await.contains(&id2),
        "revoke-now revoked the old token at once"
    );
    // the same annotation value does not rotate again
    let calls_before = w.admin("calls").await["POST /api/v1/user/pa_tokens"]
        .as_u64()
        .unwrap_or(0);
    w.kubectl(&["annotate", "npt", "keep", "unrelated=touch"]);
    let s2 = wait_status(&api, "keep", MINUTE, "steady", ready).await;
    assert_eq!(s2.token_id, s.token_id);
    assert_eq!(
        w.admin("calls").await["POST /api/v1/user/pa_tokens"]
            .as_u64()
            .unwrap_or(0),
        calls_before
    );

    api.delete("keep", &DeleteParams::default()).await.unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("keep").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some());
    assert!(
        w.pat_works(&tok3).await,
        "Orphan leaves the token at Nuclia"
    );
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
    let id1 = s.token_id.unwrap();
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
