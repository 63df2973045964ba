//! Level `sandbox` for an ordinary image: the container's process runs under paddock's sandbox
//! (`paddock::sandbox`: new namespaces, the image rootfs as its read-only root with paddock's
//! /dev, /proc and /tmp, Landlock, every capability dropped, `no_new_privs`, seccomp, a user
//! namespace) in a cgroup of its own with the spec's memory and pids limits. The shim builds a
//! paddock app spec whose sandbox root is the rootfs (`SandboxSpec::root`) and starts it with
//! paddock's native driver, the same code path as an `isolation = "sandbox"` app of
//! `paddock serve`; stdout and stderr are containerd's FIFOs themselves.

use crate::spec::{Network, Spec};
use paddock::cgroup::{AppCgroup, Cgroups};
use paddock::driver::native::{BaseEnv, Prepared, Stdio, spawn_joined};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// The parent directory of the containers' cgroups, under the shim's own cgroup (containerd's),
/// when the spec's `cgroupsPath` is not a cgroupfs path.
const CGROUP_PARENT: &str = "paddock-shim";

/// The cgroup directory of a systemd slice name, as systemd lays slices out:
/// `kubepods-burstable-pod1.slice` is `kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod1.slice` (relative to the root; `-.slice` is the root itself).
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let name = slice.strip_suffix(".slice")?;
    if name == "-" {
        return Some(PathBuf::new());
    }
    if name.is_empty()
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
        || name.contains('/')
    {
        return None;
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Some(path)
}

/// Where the container's cgroup goes, from `linux.cgroupsPath`: (its parent relative to the
/// root of each hierarchy, its own directory name), and a note when the path is not used.
/// - a cgroupfs path (`/default/ID` from ctr, `/kubepods/…/ID` from the CRI plugin with the
///   `cgroupfs` driver): its parent and last component, as runc's cgroupfs driver;
/// - the systemd driver's `slice:prefix:name`: the directory systemd would give the scope
///   `prefix-name.scope` under that slice, made directly (systemd is not asked for a
///   transient unit, so it does not know the scope; the pod's slice, made by kubelet, holds it);
/// - unset or unusable: under the shim's own cgroup, `paddock-shim/<namespace>-<id>`.
fn cgroup_place(
    namespace: &str,
    id: &str,
    path: Option<&str>,
) -> (Option<PathBuf>, String, Option<String>) {
    let fallback = |why: Option<String>| (None, format!("{namespace}-{id}"), why);
    let Some(p) = path else {
        return fallback(None);
    };
    if let [slice, prefix, name] = p.split(':').collect::<Vec<_>>()[..] {
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let unit = format!("{prefix}-{name}.scope");
        let ok_unit = !prefix.is_empty() && !name.is_empty() && !unit.contains('/');
        return match (expand_slice(slice), ok_unit) {
            (Some(parent), true) => (Some(parent), unit, None),
            _ => fallback(Some(format!(
                "linux.cgroupsPath = \"{p}\" is not a systemd slice:prefix:name path: the container's cgroup is under the shim's, {CGROUP_PARENT}/{namespace}-{id}"
            ))),
        };
    }
    let pb = Path::new(p);
    let ok = p.starts_with('/')
        && pb
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let leaf = pb.file_name().map(|l| l.to_string_lossy().into_owned());
    match (ok, leaf) {
        (true, Some(leaf)) => {
            let parent = pb
                .parent()
                .and_then(|d| d.strip_prefix("/").ok())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            (Some(parent), leaf, None)
        }
        _ => fallback(Some(format!(
            "linux.cgroupsPath = \"{p}\" is neither an absolute cgroupfs path nor slice:prefix:name: the container's cgroup is under the shim's, {CGROUP_PARENT}/{namespace}-{id}"
        ))),
    }
}

/// Where shims claim the user-namespace id ranges of their containers (one empty file per
/// taken slot, named by its hex number, holding `namespace/id`), so that two containers of a
/// node never share host ids. On /run: gone at reboot with the containers.
const ID_CLAIMS: &str = "/run/paddock-shim/id-ranges";

