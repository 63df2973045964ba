//! The host's cgroup layout, read once and without side effects: the cgroup mounts from
//! /proc/self/mountinfo, paddock's own position from /proc/self/cgroup, and from them the
//! [`Host`] (v2, hybrid, v1 or none, with the hierarchies paddock uses) and the [`Plan`] of
//! what paddock would do with it.

use super::{Layout, ROOT_HINT};
use std::path::{Path, PathBuf};
/// A cgroup mount from mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub v2: bool,
    pub point: PathBuf,
    /// The mount's root inside the hierarchy ("/" unless bind-mounted, as in a container).
    pub root: String,
    /// v1: the controllers of the hierarchy (`name=systemd` hierarchies have none).
    pub controllers: Vec<String>,
}

const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Octal escapes of mountinfo (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts of a /proc/self/mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = vec![];
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, point) = (unescape(pre[3]), PathBuf::from(unescape(pre[4])));
        match post[0] {
            "cgroup2" => out.push(Mount {
                v2: true,
                point,
                root,
                controllers: vec![],
            }),
            "cgroup" => out.push(Mount {
                v2: false,
                point,
                root,
                controllers: post[2]
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect(),
            }),
            _ => {}
        }
    }
    out
}

/// One line of /proc/self/cgroup: hierarchy id, controllers, path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub id: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(':')?;
            let (ctl, path) = rest.split_once(':')?;
            Some(Membership {
                id: id.parse().ok()?,
                controllers: ctl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The directory of a cgroup `path` (from /proc/self/cgroup) under a mount of its hierarchy.
fn dir_in(m: &Mount, path: &str) -> PathBuf {
    let rel = if m.root == "/" {
        path
    } else {
        path.strip_prefix(m.root.as_str()).unwrap_or(path)
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        m.point.clone()
    } else {
        m.point.join(rel)
    }
}

/// A v1 hierarchy paddock uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Hier {
    pub controllers: Vec<String>,
    pub mount: PathBuf,
    /// paddock's own cgroup in it.
    pub own: PathBuf,
}

/// What the host offers, as found (no side effects).
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub layout: Layout,
    /// The cgroup2 mount and paddock's own cgroup in it.
    pub v2: Option<(PathBuf, PathBuf)>,
    /// Controllers available to paddock's cgroup on v2 (its cgroup.controllers).
    pub v2_controllers: Vec<String>,
    /// v1 hierarchies with the controllers paddock uses (memory, cpu, cpuacct, pids, freezer).
    pub v1: Vec<Hier>,
}

