//! `NucliaNuaKey` (issue 13) as a real operator process against the real kube-apiserver and
//! `nuclia-fake` over HTTP: issue, rotation without an outage (a new NUA client per key, the
//! old client deleted after the grace), deletion, hostile inputs, the orphan sweep, a change of
//! account, and the chain PAT → NUA key → KB key. Every test deletes what it created, checks it
//! is revoked, and scans the operator's log for every token value minted. (Repair, upstream
//! revocation, a crash between mint and record, an interrupted first issue, an abandoned
//! deletion and `Orphan` are in `tests/cluster/every_kind.rs`, for every kind.)

use crate::common;

use std::time::Duration;

use common::operator::{HasStatus, Sampler, World, ready, reason, wait_status};
use kube::api::{Api, DeleteParams};
use nuclia_token_operator::crd::{NucliaKbApiKey, NucliaNuaKey};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// A NUA key authenticated by the PAT in Secret `login`.
fn nua_manifest(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaNuaKey\nmetadata: {{name: {name}}}\nspec:\n  zone: europe-1\n  title: {name} client\n  contact: ops@example.com\n  auth: {{secretRef: {{name: login}}}}\n{extra_spec}"
    )
}

fn nua_api(w: &World) -> Api<NucliaNuaKey> {
    Api::namespaced(w.client.clone(), &w.ns)
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

/// The fake's NUA clients.
async fn nua_clients(w: &World) -> Vec<Value> {
    w.admin("nua_clients")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Ids of the NUA clients whose description carries `uid`'s marker.
async fn marked_clients(w: &World, uid: &str) -> Vec<String> {
    let mut ids: Vec<String> = nua_clients(w)
        .await
        .iter()
        .filter(|c| c["description"].as_str().is_some_and(|d| d.contains(uid)))
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// What `/api/authorizer/info` says about a NUA key (None when refused).
async fn nua_whoami(w: &World, token: &str) -> Option<Value> {
    let r = w
        .http
        .get(format!("{}/api/authorizer/info", w.fake.url))
        .header("X-NUCLIA-NUAKEY", format!("Bearer {token}"))
        .send()
        .await
        .ok()?;
    r.status().is_success().then_some(())?;
    r.json().await.ok()
}

async fn nua_works(w: &World, token: &str) -> bool {
    nua_whoami(w, token).await.is_some()
}

/// Issue: a NUA client marked for the resource, its key in the Secret with zone, account and
/// client id (and the Env and NucliaConfig formats); two rotations under a sampler (no failed
/// sample), each a new client, the old ones deleted after the grace; deletion deletes the last.
#[tokio::test]
async fn nua_key_issues_rotates_and_is_deleted() {
    let mut w = World::new("nua-rot").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&nua_manifest(
        "rot",
        "  description: ingestion\n  days: 1\n  renewBefore: 23h59m52s\n  rotation: {revokePreviousAfter: 3s}\n  secret:\n    additionalFormats: [{type: Env}, {type: NucliaConfig}]\n",
    ));
    let api = nua_api(&w);
    let first = wait_status(&api, "rot", MINUTE, "Ready", ready).await;
    let uid = api.get("rot").await.unwrap().uid_str();
    let id1 = first.token_id.clone().unwrap();
    let token = w.secret_value("rot", "token").await.unwrap();
    let who = nua_whoami(&w, &token).await.expect("the key works");
    assert_eq!(who["user"]["user_id"], id1.as_str());
    assert_eq!(
        w.secret_value("rot", "clientId").await.as_deref(),
        Some(id1.as_str())
    );
    assert_eq!(
        w.secret_value("rot", "account").await.as_deref(),
        Some(w.fake.bootstrap.account_id.as_str())
    );
    assert_eq!(
        w.secret_value("rot", "zone").await.as_deref(),
        Some("europe-1")
    );
    assert_eq!(
        w.secret_value("rot", "NUCLIA_NUA_KEY").await.as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        w.secret_value("rot", "NUCLIA_ZONE").await.as_deref(),
        Some("europe-1")
    );
    let config: Value =
        serde_json::from_str(&w.secret_value("rot", "config").await.unwrap()).unwrap();
    assert_eq!(config["default"]["nua"], id1.as_str());
    assert_eq!(config["nuas_token"][0]["client_id"], id1.as_str());
    assert_eq!(config["nuas_token"][0]["token"], token.as_str());
    assert_eq!(
        config["nuas_token"][0]["region"],
        format!("{}/", w.fake.url).as_str()
    );
    assert_eq!(marked_clients(&w, &uid).await, vec![id1.clone()]);
    let client = nua_clients(&w)
        .await
        .into_iter()
        .find(|c| c["client_id"] == id1.as_str())
        .unwrap();
    assert_eq!(client["title"], "rot client");
    assert!(
        client["description"]
            .as_str()
            .unwrap()
            .starts_with("ingestion [nto:")
    );

    // As a pod would: `/api/authorizer/info` with the Secret's key.
    let url = w.fake.url.clone();
    let sampler = Sampler::start(&w, "rot", move |http, data| {
        let url = url.clone();
        async move {
            let Some(token) = data.get("token") else {
                return false;
            };
            http.get(format!("{url}/api/authorizer/info"))
                .header("X-NUCLIA-NUAKEY", format!("Bearer {token}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    });
    let second = wait_status(&api, "rot", MINUTE, "first rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let id2 = second.token_id.clone().unwrap();
    wait_status(&api, "rot", MINUTE, "second rotation", |s| {
        ready(s) && s.token_id.as_ref().is_some_and(|t| *t != id1 && *t != id2)
    })
    .await;
    let settled = common::poll(Duration::from_secs(30), || async {
        let s = api.get("rot").await.ok()?.status?;
        (s.previous_tokens.is_empty()
            && marked_clients(&w, &uid).await == vec![s.token_id.clone()?])
        .then_some(())
    })
    .await;
    let (n, bad) = sampler.finish().await;
    println!("nua rotation sampler: {n} samples, {bad} failures over two rotations");
    assert!(
        settled.is_some(),
        "replaced NUA clients were not deleted after the grace"
    );
    assert!(n > 20, "sampler ran {n} times");
    assert_eq!(
        bad, 0,
        "the Secret held a refused key in {bad} of {n} samples"
    );
    assert!(!nua_works(&w, &token).await, "the first key is refused");

    let last = w.secret_value("rot", "token").await.unwrap();
    assert!(nua_works(&w, &last).await);
    api.delete("rot", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "rot").await;
    assert!(!nua_works(&w, &last).await, "the last key is refused");
    assert!(
        marked_clients(&w, &uid).await.is_empty(),
        "every client is deleted"
    );
    w.assert_log_has_no_tokens().await;
}

/// Hostile inputs: an unknown account (InvalidSpec, nothing minted), a credential that may not
/// manage NUA clients (a NUA key as `auth`: Unauthorized/forbidden, nothing minted). Both are
/// deleted at once (nothing to revoke).
#[tokio::test]
async fn nua_key_hostile_inputs_mint_nothing() {
    let mut w = World::new("nua-hostile").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.create_secret("nua", "token", &w.fake.bootstrap.nua_key.clone())
        .await;
    w.start_operator(&[]);
    // A zone that is not a zone name (a host elsewhere) is refused by the schema: no
    // resource, so nothing is ever sent there.
    let (ok, out) = w.kubectl_try_apply(
        &nua_manifest("evil", "").replace("zone: europe-1", "zone: evil.example.com"),
    );
    assert!(!ok && out.contains("spec.zone"), "{out}");
    w.kubectl_apply(&nua_manifest("acct", "  account: no-such-account\n"));
    w.kubectl_apply(
        &nua_manifest("norights", "").replace("secretRef: {name: login}", "secretRef: {name: nua}"),
    );
    let api = nua_api(&w);
    let s = wait_status(&api, "acct", MINUTE, "InvalidSpec", |s| {
        reason(s).as_deref() == Some("InvalidSpec")
    })
    .await;
    assert!(s.token_id.is_none());
    let s = wait_status(&api, "norights", MINUTE, "refused", |s| {
        reason(s).is_some_and(|r| r == "Unauthorized" || r == "Forbidden")
    })
    .await;
    assert!(s.token_id.is_none(), "{s:?}");
    assert!(nua_clients(&w).await.is_empty(), "nothing was created");
    for name in ["acct", "norights"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        wait_gone(&api, name).await;
    }
    assert!(nua_clients(&w).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// PAT → NUA key (with KB management) → KB key: the KB key is minted with the NUA key's
/// Secret (`auth.type: NuaKey`); deleting both revokes both.
#[tokio::test]
async fn nua_key_chain_pat_nua_kb() {
    let mut w = World::new("nua-chain").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&nua_manifest("mgr", "  allowKbManagement: true\n"));
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: search}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{secretRef: {{name: mgr, key: token}}, type: NuaKey}}\n"
    ));
    let nuas = nua_api(&w);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let nua_status = wait_status(&nuas, "mgr", MINUTE, "Ready", ready).await;
    let uid = nuas.get("mgr").await.unwrap().uid_str();
    wait_status(&kbs, "search", MINUTE, "Ready", ready).await;
    let nua_token = w.secret_value("mgr", "token").await.unwrap();
    let kb_token = w.secret_value("search", "token").await.unwrap();
    assert!(w.kb_key_works(&kb_url, &kb_token).await);
    let who = nua_whoami(&w, &nua_token).await.unwrap();
    assert_eq!(
        who["user"]["user_id"],
        nua_status.token_id.clone().unwrap().as_str()
    );
    // Delete the KB key first (it needs the NUA key to revoke), then the NUA key.
    kbs.delete("search", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&kbs, "search").await;
    assert!(
        !w.kb_key_works(&kb_url, &kb_token).await,
        "the KB key is revoked"
    );
    nuas.delete("mgr", &DeleteParams::default()).await.unwrap();
    wait_gone(&nuas, "mgr").await;
    assert!(!nua_works(&w, &nua_token).await, "the NUA key is revoked");
    assert!(marked_clients(&w, &uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// A login that may have leaked (issue 28, item 3): a chain login → PAT → NUA key (with KB
/// management) → KB key; the team puts a new value in the login Secret and marks it with
/// `nuclia.dev/reissue-minted`. Every credential down the chain re-issues, every old one is
/// refused by Nuclia at once, every Secret holds a working new one, the login Secret's Event
/// counts them; deleting everything revokes everything.
#[tokio::test]
async fn a_leaked_login_reissues_the_whole_chain() {
    let mut w = World::new("nua-leak").await;
    let bootstrap = w.fake.bootstrap.pat.clone();
    w.create_secret("login", "token", &bootstrap).await;
    w.start_operator(&[]);
    w.kubectl_apply(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {name: root}\nspec:\n  description: chain root\n  days: 1\n  auth: {secretRef: {name: login}}\n",
    );
    w.kubectl_apply(
        &nua_manifest("mgr", "  allowKbManagement: true\n")
            .replace("secretRef: {name: login}", "secretRef: {name: root}"),
    );
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: search}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{secretRef: {{name: mgr, key: token}}, type: NuaKey}}\n"
    ));
    let pats: Api<nuclia_token_operator::crd::NucliaPersonalToken> =
        Api::namespaced(w.client.clone(), &w.ns);
    let nuas = nua_api(&w);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let root = wait_status(&pats, "root", MINUTE, "Ready", ready).await;
    let mgr = wait_status(&nuas, "mgr", MINUTE, "Ready", ready).await;
    let search = wait_status(&kbs, "search", MINUTE, "Ready", ready).await;
    let uids = [
        pats.get("root").await.unwrap().uid_str(),
        nuas.get("mgr").await.unwrap().uid_str(),
        kbs.get("search").await.unwrap().uid_str(),
    ];
    let old = (
        w.secret_value("root", "token").await.unwrap(),
        w.secret_value("mgr", "token").await.unwrap(),
        w.secret_value("search", "token").await.unwrap(),
    );
    assert!(w.pat_works(&old.0).await && nua_works(&w, &old.1).await);
    assert!(w.kb_key_works(&kb_url, &old.2).await);

    // The team replaces the login and marks it.
    let fresh = w
        .mint_pat(
            &bootstrap,
            serde_json::json!({"description": "new login", "days": 30}),
        )
        .await;
    let fresh = fresh["token"].as_str().expect("a new PAT").to_owned();
    let secret = serde_json::json!({
        "metadata": {"annotations": {"nuclia.dev/reissue-minted": "leak-1"}},
        "stringData": {"token": fresh},
    });
    w.secrets()
        .patch(
            "login",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(secret),
        )
        .await
        .unwrap();
    let reissued = |old: &Option<String>| {
        let old = old.clone();
        move |s: &nuclia_token_operator::crd::CredentialStatus| {
            ready(s) && s.token_id != old && s.reissue_handled.as_deref() == Some("leak-1")
        }
    };
    wait_status(
        &pats,
        "root",
        MINUTE,
        "root re-issued",
        reissued(&root.token_id),
    )
    .await;
    wait_status(
        &nuas,
        "mgr",
        MINUTE,
        "mgr re-issued",
        reissued(&mgr.token_id),
    )
    .await;
    wait_status(
        &kbs,
        "search",
        MINUTE,
        "search re-issued",
        reissued(&search.token_id),
    )
    .await;
    // Every old credential is refused at once (no grace), every new one works.
    let refused = common::poll(MINUTE, || async {
        (!w.pat_works(&old.0).await
            && !nua_works(&w, &old.1).await
            && !w.kb_key_works(&kb_url, &old.2).await)
            .then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "an old credential of the chain still works"
    );
    let new = (
        w.secret_value("root", "token").await.unwrap(),
        w.secret_value("mgr", "token").await.unwrap(),
        w.secret_value("search", "token").await.unwrap(),
    );
    assert!(w.pat_works(&new.0).await, "the new PAT works");
    assert!(nua_works(&w, &new.1).await, "the new NUA key works");
    assert!(
        w.kb_key_works(&kb_url, &new.2).await,
        "the new KB key works"
    );
    // The mark went down the chain on the managed Secrets.
    let mark = |name: &'static str| {
        let secrets = w.secrets();
        async move {
            secrets
                .get(name)
                .await
                .unwrap()
                .metadata
                .annotations
                .unwrap_or_default()["nuclia.dev/reissue-minted"]
                .clone()
        }
    };
    assert_eq!(mark("root").await, "leak-1");
    assert_eq!(mark("mgr").await, "leak-1");
    // Events: one per resource, and the login Secret's running count.
    for (name, reasons) in [
        ("root", w.event_reasons("root").await),
        ("mgr", w.event_reasons("mgr").await),
        ("search", w.event_reasons("search").await),
    ] {
        assert!(
            reasons.iter().any(|r| r == "CredentialReissued"),
            "{name}: {reasons:?}"
        );
    }
    let counted = common::poll(Duration::from_secs(30), || async {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(w.client.clone(), &w.ns);
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ReissueProgress"))
            .filter_map(|e| e.note.clone())
            .find(|n| n.contains("1 credential(s)"))
    })
    .await;
    assert!(
        counted.is_some(),
        "the login Secret's Event counts the re-issue"
    );

    // Delete down the chain from the leaves: everything revoked.
    kbs.delete("search", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&kbs, "search").await;
    nuas.delete("mgr", &DeleteParams::default()).await.unwrap();
    wait_gone(&nuas, "mgr").await;
    pats.delete("root", &DeleteParams::default()).await.unwrap();
    wait_gone(&pats, "root").await;
    assert!(!w.kb_key_works(&kb_url, &new.2).await);
    assert!(!nua_works(&w, &new.1).await);
    assert!(!w.pat_works(&new.0).await);
    for uid in &uids {
        assert!(w.live_marked(uid).await.is_empty(), "{uid}: tokens left");
    }
    w.assert_log_has_no_tokens().await;
}

/// The real `nuclia` SDK (PyPI, `tests/sdk/provision.sh`) with the Secret's `config` file and
/// no login: its default NUA is the operator's key, and the SDK's own NUA validation (decode
/// the key's payload, call `/api/authorizer/info` at its `iss`) accepts it; after deletion it
/// is refused.
#[tokio::test]
async fn nua_key_config_is_the_sdks_default_nua() {
    let out = std::process::Command::new(common::repo_root().join("tests/sdk/provision.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run tests/sdk/provision.sh");
    assert!(out.status.success(), "installing the nuclia SDK failed");
    let venv = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut w = World::new("nua-sdk").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&nua_manifest(
        "sdk",
        "  secret: {additionalFormats: [{type: NucliaConfig}]}\n",
    ));
    let api = nua_api(&w);
    let id = wait_status(&api, "sdk", MINUTE, "Ready", ready)
        .await
        .token_id
        .clone()
        .unwrap();
    let uid = api.get("sdk").await.unwrap().uid_str();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".nuclia")).unwrap();
    std::fs::write(
        home.path().join(".nuclia/config"),
        w.secret_value("sdk", "config").await.unwrap(),
    )
    .unwrap();
    let snippet = r#"
from nuclia import sdk
from nuclia.data import get_config
cfg = get_config()
nua = cfg.get_nua(cfg.get_default_nua())
print("default:", nua.client_id)
print("validated:", sdk.NucliaAuth().validate_nua(nua.token)[0])
"#;
    let run = || {
        let mut cmd = std::process::Command::new(venv.join("bin/python"));
        cmd.args(["-c", snippet])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path());
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let out = run().await;
    assert!(
        out.contains(&format!("default: {id}")) && out.contains(&format!("validated: {id}")),
        "the SDK did not take the key as its default NUA: {out}"
    );
    api.delete("sdk", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "sdk").await;
    let out = run().await;
    assert!(
        out.contains("validated: None"),
        "a deleted key still validated: {out}"
    );
    assert!(marked_clients(&w, &uid).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// The whole chain as resources, PAT → NUA key → KB key (a `NucliaPersonalToken` whose Secret
/// authenticates a `NucliaNuaKey`, whose Secret authenticates a `NucliaKbApiKey`), then the
/// namespace is deleted: it goes away, the KB key first, and all three are revoked.
#[tokio::test]
async fn nua_key_chain_survives_namespace_deletion() {
    let mut w = World::new("nua-ns").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {name: admin}\nspec:\n  description: admin\n  auth: {secretRef: {name: login}}\n  secret: {name: admin-pat}\n",
    );
    w.kubectl_apply(
        &nua_manifest("mgr", "  allowKbManagement: true\n")
            .replace("secretRef: {name: login}", "secretRef: {name: admin-pat}"),
    );
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: kb}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{secretRef: {{name: mgr}}, type: NuaKey}}\n"
    ));
    let pts: Api<nuclia_token_operator::crd::NucliaPersonalToken> =
        Api::namespaced(w.client.clone(), &w.ns);
    let nuas = nua_api(&w);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&pts, "admin", MINUTE, "PAT Ready", ready).await;
    wait_status(&nuas, "mgr", MINUTE, "NUA key Ready", ready).await;
    wait_status(&kbs, "kb", MINUTE, "KB key Ready", ready).await;
    let uids = [
        pts.get("admin").await.unwrap().uid_str(),
        nuas.get("mgr").await.unwrap().uid_str(),
        kbs.get("kb").await.unwrap().uid_str(),
    ];
    let pat = w.secret_value("admin-pat", "token").await.unwrap();
    let nua = w.secret_value("mgr", "token").await.unwrap();
    let key = w.secret_value("kb", "token").await.unwrap();
    assert!(w.pat_works(&pat).await && nua_works(&w, &nua).await);
    assert!(w.kb_key_works(&kb_url, &key).await);

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.client.clone());
    namespaces
        .delete(&w.ns, &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        common::operator::gone_within(&namespaces, &w.ns, Duration::from_secs(90)).await,
        "namespace {} still Terminating after 90 s",
        w.ns
    );
    assert!(
        !w.kb_key_works(&kb_url, &key).await,
        "the KB key is still valid"
    );
    assert!(!nua_works(&w, &nua).await, "the NUA key is still valid");
    assert!(
        !w.pat_works(&pat).await,
        "the personal token is still valid"
    );
    for uid in &uids {
        assert!(w.live_marked(uid).await.is_empty(), "{uid}: left at Nuclia");
    }
    assert!(marked_clients(&w, &uids[1]).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// The orphan sweep covers NUA clients: A's resource is lost without the operator's cleanup
/// (operator stopped, finalizers forced off); after a restart, B (same login, same account)
/// verifies, and the sweep deletes A's client, never B's.
#[tokio::test]
async fn nua_key_orphan_sweep_deletes_clients_of_lost_resources() {
    let mut w = World::new("nua-sweep").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&nua_manifest("a", ""));
    w.kubectl_apply(&nua_manifest("b", ""));
    let api = nua_api(&w);
    let a = wait_status(&api, "a", MINUTE, "A Ready", ready)
        .await
        .token_id
        .clone()
        .unwrap();
    let b = wait_status(&api, "b", MINUTE, "B Ready", ready)
        .await
        .token_id
        .clone()
        .unwrap();
    let (a_uid, b_uid) = (
        api.get("a").await.unwrap().uid_str(),
        api.get("b").await.unwrap().uid_str(),
    );
    let a_token = w.secret_value("a", "token").await.unwrap();
    w.lose_without_cleanup(&api, "a", "a").await;
    assert!(nua_works(&w, &a_token).await, "nothing revoked it yet");
    w.start_operator(&[]);
    let swept = common::poll(MINUTE, || async {
        marked_clients(&w, &a_uid).await.is_empty().then_some(())
    })
    .await;
    assert!(swept.is_some(), "A's NUA client {a} was never swept");
    assert!(!nua_works(&w, &a_token).await);
    assert_eq!(marked_clients(&w, &b_uid).await, vec![b.clone()]);
    let b_token = w.secret_value("b", "token").await.unwrap();
    assert!(nua_works(&w, &b_token).await, "B's key is untouched");
    api.delete("b", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "b").await;
    assert!(!nua_works(&w, &b_token).await);
    assert!(nua_clients(&w).await.is_empty());
    w.assert_log_has_no_tokens().await;
}

