//! Running it like a real deployment (issue 6): the Helm chart against the real apiserver, the
//! operator with the chart's ServiceAccount token instead of admin, leader election between
//! operator processes, and `/metrics`, `/healthz`, `/readyz` of a running operator.
//!
//! No kubelet runs here, so the chart's pods never start: the install tests prove the objects are
//! accepted, and the operator runs as a local process with the credentials the chart creates.
//! The CRDs are cluster-wide and shared with tests running at the same time: installs use
//! `crds.enabled=false`, and the `crds.keep` test installs a copy of the chart's CRD templates
//! renamed into a group of its own.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::operator::{OperatorProcess, World, ready, reason, wait_status};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use nuclia_token_operator::crd::{NucliaKbApiKey, NucliaPersonalToken};
use serde::Deserialize;

const MINUTE: Duration = Duration::from_secs(60);
const CHART: &str = "charts/nuclia-token-operator";
const CHART_NAME: &str = "nuclia-token-operator";
/// Image values that need not exist: no kubelet pulls them.
const IMAGE: [&str; 4] = [
    "--set",
    "image.repository=registry.invalid/nuclia-token-operator",
    "--set",
    "image.tag=never-pulled",
];
const PAT_MINTS: &str = "POST /api/v1/user/pa_tokens";

// ---------------------------------------------------------------------------------------------
// helpers

fn chart() -> PathBuf {
    common::repo_root().join(CHART)
}

/// Runs the control plane's helm against it.
fn helm(args: &[&str]) -> Output {
    let c = common::cluster();
    Command::new(c.bin_dir.join("helm"))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .output()
        .expect("run helm")
}

/// stdout of a command that must succeed.
fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of the chart with `--set` values, as one JSON value per manifest.
fn render(sets: &[&str]) -> Vec<serde_json::Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "nto",
        chart.to_str().unwrap(),
        "--namespace",
        "ops",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let text = ok(&format!("helm template {sets:?}"), helm(&args));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("rendered manifest is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn names(docs: &[&serde_json::Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The operator's settings in a rendered Deployment: the container's environment (the chart
/// passes no flag), as a pod `pod-0` in namespace `ops` would get it.
fn settings_of(docs: &[serde_json::Value]) -> Vec<(String, String)> {
    pod_env(&container(docs), "ops", "pod-0")
}

fn setting(name: &str, value: &str) -> (String, String) {
    (format!("NUCLIA_OPERATOR_{name}"), value.to_owned())
}

/// A random suffix for cluster-scoped names.
fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Uninstalls a Helm release when dropped (also when the test fails), so no ClusterRole is left.
struct Release {
    name: String,
    ns: String,
}

impl Release {
    fn install(name: &str, ns: &str, chart: &Path, sets: &[&str]) -> Release {
        let flags: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();
        Release::install_with(name, ns, chart, &flags)
    }

    /// `helm install` with more helm flags (e.g. `-f values.yaml`).
    fn install_with(name: &str, ns: &str, chart: &Path, flags: &[&str]) -> Release {
        let mut args = vec!["install", name, chart.to_str().unwrap(), "--namespace", ns];
        args.extend(IMAGE);
        args.extend_from_slice(flags);
        let release = Release {
            name: name.to_owned(),
            ns: ns.to_owned(),
        };
        ok(&format!("helm install {name}"), helm(&args));
        release
    }

    fn uninstall(&self) -> Output {
        helm(&["uninstall", &self.name, "--namespace", &self.ns])
    }

    fn fullname(&self) -> String {
        format!("{}-{CHART_NAME}", self.name)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.uninstall();
    }
}

/// Deletes cluster-scoped CRDs by name when dropped.
struct CrdCleanup(Vec<String>);

impl Drop for CrdCleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = common::kubectl(&["delete", "crd", name, "--ignore-not-found"], None);
        }
    }
}

fn crd_exists(name: &str) -> bool {
    let out = common::kubectl(&["get", "crd", name, "-o", "name"], None);
    out.status.success()
}

/// Copies `from` into `to` recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the chart whose CRD templates define their kinds in a group of their own
/// (`<tag>.keep.test`, kinds `K<tag>PersonalToken`, `K<tag>KbApiKey` and `K<tag>NuaKey`, no short names or
/// categories), so installing and uninstalling it never touches the shared `nuclia.dev` CRDs
/// nor makes `kubectl get npt` ambiguous. Returns the CRD names.
fn chart_with_private_crds(dir: &Path, tag: &str) -> Vec<String> {
    copy_dir(&chart(), dir);
    let mut crds = Vec::new();
    for (file, plural, kind, short) in [
        (
            "nucliapersonaltoken.yaml",
            "nucliapersonaltoken",
            "NucliaPersonalToken",
            "npt",
        ),
        (
            "nucliakbapikey.yaml",
            "nucliakbapikey",
            "NucliaKbApiKey",
            "nkak",
        ),
        ("nuclianuakey.yaml", "nuclianuakey", "NucliaNuaKey", "nnk"),
        (
            "nucliaclustercredential.yaml",
            "nucliaclustercredential",
            "NucliaClusterCredential",
            "ncc",
        ),
    ] {
        let path = dir.join("templates/crds").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        for removed in [
            "    categories:\n    - nuclia\n".to_owned(),
            format!("    shortNames:\n    - {short}\n"),
        ] {
            assert!(
                text.contains(&removed),
                "{file}: the generated CRD layout changed; update this test"
            );
        }
        let new_plural = format!("k{tag}{}", &plural["nuclia".len()..]);
        let new_kind = format!("K{tag}{}", &kind["Nuclia".len()..]);
        let group = format!("{tag}.keep.test");
        let text = text
            .replace("    categories:\n    - nuclia\n", "")
            .replace(&format!("    shortNames:\n    - {short}\n"), "")
            .replace(plural, &new_plural)
            .replace(kind, &new_kind)
            .replace("nuclia.dev", &group);
        std::fs::write(&path, text).unwrap();
        crds.push(format!("{new_plural}s.{group}"));
    }
    crds
}

/// A kube client from a kubeconfig file.
async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("kube client")
}

/// Writes (mode 0600) a kubeconfig for the test apiserver that authenticates with `token`.
fn token_kubeconfig(path: &Path, token: &str, ns: &str) {
    let admin = Kubeconfig::read_from(&common::cluster().kubeconfig).expect("admin kubeconfig");
    let cluster = admin.clusters[0].cluster.as_ref().expect("cluster entry");
    let server = cluster.server.as_deref().expect("server");
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => format!("certificate-authority-data: {data}"),
        (None, Some(file)) => format!("certificate-authority: {file}"),
        (None, None) => "insecure-skip-tls-verify: true".to_owned(),
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    {ca}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context: {{cluster: local, user: sa, namespace: {ns}}}\ncurrent-context: sa\n"
    );
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .expect("write kubeconfig");
    f.write_all(yaml.as_bytes()).expect("write kubeconfig");
}

/// Mints a token of ServiceAccount `ns/name` (TokenRequest API, as the kubelet does for a pod)
/// and writes a kubeconfig that uses it into `dir`.
async fn sa_kubeconfig(client: &Client, ns: &str, name: &str, dir: &Path) -> PathBuf {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let minted = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the chart's ServiceAccount");
    let token = minted.status.expect("token").token;
    let path = dir.join("kubeconfig");
    token_kubeconfig(&path, &token, ns);
    path
}

/// The HTTP status of a kube request: 200 when it succeeded, the apiserver's code otherwise.
/// The chart installed in the world's namespace with `sets` (`crds.enabled=false` added), and
/// the operator run as its pods would: with a token of the chart's ServiceAccount, its lease and
/// installation ConfigMap in that namespace, and `extra` arguments. The kubeconfig lives in the
/// returned directory.
async fn chart_operator(
    w: &World,
    sets: &[&str],
    extra: &[&str],
) -> (Release, OperatorProcess, tempfile::TempDir) {
    let mut all = vec!["crds.enabled=false"];
    all.extend_from_slice(sets);
    let release = Release::install(&format!("nto-{}", suffix()), &w.ns, &chart(), &all);
    let full = release.fullname();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = sa_kubeconfig(&w.client, &w.ns, &full, dir.path()).await;
    let installation = format!("{full}-installation");
    let mut args = vec![
        "--lease-namespace",
        &w.ns,
        "--installation-configmap",
        &installation,
    ];
    args.extend_from_slice(extra);
    let op = w.spawn_operator("sa", &kubeconfig, false, &args);
    (release, op, dir)
}

fn http_code<T>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(e) => panic!("request failed without an HTTP status: {e}"),
    }
}

fn pt_manifest(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {{name: {name}}}\nspec:\n  description: deploy test\n  days: 1\n  auth: {{secretRef: {{name: login}}}}\n{extra_spec}"
    )
}

async fn mints(w: &World) -> u64 {
    w.admin("calls").await[PAT_MINTS].as_u64().unwrap_or(0)
}

/// Waits until only the current token (none in grace) is live at Nuclia for `uid`.
async fn settles(w: &World, api: &Api<NucliaPersonalToken>, name: &str, uid: &str) -> bool {
    common::poll(MINUTE, || async {
        let s = api.get(name).await.ok()?.status?;
        let live = w.live_marked(uid).await;
        (s.previous_tokens.is_empty() && live == vec![s.token_id.clone()?]).then_some(())
    })
    .await
    .is_some()
}

