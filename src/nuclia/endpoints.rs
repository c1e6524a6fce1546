//! Where the Nuclia API lives: the global base, the regional template and per-zone origins.

use std::collections::BTreeMap;

use url::Url;

use super::Error;

const ZONE_MARKER: &str = "zonemarker0";

/// The configured Nuclia base URLs (nuclia-api.md §1.1).
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The global (account) API base, e.g. `https://accounts.progress.cloud`.
    pub global: Url,
    /// The regional base with a `{zone}` placeholder, e.g. `https://{zone}.dp.progress.cloud`.
    pub regional_template: String,
    /// Per-zone origins that replace the template (private zones, or a fake).
    pub zone_origins: BTreeMap<String, Url>,
}

/// A KB URL taken apart (nuclia-api.md §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KbLocation {
    /// The zone slug, e.g. `europe-1`.
    pub zone: String,
    /// The KB id: the path segment after `/api/v1/kb/`.
    pub kb_id: String,
    /// The regional base URL of the zone.
    pub regional: Url,
    /// The KB URL, normalised (no trailing slash).
    pub kb_url: Url,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            global: Url::parse("https://accounts.progress.cloud").expect("static URL"),
            regional_template: "https://{zone}.dp.progress.cloud".to_owned(),
            zone_origins: BTreeMap::new(),
        }
    }
}

impl Endpoints {
    /// Endpoints where the global API and every listed zone live at one origin (a fake).
    pub fn single_origin(origin: &Url, zones: &[&str]) -> Self {
        Self {
            global: origin.clone(),
            regional_template: "https://{zone}.dp.progress.cloud".to_owned(),
            zone_origins: zones
                .iter()
                .map(|z| ((*z).to_owned(), origin.clone()))
                .collect(),
        }
    }

    /// Checks the configuration: http(s) URLs, a template with exactly one `{zone}` in the host.
    pub fn validate(&self) -> Result<(), Error> {
        check_base(&self.global, "global URL")?;
        for (zone, origin) in &self.zone_origins {
            check_zone(zone).map_err(Error::Config)?;
            check_base(origin, &format!("origin of zone {zone}"))?;
        }
        self.template_parts()?;
        Ok(())
    }

    /// The regional base URL of a zone: its configured origin, else the template.
    pub fn regional(&self, zone: &str) -> Result<Url, Error> {
        check_zone(zone).map_err(Error::Config)?;
        if let Some(origin) = self.zone_origins.get(zone) {
            return Ok(origin.clone());
        }
        let url = self.regional_template.replace("{zone}", zone);
        Url::parse(&url).map_err(|e| Error::Config(format!("regional URL for zone {zone}: {e}")))
    }

