//! Rotation windows (`spec.rotation.windows`, `--default-rotation-windows`): weekly periods in
//! a time zone when a scheduled renewal may start, and the revocation of the token it replaced
//! may happen. Pure functions of the time, for the lifecycle.
//!
//! Zones come from the IANA database bundled in the binary (the image has no zoneinfo), never
//! from the machine's, so that the operator and its tests agree everywhere. This is the one
//! place where chrono's time meets jiff's calendar arithmetic besides `crd::to_k8s_time`.

use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use jiff::civil::{Date, Time};
use jiff::tz::{Disambiguation, TimeZone, TimeZoneDatabase};

use crate::crd::{RotationWindow, Weekday};

/// What a renewal needs of its window besides the grace of the token it replaces: the mint,
/// the Secret, the restart of the consumers (coalesced for up to `--rollout-restart-interval`)
/// and their rollout.
pub const RENEWAL_BUDGET_MINUTES: i64 = 10;

/// The longest window: a week (a longer one would always be open).
const MAX_LENGTH_HOURS: i64 = 168;

static ZONES: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// One window, parsed.
#[derive(Clone, Debug)]
struct Window {
    /// Open on these weekdays (Monday first).
    days: [bool; 7],
    start: Time,
    length: Duration,
    zone_name: String,
    zone: TimeZone,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        (self.days, self.start, self.length, &self.zone_name)
            == (other.days, other.start, other.length, &other.zone_name)
    }
}

/// A set of windows; empty: no constraint (any time is inside).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Windows(Vec<Window>);

