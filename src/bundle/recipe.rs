//! Bundle recipes: `bundles/NAME.toml`.
//!
//! ```toml
//! entry = "/usr/sbin/nginx"                 # the main program (an ELF executable)
//! include = ["/usr/bin/redis-cli"]          # more programs (closure resolved) or single files
//! data = ["/etc/nginx", "/usr/share/nginx"] # files or directories, copied as they are
//! libs = ["libnss_files.so.2"]              # libraries the programs dlopen(): sonames or paths
//! ```
//! Relative paths are taken from the recipe's directory. Unknown keys are refused; every error
//! is `FILE:LINE:COL: key `KEY`: MESSAGE`.

use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One value of the recipe, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub key: &'static str,
    /// As written.
    pub value: String,
    /// The value as an absolute, normalised path (relative values taken from the recipe's
    /// directory). `None` for a soname in `libs`.
    pub path: Option<String>,
    pub span: Range<usize>,
}

#[derive(Clone, Debug)]
pub struct Recipe {
    pub name: String,
    pub file: PathBuf,
    pub src: String,
    pub entry: Item,
    pub include: Vec<Item>,
    pub data: Vec<Item>,
    pub libs: Vec<Item>,
}

/// A recipe problem, with its position: the same shape (and `file:line:col: message` display)
/// as an app file error.
pub type RecipeError = crate::diag::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    entry: Option<Spanned<String>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    data: Vec<Spanned<String>>,
    #[serde(default)]
    libs: Vec<Spanned<String>>,
}

/// A bundle name: what `bundle = "NAME"` in an app file and `refs/NAME` in the store use.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a bundle name must be 1 to 64 characters long".into());
    }
    if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(format!(
            "bundle name \"{name}\" may only use letters, digits, '-', '_', '.', '@' and may not start with '.'"
        ));
    }
    if super::is_id(name) {
        return Err(format!(
            "bundle name \"{name}\" looks like a bundle id; rename the recipe"
        ));
    }
    Ok(())
}

impl Recipe {
    /// The error for one item (its line and column, its key).
    pub fn err(&self, item: &Item, msg: impl Into<String>) -> RecipeError {
        err_at(
            &self.file,
            &self.src,
            Some(item.span.clone()),
            item.key,
            msg,
        )
    }

    pub fn items(&self) -> impl Iterator<Item = &Item> {
        std::iter::once(&self.entry)
            .chain(&self.include)
            .chain(&self.data)
            .chain(&self.libs)
    }
}

fn err_at(
    file: &Path,
    src: &str,
    span: Option<Range<usize>>,
    key: &str,
    msg: impl Into<String>,
) -> RecipeError {
    let (line, col) = span.map_or((0, 0), |s| crate::diag::line_col(src, s.start));
    let key = if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    };
    RecipeError {
        file: file.to_path_buf(),
        line,
        col,
        message: format!("{key}{}", msg.into()),
    }
}

/// Parses a recipe's text. `file` names it in errors; relative paths are taken from `base`.
pub fn parse(name: &str, file: &Path, base: &Path, src: &str) -> Result<Recipe, Vec<RecipeError>> {
    let mut errors = vec![];
    if let Err(e) = valid_name(name) {
        return Err(vec![err_at(file, src, None, "", e)]);
    }
    let raw: RawRecipe = match toml::from_str(src) {
        Ok(r) => r,
        Err(e) => {
            let key = e
                .span()
                .and_then(|s| crate::diag::key_on_line(src, s.start))
                .map(|(_, k)| k)
                .unwrap_or_default();
            let mut msg = e.message().trim().to_string();
            if msg.starts_with("unknown field") {
                msg.push_str("; a recipe has only these keys (see docs/bundles.md, \"Recipes\")");
            }
            return Err(vec![err_at(file, src, e.span(), &key, msg)]);
        }
    };
    let item = |errors: &mut Vec<RecipeError>,
                key: &'static str,
                v: &Spanned<String>,
                soname_ok: bool|
     -> Option<Item> {
        let s = v.get_ref();
        let bad = |errors: &mut Vec<RecipeError>, m: String| {
            errors.push(err_at(file, src, Some(v.span()), key, m));
            None
        };
        if s.is_empty() {
            return bad(errors, "is empty: give a path".into());
        }
        if s.contains('\0') {
            return bad(errors, "may not contain NUL bytes".into());
        }
        let path = if soname_ok && !s.contains('/') {
            None
        } else {
            let abs = if s.starts_with('/') {
                s.clone()
            } else {
                match base.join(s).to_str() {
                    Some(p) if p.starts_with('/') => p.to_string(),
                    _ => {
                        return bad(
                            errors,
                            format!(
                                "\"{s}\" is relative and the recipe's directory {} is not an absolute UTF-8 path",
                                base.display()
                            ),
                        );
                    }
                }
            };
            super::normalize(&abs)
        };
        Some(Item {
            key,
            value: s.clone(),
            path,
            span: v.span(),
        })
    };
    let entry = match &raw.entry {
        Some(e) => item(&mut errors, "entry", e, false),
        None => {
            errors.push(err_at(
                file,
                src,
                Some(0..0),
                "entry",
                "missing: a recipe needs the main program, e.g. entry = \"/usr/sbin/nginx\"",
            ));
            None
        }
    };
    let include: Vec<Item> = raw
        .include
        .iter()
        .filter_map(|v| item(&mut errors, "include", v, false))
        .collect();
    let data: Vec<Item> = raw
        .data
        .iter()
        .filter_map(|v| item(&mut errors, "data", v, false))
        .collect();
    let libs: Vec<Item> = raw
        .libs
        .iter()
        .filter_map(|v| item(&mut errors, "libs", v, true))
        .collect();
    match entry {
        Some(entry) if errors.is_empty() => Ok(Recipe {
            name: name.to_string(),
            file: file.to_path_buf(),
            src: src.to_string(),
            entry,
            include,
            data,
            libs,
        }),
        _ => Err(errors),
    }
}

