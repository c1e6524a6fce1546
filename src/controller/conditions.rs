//! The conditions a reconcile leaves: `Ready` says whether the Secret holds the current, valid
//! token, whatever happened; `Issuing` what the engine is doing or what failed; `Stalled`
//! (kstatus) only while a terminal reason waits for a person. Also the per-resource metrics.

use kube::ResourceExt;

use super::engine::{Engine, same_inputs};
use super::secret::secret_name;
use super::{Kind, status};
use crate::error::Error;
use crate::lifecycle::{self, Plan, Policy, SecretState, Step};
use crate::nuclia;
use crate::runtime::metrics::CredentialState;

/// Reasons that wait for a person to change the spec or a Secret: `Stalled` (kstatus).
fn is_terminal(label: &str) -> bool {
    matches!(
        label,
        "InvalidSpec" | "SecretConflict" | "UntrustedEndpoint" | "CredentialNotAllowed"
    )
}

impl<K: Kind> Engine<'_, K> {
    /// Ready, Issuing and Stalled after a successful reconcile: Ready says whether the Secret
    /// holds the current token, whatever step this was.
    pub(super) fn set_conditions(
        &mut self,
        policy: &Policy,
        secret_name: &str,
        secret: &SecretState,
        plan: &Plan,
    ) {
        let generation = self.obj.meta().generation;
        let now = self.now;
        let ready = match lifecycle::secret_holds_current(&self.status, secret, now) {
            Ok(()) => {
                let s = &self.status;
                let expires = s
                    .not_after
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let mut message =
                    format!("Secret {secret_name} holds a valid token until {expires}");
                // Judged against the spec the token was minted for: a spec change waiting for
                // its new token is not a shortened lifetime.
                if let (Some(issued), Some(not_after)) = (s.issued_at, s.not_after)
                    && s.spec_hash.as_deref() == Some(policy.spec_hash.as_str())
                    && lifecycle::lifetime_shortened(policy, issued, not_after)
                {
                    message.push_str(&format!(
                        " (lifetime shortened by Nuclia to {}s of the {} day(s) asked; renewed at two thirds of it)",
                        (not_after - issued).num_seconds(),
                        policy.lifetime.num_days()
                    ));
                }
                if let Some(r) = &s.rollout_restart
                    && r.token_id == s.token_id
                    && !r.failures.is_empty()
                {
                    message.push_str(&format!(
                        "; rollout restart failed: {}",
                        r.failures.join("; ")
                    ));
                }
                (true, "TokenValid", message)
            }
            Err(u) => (
                false,
                u.reason,
                format!("Secret {secret_name}: {}", u.message),
            ),
        };
        let issuing = match &plan.step {
            Step::Wait(reason) => {
                let at = plan
                    .wake_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let message = format!(
                    "a new token is due ({}); waiting for the minimum interval between issues, until {at}",
                    reason.as_str()
                );
                (true, "Waiting", message)
            }
            _ => (false, "Idle", "no issue in progress".to_owned()),
        };
        let c = &mut self.status.conditions;
        status::set(c, status::READY, ready.0, ready.1, ready.2, generation, now);
        status::set(
            c,
            status::ISSUING,
            issuing.0,
            issuing.1,
            issuing.2,
            generation,
            now,
        );
        status::remove(c, status::STALLED);
        self.status.observed_generation = generation;
    }

    /// Records a failure in the conditions and as a Warning Event when the reason is new.
    /// Ready turns False unless the Secret holds the current, valid token.
    pub(super) async fn report_failure(&mut self, e: &Error) {
        let generation = self.obj.meta().generation;
        let mut message = e.to_string();
        if matches!(
            e,
            Error::Nuclia(nuclia::Error::Unauthorized { .. } | nuclia::Error::Forbidden { .. })
        ) {
            // Nuclia's answer cannot say which credential; the user needs to know where it is.
            match self.obj.cluster_credential() {
                Some(name) => message.push_str(&format!(
                    "; check NucliaClusterCredential {name:?} (spec.auth.clusterCredentialRef): a cluster admin must fix its Secret"
                )),
                None => {
                    let r = self.obj.auth_ref();
                    message.push_str(&format!(
                        "; check the credential in Secret {:?} key {:?} (spec.auth.secretRef)",
                        r.name, r.key
                    ));
                }
            }
        }
        let holds = match &self.secret_state {
            Some(state) => lifecycle::secret_holds_current(&self.status, state, self.now)
                .map_err(|u| u.message),
            // Failed before the Secret was read: judge by status alone.
            None if self.status.token_id.is_some()
                && self.status.not_after.is_some_and(|t| t > self.now) =>
            {
                Ok(())
            }
            None => Err("no valid token recorded".to_owned()),
        };
        let holds = match holds {
            Ok(()) if self.upstream_dead => {
                Err("its token was revoked at Nuclia and not yet replaced".to_owned())
            }
            other => other,
        };
        let was = self
            .status
            .condition(status::ISSUING)
            .map(|c| c.reason.clone());
        let c = &mut self.status.conditions;
        if let Err(why) = &holds {
            let name = secret_name(self.obj);
            let ready_message = format!("Secret {name}: {why}; {message}");
            status::set(
                c,
                status::READY,
                false,
                e.label(),
                ready_message,
                generation,
                self.now,
            );
        }
        status::set(
            c,
            status::ISSUING,
            false,
            e.label(),
            &message,
            generation,
            self.now,
        );
        if is_terminal(e.label()) {
            status::set(
                c,
                status::STALLED,
                true,
                e.label(),
                &message,
                generation,
                self.now,
            );
        } else {
            status::remove(c, status::STALLED);
        }
        self.status.observed_generation = generation;
        if was.as_deref() != Some(e.label()) {
            self.ctx
                .event(&self.obj.object_ref(&()), true, e.label(), message);
        }
        match status::write(&self.api, self.obj, self.obj.cr_status(), &self.status).await {
            // Its echo is this reconcile's own write (unless someone changed the resource).
            Ok(written) => self.resource_versions.extend(
                written
                    .filter(|w| same_inputs(self.obj, w))
                    .and_then(|w| w.resource_version()),
            ),
            Err(write_err) => {
                tracing::debug!(error = %write_err, "could not record failure in status");
            }
        }
        self.publish_metrics();
    }

    pub(super) fn publish_metrics(&self) {
        let ready = self
            .status
            .condition(status::READY)
            .is_some_and(|c| c.status == "True");
        let previous = &self.status.previous_tokens;
        self.ctx.metrics.set_credential(
            K::kind(&()).as_ref(),
            &self.obj.namespace().unwrap_or_default(),
            &self.obj.name_any(),
            CredentialState {
                ready,
                expiry: self.status.not_after.map(|t| t.timestamp()),
                renewal: self.status.renewal_time.map(|t| t.timestamp()),
                previous_tokens: previous.len(),
                revocation_due: previous.iter().map(|p| p.revoke_at.timestamp()).min(),
            },
        );
    }
}
