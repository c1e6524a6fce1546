//! The lifecycle simulation: the real engine (`reconcile`, `error_policy`, the memo, the
//! caches) over the three kinds and a cluster credential, driven through seeded random
//! sequences of what users, Nuclia and the cluster do, with the invariants of DESIGN.md §6
//! checked at every quiet point and at the end.
//!
//! - The apiserver is the in-memory one of the engine tests ([`super::apiserver`]); the
//!   simulation plays the watches (a changed object wakes its resource at once, as the
//!   controller's watch would), the garbage collector and the namespace controller.
//! - Nuclia is `nuclia-fake`, in process, over HTTP: real issuers, real wire format.
//! - Time is simulated: the engine reads [`crate::clock`], which stands still while a reconcile
//!   runs and moves when the simulation says (wake-ups, clock jumps), so days pass in a
//!   millisecond and a seed replays the same way.
//!
//! A failing sequence is shrunk (actions dropped while it still fails the same invariant) and
//! printed with its seed. `NTO_SIM_SEED=<seed>` reruns one seed alone (with its trace);
//! `NTO_SIM_SEQUENCES=<n>` runs that many (the long mode, which prints sequences per second and
//! the invariant counts). `docs/lifecycle.md` states the invariants in words.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::apiserver::ApiServer;
use crate::cluster_credential::NucliaClusterCredential;
use crate::controller::resource_index::ResourceIndex;
use crate::controller::{Context, Kind, Settings};
use crate::controller::{error_policy, reconcile};
use crate::crd::{
    ANNOTATION_REVOKE_NOW, ANNOTATION_ROTATE, ANNOTATION_TOKEN_ID, CredentialStatus,
    LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY, NucliaKbApiKey, NucliaNuaKey,
    NucliaPersonalToken,
};
use crate::issuer::Marker;
use crate::lifecycle::token_hash;
use crate::runtime::metrics::Metrics;
use nuclia_fake::state::CredKind;
use nuclia_fake::{FakeConfig, FakeHandle, FaultRule};

const NAMESPACES: [&str; 2] = ["team-a", "team-b"];
const OPERATOR_NS: &str = "operator";
const CLUSTER_CREDENTIAL: &str = "shared";
const CC_COLLECTION: &str = "/apis/nuclia.dev/v1alpha1/nucliaclustercredentials";
const CLUSTER_ID: &str = "sim-cluster";
const INSTALLATION: &str = "inst-sim";
/// Resource names; the last is 64 characters with a `-` in 63rd place (a label value cut at
/// 63 characters ends with it).
const NAMES: [&str; 4] = [
    "app",
    "web",
    "job",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
];
/// Secret names a rename may pick; `taken` is a user's own Secret in every namespace.
const SECRET_NAMES: [&str; 3] = ["renamed", "renamed-2", "taken"];
/// How far a settle lets time run to reach the wake-ups it causes (backoffs, the minimum
/// issue interval, the intent grace).
const SETTLE_WINDOW: i64 = 180;
/// Writes one resource may make within one settle before it counts as a loop.
const MAX_WRITES_PER_SETTLE: usize = 40;

fn settings() -> Settings {
    Settings {
        cluster_id: CLUSTER_ID.into(),
        installation_id: INSTALLATION.into(),
        verify_interval: Duration::from_secs(600),
        cluster_credential_namespace: Some(OPERATOR_NS.into()),
        operator_namespace: OPERATOR_NS.into(),
        kept_configmap: "nto-kept".into(),
        ..super::settings()
    }
}

/// The kinds a created resource may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Personal,
    KbKey,
    /// A KB key through the cluster credential.
    KbKeyShared,
    Nua,
}

/// One thing a user, Nuclia or the cluster does. Targets are indexes into what exists when
/// the action runs (modulo its length), so a shrunk sequence still means something.
#[derive(Clone, Debug)]
enum Act {
    Create {
        flavor: Flavor,
        ns: usize,
        name: usize,
        orphan: bool,
        self_renew: bool,
    },
    EditDays {
        target: usize,
        days: i64,
    },
    EditRenewBefore {
        target: usize,
        hours: Option<u32>,
    },
    SetPolicy {
        target: usize,
        orphan: bool,
    },
    RenameSecret {
        target: usize,
        to: usize,
    },
    ToggleFormats {
        target: usize,
    },
    /// A change of scope or Secret type: another KB, another role, another login (or, for a
    /// KB key, between a login and the cluster credential), another Secret type.
    EditScope {
        target: usize,
        which: usize,
    },
    Rotate {
        target: usize,
    },
    RevokeNow {
        target: usize,
    },
    Delete {
        target: usize,
    },
    DeleteNamespace {
        ns: usize,
    },
    DeleteLogin {
        ns: usize,
    },
    ReplaceLogin {
        ns: usize,
    },
    RevokeLoginUpstream {
        ns: usize,
    },
    DeleteManagedSecret {
        target: usize,
    },
    RevokeUpstream {
        target: usize,
    },
    /// Another namespace imitates a restored Secret holding the target's token id, and
    /// creates a resource of that name to adopt it.
    ForgeRestored {
        target: usize,
        name: usize,
    },
    Jump {
        secs: i64,
    },
    /// The next `count` Nuclia calls fail this way.
    Fault {
        how: FaultHow,
        count: u64,
    },
    /// The operator dies at this many more apiserver writes (after the last one took effect,
    /// or with `before` just before it), and starts again.
    Crash {
        writes: usize,
        before: bool,
    },
    /// A restart or leader hand-over: a new process, nothing in memory.
    Restart,
    /// `spec.rotation.windows`: one of [`windows_choice`].
    EditWindows {
        target: usize,
        which: usize,
    },
    /// `spec.suspend`.
    Suspend {
        target: usize,
        on: bool,
    },
    /// The team replaces a login that may have leaked and marks it
    /// (`nuclia.dev/reissue-minted`): what it minted, and what that minted, re-issues.
    LeakLogin {
        ns: usize,
    },
    /// The cluster admin replaces the cluster credential's login and marks the
    /// `NucliaClusterCredential` (or its Secret): every key minted with it re-issues (I9).
    LeakClusterCredential {
        on_object: bool,
    },
    /// The cluster credential's quotas (`maxKeysPerNamespace`,
    /// `maxIssuesPerNamespacePerHour`), each maybe unset (I10).
    SetQuota {
        keys: Option<u32>,
        per_hour: Option<u32>,
    },
    /// The action, and the next one at once: no reconcile in between (a patch, then a
    /// deletion, as one `kubectl apply` of two documents would).
    Quick(Box<Act>),
}

#[derive(Clone, Copy, Debug)]
enum FaultHow {
    Status(u16),
    Timeout,
    LostAnswer,
    CappedLifetime,
}

fn random_act(rng: &mut StdRng) -> Act {
    let target = rng.random_range(0..16);
    let ns = usize::from(rng.random_bool(0.3));
    match rng.random_range(0..115) {
        0..25 => Act::Create {
            flavor: [
                Flavor::Personal,
                Flavor::KbKey,
                Flavor::KbKeyShared,
                Flavor::Nua,
            ][rng.random_range(0..4)],
            ns,
            name: rng.random_range(0..NAMES.len()),
            orphan: rng.random_bool(0.25),
            self_renew: rng.random_bool(0.3),
        },
        25..29 => Act::EditDays {
            target,
            days: [1, 2, 30, 90, 400][rng.random_range(0..5)],
        },
        29..31 => Act::EditRenewBefore {
            target,
            hours: [None, Some(12), Some(24 * 20)][rng.random_range(0..3)],
        },
        31..35 => Act::SetPolicy {
            target,
            orphan: rng.random_bool(0.6),
        },
        35..39 => Act::RenameSecret {
            target,
            to: rng.random_range(0..SECRET_NAMES.len()),
        },
        39..41 => Act::ToggleFormats { target },
        41..44 => Act::Rotate { target },
        44..46 => Act::RevokeNow { target },
        46..52 => Act::Delete { target },
        52..55 => Act::EditScope {
            target,
            which: rng.random_range(0..4),
        },
        55..57 => Act::DeleteNamespace { ns },
        57..59 => Act::DeleteLogin { ns },
        59..61 => Act::ReplaceLogin { ns },
        61..64 => Act::RevokeLoginUpstream { ns },
        64..67 => Act::DeleteManagedSecret { target },
        67..70 => Act::RevokeUpstream { target },
        70..74 => Act::ForgeRestored {
            target,
            name: rng.random_range(0..NAMES.len()),
        },
        74..84 => Act::Jump {
            secs: [60, 3600, 86_400, 10 * 86_400, 40 * 86_400][rng.random_range(0..5)],
        },
        84..92 => Act::Fault {
            how: [
                FaultHow::Status(401),
                FaultHow::Status(403),
                FaultHow::Status(404),
                FaultHow::Status(429),
                FaultHow::Status(500),
                FaultHow::Timeout,
                FaultHow::LostAnswer,
                FaultHow::CappedLifetime,
            ][rng.random_range(0..8)],
            count: rng.random_range(1..4),
        },
        92..98 => Act::Crash {
            writes: rng.random_range(1..5),
            before: rng.random_bool(0.5),
        },
        98..100 => Act::Restart,
        100..103 => Act::EditWindows {
            target,
            which: rng.random_range(0..WINDOW_CHOICES),
        },
        103..106 => Act::Suspend {
            target,
            on: rng.random_bool(0.6),
        },
        106..109 => Act::LeakLogin { ns },
        109..112 => Act::LeakClusterCredential {
            on_object: rng.random_bool(0.5),
        },
        _ => Act::SetQuota {
            keys: [None, Some(1), Some(2)][rng.random_range(0..3)],
            per_hour: [None, Some(1), Some(3)][rng.random_range(0..3)],
        },
    }
}

const WINDOW_CHOICES: usize = 4;

/// Rotation windows an edit may set: none, Saturday mornings in UTC, every night in a zone
/// with daylight saving time, and one too short for the default grace (refused).
fn windows_choice(which: usize) -> (Value, &'static str) {
    match which % WINDOW_CHOICES {
        0 => (Value::Null, "none"),
        1 => (
            json!([{"days": ["Sat"], "start": "02:00", "duration": "4h"}]),
            "Saturdays 02:00 4h UTC",
        ),
        2 => (
            json!([{"start": "01:30", "duration": "3h", "timeZone": "Europe/Madrid"}]),
            "nightly 01:30 3h Europe/Madrid",
        ),
        _ => (
            json!([{"start": "12:00", "duration": "30m"}]),
            "30m (too short)",
        ),
    }
}

