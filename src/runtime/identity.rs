//! The installation id: random, created once and kept in a ConfigMap in the operator's own
//! namespace, shared by every replica and kept across restarts, upgrades and `helm uninstall`
//! (Helm does not own it). Ownership markers carry it after the resource's UID, so two clusters
//! that were given the same `--cluster-id` never take each other's tokens for their own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::crd::{LABEL_MANAGED_BY, MANAGED_BY};

/// Data key of the id in the ConfigMap.
pub const KEY: &str = "installationId";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or creating ConfigMap {namespace}/{name} (the installation id): {source}")]
    Kube {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "ConfigMap {namespace}/{name} holds no valid {KEY:?} (8 to 32 lowercase letters or digits); restore it from a backup, or delete it to start a new installation identity (tokens marked with the old one are then never swept)"
    )]
    Invalid { namespace: String, name: String },
}

/// Whether `id` can be an installation id (it goes into markers: no '/', '@' or ']').
fn valid(id: &str) -> bool {
    (8..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Reads the installation id, creating it on first start. Replicas starting together agree:
/// the create of the one that loses answers 409 and it reads the winner's.
pub async fn installation_id(
    kube: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, Error> {
    let api: Api<ConfigMap> = Api::namespaced(kube, namespace);
    let err = |source| Error::Kube {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    let read = |cm: ConfigMap| {
        cm.data
            .and_then(|d| d.get(KEY).cloned())
            .filter(|id| valid(id))
            .ok_or_else(|| Error::Invalid {
                namespace: namespace.into(),
                name: name.into(),
            })
    };
    if let Some(cm) = api.get_opt(name).await.map_err(err)? {
        return read(cm);
    }
    let fresh = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                "nuclia.dev/purpose".to_owned(),
                "Identifies this installation in the ownership marker of every token it mints. Keep it (and back it up): with a new id, tokens marked with the old one are never swept.".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(KEY.to_owned(), fresh.clone())])),
        ..ConfigMap::default()
    };
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(fresh),
        Err(kube::Error::Api(s)) if s.code == 409 => read(api.get(name).await.map_err(err)?),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn only_marker_safe_ids_are_valid() {
        assert!(valid("0f6a1c2d7e3b"));
        for bad in [
            "",
            "short",
            "ABCDEF123456",
            "abc/defgh",
            "abcdefgh@1",
            "abcdefgh]",
            &"a".repeat(33),
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }
}
