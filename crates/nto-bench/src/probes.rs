//! What the benchmark observes while the phases run, each in a background task, kept as
//! timestamped records so that any phase's window can be measured afterwards:
//! - [`ObjectLog`]: watches of the resources, Secrets and Events in the benchmark namespace;
//!   every new resourceVersion is one apiserver write.
//! - [`CallSampler`]: the fake's call counters (per route and per credential), once a second.
//! - [`ProcSampler`]: the operator's RSS and CPU time from `/proc`.
//! - [`CpuMeter`]: CPU time of every process taking part (control plane, fake, operator, the
//!   benchmark) and of the whole machine, read at a phase's edges; [`CpuUse`] is one phase's.
//! - [`apiserver_writes`]: the apiserver's own write-request counters from its `/metrics`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use nuclia_token_operator::crd::{
    CredentialStatus, NucliaKbApiKey, NucliaNuaKey, NucliaPersonalToken,
};

/// Which kind of object a write touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Obj {
    Resource,
    Secret,
    Event,
}

/// What the benchmark knows about one resource, as last seen through the watch.
#[derive(Clone, Debug, Default)]
pub struct Res {
    pub ready: bool,
    pub first_ready: Option<Instant>,
    pub token_id: Option<String>,
    /// Every token id the resource held, with when the watch first showed it.
    pub tokens: Vec<(Instant, String)>,
    pub previous_tokens: usize,
    pub generation: Option<i64>,
}

#[derive(Default)]
pub struct Log {
    seen: HashSet<(Obj, String, String)>,
    /// One entry per apiserver write seen (a new resourceVersion of a watched object).
    pub writes: Vec<(Instant, Obj)>,
    pub secret_first_seen: HashMap<String, Instant>,
    pub res: HashMap<String, Res>,
    /// The sum of `status.previousTokens` over all resources, as it was after each change.
    pub previous_total: usize,
    pub previous_series: Vec<(Instant, usize)>,
}

impl Log {
    fn write(&mut self, kind: Obj, uid: Option<String>, rv: Option<String>) {
        if let (Some(uid), Some(rv)) = (uid, rv)
            && self.seen.insert((kind, uid, rv))
        {
            self.writes.push((Instant::now(), kind));
        }
    }

    fn resource(
        &mut self,
        name: String,
        generation: Option<i64>,
        status: Option<&CredentialStatus>,
    ) {
        let now = Instant::now();
        let r = self.res.entry(name).or_default();
        r.generation = generation;
        let Some(s) = status else { return };
        let (old_previous, new_previous) = (r.previous_tokens, s.previous_tokens.len());
        r.ready = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            && s.observed_generation == generation
            && s.token_id.is_some();
        if r.ready && r.first_ready.is_none() {
            r.first_ready = Some(now);
        }
        if s.token_id.is_some() && s.token_id != r.token_id {
            r.tokens.push((now, s.token_id.clone().unwrap_or_default()));
        }
        r.token_id = s.token_id.clone();
        r.previous_tokens = new_previous;
        if new_previous != old_previous {
            self.previous_total = (self.previous_total + new_previous).saturating_sub(old_previous);
            self.previous_series.push((now, self.previous_total));
        }
    }

    /// The highest sum of previous tokens (waiting for revocation) over all resources in
    /// `[from, to]`, the value holding at `from` included.
    pub fn peak_previous(&self, from: Instant, to: Instant) -> usize {
        let at_from = self
            .previous_series
            .iter()
            .take_while(|(t, _)| *t < from)
            .last()
            .map_or(0, |(_, n)| *n);
        self.previous_series
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, n)| *n)
            .fold(at_from, usize::max)
    }

    /// Writes of `kind` (all kinds when `None`) seen in `[from, to)`.
    pub fn writes_between(&self, kind: Option<Obj>, from: Instant, to: Instant) -> usize {
        self.writes
            .iter()
            .filter(|(t, k)| *t >= from && *t < to && kind.is_none_or(|want| *k == want))
            .count()
    }

    /// When the last write was seen.
    pub fn last_write(&self) -> Option<Instant> {
        self.writes.last().map(|(t, _)| *t)
    }
}

