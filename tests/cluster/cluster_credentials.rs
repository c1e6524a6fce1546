//! `NucliaClusterCredential` (issue 14) against the real kube-apiserver and `nuclia-fake` over
//! HTTP, the operator as a real process: a credential in the operator's namespace lent to the
//! KB keys of team namespaces under a policy (names, labels, role ceiling), refused elsewhere
//! (`CredentialNotAllowed`, nothing minted), a policy change, the credential rotated by a
//! `NucliaPersonalToken` of the operator's namespace, and deletion revoking through the cluster
//! credential. Every test deletes what it created, checks the keys are revoked and scans the
//! operator's log for token values.

use crate::common;

use std::time::Duration;

use common::operator::{World, ready, reason, wait_status};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use nuclia_token_operator::cluster_credential::{ClusterCredentialStatus, NucliaClusterCredential};
use nuclia_token_operator::crd::{CredentialStatus, NucliaKbApiKey, NucliaPersonalToken};

const MINUTE: Duration = Duration::from_secs(60);

/// A team namespace beside the world's (which plays the operator's namespace).
async fn team(w: &World, prefix: &str) -> String {
    common::namespace(&w.client, prefix).await
}

fn apply_in(ns: &str, yaml: &str) {
    let out = common::kubectl(&["apply", "-n", ns, "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn apply_cluster(yaml: &str) {
    let out = common::kubectl(&["apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn secret_in(w: &World, ns: &str, name: &str, key: &str, value: &str) {
    let s: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}
    }))
    .unwrap();
    Api::<Secret>::namespaced(w.client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .expect("create Secret");
}

async fn value_in(w: &World, ns: &str, name: &str, key: &str) -> Option<String> {
    let s = Api::<Secret>::namespaced(w.client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    String::from_utf8(s.data?.get(key)?.0.clone()).ok()
}

/// A KB key in `ns` minting through cluster credential `cc`.
fn kb_via(name: &str, kb_url: &str, cc: &str, extra: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: {name}}}\nspec:\n  kbUrl: {kb_url}\n  days: 1\n  auth: {{clusterCredentialRef: {{name: {cc}}}}}\n  rotation: {{revokePreviousAfter: 2s}}\n{extra}"
    )
}

fn not_allowed(s: &CredentialStatus) -> bool {
    reason(s).as_deref() == Some("CredentialNotAllowed")
        && s.condition("Stalled").is_some_and(|c| c.status == "True")
}

async fn delete_kb(api: &Api<NucliaKbApiKey>, name: &str) {
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "{name}: the finalizer never let it go");
}

/// Polls the cluster credential's status until `check` accepts it.
async fn wait_cc<F>(w: &World, name: &str, what: &str, check: F) -> ClusterCredentialStatus
where
    F: Fn(&ClusterCredentialStatus) -> bool,
{
    let api: Api<NucliaClusterCredential> = Api::all(w.client.clone());
    let found = common::poll(MINUTE, || async {
        let s = api.get_opt(name).await.ok()??.status?;
        check(&s).then_some(s)
    })
    .await;
    match found {
        Some(s) => s,
        None => panic!(
            "{name}: timed out waiting for {what}; last: {:?}",
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|o| o.status)
        ),
    }
}

