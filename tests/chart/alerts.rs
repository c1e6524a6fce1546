//! The chart's alert rules (issue 17): rendered by `helm template`, checked by `promtool check
//! rules`, and unit-tested by `promtool test rules` with `tests/alerts/rules.test.yaml` (series
//! in, alerts out: the operator gone, no leader, renewal overdue before expiring soon, a replaced
//! token left unrevoked, an abandoned revocation, a burst of 401s, nothing on healthy series).
//! Also the values that shape the rules and the runbooks the alerts link to.
//!
//! Needs no control plane: helm comes from `NTO_K8S_BIN` (or `tests/k8s/provision.sh`), promtool
//! from `NTO_PROMTOOL`, `PATH` or the cache `tests/promtool.sh` fills (CI runs that script).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;

const CHART: &str = "charts/nuclia-token-operator";
const RULES_TEST: &str = "tests/alerts/rules.test.yaml";
const RUNBOOKS: &str = "docs/runbooks.md";
const JOB: &str = "nto-nuclia-token-operator-metrics";

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn helm_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("NTO_K8S_BIN") {
        return Path::new(&dir).join("helm");
    }
    let out = Command::new(repo_root().join("tests/k8s/provision.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/k8s/provision.sh");
    assert!(out.status.success(), "provisioning helm failed");
    Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("helm")
}

/// promtool: `NTO_PROMTOOL`, else on `PATH`, else where `tests/promtool.sh` caches it.
pub(crate) fn promtool() -> PathBuf {
    if let Ok(p) = std::env::var("NTO_PROMTOOL") {
        return p.into();
    }
    if let Some(p) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
    {
        return p;
    }
    let cache = std::env::var_os("NTO_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/nuclia-token-operator")
        });
    let cached = cache.join("promtool/promtool");
    assert!(
        cached.is_file(),
        "promtool not found (NTO_PROMTOOL, PATH, {}): the alert-rule and dashboard tests need it. Run \
         tests/promtool.sh (it unpacks promtool from Debian's prometheus package; CI's .ci/run \
         does) or install Debian's `prometheus` package",
        cached.display()
    );
    cached
}

pub(crate) fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of the chart (release `nto`, namespace `ops`) with the PrometheusRule on.
fn render_raw(args: &[&str]) -> Output {
    let chart = repo_root().join(CHART);
    Command::new(helm_bin())
        .args([
            "template",
            "nto",
            chart.to_str().unwrap(),
            "--namespace",
            "ops",
        ])
        .args(["--set", "prometheusRule.enabled=true"])
        .args(args)
        .output()
        .expect("run helm")
}

/// The rendered PrometheusRule's `spec.groups`, or None when the chart renders none.
fn groups(args: &[&str]) -> Option<serde_json::Value> {
    let text = ok(&format!("helm template {args:?}"), render_raw(args));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("rendered manifest is YAML"))
        .find(|d| d["kind"] == "PrometheusRule")
        .map(|d| d["spec"]["groups"].clone())
}

fn rules(groups: &serde_json::Value) -> Vec<serde_json::Value> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn alert<'a>(rules: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    rules.iter().find(|r| r["alert"] == name)
}

