//! Credential scrubbing of text quoted from Nuclia (or from whatever proxy answered in its
//! place): error details, raw bodies, header values, transport messages. Every such text goes
//! through [`scrub`] before it is kept in an [`Error`](super::Error), so it can reach status
//! conditions, Events and logs without carrying a credential.
//!
//! Some gateways quote the request's headers in their error pages (`Authorization: Bearer
//! …`), so nothing taken from an answer is trusted to be free of secrets.

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Removes credentials from `text`, in this order:
///
/// 1. every occurrence of each value in `secrets` (the credentials sent with the request);
/// 2. the value of a credential header quoted as `name: value` or `name=value`
///    (`Authorization`, `Proxy-Authorization`, `X-NUCLIA-*`, `X-STF-*`; a scheme word such as
///    `Bearer` is kept), the value of a quoted secret field (`"token": "…"`, `token=…`,
///    also `access_token`, `refresh_token`, `api_key`, `password`, `secret`, …), and the
///    token after any `Bearer`;
/// 3. JWT-like text: `eyJ…` base64url segments joined by dots;
/// 4. long unbroken runs of base64/base64url/hex characters (see [`long_run_spans`]).
///
/// Scrub before truncating: a cut could otherwise split a secret so that step 1 no longer
/// recognises it.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let text = redact_exact(text, secrets);
    let text = replace_spans(&text, &header_value_spans(&text));
    let text = replace_spans(&text, &bearer_spans(&text));
    let text = replace_spans(&text, &jwt_spans(&text));
    replace_spans(&text, &long_run_spans(&text))
}

/// Step 1: replaces every occurrence of every non-empty secret (longest first, so a secret
/// that contains another is removed whole).
fn redact_exact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in secrets {
        if out.contains(s) {
            out = out.replace(s, REDACTED);
        }
    }
    out
}

/// Replaces the given byte ranges (sorted, non-overlapping, on ASCII boundaries) by
/// [`REDACTED`].
fn replace_spans(text: &str, spans: &[(usize, usize)]) -> String {
    if spans.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(start, end) in spans {
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// A byte that may be part of a token value after `Bearer` or a header name: printable ASCII
/// except whitespace, quotes, brackets and the separators around values in headers, JSON,
/// HTML and prose. `[` is excluded, so an already redacted value is never matched again.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"\"'<>,;()[]{}\\&`".contains(&b)
}

/// The end of the token starting at `i` (`i` itself when there is none).
fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_token_byte(b[i]) {
        i += 1;
    }
    i
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Whether `b[i]` starts a word (nothing alphanumeric, `-` or `_` just before it).
fn word_start(b: &[u8], i: usize) -> bool {
    i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-' || b[i - 1] == b'_')
}

/// Authentication schemes kept in front of a redacted header value.
const SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "apikey", "negotiate"];

/// Header names whose values are credentials (lowercase); `x-nuclia-` and `x-stf-` are
/// prefixes (every Nuclia credential header starts with one of them).
const HEADER_NAMES: &[&str] = &["authorization", "proxy-authorization"];
const HEADER_PREFIXES: &[&str] = &["x-nuclia-", "x-stf-"];

/// Field names whose values are secrets when written as a quoted key (`"token": …`) or as
/// `name=…`. Unquoted `token: …` is left alone: it is how pydantic locations read
/// (`body.token: Field required`).
const SECRET_FIELDS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "password",
    "secret",
    "client_secret",
];

