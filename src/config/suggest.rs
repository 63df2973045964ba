//! "Did you mean …?" for misspelt keys, values and app names: the closest candidate by edit
//! distance, when it is close enough to be the likely intent.

/// Edit distance counting an insertion, deletion, substitution or swap of two neighbours as
/// one edit (optimal string alignment), over characters.
pub fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if it is within a third of the word's length (at least 1,
/// at most 3 edits), or if one contains the other ignoring `_`/`-` (`stopsignal`,
/// `stop-signal` → `stop_signal`).
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let plain = |s: &str| s.replace(['_', '-'], "").to_ascii_lowercase();
    let w = plain(word);
    let limit = (word.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let d = if plain(c) == w {
            0
        } else {
            distance(&word.to_ascii_lowercase(), &c.to_ascii_lowercase())
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// "; did you mean `x`?" or nothing.
pub fn hint<'a, I>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map_or(String::new(), |c| format!("; did you mean `{c}`?"))
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), rewritten to
/// lead with the likely key: "unknown field `x`; did you mean `a`? (expected one of …)".
pub fn improve_serde_message(msg: &str) -> String {
    improve_with_suggestion(msg).0
}

/// `improve_serde_message`, and the key or value suggested.
pub fn improve_with_suggestion(msg: &str) -> (String, Option<String>) {
    let Some(rest) = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("unknown variant `"))
    else {
        return (msg.to_string(), None);
    };
    let Some((word, tail)) = rest.split_once('`') else {
        return (msg.to_string(), None);
    };
    let expected: Vec<&str> = tail
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    let head = &msg[..msg.len() - rest.len() + word.len() + 1];
    match closest(word, expected.iter().copied()) {
        Some(c) => {
            let tail = tail.trim_start_matches(',').trim();
            (
                format!("{head}; did you mean `{c}`? ({tail})"),
                Some(c.to_string()),
            )
        }
        None => (msg.to_string(), None),
    }
}

/// The error for names on a command line that are no app: each one, with the likely app.
pub fn no_such_apps<'a>(unknown: &[&str], known: impl Iterator<Item = &'a str> + Clone) -> String {
    let each: Vec<String> = unknown
        .iter()
        .map(|n| match closest(n, known.clone()) {
            Some(c) => format!("{n} (did you mean {c}?)"),
            None => n.to_string(),
        })
        .collect();
    format!(
        "no such app{}: {} (see `paddock status`); nothing was done",
        if unknown.len() == 1 { "" } else { "s" },
        each.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("stop_timout", "stop_timeout"), 1);
        assert_eq!(distance("polcy", "policy"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("wbe", "web"), 1);
    }

    #[test]
    fn suggestions() {
        let keys = [
            "stop_timeout",
            "stop_signal",
            "command",
            "after",
            "requires",
        ];
        assert_eq!(closest("stop_timout", keys), Some("stop_timeout"));
        assert_eq!(closest("stopsignal", keys), Some("stop_signal"));
        assert_eq!(closest("stop-signal", keys), Some("stop_signal"));
        assert_eq!(closest("comand", keys), Some("command"));
        assert_eq!(closest("xyzzy", keys), None);
        assert_eq!(closest("web", ["db", "cache"]), None);
        assert_eq!(closest("wbe", ["web", "db"]), Some("web"));
        let m = improve_serde_message(
            "unknown field `polcy`, expected one of `policy`, `backoff_initial`",
        );
        assert_eq!(
            m,
            "unknown field `polcy`; did you mean `policy`? (expected one of `policy`, `backoff_initial`)"
        );
        let m = improve_serde_message("unknown variant `alway`, expected `always` or `never`");
        assert!(m.contains("did you mean `always`?"), "{m}");
        assert_eq!(
            improve_serde_message("invalid type: integer"),
            "invalid type: integer"
        );
    }
}
