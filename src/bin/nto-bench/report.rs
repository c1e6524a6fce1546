//! The results: one serializable [`Report`] (the `--json` file), the printed table, and the
//! issue's targets judged against the figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probes::{Log, Obj, ProcSampler, RateReport};

#[derive(Serialize)]
pub struct Report {
    pub config: Config,
    pub baseline: Baseline,
    pub burst: Burst,
    pub steady: Steady,
    pub storm: Storm,
    pub footprint: Vec<Footprint>,
    pub operator_log: LogSummary,
    pub targets: Vec<Target>,
}

#[derive(Serialize)]
pub struct Config {
    pub n: usize,
    pub personal_tokens: usize,
    pub kb_keys: usize,
    pub nua_keys: usize,
    pub credentials: usize,
    pub nuclia_rps: f64,
    pub nuclia_burst: u32,
    pub concurrency: usize,
    pub verify_interval_s: f64,
    pub commit: Option<String>,
    pub apiserver: String,
}

/// Nearest-rank percentiles.
#[derive(Serialize, Default, Clone, Copy)]
pub struct Pcts {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Pcts {
    /// Of durations, in milliseconds.
    pub fn of(v: &[Duration]) -> Pcts {
        let ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        Pcts::of_secs(&ms)
    }

    /// Of plain numbers, in their own unit.
    pub fn of_secs(v: &[f64]) -> Pcts {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        Pcts {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[derive(Serialize)]
pub struct Baseline {
    pub secrets: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub create_latency_ms: Pcts,
    /// From the apiserver's /metrics: all its clients.
    pub apiserver_write_requests: Option<u64>,
    /// The N resources created and given the operator's three writes directly (finalizer with
    /// intent, owned Secret, status), same parallelism, no reads, no Nuclia: the floor for an
    /// operator that makes only the minimum writes.
    pub write_floor_seconds: f64,
}

/// Writes seen through the watches (new resourceVersions) in the benchmark namespace.
#[derive(Serialize, Default)]
pub struct Writes {
    pub resources: usize,
    pub secrets: usize,
    pub events: usize,
    pub total: usize,
    /// Of which the benchmark's own (creating or patching the resources).
    pub by_benchmark: usize,
    pub operator: usize,
}

impl Writes {
    pub fn between(l: &Log, from: Instant, to: Instant, by_benchmark: usize) -> Writes {
        let total = l.writes_between(None, from, to);
        Writes {
            resources: l.writes_between(Some(Obj::Resource), from, to),
            secrets: l.writes_between(Some(Obj::Secret), from, to),
            events: l.writes_between(Some(Obj::Event), from, to),
            total,
            by_benchmark,
            operator: total.saturating_sub(by_benchmark),
        }
    }
}

#[derive(Serialize)]
pub struct Burst {
    pub resources: usize,
    pub kb_keys: usize,
    pub create_seconds: f64,
    pub seconds_to_all_ready: f64,
    pub ratio_to_baseline: f64,
    pub ratio_to_write_floor: f64,
    pub apply_to_secret_ms: Pcts,
    pub apply_to_ready_ms: Pcts,
    pub writes_per_resource: f64,
    pub writes: Writes,
    /// From the apiserver's /metrics (every write request, no-ops included), less the creates.
    pub apiserver_write_requests_per_resource: Option<f64>,
    /// Every request (reads too) from the apiserver's /metrics, per `VERB resource`.
    pub apiserver_requests: BTreeMap<String, u64>,
    /// Reconciles the operator finished (its /metrics).
    pub reconciles: Option<u64>,
    pub nuclia_calls_per_resource: f64,
    pub nuclia_calls: BTreeMap<String, u64>,
    /// The least time the per-credential budget allows for the calls made.
    pub budget_floor_seconds: f64,
    pub rate: RateReport,
}

#[derive(Serialize)]
pub struct Steady {
    pub seconds: f64,
    pub verify_periods: u32,
    pub writes: Writes,
    pub apiserver_write_requests: Option<u64>,
    pub verification_scopes: usize,
    pub verification_lists_expected_max: u64,
    pub verification_lists: u64,
    pub other_nuclia_calls: u64,
    pub nuclia_calls: BTreeMap<String, u64>,
    pub rate: RateReport,
}

/// Every resource asked to rotate once (a new value of the rotate annotation), all at once.
#[derive(Serialize)]
pub struct Storm {
    pub resources: usize,
    /// From the first patch until the last patch returned.
    pub patch_seconds: f64,
    /// Per resource: from its patch returning until the watch showed its new token.
    pub patch_to_rotated_ms: Pcts,
    /// From the first patch until the last resource showed its new token.
    pub seconds_to_all_rotated: f64,
    /// From the first patch until every resource was Ready with its new token and no previous
    /// token left (all old tokens revoked).
    pub seconds_to_all_revoked: f64,
    /// N / seconds_to_all_rotated: the renewals the operator sustained.
    pub renewals_per_second: f64,
    /// The most previous tokens (summed over all resources' status) waiting for revocation at
    /// any one time.
    pub peak_previous_tokens: usize,
    /// Operator writes (the benchmark's own patches subtracted) per resource, Events included.
    pub writes_per_resource: f64,
    pub writes: Writes,
    pub apiserver_write_requests: Option<u64>,
    pub nuclia_calls_per_resource: f64,
    pub nuclia_calls: BTreeMap<String, u64>,
    pub rate: RateReport,
}

#[derive(Serialize)]
pub struct Footprint {
    pub phase: String,
    pub seconds: f64,
    /// Peak resident set size, MB (10^6 bytes).
    pub peak_rss_mb: f64,
    pub cpu_seconds: f64,
}

impl Footprint {
    pub fn of(phase: &str, proc: &ProcSampler, from: Instant, to: Instant) -> Footprint {
        proc.sample();
        let (mib, cpu) = proc.footprint(from, to);
        Footprint {
            phase: phase.into(),
            seconds: (to - from).as_secs_f64(),
            peak_rss_mb: mib * 1024.0 * 1024.0 / 1e6,
            cpu_seconds: cpu,
        }
    }
}

#[derive(Serialize)]
pub struct LogSummary {
    pub warnings: usize,
    pub errors: usize,
    pub panics: usize,
    pub reconcile_failures: usize,
    pub path: String,
}

#[derive(Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

pub fn targets(r: &Report) -> Vec<Target> {
    let peak = r
        .footprint
        .iter()
        .map(|f| f.peak_rss_mb)
        .fold(0.0, f64::max);
    let over: usize = [&r.burst.rate, &r.steady.rate, &r.storm.rate]
        .iter()
        .map(|x| x.windows_over_budget)
        .sum();
    let checked: usize = [&r.burst.rate, &r.steady.rate, &r.storm.rate]
        .iter()
        .map(|x| x.windows_checked)
        .sum();
    let peak_rate = [&r.burst.rate, &r.steady.rate, &r.storm.rate]
        .iter()
        .map(|x| x.peak_per_second)
        .fold(0.0, f64::max);
    let s = &r.steady;
    vec![
        Target {
            target: "burst time <= 4 x baseline".into(),
            measured: format!(
                "{:.1}x ({:.1}s vs {:.1}s)",
                r.burst.ratio_to_baseline, r.burst.seconds_to_all_ready, r.baseline.seconds
            ),
            met: r.burst.ratio_to_baseline <= 4.0,
        },
        Target {
            target: "steady state: zero writes".into(),
            measured: format!(
                "{} writes in {:.0}s ({} resource, {} Secret, {} Event)",
                s.writes.total, s.seconds, s.writes.resources, s.writes.secrets, s.writes.events
            ),
            met: s.writes.total == 0,
        },
        Target {
            target: "steady state: only the shared verification lists".into(),
            measured: format!(
                "{} lists for {} credential scopes over {} periods (max {}), {} other calls",
                s.verification_lists,
                s.verification_scopes,
                s.verify_periods,
                s.verification_lists_expected_max,
                s.other_nuclia_calls
            ),
            met: s.other_nuclia_calls == 0
                && s.verification_lists <= s.verification_lists_expected_max,
        },
        Target {
            target: format!(
                "peak RSS <= 40 MB at N = 1000 (this run: N = {})",
                r.config.n
            ),
            measured: format!("{peak:.1} MB"),
            met: peak <= 40.0,
        },
        Target {
            target: "rotation storm <= 4 operator writes per resource (Events included)".into(),
            measured: format!(
                "{:.2} (resource {}, Secret {}, Event {})",
                r.storm.writes_per_resource,
                r.storm
                    .writes
                    .resources
                    .saturating_sub(r.storm.writes.by_benchmark),
                r.storm.writes.secrets,
                r.storm.writes.events
            ),
            met: r.storm.writes_per_resource <= 4.0,
        },
        Target {
            target: "Nuclia calls within the per-credential budget, storm included".into(),
            measured: format!(
                "{over} of {checked} windows over; peak {peak_rate:.1}/s per credential (budget {} /s, burst {})",
                r.config.nuclia_rps, r.config.nuclia_burst
            ),
            met: over == 0,
        },
    ]
}

fn calls(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn print(r: &Report) {
    let c = &r.config;
    let (b, u, s, st) = (&r.baseline, &r.burst, &r.steady, &r.storm);
    println!();
    println!(
        "nuclia-token-operator benchmark  commit {}  apiserver {}",
        c.commit.as_deref().unwrap_or("?"),
        c.apiserver
    );
    println!(
        "N = {} ({} personal tokens, {} KB keys, {} NUA keys) over {} credentials; budget {}/s + burst {} per credential; concurrency {}; verify every {}s",
        c.n,
        c.personal_tokens,
        c.kb_keys,
        c.nua_keys,
        c.credentials,
        c.nuclia_rps,
        c.nuclia_burst,
        c.concurrency,
        c.verify_interval_s
    );
    println!();
    println!(
        "{:<10} {:>9} {:>12} {:>12} {:>12} {:>10} {:>9}",
        "phase", "wall s", "writes/res", "nuclia/res", "peak call/s", "peak RSS", "CPU s"
    );
    let fp = |name: &str| r.footprint.iter().find(|f| f.phase == name);
    let row =
        |phase: &str, wall: f64, w: String, n: String, rate: String, f: Option<&Footprint>| {
            println!(
                "{:<10} {:>9.1} {:>12} {:>12} {:>12} {:>10} {:>9}",
                phase,
                wall,
                w,
                n,
                rate,
                f.map_or("-".into(), |f| format!("{:.1} MB", f.peak_rss_mb)),
                f.map_or("-".into(), |f| format!("{:.2}", f.cpu_seconds)),
            )
        };
    let per = |x: usize| format!("{:.2}", x as f64 / c.n as f64);
    row(
        "baseline",
        b.seconds,
        "1.00".into(),
        "-".into(),
        "-".into(),
        None,
    );
    if let Some(f) = fp("startup") {
        row(
            "startup",
            f.seconds,
            "-".into(),
            "-".into(),
            "-".into(),
            Some(f),
        );
    }
    row(
        "burst",
        u.seconds_to_all_ready,
        format!("{:.2}", u.writes_per_resource),
        format!("{:.2}", u.nuclia_calls_per_resource),
        format!("{:.1}", u.rate.peak_per_second),
        fp("burst"),
    );
    row(
        "steady",
        s.seconds,
        per(s.writes.operator),
        format!(
            "{:.3}",
            (s.verification_lists + s.other_nuclia_calls) as f64 / c.n as f64
        ),
        format!("{:.1}", s.rate.peak_per_second),
        fp("steady"),
    );
    row(
        "storm",
        st.seconds_to_all_revoked,
        format!("{:.2}", st.writes_per_resource),
        format!("{:.2}", st.nuclia_calls_per_resource),
        format!("{:.1}", st.rate.peak_per_second),
        fp("storm"),
    );
    if let Some(f) = fp("whole run") {
        row(
            "whole run",
            f.seconds,
            "-".into(),
            "-".into(),
            "-".into(),
            Some(f),
        );
    }
    println!();
    println!(
        "baseline  {} Secrets in {:.2}s ({:.0}/s); create latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        b.secrets,
        b.seconds,
        b.per_second,
        b.create_latency_ms.p50,
        b.create_latency_ms.p95,
        b.create_latency_ms.p99
    );
    println!(
        "write floor {} resources created with their 3 writes each, directly: {:.2}s ({:.2}x baseline)",
        b.secrets,
        b.write_floor_seconds,
        b.write_floor_seconds / b.seconds
    );
    println!(
        "burst     all Ready {:.2}s after the first apply ({:.2}x baseline, {:.2}x the write floor); applies took {:.2}s",
        u.seconds_to_all_ready, u.ratio_to_baseline, u.ratio_to_write_floor, u.create_seconds
    );
    println!(
        "          apply->Secret p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms; apply->Ready p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
        u.apply_to_secret_ms.p50,
        u.apply_to_secret_ms.p95,
        u.apply_to_secret_ms.p99,
        u.apply_to_ready_ms.p50,
        u.apply_to_ready_ms.p95,
        u.apply_to_ready_ms.p99
    );
    println!(
        "          operator writes per resource {:.2} (resource {}, Secret {}, Event {}; the benchmark's own {} creates excluded){}",
        u.writes_per_resource,
        u.writes.resources.saturating_sub(u.writes.by_benchmark),
        u.writes.secrets,
        u.writes.events,
        u.writes.by_benchmark,
        u.apiserver_write_requests_per_resource
            .map(|w| format!("; apiserver write requests per resource {w:.2}"))
            .unwrap_or_default()
    );
    println!(
        "          reconciles {}; apiserver requests: {}",
        u.reconciles.map_or("?".into(), |n| format!(
            "{n} ({:.1} per resource)",
            n as f64 / c.n as f64
        )),
        calls(&u.apiserver_requests)
    );
    println!(
        "          Nuclia: {:.2} calls per resource ({}); the budget alone needs >= {:.1}s",
        u.nuclia_calls_per_resource,
        calls(&u.nuclia_calls),
        u.budget_floor_seconds
    );
    println!(
        "steady    {:.0}s: {} writes (resource {}, Secret {}, Event {}); Nuclia: {}",
        s.seconds,
        s.writes.total,
        s.writes.resources,
        s.writes.secrets,
        s.writes.events,
        calls(&s.nuclia_calls)
    );
    println!(
        "storm     {} rotations asked for through the rotate annotation (patching took {:.1}s); patch->rotated p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
        st.resources,
        st.patch_seconds,
        st.patch_to_rotated_ms.p50,
        st.patch_to_rotated_ms.p95,
        st.patch_to_rotated_ms.p99
    );
    println!(
        "          all rotated {:.1}s after the first patch ({:.1} renewals/s sustained), all old tokens revoked after {:.1}s; peak {} previous tokens waiting for revocation",
        st.seconds_to_all_rotated,
        st.renewals_per_second,
        st.seconds_to_all_revoked,
        st.peak_previous_tokens
    );
    println!(
        "          peak Nuclia rate {:.1}/s per credential over ~1 s, {:.1}/s over ~10 s (budget {}/s + burst {}); {} of {} windows over",
        st.rate.peak_per_second,
        st.rate.peak_per_second_10s,
        c.nuclia_rps,
        c.nuclia_burst,
        st.rate.windows_over_budget,
        st.rate.windows_checked
    );
    println!(
        "          operator writes per resource {:.2} (resource {}, Secret {}, Event {}; the benchmark's {} patches excluded); Nuclia: {:.2} calls per resource ({})",
        st.writes_per_resource,
        st.writes.resources.saturating_sub(st.writes.by_benchmark),
        st.writes.secrets,
        st.writes.events,
        st.writes.by_benchmark,
        st.nuclia_calls_per_resource,
        calls(&st.nuclia_calls)
    );
    let l = &r.operator_log;
    println!(
        "operator  log: {} warnings, {} errors, {} reconcile failures, {} panics ({})",
        l.warnings, l.errors, l.reconcile_failures, l.panics, l.path
    );
    println!();
    println!("{:<66} {:<4} measured", "target", "met");
    for t in &r.targets {
        println!(
            "{:<66} {:<4} {}",
            t.target,
            if t.met { "yes" } else { "NO" },
            t.measured
        );
    }
}