/// Step 2a: the values of credential headers and secret fields.
fn header_value_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let l = lower.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_alphabetic() && word_start(b, i)) {
            i += 1;
            continue;
        }
        let name_end = {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-' || b[j] == b'_') {
                j += 1;
            }
            j
        };
        let name = &lower[i..name_end];
        let header = HEADER_NAMES.contains(&name)
            || HEADER_PREFIXES
                .iter()
                .any(|p| name.len() > p.len() && name.starts_with(p));
        let field = SECRET_FIELDS.contains(&name);
        if !(header || field) {
            i = name_end;
            continue;
        }
        let quoted_key = i > 0
            && matches!(b[i - 1], b'"' | b'\'')
            && name_end < b.len()
            && b[name_end] == b[i - 1];
        let mut j = if quoted_key { name_end + 1 } else { name_end };
        j = skip_blanks(b, j);
        let sep = j < b.len() && (b[j] == b':' || b[j] == b'=');
        if !sep || (field && !header && !quoted_key && b[j] != b'=') {
            i = name_end;
            continue;
        }
        j = skip_blanks(b, j + 1);
        if j < b.len() && matches!(b[j], b'"' | b'\'') {
            j += 1;
        }
        let first_end = token_end(b, j);
        let word = &l[j..first_end];
        let after = skip_blanks(b, first_end);
        if SCHEMES.iter().any(|s| s.as_bytes() == word) && after > first_end {
            // `Bearer <token>`: keep the scheme, redact the token (if any is left).
            let end = token_end(b, after);
            if end > after {
                spans.push((after, end));
            }
            i = end.max(after);
            continue;
        }
        // A lone value. A plain word is prose or a pydantic message (`header.authorization:
        // Field required`), not a credential, except as the value of a secret field.
        let plain_word = word.iter().all(u8::is_ascii_alphabetic);
        if first_end > j && (!plain_word || (field && !header)) {
            spans.push((j, first_end));
        }
        i = first_end.max(j).max(i + 1);
    }
    spans
}

/// Words that may follow `Bearer` in prose ("Bearer token expired").
const BEARER_PROSE: &[&str] = &["token", "tokens", "auth", "authentication", "scheme"];

/// Step 2b: the token after any `Bearer` (case-insensitive, at a word start).
fn bearer_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(k) = lower[from..].find("bearer") {
        let at = from + k;
        from = at + "bearer".len();
        if !word_start(b, at) {
            continue;
        }
        let start = skip_blanks(b, from);
        if start == from {
            continue;
        }
        let end = token_end(b, start);
        if end > start && !BEARER_PROSE.contains(&&lower[start..end]) {
            spans.push((start, end));
            from = end;
        }
    }
    spans
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Step 3: JWT-like text: `eyJ` + base64url, then one or two more `.`-separated base64url
/// segments (the last may be empty: unsigned JWTs end with a dot). A lone `eyJ…` run of 20 or
/// more characters (base64 of a JSON object) counts too.
fn jwt_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(k) = text[from..].find("eyJ") {
        let at = from + k;
        from = at + 3;
        if at > 0 && (is_b64url(b[at - 1]) || b[at - 1] == b'.') {
            continue;
        }
        let seg = |mut i: usize| {
            while i < b.len() && is_b64url(b[i]) {
                i += 1;
            }
            i
        };
        let first = seg(at);
        let mut end = first;
        let mut dots = 0;
        while dots < 2 && end < b.len() && b[end] == b'.' {
            let next = seg(end + 1);
            if next == end + 1 && dots == 0 {
                break; // `eyJ….` followed by nothing: a sentence end
            }
            end = next;
            dots += 1;
        }
        if dots > 0 || first - at >= 20 {
            spans.push((at, end));
            from = end;
        }
    }
    spans
}

/// A byte of base64 (`+`, `/`), base64url (`-`, `_`) or hex text. `=` padding is left out: it
/// carries nothing secret.
fn is_run_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// The length of a canonical UUID (`8-4-4-4-12` hex digits) starting at `i`, not glued to
/// other letters or digits.
fn uuid_at(b: &[u8], i: usize) -> Option<usize> {
    const LEN: usize = 36;
    if i + LEN > b.len() || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
        return None;
    }
    if b.get(i + LEN).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    let ok = b[i..i + LEN].iter().enumerate().all(|(n, c)| match n {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    });
    ok.then_some(LEN)
}

/// Letters (and `-`/`_` between words) with no two capitals in a row: an identifier or a
/// CamelCase name such as `AuthenticationCredentialsNotFoundException`, not random text.
fn word_like(s: &[u8]) -> bool {
    s.iter()
        .all(|c| c.is_ascii_alphabetic() || *c == b'-' || *c == b'_')
        && !s
            .windows(2)
            .any(|w| w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase())
}

/// The shortest run of token characters treated as a secret.
pub const MIN_SECRET_RUN: usize = 32;

