//! The scenarios every kind must pass, each run for the three kinds (`NucliaPersonalToken`,
//! `NucliaKbApiKey`, `NucliaNuaKey`) side by side in one world: a namespace on the real
//! kube-apiserver, `nuclia-fake` over HTTP, the operator as a real process. What differs between
//! the kinds is in one table ([`Kind`]): the manifest, the routes that mint, revoke and list,
//! and how to tell at the fake whether a token is live. Every scenario ends by deleting what it
//! created and checking that it is gone and revoked at the fake (or, for `Orphan`, kept and still
//! working), and scans the operator's log for every token value the fake minted.

use crate::common;

use std::time::Duration;

use common::operator::{World, ready};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use nuclia_token_operator::crd::{
    CredentialStatus, NucliaKbApiKey, NucliaNuaKey, NucliaPersonalToken,
};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

/// The three kinds, and what a scenario needs to know about each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Personal,
    KbKey,
    NuaKey,
}

const KINDS: [Kind; 3] = [Kind::Personal, Kind::KbKey, Kind::NuaKey];

/// The key of the managed Secret that holds the token (the same for the three kinds).
const TOKEN_KEY: &str = "token";

impl Kind {
    /// The name of the resource a scenario creates (and of its Secret), before any prefix.
    fn name(self) -> &'static str {
        match self {
            Kind::Personal => "pt",
            Kind::KbKey => "kb",
            Kind::NuaKey => "nua",
        }
    }

    /// The kubectl short name.
    fn short(self) -> &'static str {
        match self {
            Kind::Personal => "npt",
            Kind::KbKey => "nkak",
            Kind::NuaKey => "nnk",
        }
    }

    /// The kind as the operator names it (metrics label, Events).
    fn kind(self) -> &'static str {
        match self {
            Kind::Personal => "NucliaPersonalToken",
            Kind::KbKey => "NucliaKbApiKey",
            Kind::NuaKey => "NucliaNuaKey",
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Kind::Personal => ApiResource::erase::<NucliaPersonalToken>(&()),
            Kind::KbKey => ApiResource::erase::<NucliaKbApiKey>(&()),
            Kind::NuaKey => ApiResource::erase::<NucliaNuaKey>(&()),
        }
    }

    /// A resource `name` authenticated by the PAT in Secret `login`, its Secret named `name`.
    fn manifest(self, w: &World, name: &str, extra_spec: &str) -> String {
        let spec = match self {
            Kind::Personal => "  description: every kind\n  days: 1\n".to_owned(),
            Kind::KbKey => format!("  kbUrl: {}\n", w.fake.bootstrap.kbs[0].url),
            Kind::NuaKey => format!(
                "  zone: {}\n  title: {name} client\n  contact: ops@example.com\n",
                w.fake.bootstrap.zone
            ),
        };
        format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: {}\nmetadata: {{name: {name}}}\nspec:\n{spec}  auth: {{secretRef: {{name: login}}}}\n{extra_spec}",
            self.kind()
        )
    }

    /// The fake's route (as `/_fake/calls` names it) that mints this kind's token.
    fn mint_route(self) -> &'static str {
        match self {
            Kind::Personal => "POST /api/v1/user/pa_tokens",
            Kind::KbKey => {
                "POST /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/keys"
            }
            Kind::NuaKey => "POST /api/v1/account/{account_id}/nua_clients",
        }
    }

    /// The route that revokes one.
    fn revoke_route(self) -> &'static str {
        match self {
            Kind::Personal => "DELETE /api/v1/user/pa_token/{token_id}",
            Kind::KbKey => {
                "DELETE /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/key/{key_id}"
            }
            Kind::NuaKey => "DELETE /api/v1/account/{account_id}/nua_client/{client_id}",
        }
    }

    /// The list a verification makes (once per credential and interval), from which the orphan
    /// sweep judges the tokens of resources that no longer exist.
    fn list_route(self) -> &'static str {
        match self {
            Kind::Personal => "GET /api/v1/user/pa_tokens",
            Kind::KbKey => "GET /api/v1/account/{account_id}/kb/{kb_id}/service_accounts",
            Kind::NuaKey => "GET /api/v1/account/{account_id}/nua_clients",
        }
    }

    /// Whether the managed token can revoke itself (a personal token may delete personal
    /// tokens): then losing the login is not enough to make revocation impossible.
    fn revokes_itself(self) -> bool {
        self == Kind::Personal
    }

    /// Whether Nuclia accepts `token`, as a consumer of the Secret would use it.
    async fn works(self, w: &World, token: &str) -> bool {
        match self {
            Kind::Personal => w.pat_works(token).await,
            Kind::KbKey => w.kb_key_works(&w.fake.bootstrap.kbs[0].url, token).await,
            Kind::NuaKey => w
                .http
                .get(format!("{}/api/authorizer/info", w.fake.url))
                .header("X-NUCLIA-NUAKEY", format!("Bearer {token}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
        }
    }

    /// Ids (as `status.tokenId` names them) of the live tokens at the fake marked for `uid`:
    /// personal tokens and KB keys by their credential, NUA keys by their client.
    async fn live(self, w: &World, uid: &str) -> Vec<String> {
        match self {
            Kind::Personal | Kind::KbKey => w.live_marked(uid).await,
            Kind::NuaKey => {
                let clients = w.admin("nua_clients").await;
                let mut ids: Vec<String> = clients
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["description"].as_str().is_some_and(|d| d.contains(uid)))
                    .filter_map(|c| c["client_id"].as_str().map(String::from))
                    .collect();
                ids.sort();
                ids
            }
        }
    }

    /// Revokes `id` out of band, as someone at Nuclia would (a NUA client is deleted).
    async fn revoke_out_of_band(self, w: &World, id: &str) {
        match self {
            Kind::Personal | Kind::KbKey => w.admin_post(&format!("revoke/{id}"), json!({})).await,
            Kind::NuaKey => {
                let status = w.admin_delete(&format!("nua_clients/{id}")).await;
                assert!(status.is_success(), "delete NUA client {id}: {status}");
            }
        }
    }
}

