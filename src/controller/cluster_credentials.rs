//! The status of each `NucliaClusterCredential`: whether its Secret (in the cluster credential
//! namespace) holds a credential Nuclia accepts, checked once per verify interval whatever the
//! number of resources that use it, and which namespaces name it. Minting through it is the
//! engine's (`engine::Engine::cluster_credential`); this controller writes status only.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Context, status};
use crate::cluster_credential::{ClusterCredentialStatus, NamespaceUsage, NucliaClusterCredential};
use crate::crd::{CredentialType, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::nuclia::{self, Credential};

/// The last upstream check of each cluster credential: the hash of the credential checked, when,
/// and the verdict (None: accepted; Some: the reason and message of the refusal).
#[derive(Default)]
pub(super) struct Checks {
    inner: Mutex<HashMap<String, Check>>,
}

impl Checks {
    /// Drops the checks older than `idle` (a cluster credential in use is checked once per
    /// verify interval); returns how many remain.
    pub(super) fn evict_idle(&self, idle: std::time::Duration) -> usize {
        let Ok(mut m) = self.inner.lock() else {
            return 0;
        };
        let idle = chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::MAX);
        let now = crate::clock::now();
        m.retain(|_, c| now - c.at < idle);
        m.len()
    }
}

#[derive(Clone)]
struct Check {
    hash: String,
    at: DateTime<Utc>,
    verdict: Option<(&'static str, String)>,
}

/// Runs the status controller until `shutdown` resolves.
pub(super) async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let api: Api<NucliaClusterCredential> = Api::all(ctx.kube.clone());
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(obj: Arc<NucliaClusterCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %obj.name_any(), reason = err.label(), error = %err, "cluster credential status failed");
    Action::requeue(ctx.settings.backoff_max)
}

async fn reconcile(obj: Arc<NucliaClusterCredential>, ctx: Arc<Context>) -> Result<Action> {
    let name = obj.name_any();
    let now = super::engine::now();
    let Some(namespace) = &ctx.settings.cluster_credential_namespace else {
        return Ok(Action::await_change());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), namespace);
    let verdict = match crate::issuer::read_credential(&secrets, &obj.spec.secret_ref).await {
        Err(Error::CredentialsMissing(m)) => Some(("CredentialsMissing", m)),
        Err(e) => return Err(e),
        Ok(token) => {
            let hash = crate::lifecycle::token_hash(token.expose());
            let cached = ctx
                .cluster_checks
                .inner
                .lock()
                .ok()
                .and_then(|m| m.get(&name).cloned())
                .filter(|c| {
                    c.hash == hash
                        && now - c.at < super::engine::chrono_dur(ctx.settings.verify_interval)
                });
            match cached {
                Some(c) => c.verdict,
                None => {
                    let verdict = check_upstream(&ctx, obj.spec.credential_type, token).await;
                    if let Ok(mut m) = ctx.cluster_checks.inner.lock() {
                        m.insert(
                            name.clone(),
                            Check {
                                hash,
                                at: now,
                                verdict: verdict.clone(),
                            },
                        );
                    }
                    verdict
                }
            }
        }
    };
    let mut st: ClusterCredentialStatus = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let mut scope_note = String::new();
    if !obj.spec.policy.allows_some() {
        scope_note =
            "; its policy allows no namespace (set spec.policy.namespaces, namespaceSelector.matchLabels or allNamespaces)".into();
    }
    match &verdict {
        None => {
            if st.conditions.iter().all(|c| c.status != "True") || st.last_verified.is_none() {
                st.last_verified = Some(now);
            }
            let message = match obj.spec.credential_type {
                CredentialType::Bearer => "Nuclia accepts the credential".to_owned(),
                CredentialType::NuaKey => {
                    "the Secret holds a NUA key (checked by Nuclia when a key is minted with it)"
                        .to_owned()
                }
            };
            status::set(
                &mut st.conditions,
                status::READY,
                true,
                "CredentialValid",
                message + &scope_note,
                generation,
                now,
            );
        }
        Some((reason, message)) => status::set(
            &mut st.conditions,
            status::READY,
            false,
            reason,
            format!("{message}{scope_note}"),
            generation,
            now,
        ),
    }
    st.observed_generation = generation;
    st.namespaces = users(&ctx, &name);
    st.usage = usage(&ctx, &name, now);
    if obj.status.as_ref() != Some(&st) {
        let api: Api<NucliaClusterCredential> = Api::all(ctx.kube.clone());
        api.patch_status(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({ "status": st })),
        )
        .await
        .map_err(Error::kube("patch NucliaClusterCredential status"))?;
    }
    // Users come and go between checks: look again sooner than the verify interval while
    // something is wrong, and at least every interval otherwise.
    let mut wake = if verdict.is_none() {
        ctx.settings.verify_interval
    } else {
        ctx.settings.backoff_max
    };
    // Usage moves with every mint: a quota's users see it within a minute.
    let p = &obj.spec.policy;
    if p.max_keys_per_namespace.is_some() || p.max_issues_per_namespace_per_hour.is_some() {
        wake = wake.min(Duration::from_secs(60));
    }
    Ok(Action::requeue(wake.max(Duration::from_secs(1))))
}

/// One call: `welcome` for a user token or PAT. A NUA key has no account-wide check that
/// needs no zone; it is checked by the mints that use it.
async fn check_upstream(
    ctx: &Context,
    t: CredentialType,
    token: crate::nuclia::ApiToken,
) -> Option<(&'static str, String)> {
    match t {
        CredentialType::NuaKey => None,
        CredentialType::Bearer => match ctx.nuclia.welcome(&Credential::Bearer(token)).await {
            Ok(()) => None,
            Err(e @ (nuclia::Error::Unauthorized { .. } | nuclia::Error::Forbidden { .. })) => {
                Some((
                    "Unauthorized",
                    format!("Nuclia refuses the credential: {e}"),
                ))
            }
            Err(e) => Some((e.label(), format!("could not check the credential: {e}"))),
        },
    }
}

/// What each namespace uses of cluster credential `name` (also set as metrics).
fn usage(ctx: &Context, name: &str, now: DateTime<Utc>) -> Vec<NamespaceUsage> {
    let keys = ctx.keys_through(name);
    ctx.metrics.set_cluster_credential_keys(name, &keys);
    let mut by_ns: std::collections::BTreeMap<String, NamespaceUsage> = keys
        .into_iter()
        .map(|(ns, keys)| {
            let u = NamespaceUsage {
                namespace: ns.clone(),
                keys,
                issues_last_hour: 0,
            };
            (ns, u)
        })
        .collect();
    for (ns, n) in ctx.issues_last_hour(name, now) {
        by_ns
            .entry(ns.clone())
            .or_insert_with(|| NamespaceUsage {
                namespace: ns,
                ..Default::default()
            })
            .issues_last_hour = n;
    }
    by_ns.into_values().collect()
}

/// The namespaces whose resources name cluster credential `name`.
fn users(ctx: &Context, name: &str) -> Vec<String> {
    let Some(caches) = ctx.stores.get() else {
        return Vec::new();
    };
    let out: BTreeSet<String> = caches
        .iter()
        .flat_map(|c| c.cluster_credential_users(name))
        .collect();
    out.into_iter().collect()
}
