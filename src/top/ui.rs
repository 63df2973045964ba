//! Drawing `paddock top`: the header, the table of apps, the log pane, the status line and the
//! help. Only reads the view.

use super::View;
use super::model::{self, SortKey};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Table, TableState};
use std::time::Instant;

/// The keys, as `?` shows them (and docs/cli.md lists them).
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  j k", "select an app (PgUp PgDn Home End too)"),
    ("o", "sort by the next column"),
    ("O", "reverse the order"),
    ("/", "filter: type words, Enter keeps, Esc clears"),
    ("Esc", "clear the filter"),
    ("t", "dependency tree on/off"),
    ("l  Enter", "log pane of the selected app on/off"),
    ("e  Tab", "log pane: stdout ⇄ stderr"),
    ("s", "start the selected app"),
    ("x", "stop the selected app"),
    ("r", "restart the selected app"),
    ("?", "this help (any key closes it)"),
    ("q  Ctrl-C", "quit"),
];

fn state_style(state: &str) -> Style {
    let c = match state {
        "READY" => Color::Green,
        "RUNNING" | "STARTING" | "STOPPING" => Color::Yellow,
        "BACKOFF" | "FATAL" => Color::Red,
        "STOPPED" | "EXITED" => Color::DarkGray,
        _ => Color::Magenta,
    };
    Style::default().fg(c)
}

fn health_style(h: &str) -> Style {
    match h {
        "healthy" => Style::default().fg(Color::Green),
        "unhealthy" => Style::default().fg(Color::Red),
        _ => Style::default(),
    }
}

