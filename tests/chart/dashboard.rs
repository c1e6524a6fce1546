//! The Grafana dashboard the chart ships (issue 28): `dashboards/nuclia-token-operator.json`,
//! in a ConfigMap for Grafana's dashboard sidecar behind `dashboard.enabled`.
//!
//! - The ConfigMap renders only when enabled, with the sidecar's label (configurable), and holds
//!   the file's JSON; the apiserver accepts it.
//! - Every panel query (and the metric selector of every query variable), with Grafana's
//!   variables replaced by concrete values, parses: each becomes a recording rule of a rule file
//!   that `promtool check rules` checks.
//! - Every metric name those queries select has samples on a real operator's `/metrics`: a
//!   process started against the control plane and nuclia-fake, scraped once it has made
//!   credentials Ready, rotated one revoking the old token at once and one keeping it for its
//!   grace period, and failed to reconcile a resource whose login Secret is missing. Those events are needed: prometheus-client (0.26) leaves a
//!   family with no series out of the page altogether, `# HELP` and `# TYPE` included, and
//!   several families get their first series only with an event (a revocation, a failure).
//!   Each sample's name is also checked against its family's `# TYPE` (a counter's `_total`, a
//!   histogram's `_bucket`, `_sum`, `_count`, a gauge's own name).
//!
//! The render and promtool parts need no control plane (helm and promtool as in [`crate::alerts`]).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use crate::alerts::{helm_bin, ok, promtool_run, repo_root};
use crate::common;
use common::operator::{World, ready, reason, wait_status};
use kube::api::Api;
use nuclia_token_operator::crd::NucliaPersonalToken;
use serde::Deserialize;
use serde_json::Value;

const CHART: &str = "charts/nuclia-token-operator";
const DASHBOARD: &str = "charts/nuclia-token-operator/dashboards/nuclia-token-operator.json";
const DATA_KEY: &str = "nuclia-token-operator.json";
const MINUTE: Duration = Duration::from_secs(60);
/// The rows of the dashboard, in order.
const ROWS: [&str; 4] = [
    "Credentials",
    "Nuclia API",
    "Cluster credentials",
    "Operator health",
];

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// `helm template` of the chart (release `nto`, namespace `ops`) with `--set` values, one JSON
/// value per manifest; Err with helm's output when it fails.
fn render(sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = repo_root().join(CHART);
    let mut cmd = Command::new(helm_bin());
    cmd.args([
        "template",
        "nto",
        chart.to_str().unwrap(),
        "--namespace",
        "ops",
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
            .map(|doc| Value::deserialize(doc).expect("rendered manifest is YAML"))
            .filter(|v| !v.is_null())
            .collect(),
    )
}

/// The rendered dashboard ConfigMaps: those holding the dashboard's key.
fn dashboard_configmaps(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["kind"] == "ConfigMap" && !d["data"][DATA_KEY].is_null())
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// the queries

/// One PromQL query of the dashboard: where it is (for messages) and its text as written.
struct Query {
    place: String,
    record: String,
    expr: String,
}

/// Every panel target's `expr`, and the metric selector of every `label_values(selector,
/// label)` query variable.
fn queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("panel {:?} has a target without an expr: {t}", p["title"])
            });
            let ref_id = t["refId"].as_str().expect("refId");
            out.push(Query {
                place: format!("panel {} {:?} target {ref_id}", p["id"], p["title"]),
                record: format!("dashboard:panel_{}_{ref_id}", p["id"]),
                expr: expr.to_owned(),
            });
        }
    }
    for v in variables(d).iter().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("a query variable's query");
        let args = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {q}", v["name"]));
        let (selector, _label) = args.rsplit_once(',').unwrap_or_else(|| {
            panic!("variable {}: label_values without a metric: {q}", v["name"])
        });
        out.push(Query {
            place: format!("variable {}", v["name"]),
            record: format!("dashboard:variable_{}", v["name"].as_str().unwrap()),
            expr: selector.trim().to_owned(),
        });
    }
    out
}

/// Every panel, rows included (a collapsed row holds its panels).
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

