//! Secret credential values. Nothing here ever prints a token.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

/// A token or key value. `Debug` and `Display` print `ApiToken(***)`; the value is only
/// reachable through [`ApiToken::expose`].
#[derive(Clone)]
pub struct ApiToken(SecretString);

impl ApiToken {
    /// Wraps a token value.
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// The raw value, for putting into a header or a Secret. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The first 16 hex digits of the value's SHA-256: safe to log, store and compare.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.expose().as_bytes());
        hex::encode(&digest[..8])
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

impl PartialEq for ApiToken {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for ApiToken {}

impl From<String> for ApiToken {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for ApiToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// A credential together with the way it authenticates (nuclia-api.md §1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A user token or a personal access token: `Authorization: Bearer`.
    Bearer(ApiToken),
    /// A NUA key: `X-NUCLIA-NUAKEY: Bearer`.
    NuaKey(ApiToken),
    /// A KB API key (service-account key): `X-NUCLIA-SERVICEACCOUNT: Bearer`.
    ServiceAccount(ApiToken),
}

impl Credential {
    /// The header name this credential is sent in.
    pub fn header_name(&self) -> &'static str {
        match self {
            Credential::Bearer(_) => "Authorization",
            Credential::NuaKey(_) => "X-NUCLIA-NUAKEY",
            Credential::ServiceAccount(_) => "X-NUCLIA-SERVICEACCOUNT",
        }
    }

    /// The token inside.
    pub fn token(&self) -> &ApiToken {
        match self {
            Credential::Bearer(t) | Credential::NuaKey(t) | Credential::ServiceAccount(t) => t,
        }
    }

    /// The token's fingerprint (see [`ApiToken::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        self.token().fingerprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let t = ApiToken::new("s3cr3t-value".into());
        assert_eq!(format!("{t:?}"), "ApiToken(***)");
        assert_eq!(format!("{t}"), "ApiToken(***)");
        let c = Credential::NuaKey(t.clone());
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(t.fingerprint().len(), 16);
        assert_eq!(c.fingerprint(), t.fingerprint());
    }
}
