//! `NucliaKbApiKey` as a real operator process against the real kube-apiserver and `nuclia-fake`
//! over HTTP: rotation without an outage, adopted service accounts, role change, account
//! discovery, NUA-key auth, and a KB key whose account credential is a rotating
//! `NucliaPersonalToken`. Every test ends by scanning the operator's log for every token value
//! the fake minted.
//! (Issue and delete of a plain KB key, and the untrusted endpoint, are in `tests/cluster/operator.rs`;
//! repair, a crash between mint and record, an interrupted first issue, an abandoned deletion and
//! `Orphan` in `tests/cluster/every_kind.rs`, for every kind.)

use crate::common;

use std::time::Duration;

use common::operator::{HasStatus, Sampler, World, ready, reason, wait_kind_status, wait_status};
use kube::api::{Api, DeleteParams};
use nuclia_fake::FakeConfig;
use nuclia_token_operator::crd::{KbRole, NucliaKbApiKey, NucliaPersonalToken};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

fn kb_manifest(name: &str, kb_url: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: {name}}}\nspec:\n  kbUrl: {kb_url}\n{extra_spec}"
    )
}

/// A KB key authenticated by the PAT in Secret `login`.
fn kb_with_login(name: &str, kb_url: &str, extra_spec: &str) -> String {
    kb_manifest(
        name,
        kb_url,
        &format!("  auth: {{secretRef: {{name: login}}}}\n{extra_spec}"),
    )
}

async fn kb_api(w: &World) -> Api<NucliaKbApiKey> {
    Api::namespaced(w.client.clone(), &w.ns)
}

async fn uid_of(api: &Api<NucliaKbApiKey>, name: &str) -> String {
    api.get(name).await.unwrap().uid_str()
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let gone = common::poll(MINUTE, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "{name}: the finalizer never let it go");
}

/// The fake's service account `id`, if it exists.
async fn service_account(w: &World, id: &str) -> Option<Value> {
    w.admin("service_accounts")
        .await
        .as_array()?
        .iter()
        .find(|sa| sa["id"] == id)
        .cloned()
}

/// Whether credential `id` is live at the fake (neither revoked nor expired).
async fn credential_live(w: &World, id: &str) -> bool {
    w.admin("credentials")
        .await
        .as_array()
        .is_some_and(|a| a.iter().any(|c| c["id"] == id))
}

