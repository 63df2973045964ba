//! The pure parts of `paddock top`: rows read leniently from the status JSON, CPU % from
//! `cpu_usec` deltas, sorting, filtering and the dependency tree. No terminal, no socket.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// The longest text kept of any field paddock sends (names, states, messages): the table cuts
/// further to its column widths.
pub const MAX_FIELD: usize = 256;

/// One app as `top` shows it, read from one entry of `GET /v1/apps`. Every field is optional in
/// spirit: a missing or odd field reads as empty, never as an error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub name: String,
    pub state: String,
    pub level: String,
    /// `healthy`, `unhealthy`, `unknown`, or empty without a health check.
    pub health: String,
    pub pid: Option<i64>,
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub restarts: u64,
    pub uptime_secs: Option<f64>,
    pub message: String,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    /// CPU % over the last measured interval (100 = one core), once two samples exist.
    pub cpu_pct: Option<f64>,
}

/// Text made safe to draw: control characters (escape sequences included) become `?`, and it
/// is cut to `max` characters (with `…`).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    for (n, c) in s.chars().enumerate() {
        if n + 1 > max {
            out.pop();
            out.push('…');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => clean(s, MAX_FIELD),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn uint(v: &Value, key: &str) -> Option<u64> {
    let x = v.get(key)?;
    x.as_u64().or_else(|| {
        x.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.min(u64::MAX as f64) as u64)
    })
}

fn names(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str())
            .take(64)
            .map(|s| clean(s, MAX_FIELD))
            .collect(),
        _ => vec![],
    }
}

impl Row {
    /// Reads one app of the status JSON; `None` when it is not an object or has no name.
    pub fn from_json(v: &Value) -> Option<Row> {
        if !v.is_object() {
            return None;
        }
        let name = text(v, "name");
        if name.is_empty() {
            return None;
        }
        Some(Row {
            name,
            state: text(v, "state"),
            level: text(v, "isolation"),
            health: text(v, "health"),
            pid: v.get("pid").and_then(Value::as_i64),
            memory_bytes: uint(v, "memory_bytes"),
            cpu_usec: uint(v, "cpu_usec"),
            restarts: uint(v, "restarts").unwrap_or(0),
            uptime_secs: v
                .get("uptime_secs")
                .and_then(Value::as_f64)
                .filter(|f| f.is_finite() && *f >= 0.0),
            message: text(v, "message"),
            after: names(v, "after"),
            requires: names(v, "requires"),
            cpu_pct: None,
        })
    }
}

/// Reads the body of `GET /v1/apps` (`{"apps": [...]}`): the apps it could read, or why it
/// could not read any.
pub fn parse_apps(body: &str) -> Result<Vec<Row>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        format!(
            "paddock sent a status that is not JSON ({e}): {}",
            clean(body.trim(), 80)
        )
    })?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(clean(e, MAX_FIELD));
    }
    match v.get("apps") {
        Some(Value::Array(a)) => Ok(a.iter().filter_map(Row::from_json).collect()),
        _ => Err(format!(
            "paddock sent a status without an `apps` list: {}",
            clean(body.trim(), 80)
        )),
    }
}

/// One state change of `GET /v1/events`, read leniently: `(app, to)`.
pub fn parse_event(line: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let app = text(&v, "app");
    let to = text(&v, "to");
    (!app.is_empty() && !to.is_empty()).then_some((app, to))
}

/// The CPU samples of the apps: `cpu_usec` and when it was read, kept as the base of the next
/// percentage until at least `min_gap` has passed (so that a refresh brought forward by an event
/// does not turn a few milliseconds into a noisy figure).
#[derive(Default)]
pub struct CpuMeter {
    base: HashMap<String, (Instant, u64)>,
    last: HashMap<String, f64>,
}

impl CpuMeter {
    /// Sets `cpu_pct` on each row from its `cpu_usec` read at `now`.
    pub fn apply(&mut self, rows: &mut [Row], now: Instant, min_gap: Duration) {
        let mut seen = HashSet::new();
        for r in rows.iter_mut() {
            seen.insert(r.name.clone());
            let Some(usec) = r.cpu_usec else {
                self.base.remove(&r.name);
                self.last.remove(&r.name);
                continue;
            };
            match self.base.get(&r.name) {
                Some(&(t, before)) => {
                    let gap = now.saturating_duration_since(t);
                    if gap >= min_gap && !gap.is_zero() {
                        let pct = cpu_percent(before, usec, gap);
                        self.last.insert(r.name.clone(), pct);
                        self.base.insert(r.name.clone(), (now, usec));
                    }
                }
                None => {
                    self.base.insert(r.name.clone(), (now, usec));
                }
            }
            r.cpu_pct = self.last.get(&r.name).copied();
        }
        self.base.retain(|k, _| seen.contains(k));
        self.last.retain(|k, _| seen.contains(k));
    }
}

