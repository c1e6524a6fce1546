//! Faults, crashes, bad input and hostile input (issue 7), against the real kube-apiserver,
//! `nuclia-fake` over HTTP and the operator as real processes:
//! - `hostile_input_table`: manifests refused at apply naming the field, and resources that are
//!   accepted but cannot work (`Ready=False` with a reason and a message that says what to fix),
//!   plus legal but awkward input (unicode, quotes, forged markers) that must work end to end;
//!   the operator stays up, healthy resources keep being served, nothing is written or minted
//!   that should not be.
//! - `nuclia_fault_table`: nuclia-fake answering malformed JSON, HTML pages, truncated, slow or
//!   dropped bodies, wrong content types, 5xx and 429: the reason is named, the others are
//!   served, and after the faults clear everything recovers with no credential leaked.
//! - `soak`: see its own documentation.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::operator::{HasStatus, World, ready, reason, wait_status};
use kube::api::Api;
use nuclia_token_operator::crd::{CredentialStatus, NucliaKbApiKey, NucliaPersonalToken};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pt,
    Kb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pt => "NucliaPersonalToken",
            Kind::Kb => "NucliaKbApiKey",
        }
    }
}

/// A manifest as JSON (which kubectl applies like YAML), so strings are quoted exactly.
fn manifest(kind: Kind, name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "nuclia.dev/v1alpha1",
        "kind": kind.name(),
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

/// `base` with the top-level keys of `extra` replaced (a `null` removes the key).
fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
    base
}

fn pt_spec(extra: Value) -> Value {
    merged(
        json!({"description": "chaos", "days": 1, "auth": {"secretRef": {"name": "login"}}}),
        extra,
    )
}

fn kb_spec(kb_url: &str, extra: Value) -> Value {
    merged(
        json!({"kbUrl": kb_url, "days": 1, "auth": {"secretRef": {"name": "login"}}}),
        extra,
    )
}

