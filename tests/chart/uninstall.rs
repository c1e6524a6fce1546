//! Uninstalling (issue 17), as `docs/uninstall.md` says, on a control plane of the test's own
//! (it deletes the `nuclia.dev` CRDs, which the other tests share), with the chart installed by
//! helm (`crds.keep=false`) and the operator as a process:
//!
//! 1. the documented order: the resources deleted first (the doc's command) revoke everything,
//!    then `helm uninstall` removes the CRDs without hanging;
//! 2. the operator gone first: `helm uninstall` leaves the resources and the CRDs Terminating
//!    with the tokens alive; revoking what the statuses name and the doc's finalizer commands
//!    let everything go.
//!
//! The shell commands run are the ones in the doc's code blocks.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use nuclia_fake::{FakeConfig, FakeHandle};
use nuclia_token_operator::crd::{CredentialStatus, NucliaKbApiKey, NucliaPersonalToken};

const MINUTE: Duration = Duration::from_secs(60);
const RELEASE: &str = "nto";
const OPS: &str = "ops";
const TEAM: &str = "team";
const CRDS: [&str; 4] = [
    "nucliapersonaltokens.nuclia.dev",
    "nucliakbapikeys.nuclia.dev",
    "nuclianuakeys.nuclia.dev",
    "nucliaclustercredentials.nuclia.dev",
];

