//! The soak's deletions (issue 16), made during its faults and crashes:
//! - resources of both kinds in the soak's namespace, some with `deletionPolicy: Orphan`, deleted
//!   at random moments (an Orphan resource once it is Ready, its token id and value recorded
//!   from its status and Secret first);
//! - extra namespaces, each holding a login Secret, a `NucliaPersonalToken` minted with it and a
//!   `NucliaKbApiKey` authenticated by that token's Secret, created and then deleted whole (the
//!   namespace controller deletes the login Secret and the token's Secret beside the resources).
//!
//! Each deletion is a task of its own that records when its object was gone; a poller keeps
//! every `RevokeAbandoned` Event, including those of namespaces deleted since.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Resource};
use nuclia_token_operator::crd::{NucliaKbApiKey, NucliaPersonalToken};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Kind, SamplerStats, accepted, kb_spec, merged, pt_spec};
use crate::common;
use crate::common::operator::{HasStatus, ready};

/// Resources of each kind in the soak's namespace deleted during the soak; the first
/// [`ORPHANS`] of each kind with `deletionPolicy: Orphan`.
pub const DOOMED: usize = 5;
pub const ORPHANS: usize = 2;
/// Extra namespaces created and deleted whole during the soak. In the first the personal token
/// is `selfRenew`; in the third the Knowledge Box key is Orphan (its key must outlive the
/// namespace).
pub const NAMESPACES: usize = 3;
/// The replicas' revoke timeout (`REVOKE_TIMEOUT`): how long a deletion retries revocation when
/// no credential can revoke, before it lets go with a `RevokeAbandoned` Event.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the operator may take over a deletion, from the accepted delete until the resource
/// (for a namespace: every resource in it) is gone: the revoke timeout, plus a lease hand-over
/// after a kill (6 s), a backoff (5 s) and the apiserver restart.
pub const GONE_BOUND: Duration = Duration::from_secs(90);
/// How long a namespace may take to go: [`GONE_BOUND`] plus the namespace controller's part,
/// which retries a namespace whose deletion failed (e.g. while the apiserver restarts) with a
/// backoff of up to 60 s.
pub const NAMESPACE_BOUND: Duration = Duration::from_secs(150);
/// How long a deletion task keeps looking after the bound, to measure how late a late one was.
const LOOK_PAST_BOUND: Duration = Duration::from_secs(30);
/// How long an Orphan resource may take to be Ready (its token in its Secret) before deletion.
/// Under the soak's chaos a first issue can wait out a lease hand-over, an apiserver restart and
/// the intent grace of a mint cut by a SIGKILL: well above those together.
const ORPHAN_READY_WAIT: Duration = Duration::from_secs(90);

/// One deletion: a resource or a namespace.
#[derive(Clone, Debug)]
pub struct Deleted {
    pub what: String,
    pub namespace: bool,
    /// Seconds after the soak started that the delete was accepted.
    pub at: f64,
    /// From the accepted delete to the object gone; `None`: still there when the task stopped
    /// looking (bound + 30 s).
    pub gone_after: Option<Duration>,
    /// Namespaces: from the accepted delete until no resource of either kind was left in it.
    pub emptied_after: Option<Duration>,
}

/// A token of an Orphan resource, read from its status and Secret just before deletion.
#[derive(Clone, Debug)]
pub struct OrphanToken {
    pub owner: String,
    pub id: String,
    pub value: String,
    pub kb_url: Option<String>,
    pub service_account: Option<String>,
}

/// A `RevokeAbandoned` Event.
#[derive(Clone, Debug)]
pub struct Abandoned {
    pub namespace: String,
    pub object: String,
    pub note: String,
}

