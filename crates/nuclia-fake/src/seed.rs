//! The `--seed FILE` format: accounts, zones, KBs and credentials added to the default world.
//!
//! ```json
//! {
//!   "zones": [{"slug": "us-1", "title": "US 1", "private": true}],
//!   "user_tokens": [{"token": "my-fixed-user-token", "expires": "2030-01-01T00:00:00Z"}],
//!   "pats": [{"token": "my-fixed-pat", "description": "ci"}],
//!   "users": [{"email": "b@example.com", "token": "b-user-token"}],
//!   "accounts": [{
//!     "slug": "other", "zone": "us-1", "member": true,
//!     "kbs": [{"slug": "kb1", "title": "KB 1"}],
//!     "nua_keys": [{"token": "my-nua", "allow_kb_management": true}],
//!     "service_accounts": [{"kb": "kb1", "title": "reader", "role": "SMEMBER",
//!                           "keys": [{"token": "my-kb-key", "expires": 1893456000}]}]
//!   }]
//! }
//! ```
//! Every field but slugs, titles of service accounts, `kb`, `role` and a user's `email` is
//! optional; a missing `token` is minted, a missing `expires` takes the kind's default
//! lifetime. `user_tokens` and `pats` belong to the default user; each of `users` is another
//! user (member of the same accounts) with its own user token and its own PATs.

use serde::Deserialize;
use serde_json::Value;

use crate::state::KbRole;

/// A seed file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub zones: Vec<SeedZone>,
    #[serde(default)]
    pub user_tokens: Vec<SeedCredential>,
    #[serde(default)]
    pub pats: Vec<SeedCredential>,
    /// More users, each with its own user token.
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub accounts: Vec<SeedAccount>,
}

/// Another Nuclia user. It is a member of the same accounts as the default user, lists and
/// deletes only its own PATs, and authenticates with `token` (minted when absent; the
/// bootstrap line's `users` shows it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    /// The user token's value.
    #[serde(default)]
    pub token: Option<String>,
    /// The user token's expiry (default: the fake's user-token lifetime from now).
    #[serde(default)]
    pub expires: Option<Value>,
}

impl SeedUser {
    /// The user token, as a seeded credential.
    pub(crate) fn credential(&self) -> SeedCredential {
        SeedCredential {
            token: self.token.clone(),
            description: None,
            expires: self.expires.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedZone {
    pub slug: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub private: bool,
    /// Defaults to the fake's own URL (it serves every zone).
    #[serde(default)]
    pub origin: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAccount {
    #[serde(default)]
    pub id: Option<String>,
    pub slug: String,
    #[serde(default)]
    pub title: Option<String>,
    /// Defaults to `europe-1`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Whether the fake's user belongs to it (default true); a non-member gets 403.
    #[serde(default = "yes")]
    pub member: bool,
    #[serde(default)]
    pub kbs: Vec<SeedKb>,
    #[serde(default)]
    pub nua_keys: Vec<SeedNuaKey>,
    #[serde(default)]
    pub service_accounts: Vec<SeedServiceAccount>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKb {
    #[serde(default)]
    pub id: Option<String>,
    pub slug: String,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNuaKey {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub allow_kb_management: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedServiceAccount {
    /// Slug or id of a KB of the same account.
    pub kb: String,
    pub title: String,
    pub role: KbRole,
    #[serde(default)]
    pub keys: Vec<SeedCredential>,
}

/// A user token, PAT or KB key to create.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCredential {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Any date form the API accepts (RFC 3339, naive ISO, epoch seconds).
    #[serde(default)]
    pub expires: Option<Value>,
}

impl Seed {
    /// Reads a seed file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