/// Whether `t` is inside one of the windows a spec lists (I7). Written apart from
/// `crate::windows`: each window's openings of the eight days up to `t`, in its zone.
fn sim_in_window(windows: &Value, t: DateTime<Utc>) -> bool {
    let Some(list) = windows.as_array() else {
        return true;
    };
    if list.is_empty() {
        return true;
    }
    let db = jiff::tz::TimeZoneDatabase::bundled();
    let ts = jiff::Timestamp::from_second(t.timestamp()).expect("a time");
    list.iter().any(|w| {
        let zone = db
            .get(w["timeZone"].as_str().unwrap_or("UTC"))
            .expect("a zone");
        let (h, m) = w["start"]
            .as_str()
            .and_then(|s| s.split_once(':'))
            .expect("HH:MM");
        let length = crate::duration::parse(w["duration"].as_str().expect("a duration"))
            .expect("a duration")
            .as_secs() as i64;
        let days: Vec<&str> = w["days"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let local = ts.to_zoned(zone.clone()).date();
        (0..=8).any(|back| {
            let date = local - jiff::Span::new().days(back);
            let name = &format!("{:?}", date.weekday())[..3];
            if !days.is_empty() && !days.contains(&name) {
                return false;
            }
            let open = date
                .at(h.parse().expect("hour"), m.parse().expect("minute"), 0, 0)
                .to_zoned(zone.clone())
                .expect("a local time")
                .timestamp()
                .as_second();
            open <= ts.as_second() && ts.as_second() < open + length
        })
    })
}

/// A sequence of actions for `seed`: two creations, then anything.
fn sequence(seed: u64) -> Vec<Act> {
    let mut rng = StdRng::seed_from_u64(seed);
    let len = rng.random_range(4..16);
    let mut acts = Vec::with_capacity(len + 2);
    for _ in 0..2 {
        loop {
            let a = random_act(&mut rng);
            if matches!(a, Act::Create { .. }) {
                acts.push(a);
                break;
            }
        }
    }
    acts.extend((0..len).map(|_| {
        let a = random_act(&mut rng);
        if rng.random_bool(0.2) {
            Act::Quick(Box::new(a))
        } else {
            a
        }
    }));
    acts
}

/// An invariant broken: which one, and what was seen.
#[derive(Clone, Debug)]
struct Violation {
    invariant: &'static str,
    what: String,
}

/// A resource as it was before one of its reconciles (I7, I8).
struct Before {
    path: String,
    uid: String,
    deleting: bool,
    suspended: bool,
    windows: Value,
    must_change: bool,
    revoke_now: bool,
    /// Its current and replaced tokens that were live at Nuclia.
    live: HashSet<String>,
    status: CredentialStatus,
    requests: usize,
    deleted_secrets: HashSet<String>,
    events: HashSet<String>,
}

/// A resource as the simulation tracks it.
#[derive(Clone, Debug)]
struct Tracked {
    path: String,
    flavor: Flavor,
    uid: String,
}

/// Everything one run of a sequence has: the world and what the invariants need.
struct Sim {
    server: ApiServer,
    fake: FakeHandle,
    metrics: Arc<Metrics>,
    ctx: Arc<Context>,
    writers: Writers,
    now: DateTime<Utc>,
    /// resourceVersions the simulated watches delivered, by path.
    delivered: HashMap<String, String>,
    /// The same for cluster credentials (the resources' watch sees its own paths go).
    cc_delivered: HashMap<String, String>,
    /// When each resource is due for a reconcile.
    due: BTreeMap<String, DateTime<Utc>>,
    /// Every resource created, in order.
    created: Vec<Tracked>,
    /// Last seen object of each resource (for what it was when it went).
    last_seen: HashMap<String, Value>,
    deletions: HashMap<String, DateTime<Utc>>,
    namespace_deletions: HashMap<String, DateTime<Utc>>,
    /// Secrets first seen Terminating, by path.
    terminating_secrets: HashMap<String, DateTime<Utc>>,
    /// Tokens kept by a deletion under `Orphan`: they must stay valid.
    /// (Token id → the path and UID of the resource whose deletion kept it.)
    kept: BTreeMap<String, (String, String)>,
    /// Credentials revoked at Nuclia by the simulation itself (out of band).
    revoked_out_of_band: HashSet<String>,
    /// Mint times per resource UID.
    mints: HashMap<String, Vec<DateTime<Utc>>>,
    seen_creds: HashSet<String>,
    /// Tokens replaced by a scheduled renewal inside a window: their revocation must be too.
    window_replaced: HashSet<String>,
    /// Tokens minted, directly or down a chain, with a login marked leaked: token id → the
    /// resource's UID and the mark (I9).
    leaked: BTreeMap<String, (String, String)>,
    leaks: u32,
    /// The cluster credential's quotas as last set: keys, issues per hour (I10).
    quota: (Option<u32>, Option<u32>),
    /// Keys each namespace held through the cluster credential when a key quota was set
    /// (they keep renewing), down to what it holds since.
    quota_keys_before: HashMap<String, u32>,
    /// When each key minted through the cluster credential was issued, by namespace, and
    /// the token ids already counted.
    cc_issues: HashMap<String, Vec<DateTime<Utc>>>,
    cc_tokens: HashSet<String>,
    /// The hours judged for issues per hour start from then on: a new process counts from
    /// zero, and a re-issue after a mark is not held.
    cc_rate_unjudged_until: DateTime<Utc>,
    errors: Vec<String>,
    violations: Vec<Violation>,
    trace: Vec<String>,
    default_user: String,
    reconciles: u64,
    /// UIDs of the resources whose last reconcile failed.
    failing: HashSet<String>,
    /// `NTO_SIM_TRACE=1`: every reconcile goes to the trace, with its wake-up.
    trace_reconciles: bool,
}

/// The simulated watches' caches, fed by [`Sim::pump`].
struct Writers {
    pt: (Writer<NucliaPersonalToken>, Arc<ResourceIndex>),
    kb: (Writer<NucliaKbApiKey>, Arc<ResourceIndex>),
    nua: (Writer<NucliaNuaKey>, Arc<ResourceIndex>),
    secrets: Writer<PartialObjectMeta<Secret>>,
    cluster_credentials: Writer<NucliaClusterCredential>,
}

fn collection_of<K: Kind>(ns: &str) -> String {
    K::url_path(&(), Some(ns))
}

fn secret_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets/{name}")
}

