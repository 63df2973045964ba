//! The escape matrix: what each isolation level blocks.
//!
//! `paddock-probe` (src/bin/paddock-probe.rs) runs as an app at some level and tries each
//! [`ATTEMPTS`] in turn, printing one line per attempt:
//!
//! ```text
//! paddock-probe attempt=read-secret result=escaped detail="read 17 bytes of /tmp/…/secret"
//! ```
//!
//! This module holds the attempt list, the line format (written by the probe, parsed from the
//! app's log by `tests/escape.rs` and `paddock bench`) and the matrix printer, so the probe, the
//! test and the bench agree on one definition.

use serde::Serialize;

/// Every attempt, in the order the probe makes them, with what it does.
pub const ATTEMPTS: &[(&str, &str)] = &[
    ("read-secret", "read a planted host file outside the app's dirs"),
    ("write-outside", "create a file outside its writable dirs"),
    ("list-processes", "see a host process in /proc"),
    ("signal-host", "kill a host process (SIGUSR1 to a victim sleep)"),
    ("connect-host", "TCP connect to a listener on the host's 127.0.0.1"),
    ("bind-port", "bind a TCP port the config does not allow"),
    ("ptrace", "PTRACE_ATTACH to a host process"),
    ("mount", "mount a tmpfs (on a scratch dir, unmounted at once)"),
    ("hostname", "change the hostname the host sees (restored at once)"),
    ("setuid", "gain capabilities by executing a setuid-root binary"),
    ("kernel-module", "init_module (with an invalid image: never loads one)"),
    ("fork-bomb", "fork 500 processes (killed and reaped after)"),
    ("memory-bomb", "touch 256 MiB (released after)"),
    ("cpu-hog", "spin for 1 s: more than 0.5 of a core is an escape"),
];

/// The line prefix the probe writes and the parser looks for.
pub const PREFIX: &str = "paddock-probe ";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The level stopped it.
    Blocked,
    /// It worked (and the probe undid it).
    Escaped,
    /// The probe could not tell (a setup problem, not a verdict).
    Error,
    /// Not attempted (a parameter was missing).
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Escaped => "escaped",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "blocked" => Outcome::Blocked,
            "escaped" => Outcome::Escaped,
            "error" => Outcome::Error,
            "skipped" => Outcome::Skipped,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptResult {
    pub attempt: String,
    pub result: Outcome,
    pub detail: String,
}

/// Formats one result line (without newline). Quotes and newlines in `detail` are replaced so a
/// line always parses back.
pub fn format_line(attempt: &str, result: Outcome, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect();
    format!(
        "{PREFIX}attempt={attempt} result={} detail=\"{detail}\"",
        result.as_str()
    )
}

/// Parses one line (log timestamp prefixes and other text before the marker are ignored).
pub fn parse_line(line: &str) -> Option<AttemptResult> {
    let at = line.find(PREFIX)?;
    let rest = &line[at + PREFIX.len()..];
    let rest = rest.strip_prefix("attempt=")?;
    let (attempt, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("result=")?;
    let (result, rest) = rest.split_once(' ')?;
    let detail = rest.strip_prefix("detail=\"")?.strip_suffix('"')?;
    Some(AttemptResult {
        attempt: attempt.to_string(),
        result: Outcome::parse(result)?,
        detail: detail.to_string(),
    })
}

/// Every result line of a log, in order (later lines for the same attempt win).
pub fn parse_report(text: &str) -> Vec<AttemptResult> {
    let mut out: Vec<AttemptResult> = vec![];
    for r in text.lines().filter_map(parse_line) {
        if let Some(prev) = out.iter_mut().find(|p| p.attempt == r.attempt) {
            *prev = r;
        } else {
            out.push(r);
        }
    }
    out
}

/// The attempts of [`ATTEMPTS`] that a report lacks.
pub fn missing(report: &[AttemptResult]) -> Vec<&'static str> {
    ATTEMPTS
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| !report.iter().any(|r| r.attempt == *a))
        .collect()
}

/// One level's column of the matrix: its report, or why it did not run.
#[derive(Clone, Debug, Serialize)]
pub struct LevelReport {
    pub level: String,
    /// `None` when the level did not run; `skipped` says why.
    pub results: Option<Vec<AttemptResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl LevelReport {
    /// "12/14 blocked", or the skip reason.
    pub fn summary(&self) -> String {
        match (&self.results, &self.skipped) {
            (Some(r), _) => format!(
                "{}/{} blocked",
                r.iter().filter(|x| x.result == Outcome::Blocked).count(),
                ATTEMPTS.len()
            ),
            (None, Some(why)) => format!("skipped: {why}"),
            (None, None) => "skipped".into(),
        }
    }
}

/// The matrix as an aligned table: one row per attempt, one column per level.
pub fn matrix(levels: &[LevelReport]) -> String {
    let w = ATTEMPTS.iter().map(|(a, _)| a.len()).max().unwrap_or(8);
    let mut s = format!("{:w$}", "attempt");
    for l in levels {
        s += &format!("  {:9}", l.level);
    }
    s.push('\n');
    for (a, _) in ATTEMPTS {
        s += &format!("{a:w$}");
        for l in levels {
            let cell = match &l.results {
                Some(r) => r
                    .iter()
                    .find(|x| x.attempt == *a)
                    .map_or("missing", |x| x.result.as_str()),
                None => "-",
            };
            s += &format!("  {cell:9}");
        }
        s.push('\n');
    }
    s += &format!("{:w$}", "blocked");
    for l in levels {
        let cell = match &l.results {
            Some(r) => format!(
                "{}/{}",
                r.iter().filter(|x| x.result == Outcome::Blocked).count(),
                ATTEMPTS.len()
            ),
            None => "skipped".into(),
        };
        s += &format!("  {cell:9}");
    }
    s.push('\n');
    for l in levels {
        if let Some(why) = &l.skipped {
            s += &format!("{}: skipped: {why}\n", l.level);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let l = format_line("mount", Outcome::Blocked, "EPERM: \"no\"\nway");
        let r = parse_line(&format!("2026-11-25T10:10:10.123Z {l}")).unwrap();
        assert_eq!(r.attempt, "mount");
        assert_eq!(r.result, Outcome::Blocked);
        assert_eq!(r.detail, "EPERM: 'no' way");
        assert!(parse_line("attempt=x result=maybe detail=\"\"").is_none());
        assert!(parse_line("hello").is_none());
    }

    #[test]
    fn report_and_matrix() {
        let text = ATTEMPTS
            .iter()
            .map(|(a, _)| format_line(a, Outcome::Blocked, "x"))
            .collect::<Vec<_>>()
            .join("\n");
        let r = parse_report(&text);
        assert!(missing(&r).is_empty());
        assert!(missing(&r[1..]).contains(&"read-secret"));
        let m = matrix(&[
            LevelReport {
                level: "none".into(),
                results: Some(r),
                skipped: None,
            },
            LevelReport {
                level: "sandbox".into(),
                results: None,
                skipped: Some("not available".into()),
            },
        ]);
        assert!(m.contains("14/14"), "{m}");
        assert!(m.contains("sandbox: skipped: not available"), "{m}");
    }
}
