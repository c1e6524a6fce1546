//! `spec.secret.additionalFormats` (`Env`, `NucliaConfig`) and `spec.secret.type`, with the
//! operator as a real process against the real kube-apiserver and `nuclia-fake` over HTTP: the
//! formats follow every new token, a hand edit of one is repaired without a new token, a
//! format removed takes its keys with it, and a type change replaces the Secret with the same
//! token. The last test runs the real `nuclia` SDK/CLI from PyPI (`tests/sdk/provision.sh`)
//! with the Secret's `config` file and no login step.
//!
//! Token values are never printed: comparisons go through `assert!` with messages that name
//! keys, never values, and the SDK's output is shown only with every known value masked.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::operator::{HasStatus, World, ready, wait_status};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use nuclia_token_operator::crd::{NucliaKbApiKey, NucliaPersonalToken, SECRET_FINALIZER};
use nuclia_token_operator::issuer::formats::{self, Consumer};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

fn pt_manifest(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {{name: {name}}}\nspec:\n  description: formats\n  auth: {{secretRef: {{name: login}}}}\n  rotation: {{revokePreviousAfter: 2s}}\n  secret: {secret}\n"
    )
}

fn kb_manifest(name: &str, kb_url: &str, secret: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: {name}}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{secretRef: {{name: login}}}}\n  rotation: {{revokePreviousAfter: 2s}}\n  secret: {secret}\n"
    )
}

/// The Secret's data as text (a missing Secret reads as empty).
async fn data(w: &World, name: &str) -> BTreeMap<String, String> {
    let Ok(Some(s)) = w.secrets().get_opt(name).await else {
        return BTreeMap::new();
    };
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Polls until the Secret's data satisfies `check`; panics naming `what` (never a value).
async fn wait_data<F>(w: &World, name: &str, what: &str, check: F) -> BTreeMap<String, String>
where
    F: Fn(&BTreeMap<String, String>) -> bool,
{
    let found = common::poll(MINUTE, || async {
        let d = data(w, name).await;
        check(&d).then_some(d)
    })
    .await;
    match found {
        Some(d) => d,
        None => {
            let keys: Vec<String> = data(w, name).await.into_keys().collect();
            panic!("Secret {name}: timed out waiting for {what}; its keys: {keys:?}")
        }
    }
}

/// Changes one data key as a person would (`kubectl edit`: another field manager).
async fn edit_key(w: &World, secret: &str, key: &str, value: &str) {
    let encoded = k8s_openapi::ByteString(value.as_bytes().to_vec());
    w.secrets()
        .patch(
            secret,
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {key: encoded}})),
        )
        .await
        .expect("edit the Secret");
}

/// Whether the data holds exactly what the formats say for `consumer` around the token under
/// `token_key` (and the token is not empty).
fn formats_match(
    d: &BTreeMap<String, String>,
    token_key: &str,
    consumer: &Consumer,
    config_key: Option<&str>,
    env: bool,
) -> bool {
    let Some(token) = d.get(token_key).filter(|t| !t.is_empty()) else {
        return false;
    };
    let env_ok = formats::env(consumer, token)
        .iter()
        .all(|(k, v)| (d.get(k) == Some(v)) == env);
    let config_ok =
        config_key.is_none_or(|k| d.get(k) == Some(&formats::nuclia_config(consumer, token)));
    env_ok && config_ok
}

async fn delete_and_check_revoked<K>(w: &World, api: &Api<K>, name: &str, uid: &str, secret: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &DeleteParams::default()).await.unwrap();
    assert!(
        common::operator::gone_within(api, name, MINUTE).await,
        "{name}: the finalizer never let it go"
    );
    assert!(
        w.live_marked(uid).await.is_empty(),
        "{name}: tokens left at Nuclia after delete"
    );
    assert!(
        w.secrets().get_opt(secret).await.unwrap().is_none(),
        "{name}: Secret {secret} left after delete"
    );
}

async fn delete_namespace(w: &World) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.client.clone());
    namespaces
        .delete(&w.ns, &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        common::operator::gone_within(&namespaces, &w.ns, 2 * MINUTE).await,
        "namespace {} never went",
        w.ns
    );
}

