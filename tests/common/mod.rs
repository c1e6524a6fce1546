//! Test harness shared by the integration tests: one real control plane per test run (started
//! on first use, or reused when `NTO_KUBECONFIG` names one), one namespace per test, and the
//! kubectl that came with the control plane.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use nuclia_token_operator::crd::FIELD_MANAGER;

pub mod operator;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane this test process uses.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub state_dir: Option<PathBuf>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The control plane: `NTO_KUBECONFIG` (+ `NTO_K8S_BIN`) when set, else one started for this
/// process by `tests/k8s/cluster.sh`, stopped by its watchdog when the process exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let root = repo_root();
        let bin_dir = provision(&root);
        if let Ok(kc) = std::env::var("NTO_KUBECONFIG") {
            return Cluster {
                kubeconfig: kc.into(),
                bin_dir,
                state_dir: None,
            };
        }
        let state = std::env::temp_dir().join(format!("nto-cluster-{}", std::process::id()));
        let out = Command::new(root.join("tests/k8s/cluster.sh"))
            .arg("start")
            .arg(&state)
            .env("NTO_CLUSTER_WATCH_PID", std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/k8s/cluster.sh");
        assert!(out.status.success(), "control plane failed to start");
        Cluster {
            kubeconfig: state.join("kubeconfig"),
            bin_dir,
            state_dir: Some(state),
        }
    })
}

fn provision(root: &Path) -> PathBuf {
    if let Ok(dir) = std::env::var("NTO_K8S_BIN") {
        return dir.into();
    }
    let out = Command::new(root.join("tests/k8s/provision.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/k8s/provision.sh");
    assert!(
        out.status.success(),
        "provisioning the control plane binaries failed"
    );
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// A kube client for the admin user (one per test: clients are bound to their runtime).
pub async fn client() -> Client {
    let c = cluster();
    let kubeconfig = Kubeconfig::read_from(&c.kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("kube client")
}

/// Runs the control plane's kubectl against it; `stdin` is piped in when given.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let c = cluster();
    let mut child = Command::new(c.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("kubectl output")
}

/// Installs the CRDs from the committed YAML (what users apply) and waits until Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in nuclia_token_operator::crds::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        let established = poll(Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let conds = crd.status?.conditions?;
                conds
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
        assert!(established.is_some(), "CRD {name} never became Established");
    }
    // kubectl validates manifests against the published OpenAPI, which follows a moment later.
    for field in ["nucliapersonaltoken.spec.days", "nucliakbapikey.spec.kbUrl"] {
        let published = poll(Duration::from_secs(60), || async {
            kubectl(&["explain", field], None)
                .status
                .success()
                .then_some(())
        })
        .await;
        assert!(
            published.is_some(),
            "the schema of {field} was never published"
        );
    }
}

/// Creates a fresh namespace `<prefix>-<random>` for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// Polls `check` every 100 ms until it returns `Some` or `within` has passed.
pub async fn poll<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A control plane of a test's own, in a temporary directory: for tests that restart its
/// apiserver (the chaos soak) or delete the CRDs (uninstall), which must never happen to the
/// control plane the other tests share.
pub struct OwnControlPlane {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl OwnControlPlane {
    pub fn script() -> PathBuf {
        repo_root().join("tests/k8s/cluster.sh")
    }

    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nto-own-cp-")
            .tempdir()
            .expect("temp dir");
        let ok = Command::new(Self::script())
            .arg("start")
            .arg(dir.path())
            // its watchdog stops it if this process dies before Drop runs
            .env("NTO_CLUSTER_WATCH_PID", std::process::id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "a test's own control plane failed to start");
        let kubeconfig = dir.path().join("kubeconfig");
        OwnControlPlane { dir, kubeconfig }
    }

    pub fn restart_apiserver(dir: &Path) -> bool {
        Command::new(Self::script())
            .arg("restart-apiserver")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