/// The watches of one namespace, feeding a shared [`Log`].
#[derive(Clone)]
pub struct ObjectLog {
    log: Arc<Mutex<Log>>,
    watches: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl ObjectLog {
    pub fn start(client: &Client, ns: &str) -> Self {
        let log = ObjectLog {
            log: Arc::default(),
            watches: Arc::default(),
        };
        log.follow(
            Api::<NucliaPersonalToken>::namespaced(client.clone(), ns),
            |l, o| {
                l.write(Obj::Resource, o.uid(), o.resource_version());
                l.resource(o.name_any(), o.metadata.generation, o.status.as_deref());
            },
        );
        log.follow(
            Api::<NucliaKbApiKey>::namespaced(client.clone(), ns),
            |l, o| {
                l.write(Obj::Resource, o.uid(), o.resource_version());
                l.resource(o.name_any(), o.metadata.generation, o.status.as_deref());
            },
        );
        log.follow(
            Api::<NucliaNuaKey>::namespaced(client.clone(), ns),
            |l, o| {
                l.write(Obj::Resource, o.uid(), o.resource_version());
                l.resource(o.name_any(), o.metadata.generation, o.status.as_deref());
            },
        );
        log.follow(
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
            |l, o| {
                l.write(Obj::Secret, o.uid(), o.resource_version());
                l.secret_first_seen
                    .entry(o.name_any())
                    .or_insert_with(Instant::now);
            },
        );
        log.follow(Api::<Event>::namespaced(client.clone(), ns), |l, o| {
            l.write(Obj::Event, o.uid(), o.resource_version())
        });
        log
    }

    /// Watches `api` in the background, recording each object added or changed with `record`.
    fn follow<K>(&self, api: Api<K>, record: impl Fn(&mut Log, &K) + Send + 'static)
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        let log = self.clone();
        let task = tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Err(e) => eprintln!("[bench] watch error (the watch restarts): {e}"),
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        record(&mut log.lock(), &o)
                    }
                    Ok(_) => {}
                }
            }
        });
        self.watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.abort_handle());
    }

    /// Ends the watches.
    pub fn stop(&self) {
        for w in self
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            w.abort();
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `done` holds (checked every 100 ms), at most `within`; false on time-out.
    pub async fn wait(&self, within: Duration, mut done: impl FnMut(&Log) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.lock()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no write has been seen for `quiet` (at most `within`).
    pub async fn settle(&self, quiet: Duration, within: Duration) {
        let _ = self
            .wait(within, |l| {
                l.last_write().is_none_or(|t| t.elapsed() >= quiet)
            })
            .await;
    }
}

/// One reading of the fake's counters.
#[derive(Clone, Debug, Default)]
pub struct Calls {
    pub at: Option<Instant>,
    pub by_route: BTreeMap<String, u64>,
    pub by_credential: BTreeMap<String, u64>,
}

/// Reads the fake's call counters once a second (and on demand at phase boundaries).
#[derive(Clone)]
pub struct CallSampler {
    http: reqwest::Client,
    url: String,
    samples: Arc<Mutex<Vec<Calls>>>,
}

impl CallSampler {
    pub fn start(url: &str) -> Self {
        let s = CallSampler {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            samples: Arc::default(),
        };
        let bg = s.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let _ = bg.sample().await;
            }
        });
        s
    }

    async fn get(&self, query: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self
            .http
            .get(format!("{}/_fake/calls{query}", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Reads the counters now and keeps the reading.
    pub async fn sample(&self) -> anyhow::Result<Calls> {
        let by_route = self.get("").await?;
        let by_credential = self.get("?by=credential").await?;
        let c = Calls {
            at: Some(Instant::now()),
            by_route,
            by_credential,
        };
        let mut v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        v.push(c.clone());
        v.sort_by_key(|c| c.at);
        Ok(c)
    }

    /// The readings taken in `[from, to]`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Calls> {
        let v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .filter(|c| c.at.is_some_and(|t| t >= from && t <= to))
            .cloned()
            .collect()
    }
}

/// `b - a` per key (counters only grow).
pub fn delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(a.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// How fast one credential called Nuclia within a phase, from the once-a-second readings.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RateReport {
    /// Highest calls per second of any credential between two consecutive readings (~1 s).
    pub peak_per_second: f64,
    /// Highest average calls per second of any credential over ~10 s.
    pub peak_per_second_10s: f64,
    /// Windows (1 s and 10 s, per credential) with more calls than the budget allows:
    /// `rps × seconds + burst` (+1 for a call counted on the window's edge).
    pub windows_over_budget: usize,
    pub windows_checked: usize,
}

pub fn rates(samples: &[Calls], rps: f64, burst: u32) -> RateReport {
    let mut r = RateReport::default();
    let allowed = |secs: f64| rps * secs + f64::from(burst) + 1.0;
    for (i, a) in samples.iter().enumerate() {
        let (Some(ta), rest) = (a.at, &samples[i + 1..]) else {
            continue;
        };
        // the next reading (~1 s) and the first one at least 10 s later
        let next = rest.first();
        let ten = rest
            .iter()
            .find(|b| b.at.is_some_and(|tb| tb - ta >= Duration::from_secs(10)));
        for (b, long) in [(next, false), (ten, true)] {
            let Some(b) = b else { continue };
            let Some(tb) = b.at else { continue };
            let secs = (tb - ta).as_secs_f64().max(0.001);
            for (cred, n) in delta(&a.by_credential, &b.by_credential) {
                if cred == "unknown" {
                    continue;
                }
                let n = n as f64;
                r.windows_checked += 1;
                if n > allowed(secs) {
                    r.windows_over_budget += 1;
                }
                let rate = n / secs;
                if long {
                    r.peak_per_second_10s = r.peak_per_second_10s.max(rate);
                } else {
                    r.peak_per_second = r.peak_per_second.max(rate);
                }
            }
        }
    }
    r
}

/// One reading of the operator process.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub cpu_ticks: u64,
}

