//! `instances = N`: one app file run as N apps, `NAME@0` … `NAME@N-1` (supervisord's
//! `numprocs`). Each instance is parsed from the same file with `%i` in every string value
//! replaced by its number (`%%` is a literal `%`), so each has its own command line, ports,
//! log files, cgroup and state record; the group's name `NAME` stands for all of them on the
//! command line and in other apps' `after`/`requires`. See docs/config.md#instances.

use super::FileCtx;
use serde::Serialize;
use toml::de::{DeTable, DeValue};

/// The most instances one app file may ask for.
pub const MAX_INSTANCES: i64 = 256;
/// The most `[restart] max_unavailable` may be (it is at most the number of instances anyway).
const MAX_UNAVAILABLE: i64 = MAX_INSTANCES;

/// What makes an app one instance of a group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Instance {
    /// The group's name: the app file's name (`web` for `web@2`).
    pub group: String,
    /// Its number, 0 to `instances - 1`.
    pub index: u32,
    /// `[restart] max_unavailable`: how many instances a rolling restart takes down at once.
    pub max_unavailable: u32,
}

/// The app name of instance `i` of `group`.
pub fn instance_name(group: &str, i: u32) -> String {
    format!("{group}@{i}")
}

/// `s` with `%i` replaced by `i` and `%%` by `%`; an error names any other `%` sequence.
/// `None`: nothing to replace.
pub fn expand(s: &str, i: u32) -> Result<Option<String>, String> {
    if !s.contains('%') {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') => out.push_str(&i.to_string()),
            Some('%') => out.push('%'),
            Some(o) => {
                return Err(format!(
                    "\"%{o}\" in \"{s}\": in an app with `instances`, % starts %i (the instance number) or %% (a literal %)"
                ));
            }
            None => {
                return Err(format!(
                    "\"{s}\" ends with a lone %: in an app with `instances`, write %% for a literal %"
                ));
            }
        }
    }
    Ok(Some(out))
}

/// Replaces `%i` in every string value of the document (keys are left alone), reporting a
/// bad `%` sequence at its value.
pub(super) fn substitute(cx: &mut FileCtx, t: &mut DeTable, i: u32, path: &str) {
    for (k, v) in t.iter_mut() {
        let key = if path.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{path}.{}", k.get_ref())
        };
        let span = v.span();
        substitute_value(cx, v.get_mut(), span, i, &key);
    }
}

fn substitute_value(
    cx: &mut FileCtx,
    v: &mut DeValue,
    span: std::ops::Range<usize>,
    i: u32,
    key: &str,
) {
    match v {
        DeValue::String(s) => match expand(s, i) {
            Ok(Some(new)) => *s = new.into(),
            Ok(None) => {}
            Err(e) => cx.err_at(Some(span), key, e),
        },
        DeValue::Array(a) => {
            for item in a.iter_mut() {
                let span = item.span();
                substitute_value(cx, item.get_mut(), span, i, key);
            }
        }
        DeValue::Table(t) => substitute(cx, t, i, key),
        _ => {}
    }
}

/// How many instances the file asks for, when `instances` is a valid number and the name can
/// have instances (errors are reported by the full parse, which checks the key again).
pub(super) fn count_of(name: &str, src: &str) -> Option<u32> {
    if name.contains('@') {
        return None;
    }
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        return None;
    }
    let t = doc.into_inner();
    let v = t.get("instances")?;
    let n: i64 = v.get_ref().as_integer()?.as_str().parse().ok()?;
    (1..=MAX_INSTANCES).contains(&n).then_some(n as u32)
}

/// Checks the `instances` and `[restart] max_unavailable` keys of a file; the instance of
/// `group` it is parsed as (None: not an instance).
pub(super) fn check_keys(
    cx: &mut FileCtx,
    name: &str,
    instances: Option<&toml::Spanned<i64>>,
    max_unavailable: Option<&toml::Spanned<i64>>,
    index: Option<u32>,
) -> Option<Instance> {
    if let Some(n) = instances {
        let v = *n.get_ref();
        if !(1..=MAX_INSTANCES).contains(&v) {
            cx.err_at(
                Some(n.span()),
                "instances",
                format!("{v} is out of range: run 1 to {MAX_INSTANCES} copies of the app (remove the key for one)"),
            );
        } else if name.contains('@') {
            cx.err_at(
                Some(n.span()),
                "instances",
                format!("the app \"{name}\" has '@' in its name, which instance names use (\"{}\"): rename the file to give it instances", instance_name("web", 0)),
            );
        }
    }
    let mut max_un = 1;
    if let Some(m) = max_unavailable {
        let v = *m.get_ref();
        if instances.is_none() {
            cx.err_at(
                Some(m.span()),
                "restart.max_unavailable",
                "is only used with `instances` (how many instances a rolling restart takes down at once)",
            );
        } else if !(1..=MAX_UNAVAILABLE).contains(&v) {
            cx.err_at(
                Some(m.span()),
                "restart.max_unavailable",
                format!("{v} is out of range: at least 1 (at most {MAX_UNAVAILABLE})"),
            );
        } else {
            max_un = v as u32;
        }
    }
    index.map(|index| Instance {
        group: name.to_string(),
        index,
        max_unavailable: max_un,
    })
}

