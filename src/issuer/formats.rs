//! Ready-made layouts of a credential in its Secret (`spec.secret.additionalFormats`), as pure
//! functions from what a consumer needs ([`Consumer`]: the token and where it is used) to data
//! keys. Each kind describes its credential as a [`Consumer`]; a new kind adds a variant, its
//! `NUCLIA_*` names ([`env_names`]) and its entry in the SDK's configuration here.
//!
//! `NucliaConfig` is the `nuclia` Python SDK/CLI configuration file (`~/.nuclia/config`): the
//! JSON the SDK's pydantic `Config` model writes (`model_dump_json()`: compact, every field,
//! in the model's order), so the SDK reads it as its own. Derived from the SDK's source
//! (`nuclia/config.py`, `nuclia/data.py`, `nuclia/sdk/auth.py`, nuclia 4.15.0): a KB key is a
//! `kbs_token` entry (what `nuclia auth kb URL KEY` stores) and the default KB; a personal
//! token is the user token (`token`, what `nuclia auth set_user_token` stores, sent as
//! `Authorization: Bearer`). Listed key by key in `docs/secret-formats.md`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::crd::{SecretFormatType, SecretTemplate};

/// `Env`: the personal token.
pub const ENV_TOKEN: &str = "NUCLIA_TOKEN";
/// `Env`: the Knowledge Box URL (`https://{zone}.dp.{domain}/api/v1/kb/{kbid}`).
pub const ENV_KB_URL: &str = "NUCLIA_KB_URL";
/// `Env`: the Knowledge Box id.
pub const ENV_KB_ID: &str = "NUCLIA_KB_ID";
/// `Env`: the zone (region) of the Knowledge Box, e.g. `europe-1`.
pub const ENV_ZONE: &str = "NUCLIA_ZONE";
/// `Env`: the Knowledge Box API key (sent as `X-NUCLIA-SERVICEACCOUNT: Bearer <key>`).
pub const ENV_KB_API_KEY: &str = "NUCLIA_KB_API_KEY";

/// `Env`: the NUA key (sent as `X-NUCLIA-NUAKEY: Bearer <key>`; with `NUCLIA_ZONE`).
pub const ENV_NUA_KEY: &str = "NUCLIA_NUA_KEY";

/// Default data key of the `NucliaConfig` file: the Secret mounted as the directory
/// `~/.nuclia` gives the SDK its `~/.nuclia/config`.
pub const DEFAULT_CONFIG_KEY: &str = "config";

/// Which kind of credential, for the names its formats use (no values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    PersonalToken,
    KbKey,
    NuaKey,
}

/// A credential as its consumers use it (the token itself is passed beside it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// A personal access token: the global API, as the user who made it.
    PersonalToken,
    /// A Knowledge Box API key.
    KbKey {
        /// The KB URL, without a trailing `/`.
        url: String,
        kb_id: String,
        zone: String,
    },
    /// A NUA key: the key of a NUA client of an account, in a zone.
    NuaKey {
        zone: String,
        account_id: String,
        client_id: String,
    },
}

impl Consumer {
    pub fn shape(&self) -> Shape {
        match self {
            Consumer::PersonalToken => Shape::PersonalToken,
            Consumer::KbKey { .. } => Shape::KbKey,
            Consumer::NuaKey { .. } => Shape::NuaKey,
        }
    }
}

/// The `NUCLIA_*` names the `Env` format writes for a kind.
pub fn env_names(shape: Shape) -> &'static [&'static str] {
    match shape {
        Shape::PersonalToken => &[ENV_TOKEN],
        Shape::KbKey => &[ENV_KB_URL, ENV_KB_ID, ENV_ZONE, ENV_KB_API_KEY],
        Shape::NuaKey => &[ENV_NUA_KEY, ENV_ZONE],
    }
}