fn namespace_of(path: &str) -> String {
    path.split("/namespaces/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_owned()
}

fn status_of(v: &Value) -> CredentialStatus {
    serde_json::from_value(v["status"].clone()).unwrap_or_default()
}

fn is_deleting(v: &Value) -> bool {
    !v["metadata"]["deletionTimestamp"].is_null()
}

/// The requeue of an `Action` (kube-runtime keeps it private; its Debug shows it).
fn requeue_of(a: &Action) -> Option<Duration> {
    let text = format!("{a:?}");
    let inner = text.split("Some(").nth(1)?.split(')').next()?;
    let (num, unit) = inner
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| inner.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

impl Sim {
    async fn new() -> Sim {
        crate::runtime::install_crypto();
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        let fake = nuclia_fake::spawn(FakeConfig::default())
            .await
            .expect("nuclia-fake");
        fake.shared.lock().frozen = Some(start);
        let server = ApiServer::default();
        server.set_time(start);
        let metrics = Arc::new(Metrics::new());
        let default_user = {
            let st = fake.shared.lock();
            let id = st
                .credential_id(&fake.bootstrap.pat)
                .expect("the PAT")
                .to_owned();
            st.creds[&id].owner.clone()
        };
        let (ctx, writers) = Self::process(&server, &fake, &metrics);
        let mut sim = Sim {
            server,
            fake,
            metrics,
            ctx,
            writers,
            now: start,
            delivered: HashMap::new(),
            cc_delivered: HashMap::new(),
            due: BTreeMap::new(),
            created: Vec::new(),
            last_seen: HashMap::new(),
            deletions: HashMap::new(),
            namespace_deletions: HashMap::new(),
            terminating_secrets: HashMap::new(),
            kept: BTreeMap::new(),
            revoked_out_of_band: HashSet::new(),
            mints: HashMap::new(),
            seen_creds: HashSet::new(),
            window_replaced: HashSet::new(),
            leaked: BTreeMap::new(),
            leaks: 0,
            quota: (None, None),
            quota_keys_before: HashMap::new(),
            cc_issues: HashMap::new(),
            cc_tokens: HashSet::new(),
            cc_rate_unjudged_until: start,
            errors: Vec::new(),
            violations: Vec::new(),
            trace: Vec::new(),
            default_user,
            reconciles: 0,
            failing: HashSet::new(),
            trace_reconciles: std::env::var_os("NTO_SIM_TRACE").is_some(),
        };
        for ns in NAMESPACES.iter().chain([&OPERATOR_NS]) {
            sim.make_namespace(ns);
        }
        let cc_login = sim.mint_login("cluster credential login");
        sim.put_secret(OPERATOR_NS, "cc-login", &[("token", &cc_login)]);
        let cc = json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaClusterCredential",
            "metadata": {"name": CLUSTER_CREDENTIAL},
            "spec": {"secretRef": {"name": "cc-login", "key": "token"},
                     "policy": {"namespaces": NAMESPACES}},
        });
        let code = sim
            .server
            .create("/apis/nuclia.dev/v1alpha1/nucliaclustercredentials", &cc);
        assert_eq!(code, 201, "the cluster credential");
        sim.seen_creds = sim.fake.shared.lock().creds.keys().cloned().collect();
        sim
    }

    /// A new operator process: context and caches (nothing in memory survives).
    fn process(
        server: &ApiServer,
        fake: &FakeHandle,
        metrics: &Arc<Metrics>,
    ) -> (Arc<Context>, Writers) {
        let nuclia = super::fake_client(fake, Duration::from_millis(500));
        let ctx = Context::new(server.client(), nuclia, settings(), metrics.clone());
        let (pt_r, pt_w) = reflector::store();
        let (kb_r, kb_w) = reflector::store();
        let (nua_r, nua_w) = reflector::store();
        let (s_r, s_w) = reflector::store();
        let (cc_r, cc_w) = reflector::store();
        let _ = ctx.cluster_credentials.set(cc_r);
        let pt_i = Arc::new(ResourceIndex::default());
        let kb_i = Arc::new(ResourceIndex::default());
        let nua_i = Arc::new(ResourceIndex::default());
        let _ = ctx.stores.set(vec![
            Arc::new((pt_r, pt_i.clone())),
            Arc::new((kb_r, kb_i.clone())),
            Arc::new((nua_r, nua_i.clone())),
        ]);
        let _ = ctx.secret_stores.set(vec![(None, s_r)]);
        let writers = Writers {
            pt: (pt_w, pt_i),
            kb: (kb_w, kb_i),
            nua: (nua_w, nua_i),
            secrets: s_w,
            cluster_credentials: cc_w,
        };
        (ctx, writers)
    }

    fn set_now(&mut self, t: DateTime<Utc>) {
        self.now = t;
        self.server.set_time(t);
        self.fake.shared.lock().frozen = Some(t);
    }

    fn make_namespace(&mut self, ns: &str) {
        let code = self.server.create(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
        assert!(code == 201 || code == 409, "namespace {ns}: {code}");
        if ns != OPERATOR_NS {
            let login = self.mint_login("sim login");
            self.put_secret(ns, "login", &[("token", &login)]);
            let second = self.mint_login("sim second login");
            self.put_secret(ns, "login-2", &[("token", &second)]);
            self.put_secret(ns, "taken", &[("note", "a user's own Secret")]);
        }
    }

    /// A PAT of the default user, minted at the fake as a person would.
    fn mint_login(&self, description: &str) -> String {
        let mut st = self.fake.shared.lock();
        let expires = Some(st.now() + chrono::Duration::days(3650));
        let id = st.insert_cred(
            CredKind::Pat,
            None,
            &self.default_user,
            description,
            expires,
            None,
            false,
        );
        st.creds[&id].value.clone()
    }

    fn put_secret(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                let b = k8s_openapi::ByteString(v.as_bytes().to_vec());
                ((*k).to_owned(), serde_json::to_value(b).expect("bytes"))
            })
            .collect();
        let path = secret_path(ns, name);
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns}, "data": data});
        if self.server.get::<Value>(&path).is_some() {
            self.server.merge(&path, &json!({"data": secret["data"]}));
        } else {
            self.server
                .create(&format!("/api/v1/namespaces/{ns}/secrets"), &secret);
        }
    }

    fn live_resources(&self) -> Vec<Tracked> {
        self.created
            .iter()
            .filter(|t| {
                self.server
                    .get::<Value>(&t.path)
                    .is_some_and(|v| !is_deleting(&v))
            })
            .cloned()
            .collect()
    }

    fn pick(&self, target: usize) -> Option<(Tracked, Value)> {
        let live = self.live_resources();
        let t = live.get(target % live.len().max(1))?.clone();
        let v = self.server.get::<Value>(&t.path)?;
        Some((t, v))
    }

    fn manifest(
        &self,
        flavor: Flavor,
        ns: &str,
        name: &str,
        orphan: bool,
        self_renew: bool,
    ) -> (String, String, Value) {
        let policy = if orphan { "Orphan" } else { "Revoke" };
        let login = json!({"secretRef": {"name": "login", "key": "token"}});
        let kb_url = self.fake.bootstrap.kbs[0].url.clone();
        let (kind, collection, spec) = match flavor {
            Flavor::Personal => (
                "NucliaPersonalToken",
                collection_of::<NucliaPersonalToken>(ns),
                json!({"description": "sim", "days": 30,
                       "auth": {"secretRef": {"name": "login", "key": "token"}, "selfRenew": self_renew}}),
            ),
            Flavor::KbKey => (
                "NucliaKbApiKey",
                collection_of::<NucliaKbApiKey>(ns),
                json!({"kbUrl": kb_url, "role": "SMEMBER", "days": 90, "auth": login}),
            ),
            Flavor::KbKeyShared => (
                "NucliaKbApiKey",
                collection_of::<NucliaKbApiKey>(ns),
                json!({"kbUrl": kb_url, "role": "SMEMBER", "days": 90,
                       "auth": {"clusterCredentialRef": {"name": CLUSTER_CREDENTIAL}}}),
            ),
            Flavor::Nua => (
                "NucliaNuaKey",
                collection_of::<NucliaNuaKey>(ns),
                json!({"zone": self.fake.bootstrap.zone, "account": self.fake.bootstrap.account_slug,
                       "title": "sim", "description": "sim", "contact": "sim@example.com",
                       "days": 90, "auth": login}),
            ),
        };
        let mut spec = spec;
        spec["deletionPolicy"] = policy.into();
        let obj = json!({"apiVersion": "nuclia.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "generation": 1}, "spec": spec});
        (collection.clone(), format!("{collection}/{name}"), obj)
    }

    fn create(
        &mut self,
        flavor: Flavor,
        ns: &str,
        name: &str,
        orphan: bool,
        self_renew: bool,
    ) -> bool {
        let (collection, path, obj) = self.manifest(flavor, ns, name, orphan, self_renew);
        if self.server.create(&collection, &obj) != 201 {
            return false;
        }
        let v: Value = self.server.get(&path).expect("just created");
        let uid = v["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        // Another object than any earlier one of this name.
        self.deletions.remove(&path);
        self.created.push(Tracked { path, flavor, uid });
        true
    }

    fn delete_resource(&mut self, path: &str) {
        self.server.delete(path);
        // Gone at once (no finalizer yet): nothing to wait for.
        if self.server.get::<Value>(path).is_some() {
            self.deletions.entry(path.to_owned()).or_insert(self.now);
        }
    }

    /// Applies one action; what it did goes to the trace.
    fn apply(&mut self, act: &Act) -> String {
        match act.clone() {
            Act::Create {
                flavor,
                ns,
                name,
                orphan,
                self_renew,
            } => {
                let ns = NAMESPACES[ns];
                let ok = self.create(flavor, ns, NAMES[name], orphan, self_renew);
                format!(
                    "create {flavor:?} {ns}/{} orphan={orphan} selfRenew={self_renew}{}",
                    NAMES[name],
                    if ok { "" } else { " (refused)" }
                )
            }
            Act::EditDays { target, days } => self.edit(
                target,
                json!({"spec": {"days": days}}),
                format!("days={days}"),
            ),
            Act::EditRenewBefore { target, hours } => {
                let v = hours.map_or(Value::Null, |h| format!("{h}h").into());
                self.edit(
                    target,
                    json!({"spec": {"renewBefore": v}}),
                    format!("renewBefore={hours:?}"),
                )
            }
            Act::SetPolicy { target, orphan } => {
                let p = if orphan { "Orphan" } else { "Revoke" };
                self.edit(
                    target,
                    json!({"spec": {"deletionPolicy": p}}),
                    format!("deletionPolicy={p}"),
                )
            }
            Act::RenameSecret { target, to } => self.edit(
                target,
                json!({"spec": {"secret": {"name": SECRET_NAMES[to]}}}),
                format!("secret.name={}", SECRET_NAMES[to]),
            ),
            Act::ToggleFormats { target } => {
                let Some((_, v)) = self.pick(target) else {
                    return "toggle formats (nothing)".into();
                };
                let has = v["spec"]["secret"]["additionalFormats"].is_array();
                let formats = if has {
                    Value::Null
                } else {
                    json!([{"type": "Env"}])
                };
                self.edit(
                    target,
                    json!({"spec": {"secret": {"additionalFormats": formats}}}),
                    format!("formats={}", !has),
                )
            }
            Act::EditScope { target, which } => {
                let Some((_, v)) = self.pick(target) else {
                    return "edit scope (nothing)".into();
                };
                let kb = v["kind"] == "NucliaKbApiKey";
                let spec = &v["spec"];
                let patch = match which {
                    0 if kb => {
                        let urls: Vec<&str> = self
                            .fake
                            .bootstrap
                            .kbs
                            .iter()
                            .map(|k| k.url.as_str())
                            .collect();
                        let other = urls.iter().find(|u| spec["kbUrl"] != **u).copied();
                        json!({"spec": {"kbUrl": other.unwrap_or(urls[0])}})
                    }
                    1 if kb => {
                        let role = if spec["role"] == "SMEMBER" {
                            "SCONTRIBUTOR"
                        } else {
                            "SMEMBER"
                        };
                        json!({"spec": {"role": role}})
                    }
                    3 => {
                        let t = if spec["secret"]["type"] == "nuclia.dev/credential" {
                            "Opaque"
                        } else {
                            "nuclia.dev/credential"
                        };
                        json!({"spec": {"secret": {"type": t}}})
                    }
                    _ if kb && spec["auth"]["clusterCredentialRef"].is_object() => {
                        json!({"spec": {"auth": {"clusterCredentialRef": null,
                            "secretRef": {"name": "login", "key": "token"}}}})
                    }
                    _ if kb && rand_bit(target) => {
                        json!({"spec": {"auth": {"secretRef": null,
                            "clusterCredentialRef": {"name": CLUSTER_CREDENTIAL}}}})
                    }
                    _ => {
                        let to = if spec["auth"]["secretRef"]["name"] == "login" {
                            "login-2"
                        } else {
                            "login"
                        };
                        json!({"spec": {"auth": {"secretRef": {"name": to, "key": "token"}}}})
                    }
                };
                let what = format!("scope {patch}");
                self.edit(target, patch, what)
            }
            Act::Rotate { target } | Act::RevokeNow { target } => {
                let (key, what) = match act {
                    Act::Rotate { .. } => (ANNOTATION_ROTATE, "rotate"),
                    _ => (ANNOTATION_REVOKE_NOW, "revoke-now"),
                };
                let n = self.now.timestamp().to_string();
                let patch = json!({"metadata": {"annotations": {key: n}}});
                self.edit(target, patch, what.into())
            }
            Act::Delete { target } => {
                let Some((t, _)) = self.pick(target) else {
                    return "delete (nothing)".into();
                };
                self.delete_resource(&t.path);
                format!("delete {}", t.path)
            }
            Act::DeleteNamespace { ns } => {
                let ns = NAMESPACES[ns];
                if self.namespace_deletions.contains_key(ns) {
                    return format!("delete namespace {ns} (already)");
                }
                self.server.terminate_namespace(ns);
                self.namespace_deletions.insert(ns.to_owned(), self.now);
                format!("delete namespace {ns}")
            }
            Act::DeleteLogin { ns } => {
                let ns = NAMESPACES[ns];
                self.server.delete(&secret_path(ns, "login"));
                format!("delete Secret {ns}/login")
            }
            Act::ReplaceLogin { ns } => {
                let ns = NAMESPACES[ns];
                if self.server.namespace_terminating(ns) {
                    return format!("replace login in {ns} (namespace terminating)");
                }
                let login = self.mint_login("sim login");
                self.put_secret(ns, "login", &[("token", &login)]);
                format!("replace Secret {ns}/login with a new PAT")
            }
            Act::RevokeLoginUpstream { ns } => {
                let ns = NAMESPACES[ns];
                let value = self
                    .server
                    .get::<Secret>(&secret_path(ns, "login"))
                    .and_then(|s| {
                        s.data?
                            .get("token")
                            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    });
                let Some(value) = value else {
                    return format!("revoke login of {ns} (none)");
                };
                let mut st = self.fake.shared.lock();
                if let Some(id) = st.credential_id(&value).map(str::to_owned) {
                    st.revoke(&id);
                    self.revoked_out_of_band.insert(id);
                }
                format!("revoke the login of {ns} at Nuclia")
            }
            Act::DeleteManagedSecret { target } => {
                let Some((t, v)) = self.pick(target) else {
                    return "delete managed Secret (nothing)".into();
                };
                let Some(name) = status_of(&v).secret_name else {
                    return "delete managed Secret (none yet)".into();
                };
                let ns = namespace_of(&t.path);
                self.server.delete(&secret_path(&ns, &name));
                format!("delete Secret {ns}/{name}")
            }
            Act::RevokeUpstream { target } => {
                let Some((t, v)) = self.pick(target) else {
                    return "revoke upstream (nothing)".into();
                };
                let Some(id) = status_of(&v).token_id else {
                    return "revoke upstream (no token)".into();
                };
                self.revoke_out_of_band(&id);
                format!("revoke {}'s token {id} at Nuclia", t.path)
            }
            Act::ForgeRestored { target, name } => self.forge(target, NAMES[name]),
            Act::Jump { secs } => {
                let t = self.now + chrono::Duration::seconds(secs);
                self.set_now(t);
                format!("clock +{secs}s")
            }
            Act::Fault { how, count } => {
                let rule = match how {
                    // A 404 to a revocation means "already gone" (DESIGN §3: it is asked in
                    // the token's own scope), so a lying 404 goes only to other calls.
                    FaultHow::Status(404) => {
                        json!({"route": "*", "method": "POST", "status": 404, "count": count})
                    }
                    FaultHow::Status(s) => json!({"route": "*", "status": s, "count": count}),
                    FaultHow::Timeout => json!({"route": "*", "latency_ms": 800, "count": count}),
                    FaultHow::LostAnswer => {
                        json!({"route": "*", "drop_connection": true, "count": count})
                    }
                    FaultHow::CappedLifetime => {
                        json!({"route": "*", "method": "POST", "cap_expires_secs": 3 * 86_400, "count": count})
                    }
                };
                let rule: FaultRule = serde_json::from_value(rule).expect("a fault rule");
                self.fake.shared.lock().faults.push(rule);
                format!("Nuclia: next {count} call(s) {how:?}")
            }
            Act::Crash { writes, before } => {
                let shared = self.fake.shared.clone();
                self.server.crash_after(
                    writes,
                    before,
                    Box::new(move || {
                        let rule: FaultRule =
                            serde_json::from_value(json!({"route": "*", "status": 503}))
                                .expect("a fault rule");
                        shared.lock().faults.insert(0, rule);
                    }),
                );
                let when = if before { "before" } else { "after" };
                format!("crash {when} write {writes}")
            }
            Act::Restart => {
                self.restart();
                "restart".into()
            }
            Act::EditWindows { target, which } => {
                let (windows, what) = windows_choice(which);
                self.edit(
                    target,
                    json!({"spec": {"rotation": {"windows": windows}}}),
                    format!("windows={what}"),
                )
            }
            Act::LeakLogin { ns } => self.leak_login(NAMESPACES[ns]),
            Act::LeakClusterCredential { on_object } => self.leak_cluster_credential(on_object),
            Act::SetQuota { keys, per_hour } => self.set_quota(keys, per_hour),
            Act::Suspend { target, on } => self.edit(
                target,
                json!({"spec": {"suspend": on}}),
                format!("suspend={on}"),
            ),
            Act::Quick(act) => format!("{} (and at once)", self.apply(&act)),
        }
    }

    fn edit(&mut self, target: usize, patch: Value, what: String) -> String {
        let Some((t, _)) = self.pick(target) else {
            return format!("{what} (nothing)");
        };
        let code = self.server.merge(&t.path, &patch);
        format!("{} {what} ({code})", t.path)
    }

    /// Replaces the login of `ns` with a new PAT and marks it with a new
    /// `nuclia.dev/reissue-minted` value; every token then live that was minted with it, or
    /// down a chain with a Secret of a resource minted with it, must go (I9).
    fn leak_login(&mut self, ns: &str) -> String {
        if self.server.namespace_terminating(ns) {
            return format!("leak login in {ns} (namespace terminating)");
        }
        self.leaks += 1;
        let value = format!("leak-{}", self.leaks);
        let login = self.mint_login("sim login");
        self.put_secret(ns, "login", &[("token", &login)]);
        let path = secret_path(ns, "login");
        self.server.merge(
            &path,
            &json!({"metadata": {"annotations": {crate::crd::ANNOTATION_REISSUE: value}}}),
        );
        // The chain: tokens minted with the login, then with those resources' Secrets.
        let resources = self.all_resources();
        let mut secrets: HashSet<String> = HashSet::from(["login".to_owned()]);
        let mut tokens = Vec::new();
        loop {
            let before = secrets.len();
            for (p, v) in &resources {
                if namespace_of(p) != ns || is_deleting(v) {
                    continue;
                }
                let s = status_of(v);
                let from = |scope: &Option<crate::crd::TokenScope>| {
                    scope
                        .as_ref()
                        .and_then(|sc| sc.credential.as_ref())
                        .is_some_and(|c| secrets.contains(&c.name))
                };
                let mut minted = Vec::new();
                let current = from(&s.scope);
                if current {
                    minted.extend(s.token_id.clone());
                }
                minted.extend(
                    s.previous_tokens
                        .iter()
                        .filter(|t| from(&t.scope))
                        .map(|t| t.id.clone()),
                );
                if current {
                    secrets.extend(s.secret_name.clone());
                }
                let uid = v["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
                tokens.extend(minted.into_iter().map(|id| (id, uid.clone())));
            }
            if secrets.len() == before {
                break;
            }
        }
        tokens.sort();
        tokens.dedup();
        let n = tokens.len();
        self.leaked.extend(
            tokens
                .into_iter()
                .map(|(id, uid)| (id, (uid, value.clone()))),
        );
        format!(
            "replace Secret {ns}/login and mark it {value} ({n} token(s) minted down the chain)"
        )
    }

    /// Replaces the cluster credential's login and marks it (on the `NucliaClusterCredential`
    /// or on its Secret) with a new `nuclia.dev/reissue-minted` value: every token then live
    /// that was minted with it must go (I9).
    fn leak_cluster_credential(&mut self, on_object: bool) -> String {
        self.leaks += 1;
        let value = format!("leak-{}", self.leaks);
        let login = self.mint_login("cluster credential login");
        self.put_secret(OPERATOR_NS, "cc-login", &[("token", &login)]);
        let path = if on_object {
            format!("{CC_COLLECTION}/{CLUSTER_CREDENTIAL}")
        } else {
            secret_path(OPERATOR_NS, "cc-login")
        };
        self.server.merge(
            &path,
            &json!({"metadata": {"annotations": {crate::crd::ANNOTATION_REISSUE: value}}}),
        );
        let mut tokens = Vec::new();
        for (_, v) in self.all_resources() {
            if is_deleting(&v) {
                continue;
            }
            let s = status_of(&v);
            let through = |scope: &Option<crate::crd::TokenScope>| {
                scope
                    .as_ref()
                    .and_then(|sc| sc.cluster_credential.as_deref())
                    == Some(CLUSTER_CREDENTIAL)
            };
            let uid = v["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            if through(&s.scope) {
                tokens.extend(s.token_id.clone().map(|id| (id, uid.clone())));
            }
            tokens.extend(
                s.previous_tokens
                    .iter()
                    .filter(|t| through(&t.scope))
                    .map(|t| (t.id.clone(), uid.clone())),
            );
        }
        let n = tokens.len();
        self.leaked.extend(
            tokens
                .into_iter()
                .map(|(id, uid)| (id, (uid, value.clone()))),
        );
        // Re-issues are not held by the issues-per-hour quota.
        self.cc_rate_unjudged_until = self.now + chrono::Duration::hours(1);
        let on = if on_object {
            "the NucliaClusterCredential"
        } else {
            "its Secret"
        };
        format!(
            "replace the cluster credential's login and mark {on} {value} ({n} token(s) minted with it)"
        )
    }

    /// Sets the cluster credential's quotas; the keys each namespace holds now keep renewing.
    fn set_quota(&mut self, keys: Option<u32>, per_hour: Option<u32>) -> String {
        // The hours judged start now: mints before the quota were not held by it.
        if per_hour.is_some() && self.quota.1 != per_hour {
            self.cc_rate_unjudged_until = self.cc_rate_unjudged_until.max(self.now);
        }
        self.server.merge(
            &format!("{CC_COLLECTION}/{CLUSTER_CREDENTIAL}"),
            &json!({"spec": {"policy": {"maxKeysPerNamespace": keys,
                                         "maxIssuesPerNamespacePerHour": per_hour}}}),
        );
        self.quota = (keys, per_hour);
        self.quota_keys_before = self.cluster_keys();
        format!("quota: {keys:?} keys, {per_hour:?} issues per hour per namespace")
    }

    /// Current keys held through the cluster credential, by namespace.
    fn cluster_keys(&self) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for (path, v) in self.all_resources() {
            let s = status_of(&v);
            let through = s.token_id.is_some()
                && s.scope
                    .as_ref()
                    .and_then(|sc| sc.cluster_credential.as_deref())
                    == Some(CLUSTER_CREDENTIAL);
            if through {
                *out.entry(namespace_of(&path)).or_default() += 1;
            }
        }
        out
    }

    /// The `nuclia.dev/reissue-minted` marks of the login a token of `scope` was minted with,
    /// read from the apiserver (as the operator should see them).
    fn login_mark(&self, ns: &str, scope: Option<&crate::crd::TokenScope>) -> Option<String> {
        let scope = scope?;
        let mark = |path: &str| {
            self.server.get::<Value>(path).and_then(|o| {
                o["metadata"]["annotations"][crate::crd::ANNOTATION_REISSUE]
                    .as_str()
                    .map(str::to_owned)
            })
        };
        match &scope.cluster_credential {
            Some(cc) => {
                let object = mark(&format!("{CC_COLLECTION}/{cc}"));
                let secret = mark(&secret_path(OPERATOR_NS, "cc-login"));
                crate::lifecycle::reissue_mark(secret.as_deref(), object.as_deref())
            }
            None => mark(&secret_path(ns, &scope.credential.as_ref()?.name)),
        }
    }

    fn revoke_out_of_band(&mut self, id: &str) {
        let mut st = self.fake.shared.lock();
        // A NUA key: its client is deleted (revoking the key alone is not how NUA works).
        if let Some(client) = st
            .nua_clients
            .values()
            .find(|c| c.key == id)
            .map(|c| c.client_id.clone())
        {
            st.nua_clients.remove(&client);
        }
        st.revoke(id);
        self.revoked_out_of_band.insert(id.to_owned());
    }

    /// Another namespace's user writes a Secret that looks restored for a resource named
    /// `name` of the target's kind, naming the target's token, then creates that resource.
    fn forge(&mut self, target: usize, name: &str) -> String {
        let Some((t, v)) = self.pick(target) else {
            return "forge (nothing)".into();
        };
        let Some(id) = status_of(&v).token_id else {
            return "forge (no token yet)".into();
        };
        let victim_ns = namespace_of(&t.path);
        let ns = NAMESPACES
            .iter()
            .find(|n| **n != victim_ns)
            .copied()
            .unwrap_or(NAMESPACES[1]);
        if self.server.namespace_terminating(ns) {
            return format!("forge in {ns} (namespace terminating)");
        }
        let kind = v["kind"].as_str().unwrap_or_default();
        let owner_name: String = name
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.', '_'])
            .to_owned();
        let data =
            serde_json::to_value(k8s_openapi::ByteString(b"forged".to_vec())).expect("bytes");
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER_KIND: kind, LABEL_OWNER_NAME: owner_name},
                "annotations": {ANNOTATION_TOKEN_ID: id}},
            "data": {"token": data}});
        let code = self
            .server
            .create(&format!("/api/v1/namespaces/{ns}/secrets"), &secret);
        let flavor = if t.flavor == Flavor::KbKey {
            Flavor::KbKeyShared
        } else {
            t.flavor
        };
        let made = self.create(flavor, ns, name, false, false);
        format!(
            "forge in {ns}: Secret {name} ({code}) naming {}'s token {id}, resource created={made}",
            t.path
        )
    }

    fn restart(&mut self) {
        let (ctx, writers) = Self::process(&self.server, &self.fake, &self.metrics);
        self.ctx = ctx;
        self.writers = writers;
        self.cc_rate_unjudged_until = self.now + chrono::Duration::hours(1);
        // The new process lists everything and reconciles it all (what the simulation has
        // delivered stays known, so a resource that goes meanwhile is still seen going).
        for (path, _) in self.all_resources() {
            self.due.insert(path, self.now);
        }
    }

    /// What the watches, the garbage collector and the namespace controller do now.
    fn pump(&mut self) {
        // The namespace controller: deletes everything in a namespace being deleted; the
        // namespace goes once it is empty, and its team creates it again.
        for (ns, _) in self.namespace_deletions.clone() {
            let prefix_core = format!("/api/v1/namespaces/{ns}/secrets/");
            let kinds = [
                collection_of::<NucliaPersonalToken>(&ns),
                collection_of::<NucliaKbApiKey>(&ns),
                collection_of::<NucliaNuaKey>(&ns),
            ];
            let mut left = 0;
            for prefix in kinds.iter().map(|k| format!("{k}/")).chain([prefix_core]) {
                for (path, v) in self.server.list(&prefix) {
                    left += 1;
                    if !is_deleting(&v) {
                        self.server.delete(&path);
                        if !path.contains("/secrets/") {
                            self.deletions.entry(path).or_insert(self.now);
                        }
                    }
                }
            }
            if left == 0 {
                self.server.namespace_gone(&ns);
                self.namespace_deletions.remove(&ns);
                self.trace
                    .push(format!("  namespace {ns} gone (created again)"));
                self.make_namespace(&ns);
            }
        }
        // The garbage collector: a Secret whose controller is gone is deleted.
        let uids: HashSet<String> = self
            .all_resources()
            .iter()
            .filter_map(|(_, v)| v["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        for (path, v) in self.all_secrets() {
            if is_deleting(&v) {
                continue;
            }
            let orphaned = v["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r["controller"] == true
                            && !uids.contains(r["uid"].as_str().unwrap_or_default())
                    })
                });
            if orphaned {
                self.server.delete(&path);
            }
        }
        self.deliver();
    }

    /// Objects of `kind` (a path part) the watches delivered that are no longer `present`.
    fn undelivered(&self, kind: &str, present: &HashSet<String>) -> Vec<String> {
        self.delivered
            .keys()
            .filter(|p| p.contains(kind) && !present.contains(*p))
            .cloned()
            .collect()
    }

    /// Every Secret of the namespaces the simulation uses (not a scan of every object: the
    /// Events pile up).
    fn all_secrets(&self) -> Vec<(String, Value)> {
        NAMESPACES
            .iter()
            .chain([&OPERATOR_NS])
            .flat_map(|ns| {
                self.server
                    .list(&format!("/api/v1/namespaces/{ns}/secrets/"))
            })
            .collect()
    }

    fn all_resources(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for ns in NAMESPACES {
            for k in [
                collection_of::<NucliaPersonalToken>(ns),
                collection_of::<NucliaKbApiKey>(ns),
                collection_of::<NucliaNuaKey>(ns),
            ] {
                out.extend(self.server.list(&format!("{k}/")));
            }
        }
        out
    }

    /// The watches: caches relisted, changed objects wake their resources.
    fn deliver(&mut self) {
        let resources = self.all_resources();
        let now = self.now;
        let mut present = HashSet::new();
        for (path, v) in &resources {
            present.insert(path.clone());
            let rv = v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if self.delivered.get(path) != Some(&rv) {
                self.delivered.insert(path.clone(), rv);
                self.due.insert(path.clone(), now);
            }
            self.last_seen.insert(path.clone(), v.clone());
        }
        // Gone: what it left behind is judged by its last state.
        for path in self.undelivered("/apis/", &present) {
            self.delivered.remove(&path);
            self.due.remove(&path);
            if let Some(last) = self.last_seen.remove(&path) {
                self.went(&path, &last);
            }
        }
        relist(&mut self.writers.pt, &resources);
        relist(&mut self.writers.kb, &resources);
        relist(&mut self.writers.nua, &resources);
        // The cluster credential watch: a change wakes the resources that use it.
        let ccs = self.server.list(&format!("{CC_COLLECTION}/"));
        let mut objs = Vec::new();
        for (path, v) in &ccs {
            let rv = v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Ok(o) = serde_json::from_value::<NucliaClusterCredential>(v.clone()) {
                objs.push(o);
            }
            if self.cc_delivered.get(path) != Some(&rv) {
                self.cc_delivered.insert(path.clone(), rv);
                let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                for p in self.cluster_credential_users(&name) {
                    self.due.insert(p, now);
                }
            }
        }
        let w = &mut self.writers.cluster_credentials;
        w.apply_watcher_event(&watcher::Event::Init);
        for o in objs {
            w.apply_watcher_event(&watcher::Event::InitApply(o));
        }
        w.apply_watcher_event(&watcher::Event::InitDone);
        // Secrets: the metadata watch wakes owners (not for their own write's echo) and the
        // resources that read credentials from them.
        let secrets = self.all_secrets();
        let mut metas = Vec::new();
        let mut present = HashSet::new();
        for (path, v) in &secrets {
            present.insert(path.clone());
            let rv = v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if self.delivered.get(path) != Some(&rv) {
                self.delivered.insert(path.clone(), rv.clone());
                self.secret_event(path, v, &rv);
            }
            let mut meta =
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": v["metadata"].clone()});
            meta["metadata"]["managedFields"] = Value::Null;
            if let Ok(mut m) = serde_json::from_value::<PartialObjectMeta<Secret>>(meta) {
                // What the operator's watch keeps of it.
                crate::controller::secret_watch::slim(&mut m);
                metas.push(m);
            }
        }
        for path in self.undelivered("/secrets/", &present) {
            self.delivered.remove(&path);
            self.terminating_secrets.remove(&path);
            let v = json!({"metadata": {"name": path.rsplit('/').next(), "namespace": namespace_of(&path)}});
            self.secret_event(&path, &v, &format!("gone-{}", self.server.request_count()));
        }
        let w = &mut self.writers.secrets;
        w.apply_watcher_event(&watcher::Event::Init);
        for m in metas {
            w.apply_watcher_event(&watcher::Event::InitApply(m));
        }
        w.apply_watcher_event(&watcher::Event::InitDone);
    }

    fn secret_event(&mut self, path: &str, v: &Value, rv: &str) {
        let ns = namespace_of(path);
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        // Terminating since when (a Secret released and created again under the same name
        // is another Secret).
        if is_deleting(v) {
            self.terminating_secrets
                .entry(path.to_owned())
                .or_insert(self.now);
        } else {
            self.terminating_secrets.remove(path);
        }
        let now = self.now;
        for r in v["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if r["controller"] != true {
                continue;
            }
            let uid = r["uid"].as_str().unwrap_or_default();
            if self.ctx.memo.secret_seen(uid, Some(rv)) {
                continue;
            }
            if let Some(t) = self.created.iter().find(|t| t.uid == uid) {
                self.due.insert(t.path.clone(), now);
            }
        }
        let mut readers = Vec::new();
        for (index, coll) in [
            (
                &self.writers.pt.1,
                collection_of::<NucliaPersonalToken>(&ns),
            ),
            (&self.writers.kb.1, collection_of::<NucliaKbApiKey>(&ns)),
            (&self.writers.nua.1, collection_of::<NucliaNuaKey>(&ns)),
        ] {
            readers.extend(
                index
                    .readers(&ns, &name)
                    .into_iter()
                    .map(|n| format!("{coll}/{n}")),
            );
        }
        // A cluster credential's Secret: the resources using that cluster credential.
        if ns == OPERATOR_NS {
            for cc in self.ctx.cluster_credentials_reading(&name) {
                readers.extend(self.cluster_credential_users(&cc));
            }
        }
        for p in readers {
            self.due.insert(p, now);
        }
    }

    /// Paths of the resources that name cluster credential `name` or hold its keys.
    fn cluster_credential_users(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (index, kind) in [
            (&self.writers.pt.1, "pt"),
            (&self.writers.kb.1, "kb"),
            (&self.writers.nua.1, "nua"),
        ] {
            for (ns, n) in index.cluster_credential_users(name) {
                let coll = match kind {
                    "pt" => collection_of::<NucliaPersonalToken>(&ns),
                    "kb" => collection_of::<NucliaKbApiKey>(&ns),
                    _ => collection_of::<NucliaNuaKey>(&ns),
                };
                out.push(format!("{coll}/{n}"));
            }
        }
        out
    }

    /// A resource is gone: under `Orphan` its tokens are kept, and must stay valid.
    fn went(&mut self, path: &str, last: &Value) {
        self.deletions.remove(path);
        self.trace.push(format!("  {path} gone"));
        if last["spec"]["deletionPolicy"] == "Orphan" {
            let s = status_of(last);
            for id in s
                .token_id
                .iter()
                .chain(s.previous_tokens.iter().map(|p| &p.id))
            {
                let uid = last["metadata"]["uid"].as_str().unwrap_or_default();
                self.kept
                    .insert(id.clone(), (path.to_owned(), uid.to_owned()));
            }
        }
    }

    /// One reconcile, as the controller runs it: `reconcile`, or `error_policy` on an error.
    async fn reconcile_path(&mut self, path: &str) -> Option<Duration> {
        let v: Value = self.server.get(path)?;
        let kind = v["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "NucliaPersonalToken" => self.run::<NucliaPersonalToken>(path, v).await,
            "NucliaKbApiKey" => self.run::<NucliaKbApiKey>(path, v).await,
            "NucliaNuaKey" => self.run::<NucliaNuaKey>(path, v).await,
            _ => None,
        }
    }

    async fn run<K: Kind>(&mut self, path: &str, v: Value) -> Option<Duration> {
        let watch = self.before_reconcile(path, &v);
        let obj: K = match serde_json::from_value(v) {
            Ok(o) => o,
            Err(e) => {
                self.violations.push(Violation {
                    invariant: "setup",
                    what: format!("stored object does not parse: {e}"),
                });
                return None;
            }
        };
        self.reconciles += 1;
        let obj = Arc::new(obj);
        let ctx = self.ctx.clone();
        // Boxed, as the controller's runner holds it: the engine's future is large, and the
        // test thread's stack holds the whole simulation.
        let result =
            crate::clock::frozen_at(self.now, Box::pin(reconcile(obj.clone(), ctx.clone()))).await;
        let action = match result {
            Ok(a) => {
                self.failing.remove(&obj.uid().unwrap_or_default());
                a
            }
            Err(e) => {
                if self.trace_reconciles {
                    self.trace.push(format!("      error: {e}"));
                }
                self.errors.push(e.to_string());
                self.failing.insert(obj.uid().unwrap_or_default());
                crate::clock::frozen_at(self.now, async { error_policy(obj.clone(), &e, ctx) })
                    .await
            }
        };
        // Events are published in the background.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        self.after_reconcile(watch);
        if self.server.recover() {
            self.fake
                .shared
                .lock()
                .faults
                .retain(|f| !(f.route == "*" && f.status == Some(503) && f.count.is_none()));
            self.trace.push(format!(
                "  crashed reconciling {}; restarted",
                obj.name_any()
            ));
            self.restart();
            return Some(Duration::ZERO);
        }
        self.count_mints();
        requeue_of(&action)
    }

    /// What I7 and I8 need to know of a resource before one of its reconciles.
    fn before_reconcile(&self, path: &str, v: &Value) -> Before {
        let status = status_of(v);
        let st = self.fake.shared.lock();
        let tokens: Vec<String> = status
            .token_id
            .iter()
            .cloned()
            .chain(status.previous_tokens.iter().map(|p| p.id.clone()))
            .collect();
        let live: HashSet<String> = tokens
            .into_iter()
            .filter(|id| token_live(&st, id))
            .collect();
        let current_live = status.token_id.as_ref().is_some_and(|id| live.contains(id));
        let faults = !st.faults.is_empty();
        drop(st);
        let annotations = &v["metadata"]["annotations"];
        let asked = |key: &str, handled: &Option<String>| {
            annotations[key]
                .as_str()
                .is_some_and(|a| Some(a) != handled.as_deref())
        };
        let secret_holds = status.secret_name.as_ref().is_some_and(|name| {
            let key = v["spec"]["secret"]["keys"]["token"]
                .as_str()
                .unwrap_or("token");
            self.server
                .get::<Secret>(&secret_path(&namespace_of(path), name))
                .filter(|s| s.metadata.deletion_timestamp.is_none())
                .and_then(|s| {
                    s.data?
                        .get(key)
                        .map(|b| token_hash(&String::from_utf8_lossy(&b.0)))
                })
                == status.token_hash
        });
        Before {
            path: path.to_owned(),
            uid: v["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
            deleting: is_deleting(v),
            suspended: v["spec"]["suspend"].as_bool() == Some(true),
            windows: v["spec"]["rotation"]["windows"].clone(),
            // A token that had to change: no token, an expired or dead one, a Secret that does
            // not hold it, a request, an interrupted issue, or a fault that may have made the
            // operator think it dead.
            must_change: status.token_id.is_none()
                || status.not_after.is_none_or(|t| t <= self.now)
                || !current_live
                || !secret_holds
                || faults
                || asked(ANNOTATION_ROTATE, &status.rotate_handled)
                || asked(ANNOTATION_REVOKE_NOW, &status.revoke_now_handled)
                || crate::lifecycle::reissue_pending(
                    self.login_mark(&namespace_of(path), status.scope.as_ref())
                        .as_deref(),
                    status.reissue_handled.as_deref(),
                )
                || annotations[crate::crd::ANNOTATION_ISSUE_INTENT]
                    .as_str()
                    .and_then(crate::crd::IssueIntent::parse)
                    .is_some_and(|i| status.resolved_intent.as_ref() != Some(&i.nonce)),
            revoke_now: asked(ANNOTATION_REVOKE_NOW, &status.revoke_now_handled),
            live,
            status,
            requests: self.server.request_count(),
            // Letting go of a Secret someone deleted is their deletion, not the operator's write.
            deleted_secrets: self
                .server
                .list(&format!(
                    "/api/v1/namespaces/{}/secrets/",
                    namespace_of(path)
                ))
                .into_iter()
                .filter(|(_, s)| is_deleting(s))
                .map(|(p, _)| p)
                .collect(),
            events: self
                .server
                .list("/apis/events.k8s.io/v1/")
                .into_iter()
                .map(|(p, _)| p)
                .collect(),
        }
    }

    /// I7: no scheduled renewal, and no revocation of the token one replaced, outside the
    /// resource's rotation windows, unless the safety deadline forced it (an Event says so).
    /// I8: a suspended resource makes no call to Nuclia and writes nothing but its status.
    fn after_reconcile(&mut self, b: Before) {
        if b.deleting {
            return;
        }
        let Some(after) = self.server.get::<Value>(&b.path) else {
            return;
        };
        let a = status_of(&after);
        let now = self.now;
        let reasons: Vec<String> = self
            .server
            .list("/apis/events.k8s.io/v1/")
            .into_iter()
            .filter(|(p, e)| !b.events.contains(p) && e["regarding"]["uid"] == b.uid.as_str())
            .filter_map(|(_, e)| e["reason"].as_str().map(str::to_owned))
            .collect();
        let st = self.fake.shared.lock();
        let revoked: Vec<String> = b
            .live
            .iter()
            .filter(|id| !token_live(&st, id))
            .cloned()
            .collect();
        let minted = st
            .creds
            .values()
            .filter(|c| !self.seen_creds.contains(&c.id))
            .any(|c| marker_of(&st, &c.id).is_some_and(|m| m.uid == b.uid));
        drop(st);
        if b.suspended {
            let wrote: Vec<String> = self
                .server
                .requests_since(b.requests)
                .into_iter()
                .filter(|r| {
                    !r.starts_with("GET")
                        && !r.contains("/events")
                        && !r.contains("/status")
                        && !r.ends_with("(dryRun)")
                        && !r
                            .strip_prefix("PATCH ")
                            .is_some_and(|p| b.deleted_secrets.contains(p))
                })
                .collect();
            if minted || !revoked.is_empty() || !wrote.is_empty() {
                self.violations.push(Violation {
                    invariant: "I8",
                    what: format!(
                        "{} is suspended, yet minted: {minted}, revoked {revoked:?}, wrote {wrote:?}",
                        b.path
                    ),
                });
            }
            return;
        }
        let forced = reasons.iter().any(|r| r == "RenewalOutsideWindow");
        let renewed = b.status.token_id.is_some() && a.token_id != b.status.token_id;
        // A renewal that changed nothing but the token (a spec change records another hash).
        let scheduled = renewed && !b.must_change && a.spec_hash == b.status.spec_hash;
        if scheduled && !forced && !sim_in_window(&b.windows, now) {
            self.violations.push(Violation {
                invariant: "I7",
                what: format!(
                    "{} renewed its token at {now}, outside its rotation windows {}",
                    b.path, b.windows
                ),
            });
        }
        if forced {
            // Only at the safety deadline: halfway from the renewal time to expiry.
            if let (Some(due), Some(not_after)) = (b.status.renewal_time, b.status.not_after)
                && now < due + (not_after - due) / 2 - chrono::Duration::seconds(1)
            {
                self.violations.push(Violation {
                    invariant: "I7",
                    what: format!(
                        "{} renewed outside its windows at {now}, before the safety deadline (renewal time {due}, expiry {not_after})",
                        b.path
                    ),
                });
            }
        }
        if scheduled
            && !forced
            && let Some(old) = &b.status.token_id
        {
            self.window_replaced.insert(old.clone());
        }
        let early = reasons.iter().any(|r| r == "PreviousTokenRevokedEarly");
        for id in revoked {
            if self.window_replaced.remove(&id)
                && !b.revoke_now
                && !early
                && !sim_in_window(&after["spec"]["rotation"]["windows"], now)
            {
                self.violations.push(Violation {
                    invariant: "I7",
                    what: format!(
                        "{} revoked token {id}, replaced by a scheduled renewal, at {now}, outside its rotation windows {}",
                        b.path, after["spec"]["rotation"]["windows"]
                    ),
                });
            }
        }
    }

    /// New credentials at Nuclia, attributed by their marker (I4: one mint per resource per
    /// minimum interval).
    fn count_mints(&mut self) {
        let st = self.fake.shared.lock();
        let new: Vec<(String, DateTime<Utc>)> = st
            .creds
            .values()
            .filter(|c| !self.seen_creds.contains(&c.id))
            .map(|c| (c.id.clone(), c.created))
            .collect();
        let mut found = Vec::new();
        for (id, created) in new {
            if let Some(m) = marker_of(&st, &id) {
                found.push((m.uid, created));
            }
            self.seen_creds.insert(id);
        }
        drop(st);
        let min = chrono::Duration::from_std(settings().min_issue_interval).expect("a duration");
        for (uid, at) in found {
            let times = self.mints.entry(uid.clone()).or_default();
            // The operator keeps times in whole seconds (as the apiserver does): the interval
            // is counted from the second a mint started.
            if let Some(last) = times.last()
                && at - *last < min - chrono::Duration::seconds(1)
            {
                let path = self
                    .created
                    .iter()
                    .find(|t| t.uid == uid)
                    .map(|t| t.path.clone())
                    .unwrap_or(uid.clone());
                self.violations.push(Violation {
                    invariant: "I4",
                    what: format!(
                        "{path} minted twice within {}s ({} then {at})",
                        min.num_seconds(),
                        *last
                    ),
                });
            }
            times.push(at);
        }
    }

    /// Reconciles what is due, letting time run to the wake-ups within the settle window.
    async fn settle(&mut self) {
        let horizon = self.now + chrono::Duration::seconds(SETTLE_WINDOW);
        let mut writes: HashMap<String, usize> = HashMap::new();
        // Reconciles per resource in this settle, and the last wake-up asked (for a report).
        let mut counts: HashMap<String, (usize, Option<Duration>)> = HashMap::new();
        let start = self.now;
        let mut rounds = 0;
        loop {
            self.pump();
            let due: Vec<String> = self
                .due
                .iter()
                .filter(|(_, t)| **t <= self.now)
                .map(|(p, _)| p.clone())
                .collect();
            if due.is_empty() {
                match self.due.values().min().copied() {
                    Some(t) if t <= horizon => {
                        self.set_now(t);
                        continue;
                    }
                    _ => break,
                }
            }
            rounds += 1;
            if rounds > 2000 {
                let mut busiest: Vec<(&String, &(usize, Option<Duration>))> =
                    counts.iter().collect();
                busiest.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
                let busiest: Vec<String> = busiest
                    .iter()
                    .take(3)
                    .map(|(p, (n, d))| format!("{p}: {n} reconciles, last again in {d:?}"))
                    .collect();
                self.violations.push(Violation {
                    invariant: "I4",
                    what: format!(
                        "no quiet point within 2000 rounds ({}s simulated); busiest: {}",
                        (self.now - start).num_seconds(),
                        busiest.join("; ")
                    ),
                });
                break;
            }
            for path in due {
                self.due.remove(&path);
                let before = self.server.request_count();
                let requeue = self.reconcile_path(&path).await;
                let c = counts.entry(path.clone()).or_default();
                *c = (c.0 + 1, requeue);
                if self.trace_reconciles {
                    let name = path.rsplit('/').take(2).collect::<Vec<_>>().join(" ");
                    let t = self.now.format("%m-%d %H:%M:%S");
                    self.trace
                        .push(format!("    {t} reconciled {name}: again in {requeue:?}"));
                }
                let wrote = self
                    .server
                    .requests_since(before)
                    .iter()
                    .filter(|r| {
                        !r.starts_with("GET") && !r.contains("/events") && !r.contains("dryRun")
                    })
                    .count();
                let n = writes.entry(path.clone()).or_default();
                *n += wrote;
                if *n > MAX_WRITES_PER_SETTLE {
                    self.violations.push(Violation {
                        invariant: "I4",
                        what: format!("{path}: more than {MAX_WRITES_PER_SETTLE} writes in {SETTLE_WINDOW}s with nothing new (a write loop)"),
                    });
                    return;
                }
                if let Some(d) = requeue {
                    let at = self.now
                        + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX / 2);
                    let slot = self.due.entry(path).or_insert(at);
                    *slot = (*slot).min(at);
                }
            }
        }
    }

    /// Every resource reconciled once more with nothing new: none may write (I4).
    /// (Deletions are left out: one that waits to retry a revocation would try again, which
    /// is no loop without an event to wake it, and the settle counts those.)
    async fn resync(&mut self) {
        self.pump();
        let live: Vec<String> = self
            .all_resources()
            .into_iter()
            .filter(|(_, v)| !is_deleting(v))
            .map(|(p, _)| p)
            .collect();
        for path in live {
            if self.due.get(&path).is_some_and(|t| *t <= self.now) {
                continue;
            }
            let before = self.server.request_count();
            self.reconcile_path(&path).await;
            let wrote: Vec<String> = self
                .server
                .requests_since(before)
                .into_iter()
                .filter(|r| {
                    !r.starts_with("GET") && !r.contains("/events") && !r.contains("dryRun")
                })
                .collect();
            if !wrote.is_empty() {
                self.violations.push(Violation {
                    invariant: "I4",
                    what: format!("{path}: a reconcile that observed nothing new wrote {wrote:?}"),
                });
            }
        }
    }

    /// The invariants at a quiet point; `end`: after every deletion had its time.
    fn check(&mut self, end: bool, logs: &str) {
        let st = self.fake.shared.lock();
        let now = self.now;
        let mut v = Vec::new();
        let resources = self.all_resources();
        let live_uids: HashSet<String> = resources
            .iter()
            .filter_map(|(_, r)| r["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        let events = self.server.list("/apis/events.k8s.io/v1/");
        let abandoned: String = events
            .iter()
            .filter(|(_, e)| e["reason"] == "RevokeAbandoned")
            .filter_map(|(_, e)| e["note"].as_str().map(str::to_owned))
            .chain(
                logs.lines()
                    .filter(|l| l.contains("gave up revoking"))
                    .map(str::to_owned),
            )
            .collect::<Vec<_>>()
            .join("\n");
        let live = |id: &str| token_live(&st, id);
        for (path, r) in &resources {
            let uid = r["metadata"]["uid"].as_str().unwrap_or_default();
            let s = status_of(r);
            // I3: Ready only while the Secret holds the current, valid, unexpired token.
            let ready = s.condition("Ready").is_some_and(|c| c.status == "True");
            // The spec cannot be served (Stalled, or Ready speaks of an older generation): no
            // verification runs meanwhile.
            let generation = r["metadata"]["generation"].as_i64();
            let unserved = s.condition("Stalled").is_some_and(|c| c.status == "True")
                || self.failing.contains(uid)
                || s.condition("Ready")
                    .is_some_and(|c| c.observed_generation.is_some_and(|g| Some(g) < generation));
            if ready && !is_deleting(r) {
                let ns = namespace_of(path);
                let name = s.secret_name.clone().unwrap_or_default();
                let secret: Option<Secret> = self.server.get(&secret_path(&ns, &name));
                let key = r["spec"]["secret"]["keys"]["token"]
                    .as_str()
                    .unwrap_or("token");
                let value = secret
                    .as_ref()
                    .filter(|s| s.metadata.deletion_timestamp.is_none())
                    .and_then(|s| {
                        s.data
                            .as_ref()?
                            .get(key)
                            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    });
                let problem = match &value {
                    None => Some("its Secret holds no token".to_owned()),
                    Some(t) if Some(token_hash(t)) != s.token_hash => {
                        Some("its Secret holds another token than status".into())
                    }
                    Some(t) => match token_id_of(&st, t).as_deref() {
                        None => Some("its Secret's token is unknown to Nuclia".into()),
                        Some(id) if Some(id) != s.token_id.as_deref() => Some(format!(
                            "its Secret's token is {id}, status says {:?}",
                            s.token_id
                        )),
                        // A death Nuclia did not announce (a lifetime it capped quietly) is seen
                        // at the next verification the operator can make: none while the
                        // resource's reconciles fail (its spec cannot be served).
                        Some(id)
                            if !(live(id)
                                || self.revoked_out_of_band.contains(id)
                                || (unserved
                                    && expiry_of(&st, id)
                                        .is_some_and(|e| s.not_after.is_some_and(|n| e < n)))) =>
                        {
                            Some(format!("its token {id} is dead at Nuclia"))
                        }
                        _ if s.not_after.is_some_and(|t| t <= now) => {
                            Some("its token has expired".into())
                        }
                        _ => None,
                    },
                };
                if let Some(p) = problem {
                    v.push(Violation {
                        invariant: "I3",
                        what: format!(
                            "{path} is Ready but {p} (conditions: {})",
                            r["status"]["conditions"]
                        ),
                    });
                }
            }
            // I5: no resource records another (existing) resource's credential, and nobody
            // but the resource revokes its current one.
            for id in s
                .token_id
                .iter()
                .chain(s.previous_tokens.iter().map(|p| &p.id))
            {
                if let Some(m) = marker_of(&st, id)
                    && m.uid != uid
                    && live_uids.contains(&m.uid)
                {
                    v.push(Violation {
                        invariant: "I5",
                        what: format!("{path} records token {id}, minted for resource {}", m.uid),
                    });
                }
            }
            if let Some(id) = &s.token_id
                && !is_deleting(r)
                && expiry_of(&st, id).is_none_or(|e| e > st.now())
                && !live(id)
                && !self.revoked_out_of_band.contains(id)
                && marker_of(&st, id).is_some_and(|m| m.uid == uid)
            {
                v.push(Violation {
                    invariant: "I5",
                    what: format!(
                        "{path}'s current token {id} was revoked by the operator while it lives"
                    ),
                });
            }
            // I2: deletions finish in bounded time.
            if let Some(start) = self.deletions.get(path)
                && now - *start > bound()
            {
                v.push(Violation {
                    invariant: "I2",
                    what: format!(
                        "{path} still there {}s after its deletion",
                        (now - *start).num_seconds()
                    ),
                });
            }
        }
        for (path, since) in &self.terminating_secrets {
            let stuck = self
                .server
                .get::<Value>(path)
                .is_some_and(|s| is_deleting(&s));
            if now - *since > bound() && stuck {
                v.push(Violation {
                    invariant: "I2",
                    what: format!(
                        "Secret {path} Terminating for {}s",
                        (now - *since).num_seconds()
                    ),
                });
            }
        }
        // I9: a token minted, directly or down a chain, with a login marked leaked is revoked
        // once its resource can act: not when it is suspended, failing or stalled, nor while
        // the Secret it was minted with does not carry the mark (the resource up the chain
        // has not re-issued: it is judged itself), nor when it was kept or abandoned.
        let by_uid: HashMap<&str, (&String, &Value)> = resources
            .iter()
            .filter_map(|(p, r)| Some((r["metadata"]["uid"].as_str()?, (p, r))))
            .collect();
        let mut revoked_leaks = Vec::new();
        for (id, (uid, mark)) in &self.leaked {
            if !live(id) {
                revoked_leaks.push(id.clone());
                continue;
            }
            let Some((path, r)) = by_uid.get(uid.as_str()) else {
                continue;
            };
            let s = status_of(r);
            let scope = s
                .scope
                .as_ref()
                .filter(|_| s.token_id.as_ref() == Some(id))
                .or_else(|| {
                    s.previous_tokens
                        .iter()
                        .find(|p| &p.id == id)
                        .and_then(|p| p.scope.as_ref())
                });
            // The mark is still there (on the login Secret; for a cluster credential, on it or
            // on its Secret).
            let marked = self
                .login_mark(&namespace_of(path), scope)
                .is_some_and(|m| {
                    m == *mark
                        || m.starts_with(&format!("{mark};"))
                        || m.ends_with(&format!("={mark}"))
                });
            let waits = is_deleting(r)
                || r["spec"]["suspend"] == true
                || self.failing.contains(uid)
                || s.condition("Stalled").is_some_and(|c| c.status == "True")
                // its last attempt failed (a reconcile the memo answers during the backoff
                // returns Ok, so `failing` alone does not say it)
                || s.condition("Issuing").is_some_and(|c| {
                    c.status == "False" && !matches!(c.reason.as_str(), "Idle" | "Suspended")
                })
                || self.kept.contains_key(id)
                || abandoned.contains(id.as_str());
            if marked && !waits {
                v.push(Violation {
                    invariant: "I9",
                    what: format!(
                        "{path}: token {id}, minted with a login marked {mark} (or down its chain), is still live"
                    ),
                });
            }
        }
        // I10: under the cluster credential's quotas, no namespace holds more keys through it
        // than `maxKeysPerNamespace` (or than it held when the quota was set, as those renew),
        // and none mints more than `maxIssuesPerNamespacePerHour` in an hour (not judged for
        // an hour after a restart, which counts from zero, or a mark, whose re-issues are not
        // held).
        for (path, r) in &resources {
            let s = status_of(r);
            let (Some(id), Some(at)) = (&s.token_id, s.issued_at) else {
                continue;
            };
            let through = s
                .scope
                .as_ref()
                .and_then(|sc| sc.cluster_credential.as_deref())
                == Some(CLUSTER_CREDENTIAL);
            if through && self.cc_tokens.insert(id.clone()) {
                self.cc_issues
                    .entry(namespace_of(path))
                    .or_default()
                    .push(at);
            }
        }
        let keys = self.cluster_keys();
        if let Some(max) = self.quota.0 {
            for (ns, n) in &keys {
                let before = self.quota_keys_before.get(ns).copied().unwrap_or(0);
                if *n > max.max(before) {
                    v.push(Violation {
                        invariant: "I10",
                        what: format!(
                            "namespace {ns} holds {n} keys through the cluster credential; its maxKeysPerNamespace is {max} ({before} held when it was set)"
                        ),
                    });
                }
            }
            for (ns, before) in self.quota_keys_before.iter_mut() {
                *before = (*before).min(keys.get(ns).copied().unwrap_or(0));
            }
        }
        if let Some(max) = self.quota.1 {
            for (ns, times) in &self.cc_issues {
                for t in times {
                    let in_hour = times
                        .iter()
                        .filter(|u| **u >= *t && **u < *t + chrono::Duration::hours(1))
                        .count();
                    if in_hour > max as usize && *t > self.cc_rate_unjudged_until {
                        v.push(Violation {
                            invariant: "I10",
                            what: format!(
                                "namespace {ns} minted {in_hour} keys through the cluster credential in the hour from {t}; its maxIssuesPerNamespacePerHour is {max}"
                            ),
                        });
                        break;
                    }
                }
            }
        }
        // I1: what an Orphan deletion kept stays valid (unless a resource of the same name
        // adopted it from the Secret the deletion kept: then that resource's policy counts)...
        let recorded: HashSet<(String, String)> = resources
            .iter()
            .flat_map(|(_, r)| {
                let s = status_of(r);
                let uid = r["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
                s.token_id
                    .into_iter()
                    .chain(s.previous_tokens.into_iter().map(|p| p.id))
                    .map(move |id| (id, uid.clone()))
            })
            .collect();
        self.kept
            .retain(|id, (_, uid)| !recorded.iter().any(|(i, u)| i == id && u != uid));
        for (id, (path, _)) in &self.kept {
            let expired = expiry_of(&st, id).is_some_and(|e| e <= st.now());
            if !live(id) && !expired && !self.revoked_out_of_band.contains(id) {
                v.push(Violation {
                    invariant: "I1",
                    what: format!("token {id}, kept by the Orphan deletion of {path}, was revoked"),
                });
            }
        }
        // ...and, once every deletion had its time, nothing else minted here is left.
        if end {
            for c in st.creds.values() {
                let id = if c.kind == CredKind::NuaKey {
                    c.owner.clone()
                } else {
                    c.id.clone()
                };
                let Some(m) = marker_of(&st, &id) else {
                    continue;
                };
                if m.installation.as_deref() != Some(INSTALLATION) || !live(&id) {
                    continue;
                }
                if live_uids.contains(&m.uid)
                    || self.kept.contains_key(&id)
                    || abandoned.contains(&id)
                {
                    continue;
                }
                let path = self
                    .created
                    .iter()
                    .find(|t| t.uid == m.uid)
                    .map(|t| t.path.clone())
                    .unwrap_or_default();
                v.push(Violation { invariant: "I1", what: format!("{:?} {id} of {path} ({}) is live with no resource, Orphan deletion or RevokeAbandoned", c.kind, m.uid) });
            }
        }
        // I6: no token value outside the Secret.
        let mut texts: Vec<String> = events.iter().map(|(_, e)| e.to_string()).collect();
        texts.extend(resources.iter().map(|(_, r)| r["status"].to_string()));
        texts.extend(self.errors.iter().cloned());
        texts.push(logs.to_owned());
        for value in st.minted.iter().filter(|m| m.len() >= 16) {
            if texts.iter().any(|t| t.contains(value.as_str())) {
                v.push(Violation {
                    invariant: "I6",
                    // Named by its credential id: the value itself never reaches the output.
                    what: format!(
                        "the value of credential {} appears in a log line, Event, status or error",
                        st.credential_id(value).unwrap_or("(unknown)")
                    ),
                });
                break;
            }
        }
        drop(st);
        for id in revoked_leaks {
            self.leaked.remove(&id);
        }
        self.violations.extend(v);
    }
}

/// A bit the action's own numbers decide (so a shrunk sequence means the same).
fn rand_bit(n: usize) -> bool {
    n % 2 == 1
}

/// The bound on a deletion: `--revoke-timeout` plus the intent grace and a margin.
fn bound() -> chrono::Duration {
    let s = settings();
    chrono::Duration::from_std(s.revoke_timeout + s.intent_grace).expect("a duration")
        + chrono::Duration::seconds(2 * SETTLE_WINDOW)
}

/// The id the operator knows the credential holding `value` by (a NUA key's is its client's).
fn token_id_of(st: &nuclia_fake::state::State, value: &str) -> Option<String> {
    let c = st.creds.get(st.credential_id(value)?)?;
    Some(if c.kind == CredKind::NuaKey {
        c.owner.clone()
    } else {
        c.id.clone()
    })
}

/// Whether the credential the operator knows as `id` still works: not revoked or expired, its
/// service account or NUA client still there.
fn token_live(st: &nuclia_fake::state::State, id: &str) -> bool {
    if let Some(client) = st.nua_clients.get(id) {
        return st.creds.get(&client.key).is_some_and(|c| st.is_live(c));
    }
    st.creds.get(id).is_some_and(|c| {
        st.is_live(c) && (c.kind != CredKind::SaKey || st.service_accounts.contains_key(&c.owner))
    })
}

/// When the credential the operator knows as `id` expires at Nuclia (NUA keys never do).
fn expiry_of(st: &nuclia_fake::state::State, id: &str) -> Option<DateTime<Utc>> {
    if st.nua_clients.contains_key(id) {
        return None;
    }
    st.creds.get(id)?.expires
}

/// The marker of the resource the credential the operator knows as `id` was minted for: in a
/// PAT's description, a KB key's service account title, a NUA client's description.
fn marker_of(st: &nuclia_fake::state::State, id: &str) -> Option<Marker> {
    if let Some(client) = st.nua_clients.get(id) {
        return Marker::find(&client.description).filter(|m| m.cluster == CLUSTER_ID);
    }
    let c = st.creds.get(id)?;
    let text = match c.kind {
        CredKind::Pat => c.description.clone(),
        CredKind::SaKey => st.service_accounts.get(&c.owner)?.title.clone(),
        CredKind::NuaKey => st
            .nua_clients
            .get(&c.owner)
            .map(|n| n.description.clone())
            .unwrap_or_else(|| c.description.clone()),
        CredKind::UserToken => return None,
    };
    Marker::find(&text).filter(|m| m.cluster == CLUSTER_ID)
}

fn relist<K: Kind>(w: &mut (Writer<K>, Arc<ResourceIndex>), all: &[(String, Value)]) {
    let objs: Vec<K> = all
        .iter()
        .filter(|(_, v)| v["kind"].as_str() == Some(K::kind(&()).as_ref()))
        .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
        .collect();
    for e in std::iter::once(watcher::Event::Init)
        .chain(objs.into_iter().map(watcher::Event::InitApply))
        .chain([watcher::Event::InitDone])
    {
        w.0.apply_watcher_event(&e);
        w.1.observe(&e);
    }
}

/// The operator's log lines of one run, for I6.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().expect("log buffer")))
            .into_owned()
    }
}

