//! The credential lifecycle, written once for every kind: pure functions of the spec (as a
//! [`Policy`]), the status, what the Secret looks like and the clock, that say what to do next
//! and when to look again: [`decide`] for a live resource, [`decide_deletion`] for one being
//! deleted. Every wait, grace end, renewal time and deadline comes out of them; the controller
//! carries the plan out, and nothing here does I/O.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::crd::{
    CredentialStatus, DeletionPolicy, MAX_PREVIOUS_TOKENS, PreviousToken, TokenScope,
};
use crate::windows::Windows;

/// The shortest sleep between two reconciles of one resource (never a hot loop).
const MIN_SLEEP: std::time::Duration = std::time::Duration::from_millis(200);

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
    /// When scheduled renewals may start (empty: any time).
    pub windows: Windows,
    /// `spec.suspend`: no call to Nuclia, no write but status.
    pub suspended: bool,
}

impl Policy {
    /// Builds the policy of a spec. `shaping` holds the spec fields that shape the credential:
    /// a change of any of them (or of the deletion policy to `Orphan`, whose tokens carry
    /// another marker) rotates it. The error says what to fix.
    pub fn for_spec(
        shaping: serde_json::Value,
        lifecycle: &crate::crd::LifecycleSpec,
    ) -> Result<Self, String> {
        let deletion = lifecycle.deletion_policy;
        let hash = spec_hash(shaping, deletion);
        let mut policy = Self::new(
            lifecycle.days,
            lifecycle.renew_before.as_deref(),
            &lifecycle.rotation.revoke_previous_after,
            hash,
            deletion,
        )?;
        let field = "spec.rotation.windows";
        policy.set_windows(Windows::parse(&lifecycle.rotation.windows, field)?, field)?;
        policy.suspended = lifecycle.suspend;
        Ok(policy)
    }

    /// The operator's default windows (`--default-rotation-windows`), for a spec that names
    /// none.
    pub fn or_default_windows(mut self, defaults: &Windows) -> Result<Self, String> {
        if self.windows.is_empty() && !defaults.is_empty() {
            self.set_windows(defaults.clone(), "--default-rotation-windows")?;
        }
        Ok(self)
    }

    /// Windows must hold a renewal: its work and the grace of the token it replaces.
    fn set_windows(&mut self, windows: Windows, field: &str) -> Result<(), String> {
        windows.check_room(self.revoke_previous_after, field)?;
        self.windows = windows;
        Ok(())
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
            windows: Windows::default(),
            suspended: false,
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
    /// The value of `nuclia.dev/reissue-minted` on the Secret the current token was minted
    /// with (a login that may have leaked).
    pub reissue_request: Option<&'a str>,
    /// Replaced tokens whose login carries a `nuclia.dev/reissue-minted` value newer than their
    /// mint: due at once.
    pub leaked_previous: &'a [String],
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
    /// The time of an issue intent status has not resolved: an issue that may have been
    /// interrupted.
    pub pending_intent: Option<DateTime<Utc>>,
    /// How long a mint may still be in flight (on another replica, during a hand-over) after
    /// its intent: an unresolved intent younger than this is waited for, not swept.
    pub intent_grace: Duration,
    /// The longest sleep: a missed event heals itself after at most this long.
    pub requeue_max: Duration,
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
    /// `nuclia.dev/reissue-minted` on the login the token was minted with.
    CredentialReissued,
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
            IssueReason::CredentialReissued => "CredentialReissued",
        }
    }

    /// Whether the token being replaced must go at once rather than after the grace period:
    /// break-glass, or it is dead already. A `RevokedUpstream` verdict keeps the grace: were it
    /// false, pods would lose a working token at once.
    pub fn revoke_replaced_now(self) -> bool {
        matches!(
            self,
            IssueReason::RevokeNow | IssueReason::Expired | IssueReason::CredentialReissued
        )
    }
}

/// The next step for one resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// An issue intent is unresolved and younger than the intent grace: its mint may still be
    /// in flight. Do nothing (write nothing) until the grace ends.
    AwaitIntent,
    /// An issue was interrupted: adopt the token the Secret holds if the issue minted it,
    /// revoke what else it minted, record the intent as resolved; then ask again.
    ResolveIntent,
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
    /// `spec.suspend`: nothing but the status, until the expiry turns Ready False or the spec
    /// changes.
    Suspended,
}

/// How long a token that an issue (or an adoption) replaces stays valid for its consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grace {
    /// Due at once: break-glass (`nuclia.dev/revoke-now`), or it has expired already.
    None,
    /// `rotation.revokePreviousAfter`, counted from when consumers can first see its successor
    /// (the Secret written; a rollout restart asked moves it later, [`restart_asked`]).
    After(Duration),
    /// A scheduled renewal under rotation windows: as `After`, and then only inside a window.
    InWindow(Duration),
}

impl Grace {
    /// When the replaced token is due, its successor delivered at `delivered` by a reconcile
    /// planned at `planned`. A slow mint does not eat into the grace; a token due at once is
    /// due at the plan's time, so that the plan after the step revokes it.
    pub fn end(
        self,
        planned: DateTime<Utc>,
        delivered: DateTime<Utc>,
        windows: &Windows,
    ) -> DateTime<Utc> {
        match self {
            Grace::None => planned,
            Grace::After(d) => delivered + d,
            Grace::InWindow(d) => in_window(windows, delivered + d),
        }
    }

    /// Whether the replaced token may be revoked only inside a window.
    pub fn in_window(self) -> bool {
        matches!(self, Grace::InWindow(_))
    }
}

/// The first instant at or after `t` inside a window (`t` if no window can ever hold it).
fn in_window(windows: &Windows, t: DateTime<Utc>) -> DateTime<Utc> {
    windows.first_start(t, Duration::zero()).unwrap_or(t)
}

/// The whole plan for one reconcile: the step, the replaced tokens to revoke now, the grace of
/// the token the step replaces, the renewal time to record, and when to look again. The
/// controller carries it out as is; after a step that changed the status it asks again, and the
/// second plan's revocations, renewal time and wake-up are the ones that run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub step: Step,
    /// Replaced tokens whose grace period is over (or that were revoked early).
    pub revoke: Vec<PreviousToken>,
    /// The grace of the token this step replaces, if it replaces one.
    pub grace: Grace,
    /// When the current token is renewed, from the policy as it is now (`renewBefore` may have
    /// changed since the issue) and the expiry as last learned (verification may have found an
    /// earlier one): what status records.
    pub renewal_time: Option<DateTime<Utc>>,
    /// When the scheduled renewal will run: the renewal time, or with windows the first moment
    /// from then inside one with room for it (None while suspended, or with no token).
    pub next_renewal: Option<DateTime<Utc>>,
    /// No window has room for the renewal before its safety deadline: it runs outside one.
    pub renewal_forced: bool,
    /// When to look again if nothing else happens. `None` while a step that changes the status
    /// is pending (ask again after it), or when nothing is due: then [`Plan::sleep`] falls back.
    pub wake_at: Option<DateTime<Utc>>,
    /// The sleep without a due time: the whole cap when idle, the minimum issue interval while a
    /// step is pending.
    fallback: Duration,
    /// The longest sleep.
    cap: Duration,
}