/// CPU % used between two readings of `cpu_usec` `gap` apart (100 = one core busy). A counter
/// that went backwards (the app's cgroup was made anew on a restart) counts from zero.
pub fn cpu_percent(before: u64, after: u64, gap: Duration) -> f64 {
    let used = if after >= before {
        after - before
    } else {
        after
    };
    let secs = gap.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    used as f64 / 1e6 / secs * 100.0
}

/// What the table can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Name,
    State,
    Level,
    Health,
    Cpu,
    Memory,
    Restarts,
    Uptime,
}

impl SortKey {
    pub const ALL: [SortKey; 8] = [
        SortKey::Name,
        SortKey::State,
        SortKey::Level,
        SortKey::Health,
        SortKey::Cpu,
        SortKey::Memory,
        SortKey::Restarts,
        SortKey::Uptime,
    ];

    pub fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }

    /// The column's header.
    pub fn title(self) -> &'static str {
        match self {
            SortKey::Name => "NAME",
            SortKey::State => "STATE",
            SortKey::Level => "LEVEL",
            SortKey::Health => "HEALTH",
            SortKey::Cpu => "CPU%",
            SortKey::Memory => "MEM",
            SortKey::Restarts => "RESTARTS",
            SortKey::Uptime => "UPTIME",
        }
    }
}

/// The order of two rows by `key` alone (missing figures sort first).
pub fn compare(a: &Row, b: &Row, key: SortKey) -> std::cmp::Ordering {
    let f = |x: Option<f64>| x.unwrap_or(-1.0);
    let o = match key {
        SortKey::Name => std::cmp::Ordering::Equal,
        SortKey::State => a.state.cmp(&b.state),
        SortKey::Level => a.level.cmp(&b.level),
        SortKey::Health => a.health.cmp(&b.health),
        SortKey::Cpu => f(a.cpu_pct).total_cmp(&f(b.cpu_pct)),
        SortKey::Memory => a.memory_bytes.cmp(&b.memory_bytes),
        SortKey::Restarts => a.restarts.cmp(&b.restarts),
        SortKey::Uptime => f(a.uptime_secs).total_cmp(&f(b.uptime_secs)),
    };
    if key == SortKey::Name {
        a.name.cmp(&b.name)
    } else {
        o
    }
}

/// Sorts rows by `key`, reversed when `desc`; ties by name, A to Z either way.
pub fn sort_rows(rows: &mut [Row], key: SortKey, desc: bool) {
    rows.sort_by(|a, b| {
        let o = compare(a, b, key);
        let o = if desc { o.reverse() } else { o };
        o.then_with(|| a.name.cmp(&b.name))
    });
}

/// Whether a row matches the filter: every word of it (case-insensitive) is in the app's name,
/// state, level or health.
pub fn matches(r: &Row, filter: &str) -> bool {
    let hay = format!("{} {} {} {}", r.name, r.state, r.level, r.health).to_lowercase();
    filter
        .to_lowercase()
        .split_whitespace()
        .all(|w| hay.contains(w))
}

/// One line of the view: an app, and in the tree view its depth and drawing prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Index into the rows.
    pub row: usize,
    /// `├─ `, `└─ ` and the bars above them (empty in the flat view and for roots).
    pub prefix: String,
}

/// The flat view: the rows that match, in the sort order.
pub fn flat(rows: &[Row], filter: &str) -> Vec<Line> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| matches(r, filter))
        .map(|(i, _)| Line {
            row: i,
            prefix: String::new(),
        })
        .collect()
}

/// The apps a dependency name stands for: the app of that name, or the instances of the group
/// (`web` → `web@0`, `web@1`, …).
fn resolve(dep: &str, by_name: &BTreeMap<&str, usize>) -> Vec<usize> {
    if let Some(&i) = by_name.get(dep) {
        return vec![i];
    }
    let prefix = format!("{dep}@");
    by_name
        .range(prefix.as_str()..)
        .take_while(|(n, _)| n.starts_with(&prefix))
        .map(|(_, &i)| i)
        .collect()
}

