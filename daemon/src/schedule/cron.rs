//! Cron schedules: 5-field expressions (minute hour day-of-month month
//! day-of-week, names allowed) and the `@daily`-style macros, evaluated in
//! a timezone. Day-of-month and day-of-week combine with OR when both are
//! restricted, as classic cron does. DST follows the contract: a skipped
//! time fires at the first instant after the gap, a repeated time once.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Mutex;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed cron expression.
#[derive(Debug)]
pub struct Schedule {
    source: String,
    cron: croner::Cron,
    /// Occurrences already computed, by (zone, instant). Every account of a
    /// zone asks for the same instants, and the search is the expensive part
    /// of scheduling; the memo is bounded and purely an accelerator.
    memo: Mutex<Memo>,
}

impl Clone for Schedule {
    fn clone(&self) -> Schedule {
        Schedule {
            source: self.source.clone(),
            cron: self.cron.clone(),
            memo: Mutex::default(),
        }
    }
}

/// (hash of the zone's name, instant) → (zone name, next occurrence).
type Memo = HashMap<(u64, i64, i32), (String, Option<Timestamp>)>;

const MEMO_LIMIT: usize = 1 << 16;

fn zone_name(tz: &TimeZone) -> std::borrow::Cow<'_, str> {
    match tz.iana_name() {
        Some(n) => n.into(),
        None => format!("{tz:?}").into(),
    }
}

/// Macros the contract names, plus their usual synonyms.
const MACROS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

impl Schedule {
    /// Parses an expression (see `never_fires` for calendars that cannot occur).
    pub fn parse(source: &str) -> Result<Schedule, String> {
        let text = source.trim();
        if text.starts_with('@') {
            if !MACROS.contains(&text.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "invalid cron expression `{text}`: unknown macro, expected one of {}",
                    MACROS.join(", ")
                ));
            }
        } else {
            let fields = text.split_whitespace().count();
            if fields != 5 {
                return Err(format!(
                    "invalid cron expression `{text}`: expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
                ));
            }
        }
        let cron = croner::Cron::from_str(text).map_err(|e| {
            format!(
                "invalid cron expression `{text}`: {}",
                lowercase_first(&e.to_string())
            )
        })?;
        Ok(Schedule {
            source: text.to_string(),
            cron,
            memo: Mutex::default(),
        })
    }

    /// Whether no date matches (`0 0 30 2 *`). Such a schedule is valid and
    /// simply never fires; `validate` warns about it.
    pub fn never_fires(&self) -> bool {
        // Eight years from a leap year's start covers every calendar
        // combination (29 February included).
        let probe: Timestamp = "2024-01-01T00:00:00Z".parse().expect("constant");
        self.next_after(probe, &TimeZone::UTC).is_none()
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first occurrence strictly after `after`, in `tz`. `None` when
    /// the expression has no occurrence in the search horizon.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let name = zone_name(tz);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        let key = (h.finish(), after.as_second(), after.subsec_nanosecond());
        if let Ok(memo) = self.memo.lock()
            && let Some((n, next)) = memo.get(&key)
            && *n == *name
        {
            return *next;
        }
        let next = self.search(after, tz);
        if let Ok(mut memo) = self.memo.lock() {
            if memo.len() >= MEMO_LIMIT {
                memo.clear();
            }
            memo.insert(key, (name.into_owned(), next));
        }
        next
    }

    /// Walks the pattern's wall-clock (civil) times from `after`'s local
    /// time and maps each to an instant with the contract's DST rule
    /// (`local_instant`). The library's own zoned search applies that rule
    /// only to fixed-time patterns: for lists, steps and hourly patterns it
    /// runs a repeated hour twice and skips the times inside a gap.
    fn search(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut civil = after.to_zoned(tz.clone()).datetime();
        // A gap (at most a few hours) can hold many candidates that all
        // resolve to the same instant; a fold repeats at most one or two
        // hours. Anything beyond is a candidate after `after`.
        for _ in 0..10_000 {
            civil = self.cron.find_next_occurrence(&civil, false).ok()?;
            let instant = super::local_instant(tz, civil);
            if instant > after {
                return Some(instant);
            }
        }
        None
    }
}