/// Claims a free id range for container `namespace/id`, starting at the slot its id hashes
/// to; records the claim in the bundle (`paddock/id-range`) for `delete`. Returns the range's
/// first host id.
fn claim_id_range(namespace: &str, id: &str, bundle: &Path) -> Result<u32, String> {
    use std::io::Write;
    let dir = Path::new(ID_CLAIMS);
    std::fs::create_dir_all(dir).map_err(|e| io_reason(ID_CLAIMS, e))?;
    let first = paddock::sandbox::id_slot_of(&format!("{namespace}/{id}"));
    for i in 0..paddock::sandbox::ID_SLOTS {
        let slot = (first + i) % paddock::sandbox::ID_SLOTS;
        let path = dir.join(format!("{slot:04x}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "{namespace}/{id}");
                let record = bundle.join("paddock").join("id-range");
                if let Err(e) = std::fs::create_dir_all(bundle.join("paddock"))
                    .and_then(|()| std::fs::write(&record, path.as_os_str().as_encoded_bytes()))
                {
                    // Without its record nothing would give the range back.
                    let _ = std::fs::remove_file(&path);
                    return Err(io_reason(&record.to_string_lossy(), e));
                }
                return Ok(paddock::sandbox::id_base_of_slot(slot));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_reason(&path.to_string_lossy(), e)),
        }
    }
    Err(format!(
        "every user namespace id range in {ID_CLAIMS} is taken"
    ))
}

/// Gives back the id range the bundle's container claimed.
fn release_id_range(bundle: &Path) {
    let record = bundle.join("paddock").join("id-range");
    if let Ok(path) = std::fs::read_to_string(&record)
        && path.starts_with(ID_CLAIMS)
    {
        let _ = std::fs::remove_file(path.trim());
        let _ = std::fs::remove_file(&record);
    }
}

pub struct Sandboxed {
    prepared: Prepared,
    cgroup: Option<AppCgroup>,
    bundle: PathBuf,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// What the sandbox gives, for the shim's log.
    pub summary: String,
}

/// `path` (absolute, inside the container) resolved inside `root` as the container would see
/// it: symbolic links followed within the root, `..` stopping at it. Returns the real path
/// inside.
fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, String> {
    resolve_inside(root, path, false)
}

/// As `resolve_in_root`, for a path that may not exist yet (a mount's destination, made by the
/// sandbox): from the first missing component on, the rest is taken as it is written.
fn resolve_destination(root: &Path, path: &Path) -> Result<PathBuf, String> {
    resolve_inside(root, path, true)
}

fn resolve_inside(root: &Path, path: &Path, missing_ok: bool) -> Result<PathBuf, String> {
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&name);
        let host = root.join(next.strip_prefix("/").unwrap_or(&next));
        let meta = match std::fs::symlink_metadata(&host) {
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                at = next;
                continue;
            }
            r => r.map_err(|e| format!("{}: {}", next.display(), paddock::util::io_reason(&e)))?,
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return Err(format!("{}: too many symbolic links", path.display()));
            }
            let target = std::fs::read_link(&host)
                .map_err(|e| format!("{}: {}", next.display(), paddock::util::io_reason(&e)))?;
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            todo.extend(target.components().rev().filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            }));
        } else {
            at = next;
        }
    }
    Ok(at)
}

