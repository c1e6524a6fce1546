//! Command-line and environment configuration of the operator.
//!
//! Every flag has an environment variable and a documented default. The variable is the flag's
//! name in upper case with the prefix `NUCLIA_OPERATOR_` (`--concurrency` reads
//! `NUCLIA_OPERATOR_CONCURRENCY`), so nothing else in the container's environment can set it by
//! accident; a flag on the command line wins over its variable. The Helm chart passes every
//! setting as a variable, which leaves the command line to `extraArgs`: an extra argument always
//! overrides the chart's value instead of repeating a flag. Durations use the Go syntax (`90s`,
//! `15m`, `1h30m`) parsed by [`crate::duration::parse`].

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use clap::{ArgAction, Parser, ValueEnum};
use url::Url;

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The operator's configuration: `nuclia-token-operator --help` lists it.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "nuclia-token-operator",
    version,
    about = "Kubernetes operator that mints, rotates and revokes Nuclia credentials as Secrets",
    // A repeated option takes its last value instead of failing, so an override appended to a
    // command line (the chart's extraArgs) wins; repeatable options (--nuclia-zone-origin,
    // --watch-namespaces) still add up.
    args_override_self = true,
    after_long_help = "Every option can be set by its environment variable, NUCLIA_OPERATOR_ followed by the \
option's name in upper case (--concurrency: NUCLIA_OPERATOR_CONCURRENCY). An option on the command \
line wins over its variable; given twice, its last value counts. The unprefixed variables that \
version 0.1.0 read (CONCURRENCY, POD_NAME, ...) are ignored: see docs/upgrading.md."
)]
pub struct Config {
    /// Base URL of Nuclia's global (account) API, where personal tokens are minted.
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_NUCLIA_GLOBAL_URL",
        default_value = "https://accounts.progress.cloud",
        value_parser = parse_base_url
    )]
    pub nuclia_global_url: Url,

    /// Template of the regional API base URL; `{zone}` is replaced by the zone (e.g. europe-1).
    /// A kbUrl is trusted only when its origin is this template for some zone or a
    /// --nuclia-zone-origin.
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_NUCLIA_REGIONAL_URL",
        default_value = "https://{zone}.dp.progress.cloud",
        value_parser = parse_regional_template
    )]
    pub nuclia_regional_url: String,

    /// Explicit regional origin for a zone, as ZONE=URL (repeatable; in the environment a
    /// comma-separated list). Overrides the template for that zone. Default: none.
    #[arg(
        long = "nuclia-zone-origin",
        env = "NUCLIA_OPERATOR_NUCLIA_ZONE_ORIGIN",
        value_name = "ZONE=URL",
        value_delimiter = ',',
        value_parser = parse_zone_origin
    )]
    pub nuclia_zone_origins: Vec<(String, Url)>,

    /// Timeout of each request to the Nuclia API.
    #[arg(long, env = "NUCLIA_OPERATOR_NUCLIA_TIMEOUT", default_value = "15s", value_parser = crate::duration::parse)]
    pub nuclia_timeout: Duration,

    /// Sustained request rate to the Nuclia API, per credential (requests per second).
    #[arg(long, env = "NUCLIA_OPERATOR_NUCLIA_RPS", default_value_t = 5.0, value_parser = parse_positive_f64)]
    pub nuclia_rps: f64,

    /// Burst of requests allowed above --nuclia-rps, per credential.
    #[arg(long, env = "NUCLIA_OPERATOR_NUCLIA_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub nuclia_burst: u32,

    /// Namespaces to watch, comma-separated. Default: empty, which watches all namespaces.
    #[arg(long, env = "NUCLIA_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Only manage resources matching this label selector (e.g. `shard=a`). Default: all.
    #[arg(long, env = "NUCLIA_OPERATOR_LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// Maximum number of resources reconciled at the same time, per kind.
    #[arg(long, env = "NUCLIA_OPERATOR_CONCURRENCY", default_value_t = 8, value_parser = parse_positive_usize)]
    pub concurrency: usize,

    /// Threads running the operator's work. One keeps a controller's many small tasks on one
    /// core, with no wake-ups across threads or contention on the one allocator arena; raise it
    /// for tens of thousands of resources. 0: one per core (of the CPU limit).
    #[arg(long, env = "NUCLIA_OPERATOR_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,

    /// How often each credential is checked upstream (revoked out of band?).
    #[arg(long, env = "NUCLIA_OPERATOR_VERIFY_INTERVAL", default_value = "10m", value_parser = crate::duration::parse)]
    pub verify_interval: Duration,

    /// How long deletion keeps retrying when no credential can revoke a resource's tokens (all
    /// refused, or the credentials Secret is gone); then the resource is released anyway with a
    /// Warning Event `RevokeAbandoned` naming each token id and its expiry.
    #[arg(long, env = "NUCLIA_OPERATOR_REVOKE_TIMEOUT", default_value = "10m", value_parser = crate::duration::parse)]
    pub revoke_timeout: Duration,

    /// At most one mint per resource per this interval, whatever asks for it (a lifetime that
    /// Nuclia shortened, a Secret deleted again and again).
    #[arg(long, env = "NUCLIA_OPERATOR_MIN_ISSUE_INTERVAL", default_value = "10s", value_parser = crate::duration::parse)]
    pub min_issue_interval: Duration,

    /// At most one rollout restart of a workload (`spec.rolloutRestartTargets`) per this
    /// interval; restarts asked meanwhile are coalesced into the next one.
    #[arg(long, env = "NUCLIA_OPERATOR_ROLLOUT_RESTART_INTERVAL", default_value = "30s", value_parser = crate::duration::parse)]
    pub rollout_restart_interval: Duration,

    /// Rotation windows for resources whose `spec.rotation.windows` is empty, as a JSON list
    /// in the same shape, e.g. `[{"days":["Sat","Sun"],"start":"02:00","duration":"4h",
    /// "timeZone":"Europe/Madrid"}]`. Default: none (scheduled renewals run at any time).
    #[arg(long, env = "NUCLIA_OPERATOR_DEFAULT_ROTATION_WINDOWS", default_value = "[]", value_parser = parse_windows)]
    pub default_rotation_windows: crate::windows::Windows,

    /// Cap on any scheduled wake-up, so a missed event heals by itself.
    #[arg(long, env = "NUCLIA_OPERATOR_REQUEUE_MAX", default_value = "1h", value_parser = crate::duration::parse)]
    pub requeue_max: Duration,

    /// First retry delay after a failure; doubles (with jitter) on each consecutive failure.
    #[arg(long, env = "NUCLIA_OPERATOR_BACKOFF_BASE", default_value = "5s", value_parser = crate::duration::parse)]
    pub backoff_base: Duration,

    /// Longest retry delay after failures.
    #[arg(long, env = "NUCLIA_OPERATOR_BACKOFF_MAX", default_value = "5m", value_parser = crate::duration::parse)]
    pub backoff_max: Duration,

    /// Identity of this cluster in the ownership marker of minted tokens.
    /// Default: the UID of the kube-system namespace.
    #[arg(long, env = "NUCLIA_OPERATOR_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// ConfigMap (in the --lease-namespace) that keeps this installation's id, created on first
    /// start. The id goes into every token's ownership marker: two clusters given the same
    /// --cluster-id never sweep each other's tokens. Keep it across reinstalls.
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_INSTALLATION_CONFIGMAP",
        default_value = "nuclia-token-operator-installation"
    )]
    pub installation_configmap: String,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "NUCLIA_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, an EnvFilter directive (e.g. `info` or `info,nuclia_token_operator=debug`).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, env = "NUCLIA_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Elect a leader through a coordination.k8s.io Lease so that only one replica acts.
    /// Accepts `--leader-elect`, `--leader-elect=true|false`.
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_LEADER_ELECT",
        default_value_t = false,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_LEASE_NAME",
        default_value = "nuclia-token-operator"
    )]
    pub lease_name: String,

    /// Namespace of the leader-election Lease and of the installation ConfigMap (the chart sets
    /// the release namespace).
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_LEASE_NAMESPACE",
        default_value = "default"
    )]
    pub lease_namespace: String,

    /// Namespace of the Secrets that NucliaClusterCredentials read (default: the
    /// --lease-namespace, the operator's own). Only cluster admins should be able to read it.
    #[arg(long, env = "NUCLIA_OPERATOR_CLUSTER_CREDENTIAL_NAMESPACE")]
    pub cluster_credential_namespace: Option<String>,

    /// Serve NucliaClusterCredentials (their status, and resources that name one with
    /// auth.clusterCredentialRef). Off: such resources are refused (CredentialNotAllowed) and
    /// the operator needs no cluster-wide permission for them.
    #[arg(
        long,
        env = "NUCLIA_OPERATOR_CLUSTER_CREDENTIALS",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub cluster_credentials: bool,

    /// How long a leader's lease lasts without renewal: the longest a hand-over takes after the
    /// leader dies. At least 3s; renewed every third of it.
    #[arg(long, env = "NUCLIA_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,

    /// Identity of this replica in the Lease. Default: `<hostname>-<pid>`.
    #[arg(long, env = "NUCLIA_OPERATOR_IDENTITY")]
    pub identity: Option<String>,
}