/// What one run of a sequence found.
struct Outcome {
    violations: Vec<Violation>,
    trace: Vec<String>,
    reconciles: u64,
    /// The operator's log of the run.
    logs: String,
}

/// Runs `acts`, checking the invariants after each and at the end, after every resource was
/// deleted and every deletion had its time.
async fn run_sequence(acts: &[Act], logs: &LogBuffer) -> Outcome {
    logs.take();
    let mut sim = Sim::new().await;
    let mut collected = String::new();
    for act in acts {
        let what = sim.apply(act);
        sim.trace
            .push(format!("{} {what}", sim.now.format("%m-%d %H:%M:%S")));
        if matches!(act, Act::Quick(_)) {
            continue;
        }
        sim.settle().await;
        sim.resync().await;
        collected.push_str(&logs.take());
        sim.check(false, &collected);
        if !sim.violations.is_empty() {
            break;
        }
    }
    if sim.violations.is_empty() {
        // The end: Nuclia answers again, every resource is deleted, time runs out.
        sim.fake.shared.lock().faults.clear();
        sim.server.recover();
        sim.trace.push("end: delete everything".into());
        for (path, _) in sim.all_resources() {
            sim.delete_resource(&path);
        }
        let until = sim.now + bound();
        while sim.now < until && !sim.all_resources().is_empty() {
            sim.settle().await;
            let t = sim.now + chrono::Duration::seconds(SETTLE_WINDOW);
            sim.set_now(t);
        }
        sim.settle().await;
        collected.push_str(&logs.take());
        sim.check(true, &collected);
    }
    Outcome {
        violations: sim.violations,
        trace: sim.trace,
        reconciles: sim.reconciles,
        logs: collected,
    }
}