impl Windows {
    /// Parses windows as the spec (or the flag) writes them; `field` names them in errors.
    pub fn parse(spec: &[RotationWindow], field: &str) -> Result<Self, String> {
        spec.iter()
            .enumerate()
            .map(|(i, w)| parse_one(w).map_err(|e| format!("{field}[{i}].{e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Windows)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses a window too short to hold a renewal whose replaced token keeps `grace`.
    pub fn check_room(&self, grace: Duration, field: &str) -> Result<(), String> {
        let need = grace + Duration::minutes(RENEWAL_BUDGET_MINUTES);
        match self.0.iter().position(|w| w.length < need) {
            None => Ok(()),
            Some(i) => Err(format!(
                "{field}[{i}].duration is {}m, shorter than a renewal needs (rotation.revokePreviousAfter plus {RENEWAL_BUDGET_MINUTES}m = {}m); lengthen the window or shorten revokePreviousAfter",
                self.0[i].length.num_minutes(),
                need.num_minutes()
            )),
        }
    }

    /// Whether `t` is inside a window (always, without windows).
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.first_start(t, Duration::zero()) == Some(t)
    }

    /// The first instant at or after `t` inside a window that stays open for at least `need`
    /// more: `t` itself without windows; None if no window can hold `need`.
    pub fn first_start(&self, t: DateTime<Utc>, need: Duration) -> Option<DateTime<Utc>> {
        if self.0.is_empty() {
            return Some(t);
        }
        self.0
            .iter()
            .flat_map(|w| w.occurrences(t))
            .filter_map(|(open, close)| {
                let at = open.max(t);
                (at + need <= close && at < close).then_some(at)
            })
            .min()
    }
}

impl Window {
    /// Every opening that can matter at `t` (from eight days before to eight days after, as a
    /// window lasts at most a week), as [open, close) instants.
    fn occurrences(
        &self,
        t: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> {
        let today = jiff::Timestamp::new(t.timestamp(), 0)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.zone.clone())
            .date();
        (-8..=8).filter_map(move |offset| {
            let date: Date = today.checked_add(jiff::Span::new().days(offset)).ok()?;
            let weekday = date.weekday().to_monday_zero_offset() as usize;
            if !self.days[weekday] {
                return None;
            }
            // A start skipped by a daylight-saving change opens at the same offset after it;
            // a repeated one, at its first occurrence.
            let open = self
                .zone
                .to_ambiguous_timestamp(date.to_datetime(self.start))
                .disambiguate(Disambiguation::Compatible)
                .ok()?;
            let open = DateTime::from_timestamp(open.as_second(), 0)?;
            Some((open, open + self.length))
        })
    }
}

fn parse_one(w: &RotationWindow) -> Result<Window, String> {
    let start = parse_start(&w.start).ok_or_else(|| {
        format!(
            "start {:?} is not a time of day; use HH:MM on a 24-hour clock, such as 02:00",
            short(&w.start)
        )
    })?;
    let length = crate::duration::parse(&w.duration).map_err(|e| format!("duration: {e}"))?;
    let length = Duration::from_std(length)
        .ok()
        .filter(|l| *l > Duration::zero() && *l <= Duration::hours(MAX_LENGTH_HOURS))
        .ok_or_else(|| {
            format!(
                "duration {} must be longer than 0 and at most {MAX_LENGTH_HOURS}h",
                short(&w.duration)
            )
        })?;
    let zone_name = w.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
    let zone = zone(&zone_name)?;
    let mut days = [w.days.is_empty(); 7];
    for d in &w.days {
        days[weekday_index(*d)] = true;
    }
    Ok(Window {
        days,
        start,
        length,
        zone_name,
        zone,
    })
}

/// The zone of an IANA name, from the bundled database.
fn zone(name: &str) -> Result<TimeZone, String> {
    ZONES.get(name).map_err(|_| {
        format!(
            "timeZone {:?} is not a time zone the operator knows; use an IANA name such as Europe/Madrid or America/New_York",
            short(name)
        )
    })
}

fn parse_start(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

fn weekday_index(d: Weekday) -> usize {
    match d {
        Weekday::Mon => 0,
        Weekday::Tue => 1,
        Weekday::Wed => 2,
        Weekday::Thu => 3,
        Weekday::Fri => 4,
        Weekday::Sat => 5,
        Weekday::Sun => 6,
    }
}

/// User input in an error message, cut short.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(days: &[Weekday], start: &str, duration: &str, zone: Option<&str>) -> RotationWindow {
        RotationWindow {
            days: days.to_vec(),
            start: start.into(),
            duration: duration.into(),
            time_zone: zone.map(str::to_owned),
        }
    }

    fn windows(spec: &[RotationWindow]) -> Windows {
        Windows::parse(spec, "spec.rotation.windows").unwrap()
    }

    #[test]
    fn no_windows_means_any_time() {
        let w = Windows::default();
        let now = t("2026-12-07T10:11:12Z");
        assert_eq!(w.first_start(now, Duration::hours(5)), Some(now));
        assert!(w.contains(now));
    }

    #[test]
    fn a_weekend_window_in_utc() {
        // 2026-12-07 is a Monday.
        let w = windows(&[window(&[Weekday::Sat, Weekday::Sun], "02:00", "4h", None)]);
        let monday = t("2026-12-07T10:00:00Z");
        assert!(!w.contains(monday));
        assert_eq!(
            w.first_start(monday, Duration::hours(1)),
            Some(t("2026-12-12T02:00:00Z"))
        );
        // Inside, with room: now; without room for what is needed: the next opening.
        let saturday = t("2026-12-12T04:30:00Z");
        assert!(w.contains(saturday));
        assert_eq!(w.first_start(saturday, Duration::hours(1)), Some(saturday));
        assert_eq!(
            w.first_start(saturday, Duration::hours(2)),
            Some(t("2026-12-13T02:00:00Z"))
        );
        // The end is outside.
        assert!(!w.contains(t("2026-12-12T06:00:00Z")));
        assert!(w.contains(t("2026-12-12T05:59:59Z")));
    }

    #[test]
    fn every_day_and_across_midnight() {
        let w = windows(&[window(&[], "22:00", "4h", None)]);
        // 01:00 is inside the window that opened at 22:00 the day before.
        assert!(w.contains(t("2026-12-08T01:00:00Z")));
        assert!(!w.contains(t("2026-12-08T02:00:00Z")));
        assert_eq!(
            w.first_start(t("2026-12-08T02:00:00Z"), Duration::zero()),
            Some(t("2026-12-08T22:00:00Z"))
        );
    }

    #[test]
    fn a_zone_with_daylight_saving_across_its_changes() {
        // Europe/Madrid: UTC+1 in winter, UTC+2 from 2026-03-29 (02:00 skipped to 03:00) to
        // 2026-10-25 (03:00 back to 02:00).
        let w = windows(&[window(
            &[Weekday::Sun],
            "02:30",
            "2h",
            Some("Europe/Madrid"),
        )]);
        // The Sunday before the spring change: 02:30+01:00.
        assert_eq!(
            w.first_start(t("2026-03-21T12:00:00Z"), Duration::zero()),
            Some(t("2026-03-22T01:30:00Z"))
        );
        // The change itself: 02:30 does not exist; the window opens at 03:30+02:00, the same
        // offset after the gap.
        assert_eq!(
            w.first_start(t("2026-03-28T12:00:00Z"), Duration::zero()),
            Some(t("2026-03-29T01:30:00Z"))
        );
        // The Sunday after: 02:30+02:00.
        assert_eq!(
            w.first_start(t("2026-04-01T12:00:00Z"), Duration::zero()),
            Some(t("2026-04-05T00:30:00Z"))
        );
        // Autumn: 02:30 happens twice; the window opens at the first (+02:00) and lasts two
        // real hours.
        let open = t("2026-10-25T00:30:00Z");
        assert_eq!(
            w.first_start(t("2026-10-24T12:00:00Z"), Duration::zero()),
            Some(open)
        );
        assert!(w.contains(open + Duration::minutes(119)));
        assert!(!w.contains(open + Duration::minutes(120)));
        // And in winter again, +01:00.
        assert_eq!(
            w.first_start(t("2026-10-26T12:00:00Z"), Duration::zero()),
            Some(t("2026-11-01T01:30:00Z"))
        );
    }

    #[test]
    fn the_earliest_of_several_windows() {
        let w = windows(&[
            window(&[Weekday::Wed], "01:00", "1h", Some("America/New_York")),
            window(&[Weekday::Tue], "23:00", "1h", Some("Asia/Tokyo")),
        ]);
        // Tue 23:00 Tokyo = Tue 14:00 UTC; Wed 01:00 New York = Wed 06:00 UTC.
        assert_eq!(
            w.first_start(t("2026-12-07T00:00:00Z"), Duration::zero()),
            Some(t("2026-12-08T14:00:00Z"))
        );
        assert_eq!(
            w.first_start(t("2026-12-08T15:00:00Z"), Duration::zero()),
            Some(t("2026-12-09T06:00:00Z"))
        );
    }

    #[test]
    fn bad_windows_say_what_to_fix() {
        let err = |w: RotationWindow| Windows::parse(&[w], "spec.rotation.windows").unwrap_err();
        let e = err(window(&[], "25:00", "1h", None));
        assert!(e.starts_with("spec.rotation.windows[0].start"), "{e}");
        let e = err(window(&[], "02:00", "169h", None));
        assert!(e.contains("[0].duration") && e.contains("168h"), "{e}");
        let e = err(window(&[], "02:00", "1h", Some("Mars/Olympus_Mons")));
        assert!(e.contains("[0].timeZone") || e.contains("timeZone"), "{e}");
        assert!(e.contains("Europe/Madrid"), "{e}");
        let w = windows(&[window(&[], "02:00", "30m", None)]);
        let e = w
            .check_room(Duration::hours(1), "spec.rotation.windows")
            .unwrap_err();
        assert!(e.contains("[0].duration") && e.contains("70m"), "{e}");
        assert!(w.check_room(Duration::minutes(20), "x").is_ok());
    }

    #[test]
    fn zones_come_from_the_bundled_database() {
        // Not from the machine's zoneinfo: a FROM-scratch image has none.
        assert!(ZONES.get("Europe/Madrid").is_ok());
        assert!(ZONES.get("Australia/Lord_Howe").is_ok());
    }
}