/// A personal token's `Env` and `NucliaConfig` keys hold its token through a rotation; hand
/// edits of them are repaired without a new token; a format removed takes its keys (a key
/// added by hand stays); deletion revokes.
#[tokio::test]
async fn personal_token_formats_follow_the_token() {
    let mut w = World::new("fmt-pt").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let both = "{name: pt-out, additionalFormats: [{type: Env}, {type: NucliaConfig}]}";
    w.kubectl_apply(&pt_manifest("pt", both));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "pt", MINUTE, "Ready", ready).await;
    let uid = api.get("pt").await.unwrap().uid_str();
    let me = Consumer::PersonalToken;
    let d = wait_data(&w, "pt-out", "both formats", |d| {
        formats_match(d, "token", &me, Some("config"), true)
    })
    .await;
    let keys: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(keys, ["NUCLIA_TOKEN", "config", "token"]);
    assert!(w.pat_works(&d["NUCLIA_TOKEN"]).await, "NUCLIA_TOKEN works");
    let config: Value = serde_json::from_str(&d["config"]).unwrap();
    assert!(
        config["token"] == d["token"].as_str(),
        "config holds the token"
    );

    // A rotation: every format follows the new token.
    let id1 = first.token_id.clone().unwrap();
    w.kubectl(&["annotate", "npt", "pt", "nuclia.dev/rotate=1"]);
    let second = wait_status(&api, "pt", MINUTE, "rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let old_token = d["token"].clone();
    let d2 = wait_data(&w, "pt-out", "formats of the new token", |d| {
        d.get("token").is_some_and(|t| *t != old_token)
            && formats_match(d, "token", &me, Some("config"), true)
    })
    .await;
    let id2 = second.token_id.clone().unwrap();

    // Hand edits of format keys are repaired, without a new token.
    edit_key(&w, "pt-out", "NUCLIA_TOKEN", "edited").await;
    edit_key(&w, "pt-out", "config", "{}").await;
    wait_data(&w, "pt-out", "the edits repaired", |d| {
        d.get("token") == d2.get("token") && formats_match(d, "token", &me, Some("config"), true)
    })
    .await;
    let s = api.get("pt").await.unwrap().status.unwrap();
    assert_eq!(s.token_id.as_deref(), Some(id2.as_str()), "no new token");
    assert!(
        !w.event_reasons("pt")
            .await
            .iter()
            .any(|r| r == "SecretRepaired"),
        "a format edit is a refresh, not a repair"
    );

    // A key added by hand stays; removing Env removes NUCLIA_TOKEN only; no new token.
    edit_key(&w, "pt-out", "note", "mine").await;
    w.kubectl_apply(&pt_manifest(
        "pt",
        "{name: pt-out, additionalFormats: [{type: NucliaConfig}]}",
    ));
    let d3 = wait_data(&w, "pt-out", "NUCLIA_TOKEN removed", |d| {
        !d.contains_key("NUCLIA_TOKEN")
    })
    .await;
    let keys: Vec<&str> = d3.keys().map(String::as_str).collect();
    assert_eq!(keys, ["config", "note", "token"]);
    assert!(
        formats_match(&d3, "token", &me, Some("config"), false) && d3["token"] == d2["token"],
        "config still follows the same token"
    );
    let s = wait_status(&api, "pt", MINUTE, "Ready after the change", ready).await;
    assert_eq!(s.token_id.as_deref(), Some(id2.as_str()), "no new token");
    // And none at all: config goes too.
    w.kubectl_apply(&pt_manifest("pt", "{name: pt-out}"));
    wait_data(&w, "pt-out", "config removed", |d| {
        d.keys().map(String::as_str).collect::<Vec<_>>() == ["note", "token"]
    })
    .await;

    delete_and_check_revoked(&w, &api, "pt", &uid, "pt-out").await;
    w.assert_log_has_no_tokens().await;
    delete_namespace(&w).await;
}

