//! The phases: set-up, baseline, write floor, issue burst, steady state, rotation storm, clean-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nuclia_fake::Bootstrap;
use nuclia_token_operator::crd::{
    ANNOTATION_ISSUE_INTENT, ANNOTATION_ROTATE, FIELD_MANAGER, LABEL_MANAGED_BY, MANAGED_BY,
    NucliaKbApiKey, NucliaNuaKey, NucliaPersonalToken,
};
use serde_json::json;

use crate::Args;
use crate::probes::{self, CallSampler, Calls, ObjectLog, ProcSampler};
use crate::report::{self, Footprint, Pcts, Report, Writes};

/// One resource the benchmark creates.
struct Item {
    name: String,
    kb: bool,
    /// A NucliaNuaKey (never also `kb`).
    nua: bool,
    secret: String,
}

fn items(args: &Args) -> Vec<Item> {
    let kb_count = (args.n as f64 * args.kb_share).round() as usize;
    let nua_count = (args.n as f64 * args.nua_share).round() as usize;
    let others = args.n - kb_count.min(args.n);
    let spread = |i: usize, count: usize, of: usize| (i * count) / of != ((i + 1) * count) / of;
    let mut j = 0; // index among the resources that are not KB keys
    (0..args.n)
        .map(|i| {
            // spread the KB keys evenly among all, and the NUA keys evenly among the rest
            let kb = spread(i, kb_count, args.n);
            let nua = !kb && spread(j, nua_count.min(others), others.max(1));
            if !kb {
                j += 1;
            }
            let prefix = match (kb, nua) {
                (true, _) => "kb",
                (_, true) => "nua",
                _ => "pt",
            };
            let name = format!("{prefix}-{i:05}");
            let secret = format!("{name}-secret");
            Item {
                name,
                kb,
                nua,
                secret,
            }
        })
        .collect()
}

fn login_secret(i: usize, args: &Args) -> String {
    format!("login-{:04}", i / args.per_credential)
}

