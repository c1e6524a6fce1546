//! Dates as Nuclia writes and reads them: written as RFC 3339 UTC with `Z`, read tolerantly
//! (RFC 3339 with `Z` or an offset, naive ISO 8601 taken as UTC, a plain date, epoch seconds as
//! a number or a string of digits: what pydantic v2 accepts, `shared/nuclia-api.md` §2.1).
//!
//! The fake's own copy, not the operator's `nuclia::time`: it implements the wire format
//! independently of the client it is used to test, so a mistake in one is not repeated, unseen,
//! in the other.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde_json::Value;

/// `2026-12-28T00:40:07Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A date string in any accepted form.
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
    // RFC 3339 allows a space separator and a lower-case `t`/`z`.
    let normalised = s.replacen(' ', "T", 1).replace('t', "T").replace('z', "Z");
    if let Ok(t) = DateTime::parse_from_rfc3339(&normalised) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&normalised, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    // Offsets without a colon (`+0100`) and times without seconds (`T10:00+01:00`).
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

fn from_epoch(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// A JSON value: a string in any accepted form, or epoch seconds as a number.
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
            ("2026-12-28 00:40:07", "2026-12-28T00:40:07Z"),
            ("2026-12-28t00:40:07z", "2026-12-28T00:40:07Z"),
            ("2026-12-28T00:40", "2026-12-28T00:40:00Z"),
            ("2026-12-28", "2026-12-28T00:00:00Z"),
            ("1729449775", "2024-10-20T18:42:55Z"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_str(input), Some(utc(want)), "input {input}");
        }
        assert_eq!(
            parse_value(&json!(1729449775.5)),
            Some(utc("2024-10-20T18:42:55.5Z"))
        );
    }

    #[test]
    fn rejects_garbage_and_formats_with_z() {
        for bad in ["", "tomorrow", "2026-13-01T00:00:00Z", "12:00"] {
            assert_eq!(parse_str(bad), None, "input {bad:?}");
        }
        assert_eq!(parse_value(&json!(true)), None);
        assert_eq!(parse_value(&json!(1e300)), None);
        assert_eq!(
            format(utc("2026-12-28T00:40:07.9+00:00")),
            "2026-12-28T00:40:07Z"
        );
    }
}
