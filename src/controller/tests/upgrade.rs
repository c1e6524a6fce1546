//! An operator upgraded from an earlier release must rotate nothing: the spec hash a token was
//! minted for (`status.specHash`) must come out the same from the new code for the same spec.
//! The hashes below were computed by the release before kinds shared their lifecycle fields
//! (main of 2026-12-06); a change of one is a rotation of every such resource on upgrade.

use crate::controller::Kind;
use crate::crd::{NucliaKbApiKey, NucliaNuaKey, NucliaPersonalToken};

fn hash<K: Kind>(manifest: &str) -> String {
    let obj: K = serde_yaml::from_str(manifest).expect("a valid manifest");
    obj.policy().expect("a valid spec").spec_hash
}

/// Every example, and each kind with every optional field set and `Orphan`.
#[test]
fn spec_hashes_are_those_of_the_earlier_release() {
    let pins: Vec<(String, String)> = vec![
        (
            hash::<NucliaPersonalToken>(include_str!("../../../examples/personal-token.yaml")),
            "c5e45527be4b7ead".into(),
        ),
        (
            hash::<NucliaPersonalToken>(
                r#"
apiVersion: nuclia.dev/v1alpha1
kind: NucliaPersonalToken
metadata: {name: a, namespace: n}
spec:
  description: all fields
  days: 7
  renewBefore: 48h
  auth: {secretRef: {name: login, key: token}}
  secret:
    name: a-secret
    type: Opaque
    labels: {team: t}
    annotations: {a: b}
  rotation: {revokePreviousAfter: 10m}
  rolloutRestartTargets: [{kind: Deployment, name: web}]
  deletionPolicy: Orphan
"#,
            ),
            "7df4894b37160da4".into(),
        ),
        (
            hash::<NucliaKbApiKey>(include_str!("../../../examples/kb-api-key.yaml")),
            "ecf424c0db3b377d".into(),
        ),
        (
            hash::<NucliaKbApiKey>(include_str!(
                "../../../examples/kb-api-key-cluster-credential.yaml"
            )),
            "093c372c09d53fbc".into(),
        ),
        (
            hash::<NucliaKbApiKey>(
                r#"
apiVersion: nuclia.dev/v1alpha1
kind: NucliaKbApiKey
metadata: {name: a, namespace: n}
spec:
  kbUrl: https://europe-1.nuclia.cloud/api/v1/kb/abc
  account: acme
  role: SOWNER
  days: 30
  renewBefore: 72h
  auth: {secretRef: {name: login, key: token}}
  serviceAccount: {id: sa-1}
  secret:
    name: a-kb
    keys: {token: k, kbUrl: u, kbId: i, zone: z}
  rotation: {revokePreviousAfter: 30m}
  deletionPolicy: Orphan
"#,
            ),
            "054a9e724b918705".into(),
        ),
        (
            hash::<NucliaNuaKey>(include_str!("../../../examples/nua-key.yaml")),
            "d0d545103dd52d9d".into(),
        ),
        (
            hash::<NucliaNuaKey>(
                r#"
apiVersion: nuclia.dev/v1alpha1
kind: NucliaNuaKey
metadata: {name: a, namespace: n}
spec:
  zone: europe-1
  account: acme
  title: t
  description: d
  contact: ops@example.com
  allowKbManagement: true
  tokensLimit: 1000
  days: 45
  renewBefore: 100h
  auth: {secretRef: {name: login, key: token}}
  secret: {name: a-nua, keys: {token: k, zone: z, account: a, clientId: c}}
  rotation: {revokePreviousAfter: 2h}
  deletionPolicy: Orphan
"#,
            ),
            "c1c1fc92af4cfc0b".into(),
        ),
    ];
    let got: Vec<&str> = pins.iter().map(|(g, _)| g.as_str()).collect();
    let want: Vec<&str> = pins.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(
        got, want,
        "spec hashes changed: every such resource would rotate on upgrade"
    );
}