fn variables(d: &Value) -> Vec<Value> {
    d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The concrete value of each variable a query may use: Grafana's interval and range variables,
/// and each of the dashboard's query variables as "All" (its `allValue`).
fn variable_values(d: &Value) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = [
        ("__rate_interval", "5m"),
        ("__interval", "1m"),
        ("__interval_ms", "60000"),
        ("__range", "6h"),
        ("__range_s", "21600"),
        ("__range_ms", "21600000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for v in variables(d).iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap().to_owned();
        assert_eq!(v["includeAll"], true, "variable {name}: no All option");
        let all = v["allValue"]
            .as_str()
            .unwrap_or_else(|| panic!("variable {name}: no allValue"));
        values.insert(name, all.to_owned());
    }
    values
}

/// `expr` with Grafana's variables (`$name`, `${name}`, `${name:format}`, `[[name]]`) replaced
/// from `values`; Err names a variable that has no value (or a `$` that starts none).
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(r) = tail.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
            let name = r[..end].split(':').next().unwrap_or_default();
            (name, end + 3)
        } else if let Some(r) = tail.strip_prefix("[[") {
            let end = r
                .find("]]")
                .ok_or_else(|| format!("unclosed [[ in {expr}"))?;
            let name = r[..end].split(':').next().unwrap_or_default();
            (name, end + 4)
        } else if let Some(r) = tail.strip_prefix('$') {
            let end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            (&r[..end], end + 1)
        } else {
            // a '[' that starts no variable: a range
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        let value = values
            .get(name)
            .ok_or_else(|| format!("variable {name:?} has no value in {expr}"))?;
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Words of PromQL that are never metric names: operators, modifiers, the numbers `Inf` and
/// `NaN`, and the aggregation operators (`sum by (k) (…)`: no `(` right after the name).
const KEYWORDS: [&str; 28] = [
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the string literal that starts at `i` (`"…"`, `'…'` with escapes, or
/// `` `…` `` raw).
fn skip_string(b: &[u8], i: usize) -> Result<usize, String> {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if quote != b'`' => j += 2,
            c if c == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err("an unclosed string".to_owned())
}

/// The index just past the bracket that closes the one at `i` (`{`, `[` or `(`), strings
/// skipped.
fn skip_group(b: &[u8], i: usize) -> Result<usize, String> {
    let (open, close) = (b[i], matching(b[i]));
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("an unclosed {:?}", open as char))
}

fn matching(open: u8) -> u8 {
    match open {
        b'{' => b'}',
        b'[' => b']',
        _ => b')',
    }
}

/// The metric names a PromQL expression selects: every identifier that is not a function or
/// aggregation (followed by `(`), a keyword, a label name (inside `{…}` or the list after `by`,
/// `without`, `on`, `ignoring`, `group_left`, `group_right`), a number or a duration. Strings,
/// comments and ranges are skipped. Err when a selector names no metric (`{job="x"}`, or
/// `__name__` in its matchers): every selector of the dashboard must name its metric.
/// Meant for expressions promtool has parsed.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let b = expr.as_bytes();
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut names = BTreeSet::new();
    // whether the last token was a metric name (so a `{` that follows belongs to it)
    let mut after_metric = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            i = expr[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(b, i)?;
            after_metric = false;
        } else if c == b'{' {
            let end = skip_group(b, i)?;
            if !after_metric || expr[i..end].contains("__name__") {
                return Err(format!(
                    "a selector without a metric name in front: {}",
                    &expr[i..end]
                ));
            }
            i = end;
            after_metric = false;
        } else if c == b'[' {
            i = skip_group(b, i)?;
            after_metric = false;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // a number (1, 0.5, 1e-3, 0x1f) or a duration (5m, 1h30m)
            let hex = c == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X'));
            i += if hex { 2 } else { 1 };
            while i < b.len() {
                let d = b[i];
                let exponent_sign = !hex
                    && matches!(d, b'+' | b'-')
                    && matches!(b[i - 1], b'e' | b'E')
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit);
                let part = if hex {
                    d.is_ascii_hexdigit()
                } else {
                    d.is_ascii_alphanumeric() || d == b'.' || d == b'_'
                };
                if part || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            after_metric = false;
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let lower = word.to_ascii_lowercase();
            let next = expr[i..]
                .trim_start()
                .as_bytes()
                .first()
                .copied()
                .unwrap_or(0);
            let next_at = b.len() - expr[i..].trim_start().len();
            after_metric = false;
            if LABEL_LISTS.contains(&lower.as_str()) {
                if next == b'(' {
                    i = skip_group(b, next_at)?;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || next == b'(' {
                // a keyword, or a function
            } else {
                names.insert(word.to_owned());
                after_metric = true;
            }
        } else {
            i += 1;
            after_metric = false;
        }
    }
    Ok(names)
}

/// Every metric name the dashboard's queries select, with where each is used.
fn dashboard_metric_names(d: &Value) -> BTreeMap<String, Vec<String>> {
    let values = variable_values(d);
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for q in queries(d) {
        let expr = substitute(&q.expr, &values).unwrap_or_else(|e| panic!("{}: {e}", q.place));
        let names = metric_names(&expr).unwrap_or_else(|e| panic!("{}: {e}", q.place));
        assert!(!names.is_empty(), "{}: selects no metric: {expr}", q.place);
        for n in names {
            used.entry(n).or_default().push(q.place.clone());
        }
    }
    used
}

// ---------------------------------------------------------------------------------------------
// the exposition

/// What a `/metrics` scrape declares: each family's type (`# TYPE` lines) and the names of the
/// samples it holds.
struct Exposition {
    families: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut families = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                families.insert(name.to_owned(), kind.trim().to_owned());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_owned());
            }
        }
        Exposition { families, samples }
    }

    /// The sample names each declared family exports, as Prometheus stores them: a counter's
    /// `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's own name.
    fn exported(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (family, kind) in &self.families {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "gauge" => &[""],
                "histogram" => &["_bucket", "_sum", "_count"],
                other => panic!(
                    "family {family} has type {other}: teach Exposition::exported its sample names"
                ),
            };
            for s in suffixes {
                out.insert(format!("{family}{s}"), family.clone());
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// tests

/// The ConfigMap exists only with `dashboard.enabled`; it carries the sidecar's label (name and
/// value configurable), the release's labels, optional annotations and namespace, and the
/// dashboard file's JSON unchanged; the schema refuses a label that is not one.
#[test]
fn dashboard_configmap_renders_only_when_enabled() {
    let docs = render(&[]).unwrap();
    assert!(
        dashboard_configmaps(&docs).is_empty(),
        "a dashboard ConfigMap by default"
    );
    assert!(
        !docs
            .iter()
            .any(|d| !d["metadata"]["labels"]["grafana_dashboard"].is_null()),
        "an object with the sidecar's label by default"
    );
    let disabled = render(&["dashboard.enabled=false"]).unwrap();
    assert!(dashboard_configmaps(&disabled).is_empty());

    let docs = render(&["dashboard.enabled=true"]).unwrap();
    let cms = dashboard_configmaps(&docs);
    assert_eq!(cms.len(), 1, "one dashboard ConfigMap when enabled");
    let cm = &cms[0];
    assert_eq!(
        cm["metadata"]["name"],
        "nto-nuclia-token-operator-dashboard"
    );
    assert_eq!(cm["metadata"]["namespace"], "ops");
    let labels = &cm["metadata"]["labels"];
    assert_eq!(
        labels["grafana_dashboard"], "1",
        "the sidecar's label: {labels}"
    );
    assert_eq!(labels["app.kubernetes.io/instance"], "nto", "{labels}");
    assert!(cm["metadata"]["annotations"].is_null());
    let data = cm["data"].as_object().unwrap();
    assert_eq!(data.len(), 1, "one key: {:?}", data.keys());
    let held: Value = serde_json::from_str(data[DATA_KEY].as_str().expect("a string"))
        .expect("the ConfigMap holds valid JSON");
    assert_eq!(held, dashboard(), "the ConfigMap holds the dashboard file");
    assert_eq!(held["uid"], "nuclia-token-operator");

    let docs = render(&[
        "dashboard.enabled=true",
        "dashboard.label=example.com/dashboard",
        "dashboard.labelValue=1",
        "dashboard.namespace=monitoring",
        "dashboard.annotations.grafana_folder=Nuclia",
    ])
    .unwrap();
    let cm = &dashboard_configmaps(&docs)[0];
    let labels = &cm["metadata"]["labels"];
    assert_eq!(
        labels["example.com/dashboard"], "1",
        "a number given with --set is the label's text: {labels}"
    );
    assert!(labels["grafana_dashboard"].is_null(), "{labels}");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Nuclia");
    let docs = render(&["dashboard.enabled=true", "dashboard.labelValue=yes"]).unwrap();
    assert_eq!(
        dashboard_configmaps(&docs)[0]["metadata"]["labels"]["grafana_dashboard"],
        "yes"
    );

    for bad in [
        "dashboard.label=not a label",
        "dashboard.label=",
        "dashboard.labelValue=-bad-",
        "dashboard.folder=Nuclia",
    ] {
        let out = render(&["dashboard.enabled=true", bad]);
        assert!(out.is_err(), "values.schema.json accepts {bad}");
    }
}

/// The dashboard's shape: Grafana's schema 39, a Prometheus data source variable used by every
/// panel and target, the `job` and `namespace` variables, the three rows in order with every
/// panel under one, unique panel ids, panels inside the 24-column grid.
#[test]
fn dashboard_layout() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    assert_eq!(d["uid"], "nuclia-token-operator");
    let vars = variables(&d);
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["datasource", "job", "namespace"]);
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "prometheus");
    let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for v in &vars[1..] {
        assert_eq!(v["datasource"], ds, "variable {}", v["name"]);
    }

    let top = d["panels"].as_array().unwrap();
    let rows: Vec<&str> = top
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ROWS);
    assert_eq!(top[0]["type"], "row", "the first panel is a row");
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = &p["title"];
        assert!(
            ids.insert(p["id"].as_u64().expect("an id")),
            "id of {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{title}: {g}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], ds, "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"], ds, "{title}");
        }
    }
}

