//! The custom resources (`NucliaPersonalToken`, `NucliaKbApiKey`, `NucliaNuaKey`; the
//! cluster-scoped `NucliaClusterCredential` is in [`crate::cluster_credential`]), the status they
//! share, and every name (group, finalizer, annotations, labels, field manager) defined once.
//!
//! Everything the apiserver can check is in the schema (bounds, enums, patterns, defaults), because
//! the v1.20 apiservers this must run on drop CEL rules. Doc comments become `kubectl explain`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "nuclia.dev";
pub const VERSION: &str = "v1alpha1";
/// Finalizer that guarantees revocation before a resource disappears.
pub const FINALIZER: &str = "nuclia.dev/revoke";
/// Field manager for every server-side apply and status patch the operator makes.
pub const FIELD_MANAGER: &str = "nuclia-token-operator";
/// Set to any new value to rotate now.
pub const ANNOTATION_ROTATE: &str = "nuclia.dev/rotate";
/// Set to any new value to rotate now and revoke the old token at once (break-glass).
pub const ANNOTATION_REVOKE_NOW: &str = "nuclia.dev/revoke-now";
/// On a Secret that holds a login: every resource whose current token was minted with it
/// re-issues with the Secret's current value and revokes at once every token it minted with it
/// (a login that may have leaked). Value-triggered, like `nuclia.dev/rotate`. The operator
/// copies the value onto the managed Secrets of the resources that re-issued, so the credentials
/// minted with those re-issue too, down a chain.
pub const ANNOTATION_REISSUE: &str = "nuclia.dev/reissue-minted";
/// Written with the finalizer before every mint (see [`IssueIntent`]): the leak guard's record
/// that a token may exist upstream before the status can say so.
pub const ANNOTATION_ISSUE_INTENT: &str = "nuclia.dev/issue-intent";
/// Finalizer on every Secret the operator writes: the token in it stays readable until the
/// resource that owns it has revoked what it must (a namespace deletion removes Secrets and
/// resources together; resources authenticated by this Secret need it to revoke their keys).
pub const SECRET_FINALIZER: &str = "nuclia.dev/token-in-use";
/// Secret annotations that tell a reader which token the Secret holds (never the value).
pub const ANNOTATION_TOKEN_ID: &str = "nuclia.dev/token-id";
pub const ANNOTATION_NOT_AFTER: &str = "nuclia.dev/not-after";
/// Label on every Secret the operator writes, and the kind and name of its owner.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_OWNER_KIND: &str = "nuclia.dev/owner-kind";
pub const LABEL_OWNER_NAME: &str = "nuclia.dev/owner-name";
pub const MANAGED_BY: &str = "nuclia-token-operator";

/// Replaced tokens kept waiting for their grace period; beyond this the oldest is revoked early.
pub const MAX_PREVIOUS_TOKENS: usize = 5;
/// The longest lifetime Nuclia accepts for a token or key, in days.
pub const MAX_DAYS: u32 = 1095;
pub const DEFAULT_DAYS: u32 = 90;
pub const DEFAULT_REVOKE_PREVIOUS_AFTER: &str = "1h";

const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// A Secret type: `Opaque`, or a `domain/name` such as `nuclia.dev/token`.
const SECRET_TYPE: &str =
    r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?(/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$";
/// A KB URL as Nuclia prints it: scheme, host (and port), `/api/v1/kb/{kbid}`; no user info,
/// query or fragment, so a credential can never be smuggled into it.
pub const KB_URL_PATTERN: &str = r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?/api/v1/kb/[A-Za-z0-9-]{1,64}/?$";
/// Printable text: no control characters (they would end up in Nuclia's dashboard).
const PRINTABLE: &str = r"^[^\x00-\x1f\x7f]+$";

fn default_days() -> u32 {
    DEFAULT_DAYS
}
fn default_token_key() -> String {
    "token".into()
}
fn default_revoke_previous_after() -> String {
    DEFAULT_REVOKE_PREVIOUS_AFTER.into()
}

/// A key of a Secret in the resource's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key in the Secret's data that holds the credential.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub key: String,
}