impl Plan {
    /// How long to sleep from `from` (when the reconcile ends): until the wake-up, or the
    /// fallback without one; at least 200 ms and at most `requeue_max`, so that a missed event
    /// heals itself and nothing loops hot.
    pub fn sleep(&self, from: DateTime<Utc>) -> std::time::Duration {
        let wait = self.wake_at.map_or(self.fallback, |t| t - from);
        let cap = self.cap.to_std().unwrap_or(std::time::Duration::MAX);
        wait.to_std()
            .unwrap_or(std::time::Duration::ZERO)
            .clamp(MIN_SLEEP, cap.max(MIN_SLEEP))
    }
}

/// Decides the plan. Order matters: an interrupted issue first (what it minted must be known
/// before anything is minted again), then safety (never overwrite a foreign Secret, never leave
/// an expired or missing token), then user requests, then the schedule.
pub fn decide(o: &Observation<'_>) -> Plan {
    let s = o.status;
    let renewal_time = match (s.issued_at, s.not_after) {
        (Some(issued), Some(not_after)) => Some(renewal_time(o.policy, o.uid, issued, not_after)),
        _ => s.renewal_time,
    };
    if o.policy.suspended {
        return suspended(o, renewal_time);
    }
    let windows = &o.policy.windows;
    // A token replaced by a scheduled renewal waits for a window; others go when due.
    let revoke: Vec<PreviousToken> = s
        .previous_tokens
        .iter()
        .filter(|p| {
            (p.revoke_at <= o.now && (!p.in_window || windows.contains(o.now)))
                || o.leaked_previous.contains(&p.id)
        })
        .cloned()
        .collect();
    let (next_renewal, renewal_forced) = match next_renewal(o, renewal_time) {
        Some((t, forced)) => (Some(t), forced),
        None => (None, false),
    };
    let step = match choose_step(o, next_renewal) {
        Step::Issue(reason) if throttled(o) => Step::Wait(reason),
        step => step,
    };
    // A login marked leaked: whatever this issue is for, what it replaces goes at once.
    let leaked = reissue_pending(o.reissue_request, s.reissue_handled.as_deref());
    let grace = match &step {
        Step::Issue(reason) if reason.revoke_replaced_now() || leaked => Grace::None,
        Step::Issue(IssueReason::Renewal) if !windows.is_empty() && !renewal_forced => {
            Grace::InWindow(o.policy.revoke_previous_after)
        }
        _ => Grace::After(o.policy.revoke_previous_after),
    };
    let wake_at = next_wake(o, &step, next_renewal);
    let fallback = match step {
        Step::Idle => o.requeue_max,
        _ => o.min_issue_interval,
    };
    Plan {
        step,
        revoke,
        grace,
        renewal_time,
        next_renewal,
        renewal_forced,
        wake_at,
        fallback,
        cap: o.requeue_max,
    }
}

/// The plan while suspended: nothing to do, nothing revoked; look again when the token
/// expires (Ready turns False then).
fn suspended(o: &Observation<'_>, renewal_time: Option<DateTime<Utc>>) -> Plan {
    Plan {
        step: Step::Suspended,
        revoke: Vec::new(),
        grace: Grace::After(o.policy.revoke_previous_after),
        renewal_time,
        next_renewal: None,
        renewal_forced: false,
        wake_at: o.status.not_after.filter(|t| *t > o.now),
        fallback: o.requeue_max,
        cap: o.requeue_max,
    }
}

/// When the scheduled renewal runs, and whether a window allowed it. Without windows, at the
/// renewal time. With them, at the first moment from the renewal time (or from now, once that
/// has passed) inside a window with room for the renewal and its grace; but no later than the
/// safety deadline, halfway from the renewal time to expiry, when it runs outside any window
/// (`true`).
fn next_renewal(
    o: &Observation<'_>,
    renewal_time: Option<DateTime<Utc>>,
) -> Option<(DateTime<Utc>, bool)> {
    let due = renewal_time?;
    let windows = &o.policy.windows;
    if windows.is_empty() {
        return Some((due, false));
    }
    let deadline = match o.status.not_after {
        Some(not_after) if not_after > due => due + (not_after - due) / 2,
        _ => due,
    };
    let need =
        o.policy.revoke_previous_after + Duration::minutes(crate::windows::RENEWAL_BUDGET_MINUTES);
    match windows.first_start(due.max(o.now), need) {
        Some(t) if t <= deadline => Some((t, false)),
        _ => Some((deadline, true)),
    }
}