/// The processes and namespaces the run owns; stopped and removed on drop.
struct Owned {
    children: Vec<Child>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `more` says another run follows: its measurements must not share the apiserver with this
/// run's namespace deletion, so the clean-up then waits until the namespaces are gone.
pub async fn run(args: &Args, more: bool) -> anyhow::Result<Report> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (set KUBECONFIG)")?;
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("nto-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!("[bench] logs in {}", work.display());
    let mut owned = Owned {
        children: Vec::new(),
    };

    install_crds(&client).await?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let ns = format!("nto-bench-{suffix}");
    let base_ns = format!("nto-bench-base-{suffix}");
    create_namespace(&client, &ns).await?;
    create_namespace(&client, &base_ns).await?;
    let result = phases(args, &client, &ns, &base_ns, &work, &mut owned).await;
    // the operator and the fake stop first, so that nothing acts on the clean-up
    drop(owned);
    if args.keep {
        eprintln!("[bench] kept namespaces {ns} and {base_ns}");
    } else {
        eprintln!("[bench] cleaning up");
        cleanup(&client, &ns, &base_ns, args.concurrency).await;
        if more {
            eprintln!("[bench] waiting for the namespaces to be gone before the next run");
            wait_namespaces_gone(&client, &[&ns, &base_ns], Duration::from_secs(300)).await;
        }
    }
    result
}

async fn phases(
    args: &Args,
    client: &Client,
    ns: &str,
    base_ns: &str,
    work: &Path,
    owned: &mut Owned,
) -> anyhow::Result<Report> {
    let (client, ns, base_ns) = (client.clone(), ns.to_owned(), base_ns.to_owned());
    // nuclia-fake, as a process
    let (fake, boot) = start_fake(&args.bin_dir, work)?;
    let mut meter = probes::CpuMeter::new(
        std::env::var_os("NTO_BENCH_CLUSTER_DIR")
            .map(PathBuf::from)
            .as_deref(),
    );
    meter.add("nuclia-fake", fake.id());
    owned.children.push(fake);
    let http = reqwest::Client::new();
    let items = items(args);
    let credentials = args.n.div_ceil(args.per_credential);
    eprintln!(
        "[bench] {} resources ({} KB keys, {} NUA keys) over {credentials} credentials in namespace {ns}",
        items.len(),
        items.iter().filter(|i| i.kb).count(),
        items.iter().filter(|i| i.nua).count()
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for c in 0..credentials {
        let token = mint_login(&http, &boot, c).await?;
        let s: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("login-{c:04}")},
            "stringData": {"token": token},
        }))?;
        secrets
            .create(&PostParams::default(), &s)
            .await
            .context("creating a login Secret")?;
    }

    let log = ObjectLog::start(&client, &ns);
    let calls = CallSampler::start(&boot.url);

    // ---- baseline: N Secrets created directly, same client and parallelism ----
    // Watched as the burst's namespace is: the apiserver's cost of the benchmark's own
    // watches is then in every phase, not charged to the operator alone.
    let base_log = ObjectLog::start(&client, &base_ns);
    eprintln!("[bench] baseline: creating {} Secrets", args.n);
    let api_w0 = probes::apiserver_requests(&client).await;
    let base_api: Api<Secret> = Api::namespaced(client.clone(), &base_ns);
    let cpu0 = meter.read();
    let t0 = Instant::now();
    let latencies = create_all(args.concurrency, args.n, |i| {
        let api = base_api.clone();
        async move {
            let s: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("base-{i:05}")},
                "stringData": {"token": format!("baseline-value-{i:05}-{}", "x".repeat(24))},
            }))?;
            api.create(&PostParams::default(), &s).await?;
            Ok(())
        }
    })
    .await?;
    let baseline_secs = t0.elapsed().as_secs_f64();
    let cpu1 = meter.read();
    let mut cpu = vec![meter.between("baseline", &cpu0, &cpu1)];
    let api_w1 = probes::apiserver_requests(&client).await;
    eprintln!(
        "[bench] write floor: {} resources and their three writes, directly",
        args.n
    );
    let cpu0 = meter.read();
    let (write_floor_seconds, floor_done) =
        write_floor(&client, &base_ns, &items, args, &boot).await?;
    cpu.push(meter.between("floor", &cpu0, &meter.read()));
    let floor_w1 = probes::apiserver_requests(&client).await;
    base_log.stop();
    let baseline = report::Baseline {
        secrets: args.n,
        seconds: baseline_secs,
        per_second: args.n as f64 / baseline_secs,
        create_latency_ms: Pcts::of(&latencies),
        apiserver_write_requests: api_total(&api_w0, &api_w1),
        write_floor_seconds,
        write_floor_done_ms: Pcts::of(&floor_done),
        // the baseline's end is the floor's start
        write_floor_apiserver_requests: api_delta(&api_w1, &floor_w1),
    };

    // ---- the operator, as a process ----
    let port = free_port()?;
    let operator = start_operator(args, &boot, &ns, port, work)?;
    let pid = operator.id();
    meter.add("operator", pid);
    owned.children.push(operator);
    let proc = ProcSampler::start(pid);
    let t_start = Instant::now();
    wait_ready(&http, port, Duration::from_secs(120)).await?;
    let startup = Footprint::of("startup", &proc, t_start, Instant::now());
    eprintln!("[bench] operator pid {pid} ready");

    // ---- issue burst ----
    eprintln!("[bench] burst: applying {} resources", args.n);
    proc.reset_peak();
    let rec0 = probes::operator_counters(&http, port).await;
    let c0 = calls.sample().await?;
    let api_w0 = probes::apiserver_requests(&client).await;
    let cpu0 = meter.read();
    let t0 = Instant::now();
    let created: Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let items = Arc::new(items);
    {
        let created = created.clone();
        let items = items.clone();
        let (client, ns, boot) = (client.clone(), ns.clone(), boot.clone());
        let a = args.clone();
        create_all(args.concurrency, args.n, move |i| {
            let (client, ns, created, items) =
                (client.clone(), ns.clone(), created.clone(), items.clone());
            let (boot, a) = (boot.clone(), a.clone());
            async move {
                let it = &items[i];
                create_resource(&client, &ns, it, i, &a, &boot).await?;
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(it.name.clone(), Instant::now());
                Ok(())
            }
        })
        .await?;
    }
    let create_secs = t0.elapsed().as_secs_f64();
    let all_ready = log
        .wait(args.phase_timeout, |l| {
            items
                .iter()
                .all(|it| l.res.get(&it.name).is_some_and(|r| r.ready))
        })
        .await;
    let t_ready = Instant::now();
    cpu.push(meter.between("burst", &cpu0, &meter.read()));
    if !all_ready {
        let l = log.lock();
        let ready = l.res.values().filter(|r| r.ready).count();
        bail!(
            "burst: only {ready}/{} resources Ready after {:?}; see {}",
            args.n,
            args.phase_timeout,
            work.join("operator.log").display()
        );
    }
    // trailing writes (Events, status) belong to the burst
    log.settle(Duration::from_secs(3), Duration::from_secs(30))
        .await;
    let t1 = Instant::now();
    let c1 = calls.sample().await?;
    let api_w1 = probes::apiserver_requests(&client).await;
    let rec1 = probes::operator_counters(&http, port).await;
    // the operator's counters at the burst's edges, when both were read
    let ops = rec0.as_ref().zip(rec1.as_ref());
    let burst_fp = Footprint::of("burst", &proc, t0, t1);
    let burst = {
        let l = log.lock();
        let created = created.lock().unwrap_or_else(|p| p.into_inner());
        let mut to_secret = Vec::new();
        let mut to_ready = Vec::new();
        for it in items.iter() {
            let Some(c) = created.get(&it.name) else {
                continue;
            };
            if let Some(s) = l.secret_first_seen.get(&it.secret) {
                to_secret.push(s.saturating_duration_since(*c));
            }
            if let Some(r) = l.res.get(&it.name).and_then(|r| r.first_ready) {
                to_ready.push(r.saturating_duration_since(*c));
            }
        }
        let writes = Writes::between(&l, t0, t1, args.n);
        let nuclia = probes::delta(&c0.by_route, &c1.by_route);
        let nuclia_total: u64 = nuclia.values().sum();
        let seconds = (t_ready - t0).as_secs_f64();
        report::Burst {
            resources: args.n,
            kb_keys: items.iter().filter(|i| i.kb).count(),
            create_seconds: create_secs,
            seconds_to_all_ready: seconds,
            ratio_to_baseline: seconds / baseline_secs,
            ratio_to_write_floor: seconds / write_floor_seconds,
            apply_to_secret_ms: Pcts::of(&to_secret),
            apply_to_ready_ms: Pcts::of(&to_ready),
            writes_per_resource: writes.operator as f64 / args.n as f64,
            writes,
            apiserver_write_requests_per_resource: api_total(&api_w0, &api_w1)
                .map(|w| w.saturating_sub(args.n as u64) as f64 / args.n as f64),
            apiserver_requests: api_delta(&api_w0, &api_w1),
            reconciles: ops.map(|(a, b)| b.reconciles.saturating_sub(a.reconciles)),
            watch_errors: ops.map(|(a, b)| b.watch_errors.saturating_sub(a.watch_errors)),
            operator_requests: ops
                .map(|(a, b)| probes::delta(&a.kube_requests, &b.kube_requests))
                .unwrap_or_default(),
            nuclia_calls_per_resource: nuclia_total as f64 / args.n as f64,
            budget_floor_seconds: nuclia_floor(&c0, &c1, args),
            nuclia_calls: nuclia,
            rate: probes::rates(&calls.between(t0, t1), args.nuclia_rps, args.nuclia_burst),
        }
    };
    eprintln!(
        "[bench] burst: all Ready in {:.1}s ({:.1}x baseline)",
        burst.seconds_to_all_ready, burst.ratio_to_baseline
    );

    // ---- steady state: two verify periods ----
    let period = args.verify_interval;
    eprintln!("[bench] steady state: watching for 2 x {period:?}");
    proc.reset_peak();
    let c0 = calls.sample().await?;
    let api_w0 = probes::apiserver_requests(&client).await;
    let t0 = Instant::now();
    tokio::time::sleep(period * 2).await; // the phase *is* a span of time: nothing to poll for
    let t1 = Instant::now();
    let c1 = calls.sample().await?;
    let api_w1 = probes::apiserver_requests(&client).await;
    let steady_fp = Footprint::of("steady", &proc, t0, t1);
    let steady = {
        let l = log.lock();
        let nuclia = probes::delta(&c0.by_route, &c1.by_route);
        let kb_creds: std::collections::BTreeSet<(String, usize)> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.kb)
            .map(|(i, _)| (login_secret(i, args), i % boot.kbs.len().max(1)))
            .collect();
        let pt_creds: std::collections::BTreeSet<String> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| !it.kb && !it.nua)
            .map(|(i, _)| login_secret(i, args))
            .collect();
        // a NUA key's scope: its credential and the (one) account
        let nua_creds: std::collections::BTreeSet<String> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.nua)
            .map(|(i, _)| login_secret(i, args))
            .collect();
        let scopes = kb_creds.len() + pt_creds.len() + nua_creds.len();
        let list_calls: u64 = nuclia
            .iter()
            .filter(|(route, _)| is_verification_list(route))
            .map(|(_, n)| n)
            .sum();
        let user_lookups = nuclia.get("GET /api/v1/user").copied().unwrap_or(0);
        let other: u64 = nuclia.values().sum::<u64>() - list_calls - user_lookups;
        let logins: std::collections::BTreeSet<&String> = kb_creds
            .iter()
            .map(|(login, _)| login)
            .chain(&pt_creds)
            .chain(&nua_creds)
            .collect();
        report::Steady {
            seconds: (t1 - t0).as_secs_f64(),
            verify_periods: 2,
            writes: Writes::between(&l, t0, t1, 0),
            apiserver_write_requests: api_total(&api_w0, &api_w1),
            verification_scopes: scopes,
            // one list per scope per period, plus one when a period boundary splits a round
            verification_lists_expected_max: scopes as u64 * 3,
            verification_lists: list_calls,
            // asked once per interval per login, plus one when a period boundary splits a round
            user_lookups,
            logins: logins.len(),
            other_nuclia_calls: other,
            nuclia_calls: nuclia,
            rate: probes::rates(&calls.between(t0, t1), args.nuclia_rps, args.nuclia_burst),
        }
    };

    // ---- rotation storm: every resource asked to rotate once, through the rotate annotation ----
    eprintln!(
        "[bench] rotation storm: {} rotations requested at once",
        args.n
    );
    proc.reset_peak();
    let before: BTreeMap<String, String> = {
        let l = log.lock();
        items
            .iter()
            .filter_map(|it| Some((it.name.clone(), l.res.get(&it.name)?.token_id.clone()?)))
            .collect()
    };
    if before.len() != items.len() {
        bail!("storm: some resources have no token in status");
    }
    let c0 = calls.sample().await?;
    let api_w0 = probes::apiserver_requests(&client).await;
    let value = format!("storm-{}", chrono::Utc::now().timestamp());
    let patched_at: Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let t0 = Instant::now();
    {
        let items = items.clone();
        let patched_at = patched_at.clone();
        let (client, ns, value) = (client.clone(), ns.clone(), value.clone());
        create_all(args.concurrency, args.n, move |i| {
            let (client, ns, items, value, patched_at) = (
                client.clone(),
                ns.clone(),
                items.clone(),
                value.clone(),
                patched_at.clone(),
            );
            async move {
                let it = &items[i];
                annotate_rotate(&client, &ns, it, &value).await?;
                patched_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(it.name.clone(), Instant::now());
                Ok(())
            }
        })
        .await?;
    }
    let patched = Instant::now();
    let is_rotated = |r: &probes::Res, name: &str| {
        r.ready && r.token_id.as_deref() != before.get(name).map(String::as_str)
    };
    let rotated_and_revoked = |l: &probes::Log| {
        items.iter().all(|it| {
            l.res
                .get(&it.name)
                .is_some_and(|r| is_rotated(r, &it.name) && r.previous_tokens == 0)
        })
    };
    if !log.wait(args.phase_timeout, rotated_and_revoked).await {
        let l = log.lock();
        let rotated = items
            .iter()
            .filter(|it| l.res.get(&it.name).is_some_and(|r| is_rotated(r, &it.name)))
            .count();
        let waiting: usize = items
            .iter()
            .filter_map(|it| l.res.get(&it.name))
            .map(|r| r.previous_tokens)
            .sum();
        bail!(
            "storm: {rotated}/{} resources rotated, {waiting} previous tokens not yet revoked after {:?}; see {}",
            args.n,
            args.phase_timeout,
            work.join("operator.log").display()
        );
    }
    let t_done = Instant::now();
    log.settle(Duration::from_secs(3), Duration::from_secs(30))
        .await;
    let t1 = Instant::now();
    let c1 = calls.sample().await?;
    let api_w1 = probes::apiserver_requests(&client).await;
    let storm_fp = Footprint::of("storm", &proc, t0, t1);
    let storm = {
        let l = log.lock();
        let patched_at = patched_at.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_rotation = t0;
        let mut latencies = Vec::new();
        for it in items.iter() {
            let Some(r) = l.res.get(&it.name) else {
                continue;
            };
            let old = before.get(&it.name).map(String::as_str);
            // the first new token the watch showed after the first patch
            let Some((t, _)) = r
                .tokens
                .iter()
                .find(|(t, id)| *t >= t0 && Some(id.as_str()) != old)
            else {
                continue;
            };
            last_rotation = last_rotation.max(*t);
            if let Some(p) = patched_at.get(&it.name) {
                latencies.push(t.saturating_duration_since(*p));
            }
        }
        let to_rotated = (last_rotation - t0).as_secs_f64();
        let nuclia = probes::delta(&c0.by_route, &c1.by_route);
        let writes = Writes::between(&l, t0, t1, args.n);
        report::Storm {
            resources: args.n,
            patch_seconds: (patched - t0).as_secs_f64(),
            patch_to_rotated_ms: Pcts::of(&latencies),
            seconds_to_all_rotated: to_rotated,
            seconds_to_all_revoked: (t_done - t0).as_secs_f64(),
            renewals_per_second: args.n as f64 / to_rotated.max(0.001),
            peak_previous_tokens: l.peak_previous(t0, t1),
            writes_per_resource: writes.operator as f64 / args.n as f64,
            writes,
            apiserver_write_requests: api_total(&api_w0, &api_w1),
            nuclia_calls_per_resource: nuclia.values().sum::<u64>() as f64 / args.n as f64,
            nuclia_calls: nuclia,
            rate: probes::rates(&calls.between(t0, t1), args.nuclia_rps, args.nuclia_burst),
        }
    };
    eprintln!(
        "[bench] storm: all rotated {:.1}s after the first patch ({:.1}/s), old tokens revoked after {:.1}s",
        storm.seconds_to_all_rotated, storm.renewals_per_second, storm.seconds_to_all_revoked
    );

    let whole = Footprint::of("whole run", &proc, t_start, Instant::now());
    let mut footprint = vec![startup, burst_fp, steady_fp, storm_fp, whole];

    // ---- soak (opt-in): self-renewing tokens rotated for a while; the caches must stay bounded ----
    let soak = match args.soak {
        None => None,
        Some(duration) => {
            let t0 = Instant::now();
            proc.reset_peak();
            let s = soak(args, &client, &ns, &http, port, &boot, &log, duration).await?;
            footprint.push(Footprint::of("soak", &proc, t0, Instant::now()));
            Some(s)
        }
    };

    let log_text = std::fs::read_to_string(work.join("operator.log")).unwrap_or_default();
    let operator_log = report::LogSummary {
        warnings: log_text.lines().filter(|l| l.contains(" WARN ")).count(),
        errors: log_text.lines().filter(|l| l.contains(" ERROR ")).count(),
        panics: log_text.matches("panicked").count(),
        reconcile_failures: log_text.matches("reconcile failed").count(),
        path: work.join("operator.log").display().to_string(),
    };

    let mut report = Report {
        config: report::Config {
            n: args.n,
            personal_tokens: items.iter().filter(|i| !i.kb && !i.nua).count(),
            kb_keys: items.iter().filter(|i| i.kb).count(),
            nua_keys: items.iter().filter(|i| i.nua).count(),
            credentials,
            nuclia_rps: args.nuclia_rps,
            nuclia_burst: args.nuclia_burst,
            concurrency: args.concurrency,
            verify_interval_s: args.verify_interval.as_secs_f64(),
            commit: git_commit(),
            apiserver: client
                .apiserver_version()
                .await
                .map(|v| v.git_version)
                .unwrap_or_default(),
        },
        baseline,
        burst,
        steady,
        storm,
        soak,
        footprint,
        cpu,
        operator_log,
        targets: Vec::new(),
    };
    report.targets = report::targets(&report);
    Ok(report)
}

