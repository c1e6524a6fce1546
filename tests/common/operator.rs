//! One test's world: a namespace on the real control plane, a `nuclia-fake` over loopback HTTP,
//! and the operator as a real process watching only that namespace, its log kept in a file.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use nuclia_fake::{self as fake, FakeConfig, FakeHandle};
use nuclia_token_operator::crd::CredentialStatus;

pub struct World {
    pub client: Client,
    pub ns: String,
    pub fake: FakeHandle,
    pub http: reqwest::Client,
    pub operator: Option<Child>,
    pub log: PathBuf,
}

impl World {
    /// A fresh namespace and fake, CRDs installed; the operator is started with [`World::start_operator`].
    pub async fn new(prefix: &str) -> World {
        World::with_fake(prefix, FakeConfig::default()).await
    }

    /// Like [`World::new`], with a fake configured by the test (e.g. seeded accounts).
    pub async fn with_fake(prefix: &str, config: FakeConfig) -> World {
        nuclia_token_operator::runtime::install_crypto();
        let client = super::client().await;
        super::install_crds(&client).await;
        let ns = super::namespace(&client, prefix).await;
        let fake = fake::spawn(config).await.expect("start nuclia-fake");
        let log = std::env::temp_dir().join(format!("nto-operator-{ns}.log"));
        World {
            client,
            ns,
            fake,
            http: reqwest::Client::new(),
            operator: None,
            log,
        }
    }