/// Prefix of every environment variable the operator reads.
pub const ENV_PREFIX: &str = "NUCLIA_OPERATOR_";

/// The variables of releases before the `NUCLIA_OPERATOR_` prefix, and their new names. They are
/// not read any more; [`legacy_env_in_use`] finds them so that start-up can say so.
pub const LEGACY_ENV: &[(&str, &str)] = &[
    ("NUCLIA_GLOBAL_URL", "NUCLIA_OPERATOR_NUCLIA_GLOBAL_URL"),
    ("NUCLIA_REGIONAL_URL", "NUCLIA_OPERATOR_NUCLIA_REGIONAL_URL"),
    ("NUCLIA_ZONE_ORIGINS", "NUCLIA_OPERATOR_NUCLIA_ZONE_ORIGIN"),
    ("NUCLIA_TIMEOUT", "NUCLIA_OPERATOR_NUCLIA_TIMEOUT"),
    ("NUCLIA_RPS", "NUCLIA_OPERATOR_NUCLIA_RPS"),
    ("NUCLIA_BURST", "NUCLIA_OPERATOR_NUCLIA_BURST"),
    ("WATCH_NAMESPACES", "NUCLIA_OPERATOR_WATCH_NAMESPACES"),
    ("LABEL_SELECTOR", "NUCLIA_OPERATOR_LABEL_SELECTOR"),
    ("CONCURRENCY", "NUCLIA_OPERATOR_CONCURRENCY"),
    ("VERIFY_INTERVAL", "NUCLIA_OPERATOR_VERIFY_INTERVAL"),
    ("REVOKE_TIMEOUT", "NUCLIA_OPERATOR_REVOKE_TIMEOUT"),
    ("MIN_ISSUE_INTERVAL", "NUCLIA_OPERATOR_MIN_ISSUE_INTERVAL"),
    ("REQUEUE_MAX", "NUCLIA_OPERATOR_REQUEUE_MAX"),
    ("BACKOFF_BASE", "NUCLIA_OPERATOR_BACKOFF_BASE"),
    ("BACKOFF_MAX", "NUCLIA_OPERATOR_BACKOFF_MAX"),
    ("CLUSTER_ID", "NUCLIA_OPERATOR_CLUSTER_ID"),
    ("METRICS_ADDR", "NUCLIA_OPERATOR_METRICS_ADDR"),
    ("LOG_FORMAT", "NUCLIA_OPERATOR_LOG_FORMAT"),
    ("LOG_LEVEL", "NUCLIA_OPERATOR_LOG_LEVEL"),
    ("LEADER_ELECT", "NUCLIA_OPERATOR_LEADER_ELECT"),
    ("LEASE_NAME", "NUCLIA_OPERATOR_LEASE_NAME"),
    ("POD_NAMESPACE", "NUCLIA_OPERATOR_LEASE_NAMESPACE"),
    ("LEASE_DURATION", "NUCLIA_OPERATOR_LEASE_DURATION"),
    ("POD_NAME", "NUCLIA_OPERATOR_IDENTITY"),
];