fn alert_names(rules: &[serde_json::Value]) -> BTreeSet<String> {
    rules
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

/// Writes `groups` as a Prometheus rule file (JSON is YAML) into `dir/rules.yaml`.
fn write_rules(dir: &Path, groups: &serde_json::Value) -> PathBuf {
    let path = dir.join("rules.yaml");
    let file = serde_json::json!({ "groups": groups });
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    path
}

pub(crate) fn promtool_run(args: &[&str], dir: &Path) -> Output {
    Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool")
}

/// The default rules pass `promtool check rules` and every unit test of
/// `tests/alerts/rules.test.yaml`, which names every alert of the chart.
#[test]
fn alert_rules_pass_promtool_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let groups = groups(&[]).expect("a PrometheusRule");
    let rules = rules(&groups);
    let rules_file = write_rules(dir.path(), &groups);
    ok(
        "promtool check rules",
        promtool_run(
            &["check", "rules", rules_file.to_str().unwrap()],
            dir.path(),
        ),
    );

    let test_src = repo_root().join(RULES_TEST);
    let text = std::fs::read_to_string(&test_src).unwrap();
    let tests: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let tested: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["alertname"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        tested,
        alert_names(&rules),
        "{RULES_TEST} must test every alert of the chart, and only those"
    );
    std::fs::write(dir.path().join("rules.test.yaml"), text).unwrap();
    let out = ok(
        "promtool test rules",
        promtool_run(&["test", "rules", "rules.test.yaml"], dir.path()),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Each alert links to its own section of `docs/runbooks.md` (the default `runbookBaseUrl` is
/// that file in the repository), and the chart README's alert table lists it.
#[test]
fn every_alert_has_a_runbook_section() {
    let rules = rules(&groups(&[]).expect("a PrometheusRule"));
    let names = alert_names(&rules);
    assert_eq!(names.len(), 9, "{names:?}");
    let runbooks = std::fs::read_to_string(repo_root().join(RUNBOOKS)).unwrap();
    let headings: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::to_owned)
        .collect();
    let readme = std::fs::read_to_string(repo_root().join(CHART).join("README.md")).unwrap();
    for name in &names {
        let url = alert(&rules, name).unwrap()["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let (base, anchor) = url.split_once('#').expect("an anchor");
        assert!(
            base.starts_with("https://") && base.ends_with(&format!("/{RUNBOOKS}")),
            "{name}: {url}"
        );
        assert_eq!(anchor, name.to_lowercase(), "{name}: {url}");
        assert!(
            headings.contains(name),
            "{RUNBOOKS} has no section `## {name}`"
        );
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "the chart README's alert table lacks {name}"
        );
        let r = alert(&rules, name).unwrap();
        for key in ["summary", "description"] {
            assert!(r["annotations"][key].is_string(), "{name}: no {key}");
        }
        assert!(r["labels"]["severity"].is_string(), "{name}: no severity");
    }
}

/// The values shape the rules: the operator's targets by `targetSelector`, severities,
/// thresholds, a runbook base URL, alerts left out, custom rules appended (and still valid for
/// promtool); the schema refuses what would render a broken rule.
#[test]
fn alert_rule_values() {
    assert!(
        groups(&["--set", "prometheusRule.enabled=false"]).is_none(),
        "no PrometheusRule unless enabled"
    );

    let default = rules(&groups(&[]).unwrap());
    let absent = alert(&default, "NucliaTokenOperatorAbsent").unwrap();
    let expr = absent["expr"].as_str().unwrap();
    assert!(
        expr.contains(&format!(r#"up{{job="{JOB}",namespace="ops"}} == 1"#)),
        "by default the ServiceMonitor's job (the metrics Service) in the release namespace: {expr}"
    );
    assert_eq!(absent["labels"]["severity"], "critical");
    assert_eq!(absent["for"], "10m");
    assert_eq!(
        alert(&default, "NucliaCredentialNotReady").unwrap()["labels"]["severity"],
        "warning"
    );

    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
prometheusRule:
  targetSelector: 'job="kubernetes-pods",app_kubernetes_io_name="nuclia-token-operator"'
  runbookBaseUrl: https://wiki.example.com/nto/runbooks/
  severity: info
  absentSeverity: page
  absentFor: 3m
  renewalOverdueSeconds: 7200
  unauthorizedThreshold: 50
  unauthorizedWindow: 1h
  disabled: {NucliaCredentialExpiringSoon: true}
  additionalRules:
    - alert: NucliaTooManyCredentials
      expr: count(nuclia_credential_ready) > 1000
      for: 1h
      labels: {severity: info}
    - record: nuclia:credentials_not_ready:count
      expr: count(nuclia_credential_ready == 0)
"#,
    )
    .unwrap();
    let groups = groups(&["-f", values.to_str().unwrap()]).unwrap();
    let custom = rules(&groups);
    let names = alert_names(&custom);
    assert!(!names.contains("NucliaCredentialExpiringSoon"), "disabled");
    assert!(names.contains("NucliaCredentialNotReady"));
    assert!(
        names.contains("NucliaTooManyCredentials"),
        "additional rule"
    );
    assert!(
        custom
            .iter()
            .any(|r| r["record"] == "nuclia:credentials_not_ready:count"),
        "additional recording rule"
    );
    let sel = r#"job="kubernetes-pods",app_kubernetes_io_name="nuclia-token-operator""#;
    for name in ["NucliaTokenOperatorAbsent", "NucliaTokenOperatorNoLeader"] {
        let r = alert(&custom, name).unwrap();
        let expr = r["expr"].as_str().unwrap();
        assert!(expr.contains(sel), "{name}: {expr}");
        assert!(!expr.contains(JOB), "{name}: {expr}");
        assert_eq!(r["labels"]["severity"], "page");
        assert_eq!(r["for"], "3m");
        assert_eq!(
            r["annotations"]["runbook_url"],
            format!(
                "https://wiki.example.com/nto/runbooks#{}",
                name.to_lowercase()
            )
        );
    }
    let overdue = alert(&custom, "NucliaCredentialRenewalOverdue").unwrap();
    assert!(
        overdue["expr"].as_str().unwrap().ends_with("> 7200"),
        "{overdue}"
    );
    assert_eq!(overdue["labels"]["severity"], "info");
    let burst = alert(&custom, "NucliaApiUnauthorizedBurst").unwrap()["expr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        burst.contains(r#"{code="401"}[1h]"#) && burst.trim_end().ends_with("> 50"),
        "{burst}"
    );
    let rules_file = write_rules(dir.path(), &groups);
    ok(
        "promtool check rules (custom values)",
        promtool_run(
            &["check", "rules", rules_file.to_str().unwrap()],
            dir.path(),
        ),
    );

    for bad in [
        "prometheusRule.disabled.NoSuchAlert=true",
        "prometheusRule.absentFor=ten minutes",
        "prometheusRule.unauthorizedWindow=15",
        "prometheusRule.additionalRules[0].alert=NoExpr",
        "prometheusRule.runbookBaseUrl=docs/runbooks.md",
    ] {
        let out = render_raw(&["--set", bad]);
        assert!(
            !out.status.success(),
            "values.schema.json accepts {bad}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
