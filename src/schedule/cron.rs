//! Cron expressions: the classic five fields (minute, hour, day of month, month, day of week)
//! with `*`, lists, ranges, steps, month and day names, the `@hourly` … `@yearly` shorthands,
//! and the classic rule that when both day fields are restricted, a day matching either runs.
//! `next_after` walks civil time in a time zone (jiff's rules), so DST changes are handled the
//! way docs/config.md#scheduled-apps says.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// A parsed cron expression: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    /// The day-of-month field starts with `*` (Vixie cron's rule: it does not restrict).
    days_star: bool,
    weekdays_star: bool,
}

struct Field {
    n: usize,
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Field; 5] = [
    Field {
        n: 1,
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        n: 2,
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        n: 3,
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        n: 4,
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    Field {
        n: 5,
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &DAYS,
    },
];

/// The shorthands and what they stand for.
const SHORTHANDS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let base = self.min; // names count from the field's first value (jan = 1, sun = 0)
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(base + i as u32);
        }
        let n: u32 = s.parse().map_err(|_| {
            let names = if self.names.is_empty() {
                String::new()
            } else {
                format!(
                    " or a name ({}…{})",
                    self.names[0],
                    self.names[self.names.len() - 1]
                )
            };
            format!(
                "field {} ({}) \"{s}\" is not a number{names}",
                self.n, self.name
            )
        })?;
        if n < self.min || n > self.max {
            return Err(format!(
                "field {} ({}) \"{s}\" is out of range {}-{}",
                self.n, self.name, self.min, self.max
            ));
        }
        Ok(n)
    }

    /// The field's values as a bit set.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let err = |what: &str| format!("field {} ({}) \"{part}\": {what}", self.n, self.name);
            if part.is_empty() {
                return Err(format!(
                    "field {} ({}) \"{text}\" has an empty list item",
                    self.n, self.name
                ));
            }
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .map_err(|_| err("the step after / must be a number"))?;
                    if step == 0 {
                        return Err(err("the step after / must be at least 1"));
                    }
                    (r, step)
                }
                None => (part, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(err("a range goes from the lower value to the higher"));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `5/15` means from 5 to the end, every 15.
                (a, if part.contains('/') { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v = v.saturating_add(step);
            }
        }
        Ok(bits)
    }
}

impl Cron {
    /// Parses an expression; the error names the field and what is wrong with it.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expr = expr.trim();
        let expanded = if expr.starts_with('@') {
            match SHORTHANDS
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(expr))
            {
                Some((_, v)) => *v,
                None if expr.eq_ignore_ascii_case("@reboot") => {
                    return Err("\"@reboot\" is not a schedule here: an app that should run once at boot is an app with autostart = true and [restart] policy = \"on-failure\"".into());
                }
                None => {
                    return Err(format!(
                        "unknown shorthand \"{expr}\"; expected one of @hourly, @daily, @weekly, @monthly, @yearly (or five fields)"
                    ));
                }
            }
        } else {
            expr
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            let extra = if parts.len() == 6 {
                " (a seconds or year field is not supported)"
            } else {
                ""
            };
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}{extra}",
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        for (i, f) in FIELDS.iter().enumerate() {
            bits[i] = f.parse(parts[i])?;
        }
        let mut weekdays = bits[4] as u8 & 0x7f;
        if bits[4] & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        let c = Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays,
            days_star: parts[2].starts_with('*'),
            weekdays_star: parts[4].starts_with('*'),
        };
        c.check_possible(parts[2], parts[3])?;
        Ok(c)
    }

    /// A day-of-month that no chosen month has (`30 2`, `31 4,6`) never runs: an error, not a
    /// schedule that silently never fires.
    fn check_possible(&self, days: &str, months: &str) -> Result<(), String> {
        if self.days_star || !self.weekdays_star {
            return Ok(()); // any day, or the day of week also decides
        }
        const LONGEST: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let possible = (1..=12)
            .filter(|m| self.months & (1 << m) != 0)
            .any(|m| (1..=LONGEST[m as usize]).any(|d| self.days & (1 << d) != 0));
        if possible {
            Ok(())
        } else {
            Err(format!(
                "day-of-month \"{days}\" never falls in month \"{months}\": this schedule would never run"
            ))
        }
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_star, self.weekdays_star) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            // Both restricted: either one (the classic cron rule).
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `after` that the expression matches in `tz`, at second 0.
    /// A local time skipped by a DST change counts as the time that far past the change (02:30
    /// on a spring-forward night is 03:30); a local time that occurs twice counts once, at its
    /// first occurrence. `None` only when nothing matches within 9 years (never, once `parse`
    /// accepted the expression).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let civil = tz.to_datetime(after);
        let mut date = civil.date();
        let first = (civil.hour(), civil.minute());
        for day in 0..(9 * 366) {
            if self.day_matches(date) {
                for h in (0..24i8).filter(|h| self.hours & (1 << h) != 0) {
                    for m in (0..60i8).filter(|m| self.minutes & (1 << m) != 0) {
                        if day == 0 && (h, m) < first {
                            continue; // before `after` in civil time: before it in time too
                        }
                        let Ok(t) = tz.to_ambiguous_timestamp(date.at(h, m, 0, 0)).compatible()
                        else {
                            continue;
                        };
                        if t > after {
                            return Some(t);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}