/// The Secret the operator writes and owns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Name of the Secret; defaults to the resource's name. A Secret of that name that this
    /// resource does not own is never overwritten (condition reason `SecretConflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: Option<String>,
    /// Extra labels for the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Type of the Secret (default `Opaque`), e.g. a type of your own such as
    /// `nuclia.dev/token`. A Secret's type cannot change in place: changing it replaces the
    /// Secret (same token). Built-in types whose keys the operator does not write
    /// (`kubernetes.io/tls`, `kubernetes.io/dockerconfigjson`, ...) are refused.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_TYPE))]
    pub secret_type: Option<String>,
    /// Ready-made layouts of the credential written into the same Secret, next to the plain
    /// keys: `Env` (`NUCLIA_*` keys for `envFrom`: a personal token's `NUCLIA_TOKEN`; a KB
    /// key's `NUCLIA_KB_URL`, `NUCLIA_KB_ID`, `NUCLIA_ZONE`, `NUCLIA_KB_API_KEY`) and
    /// `NucliaConfig` (the `nuclia` SDK/CLI configuration file, so a pod that mounts the Secret
    /// at `~/.nuclia` needs no login). They follow every new token; changing this list rewrites
    /// the Secret without a new token, and a format removed takes its keys with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub additional_formats: Vec<SecretFormat>,
}

/// One additional layout of the credential in its Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretFormat {
    /// `Env` (`NUCLIA_*` keys) or `NucliaConfig` (the SDK's configuration file, with this
    /// credential as its default).
    #[serde(rename = "type")]
    pub format: SecretFormatType,
    /// `NucliaConfig` only: the data key of the configuration file (default `config`, so the
    /// Secret mounted as the directory `~/.nuclia` gives the SDK its `~/.nuclia/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub key: Option<String>,
}

/// The layouts a credential's Secret can carry besides its plain keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SecretFormatType {
    /// `NUCLIA_*` keys, for `envFrom` (names in the operator's docs).
    Env,
    /// The `nuclia` SDK/CLI configuration file (JSON), with this credential as the default.
    NucliaConfig,
}

/// A workload restarted (as `kubectl rollout restart` does) after the Secret's token changes,
/// so consumers that read the token once at start pick up the new one before the old one is
/// revoked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// Name of the workload, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// A kind of workload that can be restarted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// Room left under the apiserver's 256 KiB limit on a Secret's annotations for the ones the
/// operator adds (token id, expiry).
const MAX_USER_ANNOTATION_BYTES: usize = 256 * 1024 - 1024;

impl SecretTemplate {
    /// Checks labels and annotations as the apiserver will check the Secret, so that a spec
    /// whose Secret can never be written is refused before any token is minted for it (the
    /// v1.20 schema cannot express these rules on map keys).
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in &self.labels {
            qualified_name(k)
                .map_err(|e| format!("spec.secret.labels: key {:?} {e}; fix it", short(k)))?;
            if !(v.is_empty() || (v.len() <= 63 && name_part(v))) {
                return Err(format!(
                    "spec.secret.labels: the value of {:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; fix it",
                    short(k)
                ));
            }
        }
        let mut size = 0;
        for (k, v) in &self.annotations {
            qualified_name(k)
                .map_err(|e| format!("spec.secret.annotations: key {:?} {e}; fix it", short(k)))?;
            size += k.len() + v.len();
        }
        if size > MAX_USER_ANNOTATION_BYTES {
            return Err(format!(
                "spec.secret.annotations take {size} bytes; a Secret's annotations must stay under 256 KiB; shorten them"
            ));
        }
        Ok(())
    }
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters.
fn qualified_name(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err("has a prefix that is not a DNS subdomain");
        }
    }
    if name.is_empty() || name.len() > 63 || !name_part(name) {
        return Err(
            "must be at most 63 letters, digits, '-', '_' or '.' (after an optional DNS prefix and '/'), starting and ending with a letter or digit",
        );
    }
    Ok(())
}