// Step 4, the long-run rule. A run is a maximal stretch of base64/base64url/hex characters
// (`A-Z a-z 0-9 + / - _`). What the operator needs to show stays readable:
// - canonical UUIDs (36 characters, `8-4-4-4-12` hex with dashes; token, key, account and KB
//   ids) are kept, and they cut the run in pieces;
// - a piece with `/` and no capital letter or `+` is a URL path (Nuclia paths and ids are
//   lowercase), checked segment by segment; any other piece is checked whole, so a
//   standard-base64 secret is not saved by the `/` inside it;
// - a piece or segment is a secret when it has 32 or more characters and is not word-like
//   (letters and `-`/`_` only, no two capitals in a row: snake_case, kebab-case and CamelCase
//   names stay). 32 characters is 128 bits of hex and less than any base64 token of 24+
//   bytes; random base64 of that length is word-like with probability ~2e-6.
// So `fake-pat-<48 hex>`, a 40-character hex key and a 43-character base64url secret go;
// `7a9d…-…-…-…-…` UUIDs, `/api/v1/account/<uuid>/kb/<uuid>/service_accounts` and
// `datetime_from_date_parsing` stay.
fn long_run_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let check = |start: usize, end: usize, spans: &mut Vec<(usize, usize)>| {
        let piece = &b[start..end];
        let path =
            piece.contains(&b'/') && !piece.iter().any(|c| c.is_ascii_uppercase() || *c == b'+');
        if path {
            let mut s = start;
            for seg in piece.split(|c| *c == b'/') {
                if seg.len() >= MIN_SECRET_RUN && !word_like(seg) {
                    spans.push((s, s + seg.len()));
                }
                s += seg.len() + 1;
            }
        } else if piece.len() >= MIN_SECRET_RUN && !word_like(piece) {
            spans.push((start, end));
        }
    };
    let mut i = 0;
    while i < b.len() {
        if !is_run_byte(b[i]) {
            i += 1;
            continue;
        }
        let mut piece_start = i;
        while i < b.len() && is_run_byte(b[i]) {
            if let Some(n) = uuid_at(b, i) {
                check(piece_start, i, &mut spans);
                i += n;
                piece_start = i;
            } else {
                i += 1;
            }
        }
        check(piece_start, i, &mut spans);
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test secrets are built at run time and never printed: assertions only say whether the
    // value is present.
    fn hex(n: usize, seed: u8) -> String {
        (0..n)
            .map(|i| char::from(b"0123456789abcdef"[(i * 7 + seed as usize) % 16]))
            .collect()
    }

    fn b64url(n: usize, seed: u8) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..n)
            .map(|i| char::from(A[(i * 37 + seed as usize * 11 + i / 3) % 64]))
            .collect()
    }

    #[test]
    fn redacts_the_sent_credential_everywhere() {
        let sent = format!("short-{}", &hex(6, 1));
        let text = format!("x{sent}y {sent}; {}", sent.to_uppercase());
        let out = scrub(&text, &[sent.as_str(), ""]);
        assert!(!out.contains(&sent));
        assert_eq!(out.matches(REDACTED).count(), 2);
        // Longest first: a secret containing another is removed whole.
        let inner = hex(8, 2);
        let outer = format!("{inner}-tail");
        let out = scrub(&format!("[{outer}]"), &[inner.as_str(), outer.as_str()]);
        assert_eq!(out, "[[redacted]]");
    }

    #[test]
    fn table() {
        let tok = format!("fake-pat-{}", hex(48, 3));
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.{}", b64url(43, 4));
        let short_jwt = "eyJhbGciOiJub25lIn0.eyJ4Ijp9.".to_owned();
        let b64 = b64url(43, 5);
        let std64 = format!("{}/{}+{}", b64url(20, 6), b64url(12, 7), b64url(10, 8))
            .replace(['-', '_'], "x");
        let hex40 = hex(40, 9);
        let opaque = "s3cr3t".to_owned(); // short and not token-shaped: only rule (b) finds it
        let uuid = "7a9d1c2e-3f4b-4c5d-8e6f-0a1b2c3d4e5f";
        let not_found = format!("Token {uuid} not found");
        let path = format!("GET /api/v1/account/{uuid}/kb/{uuid}/service_account/{uuid}/keys: 404");
        // (input, values that must be gone, text that must stay)
        let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
            (
                format!("Bad Request: headers Authorization: Bearer {opaque}"),
                vec![&opaque],
                vec!["Authorization: Bearer [redacted]"],
            ),
            (
                format!(r#"{{"authorization": "Bearer {opaque}", "x": 1}}"#),
                vec![&opaque],
                vec![r#""authorization": "Bearer [redacted]""#],
            ),
            (
                format!("X-NUCLIA-SERVICEACCOUNT: Bearer {opaque}\nx-nuclia-nuakey:{opaque}"),
                vec![&opaque],
                vec![
                    "X-NUCLIA-SERVICEACCOUNT: Bearer [redacted]",
                    "x-nuclia-nuakey:[redacted]",
                ],
            ),
            (
                format!("<td>X-STF-NUAKEY</td><td>bearer {opaque}</td>"),
                vec![&opaque],
                vec!["bearer [redacted]</td>"],
            ),
            (
                format!("'X-Nuclia-Serviceaccount': 'Basic {opaque}'"),
                vec![&opaque],
                vec!["'Basic [redacted]'"],
            ),
            (
                format!(r#"{{"id": "{uuid}", "token": "{opaque}"}}"#),
                vec![&opaque],
                vec![uuid, r#""token": "[redacted]""#],
            ),
            (
                format!("callback?token={opaque}&x=1"),
                vec![&opaque],
                vec!["token=[redacted]&x=1"],
            ),
            (
                format!("key {tok} refused"),
                vec![&tok],
                vec!["key [redacted] refused"],
            ),
            (
                format!("jwt={jwt}."),
                vec![&jwt, "eyJ"],
                vec!["jwt=[redacted]."],
            ),
            (
                format!("got {short_jwt} here"),
                vec!["eyJ"],
                vec!["got [redacted] here"],
            ),
            (format!("({b64})"), vec![&b64], vec!["([redacted])"]),
            (format!("k: {std64}"), vec![&std64], vec!["k: [redacted]"]),
            (format!("sha {hex40}"), vec![&hex40], vec!["sha [redacted]"]),
            // Readable text stays as it is.
            (not_found.clone(), vec![], vec![&not_found]),
            (path.clone(), vec![], vec![&path]),
            (
                "body.token: Field required; header.authorization: Field required".into(),
                vec![],
                vec!["body.token: Field required; header.authorization: Field required"],
            ),
            (
                "The OAuth Access token is either nonexistent or revoked; Bearer token expired"
                    .into(),
                vec![],
                vec![
                    "The OAuth Access token is either nonexistent or revoked; Bearer token expired",
                ],
            ),
            (
                "AuthenticationCredentialsNotFoundException: datetime_from_date_parsing, \
                 nto-keep-marker-for-a-very-long-resource-name"
                    .into(),
                vec![],
                vec![
                    "AuthenticationCredentialsNotFoundException",
                    "nto-keep-marker-for-a-very-long-resource-name",
                ],
            ),
            (
                "fingerprint 0123456789abcdef, sha 2e1f".into(),
                vec![],
                vec!["fingerprint 0123456789abcdef, sha 2e1f"],
            ),
            ("héllo — ünïcode".into(), vec![], vec!["héllo — ünïcode"]),
        ];
        for (n, (input, gone, kept)) in cases.iter().enumerate() {
            let out = scrub(input, &[]);
            for g in gone {
                assert!(!out.contains(g), "case {n}: a secret survived");
            }
            for k in kept {
                assert!(out.contains(k), "case {n}: expected {k:?} to stay");
            }
        }
    }

    /// Random secrets of every shape, in the contexts they are quoted in, never survive
    /// (seeded, so the run is reproducible; values are never printed).
    #[test]
    fn random_token_shapes_never_survive() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        const STD: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const HEX: &[u8] = b"0123456789abcdef";
        let mut rng = StdRng::seed_from_u64(16);
        let mut draw = |alphabet: &[u8], len: usize| -> String {
            (0..len)
                .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
                .collect()
        };
        for n in 0..3000 {
            let len = 32 + n % 49;
            let token = match n % 4 {
                0 => draw(STD, len),
                1 => draw(URL, len),
                2 => draw(HEX, len),
                _ => format!("eyJ{}.{}.{}", draw(URL, 8), draw(URL, 12), draw(URL, len)),
            };
            for text in [
                format!("rejected {token}."),
                format!("<p>{token}</p>"),
                format!(r#"{{"detail": "bad key", "key": "{token}"}}"#),
                format!("/api/v1/kb/{token}/x"),
            ] {
                assert!(!scrub(&text, &[]).contains(&token), "sample {n}");
            }
        }
    }
}
