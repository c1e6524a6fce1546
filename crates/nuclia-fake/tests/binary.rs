//! The `nuclia-fake` binary as users run it in their CI: `--listen` and `--seed`, the bootstrap
//! line on stdout, and the seed served over HTTP (a seeded PAT authenticates, the seeded account
//! and KB are listed, the bootstrap NUA key is answered for). Requests are plain HTTP as any
//! client would send them; the operator's own client is tested against the fake in the
//! operator's tests.
//!
//! Token values are never printed: assertions compare them without formatting them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use nuclia_fake::Bootstrap;
use serde_json::{Value, json};

/// The fake's process, killed on drop (a failed assertion must not leave it running).
struct Fake(Child);

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET url` with the credential in `header`; the status and the JSON body.
async fn get(http: &reqwest::Client, url: &str, header: &str, value: &str) -> (u16, Value) {
    let resp = http
        .get(url)
        .header(header, value)
        .send()
        .await
        .expect("request to nuclia-fake");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn prints_bootstrap_line_and_serves_seed() {
    // reqwest is built with rustls and no provider of its own (as the operator builds it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut seed = tempfile::NamedTempFile::new().unwrap();
    write!(
        seed,
        "{}",
        json!({"pats": [{"token": "seeded-pat-value", "description": "from seed"}],
               "accounts": [{"slug": "beta", "kbs": [{"slug": "b1", "title": "B 1"}]}]})
    )
    .unwrap();
    let mut fake = Fake(
        Command::new(env!("CARGO_BIN_EXE_nuclia-fake"))
            .args(["--listen", "127.0.0.1:0", "--seed"])
            .arg(seed.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(fake.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let b: Bootstrap = serde_json::from_str(&line).expect("first line is the bootstrap JSON");
    let raw: Value = serde_json::from_str(&line).unwrap();
    for k in [
        "url",
        "user_token",
        "pat",
        "nua_key",
        "account_id",
        "account_slug",
        "zone",
        "kbs",
    ] {
        assert!(raw.get(k).is_some(), "missing {k}");
    }
    assert_eq!(b.zone, "europe-1");
    assert_eq!(b.kbs.len(), 2);
    assert_eq!(b.kbs[0].url, format!("{}/api/v1/kb/{}", b.url, b.kbs[0].id));

    let http = reqwest::Client::new();
    let seeded = "Bearer seeded-pat-value";
    let url = |path: &str| format!("{}{path}", b.url);
    let (status, _) = get(&http, &url("/api/v1/user/welcome"), "Authorization", seeded).await;
    assert_eq!(status, 200, "the seeded PAT authenticates");
    let (status, _) = get(
        &http,
        &url("/api/v1/user/welcome"),
        "Authorization",
        "Bearer nope",
    )
    .await;
    assert_eq!(status, 401, "an unknown token does not");
    let (status, accounts) = get(&http, &url("/api/v1/accounts"), "Authorization", seeded).await;
    assert_eq!(status, 200, "{accounts}");
    let beta = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["slug"] == "beta")
        .unwrap_or_else(|| panic!("no seeded account in {accounts}"));
    let kbs_url = url(&format!(
        "/api/v1/account/{}/kbs",
        beta["id"].as_str().unwrap()
    ));
    let (status, kbs) = get(&http, &kbs_url, "Authorization", seeded).await;
    assert_eq!(status, 200, "{kbs}");
    assert_eq!(kbs[0]["title"], "B 1", "{kbs}");
    let nua = format!("Bearer {}", b.nua_key);
    let (status, who) = get(&http, &url("/api/authorizer/info"), "X-NUCLIA-NUAKEY", &nua).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["user"]["account_id"], b.account_id.as_str(), "{who}");
}
