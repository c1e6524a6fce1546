//! The credential lifecycle, written once for both kinds: a pure function of the spec (as a
//! [`Policy`]), the status, what the Secret looks like and the clock, that says what to do next
//! and when to wake up. The controller carries the decision out; nothing here does I/O.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::crd::{
    CredentialStatus, DeletionPolicy, MAX_PREVIOUS_TOKENS, PreviousToken, TokenScope,
};

/// The spec, validated and reduced to what the lifecycle needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Lifetime requested for each token.
    pub lifetime: Duration,
    /// Rotate this long before expiry.
    pub renew_before: Duration,
    /// Grace period of a replaced token.
    pub revoke_previous_after: Duration,
    /// Hash of the spec fields that shape the credential; a change means rotate.
    pub spec_hash: String,
    pub deletion: DeletionPolicy,
}

impl Policy {
    /// Builds the policy of a spec. `shaping` holds the spec fields that shape the credential:
    /// a change of any of them (or of the deletion policy to `Orphan`, whose tokens carry
    /// another marker) rotates it. The error says what to fix.
    pub fn for_spec(
        shaping: serde_json::Value,
        days: u32,
        renew_before: Option<&str>,
        rotation: &crate::crd::Rotation,
        deletion: DeletionPolicy,
    ) -> Result<Self, String> {
        let hash = spec_hash(shaping, deletion);
        Self::new(
            days,
            renew_before,
            &rotation.revoke_previous_after,
            hash,
            deletion,
        )
    }

    /// Builds the policy from spec values; the error says what to fix.
    pub fn new(
        days: u32,
        renew_before: Option<&str>,
        revoke_previous_after: &str,
        spec_hash: String,
        deletion: DeletionPolicy,
    ) -> Result<Self, String> {
        if !(1..=crate::crd::MAX_DAYS).contains(&days) {
            return Err(format!(
                "spec.days is {days}; use 1 to {}",
                crate::crd::MAX_DAYS
            ));
        }
        let lifetime = Duration::days(days.into());
        let renew_before = match renew_before {
            None => lifetime / 3,
            Some(text) => {
                let d =
                    crate::duration::parse(text).map_err(|e| format!("spec.renewBefore: {e}"))?;
                let d = Duration::from_std(d)
                    .map_err(|_| format!("spec.renewBefore {text:?} is too long"))?;
                if d >= lifetime {
                    return Err(format!(
                        "spec.renewBefore {text} is not shorter than the lifetime of {days} day(s); \
                         shorten renewBefore or raise days"
                    ));
                }
                d
            }
        };
        let grace = crate::duration::parse(revoke_previous_after)
            .map_err(|e| format!("spec.rotation.revokePreviousAfter: {e}"))?;
        // A replaced token is dead by the longest lifetime anyway; beyond it, `now + grace`
        // could overflow the calendar (and panic) for values the schema's pattern lets through.
        let max_grace = Duration::days(crate::crd::MAX_DAYS.into());
        let revoke_previous_after = Duration::from_std(grace)
            .ok()
            .filter(|g| *g <= max_grace)
            .ok_or_else(|| {
                format!(
                    "spec.rotation.revokePreviousAfter {revoke_previous_after} is longer than the \
                     longest token lifetime ({} days); shorten it",
                    crate::crd::MAX_DAYS
                )
            })?;
        Ok(Self {
            lifetime,
            renew_before,
            revoke_previous_after,
            spec_hash,
            deletion,
        })
    }
}

/// Hash of the spec fields that shape the credential.
fn spec_hash(mut shaping: serde_json::Value, deletion: DeletionPolicy) -> String {
    // Hashes of resources with the default policy stay what they were (no rotation on upgrade).
    if deletion == DeletionPolicy::Orphan
        && let Some(fields) = shaping.as_array_mut()
    {
        fields.push("Orphan".into());
    }
    hex::encode(&Sha256::digest(shaping.to_string().as_bytes())[..8])
}