/// The program `process.args[0]` names, as a path inside the container: absolute, relative to
/// `process.cwd`, or looked up in the spec's `PATH` (the image's), as execvp would inside.
fn find_program(spec: &Spec) -> Result<PathBuf, String> {
    let Some(arg0) = spec.args.first().filter(|a| !a.is_empty()) else {
        return Err("process.args is empty: give the image an entrypoint or pass a command".into());
    };
    let is_exec = |inside: &Path| -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let real = resolve_in_root(&spec.root, inside)?;
        let host = spec.root.join(real.strip_prefix("/").unwrap_or(&real));
        match std::fs::metadata(&host) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(format!(
                "{} is not an executable file in the image",
                inside.display()
            )),
            Err(e) => Err(format!(
                "{}: {}",
                inside.display(),
                paddock::util::io_reason(&e)
            )),
        }
    };
    if arg0.contains('/') {
        let p = Path::new(&spec.cwd).join(arg0);
        return is_exec(&p)
            .map(|()| p)
            .map_err(|e| format!("process.args[0] = \"{arg0}\": {e}"));
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(paddock::config::DEFAULT_PATH, |(_, v)| v.as_str());
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let p = Path::new(dir).join(arg0);
        if is_exec(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(format!(
        "process.args[0] = \"{arg0}\" was not found in the image's PATH ({path})"
    ))
}

/// What the sandbox makes of the spec's `mounts`: bind mounts become binds of the sandbox
/// (read-only with option `ro`), tmpfs mounts its own tmpfs; /proc, /dev, /sys and what is
/// under them are the sandbox's own (paddock's /dev and masked /proc; no /sys). Returns the
/// binds, the tmpfs paths and a note for each mount left out.
#[allow(clippy::type_complexity)]
fn mounts(spec: &Spec) -> (Vec<(PathBuf, PathBuf, bool)>, Vec<PathBuf>, Vec<String>) {
    let (mut binds, mut tmpfs, mut notes) = (vec![], vec![], vec![]);
    for m in &spec.mounts {
        // Where the container would find it: through the image's own links (Debian's
        // /var/run -> /run, under which Kubernetes mounts the service account's token).
        let dst = match resolve_destination(&spec.root, Path::new(&m.destination)) {
            Ok(d) => d,
            Err(e) => {
                notes.push(format!("mount {} left out: {e}", m.destination));
                continue;
            }
        };
        let dst = dst.as_path();
        let own = ["/proc", "/dev", "/sys"].iter().any(|d| dst.starts_with(d));
        let is_bind = m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if own {
            if is_bind {
                notes.push(format!(
                    "mount {} (bind of {}) left out: the sandbox makes its own /proc, /dev and /sys",
                    m.destination, m.source
                ));
            }
            continue;
        }
        if dst == Path::new("/tmp") && m.kind == "tmpfs" {
            continue; // the sandbox's /tmp is a tmpfs already
        }
        if is_bind && m.source.starts_with('/') {
            let rw = !m.options.iter().any(|o| o == "ro");
            binds.push((dst.to_path_buf(), PathBuf::from(&m.source), rw));
        } else if m.kind == "tmpfs" {
            tmpfs.push(dst.to_path_buf());
        } else {
            notes.push(format!(
                "mount {} (type {}) left out: the sandbox gives bind and tmpfs mounts only",
                m.destination, m.kind
            ));
        }
    }
    (binds, tmpfs, notes)
}

/// The container as a paddock app: parsed through paddock's own validation (the environment),
/// then given the image's root, program, working directory, user and limits.
fn app_spec(id: &str, spec: &Spec, id_base: u32) -> Result<paddock::config::AppSpec, String> {
    use toml::Value;
    let program = find_program(spec)?;
    let mut t = toml::Table::new();
    // Validated here with a command that exists on the host (this binary); the command and
    // program are set to the image's below, where they are paths inside its root.
    let me = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    t.insert(
        "command".into(),
        Value::Array(vec![Value::String(me.to_string_lossy().into_owned())]),
    );
    t.insert("env".into(), Value::Table(spec.env_table()));
    let text =
        toml::to_string(&t).map_err(|e| format!("cannot express the spec as an app: {e}"))?;
    // The app's name is the container id (the sandbox's hostname, the seed of its uid range)
    // when paddock accepts it as a name; otherwise (longer than 64, "all") a digest of it.
    let name = match paddock::config::valid_app_name(id) {
        Ok(()) => id.to_string(),
        Err(_) => {
            use sha2::Digest;
            let sum = sha2::Sha256::digest(id.as_bytes());
            let hex: String = sum.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("c-{hex}")
        }
    };
    let mut app =
        paddock::config::parse_app(&name, Path::new("config.json"), &text).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    app.isolation = paddock::config::Isolation::Sandbox;
    app.command = spec.args.clone();
    app.program = program;
    app.workdir = Some(PathBuf::from(&spec.cwd));
    app.identity = (spec.uid != 0 || spec.gid != 0 || !spec.groups.is_empty()).then(|| {
        Box::new(paddock::config::Identity {
            user: None,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.groups.clone(),
            home: None,
        })
    });
    app.limits.memory = spec.memory_limit;
    app.limits.pids = spec.pids_limit;
    app.limits.cpu = spec.cpu_limit;
    let (host_network, join_netns) = match &spec.network {
        Network::New => (false, None),
        Network::Join(p) => (false, Some(p.clone())),
        Network::Host => (true, None),
    };
    let (binds, tmpfs, notes) = mounts(spec);
    for n in notes {
        eprintln!("containerd-shim-paddock-v1: container {id}: {n}");
    }
    app.sandbox = Some(Box::new(paddock::config::sandbox::SandboxSpec {
        seccomp: true,
        userns: true,
        root: Some(spec.root.clone()),
        binds,
        tmpfs,
        id_base: Some(id_base),
        host_network,
        // With the host's network (or a pod's), UDP as well as TCP, as the process would have
        // under runc.
        udp: true,
        join_netns,
        ..Default::default()
    }));
    Ok(app)
}

fn io_reason(what: &str, e: std::io::Error) -> String {
    format!("{what}: {}", paddock::util::io_reason(&e))
}

impl Sandboxed {
    /// Everything but the clone: the plan (root filesystem, Landlock rules, seccomp program,
    /// namespaces), the cgroup with its limits, containerd's FIFOs opened.
    pub fn prepare(
        namespace: &str,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        stdout: &str,
        stderr: &str,
    ) -> Result<Sandboxed, String> {
        // New roots are mounted (in the child's own mount namespace) on a directory of the
        // bundle, which containerd removes with the container.
        paddock::sandbox::set_scratch_dir(&bundle.join("paddock").join("root"));
        let id_base = claim_id_range(namespace, id, bundle)?;
        let r = Self::build(namespace, id, bundle, spec, (stdout, stderr), id_base);
        if r.is_err() {
            release_id_range(bundle);
        }
        r
    }

    fn build(
        namespace: &str,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        (stdout, stderr): (&str, &str),
        id_base: u32,
    ) -> Result<Sandboxed, String> {
        let app = app_spec(id, spec, id_base)?;
        let prepared = Prepared::new(&app, &BaseEnv::from_process())?;
        let summary = prepared.sandbox_summary().unwrap_or_default().to_string();
        let out = |p: &str| -> Result<OwnedFd, String> {
            if p.is_empty() {
                return paddock::driver::native::dev_null().map_err(|e| io_reason("/dev/null", e));
            }
            crate::task::open_output(p.strip_prefix("file://").unwrap_or(p))
                .map(OwnedFd::from)
                .map_err(|e| io_reason(p, e))
        };
        let stdin = paddock::driver::native::dev_null().map_err(|e| io_reason("/dev/null", e))?;
        let (stdout, stderr) = (out(stdout)?, out(stderr)?);
        // The cgroup last: nothing fails after it is made.
        let limits = app.limits.cgroup();
        let (parent, leaf, note) = cgroup_place(namespace, id, spec.cgroups_path.as_deref());
        if let Some(n) = note {
            eprintln!("containerd-shim-paddock-v1: container {id}: {n}");
        }
        let cgroups = match &parent {
            Some(p) => Cgroups::init_at_root(p),
            None => Cgroups::init(CGROUP_PARENT),
        };
        let cgroup = match cgroups.create(&leaf, &limits) {
            Ok(mut cg) => match cg.apply(&limits) {
                Ok(()) => Some(cg),
                Err(e) => {
                    let _ = cg.remove();
                    return Err(format!("the container's cgroup limits: {e}"));
                }
            },
            // Without limits, a host without usable cgroups still runs the container.
            Err(_) if !limits.any() => None,
            Err(e) => return Err(format!("the container's cgroup: {e}")),
        };
        Ok(Sandboxed {
            prepared,
            cgroup,
            bundle: bundle.to_path_buf(),
            stdin,
            stdout,
            stderr,
            summary,
        })
    }

    /// Starts the process; returns its pid (on the host).
    pub fn start(&mut self) -> Result<libc::pid_t, String> {
        let procs = match &mut self.cgroup {
            Some(cg) => {
                cg.mark_start();
                cg.open_procs()?
            }
            None => vec![],
        };
        let join: Vec<_> = procs.iter().map(|f| f.as_raw_fd()).collect();
        let io = Stdio {
            stdin: Some(self.stdin.as_raw_fd()),
            stdout: Some(self.stdout.as_raw_fd()),
            stderr: Some(self.stderr.as_raw_fd()),
            extra: None,
        };
        let pid = spawn_joined(&self.prepared, &io, &join).map_err(|e| e.to_string())?;
        Ok(pid)
    }

    /// The end of the container's process: kills what is left in its cgroup, and says whether
    /// the kernel OOM-killed something in it.
    pub fn ended(&mut self) -> bool {
        let Some(cg) = &mut self.cgroup else {
            return false;
        };
        let _ = cg.kill();
        cg.oom_killed_since_start()
    }

    /// Removes the cgroup and gives back the id range (at `Delete`): only once no process of
    /// the container is left, so that no other container gets its host ids while one runs.
    pub fn remove(&mut self) {
        let mut empty = true;
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.kill_and_wait(std::time::Duration::from_secs(2)) {
                eprintln!("containerd-shim-paddock-v1: {e}; its user id range stays claimed");
                empty = false;
            }
            if let Err(e) = cg.remove() {
                eprintln!("containerd-shim-paddock-v1: {e}");
            }
        }
        if empty {
            release_id_range(&self.bundle);
        }
    }
}