/// Reads a recipe file. Its name is the file name without `.toml`.
pub fn load(path: &Path) -> Result<Recipe, Vec<RecipeError>> {
    let err = |m: String| {
        vec![RecipeError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            message: m,
        }]
    };
    if path.extension().is_none_or(|x| x != "toml") {
        return Err(err(
            "a recipe is a NAME.toml file (the bundle's name is the file name)".into(),
        ));
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| err("file name is not valid UTF-8".into()))?;
    let src = crate::util::read_regular_text(path, 1 << 20).map_err(err)?;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| err(format!("current directory: {}", crate::util::io_reason(&e))))?
            .join(path)
    };
    let base = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
    parse(name, path, &base, &src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Recipe, Vec<RecipeError>> {
        parse(
            "web",
            Path::new("bundles/web.toml"),
            Path::new("/srv/recipes"),
            src,
        )
    }
    fn first_err(src: &str) -> String {
        p(src).unwrap_err()[0].to_string()
    }

    #[test]
    fn full_recipe() {
        let r = p(r#"
entry = "/usr/sbin/nginx"
include = ["bin/helper", "/usr/bin/../bin/x"]
data = ["/etc/nginx"]
libs = ["libnss_files.so.2", "../plugins/libp.so.1"]
"#)
        .unwrap();
        assert_eq!(r.entry.path.as_deref(), Some("/usr/sbin/nginx"));
        assert_eq!(
            r.include[0].path.as_deref(),
            Some("/srv/recipes/bin/helper")
        );
        assert_eq!(r.include[1].path.as_deref(), Some("/usr/bin/x"));
        assert_eq!(r.libs[0].path, None);
        assert_eq!(r.libs[1].path.as_deref(), Some("/srv/plugins/libp.so.1"));
        assert_eq!(r.items().count(), 6);
        let e = r.err(&r.libs[1], "boom");
        assert_eq!(e.to_string(), "bundles/web.toml:5:30: key `libs`: boom");
    }

    #[test]
    fn errors() {
        let e = first_err("entry = \"/bin/sh\"\nincludes = [\"/bin/ls\"]\n");
        assert!(
            e.starts_with("bundles/web.toml:2:1: key `includes`: unknown field `includes`"),
            "{e}"
        );
        assert!(e.contains("expected one of"), "{e}");
        let e = first_err("include = [\"/bin/ls\"]\n");
        assert!(e.contains(":1:1: key `entry`: missing"), "{e}");
        let e = first_err("entry = \"\"\n");
        assert!(e.contains(":1:9: key `entry`: is empty"), "{e}");
        let e = first_err("entry = 3\n");
        assert!(e.contains(":1:9: key `entry`:"), "{e}");
        let e = first_err("entry = \"/bin/sh\"\ndata = \"/etc\"\n");
        assert!(e.contains(":2:8: key `data`:"), "{e}");
        let e = first_err("entry = \"/bin/sh\"\nlibs = [\"a\", \"\"]\n");
        assert!(e.contains(":2:14: key `libs`: is empty"), "{e}");
        let e = parse(
            "bad name",
            Path::new("x.toml"),
            Path::new("/"),
            "entry = \"/x\"",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(e.starts_with("x.toml: bundle name \"bad name\""), "{e}");
        assert!(valid_name(&"a".repeat(64).replace('a', "b")).is_err());
        assert!(valid_name("redis-server").is_ok());
    }
}
