//! Scheduling arithmetic: cron occurrences, send windows and local times of
//! day, in any IANA timezone. Pure functions of their inputs: nothing here
//! reads a clock.

pub mod cron;
pub mod window;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// The instant of a local date and time in `tz`, the way the contract asks
/// for wall-clock times: a time skipped by a DST jump resolves to the first
/// instant after the gap, a repeated time to its first occurrence.
pub fn local_instant(tz: &TimeZone, dt: DateTime) -> Timestamp {
    let ambiguous = tz.to_ambiguous_timestamp(dt);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } => {
            offset.to_timestamp(dt).unwrap_or(Timestamp::MAX)
        }
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).unwrap_or(Timestamp::MAX),
        AmbiguousOffset::Gap { before, .. } => {
            // Read with the offset in force before the jump, the wall time
            // lies at or after the transition; the transition itself is the
            // first instant after the gap. `preceding` excludes its bound,
            // and a wall time at the very start of the gap (02:00 when 02:00
            // becomes 03:00) reads as the transition itself.
            let past = before.to_timestamp(dt).unwrap_or(Timestamp::MAX);
            let bound = past
                .checked_add(jiff::SignedDuration::from_nanos(1))
                .unwrap_or(past);
            tz.preceding(bound)
                .next()
                .map(|t| t.timestamp())
                .unwrap_or(past)
        }
    }
}

/// Local `HH:MM` at `date` in `tz`.
pub fn at_local(tz: &TimeZone, date: Date, hour: i8, minute: i8) -> Timestamp {
    local_instant(tz, date.at(hour, minute, 0, 0))
}

/// Parses `HH:MM` (24-hour).
pub fn parse_hhmm(text: &str) -> Option<(i8, i8)> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn gap_resolves_to_first_instant_after_it() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let d = Date::new(2026, 3, 8).unwrap();
        assert_eq!(at_local(&ny, d, 2, 30), ts("2026-03-08T07:00:00Z"));
        // The very start of the gap (found by the cron property test: a
        // daily 02:00 was skipped on the day clocks go forward).
        assert_eq!(at_local(&ny, d, 2, 0), ts("2026-03-08T07:00:00Z"));
        assert_eq!(at_local(&ny, d, 3, 0), ts("2026-03-08T07:00:00Z"));
        assert_eq!(at_local(&ny, d, 1, 59), ts("2026-03-08T06:59:00Z"));
    }

    #[test]
    fn fold_resolves_to_first_occurrence() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let d = Date::new(2026, 10, 25).unwrap();
        assert_eq!(at_local(&berlin, d, 2, 30), ts("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn parses_times_of_day() {
        assert_eq!(parse_hhmm("09:00"), Some((9, 0)));
        assert_eq!(parse_hhmm("9:30"), Some((9, 30)));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("12:60"), None);
        assert_eq!(parse_hhmm("noon"), None);
    }
}
