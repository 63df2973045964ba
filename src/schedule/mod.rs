//! Scheduled apps: when an app with `schedule` (a cron expression) or `every` (a period) is due.
//! Pure logic over wall-clock times (milliseconds since the Unix epoch); the fleet core
//! (`crate::fleet::schedule`) turns them into monotonic timers, and the daemon keeps the last run
//! in the state directory (`record`). What the keys mean: docs/config.md#scheduled-apps.

pub mod cron;
pub mod record;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use std::time::Duration;

pub use cron::Cron;

/// Wall-clock time: milliseconds since the Unix epoch (UTC).
pub type Wall = i64;

/// The wall clock now.
pub fn wall_now() -> Wall {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A time zone for cron expressions: UTC, the host's (`local`, /etc/localtime) or a named
/// one from /usr/share/zoneinfo, read when the app file is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// As written in the file (`UTC`, `local`, `Europe/Paris`).
    pub name: String,
    tz: TimeZone,
}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// The largest TZif file paddock reads (real ones are a few KiB).
const MAX_TZIF: u64 = 256 * 1024;

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    /// `UTC`, `local` (the host's /etc/localtime) or an IANA name (a file under
    /// /usr/share/zoneinfo); the error says what is wrong.
    pub fn parse(name: &str) -> Result<Zone, String> {
        if name.eq_ignore_ascii_case("utc") {
            return Ok(Zone::utc());
        }
        if name == "local" {
            let tz = read_tzif("local", std::path::Path::new("/etc/localtime")).map_err(|e| {
                format!("\"local\" is the host's /etc/localtime: {e}; set the host's zone (ln -s /usr/share/zoneinfo/NAME /etc/localtime) or write timezone = \"UTC\"")
            })?;
            return Ok(Zone {
                name: name.into(),
                tz,
            });
        }
        let plain = !name.is_empty()
            && !name.starts_with('/')
            && name
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
        if !plain {
            return Err(format!(
                "\"{name}\" is not a time zone name; expected \"UTC\", \"local\" or a name such as \"Europe/Paris\""
            ));
        }
        let path = std::path::Path::new("/usr/share/zoneinfo").join(name);
        let tz = read_tzif(name, &path).map_err(|e| {
            format!("unknown time zone \"{name}\" ({e}); expected \"UTC\", \"local\" or a name from /usr/share/zoneinfo (Debian: the tzdata package)")
        })?;
        Ok(Zone {
            name: name.into(),
            tz,
        })
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// `t` as RFC 3339 with this zone's offset at that time.
    pub fn format(&self, t: Wall) -> String {
        match Timestamp::from_millisecond(t) {
            Ok(ts) => ts.display_with_offset(self.tz.to_offset(ts)).to_string(),
            Err(_) => t.to_string(),
        }
    }
}

fn read_tzif(name: &str, path: &std::path::Path) -> Result<TimeZone, String> {
    let data = crate::util::read_regular(path, MAX_TZIF)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    TimeZone::tzif(name, &data).map_err(|e| format!("{} is not a TZif file: {e}", path.display()))
}

/// When runs are due.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `schedule = "…"`, in the app's zone.
    Cron(Cron),
    /// `every = "…"`: at the multiples of the period since the Unix epoch (so `15m` runs at
    /// :00, :15, :30 and :45 of every hour, `24h` at 00:00 UTC).
    Every(Duration),
}

/// What to do when a run is due while the previous one is still under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// The due run is not started (counted and logged as skipped).
    #[default]
    Skip,
    /// It starts as soon as the running one ends (at most one waits; more are skipped).
    Queue,
}

/// A scheduled app's schedule (`schedule`/`every`, `timezone`, `overlap`, `catch_up`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleSpec {
    /// As written (`*/5 * * * *`, `every 15m`).
    pub text: String,
    #[serde(skip)]
    pub rule: Rule,
    pub timezone: Zone,
    pub overlap: Overlap,
    /// Run once at start when a run was missed while paddock was down.
    pub catch_up: bool,
}

impl ScheduleSpec {
    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: Wall) -> Option<Wall> {
        match &self.rule {
            Rule::Every(p) => {
                let p = (p.as_millis() as i64).max(1);
                Some((after.div_euclid(p) + 1).saturating_mul(p))
            }
            Rule::Cron(c) => {
                let ts = Timestamp::from_millisecond(after).ok()?;
                c.next_after(ts, self.timezone.tz())
                    .map(|t| t.as_millisecond())
            }
        }
    }
}

#[cfg(test)]
mod tests;