/// Every query parses: each, with the variables replaced, is a recording rule of a file that
/// `promtool check rules` accepts.
#[test]
fn dashboard_queries_parse_with_promtool() {
    let d = dashboard();
    let values = variable_values(&d);
    let queries = queries(&d);
    assert!(queries.len() > 20, "{} queries", queries.len());
    let mut rules = Vec::new();
    let mut places = Vec::new();
    for q in &queries {
        let expr = substitute(&q.expr, &values).unwrap_or_else(|e| panic!("{}: {e}", q.place));
        assert!(!expr.contains('$'), "{}: {expr}", q.place);
        places.push(format!("{} = {}: {expr}", q.record, q.place));
        rules.push(serde_json::json!({"record": q.record, "expr": expr}));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yaml");
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_json::to_string_pretty(&groups).unwrap()).unwrap();
    let out = promtool_run(&["check", "rules", file.to_str().unwrap()], dir.path());
    assert!(
        out.status.success(),
        "promtool check rules refused a dashboard query:\n{}{}\nthe rules:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        places.join("\n")
    );
    let said = ok("promtool check rules", out);
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{said}"
    );
}

/// What the name extraction finds, and what it refuses.
#[test]
fn dashboard_metric_name_extraction() {
    let names = |e: &str| metric_names(e).unwrap().into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"sum by (kind, le) (rate(h_bucket{job=~"a|b",x="}"}[5m]))"#),
        ["h_bucket"]
    );
    assert_eq!(names("a / on(x) group_left(y, z) b"), ["a", "b"]);
    assert_eq!(
        names("a / ignoring (x) group_right b_total"),
        ["a", "b_total"]
    );
    assert_eq!(names("count(x > 1) or vector(0)"), ["x"]);
    assert_eq!(names("time() - y"), ["y"]);
    assert_eq!(names("sum(m) without (k) unless on() n"), ["m", "n"]);
    assert_eq!(
        names("max without(k)(m) / count by (k) (n) + quantile by (k) (0.5, o)"),
        ["m", "n", "o"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, rate(h_bucket[1m:30s] offset 5m))"),
        ["h_bucket"]
    );
    assert_eq!(
        names(r#"label_replace(m, "dst", "$1 and other", 'src', "(.*)")"#),
        ["m"]
    );
    assert_eq!(names("NaN + Inf * 1e-3 * 0x1f * m @ start()"), ["m"]);
    assert_eq!(names("m == bool 1 # a comment naming n\n"), ["m"]);
    assert_eq!(names("0xe-m"), ["m"]);
    assert_eq!(
        names("topk (3, ns:recorded:rate5m)"),
        ["ns:recorded:rate5m"]
    );
    assert!(metric_names(r#"{__name__="m"}"#).is_err());
    assert!(metric_names(r#"rate({job="x"}[5m])"#).is_err());

    let values: BTreeMap<String, String> = [("job", ".*"), ("__rate_interval", "5m")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        substitute(
            r#"rate(m{job=~"$job"}[$__rate_interval]) + n{job=~"${job:regex}"}[[job]]"#,
            &values
        )
        .unwrap(),
        r#"rate(m{job=~".*"}[5m]) + n{job=~".*"}.*"#
    );
    assert!(substitute("m{ns=~\"$namespace\"}", &values).is_err());
}

/// The apiserver accepts the rendered ConfigMap (server-side dry run), and every metric name the
/// queries select has samples on a real operator's `/metrics`, once the events that create the
/// lazily labelled families have happened (see the module's doc).
#[tokio::test]
async fn dashboard_names_only_exported_metrics() {
    let d = dashboard();
    let used = dashboard_metric_names(&d);

    let w = World::new("dashboard").await;
    let ns_set = format!("dashboard.namespace={}", w.ns);
    let docs = render(&["dashboard.enabled=true", &ns_set]).unwrap();
    let cm = serde_json::to_string(&dashboard_configmaps(&docs)[0]).unwrap();
    let out = common::kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&cm));
    assert!(
        out.status.success(),
        "the apiserver refuses the dashboard ConfigMap: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A slow request budget (waits), and cluster credentials served from the test's namespace.
    let op = w.spawn_operator(
        "dash",
        &common::cluster().kubeconfig.clone(),
        true,
        &[
            "--cluster-credential-namespace",
            &w.ns,
            "--nuclia-rps",
            "2",
            "--nuclia-burst",
            "1",
        ],
    );
    let addr = op.http_addr().await;
    w.create_secret("login", "token", &w.fake.bootstrap.pat.clone())
        .await;
    let pat = |name: &str, login: &str| {
        format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaPersonalToken\nmetadata: {{name: {name}}}\nspec:\n  description: dashboard test\n  days: 1\n  auth: {{secretRef: {{name: {login}}}}}\n  rotation: {{revokePreviousAfter: 1h}}\n"
        )
    };
    w.kubectl_apply(&pat("dash", "login"));
    w.kubectl_apply(&pat("grace", "login"));
    // a reconcile error: its login Secret does not exist
    w.kubectl_apply(&pat("nocreds", "missing"));
    // a suspended resource
    w.kubectl_apply(&format!("{}  suspend: true\n", pat("paused", "login")));
    let api: Api<NucliaPersonalToken> = Api::namespaced(w.client.clone(), &w.ns);
    let first = wait_status(&api, "dash", MINUTE, "Ready", ready).await;
    wait_status(&api, "grace", MINUTE, "Ready", ready).await;
    // a replaced token in its grace period (a revocation due time)
    w.kubectl(&["annotate", "npt", "grace", "nuclia.dev/rotate=dashboard"]);
    wait_status(&api, "nocreds", MINUTE, "CredentialsMissing", |s| {
        reason(s).as_deref() == Some("CredentialsMissing")
    })
    .await;
    // a revocation: rotate, revoking the replaced token at once
    w.kubectl(&["annotate", "npt", "dash", "nuclia.dev/revoke-now=dashboard"]);
    wait_status(
        &api,
        "dash",
        MINUTE,
        "a rotation with the old token revoked",
        |s| ready(s) && s.token_id != first.token_id && s.previous_tokens.is_empty(),
    )
    .await;
    wait_status(
        &api,
        "grace",
        MINUTE,
        "a replaced token in its grace period",
        |s| ready(s) && !s.previous_tokens.is_empty(),
    )
    .await;

    // A cluster credential with a key quota of one: a key, a refusal, then a re-issue after a
    // mark on the cluster credential.
    let cc = format!("{}-dash", w.ns);
    let kb_url = w.fake.bootstrap.kbs[0].url.clone();
    let out = common::kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaClusterCredential\nmetadata: {{name: {cc}}}\nspec:\n  secretRef: {{name: login}}\n  policy: {{namespaces: [{}], maxKeysPerNamespace: 1}}\n",
            w.ns
        )),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kb = |name: &str| {
        format!(
            "apiVersion: nuclia.dev/v1alpha1\nkind: NucliaKbApiKey\nmetadata: {{name: {name}}}\nspec:\n  kbUrl: {kb_url}\n  days: 1\n  auth: {{clusterCredentialRef: {{name: {cc}}}}}\n"
        )
    };
    let kbs: Api<nuclia_token_operator::crd::NucliaKbApiKey> =
        Api::namespaced(w.client.clone(), &w.ns);
    w.kubectl_apply(&kb("shared"));
    let key = wait_status(&kbs, "shared", MINUTE, "Ready", ready).await;
    w.kubectl_apply(&kb("beyond"));
    wait_status(&kbs, "beyond", MINUTE, "QuotaExceeded", |s| {
        reason(s).as_deref() == Some("QuotaExceeded")
    })
    .await;
    let out = common::kubectl(
        &[
            "annotate",
            "ncc",
            &cc,
            "nuclia.dev/reissue-minted=dashboard",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_status(&kbs, "shared", MINUTE, "re-issued", |s| {
        ready(s) && s.token_id != key.token_id
    })
    .await;

    let series = format!(
        "nuclia_credential_expiry_timestamp_seconds{{kind=\"NucliaPersonalToken\",namespace=\"{}\",name=\"dash\"}} ",
        w.ns
    );
    let text = common::poll(MINUTE, || async {
        let r = w
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?;
        let t = r.text().await.ok()?;
        let has = |prefix: &str| t.lines().any(|l| l.starts_with(prefix));
        (has(&series)
            && has("nuclia_credential_revocation_due_timestamp_seconds{")
            && has("nuclia_operator_revocations_total{")
            && has("nuclia_operator_reconcile_errors_total{")
            && has("nuclia_credential_suspended{")
            && has("nuclia_operator_cache_entries{")
            && has("nuclia_cluster_credential_keys{")
            && has("nuclia_cluster_credential_quota_exceeded_total{")
            && has("nuclia_operator_reissues_total{")
            && has("nuclia_api_rate_limit_wait_seconds_total{"))
        .then_some(t)
    })
    .await
    .expect(
        "/metrics never showed the resource's expiry, a revocation due time, a revocation, a \
         reconcile error, a suspended resource, the caches, a cluster credential's keys, a quota \
         refusal, a re-issue and a wait for the request budget",
    );
    assert!(
        text.lines().any(|l| l == "# EOF"),
        "a whole OpenMetrics page"
    );

    let scraped = Exposition::parse(&text);
    let by_type = scraped.exported();
    for s in &scraped.samples {
        assert!(
            by_type.contains_key(s),
            "sample {s} belongs to no family its # TYPE declares: fix Exposition::exported\n{text}"
        );
    }
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !scraped.samples.contains(*name))
        .map(|(name, places)| format!("{name} (in {})", places.join(", ")))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the operator does not export:\n  {}\nexported: {:?}",
        missing.join("\n  "),
        scraped.samples
    );
    eprintln!(
        "dashboard: {} metric names, all on the operator's /metrics: {:?}",
        used.len(),
        used.keys().collect::<Vec<_>>()
    );
    for name in ["shared", "beyond"] {
        kbs.delete(name, &Default::default()).await.unwrap();
        assert!(
            common::operator::gone_within(&kbs, name, MINUTE).await,
            "{name}"
        );
    }
    let ccs: Api<nuclia_token_operator::cluster_credential::NucliaClusterCredential> =
        Api::all(w.client.clone());
    ccs.delete(&cc, &Default::default()).await.unwrap();
    w.assert_no_tokens_in(&op.log).await;
}