/// The v1 controllers paddock creates app cgroups in.
const V1_USED: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// Reads the layout from mountinfo and /proc/self/cgroup texts; `controllers` reads a v2
/// directory's cgroup.controllers.
pub fn detect_from(
    mountinfo: &str,
    proc_cgroup: &str,
    controllers: impl Fn(&Path) -> String,
) -> Host {
    let mounts = parse_mountinfo(mountinfo);
    let members = parse_proc_cgroup(proc_cgroup);
    let v2 = mounts.iter().find(|m| m.v2).and_then(|m| {
        let own = members
            .iter()
            .find(|c| c.id == 0 && c.controllers.is_empty())?;
        Some((m.point.clone(), dir_in(m, &own.path)))
    });
    let mut v1: Vec<Hier> = vec![];
    for m in mounts.iter().filter(|m| !m.v2) {
        if !m.controllers.iter().any(|c| V1_USED.contains(&c.as_str())) {
            continue;
        }
        if v1.iter().any(|h| h.controllers == m.controllers) {
            continue; // the same hierarchy mounted twice
        }
        let Some(own) = members
            .iter()
            .find(|c| c.id != 0 && c.controllers == m.controllers)
        else {
            continue;
        };
        v1.push(Hier {
            controllers: m.controllers.clone(),
            mount: m.point.clone(),
            own: dir_in(m, &own.path),
        });
    }
    let v2_controllers: Vec<String> = v2
        .as_ref()
        .map(|(_, own)| {
            controllers(own)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let any_v1 = mounts.iter().any(|m| !m.v2 && !m.controllers.is_empty());
    let layout = match (v2.is_some(), any_v1) {
        (_, true) if v2.is_some() => Layout::Hybrid,
        (_, true) => Layout::V1,
        (true, false) => Layout::V2,
        (false, false) => Layout::None,
    };
    Host {
        layout,
        v2,
        v2_controllers,
        v1,
    }
}

/// What `serve` would use, found without changing anything (for `paddock doctor`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Where the app cgroups would live (one per hierarchy).
    pub bases: Vec<PathBuf>,
    /// Controllers usable for `[limits]`.
    pub limit_controllers: Vec<String>,
    /// Why something is not usable.
    pub problems: Vec<String>,
}

fn writable(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access with `c`, a NUL-terminated CString alive for the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

impl Host {
    pub fn plan(&self, name: &str) -> Plan {
        let mut p = Plan::default();
        let add = |p: &mut Plan, dir: &Path, ctls: &[String]| {
            if writable(dir) {
                p.bases.push(dir.join(name));
                for c in ctls {
                    if ["cpu", "memory", "pids"].contains(&c.as_str())
                        && !p.limit_controllers.contains(c)
                    {
                        p.limit_controllers.push(c.clone());
                    }
                }
            } else {
                p.problems
                    .push(format!("{} is not writable ({ROOT_HINT})", dir.display()));
            }
        };
        match self.layout {
            Layout::None => p.problems.push("no cgroup hierarchy is mounted".into()),
            Layout::V2 => {
                if let Some((mount, own)) = &self.v2 {
                    add(&mut p, own, &self.v2_controllers);
                    let is_root = own == mount && !own.join("cgroup.type").exists();
                    if !is_root && !p.limit_controllers.is_empty() {
                        p.problems.push(format!(
                            "paddock's cgroup {} is not the root: paddock moves itself to {}/.supervisor to enable controllers, which needs no other process in it",
                            own.display(),
                            own.join(name).display()
                        ));
                    }
                }
            }
            Layout::Hybrid | Layout::V1 => {
                if let Some((_, own)) = &self.v2 {
                    add(&mut p, own, &[]);
                }
                for h in &self.v1 {
                    add(&mut p, &h.own, &h.controllers);
                }
            }
        }
        p.limit_controllers.sort();
        p
    }
}

pub fn detect() -> Host {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let pc = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect_from(&mi, &pc, |d| {
        std::fs::read_to_string(d.join("cgroup.controllers")).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CgLimits, Cgroups};

    const HYBRID_MI: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_PC: &str = "9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/c21c
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_layout() {
        let h = detect_from(HYBRID_MI, HYBRID_PC, |_| String::new());
        assert_eq!(h.layout, Layout::Hybrid);
        assert_eq!(
            h.v2,
            Some((
                "/sys/fs/cgroup/unified".into(),
                "/sys/fs/cgroup/unified".into()
            ))
        );
        assert!(h.v2_controllers.is_empty());
        let mem = h.v1.iter().find(|x| x.controllers == ["memory"]).unwrap();
        assert_eq!(mem.own, Path::new("/sys/fs/cgroup/memory/process_api/c21c"));
        assert_eq!(h.v1.len(), 5, "{:?}", h.v1); // systemd's name= hierarchy is not used
    }

    #[test]
    fn pure_v2_layout() {
        let mi = "22 1 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let pc = "0::/system.slice/paddock.service\n";
        let h = detect_from(mi, pc, |d| {
            assert_eq!(d, Path::new("/sys/fs/cgroup/system.slice/paddock.service"));
            "cpu io memory pids\n".into()
        });
        assert_eq!(h.layout, Layout::V2);
        assert_eq!(
            h.v2.as_ref().unwrap().1,
            Path::new("/sys/fs/cgroup/system.slice/paddock.service")
        );
        assert_eq!(h.v2_controllers, ["cpu", "io", "memory", "pids"]);
        assert!(h.v1.is_empty());
        // PID 1 of a VM: the root cgroup.
        let h = detect_from(
            "7 1 0:6 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
            |_| "cpu memory pids".into(),
        );
        assert_eq!(h.v2.unwrap().1, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn v1_layout_with_comounted_and_container_root() {
        let mi = "30 25 0:26 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
32 25 0:28 /docker/abc /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids
33 25 0:29 /docker/abc /sys/fs/cgroup/net\\040cls ro - cgroup cgroup rw,net_cls
";
        let pc = "5:pids:/docker/abc\n4:memory:/docker/abc/sub\n3:cpu,cpuacct:/docker/abc\n2:net_cls:/docker/abc\n";
        let h = detect_from(mi, pc, |_| unreachable!());
        assert_eq!(h.layout, Layout::V1);
        assert!(h.v2.is_none());
        let cpu =
            h.v1.iter()
                .find(|x| x.controllers == ["cpu", "cpuacct"])
                .unwrap();
        assert_eq!(cpu.own, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        let mem = h.v1.iter().find(|x| x.controllers == ["memory"]).unwrap();
        assert_eq!(mem.own, Path::new("/sys/fs/cgroup/memory/sub"));
        assert_eq!(h.v1.len(), 3); // net_cls is not used
        let m = parse_mountinfo(mi);
        assert_eq!(m[3].point, Path::new("/sys/fs/cgroup/net cls"));
    }

    #[test]
    fn no_cgroups() {
        let h = detect_from("20 1 8:1 / / rw - ext4 /dev/sda1 rw\n", "", |_| {
            String::new()
        });
        assert_eq!(h.layout, Layout::None);
        let c = Cgroups::disabled("no hierarchy");
        let why = c
            .refuse(&CgLimits {
                pids: Some(3),
                ..Default::default()
            })
            .unwrap();
        assert!(why.starts_with("key `limits.pids`: cannot be enforced: paddock cannot use cgroups here: no hierarchy"), "{why}");
        assert!(c.refuse(&CgLimits::default()).is_none());
    }
}
