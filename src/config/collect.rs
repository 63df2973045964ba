//! Every error of a file in one pass. serde stops at the first bad key; here the document is
//! parsed once (keeping positions), and deserializing is retried with each failing key taken out
//! until the rest deserializes, so `stop_timout` and `stopsignal` in the same file are both
//! reported. Later checks skip the keys taken out (a key with a bad type is not also "missing").

use super::FileCtx;
use super::suggest::improve_with_suggestion;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// More bad keys than this in one file is not a typo: stop there.
const MAX_ERRORS: usize = 100;

/// Deserializes `src`, reporting every syntax error, or else every key that does not fit `T`
/// (unknown, wrong type, bad value). `None` when the file is not TOML at all or could not be
/// made to fit.
pub(crate) fn deserialize_all<T: DeserializeOwned>(cx: &mut FileCtx, src: &str) -> Option<T> {
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        for e in syntax {
            let key = e
                .span()
                .and_then(|s| super::key_at(src, s.start))
                .unwrap_or_default();
            cx.err_at(e.span(), &key, e.message().trim());
        }
        return None;
    }
    let span = doc.span();
    let mut table = doc.into_inner();
    if let Some(i) = cx.instance {
        // `instances`: this instance's values (`%i`), errors at the value's own place.
        super::instances::substitute(cx, &mut table, i, "");
    }
    for _ in 0..MAX_ERRORS {
        let de = toml::de::Deserializer::from(Spanned::new(span.clone(), table.clone()));
        let e = match T::deserialize(de) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let (mut msg, likely) = improve_with_suggestion(e.message().trim());
        let unknown_key = msg.starts_with("unknown field");
        if unknown_key {
            msg.push_str("; see the config reference in docs/config.md");
        }
        let Some(at) = e.span() else {
            cx.err_at(None, "", msg);
            return None;
        };
        match take_out(&mut table, at.start) {
            Some(mut path) => {
                let key = path.join(".");
                cx.err_at(Some(at), &key, msg);
                cx.removed.push(key);
                if let (true, Some(likely)) = (unknown_key, likely) {
                    // `comand = …`: the key meant, when absent, is not also reported missing.
                    path.pop();
                    path.push(likely);
                    if !has(&table, &path) {
                        cx.removed.push(path.join("."));
                    }
                }
            }
            None => {
                let key = super::key_at(src, at.start).unwrap_or_default();
                cx.err_at(Some(at), &key, msg);
                return None;
            }
        }
    }
    cx.err_at(
        None,
        "",
        format!("more than {MAX_ERRORS} errors; fix these first"),
    );
    None
}

/// Whether the dotted `path` is in the document.
fn has(t: &DeTable, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    match t.get(first.as_str()) {
        None => false,
        Some(_) if rest.is_empty() => true,
        Some(v) => match v.get_ref() {
            DeValue::Table(inner) => has(inner, rest),
            _ => false,
        },
    }
}

fn holds(span: std::ops::Range<usize>, at: usize) -> bool {
    span.start <= at && (at < span.end || span.start == span.end)
}

/// Removes the innermost key whose name or value holds byte `at`; returns its dotted path.
fn take_out(t: &mut DeTable, at: usize) -> Option<Vec<String>> {
    // Tables first: a `[table]`'s own span need not cover the keys below its header.
    let keys: Vec<Spanned<std::borrow::Cow<str>>> = t.keys().cloned().collect();
    for k in &keys {
        if let Some(v) = t.get_mut(k)
            && let DeValue::Table(inner) = v.get_mut()
            && let Some(mut path) = take_out(inner, at)
        {
            path.insert(0, k.get_ref().to_string());
            return Some(path);
        }
    }
    let hit = t
        .iter()
        .find(|(k, v)| holds(k.span(), at) || holds(v.span(), at))
        .map(|(k, _)| k.clone())?;
    t.remove(&hit);
    Some(vec![hit.get_ref().to_string()])
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn errs(src: &str) -> Vec<String> {
        parse_app("web", Path::new("/apps/web.toml"), src)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn every_bad_key_of_a_file_is_reported_in_line_order() {
        let e = errs(
            "command = [\"/bin/true\"]\nstop_timout = \"5s\"\nstopsignal = \"INT\"\n[restart]\npolcy = \"always\"\nbackoff_max = 30\n",
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with("/apps/web.toml:2:1: key `stop_timout`: unknown field `stop_timout`; did you mean `stop_timeout`?"),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("/apps/web.toml:3:1: key `stopsignal`: unknown field `stopsignal`; did you mean `stop_signal`?"),
            "{e:#?}"
        );
        assert!(
            e[2].starts_with("/apps/web.toml:5:1: key `restart.polcy`: unknown field `polcy`; did you mean `policy`?"),
            "{e:#?}"
        );
        assert!(
            e[3].starts_with("/apps/web.toml:6:15: key `restart.backoff_max`"),
            "{e:#?}"
        );
    }

    #[test]
    fn a_key_taken_out_is_not_also_missing_and_later_checks_still_run() {
        let e = errs("command = 5\nuser = \"no-such-user-xyz\"\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].contains(":1:11: key `command`: invalid type"),
            "{e:#?}"
        );
        assert!(e[1].contains(":2:8: key `user`: no such user"), "{e:#?}");
        let e = errs(
            "command = [\"/bin/true\"]\n[restart]\npolicy = \"sometimes\"\nmax_failures = \"x\"\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        let e = errs("comand = [\"/bin/true\"]\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        let e = errs("comand = [\"/bin/true\"]\ncommand = []\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        let e = errs("command = [\"/bin/true\"\nx = = 1\n");
        assert!(!e.is_empty() && e[0].contains("web.toml:"), "{e:#?}");
    }
}
