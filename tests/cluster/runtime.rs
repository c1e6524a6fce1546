//! Runtime plumbing tested from the outside: the HTTP endpoints over loopback, and leader
//! election against a real kube-apiserver.
//!
//! The leader-election tests need an apiserver: they run when `NTO_TEST_KUBECONFIG` names a
//! kubeconfig (admin) and are skipped, saying so, otherwise.

use std::{sync::Arc, time::Duration};

use nuclia_token_operator::runtime::metrics::CredentialState;
use nuclia_token_operator::runtime::{self, Health, LeaderState, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[tokio::test]
async fn http_endpoints() {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = runtime::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        health.clone(),
        async {
            let _ = stop_rx.await;
        },
    )
    .await
    .unwrap();

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "not ready before caches sync"
    );
    health.set_leader_state(LeaderState::Standby);
    assert_eq!(get(addr, "/readyz").await.0, 200, "a standby is ready");
    health.set_leader_state(LeaderState::Leading);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    health.set_caches_synced(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    metrics.set_credential(
        "NucliaPersonalToken",
        "apps",
        "ci",
        CredentialState {
            ready: true,
            expiry: Some(1_900_000_000),
            renewal: Some(1_890_000_000),
            ..CredentialState::default()
        },
    );
    metrics.set_leader(true);
    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.contains(
        r#"nuclia_credential_expiry_timestamp_seconds{kind="NucliaPersonalToken",namespace="apps",name="ci"} 1900000000"#
    ));
    assert!(body.contains("nuclia_operator_leader 1"));
    assert!(body.trim_end().ends_with("# EOF"));

    health.begin_shutdown();
    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "not ready while shutting down"
    );
    assert_eq!(get(addr, "/healthz").await.0, 200);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

mod leader {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::{Api, Client, config::KubeConfigOptions};
    use runtime::LeaderElection;
    use tokio::sync::watch;

    const DURATION: Duration = Duration::from_secs(6);

    async fn client() -> Option<Client> {
        let Ok(path) = std::env::var("NTO_TEST_KUBECONFIG") else {
            eprintln!("skipped: set NTO_TEST_KUBECONFIG to a kubeconfig of a test apiserver");
            return None;
        };
        runtime::install_crypto();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        Some(Client::try_from(config).unwrap())
    }

