//! Skips the reconciles that the operator's own writes trigger. Every write (finalizer, Secret,
//! status) comes back through the watches as another reconcile; while the resource and its
//! Secret are exactly as the last successful reconcile left them and nothing is due yet, that
//! reconcile would decide nothing new, so it is answered without a request.
//!
//! "Exactly as left" is judged by resourceVersions: the resource's must be one the last reconcile
//! saw or wrote, and the newest version of the Secret the watch has delivered must be the one it
//! left, or the watch must have delivered nothing since (the echo of the reconcile's own Secret
//! write is still on its way: under load the Secret watch lags the resource watch, and a full
//! reconcile would only read the Secret back). Anything else (a user's edit, a deleted Secret, a
//! failure) means a full reconcile; a Secret event other than the echo also triggers one.
//!
//! A failed reconcile leaves an entry too ([`Memo::fail`]): until its backoff is over, the
//! echoes of its own writes (the issue intent, the failure in status) are skipped like those of
//! a successful one, and a full reconcile that happens meanwhile (another event) does not retry
//! the failing mint ([`Memo::backing_off`]); a change of the credential it read lifts it.
//!
//! A reconcile that falls due (verification, renewal) while the watch shows the Secret still
//! at the version the last one left starts from the view of it that reconcile kept, without
//! its token ([`Memo::secret_view`]): the Secret is read only when a step needs the token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::secret::SecretView;
use crate::lifecycle::SecretState;

#[derive(Default)]
pub struct Memo {
    settled: Mutex<HashMap<String, Settled>>,
    /// Newest resourceVersion of each resource's own Secret the Secret watch delivered, by the
    /// owner's UID.
    secret_seen: Mutex<HashMap<String, String>>,
}

struct Settled {
    resource_versions: Vec<String>,
    /// The Secret version it left (a failed reconcile may know none).
    secret_version: Option<String>,
    /// What the watch had delivered of the Secret when the reconcile started.
    secret_seen_before: Option<String>,
    until: DateTime<Utc>,
    /// The view of the Secret at `secret_version`, without its token; kept only for an owned,
    /// up-to-date Secret holding a token (the only one a reconcile can start from unread).
    secret: Option<SecretView>,
    /// The reconcile failed: `until` is the end of its backoff.
    failed: Option<Failed>,
}

struct Failed {
    /// The delay for the error policy, taken once ([`Memo::take_retry`]).
    retry: Option<Duration>,
    /// The credential it read (see [`credential_key`]): a change of it lifts the backoff.
    credential: Option<String>,
}

/// How a failure entry names the credential its resource reads: a Secret in its namespace, or a
/// cluster credential.
pub fn credential_key(namespace: &str, secret: Option<&str>, cluster: Option<&str>) -> String {
    match cluster {
        Some(name) => format!("cluster/{name}"),
        None => format!("secret/{namespace}/{}", secret.unwrap_or_default()),
    }
}

impl Memo {
    /// Records a version of the Secret owned by `owner_uid` from the watch. True when it is the
    /// version the last reconcile left behind: the echo of the operator's own write.
    pub fn secret_seen(&self, owner_uid: &str, resource_version: Option<&str>) -> bool {
        let Some(rv) = resource_version else {
            return false;
        };
        if let Ok(mut seen) = self.secret_seen.lock() {
            seen.insert(owner_uid.to_owned(), rv.to_owned());
        }
        self.settled
            .lock()
            .ok()
            .and_then(|m| {
                m.get(owner_uid)
                    .map(|s| s.secret_version.as_deref() == Some(rv))
            })
            .unwrap_or(false)
    }

    /// The newest version of the resource's own Secret the watch has delivered; a reconcile
    /// takes it when it starts and hands it to [`Memo::settle`].
    pub fn secret_seen_now(&self, owner_uid: &str) -> Option<String> {
        self.secret_seen.lock().ok()?.get(owner_uid).cloned()
    }