fn cc_ready(s: &ClusterCredentialStatus) -> Option<(String, String)> {
    let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn delete_namespace(w: &World, ns: &str) {
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(w.client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
}

/// Two team namespaces, one allowed by name and one not; the role ceiling; the team's own Secret
/// of the same name as the cluster credential's is never used; a namespace labelled into the
/// policy is served; a namespace removed from it keeps its key (revoked at deletion, through
/// the cluster credential) but gets no new one.
#[tokio::test]
async fn cluster_credential_policy_namespaces_and_role_ceiling() {
    let mut w = World::new("cc-ops").await;
    let ops = w.ns.clone();
    let a = team(&w, "cc-team-a").await;
    let b = team(&w, "cc-team-b").await;
    let cc = format!("{ops}-admin");
    let label = format!("nuclia-{}", &ops[ops.len() - 8..]);
    w.create_secret("admin-login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    // Team b's own Secret of the same name holds garbage: it must never be read.
    secret_in(&w, &b, "admin-login", "token", "not-a-real-token").await;
    apply_cluster(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {cc}}}\nspec:\n  secretRef: {{name: admin-login}}\n  policy:\n    namespaces: [{a}]\n    namespaceSelector: {{matchLabels: {{{label}: allowed}}}}\n    maxRole: SCONTRIBUTOR\n"
    ));
    // The world's operator watches its own namespace; these are added to it.
    let namespaces = format!("{a},{b}");
    w.start_operator(&[
        "--watch-namespaces",
        &namespaces,
        "--cluster-credential-namespace",
        &ops,
    ]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let api_a: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &a);
    let api_b: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &b);

    // Allowed namespace, allowed role.
    apply_in(
        &a,
        &kb_via("reader", &kb_url, &cc, "  role: SCONTRIBUTOR\n"),
    );
    let s = wait_status(&api_a, "reader", MINUTE, "Ready", ready).await;
    assert_eq!(
        s.scope
            .as_ref()
            .and_then(|s| s.cluster_credential.as_deref()),
        Some(cc.as_str()),
        "the scope records the cluster credential"
    );
    let key_a = value_in(&w, &a, "reader", "token").await.unwrap();
    assert!(w.kb_key_works(&kb_url, &key_a).await);

    // The cluster credential's own status: valid upstream, used by team a.
    let st = wait_cc(&w, &cc, "Ready, used by team a", |s| {
        cc_ready(s) == Some(("True".into(), "CredentialValid".into()))
            && s.namespaces == vec![a.clone()]
    })
    .await;
    assert!(st.last_verified.is_some());

    // Above the ceiling: refused, nothing minted.
    apply_in(&a, &kb_via("owner", &kb_url, &cc, "  role: SOWNER\n"));
    let s = wait_status(&api_a, "owner", MINUTE, "CredentialNotAllowed", not_allowed).await;
    assert!(s.token_id.is_none(), "nothing minted above the ceiling");
    let msg = s.condition("Ready").unwrap().message.clone();
    assert!(
        msg.contains("SCONTRIBUTOR") && msg.contains("SOWNER"),
        "{msg}"
    );

    // A namespace the policy does not name: refused, nothing minted, its own Secret unused.
    apply_in(&b, &kb_via("intruder", &kb_url, &cc, ""));
    let s = wait_status(
        &api_b,
        "intruder",
        MINUTE,
        "CredentialNotAllowed",
        not_allowed,
    )
    .await;
    assert!(s.token_id.is_none());
    assert!(
        value_in(&w, &b, "intruder", "token").await.is_none(),
        "no Secret written"
    );
    let msg = s.condition("Ready").unwrap().message.clone();
    assert!(
        msg.contains(&b) && !msg.contains("not-a-real-token"),
        "{msg}"
    );

    // Labelled into the policy: served, with the operator namespace's credential (team b's
    // garbage Secret of the same name would have been refused by Nuclia).
    common::kubectl(
        &["label", "namespace", &b, &format!("{label}=allowed")],
        None,
    );
    let s = wait_status(&api_b, "intruder", MINUTE, "Ready once labelled", ready).await;
    let id_b = s.token_id.clone().unwrap();
    let key_b = value_in(&w, &b, "intruder", "token").await.unwrap();
    assert!(w.kb_key_works(&kb_url, &key_b).await);

    // Team a removed from the policy: its key is kept, but no new one is minted.
    let id_a = api_a
        .get("reader")
        .await
        .unwrap()
        .status
        .unwrap()
        .token_id
        .clone()
        .unwrap();
    apply_cluster(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {cc}}}\nspec:\n  secretRef: {{name: admin-login}}\n  policy:\n    namespaceSelector: {{matchLabels: {{{label}: allowed}}}}\n    maxRole: SCONTRIBUTOR\n"
    ));
    common::kubectl(
        &[
            "-n",
            &a,
            "annotate",
            "nkak",
            "reader",
            "nuclia.dev/rotate=1",
        ],
        None,
    );
    let s = wait_status(&api_a, "reader", MINUTE, "rotation refused", |s| {
        s.condition("Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "CredentialNotAllowed")
    })
    .await;
    assert_eq!(s.token_id.as_deref(), Some(id_a.as_str()), "no new key");
    assert!(
        w.kb_key_works(&kb_url, &key_a).await,
        "the existing key is kept"
    );

    // Deletion revokes through the cluster credential, allowed or not any more.
    delete_kb(&api_a, "reader").await;
    delete_kb(&api_a, "owner").await;
    delete_kb(&api_b, "intruder").await;
    assert!(
        !w.kb_key_works(&kb_url, &key_a).await,
        "team a's key revoked"
    );
    assert!(
        !w.kb_key_works(&kb_url, &key_b).await,
        "team b's key revoked"
    );
    assert!(!w.credential_is_live(&id_b).await);
    tear_down(&mut w, &cc, &[&a, &b]).await;
}