/// The dependency tree: apps without dependencies (among the apps listed) at the roots, each
/// app's dependants (what starts `after` or `requires` it) below it, siblings in the order of
/// `rows` (already sorted). An app with several dependencies is shown under each, its own
/// dependants only the first time (so the tree has at most one line per dependency, however the
/// apps are layered); a cycle is cut where it would repeat. With a filter, only matching apps
/// are listed (at their place).
pub fn tree(rows: &[Row], filter: &str) -> Vec<Line> {
    let by_name: BTreeMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![vec![]; rows.len()];
    let mut has_dep = vec![false; rows.len()];
    for (i, r) in rows.iter().enumerate() {
        let mut deps: Vec<usize> = r
            .after
            .iter()
            .chain(&r.requires)
            .flat_map(|d| resolve(d, &by_name))
            .filter(|&d| d != i)
            .collect();
        deps.sort_unstable();
        deps.dedup();
        for d in deps {
            children[d].push(i);
            has_dep[i] = true;
        }
    }
    for c in &mut children {
        c.sort_unstable();
    }
    let mut out = vec![];
    let mut shown = vec![false; rows.len()];
    let roots: Vec<usize> = (0..rows.len()).filter(|&i| !has_dep[i]).collect();
    let mut path = vec![];
    for (n, &r) in roots.iter().enumerate() {
        walk(
            r,
            "",
            false,
            n + 1 == roots.len(),
            &children,
            &mut path,
            &mut shown,
            &mut out,
        );
    }
    // Apps only reachable through a cycle have no root: list them at the top level.
    for i in 0..rows.len() {
        if !shown[i] {
            walk(
                i, "", false, true, &children, &mut path, &mut shown, &mut out,
            );
        }
    }
    out.retain(|l| matches(&rows[l.row], filter));
    out
}

#[allow(clippy::too_many_arguments)]
fn walk(
    i: usize,
    indent: &str,
    nested: bool,
    last: bool,
    children: &[Vec<usize>],
    path: &mut Vec<usize>,
    shown: &mut [bool],
    out: &mut Vec<Line>,
) {
    let prefix = if nested {
        format!("{indent}{}", if last { "└─ " } else { "├─ " })
    } else {
        String::new()
    };
    out.push(Line { row: i, prefix });
    let seen = std::mem::replace(&mut shown[i], true);
    if seen || path.contains(&i) || path.len() > 64 {
        return;
    }
    path.push(i);
    let below = if nested {
        format!("{indent}{}", if last { "   " } else { "│  " })
    } else {
        String::new()
    };
    let kids: Vec<usize> = children[i]
        .iter()
        .copied()
        .filter(|k| !path.contains(k))
        .collect();
    for (n, &k) in kids.iter().enumerate() {
        walk(
            k,
            &below,
            true,
            n + 1 == kids.len(),
            children,
            path,
            shown,
            out,
        );
    }
    path.pop();
}

/// Memory as the status table writes it, or `-`.
pub fn memory(b: Option<u64>) -> String {
    b.map(crate::util::human_bytes)
        .unwrap_or_else(|| "-".into())
}

/// CPU % with one decimal, or `-`.
pub fn cpu(p: Option<f64>) -> String {
    match p {
        Some(p) if p.is_finite() => format!("{p:.1}"),
        _ => "-".into(),
    }
}