    /// After a successful reconcile: the resource versions it saw or wrote, the Secret version it
    /// left, what the watch had delivered of the Secret when it started (an event delivered
    /// since then, during the reconcile, must not be taken for nothing), when something next
    /// falls due, and the view of the Secret it left (if it knows it whole).
    pub fn settle(
        &self,
        uid: &str,
        resource_versions: Vec<String>,
        secret_version: String,
        secret_seen_before: Option<String>,
        until: DateTime<Utc>,
        secret: Option<SecretView>,
    ) {
        let secret = secret.map(SecretView::without_token).filter(|v| {
            v.resource_version.as_ref() == Some(&secret_version)
                && v.exists
                && !v.terminating
                && !v.restored
                && matches!(
                    &v.state,
                    SecretState::Owned {
                        token_hash: Some(_),
                        up_to_date: true
                    }
                )
        });
        if let Ok(mut m) = self.settled.lock() {
            m.insert(
                uid.to_owned(),
                Settled {
                    resource_versions,
                    secret_version: Some(secret_version),
                    secret_seen_before,
                    until,
                    secret,
                    failed: None,
                },
            );
        }
    }

    /// After a failed reconcile: as [`Memo::settle`], with its backoff (the delay, for the
    /// error policy, and when it ends) and the credential it read.
    pub fn fail(
        &self,
        uid: &str,
        resource_versions: Vec<String>,
        secret_version: Option<String>,
        secret_seen_before: Option<String>,
        (retry, until): (Duration, DateTime<Utc>),
        credential: Option<String>,
    ) {
        if let Ok(mut m) = self.settled.lock() {
            m.insert(
                uid.to_owned(),
                Settled {
                    resource_versions,
                    secret_version,
                    secret_seen_before,
                    until,
                    secret: None,
                    failed: Some(Failed {
                        retry: Some(retry),
                        credential,
                    }),
                },
            );
        }
    }

    /// After [`Memo::settle`] of a reconcile that only waited for the minimum interval while the
    /// last one had failed: the failure goes on (its backoff keeps growing until a step
    /// succeeds), and a change of `credential` still lifts it.
    pub fn still_failing(&self, uid: &str, credential: Option<String>) {
        if let Ok(mut m) = self.settled.lock()
            && let Some(s) = m.get_mut(uid)
        {
            s.failed = Some(Failed {
                retry: None,
                credential,
            });
        }
    }

    /// What is left of the wait the last reconcile of the resource settled on, if it saw or
    /// wrote `resource_version` (nobody changed the spec or the requests since) and `holds`.
    fn wait_left(
        &self,
        uid: &str,
        resource_version: Option<&str>,
        now: DateTime<Utc>,
        holds: impl FnOnce(&Settled) -> bool,
    ) -> Option<Duration> {
        let rv = resource_version?;
        let settled = self.settled.lock().ok()?;
        let s = settled.get(uid)?;
        if !s.resource_versions.iter().any(|v| v == rv) || !holds(s) {
            return None;
        }
        (s.until - now).to_std().ok().filter(|d| !d.is_zero())
    }

    /// The backoff a failed reconcile recorded, once (the error policy's delay).
    pub fn take_retry(&self, uid: &str) -> Option<Duration> {
        let mut m = self.settled.lock().ok()?;
        m.get_mut(uid)?.failed.as_mut()?.retry.take()
    }

    /// How long the failing step of the resource at `resource_version` (one the failed
    /// reconcile saw or wrote: nobody changed the spec or the requests since) must still wait.
    pub fn backing_off(
        &self,
        uid: &str,
        resource_version: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        self.wait_left(uid, resource_version, now, |s| s.failed.is_some())
    }

    /// Whether the last reconcile of the resource failed (its backoff goes on).
    pub fn failing(&self, uid: &str) -> bool {
        self.settled
            .lock()
            .is_ok_and(|m| m.get(uid).is_some_and(|s| s.failed.is_some()))
    }

    /// The credential `key` ([`credential_key`]) changed: the resources whose last reconcile
    /// failed with it try again at once.
    pub fn credential_changed(&self, key: &str) {
        if let Ok(mut m) = self.settled.lock() {
            m.retain(|_, s| {
                s.failed
                    .as_ref()
                    .is_none_or(|f| f.credential.as_deref() != Some(key))
            });
        }
    }