/// Drops actions while the sequence still breaks `invariant`: the shortest failing sequence
/// found this way.
async fn shrink(mut acts: Vec<Act>, invariant: &str, logs: &LogBuffer) -> Vec<Act> {
    let mut i = 0;
    while i < acts.len() {
        let mut shorter = acts.clone();
        shorter.remove(i);
        let out = run_sequence(&shorter, logs).await;
        if out.violations.iter().any(|v| v.invariant == invariant) {
            acts = shorter;
        } else {
            i += 1;
        }
    }
    acts
}

/// Runs `seeds`, shrinks the first failure, and returns a report of the failures (empty: none).
async fn explore(
    seeds: impl Iterator<Item = u64>,
    verbose: bool,
) -> (Vec<String>, BTreeMap<&'static str, u64>, u64, u64) {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .with_env_filter("nuclia_token_operator=debug,nuclia_fake=off")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut failures = Vec::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut sequences, mut reconciles) = (0, 0);
    for seed in seeds {
        let acts = sequence(seed);
        let out = run_sequence(&acts, &logs).await;
        sequences += 1;
        reconciles += out.reconciles;
        if verbose {
            for line in &out.trace {
                println!("  {line}");
            }
        }
        let Some(first) = out.violations.first().cloned() else {
            continue;
        };
        for v in &out.violations {
            *counts.entry(v.invariant).or_default() += 1;
        }
        if failures.len() < 3 {
            let short = shrink(acts, first.invariant, &logs).await;
            let again = run_sequence(&short, &logs).await;
            let mut report = format!(
                "seed {seed}: {} {}\n  shortest sequence ({} actions; rerun with NTO_SIM_SEED={seed}):\n",
                first.invariant,
                first.what,
                short.len()
            );
            for line in &again.trace {
                report.push_str(&format!("    {line}\n"));
            }
            for v in again.violations.iter().take(3) {
                report.push_str(&format!("    => {} {}\n", v.invariant, v.what));
            }
            // NTO_SIM_LOG=<n>: the operator's last n log lines of the shortest sequence.
            if let Some(n) = std::env::var("NTO_SIM_LOG")
                .ok()
                .and_then(|n| n.parse().ok())
            {
                let lines: Vec<&str> = again.logs.lines().collect();
                for line in &lines[lines.len().saturating_sub(n)..] {
                    report.push_str(&format!("      | {line}\n"));
                }
            }
            failures.push(report);
        } else {
            failures.push(format!("seed {seed}: {} {}", first.invariant, first.what));
        }
    }
    (failures, counts, sequences, reconciles)
}