/// The cluster credential's Secret is written by a self-renewing `NucliaPersonalToken` in the
/// operator's namespace: it rotates (the first PAT revoked) and the team's KB key keeps working
/// and rotates with the new one. Hostile: an empty selector allows nothing, and a cluster
/// credential whose Secret exists only in the team's namespace is not found.
#[tokio::test]
async fn cluster_credential_rotated_by_a_personal_token() {
    let mut w = World::new("cc-rot").await;
    let ops = w.ns.clone();
    let t = team(&w, "cc-team").await;
    let cc = format!("{ops}-pat");
    let everyone = format!("{ops}-empty-selector");
    let elsewhere = format!("{ops}-elsewhere");
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    secret_in(&w, &t, "team-login", "token", &w.fake.bootstrap.pat.clone()).await;
    w.kubectl_apply(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {name: admin}\nspec:\n  description: cluster admin\n  days: 1\n  renewBefore: 23h59m52s\n  rotation: {revokePreviousAfter: 2s}\n  auth: {secretRef: {name: login}, selfRenew: true}\n  secret: {name: admin-pat}\n",
    );
    apply_cluster(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {cc}}}\nspec:\n  secretRef: {{name: admin-pat}}\n  policy: {{namespaces: [{t}]}}\n---\napiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {everyone}}}\nspec:\n  secretRef: {{name: admin-pat}}\n  policy: {{namespaceSelector: {{}}}}\n---\napiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {elsewhere}}}\nspec:\n  secretRef: {{name: team-login}}\n  policy: {{namespaces: [{t}]}}\n"
    ));
    let namespaces = t.clone();
    w.start_operator(&[
        "--watch-namespaces",
        &namespaces,
        "--cluster-credential-namespace",
        &ops,
    ]);
    let pts: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &ops);
    let p1 = wait_status(&pts, "admin", MINUTE, "PAT Ready", ready).await;
    let pat1 = w.secret_value("admin-pat", "token").await.unwrap();
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &t);
    apply_in(&t, &kb_via("kb", &kb_url, &cc, ""));
    let k1 = wait_status(&api, "kb", MINUTE, "KB key Ready", ready).await;
    let id1 = k1.token_id.clone().unwrap();
    let key1 = value_in(&w, &t, "kb", "token").await.unwrap();

    // Hostile: an empty selector selects nothing; a Secret outside the operator's namespace.
    // Both credential sources, or none: refused with what to fix.
    apply_in(
        &t,
        &format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: both}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{secretRef: {{name: team-login}}, clusterCredentialRef: {{name: {cc}}}}}\n---\napiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: neither}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{}}\n"
        ),
    );
    for (name, want) in [("both", "both"), ("neither", "no credential")] {
        let s = wait_status(&api, name, MINUTE, "InvalidSpec", |s| {
            reason(s).as_deref() == Some("InvalidSpec")
        })
        .await;
        let msg = s.condition("Ready").unwrap().message.clone();
        assert!(msg.contains(want) && s.token_id.is_none(), "{msg}");
    }
    apply_in(&t, &kb_via("all", &kb_url, &everyone, ""));
    apply_in(&t, &kb_via("wrong-ns", &kb_url, &elsewhere, ""));
    let s = wait_status(&api, "all", MINUTE, "CredentialNotAllowed", not_allowed).await;
    assert!(s.token_id.is_none());
    let s = wait_status(&api, "wrong-ns", MINUTE, "CredentialsMissing", |s| {
        reason(s).as_deref() == Some("CredentialsMissing")
    })
    .await;
    assert!(s.token_id.is_none());
    let msg = s.condition("Ready").unwrap().message.clone();
    assert!(msg.contains(&ops) && msg.contains("cluster admin"), "{msg}");
    // Their status says so too: a missing Secret, and a policy that allows nothing.
    wait_cc(
        &w,
        &elsewhere,
        "CredentialsMissing, used by the team",
        |s| {
            cc_ready(s) == Some(("False".into(), "CredentialsMissing".into()))
                && s.namespaces == vec![t.clone()]
        },
    )
    .await;
    wait_cc(&w, &everyone, "allows no namespace", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.message.contains("allows no namespace"))
    })
    .await;
    // A credential Nuclia refuses.
    w.create_secret("revoked-login", "token", "nuclia-pat-revoked-0000")
        .await;
    let refused = format!("{ops}-refused");
    apply_cluster(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {refused}}}\nspec:\n  secretRef: {{name: revoked-login}}\n  policy: {{namespaces: [{t}]}}\n"
    ));
    wait_cc(&w, &refused, "Unauthorized", |s| {
        cc_ready(s) == Some(("False".into(), "Unauthorized".into()))
    })
    .await;

    // The PAT rotates and the first one is revoked; the KB key keeps working and rotates.
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
    assert!(
        w.kb_key_works(&kb_url, &key1).await,
        "the KB key still works"
    );
    common::kubectl(
        &["-n", &t, "annotate", "nkak", "kb", "nuclia.dev/rotate=1"],
        None,
    );
    let k2 = wait_status(&api, "kb", MINUTE, "KB key rotated", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let key2 = value_in(&w, &t, "kb", "token").await.unwrap();
    assert!(w.kb_key_works(&kb_url, &key2).await);
    let old_gone = common::poll(MINUTE, || async {
        (!w.kb_key_works(&kb_url, &key1).await).then_some(())
    })
    .await;
    assert!(
        old_gone.is_some(),
        "the replaced key is revoked after its grace"
    );

    // Clean up: KB keys first (revoked with the cluster credential), then the PAT.
    for name in ["kb", "all", "wrong-ns", "both", "neither"] {
        delete_kb(&api, name).await;
    }
    assert!(
        !w.kb_key_works(&kb_url, &key2).await,
        "the KB key is revoked"
    );
    assert!(!w.credential_is_live(k2.token_id.as_ref().unwrap()).await);
    let pat2 = w.secret_value("admin-pat", "token").await.unwrap();
    pts.delete("admin", &DeleteParams::default()).await.unwrap();
    let gone = common::poll(MINUTE, || async {
        pts.get_opt("admin").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some());
    assert!(!w.pat_works(&pat2).await, "the PAT is revoked");
    let ccs: Api<NucliaClusterCredential> = Api::all(w.client.clone());
    for name in [&cc, &everyone, &elsewhere, &refused] {
        ccs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    w.kill_operator();
    delete_namespace(&w, &t).await;
    w.assert_log_has_no_tokens().await;
}

/// A NUA key as the cluster credential (sent as `X-NUCLIA-NUAKEY`, whatever the KB key's own
/// `auth.type`): minted and revoked with it. Then an operator started with
/// `--cluster-credentials=false` refuses a resource that names one.
#[tokio::test]
async fn cluster_credential_of_a_nua_key_and_turned_off() {
    let mut w = World::new("cc-nua").await;
    let ops = w.ns.clone();
    let t = team(&w, "cc-nua-team").await;
    let cc = format!("{ops}-nua");
    w.create_secret("nua", "key", &w.fake.bootstrap.nua_key.clone())
        .await;
    apply_cluster(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {cc}}}\nspec:\n  secretRef: {{name: nua, key: key}}\n  type: NuaKey\n  policy: {{namespaces: [{t}]}}\n"
    ));
    w.start_operator(&[
        "--watch-namespaces",
        &t,
        "--cluster-credential-namespace",
        &ops,
    ]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &t);
    apply_in(&t, &kb_via("kb", &kb_url, &cc, ""));
    let s = wait_status(&api, "kb", MINUTE, "Ready with the NUA key", ready).await;
    let id = s.token_id.clone().unwrap();
    let key = value_in(&w, &t, "kb", "token").await.unwrap();
    assert!(w.kb_key_works(&kb_url, &key).await);
    wait_cc(&w, &cc, "Ready", |s| {
        cc_ready(s) == Some(("True".into(), "CredentialValid".into()))
    })
    .await;
    delete_kb(&api, "kb").await;
    assert!(
        !w.kb_key_works(&kb_url, &key).await,
        "revoked with the NUA key"
    );
    assert!(!w.credential_is_live(&id).await);

    w.kill_operator();
    w.start_operator(&["--watch-namespaces", &t, "--cluster-credentials=false"]);
    apply_in(&t, &kb_via("turned-off", &kb_url, &cc, ""));
    let s = wait_status(
        &api,
        "turned-off",
        MINUTE,
        "CredentialNotAllowed",
        not_allowed,
    )
    .await;
    assert!(s.token_id.is_none());
    let msg = s.condition("Ready").unwrap().message.clone();
    assert!(msg.contains("turned off"), "{msg}");
    delete_kb(&api, "turned-off").await;
    let ccs: Api<NucliaClusterCredential> = Api::all(w.client.clone());
    ccs.delete(&cc, &DeleteParams::default()).await.unwrap();
    w.kill_operator();
    delete_namespace(&w, &t).await;
    w.assert_log_has_no_tokens().await;
}