/// The old unprefixed variables set in this environment, each as `(old, new)`: a setting left
/// over from an upgrade (then ignored, even where the new variable has another value), or merely
/// another program's variable of the same name, which is exactly why they are no longer read.
pub fn legacy_env_in_use(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(&'static str, &'static str)> {
    LEGACY_ENV
        .iter()
        .copied()
        .filter(|(old, _)| get(old).is_some())
        .collect()
}

impl Config {
    /// The explicit zone origins as a map; refuses a zone given twice with different URLs.
    pub fn zone_origins(&self) -> Result<BTreeMap<String, Url>, String> {
        let mut out = BTreeMap::new();
        for (zone, url) in &self.nuclia_zone_origins {
            if let Some(previous) = out.insert(zone.clone(), url.clone())
                && previous != *url
            {
                return Err(format!(
                    "zone {zone:?} has two origins: {previous} and {url}"
                ));
            }
        }
        Ok(out)
    }

    /// The namespaces to watch; empty means all (empty items from `a,,b` or `""` are dropped).
    pub fn watch_namespaces(&self) -> Vec<String> {
        self.watch_namespaces
            .iter()
            .map(|ns| ns.trim())
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Where the Secrets of NucliaClusterCredentials live.
    pub fn cluster_credential_namespace(&self) -> String {
        self.cluster_credential_namespace
            .clone()
            .unwrap_or_else(|| self.lease_namespace.clone())
    }

    /// This replica's identity in the leader-election Lease.
    pub fn identity(&self) -> String {
        match &self.identity {
            Some(id) if !id.is_empty() => id.clone(),
            _ => default_identity(),
        }
    }
}

/// `<hostname>-<pid>`, the identity used when --identity is not set.
pub fn default_identity() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("invalid URL {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("invalid URL {text:?}: use http(s)://host[:port]"));
    }
    Ok(url)
}

fn parse_regional_template(text: &str) -> Result<String, String> {
    if !text.contains("{zone}") {
        return Err(format!("{text:?} must contain the placeholder {{zone}}"));
    }
    parse_base_url(&text.replace("{zone}", "zone"))?;
    Ok(text.to_owned())
}

fn parse_zone_origin(text: &str) -> Result<(String, Url), String> {
    let (zone, url) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid zone origin {text:?}: use ZONE=URL"))?;
    let zone = zone.trim();
    if zone.is_empty()
        || !zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("invalid zone {zone:?} in {text:?}"));
    }
    Ok((zone.to_owned(), parse_base_url(url.trim())?))
}