struct Book {
    /// When the deletions started (the soak's start, for the printed moments).
    started: Instant,
    deleted: Mutex<Vec<Deleted>>,
    orphans: Mutex<Vec<OrphanToken>>,
    /// UIDs of every Orphan resource deleted (a token minted under Orphan and never recorded,
    /// e.g. by a mint whose answer was lost just before the deletion, carries one).
    orphan_uids: Mutex<BTreeSet<String>>,
    abandoned: Mutex<BTreeMap<String, Abandoned>>,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// The deletions under way.
pub struct Deletions {
    book: Arc<Book>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    poller: tokio::task::JoinHandle<()>,
    /// The extra namespaces.
    pub namespaces: Vec<String>,
}

/// What the Orphan exceptions are at this moment (for the leak checks).
#[derive(Clone, Debug, Default)]
pub struct OrphanSet {
    pub ids: BTreeSet<String>,
    pub uids: BTreeSet<String>,
    pub service_accounts: BTreeSet<String>,
}

fn doomed_name(kind: Kind, i: usize) -> String {
    match kind {
        Kind::Pt => format!("doomed-pt-{i}"),
        Kind::Kb => format!("doomed-kb-{i}"),
    }
}

fn orphan(i: usize) -> bool {
    i < ORPHANS
}

/// Whether the Knowledge Box key of extra namespace `i` is Orphan.
fn orphan_key_in(i: usize) -> bool {
    i == 2
}

/// Creates the resources of the soak's namespace that will be deleted: rotating like the others
/// when Revoke; not rotating when Orphan, so the token recorded before deletion is the last.
pub async fn create_doomed(client: &Client, ns: &str, kb_urls: &[String], rotating: &Value) {
    let pts: Api<NucliaPersonalToken> = Api::namespaced(client.clone(), ns);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(client.clone(), ns);
    for i in 0..DOOMED {
        let (policy, rotation) = if orphan(i) {
            (json!({"deletionPolicy": "Orphan"}), json!({}))
        } else {
            (json!({}), rotating.clone())
        };
        let spec = merged(
            merged(
                pt_spec(json!({"description": format!("doomed {i}")})),
                policy.clone(),
            ),
            rotation.clone(),
        );
        let obj: NucliaPersonalToken = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaPersonalToken",
            "metadata": {"name": doomed_name(Kind::Pt, i)}, "spec": spec
        }))
        .unwrap();
        pts.create(&PostParams::default(), &obj).await.unwrap();
        let kb = &kb_urls[i % kb_urls.len()];
        let spec = merged(merged(kb_spec(kb, json!({})), policy), rotation);
        let obj: NucliaKbApiKey = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
            "metadata": {"name": doomed_name(Kind::Kb, i)}, "spec": spec
        }))
        .unwrap();
        kbs.create(&PostParams::default(), &obj).await.unwrap();
    }
}

/// A random moment between `lo` and `hi` seconds (`lo` when the range is empty).
fn between(lo: f64, hi: f64) -> Duration {
    let s = if hi > lo {
        rand::rng().random_range(lo..hi)
    } else {
        lo
    };
    Duration::from_secs_f64(s)
}

/// Starts the deletions: each doomed resource deleted at a random moment of the soak, each extra
/// namespace created in its first third and deleted at least 25 s later; all by 20 s before the
/// end (when the soak is long enough).
pub fn start(
    client: &Client,
    ns: &str,
    login: &str,
    kb_urls: &[String],
    soak_secs: u64,
    stats: Arc<SamplerStats>,
) -> Deletions {
    let book = Arc::new(Book {
        started: Instant::now(),
        deleted: Default::default(),
        orphans: Default::default(),
        orphan_uids: Default::default(),
        abandoned: Default::default(),
        failures: Default::default(),
        stop: AtomicBool::new(false),
    });
    let started = tokio::time::Instant::now();
    let last = (soak_secs as f64 - 20.0).max(12.0);
    let mut tasks = Vec::new();
    for i in 0..DOOMED {
        for kind in [Kind::Pt, Kind::Kb] {
            let at = started + between(12.0, last);
            let name = doomed_name(kind, i);
            let (client, ns, book, stats) =
                (client.clone(), ns.to_owned(), book.clone(), stats.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                match kind {
                    Kind::Pt => {
                        let api: Api<NucliaPersonalToken> = Api::namespaced(client.clone(), &ns);
                        delete_resource(&client, api, kind, &ns, &name, orphan(i), &book, &stats)
                            .await
                    }
                    Kind::Kb => {
                        let api: Api<NucliaKbApiKey> = Api::namespaced(client.clone(), &ns);
                        delete_resource(&client, api, kind, &ns, &name, orphan(i), &book, &stats)
                            .await
                    }
                }
            }));
        }
    }
    let mut namespaces = Vec::new();
    for i in 0..NAMESPACES {
        let name = format!("{ns}-gone-{i}");
        namespaces.push(name.clone());
        let create_at = between(0.0, soak_secs as f64 / 3.0);
        let delete_at = create_at + between(25.0, last - create_at.as_secs_f64());
        let (client, book, login) = (client.clone(), book.clone(), login.to_owned());
        let kb_url = kb_urls[i % kb_urls.len()].clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(started + create_at).await;
            populate_namespace(&client, &name, i, &login, &kb_url, &book).await;
            tokio::time::sleep_until(started + delete_at).await;
            delete_namespace(&client, &name, i, &book).await;
        }));
    }
    let poller = tokio::spawn(poll_abandoned(client.clone(), book.clone()));
    Deletions {
        book,
        tasks,
        poller,
        namespaces,
    }
}