/// `nuclia.dev/reissue-minted` on a cluster credential (issue 28, item 3): the cluster admin
/// replaces its login and marks the `NucliaClusterCredential`; every key minted with it, in
/// every namespace, re-issues with the new login and the old keys are refused at once. Then the
/// same through a mark on its Secret. An Event on its Secret counts the re-issues.
#[tokio::test]
async fn a_marked_cluster_credential_reissues_every_key_minted_with_it() {
    let mut w = World::new("cc-leak").await;
    let ops = w.ns.clone();
    let bootstrap = w.fake.bootstrap.pat.clone();
    let (cc, a, b) = lent_to_two(&mut w, "leak", "", &[]).await;
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let apis = [
        (
            a.clone(),
            Api::<NucliaKbApiKey>::namespaced(w.client.clone(), &a),
        ),
        (
            b.clone(),
            Api::<NucliaKbApiKey>::namespaced(w.client.clone(), &b),
        ),
    ];
    for (ns, _) in &apis {
        apply_in(ns, &kb_via("search", &kb_url, &cc, ""));
    }
    let ccs: Api<NucliaClusterCredential> = Api::all(w.client.clone());
    for (round, mark, on_object) in [(1, "leak-1", true), (2, "leak-2", false)] {
        let mut old = Vec::new();
        for (ns, api) in &apis {
            let s = wait_status(api, "search", MINUTE, "Ready", ready).await;
            let value = value_in(&w, ns, "search", "token").await.unwrap();
            assert!(w.kb_key_works(&kb_url, &value).await);
            old.push((s.token_id.clone(), value));
        }
        // The admin replaces the login and marks it.
        let fresh = w
            .mint_pat(
                &bootstrap,
                serde_json::json!({"description": format!("new admin login {round}"), "days": 30}),
            )
            .await;
        let fresh = fresh["token"].as_str().expect("a new PAT").to_owned();
        // The admin replaces the login, then marks the cluster credential (or its Secret).
        let merge = |v: serde_json::Value| kube::api::Patch::Merge(v);
        let value = serde_json::json!({"stringData": {"token": fresh}});
        w.secrets()
            .patch("admin-login", &Default::default(), &merge(value))
            .await
            .unwrap();
        let annotation =
            serde_json::json!({"metadata": {"annotations": {"nuclia.dev/reissue-minted": mark}}});
        if on_object {
            ccs.patch(&cc, &Default::default(), &merge(annotation))
                .await
                .unwrap();
        } else {
            w.secrets()
                .patch("admin-login", &Default::default(), &merge(annotation))
                .await
                .unwrap();
        }
        let want = match round {
            1 => "NucliaClusterCredential=leak-1".to_owned(),
            _ => "leak-2; NucliaClusterCredential=leak-1".to_owned(),
        };
        for ((ns, api), (old_id, old_value)) in apis.iter().zip(&old) {
            let s = wait_status(api, "search", MINUTE, "re-issued", |s| {
                ready(s)
                    && s.token_id != *old_id
                    && s.reissue_handled.as_deref() == Some(want.as_str())
            })
            .await;
            assert!(s.token_id.is_some());
            let refused = common::poll(MINUTE, || async {
                (!w.kb_key_works(&kb_url, old_value).await).then_some(())
            })
            .await;
            assert!(
                refused.is_some(),
                "{ns}: the old key is refused at once (round {round})"
            );
            let new = value_in(&w, ns, "search", "token").await.unwrap();
            assert!(
                w.kb_key_works(&kb_url, &new).await,
                "{ns}: the new key works"
            );
            let reasons = common::poll(Duration::from_secs(30), || async {
                let events: Api<k8s_openapi::api::events::v1::Event> =
                    Api::namespaced(w.client.clone(), ns);
                let list = events.list(&Default::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("CredentialReissued"))
                    .then_some(())
            })
            .await;
            assert!(reasons.is_some(), "{ns}: a CredentialReissued Event");
        }
        // The Event on the cluster credential's Secret counts both.
        let counted = common::poll(Duration::from_secs(30), || async {
            let events: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(w.client.clone(), &ops);
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("ReissueProgress"))
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("admin-login")
                })
                .filter_map(|e| e.note.clone())
                .find(|n| {
                    n.contains(mark) && n.contains("2 credential(s)") && n.contains("0 failed")
                })
        })
        .await;
        assert!(
            counted.is_some(),
            "round {round}: the cluster credential's Event counts both keys"
        );
    }
    for (ns, api) in &apis {
        let id = api
            .get("search")
            .await
            .unwrap()
            .status
            .unwrap()
            .token_id
            .clone()
            .unwrap();
        delete_kb(api, "search").await;
        assert!(
            !w.credential_is_live(&id).await,
            "{ns}: revoked at deletion"
        );
    }
    tear_down(&mut w, &cc, &[&a, &b]).await;
}