fn parse_windows(text: &str) -> Result<crate::windows::Windows, String> {
    let spec: Vec<crate::crd::RotationWindow> = serde_json::from_str(text).map_err(|e| {
        format!("not a JSON list of windows ({e}); e.g. [{{\"days\":[\"Sat\"],\"start\":\"02:00\",\"duration\":\"4h\",\"timeZone\":\"Europe/Madrid\"}}]")
    })?;
    crate::windows::Windows::parse(&spec, "--default-rotation-windows")
}

fn parse_positive_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

fn parse_positive_usize(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{text:?} is not a positive integer")),
    }
}

fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(text)?;
    if d < Duration::from_secs(3) {
        return Err(format!("lease duration {text:?} is shorter than 3s"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut argv = vec!["nuclia-token-operator"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    /// Every flag reads `NUCLIA_OPERATOR_` + its name in upper snake case, and every old name
    /// maps to a variable that exists.
    #[test]
    fn environment_variables_follow_the_prefix_rule() {
        use clap::CommandFactory;
        let cmd = Config::command();
        let mut envs = Vec::new();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no environment variable"))
                .to_str()
                .unwrap()
                .to_owned();
            let want = format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env, want, "--{long}");
            envs.push(env);
        }
        // Flags added since the prefix have no old name.
        assert!(envs.len() >= LEGACY_ENV.len());
        for (old, new) in LEGACY_ENV {
            assert!(
                envs.iter().any(|e| e == new),
                "{old} -> {new}: no such variable"
            );
            assert!(!old.starts_with(ENV_PREFIX));
        }
        let help = cmd.clone().render_long_help().to_string();
        assert!(
            help.contains("[env: NUCLIA_OPERATOR_CONCURRENCY="),
            "{help}"
        );
    }

    #[test]
    fn legacy_variables_are_found() {
        let env = std::collections::HashMap::from([
            ("CONCURRENCY", "3"),
            ("LOG_LEVEL", "debug"),
            ("NUCLIA_OPERATOR_LOG_LEVEL", "info"),
            ("UNRELATED", "x"),
        ]);
        let found = legacy_env_in_use(|k| env.get(k).map(Into::into));
        assert_eq!(
            found,
            [
                ("CONCURRENCY", "NUCLIA_OPERATOR_CONCURRENCY"),
                ("LOG_LEVEL", "NUCLIA_OPERATOR_LOG_LEVEL")
            ]
        );
    }

    #[test]
    fn defaults() {
        // Assumes the test process does not set the operator's environment variables.
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.nuclia_global_url.as_str(),
            "https://accounts.progress.cloud/"
        );
        assert_eq!(c.nuclia_regional_url, "https://{zone}.dp.progress.cloud");
        assert!(c.zone_origins().unwrap().is_empty());
        assert_eq!(c.nuclia_timeout, Duration::from_secs(15));
        assert_eq!(c.nuclia_rps, 5.0);
        assert_eq!(c.nuclia_burst, 10);
        assert!(c.watch_namespaces().is_empty());
        assert_eq!(c.label_selector, None);
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.worker_threads, 1);
        assert_eq!(c.verify_interval, Duration::from_secs(600));
        assert_eq!(c.requeue_max, Duration::from_secs(3600));
        assert_eq!(c.backoff_base, Duration::from_secs(5));
        assert_eq!(c.backoff_max, Duration::from_secs(300));
        assert_eq!(c.cluster_id, None);
        assert_eq!(c.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_level, "info");
        assert!(!c.leader_elect);
        assert_eq!(c.lease_name, "nuclia-token-operator");
        assert_eq!(c.lease_namespace, "default");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert!(c.identity().ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "--nuclia-global-url=http://127.0.0.1:9000",
            "--nuclia-regional-url=http://{zone}.localtest.me:9000",
            "--nuclia-zone-origin=europe-1=http://127.0.0.1:9001",
            "--nuclia-zone-origin",
            "aws-us-east-2-1=https://us.example.com",
            "--nuclia-timeout=1m30s",
            "--nuclia-rps=0.5",
            "--nuclia-burst=3",
            "--watch-namespaces=apps,ci",
            "--label-selector=shard=a",
            "--concurrency=2",
            "--verify-interval=30s",
            "--requeue-max=15m",
            "--backoff-base=1s",
            "--backoff-max=1m",
            "--cluster-id=prod-eu",
            "--metrics-addr=127.0.0.1:0",
            "--log-format=json",
            "--log-level=debug",
            "--leader-elect",
            "--lease-name=l",
            "--lease-namespace=ops",
            "--lease-duration=5s",
            "--identity=pod-0",
        ])
        .unwrap();
        assert_eq!(c.nuclia_global_url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(c.nuclia_regional_url, "http://{zone}.localtest.me:9000");
        let zones = c.zone_origins().unwrap();
        assert_eq!(zones.len(), 2);
        assert_eq!(zones["europe-1"].as_str(), "http://127.0.0.1:9001/");
        assert_eq!(zones["aws-us-east-2-1"].as_str(), "https://us.example.com/");
        assert_eq!(c.nuclia_timeout, Duration::from_secs(90));
        assert_eq!(c.nuclia_rps, 0.5);
        assert_eq!(c.nuclia_burst, 3);
        assert_eq!(c.watch_namespaces(), ["apps", "ci"]);
        assert_eq!(c.label_selector.as_deref(), Some("shard=a"));
        assert_eq!(c.concurrency, 2);
        assert_eq!(c.verify_interval, Duration::from_secs(30));
        assert_eq!(c.requeue_max, Duration::from_secs(900));
        assert_eq!(c.backoff_base, Duration::from_secs(1));
        assert_eq!(c.backoff_max, Duration::from_secs(60));
        assert_eq!(c.cluster_id.as_deref(), Some("prod-eu"));
        assert_eq!(c.metrics_addr.port(), 0);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "debug");
        assert!(c.leader_elect);
        assert_eq!(c.lease_name, "l");
        assert_eq!(c.lease_namespace, "ops");
        assert_eq!(c.lease_duration, Duration::from_secs(5));
        assert_eq!(c.identity(), "pod-0");

        assert!(!parse(&["--leader-elect=false"]).unwrap().leader_elect);
        assert!(parse(&["--leader-elect=true"]).unwrap().leader_elect);
    }

    #[test]
    fn refusals() {
        for bad in [
            &["--nuclia-timeout=15"][..],
            &["--nuclia-timeout=1d"],
            &["--nuclia-rps=0"],
            &["--nuclia-rps=-1"],
            &["--nuclia-burst=0"],
            &["--concurrency=0"],
            &["--nuclia-global-url=ftp://x"],
            &["--nuclia-global-url=not a url"],
            &["--nuclia-regional-url=https://europe-1.dp.progress.cloud"],
            &["--nuclia-zone-origin=europe-1"],
            &["--nuclia-zone-origin==https://x"],
            &["--nuclia-zone-origin=eu/1=https://x"],
            &["--log-format=xml"],
            &["--lease-duration=2s"],
            &["--metrics-addr=8080"],
            &["--leader-elect=maybe"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let twice = parse(&[
            "--nuclia-zone-origin=eu=https://a",
            "--nuclia-zone-origin=eu=https://b",
        ])
        .unwrap();
        assert!(twice.zone_origins().is_err());
    }

    /// The environment is read through clap's `env` (one test sets it, in a child process so
    /// the parallel test threads never see it).
    #[test]
    fn environment() {
        if std::env::var_os("NTO_CONFIG_ENV_CHILD").is_none() {
            let exe = std::env::current_exe().unwrap();
            let status = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "runtime::config::tests::environment",
                    "--nocapture",
                ])
                .env("NTO_CONFIG_ENV_CHILD", "1")
                .env("NUCLIA_OPERATOR_NUCLIA_GLOBAL_URL", "http://127.0.0.1:9000")
                .env(
                    "NUCLIA_OPERATOR_NUCLIA_REGIONAL_URL",
                    "http://{zone}.local:9000",
                )
                .env(
                    "NUCLIA_OPERATOR_NUCLIA_ZONE_ORIGIN",
                    "europe-1=http://127.0.0.1:9001,asia-1=http://127.0.0.1:9002",
                )
                .env("NUCLIA_OPERATOR_NUCLIA_TIMEOUT", "3s")
                .env("NUCLIA_OPERATOR_NUCLIA_RPS", "2.5")
                .env("NUCLIA_OPERATOR_NUCLIA_BURST", "4")
                .env("NUCLIA_OPERATOR_WATCH_NAMESPACES", "a,b")
                .env("NUCLIA_OPERATOR_LABEL_SELECTOR", "team=x")
                .env("NUCLIA_OPERATOR_CONCURRENCY", "3")
                .env("NUCLIA_OPERATOR_WORKER_THREADS", "0")
                .env("NUCLIA_OPERATOR_VERIFY_INTERVAL", "1m")
                .env("NUCLIA_OPERATOR_REQUEUE_MAX", "30m")
                .env("NUCLIA_OPERATOR_BACKOFF_BASE", "2s")
                .env("NUCLIA_OPERATOR_BACKOFF_MAX", "2m")
                .env("NUCLIA_OPERATOR_CLUSTER_ID", "c1")
                .env("NUCLIA_OPERATOR_METRICS_ADDR", "127.0.0.1:9090")
                .env("NUCLIA_OPERATOR_LOG_FORMAT", "json")
                .env("NUCLIA_OPERATOR_LOG_LEVEL", "warn")
                .env("NUCLIA_OPERATOR_LEADER_ELECT", "true")
                .env("NUCLIA_OPERATOR_LEASE_NAME", "lease-x")
                .env("NUCLIA_OPERATOR_LEASE_NAMESPACE", "ops")
                .env("NUCLIA_OPERATOR_LEASE_DURATION", "20s")
                .env("NUCLIA_OPERATOR_IDENTITY", "op-7d9f")
                .env("NUCLIA_OPERATOR_REVOKE_TIMEOUT", "90s")
                .env("NUCLIA_OPERATOR_MIN_ISSUE_INTERVAL", "20s")
                // The old unprefixed names are not read: these values would be refused.
                .env("CONCURRENCY", "0")
                .env("LOG_FORMAT", "xml")
                .env("LEASE_DURATION", "1s")
                .env("POD_NAME", "someone-else")
                .status()
                .unwrap();
            assert!(status.success(), "child test failed");
            return;
        }
        let c = parse(&[]).unwrap();
        assert_eq!(c.nuclia_global_url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(c.nuclia_regional_url, "http://{zone}.local:9000");
        let zones = c.zone_origins().unwrap();
        assert_eq!(zones["europe-1"].as_str(), "http://127.0.0.1:9001/");
        assert_eq!(zones["asia-1"].as_str(), "http://127.0.0.1:9002/");
        assert_eq!(c.nuclia_timeout, Duration::from_secs(3));
        assert_eq!(c.nuclia_rps, 2.5);
        assert_eq!(c.nuclia_burst, 4);
        assert_eq!(c.watch_namespaces(), ["a", "b"]);
        assert_eq!(c.label_selector.as_deref(), Some("team=x"));
        assert_eq!(c.worker_threads, 0);
        assert_eq!(c.concurrency, 3);
        assert_eq!(c.verify_interval, Duration::from_secs(60));
        assert_eq!(c.requeue_max, Duration::from_secs(1800));
        assert_eq!(c.backoff_base, Duration::from_secs(2));
        assert_eq!(c.backoff_max, Duration::from_secs(120));
        assert_eq!(c.cluster_id.as_deref(), Some("c1"));
        assert_eq!(c.metrics_addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "warn");
        assert!(c.leader_elect);
        assert_eq!(c.lease_name, "lease-x");
        assert_eq!(c.lease_namespace, "ops");
        assert_eq!(c.lease_duration, Duration::from_secs(20));
        assert_eq!(c.identity(), "op-7d9f");
        assert_eq!(c.revoke_timeout, Duration::from_secs(90));
        assert_eq!(c.min_issue_interval, Duration::from_secs(20));
        // A flag wins over its environment variable, also when the flag is repeated (the last
        // one counts, as the chart's extraArgs rely on).
        let c = parse(&["--concurrency=2", "--concurrency=5"]).unwrap();
        assert_eq!(c.concurrency, 5);
        // A flag wins over its environment variable.
        let c = parse(&["--log-level=error", "--leader-elect=false"]).unwrap();
        assert_eq!(c.log_level, "error");
        assert!(!c.leader_elect);
    }
}
