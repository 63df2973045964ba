//! The status board: the apps' statuses as the supervisor last computed them, for the control
//! socket's thread to answer `GET /v1/apps[/NAMES]` without waiting for a turn of the
//! supervisor's loop (which, with 50 zero-backoff crash loops, is busy spawning and reaping and
//! waits for the CPU like any other thread).
//!
//! Freshness, which the answers keep exact where it matters:
//! - the supervisor writes an app's entry at the end of every turn that touched it (an effect or
//!   an input of the fleet naming the app), and before it answers any request: once `start`,
//!   `stop` or `signal` has answered, the board shows what it did;
//! - every entry is written again at least every `FULL_EVERY` while the loop turns, and only
//!   entries younger than `FRESH` are served (what changes outside a turn and is not read at
//!   the answer, the text of a backoff's or a schedule's countdown, is that recent at worst);
//!   an older one sends the request to the supervisor, as do names that are not exact app names
//!   (groups, typos: the supervisor resolves and explains them);
//! - times (uptime, time in state) are aged to the moment of the answer; what changes without
//!   the loop (cgroup usage, through the loop's own 1-s cache; a wasm app's request figures and
//!   memory; log lines dropped) is read at the answer, outside the board's lock;
//! - apps waiting for their dependencies are written again whenever any app changes state;
//! - the board is kept only while someone reads it (a read within `WANTED_FOR`): an idle fleet
//!   that nobody asks about costs nothing.

use super::api::{AppStatus, Format, Reply, StatusList};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Entries older than this are not served.
pub const FRESH: Duration = Duration::from_secs(2);
/// How often every entry is written again while the loop turns and the board is read (a
/// status of every app costs the loop about as much: `paddock top` asks once a second).
pub const FULL_EVERY: Duration = Duration::from_secs(1);
/// How long after the last read the supervisor keeps the board.
pub const WANTED_FOR: Duration = Duration::from_secs(10);

pub struct Board {
    origin: Instant,
    /// When the board was last read, in ms after `origin` (0: never).
    read_ms: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The supervisor keeps the board (set by a full write, cleared when nobody reads).
    live: bool,
    /// Every app the supervisor knows has an entry, and no other (for `all`).
    complete: bool,
    apps: BTreeMap<String, Entry>,
}

struct Entry {
    status: AppStatus,
    at: Instant,
    live: Option<Live>,
}

/// Puts into a status what changes without a turn of the supervisor's loop (a wasm app's
/// request figures and memory), read when the board answers.
pub type Live = std::sync::Arc<dyn Fn(&mut AppStatus) + Send + Sync>;

