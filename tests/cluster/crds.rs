//! The custom resources against a real kube-apiserver: the generated YAML is current, the CRDs
//! install, `kubectl get nuclia` and `kubectl explain` work, the examples are accepted and bad
//! manifests are refused with a message that names the field.

use crate::common;

use common::{kubectl, namespace};

/// The committed CRD YAML must be what the Rust types generate.
#[test]
fn committed_crds_are_current() {
    let root = common::repo_root();
    let mut stale = Vec::new();
    for (path, want) in nuclia_token_operator::crds::generated_files() {
        let have = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
        if have != want {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run `cargo run --bin crdgen` and commit the result"
    );
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn crds_install_and_are_documented() {
    let client = common::client().await;
    common::install_crds(&client).await;
    let ns = namespace(&client, "crds").await;

    // The apiserver publishes a new CRD's discovery and OpenAPI a moment after Established.
    let within = std::time::Duration::from_secs(30);
    let listed = common::poll(within, || async {
        kubectl(&["get", "nuclia", "-n", &ns], None)
            .status
            .success()
            .then_some(())
    })
    .await;
    let out = kubectl(&["get", "nuclia", "-n", &ns], None);
    assert!(listed.is_some(), "kubectl get nuclia: {}", text(&out));

    let doc = common::poll(within, || async {
        let out = kubectl(&["explain", "nucliapersonaltoken.spec.days"], None);
        out.status.success().then(|| text(&out))
    })
    .await
    .expect("kubectl explain nucliapersonaltoken.spec.days");
    assert!(
        doc.contains("Lifetime of each credential, in days"),
        "{doc}"
    );

    let out = kubectl(&["explain", "nkak.spec.role"], None);
    assert!(text(&out).contains("SMEMBER"), "{}", text(&out));
}

#[tokio::test]
async fn examples_are_accepted() {
    let client = common::client().await;
    common::install_crds(&client).await;
    let ns = namespace(&client, "examples").await;
    let dir = common::repo_root().join("examples");
    let mut applied = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let manifest = std::fs::read_to_string(&path).unwrap();
        let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&manifest));
        assert!(
            out.status.success(),
            "{} rejected: {}",
            path.display(),
            text(&out)
        );
        applied += 1;
    }
    assert!(
        applied >= 3,
        "expected the example manifests, applied {applied}"
    );
    // Cluster-scoped: not deleted with the namespace.
    kubectl(
        &[
            "delete",
            "nucliaclustercredential",
            "nuclia-admin",
            "--ignore-not-found",
        ],
        None,
    );
}

const PT: &str = r#"
apiVersion: nuclia.dev/v1alpha1
kind: NucliaPersonalToken
metadata: {name: bad}
spec:
  description: ok
  days: 30
  auth: {secretRef: {name: login, key: token}}
"#;

const KB: &str = r#"
apiVersion: nuclia.dev/v1alpha1
kind: NucliaKbApiKey
metadata: {name: bad}
spec:
  kbUrl: https://europe-1.dp.progress.cloud/api/v1/kb/0f6a
  auth: {secretRef: {name: login}}
"#;

/// Whether an error message names the field at `path` (`spec.days`, `spec.auth.secretRef.name`,
/// or a bare name such as an unknown field's). Where kubectl validates on the client (an
/// apiserver without field validation, e.g. 1.20) a missing field is named by its parent and
/// its quoted name (`…NucliaPersonalToken.spec): missing required field "description"`); a newer
/// apiserver names the path itself (`spec.description: Required value`). Either names it.
fn names_field(msg: &str, path: &str) -> bool {
    if msg.contains(path) {
        return true;
    }
    match path.rsplit_once('.') {
        Some((parent, leaf)) => {
            msg.contains(&format!(".{parent})")) && msg.contains(&format!("\"{leaf}\""))
        }
        None => false,
    }
}

/// Both phrasings of a missing required field name it; a message about another field does not.
#[test]
fn field_paths_are_recognised_in_both_phrasings() {
    let client_side = "error: error validating \"STDIN\": error validating data: \
        ValidationError(NucliaPersonalToken.spec): missing required field \"description\" in \
        dev.nuclia.v1alpha1.NucliaPersonalToken.spec; if you choose to ignore these errors, \
        turn validation off with --validate=false";
    let server_side =
        "The NucliaPersonalToken \"bad\" is invalid: spec.description: Required value";
    for msg in [client_side, server_side] {
        assert!(names_field(msg, "spec.description"), "{msg}");
        assert!(!names_field(msg, "spec.auth"), "{msg}");
        assert!(!names_field(msg, "spec.kbUrl"), "{msg}");
    }
    let nested =
        "ValidationError(NucliaPersonalToken.spec.auth): missing required field \"secretRef\"";
    assert!(names_field(nested, "spec.auth.secretRef"));
    assert!(!names_field(nested, "spec.secretRef"));
}

