//! Rotation on the team's terms (issue 28): rotation windows and `spec.suspend`, with the
//! operator as a real process against the real apiserver and `nuclia-fake`. Windows are placed
//! relative to the real clock (one that opens hours from now, one open now), never waited for;
//! a token's renewal falls due seconds after its issue (`renewBefore` just under the lifetime),
//! or Nuclia caps its lifetime to a minute to bring the safety deadline close.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::operator::{HasStatus, World, gone_within, ready, reason, wait_status};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use nuclia_token_operator::crd::NucliaPersonalToken;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
const ZONE: &str = "America/New_York";

/// `t` as HH:MM on the wall clock of [`ZONE`], and the instant that wall time opens a window
/// on the local date of `t` (`t` cut to the minute).
fn wall_clock(t: DateTime<Utc>) -> (String, DateTime<Utc>) {
    let zoned = jiff::Timestamp::from_second(t.timestamp())
        .unwrap()
        .to_zoned(jiff::tz::TimeZoneDatabase::bundled().get(ZONE).unwrap());
    let hhmm = format!("{:02}:{:02}", zoned.hour(), zoned.minute());
    let open = t - chrono::Duration::seconds(i64::from(zoned.second()));
    (hhmm, DateTime::from_timestamp(open.timestamp(), 0).unwrap())
}

fn manifest(name: &str, renew_before: &str, windows: &str, extra: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {{name: {name}}}\nspec:\n  description: windows test\n  days: 1\n  renewBefore: {renew_before}\n  auth: {{secretRef: {{name: login}}}}\n  rotation:\n    revokePreviousAfter: 10s\n    windows: {windows}\n{extra}"
    )
}

fn window(start: &str, duration: &str) -> String {
    format!("[{{start: \"{start}\", duration: {duration}, timeZone: {ZONE}}}]")
}

async fn delete_and_check(w: &World, api: &Api<NucliaPersonalToken>, name: &str, uid: &str) {
    api.delete(name, &DeleteParams::default()).await.unwrap();
    assert!(
        gone_within(api, name, MINUTE).await,
        "{name} was not deleted"
    );
    assert!(
        w.live_marked(uid).await.is_empty(),
        "tokens of {name} left live at Nuclia after its deletion"
    );
    w.assert_log_has_no_tokens().await;
}

