//! Conditions and the status write. Status is written with server-side apply, and only when it
//! changed, so a resync of a healthy resource writes nothing.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{CredentialStatus, FIELD_MANAGER, k8s_time};
use crate::error::{Error, Result};

pub const READY: &str = "Ready";
pub const ISSUING: &str = "Issuing";
/// kstatus: True while a terminal reason waits for a person (absent otherwise).
pub const STALLED: &str = "Stalled";

/// Sets a condition; `lastTransitionTime` moves only when the status flips.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if ok { "True" } else { "False" };
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = k8s_time(now);
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: k8s_time(now),
    });
}

/// Removes a condition.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Writes `status` if it differs from what the object has; returns the object written.
pub async fn write<K>(
    api: &Api<K>,
    obj: &K,
    current: Option<&CredentialStatus>,
    status: &CredentialStatus,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    if current == Some(status) {
        return Ok(None);
    }
    // The operator is the only writer of status, so it replaces it whole: a JSON patch costs
    // the apiserver far less than a server-side apply of the same content.
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "add", "path": "/status", "value": status }
    ]))
    .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let written = api
        .patch_status(
            &obj.name_any(),
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Json::<()>(patch),
        )
        .await
        .map_err(Error::kube("patch status"))?;
    Ok(Some(written))
}