/// Samples the operator's `/proc/PID/status` and `/proc/PID/stat` every 250 ms.
#[derive(Clone)]
pub struct ProcSampler {
    pid: u32,
    samples: Arc<Mutex<Vec<ProcSample>>>,
    pub ticks_per_second: f64,
}

impl ProcSampler {
    pub fn start(pid: u32) -> Self {
        let ticks_per_second = clock_ticks_per_second();
        let s = ProcSampler {
            pid,
            samples: Arc::default(),
            ticks_per_second,
        };
        let bg = s.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if bg.sample().is_none() {
                    return; // the process is gone
                }
            }
        });
        s
    }

    pub fn sample(&self) -> Option<ProcSample> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let kb = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let ticks = cpu_ticks(self.pid)?;
        let s = ProcSample {
            at: Instant::now(),
            rss_kb: kb("VmRSS:")?,
            hwm_kb: kb("VmHWM:")?,
            cpu_ticks: ticks,
        };
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
        Some(s)
    }

    /// Resets the kernel's peak-RSS mark (VmHWM) so the next phase's peak is its own.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// Peak RSS (MiB) and CPU seconds in `[from, to]`.
    pub fn footprint(&self, from: Instant, to: Instant) -> (f64, f64) {
        let v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let inside: Vec<&ProcSample> = v.iter().filter(|s| s.at >= from && s.at <= to).collect();
        let peak = inside
            .iter()
            .map(|s| s.rss_kb.max(s.hwm_kb))
            .max()
            .unwrap_or(0);
        let cpu = match (inside.first(), inside.last()) {
            (Some(a), Some(b)) => (b.cpu_ticks - a.cpu_ticks) as f64 / self.ticks_per_second,
            _ => 0.0,
        };
        (peak as f64 / 1024.0, cpu)
    }
}

/// User and system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Who used the cores in a phase: the CPU time of each process taking part, and the machine's
/// busy time from `/proc/stat` (which also takes whatever else runs on the machine).
pub struct CpuMeter {
    procs: Vec<(String, u32)>,
    ticks_per_second: f64,
}

/// One reading of a [`CpuMeter`].
pub struct CpuReading {
    at: Instant,
    by_process: BTreeMap<String, u64>,
    /// Busy ticks summed over the machine's CPUs.
    machine_busy: Option<u64>,
}