// ---- the resources, whatever their kind ----

fn api(w: &World, k: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(w.client.clone(), &w.ns, &k.api_resource())
}

async fn status(w: &World, k: Kind, name: &str) -> Option<CredentialStatus> {
    let obj = api(w, k).get_opt(name).await.ok()??;
    serde_json::from_value(obj.data.get("status")?.clone()).ok()
}

/// The Ready condition of a resource, for an assertion message (reason and message, never a
/// value).
async fn ready_state(w: &World, k: Kind, name: &str) -> String {
    match api(w, k).get_opt(name).await {
        Ok(Some(obj)) => {
            let s: Option<CredentialStatus> = obj
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            let ready = s
                .as_ref()
                .and_then(|s| s.condition("Ready"))
                .map(|c| format!("{} {}: {}", c.status, c.reason, c.message));
            format!(
                "{} {name}: finalizers {:?}, deleting {}, Ready {ready:?}",
                k.kind(),
                obj.metadata.finalizers,
                obj.metadata.deletion_timestamp.is_some()
            )
        }
        Ok(None) => format!("{} {name}: gone", k.kind()),
        Err(e) => format!("{} {name}: {e}", k.kind()),
    }
}

/// Polls the status of `name` until `check` accepts it; panics saying what it waited for.
async fn wait<F>(
    w: &World,
    k: Kind,
    name: &str,
    within: Duration,
    what: &str,
    check: F,
) -> CredentialStatus
where
    F: Fn(&CredentialStatus) -> bool,
{
    let found = common::poll(within, || async {
        let s = status(w, k, name).await?;
        check(&s).then_some(s)
    })
    .await;
    match found {
        Some(s) => s,
        None => panic!(
            "timed out after {within:?} waiting for {what}: {}",
            ready_state(w, k, name).await
        ),
    }
}

/// The UID of `name`, once it exists.
async fn uid(w: &World, k: Kind, name: &str) -> String {
    let found = common::poll(MINUTE, || async {
        api(w, k).get_opt(name).await.ok()??.metadata.uid
    })
    .await;
    found.unwrap_or_else(|| panic!("{} {name} was never created", k.kind()))
}

async fn delete(w: &World, k: Kind, name: &str) {
    api(w, k)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {} {name}: {e}", k.kind()));
}