    pub fn start_operator(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let url = &self.fake.url;
        let zone = &self.fake.bootstrap.zone;
        let child = Command::new(env!("CARGO_BIN_EXE_nuclia-token-operator"))
            .env("KUBECONFIG", &super::cluster().kubeconfig)
            .env("RUST_LOG", "info,nuclia_token_operator=debug")
            .args(["--nuclia-global-url", url])
            .args(["--nuclia-zone-origin", &format!("{zone}={url}")])
            .args([
                "--watch-namespaces",
                &self.ns,
                "--metrics-addr",
                "127.0.0.1:0",
                "--cluster-id",
                "test-cluster",
            ])
            .args([
                "--verify-interval",
                "3s",
                "--backoff-base",
                "1s",
                "--backoff-max",
                "5s",
                "--nuclia-timeout",
                "5s",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the operator");
        self.operator = Some(child);
    }

    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create_secret(&self, name: &str, key: &str, value: &str) {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}
        }))
        .unwrap();
        self.secrets()
            .create(&PostParams::default(), &s)
            .await
            .expect("create Secret");
    }

    /// The value of `key` in Secret `name`, if any.
    pub async fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        let s = self.secrets().get_opt(name).await.ok()??;
        let b = s.data?.get(key)?.0.clone();
        String::from_utf8(b).ok()
    }

    pub fn kubectl_apply(&self, yaml: &str) {
        let out = super::kubectl(&["apply", "-n", &self.ns, "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn kubectl(&self, args: &[&str]) {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        let out = super::kubectl(&all, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// GET on the fake's admin API.
    pub async fn admin(&self, path: &str) -> serde_json::Value {
        fake_admin(&self.http, &self.fake.url, path).await
    }

    pub async fn admin_post(&self, path: &str, body: serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/_fake/{path}", self.fake.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
    }

    /// Ids of live credentials at the fake whose description or title carries `uid`'s marker.
    pub async fn live_marked(&self, uid: &str) -> Vec<String> {
        let creds = self.admin("credentials").await;
        let mut ids: Vec<String> = creds
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["description_or_title"]
                    .as_str()
                    .is_some_and(|d| d.contains(uid))
                    || owner_marked(c, uid)
            })
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Whether a PAT is accepted by the fake.
    pub async fn pat_works(&self, token: &str) -> bool {
        let r = self
            .http
            .get(format!("{}/api/v1/user/welcome", self.fake.url))
            .bearer_auth(token)
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// Whether a KB key works against `GET {kbUrl}`, as a consumer of the Secret would use it.
    pub async fn kb_key_works(&self, kb_url: &str, token: &str) -> bool {
        let r = self
            .http
            .get(kb_url)
            .header("X-NUCLIA-SERVICEACCOUNT", format!("Bearer {token}"))
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts that no value the fake ever minted (nor its bootstrap credentials) is in the log.
    pub async fn assert_log_has_no_tokens(&self) {
        let minted = self.admin("minted").await;
        let log = self.log_text();
        let mut values: Vec<String> = minted
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let b = &self.fake.bootstrap;
        values.extend([b.user_token.clone(), b.pat.clone(), b.nua_key.clone()]);
        let leaked = values
            .iter()
            .filter(|v| v.len() >= 8 && log.contains(v.as_str()))
            .count();
        assert_eq!(
            leaked,
            0,
            "{leaked} token value(s) found in the operator log {}",
            self.log.display()
        );
        assert!(
            !log.contains("panicked"),
            "the operator panicked; see {}",
            self.log.display()
        );
    }
}

fn owner_marked(c: &serde_json::Value, uid: &str) -> bool {
    // SA keys carry their service account's title as owner description in some fakes.
    c["owner"].as_str().is_some_and(|o| o.contains(uid))
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_operator();
    }
}

/// Polls the resource's status until `check` accepts what every kind records.
pub async fn wait_status<K, F>(
    api: &Api<K>,
    name: &str,
    within: Duration,
    what: &str,
    check: F,
) -> K::Status
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasStatus,
    F: Fn(&CredentialStatus) -> bool,
{
    wait_kind_status(api, name, within, what, |s: &K::Status| check(s)).await
}

/// Polls the resource's status until `check` accepts it, the kind's own part included.
pub async fn wait_kind_status<K, F>(
    api: &Api<K>,
    name: &str,
    within: Duration,
    what: &str,
    check: F,
) -> K::Status
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasStatus,
    F: Fn(&K::Status) -> bool,
{
    let found = super::poll(within, || async {
        let obj = api.get_opt(name).await.ok()??;
        let status = obj.status_ref()?.clone();
        check(&status).then_some(status)
    })
    .await;
    match found {
        Some(s) => s,
        None => {
            let last = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|o| o.status_ref().cloned());
            panic!("{name}: timed out waiting for {what}; last status: {last:?}")
        }
    }
}

pub trait HasStatus {
    /// The kind's status: what every kind records (through `Deref`) and the kind's own part.
    type Status: std::ops::Deref<Target = CredentialStatus> + Clone + std::fmt::Debug;
    fn status_ref(&self) -> Option<&Self::Status>;
    /// The service account a KB key's status names (None for the other kinds).
    fn service_account(&self) -> Option<String> {
        None
    }
    fn uid_str(&self) -> String;
}

impl HasStatus for nuclia_token_operator::crd::NucliaPersonalToken {
    type Status = nuclia_token_operator::crd::PersonalTokenStatus;
    fn status_ref(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn uid_str(&self) -> String {
        self.uid().unwrap_or_default()
    }
}

impl HasStatus for nuclia_token_operator::crd::NucliaKbApiKey {
    type Status = nuclia_token_operator::crd::KbApiKeyStatus;
    fn status_ref(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn service_account(&self) -> Option<String> {
        let kb = self.status.as_ref()?.own.kb.as_ref()?;
        kb.service_account_id.clone()
    }
    fn uid_str(&self) -> String {
        self.uid().unwrap_or_default()
    }
}

pub fn ready(s: &CredentialStatus) -> bool {
    s.condition("Ready").is_some_and(|c| c.status == "True")
}

pub fn reason(s: &CredentialStatus) -> Option<String> {
    s.condition("Ready")
        .filter(|c| c.status == "False")
        .map(|c| c.reason.clone())
}

/// An operator process started by [`World::spawn_operator`], with its own log file;
/// SIGKILLed when dropped.
pub struct OperatorProcess {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// The process's log so far, without terminal colour codes.
    pub fn log_text(&self) -> String {
        plain(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (what kubelet sends), then waits up to `within` for the exit status.
    /// `None` when the process did not exit in time (it is then SIGKILLed).
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(term.is_ok_and(|s| s.success()), "kill -TERM failed");
        let status = super::poll(within, || {
            let exited = child.try_wait().ok().flatten();
            async move { exited }
        })
        .await;
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The address of /metrics, /healthz and /readyz, from the "serving /metrics" log line;
    /// waits up to 30 s for it.
    pub async fn http_addr(&self) -> std::net::SocketAddr {
        let found = super::poll(Duration::from_secs(30), || async {
            served_addr(&self.log_text())
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "{}: no \"serving /metrics\" line in {}",
                self.name,
                self.log.display()
            )
        })
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `text` without ANSI escape sequences (the text log format colours its fields).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The bound address in an operator log's "serving /metrics" line (`addr=127.0.0.1:PORT`).
pub fn served_addr(log: &str) -> Option<std::net::SocketAddr> {
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace()
        .next()?
        .trim_matches('"')
        .parse()
        .ok()
}

impl World {
    /// Starts one more operator process watching this world's namespace, beside (or instead of)
    /// [`World::start_operator`]'s: with `kubeconfig` (e.g. a ServiceAccount token's), its own log
    /// file named after `name`, and `extra` arguments. Without `cluster_id` the `--cluster-id`
    /// flag is left out, so the operator reads the kube-system namespace's UID as a real
    /// deployment does.
    pub fn spawn_operator(
        &self,
        name: &str,
        kubeconfig: &std::path::Path,
        cluster_id: bool,
        extra: &[&str],
    ) -> OperatorProcess {
        let path = std::env::temp_dir().join(format!("nto-operator-{}-{name}.log", self.ns));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("log file");
        let url = &self.fake.url;
        let zone = &self.fake.bootstrap.zone;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nuclia-token-operator"));
        cmd.env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,nuclia_token_operator=debug")
            .args(["--nuclia-global-url", url])
            .args(["--nuclia-zone-origin", &format!("{zone}={url}")])
            .args(["--watch-namespaces", &self.ns])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--verify-interval", "3s"])
            .args(["--backoff-base", "1s", "--backoff-max", "5s"])
            .args(["--nuclia-timeout", "5s"]);
        if cluster_id {
            cmd.args(["--cluster-id", "test-cluster"]);
        }
        let child = cmd
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the operator");
        OperatorProcess {
            name: name.to_owned(),
            child: Some(child),
            log: path,
        }
    }

    /// [`World::assert_log_has_no_tokens`] for another log file (e.g. an [`OperatorProcess`]'s).
    pub async fn assert_no_tokens_in(&self, log: &std::path::Path) {
        let minted = self.admin("minted").await;
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let b = &self.fake.bootstrap;
        let mut values: Vec<String> = minted
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        values.extend([b.user_token.clone(), b.pat.clone(), b.nua_key.clone()]);
        let leaked = values
            .iter()
            .filter(|v| v.len() >= 8 && text.contains(v.as_str()))
            .count();
        assert_eq!(
            leaked,
            0,
            "{leaked} token value(s) found in the operator log {}",
            log.display()
        );
        assert!(
            !text.contains("panicked"),
            "the operator panicked; see {}",
            log.display()
        );
    }
}

// ---- helpers for the chaos suite (tests/chaos/main.rs) ----

impl World {
    /// Whether the operator process is still running (it has not exited or crashed).
    pub fn operator_alive(&mut self) -> bool {
        self.operator
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Replaces the fake's fault rules (`PUT /_fake/faults`).
    pub async fn set_faults(&self, rules: serde_json::Value) {
        let r = self
            .http
            .put(format!("{}/_fake/faults", self.fake.url))
            .json(&rules)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "set faults: {}", r.status());
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) {
        let r = self
            .http
            .delete(format!("{}/_fake/faults", self.fake.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "clear faults: {}", r.status());
    }

    /// Ids of every credential at the fake, live or not, whose description or title carries
    /// `uid`: everything ever minted for that resource.
    pub async fn all_marked(&self, uid: &str) -> Vec<String> {
        fake_ids_where(
            &self.http,
            &self.fake.url,
            "credentials?all=true",
            "description_or_title",
            uid,
        )
        .await
    }

    /// Creates a Secret whose `key` holds arbitrary bytes (e.g. not UTF-8).
    pub async fn create_secret_bytes(&self, name: &str, key: &str, value: &[u8]) {
        let s = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([(key.to_owned(), k8s_openapi::ByteString(value.to_vec()))].into()),
            ..Default::default()
        };
        self.secrets()
            .create(&PostParams::default(), &s)
            .await
            .expect("create Secret");
    }

    /// `kubectl apply` of a manifest that may be refused: (accepted, stdout + stderr).
    pub fn kubectl_try_apply(&self, manifest: &str) -> (bool, String) {
        let out = super::kubectl(&["apply", "-n", &self.ns, "-f", "-"], Some(manifest));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// A kube client for the admin user of the control plane that `kubeconfig` names (for a test
/// that runs its own control plane rather than the shared one).
pub async fn client_for(kubeconfig: &std::path::Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
    Client::try_from(config).expect("kube client")
}

/// An admin route of the fake (`/_fake/{path}`), as JSON.
pub async fn fake_admin(http: &reqwest::Client, fake_url: &str, path: &str) -> serde_json::Value {
    http.get(format!("{fake_url}/_fake/{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Ids of the items an admin list of the fake returns whose `field` contains `needle`, sorted.
pub async fn fake_ids_where(
    http: &reqwest::Client,
    fake_url: &str,
    path: &str,
    field: &str,
    needle: &str,
) -> Vec<String> {
    let mut ids: Vec<String> = fake_admin(http, fake_url, path)
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c[field].as_str().is_some_and(|d| d.contains(needle)))
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Every token value the fake ever minted or seeded (for leak scans).
pub async fn minted_values(http: &reqwest::Client, fake_url: &str) -> Vec<String> {
    let v = fake_admin(http, fake_url, "minted").await;
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

// ---- helpers for the issue 16 acceptance tests (tests/cluster/operator.rs, tests/cluster/kb_keys.rs) ----

impl World {
    /// DELETE on the fake's admin API (`/_fake/{path}`); the answer's status.
    pub async fn admin_delete(&self, path: &str) -> reqwest::StatusCode {
        self.http
            .delete(format!("{}/_fake/{path}", self.fake.url))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Whether credential `id` is live at the fake (neither revoked nor expired).
    pub async fn credential_is_live(&self, id: &str) -> bool {
        self.admin("credentials")
            .await
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["id"] == id))
    }

    /// The id of the fake's first credential of `kind` (`user_token`, `pat`, …) whose
    /// description is `description`, live or not.
    pub async fn credential_id(&self, kind: &str, description: &str) -> Option<String> {
        self.admin("credentials?all=true")
            .await
            .as_array()?
            .iter()
            .find(|c| c["kind"] == kind && c["description_or_title"] == description)
            .and_then(|c| c["id"].as_str().map(String::from))
    }

    /// The fake's view of credential `id` (kind, owner, description, expiry), live or not.
    pub async fn credential_view(&self, id: &str) -> Option<serde_json::Value> {
        self.admin("credentials?all=true")
            .await
            .as_array()?
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
    }

    /// Mints a personal token at the fake with `credential` (`body`: description and `days` or
    /// `expiration_date`); the fake's answer (`id`, `token`).
    pub async fn mint_pat(&self, credential: &str, body: serde_json::Value) -> serde_json::Value {
        self.http
            .post(format!("{}/api/v1/user/pa_tokens", self.fake.url))
            .bearer_auth(credential)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// How many calls the fake counted for `route` (`METHOD /template`, as in `/_fake/calls`).
    pub async fn calls_to(&self, route: &str) -> u64 {
        self.admin("calls").await[route].as_u64().unwrap_or(0)
    }

    /// Every Event of the namespace as JSON text: for leak scans only, never to print.
    /// The value of the first series on the operator's /metrics whose line starts with `prefix`
    /// (a name with its labels).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let addr = served_addr(&self.log_text())?;
        let text = self
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub async fn events_text(&self) -> String {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&Default::default()).await.expect("list Events");
        serde_json::to_string(&list.items).expect("Events as JSON")
    }

    /// Reasons of the Events of the namespace about the object named `name`.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        let Ok(list) = events.list(&Default::default()).await else {
            return Vec::new();
        };
        list.items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter_map(|e| e.reason.clone())
            .collect()
    }
}

/// Polls until the object `name` is gone; whether it went within `within`.
pub async fn gone_within<K>(api: &Api<K>, name: &str, within: Duration) -> bool
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    super::poll(within, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
    .is_some()
}

/// What a stuck deletion looks like, for an assertion message: the object's finalizers and its
/// Ready condition (reason and message; never a value).
pub async fn deletion_state<K>(api: &Api<K>, name: &str) -> String
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasStatus,
{
    match api.get_opt(name).await {
        Ok(Some(obj)) => {
            let ready = obj
                .status_ref()
                .and_then(|s| s.condition("Ready"))
                .map(|c| format!("{} {}: {}", c.status, c.reason, c.message));
            format!(
                "{name}: finalizers {:?}, Ready {ready:?}",
                obj.meta().finalizers
            )
        }
        Ok(None) => format!("{name}: gone"),
        Err(e) => format!("{name}: {e}"),
    }
}

impl World {
    /// What a backup is for: the resource `name` and its Secret `secret` gone without the
    /// operator's cleanup (the operator stopped, the finalizers forced off). Returns the Secret
    /// as it was, the backup.
    pub async fn lose_without_cleanup<K>(
        &mut self,
        api: &Api<K>,
        name: &str,
        secret: &str,
    ) -> Secret
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let backup = self.secrets().get(secret).await.unwrap();
        self.kill_operator();
        let unfinalize =
            kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
        let params = kube::api::PatchParams::default();
        let delete = kube::api::DeleteParams::default();
        api.patch(name, &params, &unfinalize).await.unwrap();
        api.delete(name, &delete).await.unwrap();
        // The garbage collector may delete the Secret (its owner is gone) before we do.
        let done = |r: &kube::Result<()>| {
            matches!(r, Err(kube::Error::Api(s)) if s.code == 404) || r.is_ok()
        };
        let patched = self.secrets().patch(secret, &params, &unfinalize).await;
        let patched = patched.map(drop);
        assert!(done(&patched), "unfinalize Secret {secret}: {patched:?}");
        let deleted = self.secrets().delete(secret, &delete).await.map(drop);
        assert!(done(&deleted), "delete Secret {secret}: {deleted:?}");
        assert!(gone_within(api, name, Duration::from_secs(60)).await);
        assert!(gone_within(&self.secrets(), secret, Duration::from_secs(60)).await);
        backup
    }

    /// Restores a backed-up Secret as `docs/backup-restore.md` says: name, type, data, labels
    /// and annotations, without owner references or finalizers.
    pub async fn restore_secret(&self, backup: &Secret) {
        let restored = Secret {
            metadata: kube::api::ObjectMeta {
                name: backup.metadata.name.clone(),
                labels: backup.metadata.labels.clone(),
                annotations: backup.metadata.annotations.clone(),
                ..Default::default()
            },
            type_: backup.type_.clone(),
            data: backup.data.clone(),
            ..Default::default()
        };
        self.secrets()
            .create(&Default::default(), &restored)
            .await
            .unwrap();
    }
}

impl HasStatus for nuclia_token_operator::crd::NucliaNuaKey {
    type Status = nuclia_token_operator::crd::NuaKeyStatus;
    fn status_ref(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn uid_str(&self) -> String {
        self.uid().unwrap_or_default()
    }
}

/// A consumer of a managed Secret during rotations: every 200 ms it reads the Secret and asks
/// `probe` (with its data as text) whether Nuclia serves what it holds; a Secret it cannot read
/// counts as a refusal. [`Sampler::finish`] stops it and returns (samples, refusals).
pub struct Sampler {
    samples: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start<F, Fut>(w: &World, secret: &str, probe: F) -> Sampler
    where
        F: Fn(reqwest::Client, std::collections::BTreeMap<String, String>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        use std::sync::atomic::Ordering;
        let samples = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (secrets, http, name) = (w.secrets(), w.http.clone(), secret.to_owned());
        let (n, bad, halt) = (samples.clone(), failures.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                let ok = match secrets.get(&name).await {
                    Ok(s) => {
                        let data = s
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
                            .collect();
                        probe(http.clone(), data).await
                    }
                    Err(_) => false,
                };
                n.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Sampler {
            samples,
            failures,
            stop,
            task,
        }
    }

    /// Stops and returns (samples, refusals).
    pub async fn finish(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.samples.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}