/// Each case: a manifest (a base with one line changed) and the field the error must name.
#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let client = common::client().await;
    common::install_crds(&client).await;
    let ns = namespace(&client, "invalid").await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("days 0", PT.replace("days: 30", "days: 0"), "spec.days"),
        (
            "days 1096",
            PT.replace("days: 30", "days: 1096"),
            "spec.days",
        ),
        (
            "days string",
            PT.replace("days: 30", "days: thirty"),
            "spec.days",
        ),
        (
            "days negative",
            PT.replace("days: 30", "days: -5"),
            "spec.days",
        ),
        (
            "empty description",
            PT.replace("description: ok", "description: \"\""),
            "spec.description",
        ),
        (
            "description control chars",
            PT.replace("description: ok", "description: \"a\\u0007b\""),
            "spec.description",
        ),
        (
            "description too long",
            PT.replace(
                "description: ok",
                &format!("description: {}", "x".repeat(201)),
            ),
            "spec.description",
        ),
        (
            "missing description",
            PT.replace("  description: ok\n", ""),
            "spec.description",
        ),
        (
            "missing auth",
            PT.replace("  auth: {secretRef: {name: login, key: token}}\n", ""),
            "spec.auth",
        ),
        (
            "invalid secret name",
            PT.replace("days: 30", "days: 30\n  secret: {name: Not_A_Name}"),
            "spec.secret.name",
        ),
        (
            "invalid secretRef name",
            PT.replace("name: login", "name: -login"),
            "spec.auth.secretRef.name",
        ),
        (
            "bad renewBefore",
            PT.replace("days: 30", "days: 30\n  renewBefore: 10 days"),
            "spec.renewBefore",
        ),
        (
            "bad revokePreviousAfter",
            PT.replace(
                "days: 30",
                "days: 30\n  rotation: {revokePreviousAfter: soon}",
            ),
            "spec.rotation.revokePreviousAfter",
        ),
        (
            "bad deletionPolicy",
            PT.replace("days: 30", "days: 30\n  deletionPolicy: Keep"),
            "spec.deletionPolicy",
        ),
        (
            "unknown field",
            PT.replace("days: 30", "days: 30\n  lifetime: 5"),
            "lifetime",
        ),
        ("unknown role", format!("{KB}  role: ADMIN\n"), "spec.role"),
        (
            "kbUrl not a KB URL",
            KB.replace("/api/v1/kb/0f6a", "/api/v1/kbs"),
            "spec.kbUrl",
        ),
        (
            "kbUrl with credentials",
            KB.replace("https://europe-1", "https://user:pw@europe-1"),
            "spec.kbUrl",
        ),
        (
            "kbUrl with query",
            KB.replace("/kb/0f6a", "/kb/0f6a?x=1"),
            "spec.kbUrl",
        ),
        ("kbUrl ftp", KB.replace("https://", "ftp://"), "spec.kbUrl"),
        (
            "bad account",
            format!("{KB}  account: \"Acme Corp\"\n"),
            "spec.account",
        ),
        (
            "bad credential type",
            KB.replace(
                "{secretRef: {name: login}}",
                "{secretRef: {name: login}, type: Password}",
            ),
            "spec.auth.type",
        ),
        (
            "missing kbUrl",
            KB.replace(
                "  kbUrl: https://europe-1.dp.progress.cloud/api/v1/kb/0f6a\n",
                "",
            ),
            "spec.kbUrl",
        ),
    ];
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (what, manifest, field) in &cases {
        let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(manifest));
        let msg = text(&out);
        if out.status.success() {
            failures.push(format!("{what}: accepted"));
        } else if !names_field(&msg, field) {
            failures.push(format!("{what}: error does not name {field}: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every property of `schema` (JSON), by path (`spec.secret.name`, `spec.rolloutRestartTargets[].kind`,
/// `status.kb.zone`), with its description.
fn schema_fields(schema: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(node: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        if let Some(props) = node["properties"].as_object() {
            for (name, prop) in props {
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                let description = prop["description"].as_str().unwrap_or_default();
                out.push((p.clone(), description.to_owned()));
                walk(prop, &p, out);
            }
        }
        if node["items"].is_object() {
            walk(&node["items"], &format!("{path}[]"), out);
        }
        if node["additionalProperties"].is_object() {
            walk(&node["additionalProperties"], &format!("{path}{{}}"), out);
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for sub in node[key].as_array().into_iter().flatten() {
                walk(sub, path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(schema, "", &mut out);
    out
}

/// The generated openAPIV3Schema of a kind, as JSON.
fn crd_schema(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> serde_json::Value {
    let v = serde_json::to_value(crd).expect("CRD as JSON");
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// `kubectl explain` has something to say for every field: each property of both generated
/// schemas (spec and status, nested objects and list items included) has a description, the
/// fields of issue 12 among them.
#[test]
fn every_crd_field_has_a_description() {
    for (kind, crd) in [
        (
            "NucliaPersonalToken",
            nuclia_token_operator::crds::crds()[0].clone(),
        ),
        (
            "NucliaKbApiKey",
            nuclia_token_operator::crds::crds()[1].clone(),
        ),
        (
            "NucliaNuaKey",
            nuclia_token_operator::crds::crds()[2].clone(),
        ),
    ] {
        let schema = crd_schema(&crd);
        assert!(
            !schema["description"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .is_empty(),
            "{kind} has no description"
        );
        let fields = schema_fields(&schema);
        let undocumented: Vec<&str> = fields
            .iter()
            .filter(|(_, d)| d.trim().is_empty())
            .map(|(p, _)| p.as_str())
            .collect();
        assert!(
            undocumented.is_empty(),
            "{kind}: fields without a description (add a doc comment in src/crd.rs, then `cargo run --bin crdgen`): {undocumented:?}"
        );
        for path in [
            "spec.rolloutRestartTargets",
            "spec.rolloutRestartTargets[].kind",
            "spec.rolloutRestartTargets[].name",
            "spec.secret.type",
            "spec.secret.additionalFormats",
            "status.rolloutRestart",
            "status.conditions",
            "status.observedGeneration",
        ] {
            assert!(
                fields.iter().any(|(p, _)| p == path),
                "{kind}: no field {path}"
            );
        }
        println!("{kind}: {} fields, all documented", fields.len());
    }
}

/// What `kubectl explain` reads on this apiserver (the OpenAPI v2 it publishes for the CRDs):
/// every field under `spec` and `status`, the new ones included, is there with the description
/// of the generated schema, and `kubectl explain` prints it.
///
/// A v1.20 apiserver drops the properties of a `nullable` object from OpenAPI v2; the generated
/// schema marks no object with properties nullable (`crds::generated_files`), so `status` and its
/// nested objects are published whole.
#[tokio::test]
async fn kubectl_explain_documents_every_field() {
    let client = common::client().await;
    common::install_crds(&client).await;
    let out = kubectl(&["get", "--raw", "/openapi/v2"], None);
    assert!(out.status.success(), "GET /openapi/v2: {}", text(&out));
    let published: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("OpenAPI v2 as JSON");
    let mut failures = Vec::new();
    for (kind, crd) in [
        (
            "NucliaPersonalToken",
            nuclia_token_operator::crds::crds()[0].clone(),
        ),
        (
            "NucliaKbApiKey",
            nuclia_token_operator::crds::crds()[1].clone(),
        ),
        (
            "NucliaNuaKey",
            nuclia_token_operator::crds::crds()[2].clone(),
        ),
    ] {
        let definition = &published["definitions"][format!("dev.nuclia.v1alpha1.{kind}")];
        assert!(definition.is_object(), "{kind} is not published");
        let served: std::collections::BTreeMap<String, String> =
            schema_fields(definition).into_iter().collect();
        let spec: Vec<(String, String)> = schema_fields(&crd_schema(&crd))
            .into_iter()
            .filter(|(p, _)| p.starts_with("spec") || p.starts_with("status"))
            .collect();
        assert!(spec.len() >= 40, "{kind}: {} fields", spec.len());
        for (path, want) in &spec {
            match served.get(path) {
                None => failures.push(format!("{kind}.{path}: not published")),
                Some(got) if got != want => {
                    failures.push(format!("{kind}.{path}: published {got:?}, want {want:?}"))
                }
                Some(_) => {}
            }
        }
        for (path, want) in [
            (
                "spec.rolloutRestartTargets",
                "Workloads in this namespace to restart",
            ),
            ("spec.secret.type", ""),
            ("spec.secret.additionalFormats", ""),
            ("status", "Observed state"),
            (
                "status.rolloutRestart.requestedAt",
                "When the restart was asked",
            ),
            (
                "status.previousTokens.scope.credential",
                "The credentials Secret key",
            ),
        ] {
            let field = format!("{}.{path}", kind.to_lowercase());
            let out = kubectl(&["explain", &field], None);
            let doc = text(&out);
            let first_words = match want {
                "" => spec
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, d)| d.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default(),
                w => w.to_owned(),
            };
            let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
            if !out.status.success() || first_words.is_empty() || !flat.contains(&first_words) {
                failures.push(format!(
                    "kubectl explain {field} lacks {first_words:?}: {doc}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