fn lowercase_first(s: &str) -> String {
    let s = s.trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn run(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr).unwrap();
        let tz = TimeZone::get(tz).unwrap();
        let mut t = ts(from);
        let mut out = vec![];
        for _ in 0..n {
            t = s.next_after(t, &tz).unwrap();
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn day_fields_combine_with_or() {
        // 2026-01-13 is a Tuesday; Fridays are the 2nd, 9th, 16th.
        assert_eq!(
            run("0 9 13 * fri", "UTC", "2026-01-01T00:00:00Z", 4),
            [
                "2026-01-02T09:00:00Z",
                "2026-01-09T09:00:00Z",
                "2026-01-13T09:00:00Z",
                "2026-01-16T09:00:00Z"
            ]
        );
    }

    #[test]
    fn skipped_and_repeated_local_times() {
        assert_eq!(
            run("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
        );
        assert_eq!(
            run("30 1 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-24T23:30:00Z", "2026-10-26T00:30:00Z"]
        );
    }

    #[test]
    fn lists_steps_and_hourly_patterns_follow_the_same_dst_rule() {
        // 02:30 does not exist on 2026-03-08 in New York: 03:00 EDT instead.
        assert_eq!(
            run(
                "30 1,2 * * *",
                "America/New_York",
                "2026-03-08T00:00:00Z",
                2
            ),
            ["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z"]
        );
        // 01:30 happens twice on 2026-11-01: once, at the first (EDT).
        assert_eq!(
            run(
                "30 1,2 * * *",
                "America/New_York",
                "2026-11-01T00:00:00Z",
                2
            ),
            ["2026-11-01T05:30:00Z", "2026-11-01T07:30:00Z"]
        );
        // Hourly across Berlin's fall-back: local 02:00 fires once.
        assert_eq!(
            run("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z"
            ]
        );
        // Daily at the very start of the gap: fires at its end, not a day
        // later.
        assert_eq!(
            run("0 2 * * *", "America/New_York", "2025-03-08T07:00:00Z", 2),
            ["2025-03-09T07:00:00Z", "2025-03-10T06:00:00Z"]
        );
        // Every 20 minutes in a skipped hour: one firing at the gap's end.
        assert_eq!(
            run(
                "*/20 2 * * *",
                "America/New_York",
                "2026-03-08T00:00:00Z",
                2
            ),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
        );
    }

    #[test]
    fn rejects_what_is_not_a_five_field_cron() {
        assert!(
            Schedule::parse("0 9 * * * *")
                .unwrap_err()
                .contains("5 fields")
        );
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("@sometimes").unwrap_err().contains("macro"));
        assert!(Schedule::parse("0 0 30 2 *").unwrap().never_fires());
        let impossible = Schedule::parse("0 0 31 4 *").unwrap();
        assert_eq!(
            impossible.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
        assert!(!Schedule::parse("0 9 29 2 *").unwrap().never_fires());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Occurrences strictly increase and each one matches the pattern's
        /// minute and hour fields in local time, whatever zone and start.
        #[test]
        fn occurrences_increase_and_match(
            minute in 0i8..60, hour in 0i8..24, zone in 0usize..6,
            start in 1_700_000_000i64..1_900_000_000,
        ) {
            let zones = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "America/Santiago"];
            let tz = TimeZone::get(zones[zone]).unwrap();
            let s = Schedule::parse(&format!("{minute} {hour} * * *")).unwrap();
            let mut t = Timestamp::from_second(start).unwrap();
            for _ in 0..5 {
                let next = s.next_after(t, &tz).unwrap();
                prop_assert!(next > t);
                // At most one day and one DST shift later.
                prop_assert!(next.as_second() - t.as_second() <= 25 * 3600 + 60);
                let local = next.to_zoned(tz.clone());
                let exact = local.hour() == hour && local.minute() == minute;
                // Otherwise the wall time was skipped: the occurrence is the
                // transition, and the wall time just before it was earlier.
                let in_gap = !exact && {
                    let before = next.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap().to_zoned(tz.clone());
                    before.offset() != local.offset()
                };
                prop_assert!(exact || in_gap, "{} in {} for {:02}:{:02}", next, zones[zone], hour, minute);
                t = next;
            }
        }

        /// Arbitrary day and month combinations terminate, either with an
        /// occurrence on that very day or with none for impossible dates.
        #[test]
        fn any_calendar_terminates(dom in 1u8..32, month in 1u8..13) {
            let s = Schedule::parse(&format!("0 0 {dom} {month} *")).unwrap();
            let possible = jiff::civil::Date::new(2028, month as i8, dom as i8).is_ok();
            match s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC) {
                Some(next) => {
                    let d = next.to_zoned(TimeZone::UTC).date();
                    prop_assert_eq!((d.day() as u8, d.month() as u8), (dom, month));
                }
                None => prop_assert!(!possible && s.never_fires()),
            }
        }
    }
}