/// When the intent grace of an unresolved intent ends. An intent dated in the future (a clock
/// ahead, or written by hand) counts from now.
fn intent_grace_end(at: DateTime<Utc>, now: DateTime<Utc>, grace: Duration) -> DateTime<Utc> {
    at.min(now) + grace
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

fn choose_step(o: &Observation<'_>, next_renewal: Option<DateTime<Utc>>) -> Step {
    let s = o.status;
    if let Some(at) = o.pending_intent {
        return if o.now < intent_grace_end(at, o.now, o.intent_grace) {
            Step::AwaitIntent
        } else {
            Step::ResolveIntent
        };
    }
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
    if reissue_pending(o.reissue_request, s.reissue_handled.as_deref()) {
        return Step::Issue(IssueReason::CredentialReissued);
    }
    if let Some(v) = o.rotate_request
        && s.rotate_handled.as_deref() != Some(v)
    {
        return Step::Issue(IssueReason::RotateRequested);
    }
    if s.spec_hash.as_deref() != Some(o.policy.spec_hash.as_str()) {
        return Step::Issue(IssueReason::SpecChanged);
    }
    if next_renewal.is_none_or(|r| o.now >= r) {
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
/// waits for the minimum interval, the end of that interval; while an interrupted issue may
/// still be minting, the end of the intent grace.
fn next_wake(
    o: &Observation<'_>,
    step: &Step,
    next_renewal: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let s = o.status;
    let windows = &o.policy.windows;
    let verify_at = match step {
        Step::Issue(_) | Step::RefreshSecret | Step::ResolveIntent => return None,
        Step::Suspended => return None,
        Step::AwaitIntent => {
            return o
                .pending_intent
                .map(|at| intent_grace_end(at, o.now, o.intent_grace));
        }
        Step::Wait(_) => return next_mint_allowed(o),
        // Due now: a plan asked after another step (a refresh) must not put it off.
        Step::Verify => return Some(o.now),
        Step::Conflict | Step::Idle => o.last_verified.map(|t| t + o.verify_interval),
    };
    // A replaced token held for a window is due when one opens.
    let revocations = s.previous_tokens.iter().map(|p| match p.in_window {
        true => in_window(windows, p.revoke_at.max(o.now)),
        false => p.revoke_at,
    });
    [next_renewal, s.not_after, verify_at]
        .into_iter()
        .flatten()
        .chain(revocations)
        .filter(|t| *t > o.now)
        .min()
}

/// Who else authenticates with the Secret of a resource being deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readers {
    /// Nobody.
    None,
    /// Some are being deleted too: they revoke first (a chained KB key is revoked with this
    /// token before it is).
    Deleting,
    /// Some live ones. They go first too when the whole namespace is being deleted (the cache
    /// may not show their deletion yet): `None` until that has been asked.
    Live { namespace_terminating: Option<bool> },
}

/// Everything [`decide_deletion`] looks at.
#[derive(Clone, Debug)]
pub struct DeletionObservation {
    pub now: DateTime<Utc>,
    /// When the deletion began (`deletionTimestamp`).
    pub started: DateTime<Utc>,
    /// `--revoke-timeout`: revocations are retried until this long after the deletion began.
    pub revoke_timeout: Duration,
    /// The deletion policy at deletion time.
    pub policy: DeletionPolicy,
    /// Every kind's cache is loaded: only then is it known which resources read the Secret (a
    /// new leader may see a deletion before it has seen them).
    pub caches_loaded: bool,
    pub readers: Readers,
    /// The time of an issue intent status has not resolved (see [`Observation::pending_intent`]).
    pub pending_intent: Option<DateTime<Utc>>,
    pub intent_grace: Duration,
    /// This deletion's attempt (to revoke, or to record the tokens kept) has just failed.
    pub failed: bool,
}

/// Why a deletion waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionWait {
    /// The caches are still loading.
    CachesLoading,
    /// Resources that authenticate with the Secret go first.
    Readers,
    /// A mint may still be in flight: what it minted is listed once its intent is old enough.
    Intent,
}

/// The next step of a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeletionStep {
    /// Do nothing; look again at `until`.
    Wait {
        why: DeletionWait,
        until: DateTime<Utc>,
    },
    /// Ask whether the namespace is being deleted (live readers), then decide again.
    CheckNamespace,
    /// Revoke every recorded token and whatever an interrupted issue minted, release what the
    /// resource created, then let it go.
    Revoke,
    /// `deletionPolicy: Orphan`: revoke nothing, record the tokens kept, then let it go.
    Keep,
    /// The attempt failed: report it and try again after the backoff, no later than `by` (the
    /// deadline; a failed record of kept tokens has none).
    Retry { by: Option<DateTime<Utc>> },
    /// Past `--revoke-timeout` (`RevokeAbandoned`, or `KeepNotRecorded`): let the resource go.
    Abandon,
}

/// The plan of a deletion: the step, and until when revocations are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionPlan {
    pub step: DeletionStep,
    /// `--revoke-timeout` after the deletion began.
    pub deadline: DateTime<Utc>,
}

impl DeletionPlan {
    /// How long to sleep from `now`: until the wait ends, or after a failure the backoff
    /// (`backoff`, the resource's next delay), bounded by the retry's deadline and at least a
    /// second. Other steps look again only when something changes.
    pub fn sleep(&self, now: DateTime<Utc>, backoff: std::time::Duration) -> std::time::Duration {
        let std = |d: Duration| d.to_std().unwrap_or(std::time::Duration::ZERO);
        match &self.step {
            DeletionStep::Wait { until, .. } => std(*until - now),
            DeletionStep::Retry { by } => by
                .map_or(backoff, |by| backoff.min(std(by - now)))
                .max(std::time::Duration::from_secs(1)),
            _ => std::time::Duration::ZERO,
        }
    }
}