fn name_part(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A key for an error message: user input, possibly huge.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The managed Secret as a kind's spec describes it: its template, and the data key of the
/// token (a personal token's is always `token`; the other kinds name theirs in `keys`).
pub trait ManagedSecret: Sync {
    fn template(&self) -> &SecretTemplate;
    fn token_key(&self) -> &str;
}

impl ManagedSecret for SecretTemplate {
    fn template(&self) -> &SecretTemplate {
        self
    }
    fn token_key(&self) -> &str {
        "token"
    }
}

/// How a rotation hands over from the old token to the new one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// How long the previous token stays valid after its successor is in the Secret, so pods
    /// that read the old value keep working (a duration such as 90s, 15m, 1h).
    #[serde(default = "default_revoke_previous_after")]
    #[schemars(regex(pattern = crate::duration::PATTERN))]
    pub revoke_previous_after: String,
    /// Weekly windows for scheduled renewals: a renewal that falls due waits for the next
    /// window, and the restarts it causes and the revocation of the replaced credential happen
    /// inside one too. A credential that must change (a spec change, a deleted or edited
    /// Secret, a credential revoked at Nuclia, expiry, `nuclia.dev/rotate`) is never held.
    /// If no window opens before half of the time from the renewal time to expiry has passed,
    /// it renews anyway (Warning Event `RenewalOutsideWindow`). Empty: the operator's
    /// `--default-rotation-windows` (none by default: any time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub windows: Vec<RotationWindow>,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            revoke_previous_after: default_revoke_previous_after(),
            windows: Vec::new(),
        }
    }
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A weekly rotation window: it opens at `start` (local time in `timeZone`) on each of `days`
/// and stays open for `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationWindow {
    /// Days of the week the window opens on; empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Local time the window opens, HH:MM on a 24-hour clock, such as 02:00. A time skipped by
    /// a daylight-saving change opens the window at the same offset after it.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// How long the window stays open, a duration such as 4h (at most 168h). It must hold a
    /// renewal and its grace: at least `rotation.revokePreviousAfter` plus 10m.
    #[schemars(regex(pattern = crate::duration::PATTERN))]
    pub duration: String,
    /// IANA time zone of `start`, such as Europe/Madrid (the operator carries its own copy of
    /// the time-zone database); default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
}

/// What happens at Nuclia when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Revoke every token the resource minted (the default).
    #[default]
    Revoke,
    /// Leave the tokens at Nuclia; they expire on their own.
    Orphan,
}

/// The lifecycle fields every kind shares, flattened into its spec (the wire format is that of
/// the fields side by side): how long each credential lives, when it is renewed, how the
/// rotation hands over, which workloads restart, and what deletion does at Nuclia.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleSpec {
    /// Lifetime of each credential, in days (1 to 1095). A NUA key carries no expiry at
    /// Nuclia: for it this is the rotation period, after which the operator replaces it.
    #[serde(default = "default_days")]
    #[schemars(range(min = 1, max = 1095))]
    pub days: u32,
    /// How long before expiry (a NUA key: before the end of the period) to rotate, a duration
    /// such as 240h; default one third of the lifetime. Must be shorter than the lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::duration::PATTERN))]
    pub renew_before: Option<String>,
    /// Rotation hand-over settings.
    #[serde(default)]
    pub rotation: Rotation,
    /// Workloads in this namespace to restart after the Secret's credential changes (rotation,
    /// repair, re-issue); the previous credential's grace period starts once the restart is
    /// asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
    /// `Revoke` (default) revokes the credentials (a NUA key: deletes its NUA clients) when
    /// this resource is deleted; `Orphan` leaves them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// While true the operator makes no call to Nuclia for this resource and writes nothing
    /// but its status: no credential is minted, renewed, verified or revoked (condition
    /// `Suspended`; `Ready` turns False if the credential expires meanwhile). Deleting the
    /// resource still revokes. Set it back to false to pick up what fell due.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

impl Default for LifecycleSpec {
    fn default() -> Self {
        Self {
            days: default_days(),
            renew_before: None,
            rotation: Rotation::default(),
            rollout_restart_targets: Vec::new(),
            deletion_policy: DeletionPolicy::default(),
            suspend: false,
        }
    }
}

/// Credentials for minting personal access tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonalTokenAuth {
    /// The Secret key holding a Nuclia user token or personal access token (sent as
    /// `Authorization: Bearer`).
    pub secret_ref: SecretKeyRef,
    /// After the first issue, mint each successor with the current managed token instead of
    /// `secretRef`, so a short-lived user token bootstraps a token that renews itself forever.
    #[serde(default)]
    pub self_renew: bool,
}

