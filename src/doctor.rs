//! `paddock doctor`: what this host offers for each isolation level, probed for real (a child
//! process tries each namespace; the kernel is asked for its Landlock ABI), not guessed from
//! version numbers.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub root: bool,
    pub pid1: bool,
    /// Namespaces a child of paddock could create.
    pub namespaces: Vec<Check>,
    pub cgroup: CgroupInfo,
    /// Landlock ABI version, or why there is none.
    pub landlock_abi: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landlock_error: Option<String>,
    pub seccomp: Check,
    pub no_new_privs: bool,
    pub levels: Vec<Check>,
}

/// One thing probed: whether it works, and what was found (or why not).
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &str, r: Result<(), String>) -> Check {
    match r {
        Ok(()) => Check {
            name: name.into(),
            ok: true,
            detail: String::new(),
        },
        Err(e) => Check {
            name: name.into(),
            ok: false,
            detail: e,
        },
    }
}

#[derive(Debug, Serialize)]
pub struct CgroupInfo {
    /// "v2" (unified), "hybrid" (v1 controllers, cgroup2 without controllers), "v1", or "none".
    pub layout: String,
    /// Where cgroup2 is mounted, if it is.
    pub v2_mount: Option<String>,
    /// Controllers enabled at the cgroup2 root.
    pub v2_controllers: Vec<String>,
    /// v1 hierarchies mounted (by controller).
    pub v1_controllers: Vec<String>,
    /// Controllers paddock can use for `[limits]` here (cpu, memory, pids).
    pub limit_controllers: Vec<String>,
    /// Where paddock's app cgroups live (one directory per hierarchy it uses).
    pub app_cgroups: Vec<String>,
    /// What keeps paddock from using cgroups fully.
    pub problems: Vec<String>,
}

fn try_unshare(flag: libc::c_int) -> Result<(), String> {
    // In a child, so the probe changes nothing of paddock's own.
    // SAFETY: the child only calls unshare, reads errno and _exits (no allocation, no locks), which
    // is sound after fork even with other threads; the parent reaps it below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(nix::errno::Errno::last().desc().into());
    }
    if pid == 0 {
        // SAFETY: unshare takes a flag only; this is the throwaway child.
        let r = unsafe { libc::unshare(flag) };
        let e = if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
        };
        // SAFETY: _exit ends the child at once, running none of the parent's destructors or atexit
        // handlers.
        unsafe { libc::_exit(e.min(255)) };
    }
    let mut st = 0;
    // SAFETY: waitpid writes only to `st`, a live local; `pid` is the child forked above.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    match libc::WEXITSTATUS(st) {
        0 => Ok(()),
        e => Err(nix::errno::Errno::from_raw(e).desc().into()),
    }
}

/// The cgroup facts, from the same module `serve` uses (`crate::cgroup`).
fn cgroups() -> CgroupInfo {
    let host = crate::cgroup::detect();
    let mounts = crate::cgroup::parse_mountinfo(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    let mut v1: Vec<String> = mounts
        .iter()
        .filter(|m| !m.v2)
        .flat_map(|m| m.controllers.clone())
        .collect();
    v1.sort();
    v1.dedup();
    let v2_mount = host.v2.as_ref().map(|(m, _)| m.clone());
    let v2_controllers: Vec<String> = v2_mount
        .as_ref()
        .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let name = crate::lock::instance_name().unwrap_or_else(|_| "paddock".into());
    let plan = host.plan(&name);
    CgroupInfo {
        layout: host.layout.as_str().into(),
        v2_mount: v2_mount.map(|m| m.display().to_string()),
        v2_controllers,
        v1_controllers: v1,
        limit_controllers: plan.limit_controllers,
        app_cgroups: plan.bases.iter().map(|b| b.display().to_string()).collect(),
        problems: plan.problems,
    }
}

fn landlock_abi() -> Result<i64, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query: a null attr with size 0 and the VERSION flag, so the kernel reads
    // no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        let e = nix::errno::Errno::last();
        return Err(match e {
            nix::errno::Errno::ENOSYS => "not built into this kernel".into(),
            nix::errno::Errno::EOPNOTSUPP => {
                "built in but disabled (add landlock to the lsm= boot parameter)".into()
            }
            e => e.desc().into(),
        });
    }
    Ok(r)
}