/// A mint refused by `quota`: `Issuing=False` says so; `Ready` stays True while a key is held.
fn quota_exceeded(s: &CredentialStatus, quota: &str) -> bool {
    s.condition("Issuing").is_some_and(|c| {
        c.status == "False" && c.reason == "QuotaExceeded" && c.message.contains(quota)
    })
}

/// Two team namespaces and a cluster credential `<ops>-<suffix>` over the Secret
/// `admin-login` (the bootstrap PAT) lent to both, its policy with the `policy` fields added
/// (flow style); the operator watches them, started with `operator` flags added.
async fn lent_to_two(
    w: &mut World,
    suffix: &str,
    policy: &str,
    operator: &[&str],
) -> (String, String, String) {
    let ops = w.ns.clone();
    let a = team(w, &format!("cc-{suffix}-a")).await;
    let b = team(w, &format!("cc-{suffix}-b")).await;
    let cc = format!("{ops}-{suffix}");
    w.create_secret("admin-login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    let more = if policy.is_empty() {
        String::new()
    } else {
        format!(", {policy}")
    };
    apply_cluster(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {cc}}}\nspec:\n  secretRef: {{name: admin-login}}\n  policy: {{namespaces: [{a}, {b}]{more}}}\n"
    ));
    let namespaces = format!("{a},{b}");
    let mut args = vec![
        "--watch-namespaces",
        namespaces.as_str(),
        "--cluster-credential-namespace",
        ops.as_str(),
    ];
    args.extend_from_slice(operator);
    w.start_operator(&args);
    (cc, a, b)
}