/// A Nuclia personal access token, minted with `description` and a lifetime of `days`, kept in a
/// Secret, rotated before it expires and revoked when this resource is deleted.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nuclia.dev",
    version = "v1alpha1",
    kind = "NucliaPersonalToken",
    doc = "A Nuclia personal access token kept in a Secret, rotated before expiry, revoked on delete.",
    namespaced,
    status = "PersonalTokenStatus",
    shortname = "npt",
    category = "nuclia"
)]
#[serde(rename_all = "camelCase")]
pub struct NucliaPersonalTokenSpec {
    /// Description of the token at Nuclia. The operator appends an ownership marker to it.
    #[schemars(length(min = 1, max = 200), regex(pattern = PRINTABLE))]
    pub description: String,
    /// The credential used to mint tokens.
    pub auth: PersonalTokenAuth,
    /// The Secret that receives the token (data key `token`).
    #[serde(default)]
    pub secret: SecretTemplate,
    /// The lifecycle fields every kind shares (`days`, `renewBefore`, `rotation`,
    /// `rolloutRestartTargets`, `deletionPolicy`).
    #[serde(flatten)]
    pub lifecycle: LifecycleSpec,
}

/// Role of a Knowledge Box service account, least privilege first.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum KbRole {
    /// Read access (the default).
    #[default]
    SMEMBER,
    /// Read and write access.
    SCONTRIBUTOR,
    /// Full control of the Knowledge Box.
    SOWNER,
}

impl KbRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KbRole::SMEMBER => "SMEMBER",
            KbRole::SCONTRIBUTOR => "SCONTRIBUTOR",
            KbRole::SOWNER => "SOWNER",
        }
    }
}

/// How the account credential is sent to Nuclia.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CredentialType {
    /// A personal access token or user token, sent as `Authorization: Bearer`.
    #[default]
    Bearer,
    /// A NUA key with Knowledge Box management rights, sent as `X-NUCLIA-NUAKEY`.
    NuaKey,
}

/// Credentials for managing the Knowledge Box's service accounts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KbAuth {
    /// The Secret key holding the account credential, e.g. the Secret of a
    /// `NucliaPersonalToken`, so the account credential itself rotates. Exactly one of
    /// `secretRef` and `clusterCredentialRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// `Bearer` (a personal access token, the default) or `NuaKey`. With
    /// `clusterCredentialRef` the cluster credential's own type is used instead.
    #[serde(default, rename = "type")]
    pub credential_type: CredentialType,
    /// A `NucliaClusterCredential` to mint with instead of a Secret of this namespace: its
    /// policy must allow this namespace and `spec.role` (else Ready=False, reason
    /// `CredentialNotAllowed`, nothing minted). Exactly one of `secretRef` and this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_credential_ref: Option<ClusterCredentialRef>,
}

impl KbAuth {
    /// Exactly one credential source.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.secret_ref, &self.cluster_credential_ref) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            (Some(_), Some(_)) => Err(
                "spec.auth names both secretRef and clusterCredentialRef; keep exactly one".into(),
            ),
            (None, None) => Err(
                "spec.auth names no credential; set secretRef (a Secret of this namespace) or clusterCredentialRef (a NucliaClusterCredential)".into(),
            ),
        }
    }
}

/// A reference from a namespaced resource to a `NucliaClusterCredential`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialRef {
    /// Name of the `NucliaClusterCredential` (cluster-scoped).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Which service account holds the keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// Adopt this existing service account instead of creating one. An adopted service account
    /// is never deleted by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub id: Option<String>,
}

/// Names of the data keys in a Knowledge Box key's Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KbSecretKeys {
    /// Data key for the API key.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub token: String,
    /// Data key for the Knowledge Box URL.
    #[serde(default = "default_kb_url_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub kb_url: String,
    /// Data key for the Knowledge Box id.
    #[serde(default = "default_kb_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub kb_id: String,
    /// Data key for the zone.
    #[serde(default = "default_zone_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub zone: String,
}

fn default_kb_url_key() -> String {
    "kbUrl".into()
}
fn default_kb_id_key() -> String {
    "kbId".into()
}
fn default_zone_key() -> String {
    "zone".into()
}

impl Default for KbSecretKeys {
    fn default() -> Self {
        Self {
            token: default_token_key(),
            kb_url: default_kb_url_key(),
            kb_id: default_kb_id_key(),
            zone: default_zone_key(),
        }
    }
}

/// The Secret a Knowledge Box key is written to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KbSecretTemplate {
    /// Name, labels and annotations of the Secret.
    #[serde(flatten)]
    pub template: SecretTemplate,
    /// Names of the data keys (default `token`, `kbUrl`, `kbId`, `zone`).
    #[serde(default)]
    pub keys: KbSecretKeys,
}

impl ManagedSecret for KbSecretTemplate {
    fn template(&self) -> &SecretTemplate {
        &self.template
    }
    fn token_key(&self) -> &str {
        &self.keys.token
    }
}