/// Polls until `name` is gone; panics with its finalizers and Ready condition otherwise.
async fn assert_gone(w: &World, k: Kind, name: &str, within: Duration) {
    let gone = common::poll(within, || async {
        api(w, k).get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "still there {within:?} after delete: {}",
        ready_state(w, k, name).await
    );
}

/// The ids a status records: the current token and those waiting out their grace.
fn recorded(s: &CredentialStatus) -> Vec<String> {
    let mut ids: Vec<String> = s.token_id.iter().cloned().collect();
    ids.extend(s.previous_tokens.iter().map(|p| p.id.clone()));
    ids.sort();
    ids
}

/// The service accounts a status records as created by the operator (KB keys only).
fn recorded_service_accounts(s: &CredentialStatus) -> Vec<String> {
    let mut ids: Vec<String> = s
        .scope
        .iter()
        .chain(s.previous_tokens.iter().filter_map(|p| p.scope.as_ref()))
        .filter(|scope| scope.service_account_owned)
        .filter_map(|scope| scope.service_account_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Ids of the fake's service accounts whose title carries `uid`'s marker (those the operator
/// created for that resource; none for a personal token or a NUA key).
async fn marked_service_accounts(w: &World, uid: &str) -> Vec<String> {
    let mut ids: Vec<String> = w
        .admin("service_accounts")
        .await
        .as_array()
        .into_iter()
        .flatten()
        .filter(|sa| sa["title"].as_str().is_some_and(|t| t.contains(uid)))
        .filter_map(|sa| sa["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

/// What a deleted resource must leave behind with `deletionPolicy: Revoke`: nothing live at
/// the fake marked for it, no service account created for it, no Secret, and the token that
/// was last in its Secret refused.
async fn assert_nothing_left(w: &World, k: Kind, name: &str, uid: &str, token: &str) {
    let kind = k.kind();
    assert!(
        k.live(w, uid).await.is_empty(),
        "{kind} {name}: tokens left live at Nuclia after delete"
    );
    assert!(
        !k.works(w, token).await,
        "{kind} {name}: the last token is still accepted"
    );
    assert!(
        marked_service_accounts(w, uid).await.is_empty(),
        "{kind} {name}: a service account created for it is left"
    );
    let secret_gone = common::poll(Duration::from_secs(30), || async {
        w.secrets()
            .get_opt(name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(secret_gone.is_some(), "{kind} {name}: its Secret is left");
}

/// A world with the bootstrap PAT in Secret `login` (the operator not started).
async fn world(prefix: &str) -> World {
    let w = World::new(prefix).await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w
}

/// Asserts that no value the fake ever minted is in an Event of the namespace.
async fn assert_events_have_no_tokens(w: &World) {
    let events = w.events_text().await;
    let leaked = common::operator::minted_values(&w.http, &w.fake.url)
        .await
        .iter()
        .filter(|v| v.len() >= 8 && events.contains(v.as_str()))
        .count();
    assert_eq!(leaked, 0, "{leaked} token value(s) found in Events");
}

/// One `nuclia_operator_revocations_abandoned_total{kind}` value from the operator's /metrics.
async fn abandoned_metric(w: &World, kind: &str) -> Option<u64> {
    let series = format!("nuclia_operator_revocations_abandoned_total{{kind=\"{kind}\"}} ");
    w.metric(&series).await.map(|n| n as u64)
}

// ---- an issue cut short by a crash ----

/// Holds back the answer of each kind's first mint for 20 s after the fake has committed it
/// (the operator's Nuclia timeout is raised above that), so that the operator can be killed
/// between the mint and its record.
async fn hold_back_first_mints(w: &World) {
    let rules: Vec<Value> = KINDS
        .iter()
        .map(|k| {
            json!({"route": k.mint_route(), "latency_ms": 20_000, "latency_after_commit": true, "count": 1})
        })
        .collect();
    w.set_faults(Value::Array(rules)).await;
}

/// Applies one resource of each kind with their first mints held back, waits until the fake
/// has minted for all three, and SIGKILLs the operator: nothing is recorded yet. Returns each
/// kind's UID and the ids the fake minted for it.
async fn mint_then_crash(w: &mut World) -> Vec<(Kind, String, Vec<String>)> {
    hold_back_first_mints(w).await;
    w.start_operator(&["--nuclia-timeout", "60s"]);
    for k in KINDS {
        w.kubectl_apply(&k.manifest(w, k.name(), ""));
    }
    let mut minted = Vec::new();
    for k in KINDS {
        let uid = uid(w, k, k.name()).await;
        let ids = common::poll(MINUTE, || async {
            Some(k.live(w, &uid).await).filter(|ids| !ids.is_empty())
        })
        .await
        .unwrap_or_else(|| panic!("{}: the fake never minted", k.kind()));
        minted.push((k, uid, ids));
    }
    w.kill_operator();
    for k in KINDS {
        let s = status(w, k, k.name()).await.unwrap_or_default();
        assert!(
            s.token_id.is_none(),
            "{}: the mint was recorded before the crash (the answer came early)",
            k.kind()
        );
    }
    minted
}

/// Deleted while its first issue was interrupted (the operator killed after the fake minted,
/// before anything was recorded), the operator down meanwhile: after a restart each deletion
/// lists what is marked for the resource (the intent is unresolved), revokes it and releases
/// what it created, and the resource goes.
#[tokio::test]
async fn every_kind_interrupted_first_issue_leaks_nothing() {
    let mut w = world("every-cut").await;
    let minted = mint_then_crash(&mut w).await;
    for k in KINDS {
        delete(&w, k, k.name()).await;
    }
    w.start_operator(&[]);
    let restarted = tokio::time::Instant::now();
    let mut leaks = Vec::new();
    for (k, uid, ids) in &minted {
        // Once the intent is older than the intent grace (15 s).
        assert_gone(&w, *k, k.name(), Duration::from_secs(90)).await;
        let live = k.live(&w, uid).await;
        if !live.is_empty() {
            leaks.push(format!(
                "{}: token(s) {live:?} left live at Nuclia (the interrupted issue minted {ids:?})",
                k.kind()
            ));
        }
        let accounts = marked_service_accounts(&w, uid).await;
        if !accounts.is_empty() {
            leaks.push(format!(
                "{}: service account(s) {accounts:?} created for it left",
                k.kind()
            ));
        }
        assert!(w.secrets().get_opt(k.name()).await.unwrap().is_none());
    }
    assert!(
        leaks.is_empty(),
        "after the deletions: {}",
        leaks.join("; ")
    );
    println!(
        "interrupted first issues: all three deleted {:?} after the restart",
        restarted.elapsed()
    );
    w.assert_log_has_no_tokens().await;
}

/// SIGKILL between the mint and its record, then a restart: each resource becomes Ready and
/// the live tokens marked for it are exactly those its status records (the interrupted issue's
/// token adopted or revoked), and the service accounts created for it are those its status
/// records. Deleting it then revokes everything.
#[tokio::test]
async fn every_kind_crash_between_mint_and_record_leaks_nothing() {
    let mut w = world("every-crash").await;
    let minted = mint_then_crash(&mut w).await;
    w.start_operator(&[]);
    for (k, uid, orphan) in &minted {
        let kind = k.kind();
        wait(
            &w,
            *k,
            k.name(),
            Duration::from_secs(90),
            "Ready after restart",
            ready,
        )
        .await;
        let settled = common::poll(MINUTE, || async {
            let s = status(&w, *k, k.name()).await?;
            (ready(&s)
                && k.live(&w, uid).await == recorded(&s)
                && marked_service_accounts(&w, uid).await == recorded_service_accounts(&s))
            .then_some(())
        })
        .await;
        assert!(
            settled.is_some(),
            "{kind}: live marked tokens {:?} or service accounts {:?} differ from those the status records ({:?}); the interrupted issue minted {orphan:?}",
            k.live(&w, uid).await,
            marked_service_accounts(&w, uid).await,
            status(&w, *k, k.name())
                .await
                .map(|s| (recorded(&s), recorded_service_accounts(&s)))
        );
    }
    for (k, uid, _) in &minted {
        let token = w.secret_value(k.name(), TOKEN_KEY).await.unwrap();
        assert!(
            k.works(&w, &token).await,
            "{}: the Secret's token works",
            k.kind()
        );
        delete(&w, *k, k.name()).await;
        assert_gone(&w, *k, k.name(), MINUTE).await;
        assert_nothing_left(&w, *k, k.name(), uid, &token).await;
    }
    w.assert_log_has_no_tokens().await;
}

// ---- repair ----

/// Waits until `name` is Ready with a token none of `before`, which works; returns its id.
async fn wait_new_token(w: &World, k: Kind, name: &str, before: &[String], what: &str) -> String {
    let s = wait(w, k, name, MINUTE, what, |s| {
        ready(s) && s.token_id.as_ref().is_some_and(|t| !before.contains(t))
    })
    .await;
    let token = w.secret_value(name, TOKEN_KEY).await.unwrap();
    assert!(
        k.works(w, &token).await,
        "{}: {what}: the new token works",
        k.kind()
    );
    s.token_id.unwrap()
}

/// The Secret deleted: a new token. The Secret's token edited by hand: a new token. The token
/// revoked out of band (a NUA client deleted): re-issued at the next verification. Each time
/// Ready comes back with a working token, and the replaced ones are revoked after the grace;
/// deletion then revokes everything.
#[tokio::test]
async fn every_kind_repairs_secret_and_upstream_revocation() {
    let mut w = world("every-repair").await;
    w.start_operator(&[]);
    for k in KINDS {
        w.kubectl_apply(&k.manifest(&w, k.name(), "  rotation: {revokePreviousAfter: 2s}\n"));
    }
    let mut seen: Vec<(Kind, String, Vec<String>)> = Vec::new();
    for k in KINDS {
        let id = wait(&w, k, k.name(), MINUTE, "Ready", ready)
            .await
            .token_id
            .unwrap();
        seen.push((k, uid(&w, k, k.name()).await, vec![id]));
    }

    for (k, _, _) in &seen {
        w.secrets()
            .delete(k.name(), &DeleteParams::default())
            .await
            .unwrap();
    }
    for (k, _, ids) in &mut seen {
        ids.push(
            wait_new_token(&w, *k, k.name(), ids, "repair after the Secret was deleted").await,
        );
    }

    let edit = Patch::Merge(json!({"stringData": {TOKEN_KEY: "edited-by-hand"}}));
    for (k, _, _) in &seen {
        w.secrets()
            .patch(k.name(), &PatchParams::default(), &edit)
            .await
            .unwrap();
    }
    for (k, _, ids) in &mut seen {
        ids.push(wait_new_token(&w, *k, k.name(), ids, "repair after the Secret was edited").await);
    }

    let revoked_at = tokio::time::Instant::now();
    for (k, _, ids) in &seen {
        let token = w.secret_value(k.name(), TOKEN_KEY).await.unwrap();
        k.revoke_out_of_band(&w, ids.last().unwrap()).await;
        assert!(
            !k.works(&w, &token).await,
            "{}: revoked out of band",
            k.kind()
        );
    }
    for (k, _, ids) in &mut seen {
        // The harness verifies every 3 s.
        ids.push(
            wait_new_token(
                &w,
                *k,
                k.name(),
                ids,
                "re-issue after an out-of-band revocation",
            )
            .await,
        );
    }
    println!(
        "out-of-band revocations repaired within {:?} (verify interval 3 s)",
        revoked_at.elapsed()
    );

    for (k, uid, _) in &seen {
        let settled = common::poll(MINUTE, || async {
            let s = status(&w, *k, k.name()).await?;
            (s.previous_tokens.is_empty()
                && k.live(&w, uid).await == recorded(&s)
                && marked_service_accounts(&w, uid).await == recorded_service_accounts(&s))
            .then_some(())
        })
        .await;
        assert!(
            settled.is_some(),
            "{}: replaced tokens are still live after the grace ({:?} live)",
            k.kind(),
            k.live(&w, uid).await
        );
    }
    for (k, uid, _) in &seen {
        let token = w.secret_value(k.name(), TOKEN_KEY).await.unwrap();
        delete(&w, *k, k.name()).await;
        assert_gone(&w, *k, k.name(), MINUTE).await;
        assert_nothing_left(&w, *k, k.name(), uid, &token).await;
    }
    w.assert_log_has_no_tokens().await;
}

// ---- deletion when nothing can revoke ----

/// Nothing can revoke: the login Secret is deleted (a personal token could still revoke itself
/// with its own value, so Nuclia also answers 503 on its revoke route). Each deletion
/// retries until `--revoke-timeout` (5 s here), then lets the resource go with one
/// `RevokeAbandoned` Warning naming the token (and the metric counts it once); the token is left
/// valid. Then the clean-up by hand `docs/uninstall.md` describes: revoked at Nuclia, the
/// service account deleted.
#[tokio::test]
async fn every_kind_abandoned_deletion_is_bounded_and_reported() {
    let mut w = world("every-abandon").await;
    w.start_operator(&["--revoke-timeout", "5s"]);
    for k in KINDS {
        w.kubectl_apply(&k.manifest(&w, k.name(), ""));
    }
    let mut live = Vec::new();
    for k in KINDS {
        let s = wait(&w, k, k.name(), MINUTE, "Ready", ready).await;
        let token = w.secret_value(k.name(), TOKEN_KEY).await.unwrap();
        live.push((k, uid(&w, k, k.name()).await, s.token_id.unwrap(), token));
    }
    let refuse: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.revokes_itself())
        .map(|k| json!({"route": k.revoke_route(), "status": 503}))
        .collect();
    w.set_faults(Value::Array(refuse)).await;
    w.secrets()
        .delete("login", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = tokio::time::Instant::now();
    for k in KINDS {
        delete(&w, k, k.name()).await;
    }
    for (k, _, id, token) in &live {
        let kind = k.kind();
        // --revoke-timeout plus a margin for a loaded machine.
        assert_gone(&w, *k, k.name(), Duration::from_secs(45)).await;
        let reported = common::poll(MINUTE, || async {
            let events: Api<k8s_openapi::api::core::v1::Event> =
                Api::namespaced(w.client.clone(), &w.ns);
            let list = events.list(&Default::default()).await.ok()?;
            let abandoned: Vec<String> = list
                .items
                .into_iter()
                .filter(|e| {
                    e.involved_object.name.as_deref() == Some(k.name())
                        && e.involved_object.kind.as_deref() == Some(kind)
                        && e.reason.as_deref() == Some("RevokeAbandoned")
                })
                .filter_map(|e| e.message)
                .collect();
            (!abandoned.is_empty()).then_some(abandoned)
        })
        .await
        .unwrap_or_else(|| panic!("{kind}: no RevokeAbandoned Event"));
        assert_eq!(reported.len(), 1, "{kind}: one RevokeAbandoned Event");
        assert!(
            reported[0].contains(id.as_str()),
            "{kind}: the RevokeAbandoned Event names the token {id}"
        );
        assert!(
            k.works(&w, token).await,
            "{kind}: nothing could revoke it, yet it is refused"
        );
        assert!(
            w.secrets().get_opt(k.name()).await.unwrap().is_none(),
            "{kind}: the Secret goes with the resource"
        );
    }
    println!(
        "abandoned deletions: all three gone {:?} after delete (--revoke-timeout 5 s)",
        deleted.elapsed()
    );
    for k in KINDS {
        let counted = common::poll(Duration::from_secs(30), || async {
            abandoned_metric(&w, k.kind()).await.filter(|n| *n > 0)
        })
        .await;
        assert_eq!(
            counted,
            Some(1),
            "{}: nuclia_operator_revocations_abandoned_total counts the one token",
            k.kind()
        );
    }
    assert_events_have_no_tokens(&w).await;

    // The clean-up by hand.
    w.clear_faults().await;
    let (acc, kb) = (&w.fake.bootstrap.account_id, &w.fake.bootstrap.kbs[0].id);
    for (k, uid, id, token) in &live {
        k.revoke_out_of_band(&w, id).await;
        for sa in marked_service_accounts(&w, uid).await {
            let r = w
                .http
                .delete(format!(
                    "{}/api/v1/account/{acc}/kb/{kb}/service_account/{sa}",
                    w.fake.url
                ))
                .bearer_auth(&w.fake.bootstrap.pat)
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success(),
                "delete service account: {}",
                r.status()
            );
        }
        assert_nothing_left(&w, *k, k.name(), uid, token).await;
    }
    w.assert_log_has_no_tokens().await;
}

// ---- Orphan ----

/// `deletionPolicy: Orphan`, set at creation (`keep-*`) or just before the deletion
/// (`late-*`: the policy at deletion time counts): the token stays valid at Nuclia, the Secret
/// is kept (without its owner reference, deletable), a KB key's service account is kept. A
/// resource of the same kind on the same login (`*`, Revoke) is verified four more times
/// meanwhile and its orphan sweep leaves the kept tokens alone; its deletion revokes its own.
#[tokio::test]
async fn every_kind_orphan_is_kept() {
    let mut w = world("every-orphan").await;
    w.start_operator(&[]);
    let name = |prefix: &str, k: Kind| format!("{prefix}{}", k.name());
    for k in KINDS {
        w.kubectl_apply(&k.manifest(&w, &name("keep-", k), "  deletionPolicy: Orphan\n"));
        w.kubectl_apply(&k.manifest(&w, &name("late-", k), ""));
        w.kubectl_apply(&k.manifest(&w, k.name(), ""));
    }
    // (kind, name, uid, id, token) of each resource that is deleted with Orphan.
    let mut kept = Vec::new();
    for k in KINDS {
        for n in [name("keep-", k), name("late-", k)] {
            let s = wait(&w, k, &n, MINUTE, "Ready", ready).await;
            let token = w.secret_value(&n, TOKEN_KEY).await.unwrap();
            kept.push((
                k,
                n.clone(),
                uid(&w, k, &n).await,
                s.token_id.unwrap(),
                token,
            ));
        }
        wait(&w, k, k.name(), MINUTE, "Ready", ready).await;
    }
    let orphan = json!({"spec": {"deletionPolicy": "Orphan"}}).to_string();
    for k in KINDS {
        w.kubectl(&[
            "patch",
            k.short(),
            &name("late-", k),
            "--type=merge",
            "-p",
            &orphan,
        ]);
    }
    for (k, n, _, _, _) in &kept {
        delete(&w, *k, n).await;
    }
    for (k, n, _, _, _) in &kept {
        assert_gone(&w, *k, n, MINUTE).await;
    }

    // Each kind's remaining resource lists its scope at every verification (every 3 s here),
    // and its orphan sweep judges what it lists: wait for four more lists.
    for k in KINDS {
        let route = k.list_route();
        let before = w.calls_to(route).await;
        let verified = common::poll(MINUTE, || async {
            (w.calls_to(route).await >= before + 4).then_some(())
        })
        .await;
        assert!(
            verified.is_some(),
            "{}: not verified 4 times within a minute ({route}: {} calls, {before} before)",
            k.kind(),
            w.calls_to(route).await
        );
    }
    for (k, n, uid, id, token) in &kept {
        let kind = k.kind();
        assert_eq!(
            k.live(&w, uid).await,
            vec![id.clone()],
            "{kind} {n}: the kept token is live and nothing else"
        );
        assert!(k.works(&w, token).await, "{kind} {n}: the kept token works");
        let secret = w
            .secrets()
            .get_opt(n)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{kind} {n}: Orphan keeps the Secret"));
        assert!(
            secret
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty()),
            "{kind} {n}: the kept Secret still has an owner reference"
        );
        assert_eq!(
            w.secret_value(n, TOKEN_KEY).await.as_deref(),
            Some(token.as_str()),
            "{kind} {n}: the kept Secret holds the kept token"
        );
        if *k == Kind::KbKey {
            assert_eq!(
                marked_service_accounts(&w, uid).await.len(),
                1,
                "{kind} {n}: Orphan keeps the service account"
            );
        }
    }

    for k in KINDS {
        let uid = uid(&w, k, k.name()).await;
        let token = w.secret_value(k.name(), TOKEN_KEY).await.unwrap();
        delete(&w, k, k.name()).await;
        assert_gone(&w, k, k.name(), MINUTE).await;
        assert_nothing_left(&w, k, k.name(), &uid, &token).await;
    }
    for (k, n, _, _, token) in &kept {
        w.secrets()
            .delete(n, &DeleteParams::default())
            .await
            .unwrap();
        assert!(
            common::operator::gone_within(&w.secrets(), n, Duration::from_secs(30)).await,
            "{} {n}: the kept Secret cannot be deleted",
            k.kind()
        );
        assert!(
            k.works(&w, token).await,
            "{} {n}: the kept token stays valid",
            k.kind()
        );
    }
    w.assert_log_has_no_tokens().await;
}
