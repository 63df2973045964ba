//! `paddock top`: a live terminal view of every app, drawn with ratatui. It talks only to the
//! public API on the control socket: `GET /v1/apps` at the refresh interval, `GET /v1/events`
//! streamed for state changes as they happen, `GET /v1/apps/NAME/logs?follow` for the log pane
//! and `POST /v1/apps/NAME/{start,stop,restart}?wait=false` from the keyboard. Threads do the
//! network work (src/top/net.rs) and the view only draws what they sent.

pub mod model;
mod net;
mod ui;

use model::{CpuMeter, Line, Row, SortKey};
use net::{LogHandle, Msg};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// The shortest refresh interval `--interval` takes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The log lines the pane keeps.
const LOG_KEEP: usize = 1000;

/// The log pane of the selected app.
pub(crate) struct LogPane {
    pub app: String,
    pub stderr: bool,
    id: u64,
    pub lines: VecDeque<String>,
    /// Why the stream is down, while it is.
    pub down: Option<String>,
    handle: Arc<LogHandle>,
}

/// Everything the view shows, and what the keys change.
pub(crate) struct View {
    pub socket: PathBuf,
    pub interval: Duration,
    /// The apps of the last refresh, in the sort order.
    pub rows: Vec<Row>,
    /// What is listed: indexes into `rows`, with tree prefixes.
    pub lines: Vec<Line>,
    cpu: CpuMeter,
    pub sort: SortKey,
    pub desc: bool,
    pub filter: String,
    /// `/` was typed: keys go to the filter.
    pub editing: bool,
    pub tree: bool,
    /// The selected line, and the app on it (kept across refreshes by name).
    pub sel: usize,
    sel_name: Option<String>,
    /// When the apps were last read, and why the last refresh failed (if it did).
    pub refreshed: Option<Instant>,
    pub unreachable: Option<String>,
    pub events_down: Option<String>,
    /// The last action's answer, and when it came.
    pub status: Option<(String, Instant)>,
    pub help: bool,
    pub log: Option<LogPane>,
    log_ids: u64,
    tx: Sender<Msg>,
    poke: Sender<()>,
    quit: bool,
    /// Why the view had to end (the terminal could not be read).
    fatal: Option<String>,
}

impl View {
    fn new(socket: &Path, interval: Duration, tx: Sender<Msg>, poke: Sender<()>) -> View {
        View {
            socket: socket.to_path_buf(),
            interval,
            rows: vec![],
            lines: vec![],
            cpu: CpuMeter::default(),
            sort: SortKey::Name,
            desc: false,
            filter: String::new(),
            editing: false,
            tree: false,
            sel: 0,
            sel_name: None,
            refreshed: None,
            unreachable: None,
            events_down: None,
            status: None,
            help: false,
            log: None,
            log_ids: 0,
            tx,
            poke,
            quit: false,
            fatal: None,
        }
    }

    /// The selected app's name.
    pub fn selected(&self) -> Option<&str> {
        self.lines
            .get(self.sel)
            .and_then(|l| self.rows.get(l.row))
            .map(|r| r.name.as_str())
    }

    /// Sorts, filters and lists the rows anew, keeping the selected app selected.
    fn relist(&mut self) {
        model::sort_rows(&mut self.rows, self.sort, self.desc);
        self.lines = if self.tree {
            model::tree(&self.rows, &self.filter)
        } else {
            model::flat(&self.rows, &self.filter)
        };
        let name_at = |v: &View, i: usize| {
            v.lines
                .get(i)
                .and_then(|l| v.rows.get(l.row))
                .map(|r| r.name.clone())
        };
        if let Some(want) = self.sel_name.clone()
            && name_at(self, self.sel).as_deref() != Some(want.as_str())
            && let Some(i) =
                (0..self.lines.len()).find(|&i| name_at(self, i).as_ref() == Some(&want))
        {
            self.sel = i;
        }
        self.sel = self.sel.min(self.lines.len().saturating_sub(1));
        self.sel_name = self.selected().map(str::to_string);
    }

    fn select(&mut self, i: usize) {
        self.sel = i.min(self.lines.len().saturating_sub(1));
        self.sel_name = self.selected().map(str::to_string);
    }