/// What a case must lead to.
#[derive(Debug)]
enum Expect {
    /// `kubectl apply` fails and its message contains this (the field).
    Rejected(&'static str),
    /// Accepted; `Ready=False` with this reason and a message containing every fragment.
    NotReady(&'static str, &'static [&'static str]),
    /// Legal input: `Ready=True`, and the fake's credential description contains this text.
    Ready(Option<String>),
}

struct Case {
    what: &'static str,
    kind: Kind,
    name: String,
    spec: Value,
    expect: Expect,
    /// For conflicts: the Secret that must stay untouched.
    guarded_secret: Option<&'static str>,
    /// `kubectl create` rather than `apply` (whose last-applied annotation would double a huge
    /// manifest past the apiserver's limit).
    create: bool,
}

fn case(what: &'static str, kind: Kind, name: &str, spec: Value, expect: Expect) -> Case {
    Case {
        what,
        kind,
        name: name.into(),
        spec,
        expect,
        guarded_secret: None,
        create: false,
    }
}

async fn status_of(w: &World, kind: Kind, name: &str) -> Option<(String, CredentialStatus)> {
    match kind {
        Kind::Pt => {
            let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
            let o = api.get_opt(name).await.ok()??;
            Some((o.uid_str(), o.status_ref().cloned().unwrap_or_default()))
        }
        Kind::Kb => {
            let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
            let o = api.get_opt(name).await.ok()??;
            Some((o.uid_str(), o.status_ref().cloned().unwrap_or_default()))
        }
    }
}

fn ready_message(s: &CredentialStatus) -> String {
    s.condition("Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Service accounts at the fake whose title carries `uid`.
async fn marked_service_accounts(w: &World, uid: &str) -> usize {
    w.admin("service_accounts")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|sa| sa["title"].as_str().is_some_and(|t| t.contains(uid)))
        .count()
}

/// Mints a PAT at the fake with the bootstrap PAT and revokes it out of band: a credential
/// that once was good.
async fn revoked_pat(w: &World) -> String {
    let r: Value = w
        .http
        .post(format!("{}/api/v1/user/pa_tokens", w.fake.url))
        .bearer_auth(&w.fake.bootstrap.pat)
        .json(&json!({
            "description": "soon revoked",
            "expiration_date": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, token) = (
        r["id"].as_str().unwrap().to_owned(),
        r["token"].as_str().unwrap().to_owned(),
    );
    w.admin_post(&format!("revoke/{id}"), json!({})).await;
    token
}

/// Every bad and hostile input at once in one namespace, with a healthy personal token and KB
/// key beside them. See the module documentation.
#[tokio::test]
async fn hostile_input_table() {
    let mut w = World::new("chaos-input").await;
    let pat = w.fake.bootstrap.pat.clone();
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.create_secret("login", "token", &pat).await;
    w.create_secret("empty", "token", "").await;
    w.create_secret("blank", "token", "  \n\t  ").await;
    w.create_secret("two-words", "token", "abc def").await;
    w.create_secret("other-key", "password", &pat).await;
    w.create_secret_bytes("binary", "token", &[0xff, 0xfe, 0x00, 0x80, 0x9f])
        .await;
    w.create_secret("nua", "token", &w.fake.bootstrap.nua_key.clone())
        .await;
    let revoked = revoked_pat(&w).await;
    w.create_secret("revoked", "token", &revoked).await;
    w.create_secret("taken", "token", "not-ours").await;
    // A namespace next door holds the only `elsewhere` Secret, with a working PAT in it.
    let other_ns = common::namespace(&w.client, "chaos-next-door").await;
    let next_door: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(w.client.clone(), &other_ns);
    next_door
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "elsewhere"}, "stringData": {"token": pat}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // A listener on a port nobody configured: a kbUrl there must get no connection at all.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stray_port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let hits = hits.clone();
        tokio::spawn(async move {
            while let Ok((_sock, _)) = listener.accept().await {
                hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }

    w.start_operator(&[]);
    // Healthy neighbours, Ready before the storm; they must stay so, untouched.
    w.kubectl_apply(&manifest(Kind::Pt, "healthy", pt_spec(json!({}))));
    w.kubectl_apply(&manifest(
        Kind::Kb,
        "healthy-kb",
        kb_spec(&kb_url, json!({})),
    ));
    let pts: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let healthy = wait_status(&pts, "healthy", MINUTE, "Ready", ready).await;
    let healthy_kb = wait_status(&kbs, "healthy-kb", MINUTE, "Ready", ready).await;
    let healthy_uid = pts.get("healthy").await.unwrap().uid_str();

    let secrets_before: BTreeMap<String, Option<String>> = w
        .secrets()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.name.unwrap(), s.metadata.resource_version))
        .collect();

    use Expect::*;
    use Kind::*;
    let env = InputEnv {
        ns: w.ns.clone(),
        fake_url: w.fake.url.clone(),
        kb_url: kb_url.clone(),
        other_ns: other_ns.clone(),
        stray_port,
        healthy_uid: healthy_uid.clone(),
    };
    let cases = input_cases(&env);
    let rejected = cases
        .iter()
        .filter(|c| matches!(c.expect, Rejected(_)))
        .count();
    let refused = cases
        .iter()
        .filter(|c| matches!(c.expect, NotReady(..)))
        .count();
    println!(
        "hostile input: {} cases ({rejected} refused at apply, {refused} Ready=False, {} legal)",
        cases.len(),
        cases.len() - rejected - refused
    );
    assert!(cases.len() >= 30);

    let mut failures = Vec::new();
    for c in &cases {
        let m = manifest(c.kind, &c.name, c.spec.clone());
        let (accepted, out) = if c.create {
            let out = common::kubectl(&["create", "-n", &w.ns, "-f", "-"], Some(&m));
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success(), text)
        } else {
            w.kubectl_try_apply(&m)
        };
        match (&c.expect, accepted) {
            (Rejected(field), false) if out.contains(field) => {}
            (Rejected(field), false) => {
                failures.push(format!("{}: refused without naming {field}: {out}", c.what))
            }
            (Rejected(_), true) => failures.push(format!("{}: accepted", c.what)),
            (_, false) => failures.push(format!("{}: refused at apply: {out}", c.what)),
            (_, true) => {}
        }
    }
    // Bad manifests leave nothing behind.
    for c in cases.iter().filter(|c| matches!(c.expect, Rejected(_))) {
        if status_of(&w, c.kind, &c.name).await.is_some() {
            failures.push(format!("{}: the refused resource exists", c.what));
        }
    }

    // Every accepted case reaches its outcome.
    let mut uids = BTreeMap::new();
    for c in &cases {
        let want: &dyn Fn(&CredentialStatus) -> bool = match &c.expect {
            Rejected(_) => continue,
            NotReady(r, _) => &move |s: &CredentialStatus| reason(s).as_deref() == Some(*r),
            Ready(_) => &ready,
        };
        let found = common::poll(MINUTE, || async {
            let (uid, s) = status_of(&w, c.kind, &c.name).await?;
            want(&s).then_some((uid, s))
        })
        .await;
        let Some((uid, s)) = found else {
            let last = status_of(&w, c.kind, &c.name).await.map(|(_, s)| s);
            failures.push(format!(
                "{} ({}): never reached {:?}; last Ready: {:?}",
                c.what,
                c.name,
                c.expect,
                last.as_ref().and_then(|s| s.condition("Ready").cloned())
            ));
            continue;
        };
        uids.insert(c.name.clone(), uid.clone());
        match &c.expect {
            NotReady(r, fragments) => {
                let msg = ready_message(&s);
                for f in *fragments {
                    if !msg.contains(f) {
                        failures.push(format!(
                            "{} ({r}): message does not say {f:?}: {msg}",
                            c.what
                        ));
                    }
                }
                if s.token_id.is_some() {
                    failures.push(format!("{}: a token id is recorded", c.what));
                }
            }
            Ready(Some(text)) => {
                let creds = w.admin("credentials").await;
                let id = s.token_id.clone().unwrap_or_default();
                let desc = creds
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["id"] == id)
                    .and_then(|c| c["description_or_title"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if !desc.starts_with(text.as_str()) || !desc.contains(&uid) {
                    failures.push(format!(
                        "{}: the description at Nuclia is {desc:?}, want {text:?} and the marker",
                        c.what
                    ));
                }
                let token = w.secret_value(&c.name, "token").await.unwrap_or_default();
                if !w.pat_works(&token).await {
                    failures.push(format!("{}: the Secret's token is refused", c.what));
                }
            }
            _ => {}
        }
    }

    // Nothing was minted, written or touched for the refused ones.
    for c in cases.iter().filter(|c| matches!(c.expect, NotReady(..))) {
        let Some(uid) = uids.get(&c.name) else {
            continue;
        };
        let minted = w.all_marked(uid).await;
        if !minted.is_empty() {
            failures.push(format!(
                "{}: {} credential(s) minted at Nuclia",
                c.what,
                minted.len()
            ));
        }
        if c.kind == Kb && marked_service_accounts(&w, uid).await > 0 {
            failures.push(format!("{}: a service account was created", c.what));
        }
        match c.guarded_secret {
            Some(name) => {
                let rv = w
                    .secrets()
                    .get(name)
                    .await
                    .unwrap()
                    .metadata
                    .resource_version;
                if secrets_before.get(name) != Some(&rv) {
                    failures.push(format!("{}: Secret {name} was modified", c.what));
                }
            }
            None => {
                if w.secrets().get_opt(&c.name).await.unwrap().is_some() {
                    failures.push(format!("{}: a Secret {} was written", c.what, c.name));
                }
            }
        }
    }
    // Pre-existing Secrets (credentials, foreign) are untouched, except the two healthy ones.
    for (name, rv) in &secrets_before {
        let now = w.secrets().get_opt(name).await.unwrap();
        let now_rv = now.and_then(|s| s.metadata.resource_version);
        if !name.starts_with("healthy") && &now_rv != rv && !name.starts_with("default-token") {
            failures.push(format!("Secret {name} was modified"));
        }
    }
    if hits.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        failures.push("the unconfigured port received a connection".into());
    }

    // The healthy neighbours were served throughout: same token, still Ready and working.
    let h = wait_status(&pts, "healthy", MINUTE, "still Ready", ready).await;
    let hk = wait_status(&kbs, "healthy-kb", MINUTE, "still Ready", ready).await;
    if h.token_id != healthy.token_id || hk.token_id != healthy_kb.token_id {
        failures.push("a healthy resource was re-issued during the storm".into());
    }
    let tok = w.secret_value("healthy", "token").await.unwrap();
    if !w.pat_works(&tok).await {
        failures.push("the healthy token is refused".into());
    }
    // (the forged description names the healthy resource's UID too: its token is not the
    // healthy one's, and the healthy one's is still the only one it has)
    let forged_id = status_of(&w, Pt, "ok-forged")
        .await
        .and_then(|(_, s)| s.token_id);
    let mut healthy_live = w.live_marked(&healthy_uid).await;
    healthy_live.retain(|id| Some(id) != forged_id.as_ref());
    if healthy_live != vec![h.token_id.clone().unwrap()] {
        failures.push("the healthy resource's live tokens changed".into());
    }
    if !w.operator_alive() {
        failures.push(format!("the operator exited; see {}", w.log.display()));
    }
    // Nothing interrupted an issue here (no faults, no kills): the leak guard had no work.
    let interrupted = w.log_text().matches("an interrupted issue left").count();
    if interrupted > 0 {
        failures.push(format!(
            "{interrupted} issue(s) were treated as interrupted without any fault; see {}",
            w.log.display()
        ));
    }
    for f in &failures {
        println!("FAILED: {f}");
    }
    w.assert_log_has_no_tokens().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// What the input table needs to know about its world.
struct InputEnv {
    ns: String,
    fake_url: String,
    kb_url: String,
    other_ns: String,
    stray_port: u16,
    healthy_uid: String,
}

const QUOTED: &str =
    "He said \"rotate\" — it's 'fine' \\o/ <b>&amp;</b> ${HOME} $(id) %s {{x}} ünïcødé 日本語 🚀";

/// 200 characters (the schema's maximum), 598 bytes.
fn max_unicode() -> String {
    "é日🚀".repeat(66) + "xy"
}

/// The table: one line per case (kept unformatted so that it reads as a table).
#[rustfmt::skip]
fn input_cases(e: &InputEnv) -> Vec<Case> {
    use Expect::*;
    use Kind::*;
    let kb_url = e.kb_url.as_str();
    let max_unicode = max_unicode();
    let forged = format!("forged [nto:test-cluster/{}/{}]", e.ns, e.healthy_uid);
    vec![
        // ---- refused at apply: extreme numbers ----
        case("days 2^63", Pt, "r-days-huge", pt_spec(json!({"days": 9223372036854775808u64})), Rejected("spec.days")),
        case("days 2^32+1", Pt, "r-days-wrap", pt_spec(json!({"days": 4294967297u64})), Rejected("spec.days")),
        case("days 1e30", Pt, "r-days-float", pt_spec(json!({"days": 1e30})), Rejected("spec.days")),
        case("days 1.5", Pt, "r-days-frac", pt_spec(json!({"days": 1.5})), Rejected("spec.days")),
        case("days -1", Kb, "r-kb-days-neg", kb_spec(kb_url, json!({"days": -1})), Rejected("spec.days")),
        case("renewBefore 10 digits", Pt, "r-renew-digits", pt_spec(json!({"renewBefore": "9999999999h"})), Rejected("spec.renewBefore")),
        case("renewBefore negative", Pt, "r-renew-neg", pt_spec(json!({"renewBefore": "-1h"})), Rejected("spec.renewBefore")),
        // ---- wrong types ----
        case("days as a string", Pt, "r-days-str", pt_spec(json!({"days": "30"})), Rejected("spec.days")),
        case("description a number", Pt, "r-desc-num", pt_spec(json!({"description": 42})), Rejected("spec.description")),
        case("description a list", Pt, "r-desc-list", pt_spec(json!({"description": ["a"]})), Rejected("spec.description")),
        case("selfRenew not a boolean", Pt, "r-self-renew", pt_spec(json!({"auth": {"secretRef": {"name": "login"}, "selfRenew": "maybe"}})), Rejected("selfRenew")),
        case("label value a number", Pt, "r-label-num", pt_spec(json!({"secret": {"labels": {"team": 7}}})), Rejected("spec.secret.labels")),
        case("role lower case", Kb, "r-role", kb_spec(kb_url, json!({"role": "smember"})), Rejected("spec.role")),
        // ---- huge strings, control characters ----
        case("description 10k characters", Pt, "r-desc-huge", pt_spec(json!({"description": "x".repeat(10_000)})), Rejected("spec.description")),
        case("description 201 unicode characters", Pt, "r-desc-201", pt_spec(json!({"description": format!("{max_unicode}z")})), Rejected("spec.description")),
        case("description with ANSI escape", Pt, "r-desc-ansi", pt_spec(json!({"description": "\u{1b}[31mred"})), Rejected("spec.description")),
        case("description with newline", Pt, "r-desc-nl", pt_spec(json!({"description": "line\nbreak"})), Rejected("spec.description")),
        case("description with NUL", Pt, "r-desc-nul", pt_spec(json!({"description": "nul\u{0}byte"})), Rejected("spec.description")),
        case("description with DEL", Pt, "r-desc-del", pt_spec(json!({"description": "del\u{7f}"})), Rejected("spec.description")),
        case("secret name unicode", Pt, "r-secret-uni", pt_spec(json!({"secret": {"name": "tökén"}})), Rejected("spec.secret.name")),
        case("secret name 254 characters", Pt, "r-secret-long", pt_spec(json!({"secret": {"name": "a".repeat(254)}})), Rejected("spec.secret.name")),
        case("secret data key with a slash", Kb, "r-kb-key", kb_spec(kb_url, json!({"secret": {"keys": {"token": "../token"}}})), Rejected("spec.secret.keys.token")),
        case("service account id path", Kb, "r-kb-sa", kb_spec(kb_url, json!({"serviceAccount": {"id": "../../x"}})), Rejected("spec.serviceAccount.id")),
        // ---- kbUrl: scheme, credentials, size, host syntax ----
        case("kbUrl with credentials", Kb, "r-kb-userinfo", kb_spec(&kb_url.replace("http://", "http://user:pw@"), json!({})), Rejected("spec.kbUrl")),
        case("kbUrl file scheme", Kb, "r-kb-file", kb_spec("file:///etc/passwd", json!({})), Rejected("spec.kbUrl")),
        case("kbUrl javascript scheme", Kb, "r-kb-js", kb_spec("javascript:alert(1)//api/v1/kb/x", json!({})), Rejected("spec.kbUrl")),
        case("kbUrl 600 characters", Kb, "r-kb-long", kb_spec(&format!("https://{}.example.com/api/v1/kb/x", "a".repeat(570)), json!({})), Rejected("spec.kbUrl")),
        case("kbUrl unicode host", Kb, "r-kb-idn", kb_spec("https://éurope-1.dp.progress.cloud/api/v1/kb/x", json!({})), Rejected("spec.kbUrl")),
        // ---- references to another namespace ----
        case("secretRef with a namespace", Pt, "r-ref-ns", pt_spec(json!({"auth": {"secretRef": {"name": "elsewhere", "namespace": e.other_ns}}})), Rejected("namespace")),

        // ---- accepted, cannot work: credentials ----
        case("credentials Secret missing", Pt, "n-missing", pt_spec(json!({"auth": {"secretRef": {"name": "nope"}}})),
            NotReady("CredentialsMissing", &["\"nope\"", "not found", "create it"])),
        case("credentials only in another namespace", Pt, "n-next-door", pt_spec(json!({"auth": {"secretRef": {"name": "elsewhere"}}})),
            NotReady("CredentialsMissing", &["\"elsewhere\"", "not found in this namespace"])),
        case("credentials key missing", Pt, "n-no-key", pt_spec(json!({"auth": {"secretRef": {"name": "other-key"}}})),
            NotReady("CredentialsMissing", &["has no key \"token\"", "spec.auth.secretRef.key"])),
        case("credentials empty", Pt, "n-empty", pt_spec(json!({"auth": {"secretRef": {"name": "empty"}}})),
            NotReady("CredentialsMissing", &["\"empty\"", "must hold a Nuclia token"])),
        case("credentials whitespace", Kb, "n-blank", kb_spec(kb_url, json!({"auth": {"secretRef": {"name": "blank"}}})),
            NotReady("CredentialsMissing", &["\"blank\"", "must hold a Nuclia token"])),
        case("credentials binary", Pt, "n-binary", pt_spec(json!({"auth": {"secretRef": {"name": "binary"}}})),
            NotReady("CredentialsMissing", &["\"binary\"", "not text"])),
        case("credentials two words", Pt, "n-two-words", pt_spec(json!({"auth": {"secretRef": {"name": "two-words"}}})),
            NotReady("CredentialsMissing", &["not a single token"])),
        case("KB key where a PAT is expected", Pt, "n-kb-key", pt_spec(json!({"auth": {"secretRef": {"name": "healthy-kb"}}})),
            NotReady("Unauthorized", &["Secret \"healthy-kb\" key \"token\""])),
        case("NUA key where a PAT is expected", Pt, "n-nua", pt_spec(json!({"auth": {"secretRef": {"name": "nua"}}})),
            NotReady("Unauthorized", &["Secret \"nua\""])),
        case("revoked PAT", Pt, "n-revoked", pt_spec(json!({"auth": {"secretRef": {"name": "revoked"}}})),
            NotReady("Unauthorized", &["Secret \"revoked\""])),
        case("PAT declared as NUA key", Kb, "n-kb-type", kb_spec(kb_url, json!({"auth": {"secretRef": {"name": "login"}, "type": "NuaKey"}})),
            NotReady("Unauthorized", &["Secret \"login\""])),
        case("own output as credentials", Pt, "n-self-ref", pt_spec(json!({"auth": {"secretRef": {"name": "n-self-ref"}}})),
            NotReady("CredentialsMissing", &["\"n-self-ref\""])),
        // ---- kbUrl on hosts, ports, schemes the operator is not configured for ----
        case("kbUrl unknown host", Kb, "n-kb-host", kb_spec("https://evil.example.com/api/v1/kb/abc", json!({})),
            NotReady("UntrustedEndpoint", &["host"])),
        case("kbUrl unknown port", Kb, "n-kb-port", kb_spec(&format!("http://127.0.0.1:{}/api/v1/kb/abc", e.stray_port), json!({})),
            NotReady("UntrustedEndpoint", &["host"])),
        case("kbUrl https on an http origin", Kb, "n-kb-scheme", kb_spec(&kb_url.replace("http://", "https://"), json!({})),
            NotReady("UntrustedEndpoint", &["host"])),
        case("kbUrl localhost alias", Kb, "n-kb-alias", kb_spec(&kb_url.replace("127.0.0.1", "localhost"), json!({})),
            NotReady("UntrustedEndpoint", &["host"])),
        case("kbUrl unknown KB", Kb, "n-kb-unknown", kb_spec(&format!("{}/api/v1/kb/no-such-kb", e.fake_url), json!({})),
            NotReady("InvalidSpec", &["no-such-kb", "spec.kbUrl"])),
        case("account not visible", Kb, "n-kb-account", kb_spec(kb_url, json!({"account": "someone-else"})),
            NotReady("InvalidSpec", &["spec.account"])),
        case("adopted service account missing", Kb, "n-kb-adopt", kb_spec(kb_url, json!({"serviceAccount": {"id": "no-such-sa"}})),
            NotReady("InvalidSpec", &["\"no-such-sa\"", "spec.serviceAccount.id"])),
        // ---- extreme numbers the schema lets through ----
        case("renewBefore longer than the lifetime", Pt, "n-renew-long", pt_spec(json!({"renewBefore": "999999999h"})),
            NotReady("InvalidSpec", &["spec.renewBefore"])),
        case("grace of 300k years", Pt, "n-grace-huge", pt_spec(json!({"rotation": {"revokePreviousAfter": "999999999h999999999h999999999h"}})),
            NotReady("InvalidSpec", &["spec.rotation.revokePreviousAfter"])),
        // ---- Secret metadata the apiserver would refuse ----
        case("invalid label key", Pt, "n-label-key", pt_spec(json!({"secret": {"labels": {"bad key!": "x"}}})),
            NotReady("InvalidSpec", &["spec.secret.labels"])),
        Case { create: true, ..case("annotations over 256 KiB", Pt, "n-annot-huge", pt_spec(json!({"secret": {"annotations": {"big": "x".repeat(200_000), "big2": "y".repeat(100_000)}}})),
            NotReady("InvalidSpec", &["spec.secret.annotations"])) },
        // ---- Secret names owned by someone else ----
        Case { guarded_secret: Some("taken"), ..case("Secret of that name is foreign", Pt, "n-foreign", pt_spec(json!({"secret": {"name": "taken"}})),
            NotReady("SecretConflict", &["\"taken\"", "spec.secret.name"])) },
        Case { guarded_secret: Some("healthy"), ..case("Secret of another resource", Kb, "n-steal", kb_spec(kb_url, json!({"secret": {"name": "healthy"}})),
            NotReady("SecretConflict", &["\"healthy\"", "spec.secret.name"])) },
        Case { guarded_secret: Some("login"), ..case("Secret is the credentials Secret", Pt, "n-clobber-login", pt_spec(json!({"secret": {"name": "login"}})),
            NotReady("SecretConflict", &["\"login\"", "spec.secret.name"])) },

        // ---- legal, awkward: must work end to end ----
        case("quotes and unicode in description", Pt, "ok-quoted", pt_spec(json!({"description": QUOTED})), Ready(Some(QUOTED.to_owned()))),
        case("200 unicode characters", Pt, "ok-max-unicode", pt_spec(json!({"description": max_unicode})), Ready(Some(max_unicode.clone()))),
        case("forged marker in description", Pt, "ok-forged", pt_spec(json!({"description": forged})), Ready(Some(forged.clone()))),
        case("days 1095", Pt, "ok-max-days", pt_spec(json!({"days": 1095})), Ready(None)),
        case("renewBefore 0s", Kb, "ok-renew-zero", kb_spec(kb_url, json!({"renewBefore": "0s", "role": "SOWNER"})), Ready(None)),
        case("unicode annotation values", Pt, "ok-meta", pt_spec(json!({"secret": {"labels": {"team": "search"}, "annotations": {"note": QUOTED}}})), Ready(None)),
    ]
}

const PT_MINT: &str = "POST /api/v1/user/pa_tokens";
const KB_MINT: &str = "POST /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/keys";
const KB_SA_CREATE: &str = "POST /api/v1/account/{account_id}/kb/{kb_id}/service_accounts";
const ACCOUNTS: &str = "GET /api/v1/accounts";

/// One way for Nuclia to misbehave, on the route one kind needs.
struct Fault {
    what: &'static str,
    kind: Kind,
    rule: Value,
    reasons: &'static [&'static str],
}

fn fault(
    what: &'static str,
    kind: Kind,
    route: &str,
    rule: Value,
    reasons: &'static [&'static str],
) -> Fault {
    Fault {
        what,
        kind,
        rule: merged(json!({ "route": route }), rule),
        reasons,
    }
}

/// Every way nuclia-fake can misbehave, one at a time on the route one kind needs: a resource
/// created meanwhile reports the reason, one of the other kind created meanwhile is served, the
/// resources already Ready stay Ready; once the faults clear, everything is Ready and the live
/// credentials at Nuclia are exactly those the statuses reference (tokens minted behind a
/// spoiled answer were swept).
#[tokio::test]
async fn nuclia_fault_table() {
    let mut w = World::new("chaos-faults").await;
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let slug = w.fake.bootstrap.account_slug.clone();
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let spec = |kind: Kind| match kind {
        Kind::Pt => pt_spec(json!({})),
        Kind::Kb => kb_spec(&kb_url, json!({})),
    };
    w.kubectl_apply(&manifest(Kind::Pt, "steady", spec(Kind::Pt)));
    w.kubectl_apply(&manifest(Kind::Kb, "steady-kb", spec(Kind::Kb)));
    let pts: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&pts, "steady", MINUTE, "Ready", ready).await;
    wait_status(&kbs, "steady-kb", MINUTE, "Ready", ready).await;

    use Kind::*;
    let malformed = &["Malformed"];
    let transient = &["Transient"];
    let faults = vec![
        fault(
            "malformed JSON",
            Pt,
            PT_MINT,
            json!({"malformed": "json"}),
            malformed,
        ),
        fault(
            "HTML error page with 200",
            Pt,
            PT_MINT,
            json!({"malformed": "html"}),
            malformed,
        ),
        fault(
            "truncated body",
            Pt,
            PT_MINT,
            json!({"malformed": "truncated"}),
            malformed,
        ),
        fault(
            "text/plain content type",
            Pt,
            PT_MINT,
            json!({"malformed": "content_type"}),
            malformed,
        ),
        fault(
            "slow answer (past the timeout)",
            Pt,
            PT_MINT,
            json!({"latency_ms": 7000}),
            transient,
        ),
        fault(
            "slow after commit",
            Pt,
            PT_MINT,
            json!({"latency_ms": 7000, "latency_after_commit": true}),
            transient,
        ),
        fault(
            "connection dropped mid-body",
            Pt,
            PT_MINT,
            json!({"drop_connection": true}),
            transient,
        ),
        fault("503", Pt, PT_MINT, json!({"status": 503}), transient),
        fault(
            "429 with Retry-After",
            Pt,
            PT_MINT,
            json!({"status": 429, "retry_after": 3}),
            &["RateLimited"],
        ),
        fault(
            "KB key: HTML error page",
            Kb,
            KB_MINT,
            json!({"malformed": "html"}),
            malformed,
        ),
        fault(
            "KB key: wrong content type",
            Kb,
            KB_MINT,
            json!({"malformed": "content_type"}),
            malformed,
        ),
        fault(
            "KB key: truncated",
            Kb,
            KB_MINT,
            json!({"malformed": "truncated"}),
            malformed,
        ),
        fault(
            "service account: dropped",
            Kb,
            KB_SA_CREATE,
            json!({"drop_connection": true}),
            transient,
        ),
        fault(
            "accounts: malformed JSON",
            Kb,
            ACCOUNTS,
            json!({"malformed": "json"}),
            malformed,
        ),
    ];
    let mut names: Vec<(Kind, String)> = vec![(Pt, "steady".into()), (Kb, "steady-kb".into())];
    let mut failures = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        w.set_faults(json!([f.rule])).await;
        let broken = format!("broken-{i}");
        let mut broken_spec = spec(f.kind);
        if f.rule["route"] == ACCOUNTS {
            // the account of a KB is cached per credential: naming it makes the lookup happen
            broken_spec = merged(broken_spec, json!({ "account": slug }));
        }
        w.kubectl_apply(&manifest(f.kind, &broken, broken_spec));
        let other = if f.kind == Pt { Kb } else { Pt };
        let served = format!("served-{i}");
        w.kubectl_apply(&manifest(other, &served, spec(other)));
        let got = common::poll(MINUTE, || async {
            let (_, s) = status_of(&w, f.kind, &broken).await?;
            reason(&s).map(|r| (r, ready_message(&s)))
        })
        .await;
        match got {
            Some((r, msg)) if f.reasons.contains(&r.as_str()) => {
                println!(
                    "fault {:<32} -> {r}: {}",
                    f.what,
                    msg.chars().take(110).collect::<String>()
                )
            }
            other => failures.push(format!("{}: want {:?}, got {other:?}", f.what, f.reasons)),
        }
        let served_ok = common::poll(MINUTE, || async {
            let (_, s) = status_of(&w, other, &served).await?;
            ready(&s).then_some(())
        })
        .await;
        if served_ok.is_none() {
            failures.push(format!(
                "{}: {served} ({other:?}) was not served meanwhile",
                f.what
            ));
        }
        for (kind, name) in [(Pt, "steady"), (Kb, "steady-kb")] {
            let s = status_of(&w, kind, name).await.map(|(_, s)| s);
            if !s.as_ref().is_some_and(ready) {
                failures.push(format!("{}: {name} is not Ready during the fault", f.what));
            }
        }
        if !w.operator_alive() {
            failures.push(format!("{}: the operator exited", f.what));
            break;
        }
        names.push((f.kind, broken));
        names.push((other, served));
    }
    w.clear_faults().await;

    // Recovery: everything Ready, and at Nuclia exactly what the statuses reference.
    let mut minted_total = 0;
    let mut recorded_total = 0;
    for (kind, name) in &names {
        let settled = common::poll(Duration::from_secs(120), || async {
            let (uid, s) = status_of(&w, *kind, name).await?;
            if !ready(&s) {
                return None;
            }
            let mut referenced: Vec<String> = s.token_id.iter().cloned().collect();
            referenced.extend(s.previous_tokens.iter().map(|p| p.id.clone()));
            referenced.sort();
            (w.live_marked(&uid).await == referenced).then_some((uid, s))
        })
        .await;
        let Some((uid, s)) = settled else {
            let last = status_of(&w, *kind, name).await;
            let live = match &last {
                Some((uid, _)) => w.live_marked(uid).await,
                None => Vec::new(),
            };
            failures.push(format!(
                "{name}: did not settle (Ready with live == referenced); live {live:?}, last {:?}",
                last.map(|(_, s)| (s.condition("Ready").cloned(), s.token_id))
            ));
            continue;
        };
        minted_total += w.all_marked(&uid).await.len();
        recorded_total += 1 + s.previous_tokens.len();
        if *kind == Kb && marked_service_accounts(&w, &uid).await != 1 {
            failures.push(format!("{name}: service accounts left behind"));
        }
        let token = w.secret_value(name, "token").await.unwrap_or_default();
        let works = match kind {
            Pt => w.pat_works(&token).await,
            Kb => w.kb_key_works(&kb_url, &token).await,
        };
        if !works {
            failures.push(format!(
                "{name}: the Secret's token is refused after recovery"
            ));
        }
    }
    println!(
        "fault table: {} faults, {} resources; {minted_total} credentials minted, {recorded_total} in use, {} swept",
        faults.len(),
        names.len(),
        minted_total - recorded_total.min(minted_total)
    );
    if !w.operator_alive() {
        failures.push("the operator exited".into());
    }
    for f in &failures {
        println!("FAILED: {f}");
    }
    w.assert_log_has_no_tokens().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