impl CpuMeter {
    /// The control plane's processes from the `NAME.pid` files of the cluster's state directory
    /// (`tests/k8s/cluster.sh`; its watchdog left out), and the benchmark itself.
    pub fn new(cluster_dir: Option<&std::path::Path>) -> Self {
        let mut procs = vec![("nto-bench".to_owned(), std::process::id())];
        if let Some(entries) = cluster_dir.and_then(|d| std::fs::read_dir(d).ok()) {
            for e in entries.flatten() {
                let path = e.path();
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".pid"))
                else {
                    continue;
                };
                if name == "watchdog" {
                    continue;
                }
                if let Some(pid) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                {
                    procs.push((name.to_owned(), pid));
                }
            }
        }
        CpuMeter {
            procs,
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    pub fn add(&mut self, name: &str, pid: u32) {
        self.procs.push((name.to_owned(), pid));
    }

    pub fn read(&self) -> CpuReading {
        let by_process = self
            .procs
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), cpu_ticks(*pid)?)))
            .collect();
        let machine_busy = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            // cpu  user nice system idle iowait irq softirq steal ...
            let f: Vec<u64> = s
                .lines()
                .next()?
                .strip_prefix("cpu ")?
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let idle = f.get(3)? + f.get(4)?;
            let all: u64 = f.iter().take(8).sum();
            Some(all - idle)
        });
        CpuReading {
            at: Instant::now(),
            by_process,
            machine_busy,
        }
    }

    /// CPU seconds between two readings: per process present in both, and the machine's.
    pub fn between(&self, phase: &str, a: &CpuReading, b: &CpuReading) -> CpuUse {
        let tps = self.ticks_per_second;
        CpuUse {
            phase: phase.into(),
            seconds: (b.at - a.at).as_secs_f64(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            machine_busy_seconds: match (a.machine_busy, b.machine_busy) {
                (Some(busy0), Some(busy1)) => Some(busy1.saturating_sub(busy0) as f64 / tps),
                _ => None,
            },
            by_process: b
                .by_process
                .iter()
                .filter_map(|(name, t1)| {
                    let t0 = a.by_process.get(name)?;
                    Some((name.clone(), t1.saturating_sub(*t0) as f64 / tps))
                })
                .collect(),
        }
    }
}

/// CPU seconds in one phase, per process taking part and for the whole machine.
#[derive(serde::Serialize)]
pub struct CpuUse {
    pub phase: String,
    pub seconds: f64,
    pub cores: usize,
    /// From `/proc/stat`: every process on the machine, these and any other.
    pub machine_busy_seconds: Option<f64>,
    /// `kube-apiserver`, `etcd`, `kube-controller-manager` (when the benchmark started the
    /// cluster), `nuclia-fake`, `operator`, `nto-bench`.
    pub by_process: BTreeMap<String, f64>,
}

/// Whether a `VERB resource` key of [`apiserver_requests`] is a write.
pub fn is_write(key: &str) -> bool {
    let verb = key.split(' ').next().unwrap_or_default();
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY" | "DELETECOLLECTION"
    )
}