/// The end of a cluster credential test: the cluster credential deleted (after its users),
/// the operator stopped, the team namespaces deleted, and no token value in the log.
async fn tear_down(w: &mut World, cc: &str, teams: &[&str]) {
    let ccs: Api<NucliaClusterCredential> = Api::all(w.client.clone());
    ccs.delete(cc, &DeleteParams::default()).await.unwrap();
    w.kill_operator();
    for t in teams {
        delete_namespace(w, t).await;
    }
    w.assert_log_has_no_tokens().await;
}

/// Tenant quotas (issue 28, item 4): at most one key per namespace (a second resource waits,
/// `QuotaExceeded`, nothing minted; another namespace is not affected) and at most three
/// mints per namespace per hour (a third rotation is refused, the key in place kept). Usage in
/// the cluster credential's status and in metrics.
#[tokio::test]
async fn cluster_credential_quotas_hold_each_namespace_to_its_share() {
    let mut w = World::new("cc-quota").await;
    let (cc, a, b) = lent_to_two(
        &mut w,
        "quota",
        "maxKeysPerNamespace: 1, maxIssuesPerNamespacePerHour: 3",
        &["--min-issue-interval", "1s"],
    )
    .await;
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let api_a: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &a);
    let api_b: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &b);
    apply_in(&a, &kb_via("first", &kb_url, &cc, ""));
    let first = wait_status(&api_a, "first", MINUTE, "Ready", ready).await;
    apply_in(&a, &kb_via("second", &kb_url, &cc, ""));
    apply_in(&b, &kb_via("other", &kb_url, &cc, ""));
    let s = wait_status(&api_a, "second", MINUTE, "QuotaExceeded (keys)", |s| {
        quota_exceeded(s, "maxKeysPerNamespace")
    })
    .await;
    assert!(s.token_id.is_none(), "nothing minted beyond the key quota");
    assert_eq!(
        reason(&s).as_deref(),
        Some("QuotaExceeded"),
        "Ready=False says why"
    );
    assert!(value_in(&w, &a, "second", "token").await.is_none());
    wait_status(&api_b, "other", MINUTE, "Ready (its own share)", ready).await;

    // Two rotations fit in the hour (three mints); the third is refused, the key kept.
    let rotate = |n: u32| {
        let value = format!("nuclia.dev/rotate={n}");
        let args = ["-n", &a, "annotate", "--overwrite", "nkak", "first", &value];
        assert!(common::kubectl(&args, None).status.success());
    };
    let mut id = first.token_id.clone();
    for n in 1..=2 {
        rotate(n);
        let s = wait_status(&api_a, "first", MINUTE, "rotated", |s| {
            ready(s) && s.token_id != id
        })
        .await;
        id = s.token_id.clone();
    }
    let key = value_in(&w, &a, "first", "token").await.unwrap();
    rotate(3);
    let s = wait_status(&api_a, "first", MINUTE, "QuotaExceeded (issues)", |s| {
        quota_exceeded(s, "maxIssuesPerNamespacePerHour")
    })
    .await;
    assert_eq!(s.token_id, id, "no fourth mint in the hour");
    assert!(ready(&s), "Ready: the key in place works");
    assert!(
        w.kb_key_works(&kb_url, &key).await,
        "the key in place is kept"
    );

    // Usage, in status and metrics.
    let st = wait_cc(&w, &cc, "usage of both namespaces", |s| {
        let of = |ns: &str| {
            s.usage
                .iter()
                .find(|u| u.namespace == ns)
                .map(|u| (u.keys, u.issues_last_hour))
        };
        of(&a) == Some((1, 3)) && of(&b) == Some((1, 1))
    })
    .await;
    assert_eq!(st.usage.len(), 2);
    let keys = w
        .metric(&format!(
            "nuclia_cluster_credential_keys{{credential=\"{cc}\",namespace=\"{a}\"}}"
        ))
        .await;
    assert_eq!(keys, Some(1.0));
    for quota in ["maxKeysPerNamespace", "maxIssuesPerNamespacePerHour"] {
        let refused = w.metric(
            &format!("nuclia_cluster_credential_quota_exceeded_total{{credential=\"{cc}\",namespace=\"{a}\",quota=\"{quota}\"}}"),
        )
        .await;
        assert!(refused.is_some_and(|n| n >= 1.0), "{quota}: {refused:?}");
    }

    // The first key goes: the second resource's place is free, but the hour's mints are
    // spent, so it still waits, now for the hour.
    let old = first.token_id.clone().unwrap();
    delete_kb(&api_a, "first").await;
    assert!(!w.credential_is_live(&old).await);
    assert!(
        !w.credential_is_live(id.as_deref().unwrap()).await,
        "revoked at deletion"
    );
    let s = wait_status(&api_a, "second", MINUTE, "QuotaExceeded (issues)", |s| {
        quota_exceeded(s, "maxIssuesPerNamespacePerHour")
    })
    .await;
    assert!(s.token_id.is_none());

    let other = api_b
        .get("other")
        .await
        .unwrap()
        .status
        .unwrap()
        .token_id
        .clone()
        .unwrap();
    delete_kb(&api_a, "second").await;
    delete_kb(&api_b, "other").await;
    assert!(!w.credential_is_live(&other).await);
    tear_down(&mut w, &cc, &[&a, &b]).await;
}

