//! Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Label sets are bounded: `kind` is a CRD kind, `namespace`/`name` identify one resource (its
//! series are removed when it is deleted), `operation`/`reason` come from fixed sets of
//! CamelCase or snake_case `&'static str`s chosen by the callers, `code` is an HTTP status or
//! one of four failure classes. No token material ever becomes a label.
//!
//! The series the chart's alerts count with `increase()` exist from the start at 0 (the
//! abandoned revocations of every kind, the `401` answers of each Nuclia operation from its
//! first request), so the first increment is seen: `increase()` ignores a series' first sample.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: String,
    /// The HTTP status (Prometheus convention), or the failure class without an answer.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeLabels {
    /// get, list, watch, create, update, patch, delete, deletecollection, other.
    verb: String,
    /// The resource, with its subresource (`nucliapersonaltokens/status`); `other` for
    /// discovery and the like.
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    /// A CRD kind, or `Secret` for the shared Secret metadata watch.
    watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    credential: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    credential: String,
    namespace: String,
    quota: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

/// Histogram buckets from 5ms to ~41s: Nuclia calls and reconciles both fit.
#[derive(Clone, Copy)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.005, 2.0, 14))
    }
}

/// What [`Metrics::set_credential`] records of one resource, from its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CredentialState {
    /// Ready=True.
    pub ready: bool,
    /// Unix seconds the current credential expires (`status.notAfter`); `None`: nothing issued.
    pub expiry: Option<i64>,
    /// Unix seconds of the next rotation (`status.nextRenewal`: rotation windows considered);
    /// `None`: none scheduled (nothing issued, or suspended).
    pub renewal: Option<i64>,
    /// `spec.suspend` is true.
    pub suspended: bool,
    /// Replaced tokens still recorded for revocation (`status.previousTokens`).
    pub previous_tokens: usize,
    /// Unix seconds the earliest of them is due to be revoked; `None` when none is recorded.
    pub revocation_due: Option<i64>,
}