/// A reader service account someone made by hand through the API, in the KB at `kb_base`
/// (`{fake}/api/v1/account/{account}/kb/{kb}`); returns its id.
async fn hand_made_service_account(w: &World, kb_base: &str) -> String {
    let created: Value = w
        .http
        .post(format!("{kb_base}/service_accounts"))
        .bearer_auth(&w.fake.bootstrap.pat)
        .json(&json!({"title": "shared reader", "role": "SMEMBER"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"]
        .as_str()
        .expect("service account id")
        .to_owned()
}

/// The Secret's key and URL, as a consumer reads them.
async fn secret_key(w: &World, secret: &str) -> (String, String) {
    let token = w.secret_value(secret, "token").await.expect("Secret token");
    let url = w.secret_value(secret, "kbUrl").await.expect("Secret kbUrl");
    (token, url)
}

/// The role Nuclia reports for a KB key (`GET /api/authorizer/info`).
async fn key_role(w: &World, token: &str) -> Option<String> {
    let r = w
        .http
        .get(format!("{}/api/authorizer/info", w.fake.url))
        .header("X-NUCLIA-SERVICEACCOUNT", format!("Bearer {token}"))
        .send()
        .await
        .ok()?;
    let body: Value = r.json().await.ok()?;
    body["user"]["role"].as_str().map(String::from)
}

/// Two rotations (every 8 s) while a 200 ms sampler uses the Secret's key and URL: never
/// refused; the owned service account is reused; replaced keys are revoked after the grace.
#[tokio::test]
async fn kb_key_rotates_without_outage() {
    let mut w = World::new("kb-rot").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&kb_with_login(
        "rot",
        &kb_url,
        "  days: 1\n  renewBefore: 23h59m52s\n  rotation: {revokePreviousAfter: 3s}\n",
    ));
    let api = kb_api(&w).await;
    let first = wait_status(&api, "rot", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "rot").await;
    let sa = first.own.kb.clone().unwrap().service_account_id.unwrap();
    let (token, url) = secret_key(&w, "rot").await;
    assert_eq!(url, kb_url);
    assert!(w.kb_key_works(&url, &token).await);

    // As a pod would: `GET {kbUrl}` with the Secret's key.
    let sampler = Sampler::start(&w, "rot", |http, data| async move {
        let (Some(token), Some(url)) = (data.get("token"), data.get("kbUrl")) else {
            return false;
        };
        http.get(url)
            .header("X-NUCLIA-SERVICEACCOUNT", format!("Bearer {token}"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    });
    let id1 = first.token_id.clone().unwrap();
    let second = wait_status(&api, "rot", MINUTE, "first rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let id2 = second.token_id.clone().unwrap();
    assert!(
        second.previous_tokens.iter().any(|p| p.id == id1),
        "the old key waits out its grace period"
    );
    let third = wait_status(&api, "rot", MINUTE, "second rotation", |s| {
        ready(s) && s.token_id.as_ref().is_some_and(|t| *t != id1 && *t != id2)
    })
    .await;
    let settled = common::poll(Duration::from_secs(30), || async {
        let live = w.live_marked(&uid).await;
        let s = api.get("rot").await.ok()?.status?;
        (s.previous_tokens.is_empty() && live == vec![s.token_id.clone()?]).then_some(())
    })
    .await;
    let (n, bad) = sampler.finish().await;
    println!("kb rotation sampler: {n} samples, {bad} failures over two rotations");
    assert!(
        settled.is_some(),
        "replaced keys were not revoked after the grace period"
    );
    assert!(!credential_live(&w, &id1).await && !credential_live(&w, &id2).await);
    assert!(n > 20, "sampler ran {n} times");
    assert_eq!(
        bad, 0,
        "the Secret held a refused key in {bad} of {n} samples"
    );
    assert_eq!(
        third.own.kb.unwrap().service_account_id.as_deref(),
        Some(sa.as_str()),
        "rotation reuses the owned service account"
    );
    let (token, url) = secret_key(&w, "rot").await;
    assert!(w.kb_key_works(&url, &token).await);
    w.assert_log_has_no_tokens().await;
}

/// An adopted service account keeps existing after delete (its keys are revoked).
/// (`deletionPolicy: Orphan` is `every_kind_orphan_is_kept` in `tests/cluster/every_kind.rs`.)
#[tokio::test]
async fn kb_key_adopted_service_account_is_kept() {
    let mut w = World::new("kb-adopt").await;
    let pat = w.fake.bootstrap.pat.clone();
    w.create_secret("login", "token", &pat).await;
    let (acc, kb) = (
        w.fake.bootstrap.account_id.clone(),
        w.fake.bootstrap.kbs[0].id.clone(),
    );
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    // A service account someone made by hand, through the API.
    let adopted =
        hand_made_service_account(&w, &format!("{}/api/v1/account/{acc}/kb/{kb}", w.fake.url))
            .await;
    w.start_operator(&[]);
    w.kubectl_apply(&kb_with_login(
        "adopt",
        &kb_url,
        &format!("  serviceAccount: {{id: {adopted}}}\n"),
    ));
    let api = kb_api(&w).await;

    let s = wait_status(&api, "adopt", MINUTE, "Ready", ready).await;
    let loc = s.own.kb.clone().unwrap();
    assert_eq!(loc.service_account_id.as_deref(), Some(adopted.as_str()));
    assert!(
        !loc.service_account_owned,
        "an adopted account is not owned"
    );
    let key_id = s.token_id.clone().unwrap();
    let sa = service_account(&w, &adopted).await.unwrap();
    assert!(
        sa["keys"].as_array().unwrap().iter().any(|k| k == &key_id),
        "the key was minted in the adopted service account"
    );
    let (token, url) = secret_key(&w, "adopt").await;
    assert!(w.kb_key_works(&url, &token).await);

    api.delete("adopt", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "adopt").await;
    assert!(!w.kb_key_works(&url, &token).await, "the key is revoked");
    assert!(!credential_live(&w, &key_id).await);
    assert!(
        service_account(&w, &adopted).await.is_some(),
        "the adopted service account is kept"
    );
    assert!(w.secrets().get_opt("adopt").await.unwrap().is_none());
    w.assert_log_has_no_tokens().await;
}

/// SMEMBER → SCONTRIBUTOR: a new key under a new service account with the new role; the old
/// key is revoked after the grace period and the old owned service account deleted.
#[tokio::test]
async fn kb_key_role_change_moves_to_a_new_service_account() {
    let mut w = World::new("kb-role").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&kb_with_login(
        "role",
        &kb_url,
        "  role: SMEMBER\n  rotation: {revokePreviousAfter: 3s}\n",
    ));
    let api = kb_api(&w).await;
    let s1 = wait_status(&api, "role", MINUTE, "Ready", ready).await;
    let id1 = s1.token_id.clone().unwrap();
    let sa1 = s1.own.kb.clone().unwrap().service_account_id.unwrap();
    let (token1, url) = secret_key(&w, "role").await;
    assert_eq!(key_role(&w, &token1).await.as_deref(), Some("SMEMBER"));

    w.kubectl(&[
        "patch",
        "nkak",
        "role",
        "--type=merge",
        "-p",
        r#"{"spec":{"role":"SCONTRIBUTOR"}}"#,
    ]);
    let s2 = wait_kind_status(&api, "role", MINUTE, "re-issue with the new role", |s| {
        ready(s)
            && s.token_id.as_ref() != Some(&id1)
            && s.own.kb.as_ref().and_then(|k| k.role) == Some(KbRole::SCONTRIBUTOR)
    })
    .await;
    let sa2 = s2.own.kb.clone().unwrap().service_account_id.unwrap();
    assert_ne!(sa1, sa2, "a new service account for the new role");
    let sa = service_account(&w, &sa2)
        .await
        .expect("new service account");
    assert_eq!(sa["role"], "SCONTRIBUTOR");
    let (token2, url2) = secret_key(&w, "role").await;
    assert_eq!(url2, url);
    assert!(w.kb_key_works(&url2, &token2).await);
    assert_eq!(key_role(&w, &token2).await.as_deref(), Some("SCONTRIBUTOR"));

    let settled = common::poll(Duration::from_secs(30), || async {
        let s = api.get("role").await.ok()?.status?;
        let kb = s.own.kb.clone()?;
        (s.previous_tokens.is_empty()
            && kb.retired_service_accounts.is_empty()
            && service_account(&w, &sa1).await.is_none())
        .then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the old key and service account were not removed after the grace period; status: {:?}",
        api.get("role").await.unwrap().status
    );
    assert!(!credential_live(&w, &id1).await, "the old key is revoked");
    assert!(!w.kb_key_works(&url, &token1).await);
    assert!(w.kb_key_works(&url2, &token2).await);
    w.assert_log_has_no_tokens().await;
}

/// A second account the user belongs to (with its own KB), and one it does not (403).
fn discovery_fake(beta_account: &str, beta_kb: &str) -> FakeConfig {
    let seed = serde_json::from_value(json!({
        "accounts": [
            {"id": beta_account, "slug": "beta", "member": true,
             "kbs": [{"id": beta_kb, "slug": "beta-kb"}]},
            {"slug": "gamma", "member": false, "kbs": [{"slug": "gamma-kb"}]}
        ]
    }))
    .expect("seed");
    FakeConfig {
        seed,
        ..FakeConfig::default()
    }
}

/// The account from `spec.account` (slug) or discovered through every account's KBs; a wrong
/// `spec.account` is reported on Ready naming the field, even when another resource with the
/// same credential and KB has already discovered the right account.
#[tokio::test]
async fn kb_key_account_discovery() {
    let beta_account = uuid::Uuid::new_v4().to_string();
    let beta_kb = uuid::Uuid::new_v4().to_string();
    let mut w = World::with_fake("kb-disc", discovery_fake(&beta_account, &beta_kb)).await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let acme = w.fake.bootstrap.account_id.clone();
    let acme_slug = w.fake.bootstrap.account_slug.clone();
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let beta_url = format!("{}/api/v1/kb/{beta_kb}", w.fake.url);
    w.kubectl_apply(&kb_with_login("found", &kb_url, ""));
    w.kubectl_apply(&kb_with_login(
        "named",
        &kb_url,
        &format!("  account: {acme_slug}\n"),
    ));
    w.kubectl_apply(&kb_with_login("beta-found", &beta_url, ""));
    w.kubectl_apply(&kb_with_login("beta-named", &beta_url, "  account: beta\n"));
    let api = kb_api(&w).await;
    for (name, account, url) in [
        ("found", &acme, &kb_url),
        ("named", &acme, &kb_url),
        ("beta-found", &beta_account, &beta_url),
        ("beta-named", &beta_account, &beta_url),
    ] {
        let s = wait_status(&api, name, MINUTE, "Ready", ready).await;
        assert_eq!(
            s.own.kb.unwrap().account_id.as_deref(),
            Some(account.as_str()),
            "{name}: status.own.kb.accountId"
        );
        let (token, secret_url) = secret_key(&w, name).await;
        assert_eq!(&secret_url, url);
        assert!(w.kb_key_works(&secret_url, &token).await, "{name}");
    }

    // Wrong accounts, created after the right one was discovered for the same credential + KB.
    w.kubectl_apply(&kb_with_login("nosuch", &kb_url, "  account: nosuch\n"));
    w.kubectl_apply(&kb_with_login("elsewhere", &kb_url, "  account: beta\n"));
    for name in ["nosuch", "elsewhere"] {
        let s = wait_status(&api, name, MINUTE, "Ready=False", |s| reason(s).is_some()).await;
        let cond = s.condition("Ready").unwrap();
        assert!(
            cond.message.contains("spec.account"),
            "{name}: the message names spec.account: {} ({})",
            cond.message,
            cond.reason
        );
        assert!(s.token_id.is_none(), "{name}: no key issued");
    }
    w.assert_log_has_no_tokens().await;
}

/// A NUA key with KB-management rights as the account credential (`X-NUCLIA-NUAKEY`).
#[tokio::test]
async fn kb_key_with_nua_key_auth() {
    let mut w = World::new("kb-nua").await;
    w.create_secret("nua", "key", &w.fake.bootstrap.nua_key.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&kb_manifest(
        "nua",
        &kb_url,
        "  auth: {secretRef: {name: nua, key: key}, type: NuaKey}\n  secret: {name: nua-kb}\n",
    ));
    let api = kb_api(&w).await;
    let s = wait_status(&api, "nua", MINUTE, "Ready", ready).await;
    let kb = s.own.kb.clone().unwrap();
    assert_eq!(
        kb.account_id.as_deref(),
        Some(w.fake.bootstrap.account_id.as_str())
    );
    let sa = kb.service_account_id.unwrap();
    let (token, url) = secret_key(&w, "nua-kb").await;
    assert!(w.kb_key_works(&url, &token).await);
    let calls = w.admin("calls").await;
    assert!(
        calls["POST /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/keys"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "calls: {calls}"
    );
    api.delete("nua", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "nua").await;
    assert!(!w.kb_key_works(&url, &token).await, "the key is revoked");
    assert!(
        service_account(&w, &sa).await.is_none(),
        "the owned service account is deleted"
    );
    w.assert_log_has_no_tokens().await;
}

/// The KB key's account credential is the Secret of a `NucliaPersonalToken` that rotates every
/// 8 s; once the PAT the KB key was first issued with is revoked, the KB key still rotates on
/// request and is repaired, and stays Ready.
#[tokio::test]
async fn kb_key_follows_a_rotating_personal_token() {
    let mut w = World::new("kb-compose").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {name: admin}\nspec:\n  description: kb admin\n  days: 1\n  renewBefore: 23h59m52s\n  rotation: {revokePreviousAfter: 2s}\n  auth: {secretRef: {name: login}}\n  secret: {name: admin-pat}\n",
    );
    let pts: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let p1 = wait_status(&pts, "admin", MINUTE, "PAT Ready", ready).await;
    let pat1 = w.secret_value("admin-pat", "token").await.unwrap();
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&kb_manifest(
        "kb",
        &kb_url,
        "  auth: {secretRef: {name: admin-pat}}\n  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let api = kb_api(&w).await;
    let k1 = wait_status(&api, "kb", MINUTE, "KB key Ready", ready).await;
    let id1 = k1.token_id.clone().unwrap();

    // The PAT rotates and the one the KB key was issued with is revoked.
    let pid1 = p1.token_id.clone().unwrap();
    wait_status(&pts, "admin", MINUTE, "PAT rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&pid1)
    })
    .await;
    let revoked = common::poll(MINUTE, || async {
        (!w.pat_works(&pat1).await).then_some(())
    })
    .await;
    assert!(revoked.is_some(), "the first PAT was never revoked");

    w.kubectl(&["annotate", "nkak", "kb", "nuclia.dev/rotate=1"]);
    let k2 = wait_status(&api, "kb", MINUTE, "rotation with the new PAT", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1) && s.rotate_handled.as_deref() == Some("1")
    })
    .await;
    let id2 = k2.token_id.clone().unwrap();
    let (token, url) = secret_key(&w, "kb").await;
    assert!(w.kb_key_works(&url, &token).await);

    w.secrets()
        .delete("kb", &DeleteParams::default())
        .await
        .unwrap();
    let k3 = wait_status(&api, "kb", MINUTE, "repair with the current PAT", |s| {
        ready(s) && s.token_id.as_ref().is_some_and(|t| *t != id1 && *t != id2)
    })
    .await;
    let (token, url) = secret_key(&w, "kb").await;
    assert!(w.kb_key_works(&url, &token).await);
    // Replaced keys are revoked with whatever PAT is current by then.
    let uid = uid_of(&api, "kb").await;
    let settled = common::poll(Duration::from_secs(30), || async {
        let live = w.live_marked(&uid).await;
        let s = api.get("kb").await.ok()?.status?;
        (s.previous_tokens.is_empty() && live == vec![s.token_id.clone()?]).then_some(())
    })
    .await;
    assert!(settled.is_some(), "replaced KB keys are still live");
    let still = wait_status(&api, "kb", MINUTE, "Ready", ready).await;
    assert_eq!(still.token_id, k3.token_id);
    w.assert_log_has_no_tokens().await;
}

/// The first issue is recorded by the reconcile that minted it: no stale-resourceVersion
/// finalizer patch throws the status away, so the leak guard has nothing to adopt later, and
/// the status names the service account holding the key.
/// (Regression: the status of every first issue was lost and recovered 15 s later.)
#[tokio::test]
async fn kb_key_first_issue_is_recorded_at_once() {
    let mut w = World::new("kb-first").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let applied = tokio::time::Instant::now();
    w.kubectl_apply(&kb_with_login("first", &kb_url, ""));
    let api = kb_api(&w).await;
    let s = wait_status(&api, "first", MINUTE, "Ready", ready).await;
    println!("first KB key Ready after {:?}", applied.elapsed());
    let obj = api.get("first").await.unwrap();
    let intent = obj
        .metadata
        .annotations
        .unwrap_or_default()
        .get("nuclia.dev/issue-intent")
        .cloned()
        .expect("issue intent recorded");
    let nonce = intent.split_once(' ').unwrap().0.to_owned();
    assert_eq!(s.resolved_intent.as_deref(), Some(nonce.as_str()));
    let sa = s
        .own
        .kb
        .clone()
        .unwrap()
        .service_account_id
        .expect("service account");
    let holds = service_account(&w, &sa).await.unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| Some(k.as_str().unwrap()) == s.token_id.as_deref());
    assert!(holds, "status names the service account that holds the key");
    assert!(
        !w.log_text()
            .contains("adopted the token an interrupted issue left"),
        "the issue was recorded only through the leak guard; see {}",
        w.log.display()
    );
    w.assert_log_has_no_tokens().await;
}

/// The operator stopped after writing the Secret and before recording the status: on restart
/// the leak guard adopts the key in the Secret and records its service account, so a delete
/// revokes it and removes the service account.
/// A key minted into an adopted service account carries no marker; after a crash between the
/// mint and the Secret write, the leak guard still finds it by the service account and the exact
/// expiry the intent asked for, and revokes it. A key someone else made there is left alone.
#[tokio::test]
async fn kb_key_interrupted_issue_in_an_adopted_service_account_is_reported() {
    let mut w = World::new("kb-adopt-cut").await;
    let pat = w.fake.bootstrap.pat.clone();
    w.create_secret("login", "token", &pat).await;
    let (acc, kb) = (
        w.fake.bootstrap.account_id.clone(),
        w.fake.bootstrap.kbs[0].id.clone(),
    );
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let base = format!("{}/api/v1/account/{acc}/kb/{kb}", w.fake.url);
    let sa = hand_made_service_account(&w, &base).await;
    w.start_operator(&[]);
    w.kubectl_apply(&kb_with_login(
        "cut",
        &kb_url,
        &format!("  serviceAccount: {{id: {sa}}}\n"),
    ));
    let api = kb_api(&w).await;
    let first = wait_status(&api, "cut", MINUTE, "Ready", ready).await;
    let current = first.token_id.clone().unwrap();
    w.kill_operator();
    // What a crash right after the mint leaves: a key in the adopted account with the expiry the
    // intent asked for, and the intent; plus a key someone else made there meanwhile.
    let mint = |expires: &'static str| {
        let (http, url, pat) = (
            w.http.clone(),
            format!("{base}/service_account/{sa}/keys"),
            pat.clone(),
        );
        async move {
            let v: Value = http
                .post(url)
                .bearer_auth(&pat)
                .json(&json!({ "expires": expires }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["id"].as_str().expect("key id").to_owned()
        }
    };
    let leaked = mint("2028-01-02T03:04:05Z").await;
    let theirs = mint("2028-06-01T00:00:00Z").await;
    w.kubectl(&[
        "annotate",
        "nkak",
        "cut",
        "--overwrite",
        "nuclia.dev/issue-intent=0ddba11cafe0 2020-01-01T00:00:00Z 2028-01-02T03:04:05Z",
    ]);
    w.start_operator(&[]);
    let s = wait_status(&api, "cut", MINUTE, "intent resolved", |s| {
        ready(s) && s.resolved_intent.as_deref() == Some("0ddba11cafe0")
    })
    .await;
    assert_eq!(s.token_id.as_deref(), Some(current.as_str()));
    // Keys in an adopted service account carry no marker and the intent is the tenant's to
    // write (issue 26: a forged intent revoked another tenant's keys), so the key with the
    // intent's expiry is reported by id, not revoked; one with another expiry is not named.
    let reported = common::poll(MINUTE, || async {
        let events = w.events_text().await;
        (events.contains("RevokeAbandoned") && events.contains(&leaked)).then_some(events)
    })
    .await
    .expect("a RevokeAbandoned Event names the key the interrupted issue may have minted");
    assert!(
        !reported.contains(&theirs),
        "a key with another expiry is not named"
    );
    assert!(
        credential_live(&w, &leaked).await,
        "an unproven key is never revoked"
    );
    assert!(
        credential_live(&w, &theirs).await,
        "a key made by someone else is kept"
    );
    assert!(
        credential_live(&w, &current).await,
        "the current key is kept"
    );
    api.delete("cut", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "cut").await;
    assert!(
        !credential_live(&w, &current).await,
        "the current key is revoked"
    );
    assert!(
        credential_live(&w, &theirs).await,
        "deletion revokes only what the resource minted"
    );
    assert!(
        service_account(&w, &sa).await.is_some(),
        "an adopted service account is never deleted"
    );
    w.assert_log_has_no_tokens().await;
}

#[tokio::test]
async fn kb_key_adopted_after_interrupted_issue_keeps_its_service_account() {
    let mut w = World::new("kb-interrupt").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&kb_with_login("cut", &kb_url, ""));
    let api = kb_api(&w).await;
    let s = wait_status(&api, "cut", MINUTE, "Ready", ready).await;
    let (id, sa) = (
        s.token_id.clone().unwrap(),
        s.own.kb.clone().unwrap().service_account_id.unwrap(),
    );
    w.kill_operator();
    // What a crash between the Secret write and the status write leaves: an unresolved intent
    // and a status that knows nothing of the key.
    let blank = json!({"status": {"tokenId": null, "tokenHash": null, "issuedAt": null,
        "notAfter": null, "renewalTime": null, "nextRenewal": null, "resolvedIntent": null, "specHash": null,
        "kb": null, "conditions": null}});
    api.patch_status(
        "cut",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(blank),
    )
    .await
    .unwrap();
    w.kubectl(&[
        "annotate",
        "nkak",
        "cut",
        "--overwrite",
        "nuclia.dev/issue-intent=0badc0ffee00 2020-01-01T00:00:00Z",
    ]);
    assert!(
        api.get("cut")
            .await
            .unwrap()
            .status
            .unwrap()
            .token_id
            .is_none()
    );
    w.start_operator(&[]);
    let s = wait_status(&api, "cut", MINUTE, "Ready after restart", |s| {
        ready(s) && s.resolved_intent.as_deref() == Some("0badc0ffee00")
    })
    .await;
    assert_eq!(
        s.token_id.as_deref(),
        Some(id.as_str()),
        "the key was adopted"
    );
    let kb = s.own.kb.unwrap();
    assert_eq!(kb.service_account_id.as_deref(), Some(sa.as_str()));
    assert!(kb.service_account_owned);
    let (token, url) = secret_key(&w, "cut").await;
    assert!(w.kb_key_works(&url, &token).await);
    api.delete("cut", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "cut").await;
    assert!(!w.kb_key_works(&url, &token).await, "the key is revoked");
    assert!(
        service_account(&w, &sa).await.is_none(),
        "the owned service account is deleted"
    );
    w.assert_log_has_no_tokens().await;
}

// ---- issue 16: deletion always finishes, revoke where it was minted, adopted accounts keep
// ---- their role.

use common::operator::{deletion_state, gone_within};

/// Issue 16 (2), KB key: the login was revoked before the first issue; the refused resource
/// minted nothing and is deleted at once.
#[tokio::test]
async fn issue16_kb_key_refused_first_mint_deletes_at_once() {
    let mut w = World::new("kb-refused").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    let pat_id = w
        .credential_id("pat", "bootstrap PAT")
        .await
        .expect("the bootstrap PAT");
    w.admin_post(&format!("revoke/{pat_id}"), json!({})).await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&kb_with_login("refused", &kb_url, ""));
    let api = kb_api(&w).await;
    let s = wait_status(&api, "refused", MINUTE, "Unauthorized", |s| {
        reason(s).as_deref() == Some("Unauthorized")
    })
    .await;
    assert!(s.token_id.is_none());
    let uid = uid_of(&api, "refused").await;
    api.delete("refused", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        gone_within(&api, "refused", Duration::from_secs(20)).await,
        "still there 20 s after delete: {}",
        deletion_state(&api, "refused").await
    );
    assert!(w.all_marked(&uid).await.is_empty(), "nothing was minted");
    w.assert_log_has_no_tokens().await;
}

/// Issue 16 (5), KB key: `kbUrl` moved to the account's other KB. After the grace the old key
/// is revoked in the old KB and the service account the operator created there is deleted;
/// the new key works on the new KB.
#[tokio::test]
async fn issue16_kb_key_moved_to_another_kb_revokes_in_the_old_one() {
    let mut w = World::new("kb-move").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let (old_url, new_url) = (
        w.fake.bootstrap.kbs[0].url.clone(),
        w.fake.bootstrap.kbs[1].url.clone(),
    );
    let new_kb = w.fake.bootstrap.kbs[1].id.clone();
    let rotation = "  rotation: {revokePreviousAfter: 2s}\n";
    w.kubectl_apply(&kb_with_login("mover", &old_url, rotation));
    let api = kb_api(&w).await;
    let s1 = wait_status(&api, "mover", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "mover").await;
    let id1 = s1.token_id.clone().unwrap();
    let sa1 = s1.own.kb.clone().unwrap().service_account_id.unwrap();
    let (token1, _) = secret_key(&w, "mover").await;
    assert!(w.kb_key_works(&old_url, &token1).await);

    w.kubectl_apply(&kb_with_login("mover", &new_url, rotation));
    let s2 = wait_kind_status(&api, "mover", MINUTE, "a key in the new KB", |s| {
        ready(s)
            && s.token_id.as_ref().is_some_and(|t| *t != id1)
            && s.own.kb.as_ref().and_then(|k| k.kb_id.as_deref()) == Some(new_kb.as_str())
    })
    .await;
    let sa2 = s2.own.kb.clone().unwrap().service_account_id.unwrap();
    assert_ne!(
        sa1, sa2,
        "the new key lives in a service account of the new KB"
    );
    let (token2, url2) = secret_key(&w, "mover").await;
    assert_eq!(url2, new_url);
    assert!(w.kb_key_works(&new_url, &token2).await, "the new key works");

    let settled = common::poll(Duration::from_secs(30), || async {
        (!credential_live(&w, &id1).await && service_account(&w, &sa1).await.is_none())
            .then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "30 s after the move (grace 2 s): old key live {}, old service account exists {}; status: {:?}",
        credential_live(&w, &id1).await,
        service_account(&w, &sa1).await.is_some(),
        api.get("mover").await.unwrap().status
    );
    assert!(
        !w.kb_key_works(&old_url, &token1).await,
        "the old key works"
    );
    assert!(w.kb_key_works(&new_url, &token2).await);

    api.delete("mover", &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(&api, "mover", MINUTE).await,
        "{}",
        deletion_state(&api, "mover").await
    );
    assert!(
        !w.kb_key_works(&new_url, &token2).await,
        "the key is revoked"
    );
    assert!(service_account(&w, &sa2).await.is_none());
    assert!(w.live_marked(&uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// Issue 16, found by reading the code: the KB was deleted at Nuclia (its keys went with it);
/// that does not block the resource's deletion (404 on the KB is "already revoked").
#[tokio::test]
async fn issue16_kb_deleted_at_nuclia_does_not_block_deletion() {
    let mut w = World::new("kb-gone").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let (kb_id, kb_url) = (
        w.fake.bootstrap.kbs[1].id.clone(),
        w.fake.bootstrap.kbs[1].url.clone(),
    );
    w.kubectl_apply(&kb_with_login("orphaned-kb", &kb_url, ""));
    let api = kb_api(&w).await;
    wait_status(&api, "orphaned-kb", MINUTE, "Ready", ready).await;
    let uid = uid_of(&api, "orphaned-kb").await;
    let (token, _) = secret_key(&w, "orphaned-kb").await;
    let deleted = w.admin_delete(&format!("kbs/{kb_id}")).await;
    assert!(
        deleted.is_success(),
        "the fake's DELETE /_fake/kbs/{{id}}: {deleted}"
    );
    assert!(!w.kb_key_works(&kb_url, &token).await);

    api.delete("orphaned-kb", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        gone_within(&api, "orphaned-kb", MINUTE).await,
        "still there 60 s after delete: {}",
        deletion_state(&api, "orphaned-kb").await
    );
    assert!(w.live_marked(&uid).await.is_empty());
    let reasons = w.event_reasons("orphaned-kb").await;
    assert!(
        !reasons.iter().any(|r| r == "RevokeAbandoned"),
        "a KB deleted at Nuclia counts as revoked, not abandoned: {reasons:?}"
    );
    w.assert_log_has_no_tokens().await;
}

/// Issue 16, found by reading the code: `spec.role` that differs from the role of the adopted
/// service account is not silently ignored: Ready=False, reason InvalidSpec naming
/// `spec.role`, Stalled=True, nothing minted; once fixed it is Ready (Stalled gone) and its
/// deletion revokes the key.
#[tokio::test]
async fn issue16_kb_key_role_differs_from_adopted_service_account() {
    let mut w = World::new("kb-adopt-role").await;
    let pat = w.fake.bootstrap.pat.clone();
    w.create_secret("login", "token", &pat).await;
    let (acc, kb) = (
        w.fake.bootstrap.account_id.clone(),
        w.fake.bootstrap.kbs[0].id.clone(),
    );
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let adopted =
        hand_made_service_account(&w, &format!("{}/api/v1/account/{acc}/kb/{kb}", w.fake.url))
            .await;
    w.start_operator(&[]);
    w.kubectl_apply(&kb_with_login(
        "writer",
        &kb_url,
        &format!("  role: SCONTRIBUTOR\n  serviceAccount: {{id: {adopted}}}\n"),
    ));
    let api = kb_api(&w).await;
    let s = wait_status(&api, "writer", MINUTE, "InvalidSpec", |s| {
        reason(s).as_deref() == Some("InvalidSpec")
    })
    .await;
    let cond = s.condition("Ready").unwrap();
    assert!(
        cond.message.contains("spec.role"),
        "the message names spec.role: {}",
        cond.message
    );
    assert!(s.token_id.is_none(), "no key minted");
    let sa = service_account(&w, &adopted).await.unwrap();
    assert!(
        sa["keys"].as_array().is_none_or(|k| k.is_empty()),
        "no key in the adopted service account"
    );
    // A terminal reason is also Stalled (kstatus); every condition names the generation.
    let generation = api.get("writer").await.unwrap().metadata.generation;
    let stalled = s.condition("Stalled").expect("a Stalled condition");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == generation)
    );

    // Fixed: Ready, Stalled gone, the conditions follow the new generation.
    w.kubectl(&[
        "patch",
        "nkak",
        "writer",
        "--type=merge",
        "-p",
        r#"{"spec": {"role": "SMEMBER"}}"#,
    ]);
    let s = wait_status(&api, "writer", MINUTE, "Ready once fixed", ready).await;
    let generation = api.get("writer").await.unwrap().metadata.generation;
    assert!(s.condition("Stalled").is_none(), "{:?}", s.conditions);
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == generation)
    );
    let key = s.token_id.clone().expect("a key in the adopted account");

    let uid = uid_of(&api, "writer").await;
    api.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        gone_within(&api, "writer", Duration::from_secs(20)).await,
        "{}",
        deletion_state(&api, "writer").await
    );
    assert!(!credential_live(&w, &key).await, "its key is revoked");
    assert!(w.all_marked(&uid).await.is_empty());
    assert!(
        service_account(&w, &adopted).await.is_some(),
        "the adopted service account is kept"
    );
    w.assert_log_has_no_tokens().await;
}

