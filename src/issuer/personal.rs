//! Personal access tokens (global API): minted with the account credential from `spec.auth`, or,
//! with `selfRenew`, with the managed token itself (falling back to `spec.auth` if that fails).

use chrono::{DateTime, Utc};

use super::{Issuer, LiveToken, Marker, Minted, gone_is_ok};
use crate::error::Result;
use crate::nuclia::{self, Client, Credential};

pub struct PersonalIssuer {
    client: Client,
    description: String,
    /// Credentials in the order they are tried; the next one is used on Unauthorized.
    credentials: Vec<Credential>,
}

impl PersonalIssuer {
    pub fn new(client: Client, description: String, credentials: Vec<Credential>) -> Self {
        Self {
            client,
            description,
            credentials,
        }
    }

    /// Runs `op` with each credential in turn until one is not refused.
    async fn with_credentials<T, F, Fut>(&self, mut op: F) -> std::result::Result<T, nuclia::Error>
    where
        F: FnMut(Credential) -> Fut,
        Fut: Future<Output = std::result::Result<T, nuclia::Error>>,
    {
        let mut last = None;
        for c in &self.credentials {
            match op(c.clone()).await {
                Err(e @ (nuclia::Error::Unauthorized { .. } | nuclia::Error::Forbidden { .. })) => {
                    last = Some(e)
                }
                other => return other,
            }
        }
        Err(last
            .unwrap_or_else(|| nuclia::Error::Config("no credential to call Nuclia with".into())))
    }
}

impl Issuer for PersonalIssuer {
    async fn issue(&mut self, marker: &Marker, expires: DateTime<Utc>) -> Result<Minted> {
        let description = marker.label(&self.description);
        let client = self.client.clone();
        let created = self
            .with_credentials(|c| {
                let (client, description) = (client.clone(), description.clone());
                async move {
                    client
                        .create_personal_token(&c, &description, expires)
                        .await
                }
            })
            .await?;
        Ok(Minted {
            id: created.id,
            token: created.token,
            not_after: created.expires.unwrap_or(expires),
            service_account_id: None,
        })
    }

    async fn revoke(&mut self, id: &str, _service_account_id: Option<&str>) -> Result<()> {
        let client = self.client.clone();
        gone_is_ok(
            self.with_credentials(|c| {
                let client = client.clone();
                async move { client.delete_personal_token(&c, id).await }
            })
            .await,
        )
    }

    async fn list_live(&mut self) -> Result<Vec<LiveToken>> {
        let client = self.client.clone();
        let items = self
            .with_credentials(|c| {
                let client = client.clone();
                async move { client.list_personal_tokens(&c).await }
            })
            .await?;
        Ok(items
            .into_iter()
            .map(|t| LiveToken {
                marker: Marker::find(&t.description),
                id: t.id,
                expires: t.expires,
                service_account_id: None,
            })
            .collect())
    }

    fn scope_key(&self) -> String {
        let fp = self
            .credentials
            .first()
            .map(|c| c.fingerprint())
            .unwrap_or_default();
        format!("pat:{fp}")
    }

    fn secret_extra_data(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    async fn cleanup(&mut self, _marker: &Marker, _revoke: bool) -> Result<()> {
        Ok(())
    }
}