/// containerd's `delete` after a shim died: kills what is left in the container's cgroup (a
/// sandboxed container's process, which does not die with its shim) and removes the cgroup.
/// Only an existing cgroup is touched; a wasm container has none.
pub fn cleanup_after_shim(namespace: &str, id: &str, bundle: &Path) {
    let Ok(spec) = crate::spec::load(bundle) else {
        release_id_range(bundle);
        return;
    };
    let (parent, leaf, _) = cgroup_place(namespace, id, spec.cgroups_path.as_deref());
    let host = paddock::cgroup::detect();
    let own = |mount: &Path, own: &Path| match &parent {
        Some(p) => mount.join(p),
        None => own.join(CGROUP_PARENT),
    };
    let mut dirs: Vec<PathBuf> = host
        .v1
        .iter()
        .map(|h| own(&h.mount, &h.own).join(&leaf))
        .collect();
    if let Some((mount, o)) = &host.v2 {
        dirs.push(own(mount, o).join(&leaf));
    }
    if !dirs.iter().any(|d| d.is_dir()) {
        release_id_range(bundle);
        return;
    }
    let cgroups = match &parent {
        Some(p) => Cgroups::init_at_root(p),
        None => Cgroups::init(CGROUP_PARENT),
    };
    if let Ok(cg) = cgroups.create(&leaf, &paddock::cgroup::CgLimits::default()) {
        match cg.kill_and_wait(std::time::Duration::from_secs(5)) {
            // Its host ids are free only once none of its processes is left.
            Ok(()) => release_id_range(bundle),
            Err(e) => eprintln!(
                "containerd-shim-paddock-v1: container {id}: {e}; its user id range stays claimed"
            ),
        }
        if let Err(e) = cg.remove() {
            eprintln!("containerd-shim-paddock-v1: container {id}: {e}");
        }
    }
}