/// The shared budget (issue 28, item 4): with a slow per-credential rate, one namespace asks
/// for a dozen keys through the cluster credential at once; another namespace's single key is
/// minted, and then revoked, while most of the busy namespace's keys still wait. Without turns
/// by namespace it would queue behind all of them.
#[tokio::test]
async fn a_busy_namespace_does_not_hold_up_another_on_a_shared_credential() {
    let mut w = World::new("cc-fair").await;
    let (cc, busy, quiet) = lent_to_two(
        &mut w,
        "fair",
        "",
        &["--nuclia-rps", "2", "--nuclia-burst", "1"],
    )
    .await;
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let api_busy: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &busy);
    let api_quiet: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &quiet);
    const BUSY: usize = 12;
    let manifests: Vec<String> = (0..BUSY)
        .map(|i| kb_via(&format!("k{i}"), &kb_url, &cc, ""))
        .collect();
    apply_in(&busy, &manifests.join("---\n"));
    // The busy namespace's calls are queued (some of its keys are not Ready yet).
    let queued = common::poll(MINUTE, || async {
        let n = w
            .metric(&format!(
                "nuclia_api_rate_limit_wait_seconds_total{{namespace=\"{busy}\"}}"
            ))
            .await?;
        (n > 0.0).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the busy namespace waits for the budget");
    apply_in(&quiet, &kb_via("one", &kb_url, &cc, ""));
    let s = wait_status(&api_quiet, "one", Duration::from_secs(120), "Ready", ready).await;
    let not_ready = |list: Vec<NucliaKbApiKey>| {
        list.iter()
            .filter(|k| !k.status.as_ref().is_some_and(|s| ready(s)))
            .count()
    };
    let waiting = not_ready(api_busy.list(&Default::default()).await.unwrap().items);
    assert!(
        waiting >= BUSY / 2,
        "the quiet namespace's key was minted after most of the busy one's ({waiting} of {BUSY} still waiting)"
    );
    // Its revocation does not wait for them either.
    let id = s.token_id.clone().unwrap();
    delete_kb(&api_quiet, "one").await;
    assert!(!w.credential_is_live(&id).await);
    let waiting = not_ready(api_busy.list(&Default::default()).await.unwrap().items);
    assert!(
        waiting > 0,
        "deleted while the busy namespace still waits ({waiting} of {BUSY})"
    );

    let ids: Vec<String> = {
        for i in 0..BUSY {
            wait_status(
                &api_busy,
                &format!("k{i}"),
                Duration::from_secs(180),
                "Ready",
                ready,
            )
            .await;
        }
        api_busy
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|k| k.status?.token_id.clone())
            .collect()
    };
    for i in 0..BUSY {
        api_busy
            .delete(&format!("k{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    for i in 0..BUSY {
        assert!(
            common::operator::gone_within(&api_busy, &format!("k{i}"), Duration::from_secs(180))
                .await
        );
    }
    for id in ids {
        assert!(!w.credential_is_live(&id).await);
    }
    tear_down(&mut w, &cc, &[&busy, &quiet]).await;
}
