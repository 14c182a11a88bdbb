//! Send windows: the days and local hours during which an email may go out.

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use super::at_local;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    /// Allowed days, indexed Monday = 0.
    days: [bool; 7],
    /// Start and end as minutes after local midnight; end exclusive.
    start: (i8, i8),
    end: Option<(i8, i8)>,
}

pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl SendWindow {
    /// `days`: names from `DAY_NAMES`; `hours`: `HH:MM-HH:MM`.
    pub fn parse(days: Option<&[String]>, hours: Option<&str>) -> Result<SendWindow, String> {
        let mut allowed = [days.is_none(); 7];
        for d in days.unwrap_or_default() {
            let name = d.trim().to_ascii_lowercase();
            let i = DAY_NAMES
                .iter()
                .position(|n| *n == name || long_name(n) == name)
                .ok_or_else(|| {
                    format!(
                        "unknown day `{d}`, expected one of {}",
                        DAY_NAMES.join(", ")
                    )
                })?;
            allowed[i] = true;
        }
        if !allowed.iter().any(|d| *d) {
            return Err("send window allows no day at all".to_string());
        }
        let (start, end) = match hours {
            None => ((0, 0), None),
            Some(h) => {
                let bad = || {
                    format!("invalid hours `{h}`: expected `HH:MM-HH:MM`, such as `09:00-17:00`")
                };
                let (a, b) = h.split_once('-').ok_or_else(bad)?;
                let a = super::parse_hhmm(a).ok_or_else(bad)?;
                let b = if b.trim() == "24:00" {
                    None
                } else {
                    Some(super::parse_hhmm(b).ok_or_else(bad)?)
                };
                if let Some(b) = b
                    && b <= a
                {
                    return Err(format!(
                        "invalid hours `{h}`: the end must be after the start"
                    ));
                }
                (a, b)
            }
        };
        Ok(SendWindow {
            days: allowed,
            start,
            end,
        })
    }

    /// The first instant at or after `t` inside the window, in `tz`.
    pub fn next_open(&self, t: Timestamp, tz: &TimeZone) -> Timestamp {
        let mut date = t.to_zoned(tz.clone()).date();
        for _ in 0..9 {
            if self.days[weekday_index(date.weekday())] {
                let open = at_local(tz, date, self.start.0, self.start.1);
                let close = match self.end {
                    Some((h, m)) => at_local(tz, date, h, m),
                    None => match date.tomorrow() {
                        Ok(next) => at_local(tz, next, 0, 0),
                        Err(_) => Timestamp::MAX,
                    },
                };
                if t < open {
                    return open;
                }
                if t < close {
                    return t;
                }
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => break,
            }
        }
        t
    }
}

fn long_name(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

fn weekday_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn weekdays() -> SendWindow {
        let days: Vec<String> = ["mon", "tue", "wed", "thu", "fri"]
            .map(String::from)
            .to_vec();
        SendWindow::parse(Some(&days), Some("09:00-17:00")).unwrap()
    }

    #[test]
    fn saturday_waits_for_monday_morning_in_the_recipients_zone() {
        let ny = TimeZone::get("America/New_York").unwrap();
        // Saturday 2026-01-10 12:00 New York.
        assert_eq!(
            weekdays().next_open(ts("2026-01-10T17:00:00Z"), &ny),
            ts("2026-01-12T14:00:00Z")
        );
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(
            weekdays().next_open(ts("2026-01-10T17:00:00Z"), &tokyo),
            ts("2026-01-12T00:00:00Z")
        );
    }

    #[test]
    fn inside_stays_and_end_is_exclusive() {
        let utc = TimeZone::UTC;
        assert_eq!(
            weekdays().next_open(ts("2026-01-12T10:00:00Z"), &utc),
            ts("2026-01-12T10:00:00Z")
        );
        assert_eq!(
            weekdays().next_open(ts("2026-01-12T17:00:00Z"), &utc),
            ts("2026-01-13T09:00:00Z")
        );
        assert_eq!(
            weekdays().next_open(ts("2026-01-16T17:00:00Z"), &utc),
            ts("2026-01-19T09:00:00Z")
        );
    }

    fn inside(w: &SendWindow, t: Timestamp, tz: &TimeZone) -> bool {
        let local = t.to_zoned(tz.clone());
        let day = w.days[weekday_index(local.date().weekday())];
        let minute = (local.hour(), local.minute());
        let end = w.end.unwrap_or((24, 0));
        day && minute >= w.start && minute < end
    }

    proptest::proptest! {
        /// The result is never earlier, always inside the window, and no
        /// minute inside the window between the two was skipped.
        #[test]
        fn next_open_is_the_first_instant_inside(
            start in 1_700_000_000i64..1_900_000_000, zone in 0usize..5, days in 1u8..128, from_h in 0i8..23,
        ) {
            let zones = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kathmandu"];
            let tz = TimeZone::get(zones[zone]).unwrap();
            let names: Vec<String> = (0..7).filter(|i| days & (1 << i) != 0).map(|i| DAY_NAMES[i].to_string()).collect();
            let hours = format!("{from_h:02}:00-{:02}:30", from_h + 1);
            let w = SendWindow::parse(Some(&names), Some(&hours)).unwrap();
            let t = Timestamp::from_second(start).unwrap();
            let open = w.next_open(t, &tz);
            proptest::prop_assert!(open >= t);
            proptest::prop_assert!(inside(&w, open, &tz), "{} not inside {:?} in {}", open, hours, zones[zone]);
            let mut probe = t;
            while probe < open {
                proptest::prop_assert!(!inside(&w, probe, &tz), "{} was inside but skipped", probe);
                probe = probe.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
            }
        }
    }

    #[test]
    fn rejects_nonsense() {
        assert!(SendWindow::parse(None, Some("17:00-09:00")).is_err());
        assert!(SendWindow::parse(Some(&["funday".to_string()]), None).is_err());
        assert!(SendWindow::parse(None, Some("9-5")).is_err());
    }
}
