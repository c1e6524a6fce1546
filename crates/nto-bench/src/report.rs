//! The results: one serializable [`Report`] (the `--json` file), the printed table, and the
//! issue's targets judged against the figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probes::{CpuUse, Log, Obj, ProcSampler, RateReport};

#[derive(Serialize)]
pub struct Report {
    pub config: Config,
    pub baseline: Baseline,
    pub burst: Burst,
    pub steady: Steady,
    pub storm: Storm,
    /// Only with `--soak`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
    pub footprint: Vec<Footprint>,
    /// Who used the cores in the baseline, the write floor and the burst.
    pub cpu: Vec<CpuUse>,
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
    /// Per resource of the write floor: from the floor's start (every resource "applied" at
    /// once) until its three writes were done; the yardstick of the burst's apply->Secret.
    pub write_floor_done_ms: Pcts,
    /// Every request the apiserver served during the write floor (all clients), per
    /// `VERB resource`: what the burst's list is compared with.
    pub write_floor_apiserver_requests: BTreeMap<String, u64>,
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
    /// The operator's own requests to the apiserver (its /metrics), per `verb resource`; the
    /// reads below count these, since the apiserver's counters include other clients (at
    /// N = 5000 hundreds of Secret GETs and resource LISTs, in the floor too, where the
    /// operator does not run; likely the kube-controller-manager's garbage collector).
    pub operator_requests: BTreeMap<String, u64>,
    /// Errors of the operator's watches (its /metrics): each restarts a watch, often with a
    /// full list, which shows in the reads.
    pub watch_errors: Option<u64>,
    pub nuclia_calls_per_resource: f64,
    pub nuclia_calls: BTreeMap<String, u64>,
    /// The least time the per-credential budget allows for the calls made.
    pub budget_floor_seconds: f64,
    pub rate: RateReport,
}

impl Burst {
    /// The operator's `get secrets` requests during the burst.
    pub fn secret_gets(&self) -> u64 {
        self.operator_requests
            .get("get secrets")
            .copied()
            .unwrap_or(0)
    }