/// The `Env` format: `NUCLIA_*` keys for `envFrom`.
pub fn env(consumer: &Consumer, token: &str) -> Vec<(String, String)> {
    let pairs: Vec<(&str, &str)> = match consumer {
        Consumer::PersonalToken => vec![(ENV_TOKEN, token)],
        Consumer::KbKey { url, kb_id, zone } => vec![
            (ENV_KB_URL, url),
            (ENV_KB_ID, kb_id),
            (ENV_ZONE, zone),
            (ENV_KB_API_KEY, token),
        ],
        Consumer::NuaKey { zone, .. } => vec![(ENV_NUA_KEY, token), (ENV_ZONE, zone)],
    };
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// The SDK's `nuclia.config` models, field for field and in their order (pydantic dumps every
// field, `null` included, in declaration order).

#[derive(Serialize)]
struct SdkConfig<'a> {
    accounts: [(); 0],
    kbs: [(); 0],
    kbs_token: Vec<SdkKnowledgeBox<'a>>,
    agents: [(); 0],
    agents_token: [(); 0],
    nuas_token: Vec<SdkNuaKey<'a>>,
    zones: [(); 0],
    default: SdkSelection<'a>,
    user: Option<&'a str>,
    token: Option<&'a str>,
    refresh_token: Option<&'a str>,
    token_expires_at: Option<f64>,
}

#[derive(Serialize)]
struct SdkKnowledgeBox<'a> {
    id: &'a str,
    url: &'a str,
    title: Option<&'a str>,
    slug: Option<&'a str>,
    token: Option<&'a str>,
    region: Option<&'a str>,
    origin: Option<&'a str>,
    account: Option<&'a str>,
}

/// The SDK's `NuaKey`: what `nuclia auth nua KEY` stores (`Config.set_nua_token`).
#[derive(Serialize)]
struct SdkNuaKey<'a> {
    client_id: &'a str,
    account_type: Option<&'a str>,
    region: String,
    account: &'a str,
    token: &'a str,
    origin: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct SdkSelection<'a> {
    nua: Option<&'a str>,
    kbid: Option<&'a str>,
    agent_id: Option<&'a str>,
    account: Option<&'a str>,
    nucliadb: Option<&'a str>,
    zone: Option<&'a str>,
}

/// The base the SDK sends regional calls to for a KB (`/api/authorizer/info`,
/// `/api/v1/ephemeral_token`): the KB URL without `/api/v1/kb/{kbid}`, so a zone served under
/// a path keeps it. `nuclia auth kb` stores the URL's scheme and host, the same for Nuclia's
/// own zones.
fn kb_origin(url: &str) -> &str {
    url.rfind("/api/v1/kb/").map_or(url, |i| &url[..i])
}

/// The `NucliaConfig` format: the SDK's configuration file, with this credential as the one
/// it uses by default.
pub fn nuclia_config(consumer: &Consumer, token: &str) -> String {
    let empty = SdkConfig {
        accounts: [],
        kbs: [],
        kbs_token: Vec::new(),
        agents: [],
        agents_token: [],
        nuas_token: Vec::new(),
        zones: [],
        default: SdkSelection::default(),
        user: None,
        token: None,
        refresh_token: None,
        token_expires_at: None,
    };
    let config = match consumer {
        // The SDK's user token, sent as `Authorization: Bearer`: a PAT is one (`nuclia auth
        // create_personal_token --login` stores its new PAT there). No refresh token, no expiry:
        // the SDK never tries to refresh it.
        Consumer::PersonalToken => SdkConfig {
            token: Some(token),
            ..empty
        },
        // What `nuclia auth kb URL KEY` stores (`Config.set_kb_token`, then `set_default_kb`):
        // with a region, the SDK calls the KB URL with `X-NUCLIA-SERVICEACCOUNT`.
        Consumer::KbKey { url, kb_id, zone } => SdkConfig {
            kbs_token: vec![SdkKnowledgeBox {
                id: kb_id,
                url,
                title: None,
                slug: None,
                token: Some(token),
                region: Some(zone),
                origin: Some(kb_origin(url)),
                account: None,
            }],
            default: SdkSelection {
                kbid: Some(kb_id),
                zone: Some(zone),
                ..SdkSelection::default()
            },
            ..empty
        },
        // What `nuclia auth nua KEY` stores (`set_nua_token`, then `default_nua`): the region
        // is the key's `iss` claim, the regional base the SDK sends NUA calls to.
        Consumer::NuaKey {
            account_id,
            client_id,
            ..
        } => SdkConfig {
            nuas_token: vec![SdkNuaKey {
                client_id,
                account_type: None,
                region: jwt_issuer(token).unwrap_or_default(),
                account: account_id,
                token,
                origin: None,
            }],
            default: SdkSelection {
                nua: Some(client_id),
                ..SdkSelection::default()
            },
            ..empty
        },
    };
    serde_json::to_string(&config).expect("the SDK configuration always serializes")
}