/// A Nuclia Knowledge Box API key (a service-account key) with a lifetime of `days`, kept in a
/// Secret together with the KB URL, rotated before it expires and revoked on delete.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nuclia.dev",
    version = "v1alpha1",
    kind = "NucliaKbApiKey",
    doc = "A Nuclia Knowledge Box API key kept in a Secret, rotated before expiry, revoked on delete.",
    namespaced,
    status = "KbApiKeyStatus",
    shortname = "nkak",
    category = "nuclia",
    printcolumn = r#"{"name":"Role","type":"string","priority":1,"jsonPath":".spec.role"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NucliaKbApiKeySpec {
    /// The Knowledge Box URL, e.g. `https://europe-1.dp.progress.cloud/api/v1/kb/<kbid>`; the
    /// zone and the KB id come from it. Only hosts the operator is configured for are used.
    #[schemars(length(max = 512), regex(pattern = KB_URL_PATTERN))]
    pub kb_url: String,
    /// The account (slug or id) that holds the Knowledge Box; discovered when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9_-]+$"))]
    pub account: Option<String>,
    /// Role of the service account: `SMEMBER` (read, the default), `SCONTRIBUTOR` or `SOWNER`.
    #[serde(default)]
    pub role: KbRole,
    /// The account credential used to manage service accounts and keys.
    pub auth: KbAuth,
    /// The service account that holds the keys; by default one is created per resource.
    #[serde(default)]
    pub service_account: ServiceAccountRef,
    /// The Secret that receives the key, the KB URL, KB id and zone.
    #[serde(default)]
    pub secret: KbSecretTemplate,
    /// The lifecycle fields every kind shares (`days`, `renewBefore`, `rotation`,
    /// `rolloutRestartTargets`, `deletionPolicy`).
    #[serde(flatten)]
    pub lifecycle: LifecycleSpec,
}

/// Credentials for managing NUA clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NuaKeyAuth {
    /// The Secret key holding a personal access token or user token of a member of the
    /// account (sent as `Authorization: Bearer`), e.g. the Secret of a `NucliaPersonalToken`.
    pub secret_ref: SecretKeyRef,
}

/// Names of the data keys in a NUA key's Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NuaSecretKeys {
    /// Data key for the NUA key.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub token: String,
    /// Data key for the zone.
    #[serde(default = "default_zone_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub zone: String,
    /// Data key for the account id.
    #[serde(default = "default_account_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub account: String,
    /// Data key for the NUA client id.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub client_id: String,
}

fn default_account_key() -> String {
    "account".into()
}
fn default_client_id_key() -> String {
    "clientId".into()
}

impl Default for NuaSecretKeys {
    fn default() -> Self {
        Self {
            token: default_token_key(),
            zone: default_zone_key(),
            account: default_account_key(),
            client_id: default_client_id_key(),
        }
    }
}

/// The Secret a NUA key is written to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NuaSecretTemplate {
    /// Name, labels and annotations of the Secret.
    #[serde(flatten)]
    pub template: SecretTemplate,
    /// Names of the data keys (default `token`, `zone`, `account`, `clientId`).
    #[serde(default)]
    pub keys: NuaSecretKeys,
}

impl ManagedSecret for NuaSecretTemplate {
    fn template(&self) -> &SecretTemplate {
        &self.template
    }
    fn token_key(&self) -> &str {
        &self.keys.token
    }
}

