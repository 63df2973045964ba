//! Building a sandbox's [`Plan`] in the parent, once per app: the clone flags, the user
//! namespace and id maps (a range of host ids of the app's own, picked from its name), the
//! network namespace, the root filesystem with its /etc/passwd and /etc/group, Landlock rules,
//! capabilities and the seccomp program, and the summary `status` shows; and `describe`, which
//! names what a failed step was working on.

use super::ns::{make_netns, make_userns};
use super::rules::Rules;
use super::{Plan, Step, host, rootfs, scratch_dir, seccomp};
use crate::config::sandbox::SandboxSpec;
use std::ffi::CString;
use std::path::{Path, PathBuf};
/// The highest capability number of the running kernel.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl Plan {
    /// `bundle_root`: the bundle's tree on the host. `identity`: the app's user (host ids).
    /// `memory`: the app's `[limits] memory` (the default size of /tmp and /dev/shm).
    pub fn new(
        name: &str,
        spec: &SandboxSpec,
        bundle_root: &Path,
        identity: Option<&crate::config::Identity>,
        workdir: Option<&Path>,
        notify_socket: Option<&Path>,
        memory: Option<u64>,
    ) -> Result<Plan, String> {
        let h = host();
        if let Some(why) = h.refuses(spec) {
            return Err(why);
        }
        let mut flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        let mut netns = None;
        if let (false, Some(path)) = (spec.host_network, &spec.join_netns) {
            // A network namespace made by someone else (a pod's): joined as it is.
            let f = std::fs::File::open(path).map_err(|e| {
                format!(
                    "network namespace {}: {}",
                    path.display(),
                    crate::util::io_reason(&e)
                )
            })?;
            if !h.root {
                return Err(format!(
                    "joining the network namespace {} needs root",
                    path.display()
                ));
            }
            netns = Some(std::os::fd::OwnedFd::from(f));
        } else if !spec.host_network {
            if h.root {
                // With NET_BIND_SERVICE kept, ports below 1024 of its own network are the
                // app's to bind, also from its user namespace (which holds no capability over
                // a network namespace paddock made).
                let low_ports = spec
                    .capabilities
                    .iter()
                    .any(|c| c == "CAP_NET_BIND_SERVICE");
                netns = Some(make_netns(low_ports)?);
            } else {
                // Not root: only a namespace owned by the app's new user namespace will do.
                flags |= libc::CLONE_NEWNET;
            }
        }
        let (uid, gid, groups) = identity
            .map(|i| (i.uid, i.gid, i.groups.clone()))
            .unwrap_or((0, 0, vec![]));
        let mut self_maps = None;
        // With a user namespace as root: the first host id of the app's range (its root).
        let mut id_base = None;
        let mut userns = None;
        let creds;
        let owner;
        if !h.root {
            // Only our own ids can be mapped: the app is root of its user namespace, backed by
            // paddock's uid on the host.
            flags |= libc::CLONE_NEWUSER;
            // SAFETY: geteuid and getegid take no arguments and cannot fail.
            let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
            self_maps = Some((
                CString::new(format!("0 {euid} 1\n")).map_err(|e| e.to_string())?,
                CString::new(format!("0 {egid} 1\n")).map_err(|e| e.to_string())?,
            ));
            creds = None;
            owner = (euid, egid);
        } else if spec.userns {
            // The app's ids 0..65535 map to a range of unprivileged host ids of its own (its
            // `user`, if it has one, keeps its host uid and gid): root inside is nobody in
            // particular outside, and a daemon can still switch to `nobody` inside.
            let base = match spec.id_base {
                Some(b) => b,
                None => id_range(name),
            };
            id_base = Some(base);
            userns = Some(make_userns(&id_map(base, uid), &id_map(base, gid))?);
            creds = Some((uid, gid, vec![]));
            owner = (host_id(base, uid), host_id(base, gid));
        } else {
            creds = identity.map(|_| (uid, gid, groups));
            owner = (uid, gid);
        }
        let newroot = scratch_dir()?;
        let files = etc_files(name, bundle_root, identity, &newroot)?;
        let fs = rootfs::build(
            &newroot,
            bundle_root,
            &rootfs::Paths {
                read_only: &spec.read_only,
                read_write: &spec.read_write,
                tmpfs: &spec.tmpfs,
                sockets: &notify_socket
                    .map(Path::to_path_buf)
                    .into_iter()
                    .collect::<Vec<_>>(),
                owner,
                files: &files,
                binds: &spec.binds,
                tmp_size: spec
                    .tmp_size
                    .or(memory)
                    .unwrap_or(crate::config::sandbox::DEFAULT_TMP_SIZE),
                symlinks: spec.symlinks,
            },
        )?;
        let mut landlock = Rules::new(h.landlock_abi, &spec.tcp_bind, &spec.tcp_connect);
        rootfs::add_rules(&fs, &mut landlock)?;
        let mut keep = 0u64;
        for c in &spec.capabilities {
            let (_, cap) = crate::config::sandbox::capability(c)?;
            keep |= 1u64 << cap.index();
        }
        let workdir = workdir.unwrap_or(Path::new("/"));
        let hostname: String = name.chars().take(64).collect();
        let mut summary = vec![format!("landlock ABI {}", h.landlock_abi)];
        summary.push(
            if spec.host_network {
                "host network"
            } else if spec.join_netns.is_some() {
                "joined network namespace"
            } else {
                "own network"
            }
            .into(),
        );
        if let Some(base) = id_base {
            summary.push(format!("user namespace (root = host uid {base})"));
        } else if self_maps.is_some() {
            summary.push("user namespace".into());
        } else {
            summary.push("host user ids (userns = false)".into());
        }
        summary.push(
            if spec.seccomp {
                "seccomp"
            } else {
                "no seccomp"
            }
            .into(),
        );
        Ok(Plan {
            clone_flags: flags,
            self_maps,
            fs,
            hostname: CString::new(hostname).map_err(|e| e.to_string())?,
            loopback: !spec.host_network && netns.is_none(),
            userns,
            netns,
            creds,
            keep,
            last_cap: last_cap(),
            landlock,
            seccomp: spec.seccomp.then(|| {
                seccomp::filter(&seccomp::Options {
                    udp: spec.udp || !spec.host_network,
                    families: spec.address_families.iter().map(|(_, n)| *n).collect(),
                    extra: spec.syscalls.iter().map(|(_, n)| *n).collect(),
                })
            }),
            workdir: CString::new(workdir.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?,
            summary: summary.join(", "),
            host_uid: (h.root && spec.userns).then_some(owner.0),
            host_ids: owner,
        })
    }

    /// Describes what a failed step was working on.
    pub fn describe(&self, step: Step, idx: u16) -> String {
        let idx = idx as usize;
        match step {
            Step::Mount => self
                .fs
                .ops
                .get(idx)
                .map(|op| op.describe(&self.fs.newroot))
                .unwrap_or_default(),
            Step::Landlock => self.landlock.describe(if idx == u16::MAX as usize {
                usize::MAX
            } else {
                idx
            }),
            Step::Chdir => self.workdir.to_string_lossy().into_owned(),
            Step::PivotRoot if idx == 1 => format!(
                "moving {} over the initramfs root",
                self.fs.newroot.to_string_lossy()
            ),
            Step::PivotRoot => self.fs.newroot.to_string_lossy().into_owned(),
            Step::JoinApp if idx == 1 => "the app's root".into(),
            Step::JoinApp => "setns to the app's namespaces".into(),
            _ => String::new(),
        }
    }
}
/// The first of the 65536 host ids of an app's user namespace: a range of its own between
/// 0x80000 and 0x6fff0000 (as systemd-nspawn's `--private-users=pick`), picked from a hash of
/// the app's name, so it is the same at every start (files it leaves in `read_write` dirs stay
/// its own), and moved on when another app of this paddock already has it.
fn id_range(name: &str) -> u32 {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static TAKEN: Mutex<Option<HashMap<u32, String>>> = Mutex::new(None);
    const SLOTS: u32 = super::ID_SLOTS;
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashMap::new);
    let mut slot = super::id_slot_of(name);
    for _ in 0..SLOTS {
        match taken.get(&slot) {
            Some(n) if n != name => slot = (slot + 1) % SLOTS,
            _ => break,
        }
    }
    taken.insert(slot, name.to_string());
    super::id_base_of_slot(slot)
}