/// What the operator sees of the Secret it should own.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretState {
    Missing,
    /// A Secret of that name not owned by this resource: never touched.
    Foreign,
    Owned {
        /// Hash of the token in it (None when the key is absent).
        token_hash: Option<String>,
        /// Whether its name, labels, annotations, finalizer and non-token data match the spec.
        up_to_date: bool,
    },
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub now: DateTime<Utc>,
    /// The resource's UID: seeds the deterministic jitter.
    pub uid: &'a str,
    pub policy: &'a Policy,
    pub status: &'a CredentialStatus,
    pub secret: SecretState,
    /// Current values of the `nuclia.dev/rotate` and `nuclia.dev/revoke-now` annotations.
    pub rotate_request: Option<&'a str>,
    pub revoke_now_request: Option<&'a str>,
    /// When the current token was last seen alive upstream (kept in memory, not in status,
    /// so that verification writes nothing).
    pub last_verified: Option<DateTime<Utc>>,
    pub verify_interval: Duration,
    /// At most one mint per this interval, counted from the later of `status.issuedAt` and
    /// [`Self::last_mint_attempt`].
    pub min_issue_interval: Duration,
    /// When the last mint was attempted, whatever came of it (the issue intent's time): a mint
    /// refused, or rolled back because its Secret could not be written, counts too.
    pub last_mint_attempt: Option<DateTime<Utc>>,
    /// This reconcile's verification found the current token gone upstream: it is re-issued,
    /// within the minimum interval like any other mint.
    pub upstream_dead: bool,
}

/// Why a token is issued; also the Event reason and the condition message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    Initial,
    Expired,
    SecretRepaired,
    RevokeNow,
    RotateRequested,
    SpecChanged,
    Renewal,
    RevokedUpstream,
}

impl IssueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Initial => "Initial",
            IssueReason::Expired => "Expired",
            IssueReason::SecretRepaired => "SecretRepaired",
            IssueReason::RevokeNow => "RevokeNow",
            IssueReason::RotateRequested => "RotateRequested",
            IssueReason::SpecChanged => "SpecChanged",
            IssueReason::Renewal => "Renewal",
            IssueReason::RevokedUpstream => "RevokedUpstream",
        }
    }

    /// Whether the token being replaced must go at once rather than after the grace period:
    /// break-glass, or it is dead already. A `RevokedUpstream` verdict keeps the grace: were it
    /// false, pods would lose a working token at once.
    pub fn revoke_replaced_now(self) -> bool {
        matches!(self, IssueReason::RevokeNow | IssueReason::Expired)
    }
}

/// The next step for one resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The Secret name belongs to someone else: report `SecretConflict`, write nothing.
    Conflict,
    /// Mint a successor (or the first token).
    Issue(IssueReason),
    /// A mint is due but the last one is younger than the minimum interval: wait for it.
    Wait(IssueReason),
    /// Rewrite the Secret's metadata from the spec; the token stays.
    RefreshSecret,
    /// Check that the current token still exists upstream; a dead one is re-issued at once
    /// (reason `RevokedUpstream`).
    Verify,
    /// Healthy: nothing to do until the next wake-up.
    Idle,
}

/// The whole plan for one reconcile: the step, the replaced tokens to revoke now, and when to
/// look again. The controller carries it out as is; after a step that changed the status it
/// asks again, and the second plan's revocations and wake-up are the ones that run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub step: Step,
    /// Replaced tokens whose grace period is over (or that were revoked early).
    pub revoke: Vec<PreviousToken>,
    /// When to look again if nothing else happens (before the controller's cap). `None`
    /// while a step that changes the status is pending: ask again after it.
    pub wake_at: Option<DateTime<Utc>>,
}

/// Decides the plan. Order matters: safety first (never overwrite a foreign Secret, never
/// leave an expired or missing token), then user requests, then the schedule.
pub fn decide(o: &Observation<'_>) -> Plan {
    let s = o.status;
    let revoke: Vec<PreviousToken> = s
        .previous_tokens
        .iter()
        .filter(|p| p.revoke_at <= o.now)
        .cloned()
        .collect();
    let step = match choose_step(o) {
        Step::Issue(reason) if throttled(o) => Step::Wait(reason),
        step => step,
    };
    let wake_at = next_wake(o, &step);
    Plan {
        step,
        revoke,
        wake_at,
    }
}

/// The last mint (or attempt) is younger than the minimum interval.
fn throttled(o: &Observation<'_>) -> bool {
    next_mint_allowed(o).is_some_and(|t| o.now < t)
}

/// When the minimum interval after the last mint or mint attempt ends.
fn next_mint_allowed(o: &Observation<'_>) -> Option<DateTime<Utc>> {
    let last = o
        .status
        .issued_at
        .max(o.last_mint_attempt.filter(|t| *t <= o.now));
    last.map(|t| t + o.min_issue_interval)
}

