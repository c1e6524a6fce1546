//! Go-style durations (`90s`, `15m`, `240h`, `1h30m`), the syntax cert-manager users already
//! write in `renewBefore`. One parser serves the CRDs and the command-line flags.

use std::time::Duration;

/// The OpenAPI pattern the CRDs use, so the apiserver rejects what [`parse`] would refuse.
pub const PATTERN: &str = "^([0-9]{1,9}(h|m|s))+$";

/// Parses `1h30m`, `90s`, `240h`. Units: `h`, `m`, `s`; at least one number-unit pair.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: use a number and a unit h, m or s, e.g. 90s, 15m, 1h30m"
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        if digits.is_empty() || digits.len() > 9 {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the same syntax (`1h30m`, `0s`), for defaults and messages.
pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let cases: &[(&str, Option<u64>)] = &[
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("240h", Some(864_000)),
            ("1h30m", Some(5400)),
            ("23h59m50s", Some(86_390)),
            ("0s", Some(0)),
            ("", None),
            ("10", None),
            ("h", None),
            ("1d", None),
            ("-5s", None),
            ("1.5h", None),
            ("1h 30m", None),
            ("9999999999h", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).ok().map(|d| d.as_secs()), *want, "{text:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [0, 59, 61, 3600, 5400, 86_390] {
            let text = format(Duration::from_secs(d));
            assert_eq!(parse(&text).unwrap().as_secs(), d, "{text}");
        }
    }
}
