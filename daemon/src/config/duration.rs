//! Durations as playbooks write them: an integer and a unit (`90d`, `12h`,
//! `2w`, `30m`). Days and weeks are calendar-free fixed spans of 24 hours
//! here; the only calendar-aware offset (`on.date`) handles days itself.

use std::fmt;
use std::str::FromStr;

/// A non-negative span of whole minutes, parsed from `N{m,h,d,w}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    minutes: i64,
    unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl Unit {
    fn minutes(self) -> i64 {
        match self {
            Unit::Minutes => 1,
            Unit::Hours => 60,
            Unit::Days => 24 * 60,
            Unit::Weeks => 7 * 24 * 60,
        }
    }
    fn suffix(self) -> char {
        match self {
            Unit::Minutes => 'm',
            Unit::Hours => 'h',
            Unit::Days => 'd',
            Unit::Weeks => 'w',
        }
    }
}

/// Why a duration did not parse; the message is shown to a playbook author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration `{0}`: expected an integer and a unit (m, h, d, w), like `90d`")]
    Syntax(String),
    #[error("invalid duration `{0}`: unknown unit `{1}`, expected m, h, d or w")]
    Unit(String, String),
    #[error("invalid duration `{0}`: too large")]
    Overflow(String),
}

/// Ten thousand years: far beyond any engagement model, small enough that
/// adding it to any timestamp we accept never overflows.
const MAX_MINUTES: i64 = 10_000 * 366 * 24 * 60;

impl Duration {
    pub const ZERO: Duration = Duration {
        minutes: 0,
        unit: Unit::Minutes,
    };

    pub fn from_minutes(minutes: i64) -> Duration {
        Duration {
            minutes,
            unit: Unit::Minutes,
        }
    }

    pub fn minutes(self) -> i64 {
        self.minutes
    }

    pub fn seconds(self) -> i64 {
        self.minutes * 60
    }

    pub fn unit(self) -> Unit {
        self.unit
    }

    /// Whole calendar days when the duration was written in days or weeks.
    pub fn whole_days(self) -> Option<i64> {
        match self.unit {
            Unit::Days | Unit::Weeks => Some(self.minutes / (24 * 60)),
            _ => None,
        }
    }

    pub fn span(self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(self.seconds())
    }
}

/// Parses a duration that may be negative (`-90d`), as `on.offset` allows.
pub fn parse_signed(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    match trimmed.strip_prefix('-') {
        Some(rest) => {
            let d: Duration = rest.trim_start_matches('+').parse().map_err(|e| match e {
                DurationError::Syntax(_) => DurationError::Syntax(text.to_string()),
                other => other,
            })?;
            Ok(Duration {
                minutes: -d.minutes,
                unit: d.unit,
            })
        }
        None => trimmed.trim_start_matches('+').parse(),
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(DurationError::Syntax(text.to_string()));
        }
        let unit = match unit {
            "m" => Unit::Minutes,
            "h" => Unit::Hours,
            "d" => Unit::Days,
            "w" => Unit::Weeks,
            "" => return Err(DurationError::Syntax(text.to_string())),
            other => return Err(DurationError::Unit(text.to_string(), other.to_string())),
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_string()))?;
        let minutes = n
            .checked_mul(unit.minutes())
            .filter(|m| *m <= MAX_MINUTES)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
        Ok(Duration { minutes, unit })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minutes < 0 { "-" } else { "" };
        let n = self.minutes.abs() / self.unit.minutes();
        write!(f, "{sign}{n}{}", self.unit.suffix())
    }
}

/// A daemon setting's interval: a whole number and a unit (`ms`, `s`, `m`,
/// `h`, `d`), such as `30s` or `3d`. Unlike playbook durations it may be
/// shorter than a minute (timeouts), and has no calendar meaning.
pub fn interval(text: &str) -> Result<jiff::SignedDuration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid interval `{text}`: expected a number and a unit, such as `500ms`, `30s`, `5m`, `1h` or `3d`"
        )
    };
    let n: i64 = n.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms)
        .map(jiff::SignedDuration::from_millis)
        .ok_or_else(|| format!("interval `{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!("30m".parse::<Duration>().unwrap().minutes(), 30);
        assert_eq!("12h".parse::<Duration>().unwrap().minutes(), 720);
        assert_eq!("90d".parse::<Duration>().unwrap().minutes(), 90 * 1440);
        assert_eq!("2w".parse::<Duration>().unwrap().minutes(), 2 * 7 * 1440);
        assert_eq!(parse_signed("-90d").unwrap().minutes(), -90 * 1440);
    }

    #[test]
    fn rejects_what_a_typo_produces() {
        assert!(matches!("7x".parse::<Duration>(), Err(DurationError::Unit(_, u)) if u == "x"));
        assert!(matches!(
            "7".parse::<Duration>(),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            "d".parse::<Duration>(),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            "-7d".parse::<Duration>(),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            "1.5d".parse::<Duration>(),
            Err(DurationError::Unit(_, _))
        ));
        assert!(matches!(
            "99999999999999999999d".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
    }

    proptest! {
        #[test]
        fn display_round_trips(n in 0i64..100_000, unit in 0usize..4) {
            let suffix = ["m", "h", "d", "w"][unit];
            let text = format!("{n}{suffix}");
            let d: Duration = text.parse().unwrap();
            prop_assert_eq!(d.to_string(), text);
            prop_assert_eq!(parse_signed(&format!("-{n}{suffix}")).unwrap().minutes(), -d.minutes());
        }

        #[test]
        fn larger_units_are_exact_multiples(n in 0i64..10_000) {
            let m: Duration = format!("{}m", n * 10080).parse().unwrap();
            let h: Duration = format!("{}h", n * 168).parse().unwrap();
            let d: Duration = format!("{}d", n * 7).parse().unwrap();
            let w: Duration = format!("{n}w").parse().unwrap();
            prop_assert_eq!(m.minutes(), w.minutes());
            prop_assert_eq!(h.minutes(), w.minutes());
            prop_assert_eq!(d.minutes(), w.minutes());
            prop_assert_eq!(d.whole_days(), Some(n * 7));
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<Duration>();
            let _ = parse_signed(&s);
        }
    }

    #[test]
    fn intervals_take_a_unit_and_reject_the_rest() {
        assert_eq!(
            interval("500ms"),
            Ok(jiff::SignedDuration::from_millis(500))
        );
        assert_eq!(interval("30s"), Ok(jiff::SignedDuration::from_secs(30)));
        assert_eq!(interval("3d"), Ok(jiff::SignedDuration::from_hours(72)));
        for bad in ["", "30", "s", "1w", "-1s", "1.5h"] {
            assert!(interval(bad).is_err(), "{bad}");
        }
    }
}