fn choose_step(o: &Observation<'_>) -> Step {
    let s = o.status;
    if o.secret == SecretState::Foreign {
        return Step::Conflict;
    }
    let (Some(_), Some(not_after)) = (&s.token_id, s.not_after) else {
        return Step::Issue(IssueReason::Initial);
    };
    if o.now >= not_after {
        return Step::Issue(IssueReason::Expired);
    }
    if secret_holds_current(o.status, &o.secret, o.now).is_err() {
        return Step::Issue(IssueReason::SecretRepaired);
    }
    if o.upstream_dead {
        return Step::Issue(IssueReason::RevokedUpstream);
    }
    if let Some(v) = o.revoke_now_request
        && s.revoke_now_handled.as_deref() != Some(v)
    {
        return Step::Issue(IssueReason::RevokeNow);
    }
    if let Some(v) = o.rotate_request
        && s.rotate_handled.as_deref() != Some(v)
    {
        return Step::Issue(IssueReason::RotateRequested);
    }
    if s.spec_hash.as_deref() != Some(o.policy.spec_hash.as_str()) {
        return Step::Issue(IssueReason::SpecChanged);
    }
    if s.renewal_time.is_none_or(|r| o.now >= r) {
        return Step::Issue(IssueReason::Renewal);
    }
    if matches!(
        o.secret,
        SecretState::Owned {
            up_to_date: false,
            ..
        }
    ) {
        return Step::RefreshSecret;
    }
    if o.last_verified
        .is_none_or(|t| o.now >= t + o.verify_interval)
    {
        return Step::Verify;
    }
    Step::Idle
}

/// The earliest due time among renewal, grace ends, expiry, verification and, while a mint
/// waits for the minimum interval, the end of that interval.
fn next_wake(o: &Observation<'_>, step: &Step) -> Option<DateTime<Utc>> {
    let s = o.status;
    let verify_at = match step {
        Step::Issue(_) | Step::RefreshSecret => return None,
        Step::Wait(_) => return next_mint_allowed(o),
        // Due now: a plan asked after another step (a refresh) must not put it off.
        Step::Verify => return Some(o.now),
        Step::Conflict | Step::Idle => o.last_verified.map(|t| t + o.verify_interval),
    };
    [s.renewal_time, s.not_after, verify_at]
        .into_iter()
        .flatten()
        .chain(s.previous_tokens.iter().map(|p| p.revoke_at))
        .filter(|t| *t > o.now)
        .min()
}

/// Why the Secret does not hold a token pods can use: the condition reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unready {
    pub reason: &'static str,
    pub message: String,
}