    fn say(&mut self, s: impl Into<String>) {
        self.status = Some((s.into(), Instant::now()));
    }

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Key(k) => self.on_key(k),
            Msg::Redraw => {}
            Msg::InputFailed(e) => {
                self.fatal = Some(format!("top: {e}"));
                self.quit = true;
            }
            Msg::Apps(Ok(mut rows), at) => {
                // A rate over at least 0.9 s: cgroup v1's CPU time advances in bursts
                // under a quota, which shorter windows show as 0 and 80% in turn.
                let window = self.interval.mul_f64(0.9).max(Duration::from_millis(900));
                self.cpu.apply(&mut rows, at, window);
                self.rows = rows;
                self.refreshed = Some(at);
                self.unreachable = None;
                self.relist();
            }
            Msg::Apps(Err(e), _) => {
                self.unreachable = Some(e);
            }
            Msg::Event { app, to } => {
                if let Some(r) = self.rows.iter_mut().find(|r| r.name == app) {
                    // Until the next refresh: no process means no pid, uptime or CPU.
                    if matches!(
                        to.as_str(),
                        "STOPPED" | "EXITED" | "FATAL" | "BACKOFF" | "STARTING"
                    ) {
                        r.pid = None;
                        r.uptime_secs = None;
                        r.cpu_pct = None;
                    }
                    r.state = to;
                    self.relist();
                }
            }
            Msg::Events(down) => self.events_down = down,
            Msg::Log { id, line } => {
                if let Some(p) = self.log.as_mut().filter(|p| p.id == id) {
                    if p.lines.len() >= LOG_KEEP {
                        p.lines.pop_front();
                    }
                    p.lines.push_back(line);
                }
            }
            Msg::LogReset { id } => {
                if let Some(p) = self.log.as_mut().filter(|p| p.id == id) {
                    p.lines.clear();
                    p.down = None;
                }
            }
            Msg::LogEnd { id, why } => {
                if let Some(p) = self.log.as_mut().filter(|p| p.id == id) {
                    p.down = Some(why);
                }
            }
            Msg::Action(text) => self.say(text),
        }
    }

    fn open_log(&mut self, app: String, stderr: bool) {
        self.close_log();
        self.log_ids += 1;
        let handle = Arc::new(LogHandle::default());
        let (socket, id, interval, tx, h) = (
            self.socket.clone(),
            self.log_ids,
            self.interval,
            self.tx.clone(),
            handle.clone(),
        );
        let name = app.clone();
        std::thread::spawn(move || net::logs(&socket, &name, stderr, id, interval, h, tx));
        self.log = Some(LogPane {
            app,
            stderr,
            id,
            lines: VecDeque::new(),
            down: None,
            handle,
        });
    }

    fn close_log(&mut self) {
        if let Some(p) = self.log.take() {
            p.handle.cancel();
        }
    }

    fn act(&mut self, verb: &'static str) {
        let Some(app) = self.selected().map(str::to_string) else {
            self.say(format!("{verb}: no app selected"));
            return;
        };
        self.say(format!("{verb} {app}: asked…"));
        let (socket, tx, poke) = (self.socket.clone(), self.tx.clone(), self.poke.clone());
        std::thread::spawn(move || net::action(&socket, &app, verb, tx, poke));
    }

    fn on_key(&mut self, k: KeyEvent) {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            self.quit = true;
            return;
        }
        if self.editing {
            match k.code {
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Enter => self.editing = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !ctrl && self.filter.chars().count() < 100 => {
                    self.filter.push(c)
                }
                _ => return,
            }
            self.relist();
            return;
        }
        if self.help {
            // Any key closes the help (q still quits).
            self.help = false;
            if k.code != KeyCode::Char('q') {
                return;
            }
        }
        let page = 10;
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => self.help = true,
            KeyCode::Up | KeyCode::Char('k') => self.select(self.sel.saturating_sub(1)),
            KeyCode::Down | KeyCode::Char('j') => self.select(self.sel + 1),
            KeyCode::PageUp => self.select(self.sel.saturating_sub(page)),
            KeyCode::PageDown => self.select(self.sel + page),
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => self.select(usize::MAX),
            KeyCode::Char('o') | KeyCode::Char('>') => {
                self.sort = self.sort.next();
                self.relist();
            }
            KeyCode::Char('O') | KeyCode::Char('<') => {
                self.desc = !self.desc;
                self.relist();
            }
            KeyCode::Char('/') => {
                self.editing = true;
                self.filter.clear();
                self.relist();
            }
            KeyCode::Esc => {
                self.filter.clear();
                self.relist();
            }
            KeyCode::Char('t') => {
                self.tree = !self.tree;
                self.relist();
            }
            KeyCode::Char('l') | KeyCode::Enter => match (&self.log, self.selected()) {
                (Some(p), Some(s)) if p.app != s => {
                    let (s, e) = (s.to_string(), p.stderr);
                    self.open_log(s, e);
                }
                (Some(_), _) => self.close_log(),
                (None, Some(s)) => self.open_log(s.to_string(), false),
                (None, None) => self.say("logs: no app selected"),
            },
            KeyCode::Char('e') | KeyCode::Tab => match &self.log {
                Some(p) => {
                    let (a, e) = (p.app.clone(), !p.stderr);
                    self.open_log(a, e);
                }
                None => {
                    self.say("e switches the log pane between stdout and stderr: open it with l")
                }
            },
            KeyCode::Char('s') => self.act("start"),
            KeyCode::Char('x') => self.act("stop"),
            KeyCode::Char('r') => self.act("restart"),
            _ => {}
        }
    }
}