/// The soak: `--soak-resources` self-renewing personal tokens (each bootstrapped by its own
/// login Secret, then minting its successors with its own managed token), rotated round after
/// round through the rotate annotation for `duration`, every rotation a new credential; the
/// operator's `nuclia_operator_cache_entries` sampled every ~5 s, then, once the resources are
/// deleted, until every cache is back at its start size (bounded).
#[allow(clippy::too_many_arguments)]
async fn soak(
    args: &Args,
    client: &Client,
    ns: &str,
    http: &reqwest::Client,
    port: u16,
    boot: &Bootstrap,
    log: &ObjectLog,
    duration: Duration,
) -> anyhow::Result<report::Soak> {
    let k = args.soak_resources;
    eprintln!("[bench] soak: {k} self-renewing personal tokens rotated for {duration:?}");
    let start = probes::cache_entries(http, port).await;
    let samples: Arc<std::sync::Mutex<Vec<Option<probes::CacheEntries>>>> = Arc::default();
    let sampler = {
        let (samples, http) = (samples.clone(), http.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let s = probes::cache_entries(&http, port).await;
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        })
    };
    let result = soak_rounds(args, client, ns, http, boot, log, duration).await;
    sampler.abort();
    let (rounds, rotations, seconds) = result?;
    // The housekeeping evicts what has been idle for two verify intervals, looking every half
    // interval (5 s to 60 s): poll until every cache is back at its start, within that and 10 s.
    let v = args.verify_interval;
    let bound = v * 2
        + (v / 2).clamp(Duration::from_secs(5), Duration::from_secs(60))
        + Duration::from_secs(10);
    eprintln!("[bench] soak: waiting up to {bound:?} for the caches to return to their start");
    let deleted = Instant::now();
    let mut end = probes::cache_entries(http, port).await;
    while !back_to_start(start.as_ref(), end.as_ref()) && deleted.elapsed() < bound {
        tokio::time::sleep(Duration::from_secs(2)).await;
        end = probes::cache_entries(http, port).await;
    }
    let returned_after =
        back_to_start(start.as_ref(), end.as_ref()).then(|| deleted.elapsed().as_secs_f64());
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let names: std::collections::BTreeSet<String> = std::iter::once(&start)
        .chain(samples.iter())
        .chain(std::iter::once(&end))
        .flatten()
        .flat_map(|m| m.keys().cloned())
        .collect();
    let caches = names
        .into_iter()
        .map(|name| {
            let during = std::iter::once(&start)
                .chain(samples.iter())
                .filter_map(|m| m.as_ref()?.get(&name).copied())
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
            report::CacheRow {
                start: start.as_ref().and_then(|m| m.get(&name).copied()),
                max_during: during,
                end: end.as_ref().and_then(|m| m.get(&name).copied()),
                cache: name,
            }
        })
        .collect();
    Ok(report::Soak {
        resources: k,
        seconds,
        rounds,
        rotations,
        samples: samples.len() + 2,
        caches,
        returned_after,
    })
}