fn age(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

pub fn draw(f: &mut Frame, v: &View) {
    let area = f.area();
    let log_h = if v.log.is_some() {
        (area.height.saturating_sub(2) * 2 / 5).max(3)
    } else {
        0
    };
    // A second header line says why paddock cannot be reached.
    let head_h = if v.unreachable.is_some() || v.events_down.is_some() {
        2
    } else {
        1
    };
    let [head, table, logs, foot] = Layout::vertical([
        Constraint::Length(head_h),
        Constraint::Min(1),
        Constraint::Length(log_h),
        Constraint::Length(1),
    ])
    .areas(area);
    header(f, v, head);
    apps(f, v, table);
    if log_h > 0 {
        log_pane(f, v, logs);
    }
    footer(f, v, foot);
    if v.help {
        help(f, area);
    }
}

fn header(f: &mut Frame, v: &View, area: Rect) {
    let mut spans = vec![Span::styled(
        "paddock top",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    let sep = || Span::raw(" │ ");
    let every = crate::units::format_duration(v.interval);
    let mut second = None;
    match (&v.unreachable, v.refreshed) {
        (Some(e), last) => {
            spans.push(sep());
            spans.push(Span::styled(
                format!("paddock unreachable, retrying every {every}"),
                Style::default().fg(Color::White).bg(Color::Red),
            ));
            if let Some(t) = last {
                spans.push(Span::raw(format!(" (the view is {} old)", age(t))));
            }
            second = Some(Span::styled(
                model::clean(e, 400),
                Style::default().fg(Color::Red),
            ));
        }
        (None, None) => {
            spans.push(sep());
            spans.push(Span::raw(format!("connecting to {}…", v.socket.display())));
        }
        (None, Some(t)) => {
            spans.push(sep());
            spans.push(Span::raw(format!(
                "{} apps, {} shown │ refreshed {} ago, every {every}",
                v.rows.len(),
                v.lines.len(),
                age(t),
            )));
        }
    }
    if let (None, Some(e)) = (&second, &v.events_down) {
        second = Some(Span::styled(
            format!("event stream down, retrying: {}", model::clean(e, 300)),
            Style::default().fg(Color::Yellow),
        ));
    }
    let mut lines = vec![Line::from(spans)];
    lines.extend(second.map(Line::from));
    f.render_widget(Paragraph::new(lines), area);
}

/// The table's columns: what sorts them (none for INFO), and their widths.
const COLUMNS: [(Option<SortKey>, u16); 9] = [
    (Some(SortKey::Name), 0),
    (Some(SortKey::State), 9),
    (Some(SortKey::Level), 8),
    (Some(SortKey::Health), 9),
    (Some(SortKey::Cpu), 6),
    (Some(SortKey::Memory), 10),
    (Some(SortKey::Restarts), 8),
    (Some(SortKey::Uptime), 9),
    (None, 0),
];

fn apps(f: &mut Frame, v: &View, area: Rect) {
    let arrow = if v.desc { "↓" } else { "↑" };
    let header = Row::new(COLUMNS.iter().map(|(k, _)| {
        match k {
            Some(k) if *k == v.sort => Cell::from(format!("{}{arrow}", k.title())).style(
                Style::default()
                    .add_modifier(Modifier::BOLD)
                    .add_modifier(Modifier::UNDERLINED),
            ),
            Some(k) => Cell::from(k.title()),
            None => Cell::from("INFO"),
        }
    }))
    .style(Style::default().add_modifier(Modifier::BOLD));
    let longest = v
        .lines
        .iter()
        .filter_map(|l| {
            v.rows
                .get(l.row)
                .map(|r| l.prefix.chars().count() + r.name.chars().count())
        })
        .max()
        .unwrap_or(4);
    // The name column fits the longest name, within 12..=48 and a third of the width.
    let name_w = (longest as u16 + 1)
        .clamp(12, 48)
        .min(area.width / 3)
        .max(4);
    let widths = COLUMNS.iter().enumerate().map(|(i, (_, w))| match i {
        0 => Constraint::Length(name_w),
        8 => Constraint::Fill(1),
        _ => Constraint::Length(*w),
    });
    let rows = v.lines.iter().filter_map(|l| {
        let r = v.rows.get(l.row)?;
        let health = if r.health.is_empty() { "-" } else { &r.health };
        Some(Row::new([
            Cell::from(model::clean(
                &format!("{}{}", l.prefix, r.name),
                name_w as usize,
            )),
            Cell::from(r.state.as_str()).style(state_style(&r.state)),
            Cell::from(r.level.as_str()),
            Cell::from(health).style(health_style(health)),
            Cell::from(model::cpu(r.cpu_pct)),
            Cell::from(model::memory(r.memory_bytes)),
            Cell::from(r.restarts.to_string()),
            Cell::from(model::uptime(r.uptime_secs)),
            Cell::from(r.message.as_str()),
        ]))
    });
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▸ ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected((!v.lines.is_empty()).then_some(v.sel));
    f.render_stateful_widget(table, area, &mut state);
    if v.lines.is_empty() && area.height > 2 {
        let why = if v.rows.is_empty() {
            if v.refreshed.is_some() { "no apps" } else { "" }
        } else {
            "no app matches the filter (Esc clears it)"
        };
        let r = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        f.render_widget(
            Paragraph::new(why).style(Style::default().fg(Color::DarkGray)),
            r,
        );
    }
}

fn log_pane(f: &mut Frame, v: &View, area: Rect) {
    let Some(p) = &v.log else { return };
    let stream = if p.stderr { "stderr" } else { "stdout" };
    let mut title = format!(
        " logs: {} ({stream}) — e: {}, l: close ",
        p.app,
        if p.stderr { "stdout" } else { "stderr" }
    );
    if let Some(why) = &p.down {
        title.push_str(&format!("— {}; retrying ", model::clean(why, 100)));
    }
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let n = inner.height as usize;
    let skip = p.lines.len().saturating_sub(n);
    let lines: Vec<Line> = p
        .lines
        .iter()
        .skip(skip)
        .map(|l| Line::raw(l.as_str()))
        .collect();
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn footer(f: &mut Frame, v: &View, area: Rect) {
    let line = if v.editing {
        Line::from(vec![
            Span::styled("filter: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}_", v.filter)),
            Span::styled(
                "   (Enter keeps, Esc clears)",
                Style::default().fg(Color::DarkGray),
            ),
        ])
    } else {
        let mut spans = vec![];
        if !v.filter.is_empty() {
            spans.push(Span::styled(
                format!("filter: {} │ ", v.filter),
                Style::default().fg(Color::Cyan),
            ));
        }
        spans.push(Span::raw(format!(
            "sort: {} {}{} │ ",
            v.sort.title(),
            if v.desc { "↓" } else { "↑" },
            if v.tree { " │ tree" } else { "" }
        )));
        match &v.status {
            Some((s, _)) => spans.push(Span::styled(
                s.clone(),
                Style::default().add_modifier(Modifier::BOLD),
            )),
            None => spans.push(Span::styled(
                "? help  q quit  s start  x stop  r restart  l logs  t tree  / filter  o sort",
                Style::default().fg(Color::DarkGray),
            )),
        }
        Line::from(spans)
    };
    f.render_widget(Paragraph::new(line), area);
}

fn help(f: &mut Frame, area: Rect) {
    let w = 64.min(area.width);
    let h = (KEYS.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<12}"),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" paddock top: keys ")),
        r,
    );
}