    /// Waits until `rx` reads `want`, for at most `limit`.
    async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool, limit: Duration) -> bool {
        tokio::time::timeout(limit, rx.wait_for(|v| *v == want))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
        leases
            .get(name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity)
    }

    /// Fails the test if two of `receivers` ever read `true` together.
    fn never_two_leaders(receivers: Vec<watch::Receiver<bool>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut receivers = receivers;
            loop {
                let leaders = receivers.iter().filter(|r| *r.borrow()).count();
                assert!(leaders <= 1, "two leaders at once");
                let changes = receivers.iter_mut().map(|r| Box::pin(r.changed()));
                let (result, _, _) = futures::future::select_all(changes).await;
                if result.is_err() {
                    return;
                }
            }
        })
    }

    #[tokio::test]
    async fn one_leader_release_hands_over_and_a_dead_leader_expires() {
        let Some(client) = client().await else { return };
        let ns = "default";
        let name = format!("rt-{}", &uuid::Uuid::new_v4().to_string()[..8]);
        let leases: Api<Lease> = Api::namespaced(client.clone(), ns);

        let a = LeaderElection::start(client.clone(), ns, &name, "a", DURATION).unwrap();
        let b = LeaderElection::start(client.clone(), ns, &name, "b", DURATION).unwrap();
        let (mut ra, mut rb) = (a.is_leader(), b.is_leader());
        let guard = never_two_leaders(vec![a.is_leader(), b.is_leader()]);

        // Exactly one leads.
        let limit = DURATION * 2;
        tokio::select! {
            _ = ra.wait_for(|v| *v) => {},
            _ = rb.wait_for(|v| *v) => {},
            _ = tokio::time::sleep(limit) => panic!("nobody leads after {limit:?}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (leader, standby, mut standby_rx) = if *ra.borrow() {
            (a, b, rb.clone())
        } else {
            (b, a, ra.clone())
        };
        assert!(!*standby_rx.borrow());
        assert_eq!(
            holder(&leases, &name).await.as_deref(),
            Some(leader.identity())
        );

        // Graceful release: the standby takes over without waiting for the lease to expire.
        let released_at = tokio::time::Instant::now();
        leader.release().await;
        assert!(
            wait_for(&mut standby_rx, true, DURATION).await,
            "the standby did not take over after a release"
        );
        eprintln!("hand-over after release took {:?}", released_at.elapsed());
        assert_eq!(
            holder(&leases, &name).await.as_deref(),
            Some(standby.identity())
        );
        guard.abort();

        // A third replica stands by; the leader dies without releasing (dropped, as a crash):
        // the third takes over once the lease expires.
        let c = LeaderElection::start(client.clone(), ns, &name, "c", DURATION).unwrap();
        let mut rc = c.is_leader();
        let guard = never_two_leaders(vec![standby.is_leader(), c.is_leader()]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!*rc.borrow(), "c must not lead while the lease is held");
        let died_at = tokio::time::Instant::now();
        drop(standby);
        assert!(
            wait_for(&mut rc, true, DURATION * 2).await,
            "no take-over after the leader died"
        );
        let took = died_at.elapsed();
        eprintln!("take-over after a crash took {took:?}");
        assert!(
            took >= Duration::from_secs(2),
            "took over before the lease expired: {took:?}"
        );
        assert_eq!(holder(&leases, &name).await.as_deref(), Some("c"));
        c.release().await;
        assert_eq!(holder(&leases, &name).await, None);
        guard.abort();
        let _ = leases.delete(&name, &Default::default()).await;
    }

    #[tokio::test]
    async fn unreachable_apiserver_steps_down() {
        let Some(client) = client().await else { return };
        // A proxy in front of the apiserver that can be cut.
        let upstream =
            std::env::var("NTO_TEST_APISERVER").unwrap_or_else(|_| "127.0.0.1:17443".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let (cut_tx, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                let upstream = upstream.clone();
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    if *cut.borrow() {
                        return; // drop: the connection hangs up
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {},
                        _ = cut.wait_for(|c| *c) => {},
                    }
                });
            }
        });
        let path = std::env::var("NTO_TEST_KUBECONFIG").unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        config.cluster_url = format!("https://{proxy_addr}").parse().unwrap();
        config.tls_server_name = Some("localhost".into());
        let proxied = Client::try_from(config).unwrap();

        let ns = "default";
        let name = format!("rt-{}", &uuid::Uuid::new_v4().to_string()[..8]);
        let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
        let a = LeaderElection::start(proxied, ns, &name, "a", DURATION).unwrap();
        let mut ra = a.is_leader();
        assert!(wait_for(&mut ra, true, DURATION).await, "a never led");
        let renewed = leases
            .get(&name)
            .await
            .unwrap()
            .spec
            .unwrap()
            .renew_time
            .unwrap();

        // Cut the network: `a` must step down before its lease expires for the others.
        cut_tx.send(true).unwrap();
        let cut_at = tokio::time::Instant::now();
        assert!(
            wait_for(&mut ra, false, DURATION).await,
            "a kept leading without the apiserver"
        );
        let expires = renewed.0 + jiff::SignedDuration::try_from(DURATION).unwrap();
        let stepped_down = jiff::Timestamp::now();
        eprintln!("stepped down {:?} after the cut", cut_at.elapsed());
        assert!(
            stepped_down < expires,
            "stepped down at {stepped_down}, after the lease expired at {expires}"
        );

        // A replica that can reach the apiserver takes over once the lease expires.
        let b = LeaderElection::start(client.clone(), ns, &name, "b", DURATION).unwrap();
        let mut rb = b.is_leader();
        assert!(
            wait_for(&mut rb, true, DURATION * 2).await,
            "b never took over"
        );
        assert!(!*ra.borrow());
        b.release().await;
        drop(a);
        let _ = leases.delete(&name, &Default::default()).await;
    }
}