/// Whether the Secret holds the current, unexpired token that status records. `Ready` is True
/// only when this holds (and nothing upstream said otherwise).
pub fn secret_holds_current(
    status: &CredentialStatus,
    secret: &SecretState,
    now: DateTime<Utc>,
) -> Result<(), Unready> {
    let unready = |reason, message: &str| {
        Err(Unready {
            reason,
            message: message.to_owned(),
        })
    };
    let (Some(id), Some(not_after)) = (&status.token_id, status.not_after) else {
        return unready("NotIssued", "no token has been issued yet");
    };
    match secret {
        SecretState::Foreign => {
            return unready("SecretConflict", "the Secret is not owned by this resource");
        }
        SecretState::Missing => return unready("SecretMissing", "the Secret does not exist"),
        SecretState::Owned { token_hash, .. }
            if token_hash.is_none() || *token_hash != status.token_hash =>
        {
            return unready(
                "SecretEdited",
                "the Secret does not hold the current token (edited or emptied)",
            );
        }
        SecretState::Owned { .. } => {}
    }
    if now >= not_after {
        return unready(
            "Expired",
            &format!(
                "token {id} expired at {}",
                not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    Ok(())
}

/// A token just minted (or adopted), to record as the current one.
#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    pub id: &'a str,
    pub token_hash: String,
    pub not_after: DateTime<Utc>,
    pub scope: TokenScope,
}

/// Makes `new` the current token. The one it replaces keeps its scope and waits until
/// `grace_end`; beyond [`MAX_PREVIOUS_TOKENS`] the oldest are due at once (their ids are
/// returned, for an Event). Renewal is scheduled from the lifetime Nuclia granted.
pub fn record_issue(
    status: &mut CredentialStatus,
    policy: &Policy,
    uid: &str,
    now: DateTime<Utc>,
    new: NewToken<'_>,
    grace_end: DateTime<Utc>,
) -> Vec<String> {
    if let Some(old) = status.token_id.take() {
        let scope = status.scope.take();
        status.previous_tokens.push(PreviousToken {
            // Also in the old field, which earlier versions read (a rollback still revokes it).
            service_account_id: scope.as_ref().and_then(|s| s.service_account_id.clone()),
            id: old,
            revoke_at: grace_end,
            not_after: status.not_after,
            scope,
        });
    }
    status.token_id = Some(new.id.to_owned());
    status.token_hash = Some(new.token_hash);
    status.issued_at = Some(now);
    status.not_after = Some(new.not_after);
    status.renewal_time = Some(renewal_time(policy, uid, now, new.not_after));
    status.spec_hash = Some(policy.spec_hash.clone());
    status.scope = Some(new.scope);
    let waiting: Vec<&mut PreviousToken> = status
        .previous_tokens
        .iter_mut()
        .filter(|p| p.revoke_at > now)
        .collect();
    let excess = waiting.len().saturating_sub(MAX_PREVIOUS_TOKENS);
    let mut waiting = waiting;
    waiting.sort_by_key(|p| p.revoke_at);
    waiting
        .into_iter()
        .take(excess)
        .map(|p| {
            p.revoke_at = now;
            p.id.clone()
        })
        .collect()
}

/// Whether Nuclia granted less than the lifetime asked for (a minute of slack for clocks).
pub fn lifetime_shortened(
    policy: &Policy,
    issued: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> bool {
    not_after - issued + Duration::minutes(1) < policy.lifetime
}

/// When a token issued at `issued` and expiring at `not_after` should be renewed: `renewBefore`
/// ahead of expiry, moved earlier by a deterministic per-object jitter so that tokens created
/// together do not rotate together. The jitter is at most a tenth of the smaller of renewBefore
/// and the time between issue and the renewal point, so it never renews before issue.
///
/// When Nuclia granted a shorter lifetime than asked, renewBefore (sized for the lifetime
/// asked) may not fit in it: renewal then comes at two thirds of the lifetime granted, never
/// at issue (which would mint again at once, and again).
pub fn renewal_time(
    policy: &Policy,
    uid: &str,
    issued: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> DateTime<Utc> {
    let granted = (not_after - issued).max(Duration::zero());
    let renew_before = if lifetime_shortened(policy, issued, not_after) {
        policy.renew_before.min(granted / 3)
    } else {
        policy.renew_before
    };
    let policy = &Policy {
        renew_before,
        ..policy.clone()
    };
    let nominal = not_after - policy.renew_before;
    let room = (nominal - issued)
        .max(Duration::zero())
        .min(policy.renew_before);
    let spread_ms = room.num_milliseconds() / 10;
    let jitter_ms = if spread_ms > 0 {
        (jitter_fraction(uid) * spread_ms as f64) as i64
    } else {
        0
    };
    (nominal - Duration::milliseconds(jitter_ms)).max(issued)
}

/// A stable number in [0, 1) derived from the UID.
fn jitter_fraction(uid: &str) -> f64 {
    let digest = Sha256::digest(uid.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The short hash recorded in status and compared with the Secret's token: enough to notice an
/// edit, useless to recover the token (12 hex digits of SHA-256).
pub fn token_hash(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn policy() -> Policy {
        Policy::new(30, None, "1h", "spec-1".into(), DeletionPolicy::Revoke).unwrap()
    }

    /// A healthy status: issued on Nov 1, expires Dec 1, renews Nov 21.
    fn healthy() -> CredentialStatus {
        CredentialStatus {
            token_id: Some("tok-1".into()),
            token_hash: Some("h1".into()),
            issued_at: Some(t("2026-11-01T00:00:00Z")),
            not_after: Some(t("2026-12-01T00:00:00Z")),
            renewal_time: Some(t("2026-11-21T00:00:00Z")),
            spec_hash: Some("spec-1".into()),
            ..Default::default()
        }
    }

    fn owned(hash: &str) -> SecretState {
        SecretState::Owned {
            token_hash: Some(hash.into()),
            up_to_date: true,
        }
    }

    fn obs<'a>(
        now: &str,
        p: &'a Policy,
        s: &'a CredentialStatus,
        secret: SecretState,
    ) -> Observation<'a> {
        Observation {
            now: t(now),
            uid: "uid-1",
            policy: p,
            status: s,
            secret,
            rotate_request: None,
            revoke_now_request: None,
            last_verified: Some(t(now)),
            verify_interval: Duration::minutes(10),
            min_issue_interval: Duration::seconds(10),
            last_mint_attempt: None,
            upstream_dead: false,
        }
    }

    /// A token found gone upstream is re-issued, but not within the minimum interval of the
    /// last mint (a restart forgets when it verified, and a fast out-of-band revocation must not
    /// make a second mint in the same interval).
    #[test]
    fn a_dead_token_is_reissued_within_the_minimum_interval_rules() {
        let p = policy();
        let mut s = healthy();
        s.issued_at = Some(t("2026-11-10T00:00:00Z"));
        let mut o = obs("2026-11-10T00:00:05Z", &p, &s, owned("h1"));
        o.upstream_dead = true;
        let plan = decide(&o);
        assert_eq!(plan.step, Step::Wait(IssueReason::RevokedUpstream));
        assert_eq!(plan.wake_at, Some(t("2026-11-10T00:00:10Z")));
        o.now = t("2026-11-10T00:00:10Z");
        assert_eq!(decide(&o).step, Step::Issue(IssueReason::RevokedUpstream));
    }

    #[test]
    fn steps_in_priority_order() {
        let p = policy();
        let h = healthy();
        let empty = CredentialStatus::default();
        let mut renamed = healthy();
        renamed.spec_hash = Some("spec-0".into());
        let mut handled = healthy();
        handled.rotate_handled = Some("a".into());
        handled.revoke_now_handled = Some("x".into());
        let now = "2026-11-10T00:00:00Z";
        struct Case<'a> {
            name: &'a str,
            obs: Observation<'a>,
            want: Step,
        }
        let with = |f: &dyn Fn(&mut Observation<'_>)| {
            let mut o = obs(now, &p, &h, owned("h1"));
            f(&mut o);
            o
        };
        let cases = vec![
            Case {
                name: "foreign secret wins over everything",
                obs: obs(now, &p, &empty, SecretState::Foreign),
                want: Step::Conflict,
            },
            Case {
                name: "no token yet",
                obs: obs(now, &p, &empty, SecretState::Missing),
                want: Step::Issue(IssueReason::Initial),
            },
            Case {
                name: "expired",
                obs: obs("2026-12-01T00:00:00Z", &p, &h, owned("h1")),
                want: Step::Issue(IssueReason::Expired),
            },
            Case {
                name: "expired beats repair",
                obs: obs("2026-12-02T00:00:00Z", &p, &h, SecretState::Missing),
                want: Step::Issue(IssueReason::Expired),
            },
            Case {
                name: "secret deleted",
                obs: obs(now, &p, &h, SecretState::Missing),
                want: Step::Issue(IssueReason::SecretRepaired),
            },
            Case {
                name: "secret token edited",
                obs: obs(now, &p, &h, owned("other")),
                want: Step::Issue(IssueReason::SecretRepaired),
            },
            Case {
                name: "secret token key removed",
                obs: obs(
                    now,
                    &p,
                    &h,
                    SecretState::Owned {
                        token_hash: None,
                        up_to_date: true,
                    },
                ),
                want: Step::Issue(IssueReason::SecretRepaired),
            },
            Case {
                name: "revoke-now annotation",
                obs: with(&|o| o.revoke_now_request = Some("x")),
                want: Step::Issue(IssueReason::RevokeNow),
            },
            Case {
                name: "rotate annotation",
                obs: with(&|o| o.rotate_request = Some("a")),
                want: Step::Issue(IssueReason::RotateRequested),
            },
            Case {
                name: "handled annotations are not repeated",
                obs: {
                    let mut o = obs(now, &p, &handled, owned("h1"));
                    o.rotate_request = Some("a");
                    o.revoke_now_request = Some("x");
                    o
                },
                want: Step::Idle,
            },
            Case {
                name: "spec changed",
                obs: obs(now, &p, &renamed, owned("h1")),
                want: Step::Issue(IssueReason::SpecChanged),
            },
            Case {
                name: "renewal time reached",
                obs: obs("2026-11-21T00:00:00Z", &p, &h, owned("h1")),
                want: Step::Issue(IssueReason::Renewal),
            },
            Case {
                name: "one second before renewal",
                obs: obs("2026-11-20T23:59:59Z", &p, &h, owned("h1")),
                want: Step::Idle,
            },
            Case {
                name: "secret metadata drifted",
                obs: obs(
                    now,
                    &p,
                    &h,
                    SecretState::Owned {
                        token_hash: Some("h1".into()),
                        up_to_date: false,
                    },
                ),
                want: Step::RefreshSecret,
            },
            Case {
                name: "verification due",
                obs: with(&|o| o.last_verified = Some(t("2026-11-09T23:50:00Z"))),
                want: Step::Verify,
            },
            Case {
                name: "never verified (fresh process)",
                obs: with(&|o| o.last_verified = None),
                want: Step::Verify,
            },
            Case {
                name: "healthy",
                obs: obs(now, &p, &h, owned("h1")),
                want: Step::Idle,
            },
        ];
        for c in cases {
            assert_eq!(decide(&c.obs).step, c.want, "{}", c.name);
        }
    }

    /// A plan asked after another step (a refresh of the Secret) that still says "verify"
    /// wakes now: an overdue verification is not put off by a verify interval.
    #[test]
    fn an_overdue_verification_wakes_at_once() {
        let p = policy();
        let h = healthy();
        let now = "2026-11-10T00:00:00Z";
        let mut o = obs(now, &p, &h, owned("h1"));
        o.last_verified = Some(t("2026-10-01T00:00:00Z"));
        let plan = decide(&o);
        assert_eq!(plan.step, Step::Verify);
        assert_eq!(plan.wake_at, Some(t(now)));
    }

    #[test]
    fn grace_periods_end_and_wake_ups_follow_the_earliest_due_time() {
        let p = policy();
        let mut s = healthy();
        s.previous_tokens = vec![
            PreviousToken {
                id: "old-1".into(),
                revoke_at: t("2026-11-10T00:00:00Z"),
                service_account_id: None,
                not_after: None,
                scope: None,
            },
            PreviousToken {
                id: "old-2".into(),
                revoke_at: t("2026-11-10T00:30:00Z"),
                service_account_id: None,
                not_after: None,
                scope: None,
            },
        ];
        let mut o = obs("2026-11-10T00:00:00Z", &p, &s, owned("h1"));
        o.last_verified = Some(t("2026-11-09T23:55:00Z"));
        let d = decide(&o);
        assert_eq!(d.step, Step::Idle);
        assert_eq!(
            d.revoke.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["old-1"]
        );
        // verification at 00:05 comes before old-2's grace end at 00:30 and the renewal
        assert_eq!(d.wake_at, Some(t("2026-11-10T00:05:00Z")));

        o.last_verified = Some(t("2026-11-10T00:00:00Z"));
        o.verify_interval = Duration::hours(2);
        assert_eq!(decide(&o).wake_at, Some(t("2026-11-10T00:30:00Z")));

        // while issuing, the controller reschedules from the new status
        let empty = CredentialStatus::default();
        assert_eq!(
            decide(&obs(
                "2026-11-10T00:00:00Z",
                &p,
                &empty,
                SecretState::Missing
            ))
            .wake_at,
            None
        );
    }

    #[test]
    fn renewal_time_rules() {
        let issued = t("2026-11-01T00:00:00Z");
        let p30 = policy();
        let not_after = issued + p30.lifetime;
        // default renewBefore is a third of the lifetime; jitter only moves renewal earlier,
        // by at most a tenth of renewBefore
        let r = renewal_time(&p30, "uid-1", issued, not_after);
        let nominal = not_after - Duration::days(10);
        assert!(r <= nominal && r >= nominal - Duration::days(1), "{r}");
        // deterministic per object, different across objects
        assert_eq!(r, renewal_time(&p30, "uid-1", issued, not_after));
        let spread: std::collections::BTreeSet<_> = (0..50)
            .map(|i| renewal_time(&p30, &format!("uid-{i}"), issued, not_after))
            .collect();
        assert!(
            spread.len() > 40,
            "jitter should spread renewals: {}",
            spread.len()
        );

        // renewBefore a few seconds short of the lifetime: renewal a few seconds after issue,
        // never before issue
        let short = Policy::new(
            1,
            Some("23h59m50s"),
            "5s",
            "s".into(),
            DeletionPolicy::Revoke,
        )
        .unwrap();
        let not_after = issued + Duration::days(1);
        let r = renewal_time(&short, "uid-9", issued, not_after);
        assert!(
            r > issued + Duration::seconds(8) && r <= issued + Duration::seconds(10),
            "{r}"
        );

        // Nuclia granted 3 s of the day asked: renewal at two thirds of that, not at issue
        let r = renewal_time(&short, "uid-9", issued, issued + Duration::seconds(3));
        assert!(
            r > issued + Duration::milliseconds(1800) && r <= issued + Duration::seconds(2),
            "{r}"
        );
    }

    #[test]
    fn policy_validation_says_what_to_fix() {
        let err =
            Policy::new(1, Some("24h"), "1h", "s".into(), DeletionPolicy::Revoke).unwrap_err();
        assert!(
            err.contains("spec.renewBefore") && err.contains("shorter"),
            "{err}"
        );
        let err = Policy::new(0, None, "1h", "s".into(), DeletionPolicy::Revoke).unwrap_err();
        assert!(err.contains("spec.days"), "{err}");
        let err =
            Policy::new(5, Some("soon"), "1h", "s".into(), DeletionPolicy::Revoke).unwrap_err();
        assert!(err.contains("spec.renewBefore"), "{err}");
        let err = Policy::new(5, None, "1 hour", "s".into(), DeletionPolicy::Revoke).unwrap_err();
        assert!(err.contains("revokePreviousAfter"), "{err}");
        // the schema's pattern allows this; adding it to a date would overflow
        let huge = "999999999h".repeat(3);
        let err = Policy::new(5, None, &huge, "s".into(), DeletionPolicy::Revoke).unwrap_err();
        assert!(err.contains("spec.rotation.revokePreviousAfter"), "{err}");
        assert!(Policy::new(5, None, "26280h", "s".into(), DeletionPolicy::Revoke).is_ok());
        let p = Policy::new(90, None, "1h", "s".into(), DeletionPolicy::Revoke).unwrap();
        assert_eq!(p.renew_before, Duration::days(30));
    }

    #[test]
    fn mints_wait_for_the_minimum_interval() {
        let p = policy();
        let mut s = healthy();
        s.issued_at = Some(t("2026-11-10T00:00:00Z"));
        // the Secret was deleted 3 s after an issue: repair waits until 10 s after it
        let o = obs("2026-11-10T00:00:03Z", &p, &s, SecretState::Missing);
        let plan = decide(&o);
        assert_eq!(plan.step, Step::Wait(IssueReason::SecretRepaired));
        assert_eq!(plan.wake_at, Some(t("2026-11-10T00:00:10Z")));
        let o = obs("2026-11-10T00:00:10Z", &p, &s, SecretState::Missing);
        assert_eq!(decide(&o).step, Step::Issue(IssueReason::SecretRepaired));
        // a first issue is never held back
        let empty = CredentialStatus::default();
        let o = obs("2026-11-10T00:00:03Z", &p, &empty, SecretState::Missing);
        assert_eq!(decide(&o).step, Step::Issue(IssueReason::Initial));
    }

    /// The minimum interval counts from the last attempt too: a mint that was refused or
    /// rolled back recorded no `issuedAt`, and must not be retried at once (a first issue
    /// included); an attempt in the future (a hand-written intent) is no attempt.
    #[test]
    fn a_failed_mint_attempt_starts_the_minimum_interval_too() {
        let p = policy();
        let empty = CredentialStatus::default();
        let mut o = obs("2026-11-10T00:00:03Z", &p, &empty, SecretState::Missing);
        o.last_mint_attempt = Some(t("2026-11-10T00:00:00Z"));
        let plan = decide(&o);
        assert_eq!(plan.step, Step::Wait(IssueReason::Initial));
        assert_eq!(plan.wake_at, Some(t("2026-11-10T00:00:10Z")));
        o.now = t("2026-11-10T00:00:10Z");
        assert_eq!(decide(&o).step, Step::Issue(IssueReason::Initial));
        // an issued token older than the attempt: the attempt counts
        let mut s = healthy();
        s.issued_at = Some(t("2026-11-01T00:00:00Z"));
        let mut o = obs("2026-11-10T00:00:03Z", &p, &s, SecretState::Missing);
        o.last_mint_attempt = Some(t("2026-11-10T00:00:00Z"));
        assert_eq!(decide(&o).step, Step::Wait(IssueReason::SecretRepaired));
        o.last_mint_attempt = Some(t("2027-01-01T00:00:00Z"));
        assert_eq!(decide(&o).step, Step::Issue(IssueReason::SecretRepaired));
    }

    #[test]
    fn a_false_revoked_upstream_verdict_keeps_the_grace() {
        assert!(!IssueReason::RevokedUpstream.revoke_replaced_now());
        assert!(IssueReason::RevokeNow.revoke_replaced_now());
        assert!(IssueReason::Expired.revoke_replaced_now());
    }

    #[test]
    fn ready_only_while_the_secret_holds_the_current_token() {
        let h = healthy();
        let now = t("2026-11-10T00:00:00Z");
        assert_eq!(secret_holds_current(&h, &owned("h1"), now), Ok(()));
        let reason = |s: &CredentialStatus, secret: SecretState, now| {
            secret_holds_current(s, &secret, now).unwrap_err().reason
        };
        assert_eq!(reason(&h, SecretState::Missing, now), "SecretMissing");
        assert_eq!(reason(&h, owned("other"), now), "SecretEdited");
        assert_eq!(
            reason(
                &h,
                SecretState::Owned {
                    token_hash: None,
                    up_to_date: true
                },
                now
            ),
            "SecretEdited"
        );
        assert_eq!(reason(&h, SecretState::Foreign, now), "SecretConflict");
        assert_eq!(
            reason(&h, owned("h1"), t("2026-12-01T00:00:00Z")),
            "Expired"
        );
        assert_eq!(
            reason(&CredentialStatus::default(), SecretState::Missing, now),
            "NotIssued"
        );
    }

    #[test]
    fn previous_tokens_are_bounded_and_keep_their_scope() {
        let p = policy();
        let mut s = CredentialStatus::default();
        let scope = |kb: &str| TokenScope {
            kb_id: Some(kb.into()),
            ..Default::default()
        };
        let start = t("2026-11-10T00:00:00Z");
        let mut evicted = Vec::new();
        for i in 0..(MAX_PREVIOUS_TOKENS + 3) {
            let now = start + Duration::minutes(i as i64);
            let id = format!("tok-{i}");
            evicted.extend(record_issue(
                &mut s,
                &p,
                "uid-1",
                now,
                NewToken {
                    id: &id,
                    token_hash: format!("h{i}"),
                    not_after: now + p.lifetime,
                    scope: scope(&format!("kb-{i}")),
                },
                now + Duration::hours(1),
            ));
        }
        // 7 replaced tokens, 5 may wait: the two oldest are due at once
        assert_eq!(evicted, ["tok-0", "tok-1"]);
        let now = start + Duration::minutes((MAX_PREVIOUS_TOKENS + 2) as i64);
        let waiting = s
            .previous_tokens
            .iter()
            .filter(|p| p.revoke_at > now)
            .count();
        assert_eq!(waiting, MAX_PREVIOUS_TOKENS);
        let first = &s.previous_tokens[0];
        assert_eq!(
            first.scope,
            Some(scope("kb-0")),
            "revoked where it was minted"
        );
        assert!(first.not_after.is_some());
        assert_eq!(
            s.scope,
            Some(scope(&format!("kb-{}", MAX_PREVIOUS_TOKENS + 2)))
        );
        // the evicted ones are in the next plan's revocations
        let o = obs("2026-11-10T00:07:00Z", &p, &s, SecretState::Missing);
        let due: Vec<_> = decide(&o).revoke.into_iter().map(|p| p.id).collect();
        assert_eq!(due, ["tok-0", "tok-1"]);
    }

    #[test]
    fn a_shortened_lifetime_never_makes_renewal_due_at_issue() {
        let p = Policy::new(5, None, "1h", "s".into(), DeletionPolicy::Revoke).unwrap();
        let issued = t("2026-11-10T00:00:00Z");
        // asked for 5 days, granted 1 hour: renew at about 40 minutes, never at issue
        let not_after = issued + Duration::hours(1);
        assert!(lifetime_shortened(&p, issued, not_after));
        let r = renewal_time(&p, "uid-1", issued, not_after);
        assert!(
            r > issued + Duration::minutes(35) && r <= issued + Duration::minutes(40),
            "{r}"
        );
        // the lifetime asked for (to the second) is not "shortened"
        assert!(!lifetime_shortened(&p, issued, issued + p.lifetime));
        let mut s = CredentialStatus::default();
        record_issue(
            &mut s,
            &p,
            "uid-1",
            issued,
            NewToken {
                id: "t",
                token_hash: "h".into(),
                not_after,
                scope: TokenScope::default(),
            },
            issued,
        );
        s.spec_hash = Some("s".into());
        let o = obs("2026-11-10T00:00:01Z", &p, &s, owned("h"));
        assert_eq!(decide(&o).step, Step::Idle);
    }

    #[test]
    fn token_hash_is_short_and_stable() {
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
        assert_eq!(token_hash("abc").len(), 12);
    }
}