/// A KB key's `Env` keys (URL, KB id, zone, key) and its `NucliaConfig` file follow a
/// rotation; a hand edit of the key's env copy is repaired without a new key; moving the
/// config to another data key removes the old one; deletion revokes.
#[tokio::test]
async fn kb_key_formats_follow_the_key() {
    let mut w = World::new("fmt-kb").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let kb = Consumer::KbKey {
        url: kb_url.clone(),
        kb_id: w.fake.bootstrap.kbs[0].id.clone(),
        zone: w.fake.bootstrap.zone.clone(),
    };
    let both = "{name: kb-out, additionalFormats: [{type: Env}, {type: NucliaConfig}]}";
    w.kubectl_apply(&kb_manifest("kb", &kb_url, both));
    let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "kb", MINUTE, "Ready", ready).await;
    let uid = api.get("kb").await.unwrap().uid_str();
    let d = wait_data(&w, "kb-out", "both formats", |d| {
        formats_match(d, "token", &kb, Some("config"), true)
    })
    .await;
    let keys: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "NUCLIA_KB_API_KEY",
            "NUCLIA_KB_ID",
            "NUCLIA_KB_URL",
            "NUCLIA_ZONE",
            "config",
            "kbId",
            "kbUrl",
            "token",
            "zone"
        ]
    );
    assert_eq!(d["NUCLIA_KB_URL"], kb_url);
    assert_eq!(d["NUCLIA_ZONE"], "europe-1");
    assert!(
        w.kb_key_works(&d["NUCLIA_KB_URL"], &d["NUCLIA_KB_API_KEY"])
            .await,
        "the Env key works on the Env URL"
    );
    let config: Value = serde_json::from_str(&d["config"]).unwrap();
    assert_eq!(config["default"]["kbid"], d["kbId"].as_str());
    assert_eq!(config["kbs_token"][0]["url"], kb_url.as_str());
    assert_eq!(config["kbs_token"][0]["region"], "europe-1");
    assert!(
        config["kbs_token"][0]["token"] == d["token"].as_str(),
        "config holds the key"
    );

    // A rotation: the formats follow the new key.
    let id1 = first.token_id.clone().unwrap();
    w.kubectl(&["annotate", "nkak", "kb", "nuclia.dev/rotate=1"]);
    let second = wait_status(&api, "kb", MINUTE, "rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let old = d["token"].clone();
    let d2 = wait_data(&w, "kb-out", "formats of the new key", |d| {
        d.get("token").is_some_and(|t| *t != old)
            && formats_match(d, "token", &kb, Some("config"), true)
    })
    .await;
    let id2 = second.token_id.clone().unwrap();

    // A hand edit of the key's env copy is repaired, without a new key.
    edit_key(&w, "kb-out", "NUCLIA_KB_API_KEY", "edited").await;
    wait_data(&w, "kb-out", "the edit repaired", |d| {
        d.get("token") == d2.get("token") && formats_match(d, "token", &kb, Some("config"), true)
    })
    .await;

    // The config moves to another key: the old one goes, no new key.
    w.kubectl_apply(&kb_manifest(
        "kb",
        &kb_url,
        "{name: kb-out, additionalFormats: [{type: Env}, {type: NucliaConfig, key: nuclia.json}]}",
    ));
    let d3 = wait_data(&w, "kb-out", "config moved to nuclia.json", |d| {
        !d.contains_key("config") && formats_match(d, "token", &kb, Some("nuclia.json"), true)
    })
    .await;
    assert!(d3["token"] == d2["token"], "the same key");
    let s = wait_status(&api, "kb", MINUTE, "Ready after the change", ready).await;
    assert_eq!(s.token_id.as_deref(), Some(id2.as_str()), "no new key");
    assert!(
        !w.event_reasons("kb")
            .await
            .iter()
            .any(|r| r == "SecretRepaired"),
        "format changes are refreshes, not repairs"
    );

    delete_and_check_revoked(&w, &api, "kb", &uid, "kb-out").await;
    w.assert_log_has_no_tokens().await;
    delete_namespace(&w).await;
}

