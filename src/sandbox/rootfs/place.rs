//! Placing the bundle's tree in the new root: each entry bound at its own path, a directory
//! that must hold a hole (a host path, /dev, /proc, a tmpfs) rebuilt one level deeper instead,
//! and the mount points the holes need.

use super::{Hole, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, Op, RootFs, c};
use crate::sandbox::rules::Grant;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
/// A bind of a host path at `p`, after the tree was sealed: with its own mount attributes and
/// its Landlock grant.
pub(super) fn bind(
    host: &Path,
    p: &Path,
    attrs: u64,
    grant: Grant,
    fs: &mut RootFs,
    inside: &dyn Fn(&Path) -> Result<CString, String>,
) -> Result<(), String> {
    fs.ops.push(Op::Bind {
        src: c(host)?,
        dst: inside(p)?,
        recursive: true,
    });
    fs.ops.push(Op::Attr {
        dst: inside(p)?,
        set: attrs,
        recursive: true,
    });
    fs.rules_for.push((p.to_path_buf(), grant));
    Ok(())
}

/// The directories leading to a hole and its mount point (an empty file for a file).
pub(super) fn mount_point(
    p: &Path,
    hole: &Hole,
    made: &mut BTreeSet<PathBuf>,
    ops: &mut Vec<Op>,
    inside: &dyn Fn(&Path) -> Result<CString, String>,
) -> Result<(), String> {
    for anc in p.ancestors().collect::<Vec<_>>().into_iter().rev().skip(1) {
        if anc != p && made.insert(anc.to_path_buf()) {
            ops.push(Op::Mkdir(inside(anc)?));
        }
    }
    let is_file = match hole {
        Hole::ReadOnly(h) | Hole::ReadWrite(h) => {
            std::fs::metadata(h).map(|m| !m.is_dir()).unwrap_or(false)
        }
        // Made when the app first starts, after the plan: always a file.
        Hole::Socket(_) => true,
        _ => false,
    };
    if is_file {
        ops.push(Op::Touch(inside(p)?));
    } else if made.insert(p.to_path_buf()) {
        ops.push(Op::Mkdir(inside(p)?));
    }
    Ok(())
}

/// Places the bundle's tree in the new root.
pub(super) struct Placer<'a> {
    pub(super) holes: &'a [PathBuf],
    /// Holes that are tmpfs mounts: bundle directories there are placed on them afterwards.
    pub(super) tmpfs: Vec<PathBuf>,
    /// Placing on a tmpfs, after the tree was made read-only: each bind is made read-only.
    pub(super) late: bool,
    /// (bundle directory, path inside) to place once the tmpfs is mounted.
    pub(super) deferred: Vec<(PathBuf, PathBuf)>,
    pub(super) inside: &'a dyn Fn(&Path) -> Result<CString, String>,
}

impl Placer<'_> {
    /// Binds the entries of the bundle directory `host` at `at` inside, splitting directories
    /// that must hold a hole.
    pub(super) fn place(
        &mut self,
        host: &Path,
        at: &Path,
        fs: &mut RootFs,
        made: &mut BTreeSet<PathBuf>,
    ) -> Result<(), String> {
        let inside = self.inside;
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .map_err(|e| format!("{}: {}", host.display(), crate::util::io_reason(&e)))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = at.join(e.file_name());
            let h = e.path();
            let ft = e
                .file_type()
                .map_err(|err| format!("{}: {}", h.display(), crate::util::io_reason(&err)))?;
            if self.holes.contains(&p) {
                // The hole takes this place; on a tmpfs the bundle's files come back on top.
                if ft.is_dir() && self.tmpfs.contains(&p) && !self.late {
                    self.deferred.push((h, p));
                }
                continue;
            }
            let holds_hole = self.holes.iter().any(|x| x.starts_with(&p));
            if ft.is_symlink() {
                if holds_hole {
                    return Err(format!(
                        "{} is a symbolic link in the bundle; give the path it points to in [sandbox]",
                        p.display()
                    ));
                }
                let target = std::fs::read_link(&h)
                    .map_err(|err| format!("{}: {}", h.display(), crate::util::io_reason(&err)))?;
                fs.ops.push(Op::Symlink {
                    target: c(&target)?,
                    at: inside(&p)?,
                });
            } else if ft.is_dir() && holds_hole {
                if made.insert(p.clone()) {
                    fs.ops.push(Op::Mkdir(inside(&p)?));
                }
                self.place(&h, &p, fs, made)?;
            } else if !ft.is_dir() && !ft.is_file() {
                // A bundle holds files, directories and links; a device node or socket here
                // would be a tampered tree: never bind it into a sandbox.
                return Err(format!(
                    "{}: not a regular file, directory or symbolic link; rebuild the bundle (`paddock bundle verify` checks it)",
                    h.display()
                ));
            } else {
                fs.ops.push(if ft.is_dir() {
                    made.insert(p.clone());
                    Op::Mkdir(inside(&p)?)
                } else {
                    Op::Touch(inside(&p)?)
                });
                fs.ops.push(Op::Bind {
                    src: c(&h)?,
                    dst: inside(&p)?,
                    recursive: false,
                });
                if self.late {
                    fs.ops.push(Op::Attr {
                        dst: inside(&p)?,
                        set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                        recursive: false,
                    });
                }
                fs.rules_for.push((p, Grant::ReadExec));
            }
        }
        Ok(())
    }
}
