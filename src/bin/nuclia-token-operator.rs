//! The operator process: configuration, telemetry, HTTP endpoints, leader election and the
//! controllers of every kind, wired together. All logic lives in the library.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use nuclia_token_operator::controller::{self, Context, Settings};
use nuclia_token_operator::nuclia::{self, ClientConfig, Endpoints};
use nuclia_token_operator::runtime::{self, Config, Health, LeaderElection, LeaderState, Metrics};

/// How long in-flight reconciles may run on after a stop (SIGTERM or lost leadership): well
/// within kubelet's default termination grace period of 30 s.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads start.
    runtime::tune_allocator();
    // Parsed first: it sizes the runtime.
    let config = Config::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(operator(config))
}

async fn operator(config: Config) -> anyhow::Result<()> {
    runtime::install_crypto();
    runtime::telemetry::init(config.log_format, &config.log_level)
        .map_err(|e| anyhow::anyhow!("logging: {e}"))?;
    let legacy = runtime::config::legacy_env_in_use(|name| std::env::var_os(name));
    if !legacy.is_empty() {
        let renamed: Vec<String> = legacy.iter().map(|(o, n)| format!("{o}->{n}")).collect();
        tracing::warn!(
            renamed = %renamed.join(","),
            "environment variables without the NUCLIA_OPERATOR_ prefix are not read any more; \
             rename them (or ignore this if they are meant for something else)"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let kube = runtime::kube_client::client(metrics.clone())
        .await
        .context("connecting to Kubernetes")?;

    let cluster_id = match &config.cluster_id {
        Some(id) => id.clone(),
        // The kube-system namespace's UID names this cluster in every ownership marker.
        None => Api::<Namespace>::all(kube.clone())
            .get("kube-system")
            .await
            .context("reading the kube-system namespace for the cluster id (or set --cluster-id)")?
            .metadata
            .uid
            .context("kube-system has no uid")?,
    };
    let installation_id = runtime::identity::installation_id(
        kube.clone(),
        &config.lease_namespace,
        &config.installation_configmap,
    )
    .await?;
    let endpoints = Endpoints {
        global: config.nuclia_global_url.clone(),
        regional_template: config.nuclia_regional_url.clone(),
        zone_origins: config.nuclia_zone_origins.iter().cloned().collect(),
    };
    let nuclia = nuclia::Client::new(ClientConfig {
        endpoints,
        timeout: config.nuclia_timeout,
        per_credential_rps: config.nuclia_rps,
        per_credential_burst: config.nuclia_burst,
        ..ClientConfig::default()
    })
    .context("configuring the Nuclia client")?
    .with_observer(metrics.clone());
    let settings = Settings {
        cluster_id_unique: config.cluster_id.is_none(),
        cluster_id,
        installation_id,
        verify_interval: config.verify_interval,
        requeue_max: config.requeue_max,
        backoff_base: config.backoff_base,
        backoff_max: config.backoff_max,
        intent_grace: config.nuclia_timeout * 2 + Duration::from_secs(5),
        revoke_timeout: config.revoke_timeout,
        min_issue_interval: config.min_issue_interval,
        rollout_restart_interval: config.rollout_restart_interval,
        default_rotation_windows: config.default_rotation_windows.clone(),
        concurrency: config.concurrency.try_into().unwrap_or(u16::MAX),
        namespaces: config.watch_namespaces(),
        label_selector: config.label_selector.clone(),
        cluster_credential_namespace: config
            .cluster_credentials
            .then(|| config.cluster_credential_namespace()),
        operator_namespace: config.lease_namespace.clone(),
        kept_configmap: format!("{}-kept", config.installation_configmap),
    };

    let health = Arc::new(Health::new());
    let shutdown = runtime::shutdown_signal().shared();
    let (addr, server) = runtime::serve(
        config.metrics_addr,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("binding {}", config.metrics_addr))?;
    tracing::info!(
        %addr,
        cluster_id = %settings.cluster_id,
        installation = %settings.installation_id,
        version = env!("CARGO_PKG_VERSION"),
        concurrency = settings.concurrency,
        worker_threads = config.worker_threads,
        namespaces = %if settings.namespaces.is_empty() { "*".to_owned() } else { settings.namespaces.join(",") },
        label_selector = settings.label_selector.as_deref().unwrap_or(""),
        leader_elect = config.leader_elect,
        lease = %format!("{}/{}", config.lease_namespace, config.lease_name),
        verify_interval = ?settings.verify_interval,
        "nuclia-token-operator starting"
    );

    let election = if config.leader_elect {
        health.set_leader_state(LeaderState::Standby);
        let e = LeaderElection::start(
            kube.clone(),
            &config.lease_namespace,
            &config.lease_name,
            &config.identity(),
            config.lease_duration,
        )?;
        let mut leading = e.is_leader();
        tokio::select! {
            _ = shutdown.clone() => { e.release().await; return Ok(()); }
            r = leading.wait_for(|l| *l) => { r.context("leader election stopped")?; }
        }
        tracing::info!(identity = %e.identity(), "acquired the lease; starting controllers");
        health.set_leader_state(LeaderState::Leading);
        metrics.set_leader(true);
        Some(e)
    } else {
        // Without leader election this replica always acts.
        metrics.set_leader(true);
        None
    };

    // Stop acting as soon as leadership is lost: another replica takes over.
    let lost = match &election {
        Some(e) => {
            let mut leading = e.is_leader();
            async move {
                let _ = leading.wait_for(|l| !*l).await;
            }
            .boxed()
        }
        None => futures::future::pending().boxed(),
    };
    let lost = lost.shared();
    let stop = futures::future::select(shutdown.clone(), lost.clone())
        .map(|_| ())
        .shared();

    let ctx = Context::new(kube, nuclia, settings, metrics.clone());
    let synced = {
        let (ctx, health) = (ctx.clone(), health.clone());
        tokio::spawn(async move {
            ctx.wait_for_caches().await;
            health.set_caches_synced(true);
        })
    };
    // In-flight reconciles finish after the stop, but not for ever: a request stuck on a dead
    // connection must not outlast the pod's termination grace period. An issue cut short is
    // resolved by the leak guard of whichever replica acts next.
    let drained = async {
        stop.clone().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        _ = controller::run(ctx, stop.clone()) => {}
        _ = drained => tracing::warn!(limit = ?DRAIN_LIMIT, "reconciles still running after the stop; exiting without them"),
    }
    synced.abort();
    let lost_leadership = lost.now_or_never().is_some();
    if let Some(e) = election {
        metrics.set_leader(false);
        e.release().await;
    }
    health.begin_shutdown();
    if lost_leadership {
        anyhow::bail!("lost the lease; exiting so that a fresh process competes again");
    }
    server.abort();
    tracing::info!("stopped");
    Ok(())
}