impl Deletions {
    /// The Orphan exceptions recorded so far.
    pub fn orphans(&self) -> OrphanSet {
        let orphans = self.book.orphans.lock().unwrap();
        OrphanSet {
            ids: orphans.iter().map(|o| o.id.clone()).collect(),
            uids: self.book.orphan_uids.lock().unwrap().clone(),
            service_accounts: orphans
                .iter()
                .filter_map(|o| o.service_account.clone())
                .collect(),
        }
    }

    /// Waits for every deletion task (each stops looking at bound + 30 s) and the Event poller.
    pub async fn finish(self) -> Report {
        for t in self.tasks {
            t.await.unwrap();
        }
        self.book.stop.store(true, Ordering::Relaxed);
        self.poller.await.unwrap();
        let b = &self.book;
        Report {
            deleted: b.deleted.lock().unwrap().clone(),
            orphans: b.orphans.lock().unwrap().clone(),
            abandoned: b.abandoned.lock().unwrap().values().cloned().collect(),
            failures: b.failures.lock().unwrap().clone(),
            namespaces: self.namespaces,
        }
    }
}

/// A Secret as JSON.
fn secret(name: &str, key: &str, value: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {key: value}
    }))
    .unwrap()
}

/// Creates `obj`, retried while the apiserver is away (an earlier attempt whose answer was
/// lost counts: AlreadyExists).
async fn create_retried<K>(api: &Api<K>, obj: &K) -> bool
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    common::poll(Duration::from_secs(60), || async {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await
    .is_some()
}

/// An extra namespace: login Secret, a personal token minted with it, a Knowledge Box key
/// authenticated by the personal token's Secret.
async fn populate_namespace(
    client: &Client,
    name: &str,
    i: usize,
    login: &str,
    kb_url: &str,
    book: &Book,
) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .unwrap();
    let pt: NucliaPersonalToken = serde_json::from_value(json!({
        "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaPersonalToken",
        "metadata": {"name": "pt"},
        "spec": pt_spec(json!({
            "description": format!("gone {i}"),
            "auth": {"secretRef": {"name": "login"}, "selfRenew": i == 0},
        })),
    }))
    .unwrap();
    let mut kb_extra = json!({"auth": {"secretRef": {"name": "pt", "key": "token"}}});
    if orphan_key_in(i) {
        kb_extra["deletionPolicy"] = json!("Orphan");
    }
    let kb: NucliaKbApiKey = serde_json::from_value(json!({
        "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
        "metadata": {"name": "kb"}, "spec": kb_spec(kb_url, kb_extra),
    }))
    .unwrap();
    let ok = create_retried(&namespaces, &ns).await
        && create_retried(
            &Api::namespaced(client.clone(), name),
            &secret("login", "token", login),
        )
        .await
        && create_retried(&Api::namespaced(client.clone(), name), &pt).await
        && create_retried(&Api::namespaced(client.clone(), name), &kb).await;
    if !ok {
        book.failures
            .lock()
            .unwrap()
            .push(format!("could not populate namespace {name} within 60 s"));
    }
}

