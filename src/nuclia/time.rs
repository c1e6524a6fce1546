//! Nuclia dates: sent as RFC 3339 UTC with `Z`, parsed tolerantly.
//!
//! Accepted on input (what pydantic v2 accepts and first-party clients send, nuclia-api.md
//! §2.1 and §3.6): RFC 3339 with `Z` or an offset, naive ISO 8601 with or without fractional
//! seconds (taken as UTC), a plain date (midnight UTC), and epoch seconds as a number or a
//! string of digits.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Formats a time the way the client sends it: `2026-12-28T00:40:07Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses a date string in any accepted form.
pub fn parse_str(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok().and_then(from_epoch);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // RFC 3339 allows a space separator and a lower-case `t`/`z`; normalise and retry.
    let normalised = s.replacen(' ', "T", 1).replace('t', "T").replace('z', "Z");
    if let Ok(t) = DateTime::parse_from_rfc3339(&normalised) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&normalised, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    // Offsets without a colon (`+0100`) and offsets with no seconds (`T10:00+01:00`).
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%dT%H:%M%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(&normalised, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    }
    None
}

/// Epoch seconds to a time (`None` when out of range).
pub fn from_epoch(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// Parses a JSON value: a string in any accepted form, or epoch seconds as a number.
pub fn parse_value(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_str(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                from_epoch(i)
            } else {
                let f = n.as_f64()?;
                if !f.is_finite() || f.abs() > 1e15 {
                    return None;
                }
                let secs = f.floor() as i64;
                let nanos = ((f - f.floor()) * 1e9) as u32;
                Utc.timestamp_opt(secs, nanos).single()
            }
        }
        _ => None,
    }
}

/// `serde(deserialize_with)` for an optional date: `null`/absent is `None`, anything that does
/// not parse is an error.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_value(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("unparseable date: {v}"))),
    }
}

/// `serde(deserialize_with)` for a required date.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    de_opt(d)?.ok_or_else(|| serde::de::Error::custom("date is null"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_every_accepted_form() {
        let cases: &[(&str, &str)] = &[
            ("2026-12-28T00:40:07Z", "2026-12-28T00:40:07Z"),
            ("2026-12-28T00:40:07.257386Z", "2026-12-28T00:40:07.257386Z"),
            ("2026-12-28T01:40:07+01:00", "2026-12-28T00:40:07Z"),
            ("2026-12-28T01:40:07.5+0100", "2026-12-28T00:40:07.5Z"),
            ("2026-12-28T00:40:07.257386", "2026-12-28T00:40:07.257386Z"),
            ("2026-12-28T00:40:07", "2026-12-28T00:40:07Z"),
            ("2026-12-28 00:40:07", "2026-12-28T00:40:07Z"),
            ("2026-12-28t00:40:07z", "2026-12-28T00:40:07Z"),
            ("2026-12-28T00:40", "2026-12-28T00:40:00Z"),
            ("2026-12-28", "2026-12-28T00:00:00Z"),
            ("1729449775", "2024-10-20T18:42:55Z"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_str(input), Some(utc(want)), "input {input}");
        }
    }

    #[test]
    fn parses_epoch_numbers() {
        assert_eq!(
            parse_value(&json!(1729449775)),
            Some(utc("2024-10-20T18:42:55Z"))
        );
        assert_eq!(
            parse_value(&json!(1729449775.5)),
            Some(utc("2024-10-20T18:42:55.5Z"))
        );
        assert_eq!(
            parse_value(&json!("1729449775")),
            Some(utc("2024-10-20T18:42:55Z"))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-12-28T25:00:00",
            "12:00",
        ] {
            assert_eq!(parse_str(bad), None, "input {bad:?}");
        }
        assert_eq!(parse_value(&json!(true)), None);
        assert_eq!(parse_value(&json!(null)), None);
        assert_eq!(parse_value(&json!(1e300)), None);
    }

    #[test]
    fn formats_rfc3339_utc_with_z() {
        let t = utc("2026-12-28T00:40:07.9+00:00");
        assert_eq!(format(t), "2026-12-28T00:40:07Z");
    }

    #[test]
    fn serde_helpers() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "de_opt")]
            a: Option<DateTime<Utc>>,
            #[serde(deserialize_with = "de")]
            b: DateTime<Utc>,
        }
        let t: T = serde_json::from_value(json!({"b": 0})).unwrap();
        assert_eq!(t.a, None);
        assert_eq!(t.b, utc("1970-01-01T00:00:00Z"));
        let t: T = serde_json::from_value(json!({"a": null, "b": "2026-01-01"})).unwrap();
        assert_eq!(t.a, None);
        assert!(serde_json::from_value::<T>(json!({"b": "nope"})).is_err());
        assert!(serde_json::from_value::<T>(json!({"b": null})).is_err());
    }
}