/// Decides the plan of a deletion. Past the deadline nothing is waited for: what can be
/// revoked is, what cannot is given up on, and the resource goes. Before it, revocations wait
/// for the caches, for the resources that read the Secret, and for a mint that may be in
/// flight; a failure is retried. `Orphan` waits for nothing: it revokes nothing.
pub fn decide_deletion(o: &DeletionObservation) -> DeletionPlan {
    let deadline = o.started + o.revoke_timeout;
    let out_of_time = o.now >= deadline;
    let keep = o.policy == DeletionPolicy::Orphan;
    let wait = |why, d: Duration| DeletionStep::Wait {
        why,
        until: o.now + d,
    };
    let step = if o.failed {
        match (out_of_time, keep) {
            (true, _) => DeletionStep::Abandon,
            (false, true) => DeletionStep::Retry { by: None },
            (false, false) => DeletionStep::Retry { by: Some(deadline) },
        }
    } else if keep {
        DeletionStep::Keep
    } else if out_of_time {
        DeletionStep::Revoke
    } else if !o.caches_loaded {
        wait(DeletionWait::CachesLoading, Duration::seconds(1))
    } else if matches!(
        o.readers,
        Readers::Deleting
            | Readers::Live {
                namespace_terminating: Some(true)
            }
    ) {
        wait(DeletionWait::Readers, Duration::seconds(2))
    } else if o.readers
        == (Readers::Live {
            namespace_terminating: None,
        })
    {
        DeletionStep::CheckNamespace
    } else if let Some(end) = o
        .pending_intent
        .map(|at| intent_grace_end(at, o.now, o.intent_grace))
        .filter(|end| o.now < *end)
    {
        DeletionStep::Wait {
            why: DeletionWait::Intent,
            until: end,
        }
    } else {
        DeletionStep::Revoke
    };
    DeletionPlan { step, deadline }
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
/// `grace_end` (and then for a window, with `in_window`); beyond [`MAX_PREVIOUS_TOKENS`] the
/// oldest are due at once (their ids are returned, for an Event). Renewal is scheduled from the
/// lifetime Nuclia granted.
pub fn record_issue(
    status: &mut CredentialStatus,
    policy: &Policy,
    uid: &str,
    now: DateTime<Utc>,
    new: NewToken<'_>,
    grace_end: DateTime<Utc>,
    in_window: bool,
) -> Vec<String> {
    if let Some(old) = status.token_id.take() {
        let scope = status.scope.take();
        status.previous_tokens.push(PreviousToken {
            // Also in the old field, which earlier versions read (a rollback still revokes it).
            service_account_id: scope.as_ref().and_then(|s| s.service_account_id.clone()),
            id: old,
            revoke_at: grace_end,
            in_window,
            reissue_handled: status.reissue_handled.take(),
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
            p.in_window = false;
            p.id.clone()
        })
        .collect()
}

/// A login's `nuclia.dev/reissue-minted` marks as one string: the value on its Secret and, for
/// a `NucliaClusterCredential`, the value on that object after [`CLUSTER_MARK`] (either may be
/// absent). Recorded as `reissueHandled` when a token is minted.
pub fn reissue_mark(secret: Option<&str>, cluster: Option<&str>) -> Option<String> {
    match (secret, cluster) {
        (s, None) => s.map(str::to_owned),
        (None, Some(c)) => Some(format!("{}{c}", CLUSTER_MARK.trim_start_matches("; "))),
        (Some(s), Some(c)) => Some(format!("{s}{CLUSTER_MARK}{c}")),
    }
}

/// Where a mark's `NucliaClusterCredential` part starts.
pub const CLUSTER_MARK: &str = "; NucliaClusterCredential=";

fn mark_parts(v: &str) -> (Option<&str>, Option<&str>) {
    let bare = CLUSTER_MARK.trim_start_matches("; ");
    if let Some(c) = v.strip_prefix(bare) {
        return (None, Some(c));
    }
    match v.rsplit_once(CLUSTER_MARK) {
        Some((s, c)) => (Some(s), Some(c)),
        None => (Some(v), None),
    }
}

/// Whether the login's marks (`request`) hold a value the token minted after `handled` has not
/// seen: each part on its own, so that taking one mark away never re-issues.
pub fn reissue_pending(request: Option<&str>, handled: Option<&str>) -> bool {
    let Some(request) = request else {
        return false;
    };
    let (s, c) = mark_parts(request);
    let (hs, hc) = handled.map_or((None, None), mark_parts);
    s.is_some_and(|v| Some(v) != hs) || c.is_some_and(|v| Some(v) != hc)
}

/// Break-glass for a login that may have leaked: every replaced token minted with the same
/// login (Secret, or cluster credential) as `source` is due at once; their ids are returned.
pub fn revoke_minted_with(
    status: &mut CredentialStatus,
    source: &TokenScope,
    now: DateTime<Utc>,
) -> Vec<String> {
    status
        .previous_tokens
        .iter_mut()
        .filter(|p| p.revoke_at > now && p.scope.as_ref().is_some_and(|s| same_login(s, source)))
        .map(|p| {
            p.revoke_at = now;
            p.in_window = false;
            p.id.clone()
        })
        .collect()
}

/// Whether two tokens were minted with the same login.
fn same_login(a: &TokenScope, b: &TokenScope) -> bool {
    match (&a.cluster_credential, &b.cluster_credential) {
        (Some(x), Some(y)) => x == y,
        (None, None) => match (&a.credential, &b.credential) {
            (Some(x), Some(y)) => x.name == y.name,
            _ => false,
        },
        _ => false,
    }
}

/// A rollout restart of the consumers was asked at `at`, after the Secret got the token that
/// replaced `replaced`: its grace counts from then (the new pods need all of it), never
/// shortened. A token due at once stays due.
pub fn restart_asked(
    status: &mut CredentialStatus,
    replaced: Option<&str>,
    grace: Grace,
    at: DateTime<Utc>,
    windows: &Windows,
) {
    let end = match grace {
        Grace::None => return,
        Grace::After(d) => at + d,
        Grace::InWindow(d) => in_window(windows, at + d),
    };
    for p in status.previous_tokens.iter_mut() {
        if Some(p.id.as_str()) == replaced && p.revoke_at < end {
            p.revoke_at = end;
        }
    }
}

/// Whether a token that could not be revoked is gone anyway: it has expired at Nuclia on its
/// own, and may be forgotten. A kind whose tokens never expire there (`expires_upstream` false:
/// NUA keys) keeps it recorded until it is revoked, or given up on with the resource.
pub fn expired_on_its_own(
    not_after: Option<DateTime<Utc>>,
    expires_upstream: bool,
    now: DateTime<Utc>,
) -> bool {
    expires_upstream && not_after.is_some_and(|t| t <= now)
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

    /// A healthy status: issued on Nov 1, expires Dec 1, renews about Nov 21 ([`renewed`]).
    fn healthy() -> CredentialStatus {
        CredentialStatus {
            token_id: Some("tok-1".into()),
            token_hash: Some("h1".into()),
            issued_at: Some(t("2026-11-01T00:00:00Z")),
            not_after: Some(t("2026-12-01T00:00:00Z")),
            renewal_time: Some(renewed()),
            spec_hash: Some("spec-1".into()),
            ..Default::default()
        }
    }

    /// When [`healthy`]'s token renews under [`policy`] (Nov 21, less a jitter).
    fn renewed() -> DateTime<Utc> {
        renewal_time(
            &policy(),
            "uid-1",
            t("2026-11-01T00:00:00Z"),
            t("2026-12-01T00:00:00Z"),
        )
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
            reissue_request: None,
            leaked_previous: &[],
            last_verified: Some(t(now)),
            verify_interval: Duration::minutes(10),
            min_issue_interval: Duration::seconds(10),
            last_mint_attempt: None,
            upstream_dead: false,
            pending_intent: None,
            intent_grace: Duration::seconds(60),
            requeue_max: Duration::hours(1),
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
                obs: with(&|o| {
                    o.now = renewed();
                    o.last_verified = Some(o.now);
                }),
                want: Step::Issue(IssueReason::Renewal),
            },
            Case {
                name: "one second before renewal",
                obs: with(&|o| {
                    o.now = renewed() - Duration::seconds(1);
                    o.last_verified = Some(o.now);
                }),
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
                in_window: false,
                reissue_handled: None,
                service_account_id: None,
                not_after: None,
                scope: None,
            },
            PreviousToken {
                id: "old-2".into(),
                revoke_at: t("2026-11-10T00:30:00Z"),
                in_window: false,
                reissue_handled: None,
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
                false,
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
            false,
        );
        s.spec_hash = Some("s".into());
        let o = obs("2026-11-10T00:00:01Z", &p, &s, owned("h"));
        assert_eq!(decide(&o).step, Step::Idle);
    }

    /// An unresolved intent younger than the intent grace is waited for (its mint may still be
    /// in flight), then resolved, before anything else: a foreign Secret included.
    #[test]
    fn an_interrupted_issue_is_waited_for_then_resolved_first() {
        let p = policy();
        let h = healthy();
        let mut o = obs("2026-11-10T00:00:30Z", &p, &h, owned("h1"));
        o.pending_intent = Some(t("2026-11-10T00:00:00Z"));
        let plan = decide(&o);
        assert_eq!(plan.step, Step::AwaitIntent);
        assert_eq!(plan.wake_at, Some(t("2026-11-10T00:01:00Z")));
        assert_eq!(plan.sleep(o.now), std::time::Duration::from_secs(30));
        // an intent dated in the future counts from now
        o.pending_intent = Some(t("2026-11-10T05:00:00Z"));
        assert_eq!(decide(&o).wake_at, Some(t("2026-11-10T00:01:30Z")));
        // old enough: resolved, then asked again
        o.pending_intent = Some(t("2026-11-09T23:59:30Z"));
        let plan = decide(&o);
        assert_eq!(plan.step, Step::ResolveIntent);
        assert_eq!(plan.wake_at, None);
        o.secret = SecretState::Foreign;
        assert_eq!(decide(&o).step, Step::ResolveIntent);
        o.pending_intent = None;
        assert_eq!(decide(&o).step, Step::Conflict);
    }

    /// The renewal time is the plan's: from the policy as it is now (renewBefore edited) and the
    /// expiry as last learned (a verification found an earlier one), whatever status recorded.
    #[test]
    fn the_plan_recomputes_the_renewal_time() {
        let h = healthy();
        let issued = t("2026-11-01T00:00:00Z");
        // renewBefore raised from 10 to 20 days: renewal is due on Nov 11 (less a jitter)
        let longer = Policy::new(
            30,
            Some("480h"),
            "1h",
            "spec-1".into(),
            DeletionPolicy::Revoke,
        )
        .unwrap();
        let o = obs("2026-11-11T00:00:00Z", &longer, &h, owned("h1"));
        let plan = decide(&o);
        let want = renewal_time(&longer, "uid-1", issued, t("2026-12-01T00:00:00Z"));
        assert_eq!(plan.renewal_time, Some(want));
        assert_eq!(plan.step, Step::Issue(IssueReason::Renewal));
        // a verification learned that the token expires on Nov 6: renewal before then
        let p = policy();
        let mut capped = healthy();
        capped.not_after = Some(t("2026-11-06T00:00:00Z"));
        let mut o = obs("2026-11-02T00:00:00Z", &p, &capped, owned("h1"));
        o.verify_interval = Duration::days(30);
        let plan = decide(&o);
        let want = renewal_time(&p, "uid-1", issued, t("2026-11-06T00:00:00Z"));
        assert!(want < t("2026-11-06T00:00:00Z"), "{want}");
        assert_eq!(plan.renewal_time, Some(want));
        assert_eq!(plan.wake_at, Some(want));
        // without an issue time, what status records stands
        let mut old = healthy();
        old.issued_at = None;
        let o = obs("2026-11-02T00:00:00Z", &p, &old, owned("h1"));
        assert_eq!(decide(&o).renewal_time, old.renewal_time);
    }

    /// The token an issue replaces keeps `revokePreviousAfter` from when its successor reached
    /// the consumers (a rollout restart moves it later), unless it must go at once.
    #[test]
    fn the_grace_of_a_replaced_token_is_the_plans() {
        let p = policy();
        let h = healthy();
        let now = "2026-11-10T00:00:00Z";
        let grace = |f: &dyn Fn(&mut Observation<'_>)| {
            let mut o = obs(now, &p, &h, owned("h1"));
            f(&mut o);
            let plan = decide(&o);
            assert!(matches!(plan.step, Step::Issue(_)), "{:?}", plan.step);
            plan.grace
        };
        let hour = Grace::After(Duration::hours(1));
        assert_eq!(grace(&|o| o.revoke_now_request = Some("x")), Grace::None);
        assert_eq!(grace(&|o| o.now = t("2026-12-01T00:00:00Z")), Grace::None);
        assert_eq!(grace(&|o| o.rotate_request = Some("a")), hour);
        assert_eq!(grace(&|o| o.upstream_dead = true), hour);
        assert_eq!(grace(&|o| o.secret = SecretState::Missing), hour);

        let (planned, delivered) = (t(now), t("2026-11-10T00:00:20Z"));
        assert_eq!(
            Grace::None.end(planned, delivered, &Windows::default()),
            planned
        );
        assert_eq!(
            hour.end(planned, delivered, &Windows::default()),
            t("2026-11-10T01:00:20Z"),
            "a slow mint does not eat into the grace"
        );

        let mut s = healthy();
        let replaced = |revoke_at: &str, id: &str| PreviousToken {
            id: id.into(),
            revoke_at: t(revoke_at),
            in_window: false,
            reissue_handled: None,
            service_account_id: None,
            not_after: None,
            scope: None,
        };
        s.previous_tokens = vec![
            replaced("2026-11-10T01:00:20Z", "old"),
            replaced("2026-11-10T00:10:00Z", "older"),
        ];
        let at = t("2026-11-10T00:30:00Z");
        let mut due_now = s.clone();
        restart_asked(
            &mut due_now,
            Some("old"),
            Grace::None,
            at,
            &Windows::default(),
        );
        assert_eq!(due_now.previous_tokens, s.previous_tokens);
        restart_asked(&mut s, Some("old"), hour, at, &Windows::default());
        assert_eq!(s.previous_tokens[0].revoke_at, t("2026-11-10T01:30:00Z"));
        assert_eq!(s.previous_tokens[1].revoke_at, t("2026-11-10T00:10:00Z"));
        // never shortened
        restart_asked(
            &mut s,
            Some("old"),
            hour,
            t("2026-11-10T00:00:00Z"),
            &Windows::default(),
        );
        assert_eq!(s.previous_tokens[0].revoke_at, t("2026-11-10T01:30:00Z"));
    }

    /// The sleep is the plan's: until the wake-up, at least 200 ms, at most `requeue_max`;
    /// without a due time, the minimum issue interval while a step is pending, the whole cap
    /// when idle.
    #[test]
    fn the_sleep_is_bounded_and_falls_back() {
        let p = policy();
        let h = healthy();
        let secs = std::time::Duration::from_secs;
        let mut o = obs("2026-11-10T00:00:00Z", &p, &h, owned("h1"));
        o.verify_interval = Duration::hours(5);
        let idle = decide(&o);
        assert_eq!(idle.step, Step::Idle);
        // next verification in 5 h, capped at 1 h
        assert_eq!(idle.sleep(o.now), secs(3600));
        assert_eq!(
            idle.sleep(o.now + Duration::hours(4) + Duration::minutes(59)),
            secs(60)
        );
        assert_eq!(
            idle.sleep(o.now + Duration::hours(6)),
            std::time::Duration::from_millis(200)
        );
        let no_due = Plan {
            wake_at: None,
            ..idle
        };
        assert_eq!(no_due.sleep(o.now), secs(3600));
        // a step pending: ask again after the minimum interval
        o.secret = SecretState::Missing;
        let pending = decide(&o);
        assert_eq!(pending.wake_at, None);
        assert_eq!(pending.sleep(o.now), secs(10));
    }

    fn deletion(now: &str) -> DeletionObservation {
        DeletionObservation {
            now: t(now),
            started: t("2026-11-10T00:00:00Z"),
            revoke_timeout: Duration::minutes(10),
            policy: DeletionPolicy::Revoke,
            caches_loaded: true,
            readers: Readers::None,
            pending_intent: None,
            intent_grace: Duration::seconds(60),
            failed: false,
        }
    }

    #[test]
    fn deletion_steps_in_order() {
        let before = "2026-11-10T00:05:00Z";
        let after = "2026-11-10T00:10:00Z";
        let at = |s: &str| t(s);
        let live = |terminating| Readers::Live {
            namespace_terminating: terminating,
        };
        let wait = |why, until: &str| DeletionStep::Wait {
            why,
            until: at(until),
        };
        struct Case<'a> {
            name: &'a str,
            now: &'a str,
            f: &'a dyn Fn(&mut DeletionObservation),
            want: DeletionStep,
        }
        let cases = [
            Case {
                name: "nothing to wait for",
                now: before,
                f: &|_| {},
                want: DeletionStep::Revoke,
            },
            Case {
                name: "caches loading",
                now: before,
                f: &|o| {
                    o.caches_loaded = false;
                    o.readers = Readers::Deleting;
                },
                want: wait(DeletionWait::CachesLoading, "2026-11-10T00:05:01Z"),
            },
            Case {
                name: "readers being deleted go first",
                now: before,
                f: &|o| o.readers = Readers::Deleting,
                want: wait(DeletionWait::Readers, "2026-11-10T00:05:02Z"),
            },
            Case {
                name: "live readers: is the namespace going?",
                now: before,
                f: &|o| o.readers = live(None),
                want: DeletionStep::CheckNamespace,
            },
            Case {
                name: "live readers in a terminating namespace go first",
                now: before,
                f: &|o| o.readers = live(Some(true)),
                want: wait(DeletionWait::Readers, "2026-11-10T00:05:02Z"),
            },
            Case {
                name: "live readers that stay",
                now: before,
                f: &|o| o.readers = live(Some(false)),
                want: DeletionStep::Revoke,
            },
            Case {
                name: "a mint may be in flight",
                now: before,
                f: &|o| o.pending_intent = Some(at("2026-11-10T00:04:30Z")),
                want: wait(DeletionWait::Intent, "2026-11-10T00:05:30Z"),
            },
            Case {
                name: "an intent dated in the future counts from now",
                now: before,
                f: &|o| o.pending_intent = Some(at("2026-11-10T09:00:00Z")),
                want: wait(DeletionWait::Intent, "2026-11-10T00:06:00Z"),
            },
            Case {
                name: "an interrupted issue old enough is swept with the rest",
                now: before,
                f: &|o| o.pending_intent = Some(at("2026-11-10T00:04:00Z")),
                want: DeletionStep::Revoke,
            },
            Case {
                name: "out of time: nothing is waited for",
                now: after,
                f: &|o| {
                    o.caches_loaded = false;
                    o.readers = Readers::Deleting;
                    o.pending_intent = Some(at(after));
                },
                want: DeletionStep::Revoke,
            },
            Case {
                name: "Orphan waits for nothing and revokes nothing",
                now: before,
                f: &|o| {
                    o.policy = DeletionPolicy::Orphan;
                    o.caches_loaded = false;
                    o.readers = Readers::Deleting;
                    o.pending_intent = Some(at(before));
                },
                want: DeletionStep::Keep,
            },
            Case {
                name: "a failed revocation is retried until the deadline",
                now: before,
                f: &|o| o.failed = true,
                want: DeletionStep::Retry {
                    by: Some(at(after)),
                },
            },
            Case {
                name: "a failed revocation past the deadline is given up",
                now: after,
                f: &|o| o.failed = true,
                want: DeletionStep::Abandon,
            },
            Case {
                name: "a failed record of kept tokens is retried",
                now: before,
                f: &|o| {
                    o.policy = DeletionPolicy::Orphan;
                    o.failed = true;
                },
                want: DeletionStep::Retry { by: None },
            },
            Case {
                name: "a failed record of kept tokens past the deadline is given up",
                now: after,
                f: &|o| {
                    o.policy = DeletionPolicy::Orphan;
                    o.failed = true;
                },
                want: DeletionStep::Abandon,
            },
        ];
        for c in cases {
            let mut o = deletion(c.now);
            (c.f)(&mut o);
            let plan = decide_deletion(&o);
            assert_eq!(plan.step, c.want, "{}", c.name);
            assert_eq!(plan.deadline, at(after), "{}", c.name);
        }
    }

    /// A deletion waits as long as its plan says; a failed revocation is retried after the
    /// backoff, never past the deadline and never sooner than a second.
    #[test]
    fn deletion_sleeps() {
        let secs = std::time::Duration::from_secs;
        let mut o = deletion("2026-11-10T00:05:00Z");
        o.readers = Readers::Deleting;
        let plan = decide_deletion(&o);
        assert_eq!(plan.sleep(o.now, secs(999)), secs(2));
        o.readers = Readers::None;
        o.pending_intent = Some(t("2026-11-10T00:04:30Z"));
        assert_eq!(decide_deletion(&o).sleep(o.now, secs(999)), secs(30));

        o.failed = true;
        let retry = decide_deletion(&o);
        assert_eq!(retry.sleep(o.now, secs(30)), secs(30));
        // five minutes left: a longer backoff stops at the deadline
        assert_eq!(retry.sleep(o.now, secs(600)), secs(300));
        // the deadline passed while revoking: one more look, a second later
        assert_eq!(retry.sleep(t("2026-11-10T00:11:00Z"), secs(600)), secs(1));
        assert_eq!(
            retry.sleep(o.now, std::time::Duration::from_millis(10)),
            secs(1)
        );
        // the record of kept tokens has no deadline to stop at
        o.policy = DeletionPolicy::Orphan;
        let keep = decide_deletion(&o);
        assert_eq!(keep.sleep(o.now, secs(600)), secs(600));
    }

    #[test]
    fn only_a_token_that_expires_at_nuclia_is_forgotten_unrevoked() {
        let now = t("2026-11-10T00:00:00Z");
        let cases = [
            ("expired", Some(now), true, true),
            (
                "a second before its expiry",
                Some(now + Duration::seconds(1)),
                true,
                false,
            ),
            ("expiry unknown", None, true, false),
            (
                "a NUA key never expires at Nuclia",
                Some(now - Duration::days(9)),
                false,
                false,
            ),
        ];
        for (name, not_after, upstream, want) in cases {
            assert_eq!(expired_on_its_own(not_after, upstream, now), want, "{name}");
        }
    }

    #[test]
    fn token_hash_is_short_and_stable() {
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
        assert_eq!(token_hash("abc").len(), 12);
    }

    /// Saturdays 02:00-06:00 UTC (2026-11-21 and 11-28 are Saturdays).
    fn saturdays() -> Policy {
        let w = crate::crd::RotationWindow {
            days: vec![crate::crd::Weekday::Sat],
            start: "02:00".into(),
            duration: "4h".into(),
            time_zone: None,
        };
        let mut p = policy();
        p.set_windows(Windows::parse(&[w], "w").unwrap(), "w")
            .unwrap();
        p
    }

    #[test]
    fn a_scheduled_renewal_waits_for_a_window_with_room() {
        let p = saturdays();
        let s = healthy();
        // Due before the window: it waits for it, and says when.
        assert!(renewed() < t("2026-11-21T00:00:00Z"));
        let mut o = obs("2026-11-21T01:00:00Z", &p, &s, owned("h1"));
        o.verify_interval = Duration::days(1);
        let plan = decide(&o);
        assert_eq!(plan.step, Step::Idle);
        assert_eq!(plan.renewal_time, Some(renewed()));
        assert_eq!(plan.next_renewal, Some(t("2026-11-21T02:00:00Z")));
        assert!(!plan.renewal_forced);
        assert_eq!(plan.wake_at, Some(t("2026-11-21T02:00:00Z")));
        // Inside it: renewed, and the replaced token waits for a window too.
        let plan = decide(&obs("2026-11-21T02:30:00Z", &p, &s, owned("h1")));
        assert_eq!(plan.step, Step::Issue(IssueReason::Renewal));
        assert_eq!(plan.grace, Grace::InWindow(Duration::hours(1)));
        // Without windows the same status renews at its renewal time.
        let plain = policy();
        let plan = decide(&obs("2026-11-21T01:00:00Z", &plain, &s, owned("h1")));
        assert_eq!(plan.step, Step::Issue(IssueReason::Renewal));
        assert_eq!(plan.grace, Grace::After(Duration::hours(1)));
        assert_eq!(plan.next_renewal, plan.renewal_time);
    }

    #[test]
    fn a_renewal_no_window_can_hold_runs_at_the_safety_deadline() {
        let p = saturdays();
        let s = healthy();
        let due = renewed();
        let deadline = due + (t("2026-12-01T00:00:00Z") - due) / 2;
        // 05:00 on the Saturday: the window has less than the 1h10m a renewal needs left, and
        // the next one (Nov 28) is after the deadline (Nov 25 or 26).
        let plan = decide(&obs("2026-11-21T05:00:00Z", &p, &s, owned("h1")));
        assert_eq!(plan.step, Step::Idle);
        assert_eq!(plan.next_renewal, Some(deadline));
        assert!(plan.renewal_forced);
        let at_deadline = deadline.to_rfc3339();
        let plan = decide(&obs(&at_deadline, &p, &s, owned("h1")));
        assert_eq!(plan.step, Step::Issue(IssueReason::Renewal));
        assert!(plan.renewal_forced);
        // Forced outside a window, the grace is not held for one either.
        assert_eq!(plan.grace, Grace::After(Duration::hours(1)));
    }

    #[test]
    fn windows_never_hold_a_token_that_must_change() {
        let p = saturdays();
        let outside = "2026-11-10T12:00:00Z";
        let s = healthy();
        let step = |o: Observation<'_>| decide(&o).step;
        assert_eq!(
            step(obs(outside, &p, &s, SecretState::Missing)),
            Step::Issue(IssueReason::SecretRepaired)
        );
        let mut o = obs(outside, &p, &s, owned("h1"));
        o.rotate_request = Some("now");
        assert_eq!(step(o), Step::Issue(IssueReason::RotateRequested));
        let mut o = obs(outside, &p, &s, owned("h1"));
        o.upstream_dead = true;
        assert_eq!(step(o), Step::Issue(IssueReason::RevokedUpstream));
        let mut changed = s.clone();
        changed.spec_hash = Some("spec-0".into());
        assert_eq!(
            step(obs(outside, &p, &changed, owned("h1"))),
            Step::Issue(IssueReason::SpecChanged)
        );
        assert_eq!(
            step(obs("2026-12-01T00:00:00Z", &p, &s, owned("h1"))),
            Step::Issue(IssueReason::Expired)
        );
    }

    #[test]
    fn a_token_a_scheduled_renewal_replaced_is_revoked_inside_a_window() {
        let p = saturdays();
        let w = &p.windows;
        // The grace ends outside the window (05:30 + 1h): it waits for the next opening.
        let delivered = t("2026-11-21T05:30:00Z");
        let planned = delivered;
        assert_eq!(
            Grace::InWindow(Duration::hours(1)).end(planned, delivered, w),
            t("2026-11-28T02:00:00Z")
        );
        assert_eq!(
            Grace::InWindow(Duration::hours(1)).end(planned, t("2026-11-21T02:10:00Z"), w),
            t("2026-11-21T03:10:00Z")
        );
        // A restart asked late moves it to the next window too.
        let mut s = healthy();
        s.previous_tokens = vec![PreviousToken {
            id: "old".into(),
            revoke_at: t("2026-11-21T03:10:00Z"),
            in_window: true,
            reissue_handled: None,
            not_after: None,
            service_account_id: None,
            scope: None,
        }];
        let mut moved = s.clone();
        let grace = Grace::InWindow(Duration::hours(1));
        restart_asked(&mut moved, Some("old"), grace, t("2026-11-21T05:15:00Z"), w);
        assert_eq!(
            moved.previous_tokens[0].revoke_at,
            t("2026-11-28T02:00:00Z")
        );
        // Due inside the window: revoked.
        let plan = decide(&obs("2026-11-21T03:10:00Z", &p, &s, owned("h1")));
        assert_eq!(plan.revoke.len(), 1);
        // Past due but outside (a reconcile that came late): held until the next opening;
        // a token replaced for another reason goes.
        s.previous_tokens[0].revoke_at = t("2026-11-21T05:59:00Z");
        let mut other = s.previous_tokens[0].clone();
        other.id = "other".into();
        other.in_window = false;
        s.previous_tokens.push(other);
        let plan = decide(&obs("2026-11-21T07:00:00Z", &p, &s, owned("h1")));
        let ids: Vec<&str> = plan.revoke.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["other"]);
        assert!(
            plan.wake_at
                .is_some_and(|t2| t2 <= t("2026-11-28T02:00:00Z"))
        );
        // Windows removed from the spec: nothing holds it any more.
        let plan = decide(&obs("2026-11-21T07:00:00Z", &policy(), &s, owned("h1")));
        assert_eq!(plan.revoke.len(), 2);
    }

    #[test]
    fn a_suspended_resource_does_nothing_until_its_token_expires() {
        let mut p = policy();
        p.suspended = true;
        let mut s = healthy();
        s.previous_tokens = vec![PreviousToken {
            id: "old".into(),
            revoke_at: t("2026-11-02T00:00:00Z"),
            in_window: false,
            reissue_handled: None,
            not_after: None,
            service_account_id: None,
            scope: None,
        }];
        // Past the renewal time, a replaced token due, a rotation asked, the Secret gone, an
        // interrupted issue: nothing.
        let mut o = obs("2026-11-25T00:00:00Z", &p, &s, SecretState::Missing);
        o.rotate_request = Some("now");
        o.pending_intent = Some(t("2026-11-24T00:00:00Z"));
        o.last_verified = None;
        let plan = decide(&o);
        assert_eq!(plan.step, Step::Suspended);
        assert!(plan.revoke.is_empty());
        assert_eq!(plan.next_renewal, None);
        // It looks again at expiry, when Ready turns False.
        assert_eq!(plan.wake_at, Some(t("2026-12-01T00:00:00Z")));
        let plan = decide(&obs("2026-12-02T00:00:00Z", &p, &s, owned("h1")));
        assert_eq!(plan.step, Step::Suspended);
        assert_eq!(plan.wake_at, None);
        assert_eq!(
            plan.sleep(t("2026-12-02T00:00:00Z")),
            std::time::Duration::from_secs(3600)
        );
        // Resumed: what fell due runs.
        p.suspended = false;
        let plan = decide(&obs("2026-12-02T00:00:00Z", &p, &s, owned("h1")));
        assert_eq!(plan.step, Step::Issue(IssueReason::Expired));
        assert_eq!(plan.revoke.len(), 1);
    }

    #[test]
    fn windows_too_short_for_the_grace_are_refused() {
        let w = crate::crd::RotationWindow {
            days: vec![],
            start: "02:00".into(),
            duration: "1h".into(),
            time_zone: None,
        };
        let spec = crate::crd::LifecycleSpec {
            rotation: crate::crd::Rotation {
                revoke_previous_after: "1h".into(),
                windows: vec![w],
            },
            ..Default::default()
        };
        let e = Policy::for_spec(serde_json::json!([]), &spec).unwrap_err();
        assert!(e.starts_with("spec.rotation.windows[0].duration"), "{e}");
        // The operator's default windows are checked against each resource's grace too.
        let defaults = Windows::parse(&spec.rotation.windows, "d").unwrap();
        let e = policy().or_default_windows(&defaults).unwrap_err();
        assert!(e.starts_with("--default-rotation-windows[0]"), "{e}");
    }

    #[test]
    fn each_mark_of_a_cluster_credential_counts_on_its_own() {
        let both = reissue_mark(Some("s1"), Some("c1"));
        assert_eq!(both.as_deref(), Some("s1; NucliaClusterCredential=c1"));
        let only_cc = reissue_mark(None, Some("c1"));
        assert_eq!(only_cc.as_deref(), Some("NucliaClusterCredential=c1"));
        assert_eq!(reissue_mark(Some("s1"), None).as_deref(), Some("s1"));
        assert_eq!(reissue_mark(None, None), None);
        let pending = |r: Option<&str>, h: Option<&str>| reissue_pending(r, h);
        // a new value on either side
        assert!(pending(
            Some("s1; NucliaClusterCredential=c2"),
            both.as_deref()
        ));
        assert!(pending(
            Some("s2; NucliaClusterCredential=c1"),
            both.as_deref()
        ));
        assert!(pending(only_cc.as_deref(), None));
        assert!(pending(Some("s1"), None));
        // the same marks, or one taken away: nothing to do
        assert!(!pending(both.as_deref(), both.as_deref()));
        assert!(!pending(Some("s1"), both.as_deref()));
        assert!(!pending(only_cc.as_deref(), both.as_deref()));
        assert!(!pending(None, both.as_deref()));
        // a mark added beside one already handled
        assert!(pending(both.as_deref(), Some("s1")));
        assert!(pending(both.as_deref(), only_cc.as_deref()));
    }

    #[test]
    fn a_login_marked_leaked_reissues_at_once_and_revokes_what_it_minted() {
        let login = |name: &str| TokenScope {
            credential: Some(crate::crd::SecretKeyRef {
                name: name.into(),
                key: "token".into(),
            }),
            ..Default::default()
        };
        let p = saturdays();
        let mut s = healthy();
        s.scope = Some(login("login"));
        let outside = "2026-11-10T12:00:00Z";
        let mut o = obs(outside, &p, &s, owned("h1"));
        o.reissue_request = Some("leak-1");
        let plan = decide(&o);
        // Not held by the windows; the replaced token goes at once.
        assert_eq!(plan.step, Step::Issue(IssueReason::CredentialReissued));
        assert_eq!(plan.grace, Grace::None);
        // Handled: nothing more.
        s.reissue_handled = Some("leak-1".into());
        let mut o = obs(outside, &p, &s, owned("h1"));
        o.reissue_request = Some("leak-1");
        assert_eq!(decide(&o).step, Step::Idle);
        // Suspended: it waits too.
        let mut held = policy();
        held.suspended = true;
        s.reissue_handled = None;
        let mut o = obs(outside, &held, &s, owned("h1"));
        o.reissue_request = Some("leak-1");
        assert_eq!(decide(&o).step, Step::Suspended);
        // Every replaced token minted with that login is due at once; others keep their grace.
        let replaced = |id: &str, scope: TokenScope| PreviousToken {
            id: id.into(),
            revoke_at: t("2026-11-10T13:00:00Z"),
            in_window: true,
            reissue_handled: None,
            not_after: None,
            service_account_id: None,
            scope: Some(scope),
        };
        s.previous_tokens = vec![replaced("a", login("login")), replaced("b", login("other"))];
        let now = t(outside);
        assert_eq!(revoke_minted_with(&mut s, &login("login"), now), ["a"]);
        assert_eq!(s.previous_tokens[0].revoke_at, now);
        assert!(!s.previous_tokens[0].in_window);
        assert_eq!(s.previous_tokens[1].revoke_at, t("2026-11-10T13:00:00Z"));
    }
}