/// Waits until an Orphan resource is Ready with its token in its Secret, and records the token.
async fn record_orphan<K>(
    client: &Client,
    api: &Api<K>,
    kind: Kind,
    ns: &str,
    name: &str,
    book: &Book,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let owner = format!("{} {ns}/{name}", kind.name());
    let seen_uid = Mutex::new(None);
    let found = common::poll(ORPHAN_READY_WAIT, || async {
        let o = api.get_opt(name).await.ok()??;
        *seen_uid.lock().unwrap() = Some(o.uid_str());
        let s = o.status_ref()?;
        let id = s.token_id.clone().filter(|_| ready(s))?;
        let secret = secrets.get_opt(name).await.ok()??;
        let held = secret
            .metadata
            .annotations
            .as_ref()?
            .get("nuclia.dev/token-id")?;
        if *held != id {
            return None;
        }
        let data = secret.data?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        Some(OrphanToken {
            owner: owner.clone(),
            id,
            value: text("token")?,
            kb_url: text("kbUrl"),
            service_account: o.service_account(),
        })
    })
    .await;
    let mut uid = seen_uid.into_inner().unwrap();
    if uid.is_none() {
        // not even read: take the uid now (the delete follows)
        uid = common::poll(Duration::from_secs(60), || async {
            api.get_opt(name).await.ok()?.map(|o| o.uid_str())
        })
        .await;
    }
    book.orphan_uids.lock().unwrap().extend(uid);
    match found {
        Some(t) => book.orphans.lock().unwrap().push(t),
        None => book.failures.lock().unwrap().push(format!(
            "{owner} (Orphan) was not Ready with its token in its Secret within {}s before its deletion",
            ORPHAN_READY_WAIT.as_secs()
        )),
    }
}

/// Deletes a resource of the soak's namespace (an Orphan one once recorded), then looks until
/// it is gone.
#[allow(clippy::too_many_arguments)]
async fn delete_resource<K>(
    client: &Client,
    api: Api<K>,
    kind: Kind,
    ns: &str,
    name: &str,
    orphan: bool,
    book: &Book,
    stats: &SamplerStats,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    if orphan {
        record_orphan(client, &api, kind, ns, name, book).await;
    } else {
        // its token is revoked before its Secret goes: not a failure of the Secret's promise
        stats.deleting.lock().unwrap().insert(name.to_owned());
    }
    let what = format!(
        "{} {ns}/{name}{}",
        kind.name(),
        if orphan { " (Orphan)" } else { "" }
    );
    let accepted = common::poll(Duration::from_secs(60), || async {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Some(()),
            Err(e) if names_the_object(&e, name) => Some(()),
            Err(_) => None,
        }
    })
    .await;
    if !delete_was_accepted(&what, accepted.is_some(), book) {
        return;
    }
    let t0 = Instant::now();
    let at = book.started.elapsed().as_secs_f64();
    let done = common::poll(GONE_BOUND + LOOK_PAST_BOUND, || async {
        match api.get(name).await {
            Err(e) if names_the_object(&e, name) => Some(()),
            _ => None,
        }
    })
    .await;
    book.deleted.lock().unwrap().push(Deleted {
        what,
        namespace: false,
        at,
        gone_after: done.map(|_| t0.elapsed()),
        emptied_after: None,
    });
}

