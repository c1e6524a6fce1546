//! Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Label sets are bounded: `kind` is a CRD kind, `namespace`/`name` identify one resource (its
//! series are removed when it is deleted), `operation`/`outcome`/`reason` come from fixed sets
//! of CamelCase or snake_case `&'static str`s chosen by the callers. No token material ever
//! becomes a label.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    kind: String,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: String,
    outcome: String,
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

/// All the operator's metrics, over one registry. Cheap to share: wrap it in an `Arc`
/// (every method takes `&self`; the families are internally synchronised).
pub struct Metrics {
    registry: Registry,
    expiry: Family<ResourceLabels, Gauge>,
    renewal: Family<ResourceLabels, Gauge>,
    ready: Family<ResourceLabels, Gauge>,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: Family<OperationLabels, Histogram, Buckets>,
    reconcile_duration: Family<KindLabels, Histogram, Buckets>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_skipped: Family<KindLabels, Counter>,
    revocations_abandoned: Family<KindLabels, Counter>,
    leader: Gauge,
    foreign_installations: Gauge,
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
        let expiry = Family::<ResourceLabels, Gauge>::default();
        let renewal = Family::<ResourceLabels, Gauge>::default();
        let ready = Family::<ResourceLabels, Gauge>::default();
        let api_requests = Family::<ApiLabels, Counter>::default();
        let api_duration = Family::new_with_constructor(Buckets);
        let reconcile_duration = Family::new_with_constructor(Buckets);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_skipped = Family::<KindLabels, Counter>::default();
        let revocations_abandoned = Family::<KindLabels, Counter>::default();
        let leader = Gauge::default();
        let foreign_installations = Gauge::default();

        registry.register(
            "nuclia_credential_expiry_timestamp_seconds",
            "Unix time at which the credential currently in the Secret expires",
            expiry.clone(),
        );
        registry.register(
            "nuclia_credential_renewal_timestamp_seconds",
            "Unix time at which the operator will rotate the credential",
            renewal.clone(),
        );
        registry.register(
            "nuclia_credential_ready",
            "1 when the resource's Secret holds a valid, unexpired credential (Ready=True), else 0",
            ready.clone(),
        );
        registry.register(
            "nuclia_api_requests",
            "Requests made to the Nuclia API, by operation and outcome",
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
            "nuclia_operator_leader",
            "1 when this replica is the one acting (leader, or leader election disabled), else 0",
            leader.clone(),
        );
        registry.register(
            "nuclia_operator_foreign_installations",
            "Other installations seen marking tokens with this operator's cluster id (two clusters share --cluster-id); their tokens are never swept. Should be 0",
            foreign_installations.clone(),
        );
        Self {
            registry,
            expiry,
            renewal,
            ready,
            api_requests,
            api_duration,
            reconcile_duration,
            reconcile_errors,
            reconcile_skipped,
            revocations_abandoned,
            leader,
            foreign_installations,
        }
    }

    /// How many other installations mark tokens with this cluster id.
    pub fn set_foreign_installations(&self, n: usize) {
        self.foreign_installations
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records a resource's credential state. `expiry` and `renewal` are Unix seconds; `None`
    /// removes that series (nothing issued yet, or no renewal scheduled).
    pub fn set_credential(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        ready: bool,
        expiry: Option<i64>,
        renewal: Option<i64>,
    ) {
        let labels = resource(kind, ns, name);
        self.ready.get_or_create(&labels).set(i64::from(ready));
        for (family, value) in [(&self.expiry, expiry), (&self.renewal, renewal)] {
            match value {
                Some(v) => {
                    family.get_or_create(&labels).set(v);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
    }

    /// Removes a deleted resource's series.
    pub fn forget_credential(&self, kind: &str, ns: &str, name: &str) {
        let labels = resource(kind, ns, name);
        self.ready.remove(&labels);
        self.expiry.remove(&labels);
        self.renewal.remove(&labels);
    }

    /// Counts one Nuclia API request and records its duration. `op` names the call
    /// (e.g. `create_personal_token`), `outcome` is the HTTP status of the answer (e.g. `201`,
    /// `401`, `503`) or, without one, the failure class (`timeout`, `connect`, `io`,
    /// `too_large`).
    pub fn observe_api(&self, op: &str, outcome: &str, elapsed: Duration) {
        self.api_requests
            .get_or_create(&ApiLabels {
                operation: op.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
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

fn resource(kind: &str, ns: &str, name: &str) -> ResourceLabels {
    ResourceLabels {
        kind: kind.to_owned(),
        namespace: ns.to_owned(),
        name: name.to_owned(),
    }
}

/// The Nuclia client reports every request here.
impl crate::nuclia::ApiObserver for Metrics {
    fn observe(&self, op: &'static str, outcome: &str, elapsed: Duration) {
        self.observe_api(op, outcome, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_series_and_forgets_deleted_resources() {
        let m = Metrics::new();
        m.set_credential(
            "NucliaPersonalToken",
            "apps",
            "ci",
            true,
            Some(1_900_000_000),
            Some(1_890_000_000),
        );
        m.set_credential("NucliaKbApiKey", "apps", "search", false, None, None);
        m.observe_api("create_personal_token", "ok", Duration::from_millis(20));
        m.observe_reconcile("NucliaPersonalToken", Duration::from_millis(3));
        m.reconcile_error("NucliaKbApiKey", "Unauthorized");
        m.set_leader(true);
        let text = m.encode();
        for line in [
            r#"nuclia_credential_expiry_timestamp_seconds{kind="NucliaPersonalToken",namespace="apps",name="ci"} 1900000000"#,
            r#"nuclia_credential_renewal_timestamp_seconds{kind="NucliaPersonalToken",namespace="apps",name="ci"} 1890000000"#,
            r#"nuclia_credential_ready{kind="NucliaPersonalToken",namespace="apps",name="ci"} 1"#,
            r#"nuclia_credential_ready{kind="NucliaKbApiKey",namespace="apps",name="search"} 0"#,
            r#"nuclia_api_requests_total{operation="create_personal_token",outcome="ok"} 1"#,
            r#"nuclia_api_request_duration_seconds_count{operation="create_personal_token"} 1"#,
            r#"nuclia_operator_reconcile_duration_seconds_count{kind="NucliaPersonalToken"} 1"#,
            r#"nuclia_operator_reconcile_errors_total{kind="NucliaKbApiKey",reason="Unauthorized"} 1"#,
            "nuclia_operator_leader 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(
            !text.contains(r#"nuclia_credential_expiry_timestamp_seconds{kind="NucliaKbApiKey""#)
        );

        m.forget_credential("NucliaPersonalToken", "apps", "ci");
        let text = m.encode();
        assert!(!text.contains(r#"name="ci""#), "{text}");
        assert!(text.contains(r#"name="search""#));
    }
}