/// Only the writes of an [`apiserver_requests`] reading.
pub fn writes(m: &Option<BTreeMap<String, u64>>) -> Option<BTreeMap<String, u64>> {
    m.as_ref().map(|m| {
        m.iter()
            .filter(|(k, _)| is_write(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    })
}

/// The apiserver's requests so far, per `VERB resource`, from its `/metrics`
/// (`apiserver_request_total`); counts every client of the apiserver, not only this benchmark.
pub async fn apiserver_requests(client: &Client) -> Option<BTreeMap<String, u64>> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(req).await.ok()?;
    Some(by_verb_and_resource(&text, "apiserver_request_total"))
}

/// The series of a request counter summed by `verb resource` (a missing label left empty).
fn by_verb_and_resource(text: &str, name: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (labels, v) in series(text, name) {
        let key = format!(
            "{} {}",
            label(labels, "verb").unwrap_or_default(),
            label(labels, "resource").unwrap_or_default()
        );
        *out.entry(key).or_default() += v as u64;
    }
    out
}

/// The operator's `/metrics` page.
async fn metrics_text(http: &reqwest::Client, port: u16) -> Option<String> {
    http.get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// What the operator counts of itself, from its `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct OperatorCounters {
    pub reconciles: u64,
    pub watch_errors: u64,
    /// Its requests to the apiserver, by `verb resource` (`get secrets`).
    pub kube_requests: BTreeMap<String, u64>,
}

/// The operator's counters; None when its `/metrics` cannot be read.
pub async fn operator_counters(http: &reqwest::Client, port: u16) -> Option<OperatorCounters> {
    Some(parse_operator_counters(&metrics_text(http, port).await?))
}

pub fn parse_operator_counters(text: &str) -> OperatorCounters {
    let sum = |name: &str| series(text, name).map(|(_, v)| v).sum::<f64>() as u64;
    OperatorCounters {
        reconciles: sum("nuclia_operator_reconcile_duration_seconds_count"),
        watch_errors: sum("nuclia_operator_watch_errors_total"),
        kube_requests: by_verb_and_resource(text, "nuclia_operator_kube_requests_total"),
    }
}

/// Entries per cache name.
pub type CacheEntries = BTreeMap<String, f64>;

/// The operator's `nuclia_operator_cache_entries` gauges by `cache` label, from its `/metrics`;
/// None when `/metrics` cannot be read, an empty map when the gauge is not there.
pub async fn cache_entries(http: &reqwest::Client, port: u16) -> Option<CacheEntries> {
    Some(parse_cache_entries(&metrics_text(http, port).await?))
}

/// The `nuclia_operator_cache_entries` series of a Prometheus text page, summed by `cache`.
pub fn parse_cache_entries(text: &str) -> CacheEntries {
    let mut out = BTreeMap::new();
    for (labels, v) in series(text, "nuclia_operator_cache_entries") {
        let cache = label(labels, "cache").unwrap_or("(unlabelled)");
        *out.entry(cache.to_owned()).or_default() += v;
    }
    out
}

/// The series of the metric `name` in a Prometheus text page: their labels (the text between
/// the braces, empty without) and values.
fn series<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.rsplit_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.trim().parse::<f64>().ok()?))
    })
}

/// One label's value in a series' label text (`a="x",b="y"`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_by_cache_label() {
        let text = "# HELP nuclia_operator_cache_entries Entries.\n\
            # TYPE nuclia_operator_cache_entries gauge\n\
            nuclia_operator_cache_entries{cache=\"live\"} 12\n\
            nuclia_operator_cache_entries{kind=\"pt\",cache=\"accounts\"} 3\n\
            nuclia_operator_cache_entries{cache=\"accounts\",kind=\"kb\"} 4\n\
            nuclia_operator_cache_entries_other{cache=\"x\"} 9\n\
            nuclia_operator_reconcile_duration_seconds_count 5\n";
        let m = parse_cache_entries(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["live"], 12.0);
        assert_eq!(m["accounts"], 7.0);
        assert!(parse_cache_entries("up 1\n").is_empty());
    }

    #[test]
    fn operator_counters_from_metrics() {
        let text = "nuclia_operator_reconcile_duration_seconds_count{kind=\"A\"} 3\n\
            nuclia_operator_reconcile_duration_seconds_count{kind=\"B\"} 4\n\
            nuclia_operator_reconcile_duration_seconds_sum{kind=\"B\"} 9\n\
            nuclia_operator_watch_errors_total{watch=\"Secret\"} 2\n\
            nuclia_operator_kube_requests_total{verb=\"get\",resource=\"secrets\"} 5\n\
            nuclia_operator_kube_requests_total{verb=\"patch\",resource=\"nucliakbapikeys/status\"} 6\n";
        let c = parse_operator_counters(text);
        assert_eq!((c.reconciles, c.watch_errors), (7, 2));
        assert_eq!(c.kube_requests["get secrets"], 5);
        assert_eq!(c.kube_requests["patch nucliakbapikeys/status"], 6);
        assert_eq!(c.kube_requests.len(), 2);
        // the apiserver's counter, by the same helper: its series summed per verb and resource
        let api = "apiserver_request_total{code=\"200\",resource=\"secrets\",verb=\"GET\"} 3\n\
            apiserver_request_total{code=\"404\",resource=\"secrets\",verb=\"GET\"} 1\n\
            apiserver_request_total{code=\"201\",resource=\"secrets\",verb=\"POST\"} 2\n";
        let m = by_verb_and_resource(api, "apiserver_request_total");
        assert_eq!(m.len(), 2);
        assert_eq!((m["GET secrets"], m["POST secrets"]), (4, 2));
    }
}