    /// Takes a KB URL apart, refusing any URL that is not on a configured Nuclia endpoint
    /// (a KB key must never be sent anywhere else).
    pub fn locate_kb(&self, kb_url: &str) -> Result<KbLocation, Error> {
        let untrusted = |reason: &str| Error::UntrustedEndpoint {
            url: redact_url(kb_url),
            reason: reason.to_owned(),
        };
        let url = Url::parse(kb_url.trim()).map_err(|e| untrusted(&format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(untrusted("scheme must be https or http"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(untrusted("user info is not allowed"));
        }
        if url.query().is_some() {
            return Err(untrusted("a query string is not allowed"));
        }
        if url.fragment().is_some() {
            return Err(untrusted("a fragment is not allowed"));
        }
        let origin = url.origin().ascii_serialization();
        let zone = self
            .zone_origins
            .iter()
            .find(|(_, o)| o.origin().ascii_serialization() == origin)
            .map(|(z, _)| z.clone())
            .or_else(|| self.zone_from_template(&origin))
            .ok_or_else(|| {
                untrusted("host is neither a configured zone origin nor the regional template")
            })?;
        let regional = self.regional(&zone)?;
        let base_path = regional.path().trim_end_matches('/');
        let path = url.path().trim_end_matches('/');
        let rest = path
            .strip_prefix(base_path)
            .and_then(|p| p.strip_prefix("/api/v1/kb/"))
            .ok_or_else(|| untrusted("path must be /api/v1/kb/{kbid}"))?;
        if rest.is_empty()
            || rest.contains('/')
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(untrusted("path must be /api/v1/kb/{kbid}"));
        }
        let mut kb_url = url.clone();
        kb_url.set_path(path);
        Ok(KbLocation {
            zone,
            kb_id: rest.to_owned(),
            regional,
            kb_url,
        })
    }

    /// The template's origin split around the zone label: (`https://`, `.dp.progress.cloud`).
    fn template_parts(&self) -> Result<(String, String), Error> {
        if self.regional_template.matches("{zone}").count() != 1 {
            return Err(Error::Config(
                "the regional template must contain {zone} exactly once".into(),
            ));
        }
        let sample = self.regional_template.replace("{zone}", ZONE_MARKER);
        let url =
            Url::parse(&sample).map_err(|e| Error::Config(format!("regional template: {e}")))?;
        check_base(&url, "regional template")?;
        let origin = url.origin().ascii_serialization();
        let (prefix, suffix) = origin.split_once(ZONE_MARKER).ok_or_else(|| {
            Error::Config("the regional template must have {zone} in its host".into())
        })?;
        Ok((prefix.to_owned(), suffix.to_owned()))
    }

    fn zone_from_template(&self, origin: &str) -> Option<String> {
        let (prefix, suffix) = self.template_parts().ok()?;
        let zone = origin.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
        check_zone(zone).ok()?;
        Some(zone.to_owned())
    }
}

fn check_base(url: &Url, what: &str) -> Result<(), Error> {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::Config(format!("{what} must be an http(s) URL")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(Error::Config(format!(
            "{what} must not have user info, a query or a fragment"
        )));
    }
    Ok(())
}

/// A zone is one DNS label: lower-case letters, digits and inner dashes.
fn check_zone(zone: &str) -> Result<(), String> {
    let ok = !zone.is_empty()
        && zone.len() <= 63
        && zone
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !zone.starts_with('-')
        && !zone.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid zone name {zone:?}"))
    }
}

/// A URL for error messages: without user info, query and fragment (they may hold secrets).
fn redact_url(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            crate::nuclia::error::truncate(u.as_str())
        }
        Err(_) => "<unparseable>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        let mut e = Endpoints::default();
        e.zone_origins.insert(
            "private-1".into(),
            Url::parse("https://nuclia.example.com:8443").unwrap(),
        );
        e.zone_origins.insert(
            "local".into(),
            Url::parse("http://127.0.0.1:9000/").unwrap(),
        );
        e
    }

    #[test]
    fn regional_prefers_origin_then_template() {
        let e = endpoints();
        assert_eq!(
            e.regional("europe-1").unwrap().as_str(),
            "https://europe-1.dp.progress.cloud/"
        );
        assert_eq!(
            e.regional("private-1").unwrap().as_str(),
            "https://nuclia.example.com:8443/"
        );
        assert!(matches!(e.regional("evil.com/x"), Err(Error::Config(_))));
        assert!(matches!(e.regional(""), Err(Error::Config(_))));
        assert!(e.validate().is_ok());
    }

    #[test]
    fn locates_kbs_on_trusted_hosts() {
        let e = endpoints();
        let ok: &[(&str, &str, &str)] = &[
            (
                "https://europe-1.dp.progress.cloud/api/v1/kb/0f6a-11",
                "europe-1",
                "0f6a-11",
            ),
            (
                "https://aws-us-east-2-1.dp.progress.cloud/api/v1/kb/abc/",
                "aws-us-east-2-1",
                "abc",
            ),
            (
                "https://europe-1.dp.progress.cloud:443/api/v1/kb/abc",
                "europe-1",
                "abc",
            ),
            (
                "https://nuclia.example.com:8443/api/v1/kb/kb1",
                "private-1",
                "kb1",
            ),
            ("http://127.0.0.1:9000/api/v1/kb/kb2", "local", "kb2"),
        ];
        for (url, zone, kb) in ok {
            let loc = e
                .locate_kb(url)
                .unwrap_or_else(|err| panic!("{url}: {err}"));
            assert_eq!(
                (loc.zone.as_str(), loc.kb_id.as_str()),
                (*zone, *kb),
                "{url}"
            );
            assert!(!loc.kb_url.path().ends_with('/'));
            assert_eq!(loc.regional, e.regional(zone).unwrap());
        }
    }

    #[test]
    fn refuses_untrusted_urls() {
        let e = endpoints();
        let bad = [
            "https://evil.com/api/v1/kb/abc",
            "https://europe-1.dp.progress.cloud.evil.com/api/v1/kb/abc",
            "https://a.b.dp.progress.cloud/api/v1/kb/abc",
            "https://.dp.progress.cloud/api/v1/kb/abc",
            "http://europe-1.dp.progress.cloud/api/v1/kb/abc",
            "https://europe-1.dp.progress.cloud:444/api/v1/kb/abc",
            "https://nuclia.example.com/api/v1/kb/abc",
            "http://127.0.0.1:9001/api/v1/kb/abc",
            "https://user:pw@europe-1.dp.progress.cloud/api/v1/kb/abc",
            "https://europe-1.dp.progress.cloud/api/v1/kb/abc?x=1",
            "https://europe-1.dp.progress.cloud/api/v1/kb/abc#frag",
            "https://europe-1.dp.progress.cloud/api/v1/kbs/abc",
            "https://europe-1.dp.progress.cloud/api/v1/kb/",
            "https://europe-1.dp.progress.cloud/api/v1/kb/abc/resources",
            "https://europe-1.dp.progress.cloud/api/v1/kb/a%2Fb",
            "ftp://europe-1.dp.progress.cloud/api/v1/kb/abc",
            "not a url",
        ];
        for url in bad {
            match e.locate_kb(url) {
                Err(Error::UntrustedEndpoint { url: shown, .. }) => {
                    assert!(!shown.contains("pw"), "{shown}");
                }
                other => panic!("{url}: expected UntrustedEndpoint, got {other:?}"),
            }
        }
    }
}