    /// The operator's gets and lists of any resource during the burst (watches not counted).
    pub fn reads(&self) -> u64 {
        self.operator_requests
            .iter()
            .filter(|(k, _)| {
                let (verb, resource) = k.split_once(' ').unwrap_or((k.as_str(), ""));
                matches!(verb, "get" | "list") && resource != "other"
            })
            .map(|(_, v)| v)
            .sum()
    }
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
    /// `GET /api/v1/user`: who each login is (lists are shared by user), once per interval.
    pub user_lookups: u64,
    /// Distinct logins the resources use.
    pub logins: usize,
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

/// The soak: self-renewing tokens rotated for a while, and the operator's caches meanwhile.
#[derive(Serialize)]
pub struct Soak {
    pub resources: usize,
    /// Rotating (deletion and the wait after it not included).
    pub seconds: f64,
    pub rounds: usize,
    /// New tokens the watch saw during the rounds.
    pub rotations: usize,
    /// Readings of /metrics (start, every ~5 s, end).
    pub samples: usize,
    /// Empty when the operator exposes no `nuclia_operator_cache_entries`.
    pub caches: Vec<CacheRow>,
    /// Seconds from the deletion's end until every cache was back at its start size; None when
    /// they were not within two verify intervals and a housekeeping period (and 10 s).
    pub returned_after: Option<f64>,
}

/// One cache's entries (`nuclia_operator_cache_entries{cache=...}`); None where not exposed.
#[derive(Serialize)]
pub struct CacheRow {
    pub cache: String,
    /// When the soak began (before its resources were created).
    pub start: Option<f64>,
    pub max_during: Option<f64>,
    /// After the soak's resources were deleted and one verify interval (+5 s) passed.
    pub end: Option<f64>,
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
    let n = r.config.n as f64;
    let (u, b) = (&r.burst, &r.baseline);
    let p99_ratio = u.apply_to_secret_ms.p99 / b.write_floor_done_ms.p99.max(0.001);
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
            target: format!(
                "burst <= 1.15 x write floor at N = 1000 (this run: N = {})",
                r.config.n
            ),
            measured: format!(
                "{:.2}x ({:.1}s vs {:.1}s)",
                u.ratio_to_write_floor, u.seconds_to_all_ready, b.write_floor_seconds
            ),
            met: u.ratio_to_write_floor <= 1.15,
        },
        Target {
            target: "apply->Secret p99 <= 1.3 x the write floor's p99 time-to-done".into(),
            measured: format!(
                "{p99_ratio:.2}x ({:.0} ms vs {:.0} ms)",
                u.apply_to_secret_ms.p99, b.write_floor_done_ms.p99
            ),
            met: p99_ratio <= 1.3,
        },
        Target {
            target: "burst: <= 1 Secret GET per resource".into(),
            measured: if u.operator_requests.is_empty() {
                "? (no operator request counters)".into()
            } else {
                format!(
                    "{:.2} ({} GET secrets by the operator)",
                    u.secret_gets() as f64 / n,
                    u.secret_gets()
                )
            },
            met: !u.operator_requests.is_empty() && u.secret_gets() as f64 <= n,
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
                "{} lists for {} credential scopes over {} periods (max {}), {} user lookups for {} logins (max {}), {} other calls",
                s.verification_lists,
                s.verification_scopes,
                s.verify_periods,
                s.verification_lists_expected_max,
                s.user_lookups,
                s.logins,
                s.logins as u64 * 3,
                s.other_nuclia_calls
            ),
            met: s.other_nuclia_calls == 0
                && s.verification_lists <= s.verification_lists_expected_max
                && s.user_lookups <= s.logins as u64 * 3,
        },
        Target {
            target: format!(
                "peak RSS <= 25 MB at N = 1000 (this run: N = {})",
                r.config.n
            ),
            measured: format!("{peak:.1} MB"),
            met: peak <= 25.0,
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
            (s.verification_lists + s.user_lookups + s.other_nuclia_calls) as f64 / c.n as f64
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
    if let Some(f) = fp("soak") {
        row(
            "soak",
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
        "write floor {} resources created with their 3 writes each, directly: {:.2}s ({:.2}x baseline); time-to-done p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
        b.secrets,
        b.write_floor_seconds,
        b.write_floor_seconds / b.seconds,
        b.write_floor_done_ms.p50,
        b.write_floor_done_ms.p95,
        b.write_floor_done_ms.p99
    );
    println!(
        "          apiserver requests: {}",
        calls(&b.write_floor_apiserver_requests)
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
        "          reconciles {}, watch errors {}; {:.2} Secret GETs and {:.2} reads (get+list) per resource; the operator's requests: {}",
        u.reconciles.map_or("?".into(), |n| format!(
            "{n} ({:.1} per resource)",
            n as f64 / c.n as f64
        )),
        u.watch_errors.map_or("?".into(), |n| n.to_string()),
        u.secret_gets() as f64 / c.n as f64,
        u.reads() as f64 / c.n as f64,
        calls(&u.operator_requests)
    );
    println!(
        "          apiserver requests (all clients): {}",
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
    print_cpu(&r.cpu);
    if let Some(k) = &r.soak {
        print_soak(k);
    }
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

/// One row per phase, one column per process (the control plane first), then the machine.
fn print_cpu(cpu: &[CpuUse]) {
    let Some(first) = cpu.first() else {
        return;
    };
    let order = |name: &str| match name {
        "kube-apiserver" => 0,
        "etcd" => 1,
        "kube-controller-manager" => 2,
        "operator" => 3,
        "nuclia-fake" => 4,
        "nto-bench" => 5,
        _ => 6,
    };
    let mut names: Vec<&String> = cpu.iter().flat_map(|c| c.by_process.keys()).collect();
    names.sort_by_key(|n| (order(n), n.as_str()));
    names.dedup();
    println!(
        "CPU seconds by process ({} cores; machine: busy of capacity, every process on it)",
        first.cores
    );
    print!("          {:>7}", "wall s");
    for n in &names {
        print!(" {:>w$}", n, w = n.len().max(6));
    }
    println!(" {:>15}", "machine");
    for c in cpu {
        print!("{:<10} {:>7.1}", c.phase, c.seconds);
        for n in &names {
            let w = n.len().max(6);
            match c.by_process.get(*n) {
                Some(v) => print!(" {v:>w$.2}"),
                None => print!(" {:>w$}", "-"),
            }
        }
        let machine = c.machine_busy_seconds.map_or("?".into(), |b| {
            format!("{b:.1} of {:.1}", c.seconds * c.cores as f64)
        });
        println!(" {machine:>15}");
    }
}

fn print_soak(k: &Soak) {
    println!(
        "soak      {} self-renewing personal tokens: {} rounds, {} rotations in {:.0}s; caches (nuclia_operator_cache_entries):",
        k.resources, k.rounds, k.rotations, k.seconds
    );
    let num = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0}"));
    println!(
        "          {:<28} {:>8} {:>8} {:>14}",
        "cache", "start", "max", "after delete"
    );
    if k.caches.is_empty() {
        println!(
            "          {:<28} {:>8} {:>8} {:>14}",
            "(gauge not exposed)", "n/a", "n/a", "n/a"
        );
    }
    for c in &k.caches {
        println!(
            "          {:<28} {:>8} {:>8} {:>14}",
            c.cache,
            num(c.start),
            num(c.max_during),
            num(c.end)
        );
    }
    match k.returned_after {
        Some(s) => {
            println!("          every cache back at its start size {s:.0}s after the deletion")
        }
        None => println!(
            "          NOT every cache back at its start size after the deletion (bounded wait)"
        ),
    }
}

/// One row of the growth table: one run's per-resource costs.
#[derive(Serialize, Clone)]
pub struct GrowthRow {
    pub n: usize,
    pub burst_seconds: f64,
    pub burst_ratio_to_write_floor: f64,
    pub write_floor_seconds: f64,
    pub burst_ms_per_resource: f64,
    pub burst_writes_per_resource: f64,
    pub burst_secret_gets_per_resource: f64,
    /// Every GET and LIST at the apiserver during the burst, per resource.
    pub burst_reads_per_resource: f64,
    pub burst_cpu_ms_per_resource: f64,
    /// From the operator's start to the end of the storm (the soak excluded).
    pub run_cpu_ms_per_resource: f64,
    pub peak_rss_mb: f64,
    pub startup_rss_mb: f64,
    /// (peak RSS - startup RSS) / N, bytes.
    pub rss_bytes_per_resource: f64,
    pub storm_seconds_to_all_revoked: f64,
    pub storm_renewals_per_second: f64,
    pub storm_peak_previous_tokens: usize,
}

/// One per-resource figure compared between two runs.
#[derive(Serialize)]
pub struct GrowthCheck {
    pub what: String,
    pub from: f64,
    pub to: f64,
    /// to / from.
    pub ratio: f64,
    pub ok: bool,
}

/// Per-resource cost from the N nearest 1000 to the largest N.
#[derive(Serialize)]
pub struct GrowthVerdict {
    pub from_n: usize,
    pub to_n: usize,
    /// Burst seconds, CPU seconds, writes and reads per resource, each at most 1.2x.
    pub checks: Vec<GrowthCheck>,
    pub flat: bool,
    /// RSS bytes per resource (peak minus startup) at most 1.2x: memory grows at most linearly.
    pub rss: GrowthCheck,
    pub rss_at_most_linear: bool,
    /// The write floor's ms per resource over the same N: how much the apiserver's own cost
    /// grows (the burst's wall time cannot grow less). Not counted in `flat`.
    pub floor: GrowthCheck,
}

#[derive(Serialize)]
pub struct Growth {
    pub rows: Vec<GrowthRow>,
    /// None when there is no N above the one nearest 1000.
    pub verdict: Option<GrowthVerdict>,
}

/// How much per-resource cost may grow and still count as flat.
const FLAT: f64 = 1.2;

pub fn growth(reports: &[Report]) -> Growth {
    let rows: Vec<GrowthRow> = reports
        .iter()
        .map(|r| {
            let n = r.config.n as f64;
            let fp = |name: &str| r.footprint.iter().find(|f| f.phase == name);
            let peak = fp("whole run").map_or(0.0, |f| f.peak_rss_mb);
            let startup = fp("startup").map_or(0.0, |f| f.peak_rss_mb);
            GrowthRow {
                n: r.config.n,
                burst_seconds: r.burst.seconds_to_all_ready,
                burst_ratio_to_write_floor: r.burst.ratio_to_write_floor,
                write_floor_seconds: r.baseline.write_floor_seconds,
                burst_ms_per_resource: r.burst.seconds_to_all_ready * 1000.0 / n,
                burst_writes_per_resource: r.burst.writes_per_resource,
                burst_secret_gets_per_resource: r.burst.secret_gets() as f64 / n,
                burst_reads_per_resource: r.burst.reads() as f64 / n,
                burst_cpu_ms_per_resource: fp("burst").map_or(0.0, |f| f.cpu_seconds) * 1000.0 / n,
                run_cpu_ms_per_resource: fp("whole run").map_or(0.0, |f| f.cpu_seconds) * 1000.0
                    / n,
                peak_rss_mb: peak,
                startup_rss_mb: startup,
                rss_bytes_per_resource: (peak - startup).max(0.0) * 1e6 / n,
                storm_seconds_to_all_revoked: r.storm.seconds_to_all_revoked,
                storm_renewals_per_second: r.storm.renewals_per_second,
                storm_peak_previous_tokens: r.storm.peak_previous_tokens,
            }
        })
        .collect();
    Growth {
        verdict: verdict(&rows),
        rows,
    }
}

/// Per-resource cost from the N nearest 1000 to the largest N; None without an N above it.
pub fn verdict(rows: &[GrowthRow]) -> Option<GrowthVerdict> {
    let from = rows.iter().min_by_key(|r| r.n.abs_diff(1000)).cloned();
    let to = rows.iter().max_by_key(|r| r.n).cloned();
    match (from, to) {
        (Some(a), Some(b)) if b.n > a.n => {
            let check = |what: &str, x: f64, y: f64| {
                let ratio = if x > 0.0 {
                    y / x
                } else if y <= 0.0 {
                    1.0
                } else {
                    f64::INFINITY
                };
                GrowthCheck {
                    what: what.into(),
                    from: x,
                    to: y,
                    ratio,
                    ok: ratio <= FLAT,
                }
            };
            let checks = vec![
                check(
                    "burst ms per resource",
                    a.burst_ms_per_resource,
                    b.burst_ms_per_resource,
                ),
                check(
                    "burst CPU ms per resource",
                    a.burst_cpu_ms_per_resource,
                    b.burst_cpu_ms_per_resource,
                ),
                check(
                    "run CPU ms per resource",
                    a.run_cpu_ms_per_resource,
                    b.run_cpu_ms_per_resource,
                ),
                check(
                    "burst writes per resource",
                    a.burst_writes_per_resource,
                    b.burst_writes_per_resource,
                ),
                check(
                    "burst reads per resource",
                    a.burst_reads_per_resource,
                    b.burst_reads_per_resource,
                ),
            ];
            let rss = check(
                "RSS bytes per resource",
                a.rss_bytes_per_resource,
                b.rss_bytes_per_resource,
            );
            let floor = check(
                "write floor ms per resource",
                a.write_floor_seconds * 1000.0 / a.n as f64,
                b.write_floor_seconds * 1000.0 / b.n as f64,
            );
            Some(GrowthVerdict {
                floor,
                from_n: a.n,
                to_n: b.n,
                flat: checks.iter().all(|c| c.ok),
                checks,
                rss_at_most_linear: rss.ok,
                rss,
            })
        }
        _ => None,
    }
}

pub fn print_growth(g: &Growth) {
    println!();
    println!(
        "growth (burst: all Ready; CPU: the operator's; run: startup to the end of the storm)"
    );
    println!(
        "{:>6} {:>8} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>6}",
        "N",
        "burst s",
        "/floor",
        "floor s",
        "ms/res",
        "wr/res",
        "GETs/r",
        "reads/r",
        "CPUms/r",
        "runCPU",
        "peak RSS",
        "RSS B/r",
        "storm s",
        "renew/s",
        "prev"
    );
    for r in &g.rows {
        println!(
            "{:>6} {:>8.1} {:>6.2}x {:>8.1} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>5.1} MB {:>8.0} {:>7.1} {:>7.1} {:>6}",
            r.n,
            r.burst_seconds,
            r.burst_ratio_to_write_floor,
            r.write_floor_seconds,
            r.burst_ms_per_resource,
            r.burst_writes_per_resource,
            r.burst_secret_gets_per_resource,
            r.burst_reads_per_resource,
            r.burst_cpu_ms_per_resource,
            r.run_cpu_ms_per_resource,
            r.peak_rss_mb,
            r.rss_bytes_per_resource,
            r.storm_seconds_to_all_revoked,
            r.storm_renewals_per_second,
            r.storm_peak_previous_tokens
        );
    }
    println!(
        "(ms/res: burst wall ms per resource; GETs/r: the operator's Secret GETs per resource; reads/r: all its gets and lists; CPUms/r, runCPU: operator CPU ms per resource in the burst and the run; RSS B/r: (peak - startup RSS) / N; prev: peak previous tokens waiting for revocation)"
    );
    let Some(v) = &g.verdict else {
        println!("per-resource cost: n/a (needs an N above the one nearest 1000)");
        return;
    };
    let pct = |c: &GrowthCheck| {
        if c.ratio.is_finite() {
            format!("{:+.0}%", (c.ratio - 1.0) * 100.0)
        } else {
            "from 0".into()
        }
    };
    println!(
        "per-resource cost from N = {} to N = {} (flat: at most +{:.0}%):",
        v.from_n,
        v.to_n,
        (FLAT - 1.0) * 100.0
    );
    for c in &v.checks {
        println!(
            "  {:<28} {:>10.3} -> {:>10.3} ({}) {}",
            c.what,
            c.from,
            c.to,
            pct(c),
            if c.ok { "ok" } else { "GROWS" }
        );
    }
    println!("  => {}", if v.flat { "flat" } else { "NOT flat" });
    println!(
        "  (the apiserver's own: {:<28} {:>10.3} -> {:>10.3} ({}))",
        v.floor.what,
        v.floor.from,
        v.floor.to,
        pct(&v.floor)
    );
    println!(
        "RSS per resource {:.0} B -> {:.0} B ({}) => {}",
        v.rss.from,
        v.rss.to,
        pct(&v.rss),
        if v.rss_at_most_linear {
            "grows at most linearly"
        } else {
            "grows MORE than linearly"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize, burst_s: f64, rss_mb: f64) -> GrowthRow {
        let n_f = n as f64;
        GrowthRow {
            n,
            burst_seconds: burst_s,
            burst_ratio_to_write_floor: 1.0,
            write_floor_seconds: burst_s,
            burst_ms_per_resource: burst_s * 1000.0 / n_f,
            burst_writes_per_resource: 3.0,
            burst_secret_gets_per_resource: 1.0,
            burst_reads_per_resource: 1.5,
            burst_cpu_ms_per_resource: 3.0,
            run_cpu_ms_per_resource: 10.0,
            peak_rss_mb: rss_mb,
            startup_rss_mb: 15.0,
            rss_bytes_per_resource: (rss_mb - 15.0) * 1e6 / n_f,
            storm_seconds_to_all_revoked: 30.0,
            storm_renewals_per_second: 20.0,
            storm_peak_previous_tokens: n,
        }
    }

    #[test]
    fn verdict_compares_the_n_nearest_1000_with_the_largest() {
        // 1000 -> 5000: burst 20 ms -> 23 ms per resource (+15%), RSS 10 kB -> 12 kB per resource
        let rows = [
            row(200, 5.0, 18.0),
            row(1000, 20.0, 25.0),
            row(5000, 115.0, 75.0),
        ];
        let v = verdict(&rows).unwrap();
        assert_eq!((v.from_n, v.to_n), (1000, 5000));
        assert!(v.flat);
        assert!(v.rss_at_most_linear);
        // the floor's own growth is reported, from its seconds (here equal to the burst's)
        assert!((v.floor.ratio - 1.15).abs() < 1e-9, "{}", v.floor.ratio);
        // 1000 -> 5000: burst 20 ms -> 30 ms per resource (+50%), RSS 10 kB -> 20 kB per resource
        let rows = [row(1000, 20.0, 25.0), row(5000, 150.0, 115.0)];
        let v = verdict(&rows).unwrap();
        assert!(!v.flat);
        assert!(!v.rss_at_most_linear);
        // nothing above the N nearest 1000
        assert!(verdict(&[row(50, 1.0, 16.0), row(100, 2.0, 17.0)]).is_none());
    }
}