/// Backup and restore of a KB key: the resource (spec only) and its Secret (without owner
/// reference or finalizer) come back after both were lost without the operator's cleanup. The
/// key is adopted (nothing minted, consumers keep it); the next key goes to a service account of
/// the new resource and the adopted one is revoked after its grace. The service account the
/// earlier resource created is not the new resource's (its marker names the earlier one), so it
/// is left in place, holding no key (`docs/backup-restore.md`); deleting the resource revokes
/// and deletes what it made, and the earlier service account is deleted by hand.
#[tokio::test]
async fn kb_key_restored_secret_is_adopted() {
    let mut w = World::new("kb-restore").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let manifest = kb_with_login("kr", &kb_url, "  rotation: {revokePreviousAfter: 2s}\n");
    w.kubectl_apply(&manifest);
    let api = kb_api(&w).await;
    let before = wait_status(&api, "kr", MINUTE, "Ready", ready).await;
    let key_id = before.token_id.clone().unwrap();
    let old_sa = before.scope.clone().unwrap().service_account_id.unwrap();
    let old_uid = uid_of(&api, "kr").await;

    let backup = w.lose_without_cleanup(&api, "kr", "kr").await;
    w.restore_secret(&backup).await;
    w.kubectl_apply(&manifest);
    let minted = w.admin("service_accounts").await.as_array().unwrap().len();
    w.start_operator(&[]);
    let after = wait_status(&api, "kr", MINUTE, "Ready after the restore", ready).await;
    let new_uid = uid_of(&api, "kr").await;
    assert_ne!(new_uid, old_uid);
    assert_eq!(after.token_id.as_deref(), Some(key_id.as_str()), "adopted");
    assert_eq!(
        w.admin("service_accounts").await.as_array().unwrap().len(),
        minted,
        "nothing was created for the restored key"
    );
    let (key, url) = secret_key(&w, "kr").await;
    assert!(w.kb_key_works(&url, &key).await, "the consumers' key works");

    w.kubectl(&["annotate", "nkak", "kr", "nuclia.dev/rotate=after-restore"]);
    let rotated = wait_status(&api, "kr", MINUTE, "rotated", |s| {
        ready(s) && s.token_id.as_deref() != Some(key_id.as_str())
    })
    .await;
    let new_sa = rotated.scope.clone().unwrap().service_account_id.unwrap();
    assert_ne!(
        new_sa, old_sa,
        "the next key goes to the new resource's service account"
    );
    let released = common::poll(MINUTE, || async {
        (!credential_live(&w, &key_id).await).then_some(())
    })
    .await;
    assert!(released.is_some(), "the adopted key survived its grace");
    assert!(
        !w.kb_key_works(&url, &key).await,
        "the adopted key is refused"
    );
    let empty =
        |sa: Option<Value>| sa.is_some_and(|sa| sa["keys"].as_array().is_none_or(|k| k.is_empty()));
    assert!(
        empty(service_account(&w, &old_sa).await),
        "the earlier resource's service account is left in place, holding no key"
    );

    api.delete("kr", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "kr").await;
    assert!(!credential_live(&w, rotated.token_id.as_deref().unwrap()).await);
    assert!(service_account(&w, &new_sa).await.is_none());
    assert!(w.live_marked(&new_uid).await.is_empty());
    assert!(
        empty(service_account(&w, &old_sa).await),
        "deleting the new resource leaves the earlier service account alone"
    );
    // By hand, as docs/backup-restore.md says.
    let (acc, kb) = (&w.fake.bootstrap.account_id, &w.fake.bootstrap.kbs[0].id);
    let r = w
        .http
        .delete(format!(
            "{}/api/v1/account/{acc}/kb/{kb}/service_account/{old_sa}",
            w.fake.url
        ))
        .bearer_auth(&w.fake.bootstrap.pat)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "delete by hand: {}", r.status());
    assert!(service_account(&w, &old_sa).await.is_none());
    assert!(w.live_marked(&old_uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}