/// Sends `sig` to the container's process (the init of its pid namespace): a signal it does
/// not handle, which the kernel would drop for an init, becomes SIGKILL, as `paddock serve`
/// does for a sandboxed app. Returns whether it was replaced.
pub fn signal(pid: libc::pid_t, sig: i32) -> Result<bool, String> {
    let replaced = paddock::sandbox::init_drops(pid, sig);
    let s = if replaced { libc::SIGKILL } else { sig };
    // SAFETY: kill(2) takes no pointers; `pid` is our child, not yet reaped: the waiter thread
    // only reaps it after clearing the container's pid under the lock the caller holds
    // (`exited`, then `reap`), so the number cannot have been reused.
    if unsafe { libc::kill(pid, s) } != 0 {
        return Err(format!(
            "kill {pid} with signal {sig}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(replaced)
}

/// Waits until `pid` (our child) has ended, without reaping it: its number stays ours until
/// [`reap`].
pub fn exited(pid: libc::pid_t) {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with a pointer to a local siginfo_t.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Reaps `pid` (ended, see [`exited`]) and returns its wait status.
pub fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a pointer to a local int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 255 << 8;
        }
    }
}

/// containerd's exit status for a wait status: the code, or 128 + the signal (`killed_by`:
/// the signal `kill` asked for when it had to be replaced by SIGKILL; an OOM kill is 137
/// whatever was asked). `oom` (the kernel OOM-killed a process of the container's cgroup, the
/// main one or another) is passed through: containerd gets `/tasks/oom` either way, as from
/// runc's shim.
pub fn exit_status(status: i32, killed_by: Option<u32>, oom: bool) -> (u32, bool) {
    if libc::WIFEXITED(status) {
        return (libc::WEXITSTATUS(status) as u32, oom);
    }
    let sig = libc::WTERMSIG(status);
    match killed_by {
        Some(k) if sig == libc::SIGKILL && !oom => (k.saturating_add(128), oom),
        _ => (128 + sig as u32, oom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root() {
        let t = std::env::temp_dir().join(format!("paddock-shim-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("bin")).unwrap();
        std::fs::create_dir_all(t.join("usr")).unwrap();
        std::fs::write(t.join("bin/busybox"), "x").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", t.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("../../bin", t.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.join("bin/escape")).unwrap();
        let r = |p: &str| resolve_in_root(&t, Path::new(p));
        assert_eq!(r("/bin/sh").unwrap(), Path::new("/bin/busybox"));
        assert_eq!(r("/usr/bin/sh").unwrap(), Path::new("/bin/busybox"));
        assert_eq!(r("/../../bin/sh").unwrap(), Path::new("/bin/busybox"));
        // An absolute link means the root's /etc/passwd, which this root does not have.
        let e = r("/bin/escape").unwrap_err();
        assert!(e.starts_with("/etc: "), "{e}");
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn cgroups_go_where_the_spec_says() {
        let (p, leaf, note) = cgroup_place("default", "c1", Some("/default/c1"));
        assert_eq!(
            (p.unwrap(), leaf.as_str(), note),
            (PathBuf::from("default"), "c1", None)
        );
        let (p, leaf, _) = cgroup_place("k8s.io", "c2", Some("/kubepods/burstable/pod1/c2"));
        assert_eq!(
            (p.unwrap(), leaf.as_str()),
            (PathBuf::from("kubepods/burstable/pod1"), "c2")
        );
        let (p, leaf, _) = cgroup_place("default", "c3", Some("/c3"));
        assert_eq!((p.unwrap(), leaf.as_str()), (PathBuf::new(), "c3"));
        let (p, leaf, note) = cgroup_place(
            "k8s.io",
            "c4",
            Some("kubepods-burstable-pod1.slice:cri-containerd:c4"),
        );
        assert_eq!(
            (p.unwrap(), leaf.as_str(), note),
            (
                PathBuf::from(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
                ),
                "cri-containerd-c4.scope",
                None
            )
        );
        let (p, leaf, _) = cgroup_place("k8s.io", "c7", Some(":cri-containerd:c7"));
        assert_eq!(
            (p.unwrap(), leaf.as_str()),
            (PathBuf::from("system.slice"), "cri-containerd-c7.scope")
        );
        let (p, _, note) = cgroup_place("k8s.io", "c8", Some("bad--name.slice:x:c8"));
        assert!(p.is_none() && note.unwrap().contains("slice:prefix:name"));
        assert_eq!(expand_slice("-.slice"), Some(PathBuf::new()));
        assert_eq!(expand_slice("a.scope"), None);
        assert!(cgroup_place("d", "c5", Some("/a/../b")).0.is_none());
        assert_eq!(cgroup_place("d", "c6", None), (None, "d-c6".into(), None));
    }

    #[test]
    fn mounts_become_binds_and_tmpfs() {
        let spec = crate::spec::parse(
            Path::new("/b"),
            r#"{"process":{"args":["/bin/sh"]},"mounts":[
                {"destination":"/proc","type":"proc","source":"proc"},
                {"destination":"/dev/shm","type":"bind","source":"/run/pod/shm","options":["rbind"]},
                {"destination":"/etc/hosts","type":"bind","source":"/var/lib/c/hosts","options":["rbind","rw"]},
                {"destination":"/var/run/secrets","type":"bind","source":"/var/lib/k/token","options":["rbind","ro"]},
                {"destination":"/run","type":"tmpfs","source":"tmpfs"},
                {"destination":"/tmp","type":"tmpfs","source":"tmpfs"},
                {"destination":"/mnt/q","type":"mqueue","source":"mqueue"}]}"#,
        )
        .unwrap();
        let (binds, tmpfs, notes) = mounts(&spec);
        assert_eq!(
            binds,
            [
                ("/etc/hosts".into(), "/var/lib/c/hosts".into(), true),
                ("/var/run/secrets".into(), "/var/lib/k/token".into(), false)
            ]
        );
        assert_eq!(tmpfs, [PathBuf::from("/run")]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("/dev/shm") && notes[1].contains("mqueue"));
    }

    #[test]
    fn mount_destinations_follow_the_images_links() {
        let t = std::env::temp_dir().join(format!("paddock-shim-dst-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("run")).unwrap();
        std::fs::create_dir_all(t.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", t.join("var/run")).unwrap();
        std::os::unix::fs::symlink("/proc/self", t.join("p")).unwrap();
        std::os::unix::fs::symlink("loop", t.join("loop")).unwrap();
        let root = t.to_string_lossy();
        let spec = crate::spec::parse(
            &t,
            &format!(
                r#"{{"process":{{"args":["/bin/sh"]}},"root":{{"path":"{root}"}},"mounts":[
                {{"destination":"/var/run/secrets/token","type":"bind","source":"/k/token","options":["ro"]}},
                {{"destination":"/p/x","type":"bind","source":"/k/x"}},
                {{"destination":"/loop/x","type":"bind","source":"/k/y"}}]}}"#
            ),
        )
        .unwrap();
        let (binds, _, notes) = mounts(&spec);
        // Under the image's /var/run -> /run, where the container finds it; into /proc: the
        // sandbox's own; through a loop: left out, said.
        assert_eq!(
            binds,
            [("/run/secrets/token".into(), "/k/token".into(), false)]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("/p/x") && notes[1].contains("too many symbolic links"));
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_status(3 << 8, None, false), (3, false));
        assert_eq!(exit_status(libc::SIGTERM, None, false), (143, false));
        // SIGTERM replaced by SIGKILL for an init without a handler: reported as SIGTERM.
        assert_eq!(exit_status(libc::SIGKILL, Some(15), false), (143, false));
        assert_eq!(exit_status(libc::SIGKILL, None, true), (137, true));
        assert_eq!(exit_status(libc::SIGKILL, Some(15), true), (137, true));
        // A child of the main process OOM-killed, the main process exiting 1: still an OOM.
        assert_eq!(exit_status(1 << 8, None, true), (1, true));
    }
}
