//! The root filesystem of a sandbox, as a list of mount operations computed in the parent from
//! the bundle's tree and the `[sandbox]` paths, and run by the child in its own mount namespace.
//!
//! The new root is a small tmpfs. Each top-level entry of the bundle is bind-mounted (or, for a
//! symlink, copied) at its own path; where a host path or paddock's /dev, /proc or /tmp must
//! appear inside a bundle directory, that directory is rebuilt on the tmpfs one level deeper
//! instead, so the bundle's files keep their paths and nothing else of the host shows. Then the
//! whole tree is made read-only and nosuid with one `mount_setattr(AT_RECURSIVE)`, and the
//! writable mounts (/tmp, `tmpfs`, `read_write`, /dev/shm, /dev/pts) go on top.
//!
//! Layout: this file holds the operations, the paths given and [`build`]; `place` binds the
//! bundle's tree around the holes; `op` runs and describes each operation (in the child).

mod op;
mod place;

use super::rules::{Grant, Rules};
use place::{Placer, bind, mount_point};
use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Op {
    Mkdir(CString),
    /// An empty file to bind a file onto.
    Touch(CString),
    Symlink {
        target: CString,
        at: CString,
    },
    Bind {
        src: CString,
        dst: CString,
        recursive: bool,
    },
    Mount {
        fstype: &'static CStr,
        dst: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    /// Writes `data` to a file (a sysctl of the sandbox's own namespaces); a file this kernel
    /// does not have is skipped.
    Write {
        path: CString,
        data: &'static CStr,
    },
    /// `mount_setattr(dst, AT_RECURSIVE?, set)`.
    Attr {
        dst: CString,
        set: u64,
        recursive: bool,
    },
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

fn c(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path cannot contain a NUL byte", p.display()))
}

/// The device nodes of the sandbox's /dev, bound from the host's.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What goes where: built by `build`, run by `Op::run` in the child.
pub struct RootFs {
    pub newroot: CString,
    pub ops: Vec<Op>,
    /// Landlock rules for the same tree, paths as seen inside.
    pub rules_for: Vec<(PathBuf, Grant)>,
}

/// One place inside the sandbox that is not the bundle's.
#[derive(Clone, Debug)]
enum Hole {
    Dev,
    Proc,
    Tmpfs {
        mode: &'static str,
    },
    ReadOnly(PathBuf),
    ReadWrite(PathBuf),
    /// A Unix socket of paddock's the app talks to (the sd_notify socket), bound as a file.
    Socket(PathBuf),
}

pub struct Paths<'a> {
    pub read_only: &'a [PathBuf],
    pub read_write: &'a [PathBuf],
    pub tmpfs: &'a [PathBuf],
    /// paddock's sockets the app sends to (`NOTIFY_SOCKET`), at the same path inside.
    pub sockets: &'a [PathBuf],
    /// Owner of the `tmpfs` mounts (host ids).
    pub owner: (u32, u32),
    /// Files paddock made for the app (its /etc/passwd and /etc/group): (path inside, host
    /// file), bound read-only.
    pub files: &'a [(PathBuf, PathBuf)],
    /// Host paths bound at other paths inside (an OCI spec's bind mounts): (path inside, host
    /// path, writable).
    pub binds: &'a [(PathBuf, PathBuf, bool)],
    /// Size of /tmp and /dev/shm, bytes.
    pub tmp_size: u64,
    /// The app may make symbolic links in its `read_write` paths.
    pub symlinks: bool,
}

/// Files of /proc that tell about or act on the host, hidden behind /dev/null, and directories
/// hidden behind an empty read-only tmpfs (runc's masked paths, and kallsyms). The rest of /proc
/// is read-only (the whole tree is sealed after it is mounted).
const PROC_MASKED_FILES: &[&str] = &[
    "kcore",
    "kallsyms",
    "keys",
    "key-users",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "sysrq-trigger",
    "kmsg",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "config.gz",
];
const PROC_MASKED_DIRS: &[&str] = &[
    "acpi",
    "asound",
    "scsi",
    "bus",
    "fs",
    "irq",
    "sys/fs/binfmt_misc",
    "driver",
];

pub fn build(newroot: &Path, bundle_root: &Path, paths: &Paths) -> Result<RootFs, String> {
    let mut holes: Vec<(PathBuf, Hole)> = vec![
        ("/dev".into(), Hole::Dev),
        ("/proc".into(), Hole::Proc),
        ("/tmp".into(), Hole::Tmpfs { mode: "1777" }),
    ];
    holes.extend(
        paths
            .tmpfs
            .iter()
            .map(|p| (p.clone(), Hole::Tmpfs { mode: "0755" })),
    );
    holes.extend(
        paths
            .read_only
            .iter()
            .map(|p| (p.clone(), Hole::ReadOnly(p.clone()))),
    );
    holes.extend(
        paths
            .read_write
            .iter()
            .map(|p| (p.clone(), Hole::ReadWrite(p.clone()))),
    );
    holes.extend(
        paths
            .sockets
            .iter()
            .map(|p| (p.clone(), Hole::Socket(p.clone()))),
    );
    holes.extend(
        paths
            .files
            .iter()
            .map(|(p, h)| (p.clone(), Hole::ReadOnly(h.clone()))),
    );
    holes.extend(paths.binds.iter().map(|(p, h, rw)| {
        let hole = if *rw {
            Hole::ReadWrite(h.clone())
        } else {
            Hole::ReadOnly(h.clone())
        };
        (p.clone(), hole)
    }));
    let inside = |p: &Path| -> Result<CString, String> {
        // Every place is under the new root: a `..` would climb out of it (onto the host, where
        // these steps run as paddock).
        if p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(format!(
                "{}: a path in the sandbox may not contain `..`",
                p.display()
            ));
        }
        c(&newroot.join(p.strip_prefix("/").unwrap_or(p)))
    };
    let mut fs = RootFs {
        newroot: c(newroot)?,
        ops: vec![Op::Mount {
            fstype: c"tmpfs",
            dst: c(newroot)?,
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: c"mode=0755,size=1m".into(),
        }],
        rules_for: vec![("/".into(), Grant::List)],
    };
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    made.insert("/".into());
    let hole_paths: Vec<PathBuf> = holes.iter().map(|(p, _)| p.clone()).collect();
    let mut pl = Placer {
        holes: &hole_paths,
        tmpfs: holes
            .iter()
            .filter(|(_, h)| matches!(h, Hole::Tmpfs { .. }))
            .map(|(p, _)| p.clone())
            .collect(),
        late: false,
        deferred: vec![],
        inside: &inside,
    };
    pl.place(bundle_root, Path::new("/"), &mut fs, &mut made)?;

    // Holes under a tmpfs hole (as /tmp/app) are mounted on it, after it.
    let tmpfs_holes: Vec<PathBuf> = holes
        .iter()
        .filter(|(_, h)| matches!(h, Hole::Tmpfs { .. }))
        .map(|(p, _)| p.clone())
        .collect();
    let on_tmpfs = |p: &Path| tmpfs_holes.iter().any(|t| p.starts_with(t) && p != t);
    let (late_holes, holes): (Vec<_>, Vec<_>) = holes.into_iter().partition(|(p, _)| on_tmpfs(p));
    // Mount points of the holes, then the read-only parts of them.
    for (p, hole) in &holes {
        mount_point(p, hole, &mut made, &mut fs.ops, &inside)?;
    }
    let dev = Path::new("/dev");
    fs.ops.push(Op::Mount {
        fstype: c"tmpfs",
        dst: inside(dev)?,
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: c"mode=0755,size=64k".into(),
    });
    for d in DEVICES {
        let p = dev.join(d);
        fs.ops.push(Op::Touch(inside(&p)?));
        fs.ops.push(Op::Bind {
            src: c(&p)?,
            dst: inside(&p)?,
            recursive: false,
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        fs.ops.push(Op::Symlink {
            target: CString::new(target).map_err(|e| e.to_string())?,
            at: inside(&dev.join(name))?,
        });
    }
    for d in ["pts", "shm"] {
        fs.ops.push(Op::Mkdir(inside(&dev.join(d))?));
    }
    let proc = Path::new("/proc");
    fs.ops.push(Op::Mount {
        fstype: c"proc",
        dst: inside(proc)?,
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: CString::default(),
    });
    // Memory files the app creates cannot be executed (MFD_EXEC refused, others sealed
    // noexec): a sysctl of its own pid namespace, Linux 6.3+.
    fs.ops.push(Op::Write {
        path: inside(&proc.join("sys/vm/memfd_noexec"))?,
        data: c"2",
    });
    // Masks, decided on the host's /proc (the same kernel).
    for f in PROC_MASKED_FILES {
        let p = proc.join(f);
        if p.exists() {
            fs.ops.push(Op::Bind {
                src: c"/dev/null".into(),
                dst: inside(&p)?,
                recursive: false,
            });
        }
    }
    for d in PROC_MASKED_DIRS {
        let p = proc.join(d);
        if p.is_dir() {
            fs.ops.push(Op::Mount {
                fstype: c"tmpfs",
                dst: inside(&p)?,
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
                data: c"mode=0555,size=4k".into(),
            });
        }
    }
    for (p, hole) in holes.iter().filter(|(p, _)| !on_tmpfs(p)) {
        if let Hole::ReadOnly(h) = hole {
            fs.ops.push(Op::Bind {
                src: c(h)?,
                dst: inside(p)?,
                recursive: true,
            });
            fs.rules_for.push((p.clone(), Grant::Read));
        }
    }
    // Everything so far read-only and nosuid, in one call.
    fs.ops.push(Op::Attr {
        dst: c(newroot)?,
        set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        recursive: true,
    });
    // The writable parts.
    let (uid, gid) = paths.owner;
    let host_write = if paths.symlinks {
        Grant::ReadWrite
    } else {
        Grant::HostWrite
    };
    // Landlock's rights add up along a path: a tmpfs holding a host path (a `read_write` dir
    // under /tmp) must not grant the symbolic links the host path may not have.
    let tmpfs_grant = |t: &Path| {
        if paths
            .read_write
            .iter()
            .chain(paths.sockets)
            .chain(paths.binds.iter().filter(|b| b.2).map(|b| &b.0))
            .any(|h| h.starts_with(t))
        {
            host_write
        } else {
            Grant::ReadWrite
        }
    };
    for (p, hole) in &holes {
        if let Hole::Tmpfs { mode } = hole {
            let data = if p == Path::new("/tmp") {
                format!("mode={mode},size={}", paths.tmp_size)
            } else {
                format!("mode={mode},uid={uid},gid={gid}")
            };
            fs.ops.push(Op::Mount {
                fstype: c"tmpfs",
                dst: inside(p)?,
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: CString::new(data).map_err(|e| e.to_string())?,
            });
            fs.rules_for.push((p.clone(), tmpfs_grant(p)));
        }
    }
    fs.ops.push(Op::Mount {
        fstype: c"tmpfs",
        dst: inside(&dev.join("shm"))?,
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: CString::new(format!("mode=1777,size={}", paths.tmp_size))
            .map_err(|e| e.to_string())?,
    });
    fs.ops.push(Op::Mount {
        fstype: c"devpts",
        dst: inside(&dev.join("pts"))?,
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: c"newinstance,ptmxmode=0666,mode=0620".into(),
    });
    for p in paths
        .read_write
        .iter()
        .chain(paths.sockets)
        .filter(|p| !on_tmpfs(p))
    {
        bind(p, p, RW_ATTRS, host_write, &mut fs, &inside)?;
    }
    for (p, h, _) in paths.binds.iter().filter(|b| b.2 && !on_tmpfs(&b.0)) {
        bind(h, p, RW_ATTRS, host_write, &mut fs, &inside)?;
    }
    // Paths on a tmpfs (as /tmp/app): each mount point right before its mount, parents first,
    // so a tmpfs mounted on a tmpfs does not hide the mount points made for what goes on it.
    let mut late_holes = late_holes;
    late_holes.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, hole) in &late_holes {
        mount_point(p, hole, &mut made, &mut fs.ops, &inside)?;
        match hole {
            Hole::Tmpfs { mode } => {
                fs.ops.push(Op::Mount {
                    fstype: c"tmpfs",
                    dst: inside(p)?,
                    flags: libc::MS_NOSUID | libc::MS_NODEV,
                    data: CString::new(format!("mode={mode},uid={uid},gid={gid}"))
                        .map_err(|e| e.to_string())?,
                });
                fs.rules_for.push((p.clone(), tmpfs_grant(p)));
            }
            Hole::ReadOnly(h) => bind(
                h,
                p,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                Grant::Read,
                &mut fs,
                &inside,
            )?,
            Hole::ReadWrite(h) | Hole::Socket(h) => {
                bind(h, p, RW_ATTRS, host_write, &mut fs, &inside)?
            }
            Hole::Dev | Hole::Proc => {}
        }
    }
    // The bundle's own files under a tmpfs (a program built in /tmp, say): bound read-only on
    // it, now that it is mounted.
    pl.late = true;
    for (host, p) in std::mem::take(&mut pl.deferred) {
        pl.place(&host, &p, &mut fs, &mut made)?;
    }
    fs.rules_for.push(("/dev".into(), Grant::Device));
    fs.rules_for.push(("/dev/shm".into(), Grant::ReadWrite));
    fs.rules_for.push(("/proc".into(), Grant::Read));
    Ok(fs)
}

/// Mount attributes of a writable host path.
const RW_ATTRS: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

/// Landlock rules for a root built by `build`.
pub fn add_rules(fs: &RootFs, rules: &mut Rules) -> Result<(), String> {
    for (p, g) in &fs.rules_for {
        rules.add(c(p)?, *g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(fs: &RootFs) -> Vec<String> {
        fs.ops.iter().map(|o| o.describe(&fs.newroot)).collect()
    }

    #[test]
    fn the_bundle_is_bound_whole_where_it_can_and_split_around_host_paths() {
        let t = std::env::temp_dir().join(format!("paddock-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let b = t.join("bundle");
        for d in ["usr/bin", "usr/lib", "etc/nginx", "tmp/build"] {
            std::fs::create_dir_all(b.join(d)).unwrap();
        }
        std::fs::write(b.join("usr/bin/app"), "x").unwrap();
        std::fs::write(b.join("tmp/build/prog"), "x").unwrap();
        std::fs::write(b.join("etc/nginx/nginx.conf"), "x").unwrap();
        std::os::unix::fs::symlink("usr/lib", b.join("lib")).unwrap();
        let certs = PathBuf::from("/etc/ssl/certs");
        let fs = build(
            Path::new("/run/root"),
            &b,
            &Paths {
                read_only: std::slice::from_ref(&certs),
                read_write: &[],
                tmpfs: &[PathBuf::from("/tmp/app")],
                sockets: &[PathBuf::from("/run/paddock/notify/web.sock")],
                owner: (1000, 1000),
                files: &[(PathBuf::from("/etc/passwd"), b.join("usr/bin/app"))],
                binds: &[],
                tmp_size: 1 << 20,
                symlinks: false,
            },
        )
        .unwrap();
        let d = describe(&fs);
        let pos = |what: &str| {
            d.iter()
                .position(|x| x == what)
                .unwrap_or_else(|| panic!("{what} not in {d:#?}"))
        };
        assert_eq!(d[0], "mount tmpfs on /");
        // usr holds no host path: bound whole. etc holds /etc/ssl/certs: rebuilt one level down.
        assert!(d.contains(&format!("bind {}/usr on /usr", b.display())));
        assert!(d.contains(&format!("bind {}/etc/nginx on /etc/nginx", b.display())));
        assert!(
            !d.iter()
                .any(|x| x.starts_with(&format!("bind {}/etc on", b.display())))
        );
        assert!(d.contains(&"symlink /lib".to_string()));
        assert!(pos("mkdir /etc/ssl") < pos("mkdir /etc/ssl/certs"));
        assert!(pos("mkdir /etc/ssl/certs") < pos("bind /etc/ssl/certs on /etc/ssl/certs"));
        // Read-only binds come before the tree is sealed; /tmp and what is on it after.
        let seal = pos("make / read-only/nosuid");
        assert!(pos("bind /etc/ssl/certs on /etc/ssl/certs") < seal);
        assert!(pos("mount proc on /proc") < seal);
        assert!(pos("mount proc on /proc") < pos("write 2 to /proc/sys/vm/memfd_noexec"));
        assert!(pos("bind /dev/null on /proc/timer_list") < seal);
        assert!(pos("mount tmpfs on /proc/irq") < seal);
        // paddock's generated files: read-only binds before the seal.
        assert!(pos(&format!("bind {}/usr/bin/app on /etc/passwd", b.display())) < seal);
        assert!(seal < pos("mount tmpfs on /tmp"));
        assert!(pos("mount tmpfs on /tmp") < pos("mount tmpfs on /tmp/app"));
        assert!(seal < pos("mount devpts on /dev/pts"));
        assert!(pos("create mount point /run/paddock/notify/web.sock") < seal);
        assert!(seal < pos("bind /run/paddock/notify/web.sock on /run/paddock/notify/web.sock"));
        // The bundle's own /tmp content comes back on the sandbox's /tmp, read-only.
        let bind = format!("bind {}/tmp/build on /tmp/build", b.display());
        assert!(pos("mount tmpfs on /tmp") < pos(&bind));
        assert!(pos(&bind) < pos("make /tmp/build read-only/nosuid"));
        assert!(
            fs.rules_for
                .contains(&(PathBuf::from("/tmp/build"), Grant::ReadExec))
        );
        // Landlock: the bundle's entries read+execute, the host path read.
        assert!(
            fs.rules_for
                .contains(&(PathBuf::from("/usr"), Grant::ReadExec))
        );
        assert!(fs.rules_for.contains(&(certs.clone(), Grant::Read)));
        assert!(
            fs.rules_for
                .contains(&(PathBuf::from("/tmp/app"), Grant::ReadWrite))
        );
        // A host path under a link of the bundle is refused; so is a FIFO in the tree.
        let refused = |read_only: &str| {
            build(
                Path::new("/run/root"),
                &b,
                &Paths {
                    read_only: &[PathBuf::from(read_only)],
                    read_write: &[],
                    tmpfs: &[],
                    sockets: &[],
                    owner: (0, 0),
                    files: &[],
                    binds: &[],
                    tmp_size: 1 << 20,
                    symlinks: false,
                },
            )
            .err()
            .unwrap()
        };
        let e = refused("/lib/x");
        assert!(e.contains("/lib is a symbolic link in the bundle"), "{e}");
        let fifo =
            std::ffi::CString::new(b.join("usr/bin/pipe").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with `fifo`, a NUL-terminated CString alive for the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::fs::remove_dir_all(b.join("etc")).unwrap();
        std::fs::remove_dir_all(b.join("tmp")).unwrap();
        let e = refused("/usr/bin/x");
        assert!(e.contains("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&t);
    }
}
