//! `after` / `requires` across all app files: every name exists, no app depends on itself, no
//! cycle. Files that have errors of their own still take part (their names and dependencies are
//! read leniently), so one run reports the graph's errors together with the files' errors.

use super::suggest::closest;
use super::{AppSpec, ConfigError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One app file's place in the dependency graph.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub file: PathBuf,
    /// Each dependency with the line of the key (`after` or `requires`) that names it.
    pub deps: Vec<(String, usize)>,
}

impl Node {
    pub fn of(a: &AppSpec) -> Node {
        let [after_line, requires_line] = a.deps_line.0;
        Node {
            name: a.instance.as_ref().map_or(&a.name, |i| &i.group).clone(),
            file: a.file.clone(),
            deps: a
                .after
                .iter()
                .map(|d| (d.clone(), after_line))
                .chain(a.requires.iter().map(|d| (d.clone(), requires_line)))
                .collect(),
        }
    }

    /// The dependencies of a file that did not load, read leniently (other keys ignored); no
    /// dependencies when even that fails.
    pub fn lenient(name: &str, file: &Path, src: &str) -> Node {
        #[derive(Deserialize)]
        struct Deps {
            after: Option<Spanned<Vec<String>>>,
            requires: Option<Spanned<Vec<String>>>,
        }
        let mut deps = vec![];
        if let Ok(d) = toml::from_str::<Deps>(src) {
            for s in [d.after, d.requires].into_iter().flatten() {
                let line = super::line_col(src, s.span().start).0;
                deps.extend(s.into_inner().into_iter().map(|n| (n, line)));
            }
        }
        Node {
            name: name.to_string(),
            file: file.to_path_buf(),
            deps,
        }
    }
}

/// Checks the valid apps alone (see `check_nodes`).
pub fn check_graph(apps: &BTreeMap<String, AppSpec>) -> Vec<ConfigError> {
    check_nodes(&apps.values().map(Node::of).collect::<Vec<_>>())
}

/// Every unknown name (with the likely one), every self-dependency and each cycle once. Errors
/// point at the dependant's file and the line of the key naming the dependency.
pub fn check_nodes(nodes: &[Node]) -> Vec<ConfigError> {
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut errors = vec![];
    let err = |n: &Node, line: usize, message: String| ConfigError {
        file: n.file.clone(),
        line,
        col: 1,
        message,
    };
    for n in nodes {
        for (d, line) in &n.deps {
            if d == &n.name {
                errors.push(err(
                    n,
                    *line,
                    format!("app \"{}\" cannot depend on itself", n.name),
                ));
            } else if let Some((group, _)) = d.rsplit_once('@')
                && !by_name.contains_key(d.as_str())
                && by_name.contains_key(group)
            {
                // `after`/`requires` name a group, never one of its instances.
                errors.push(err(
                    n,
                    *line,
                    format!("depends on \"{d}\", one of the `instances` of \"{group}\": name \"{group}\" to depend on all of them (one instance cannot be named)"),
                ));
            } else if !by_name.contains_key(d.as_str()) {
                let hint = closest(d, by_name.keys().copied())
                    .map_or(String::new(), |c| format!("; did you mean \"{c}\"?"));
                errors.push(err(
                    n,
                    *line,
                    format!(
                        "depends on \"{d}\", but no app has that name{hint} (known: {})",
                        by_name.keys().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    // Depth-first search for a cycle; report each cycle once, naming it.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = by_name.keys().map(|k| (*k, Mark::New)).collect();
    fn visit<'a>(
        n: &'a Node,
        by_name: &BTreeMap<&'a str, &'a Node>,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<(&'a Node, usize, String)>,
    ) {
        mark.insert(&n.name, Mark::Active);
        stack.push(&n.name);
        for (d, _) in &n.deps {
            if d == &n.name {
                continue; // reported above
            }
            match mark.get(d.as_str()).copied() {
                Some(Mark::New) => visit(by_name[d.as_str()], by_name, mark, stack, cycles),
                Some(Mark::Active) => {
                    let start = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[start..].to_vec();
                    cycle.push(d);
                    let first = by_name[cycle[0]];
                    let next = cycle.get(1).copied().unwrap_or_default();
                    let line = first
                        .deps
                        .iter()
                        .find(|(x, _)| x == next)
                        .map_or(0, |(_, l)| *l);
                    cycles.push((first, line, cycle.join(" -> ")));
                }
                _ => {}
            }
        }
        stack.pop();
        mark.insert(&n.name, Mark::Done);
    }
    let mut cycles = vec![];
    for n in by_name.values() {
        if mark[n.name.as_str()] == Mark::New {
            visit(n, &by_name, &mut mark, &mut vec![], &mut cycles);
        }
    }
    for (n, line, cycle) in cycles {
        errors.push(err(
            n,
            line,
            format!("dependency cycle: {cycle} (after/requires must form no loop)"),
        ));
    }
    errors
}