/// A Nuclia NUA key (the key of a NUA client of an account, for the processing and predict
/// APIs and, with `allowKbManagement`, to manage Knowledge Boxes), kept in a Secret, rotated
/// every `days` (by a new NUA client; the old one is deleted after the grace period) and
/// deleted on delete.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nuclia.dev",
    version = "v1alpha1",
    kind = "NucliaNuaKey",
    doc = "A Nuclia NUA key kept in a Secret, rotated every `days`, deleted on delete.",
    namespaced,
    status = "NuaKeyStatus",
    shortname = "nnk",
    category = "nuclia",
    printcolumn = r#"{"name":"Zone","type":"string","priority":1,"jsonPath":".spec.zone"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NucliaNuaKeySpec {
    /// The zone (region) of the NUA client, e.g. `europe-1`. Only zones the operator is
    /// configured for (the regional template or a zone origin) are used.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub zone: String,
    /// The account (slug or id) the NUA client belongs to; discovered when absent and the
    /// credential sees exactly one account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9_-]+$"))]
    pub account: Option<String>,
    /// Title of the NUA client at Nuclia.
    #[schemars(length(min = 1, max = 200), regex(pattern = PRINTABLE))]
    pub title: String,
    /// Description of the NUA client; the operator appends an ownership marker to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200), regex(pattern = r"^[^\x00-\x1f\x7f]*$"))]
    pub description: Option<String>,
    /// Contact (an e-mail address) recorded with the NUA client.
    #[schemars(length(min = 1, max = 200), regex(pattern = PRINTABLE))]
    pub contact: String,
    /// Whether the key may manage Knowledge Boxes (e.g. to authenticate a `NucliaKbApiKey`
    /// with `auth.type: NuaKey`). Default false.
    #[serde(default)]
    pub allow_kb_management: bool,
    /// Limit of tokens the NUA client may consume (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_limit: Option<u64>,
    /// The account credential used to create and delete NUA clients.
    pub auth: NuaKeyAuth,
    /// The Secret that receives the key, the zone, the account id and the client id.
    #[serde(default)]
    pub secret: NuaSecretTemplate,
    /// The lifecycle fields every kind shares (`days`, `renewBefore`, `rotation`,
    /// `rolloutRestartTargets`, `deletionPolicy`).
    #[serde(flatten)]
    pub lifecycle: LifecycleSpec,
}

/// A token that was replaced and is waiting for the end of its grace period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviousToken {
    /// Id of the token at Nuclia.
    pub id: String,
    /// When it is revoked.
    pub revoke_at: DateTime<Utc>,
    /// Replaced by a scheduled renewal under rotation windows: revoked only inside one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_window: bool,
    /// `nuclia.dev/reissue-minted` on the Secret it was minted with, when it was minted: a new
    /// value there revokes it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissue_handled: Option<String>,
    /// When it expires on its own (after that, nothing is left to revoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    /// Service account that holds it (Knowledge Box keys recorded before `scope` existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_id: Option<String>,
    /// Where it was minted; it is revoked there, whatever the spec says now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<TokenScope>,
}

/// Where a token was minted: the credential it was minted with and, for Knowledge Box keys, the
/// KB and service account that hold it. Revocation always goes to this scope.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenScope {
    /// The credentials Secret key (`spec.auth.secretRef`) it was minted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretKeyRef>,
    /// The `NucliaClusterCredential` it was minted with (then `credential` is empty); it is
    /// revoked with it, whatever its policy says by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_credential: Option<String>,
    /// Zone of the Knowledge Box (Knowledge Box keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Account id that holds the Knowledge Box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Knowledge Box id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb_id: Option<String>,
    /// Service account that holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_id: Option<String>,
    /// Whether the operator created that service account (and deletes it once it holds no
    /// recorded key).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_account_owned: bool,
}

/// Where a Knowledge Box key lives at Nuclia (Knowledge Box keys only).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KbLocationStatus {
    /// Account id (a UUID) that holds the Knowledge Box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Zone of the Knowledge Box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Knowledge Box id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb_id: Option<String>,
    /// Service account holding the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_id: Option<String>,
    /// Whether the operator created that service account (and so deletes it).
    #[serde(default)]
    pub service_account_owned: bool,
    /// Role of that service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<KbRole>,
    /// Whether that service account was created for `deletionPolicy: Orphan` (its title carries
    /// the marker the orphan sweep leaves alone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_account_kept: bool,
    /// Service accounts created by earlier versions of the operator (before a role change) that
    /// are deleted once their keys are revoked. New ones are tracked in `previousTokens[].scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_service_accounts: Vec<String>,
}

/// The last rollout restart the operator asked for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartStatus {
    /// The token the restart was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// When the restart was asked (the previous token's grace period starts then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
    /// Targets that could not be restarted, and why (not retried before the next token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

// A kind's status: what every kind records (`CredentialStatus`, which it derefs to) and what
// only that kind records (`X`, flattened beside it: the wire format is one object). The doc
// comment is what `kubectl explain` shows.
/// Observed state. Never holds a token value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct KindStatus<X> {
    #[serde(flatten)]
    pub common: CredentialStatus,
    #[serde(flatten)]
    pub own: X,
}

impl<X> std::ops::Deref for KindStatus<X> {
    type Target = CredentialStatus;
    fn deref(&self) -> &CredentialStatus {
        &self.common
    }
}

