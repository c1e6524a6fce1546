//! Argo CD's health check for both kinds (`charts/nuclia-token-operator/argocd/health.lua`), run
//! by `lua5.1` (Argo CD runs these scripts in gopher-lua, which has Lua 5.1's semantics) inside
//! the sandbox Argo CD gives a script configured in `argocd-cm`: the base and table libraries,
//! no `string`, `math`, `io` or `os`. On the fixed objects of the script's `health_test.yaml`
//! (Argo CD's own test layout), and on real objects: the operator, as a process, drives
//! resources into each state against the real kube-apiserver and `nuclia-fake`; each object is
//! read back as JSON and handed to the script as Argo CD would. Also: the chart README's
//! "Argo CD" section agrees with the script, and its `kubectl` command installs it.
//!
//! `lua5.1` is required (`.ci/run` installs Debian's package): without it these tests fail.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::operator::{HasStatus, World, ready, reason, wait_status};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use kube::core::NamespaceResourceScope;
use nuclia_token_operator::crd::{NucliaKbApiKey, NucliaPersonalToken};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

/// A minimum issue interval long enough to observe a new token held back (Issuing=True).
const OPERATOR_ARGS: &[&str] = &["--min-issue-interval", "30s"];

fn argocd_dir() -> PathBuf {
    common::repo_root().join("charts/nuclia-token-operator/argocd")
}

// ---- serde_json::Value as a Lua table constructor ----

/// `s` as a Lua 5.1 string literal: printable ASCII as is (but `"` and `\`), every other byte
/// as a three-digit decimal escape, so nothing in the value can end the literal or be read as
/// Lua, and a digit after an escape is never taken into it.
fn lua_string(s: &str, out: &mut String) {
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
}

