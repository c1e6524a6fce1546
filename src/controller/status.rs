//! Condition primitives shared by the credential kinds and the cluster credentials: the types,
//! and setting or removing one (`lastTransitionTime` moves only when the status flips). What a
//! reconcile reports, and the one status write, are the engine's (`engine::reconcile`).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::k8s_time;

pub const READY: &str = "Ready";
pub const ISSUING: &str = "Issuing";
/// `spec.suspend` is true (absent otherwise).
pub const SUSPENDED: &str = "Suspended";
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