/// The terminal in raw mode on the alternate screen; put back as it was when dropped, on an
/// error, and by the panic hook.
struct Screen;

fn restore() {
    let _ = ratatui::crossterm::terminal::disable_raw_mode();
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::terminal::LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                prev(info);
            }));
        });
        ratatui::crossterm::terminal::enable_raw_mode()?;
        let s = Screen;
        ratatui::crossterm::execute!(
            std::io::stdout(),
            ratatui::crossterm::terminal::EnterAlternateScreen,
            ratatui::crossterm::cursor::Hide
        )?;
        Ok(s)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the view until `q`. `Err` is a message for the user (exit 2): not a terminal, or the
/// terminal failed.
pub fn run(socket: &Path, interval: Duration) -> Result<(), String> {
    if interval < MIN_INTERVAL {
        return Err(format!(
            "top: --interval {} is below the minimum of 100ms",
            crate::units::format_duration(interval)
        ));
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        let which = if std::io::stdout().is_terminal() {
            "standard input"
        } else {
            "standard output"
        };
        return Err(format!(
            "top: {which} is not a terminal: `paddock top` draws a live view and reads keys; \
             in scripts use `paddock status --json` or `paddock events`"
        ));
    }
    // SIGTERM, SIGHUP and SIGINT end the view the way `q` does (the terminal is restored).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("top: cannot handle signal {sig}: {e}"))?;
    }
    let (tx, rx) = mpsc::channel();
    let (poke_tx, poke_rx) = mpsc::channel();
    let (s, t) = (socket.to_path_buf(), tx.clone());
    std::thread::spawn(move || net::refresher(&s, interval, t, poke_rx));
    let (s, t, p) = (socket.to_path_buf(), tx.clone(), poke_tx.clone());
    std::thread::spawn(move || net::events(&s, interval, t, p));
    let screen = Screen::enter().map_err(|e| format!("top: cannot set up the terminal: {e}"))?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut term = ratatui::Terminal::new(backend)
        .map_err(|e| format!("top: cannot set up the terminal: {e}"))?;
    {
        let tx = tx.clone();
        std::thread::spawn(move || net::input(tx));
    }
    let mut view = View::new(socket, interval, tx, poke_tx);
    // Redrawn after every message and at least every 250 ms (the ages in the header move).
    let tick = Duration::from_millis(250);
    let result = loop {
        if let Err(e) = term.draw(|f| ui::draw(f, &view)) {
            break Err(format!("top: drawing failed: {e}"));
        }
        match rx.recv_timeout(tick) {
            Ok(m) => {
                view.on_msg(m);
                // Take whatever else is queued before drawing again.
                while let Ok(m) = rx.try_recv() {
                    view.on_msg(m);
                    if view.quit {
                        break;
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        }
        if let Some(e) = view.fatal.take() {
            break Err(e);
        }
        if view.quit || stop.load(Ordering::Relaxed) {
            break Ok(());
        }
    };
    view.close_log();
    drop(term);
    drop(screen);
    result
}