/// Whether every cache in `start` is at most its start size in `end`.
fn back_to_start(start: Option<&probes::CacheEntries>, end: Option<&probes::CacheEntries>) -> bool {
    let (Some(start), Some(end)) = (start, end) else {
        return false;
    };
    !start.is_empty()
        && start
            .iter()
            .all(|(k, v)| end.get(k).is_some_and(|e| e <= v))
}

/// The soak's resources: created, rotated round after round for `duration`, deleted. Returns
/// the rounds, the rotations the watch saw and the seconds spent rotating.
async fn soak_rounds(
    args: &Args,
    client: &Client,
    ns: &str,
    http: &reqwest::Client,
    boot: &Bootstrap,
    log: &ObjectLog,
    duration: Duration,
) -> anyhow::Result<(usize, usize, f64)> {
    let k = args.soak_resources;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let pts: Api<NucliaPersonalToken> = Api::namespaced(client.clone(), ns);
    let soak_items: Vec<Item> = (0..k)
        .map(|i| Item {
            name: format!("soak-{i:03}"),
            kb: false,
            nua: false,
            secret: format!("soak-{i:03}-token"),
        })
        .collect();
    for (i, it) in soak_items.iter().enumerate() {
        let token = mint_login(http, boot, 100_000 + i).await?;
        let s: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("soak-login-{i:03}")},
            "stringData": {"token": token},
        }))?;
        secrets
            .create(&PostParams::default(), &s)
            .await
            .context("creating a soak login Secret")?;
        let pt: NucliaPersonalToken = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaPersonalToken",
            "metadata": {"name": it.name},
            "spec": {
                "description": format!("bench {}", it.name),
                "days": 1,
                "renewBefore": "12h",
                "auth": {"secretRef": {"name": format!("soak-login-{i:03}"), "key": "token"}, "selfRenew": true},
                "rotation": {"revokePreviousAfter": "2s"},
                "secret": {"name": it.secret},
            },
        }))?;
        pts.create(&PostParams::default(), &pt)
            .await
            .context("creating a soak resource")?;
    }
    let token_of = |l: &probes::Log, name: &str| {
        l.res
            .get(name)
            .filter(|r| r.ready)
            .and_then(|r| r.token_id.clone())
    };
    if !log
        .wait(args.phase_timeout, |l| {
            soak_items.iter().all(|it| token_of(l, &it.name).is_some())
        })
        .await
    {
        bail!(
            "soak: the self-renewing tokens were not all Ready within {:?}",
            args.phase_timeout
        );
    }
    let t0 = Instant::now();
    let mut rounds = 0;
    while t0.elapsed() < duration {
        rounds += 1;
        let current: Vec<Option<String>> = {
            let l = log.lock();
            soak_items.iter().map(|it| token_of(&l, &it.name)).collect()
        };
        let value = format!("soak-{}-{rounds}", chrono::Utc::now().timestamp());
        create_all(args.concurrency, k, |i| {
            annotate_rotate(client, ns, &soak_items[i], &value)
        })
        .await?;
        let rotated = log
            .wait(args.phase_timeout, |l| {
                soak_items.iter().zip(&current).all(|(it, old)| {
                    token_of(l, &it.name).is_some_and(|t| Some(&t) != old.as_ref())
                })
            })
            .await;
        if !rotated {
            bail!(
                "soak: round {rounds} did not rotate every token within {:?}",
                args.phase_timeout
            );
        }
        // let the previous tokens' revocation (revokePreviousAfter 2s) keep up
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let rotations = {
        let l = log.lock();
        soak_items
            .iter()
            .filter_map(|it| l.res.get(&it.name))
            .map(|r| r.tokens.iter().filter(|(t, _)| *t >= t0).count())
            .sum()
    };
    eprintln!("[bench] soak: {rounds} rounds, {rotations} rotations in {seconds:.0}s; deleting");
    for it in &soak_items {
        pts.delete(&it.name, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + args.phase_timeout;
    for it in &soak_items {
        while pts.get_opt(&it.name).await?.is_some() {
            if Instant::now() > deadline {
                bail!("soak: {} not gone within {:?}", it.name, args.phase_timeout);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // the login Secrets last: the revocations may have needed them
    for i in 0..k {
        let _ = secrets
            .delete(&format!("soak-login-{i:03}"), &DeleteParams::default())
            .await;
    }
    Ok((rounds, rotations, seconds))
}

/// Write requests between two readings of the apiserver's counters.
fn api_total(a: &Option<BTreeMap<String, u64>>, b: &Option<BTreeMap<String, u64>>) -> Option<u64> {
    let (a, b) = (probes::writes(a)?, probes::writes(b)?);
    Some(probes::delta(&a, &b).values().sum())
}

/// The routes the operator's upstream verification uses (one list per credential and scope, per user for personal tokens).
/// Every request between two readings of the apiserver's counters (none when either failed).
fn api_delta(
    a: &Option<BTreeMap<String, u64>>,
    b: &Option<BTreeMap<String, u64>>,
) -> BTreeMap<String, u64> {
    match (a, b) {
        (Some(a), Some(b)) => probes::delta(a, b),
        _ => BTreeMap::new(),
    }
}

fn is_verification_list(route: &str) -> bool {
    route == "GET /api/v1/user/pa_tokens"
        || route == "GET /api/v1/account/{account_id}/kb/{kb_id}/service_accounts"
        || route == "GET /api/v1/account/{account_id}/nua_clients"
}

/// The shortest time the per-credential budget allows for the calls the burst made: the
/// busiest credential's calls, less its burst, at the sustained rate.
fn nuclia_floor(c0: &Calls, c1: &Calls, args: &Args) -> f64 {
    probes::delta(&c0.by_credential, &c1.by_credential)
        .iter()
        .filter(|(k, _)| k.as_str() != "unknown")
        .map(|(_, n)| (*n as f64 - f64::from(args.nuclia_burst)).max(0.0) / args.nuclia_rps)
        .fold(0.0, f64::max)
}

/// Asks the operator to rotate `it` now: a new value of the rotate annotation.
async fn annotate_rotate(client: &Client, ns: &str, it: &Item, value: &str) -> anyhow::Result<()> {
    let patch = Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION_ROTATE: value}}}));
    let pp = PatchParams::default();
    let client = client.clone();
    if it.kb {
        Api::<NucliaKbApiKey>::namespaced(client, ns)
            .patch(&it.name, &pp, &patch)
            .await?;
    } else if it.nua {
        Api::<NucliaNuaKey>::namespaced(client, ns)
            .patch(&it.name, &pp, &patch)
            .await?;
    } else {
        Api::<NucliaPersonalToken>::namespaced(client, ns)
            .patch(&it.name, &pp, &patch)
            .await?;
    }
    Ok(())
}

