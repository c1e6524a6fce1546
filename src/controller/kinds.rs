//! The two kinds as the reconcile sees them: spec accessors, the credential-shaping spec hash,
//! and how to build each one's issuer.

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::{Context, Kind};
use crate::crd::{
    CredentialStatus, CredentialType, DeletionPolicy, NucliaKbApiKey, NucliaPersonalToken,
    SecretKeyRef, SecretTemplate,
};
use crate::error::{Error, Result};
use crate::issuer::kb::KbIssuer;
use crate::issuer::personal::PersonalIssuer;
use crate::lifecycle::Policy;
use crate::nuclia::{ApiToken, Credential};

/// Hash of the spec fields that shape the credential; changing any of them rotates it.
fn spec_hash(value: serde_json::Value) -> String {
    hex::encode(&Sha256::digest(value.to_string().as_bytes())[..8])
}

impl Kind for NucliaPersonalToken {
    type Issuer = PersonalIssuer;

    fn cr_status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }

    fn policy(&self) -> Result<Policy> {
        let s = &self.spec;
        s.secret.validate().map_err(Error::InvalidSpec)?;
        let hash = spec_hash(serde_json::json!([
            s.description,
            s.days,
            s.auth,
            s.secret.name
        ]));
        Policy::new(
            s.days,
            s.renew_before.as_deref(),
            &s.rotation.revoke_previous_after,
            hash,
            s.deletion_policy,
        )
        .map_err(Error::InvalidSpec)
    }

    fn secret_template(&self) -> &SecretTemplate {
        &self.spec.secret
    }

    fn token_key(&self) -> &str {
        "token"
    }

    fn auth_ref(&self) -> &SecretKeyRef {
        &self.spec.auth.secret_ref
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }

    async fn issuer(
        &self,
        ctx: &Context,
        managed: Option<ApiToken>,
        credential: Result<ApiToken>,
    ) -> Result<PersonalIssuer> {
        let mut credentials = Vec::new();
        if self.spec.auth.self_renew
            && let Some(token) = managed
        {
            credentials.push(Credential::Bearer(token));
        }
        match credential {
            Ok(token) => credentials.push(Credential::Bearer(token)),
            // With selfRenew the bootstrap credential may be long gone: the managed token is enough.
            Err(e) if credentials.is_empty() => return Err(e),
            Err(_) => {}
        }
        Ok(PersonalIssuer::new(
            ctx.nuclia.clone(),
            self.spec.description.clone(),
            credentials,
        ))
    }

    async fn settle(_issuer: &mut PersonalIssuer, _status: &mut CredentialStatus) -> Result<()> {
        Ok(())
    }

    fn expected_extra(&self, _status: &CredentialStatus) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl Kind for NucliaKbApiKey {
    type Issuer = KbIssuer;

    fn cr_status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }

    fn policy(&self) -> Result<Policy> {
        let s = &self.spec;
        s.secret.template.validate().map_err(Error::InvalidSpec)?;
        let hash = spec_hash(serde_json::json!([
            s.kb_url,
            s.account,
            s.role,
            s.days,
            s.auth,
            s.service_account,
            s.secret.template.name,
            s.secret.keys
        ]));
        Policy::new(
            s.days,
            s.renew_before.as_deref(),
            &s.rotation.revoke_previous_after,
            hash,
            s.deletion_policy,
        )
        .map_err(Error::InvalidSpec)
    }

    fn secret_template(&self) -> &SecretTemplate {
        &self.spec.secret.template
    }

    fn token_key(&self) -> &str {
        &self.spec.secret.keys.token
    }

    fn auth_ref(&self) -> &SecretKeyRef {
        &self.spec.auth.secret_ref
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }

    async fn issuer(
        &self,
        ctx: &Context,
        _managed: Option<ApiToken>,
        credential: Result<ApiToken>,
    ) -> Result<KbIssuer> {
        // Refuse an untrusted kbUrl before using, let alone sending, any credential.
        ctx.nuclia.endpoints().locate_kb(&self.spec.kb_url)?;
        let token = credential?;
        let credential = match self.spec.auth.credential_type {
            CredentialType::Bearer => Credential::Bearer(token),
            CredentialType::NuaKey => Credential::NuaKey(token),
        };
        let title = format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        );
        let previous = self.status.as_ref().and_then(|s| s.kb.as_ref());
        KbIssuer::prepare(
            ctx.nuclia.clone(),
            credential,
            &self.spec,
            previous,
            title,
            &ctx.accounts,
        )
        .await
    }

    async fn settle(issuer: &mut KbIssuer, status: &mut CredentialStatus) -> Result<()> {
        let still_needed: Vec<Option<String>> = status
            .previous_tokens
            .iter()
            .map(|p| p.service_account_id.clone())
            .collect();
        issuer.retire_unused(&still_needed).await?;
        status.kb = Some(issuer.state.clone());
        Ok(())
    }

    fn expected_extra(&self, status: &CredentialStatus) -> Vec<(String, String)> {
        let Some(kb) = status.kb.as_ref() else {
            return Vec::new();
        };
        let keys = &self.spec.secret.keys;
        let url = self.spec.kb_url.trim_end_matches('/').to_owned();
        [
            (keys.kb_url.clone(), Some(url)),
            (keys.kb_id.clone(), kb.kb_id.clone()),
            (keys.zone.clone(), kb.zone.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}