/// The `sh` code blocks of docs/uninstall.md, in order.
fn doc_blocks() -> Vec<String> {
    let doc = std::fs::read_to_string(common::repo_root().join("docs/uninstall.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line) {
            (None, "```sh") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    assert_eq!(
        blocks.len(),
        4,
        "docs/uninstall.md's commands changed: update this test"
    );
    blocks
}

struct Env {
    cp: common::OwnControlPlane,
    client: Client,
    fake: FakeHandle,
}

impl Env {
    /// bash with this control plane's kubectl first on PATH and its kubeconfig.
    fn sh(&self, script: &str) -> Output {
        let bin = &common::cluster().bin_dir;
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .env("PATH", path)
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .output()
            .expect("bash")
    }

    fn ok(&self, what: &str, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn helm_install(&self) {
        let chart = common::repo_root().join("charts/nuclia-token-operator");
        self.ok(
            "helm install",
            &format!(
                "helm install {RELEASE} {} --namespace {OPS} --create-namespace --set crds.keep=false \
                 --set image.repository=registry.invalid/nto --set image.tag=never-pulled",
                chart.display()
            ),
        );
    }

    fn operator(&self, log: &Path) -> Child {
        let url = &self.fake.url;
        let zone = &self.fake.bootstrap.zone;
        let log = std::fs::File::create(log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_nuclia-token-operator"))
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .args(["--nuclia-global-url", url])
            .args(["--nuclia-zone-origin", &format!("{zone}={url}")])
            .args(["--watch-namespaces", TEAM, "--metrics-addr", "127.0.0.1:0"])
            .args(["--cluster-id", "uninstall-test", "--lease-namespace", OPS])
            .args([
                "--installation-configmap",
                &format!("{RELEASE}-nuclia-token-operator-installation"),
            ])
            .args(["--verify-interval", "3s", "--backoff-base", "1s"])
            .args(["--backoff-max", "5s", "--revoke-timeout", "60s"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the operator")
    }

    async fn crds_established(&self) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for name in CRDS {
            let ready = common::poll(MINUTE, || async {
                let conds = api.get(name).await.ok()?.status?.conditions?;
                conds
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            })
            .await;
            assert!(ready.is_some(), "CRD {name} never became Established");
        }
    }

    async fn crds_gone(&self) -> bool {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        common::poll(MINUTE, || async {
            for name in CRDS {
                if api.get_opt(name).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        })
        .await
        .is_some()
    }

    /// A personal token and a KB key authenticated by its Secret, both Ready; their statuses.
    async fn resources(&self) -> (CredentialStatus, CredentialStatus) {
        let kb_url = &self.fake.bootstrap.kbs[0].url;
        self.ok(
            "kubectl apply",
            &format!(
                "kubectl apply -n {TEAM} -f - <<'EOF'
apiVersion: nuclia.dev/v1alpha1
kind: NucliaPersonalToken
metadata: {{name: ci}}
spec:
  description: uninstall test
  days: 1
  auth: {{secretRef: {{name: login}}}}
  secret: {{name: ci-token}}
---
apiVersion: nuclia.dev/v1alpha1
kind: NucliaKbApiKey
metadata: {{name: search}}
spec:
  kbUrl: {kb_url}
  days: 1
  auth: {{secretRef: {{name: ci-token}}}}
EOF"
            ),
        );
        let pts: Api<NucliaPersonalToken> = Api::namespaced(self.client.clone(), TEAM);
        let kbs: Api<NucliaKbApiKey> = Api::namespaced(self.client.clone(), TEAM);
        let ready = |s: Option<&CredentialStatus>| {
            s.filter(|s| s.condition("Ready").is_some_and(|c| c.status == "True"))
                .cloned()
        };
        let pt = common::poll(MINUTE, || async {
            ready(pts.get("ci").await.ok()?.status.as_deref())
        })
        .await
        .expect("the personal token never became Ready");
        let kb = common::poll(MINUTE, || async {
            ready(kbs.get("search").await.ok()?.status.as_deref())
        })
        .await
        .expect("the KB key never became Ready");
        (pt, kb)
    }

    /// Whether credential `id` is live at the fake.
    async fn live(&self, id: &str) -> bool {
        common::operator::fake_admin(&reqwest::Client::new(), &self.fake.url, "credentials")
            .await
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["id"] == id))
    }
}

#[tokio::test]
async fn uninstall_in_the_documented_order_and_after_the_operator_is_gone() {
    nuclia_token_operator::runtime::install_crypto();
    let blocks = doc_blocks();
    let cp = common::OwnControlPlane::start();
    let client = common::operator::client_for(&cp.kubeconfig).await;
    let fake = nuclia_fake::spawn(FakeConfig::default())
        .await
        .expect("nuclia-fake");
    let env = Env { cp, client, fake };
    let logs = tempfile::tempdir().unwrap();
    Api::<Namespace>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": TEAM}})).unwrap(),
        )
        .await
        .unwrap();
    let login: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "login"},
        "stringData": {"token": env.fake.bootstrap.pat},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), TEAM)
        .create(&PostParams::default(), &login)
        .await
        .unwrap();

    // 1. The documented order.
    env.helm_install();
    env.crds_established().await;
    let mut op = env.operator(&logs.path().join("first.log"));
    let (pt, kb) = env.resources().await;
    let ids = [pt.token_id.clone().unwrap(), kb.token_id.clone().unwrap()];
    env.ok("step 1 (delete the resources)", &blocks[0]);
    for id in &ids {
        assert!(!env.live(id).await, "token {id} survived step 1");
    }
    env.ok(
        "step 2 (helm uninstall)",
        &blocks[1].replace("RELEASE", RELEASE).replace("NS", OPS),
    );
    assert!(
        env.crds_gone().await,
        "the CRDs did not go with crds.keep=false"
    );
    let _ = op.kill();
    let _ = op.wait();

    // 2. The operator gone first.
    env.helm_install();
    env.crds_established().await;
    let mut op = env.operator(&logs.path().join("second.log"));
    let (pt, kb) = env.resources().await;
    let _ = op.kill();
    let _ = op.wait();
    env.ok(
        "helm uninstall",
        &blocks[1].replace("RELEASE", RELEASE).replace("NS", OPS),
    );
    // The CRDs' deletion deletes the resources, which wait for the operator: stuck, tokens alive.
    let pts: Api<NucliaPersonalToken> = Api::namespaced(env.client.clone(), TEAM);
    let stuck = common::poll(MINUTE, || async {
        let r = pts.get_opt("ci").await.ok()??;
        r.metadata.deletion_timestamp.is_some().then_some(())
    })
    .await;
    assert!(
        stuck.is_some(),
        "the CRD deletion did not reach the resources"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    assert!(
        crds.get_opt(CRDS[0]).await.unwrap().is_some(),
        "the CRD went although a resource holds its finalizer"
    );
    let pt_id = pt.token_id.clone().unwrap();
    let kb_id = kb.token_id.clone().unwrap();
    assert!(env.live(&pt_id).await && env.live(&kb_id).await);

    // The listing commands name what to revoke.
    let listed = env.ok("list what to revoke", &blocks[2]);
    let scope = kb.scope.clone().unwrap();
    let (account, kb_ref, sa) = (
        scope.account_id.unwrap(),
        scope.kb_id.unwrap(),
        scope.service_account_id.unwrap(),
    );
    for want in [&pt_id, &kb_id, &sa, &kb_ref] {
        assert!(
            listed.contains(want.as_str()),
            "{want} not listed:\n{listed}"
        );
    }
    // Revoked by hand with the login, through the API the doc names.
    let http = reqwest::Client::new();
    let pat = &env.fake.bootstrap.pat;
    let url = &env.fake.url;
    for path in [
        format!("/api/v1/user/pa_token/{pt_id}"),
        format!("/api/v1/account/{account}/kb/{kb_ref}/service_account/{sa}/key/{kb_id}"),
    ] {
        // the KB key is revoked with the managed token it authenticated with, still alive
        let r = http
            .delete(format!("{url}{path}"))
            .bearer_auth(pat)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
    }
    env.ok("release the finalizers", &blocks[3]);
    assert!(env.crds_gone().await, "the CRDs stayed after the recovery");
    assert!(!env.live(&pt_id).await && !env.live(&kb_id).await);
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), TEAM);
    let left = common::poll(MINUTE, || async {
        let list = secrets.list(&Default::default()).await.ok()?;
        let managed: Vec<String> = list
            .items
            .iter()
            .filter(|s| s.labels().contains_key("nuclia.dev/owner-kind"))
            .map(|s| s.name_any())
            .collect();
        managed.is_empty().then_some(())
    })
    .await;
    assert!(left.is_some(), "managed Secrets left after the recovery");
}