/// Runs `make(i)` for i in 0..n with `concurrency` in flight; returns each call's latency.
async fn create_all<F, Fut>(concurrency: usize, n: usize, make: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = make(i);
            async move {
                let t = Instant::now();
                fut.await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Creates one resource; returns its metadata as created.
async fn create_resource(
    client: &Client,
    ns: &str,
    it: &Item,
    i: usize,
    args: &Args,
    boot: &Bootstrap,
) -> anyhow::Result<ObjectMeta> {
    let login = login_secret(i, args);
    let common = json!({
        "days": 1,
        "renewBefore": "12h",
        "auth": {"secretRef": {"name": login, "key": "token"}},
        "rotation": {"revokePreviousAfter": "10s"},
    });
    let pp = PostParams::default();
    if it.kb {
        let kb = &boot.kbs[i % boot.kbs.len().max(1)];
        let mut spec = common;
        spec["kbUrl"] = json!(kb.url);
        spec["secret"] = json!({"name": it.secret});
        let obj: NucliaKbApiKey = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
            "metadata": {"name": it.name}, "spec": spec,
        }))?;
        Ok(Api::<NucliaKbApiKey>::namespaced(client.clone(), ns)
            .create(&pp, &obj)
            .await?
            .metadata)
    } else if it.nua {
        let mut spec = common;
        spec["zone"] = json!(boot.zone);
        spec["title"] = json!(format!("bench {}", it.name));
        spec["contact"] = json!("bench@example.com");
        spec["secret"] = json!({"name": it.secret});
        let obj: NucliaNuaKey = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaNuaKey",
            "metadata": {"name": it.name}, "spec": spec,
        }))?;
        Ok(Api::<NucliaNuaKey>::namespaced(client.clone(), ns)
            .create(&pp, &obj)
            .await?
            .metadata)
    } else {
        let mut spec = common;
        spec["description"] = json!(format!("bench {}", it.name));
        spec["secret"] = json!({"name": it.secret});
        let obj: NucliaPersonalToken = serde_json::from_value(json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaPersonalToken",
            "metadata": {"name": it.name}, "spec": spec,
        }))?;
        Ok(Api::<NucliaPersonalToken>::namespaced(client.clone(), ns)
            .create(&pp, &obj)
            .await?
            .metadata)
    }
}