/// A JSON value as the Lua value Argo CD makes of it: objects and arrays are tables (arrays
/// from index 1), numbers are numbers, `null` is `nil`.
fn lua_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            // JSON has no NaN or infinity; `{:e}` is valid Lua number syntax.
            (None, None, Some(f)) => out.push_str(&format!("{f:e}")),
            (None, None, None) => out.push_str("nil"),
        },
        Value::String(s) => lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for item in items {
                lua_value(item, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (k, item) in map {
                out.push('[');
                lua_string(k, out);
                out.push_str("]=");
                lua_value(item, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

fn lua_literal(v: &Value) -> String {
    let mut out = String::new();
    lua_value(v, &mut out);
    out
}

// ---- running Lua ----

/// Runs a Lua 5.1 program given on stdin; its stdout. Fails the test when `lua5.1` is missing.
fn run_lua(program: &str) -> String {
    let mut child = match Command::new("lua5.1")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "lua5.1 is not installed: the Argo CD health check is tested with it \
             (`apt-get install lua5.1`; .ci/run installs it)"
        ),
        Err(e) => panic!("could not run lua5.1: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(program.as_bytes())
        .expect("write the Lua program");
    let out = child.wait_with_output().expect("lua5.1 output");
    assert!(
        out.status.success(),
        "lua5.1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// What Argo CD's health check says of `obj`: (status, message). The script runs as Argo CD
/// runs a script from `argocd-cm`: `obj` a global, only the base and table libraries, strings
/// without methods; it must return a table whose status is one of Argo CD's codes.
fn health(obj: &Value) -> (String, String) {
    let mut script = String::new();
    lua_string(
        argocd_dir()
            .join("health.lua")
            .to_str()
            .expect("UTF-8 path"),
        &mut script,
    );
    let program = format!(
        r#"
local script = assert(loadfile({script}))
local write, tostring, type, pcall = io.write, tostring, type, pcall
local env = {{}}
for _, name in ipairs({{"assert", "error", "ipairs", "next", "pairs", "pcall", "select",
    "tonumber", "tostring", "type", "unpack", "xpcall", "rawequal", "rawget", "rawset",
    "setmetatable", "getmetatable"}}) do
  env[name] = _G[name]
end
env.table = table
env._G = env
env.obj = {obj}
setfenv(script, env)
getmetatable("").__index = nil
local ok, hs = pcall(script)
if not ok then
  write("ERROR\n", tostring(hs))
elseif type(hs) ~= "table" then
  write("ERROR\nreturned ", type(hs))
else
  write(tostring(hs.status), "\n", tostring(hs.message))
end
"#,
        obj = lua_literal(obj)
    );
    let out = run_lua(&program);
    let (status, message) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status),
        "the health check failed or returned no Argo CD status: {out}"
    );
    (status.to_owned(), message.to_owned())
}

/// Every string survives the trip into a Lua literal and back out byte for byte, including
/// quotes, backslashes, newlines, `]]`, control bytes, digits after an escape and UTF-8; and
/// tables nest as Argo CD builds them (arrays from 1, `null` absent).
#[test]
fn json_values_become_lua_literals_exactly() {
    let nasty = [
        "plain",
        "",
        "quote \" and backslash \\ and \\\" together",
        "line\nbreak\r\nand\ttab",
        "]] ]=] [[ --[[ comment",
        "\u{0}\u{1}\u{7}\u{1b}[0m\u{7f}",
        "\u{1}23 escape then digits 9\u{0}0",
        "naïve — ünïcödé ✓ 🎉",
        "\") os.exit(1) --",
    ];
    for s in nasty {
        let mut lit = String::new();
        lua_string(s, &mut lit);
        let back = run_lua(&format!("io.write({lit})"));
        assert_eq!(back, s, "literal {lit}");
    }
    let v = json!({
        "metadata": {"generation": 3, "name": "x"},
        "status": {"conditions": [{"type": "Ready", "n": 1.5}, {"type": "Issuing"}], "gone": null},
        "flag": true, "big": 9007199254740993u64,
    });
    let out = run_lua(&format!(
        "local o = {}\nio.write(o.metadata.generation, ' ', #o.status.conditions, ' ', \
         o.status.conditions[2].type, ' ', o.status.conditions[1].n, ' ', \
         tostring(o.status.gone), ' ', tostring(o.flag))",
        lua_literal(&v)
    ));
    assert_eq!(out, "3 2 Issuing 1.5 nil true");
}

/// Argo CD's test layout (`health_test.yaml` + `testdata/`): each fixed object gets the status
/// and message the file expects.
#[test]
fn argo_health_fixed_objects() {
    let dir = argocd_dir();
    let tests: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"),
    )
    .expect("health_test.yaml is YAML");
    let cases = tests["tests"].as_array().expect("a list of tests");
    assert!(cases.len() >= 10, "{} cases", cases.len());
    let mut seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for case in cases {
        let input = case["inputPath"].as_str().expect("inputPath");
        let obj: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(input)).expect(input))
                .expect("a YAML object");
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let want = (
            case["healthStatus"]["status"].as_str().expect("status"),
            case["healthStatus"]["message"].as_str().expect("message"),
        );
        let got = health(&obj);
        seen.insert((kind, got.0.clone()));
        if (got.0.as_str(), got.1.as_str()) != want {
            failures.push(format!("{input}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for kind in ["NucliaPersonalToken", "NucliaKbApiKey", "NucliaNuaKey"] {
        for status in ["Healthy", "Progressing", "Degraded"] {
            assert!(
                seen.contains(&(kind.to_owned(), status.to_owned())),
                "no {status} case for {kind}"
            );
        }
    }
}

// ---- real objects ----

/// The object as the apiserver serves it, as JSON (what Argo CD's cache holds).
async fn live<K>(w: &World, name: &str) -> Value
where
    K: kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    let api: Api<DynamicObject> =
        Api::namespaced_with(w.client.clone(), &w.ns, &ApiResource::erase::<K>(&()));
    let obj = api.get(name).await.expect("GET the resource");
    serde_json::to_value(obj).expect("JSON")
}

/// The conditions of `obj`, for an assertion message (reasons and messages only: no value).
fn conditions(obj: &Value) -> String {
    let mut out = format!(
        "generation {} observedGeneration {}",
        obj["metadata"]["generation"], obj["status"]["observedGeneration"]
    );
    for c in obj["status"]["conditions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "; {}={} {} (gen {}): {}",
            c["type"].as_str().unwrap_or_default(),
            c["status"].as_str().unwrap_or_default(),
            c["reason"].as_str().unwrap_or_default(),
            c["observedGeneration"],
            c["message"].as_str().unwrap_or_default()
        ));
    }
    out
}

/// Asserts the health of the live object `name`: its status, and a message containing `says`.
/// No minted token value may appear in the message. Returns the message.
async fn assert_health<K>(w: &World, name: &str, status: &str, says: &str) -> String
where
    K: kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    let obj = live::<K>(w, name).await;
    let (got, message) = health(&obj);
    assert!(
        got == status && message.contains(says),
        "{name}: health {got} {message:?}, want {status} with {says:?}; {}",
        conditions(&obj)
    );
    let minted = common::operator::minted_values(&w.http, &w.fake.url).await;
    assert!(
        !minted
            .iter()
            .any(|v| v.len() >= 8 && message.contains(v.as_str())),
        "{name}: a token value in the health message"
    );
    println!("{name}: {got}: {message}");
    message
}

