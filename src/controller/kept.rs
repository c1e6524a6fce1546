//! The resources deleted with `deletionPolicy: Orphan`, recorded durably so that the orphan
//! sweep never revokes their tokens. The policy **at deletion time** counts: a token minted
//! while the policy was `Revoke` carries a plain marker, and a personal token's description
//! cannot be changed afterwards, so the marker alone cannot say it was kept.
//!
//! One ConfigMap in the operator's namespace (`--lease-namespace`), named after the
//! installation ConfigMap with `-kept` (chart: `<fullname>-installation-kept`); one data key
//! per kept resource UID, whose value (JSON) names the resource and the tokens it recorded
//! (id, scope, `notAfter`, whether that expiry holds at Nuclia). Every token marked with a
//! kept UID is left alone, recorded or not (an interrupted issue's too). The deletion writes
//! its entry (guarded by resourceVersion) before it releases the finalizer; the sweep reads
//! the record only when it has a token to revoke, so the steady state reads nothing.
//!
//! Bounded: an entry goes once what it protects is gone at Nuclia: when its latest upstream
//! expiry has passed (checked whenever the record is read or written), or, for tokens that do
//! not expire there (NUA keys), once a list that covers their scope no longer shows them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

use super::Context;
use crate::crd::{LABEL_MANAGED_BY, MANAGED_BY, TokenScope};
use crate::error::{Error, Result};

const PURPOSE: &str = "Resources deleted with deletionPolicy: Orphan, by UID: the orphan sweep never revokes their tokens. Keep it, and back it up with the installation ConfigMap.";

/// One kept resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub kept_at: DateTime<Utc>,
    /// The tokens its status recorded when it was deleted.
    pub tokens: Vec<KeptToken>,
    /// When everything it protects has expired at Nuclia (None: some of it never expires
    /// there, e.g. a NUA client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// A token a kept resource recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeptToken {
    pub id: String,
    #[serde(default)]
    pub scope: TokenScope,
}

/// The record as read: entries by resource UID (None: an entry that does not parse, kept as
/// is and never pruned), and the ConfigMap's resourceVersion (None: no ConfigMap yet).
#[derive(Default)]
pub struct Record {
    pub entries: BTreeMap<String, Option<Entry>>,
    version: Option<String>,
}

impl Record {
    /// Whether the resource with `uid` was deleted with `deletionPolicy: Orphan`.
    pub fn keeps(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// UIDs whose entries protect nothing any more at `now`: their latest expiry has passed.
    pub fn expired(&self, now: DateTime<Utc>) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                e.as_ref()
                    .is_some_and(|e| e.until.is_some_and(|u| u <= now))
            })
            .map(|(uid, _)| uid.clone())
            .collect()
    }
}

fn api(ctx: &Context) -> Api<ConfigMap> {
    Api::namespaced(ctx.kube.clone(), &ctx.settings.operator_namespace)
}

fn describe(ctx: &Context) -> String {
    format!(
        "ConfigMap {}/{} (tokens kept by deletionPolicy: Orphan)",
        ctx.settings.operator_namespace, ctx.settings.kept_configmap
    )
}

/// Reads the record.
pub async fn read(ctx: &Context) -> Result<Record> {
    let cm = api(ctx)
        .get_opt(&ctx.settings.kept_configmap)
        .await
        .map_err(Error::kube("read the record of kept tokens"))?;
    let Some(cm) = cm else {
        return Ok(Record::default());
    };
    let entries = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(uid, v)| (uid, serde_json::from_str(&v).ok()))
        .collect();
    Ok(Record {
        entries,
        version: cm.metadata.resource_version,
    })
}

/// Adds `add` (by UID) and removes `remove` from the record, with whatever has expired by
/// `now`; retried on a concurrent change. Nothing to do writes nothing.
pub async fn update(
    ctx: &Context,
    add: Option<(&str, &Entry)>,
    remove: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    let mut last = None;
    for _ in 0..5 {
        let record = read(ctx).await?;
        let mut data = serde_json::Map::new();
        for uid in record.expired(now).iter().chain(remove) {
            if record.entries.contains_key(uid) {
                data.insert(uid.clone(), serde_json::Value::Null);
            }
        }
        if let Some((uid, entry)) = add {
            let value = serde_json::to_string(entry).map_err(|e| {
                Error::InvalidSpec(format!("internal: recording a kept resource: {e}"))
            })?;
            data.insert(uid.to_owned(), value.into());
        }
        if data.is_empty() {
            return Ok(());
        }
        let result = match &record.version {
            None => {
                let data = data
                    .into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                    .collect();
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ctx.settings.kept_configmap.clone()),
                        labels: Some(BTreeMap::from([(
                            LABEL_MANAGED_BY.to_owned(),
                            MANAGED_BY.to_owned(),
                        )])),
                        annotations: Some(BTreeMap::from([(
                            "nuclia.dev/purpose".to_owned(),
                            PURPOSE.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                api(ctx).create(&PostParams::default(), &cm).await.map(drop)
            }
            Some(rv) => {
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": rv },
                    "data": data,
                });
                api(ctx)
                    .patch(
                        &ctx.settings.kept_configmap,
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => return Ok(()),
            // Changed (or created) meanwhile: read it again.
            Err(kube::Error::Api(s)) if s.code == 409 => last = Some(kube::Error::Api(s)),
            Err(e) => return Err(Error::kube("write the record of kept tokens")(e)),
        }
    }
    let e = last.expect("a conflict");
    tracing::warn!(record = %describe(ctx), "the record of kept tokens kept changing under this write");
    Err(Error::kube("write the record of kept tokens")(e))
}