#[cfg(test)]
mod tests {
    use super::super::load_dirs_all;
    use super::*;
    use std::path::PathBuf;

    /// A config directory with these files; every error of it, one string each.
    fn load(tag: &str, files: &[(&str, &str)]) -> (Vec<String>, Vec<String>, PathBuf) {
        let d = std::env::temp_dir().join(format!("paddock-inst-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (name, src) in files {
            std::fs::write(d.join(name), src).unwrap();
        }
        let (apps, errs) = load_dirs_all(std::slice::from_ref(&d));
        let _ = std::fs::remove_dir_all(&d);
        let errs = errs.iter().map(|e| e.to_string()).collect();
        (apps.into_keys().collect(), errs, d)
    }

    const WEB: &str = "instances = 3\ncommand = [\"/bin/sleep\", \"10%i\"]\nenv = { PORT = \"80%i\", PCT = \"100%%\" }\n[health]\nkind = \"tcp\"\naddress = \"127.0.0.1:180%i\"\n";

    #[test]
    fn a_file_with_instances_is_n_apps_with_their_own_values() {
        let d = std::env::temp_dir().join(format!("paddock-inst-n-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("web.toml"), WEB).unwrap();
        std::fs::write(
            d.join("db.toml"),
            "command = [\"/bin/true\"]\nafter = [\"web\"]\n",
        )
        .unwrap();
        let (apps, errs) = load_dirs_all(std::slice::from_ref(&d));
        let _ = std::fs::remove_dir_all(&d);
        assert!(errs.is_empty(), "{errs:?}");
        let names: Vec<&str> = apps.keys().map(String::as_str).collect();
        assert_eq!(names, ["db", "web@0", "web@1", "web@2"]);
        let w2 = &apps["web@2"];
        assert_eq!(w2.command, ["/bin/sleep", "102"]);
        assert_eq!(w2.env["PORT"], "802");
        assert_eq!(w2.env["PCT"], "100%");
        let inst = w2.instance.as_ref().unwrap();
        assert_eq!(
            (inst.group.as_str(), inst.index, inst.max_unavailable),
            ("web", 2, 1)
        );
        assert!(
            matches!(&w2.health.as_ref().unwrap().probe, crate::config::health::Probe::Tcp { address } if address == "127.0.0.1:1802")
        );
        assert!(apps["db"].instance.is_none());
    }

    #[test]
    fn bad_instances_are_precise_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "instances = 0\ncommand = [\"/bin/true\"]\n",
                "key `instances`: 0 is out of range: run 1 to 256",
            ),
            (
                "instances = \"x\"\ncommand = [\"/bin/true\"]\n",
                "key `instances`: invalid type: string \"x\"",
            ),
            (
                "instances = 1000\ncommand = [\"/bin/true\"]\n",
                "key `instances`: 1000 is out of range",
            ),
            (
                "command = [\"/bin/true\"]\n[restart]\nmax_unavailable = 2\n",
                "key `restart.max_unavailable`: is only used with `instances`",
            ),
            (
                "instances = 2\ncommand = [\"/bin/true\"]\n[restart]\nmax_unavailable = 0\n",
                "key `restart.max_unavailable`: 0 is out of range",
            ),
            (
                "instances = 2\ncommand = [\"/bin/date\", \"+%s\"]\n",
                "web.toml:2:25: key `command`: \"%s\" in \"+%s\"",
            ),
        ];
        for (i, (src, want)) in cases.iter().enumerate() {
            let (apps, errs, _) = load(&format!("bad{i}"), &[("web.toml", src)]);
            assert!(apps.is_empty(), "{src}: {apps:?}");
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{src}: want {want}, got {errs:#?}"
            );
        }
    }

    #[test]
    fn an_instance_name_belongs_to_its_group() {
        let (_, errs, d) = load(
            "clash",
            &[
                ("web.toml", WEB),
                ("web@1.toml", "command = [\"/bin/true\"]\n"),
            ],
        );
        assert!(
            errs.iter().any(|e| e.starts_with(&format!(
                "{}: duplicate app name \"web@1\": it is an instance of \"web\"",
                d.join("web@1.toml").display()
            ))),
            "{errs:#?}"
        );
        let (_, errs, _) = load(
            "dep",
            &[
                ("web.toml", WEB),
                (
                    "db.toml",
                    "command = [\"/bin/true\"]\nrequires = [\"web@1\"]\n",
                ),
            ],
        );
        assert!(
            errs.iter().any(|e| e.contains(
                "db.toml:2:1: depends on \"web@1\", one of the `instances` of \"web\": name \"web\""
            )),
            "{errs:#?}"
        );
        let (_, errs, _) = load(
            "at",
            &[("a@b.toml", "instances = 2\ncommand = [\"/bin/true\"]\n")],
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("key `instances`: the app \"a@b\" has '@'")),
            "{errs:#?}"
        );
    }

    #[test]
    fn percent_i_is_the_instance_and_percent_percent_a_percent() {
        assert_eq!(expand("a", 3), Ok(None));
        assert_eq!(expand("1800%i", 3), Ok(Some("18003".into())));
        assert_eq!(expand("%i-%%i-%%", 12), Ok(Some("12-%i-%".into())));
        assert!(expand("date +%s", 0).unwrap_err().contains("\"%s\""));
        assert!(expand("50%", 0).unwrap_err().contains("lone %"));
    }
}