/// Uptime as the status table writes it, or `-`.
pub fn uptime(s: Option<f64>) -> String {
    s.and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(crate::util::human_duration)
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(name: &str) -> Row {
        Row {
            name: name.into(),
            state: "READY".into(),
            ..Row::default()
        }
    }

    #[test]
    fn rows_are_read_leniently() {
        let r = Row::from_json(&json!({"name": "web", "state": "WEIRD", "health": 7,
            "memory_bytes": -5, "uptime_secs": "x", "restarts": 2.0, "after": ["db", 3]}))
        .unwrap();
        assert_eq!(r.state, "WEIRD");
        assert_eq!(r.health, "7");
        assert_eq!(r.memory_bytes, None);
        assert_eq!(r.uptime_secs, None);
        assert_eq!(r.restarts, 2);
        assert_eq!(r.after, vec!["db"]);
        assert!(Row::from_json(&json!({"state": "READY"})).is_none());
        assert!(Row::from_json(&json!([1])).is_none());
        let long = Row::from_json(&json!({"name": "n".repeat(10_000)})).unwrap();
        assert_eq!(long.name.chars().count(), MAX_FIELD);
        assert!(long.name.ends_with('…'));
        assert_eq!(clean("a\x1b[2Jb\n", 10), "a?[2Jb?");
        assert!(parse_apps("<html>").is_err());
        assert!(parse_apps("{\"apps\": 3}").is_err());
        assert_eq!(parse_apps("{\"error\": \"no\"}"), Err("no".into()));
        assert_eq!(
            parse_apps("{\"apps\": [{\"name\": \"a\"}, 5]}")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_event(r#"{"app":"a","from":"READY","to":"STOPPING"}"#),
            Some(("a".into(), "STOPPING".into()))
        );
        assert_eq!(parse_event(r#"{"lagged":3}"#), None);
        assert_eq!(uptime(Some(1e300)), "-");
        assert_eq!(uptime(Some(65.0)), "1m 05s");
        assert_eq!(memory(Some(2 << 20)), "2MiB");
    }

    #[test]
    fn cpu_percent_from_deltas() {
        assert_eq!(cpu_percent(0, 500_000, Duration::from_secs(1)), 50.0);
        assert_eq!(
            cpu_percent(1_000_000, 3_000_000, Duration::from_secs(1)),
            200.0
        );
        // A restarted app's counter starts again from zero.
        assert_eq!(
            cpu_percent(9_000_000, 250_000, Duration::from_millis(500)),
            50.0
        );
        assert_eq!(cpu_percent(0, 5, Duration::ZERO), 0.0);

        let mut m = CpuMeter::default();
        let t0 = Instant::now();
        let gap = Duration::from_millis(900);
        let mut rows = vec![row("a"), row("b")];
        rows[0].cpu_usec = Some(1_000_000);
        m.apply(&mut rows, t0, gap);
        assert_eq!(rows[0].cpu_pct, None, "one sample is no rate");
        rows[0].cpu_usec = Some(1_250_000);
        m.apply(&mut rows, t0 + Duration::from_millis(100), gap);
        assert_eq!(rows[0].cpu_pct, None, "too soon: the base is kept");
        rows[0].cpu_usec = Some(1_500_000);
        m.apply(&mut rows, t0 + Duration::from_secs(1), gap);
        assert!((rows[0].cpu_pct.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(rows[1].cpu_pct, None);
        // Between two full gaps the last figure stays.
        m.apply(&mut rows, t0 + Duration::from_millis(1200), gap);
        assert!((rows[0].cpu_pct.unwrap() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn sorting_and_filtering() {
        let mut rows = vec![row("web"), row("db"), row("cache")];
        rows[0].memory_bytes = Some(300);
        rows[1].memory_bytes = Some(100);
        rows[2].state = "STOPPED".into();
        rows[1].cpu_pct = Some(9.0);
        let names = |r: &[Row]| r.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        sort_rows(&mut rows, SortKey::Name, false);
        assert_eq!(names(&rows), ["cache", "db", "web"]);
        sort_rows(&mut rows, SortKey::Name, true);
        assert_eq!(names(&rows), ["web", "db", "cache"]);
        sort_rows(&mut rows, SortKey::Memory, true);
        assert_eq!(names(&rows), ["web", "db", "cache"]);
        sort_rows(&mut rows, SortKey::Cpu, true);
        assert_eq!(names(&rows), ["db", "cache", "web"], "ties by name, A to Z");
        sort_rows(&mut rows, SortKey::State, false);
        assert_eq!(names(&rows), ["db", "web", "cache"]);
        assert_eq!(SortKey::Uptime.next(), SortKey::Name);
        let shown = |f: &str| {
            flat(&rows, f)
                .iter()
                .map(|l| rows[l.row].name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(""), ["db", "web", "cache"]);
        assert_eq!(shown("stopped"), ["cache"]);
        assert_eq!(shown("CAC"), ["cache"]);
        assert_eq!(shown("w READY"), ["web"]);
        assert!(shown("zzz").is_empty());
    }

    #[test]
    fn dependency_tree() {
        let mut rows: Vec<Row> = ["api", "db", "web@0", "web@1", "worker", "x", "y"]
            .iter()
            .map(|n| row(n))
            .collect();
        rows[0].requires = vec!["db".into()];
        rows[2].after = vec!["api".into()];
        rows[3].after = vec!["api".into()];
        rows[4].after = vec!["web".into(), "db".into(), "nosuch".into()];
        // A cycle with no way in.
        rows[5].after = vec!["y".into()];
        rows[6].after = vec!["x".into()];
        let t = tree(&rows, "");
        let drawn: Vec<String> = t
            .iter()
            .map(|l| format!("{}{}", l.prefix, rows[l.row].name))
            .collect();
        assert_eq!(
            drawn,
            [
                "db",
                "├─ api",
                "│  ├─ web@0",
                "│  │  └─ worker",
                "│  └─ web@1",
                "│     └─ worker",
                "└─ worker",
                "x",
                "└─ y",
            ]
        );
        let t = tree(&rows, "web");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].prefix, "│  ├─ ");
        // Layered diamonds (b, c after a; a' after b and c; …): every path drawn would be 2^40
        // lines; each app's dependants are drawn once.
        let mut rows = vec![row("l0")];
        for k in 1..=40 {
            let mut b = row(&format!("l{k}b"));
            let mut c = row(&format!("l{k}c"));
            let mut d = row(&format!("l{k}"));
            b.after = vec![format!("l{}", k - 1)];
            c.after = vec![format!("l{}", k - 1)];
            d.after = vec![format!("l{k}b"), format!("l{k}c")];
            rows.extend([b, c, d]);
        }
        let t = tree(&rows, "");
        assert!(
            t.len() <= 1 + 40 * 4,
            "{} lines: at most one per dependency",
            t.len()
        );
        for (i, r) in rows.iter().enumerate() {
            assert!(t.iter().any(|l| l.row == i), "{} is not drawn", r.name);
        }
    }
}
