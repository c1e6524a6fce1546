//! Skips the reconciles that the operator's own writes trigger. Every write (finalizer, Secret,
//! status) comes back through the watches as another reconcile; while the resource and its
//! Secret are exactly as the last successful reconcile left them and nothing is due yet, that
//! reconcile would decide nothing new, so it is answered without a request.
//!
//! "Exactly as left" is judged by resourceVersions: the resource's must be one the last reconcile
//! saw or wrote, and the newest version of the Secret the watch has delivered must be the one it
//! left. Anything else (a user's edit, a deleted Secret, a failure) means a full reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Default)]
pub struct Memo {
    settled: Mutex<HashMap<String, Settled>>,
    /// Newest resourceVersion of each resource's own Secret the Secret watch delivered, by the
    /// owner's UID.
    secret_seen: Mutex<HashMap<String, String>>,
}

struct Settled {
    resource_versions: Vec<String>,
    secret_version: String,
    until: DateTime<Utc>,
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
            .and_then(|m| m.get(owner_uid).map(|s| s.secret_version == rv))
            .unwrap_or(false)
    }

    /// After a successful reconcile: the resource versions it saw or wrote, the Secret version it
    /// left, and when something next falls due.
    pub fn settle(
        &self,
        uid: &str,
        resource_versions: Vec<String>,
        secret_version: String,
        until: DateTime<Utc>,
    ) {
        if let Ok(mut m) = self.settled.lock() {
            m.insert(
                uid.to_owned(),
                Settled {
                    resource_versions,
                    secret_version,
                    until,
                },
            );
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
        let rv = resource_version?;
        let settled = self.settled.lock().ok()?;
        let s = settled.get(uid)?;
        let seen = self.secret_seen.lock().ok()?;
        let unchanged =
            s.resource_versions.iter().any(|v| v == rv) && seen.get(uid) == Some(&s.secret_version);
        if !unchanged {
            return None;
        }
        (s.until - now).to_std().ok().filter(|d| !d.is_zero())
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
        m.settle("u", vec!["5".into(), "7".into()], "11".into(), at(100));
        // The watch has not yet delivered the Secret version the reconcile wrote.
        assert_eq!(m.unchanged("u", Some("7"), at(50)), None);
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
}