/// The `iss` claim of a JWT (read, not verified), as the SDK reads a NUA key's.
pub fn jwt_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = b64_decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Lenient base64 (standard or URL-safe alphabet, padding optional).
fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The data keys and values of every format `template` asks for (none when `consumer` is not
/// known yet).
pub fn render(
    template: &SecretTemplate,
    consumer: Option<&Consumer>,
    token: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(consumer) = consumer else {
        return out;
    };
    for f in &template.additional_formats {
        match f.format {
            SecretFormatType::Env => out.extend(env(consumer, token)),
            SecretFormatType::NucliaConfig => {
                let key = f.key.as_deref().unwrap_or(DEFAULT_CONFIG_KEY);
                out.insert(key.to_owned(), nuclia_config(consumer, token));
            }
        }
    }
    out
}

/// Secret types whose data the apiserver checks for keys the operator does not write.
const REFUSED_TYPES: [&str; 5] = [
    "kubernetes.io/service-account-token",
    "kubernetes.io/dockercfg",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/tls",
    "bootstrap.kubernetes.io/token",
];

/// Checks `spec.secret.additionalFormats` and `spec.secret.type` against the plain data keys
/// of a kind (`plain_keys`), so that a Secret that could never be written is refused before a
/// token is minted for it. The error says what to fix.
pub fn validate(
    template: &SecretTemplate,
    shape: Shape,
    plain_keys: &[&str],
) -> Result<(), String> {
    let mut seen: Vec<(SecretFormatType, &str)> = Vec::new();
    let mut keys: Vec<(&str, &'static str)> = Vec::new();
    for f in &template.additional_formats {
        let (name, these): (&'static str, Vec<&str>) = match f.format {
            SecretFormatType::Env => {
                if f.key.is_some() {
                    return Err(
                        "spec.secret.additionalFormats: `key` applies to NucliaConfig only; remove it from the Env entry".into(),
                    );
                }
                ("Env", env_names(shape).to_vec())
            }
            SecretFormatType::NucliaConfig => (
                "NucliaConfig",
                vec![f.key.as_deref().unwrap_or(DEFAULT_CONFIG_KEY)],
            ),
        };
        let id = (f.format, these.first().copied().unwrap_or_default());
        if seen.contains(&id) {
            return Err(format!(
                "spec.secret.additionalFormats lists {name} twice with the same key; remove one"
            ));
        }
        seen.push(id);
        for key in these {
            if plain_keys.contains(&key) {
                return Err(format!(
                    "spec.secret.additionalFormats: {name} writes data key {key:?}, which the Secret already uses for the credential; choose another key"
                ));
            }
            if let Some((_, other)) = keys.iter().find(|(k, _)| *k == key) {
                return Err(format!(
                    "spec.secret.additionalFormats: {name} and {other} both write data key {key:?}; choose another key"
                ));
            }
            keys.push((key, name));
        }
    }
    if let Some(t) = template.secret_type.as_deref() {
        let mut all: Vec<&str> = plain_keys.to_vec();
        all.extend(keys.iter().map(|(k, _)| *k));
        let missing = match t {
            "kubernetes.io/basic-auth" => {
                (!all.iter().any(|k| matches!(*k, "username" | "password")))
                    .then_some("a `username` or `password` key")
            }
            "kubernetes.io/ssh-auth" => {
                (!all.contains(&"ssh-privatekey")).then_some("an `ssh-privatekey` key")
            }
            t if REFUSED_TYPES.contains(&t) => Some("keys the operator does not write"),
            _ => None,
        };
        if let Some(missing) = missing {
            return Err(format!(
                "spec.secret.type {t:?} needs {missing}; use Opaque (the default) or a type of your own such as nuclia.dev/token"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretFormat;

    fn kb() -> Consumer {
        Consumer::KbKey {
            url: "https://europe-1.dp.progress.cloud/api/v1/kb/kb1".into(),
            kb_id: "kb1".into(),
            zone: "europe-1".into(),
        }
    }

    fn with(formats: &[(SecretFormatType, Option<&str>)], t: Option<&str>) -> SecretTemplate {
        SecretTemplate {
            additional_formats: formats
                .iter()
                .map(|(format, key)| SecretFormat {
                    format: *format,
                    key: key.map(String::from),
                })
                .collect(),
            secret_type: t.map(String::from),
            ..SecretTemplate::default()
        }
    }

    /// Exactly what the SDK's own `Config(...).model_dump_json()` prints (nuclia 4.15.0), so
    /// the SDK reads the file as one it wrote.
    #[test]
    fn nuclia_config_is_the_sdks_own_json() {
        assert_eq!(
            nuclia_config(&kb(), "KEY"),
            r#"{"accounts":[],"kbs":[],"kbs_token":[{"id":"kb1","url":"https://europe-1.dp.progress.cloud/api/v1/kb/kb1","title":null,"slug":null,"token":"KEY","region":"europe-1","origin":"https://europe-1.dp.progress.cloud","account":null}],"agents":[],"agents_token":[],"nuas_token":[],"zones":[],"default":{"nua":null,"kbid":"kb1","agent_id":null,"account":null,"nucliadb":null,"zone":"europe-1"},"user":null,"token":null,"refresh_token":null,"token_expires_at":null}"#
        );
        assert_eq!(
            nuclia_config(&Consumer::PersonalToken, "PAT"),
            r#"{"accounts":[],"kbs":[],"kbs_token":[],"agents":[],"agents_token":[],"nuas_token":[],"zones":[],"default":{"nua":null,"kbid":null,"agent_id":null,"account":null,"nucliadb":null,"zone":null},"user":null,"token":"PAT","refresh_token":null,"token_expires_at":null}"#
        );
        // A zone served under a path keeps it as the base of regional calls.
        let private = Consumer::KbKey {
            url: "https://nuclia.example.com/zone/api/v1/kb/kb1".into(),
            kb_id: "kb1".into(),
            zone: "private-1".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&nuclia_config(&private, "KEY")).unwrap();
        assert_eq!(
            v["kbs_token"][0]["origin"],
            "https://nuclia.example.com/zone"
        );
    }

    #[test]
    fn env_names_match_what_is_written() {
        for c in [Consumer::PersonalToken, kb()] {
            let written: Vec<String> = env(&c, "T").into_iter().map(|(k, _)| k).collect();
            assert_eq!(written, env_names(c.shape()));
        }
        let kb_env: BTreeMap<_, _> = env(&kb(), "KEY").into_iter().collect();
        assert_eq!(kb_env["NUCLIA_KB_API_KEY"], "KEY");
        assert_eq!(kb_env["NUCLIA_KB_ID"], "kb1");
        assert_eq!(kb_env["NUCLIA_ZONE"], "europe-1");
        assert_eq!(
            kb_env["NUCLIA_KB_URL"],
            "https://europe-1.dp.progress.cloud/api/v1/kb/kb1"
        );
        assert_eq!(
            env(&Consumer::PersonalToken, "PAT"),
            vec![("NUCLIA_TOKEN".to_owned(), "PAT".to_owned())]
        );
    }

    #[test]
    fn render_writes_every_format_asked() {
        use SecretFormatType::*;
        let t = with(
            &[
                (Env, None),
                (NucliaConfig, None),
                (NucliaConfig, Some("alt")),
            ],
            None,
        );
        let data = render(&t, Some(&kb()), "KEY");
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "NUCLIA_KB_API_KEY",
                "NUCLIA_KB_ID",
                "NUCLIA_KB_URL",
                "NUCLIA_ZONE",
                "alt",
                "config"
            ]
        );
        assert_eq!(data["alt"], data["config"]);
        assert!(render(&t, None, "KEY").is_empty());
        assert!(render(&with(&[], None), Some(&kb()), "KEY").is_empty());
    }

    #[test]
    fn validation_refuses_clashes_and_types_that_cannot_be_written() {
        use SecretFormatType::*;
        let kb_plain = ["token", "kbUrl", "kbId", "zone"];
        let ok = [
            with(&[(Env, None), (NucliaConfig, None)], None),
            with(
                &[(NucliaConfig, Some("a")), (NucliaConfig, Some("b"))],
                None,
            ),
            with(&[], Some("Opaque")),
            with(&[], Some("nuclia.dev/token")),
        ];
        for t in ok {
            assert_eq!(validate(&t, Shape::KbKey, &kb_plain), Ok(()), "{t:?}");
        }
        let basic = with(&[], Some("kubernetes.io/basic-auth"));
        assert_eq!(
            validate(&basic, Shape::PersonalToken, &["password"]),
            Ok(())
        );
        let bad = [
            (with(&[(Env, Some("x"))], None), "NucliaConfig only"),
            (with(&[(Env, None), (Env, None)], None), "twice"),
            (
                with(
                    &[(NucliaConfig, None), (NucliaConfig, Some("config"))],
                    None,
                ),
                "twice",
            ),
            (with(&[(NucliaConfig, Some("token"))], None), "\"token\""),
            (with(&[(NucliaConfig, Some("zone"))], None), "\"zone\""),
            (
                with(&[(Env, None), (NucliaConfig, Some("NUCLIA_ZONE"))], None),
                "both write",
            ),
            (with(&[], Some("kubernetes.io/tls")), "kubernetes.io/tls"),
            (with(&[], Some("kubernetes.io/basic-auth")), "username"),
            (with(&[], Some("kubernetes.io/ssh-auth")), "ssh-privatekey"),
        ];
        for (t, want) in bad {
            let err = validate(&t, Shape::KbKey, &kb_plain).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn nua_key_formats() {
        let nua = Consumer::NuaKey {
            zone: "europe-1".into(),
            account_id: "acc-1".into(),
            client_id: "client-1".into(),
        };
        // header.payload.signature, payload {"iss":"https://europe-1.dp.progress.cloud/"}
        let token =
            "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJodHRwczovL2V1cm9wZS0xLmRwLnByb2dyZXNzLmNsb3VkLyJ9.sig";
        assert_eq!(
            env(&nua, token),
            vec![
                (ENV_NUA_KEY.to_owned(), token.to_owned()),
                (ENV_ZONE.to_owned(), "europe-1".to_owned())
            ]
        );
        let config: serde_json::Value = serde_json::from_str(&nuclia_config(&nua, token)).unwrap();
        assert_eq!(
            config["nuas_token"],
            serde_json::json!([{
                "client_id": "client-1", "account_type": null,
                "region": "https://europe-1.dp.progress.cloud/", "account": "acc-1",
                "token": token, "origin": null,
            }])
        );
        assert_eq!(config["default"]["nua"], "client-1");
        assert_eq!(config["token"], serde_json::Value::Null);
        assert_eq!(env_names(Shape::NuaKey), &[ENV_NUA_KEY, ENV_ZONE]);
    }
}