/// `spec.secret.type` is written on create; a change replaces the Secret (a new object: the
/// type is immutable) with the same token and the operator's finalizer, without a new token; a
/// built-in type whose keys the operator does not write is refused before anything changes.
#[tokio::test]
async fn secret_type_is_written_and_a_change_replaces_the_secret() {
    let mut w = World::new("fmt-type").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&pt_manifest(
        "typed",
        "{name: typed-out, type: nuclia.dev/token, additionalFormats: [{type: Env}]}",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "typed", MINUTE, "Ready", ready).await;
    let uid = api.get("typed").await.unwrap().uid_str();
    let old: Secret = w.secrets().get("typed-out").await.unwrap();
    assert_eq!(old.type_.as_deref(), Some("nuclia.dev/token"));
    let old_data = data(&w, "typed-out").await;

    // Back to the default type: replaced, same token, finalizer and owner.
    w.kubectl_apply(&pt_manifest(
        "typed",
        "{name: typed-out, additionalFormats: [{type: Env}]}",
    ));
    let replaced = common::poll(MINUTE, || async {
        let s = w.secrets().get_opt("typed-out").await.ok()??;
        (s.type_.as_deref() == Some("Opaque")).then_some(s)
    })
    .await
    .expect("the Secret is replaced with type Opaque");
    assert_ne!(replaced.metadata.uid, old.metadata.uid, "a new object");
    assert!(
        data(&w, "typed-out").await == old_data,
        "the same data and token"
    );
    let meta = &replaced.metadata;
    assert!(
        meta.finalizers
            .iter()
            .flatten()
            .any(|f| f == SECRET_FINALIZER),
        "the new Secret carries the finalizer"
    );
    assert!(
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true)),
        "the new Secret is owned by the resource"
    );
    let s = wait_status(&api, "typed", MINUTE, "Ready after the replacement", ready).await;
    assert_eq!(s.token_id, first.token_id, "no new token");
    assert!(
        !w.event_reasons("typed")
            .await
            .iter()
            .any(|r| r == "SecretRepaired"),
        "a type change is a refresh, not a repair"
    );

    // A type the apiserver would refuse without keys the operator does not write.
    w.kubectl_apply(&pt_manifest(
        "typed",
        "{name: typed-out, type: kubernetes.io/tls}",
    ));
    let stalled = |s: &nuclia_token_operator::crd::CredentialStatus| {
        s.condition("Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "InvalidSpec")
    };
    let refused = wait_status(&api, "typed", MINUTE, "Stalled InvalidSpec", stalled).await;
    // The token in the Secret stays valid meanwhile.
    assert!(
        ready(&refused),
        "still Ready: the Secret holds a valid token"
    );
    let msg = &refused.condition("Stalled").unwrap().message;
    assert!(msg.contains("kubernetes.io/tls"), "{msg}");
    let kept = w.secrets().get("typed-out").await.unwrap();
    assert_eq!(kept.metadata.uid, replaced.metadata.uid, "left as it was");
    assert!(data(&w, "typed-out").await == old_data, "same data");

    delete_and_check_revoked(&w, &api, "typed", &uid, "typed-out").await;
    w.assert_log_has_no_tokens().await;
    delete_namespace(&w).await;
}

// ---- the real SDK ----