impl<X> std::ops::DerefMut for KindStatus<X> {
    fn deref_mut(&mut self) -> &mut CredentialStatus {
        &mut self.common
    }
}

impl<X: Default> From<CredentialStatus> for KindStatus<X> {
    fn from(common: CredentialStatus) -> Self {
        Self {
            common,
            own: X::default(),
        }
    }
}

/// Nothing beyond what every kind records (personal tokens, NUA keys).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NoOwnStatus {}

/// What only a Knowledge Box key records.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KbKeyStatus {
    /// Where the key lives: the Knowledge Box, its account and zone, and its service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb: Option<KbLocationStatus>,
}

/// Status of a `NucliaPersonalToken`.
pub type PersonalTokenStatus = KindStatus<NoOwnStatus>;
/// Status of a `NucliaKbApiKey`.
pub type KbApiKeyStatus = KindStatus<KbKeyStatus>;
/// Status of a `NucliaNuaKey`.
pub type NuaKeyStatus = KindStatus<NoOwnStatus>;

/// Observed state, shared by every kind (each kind's status holds it, flattened). Never holds
/// a token value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the Secret holds the current, valid, unexpired token), `Issuing`, and
    /// `Stalled` (only while a terminal reason waits for a spec or Secret fix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The Secret that holds the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Id of the current token at Nuclia.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Short hash of the current token, to notice edits of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// When the current token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// When the current token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    /// When the current token falls due for renewal (`renewBefore` ahead of expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<DateTime<Utc>>,
    /// When the current token will be renewed: the renewal time, moved to the next rotation
    /// window if there are any; absent while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_renewal: Option<DateTime<Utc>>,
    /// Where the current token was minted (see `previousTokens[].scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<TokenScope>,
    /// Replaced tokens waiting for the end of their grace period (at most
    /// [`MAX_PREVIOUS_TOKENS`]; beyond, the oldest is revoked early).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_tokens: Vec<PreviousToken>,
    /// The last issue intent (annotation `nuclia.dev/issue-intent`) that completed; an intent
    /// that differs was interrupted, and tokens it may have minted are swept (the leak guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_intent: Option<String>,
    /// Hash of the spec fields the current token was minted for; a change means rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// Last value of the `nuclia.dev/rotate` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_handled: Option<String>,
    /// Last value of the `nuclia.dev/revoke-now` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_now_handled: Option<String>,
    /// The value of `nuclia.dev/reissue-minted` on the Secret the current token was minted
    /// with, when it was minted: a new value there re-issues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissue_handled: Option<String>,
    /// The last rollout restart of `spec.rolloutRestartTargets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_restart: Option<RolloutRestartStatus>,
}

impl CredentialStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The issue intent annotation's value: `<nonce> <time> <expiry>`. Written before a mint; the
/// expiry asked for lets the leak guard recognise an unmarked key (one minted into an adopted
/// service account) that an interrupted issue left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueIntent {
    pub nonce: String,
    pub at: DateTime<Utc>,
    /// The expiry the mint asked for (absent in intents written by older versions).
    pub expires: Option<DateTime<Utc>>,
}

impl IssueIntent {
    pub fn render(&self) -> String {
        let t = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self.expires {
            Some(e) => format!("{} {} {}", self.nonce, t(self.at), t(e)),
            None => format!("{} {}", self.nonce, t(self.at)),
        }
    }

    /// Parses an annotation value; an unreadable time counts as long ago (so the guard runs).
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split_whitespace();
        let nonce = parts.next()?.to_owned();
        let time = |s: Option<&str>| {
            s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let at = time(parts.next()).unwrap_or(DateTime::UNIX_EPOCH);
        let expires = time(parts.next());
        Some(Self { nonce, at, expires })
    }
}