/// What a perfect operator's writes cost: each resource created, then given the three writes
/// an issue needs (finalizer with intent, owned Secret, status) in the baseline namespace (the
/// operator does not watch it), `concurrency` resources at a time, with no reads and no Nuclia.
/// Returns the time it took and, per resource, the time from the start until its three writes
/// were done.
async fn write_floor(
    client: &Client,
    ns: &str,
    items: &[Item],
    args: &Args,
    boot: &Bootstrap,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let done = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    let t0 = Instant::now();
    create_all(args.concurrency, items.len(), |i| {
        let (client, secrets, it, done) = (client.clone(), secrets.clone(), &items[i], &done);
        async move {
            let meta = create_resource(&client, ns, it, i, args, boot).await?;
            let (kind, plural) = if it.kb {
                ("NucliaKbApiKey", "nucliakbapikeys")
            } else if it.nua {
                ("NucliaNuaKey", "nuclianuakeys")
            } else {
                ("NucliaPersonalToken", "nucliapersonaltokens")
            };
            let resources: Api<kube::api::DynamicObject> = Api::namespaced_with(
                client.clone(),
                ns,
                &kube::api::ApiResource {
                    group: "nuclia.dev".into(),
                    version: "v1alpha1".into(),
                    api_version: "nuclia.dev/v1alpha1".into(),
                    kind: kind.into(),
                    plural: plural.into(),
                },
            );
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let intent = format!("{:012x} {now}", i);
            resources
                .patch(
                    &it.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {
                        "resourceVersion": meta.resource_version,
                        "finalizers": [FLOOR_FINALIZER],
                        "annotations": {ANNOTATION_ISSUE_INTENT: intent},
                    }})),
                )
                .await?;
            let secret: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {
                    "name": it.secret,
                    "labels": {"app.kubernetes.io/managed-by": "nuclia-token-operator"},
                    "annotations": {"nuclia.dev/token-id": format!("floor-{i:05}")},
                    "ownerReferences": [{
                        "apiVersion": "nuclia.dev/v1alpha1", "kind": kind, "name": it.name,
                        "uid": meta.uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "stringData": {"token": format!("floor-value-{i:05}-{}", "x".repeat(24))},
            }))?;
            secrets.create(&PostParams::default(), &secret).await?;
            let status = json!({
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "TokenValid",
                     "message": format!("Secret {} holds a valid token until {now}", it.secret),
                     "observedGeneration": 1, "lastTransitionTime": now},
                    {"type": "Issuing", "status": "False", "reason": "Idle",
                     "message": "no issue in progress", "observedGeneration": 1,
                     "lastTransitionTime": now},
                ],
                "observedGeneration": 1, "secretName": it.secret,
                "tokenId": format!("floor-{i:05}"), "tokenHash": "0123456789ab",
                "issuedAt": now, "notAfter": now, "renewalTime": now,
                "specHash": "0123456789abcdef", "resolvedIntent": format!("{:012x}", i),
                "kb": if it.kb { json!({"kbId": boot.kbs.first().map(|k| k.id.clone())}) } else { json!(null) },
            });
            let patch: json_patch::Patch = serde_json::from_value(
                json!([{"op": "add", "path": "/status", "value": status}]),
            )?;
            resources
                .patch_status(&it.name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await?;
            done.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t0.elapsed());
            Ok(())
        }
    })
    .await?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok((
        seconds,
        done.into_inner().unwrap_or_else(|p| p.into_inner()),
    ))
}