impl Default for Board {
    fn default() -> Self {
        Board {
            origin: Instant::now(),
            read_ms: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl Board {
    /// The answer to `GET /v1/apps` (`names` empty) or `/v1/apps/NAMES` from the board, or
    /// None when the supervisor must answer. `current` sets what the caller knows better than the
    /// board (the log writer's counts).
    pub fn answer(
        &self,
        names: &[String],
        format: Format,
        current: impl Fn(&mut AppStatus),
    ) -> Option<Reply> {
        let now = Instant::now();
        let ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        self.read_ms.store(ms.max(1), Ordering::Relaxed);
        let (mut apps, lives) = {
            let g = self.inner.lock().ok()?;
            if !g.live {
                return None;
            }
            // The table of all apps shows a few fields: only those are copied.
            let slim = matches!(format, Format::Table(_)) && names.is_empty();
            let (mut apps, mut lives) = (Vec::new(), Vec::new());
            let mut take = |e: Option<&Entry>| -> Option<()> {
                let e = e?;
                let age = now.saturating_duration_since(e.at);
                if age > FRESH {
                    return None;
                }
                apps.push(aged(&e.status, age, slim));
                lives.push(e.live.clone());
                Some(())
            };
            if names.is_empty() || names.iter().any(|n| n == "all") {
                // `all` beside a name the board does not know: the supervisor says which (404).
                if !g.complete || names.iter().any(|n| n != "all" && !g.apps.contains_key(n)) {
                    return None;
                }
                for e in g.apps.values() {
                    take(Some(e))?;
                }
            } else {
                let mut seen = std::collections::HashSet::new();
                for n in names.iter().filter(|n| seen.insert(n.as_str())) {
                    take(g.apps.get(n))?;
                }
            }
            (apps, lives)
        };
        // Outside the lock (a cgroup's usage may be read from its files): the supervisor's
        // writes never wait for them. In place: a status is large, moving it costs.
        for (s, live) in apps.iter_mut().zip(&lives) {
            if let Some(live) = live {
                live(s);
            }
            current(s);
        }
        Some(status_reply(apps, format, !names.is_empty()))
    }

    /// The board was read within `WANTED_FOR` of `now`.
    pub fn wanted(&self, now: Instant) -> bool {
        let ms = self.read_ms.load(Ordering::Relaxed);
        ms != 0
            && now.saturating_duration_since(self.origin).as_millis() as u64
                <= ms + WANTED_FOR.as_millis() as u64
    }

    /// When the board stops being wanted unless it is read again.
    pub fn unwanted_at(&self) -> Option<Instant> {
        match self.read_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.origin + Duration::from_millis(ms) + WANTED_FOR),
        }
    }

    /// Every app's entry at once: the board is live and complete.
    pub fn write_all(&self, apps: Vec<(AppStatus, Option<Live>)>, now: Instant) {
        if let Ok(mut g) = self.inner.lock() {
            g.apps = apps
                .into_iter()
                .map(|(s, live)| {
                    (
                        s.name.clone(),
                        Entry {
                            status: s,
                            at: now,
                            live,
                        },
                    )
                })
                .collect();
            g.live = true;
            g.complete = true;
        }
    }

    /// Some apps' entries (those a turn touched, or a request computed).
    pub fn write(&self, apps: Vec<(AppStatus, Option<Live>)>, now: Instant) {
        if let Ok(mut g) = self.inner.lock() {
            for (s, live) in apps {
                g.apps.insert(
                    s.name.clone(),
                    Entry {
                        status: s,
                        at: now,
                        live,
                    },
                );
            }
        }
    }

    /// Apps came or went: `all` goes to the supervisor until the next full write.
    pub fn incomplete(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.complete = false;
        }
    }

    /// Nobody reads: the board is emptied and every request goes to the supervisor.
    pub fn clear(&self) {
        if let Ok(mut g) = self.inner.lock() {
            *g = Inner::default();
        }
    }
}

/// A status as it stood `age` ago, aged to now.
fn aged(s: &AppStatus, age: Duration, slim: bool) -> AppStatus {
    let mut s = if slim { table_fields(s) } else { s.clone() };
    let dt = age.as_secs_f64();
    s.since_secs += dt;
    if let Some(u) = s.uptime_secs.as_mut() {
        *u += dt;
    }
    s
}

/// What the table of all apps shows of a status (`view::table`, `table::all_ready`), the rest
/// left empty: a full copy of a thousand statuses was a third of a `paddock status`.
fn table_fields(s: &AppStatus) -> AppStatus {
    AppStatus {
        name: s.name.clone(),
        state: s.state.clone(),
        pid: s.pid,
        uptime_secs: s.uptime_secs,
        since_secs: s.since_secs,
        restarts: s.restarts,
        failures: s.failures,
        last_exit: s.last_exit.clone(),
        message: s.message.clone(),
        isolation: s.isolation.clone(),
        sandbox: None,
        fallback: s.fallback.clone(),
        memory_bytes: s.memory_bytes,
        cpu_usec: s.cpu_usec,
        pids: s.pids,
        cgroup: None,
        limits: None,
        autostart: s.autostart,
        restart_policy: s.restart_policy,
        command: vec![],
        health: s.health,
        health_detail: None,
        after: vec![],
        requires: vec![],
        waiting_for: vec![],
        published: vec![],
        listen: vec![],
        on_demand: s.on_demand,
        http: None,
        log_lines_dropped: s.log_lines_dropped,
        generation: s.generation,
        rollback: None,
        schedule: None,
    }
}