pub fn probe() -> Report {
    let u = nix::sys::utsname::uname().ok();
    let kernel = u
        .map(|u| {
            format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let namespaces = [
        ("user", libc::CLONE_NEWUSER),
        ("mount", libc::CLONE_NEWNS),
        ("pid", libc::CLONE_NEWPID),
        ("net", libc::CLONE_NEWNET),
        ("uts", libc::CLONE_NEWUTS),
        ("ipc", libc::CLONE_NEWIPC),
        ("cgroup", libc::CLONE_NEWCGROUP),
    ]
    .into_iter()
    .map(|(n, f)| check(n, try_unshare(f)))
    .collect::<Vec<_>>();
    // SAFETY: prctl(PR_GET_SECCOMP) only reports this process' mode; the other arguments are zero.
    let seccomp = if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last().desc().to_string())
    };
    // SAFETY: prctl(PR_GET_NO_NEW_PRIVS) only reports a flag; the other arguments are zero.
    let no_new_privs = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } >= 0;
    let root = nix::unistd::geteuid().is_root();
    let cgroup = cgroups();
    let landlock = landlock_abi();
    let ns_ok = namespaces.iter().all(|c| c.ok);
    let sandbox = {
        let h = crate::sandbox::host();
        let default = crate::config::sandbox::SandboxSpec {
            seccomp: true,
            userns: !h.root,
            ..Default::default()
        };
        match (ns_ok || !root, h.refuses(&default)) {
            (false, _) => Err("the host lacks namespaces (see above)".to_string()),
            (_, Some(why)) => Err(why),
            _ => {
                let mut keys = vec![format!("landlock ABI {}", h.landlock_abi)];
                keys.push(if h.landlock_abi >= 4 {
                    "tcp_bind/tcp_connect enforced".into()
                } else {
                    "no TCP port rules (Landlock ABI < 4: tcp_bind/tcp_connect refused)".into()
                });
                keys.push(if h.landlock_abi >= 6 {
                    "signals and abstract sockets scoped".into()
                } else {
                    "no signal scoping (ABI < 6; the pid and net namespaces still isolate)".into()
                });
                keys.push(if h.root {
                    "userns optional".into()
                } else {
                    "not root: a user namespace (the default; userns = false is refused)".into()
                });
                let (allowed, denied) = crate::sandbox::seccomp::counts();
                keys.push(format!(
                    "seccomp allow list of {allowed} calls ({denied} more refused by name, the rest ENOSYS)"
                ));
                Ok(keys.join("; "))
            }
        }
    };
    let levels = vec![
        Check {
            name: "none".into(),
            ok: true,
            detail: "available".into(),
        },
        Check {
            name: "bundle".into(),
            ok: true,
            detail: "available".into(),
        },
        match sandbox {
            Ok(detail) => Check {
                name: "sandbox".into(),
                ok: true,
                detail: format!("available: {detail}"),
            },
            Err(e) => Check {
                name: "sandbox".into(),
                ok: false,
                detail: format!("not available: {e}"),
            },
        },
        match crate::driver::wasm::probe() {
            Ok(detail) => Check {
                name: "wasm".into(),
                ok: true,
                detail,
            },
            Err(e) => Check {
                name: "wasm".into(),
                ok: false,
                detail: e,
            },
        },
    ];
    Report {
        kernel,
        root,
        pid1: std::process::id() == 1,
        namespaces,
        cgroup,
        landlock_abi: landlock.as_ref().ok().copied(),
        landlock_error: landlock.err(),
        seccomp: check("seccomp", seccomp),
        no_new_privs,
        levels,
    }
}

pub fn print(r: &Report) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("kernel            {}", r.kernel);
    println!(
        "running as root   {}{}",
        yes(r.root),
        if r.pid1 { " (PID 1)" } else { "" }
    );
    let said = |c: &Check| {
        if c.ok {
            "yes".to_string()
        } else {
            format!("no ({})", c.detail)
        }
    };
    for c in &r.namespaces {
        println!("{:<17} {}", format!("{} namespace", c.name), said(c));
    }
    let c = &r.cgroup;
    println!(
        "cgroup layout     {}",
        match c.layout.as_str() {
            "v2" => format!("v2 (unified at {})", c.v2_mount.as_deref().unwrap_or("?")),
            "hybrid" => format!(
                "hybrid: v1 controllers, cgroup2 at {} with {}",
                c.v2_mount.as_deref().unwrap_or("?"),
                if c.v2_controllers.is_empty() {
                    "no controllers".to_string()
                } else {
                    c.v2_controllers.join(" ")
                }
            ),
            "v1" => "v1 only".into(),
            _ => "none mounted".into(),
        }
    );
    if !c.v2_controllers.is_empty() {
        println!("cgroup2 controllers {}", c.v2_controllers.join(" "));
    }
    if !c.v1_controllers.is_empty() {
        println!("cgroup v1 controllers {}", c.v1_controllers.join(" "));
    }
    println!(
        "cgroup limits     {}",
        if c.limit_controllers.is_empty() {
            "none usable: an app with [limits] memory, cpu or pids is refused".to_string()
        } else {
            format!(
                "{} (for [limits] of native apps)",
                c.limit_controllers.join(" ")
            )
        }
    );
    if !c.app_cgroups.is_empty() {
        println!("app cgroups in    {}", c.app_cgroups.join(", "));
    }
    for p in &c.problems {
        println!("cgroup note       {p}");
    }
    println!(
        "landlock          {}",
        match (&r.landlock_abi, &r.landlock_error) {
            (Some(v), _) => format!("ABI {v}"),
            (None, e) => format!("no ({})", e.as_deref().unwrap_or("?")),
        }
    );
    println!("seccomp           {}", said(&r.seccomp));
    println!("no_new_privs      {}", yes(r.no_new_privs));
    println!();
    println!("isolation levels:");
    for c in &r.levels {
        println!("  {:<8} {}", c.name, c.detail);
    }
}
