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
//! - `chaos_soak`: see its own documentation (its deletions: `deletions.rs`).

#[path = "../common/mod.rs"]
mod common;
mod deletions;

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

/// Runs a blocking call (kubectl) without stalling the runtime's other tasks (the fake).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
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
            Some((o.uid_str(), o.status.unwrap_or_default().common))
        }
        Kind::Kb => {
            let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
            let o = api.get_opt(name).await.ok()??;
            Some((o.uid_str(), o.status.unwrap_or_default().common))
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
    fake_sas(&w.http, &w.fake.url, uid).await.len()
}

/// No value the fake ever minted appears in the namespace's Events or in the resources (status
/// included): the log is scanned by the harness, this covers what `kubectl` shows.
async fn api_leaks(w: &World) -> Vec<String> {
    let values = common::operator::minted_values(&w.http, &w.fake.url).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(w.client.clone(), &w.ns);
    let pts: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    let texts = [
        (
            "Events",
            serde_json::to_string(&events.list(&Default::default()).await.unwrap().items),
        ),
        (
            "personal tokens",
            serde_json::to_string(&pts.list(&Default::default()).await.unwrap().items),
        ),
        (
            "KB keys",
            serde_json::to_string(&kbs.list(&Default::default()).await.unwrap().items),
        ),
    ];
    let mut found = Vec::new();
    for (what, text) in texts {
        let text = text.unwrap();
        let n = values
            .iter()
            .filter(|v| v.len() >= 8 && text.contains(v.as_str()))
            .count();
        if n > 0 {
            found.push(format!("{n} token value(s) in the {what}"));
        }
    }
    found
}

/// Mints a PAT at the fake with the bootstrap PAT and revokes it out of band: a credential
/// that once was good.
async fn revoked_pat(w: &World) -> String {
    let expires = chrono::Utc::now() + chrono::Duration::days(30);
    let body = json!({"description": "soon revoked", "expiration_date": expires.to_rfc3339()});
    let r = w.mint_pat(&w.fake.bootstrap.pat, body).await;
    let (id, token) = (
        r["id"].as_str().unwrap().to_owned(),
        r["token"].as_str().unwrap().to_owned(),
    );
    w.admin_post(&format!("revoke/{id}"), json!({})).await;
    token
}