/// The `nuclia` SDK/CLI from PyPI in a cached virtualenv (`tests/sdk/provision.sh`): fails the
/// test, never skips it, when it cannot be installed.
fn sdk_venv() -> PathBuf {
    let out = Command::new(common::repo_root().join("tests/sdk/provision.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run tests/sdk/provision.sh");
    assert!(
        out.status.success(),
        "installing the nuclia SDK from PyPI failed (see above); this test needs python3 with venv and the package index"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A home directory whose `~/.nuclia/config` is `config`, as a pod that mounts the Secret at
/// `~/.nuclia` sees it.
fn home_with(dir: &Path, config: &str) -> PathBuf {
    let nuclia = dir.join(".nuclia");
    std::fs::create_dir_all(&nuclia).unwrap();
    std::fs::write(nuclia.join("config"), config).unwrap();
    nuclia.join("config")
}

/// Runs `args[0]` from the virtualenv with only `HOME` (and `FAKE_URL`) set, on a blocking
/// thread (the fake is served by this test's runtime); returns whether it succeeded and its
/// output with every value in `secrets` masked.
async fn run_sdk(
    venv: &Path,
    home: &Path,
    fake_url: &str,
    args: &[&str],
    secrets: &[String],
) -> (bool, String) {
    let mut cmd = Command::new(venv.join("bin").join(args[0]));
    cmd.args(&args[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("FAKE_URL", fake_url);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run the nuclia SDK");
    let mut text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        text = text.replace(s.as_str(), "<masked>");
    }
    (out.status.success(), text)
}

/// With a personal token's config: the SDK's user token is the PAT (the SDK's global API is
/// https-only, so the snippet points its base at the fake). Prints whether the token is valid
/// and the ids of the user's personal tokens.
const PAT_SNIPPET: &str = r#"
import os, nuclia
nuclia.GLOBAL_BASE = os.environ["FAKE_URL"]
from nuclia import sdk
auth = sdk.NucliaAuth()
print("valid:", auth._validate_user_token())
try:
    print("tokens:", " ".join(t.id for t in auth.list_personal_tokens()))
except Exception as e:
    print("refused:", type(e).__name__)
"#;

/// The real `nuclia` SDK/CLI (PyPI) reads the Secrets' `config` files with no login step:
/// `nuclia kb list` with a KB key's (the fake sees the key; the file is not rewritten), the
/// SDK's user-token calls with a personal token's; with a revoked key or token it is refused,
/// and with the file the operator writes after the re-issue it works again.
#[tokio::test]
async fn the_nuclia_sdk_uses_the_config_with_no_login() {
    let venv = sdk_venv();
    let mut w = World::new("fmt-sdk").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let config_only = "{name: SECRET, additionalFormats: [{type: NucliaConfig}]}";
    w.kubectl_apply(&kb_manifest(
        "kb",
        &kb_url,
        &config_only.replace("SECRET", "kb-out"),
    ));
    w.kubectl_apply(&pt_manifest("pt", &config_only.replace("SECRET", "pt-out")));
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let pts: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let kb1 = wait_status(&kbs, "kb", MINUTE, "Ready", ready).await;
    let pt1 = wait_status(&pts, "pt", MINUTE, "Ready", ready).await;
    let (kb_uid, pt_uid) = (
        kbs.get("kb").await.unwrap().uid_str(),
        pts.get("pt").await.unwrap().uid_str(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let fake = w.fake.url.clone();
    let masked = common::operator::minted_values(&w.http, &fake).await;

    // The KB key: `nuclia kb list` on the default KB, authenticated by the key.
    let kb_home = tmp.path().join("kb");
    let kb_data = data(&w, "kb-out").await;
    let file = home_with(&kb_home, &kb_data["config"]);
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    w.admin_post("calls/reset", json!({})).await;
    let (ok, out) = run_sdk(&venv, &kb_home, &fake, &["nuclia", "kb", "list"], &masked).await;
    assert!(ok, "nuclia kb list failed:\n{out}");
    let by_key = w.admin("calls?by=credential").await;
    let key_id = kb1.token_id.clone().unwrap();
    assert!(
        by_key[&key_id].as_u64().unwrap_or(0) >= 1,
        "the fake saw the key: {by_key}"
    );
    assert!(w.calls_to("GET /api/v1/kb/{kb_id}/resources").await >= 1);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        before,
        "the SDK did not rewrite the config (a read-only mount works)"
    );

    // The personal token: the SDK's user token.
    let pt_home = tmp.path().join("pt");
    home_with(&pt_home, &data(&w, "pt-out").await["config"]);
    let pat_id = pt1.token_id.clone().unwrap();
    let (ok, out) = run_sdk(
        &venv,
        &pt_home,
        &fake,
        &["python", "-c", PAT_SNIPPET],
        &masked,
    )
    .await;
    assert!(
        ok && out.contains("valid: True") && out.contains(&pat_id),
        "the SDK did not use the PAT:\n{out}"
    );

    // Revoked out of band: the SDK is refused with the old files...
    w.admin_post(&format!("revoke/{key_id}"), json!({})).await;
    w.admin_post(&format!("revoke/{pat_id}"), json!({})).await;
    let (ok, out) = run_sdk(&venv, &kb_home, &fake, &["nuclia", "kb", "list"], &masked).await;
    assert!(!ok, "a revoked key still listed the KB:\n{out}");
    let (_, out) = run_sdk(
        &venv,
        &pt_home,
        &fake,
        &["python", "-c", PAT_SNIPPET],
        &masked,
    )
    .await;
    assert!(
        out.contains("valid: False"),
        "a revoked PAT still valid:\n{out}"
    );

    // ...and works with the file the operator writes after re-issuing.
    wait_status(&kbs, "kb", MINUTE, "a new key", |s| {
        ready(s) && s.token_id.as_ref() != Some(&key_id)
    })
    .await;
    let kb = Consumer::KbKey {
        url: kb_url.clone(),
        kb_id: w.fake.bootstrap.kbs[0].id.clone(),
        zone: w.fake.bootstrap.zone.clone(),
    };
    let fresh = wait_data(&w, "kb-out", "the config of the new key", |d| {
        d.get("token") != kb_data.get("token")
            && formats_match(d, "token", &kb, Some("config"), false)
    })
    .await;
    home_with(&kb_home, &fresh["config"]);
    let masked_now = common::operator::minted_values(&w.http, &fake).await;
    let (ok, out) = run_sdk(
        &venv,
        &kb_home,
        &fake,
        &["nuclia", "kb", "list"],
        &masked_now,
    )
    .await;
    assert!(ok, "nuclia kb list failed with the new key:\n{out}");

    delete_and_check_revoked(&w, &kbs, "kb", &kb_uid, "kb-out").await;
    delete_and_check_revoked(&w, &pts, "pt", &pt_uid, "pt-out").await;
    w.assert_log_has_no_tokens().await;
    delete_namespace(&w).await;
}