    /// How long the resource at `resource_version` can wait without a reconcile, if nothing
    /// changed since the last one.
    pub fn unchanged(
        &self,
        uid: &str,
        resource_version: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        // (the Secret's lock is taken inside the resources', as everywhere)
        self.wait_left(uid, resource_version, now, |s| {
            self.secret_seen.lock().is_ok_and(|seen| {
                let secret = seen.get(uid);
                secret == s.secret_version.as_ref() || secret == s.secret_seen_before.as_ref()
            })
        })
    }

    /// The view of the Secret the last reconcile kept, if the resource at `resource_version` is
    /// one it saw or wrote and the newest version of the Secret the watch has delivered is the
    /// one it left (not merely "nothing delivered since": the watch must vouch for it).
    pub fn secret_view(&self, uid: &str, resource_version: Option<&str>) -> Option<SecretView> {
        let rv = resource_version?;
        let settled = self.settled.lock().ok()?;
        let s = settled.get(uid)?;
        let seen = self.secret_seen.lock().ok()?;
        (s.resource_versions.iter().any(|v| v == rv) && seen.get(uid) == s.secret_version.as_ref())
            .then(|| s.secret.clone())
            .flatten()
    }

    /// Why [`Memo::unchanged`] asks for a full reconcile (for the debug log).
    pub fn why_full(&self, uid: &str, resource_version: Option<&str>) -> &'static str {
        let Ok(settled) = self.settled.lock() else {
            return "memo unavailable";
        };
        let Some(s) = settled.get(uid) else {
            return "no successful reconcile since the last change or failure";
        };
        if !resource_version.is_some_and(|rv| s.resource_versions.iter().any(|v| v == rv)) {
            return "the resource changed";
        }
        let seen = self
            .secret_seen
            .lock()
            .ok()
            .and_then(|m| m.get(uid).cloned());
        if seen != s.secret_version && seen != s.secret_seen_before {
            return "the Secret changed";
        }
        "something is due"
    }

    /// Whatever the last reconcile planned falls due now (tests: time does not pass).
    #[cfg(test)]
    pub fn fall_due(&self, uid: &str) {
        if let Ok(mut m) = self.settled.lock()
            && let Some(s) = m.get_mut(uid)
        {
            s.until = DateTime::<Utc>::MIN_UTC;
        }
    }

    /// The next reconcile must be a full one.
    pub fn invalidate(&self, uid: &str) {
        if let Ok(mut m) = self.settled.lock() {
            m.remove(uid);
        }
    }

    /// Entries held (both maps).
    pub fn len(&self) -> usize {
        self.settled.lock().map_or(0, |m| m.len()) + self.secret_seen.lock().map_or(0, |m| m.len())
    }

    /// The resource is gone.
    pub fn forget(&self, uid: &str) {
        self.invalidate(uid);
        if let Ok(mut m) = self.secret_seen.lock() {
            m.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid time")
    }

    #[test]
    fn skips_only_own_echoes_until_due() {
        let m = Memo::default();
        assert!(!m.secret_seen("u", Some("10")), "no reconcile settled yet");
        let start = m.secret_seen_now("u");
        m.settle(
            "u",
            vec!["5".into(), "7".into()],
            "11".into(),
            start,
            at(100),
            None,
        );
        // The watch has not yet delivered the Secret version the reconcile wrote, nor anything
        // else: its echo is on its way.
        assert_eq!(
            m.unchanged("u", Some("7"), at(50)),
            Some(Duration::from_secs(50))
        );
        assert!(m.secret_seen("u", Some("11")), "own write echoes");
        assert_eq!(
            m.unchanged("u", Some("7"), at(50)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            m.unchanged("u", Some("5"), at(50)),
            Some(Duration::from_secs(50))
        );
        // Something falls due.
        assert_eq!(m.unchanged("u", Some("7"), at(100)), None);
        // A version of the resource the reconcile never saw (a user's edit).
        assert_eq!(m.unchanged("u", Some("8"), at(50)), None);
        // Someone else changed the Secret afterwards.
        assert!(!m.secret_seen("u", Some("12")));
        assert_eq!(m.unchanged("u", Some("7"), at(50)), None);
        m.forget("u");
        assert_eq!(m.unchanged("u", Some("7"), at(50)), None);
    }

    #[test]
    fn a_failure_holds_its_echoes_and_its_step_until_its_backoff_ends() {
        let m = Memo::default();
        let key = credential_key("ns", Some("login"), None);
        let backoff = (Duration::from_secs(30), at(130));
        m.fail(
            "u",
            vec!["7".into(), "8".into()],
            None,
            None,
            backoff,
            Some(key.clone()),
        );
        assert!(m.failing("u"));
        assert_eq!(m.take_retry("u"), Some(Duration::from_secs(30)));
        assert_eq!(m.take_retry("u"), None, "taken once");
        // The echo of its own write (the intent, the failure in status) wakes nothing.
        assert_eq!(
            m.unchanged("u", Some("8"), at(100)),
            Some(Duration::from_secs(30))
        );
        // Another event means a full reconcile, whose failing step still waits...
        assert!(!m.secret_seen("u", Some("12")));
        assert_eq!(m.unchanged("u", Some("8"), at(100)), None);
        assert_eq!(
            m.backing_off("u", Some("8"), at(100)),
            Some(Duration::from_secs(30))
        );
        // ...unless the resource changed, or the backoff is over.
        assert_eq!(m.backing_off("u", Some("9"), at(100)), None);
        assert_eq!(m.backing_off("u", Some("8"), at(130)), None);
        // A change of the credential it read lifts it.
        m.credential_changed(&credential_key("ns", Some("other"), None));
        assert!(m.failing("u"));
        m.credential_changed(&key);
        assert!(!m.failing("u"));
        assert_eq!(m.backing_off("u", Some("8"), at(100)), None);
        // A success ends it; a wait for the minimum interval after it does not.
        m.fail("u", vec!["7".into()], None, None, backoff, None);
        m.settle("u", vec!["9".into()], "11".into(), None, at(140), None);
        assert!(!m.failing("u"));
        m.still_failing("u", None);
        assert!(m.failing("u"));
    }

    #[test]
    fn a_secret_event_other_than_the_echo_means_a_full_reconcile() {
        let m = Memo::default();
        assert!(!m.secret_seen("u", Some("10")));
        // The reconcile read version 10 and wrote 11; the watch has delivered only 10.
        let start = m.secret_seen_now("u");
        assert_eq!(start.as_deref(), Some("10"));
        m.settle("u", vec!["7".into()], "11".into(), start, at(100), None);
        assert_eq!(
            m.unchanged("u", Some("7"), at(50)),
            Some(Duration::from_secs(50))
        );
        // The Secret is deleted (or edited) before the echo of 11 arrives: the watch delivers
        // a version that is neither.
        assert!(!m.secret_seen("u", Some("13")));
        assert_eq!(m.unchanged("u", Some("7"), at(50)), None);
        // A later echo of 11 arriving out of order cannot happen (a watch is ordered), but
        // delivering 11 then 13 ends the same way.
        let m = Memo::default();
        m.settle("u", vec!["7".into()], "11".into(), None, at(100), None);
        assert!(m.secret_seen("u", Some("11")));
        assert!(!m.secret_seen("u", Some("13")));
        assert_eq!(m.unchanged("u", Some("7"), at(50)), None);

        // A user's edit delivered while the reconcile ran (after it read 10, before it settled)
        // is not taken for "nothing delivered since".
        let m = Memo::default();
        assert!(!m.secret_seen("u", Some("10")));
        let start = m.secret_seen_now("u");
        assert!(!m.secret_seen("u", Some("12")));
        m.settle("u", vec!["7".into()], "10".into(), start, at(100), None);
        assert_eq!(m.unchanged("u", Some("7"), at(50)), None);
    }
}