/// The one place where chrono's time (used for Nuclia and the lifecycle) becomes the jiff time
/// that k8s-openapi uses. Whole seconds, as the apiserver stores them (so a status read back
/// compares equal to the one written); out-of-range values clamp to the epoch rather than panic.
pub fn k8s_time(t: DateTime<Utc>) -> Time {
    let ts = jiff::Timestamp::new(t.timestamp(), 0).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// The reverse of [`k8s_time`].
pub fn chrono_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn issue_intents_round_trip_and_read_old_ones() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T01:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        let i = IssueIntent {
            nonce: "abc123".into(),
            at,
            expires: Some(at + chrono::Duration::days(5)),
        };
        assert_eq!(IssueIntent::parse(&i.render()), Some(i.clone()));
        let old = IssueIntent::parse("abc123 2026-11-28T01:02:03Z").unwrap();
        assert_eq!(
            (old.nonce.as_str(), old.at, old.expires),
            ("abc123", at, None)
        );
        assert_eq!(
            IssueIntent::parse("n garbage").unwrap().at,
            DateTime::UNIX_EPOCH
        );
        assert_eq!(IssueIntent::parse("  "), None);
    }

    #[test]
    fn time_conversion_round_trips() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T01:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(chrono_time(&k8s_time(t)), t);
    }

    #[test]
    fn secret_templates_are_checked_like_the_apiserver_does() {
        let with = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| SecretTemplate {
            name: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..SecretTemplate::default()
        };
        let big = "x".repeat(300_000);
        let ok = [
            with(
                &[
                    ("team", "search"),
                    ("example.com/tier", ""),
                    ("a.b_c-1", "v.1"),
                ],
                &[],
            ),
            with(&[], &[("note", "ünïcødé \"quoted\" 日本"), ("x.io/a", "")]),
        ];
        for t in ok {
            assert_eq!(t.validate(), Ok(()), "{t:?}");
        }
        let bad = [
            (with(&[("bad key!", "x")], &[]), "spec.secret.labels"),
            (with(&[("-x", "x")], &[]), "spec.secret.labels"),
            (with(&[("Example.com/x", "x")], &[]), "spec.secret.labels"),
            (with(&[("a/b/c", "x")], &[]), "spec.secret.labels"),
            (with(&[(&"k".repeat(64), "x")], &[]), "spec.secret.labels"),
            (with(&[("team", "ünï")], &[]), "spec.secret.labels"),
            (
                with(&[("team", &"v".repeat(64))], &[]),
                "spec.secret.labels",
            ),
            (with(&[], &[("bad key", "x")]), "spec.secret.annotations"),
            (with(&[], &[("big", &big)]), "spec.secret.annotations"),
        ];
        for (t, field) in bad {
            let err = t.validate().unwrap_err();
            assert!(err.contains(field) && err.len() < 400, "{err}");
        }
    }

    #[test]
    fn spec_defaults_fill_in() {
        let spec: NucliaKbApiKeySpec = serde_json::from_value(serde_json::json!({
            "kbUrl": "https://europe-1.dp.progress.cloud/api/v1/kb/abc",
            "auth": {"secretRef": {"name": "login"}}
        }))
        .unwrap();
        assert_eq!(spec.lifecycle.days, 90);
        assert_eq!(spec.role, KbRole::SMEMBER);
        assert_eq!(spec.auth.secret_ref.unwrap().key, "token");
        assert_eq!(spec.secret.keys.kb_url, "kbUrl");
        assert_eq!(spec.lifecycle.rotation.revoke_previous_after, "1h");
        assert_eq!(spec.lifecycle.deletion_policy, DeletionPolicy::Revoke);
    }

    #[test]
    fn kb_auth_names_exactly_one_credential_source() {
        let auth = |v: serde_json::Value| serde_json::from_value::<KbAuth>(v).unwrap().validate();
        assert_eq!(
            auth(serde_json::json!({"secretRef": {"name": "login"}})),
            Ok(())
        );
        assert_eq!(
            auth(serde_json::json!({"clusterCredentialRef": {"name": "admin"}})),
            Ok(())
        );
        let both = auth(serde_json::json!({
            "secretRef": {"name": "login"}, "clusterCredentialRef": {"name": "admin"}
        }));
        assert!(both.unwrap_err().contains("both"));
        assert!(
            auth(serde_json::json!({}))
                .unwrap_err()
                .contains("no credential")
        );
        // An existing spec serializes as before (no spec hash change, no rotation on upgrade).
        let old =
            serde_json::json!({"secretRef": {"name": "login", "key": "token"}, "type": "Bearer"});
        let parsed: KbAuth = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), old);
    }

    #[test]
    fn crds_carry_names_and_columns() {
        let crd = NucliaPersonalToken::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["npt".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["nuclia".to_string()]));
        // As installed: the kind's own column between the ones every kind shares.
        let crd = crate::crds::crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "NucliaKbApiKey")
            .unwrap();
        let cols = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap();
        let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Ready", "Reason", "Role", "Secret", "Expires", "Renews", "Age"
            ]
        );
    }
}