/// Every bad and hostile input at once in one namespace, with a healthy personal token and KB
/// key beside them. See the module documentation.
// Multi-threaded, and kubectl runs in `block_in_place`: the in-process fake must keep answering
// the operator while the test waits for kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    blocking(|| w.kubectl_apply(&manifest(Kind::Pt, "healthy", pt_spec(json!({})))));
    blocking(|| {
        w.kubectl_apply(&manifest(
            Kind::Kb,
            "healthy-kb",
            kb_spec(&kb_url, json!({})),
        ))
    });
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
            let out = blocking(|| common::kubectl(&["create", "-n", &w.ns, "-f", "-"], Some(&m)));
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success(), text)
        } else {
            blocking(|| w.kubectl_try_apply(&m))
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
    failures.extend(api_leaks(&w).await);
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    blocking(|| w.kubectl_apply(&manifest(Kind::Pt, "steady", spec(Kind::Pt))));
    blocking(|| w.kubectl_apply(&manifest(Kind::Kb, "steady-kb", spec(Kind::Kb))));
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
        blocking(|| w.kubectl_apply(&manifest(f.kind, &broken, broken_spec)));
        let other = if f.kind == Pt { Kb } else { Pt };
        let served = format!("served-{i}");
        blocking(|| w.kubectl_apply(&manifest(other, &served, spec(other))));
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
    failures.extend(api_leaks(&w).await);
    let false_drift = common::operator::plain(&w.log_text())
        .matches("reason=\"RevokedUpstream\"")
        .count();
    if false_drift > 0 {
        failures.push(format!(
            "{false_drift} token(s) re-issued as revoked upstream, though nothing was revoked out of band"
        ));
    }
    for f in &failures {
        println!("FAILED: {f}");
    }
    w.assert_log_has_no_tokens().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------------

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use rand::Rng;

const SOAK_CLUSTER_ID: &str = "soak-cluster";
const MANAGED_SECRETS: &str = "app.kubernetes.io/managed-by=nuclia-token-operator";
const SOAK_PTS: usize = 16;
const SOAK_KBS: usize = 14;

/// Applies the CRDs generated from the types and waits until they are Established.
async fn install_crds_on(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    use kube::api::{Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in nuclia_token_operator::crds::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("chaos-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        let established = common::poll(MINUTE, || async {
            let conds = api.get(&name).await.ok()?.status?.conditions?;
            conds
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
        assert!(established.is_some(), "CRD {name} never became Established");
    }
}

/// Where the soak's operators point.
struct SoakEnv {
    kubeconfig: PathBuf,
    fake_url: String,
    zone: String,
    ns: String,
    logs: PathBuf,
}

/// One operator process, one of the two replicas competing for the Lease.
struct Replica {
    identity: String,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_replica(env: &SoakEnv, identity: &str) -> Replica {
    let log = std::fs::File::create(env.logs.join(format!("{identity}.log"))).expect("log file");
    let url = &env.fake_url;
    let child = Command::new(env!("CARGO_BIN_EXE_nuclia-token-operator"))
        .env("KUBECONFIG", &env.kubeconfig)
        .env("RUST_LOG", "info,nuclia_token_operator=debug")
        .args(["--nuclia-global-url", url])
        .args(["--nuclia-zone-origin", &format!("{}={url}", env.zone)])
        // every namespace: the soak's own and those it creates and deletes
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args([
            "--revoke-timeout",
            &format!("{}s", deletions::REVOKE_TIMEOUT.as_secs()),
        ])
        .args(["--cluster-id", SOAK_CLUSTER_ID, "--identity", identity])
        .args([
            "--leader-elect",
            "--lease-namespace",
            &env.ns,
            "--lease-duration",
            "6s",
        ])
        .args([
            "--verify-interval",
            "5s",
            "--backoff-base",
            "1s",
            "--backoff-max",
            "5s",
        ])
        .args([
            "--nuclia-timeout",
            "3s",
            "--nuclia-rps",
            "200",
            "--nuclia-burst",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start the operator");
    Replica {
        identity: identity.to_owned(),
        child,
    }
}

/// What the sampler saw.
#[derive(Default)]
struct SamplerStats {
    samples: AtomicU64,
    failed: AtomicU64,
    inconclusive: AtomicU64,
    apiserver_gaps: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// Token ids seen in each resource's Secret.
    seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Resources deleted with `Revoke`: their Secrets hold a revoked token until they go.
    deleting: Mutex<BTreeSet<String>>,
    stop: AtomicBool,
}

/// Whether the fake accepts the token as its consumer would use it: Some(false) only on a
/// definite refusal (401/403).
async fn accepted(
    http: &reqwest::Client,
    fake_url: &str,
    kb_url: Option<&str>,
    token: &str,
) -> Option<bool> {
    let req = match kb_url {
        Some(kb) => http
            .get(kb)
            .header("X-NUCLIA-SERVICEACCOUNT", format!("Bearer {token}")),
        None => http
            .get(format!("{fake_url}/api/v1/user/welcome"))
            .bearer_auth(token),
    };
    match req.send().await {
        Ok(r) if r.status().is_success() => Some(true),
        Ok(r) if r.status() == 401 || r.status() == 403 => Some(false),
        _ => None,
    }
}

/// Every ~300 ms: every Secret the operator has issued holds a token the fake accepts.
async fn sample(
    secrets: Api<Secret>,
    fake_url: String,
    stats: Arc<SamplerStats>,
    started: std::time::Instant,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    while !stats.stop.load(Ordering::Relaxed) {
        let list = match secrets
            .list(&ListParams::default().labels(MANAGED_SECRETS))
            .await
        {
            Ok(l) => l,
            Err(_) => {
                stats.apiserver_gaps.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        for s in list.items {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            let owner = labels
                .get("nuclia.dev/owner-name")
                .cloned()
                .unwrap_or_default();
            if s.metadata.deletion_timestamp.is_some()
                || stats.deleting.lock().unwrap().contains(&owner)
            {
                continue;
            }
            let id = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("nuclia.dev/token-id").cloned())
                .unwrap_or_default();
            let data = s.data.unwrap_or_default();
            let text = |k: &str| {
                data.get(k)
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
            };
            let Some(token) = text("token") else { continue };
            let kb_url = text("kbUrl");
            stats
                .seen
                .lock()
                .unwrap()
                .entry(owner.clone())
                .or_default()
                .insert(id.clone());
            let mut verdict = None;
            for _ in 0..3 {
                verdict = accepted(&http, &fake_url, kb_url.as_deref(), &token).await;
                if verdict.is_some() {
                    break;
                }
            }
            match verdict {
                Some(true) => {
                    stats.samples.fetch_add(1, Ordering::Relaxed);
                }
                Some(false) => {
                    stats.samples.fetch_add(1, Ordering::Relaxed);
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.failures.lock().unwrap().push(format!(
                        "t+{:.1}s: Secret of {owner} holds token {id}, refused by Nuclia",
                        started.elapsed().as_secs_f64()
                    ));
                }
                None => {
                    stats.inconclusive.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The soak's fault mix: (kind, rule). Counts are huge so the fake's remaining count tells how
/// often each rule fired.
fn soak_faults() -> Vec<(&'static str, Value)> {
    const N: u64 = 1_000_000_000;
    let r = |route: &str, method: Option<&str>, rest: Value| {
        let mut v = merged(json!({ "route": route, "count": N }), rest);
        if let Some(m) = method {
            v["method"] = json!(m);
        }
        v
    };
    vec![
        (
            "5xx",
            r("*", Some("POST"), json!({"rate": 0.08, "status": 503})),
        ),
        (
            "5xx",
            r("*", Some("DELETE"), json!({"rate": 0.08, "status": 502})),
        ),
        (
            "5xx",
            r(
                "GET /api/v1/user/pa_tokens",
                None,
                json!({"rate": 0.1, "status": 500}),
            ),
        ),
        (
            "5xx",
            r(
                "GET /api/v1/account/{account_id}/kb/{kb_id}/service_accounts",
                None,
                json!({"rate": 0.1, "status": 500}),
            ),
        ),
        (
            "429 with Retry-After",
            r(
                "*",
                Some("POST"),
                json!({"rate": 0.05, "status": 429, "retry_after": 1}),
            ),
        ),
        (
            "429 with Retry-After",
            r(
                "*",
                Some("DELETE"),
                json!({"rate": 0.05, "status": 429, "retry_after": 1}),
            ),
        ),
        (
            "latency 1.2s",
            r("*", Some("POST"), json!({"rate": 0.1, "latency_ms": 1200})),
        ),
        (
            "latency 1.2s",
            r(
                "*",
                Some("DELETE"),
                json!({"rate": 0.1, "latency_ms": 1200}),
            ),
        ),
        (
            "mint answer held past the timeout",
            r(
                PT_MINT,
                None,
                json!({"rate": 0.03, "latency_ms": 4000, "latency_after_commit": true}),
            ),
        ),
        (
            "mint answer held past the timeout",
            r(
                KB_MINT,
                None,
                json!({"rate": 0.03, "latency_ms": 4000, "latency_after_commit": true}),
            ),
        ),
        (
            "dropped connection (mint)",
            r(
                PT_MINT,
                None,
                json!({"rate": 0.04, "drop_connection": true}),
            ),
        ),
        (
            "dropped connection (mint)",
            r(
                KB_MINT,
                None,
                json!({"rate": 0.04, "drop_connection": true}),
            ),
        ),
        (
            "dropped connection (revoke)",
            r(
                "*",
                Some("DELETE"),
                json!({"rate": 0.04, "drop_connection": true}),
            ),
        ),
    ]
}

/// `token_id=<id>` values on log lines that contain `what`.
fn logged_ids(log: &str, what: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split("token_id=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|id| id.trim_matches('"').to_owned())
        .collect()
}

fn secs_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The soak (bounded by `NTO_SOAK_SECS`, default 120 s): on a control plane of its own, 30
/// resources of both kinds rotate every ~15 s with a 3 s grace while two replicas with leader
/// election are SIGKILLed and restarted at random moments, nuclia-fake injects 5xx, 429 with
/// Retry-After, latency, answers held past the client's timeout and dropped connections on about
/// a third of the operator's calls, and the apiserver is restarted once. Meanwhile 10 more
/// resources (some `deletionPolicy: Orphan`) are deleted at random moments, and 3 namespaces,
/// each a login Secret, a personal token and a Knowledge Box key authenticated by the token's
/// Secret, are created and deleted whole (see `deletions`). A sampler checks all along that every
/// issued Secret's token is accepted; at the end, after the faults stop, everything must be
/// Ready, every deleted resource and namespace gone within the bound, the live marked credentials
/// at Nuclia (of any namespace) exactly those the statuses reference but for the tokens of Orphan
/// resources, which must still be valid, no `RevokeAbandoned` where the login Secret still
/// exists, every mint accounted for, no panic and no token value in any log, Event or status.
// Named to sort first: the test harness starts tests in name order, and the soak is the long one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    nuclia_token_operator::runtime::install_crypto();
    let soak_secs = secs_from_env("NTO_SOAK_SECS", 120);
    let cp = common::OwnControlPlane::start();
    let client = common::operator::client_for(&cp.kubeconfig).await;
    install_crds_on(&client).await;
    let ns = common::namespace(&client, "soak").await;
    let fake = nuclia_fake::spawn(Default::default())
        .await
        .expect("start nuclia-fake");
    let http = reqwest::Client::new();
    let logs = std::env::temp_dir().join(format!("nto-{ns}"));
    std::fs::create_dir_all(&logs).unwrap();
    let env = SoakEnv {
        kubeconfig: cp.kubeconfig.clone(),
        fake_url: fake.url.clone(),
        zone: fake.bootstrap.zone.clone(),
        ns: ns.clone(),
        logs: logs.clone(),
    };
    println!(
        "soak: {soak_secs}s in namespace {ns}; operator logs in {}",
        logs.display()
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
                "stringData": {"token": fake.bootstrap.pat}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let rotating =
        json!({"days": 1, "renewBefore": "23h59m45s", "rotation": {"revokePreviousAfter": "3s"}});
    let pts: Api<NucliaPersonalToken> = Api::namespaced(client.clone(), &ns);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(client.clone(), &ns);
    for i in 0..SOAK_PTS {
        let spec = merged(
            pt_spec(json!({"description": format!("soak {i}")})),
            rotating.clone(),
        );
        let obj: NucliaPersonalToken = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaPersonalToken",
            "metadata": {"name": format!("pt-{i}")}, "spec": spec
        }))
        .unwrap();
        pts.create(&PostParams::default(), &obj).await.unwrap();
    }
    let roles = ["SMEMBER", "SCONTRIBUTOR"];
    for i in 0..SOAK_KBS {
        let kb = &fake.bootstrap.kbs[i % fake.bootstrap.kbs.len()].url;
        let spec = merged(kb_spec(kb, json!({"role": roles[i % 2]})), rotating.clone());
        let obj: NucliaKbApiKey = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
            "metadata": {"name": format!("kb-{i}")}, "spec": spec
        }))
        .unwrap();
        kbs.create(&PostParams::default(), &obj).await.unwrap();
    }
    let kb_urls: Vec<String> = fake.bootstrap.kbs.iter().map(|k| k.url.clone()).collect();
    deletions::create_doomed(&client, &ns, &kb_urls, &rotating).await;

    let faults = soak_faults();
    let rules: Vec<Value> = faults.iter().map(|(_, r)| r.clone()).collect();
    let put = http
        .put(format!("{}/_fake/faults", fake.url))
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    let started = std::time::Instant::now();
    let stats = Arc::new(SamplerStats::default());
    let sampler = tokio::spawn(sample(
        secrets.clone(),
        fake.url.clone(),
        stats.clone(),
        started,
    ));
    let doomed = deletions::start(
        &client,
        &ns,
        &fake.bootstrap.pat,
        &kb_urls,
        soak_secs,
        stats.clone(),
    );

    // ---- chaos: kills at random moments, self-exits restarted, one apiserver restart ----
    let mut generation = [0usize; 2];
    let mut replicas: Vec<Option<Replica>> = vec![
        Some(spawn_replica(&env, "replica-a-0")),
        Some(spawn_replica(&env, "replica-b-0")),
    ];
    let mut restart_at: [Option<tokio::time::Instant>; 2] = [None, None];
    let (mut kills, mut leader_kills, mut self_exits) = (0u64, 0u64, 0u64);
    let mut self_exit_notes = Vec::new();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(soak_secs);
    let restart_apiserver_at = tokio::time::Instant::now() + Duration::from_secs(soak_secs / 2);
    let mut apiserver_restart: Option<tokio::task::JoinHandle<(bool, Duration)>> = None;
    let mut next_kill = tokio::time::Instant::now() + Duration::from_secs(10);
    let cp_dir = cp.dir.path().to_owned();
    while tokio::time::Instant::now() < deadline {
        let now = tokio::time::Instant::now();
        for slot in 0..2 {
            // a replica that exited on its own (e.g. it lost the lease while the apiserver was
            // down) is restarted, as its Deployment would
            if let Some(r) = replicas[slot].as_mut()
                && let Ok(Some(status)) = r.child.try_wait()
            {
                self_exits += 1;
                let log = std::fs::read_to_string(env.logs.join(format!("{}.log", r.identity)))
                    .unwrap_or_default();
                // its error line, else its last (a backtrace may follow the error)
                let plain = common::operator::plain(&log);
                let last_line = plain
                    .lines()
                    .rfind(|l| l.starts_with("Error: "))
                    .or(plain.lines().last())
                    .unwrap_or_default()
                    .to_owned();
                self_exit_notes.push(format!("{} exited ({status}): {last_line}", r.identity));
                replicas[slot] = None;
                restart_at[slot] = Some(now + Duration::from_secs(1));
            }
            if replicas[slot].is_none() && restart_at[slot].is_some_and(|t| now >= t) {
                generation[slot] += 1;
                let id = format!("replica-{}-{}", ["a", "b"][slot], generation[slot]);
                replicas[slot] = Some(spawn_replica(&env, &id));
                restart_at[slot] = None;
            }
        }
        if now >= next_kill {
            let holder = leases
                .get_opt("nuclia-token-operator")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity);
            let mut rng = rand::rng();
            let leader_slot = (0..2).find(|s| {
                replicas[*s]
                    .as_ref()
                    .is_some_and(|r| Some(&r.identity) == holder.as_ref())
            });
            let slot = match leader_slot {
                Some(s) if rng.random_bool(0.75) => s,
                _ => rng.random_range(0..2),
            };
            if let Some(mut r) = replicas[slot].take() {
                let _ = r.child.kill(); // SIGKILL
                let _ = r.child.wait();
                kills += 1;
                if Some(slot) == leader_slot {
                    leader_kills += 1;
                }
                restart_at[slot] = Some(now + Duration::from_millis(rng.random_range(0..2000)));
            }
            next_kill = now + Duration::from_millis(rng.random_range(4000..12000));
        }
        if apiserver_restart.is_none() && now >= restart_apiserver_at {
            let dir = cp_dir.clone();
            apiserver_restart = Some(tokio::task::spawn_blocking(move || {
                let t = std::time::Instant::now();
                (
                    common::OwnControlPlane::restart_apiserver(&dir),
                    t.elapsed(),
                )
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (apiserver_ok, apiserver_down) = match apiserver_restart {
        Some(h) => h.await.unwrap(),
        None => (false, Duration::ZERO),
    };

    // ---- the faults stop; count what fired ----
    let left: Vec<Value> = http
        .get(format!("{}/_fake/faults", fake.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http.delete(format!("{}/_fake/faults", fake.url))
        .send()
        .await
        .unwrap();
    let mut fired: BTreeMap<&str, u64> = BTreeMap::new();
    let mut interrupted_mints = 0;
    for ((kind, rule), now) in faults.iter().zip(&left) {
        let n = rule["count"].as_u64().unwrap() - now["count"].as_u64().unwrap_or(0);
        *fired.entry(kind).or_default() += n;
        if kind.starts_with("mint answer") || *kind == "dropped connection (mint)" {
            interrupted_mints += n;
        }
    }
    let calls: Value = http
        .get(format!("{}/_fake/calls", fake.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operator_calls: u64 = calls
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.contains("/welcome") && !k.starts_with("GET /api/v1/kb/"))
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    for slot in 0..2 {
        if replicas[slot].is_none() {
            generation[slot] += 1;
            let id = format!("replica-{}-{}", ["a", "b"][slot], generation[slot]);
            replicas[slot] = Some(spawn_replica(&env, &id));
        }
    }

    // ---- recovery: all Ready, every deleted resource gone, live marked credentials (of any
    // namespace) == referenced ones, but for the tokens of Orphan resources ----
    let recovery_started = std::time::Instant::now();
    let marker = format!("[nto:{SOAK_CLUSTER_ID}/");
    let keep_marker = format!("[nto-keep:{SOAK_CLUSTER_ID}/");
    // One consistent look: statuses, then the fake. Rotation goes on meanwhile, so a look
    // that raced a mint is simply taken again; the last look is what a failure reports.
    let last: Mutex<Option<Snapshot>> = Mutex::new(None);
    let settle = common::poll(Duration::from_secs(180), || async {
        let mut snap = Snapshot::default();
        let mut statuses = Vec::new();
        for o in pts.list(&Default::default()).await.ok()?.items {
            statuses.push((
                o.metadata.name.unwrap_or_default(),
                o.status.unwrap_or_default().common,
            ));
        }
        for o in kbs.list(&Default::default()).await.ok()?.items {
            let s = o.status.unwrap_or_default();
            snap.sas
                .extend(s.own.kb.as_ref().and_then(|k| k.service_account_id.clone()));
            statuses.push((o.metadata.name.unwrap_or_default(), s.common));
        }
        for (name, s) in &statuses {
            if !ready(s) {
                snap.not_ready.push(format!(
                    "{name}: {:?}",
                    s.condition("Ready").map(|c| (&c.reason, &c.message))
                ));
            }
            snap.referenced.extend(s.token_id.clone());
            snap.referenced
                .extend(s.previous_tokens.iter().map(|p| p.id.clone()));
        }
        let orphans = doomed.orphans();
        let kept = live_described(&http, &fake.url, &keep_marker).await;
        snap.live = w_marked(&http, &fake.url, &marker, false).await;
        snap.live.extend(kept.keys().cloned());
        snap.live.retain(|id| !orphans.ids.contains(id));
        // a token minted under Orphan whose answer was lost just before the deletion (never
        // recorded in its status) is kept too
        let unrecorded: Vec<String> = kept
            .into_iter()
            .filter(|(id, d)| {
                snap.live.contains(id)
                    && orphans
                        .uids
                        .iter()
                        .any(|u| d.contains(&format!("/{u}]")) || d.contains(&format!("/{u}@")))
            })
            .map(|(id, _)| id)
            .collect();
        snap.live.retain(|id| !unrecorded.contains(id));
        snap.unrecorded_orphans = unrecorded.len();
        snap.live_sas = fake_sas(&http, &fake.url, &marker).await;
        snap.live_sas
            .retain(|sa| !orphans.service_accounts.contains(sa));
        snap.resources = statuses.len();
        let done = statuses.len() == SOAK_PTS + SOAK_KBS
            && snap.not_ready.is_empty()
            && snap.live == snap.referenced
            && snap.live_sas == snap.sas;
        let referenced = snap.referenced.clone();
        *last.lock().unwrap() = Some(snap);
        done.then_some(referenced)
    })
    .await;
    let recovery = recovery_started.elapsed();
    stats.stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    // every deletion has been looked at until gone (or its bound + 30 s) before the replicas stop
    let deletion_report = doomed.finish().await;
    // Stop the replicas gracefully so that no mint is in flight while the books are read.
    let mut unclean_stops = Vec::new();
    for r in replicas.iter_mut().flatten() {
        let _ = Command::new("kill")
            .args(["-TERM", &r.child.id().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut exited = None;
        while exited.is_none() && tokio::time::Instant::now() < deadline {
            exited = r.child.try_wait().ok().flatten();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !exited.is_some_and(|s| s.success()) {
            unclean_stops.push(format!("{}: {exited:?}", r.identity));
        }
    }

    // ---- what was minted, what was used ----
    let mut failures = Vec::new();
    let mut all_minted = w_marked(&http, &fake.url, &marker, true).await;
    all_minted.extend(w_marked(&http, &fake.url, &keep_marker, true).await);
    let mut log_text = String::new();
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        log_text.push_str(&common::operator::plain(
            &std::fs::read_to_string(entry.path()).unwrap_or_default(),
        ));
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let events = events
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut used: BTreeSet<String> = stats
        .seen
        .lock()
        .unwrap()
        .values()
        .flatten()
        .cloned()
        .collect();
    used.extend(logged_ids(&log_text, " issued "));
    used.extend(logged_ids(&log_text, "adopted the token"));
    for e in &events {
        if let Some(id) = e
            .note
            .as_deref()
            .and_then(|n| n.strip_prefix("issued token "))
        {
            used.extend(id.split_whitespace().next().map(str::to_owned));
        }
    }
    let referenced = settle.clone().unwrap_or_default();
    used.extend(referenced.iter().cloned());
    used.extend(deletion_report.orphans.iter().map(|o| o.id.clone()));
    let used_minted: BTreeSet<&String> = used.intersection(&all_minted).collect();
    let unused: Vec<&String> = all_minted.difference(&used).collect();
    let created = SOAK_PTS + SOAK_KBS + 2 * deletions::DOOMED + 2 * deletions::NAMESPACES;
    let rotations = used_minted.len().saturating_sub(created);
    let snap = last.lock().unwrap().take().unwrap_or_default();
    let leaks: Vec<&String> = snap.live.difference(&snap.referenced).collect();
    let dead_referenced: Vec<&String> = snap.referenced.difference(&snap.live).collect();
    let sa_leaks: Vec<&String> = snap.live_sas.difference(&snap.sas).collect();
    let secret_write_failures = log_text
        .lines()
        .filter(|l| {
            l.contains("reconcile failed")
                && (l.contains("call create Secret failed")
                    || l.contains("call apply Secret failed"))
        })
        .count() as u64;
    let unexplained =
        (unused.len() as u64).saturating_sub(interrupted_mints + secret_write_failures);

    // ---- figures ----
    let (samples, failed) = (
        stats.samples.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
    );
    let faults_total: u64 = fired.values().sum();
    println!(
        "soak figures ({soak_secs}s, {} personal tokens + {} KB keys, 2 replicas; {} + {} more deleted during the soak, {} of each Orphan; {} namespaces of a token and a key deleted whole; revoke timeout {}s):",
        SOAK_PTS,
        SOAK_KBS,
        deletions::DOOMED,
        deletions::DOOMED,
        deletions::ORPHANS,
        deletions::NAMESPACES,
        deletions::REVOKE_TIMEOUT.as_secs()
    );
    println!("  rotations done:            {rotations}");
    println!(
        "  kills survived:            {kills} SIGKILLs ({leader_kills} of the leader), {self_exits} self-exits restarted"
    );
    println!(
        "  apiserver restarts:        {} (down for {:.1}s)",
        u8::from(apiserver_ok),
        apiserver_down.as_secs_f64()
    );
    println!(
        "  faults injected:           {faults_total} on {operator_calls} operator calls to Nuclia"
    );
    for (kind, n) in &fired {
        println!("    {kind:<36} {n}");
    }
    println!(
        "  samples taken:             {samples} ({} inconclusive, {} apiserver gaps)",
        stats.inconclusive.load(Ordering::Relaxed),
        stats.apiserver_gaps.load(Ordering::Relaxed)
    );
    println!("  samples failed:            {failed}");
    println!(
        "  leaks:                     {} credentials, {} service accounts (not counting {} tokens of Orphan resources recorded before deletion, {} minted under Orphan and never recorded)",
        leaks.len(),
        sa_leaks.len(),
        deletion_report.orphans.len(),
        snap.unrecorded_orphans
    );
    println!(
        "  credentials minted:        {} ({} used, {} never used and revoked: {interrupted_mints} answers lost by injected faults, {secret_write_failures} Secret writes failed, {unexplained} other)",
        all_minted.len(),
        used_minted.len(),
        unused.len()
    );
    println!(
        "  recovery after the faults: {:.1}s",
        recovery.as_secs_f64()
    );
    let mut deletion_failures = deletion_report.check(&http, &fake.url, &ns).await;
    // the same from the operator logs (the Events of a deleted namespace went with it)
    let soak_ns_field = format!("namespace={ns}");
    let gave_up: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("gave up revoking"))
        .collect();
    let gave_up_here: Vec<&&str> = gave_up
        .iter()
        .filter(|l| l.split_whitespace().any(|t| t == soak_ns_field))
        .collect();
    let field = |l: &str, key: &str| {
        l.split_whitespace()
            .find_map(|t| t.strip_prefix(key))
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned()
    };
    let gave_up_resources: BTreeSet<String> = gave_up
        .iter()
        .map(|l| {
            format!(
                "{} {}/{}",
                field(l, "kind="),
                field(l, "namespace="),
                field(l, "name=")
            )
        })
        .collect();
    println!(
        "  revocations abandoned:     {} in the logs, for {} resource(s) ({} in the soak's namespace): {gave_up_resources:?}",
        gave_up.len(),
        gave_up_resources.len(),
        gave_up_here.len()
    );
    for l in gave_up_here {
        deletion_failures.push(format!(
            "revocation abandoned in the soak's namespace, whose login Secret exists: {l}"
        ));
    }
    for note in &self_exit_notes {
        println!("  note: {note}");
    }

    // ---- invariants ----
    for f in stats.failures.lock().unwrap().iter().take(20) {
        failures.push(format!("sampler: {f}"));
    }
    failures.extend(deletion_failures);
    if settle.is_none() {
        failures.push(format!(
            "not settled within 180 s after the faults stopped; resources left in the soak's namespace: {} of {}; not Ready: {:?}; live but not referenced (any namespace, but Orphan tokens): {leaks:?}; referenced but dead: {dead_referenced:?}; service accounts not referenced: {sa_leaks:?}",
            snap.resources,
            SOAK_PTS + SOAK_KBS,
            snap.not_ready
        ));
    }
    if !unclean_stops.is_empty() {
        failures.push(format!(
            "replicas did not stop cleanly on SIGTERM: {unclean_stops:?}"
        ));
    }
    if !leaks.is_empty() {
        failures.push(format!(
            "{} live credential(s) no status references: {leaks:?}",
            leaks.len()
        ));
    }
    if unexplained > 2 * (kills + self_exits) + 2 {
        failures.push(format!(
            "{unexplained} minted credentials were never used and no fault, kill or failed write explains them (minted twice for one rotation?)"
        ));
    }
    let min_rotations = ((SOAK_PTS + SOAK_KBS) as u64 * soak_secs / 120).max(1) as usize;
    if rotations < min_rotations {
        failures.push(format!(
            "only {rotations} rotations: the soak did not exercise rotation"
        ));
    }
    if samples < 100 {
        failures.push(format!("only {samples} samples"));
    }
    if !apiserver_ok {
        failures.push("the apiserver restart failed".into());
    }
    // Nothing is revoked out of band here: a drift verdict would be a false alarm, and it
    // revokes a good token at once.
    let false_drift = log_text.matches("reason=\"RevokedUpstream\"").count();
    if false_drift > 0 {
        failures.push(format!(
            "{false_drift} token(s) re-issued as revoked upstream, though nothing was revoked out of band"
        ));
    }
    if log_text.contains("panicked") {
        failures.push(format!(
            "a panic in the operator logs in {}",
            logs.display()
        ));
    }
    // No token value in any log, Event or status.
    let values = common::operator::minted_values(&http, &fake.url).await;
    let events_text = serde_json::to_string(&events).unwrap();
    let status_text = format!(
        "{}{}",
        serde_json::to_string(&pts.list(&Default::default()).await.unwrap().items).unwrap(),
        serde_json::to_string(&kbs.list(&Default::default()).await.unwrap().items).unwrap()
    );
    for (what, text) in [
        ("logs", &log_text),
        ("Events", &events_text),
        ("resources", &status_text),
    ] {
        let n = values
            .iter()
            .filter(|v| v.len() >= 8 && text.contains(v.as_str()))
            .count();
        if n > 0 {
            failures.push(format!("{n} token value(s) found in the {what}"));
        }
    }
    for f in &failures {
        println!("FAILED: {f}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(replicas);
}

/// One look at the statuses and the fake during recovery.
#[derive(Default)]
struct Snapshot {
    referenced: BTreeSet<String>,
    live: BTreeSet<String>,
    sas: BTreeSet<String>,
    live_sas: BTreeSet<String>,
    not_ready: Vec<String>,
    /// Resources in the soak's namespace (the deleted ones gone: SOAK_PTS + SOAK_KBS).
    resources: usize,
    /// Live tokens minted under Orphan that no status recorded (tolerated).
    unrecorded_orphans: usize,
}

/// Ids of credentials at the fake whose description or title carries `marker` (live only, or all).
async fn w_marked(
    http: &reqwest::Client,
    fake_url: &str,
    marker: &str,
    all: bool,
) -> BTreeSet<String> {
    let path = format!("credentials?all={all}");
    common::operator::fake_ids_where(http, fake_url, &path, "description_or_title", marker)
        .await
        .into_iter()
        .collect()
}

/// Live credentials at the fake whose description or title carries `marker`: id -> that text.
async fn live_described(
    http: &reqwest::Client,
    fake_url: &str,
    marker: &str,
) -> BTreeMap<String, String> {
    common::operator::fake_admin(http, fake_url, "credentials")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let d = c["description_or_title"].as_str()?;
            d.contains(marker).then(|| {
                (
                    c["id"].as_str().unwrap_or_default().to_owned(),
                    d.to_owned(),
                )
            })
        })
        .collect()
}

/// Ids of service accounts at the fake whose title carries `marker`.
async fn fake_sas(http: &reqwest::Client, fake_url: &str, marker: &str) -> BTreeSet<String> {
    common::operator::fake_ids_where(http, fake_url, "service_accounts", "title", marker)
        .await
        .into_iter()
        .collect()
}