/// Account discovery and a change of account: with two accounts and no `spec.account` the spec
/// is refused (InvalidSpec, naming the field, nothing minted); naming one issues there; moving
/// to the other rotates into it and deletes the old client in the old account after the grace.
#[tokio::test]
async fn nua_key_account_change_rotates_and_deletes_in_the_old_account() {
    let beta = uuid::Uuid::new_v4().to_string();
    let seed = serde_json::from_value(serde_json::json!({
        "accounts": [{"id": beta, "slug": "beta", "member": true}]
    }))
    .unwrap();
    let mut w = World::with_fake(
        "nua-acct",
        nuclia_fake::FakeConfig {
            seed,
            ..Default::default()
        },
    )
    .await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&nua_manifest(
        "mv",
        "  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let api = nua_api(&w);
    let s = wait_status(&api, "mv", MINUTE, "InvalidSpec", |s| {
        reason(s).as_deref() == Some("InvalidSpec")
    })
    .await;
    let msg = s.condition("Ready").unwrap().message.clone();
    assert!(msg.contains("spec.account"), "{msg}");
    assert!(nua_clients(&w).await.is_empty());
    let acme = w.fake.bootstrap.account_id.clone();
    w.kubectl_apply(&nua_manifest(
        "mv",
        "  account: acme\n  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let first = wait_status(&api, "mv", MINUTE, "Ready in acme", ready).await;
    let id1 = first.token_id.clone().unwrap();
    assert_eq!(
        w.secret_value("mv", "account").await.as_deref(),
        Some(acme.as_str())
    );
    w.kubectl_apply(&nua_manifest(
        "mv",
        "  account: beta\n  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let second = wait_status(&api, "mv", MINUTE, "rotated into beta", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    assert_eq!(
        second.scope.as_ref().and_then(|s| s.account_id.as_deref()),
        Some(beta.as_str())
    );
    assert_eq!(
        w.secret_value("mv", "account").await.as_deref(),
        Some(beta.as_str())
    );
    let old_gone = common::poll(Duration::from_secs(30), || async {
        let clients = nua_clients(&w).await;
        (!clients.iter().any(|c| c["client_id"] == id1.as_str())).then_some(clients)
    })
    .await
    .expect("the old client in acme was never deleted");
    assert!(
        old_gone.iter().all(|c| c["account_id"] == beta.as_str()),
        "{old_gone:?}"
    );
    let token = w.secret_value("mv", "token").await.unwrap();
    assert!(nua_works(&w, &token).await);
    api.delete("mv", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "mv").await;
    assert!(!nua_works(&w, &token).await);
    assert!(nua_clients(&w).await.is_empty());
    w.assert_log_has_no_tokens().await;
}