/// The CI run: 500 sequences (in two halves, one per test thread), zero violations.
async fn ci_half(half: u64) {
    if std::env::var("NTO_SIM_SEED").is_ok() || std::env::var("NTO_SIM_SEQUENCES").is_ok() {
        return; // the long mode and single seeds run in `simulation_long`
    }
    let start = std::time::Instant::now();
    let (failures, counts, n, reconciles) = explore(half * 250..(half + 1) * 250, false).await;
    println!(
        "simulation: {n} sequences, {reconciles} reconciles in {:.1}s; violations by invariant: {counts:?}",
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failing sequences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn simulation_first_half() {
    ci_half(0).await;
}

#[tokio::test]
async fn simulation_second_half() {
    ci_half(1).await;
}

/// `NTO_SIM_SEED=<seed>`: one seed with its trace. `NTO_SIM_SEQUENCES=<n>` (optionally
/// `NTO_SIM_FROM=<first seed>`): the long mode.
#[tokio::test]
async fn simulation_long() {
    if let Ok(seed) = std::env::var("NTO_SIM_SEED") {
        let seed: u64 = seed.parse().expect("NTO_SIM_SEED: a number");
        let (failures, counts, _, _) = explore(std::iter::once(seed), true).await;
        println!("violations by invariant: {counts:?}");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        return;
    }
    let Ok(n) = std::env::var("NTO_SIM_SEQUENCES") else {
        return;
    };
    let n: u64 = n.parse().expect("NTO_SIM_SEQUENCES: a number");
    let from: u64 = std::env::var("NTO_SIM_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let start = std::time::Instant::now();
    let (failures, counts, n, reconciles) = explore(from..from + n, false).await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "simulation (long): {n} sequences, {reconciles} reconciles in {secs:.1}s ({:.1} sequences/s); violations by invariant: {counts:?}; failing sequences: {}",
        n as f64 / secs,
        failures.len()
    );
    let _ = std::io::stdout().flush();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_requeue_is_read_back() {
    assert_eq!(
        requeue_of(&Action::requeue(Duration::from_millis(1500))),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        requeue_of(&Action::requeue(Duration::from_secs(3600))),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(requeue_of(&Action::await_change()), None);
}

/// The checks can fail: a token value in a log line (I6), a Secret whose token is not the one
/// status records while Ready (I3), and a kept token revoked (I1) are each reported.
#[tokio::test]
async fn the_invariant_checks_can_fail() {
    let mut sim = Sim::new().await;
    sim.apply(&Act::Create {
        flavor: Flavor::Personal,
        ns: 0,
        name: 0,
        orphan: false,
        self_renew: false,
    });
    sim.settle().await;
    sim.check(false, "");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let path = sim.created[0].path.clone();
    let status = status_of(&sim.server.get::<Value>(&path).expect("the resource"));
    assert!(
        status
            .condition("Ready")
            .is_some_and(|c| c.status == "True")
    );
    let value = {
        let st = sim.fake.shared.lock();
        let id = status.token_id.clone().expect("a token");
        st.creds[&id].value.clone()
    };

    sim.check(false, &format!("INFO issued token={value}"));
    assert!(sim.violations.iter().any(|v| v.invariant == "I6"));

    sim.violations.clear();
    sim.put_secret(NAMESPACES[0], NAMES[0], &[("token", "edited")]);
    sim.check(false, "");
    assert!(
        sim.violations.iter().any(|v| v.invariant == "I3"),
        "{:?}",
        sim.violations
    );

    sim.violations.clear();
    let id = status.token_id.expect("a token");
    sim.kept
        .insert(id.clone(), (path, sim.created[0].uid.clone()));
    sim.server.delete(&sim.created[0].path.clone());
    sim.fake.shared.lock().revoke(&id);
    sim.check(false, "");
    assert!(
        sim.violations.iter().any(|v| v.invariant == "I1"),
        "{:?}",
        sim.violations
    );
}

/// The first resource's status and the path to it.
fn first_status(sim: &Sim) -> (String, CredentialStatus) {
    let path = sim.created[0].path.clone();
    let v: Value = sim.server.get(&path).expect("the resource");
    (path, status_of(&v))
}

/// Moves the clock an hour at a time, settling each step, until `done` or `max_hours` passed.
async fn step_hours(sim: &mut Sim, max_hours: u32, done: impl Fn(&CredentialStatus) -> bool) {
    for _ in 0..max_hours {
        if done(&first_status(sim).1) {
            return;
        }
        let t = sim.now + chrono::Duration::hours(1);
        sim.set_now(t);
        sim.settle().await;
    }
}

/// Rotation windows in the simulation (I7 can fail): a scheduled renewal falls due outside
/// the window (Saturdays 02:00-06:00 UTC), waits for it, and lands inside it; the token it
/// replaced is revoked inside a window too.
#[tokio::test]
async fn a_renewal_waits_for_its_window_in_the_simulation() {
    let mut sim = Sim::new().await;
    sim.apply(&Act::Create {
        flavor: Flavor::Personal,
        ns: 0,
        name: 0,
        orphan: false,
        self_renew: false,
    });
    sim.settle().await;
    sim.apply(&Act::EditWindows {
        target: 0,
        which: 1,
    });
    sim.settle().await;
    let (_, first) = first_status(&sim);
    let (due, next) = (first.renewal_time.unwrap(), first.next_renewal.unwrap());
    let (windows, _) = windows_choice(1);
    assert!(
        !sim_in_window(&windows, due),
        "the renewal time {due} falls outside the window"
    );
    assert!(
        next > due && sim_in_window(&windows, next),
        "next renewal {next}"
    );
    // Up to the renewal time, then hour by hour: nothing happens until the window opens.
    sim.set_now(due - chrono::Duration::minutes(1));
    sim.settle().await;
    let old = first.token_id.clone();
    step_hours(&mut sim, 24 * 8, |s| s.token_id != old).await;
    // The invariant sees it first (the assertions below say the same from outside).
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let (_, renewed) = first_status(&sim);
    assert_ne!(renewed.token_id, old, "renewed within a week");
    let at = renewed.issued_at.unwrap();
    assert!(at >= next && sim_in_window(&windows, at), "renewed at {at}");
    // The replaced token's grace ends inside the window: revoked then.
    step_hours(&mut sim, 24 * 8, |s| s.previous_tokens.is_empty()).await;
    assert!(first_status(&sim).1.previous_tokens.is_empty());
    sim.check(false, "");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

/// Suspend in the simulation (I8 can fail): a suspended resource whose Secret is deleted and
/// whose token expires mints nothing and says so; resumed, it issues at once.
#[tokio::test]
async fn a_suspended_resource_waits_in_the_simulation() {
    let mut sim = Sim::new().await;
    sim.apply(&Act::Create {
        flavor: Flavor::Personal,
        ns: 0,
        name: 0,
        orphan: false,
        self_renew: false,
    });
    sim.settle().await;
    sim.apply(&Act::Suspend {
        target: 0,
        on: true,
    });
    sim.settle().await;
    sim.apply(&Act::DeleteManagedSecret { target: 0 });
    sim.settle().await;
    let (_, s) = first_status(&sim);
    let mints = |sim: &Sim| sim.mints.values().map(Vec::len).sum::<usize>();
    let before = mints(&sim);
    sim.set_now(s.not_after.unwrap() + chrono::Duration::hours(1));
    sim.settle().await;
    sim.resync().await;
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let (_, s) = first_status(&sim);
    assert_eq!(mints(&sim), before, "nothing minted while suspended");
    let ready = s.condition("Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretMissing")
    );
    assert_eq!(
        s.condition("Suspended").map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(s.next_renewal, None);
    sim.apply(&Act::Suspend {
        target: 0,
        on: false,
    });
    sim.settle().await;
    let (_, s) = first_status(&sim);
    assert_eq!(mints(&sim), before + 1, "resumed: one issue");
    assert!(s.condition("Suspended").is_none());
    assert_eq!(
        s.condition("Ready").map(|c| c.status.as_str()),
        Some("True")
    );
    sim.check(false, "");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

/// A login marked leaked in the simulation (I9 can fail): every resource that minted with it
/// re-issues, its old tokens are refused by Nuclia at once, and the Secret's Event counts them.
#[tokio::test]
async fn a_leaked_login_reissues_what_it_minted_in_the_simulation() {
    let mut sim = Sim::new().await;
    for (flavor, name) in [(Flavor::Personal, 0), (Flavor::KbKey, 1)] {
        sim.apply(&Act::Create {
            flavor,
            ns: 0,
            name,
            orphan: false,
            self_renew: false,
        });
        sim.settle().await;
    }
    let before: Vec<(String, CredentialStatus)> = sim
        .created
        .iter()
        .map(|t| (t.path.clone(), status_of(&sim.server.get(&t.path).unwrap())))
        .collect();
    sim.apply(&Act::LeakLogin { ns: 0 });
    assert_eq!(sim.leaked.len(), 2, "two tokens minted with the login");
    sim.settle().await;
    sim.resync().await;
    sim.check(false, "");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    for (path, old) in before {
        let now = status_of(&sim.server.get(&path).unwrap());
        assert_ne!(now.token_id, old.token_id, "{path} re-issued");
        assert_eq!(now.reissue_handled.as_deref(), Some("leak-1"));
        let st = sim.fake.shared.lock();
        assert!(
            !token_live(&st, old.token_id.as_deref().unwrap()),
            "{path}'s old token revoked"
        );
    }
    let progress: Vec<String> = sim
        .server
        .list("/apis/events.k8s.io/v1/")
        .into_iter()
        .filter(|(_, e)| e["reason"] == "ReissueProgress" && e["regarding"]["name"] == "login")
        .filter_map(|(_, e)| e["note"].as_str().map(str::to_owned))
        .collect();
    assert!(
        progress
            .iter()
            .any(|n| n.contains("2 credential(s)") && n.contains("0 failed")),
        "{progress:?}"
    );
}

/// The cluster credential marked leaked in the simulation (I9 can fail), on itself and then on
/// its Secret: the keys minted with it in both namespaces re-issue, the old ones are refused at
/// once, and the cluster credential's Event counts them.
#[tokio::test]
async fn a_marked_cluster_credential_reissues_its_keys_in_the_simulation() {
    let mut sim = Sim::new().await;
    for (ns, name) in [(0, 0), (1, 1)] {
        sim.apply(&Act::Create {
            flavor: Flavor::KbKeyShared,
            ns,
            name,
            orphan: false,
            self_renew: false,
        });
        sim.settle().await;
    }
    for (round, on_object) in [(1, true), (2, false)] {
        let before: Vec<(String, CredentialStatus)> = sim
            .created
            .iter()
            .map(|t| (t.path.clone(), status_of(&sim.server.get(&t.path).unwrap())))
            .collect();
        sim.apply(&Act::LeakClusterCredential { on_object });
        assert_eq!(
            sim.leaked.len(),
            2,
            "round {round}: two keys minted with it"
        );
        sim.settle().await;
        sim.resync().await;
        sim.check(false, "");
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        for (path, old) in before {
            let now = status_of(&sim.server.get(&path).unwrap());
            assert_ne!(
                now.token_id, old.token_id,
                "{path} re-issued (round {round})"
            );
            let st = sim.fake.shared.lock();
            assert!(
                !token_live(&st, old.token_id.as_deref().unwrap()),
                "{path}'s old key revoked (round {round})"
            );
        }
        let progress = sim
            .server
            .list("/apis/events.k8s.io/v1/")
            .into_iter()
            .filter(|(_, e)| {
                e["reason"] == "ReissueProgress"
                    && e["regarding"]["name"] == "cc-login"
                    && e["regarding"]["namespace"] == OPERATOR_NS
            })
            .filter_map(|(_, e)| e["note"].as_str().map(str::to_owned))
            .any(|n| n.contains(&format!("leak-{round}")) && n.contains("2 credential(s)"));
        assert!(
            progress,
            "round {round}: the cluster credential's Event counts both"
        );
    }
}

/// Quotas in the simulation (I10 can fail): one key per namespace and two mints per hour; the
/// second resource of a namespace waits with `QuotaExceeded`, another namespace is served, and
/// the holder's second rotation within the hour is refused.
#[tokio::test]
async fn a_cluster_credential_quota_holds_in_the_simulation() {
    let mut sim = Sim::new().await;
    sim.apply(&Act::SetQuota {
        keys: Some(1),
        per_hour: Some(2),
    });
    // The hours judged start after the quota is set.
    sim.apply(&Act::Jump { secs: 60 });
    sim.settle().await;
    for (ns, name) in [(0, 0), (0, 1), (1, 2)] {
        sim.apply(&Act::Create {
            flavor: Flavor::KbKeyShared,
            ns,
            name,
            orphan: false,
            self_renew: false,
        });
        sim.settle().await;
    }
    sim.check(false, "");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let reason = |sim: &Sim, i: usize| {
        let s = status_of(&sim.server.get(&sim.created[i].path).unwrap());
        (
            s.token_id.is_some(),
            s.condition("Ready").map(|c| c.reason.clone()),
        )
    };
    let issuing = |sim: &Sim, i: usize| {
        let s = status_of(&sim.server.get(&sim.created[i].path).unwrap());
        s.condition("Issuing").map(|c| c.reason.clone())
    };
    assert!(reason(&sim, 0).0, "the first in team-a holds a key");
    assert_eq!(
        reason(&sim, 1),
        (false, Some("QuotaExceeded".to_owned())),
        "the second waits"
    );
    assert!(reason(&sim, 2).0, "team-b has its own share");
    // Rotations of the holder: the first fits in the hour (two mints), the second does not.
    for n in 1..=2 {
        sim.apply(&Act::Jump { secs: 60 });
        sim.settle().await;
        sim.apply(&Act::Rotate { target: 0 });
        sim.settle().await;
        sim.resync().await;
        sim.check(false, "");
        assert!(
            sim.violations.is_empty(),
            "rotation {n}: {:?}",
            sim.violations
        );
    }
    assert_eq!(
        (reason(&sim, 0), issuing(&sim, 0)),
        (
            (true, Some("TokenValid".to_owned())),
            Some("QuotaExceeded".to_owned())
        ),
        "the second rotation in the hour is refused (Issuing), the key kept (Ready)"
    );
    let mints = sim.cc_issues.get(NAMESPACES[0]).map_or(0, Vec::len);
    assert_eq!(mints, 2, "two mints in team-a");
}