async fn get_text(http: &reqwest::Client, addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match http.get(format!("http://{addr}{path}")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// The value of the sample `series` (name and labels exactly as exposed) in OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

const ACQUIRED: &str = "acquired the lease; starting controllers";

fn acquired(p: &OperatorProcess) -> usize {
    p.log_text().matches(ACQUIRED).count()
}

fn issued_lines(p: &OperatorProcess) -> usize {
    p.log_text()
        .lines()
        .filter(|l| l.contains(": issued kind="))
        .count()
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get(name)
        .await
        .ok()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

// ---------------------------------------------------------------------------------------------
// 1. the chart

/// `helm lint` and `helm template` pass, and the rendered objects are what the README promises:
/// CRDs identical to the generated ones with the keep policy, hardened pod, RBAC scoped by
/// `watchNamespaces`, PDB only with replicas; the values schema refuses a bad value.
#[test]
fn chart_lints_and_renders() {
    let chart = chart();
    ok(
        "helm lint --strict",
        helm(&["lint", "--strict", chart.to_str().unwrap()]),
    );

    let docs = render(&[]);
    let crds = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 4, "four CRDs by default");
    for want in nuclia_token_operator::crds::crds() {
        let name = want.metadata.name.clone().unwrap();
        let have = crds
            .iter()
            .find(|d| d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("CRD {name} not rendered"));
        assert_eq!(
            have["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}: crds.keep is on by default"
        );
        assert_eq!(
            have["spec"],
            serde_json::to_value(&want.spec).unwrap(),
            "{name}: the chart's CRD differs from the generated one (run `cargo run --bin crdgen`)"
        );
    }
    for d in render(&["crds.keep=false"])
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
    {
        assert!(
            d["metadata"]["annotations"]["helm.sh/resource-policy"].is_null(),
            "crds.keep=false drops the keep policy"
        );
    }
    assert!(of_kind(&render(&["crds.enabled=false"]), "CustomResourceDefinition").is_empty());

    // Cluster-wide by default: the controller ClusterRole, the kube-system reader, the users'
    // aggregated view and edit roles, the Lease Role in the release namespace only.
    let full = format!("nto-{CHART_NAME}");
    let user_roles = [format!("/{full}-view"), format!("/{full}-edit")];
    assert_eq!(
        names(&of_kind(&docs, "ClusterRole")),
        BTreeSet::from([
            format!("/{full}"),
            format!("/{full}-cluster-credentials"),
            format!("/{full}-cluster-id"),
            user_roles[0].clone(),
            user_roles[1].clone()
        ])
    );
    assert_eq!(
        names(&of_kind(&docs, "Role")),
        BTreeSet::from([
            format!("ops/{full}-cluster-credentials"),
            format!("ops/{full}-installation"),
            format!("ops/{full}-leader-election")
        ])
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert_eq!(of_kind(&docs, "ServiceAccount").len(), 1);
    assert_eq!(of_kind(&docs, "Service").len(), 1);
    let env = settings_of(&docs);
    assert!(env.contains(&setting("LEADER_ELECT", "true")), "{env:?}");
    assert!(env.contains(&setting("LEASE_NAMESPACE", "ops")), "{env:?}");
    assert!(env.contains(&setting("IDENTITY", "pod-0")), "{env:?}");
    assert!(!env.iter().any(|(n, _)| n.ends_with("WATCH_NAMESPACES")));

    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());

    // Namespaced: one Role per watched namespace, no controller ClusterRole; the users'
    // aggregated roles (which grant the operator nothing) unless turned off.
    let docs = render(&[
        "watchNamespaces={apps,ci}",
        "clusterId=prod",
        "clusterCredentials.enabled=false",
    ]);
    assert_eq!(
        names(&of_kind(&docs, "ClusterRole")),
        BTreeSet::from(user_roles.clone())
    );
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    assert!(settings_of(&docs).contains(&setting("CLUSTER_CREDENTIALS", "false")));
    let docs = render(&[
        "watchNamespaces={apps,ci}",
        "clusterId=prod",
        "rbac.aggregateClusterRoles=false",
        "clusterCredentials.enabled=false",
    ]);
    assert_eq!(
        names(&of_kind(&docs, "Role")),
        BTreeSet::from([
            format!("apps/{full}"),
            format!("ci/{full}"),
            format!("ops/{full}-installation"),
            format!("ops/{full}-leader-election")
        ])
    );
    assert!(
        of_kind(&docs, "ClusterRole").is_empty(),
        "namespaced mode with clusterId set needs nothing cluster-wide"
    );
    let env = settings_of(&docs);
    assert!(
        env.contains(&setting("WATCH_NAMESPACES", "apps,ci")),
        "{env:?}"
    );
    assert!(env.contains(&setting("CLUSTER_ID", "prod")), "{env:?}");

    let docs = render(&["replicaCount=2"]);
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    let docs = render(&[
        "leaderElection.enabled=false",
        "clusterCredentials.enabled=false",
    ]);
    assert_eq!(
        names(&of_kind(&docs, "Role")),
        BTreeSet::from([format!("ops/{full}-installation")]),
        "without leader election only the installation ConfigMap's Role is left"
    );
    assert!(settings_of(&docs).contains(&setting("LEADER_ELECT", "false")));

    let bad = helm(&[
        "template",
        "nto",
        chart.to_str().unwrap(),
        "--set",
        "logFormat=xml",
    ]);
    assert!(
        !bad.status.success(),
        "values.schema.json accepts logFormat=xml"
    );
}

/// `helm install` into a fresh namespace of the real apiserver is accepted (every object is
/// created), and `helm uninstall` removes them, cluster-scoped RBAC included.
#[tokio::test]
async fn chart_installs_and_uninstalls() {
    let client = common::client().await;
    common::install_crds(&client).await;
    let ns = common::namespace(&client, "deploy-helm").await;
    let release = Release::install(
        &format!("nto-{}", suffix()),
        &ns,
        &chart(),
        &["crds.enabled=false", "replicaCount=2"],
    );
    let full = release.fullname();
    let status = ok(
        "helm status",
        helm(&["status", &release.name, "--namespace", &ns]),
    );
    assert!(status.contains("STATUS: deployed"), "{status}");
    let listed = ok(
        "kubectl get",
        common::kubectl(
            &[
                "get",
                "-n",
                &ns,
                "deployment,serviceaccount,service,role,rolebinding,poddisruptionbudget",
                "-o",
                "name",
            ],
            None,
        ),
    );
    for want in [
        format!("deployment.apps/{full}"),
        format!("serviceaccount/{full}"),
        format!("service/{full}-metrics"),
        format!("role.rbac.authorization.k8s.io/{full}-leader-election"),
        format!("rolebinding.rbac.authorization.k8s.io/{full}-leader-election"),
        format!("poddisruptionbudget.policy/{full}"),
    ] {
        assert!(
            listed.lines().any(|l| l == want),
            "{want} missing:\n{listed}"
        );
    }
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    for name in [
        full.clone(),
        format!("{full}-cluster-id"),
        format!("{full}-view"),
        format!("{full}-edit"),
    ] {
        assert!(
            cluster_roles.get_opt(&name).await.unwrap().is_some(),
            "ClusterRole {name} missing"
        );
    }
    ok("helm uninstall", release.uninstall());
    for name in [
        full.clone(),
        format!("{full}-cluster-id"),
        format!("{full}-view"),
        format!("{full}-edit"),
    ] {
        let gone = common::poll(MINUTE, || async {
            cluster_roles
                .get_opt(&name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        assert!(gone.is_some(), "ClusterRole {name} left after uninstall");
    }
    let left = ok(
        "kubectl get",
        common::kubectl(
            &[
                "get",
                "-n",
                &ns,
                "deployment,serviceaccount,service,role",
                "-o",
                "name",
            ],
            None,
        ),
    );
    assert!(
        !left.contains(&full),
        "objects of the release left after uninstall: {left}"
    );
    drop(release);
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// With `crds.keep` (the default) `helm uninstall` leaves the chart's CRDs in place; with
/// `crds.keep=false` it deletes them. Uses a copy of the chart whose CRDs are renamed into a
/// private group, so the shared `nuclia.dev` CRDs are never at risk.
#[tokio::test]
async fn chart_uninstall_keeps_crds_when_asked() {
    let client = common::client().await;
    let ns = common::namespace(&client, "deploy-keep").await;
    let mut cleanup = CrdCleanup(Vec::new());
    for keep in [true, false] {
        let tag = format!("t{}", suffix());
        let dir = tempfile::tempdir().unwrap();
        let chart = dir.path().join(CHART_NAME);
        let crds = chart_with_private_crds(&chart, &tag);
        cleanup.0.extend(crds.iter().cloned());
        let release = Release::install(
            &format!("keep-{tag}"),
            &ns,
            &chart,
            &[
                "crds.enabled=true",
                &format!("crds.keep={keep}"),
                "rbac.create=false",
            ],
        );
        for crd in &crds {
            assert!(crd_exists(crd), "helm install did not create CRD {crd}");
        }
        ok("helm uninstall", release.uninstall());
        if keep {
            for crd in &crds {
                assert!(crd_exists(crd), "crds.keep=true: uninstall deleted {crd}");
            }
        } else {
            let gone = common::poll(MINUTE, || async {
                crds.iter().all(|c| !crd_exists(c)).then_some(())
            })
            .await;
            assert!(gone.is_some(), "crds.keep=false: uninstall left {crds:?}");
        }
    }
    drop(cleanup);
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

// ---------------------------------------------------------------------------------------------
// 2. RBAC

/// The operator runs with a token of the chart's ServiceAccount (cluster-wide RBAC, leader
/// election on, no `--cluster-id`): it issues, rotates on request, and on delete revokes and
/// removes the Secret, with Events and without a single forbidden request; a KB key is issued
/// and revoked the same way. The same token is refused what the role does not grant.
#[tokio::test]
async fn chart_rbac_is_enough_and_no_more() {
    let w = World::new("deploy-rbac").await;
    let lease = "nto-rbac-lease";
    let (release, mut op, dir) = chart_operator(
        &w,
        &[],
        &[
            "--leader-elect",
            "--lease-name",
            lease,
            "--identity",
            "sa-0",
        ],
    )
    .await;
    let kubeconfig = dir.path().join("kubeconfig");
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.kubectl_apply(&pt_manifest(
        "rbac",
        "  rotation: {revokePreviousAfter: 2s}\n  secret: {name: rbac-token}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "rbac", MINUTE, "Ready under the chart's RBAC", ready).await;
    let uid = api.get("rbac").await.unwrap().metadata.uid.unwrap();
    let tok = w.secret_value("rbac-token", "token").await.unwrap();
    assert!(w.pat_works(&tok).await, "the issued token works");
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    assert_eq!(lease_holder(&leases, lease).await.as_deref(), Some("sa-0"));

    w.kubectl(&["annotate", "npt", "rbac", "nuclia.dev/rotate=rbac-1"]);
    let first_id = first.token_id.clone().unwrap();
    let second = wait_status(&api, "rbac", MINUTE, "rotation on request", |s| {
        ready(s) && s.token_id.as_ref() != Some(&first_id)
    })
    .await;
    assert_eq!(second.rotate_handled.as_deref(), Some("rbac-1"));
    assert!(
        w.pat_works(&w.secret_value("rbac-token", "token").await.unwrap())
            .await
    );
    assert!(
        settles(&w, &api, "rbac", &uid).await,
        "the rotated-out token was not revoked after its grace period"
    );

    // A spec change that shapes the token rotates it with an Event (a requested rotation is
    // told by status alone): Events went through (core or events.k8s.io, both granted).
    let second_id = second.token_id.clone().unwrap();
    w.kubectl(&[
        "patch",
        "npt",
        "rbac",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"days":2}}"#,
    ]);
    wait_status(&api, "rbac", MINUTE, "rotation on a spec change", |s| {
        ready(s) && s.token_id.as_ref() != Some(&second_id)
    })
    .await;
    let events: Api<Event> = Api::namespaced(w.client.clone(), &w.ns);
    let reasons = common::poll(MINUTE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let r: BTreeSet<String> = list.items.into_iter().filter_map(|e| e.reason).collect();
        r.contains("Rotated").then_some(r)
    })
    .await;
    assert!(reasons.is_some(), "a Rotated Event expected");

    api.delete("rbac", &DeleteParams::default()).await.unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("rbac").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the finalizer never let the resource go");
    assert!(
        w.live_marked(&uid).await.is_empty(),
        "tokens left at Nuclia after delete"
    );
    let secret_gone = common::poll(MINUTE, || async {
        w.secrets()
            .get_opt("rbac-token")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(secret_gone.is_some(), "Secret left after delete");

    // A KB key too: issue and delete (the service account it created is removed).
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    w.kubectl_apply(&format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: search}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{secretRef: {{name: login}}}}\n"
    ));
    let keys: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&keys, "search", MINUTE, "KB key Ready", ready).await;
    let key = w.secret_value("search", "token").await.unwrap();
    assert!(w.kb_key_works(&kb_url, &key).await);
    keys.delete("search", &DeleteParams::default())
        .await
        .unwrap();
    let gone = common::poll(MINUTE, || async {
        keys.get_opt("search").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the KB key's finalizer never let it go");
    assert!(!w.kb_key_works(&kb_url, &key).await, "the key is revoked");

    // It read kube-system's UID for its cluster id (the -cluster-id ClusterRole).
    let kube_system = Api::<Namespace>::all(w.client.clone())
        .get("kube-system")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let log = op.log_text();
    assert!(
        log.contains(&format!("cluster_id={kube_system}")),
        "the operator did not use kube-system's UID; see {}",
        op.log.display()
    );
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a request was forbidden under the chart's RBAC; see {}",
        op.log.display()
    );
    assert!(
        op.running(),
        "the operator exited; see {}",
        op.log.display()
    );

    // Outside the role: refused (and the token is good: the allowed requests pass).
    let sa = client_from(&kubeconfig).await;
    let ns = w.ns.clone();
    assert_eq!(
        http_code(
            Api::<Secret>::namespaced(sa.clone(), &ns)
                .list(&ListParams::default())
                .await
        ),
        200,
        "the ServiceAccount token authenticates"
    );
    assert_eq!(
        http_code(Api::<Namespace>::all(sa.clone()).get("kube-system").await),
        200
    );
    let denied = [
        (
            "list pods",
            http_code(
                Api::<Pod>::namespaced(sa.clone(), &ns)
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "delete its namespace",
            http_code(
                Api::<Namespace>::all(sa.clone())
                    .delete(&ns, &DeleteParams::default())
                    .await,
            ),
        ),
        (
            "list namespaces",
            http_code(
                Api::<Namespace>::all(sa.clone())
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "list ClusterRoles",
            http_code(
                Api::<ClusterRole>::all(sa.clone())
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "read Leases outside the release namespace",
            http_code(
                Api::<Lease>::namespaced(sa.clone(), "default")
                    .list(&ListParams::default())
                    .await,
            ),
        ),
    ];
    for (what, code) in denied {
        assert_eq!(code, 403, "the ServiceAccount may {what}");
    }
    // A namespace's labels, for a NucliaClusterCredential's namespaceSelector: get, never list.
    assert_eq!(
        http_code(Api::<Namespace>::all(sa.clone()).get("default").await),
        200
    );
    op.kill();
    w.assert_no_tokens_in(&op.log).await;
    drop(release);
}

/// Namespaced mode (`watchNamespaces: [ns]`): a Role in the namespace, nothing cluster-wide but
/// the kube-system reader. With the ServiceAccount's token the operator issues and deletes a
/// token without a forbidden request, and cannot read Secrets elsewhere.
#[tokio::test]
async fn chart_namespaced_rbac_one_namespace() {
    namespaced_rbac(false).await;
}

/// The same with two watched namespaces: one watch per namespace, none at cluster scope (the
/// per-namespace Roles would refuse it with 403).
#[tokio::test]
async fn chart_namespaced_rbac_two_namespaces() {
    namespaced_rbac(true).await;
}

async fn namespaced_rbac(two: bool) {
    let w = World::new("deploy-nsrbac").await;
    let other = if two {
        common::namespace(&w.client, "deploy-nsrbac-b").await
    } else {
        w.ns.clone()
    };
    let watched: Vec<&str> = if two {
        vec![w.ns.as_str(), other.as_str()]
    } else {
        vec![w.ns.as_str()]
    };
    let extra: &[&str] = if two {
        &["--watch-namespaces", &other]
    } else {
        &[]
    };
    let (release, mut op, dir) = chart_operator(
        &w,
        &[
            "leaderElection.enabled=false",
            &format!("watchNamespaces={{{}}}", watched.join(",")),
        ],
        extra,
    )
    .await;
    let full = release.fullname();
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster_roles: Api<ClusterRole> = Api::all(w.client.clone());
    assert!(
        cluster_roles.get_opt(&full).await.unwrap().is_none(),
        "namespaced mode created the cluster-wide role"
    );

    let pat = w.fake.bootstrap.pat.clone();
    for &ns in &watched {
        let login: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
            "stringData": {"token": pat}
        }))
        .unwrap();
        Api::<Secret>::namespaced(w.client.clone(), ns)
            .create(&PostParams::default(), &login)
            .await
            .unwrap();
        let out = common::kubectl(
            &["apply", "-n", ns, "-f", "-"],
            Some(&pt_manifest("scoped", "")),
        );
        ok("kubectl apply", out);
    }
    for &ns in &watched {
        let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), ns);
        wait_status(&api, "scoped", MINUTE, "Ready in namespaced mode", ready).await;
    }
    let log = op.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a request was forbidden under the namespaced RBAC; see {}",
        op.log.display()
    );
    let sa = client_from(&kubeconfig).await;
    assert_eq!(
        http_code(
            Api::<Secret>::namespaced(sa.clone(), &other)
                .list(&ListParams::default())
                .await
        ),
        200
    );
    assert_eq!(
        http_code(
            Api::<Secret>::namespaced(sa.clone(), "default")
                .list(&ListParams::default())
                .await
        ),
        403,
        "Secrets of an unwatched namespace are readable"
    );
    assert_eq!(
        http_code(Api::<Secret>::all(sa).list(&ListParams::default()).await),
        403,
        "Secrets of all namespaces are readable"
    );
    for &ns in &watched {
        let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), ns);
        api.delete("scoped", &DeleteParams::default())
            .await
            .unwrap();
        let gone = common::poll(MINUTE, || async {
            api.get_opt("scoped").await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "{ns}: the finalizer never let the resource go"
        );
    }
    op.kill();
    w.assert_no_tokens_in(&op.log).await;
    drop(release);
}

// ---------------------------------------------------------------------------------------------
// 3. leader election

/// Three operator processes on one Lease: exactly one acts and mints; SIGKILL of the leader
/// hands over after the lease expires and the requested rotation happens; SIGTERM of the next
/// leader releases the Lease before the process exits and the last one takes over. Every
/// rotation mints exactly one token.
#[tokio::test]
async fn leader_election_one_acts_and_hands_over() {
    let w = World::new("deploy-le").await;
    let kubeconfig = common::cluster().kubeconfig.clone();
    let lease_name = "nto-le";
    let mut ops: Vec<OperatorProcess> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            w.spawn_operator(
                id,
                &kubeconfig,
                true,
                &[
                    "--leader-elect",
                    "--lease-namespace",
                    &w.ns,
                    "--lease-name",
                    lease_name,
                    "--lease-duration",
                    "6s",
                    "--identity",
                    id,
                ],
            )
        })
        .collect();
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    let first = common::poll(MINUTE, || async {
        let leading: Vec<usize> = (0..ops.len()).filter(|&i| acquired(&ops[i]) > 0).collect();
        (leading.len() == 1).then(|| leading[0])
    })
    .await
    .expect("no single replica acquired the lease");
    assert_eq!(
        lease_holder(&leases, lease_name).await.as_deref(),
        Some(ops[first].name.as_str())
    );

    // Standbys are ready (standing by is healthy) and say they are not leading.
    for (i, op) in ops.iter().enumerate() {
        let addr = op.http_addr().await;
        let (code, body) = common::poll(MINUTE, || async {
            let r = get_text(&w.http, addr, "/readyz").await;
            (r.0 == 200).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("{}: /readyz never answered 200", op.name));
        let role = if i == first { "leading" } else { "standby" };
        assert!(
            body.contains(&format!("leader={role}")),
            "{}: {code} {body}",
            op.name
        );
        let (_, metrics) = get_text(&w.http, addr, "/metrics").await;
        let want = if i == first { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&metrics, "nuclia_operator_leader"),
            Some(want),
            "{}",
            op.name
        );
    }

    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.kubectl_apply(&pt_manifest(
        "le",
        "  rotation: {revokePreviousAfter: 2s}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "le", MINUTE, "Ready", ready).await;
    let uid = api.get("le").await.unwrap().metadata.uid.unwrap();
    let mut ids = vec![s.token_id.clone().unwrap()];
    assert_eq!(mints(&w).await, 1, "one resource, one mint");
    for (i, op) in ops.iter().enumerate() {
        let want = usize::from(i == first);
        assert_eq!(issued_lines(op), want, "{} issued", op.name);
        assert_eq!(acquired(op), want, "{} acquired the lease", op.name);
    }

    // SIGKILL the leader: the lease expires, another takes over and rotates as requested.
    let killed_at = Instant::now();
    ops[first].kill();
    w.kubectl(&["annotate", "npt", "le", "nuclia.dev/rotate=after-kill"]);
    let second = common::poll(MINUTE, || async {
        (0..ops.len()).find(|&i| i != first && acquired(&ops[i]) > 0)
    })
    .await
    .expect("nobody took over after SIGKILL of the leader");
    let after_kill = killed_at.elapsed();
    let prev = ids[0].clone();
    let s = wait_status(&api, "le", MINUTE, "rotation after the hand-over", |s| {
        ready(s) && s.token_id.as_ref() != Some(&prev)
    })
    .await;
    ids.push(s.token_id.clone().unwrap());
    assert_eq!(s.rotate_handled.as_deref(), Some("after-kill"));
    assert_eq!(mints(&w).await, 2, "one mint for the one rotation");

    // SIGTERM the new leader: it releases the Lease before exiting; the last one takes over.
    let termed_at = Instant::now();
    let exit = ops[second].terminate(MINUTE).await;
    let exited_after = termed_at.elapsed();
    assert!(
        exit.is_some_and(|e| e.success()),
        "{}: SIGTERM did not end the process cleanly ({exit:?}); see {}",
        ops[second].name,
        ops[second].log.display()
    );
    let holder = lease_holder(&leases, lease_name).await;
    assert_ne!(
        holder.as_deref(),
        Some(ops[second].name.as_str()),
        "the Lease still names the replica that shut down: it was not released"
    );
    assert!(ops[second].log_text().contains("released the lease"));
    let third = common::poll(MINUTE, || async {
        (0..ops.len()).find(|&i| i != first && i != second && acquired(&ops[i]) > 0)
    })
    .await
    .expect("nobody took over after SIGTERM of the leader");
    let after_term = termed_at.elapsed();
    w.kubectl(&[
        "annotate",
        "npt",
        "le",
        "nuclia.dev/rotate=after-term",
        "--overwrite",
    ]);
    let prev = ids[1].clone();
    let s = wait_status(&api, "le", MINUTE, "rotation after the release", |s| {
        ready(s) && s.token_id.as_ref() != Some(&prev)
    })
    .await;
    ids.push(s.token_id.clone().unwrap());
    assert_eq!(s.rotate_handled.as_deref(), Some("after-term"));
    println!(
        "leader election (lease 6s): SIGKILL {} -> {} acting after {:.1}s; SIGTERM {} -> exited after {:.1}s, {} acting after {:.1}s",
        ops[first].name,
        ops[second].name,
        after_kill.as_secs_f64(),
        ops[second].name,
        exited_after.as_secs_f64(),
        ops[third].name,
        after_term.as_secs_f64()
    );

    // One token per issue or rotation, each minted by the replica leading at the time.
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 3);
    assert_eq!(
        mints(&w).await,
        3,
        "tokens minted for 1 issue + 2 rotations"
    );
    let issued: Vec<usize> = ops.iter().map(issued_lines).collect();
    let mut want = vec![0; 3];
    for i in [first, second, third] {
        want[i] = 1;
    }
    assert_eq!(issued, want, "issued per replica (a, b, c)");
    assert!(
        settles(&w, &api, "le", &uid).await,
        "rotated-out tokens were not revoked after their grace period"
    );
    for op in &mut ops {
        op.kill();
    }
    for op in &ops {
        w.assert_no_tokens_in(&op.log).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. metrics and health

/// `/healthz` and `/readyz` answer 200 once synced; `/metrics` shows each resource's expiry and
/// renewal time equal to its status (Unix seconds), its Ready state, the Nuclia calls the fake
/// counted (by `code`), reconcile durations and errors, `build_info`; a rotation moves the
/// expiry, and the replaced token's count returns to 0 once it is revoked; a delete drops the
/// series, also one the operator did not clean up (finalizer removed by hand).
#[tokio::test]
async fn metrics_match_the_status() {
    let w = World::new("deploy-metrics").await;
    let op = w.spawn_operator("m", &common::cluster().kubeconfig.clone(), true, &[]);
    let addr = op.http_addr().await;
    let (code, _) = get_text(&w.http, addr, "/healthz").await;
    assert_eq!(code, 200, "/healthz");
    let synced = common::poll(MINUTE, || async {
        let r = get_text(&w.http, addr, "/readyz").await;
        (r.0 == 200).then_some(r.1)
    })
    .await
    .expect("/readyz never answered 200");
    assert!(synced.contains("caches_synced=true"), "{synced}");

    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.kubectl_apply(&pt_manifest("m", "  rotation: {revokePreviousAfter: 1s}\n"));
    w.kubectl_apply(&pt_manifest("nocreds", "").replace("name: login", "name: missing"));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let s = wait_status(&api, "m", MINUTE, "Ready", ready).await;
    wait_status(&api, "nocreds", MINUTE, "CredentialsMissing", |s| {
        reason(s).as_deref() == Some("CredentialsMissing")
    })
    .await;

    let labels = |name: &str| {
        format!(
            "{{kind=\"NucliaPersonalToken\",namespace=\"{}\",name=\"{name}\"}}",
            w.ns
        )
    };
    let expiry = format!("nuclia_credential_expiry_timestamp_seconds{}", labels("m"));
    let renewal = format!("nuclia_credential_renewal_timestamp_seconds{}", labels("m"));
    let ready_m = format!("nuclia_credential_ready{}", labels("m"));
    let ready_bad = format!("nuclia_credential_ready{}", labels("nocreds"));
    let not_after = s.not_after.unwrap().timestamp() as f64;
    // Without rotation windows the next renewal is the renewal time.
    assert_eq!(s.next_renewal, s.renewal_time);
    let renew_at = s.next_renewal.unwrap().timestamp() as f64;
    let text = common::poll(MINUTE, || async {
        let (_, t) = get_text(&w.http, addr, "/metrics").await;
        (sample(&t, &expiry) == Some(not_after) && sample(&t, &ready_bad).is_some()).then_some(t)
    })
    .await
    .unwrap_or_else(|| panic!("{expiry} never equalled status.notAfter {not_after}"));
    assert_eq!(
        sample(&text, &renewal),
        Some(renew_at),
        "renewal == status.nextRenewal"
    );
    assert_eq!(sample(&text, &ready_m), Some(1.0));
    assert_eq!(sample(&text, &ready_bad), Some(0.0), "not Ready → 0");
    assert!(
        !text.contains(&format!(
            "nuclia_credential_expiry_timestamp_seconds{}",
            labels("nocreds")
        )),
        "no expiry series for a resource without a credential"
    );
    // Requests by operation and code (the HTTP status, or a failure class).
    let mint_series = r#"nuclia_api_requests_total{operation="create_personal_token",code=""#;
    let counted: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix(mint_series))
        .filter_map(|rest| rest.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        counted,
        mints(&w).await as f64,
        "the operator's count of mint requests equals the fake's"
    );
    assert_eq!(
        sample(
            &text,
            r#"nuclia_api_requests_total{operation="create_personal_token",code="201"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"nuclia_api_requests_total{operation="create_personal_token",code="401"}"#
        ),
        Some(0.0),
        "the 401 series the alert counts exists from the first request"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"nuclia_operator_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "build_info"
    );
    let previous = format!("nuclia_credential_previous_tokens{}", labels("m"));
    assert_eq!(sample(&text, &previous), Some(0.0), "nothing replaced yet");
    let reconciles = sample(
        &text,
        r#"nuclia_operator_reconcile_duration_seconds_count{kind="NucliaPersonalToken"}"#,
    )
    .unwrap_or(0.0);
    assert!(reconciles >= 2.0, "reconcile durations: {reconciles}");
    assert!(
        text.lines().any(|l| {
            l.starts_with("nuclia_operator_reconcile_duration_seconds_bucket{")
                && l.contains(r#"kind="NucliaPersonalToken""#)
                && l.contains("le=")
        }),
        "reconcile duration histogram buckets"
    );
    assert!(
        sample(
            &text,
            r#"nuclia_operator_reconcile_errors_total{kind="NucliaPersonalToken",reason="CredentialsMissing"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "reconcile errors by reason"
    );
    assert_eq!(
        sample(&text, "nuclia_operator_leader"),
        Some(1.0),
        "without leader election the only replica acts"
    );

    // A rotation moves the series with the status.
    let id1 = s.token_id.clone().unwrap();
    w.kubectl(&["annotate", "npt", "m", "nuclia.dev/rotate=metrics"]);
    let s2 = wait_status(&api, "m", MINUTE, "rotation", |s| {
        ready(s) && s.token_id.as_ref() != Some(&id1)
    })
    .await;
    let not_after2 = s2.not_after.unwrap().timestamp() as f64;
    let renew2 = s2.renewal_time.unwrap().timestamp() as f64;
    let moved = common::poll(MINUTE, || async {
        let (_, t) = get_text(&w.http, addr, "/metrics").await;
        (sample(&t, &expiry) == Some(not_after2) && sample(&t, &renewal) == Some(renew2))
            .then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "after the rotation the series did not follow status ({not_after2}, {renew2})"
    );
    // The replaced token is revoked after its 1s grace: the gauge is back to 0, no due time.
    let due = format!(
        "nuclia_credential_revocation_due_timestamp_seconds{}",
        labels("m")
    );
    let revoked = common::poll(MINUTE, || async {
        let (_, t) = get_text(&w.http, addr, "/metrics").await;
        (sample(&t, &previous) == Some(0.0) && sample(&t, &due).is_none()).then_some(())
    })
    .await;
    assert!(
        revoked.is_some(),
        "the replaced token's series stayed after its revocation"
    );

    api.delete("m", &DeleteParams::default()).await.unwrap();
    let dropped = common::poll(MINUTE, || async {
        let (_, t) = get_text(&w.http, addr, "/metrics").await;
        (!t.contains(&labels("m"))).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "the deleted resource's series stayed");
    // Gone without the operator's clean-up (its finalizer removed by hand): the series go too.
    w.kubectl(&[
        "patch",
        "npt",
        "nocreds",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    api.delete("nocreds", &DeleteParams::default())
        .await
        .unwrap();
    let dropped = common::poll(MINUTE, || async {
        let (_, t) = get_text(&w.http, addr, "/metrics").await;
        (!t.contains(&labels("nocreds"))).then_some(())
    })
    .await;
    assert!(
        dropped.is_some(),
        "the series of a resource deleted without clean-up stayed"
    );
    let log = op.log.clone();
    drop(op);
    w.assert_no_tokens_in(&log).await;
}

// ---------------------------------------------------------------------------------------------
// Rollout restarts

/// The ReplicaSets of Deployment `name`, newest last, with the restart annotation of each one's
/// pod template.
async fn replica_sets(w: &World, name: &str) -> Vec<Option<String>> {
    let api: Api<ReplicaSet> = Api::namespaced(w.client.clone(), &w.ns);
    let mut sets: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Deployment" && o.name == name)
        })
        .collect();
    sets.sort_by_key(|rs| rs.metadata.creation_timestamp.clone().map(|t| t.0));
    sets.into_iter()
        .map(|rs| {
            rs.spec?
                .template?
                .metadata?
                .annotations?
                .get("nuclia.dev/restartedAt")
                .cloned()
        })
        .collect()
}

fn whole_seconds(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `spec.rolloutRestartTargets` under the chart's RBAC: after each token reaches the Secret the
/// consumer Deployment is restarted (the controller-manager's Deployment controller makes a new
/// ReplicaSet whose pod template carries the restart), the replaced token stays valid after the
/// restart and is revoked once its grace is over, and a missing target is reported on the
/// resource without stopping the lifecycle.
#[tokio::test]
async fn rollout_restart_targets_under_the_chart_rbac() {
    let w = World::new("deploy-restart").await;
    let (release, mut op, _dir) =
        chart_operator(&w, &[], &["--rollout-restart-interval", "1s"]).await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.kubectl_apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: consumer}\nspec:\n  selector: {matchLabels: {app: consumer}}\n  template:\n    metadata: {labels: {app: consumer}}\n    spec: {containers: [{name: c, image: consumer:1}]}\n",
    );
    let first_set = common::poll(MINUTE, || async {
        (replica_sets(&w, "consumer").await.len() == 1).then_some(())
    })
    .await;
    assert!(
        first_set.is_some(),
        "the Deployment controller made no ReplicaSet"
    );

    w.kubectl_apply(&pt_manifest(
        "restart",
        "  rotation: {revokePreviousAfter: 20s}\n  secret: {name: restart-token}\n  rolloutRestartTargets:\n  - {kind: Deployment, name: consumer}\n  - {kind: Deployment, name: absent}\n",
    ));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let restarted_for_current = |s: &nuclia_token_operator::crd::CredentialStatus| {
        ready(s)
            && s.rollout_restart
                .as_ref()
                .is_some_and(|r| r.token_id == s.token_id)
    };
    let first = wait_status(
        &api,
        "restart",
        MINUTE,
        "Ready, restarted",
        restarted_for_current,
    )
    .await;
    let asked = whole_seconds(first.rollout_restart.clone().unwrap().requested_at.unwrap());
    let sets = common::poll(MINUTE, || async {
        let sets = replica_sets(&w, "consumer").await;
        (sets.len() == 2).then_some(sets)
    })
    .await
    .expect("the first token restarted the Deployment: a second ReplicaSet");
    assert_eq!(sets[1].as_deref(), Some(asked.as_str()));
    let message = first.condition("Ready").unwrap().message.clone();
    assert!(
        message.contains("Deployment absent not found"),
        "the missing target is not reported: {message}"
    );
    let events: Api<Event> = Api::namespaced(w.client.clone(), &w.ns);
    let failed = common::poll(MINUTE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolloutRestartFailed"))
            .then_some(())
    })
    .await;
    assert!(failed.is_some(), "a RolloutRestartFailed Event expected");

    let uid = api.get("restart").await.unwrap().metadata.uid.unwrap();
    let old = w.secret_value("restart-token", "token").await.unwrap();
    w.kubectl(&["annotate", "npt", "restart", "nuclia.dev/rotate=r1"]);
    let first_id = first.token_id.clone().unwrap();
    let second = wait_status(&api, "restart", MINUTE, "rotated, restarted", |s| {
        restarted_for_current(s) && s.token_id.as_ref() != Some(&first_id)
    })
    .await;
    let asked = whole_seconds(
        second
            .rollout_restart
            .clone()
            .unwrap()
            .requested_at
            .unwrap(),
    );
    let sets = common::poll(MINUTE, || async {
        let sets = replica_sets(&w, "consumer").await;
        (sets.len() == 3).then_some(sets)
    })
    .await
    .expect("the rotation restarted the Deployment: a third ReplicaSet");
    assert_eq!(sets[2].as_deref(), Some(asked.as_str()));
    assert!(
        w.pat_works(&old).await,
        "the replaced token was revoked before the restarted pods had their grace period"
    );
    assert!(
        settles(&w, &api, "restart", &uid).await,
        "the replaced token was not revoked after its grace period"
    );
    assert!(!w.pat_works(&old).await, "the replaced token still works");
    assert!(
        !op.log_text().to_lowercase().contains("forbidden"),
        "a request was forbidden under the chart's RBAC; see {}",
        op.log.display()
    );

    api.delete("restart", &DeleteParams::default())
        .await
        .unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("restart").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the finalizer never let the resource go");
    assert!(
        w.live_marked(&uid).await.is_empty(),
        "tokens left at Nuclia after delete"
    );
    assert_eq!(
        replica_sets(&w, "consumer").await.len(),
        3,
        "deleting the resource restarted the Deployment"
    );
    op.kill();
    w.assert_no_tokens_in(&op.log).await;
    drop(release);
}

// ---------------------------------------------------------------------------------------------
// 5. chart knobs (issue 17)

/// `helm template` of the chart in namespace `ns` with a values file and more helm flags.
fn render_in(ns: &str, values: &str, flags: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let chart = chart();
    let mut args = vec![
        "template",
        "nto",
        chart.to_str().unwrap(),
        "--namespace",
        ns,
        "-f",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let text = ok(&format!("helm template -f {values}"), helm(&args));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("rendered manifest is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The operator container of the one rendered Deployment.
fn container(docs: &[serde_json::Value]) -> serde_json::Value {
    let deploy = of_kind(docs, "Deployment");
    assert_eq!(deploy.len(), 1);
    deploy[0]["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The names of the container's environment variables, in order.
fn env_names(c: &serde_json::Value) -> Vec<String> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The container's environment as a pod in namespace `ns` named `pod` would get it: values as
/// written, the downward-API fields the chart uses resolved.
fn pod_env(c: &serde_json::Value, ns: &str, pod: &str) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match (
                e["value"].as_str(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Some(v), _) => v.to_owned(),
                (None, Some("metadata.namespace")) => ns.to_owned(),
                (None, Some("metadata.name")) => pod.to_owned(),
                _ => panic!("{name}: cannot resolve {e}"),
            };
            (name, value)
        })
        .collect()
}

/// Starts the operator binary exactly as the rendered container would run: its args, its
/// environment and nothing else (but a kubeconfig, where a pod has its ServiceAccount).
fn run_as_rendered(
    c: &serde_json::Value,
    ns: &str,
    pod: &str,
    kubeconfig: &Path,
    log: &Path,
    more_env: &[(&str, &str)],
) -> OperatorProcess {
    let args: Vec<String> = c["args"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_nuclia-token-operator"))
        .env_clear()
        .envs(pod_env(c, ns, pod))
        .envs(more_env.iter().copied())
        .env("KUBECONFIG", kubeconfig)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(file))
        .spawn()
        .expect("start the operator");
    OperatorProcess {
        name: pod.to_owned(),
        child: Some(child),
        log: log.to_owned(),
    }
}

/// The operator's "starting" log line (text format), once written.
async fn starting_line(op: &OperatorProcess) -> String {
    common::poll(Duration::from_secs(30), || async {
        op.log_text()
            .lines()
            .find(|l| l.contains("nuclia-token-operator starting"))
            .map(str::to_owned)
    })
    .await
    .unwrap_or_else(|| panic!("no start-up line; see {}", op.log.display()))
}

/// Values that point the chart at this world's fake and namespace.
fn world_values(w: &World) -> String {
    format!(
        "nuclia:\n  globalUrl: {url}\n  zoneOrigins: {{{zone}: {url}}}\nwatchNamespaces: [{ns}]\nverifyInterval: 3s\nbackoffBase: 1s\nbackoffMax: 5s\n",
        url = w.fake.url,
        zone = w.fake.bootstrap.zone,
        ns = w.ns
    )
}

/// `extraArgs` override what the chart sets instead of crashing on a repeated flag: the chart
/// passes its settings as NUCLIA_OPERATOR_* variables only, `extraEnv` replaces a variable of
/// the same name, and an old unprefixed variable is ignored with a warning. The operator binary,
/// started with exactly the rendered arguments and environment, runs with the overrides (start-up
/// line, bound address, Lease) and issues and revokes a token.
#[tokio::test]
async fn chart_extra_args_override_and_start() {
    let w = World::new("deploy-xargs").await;
    let values = format!(
        "{}extraArgs: [--concurrency=3, --metrics-addr=127.0.0.1:0, --log-format=text]\nextraEnv:\n  - {{name: NUCLIA_OPERATOR_VERIFY_INTERVAL, value: 7s}}\n  - {{name: CONCURRENCY, value: \"1\"}}\n",
        world_values(&w)
    );
    let docs = render_in(&w.ns, &values, &[]);
    let c = container(&docs);
    assert_eq!(
        c["args"],
        serde_json::json!([
            "--concurrency=3",
            "--metrics-addr=127.0.0.1:0",
            "--log-format=text"
        ]),
        "the command line is extraArgs and nothing else"
    );
    let names = env_names(&c);
    for name in [
        "NUCLIA_OPERATOR_CONCURRENCY",
        "NUCLIA_OPERATOR_METRICS_ADDR",
        "NUCLIA_OPERATOR_VERIFY_INTERVAL",
    ] {
        assert_eq!(
            names.iter().filter(|n| *n == name).count(),
            1,
            "{name} once: {names:?}"
        );
    }
    let env = pod_env(&c, &w.ns, "nto-pod-0");
    assert!(env.contains(&("NUCLIA_OPERATOR_VERIFY_INTERVAL".into(), "7s".into())));
    assert!(env.contains(&("NUCLIA_OPERATOR_CONCURRENCY".into(), "8".into())));

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut op = run_as_rendered(
        &c,
        &w.ns,
        "nto-pod-0",
        &common::cluster().kubeconfig,
        &dir.path().join("operator.log"),
        &[],
    );
    let line = starting_line(&op).await;
    let full = format!("nto-{CHART_NAME}");
    for want in [
        "concurrency=3".to_owned(),
        // the chart's default
        "worker_threads=1".to_owned(),
        "verify_interval=7s".to_owned(),
        "leader_elect=true".to_owned(),
        format!("lease={}/{full}", w.ns),
        format!("namespaces={}", w.ns),
    ] {
        assert!(line.contains(&want), "{want} not in: {line}");
    }
    assert!(
        op.http_addr().await.ip().is_loopback(),
        "--metrics-addr of extraArgs did not win over the chart's 0.0.0.0"
    );
    let log = op.log_text();
    assert!(
        log.contains("CONCURRENCY->NUCLIA_OPERATOR_CONCURRENCY"),
        "no warning about the old variable:\n{log}"
    );
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    let holder = common::poll(MINUTE, || async { lease_holder(&leases, &full).await }).await;
    assert_eq!(
        holder.as_deref(),
        Some("nto-pod-0"),
        "the Lease names the pod"
    );

    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.kubectl_apply(&pt_manifest("xargs", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&api, "xargs", MINUTE, "Ready as the chart runs it", ready).await;
    api.delete("xargs", &DeleteParams::default()).await.unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("xargs").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the finalizer never let the resource go");
    assert!(
        op.running(),
        "the operator exited; see {}",
        op.log.display()
    );
    println!(
        "extraArgs override: started, Ready and revoked in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    op.kill();
    w.assert_no_tokens_in(&op.log).await;
}

/// Every variable the chart sets is NUCLIA_OPERATOR_* and one the operator reads (`--help`
/// names it), but for the standard proxy and CA variables; none of the old names is set, and
/// without extraArgs the container has no command-line arguments at all.
#[test]
fn chart_env_names_are_the_operators() {
    let help = Command::new(env!("CARGO_BIN_EXE_nuclia-token-operator"))
        .arg("--help")
        .output()
        .expect("--help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let docs = render_in(
        "ops",
        "nuclia: {zoneOrigins: {europe-1: 'https://eu.example.com'}}\nwatchNamespaces: [a, b]\nlabelSelector: shard=a\nclusterId: prod\nproxy: {httpsProxy: 'http://proxy.corp:3128', httpProxy: 'http://proxy.corp:3128'}\ncaBundle: {configMapName: corp-ca}\n",
        &[],
    );
    let c = container(&docs);
    assert!(c["args"].is_null(), "args without extraArgs: {}", c["args"]);
    let names = env_names(&c);
    let mut operator = 0;
    for name in &names {
        if let Some(_flag) = name.strip_prefix("NUCLIA_OPERATOR_") {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{name} is not a variable of the operator"
            );
            operator += 1;
        } else {
            assert!(
                ["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "SSL_CERT_DIR"].contains(&name.as_str()),
                "{name} has no NUCLIA_OPERATOR_ prefix"
            );
        }
    }
    assert_eq!(operator, 28, "every setting is passed: {names:?}");
    for old in [
        "POD_NAME",
        "POD_NAMESPACE",
        "CONCURRENCY",
        "LOG_LEVEL",
        "CLUSTER_ID",
    ] {
        assert!(!names.iter().any(|n| n == old), "{old} is still set");
    }
    let env = pod_env(&c, "ops", "p");
    for (name, value) in [
        (
            "NUCLIA_OPERATOR_NUCLIA_ZONE_ORIGIN",
            "europe-1=https://eu.example.com",
        ),
        ("NUCLIA_OPERATOR_WATCH_NAMESPACES", "a,b"),
        ("NUCLIA_OPERATOR_LABEL_SELECTOR", "shard=a"),
        ("NUCLIA_OPERATOR_CLUSTER_ID", "prod"),
        ("NUCLIA_OPERATOR_LEASE_NAMESPACE", "ops"),
        ("NUCLIA_OPERATOR_IDENTITY", "p"),
        ("NO_PROXY", "localhost,127.0.0.1,.svc,.cluster.local"),
        (
            "SSL_CERT_DIR",
            "/etc/ssl/certs:/etc/nuclia-token-operator/ca-bundle",
        ),
    ] {
        assert!(
            env.contains(&(name.to_owned(), value.to_owned())),
            "{name}={value} not in {env:?}"
        );
    }
}

/// A client of the test apiserver acting as user `user` (the admin impersonates it).
async fn impersonating(user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(&common::cluster().kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).expect("kube client")
}

/// With `rbac.aggregateClusterRoles` (the default) the chart's user roles are aggregated by the
/// controller-manager into the built-in ones: a user bound to `edit` in a namespace creates,
/// patches and deletes a NucliaKbApiKey there; a user bound to `view` reads it and is refused
/// every write; neither can touch the status.
#[tokio::test]
async fn chart_aggregated_roles_let_edit_manage_and_view_read() {
    let client = common::client().await;
    common::install_crds(&client).await;
    let ns = common::namespace(&client, "deploy-agg").await;
    let release = Release::install(
        &format!("nto-{}", suffix()),
        &ns,
        &chart(),
        &["crds.enabled=false"],
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for (name, to) in [
        (
            format!("{}-view", release.fullname()),
            ["view", "edit", "admin"].as_slice(),
        ),
        (
            format!("{}-edit", release.fullname()),
            ["edit", "admin"].as_slice(),
        ),
    ] {
        let labels = roles.get(&name).await.unwrap().metadata.labels.unwrap();
        for role in to {
            assert_eq!(
                labels
                    .get(&format!("rbac.authorization.k8s.io/aggregate-to-{role}"))
                    .map(String::as_str),
                Some("true"),
                "{name} aggregates to {role}"
            );
        }
    }
    let tag = suffix();
    let (editor, viewer) = (format!("editor-{tag}"), format!("viewer-{tag}"));
    for (user, role) in [(&editor, "edit"), (&viewer, "view")] {
        ok(
            "kubectl create rolebinding",
            common::kubectl(
                &[
                    "create",
                    "rolebinding",
                    &format!("{role}-{tag}"),
                    "-n",
                    &ns,
                    &format!("--clusterrole={role}"),
                    &format!("--user={user}"),
                ],
                None,
            ),
        );
    }
    let key = |name: &str| -> NucliaKbApiKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
            "metadata": {"name": name},
            "spec": {
                "kbUrl": "https://europe-1.dp.progress.cloud/api/v1/kb/0f6a1c2d-7e3b-4a59-9c1d-2b3e4f5a6b7c",
                "auth": {"secretRef": {"name": "login"}}
            }
        }))
        .unwrap()
    };
    let as_editor: Api<NucliaKbApiKey> = Api::namespaced(impersonating(&editor).await, &ns);
    let as_viewer: Api<NucliaKbApiKey> = Api::namespaced(impersonating(&viewer).await, &ns);
    // The aggregation controller copies the rules into `edit` shortly after the install.
    let started = Instant::now();
    let created = common::poll(MINUTE, || async {
        as_editor
            .create(&PostParams::default(), &key("tenant"))
            .await
            .ok()
    })
    .await;
    assert!(
        created.is_some(),
        "a user with `edit` cannot create a NucliaKbApiKey"
    );
    let aggregated_after = started.elapsed();
    let patch = kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "a"}}}));
    let pp = kube::api::PatchParams::default();
    assert_eq!(http_code(as_editor.patch("tenant", &pp, &patch).await), 200);
    assert_eq!(http_code(as_viewer.get("tenant").await), 200, "view reads");
    assert_eq!(
        http_code(as_viewer.list(&ListParams::default()).await),
        200,
        "view lists"
    );
    let refused = [
        (
            "create",
            http_code(
                as_viewer
                    .create(&PostParams::default(), &key("viewer"))
                    .await,
            ),
        ),
        (
            "patch",
            http_code(as_viewer.patch("tenant", &pp, &patch).await),
        ),
        (
            "delete",
            http_code(as_viewer.delete("tenant", &DeleteParams::default()).await),
        ),
        (
            "patch status (editor)",
            http_code(
                as_editor
                    .patch_status(
                        "tenant",
                        &pp,
                        &kube::api::Patch::Merge(serde_json::json!({"status": {"tokenId": "x"}})),
                    )
                    .await,
            ),
        ),
    ];
    for (what, code) in refused {
        assert_eq!(code, 403, "{what} was not refused");
    }
    assert_eq!(
        http_code(as_editor.delete("tenant", &DeleteParams::default()).await),
        200,
        "edit deletes"
    );
    println!(
        "aggregated roles: edit could create {:.1}s after the install",
        aggregated_after.as_secs_f64()
    );
    drop(release);
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// The NOTES' "create a credential" lines, pasted into bash as printed by `helm install`, run:
/// the heredoc ends, the Secret and the resource land in the watched namespace (`-n`), with the
/// labels `labelSelector` asks for. Cluster-wide, the lines name no namespace.
#[tokio::test]
async fn chart_notes_commands_run() {
    let w = World::new("deploy-notes").await;
    let notes = |sets: &[&str]| -> String {
        let chart = chart();
        let mut args = vec![
            "install",
            "nto",
            chart.to_str().unwrap(),
            "--dry-run=client",
            "--namespace",
            "ops",
            // A client dry run still refuses objects that exist in the cluster unowned.
            "--set",
            "crds.enabled=false",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = ok("helm install --dry-run=client", helm(&args));
        out.split_once("\nNOTES:\n")
            .unwrap_or_else(|| panic!("no NOTES in {out}"))
            .1
            .to_owned()
    };
    let snippet = |notes: &str| -> String {
        let start = notes
            .find("kubectl create secret")
            .unwrap_or_else(|| panic!("no commands in the NOTES:\n{notes}"));
        let rest = &notes[start..];
        let end = rest.find("kubectl get nuclia").unwrap();
        let end = end + rest[end..].find('\n').unwrap_or(rest.len() - end);
        rest[..end].to_owned()
    };

    let text = notes(&[
        &format!("watchNamespaces={{{},other}}", w.ns),
        "labelSelector=shard=a",
    ]);
    let script = snippet(&text);
    assert!(
        script.lines().any(|l| l == "YAML"),
        "no heredoc terminator at column 0:\n{script}"
    );
    let c = common::cluster();
    let path = format!(
        "{}:{}",
        c.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .expect("bash");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the NOTES' commands failed:\n{script}\n---\n{printed}"
    );
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let pt = api
        .get("ci")
        .await
        .expect("the NOTES' resource in the watched namespace");
    assert_eq!(
        pt.metadata
            .labels
            .unwrap_or_default()
            .get("shard")
            .map(String::as_str),
        Some("a"),
        "the resource carries the label the selector asks for"
    );
    assert!(w.secrets().get_opt("nuclia-login").await.unwrap().is_some());
    assert!(
        printed.contains("ci"),
        "kubectl get nuclia lists it: {printed}"
    );

    let text = notes(&[]);
    let script = snippet(&text);
    assert!(
        !script.contains(" -n "),
        "cluster-wide NOTES name a namespace:\n{script}"
    );
    assert!(script.lines().any(|l| l == "YAML"));
    assert!(!text.contains("labels:"));
}

/// Without prometheus-operator's CRDs a release with `metrics.serviceMonitor.enabled` installs
/// (no ServiceMonitor, and NOTES says why); where the API is served (`--api-versions`) the
/// ServiceMonitor carries the configured namespace, honorLabels and relabelings.
#[tokio::test]
async fn chart_service_monitor_without_crds() {
    let client = common::client().await;
    let ns = common::namespace(&client, "deploy-sm").await;
    let served = ok(
        "kubectl api-versions",
        common::kubectl(&["api-versions"], None),
    );
    if served.lines().any(|l| l == "monitoring.coreos.com/v1") {
        println!(
            "monitoring.coreos.com/v1 is served here: the install without the CRD is not checked"
        );
    } else {
        let release = Release::install(
            &format!("nto-{}", suffix()),
            &ns,
            &chart(),
            &[
                "crds.enabled=false",
                "rbac.create=false",
                "metrics.serviceMonitor.enabled=true",
            ],
        );
        let status = ok(
            "helm status",
            helm(&[
                "status",
                &release.name,
                "--namespace",
                &ns,
                "--show-resources",
            ]),
        );
        assert!(status.contains("STATUS: deployed"), "{status}");
        assert!(
            status.contains("does not serve monitoring.coreos.com/v1"),
            "NOTES do not say the ServiceMonitor was skipped:\n{status}"
        );
        let manifest = ok(
            "helm get manifest",
            helm(&["get", "manifest", &release.name, "--namespace", &ns]),
        );
        assert!(!manifest.contains("kind: ServiceMonitor"));
        drop(release);
    }
    let values = "metrics:\n  serviceMonitor:\n    enabled: true\n    namespace: monitoring\n    honorLabels: false\n    relabelings: [{targetLabel: cluster, replacement: eu}]\n    metricRelabelings: [{sourceLabels: [__name__], regex: nuclia_api_request_duration_seconds_bucket, action: drop}]\n";
    assert!(of_kind(&render_in("ops", values, &[]), "ServiceMonitor").is_empty());
    let docs = render_in(
        "ops",
        values,
        &["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"],
    );
    let sm = of_kind(&docs, "ServiceMonitor");
    assert_eq!(sm.len(), 1);
    assert_eq!(sm[0]["metadata"]["namespace"], "monitoring");
    assert_eq!(sm[0]["spec"]["namespaceSelector"]["matchNames"][0], "ops");
    let ep = &sm[0]["spec"]["endpoints"][0];
    assert_eq!(ep["honorLabels"], false);
    assert_eq!(ep["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(ep["metricRelabelings"][0]["action"], "drop");
    let docs = render_in(
        "ops",
        "metrics: {serviceMonitor: {enabled: true}}",
        &["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"],
    );
    let sm = of_kind(&docs, "ServiceMonitor");
    assert_eq!(sm[0]["metadata"]["namespace"], "ops");
    assert_eq!(
        sm[0]["spec"]["endpoints"][0]["honorLabels"], true,
        "default"
    );
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// The PodDisruptionBudget: only with more than one replica, off with
/// `podDisruptionBudget.enabled=false`, `maxUnavailable` instead of `minAvailable` when set.
#[test]
fn chart_pod_disruption_budget_switch() {
    assert!(
        of_kind(&render(&[]), "PodDisruptionBudget").is_empty(),
        "1 replica"
    );
    let docs = render(&["replicaCount=2"]);
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb[0]["spec"]["minAvailable"], 1);
    assert!(pdb[0]["spec"]["maxUnavailable"].is_null());
    assert!(
        of_kind(
            &render(&["replicaCount=2", "podDisruptionBudget.enabled=false"]),
            "PodDisruptionBudget"
        )
        .is_empty()
    );
    for (set, want) in [
        ("podDisruptionBudget.maxUnavailable=1", serde_json::json!(1)),
        (
            "podDisruptionBudget.maxUnavailable=50%",
            serde_json::json!("50%"),
        ),
    ] {
        let docs = render(&["replicaCount=3", set]);
        let pdb = of_kind(&docs, "PodDisruptionBudget");
        assert_eq!(pdb[0]["spec"]["maxUnavailable"], want, "{set}");
        assert!(pdb[0]["spec"]["minAvailable"].is_null(), "{set}");
    }
    let chart = chart();
    for bad in [
        "podDisruptionBudget.maxUnavailable=x",
        "podDisruptionBudget.minAvailable=-1",
    ] {
        let out = helm(&["template", "nto", chart.to_str().unwrap(), "--set", bad]);
        assert!(!out.status.success(), "the schema accepts {bad}");
    }
}

/// The optional egress NetworkPolicy (DNS, the apiserver, Nuclia or the proxy's port) and the
/// Deployment knobs (revisionHistoryLimit, strategy, commonLabels, caBundle, extra volumes) are
/// accepted by the real apiserver; the policy is absent by default.
#[tokio::test]
async fn chart_network_policy_and_pod_knobs_install() {
    assert!(of_kind(&render(&[]), "NetworkPolicy").is_empty());
    let client = common::client().await;
    let ns = common::namespace(&client, "deploy-np").await;
    let values = "crds: {enabled: false}\nrbac: {create: false}\nreplicaCount: 2\nrevisionHistoryLimit: 3\nstrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}\ncommonLabels: {team: platform}\npodDisruptionBudget: {maxUnavailable: 1}\nproxy: {httpsProxy: 'http://proxy.corp:3128'}\ncaBundle: {configMapName: corp-ca, key: ca.crt}\nextraVolumes: [{name: extra, emptyDir: {}}]\nextraVolumeMounts: [{name: extra, mountPath: /extra}]\nnetworkPolicy:\n  enabled: true\n  apiServer: {to: [{ipBlock: {cidr: 10.0.0.1/32}}]}\n  nuclia: {to: [{ipBlock: {cidr: 192.0.2.0/24}}]}\n  extraEgress: [{to: [{namespaceSelector: {matchLabels: {name: monitoring}}}], ports: [{port: 9999}]}]\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let release = Release::install_with(
        &format!("nto-{}", suffix()),
        &ns,
        &chart(),
        &["-f", file.to_str().unwrap()],
    );
    let full = release.fullname();
    let get = |kind: &str| -> serde_json::Value {
        let out = ok(
            &format!("kubectl get {kind}"),
            common::kubectl(&["get", kind, &full, "-n", &ns, "-o", "json"], None),
        );
        serde_json::from_str(&out).unwrap()
    };
    let np = get("networkpolicy");
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    assert_eq!(
        egress.len(),
        4,
        "DNS, apiserver, Nuclia, one extra: {egress:?}"
    );
    let ports = |rule: &serde_json::Value| -> Vec<i64> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ports(&egress[0]), [53, 53]);
    assert!(egress[0]["to"].is_null(), "DNS to anywhere by default");
    assert_eq!(ports(&egress[1]), [443, 6443]);
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
    assert_eq!(
        ports(&egress[2]),
        [443, 3128],
        "the proxy's port joins Nuclia's"
    );
    assert_eq!(egress[2]["to"][0]["ipBlock"]["cidr"], "192.0.2.0/24");
    assert_eq!(ports(&egress[3]), [9999]);
    assert_eq!(np["metadata"]["labels"]["team"], "platform");

    let deploy = get("deployment");
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 3);
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert_eq!(deploy["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["team"],
        "platform"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["tmp", "ca-bundle", "extra"]);
    assert_eq!(pod["volumes"][1]["configMap"]["items"][0]["path"], "ca.crt");
    let mounts: Vec<&str> = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        ["/tmp", "/etc/nuclia-token-operator/ca-bundle", "/extra"]
    );
    let pdb = get("poddisruptionbudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    drop(release);
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// The PEM of the test control plane's CA (the apiserver's certificate issuer).
fn control_plane_ca_pem() -> String {
    let admin = Kubeconfig::read_from(&common::cluster().kubeconfig).expect("admin kubeconfig");
    let cluster = admin.clusters[0].cluster.as_ref().expect("cluster entry");
    if let Some(file) = &cluster.certificate_authority {
        return std::fs::read_to_string(file).expect("CA file");
    }
    let data = cluster
        .certificate_authority_data
        .as_ref()
        .expect("the kubeconfig names its CA");
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("base64");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The `outcome` labels of the Nuclia requests an operator counted so far.
async fn nuclia_outcomes(http: &reqwest::Client, op: &OperatorProcess) -> BTreeSet<String> {
    let (_, text) = get_text(http, op.http_addr().await, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("nuclia_api_requests_total{"))
        // The 401 series are there from an operation's first request on, at 0.
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0))
        .filter_map(|l| {
            let rest = &l[l.find("code=\"")? + "code=\"".len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// Waits up to a minute for a Nuclia request of outcome `want`; all outcomes seen by then.
async fn wait_outcome(
    http: &reqwest::Client,
    op: &OperatorProcess,
    want: &str,
) -> Option<BTreeSet<String>> {
    common::poll(MINUTE, || async {
        let seen = nuclia_outcomes(http, op).await;
        seen.contains(want).then_some(seen)
    })
    .await
}

/// `caBundle`: the CA mounted beside the image's roots (`SSL_CERT_DIR`, as rendered) is trusted
/// for the Nuclia API. The "Nuclia API" here is the test apiserver, whose certificate only the
/// control plane's CA signs: without the bundle the TLS handshake fails (`connect`), with it
/// the request goes through and the apiserver answers 401 to the fake login.
#[tokio::test]
async fn chart_ca_bundle_is_trusted_for_nuclia() {
    let w = World::new("deploy-ca").await;
    let api_port = Kubeconfig::read_from(&common::cluster().kubeconfig)
        .unwrap()
        .clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let values = format!(
        "nuclia: {{globalUrl: 'https://127.0.0.1:{api_port}', timeout: 5s}}\nwatchNamespaces: [{}]\nclusterId: test-cluster\nleaderElection: {{enabled: false}}\nbackoffBase: 1s\nextraArgs: [--metrics-addr=127.0.0.1:0, --log-format=text]\ncaBundle: {{configMapName: corp-ca}}\n",
        w.ns
    );
    let c = container(&render_in(&w.ns, &values, &[]));
    let ca_dir = tempfile::tempdir().unwrap();
    std::fs::write(ca_dir.path().join("ca.crt"), control_plane_ca_pem()).unwrap();
    let env = pod_env(&c, &w.ns, "ca-0");
    let rendered = env
        .iter()
        .find(|(n, _)| n == "SSL_CERT_DIR")
        .map(|(_, v)| v.clone())
        .expect("SSL_CERT_DIR rendered");
    // The pod's mount point, here a directory of the test.
    let cert_dir = rendered.replace(
        "/etc/nuclia-token-operator/ca-bundle",
        ca_dir.path().to_str().unwrap(),
    );
    assert_ne!(
        cert_dir, rendered,
        "SSL_CERT_DIR names the mount: {rendered}"
    );

    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.kubectl_apply(&pt_manifest("ca", ""));
    let logs = tempfile::tempdir().unwrap();
    let kubeconfig = common::cluster().kubeconfig.clone();

    // Without the bundle (only an unrelated CA, whatever this machine's roots): no trust, no
    // request reaches the server.
    let other = tempfile::tempdir().unwrap();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=unrelated-ca", "-keyout", "/dev/null", "-out"])
        .arg(other.path().join("other.crt"))
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl req failed");
    let mut without = run_as_rendered(
        &c,
        &w.ns,
        "ca-0",
        &kubeconfig,
        &logs.path().join("without.log"),
        &[("SSL_CERT_DIR", other.path().to_str().unwrap())],
    );
    let seen = wait_outcome(&w.http, &without, "connect").await;
    assert!(
        seen.as_ref().is_some_and(|s| !s.contains("401")),
        "without the CA: {seen:?}; see {}",
        without.log.display()
    );
    without.kill();
    // Its issue intent would hold the next mint back for a grace period: start afresh.
    release_by_hand(&w, "ca").await;
    w.kubectl_apply(&pt_manifest("ca-2", ""));

    // With it, as rendered: the TLS handshake succeeds and the server answers.
    let mut with = run_as_rendered(
        &c,
        &w.ns,
        "ca-1",
        &kubeconfig,
        &logs.path().join("with.log"),
        &[("SSL_CERT_DIR", &cert_dir)],
    );
    let seen = wait_outcome(&w.http, &with, "401").await;
    assert!(
        seen.is_some(),
        "with the CA bundle the apiserver never answered; see {}",
        with.log.display()
    );
    assert!(with.running());
    with.kill();
    release_by_hand(&w, "ca-2").await;
}

/// Deletes a resource no operator will finish (its finalizer removed by hand).
async fn release_by_hand(w: &World, name: &str) {
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let _ = api
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await;
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// A TCP relay standing in for an HTTP proxy: each connection is counted, its first line kept,
/// and its bytes carried to `upstream` unchanged (the fake answers absolute-form requests).
async fn relay_proxy(
    upstream: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 256];
                let n = inbound.peek(&mut head).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                record.lock().unwrap().push(line);
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, seen)
}

/// `proxy`: Nuclia requests go through the proxy the values name (`HTTP_PROXY` for the fake's
/// plain-HTTP URL); the apiserver, listed in `NO_PROXY`, is reached directly although
/// `HTTPS_PROXY` is set too (else the operator could not even start). The token is issued.
#[tokio::test]
async fn chart_proxy_carries_nuclia_requests() {
    let w = World::new("deploy-proxy").await;
    let fake_addr: std::net::SocketAddr = w.fake.url.trim_start_matches("http://").parse().unwrap();
    let (proxy, seen) = relay_proxy(fake_addr).await;
    // `localhost`, not 127.0.0.1: only the apiserver's address is in NO_PROXY.
    let nuclia = format!("http://localhost:{}", fake_addr.port());
    let values = format!(
        "nuclia: {{globalUrl: '{nuclia}'}}\nwatchNamespaces: [{}]\nclusterId: test-cluster\nleaderElection: {{enabled: false}}\nextraArgs: [--metrics-addr=127.0.0.1:0, --log-format=text]\nproxy: {{httpProxy: 'http://{proxy}', httpsProxy: 'http://{proxy}', noProxy: 127.0.0.1}}\n",
        w.ns
    );
    let c = container(&render_in(&w.ns, &values, &[]));
    let logs = tempfile::tempdir().unwrap();
    let mut op = run_as_rendered(
        &c,
        &w.ns,
        "proxy-0",
        &common::cluster().kubeconfig.clone(),
        &logs.path().join("operator.log"),
        &[],
    );
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.kubectl_apply(&pt_manifest("proxied", ""));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    wait_status(&api, "proxied", MINUTE, "Ready through the proxy", ready).await;
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("POST {nuclia}/api/v1/user/pa_tokens"))),
        "the mint did not go through the proxy: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("CONNECT")),
        "the apiserver was reached through the proxy: {lines:?}"
    );
    api.delete("proxied", &DeleteParams::default())
        .await
        .unwrap();
    let gone = common::poll(MINUTE, || async {
        api.get_opt("proxied").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the finalizer never let the resource go");
    op.kill();
    w.assert_no_tokens_in(&op.log).await;
}

// ---------------------------------------------------------------------------------------------
// NucliaClusterCredential (issue 14)

/// The chart's RBAC for cluster credentials, least privilege: the operator, with a token of the
/// chart's ServiceAccount in namespaced mode, mints a team's KB key through a
/// NucliaClusterCredential whose Secret lives in a third namespace (`clusterCredentials.namespace`)
/// without a forbidden request, and revokes it at deletion; in that namespace it may get a Secret
/// and nothing more (no list), and it may read cluster credentials but not create them.
#[tokio::test]
async fn chart_rbac_cluster_credential() {
    use nuclia_token_operator::cluster_credential::NucliaClusterCredential;
    let w = World::new("deploy-cc").await;
    let team = common::namespace(&w.client, "deploy-cc-team").await;
    let vault = common::namespace(&w.client, "deploy-cc-vault").await;
    let (release, mut op, dir) = chart_operator(
        &w,
        &[
            "leaderElection.enabled=false",
            &format!("watchNamespaces={{{},{team}}}", w.ns),
            &format!("clusterCredentials.namespace={vault}"),
        ],
        &[
            "--watch-namespaces",
            &team,
            "--cluster-credential-namespace",
            &vault,
        ],
    )
    .await;
    let kubeconfig = dir.path().join("kubeconfig");
    let login: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "admin-login"},
        "stringData": {"token": w.fake.bootstrap.pat.clone()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(w.client.clone(), &vault)
        .create(&PostParams::default(), &login)
        .await
        .unwrap();
    let cc = format!("{}-cc", w.ns);
    let out = common::kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {cc}}}\nspec:\n  secretRef: {{name: admin-login}}\n  policy: {{namespaces: [{team}]}}\n"
        )),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let out = common::kubectl(
        &["apply", "-n", &team, "-f", "-"],
        Some(&format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: search}}\nspec:\n  kbUrl: {kb_url}\n  auth: {{clusterCredentialRef: {{name: {cc}}}}}\n"
        )),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &team);
    let s = wait_status(&keys, "search", MINUTE, "KB key Ready", ready).await;
    let id = s.token_id.clone().unwrap();
    let key = Api::<Secret>::namespaced(w.client.clone(), &team)
        .get("search")
        .await
        .unwrap()
        .data
        .unwrap()["token"]
        .0
        .clone();
    let key = String::from_utf8(key).unwrap();
    assert!(w.kb_key_works(&kb_url, &key).await);
    keys.delete("search", &DeleteParams::default())
        .await
        .unwrap();
    let gone = common::poll(MINUTE, || async {
        keys.get_opt("search").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the KB key's finalizer never let it go");
    assert!(!w.kb_key_works(&kb_url, &key).await, "the key is revoked");
    assert!(!w.credential_is_live(&id).await);
    let log = op.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a request was forbidden under the chart's RBAC; see {}",
        op.log.display()
    );
    assert!(
        op.running(),
        "the operator exited; see {}",
        op.log.display()
    );

    let sa = client_from(&kubeconfig).await;
    let vault_secrets = Api::<Secret>::namespaced(sa.clone(), &vault);
    assert_eq!(http_code(vault_secrets.get("admin-login").await), 200);
    assert_eq!(
        http_code(vault_secrets.list(&ListParams::default()).await),
        403,
        "Secrets of the cluster credential namespace: get only"
    );
    let ccs = Api::<NucliaClusterCredential>::all(sa.clone());
    assert_eq!(http_code(ccs.get(&cc).await), 200);
    let mut copy = ccs.get(&cc).await.unwrap();
    copy.metadata = kube::api::ObjectMeta {
        name: Some(format!("{cc}-copy")),
        ..Default::default()
    };
    assert_eq!(
        http_code(ccs.create(&PostParams::default(), &copy).await),
        403,
        "the operator cannot create cluster credentials"
    );

    Api::<NucliaClusterCredential>::all(w.client.clone())
        .delete(&cc, &DeleteParams::default())
        .await
        .unwrap();
    op.kill();
    drop(release);
    for ns in [&team, &vault] {
        let _ = Api::<Namespace>::all(w.client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
    w.assert_no_tokens_in(&op.log).await;
}