/// A renewal due outside every window waits (status and `kubectl get` say until when); once a
/// window is open it runs, and the token it replaced is revoked inside the window too.
#[tokio::test]
async fn a_renewal_waits_for_its_window() {
    let mut w = World::new("win-wait").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    // Opens six hours from now, in New York: the renewal, due ten seconds after the issue, waits.
    let (later, opens) = wall_clock(Utc::now() + chrono::Duration::hours(6));
    w.kubectl_apply(&manifest("held", "23h59m50s", &window(&later, "2h"), ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "held", MINUTE, "Ready", ready).await;
    let uid = api.get("held").await.unwrap().uid_str();
    assert_eq!(
        first.next_renewal,
        Some(opens),
        "status.nextRenewal is the window's opening"
    );
    assert!(first.renewal_time.unwrap() < opens);
    let held = wait_status(&api, "held", MINUTE, "the renewal waits", |s| {
        ready(s)
            && s.condition("Ready")
                .is_some_and(|c| c.message.contains("waits for the rotation window"))
    })
    .await;
    assert_eq!(
        held.token_id, first.token_id,
        "not renewed outside the window"
    );
    assert!(Utc::now() > held.renewal_time.unwrap());
    // kubectl get shows when it renews.
    let out = common::kubectl(&["-n", &w.ns, "get", "nucliapersonaltoken", "held"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    let shown = opens.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        table.contains("RENEWS") && table.contains(&shown),
        "{table}"
    );

    // A window open now (from half an hour ago, for three hours): the renewal runs.
    let (now_open, open) = wall_clock(Utc::now() - chrono::Duration::minutes(30));
    let patch = json!({"spec": {"rotation": {"windows": [
        {"start": now_open, "duration": "3h", "timeZone": ZONE}]}}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let renewed = wait_status(&api, "held", MINUTE, "renewed in the window", |s| {
        ready(s) && s.token_id != first.token_id
    })
    .await;
    let issued = renewed.issued_at.unwrap();
    let close = open + chrono::Duration::hours(3);
    assert!(
        open <= issued && issued < close,
        "renewed at {issued}, window {open}..{close}"
    );
    let replaced = renewed
        .previous_tokens
        .iter()
        .find(|p| Some(&p.id) == first.token_id.as_ref())
        .expect("the replaced token waits out its grace");
    assert!(replaced.in_window && replaced.revoke_at < close);
    let old = first.token_id.clone().unwrap();
    let revoked = common::poll(MINUTE, || async {
        (!w.credential_is_live(&old).await).then_some(())
    })
    .await;
    assert!(
        revoked.is_some(),
        "the replaced token was not revoked in the window"
    );
    delete_and_check(&w, &api, "held", &uid).await;
}

/// When no window opens before the safety deadline (halfway from the renewal time to expiry),
/// the renewal runs anyway and says so: Warning Event, condition message, metric.
#[tokio::test]
async fn a_renewal_runs_at_the_safety_deadline_when_no_window_comes() {
    let mut w = World::new("win-force").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    // Nuclia grants one minute: renewal at about 40 s, the safety deadline at about 50 s.
    w.set_faults(json!([{"route": "POST /api/v1/user/pa_tokens", "cap_expires_secs": 60}]))
        .await;
    w.start_operator(&[]);
    let (later, _) = wall_clock(Utc::now() + chrono::Duration::hours(6));
    w.kubectl_apply(&manifest("forced", "8h", &window(&later, "2h"), ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "forced", MINUTE, "Ready", ready).await;
    let uid = api.get("forced").await.unwrap().uid_str();
    let message = &first.condition("Ready").unwrap().message;
    assert!(
        message.contains("no rotation window has room for its renewal"),
        "{message}"
    );
    let (due, not_after) = (first.renewal_time.unwrap(), first.not_after.unwrap());
    assert_eq!(first.next_renewal, Some(due + (not_after - due) / 2));
    let renewed = wait_status(&api, "forced", MINUTE, "renewed at the deadline", |s| {
        ready(s) && s.token_id != first.token_id
    })
    .await;
    w.clear_faults().await;
    assert!(renewed.issued_at.unwrap() >= first.next_renewal.unwrap());
    let event = common::poll(Duration::from_secs(30), || async {
        w.event_reasons("forced")
            .await
            .iter()
            .any(|r| r == "RenewalOutsideWindow")
            .then_some(())
    })
    .await;
    assert!(event.is_some(), "{:?}", w.event_reasons("forced").await);
    let addr = common::operator::served_addr(&w.log_text()).expect("the metrics address");
    let metrics = w
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = metrics.lines().any(|l| {
        l.starts_with(
            r#"nuclia_operator_renewals_outside_window_total{kind="NucliaPersonalToken"} "#,
        ) && !l.ends_with(" 0")
    });
    assert!(counted, "the metric counts the forced renewal");
    delete_and_check(&w, &api, "forced", &uid).await;
}

/// A window too short for a renewal and its grace is refused with a message naming the field;
/// so is an unknown time zone.
#[tokio::test]
async fn windows_that_cannot_hold_a_renewal_are_refused() {
    let mut w = World::new("win-bad").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&manifest(
        "short",
        "8h",
        "[{start: \"02:00\", duration: 5m}]",
        "",
    ));
    w.kubectl_apply(&manifest(
        "zone",
        "8h",
        "[{start: \"02:00\", duration: 2h, timeZone: Mars/Olympus_Mons}]",
        "",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    for (name, field) in [
        ("short", "spec.rotation.windows[0].duration"),
        ("zone", "spec.rotation.windows[0].timeZone"),
    ] {
        let s = wait_status(&api, name, MINUTE, "InvalidSpec", |s| {
            reason(s).as_deref() == Some("InvalidSpec")
        })
        .await;
        let message = &s.condition("Ready").unwrap().message;
        assert!(message.contains(field), "{name}: {message}");
        let uid = api.get(name).await.unwrap().uid_str();
        assert!(
            w.all_marked(&uid).await.is_empty(),
            "{name}: nothing minted"
        );
        delete_and_check(&w, &api, name, &uid).await;
    }
}

/// `spec.suspend`: nothing is minted, rotated or repaired while it is true, the conditions say
/// so and stay truthful; resuming issues; deleting a suspended resource still revokes.
#[tokio::test]
async fn suspend_holds_everything_but_deletion() {
    let mut w = World::new("suspend").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    w.kubectl_apply(&manifest("paused", "8h", "[]", "  suspend: true\n"));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let suspended = |s: &nuclia_token_operator::crd::CredentialStatus| {
        s.condition("Suspended").is_some_and(|c| c.status == "True")
    };
    let s = wait_status(&api, "paused", MINUTE, "Suspended", suspended).await;
    let uid = api.get("paused").await.unwrap().uid_str();
    assert_eq!(reason(&s).as_deref(), Some("NotIssued"));
    assert!(
        w.all_marked(&uid).await.is_empty(),
        "nothing minted while suspended"
    );
    assert!(w.secrets().get_opt("paused").await.unwrap().is_none());

    let resume = |on: bool| Patch::Merge(json!({"spec": {"suspend": on}}));
    api.patch("paused", &PatchParams::default(), &resume(false))
        .await
        .unwrap();
    let live = wait_status(&api, "paused", MINUTE, "Ready", ready).await;
    assert!(!suspended(&live));

    // Suspended again with a rotation asked in the same write: nothing happens.
    let patch = json!({"metadata": {"annotations": {"nuclia.dev/rotate": "now"}},
                       "spec": {"suspend": true}});
    api.patch("paused", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let generation = api.get("paused").await.unwrap().metadata.generation;
    let held = wait_status(&api, "paused", MINUTE, "Suspended again", |s| {
        suspended(s) && s.observed_generation == generation
    })
    .await;
    assert_eq!(held.token_id, live.token_id, "no rotation while suspended");
    assert_eq!(held.next_renewal, None);
    assert!(ready(&held), "the token is still valid and in the Secret");
    // The Secret deleted: let go, not repaired; Ready says why.
    w.secrets()
        .delete("paused", &DeleteParams::default())
        .await
        .unwrap();
    let missing = wait_status(&api, "paused", MINUTE, "SecretMissing", |s| {
        reason(s).as_deref() == Some("SecretMissing")
    })
    .await;
    assert!(suspended(&missing));
    assert!(w.secrets().get_opt("paused").await.unwrap().is_none());
    assert_eq!(w.all_marked(&uid).await.len(), 1, "one token minted in all");
    // Deleting while suspended revokes.
    delete_and_check(&w, &api, "paused", &uid).await;
}