/// The finalizer the write floor puts on its resources (removed at clean-up).
const FLOOR_FINALIZER: &str = "nuclia.dev/bench-floor";

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in nuclia_token_operator::crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .context("applying the CRDs")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let established = api
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .is_some_and(|s| {
                    s.conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} never became Established");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

fn start_fake(bin_dir: &Path, work: &Path) -> anyhow::Result<(Child, Bootstrap)> {
    use std::io::BufRead;
    let bin = bin_dir.join("nuclia-fake");
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(work.join("fake.log"))?))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("fake stdout")?;
    // The fake prints its bootstrap line at once; a thread keeps the wait bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .context("nuclia-fake printed no bootstrap line")?;
    let boot: Bootstrap = serde_json::from_str(&line).context("nuclia-fake bootstrap line")?;
    Ok((child, boot))
}

/// A personal access token for the benchmark's login Secret number `i`.
async fn mint_login(http: &reqwest::Client, boot: &Bootstrap, i: usize) -> anyhow::Result<String> {
    let expires = (chrono::Utc::now() + chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r: serde_json::Value = http
        .post(format!("{}/api/v1/user/pa_tokens", boot.url))
        .bearer_auth(&boot.pat)
        .json(&json!({"description": format!("bench login {i}"), "expiration_date": expires}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    r["token"]
        .as_str()
        .map(str::to_owned)
        .context("nuclia-fake answered no token")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_operator(
    args: &Args,
    boot: &Bootstrap,
    ns: &str,
    port: u16,
    work: &Path,
) -> anyhow::Result<Child> {
    let bin = args.bin_dir.join("nuclia-token-operator");
    let log = std::fs::File::create(work.join("operator.log"))?;
    let child = Command::new(&bin)
        .args(["--nuclia-global-url", &boot.url])
        .args([
            "--nuclia-zone-origin",
            &format!("{}={}", boot.zone, boot.url),
        ])
        .args(["--watch-namespaces", ns])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--cluster-id", "bench"])
        .args([
            "--verify-interval",
            &format!("{}s", args.verify_interval.as_secs()),
        ])
        .args(["--nuclia-rps", &args.nuclia_rps.to_string()])
        .args(["--nuclia-burst", &args.nuclia_burst.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(
            args.worker_threads
                .map(|n| ["--worker-threads".to_owned(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .env_remove("RUST_LOG")
        .envs(std::env::var("NTO_BENCH_OPERATOR_RUST_LOG").map(|v| ("RUST_LOG", v)))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(child)
}

async fn wait_ready(http: &reqwest::Client, port: u16, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let ok = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the operator was not ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    let c = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!c.is_empty()).then(|| if dirty { format!("{c}-dirty") } else { c })
}

/// Drops the resources' and their Secrets' finalizers (the operator is stopped, the fake is
/// gone) and deletes the namespaces.
async fn cleanup(client: &Client, ns: &str, base_ns: &str, concurrency: usize) {
    for n in [ns, base_ns] {
        drop_finalizers(client, n, concurrency).await;
    }
    let api: Api<Namespace> = Api::all(client.clone());
    for n in [ns, base_ns] {
        let _ = api.delete(n, &DeleteParams::default()).await;
    }
}

/// Polls until none of `names` exists (bounded by `within`; a warning when it runs out).
async fn wait_namespaces_gone(client: &Client, names: &[&str], within: Duration) {
    let api: Api<Namespace> = Api::all(client.clone());
    let t0 = Instant::now();
    loop {
        let mut left = 0;
        for n in names {
            // an error other than "not found" counts as still there
            if !matches!(api.get_opt(n).await, Ok(None)) {
                left += 1;
            }
        }
        if left == 0 {
            eprintln!(
                "[bench] namespaces gone after {:.0}s",
                t0.elapsed().as_secs_f64()
            );
            return;
        }
        if t0.elapsed() >= within {
            eprintln!("[bench] warning: {left} namespace(s) still there after {within:?}");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn drop_finalizers(client: &Client, ns: &str, concurrency: usize) {
    let lp = kube::api::ListParams::default();
    let pts: Api<NucliaPersonalToken> = Api::namespaced(client.clone(), ns);
    let kbs: Api<NucliaKbApiKey> = Api::namespaced(client.clone(), ns);
    let nuas: Api<NucliaNuaKey> = Api::namespaced(client.clone(), ns);
    // 0: personal token, 1: KB key, 2: NUA key, 3: managed Secret
    let mut names: Vec<(u8, String)> = Vec::new();
    if let Ok(l) = pts.list_metadata(&lp).await {
        names.extend(l.items.iter().map(|o| (0, o.name_any())));
    }
    if let Ok(l) = kbs.list_metadata(&lp).await {
        names.extend(l.items.iter().map(|o| (1, o.name_any())));
    }
    if let Ok(l) = nuas.list_metadata(&lp).await {
        names.extend(l.items.iter().map(|o| (2, o.name_any())));
    }
    // The managed Secrets' finalizer, which the stopped operator would have removed, else
    // holds the namespace in Terminating.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let managed = lp
        .clone()
        .labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    if let Ok(l) = secrets.list_metadata(&managed).await {
        names.extend(
            l.items
                .iter()
                .filter(|o| !o.finalizers().is_empty())
                .map(|o| (3, o.name_any())),
        );
    }
    let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let _ = create_all(concurrency, names.len(), |i| {
        let (pts, kbs, nuas, patch) = (pts.clone(), kbs.clone(), nuas.clone(), patch.clone());
        let secrets = secrets.clone();
        let (kind, name) = names[i].clone();
        async move {
            let pp = PatchParams::default();
            match kind {
                1 => drop(kbs.patch(&name, &pp, &patch).await?),
                2 => drop(nuas.patch(&name, &pp, &patch).await?),
                3 => drop(secrets.patch(&name, &pp, &patch).await?),
                _ => drop(pts.patch(&name, &pp, &patch).await?),
            }
            Ok(())
        }
    })
    .await;
}