fn pt(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {{name: {name}}}\nspec:\n  description: argo health\n  days: 1\n  auth: {{secretRef: {{name: login}}}}\n{extra_spec}"
    )
}

/// Deletes every resource of `api` named in `names` and the namespace; asserts that each is gone
/// within a minute, that nothing marked for them is live at Nuclia, and that the namespace goes.
async fn delete_all<K>(w: &World, api: &Api<K>, names: &[&str])
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasStatus,
{
    let mut uids = Vec::new();
    for name in names {
        let obj = api.get(name).await.expect("the resource");
        uids.push((name.to_string(), obj.uid_str()));
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for (name, uid) in &uids {
        assert!(
            common::operator::gone_within(api, name, MINUTE).await,
            "still there a minute after delete: {}",
            common::operator::deletion_state(api, name).await
        );
        assert!(
            w.live_marked(uid).await.is_empty(),
            "{name}: tokens left at Nuclia after delete"
        );
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.client.clone());
    namespaces
        .delete(&w.ns, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    assert!(
        common::operator::gone_within(&namespaces, &w.ns, Duration::from_secs(90)).await,
        "namespace {} still there 90 s after delete",
        w.ns
    );
}

/// Personal tokens driven through every state Argo CD tells apart: no status yet (Progressing),
/// a Nuclia outage on the first issue (Progressing), Ready (Healthy), a spec change the operator
/// has not seen (Progressing), then the new token held back by the minimum issue interval
/// (Issuing=True: Progressing) and issued (Healthy), the login Secret not created yet
/// (Progressing, then Healthy once it exists), a foreign Secret (Degraded, Stalled), a login
/// Nuclia refuses (Degraded), an invalid spec on a resource whose token still works (Degraded,
/// Stalled) and its fix (Healthy). Then everything is deleted and its tokens are revoked.
#[tokio::test]
async fn argo_health_of_real_personal_tokens() {
    let mut w = World::new("argo-pt").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.create_secret("taken", "token", "not-ours").await;
    w.create_secret("badlogin", "token", "not-a-nuclia-token-5c1e0b7d")
        .await;
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);

    // Applied before any operator runs: no status at all.
    w.kubectl_apply(&pt("app", ""));
    assert_health::<NucliaPersonalToken>(&w, "app", "Progressing", "Waiting for the operator")
        .await;

    // Nuclia down during the first issue: a failure the operator retries.
    w.set_faults(json!([{ "route": "*", "status": 503, "rate": 1.0 }]))
        .await;
    w.start_operator(OPERATOR_ARGS);
    wait_status(&api, "app", MINUTE, "Ready=False Transient", |s| {
        reason(s).as_deref() == Some("Transient")
    })
    .await;
    assert_health::<NucliaPersonalToken>(&w, "app", "Progressing", "transient failure").await;
    w.clear_faults().await;
    wait_status(&api, "app", Duration::from_secs(90), "Ready", ready).await;
    assert_health::<NucliaPersonalToken>(&w, "app", "Healthy", "holds a valid token until").await;

    // A spec change while no operator runs: Ready=True is about the old generation. Restarted
    // within the minimum issue interval of the first token, the operator holds the new one
    // back: Issuing=True while the old token still works.
    let first = api
        .get("app")
        .await
        .unwrap()
        .status
        .unwrap()
        .token_id
        .clone();
    w.kill_operator();
    w.kubectl_apply(&pt("app", "").replace("days: 1", "days: 2"));
    assert_health::<NucliaPersonalToken>(&w, "app", "Progressing", "observe generation 2").await;
    w.start_operator(OPERATOR_ARGS);
    wait_status(&api, "app", MINUTE, "Issuing=True for generation 2", |s| {
        s.observed_generation == Some(2)
            && s.condition("Issuing").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_health::<NucliaPersonalToken>(&w, "app", "Progressing", "minimum interval").await;
    wait_status(&api, "app", MINUTE, "the new token", |s| {
        ready(s) && s.token_id != first
    })
    .await;
    assert_health::<NucliaPersonalToken>(&w, "app", "Healthy", "holds a valid token").await;

    w.kubectl_apply(&pt("later", "").replace("name: login", "name: login-later"));
    w.kubectl_apply(&pt("clash", "  secret: {name: taken}\n"));
    w.kubectl_apply(&pt("refused", "").replace("name: login", "name: badlogin"));
    wait_status(&api, "later", MINUTE, "CredentialsMissing", |s| {
        reason(s).as_deref() == Some("CredentialsMissing")
    })
    .await;
    assert_health::<NucliaPersonalToken>(&w, "later", "Progressing", "login-later").await;
    wait_status(&api, "clash", MINUTE, "SecretConflict", |s| {
        s.condition("Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "SecretConflict")
    })
    .await;
    assert_health::<NucliaPersonalToken>(&w, "clash", "Degraded", "taken").await;
    wait_status(&api, "refused", MINUTE, "Unauthorized", |s| {
        reason(s).as_deref() == Some("Unauthorized")
    })
    .await;
    assert_health::<NucliaPersonalToken>(&w, "refused", "Degraded", "badlogin").await;

    // The login Secret appears: the waiting resource becomes Ready on its own.
    w.create_secret("login-later", "token", &w.fake.bootstrap.pat.clone())
        .await;
    wait_status(&api, "later", MINUTE, "Ready once the login exists", ready).await;
    assert_health::<NucliaPersonalToken>(&w, "later", "Healthy", "holds a valid token").await;

    // A spec the schema accepts but that cannot work: the token in the Secret still does, but
    // the operator waits for a person.
    w.kubectl_apply(&pt("app", "  renewBefore: 72h\n").replace("days: 1", "days: 2"));
    let stalled = wait_status(&api, "app", MINUTE, "Stalled InvalidSpec", |s| {
        s.condition("Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "InvalidSpec")
    })
    .await;
    assert!(ready(&stalled), "the token in the Secret still works");
    assert_health::<NucliaPersonalToken>(&w, "app", "Degraded", "renewBefore").await;
    // Back to the spec of generation 2: nothing to issue, the condition clears.
    w.kubectl_apply(&pt("app", "").replace("days: 1", "days: 2"));
    let generation = api.get("app").await.unwrap().metadata.generation;
    wait_status(&api, "app", MINUTE, "Ready again, not Stalled", |s| {
        ready(s) && s.condition("Stalled").is_none() && s.observed_generation == generation
    })
    .await;
    assert_health::<NucliaPersonalToken>(&w, "app", "Healthy", "holds a valid token").await;

    delete_all(&w, &api, &["app", "later", "clash", "refused"]).await;
    w.assert_log_has_no_tokens().await;
}

/// KB keys: Ready (Healthy), a kbUrl on a host the operator does not trust (Degraded, Stalled)
/// and a KB none of the login's accounts holds (Degraded, Stalled). Then everything is deleted and the key revoked.
#[tokio::test]
async fn argo_health_of_real_kb_keys() {
    let mut w = World::new("argo-kb").await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    w.start_operator(&[]);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let kb = |name: &str, url: &str| {
        format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: {name}}}\nspec:\n  kbUrl: {url}\n  days: 30\n  auth: {{secretRef: {{name: login}}}}\n"
        )
    };
    let api: Api<NucliaKbApiKey> = Api::namespaced(w.client.clone(), &w.ns);
    w.kubectl_apply(&kb("search", &kb_url));
    w.kubectl_apply(&kb("evil", "http://127.0.0.1:9/api/v1/kb/abc"));
    let missing_kb = match kb_url.rsplit_once("/kb/") {
        Some((base, _)) => format!("{base}/kb/0000000000000000000000000000dead"),
        None => panic!("a KB URL: {kb_url}"),
    };
    w.kubectl_apply(&kb("ghost", &missing_kb));

    wait_status(&api, "search", MINUTE, "Ready", ready).await;
    assert_health::<NucliaKbApiKey>(&w, "search", "Healthy", "holds a valid token").await;
    wait_status(&api, "evil", MINUTE, "UntrustedEndpoint", |s| {
        s.condition("Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "UntrustedEndpoint")
    })
    .await;
    assert_health::<NucliaKbApiKey>(&w, "evil", "Degraded", "127.0.0.1").await;
    wait_status(&api, "ghost", MINUTE, "InvalidSpec", |s| {
        s.condition("Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "InvalidSpec")
    })
    .await;
    assert_health::<NucliaKbApiKey>(&w, "ghost", "Degraded", "is not in any").await;

    let key = w.secret_value("search", "token").await.expect("the key");
    delete_all(&w, &api, &["search", "evil", "ghost"]).await;
    assert!(
        !w.kb_key_works(&kb_url, &key).await,
        "the key still works after delete"
    );
    w.assert_log_has_no_tokens().await;
}

/// The chart README's "Argo CD" section.
fn readme_section() -> String {
    let readme =
        std::fs::read_to_string(common::repo_root().join("charts/nuclia-token-operator/README.md"))
            .expect("chart README");
    let start = readme
        .find("\n## Argo CD\n")
        .expect("an \"Argo CD\" section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    rest[..end].to_owned()
}

/// The `Ready=False` reasons the script calls Progressing (its `retrying` table).
fn retrying_reasons() -> Vec<String> {
    let lua = std::fs::read_to_string(argocd_dir().join("health.lua")).expect("health.lua");
    let start = lua.find("local retrying = {").expect("a retrying table");
    let body = &lua[start..start + lua[start..].find("\n}").expect("its end")];
    body.lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(" = true"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The README lists exactly the reasons the script treats as Progressing, and none of them is
/// one of the terminal reasons the operator marks Stalled.
#[test]
fn argo_health_readme_matches_the_script() {
    let section = readme_section();
    let reasons = retrying_reasons();
    assert!(reasons.len() >= 5, "{reasons:?}");
    let progressing = section
        .lines()
        .find(|l| l.starts_with("| Progressing |"))
        .expect("a Progressing row");
    for r in &reasons {
        assert!(
            progressing.contains(&format!("`{r}`")),
            "the README's Progressing row does not list {r}"
        );
    }
    for terminal in [
        "InvalidSpec",
        "SecretConflict",
        "UntrustedEndpoint",
        "Unauthorized",
    ] {
        assert!(
            !reasons.iter().any(|r| r == terminal),
            "{terminal} retrying"
        );
        assert!(
            !progressing.contains(&format!("`{terminal}`")),
            "{terminal} in the Progressing row"
        );
    }
}

/// The README's `kubectl` command puts the script, byte for byte, under both kinds' keys of an
/// existing `argocd-cm`, leaving its other keys alone (run against the real apiserver, in a
/// namespace of its own instead of `argocd`).
#[tokio::test]
async fn argo_health_readme_command_fills_argocd_cm() {
    let section = readme_section();
    let block = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code))
        .find(|code| code.contains("patch configmap argocd-cm"))
        .expect("the kubectl command");
    let client = common::client().await;
    let ns = common::namespace(&client, "argocd").await;
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "argocd-cm"}, "data": {"url": "https://argocd.example"}
    }))
    .unwrap();
    maps.create(&Default::default(), &cm)
        .await
        .expect("argocd-cm");

    let cluster = common::cluster();
    let path = format!(
        "{}:{}",
        cluster.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = block.replace("-n argocd ", &format!("-n {ns} "));
    assert_ne!(script, block, "the command names the argocd namespace");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(common::repo_root())
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "the README's command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lua = std::fs::read_to_string(argocd_dir().join("health.lua")).unwrap();
    let data = maps
        .get("argocd-cm")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    for kind in ["NucliaPersonalToken", "NucliaKbApiKey", "NucliaNuaKey"] {
        let key = format!("resource.customizations.health.nuclia.dev_{kind}");
        assert!(data.get(&key) == Some(&lua), "{key} is not the script");
    }
    assert_eq!(
        data.get("url").map(String::as_str),
        Some("https://argocd.example")
    );
    assert_eq!(data.len(), 4, "{:?}", data.keys().collect::<Vec<_>>());

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    assert!(
        common::operator::gone_within(&namespaces, &ns, Duration::from_secs(90)).await,
        "namespace {ns} still there 90 s after delete"
    );
}