/// The host id of `id` inside: the app's own `user`/`group` keeps its host id, root is the
/// first of the range.
fn host_id(base: u32, id: u32) -> u32 {
    if id == 0 { base } else { id }
}

/// uid_map / gid_map lines: 0..65535 → base.., except `own` (the app's `user` or `group`,
/// when not root), which maps to itself.
fn id_map(base: u32, own: u32) -> String {
    if own == 0 {
        return format!("0 {base} 65536\n");
    }
    if own >= 65536 {
        return format!("0 {base} 65536\n{own} {own} 1\n");
    }
    let mut m = format!("0 {base} {own}\n{own} {own} 1\n");
    if own < 65535 {
        m.push_str(&format!("{} {} {}\n", own + 1, base + own + 1, 65535 - own));
    }
    m
}

/// /etc/passwd and /etc/group for a sandbox whose bundle has none, naming root, nobody and the
/// app's user, so a daemon that looks users up by name (`memcached -u nobody`) can: (path
/// inside, file on the host) pairs, written beside the scratch root.
fn etc_files(
    name: &str,
    bundle_root: &Path,
    identity: Option<&crate::config::Identity>,
    scratch: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let dir = scratch
        .parent()
        .unwrap_or(scratch)
        .join("sandbox-etc")
        .join(name);
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if let Some(id) = identity
        && let (Some(user), true) = (&id.user, id.uid != 0 && id.uid != 65534)
    {
        let home = id.home.as_deref().unwrap_or(Path::new("/")).display();
        passwd.push_str(&format!("{user}:x:{}:{}::{home}:/bin/sh\n", id.uid, id.gid));
        group.push_str(&format!("{user}:x:{}:\n", id.gid));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    let mut out = vec![];
    for (file, text) in [("passwd", passwd), ("group", group)] {
        let inside = Path::new("/etc").join(file);
        if bundle_root.join("etc").join(file).exists() {
            continue; // the bundle brings its own
        }
        let host = dir.join(file);
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &host))
            .map_err(|e| format!("{}: {}", host.display(), crate::util::io_reason(&e)))?;
        out.push((inside, host));
    }
    Ok(out)
}