/// Deletes an extra namespace (its Orphan key recorded first), then looks until it is gone.
async fn delete_namespace(client: &Client, name: &str, i: usize, book: &Book) {
    if orphan_key_in(i) {
        let kbs: Api<NucliaKbApiKey> = Api::namespaced(client.clone(), name);
        record_orphan(client, &kbs, Kind::Kb, name, "kb", book).await;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accepted = common::poll(Duration::from_secs(60), || async {
        match namespaces.delete(name, &DeleteParams::default()).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            Err(_) => None,
        }
    })
    .await;
    let what = format!("namespace {name}");
    if !delete_was_accepted(&what, accepted.is_some(), book) {
        return;
    }
    let t0 = Instant::now();
    let at = book.started.elapsed().as_secs_f64();
    let pts: Api<NucliaPersonalToken> = Api::namespaced(client.clone(), name);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(client.clone(), name);
    let emptied = Mutex::new(None);
    let done = common::poll(NAMESPACE_BOUND + LOOK_PAST_BOUND, || async {
        if emptied.lock().unwrap().is_none() {
            let lp = ListParams::default();
            if let (Ok(p), Ok(k)) = (pts.list(&lp).await, kbs.list(&lp).await)
                && p.items.is_empty()
                && k.items.is_empty()
            {
                *emptied.lock().unwrap() = Some(t0.elapsed());
            }
        }
        matches!(namespaces.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
    let gone_after = done.map(|_| t0.elapsed());
    book.deleted.lock().unwrap().push(Deleted {
        what,
        namespace: true,
        at,
        gone_after,
        emptied_after: emptied.into_inner().unwrap().or(gone_after),
    });
}

/// A 404 about the object itself. Right after an apiserver restart, custom resources answer 404
/// naming no object until their handlers are installed again: that says nothing about the
/// object (a delete "accepted" that way never happened).
fn names_the_object(e: &kube::Error, name: &str) -> bool {
    matches!(e, kube::Error::Api(s)
        if s.code == 404 && s.details.as_ref().is_some_and(|d| d.name == name))
}

/// Whether a delete was accepted; records a failure if not.
fn delete_was_accepted(what: &str, accepted: bool, book: &Book) -> bool {
    if !accepted {
        book.failures.lock().unwrap().push(format!(
            "the delete of {what} was never accepted within 60 s"
        ));
    }
    accepted
}

/// Keeps every `RevokeAbandoned` Event of the cluster, every second until told to stop (the
/// Events of a deleted namespace go with it).
async fn poll_abandoned(client: Client, book: Arc<Book>) {
    let events: Api<Event> = Api::all(client);
    let lp = ListParams::default().fields("reason=RevokeAbandoned");
    loop {
        let stop = book.stop.load(Ordering::Relaxed);
        if let Ok(list) = events.list(&lp).await {
            let mut seen = book.abandoned.lock().unwrap();
            for e in list.items {
                let key = e.metadata.uid.clone().unwrap_or_default();
                seen.entry(key).or_insert_with(|| Abandoned {
                    namespace: e.metadata.namespace.clone().unwrap_or_default(),
                    object: format!(
                        "{} {}",
                        e.involved_object.kind.clone().unwrap_or_default(),
                        e.involved_object.name.clone().unwrap_or_default()
                    ),
                    note: e.message.clone().unwrap_or_default(),
                });
            }
        }
        if stop {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the deletions came to.
pub struct Report {
    pub deleted: Vec<Deleted>,
    pub orphans: Vec<OrphanToken>,
    pub abandoned: Vec<Abandoned>,
    pub failures: Vec<String>,
    pub namespaces: Vec<String>,
}

/// "p50 …, p90 …, max …" of `v`.
fn spread(v: &[Duration]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut v = v.to_vec();
    v.sort();
    let at = |p: usize| v[(v.len() - 1) * p / 100].as_secs_f64();
    format!(
        "p50 {:.1}s, p90 {:.1}s, max {:.1}s",
        at(50),
        at(90),
        at(100)
    )
}

impl Report {
    /// Prints the figures and returns what failed: a deletion not gone within the bound, an
    /// Orphan token no longer live or refused, a `RevokeAbandoned` where the login still exists.
    pub async fn check(
        &self,
        http: &reqwest::Client,
        fake_url: &str,
        soak_ns: &str,
    ) -> Vec<String> {
        let mut failures = self.failures.clone();
        // (label, rows, time taken, bound, how long the task looked)
        let resources: Vec<&Deleted> = self.deleted.iter().filter(|d| !d.namespace).collect();
        let namespaces: Vec<&Deleted> = self.deleted.iter().filter(|d| d.namespace).collect();
        type Took = fn(&Deleted) -> Option<Duration>;
        let measures: [(&str, &[&Deleted], Took, Duration, Duration); 3] = [
            (
                "resources deleted, gone",
                &resources,
                |d| d.gone_after,
                GONE_BOUND,
                GONE_BOUND + LOOK_PAST_BOUND,
            ),
            (
                "namespaces deleted, empty",
                &namespaces,
                |d| d.emptied_after,
                GONE_BOUND,
                NAMESPACE_BOUND + LOOK_PAST_BOUND,
            ),
            (
                "namespaces deleted, gone",
                &namespaces,
                |d| d.gone_after,
                NAMESPACE_BOUND,
                NAMESPACE_BOUND + LOOK_PAST_BOUND,
            ),
        ];
        for (label, rows, took, bound, looked) in measures {
            let times: Vec<Duration> = rows.iter().filter_map(|d| took(d)).collect();
            let late: Vec<&&Deleted> = rows
                .iter()
                .filter(|d| took(d).is_none_or(|t| t > bound))
                .collect();
            println!(
                "  {:<27}{} of {} ({}; {} over the {}s bound)",
                format!("{label}:"),
                times.len(),
                rows.len(),
                spread(&times),
                late.len(),
                bound.as_secs()
            );
            for d in late {
                failures.push(format!(
                    "{} (deleted at t+{:.0}s): {label} {}",
                    d.what,
                    d.at,
                    match took(d) {
                        Some(t) =>
                            format!("after {:.1}s (bound {}s)", t.as_secs_f64(), bound.as_secs()),
                        None => format!(
                            "not within {}s (bound {}s)",
                            looked.as_secs(),
                            bound.as_secs()
                        ),
                    }
                ));
            }
        }
        for d in &namespaces {
            let secs = |t: Option<Duration>| {
                t.map_or("never".into(), |t| format!("{:.1}s", t.as_secs_f64()))
            };
            println!(
                "    {} deleted at t+{:.0}s: emptied after {}, gone after {}",
                d.what,
                d.at,
                secs(d.emptied_after),
                secs(d.gone_after)
            );
        }
        let expected = 2 * DOOMED + NAMESPACES;
        if self.deleted.len() != expected {
            failures.push(format!(
                "{} deletions recorded, {expected} planned",
                self.deleted.len()
            ));
        }
        // Orphan tokens: still live at the fake, and still accepted as their consumers use them.
        let live: BTreeSet<String> = common::operator::fake_admin(http, fake_url, "credentials")
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        let mut valid = 0;
        for o in &self.orphans {
            let mut verdict = None;
            for _ in 0..3 {
                verdict = accepted(http, fake_url, o.kb_url.as_deref(), &o.value).await;
                if verdict.is_some() {
                    break;
                }
            }
            let is_live = live.contains(&o.id);
            if is_live && verdict == Some(true) {
                valid += 1;
            } else {
                failures.push(format!(
                    "Orphan token {} of {} is no longer valid (live at Nuclia: {is_live}, accepted: {verdict:?})",
                    o.id, o.owner
                ));
            }
        }
        let planned_orphans = 2 * ORPHANS + (0..NAMESPACES).filter(|i| orphan_key_in(*i)).count();
        println!(
            "  Orphan tokens:             {} recorded of {planned_orphans} Orphan resources, {valid} still valid at the end",
            self.orphans.len()
        );
        // RevokeAbandoned only where a credential was really gone: in a deleted namespace (the
        // namespace controller removes the login Secret); never where the login still exists.
        let in_soak_ns: Vec<&Abandoned> = self
            .abandoned
            .iter()
            .filter(|a| a.namespace == soak_ns)
            .collect();
        println!(
            "  RevokeAbandoned Events:    {} ({} in the soak's namespace, whose login Secret stays; none can be created in a namespace being deleted)",
            self.abandoned.len(),
            in_soak_ns.len()
        );
        for a in &self.abandoned {
            println!("    {}/{}: {}", a.namespace, a.object, a.note);
        }
        for a in in_soak_ns {
            failures.push(format!(
                "RevokeAbandoned for {} in {} though its login Secret exists: {}",
                a.object, a.namespace, a.note
            ));
        }
        for a in &self.abandoned {
            if a.namespace != soak_ns && !self.namespaces.contains(&a.namespace) {
                failures.push(format!("RevokeAbandoned in an unexpected namespace: {a:?}"));
            }
        }
        failures
    }
}