/// The answer to a status request: JSON, or the CLI's table (`named`: apps were named).
pub fn status_reply(apps: Vec<AppStatus>, format: Format, named: bool) -> Reply {
    if let Format::Table(width) = format {
        let ready = super::table::all_ready(&apps);
        Reply {
            status: 200,
            content_type: if ready {
                super::table::ALL_READY
            } else {
                super::table::NOT_ALL_READY
            },
            body: super::view::table(&apps, named, width.map(usize::from)),
        }
    } else {
        Reply::json(200, &StatusList { apps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, uptime: f64) -> AppStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": "READY", "pid": 7, "uptime_secs": uptime, "since_secs": uptime,
            "restarts": 0, "failures": 0, "last_exit": null, "message": "", "isolation": "none",
            "memory_bytes": null, "cpu_usec": null, "pids": null, "cgroup": null, "limits": null,
            "autostart": true, "restart_policy": "on-failure", "command": ["x"],
        }))
        .expect("an AppStatus")
    }

    fn names(r: &Reply) -> Vec<String> {
        let l: StatusList = serde_json::from_str(&r.body).unwrap();
        l.apps.into_iter().map(|a| a.name).collect()
    }

    #[test]
    fn answers_only_what_it_knows_fresh() {
        let b = Board::default();
        // Not kept yet: the supervisor answers (and the read is noted).
        assert!(b.answer(&[], Format::Json, |_| {}).is_none());
        assert!(b.wanted(Instant::now()));
        let now = Instant::now();
        b.write_all(vec![(app("b", 1.0), None), (app("a", 1.0), None)], now);
        // All, in name order; named, in the asked order, each once.
        assert_eq!(
            names(&b.answer(&[], Format::Json, |_| {}).unwrap()),
            ["a", "b"]
        );
        let asked = ["b".to_string(), "a".into(), "b".into()];
        assert_eq!(
            names(&b.answer(&asked, Format::Json, |_| {}).unwrap()),
            ["b", "a"]
        );
        // A name it has no entry for (a group, a typo): the supervisor's.
        assert!(
            b.answer(&["web".to_string()], Format::Json, |_| {})
                .is_none()
        );
        assert!(
            b.answer(&["all".to_string(), "web".into()], Format::Json, |_| {})
                .is_none()
        );
        assert!(
            b.answer(&["all".to_string(), "a".into()], Format::Json, |_| {})
                .is_some()
        );
        // Apps came or went: `all` waits for a full write; a named fresh entry is still served.
        b.incomplete();
        assert!(b.answer(&[], Format::Json, |_| {}).is_none());
        assert!(
            b.answer(&["all".to_string()], Format::Json, |_| {})
                .is_none()
        );
        assert!(b.answer(&["a".to_string()], Format::Json, |_| {}).is_some());
        // An entry older than FRESH is not served.
        b.write(
            vec![(app("a", 1.0), None)],
            now - FRESH - Duration::from_millis(1),
        );
        assert!(b.answer(&["a".to_string()], Format::Json, |_| {}).is_none());
        assert!(b.answer(&["b".to_string()], Format::Json, |_| {}).is_some());
        // Dropped: nothing is served.
        b.clear();
        assert!(b.answer(&["b".to_string()], Format::Json, |_| {}).is_none());
    }

    #[test]
    fn times_are_aged_to_the_answer() {
        let b = Board::default();
        // With what changes outside the loop read at the answer.
        let live: Live = std::sync::Arc::new(|s| s.memory_bytes = Some(42));
        b.write_all(
            vec![(app("a", 10.0), Some(live))],
            Instant::now() - Duration::from_millis(400),
        );
        let r = b.answer(&["a".to_string()], Format::Json, |_| {}).unwrap();
        let l: StatusList = serde_json::from_str(&r.body).unwrap();
        assert_eq!(l.apps[0].memory_bytes, Some(42));
        let up = l.apps[0].uptime_secs.unwrap();
        assert!((10.4..10.9).contains(&up), "uptime {up}");
        assert!((10.4..10.9).contains(&l.apps[0].since_secs));
    }

    #[test]
    fn not_wanted_until_read_and_after_a_while() {
        let b = Board::default();
        let now = Instant::now();
        assert!(!b.wanted(now));
        let _ = b.answer(&[], Format::Json, |_| {});
        assert!(b.wanted(now));
        assert!(!b.wanted(now + WANTED_FOR + Duration::from_secs(1)));
    }
}