/// (kind, namespace, name) of a resource.
type ResourceKey = (Cow<'static, str>, Box<str>, Box<str>);

/// The per-resource series: one entry per resource, written out as five gauges at each scrape.
/// Five label sets and five gauges in five families cost about 1 KB per resource (heaptrack at
/// N = 1000, docs/benchmark.md); one entry is a key and a small `CredentialState`.
#[derive(Debug, Default)]
struct Credentials(Mutex<BTreeMap<ResourceKey, CredentialState>>);

/// The gauges [`Credentials`] writes: name, help, and the value of one resource (`None`: that
/// resource has no such series).
type CredentialSeries = (
    &'static str,
    &'static str,
    fn(&CredentialState) -> Option<i64>,
);

const CREDENTIAL_SERIES: [CredentialSeries; 6] = [
    (
        "nuclia_credential_expiry_timestamp_seconds",
        "Unix time at which the credential currently in the Secret expires",
        |s| s.expiry,
    ),
    (
        "nuclia_credential_renewal_timestamp_seconds",
        "Unix time at which the operator will rotate the credential (in the next rotation window, if the resource has windows; absent while suspended)",
        |s| s.renewal,
    ),
    (
        "nuclia_credential_suspended",
        "1 while the resource is suspended (spec.suspend: nothing is minted, renewed, verified or revoked); absent otherwise",
        |s| s.suspended.then_some(1),
    ),
    (
        "nuclia_credential_ready",
        "1 when the resource's Secret holds a valid, unexpired credential (Ready=True), else 0",
        |s| Some(i64::from(s.ready)),
    ),
    (
        "nuclia_credential_previous_tokens",
        "Replaced tokens still valid at Nuclia and recorded for revocation (status.previousTokens): in their grace period, or overdue when revoking them fails",
        |s| Some(i64::try_from(s.previous_tokens).unwrap_or(i64::MAX)),
    ),
    (
        "nuclia_credential_revocation_due_timestamp_seconds",
        "Unix time at which the earliest recorded replaced token is due to be revoked (absent when none is recorded)",
        |s| s.revocation_due,
    ),
];

impl Collector for Credentials {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (name, help, value) in CREDENTIAL_SERIES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((kind, namespace, rname), state) in map.iter() {
                let Some(v) = value(state) else { continue };
                let labels = [
                    ("kind", kind.as_ref()),
                    ("namespace", namespace.as_ref()),
                    ("name", rname.as_ref()),
                ];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The key of a resource; the kind's name is shared when the kind is registered.
fn resource_key(kinds: &[&'static str], kind: &str, ns: &str, name: &str) -> ResourceKey {
    let kind = match kinds.iter().find(|k| **k == kind) {
        Some(k) => Cow::Borrowed(*k),
        None => Cow::Owned(kind.to_owned()),
    };
    (kind, ns.into(), name.into())
}

/// All the operator's metrics, over one registry. Cheap to share: wrap it in an `Arc`
/// (every method takes `&self`; the families are internally synchronised).
pub struct Metrics {
    registry: Registry,
    credentials: Arc<Credentials>,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: Family<OperationLabels, Histogram, Buckets>,
    reconcile_duration: Family<KindLabels, Histogram, Buckets>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_skipped: Family<KindLabels, Counter>,
    revocations_abandoned: Family<KindLabels, Counter>,
    revocations: Family<ErrorLabels, Counter>,
    renewals_outside_window: Family<KindLabels, Counter>,
    reissues: Family<ErrorLabels, Counter>,
    cluster_issues: Family<TenantLabels, Counter>,
    cluster_keys: Family<TenantLabels, Gauge>,
    quota_exceeded: Family<QuotaLabels, Counter>,
    rate_waits: Family<NamespaceLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    leader: Gauge,
    foreign_installations: Gauge,
    cache_entries: Family<CacheLabels, Gauge>,
    watch_errors: Family<WatchLabels, Counter>,
    kube_requests: Family<KubeLabels, Counter>,
    /// Namespaces with a `nuclia_cluster_credential_keys` series, by credential.
    cluster_keys_set:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<String>>>,
    /// The kinds registered ([`Metrics::register_kind`]).
    kinds: std::sync::RwLock<Vec<&'static str>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let credentials = Arc::new(Credentials::default());
        let api_requests = Family::<ApiLabels, Counter>::default();
        let api_duration = Family::new_with_constructor(Buckets);
        let reconcile_duration = Family::new_with_constructor(Buckets);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_skipped = Family::<KindLabels, Counter>::default();
        let revocations_abandoned = Family::<KindLabels, Counter>::default();
        let revocations = Family::<ErrorLabels, Counter>::default();
        let renewals_outside_window = Family::<KindLabels, Counter>::default();
        let reissues = Family::<ErrorLabels, Counter>::default();
        let cluster_issues = Family::<TenantLabels, Counter>::default();
        let cluster_keys = Family::<TenantLabels, Gauge>::default();
        let quota_exceeded = Family::<QuotaLabels, Counter>::default();
        let rate_waits =
            Family::<NamespaceLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let leader = Gauge::default();
        let foreign_installations = Gauge::default();
        let cache_entries = Family::<CacheLabels, Gauge>::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let kube_requests = Family::<KubeLabels, Counter>::default();
        watch_errors
            .get_or_create(&WatchLabels {
                watch: "Secret".to_owned(),
            })
            .inc_by(0);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);

        registry.register_collector(Box::new(credentials.clone()));
        registry.register(
            "nuclia_api_requests",
            "Requests made to the Nuclia API, by operation and code (the HTTP status, or timeout, connect, io, too_large without an answer)",
            api_requests.clone(),
        );
        registry.register(
            "nuclia_api_request_duration_seconds",
            "Duration of requests to the Nuclia API, by operation",
            api_duration.clone(),
        );
        registry.register(
            "nuclia_operator_reconcile_duration_seconds",
            "Duration of reconciliations, by resource kind",
            reconcile_duration.clone(),
        );
        registry.register(
            "nuclia_operator_reconcile_errors",
            "Failed reconciliations, by resource kind and reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "nuclia_operator_reconciles_skipped",
            "Reconciliations answered without a request because nothing changed since the last one (the echo of the operator's own writes), by resource kind",
            reconcile_skipped.clone(),
        );
        registry.register(
            "nuclia_operator_revocations_abandoned",
            "Tokens left valid at Nuclia because no credential could revoke them before --revoke-timeout ran out during a deletion, by resource kind",
            revocations_abandoned.clone(),
        );
        registry.register(
            "nuclia_operator_revocations",
            "Tokens revoked at Nuclia (or found already gone there), by resource kind and reason: Replaced (end of a grace period, or early), Deleted (the resource went), NeverDelivered (minted but never reached the Secret), Interrupted (left by an interrupted issue), Orphaned (marked for a resource that no longer exists)",
            revocations.clone(),
        );
        registry.register(
            "nuclia_operator_renewals_outside_window",
            "Scheduled renewals run outside the resource's rotation windows because none opened before the safety deadline (halfway from the renewal time to expiry), by resource kind",
            renewals_outside_window.clone(),
        );
        registry.register(
            "nuclia_operator_reissues",
            "Resources that re-issued their credential because nuclia.dev/reissue-minted marked the login it was minted with (its Secret, or a NucliaClusterCredential), by resource kind and reason (Reissued, Failed)",
            reissues.clone(),
        );
        registry.register(
            "nuclia_cluster_credential_issues",
            "Mints attempted through each NucliaClusterCredential, by credential and namespace (what spec.policy.maxIssuesPerNamespacePerHour counts)",
            cluster_issues.clone(),
        );
        registry.register(
            "nuclia_cluster_credential_keys",
            "Current keys minted through each NucliaClusterCredential, by credential and namespace (what spec.policy.maxKeysPerNamespace counts)",
            cluster_keys.clone(),
        );
        registry.register(
            "nuclia_cluster_credential_quota_exceeded",
            "Mints refused by a NucliaClusterCredential's quota, by credential, namespace and quota (maxKeysPerNamespace, maxIssuesPerNamespacePerHour)",
            quota_exceeded.clone(),
        );
        registry.register(
            "nuclia_api_rate_limit_wait_seconds",
            "Time Nuclia calls waited for their credential's request budget (--nuclia-rps), by the namespace of the resource that made them (the budget is shared fairly between namespaces)",
            rate_waits.clone(),
        );
        registry.register(
            "nuclia_operator_leader",
            "1 when this replica is the one acting (leader, or leader election disabled), else 0",
            leader.clone(),
        );
        registry.register(
            "nuclia_operator_foreign_installations",
            "Other installations seen marking tokens with this operator's cluster id (two clusters share --cluster-id); their tokens are never swept. Should be 0",
            foreign_installations.clone(),
        );
        registry.register(
            "nuclia_operator_cache_entries",
            "Entries in each of the operator's in-memory caches, after the last eviction pass; the caches keyed by credential shrink once no resource uses a credential",
            cache_entries.clone(),
        );
        registry.register(
            "nuclia_operator_watch_errors",
            "Errors of the operator's watches, by watch (a CRD kind, or Secret); after each the watch starts again, often with a full list of what it covers. Should stay near 0",
            watch_errors.clone(),
        );
        registry.register(
            "nuclia_operator_kube_requests",
            "Requests this operator sent to the Kubernetes apiserver, by verb and resource (the apiserver's own counters mix every client)",
            kube_requests.clone(),
        );
        registry.register(
            "nuclia_operator_build_info",
            "Always 1; the labels say which build of the operator runs",
            build_info,
        );
        Self {
            registry,
            credentials,
            api_requests,
            api_duration,
            reconcile_duration,
            reconcile_errors,
            reconcile_skipped,
            revocations_abandoned,
            revocations,
            renewals_outside_window,
            reissues,
            cluster_issues,
            cluster_keys,
            quota_exceeded,
            rate_waits,
            leader,
            foreign_installations,
            cache_entries,
            watch_errors,
            kube_requests,
            cluster_keys_set: Default::default(),
            kinds: Default::default(),
        }
    }

    /// Counts a request to the apiserver (see `runtime::kube_client::classify`).
    pub fn kube_request(&self, verb: &str, resource: &str) {
        self.kube_requests
            .get_or_create(&KubeLabels {
                verb: verb.to_owned(),
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// Counts an error of the watch `watch` (a CRD kind, or `Secret`).
    pub fn watch_error(&self, watch: &str) {
        self.watch_errors
            .get_or_create(&WatchLabels {
                watch: watch.to_owned(),
            })
            .inc();
    }

    /// The size of the in-memory cache `cache`.
    pub fn set_cache_entries(&self, cache: &str, n: usize) {
        self.cache_entries
            .get_or_create(&CacheLabels {
                cache: cache.to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// How many other installations mark tokens with this cluster id.
    pub fn set_foreign_installations(&self, n: usize) {
        self.foreign_installations
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records a resource's credential state (see [`CredentialState`]); a `None` time has no
    /// series.
    pub fn set_credential(&self, kind: &str, ns: &str, name: &str, state: CredentialState) {
        let key = {
            let kinds = self.kinds.read().unwrap_or_else(|p| p.into_inner());
            resource_key(&kinds, kind, ns, name)
        };
        let mut map = self.credentials.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, state);
    }

    /// Removes a deleted resource's series.
    pub fn forget_credential(&self, kind: &str, ns: &str, name: &str) {
        let mut map = self.credentials.0.lock().unwrap_or_else(|p| p.into_inner());
        // (a key compares by its strings, shared or not)
        map.remove(&resource_key(&[], kind, ns, name));
    }

    /// Counts one Nuclia API request and records its duration. `op` names the call
    /// (e.g. `create_personal_token`), `code` is the HTTP status of the answer (e.g. `201`,
    /// `401`, `503`) or, without one, the failure class (`timeout`, `connect`, `io`,
    /// `too_large`). The operation's `401` series exists from its first request on.
    pub fn observe_api(&self, op: &str, code: &str, elapsed: Duration) {
        let labels = |code: &str| ApiLabels {
            operation: op.to_owned(),
            code: code.to_owned(),
        };
        if code != "401" {
            self.api_requests.get_or_create(&labels("401")).inc_by(0);
        }
        self.api_requests.get_or_create(&labels(code)).inc();
        self.api_duration
            .get_or_create(&OperationLabels {
                operation: op.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records the duration of one reconciliation of a resource of `kind`.
    pub fn observe_reconcile(&self, kind: &str, elapsed: Duration) {
        self.reconcile_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a reconciliation skipped because nothing changed.
    pub fn reconcile_skipped(&self, kind: &str) {
        self.reconcile_skipped
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts tokens a deletion had to leave valid (no credential could revoke them in time).
    /// Registers a resource kind: the per-kind series the alerts take `increase()` of exist at
    /// 0 from now on, before their first increment.
    pub fn register_kind(&self, kind: &'static str) {
        if let Ok(mut kinds) = self.kinds.write()
            && !kinds.contains(&kind)
        {
            kinds.push(kind);
        }
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        self.revocations_abandoned.get_or_create(&labels).inc_by(0);
        self.renewals_outside_window
            .get_or_create(&labels)
            .inc_by(0);
        self.watch_errors
            .get_or_create(&WatchLabels {
                watch: kind.to_owned(),
            })
            .inc_by(0);
    }

    /// Counts a token revoked (or found already gone) at Nuclia; `reason` says why.
    pub fn revoked(&self, kind: &str, reason: &str) {
        self.revocations
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a resource's re-issue after `nuclia.dev/reissue-minted` (`Reissued`, `Failed`).
    pub fn reissued(&self, kind: &str, reason: &str) {
        self.reissues
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a mint attempted through cluster credential `credential` for `namespace`.
    pub fn cluster_credential_issue(&self, credential: &str, namespace: &str) {
        self.cluster_issues
            .get_or_create(&TenantLabels {
                credential: credential.to_owned(),
                namespace: namespace.to_owned(),
            })
            .inc();
    }

    /// Sets the current keys of `credential` by namespace (namespaces not listed drop out).
    pub fn set_cluster_credential_keys(&self, credential: &str, keys: &[(String, u32)]) {
        let stale: Vec<TenantLabels> = {
            // prometheus-client has no iteration over a family: track what was set.
            let mut set = self
                .cluster_keys_set
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now: std::collections::BTreeSet<String> =
                keys.iter().map(|(ns, _)| ns.clone()).collect();
            let entry = set.entry(credential.to_owned()).or_default();
            let gone = entry.difference(&now).cloned().collect::<Vec<_>>();
            *entry = now;
            gone.into_iter()
                .map(|namespace| TenantLabels {
                    credential: credential.to_owned(),
                    namespace,
                })
                .collect()
        };
        for l in stale {
            self.cluster_keys.remove(&l);
        }
        for (ns, n) in keys {
            self.cluster_keys
                .get_or_create(&TenantLabels {
                    credential: credential.to_owned(),
                    namespace: ns.clone(),
                })
                .set(i64::from(*n));
        }
    }

    /// Counts a mint refused by a cluster credential's quota.
    pub fn quota_exceeded(&self, credential: &str, namespace: &str, quota: &str) {
        self.quota_exceeded
            .get_or_create(&QuotaLabels {
                credential: credential.to_owned(),
                namespace: namespace.to_owned(),
                quota: quota.to_owned(),
            })
            .inc();
    }

    /// Adds the time a Nuclia call made for `namespace` waited for its credential's budget.
    pub fn rate_limit_wait(&self, namespace: &str, waited: Duration) {
        self.rate_waits
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .inc_by(waited.as_secs_f64());
    }

    /// Counts a scheduled renewal that ran outside every rotation window (safety deadline).
    pub fn renewal_outside_window(&self, kind: &str) {
        self.renewals_outside_window
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn revocations_abandoned(&self, kind: &str, tokens: u64) {
        self.revocations_abandoned
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc_by(tokens);
    }

    /// Counts a failed reconciliation; `reason` is the error's CamelCase label.
    pub fn reconcile_error(&self, kind: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Sets `nuclia_operator_leader`.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The registry in OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The Nuclia client reports every request here.
impl crate::nuclia::ApiObserver for Metrics {
    fn observe(&self, op: &'static str, code: &str, elapsed: Duration) {
        self.observe_api(op, code, elapsed);
    }

    fn rate_limited(&self, tenant: &str, waited: Duration) {
        self.rate_limit_wait(tenant, waited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PT: &str = r#"{kind="NucliaPersonalToken",namespace="apps",name="ci"}"#;

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    /// Ready, expiring at 1.9e9 and renewed at 1.89e9, nothing replaced.
    fn ready_until_1_9e9() -> CredentialState {
        CredentialState {
            ready: true,
            expiry: Some(1_900_000_000),
            renewal: Some(1_890_000_000),
            ..CredentialState::default()
        }
    }

    #[test]
    fn encodes_the_series_and_forgets_deleted_resources() {
        let m = Metrics::new();
        m.set_credential(
            "NucliaPersonalToken",
            "apps",
            "ci",
            CredentialState {
                previous_tokens: 2,
                revocation_due: Some(1_880_000_000),
                ..ready_until_1_9e9()
            },
        );
        m.set_credential(
            "NucliaKbApiKey",
            "apps",
            "search",
            CredentialState::default(),
        );
        m.observe_api("create_personal_token", "201", Duration::from_millis(20));
        m.register_kind("NucliaNuaKey");
        m.observe_reconcile("NucliaPersonalToken", Duration::from_millis(3));
        m.reconcile_error("NucliaKbApiKey", "Unauthorized");
        m.watch_error("Secret");
        m.kube_request("get", "secrets");
        m.set_leader(true);
        let text = m.encode();
        for line in [
            format!("nuclia_credential_expiry_timestamp_seconds{PT} 1900000000"),
            format!("nuclia_credential_renewal_timestamp_seconds{PT} 1890000000"),
            format!("nuclia_credential_ready{PT} 1"),
            format!("nuclia_credential_previous_tokens{PT} 2"),
            format!("nuclia_credential_revocation_due_timestamp_seconds{PT} 1880000000"),
            r#"nuclia_credential_ready{kind="NucliaKbApiKey",namespace="apps",name="search"} 0"#.into(),
            r#"nuclia_credential_previous_tokens{kind="NucliaKbApiKey",namespace="apps",name="search"} 0"#.into(),
            r#"nuclia_api_requests_total{operation="create_personal_token",code="201"} 1"#.into(),
            r#"nuclia_api_request_duration_seconds_count{operation="create_personal_token"} 1"#.into(),
            r#"nuclia_operator_reconcile_duration_seconds_count{kind="NucliaPersonalToken"} 1"#.into(),
            r#"nuclia_operator_reconcile_errors_total{kind="NucliaKbApiKey",reason="Unauthorized"} 1"#.into(),
            "nuclia_operator_leader 1".into(),
            r#"nuclia_operator_watch_errors_total{watch="Secret"} 1"#.into(),
            r#"nuclia_operator_kube_requests_total{verb="get",resource="secrets"} 1"#.into(),
            r#"nuclia_operator_watch_errors_total{watch="NucliaNuaKey"} 0"#.into(),
            "# EOF".into(),
        ] {
            assert!(has(&text, &line), "missing {line}\n{text}");
        }
        for absent in [
            r#"nuclia_credential_expiry_timestamp_seconds{kind="NucliaKbApiKey""#,
            r#"nuclia_credential_revocation_due_timestamp_seconds{kind="NucliaKbApiKey""#,
        ] {
            assert!(!text.contains(absent), "{absent}\n{text}");
        }

        // The replaced tokens revoked: the count drops to 0, the due time goes.
        m.set_credential("NucliaPersonalToken", "apps", "ci", ready_until_1_9e9());
        let text = m.encode();
        assert!(has(
            &text,
            &format!("nuclia_credential_previous_tokens{PT} 0")
        ));
        assert!(
            !text.contains(&format!(
                "nuclia_credential_revocation_due_timestamp_seconds{PT}"
            )),
            "{text}"
        );

        m.forget_credential("NucliaPersonalToken", "apps", "ci");
        let text = m.encode();
        assert!(!text.contains(r#"name="ci""#), "{text}");
        assert!(text.contains(r#"name="search""#));
    }

    /// `build_info` names the version; the counters the alerts take `increase()` of exist at 0
    /// before their first increment.
    #[test]
    fn build_info_and_alerted_counters_start_at_zero() {
        let m = Metrics::new();
        for k in &crate::controller::KINDS {
            m.register_kind((k.name)());
        }
        let text = m.encode();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            has(
                &text,
                &format!(r#"nuclia_operator_build_info{{version="{version}"}} 1"#)
            ),
            "{text}"
        );
        for kind in ["NucliaPersonalToken", "NucliaKbApiKey", "NucliaNuaKey"] {
            let line = format!(r#"nuclia_operator_revocations_abandoned_total{{kind="{kind}"}} 0"#);
            assert!(has(&text, &line), "missing {line}\n{text}");
        }
        assert!(!text.contains("nuclia_api_requests_total{"), "{text}");

        m.observe_api("list_personal_tokens", "200", Duration::from_millis(5));
        let text = m.encode();
        assert!(has(
            &text,
            r#"nuclia_api_requests_total{operation="list_personal_tokens",code="401"} 0"#
        ));
        m.observe_api("list_personal_tokens", "401", Duration::from_millis(5));
        m.observe_api("list_personal_tokens", "timeout", Duration::from_millis(5));
        m.revocations_abandoned("NucliaKbApiKey", 3);
        let text = m.encode();
        for line in [
            r#"nuclia_api_requests_total{operation="list_personal_tokens",code="200"} 1"#,
            r#"nuclia_api_requests_total{operation="list_personal_tokens",code="401"} 1"#,
            r#"nuclia_api_requests_total{operation="list_personal_tokens",code="timeout"} 1"#,
            r#"nuclia_operator_revocations_abandoned_total{kind="NucliaKbApiKey"} 3"#,
        ] {
            assert!(has(&text, line), "missing {line}\n{text}");
        }
    }
}
