//! Request and response bodies (nuclia-api.md §2–§5). Responses ignore unknown fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiToken;
use super::time;

/// The role of a service account on its KB (`KbRole`).
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KbRole {
    /// Owner (admin).
    SOWNER,
    /// Contributor (write).
    SCONTRIBUTOR,
    /// Member (read).
    SMEMBER,
}

impl KbRole {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KbRole::SOWNER => "SOWNER",
            KbRole::SCONTRIBUTOR => "SCONTRIBUTOR",
            KbRole::SMEMBER => "SMEMBER",
        }
    }
}

/// `TokenCreated`: the answer to creating a personal access token.
#[derive(Clone, Debug, Deserialize)]
pub struct CreatedToken {
    pub id: String,
    pub token: ApiToken,
    #[serde(default, deserialize_with = "time::de_opt")]
    pub expires: Option<DateTime<Utc>>,
}

/// `TokenItem`: one personal access token in a list (no value).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PersonalTokenItem {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "time::de_opt")]
    pub expires: Option<DateTime<Utc>>,
}

/// `GET /api/v1/user`: the user behind a user token or PAT (only the field the operator uses).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct UserProfile {
    pub id: String,
}

/// `AccountListItem` (the fields the operator uses).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub id: String,
    pub slug: String,
    #[serde(default)]
    pub title: String,
}

/// `Zone`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Zone {
    pub id: String,
    pub slug: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub origin: Option<String>,
}

/// `KnowledgeBoxSummary` (the fields the operator uses).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct KbSummary {
    pub id: String,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub zone: Option<String>,
}

/// `KnowledgeBox`: one KB as the zone management API describes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct KnowledgeBox {
    pub id: String,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "time::de_opt")]
    pub created: Option<DateTime<Utc>>,
}

/// `ServiceAccountKey`: a key's metadata (never its value).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ServiceAccountKey {
    pub id: String,
    #[serde(deserialize_with = "time::de")]
    pub created: DateTime<Utc>,
    #[serde(deserialize_with = "time::de")]
    pub expires: DateTime<Utc>,
}

/// `ServiceAccount`, with its keys (`null` keys read as none).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ServiceAccount {
    pub id: String,
    pub title: String,
    pub role: KbRole,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub keys: Vec<ServiceAccountKey>,
}

/// `ServiceAccountJWT`: a new key. The API does not echo its expiry.
#[derive(Clone, Debug, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    pub token: ApiToken,
}

/// The answer of `GET /api/authorizer/info` (only `user` is documented, loosely).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct AuthorizerInfo {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub user: AuthorizerUser,
}

/// `user` inside [`AuthorizerInfo`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct AuthorizerUser {
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub kb_id: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub account_type: Option<String>,
}

/// NucliaDB `KnowledgeBoxObj`: what `GET {kbUrl}` returns.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct KbObject {
    pub uuid: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub config: Option<KbConfig>,
}

/// `config` inside [`KbObject`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct KbConfig {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
}

/// `NUAClientMetadata`: one NUA client (never its key).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct NuaClient {
    pub client_id: String,
    #[serde(default)]
    pub internal_id: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    #[serde(default)]
    pub account_id: Option<String>,
}

/// The answer of `GET .../nua_clients`.
#[derive(Clone, Debug, Deserialize)]
pub struct NuaClients {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clients: Vec<NuaClient>,
}

/// The answer to creating a NUA client or renewing its key.
#[derive(Clone, Debug, Deserialize)]
pub struct CreatedNuaClient {
    pub token: ApiToken,
    pub client_id: String,
    #[serde(default)]
    pub internal_id: Option<String>,
}

/// What a new NUA client is created with (`NUAClientKeyCreation`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NuaClientCreation {
    pub title: String,
    pub contact: String,
    pub description: String,
    pub allow_kb_management: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_limit: Option<u64>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_account_keys_null_is_empty() {
        let sa: ServiceAccount = serde_json::from_value(
            json!({"id": "a", "title": "t", "role": "SMEMBER", "keys": null}),
        )
        .unwrap();
        assert!(sa.keys.is_empty());
        let sa: ServiceAccount = serde_json::from_value(json!({
            "id": "a", "title": "t", "role": "SOWNER",
            "keys": [{"id": "k", "created": "2026-01-01T00:00:00.123", "expires": 1893456000}]
        }))
        .unwrap();
        assert_eq!(sa.keys[0].expires.to_rfc3339(), "2030-01-01T00:00:00+00:00");
    }

    #[test]
    fn roles_are_the_exact_wire_strings() {
        assert_eq!(
            serde_json::to_string(&KbRole::SCONTRIBUTOR).unwrap(),
            "\"SCONTRIBUTOR\""
        );
        assert!(serde_json::from_str::<KbRole>("\"SREADER\"").is_err());
    }
}
