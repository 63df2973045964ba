//! The `[sandbox]` table of level `sandbox` (and the network keys it shares with level `wasm`).
//!
//! ```toml
//! isolation = "sandbox"
//! bundle = "redis-server"
//! command = ["redis-server", "--port", "6379"]
//! fallback = "bundle"                  # optional: run at this level if the host cannot sandbox
//! [sandbox]
//! read_only = ["/etc/ssl/certs"]       # host paths the app may read, at the same path
//! read_write = ["/var/lib/redis"]      # host paths the app may read and write
//! tmpfs = ["/run/redis"]               # empty private tmpfs (besides /tmp, always there)
//! network = "none"                     # own network namespace with loopback | "host"
//! tcp_bind = [6379]                    # Landlock: the only TCP ports it may bind
//! tcp_connect = [5432]                 # Landlock: the only TCP ports it may connect to
//! udp = false                          # network = "host": may it use UDP? (own network: yes)
//! address_families = ["AF_NETLINK"]    # socket families beyond AF_UNIX, AF_INET, AF_INET6
//! userns = true                        # map the app's ids to unprivileged host ids (default)
//! capabilities = ["NET_BIND_SERVICE"]  # kept; every other capability is dropped
//! seccomp = "default"                  # the allow list, or "off"
//! syscalls = ["io_uring_setup"]        # system calls allowed beyond the default filter
//! tmp_size = "64MiB"                   # size of /tmp and /dev/shm (default: [limits] memory, else 64MiB)
//! symlinks = false                     # may it make symbolic links in read_write paths?
//! ```

use super::FileCtx;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use toml::Spanned;

/// A port (native sandbox) or an address pattern (wasm) in `tcp_bind` / `tcp_connect`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub(super) enum PortOrPattern {
    Port(i64),
    Pattern(String),
}

pub(super) type List<T> = Option<Spanned<Vec<Spanned<T>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    pub network: Option<Spanned<String>>,
    pub tcp_bind: List<PortOrPattern>,
    pub tcp_connect: List<PortOrPattern>,
    pub read_only: List<String>,
    pub read_write: List<String>,
    pub tmpfs: List<String>,
    pub userns: Option<Spanned<bool>>,
    pub capabilities: List<String>,
    pub seccomp: Option<Spanned<String>>,
    pub udp: Option<Spanned<bool>>,
    pub address_families: List<String>,
    pub syscalls: List<String>,
    pub tmp_size: Option<Spanned<String>>,
    pub symlinks: Option<Spanned<bool>>,
    pub publish: List<PortOrPattern>,
}

impl RawSandbox {
    /// Keys that only level `sandbox` understands, with their spans.
    pub fn native_only(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut v = vec![];
        let mut push = |k, s: Option<std::ops::Range<usize>>| {
            if let Some(s) = s {
                v.push((k, s));
            }
        };
        push(
            "sandbox.read_only",
            self.read_only.as_ref().map(|x| x.span()),
        );
        push(
            "sandbox.read_write",
            self.read_write.as_ref().map(|x| x.span()),
        );
        push("sandbox.tmpfs", self.tmpfs.as_ref().map(|x| x.span()));
        push("sandbox.userns", self.userns.as_ref().map(|x| x.span()));
        push(
            "sandbox.capabilities",
            self.capabilities.as_ref().map(|x| x.span()),
        );
        push("sandbox.seccomp", self.seccomp.as_ref().map(|x| x.span()));
        push("sandbox.udp", self.udp.as_ref().map(|x| x.span()));
        push(
            "sandbox.address_families",
            self.address_families.as_ref().map(|x| x.span()),
        );
        push("sandbox.syscalls", self.syscalls.as_ref().map(|x| x.span()));
        push("sandbox.tmp_size", self.tmp_size.as_ref().map(|x| x.span()));
        push("sandbox.symlinks", self.symlinks.as_ref().map(|x| x.span()));
        v
    }
}

/// What a sandboxed app is given, validated at load.
#[derive(Clone, Debug, PartialEq, Serialize, Default)]
pub struct SandboxSpec {
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    pub tmpfs: Vec<PathBuf>,
    /// `network = "host"`: share the host's network namespace.
    pub host_network: bool,
    pub tcp_bind: Vec<u16>,
    pub tcp_connect: Vec<u16>,
    /// Map the app's ids to unprivileged host ids (the default; `userns = false` as root runs
    /// the app with real host ids, root included: weaker, and marked so in `status`).
    pub userns: bool,
    /// Capability names as the kernel spells them (`CAP_NET_BIND_SERVICE`).
    pub capabilities: Vec<String>,
    pub seccomp: bool,
    /// `network = "host"`: UDP (and other datagram IP sockets) allowed.
    pub udp: bool,
    /// Socket families beyond AF_UNIX, AF_INET, AF_INET6: (name, number).
    pub address_families: Vec<(String, u32)>,
    /// System calls allowed beyond the default filter: (name, number).
    pub syscalls: Vec<(String, i64)>,
    /// Size of /tmp and /dev/shm in bytes (None: `[limits] memory`, else `DEFAULT_TMP_SIZE`).
    pub tmp_size: Option<u64>,
    /// Symbolic links may be made in `read_write` paths.
    pub symlinks: bool,
    /// `publish`: host listeners paddock forwards into the app's network namespace.
    pub publish: Vec<Publish>,
    /// The tree the sandbox's root is made of when it is not the app's bundle: an OCI image's
    /// rootfs, set by the containerd shim (crates/containerd-shim-paddock). No app-file key
    /// sets it; `None` for every app of `paddock serve` (their root is their bundle).
    pub root: Option<PathBuf>,
    /// A network namespace to join instead of making one (a pod's, by the path the OCI spec
    /// gives; set by the containerd shim, no app-file key). Needs root.
    pub join_netns: Option<PathBuf>,
    /// Host paths bound at other paths inside: (path inside, host path, writable); an OCI
    /// spec's bind mounts (set by the containerd shim, no app-file key).
    pub binds: Vec<(PathBuf, PathBuf, bool)>,
    /// With a user namespace as root: the first host id of its range when the caller picked
    /// it (`sandbox::id_base_of_slot`; the containerd shim claims one across shims); None:
    /// picked from the app's name. No app-file key.
    pub id_base: Option<u32>,
}

/// The size of a sandbox's /tmp and /dev/shm when neither `tmp_size` nor `[limits] memory`
/// says otherwise.
pub const DEFAULT_TMP_SIZE: u64 = 64 << 20;

/// Paths paddock makes itself inside every sandbox (paths under /tmp are fine: they are
/// mounted on the sandbox's own /tmp).
const MADE_BY_PADDOCK: &[&str] = &["/dev", "/proc"];

/// Checks a path of a `[sandbox]` list: absolute, normal, not `/`, not one paddock makes.
fn sandbox_path(s: &str) -> Result<PathBuf, String> {
    if !s.starts_with('/') {
        return Err(format!("\"{s}\" must be an absolute path"));
    }
    if s.contains('\0') {
        return Err("a path cannot contain a NUL byte".into());
    }
    let p = Path::new(s);
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("\"{s}\" must not contain \".\" or \"..\""));
    }
    let clean: PathBuf = p.components().collect();
    if clean == Path::new("/") {
        return Err(
            "\"/\" would give the app the whole host; name the directories it needs".into(),
        );
    }
    for made in MADE_BY_PADDOCK {
        if clean.starts_with(made) {
            return Err(format!(
                "{} is made by paddock in every sandbox (a minimal /dev, a private /proc); remove \"{s}\"",
                made
            ));
        }
    }
    if clean == Path::new("/tmp") {
        return Err("/tmp is made by paddock in every sandbox (an empty tmpfs); name a directory under it, or use another path".into());
    }
    Ok(clean)
}

/// A capability name with or without `CAP_`, in any case.
pub fn capability(name: &str) -> Result<(String, caps::Capability), String> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<caps::Capability>()
        .map(|c| (full.clone(), c))
        .map_err(|_| {
            format!("unknown capability \"{name}\"; give names such as \"NET_BIND_SERVICE\" or \"CAP_CHOWN\" (see capabilities(7))")
        })
}

/// Ports for Landlock's TCP rules.
fn ports(cx: &mut FileCtx, key: &str, list: &List<PortOrPattern>) -> Vec<u16> {
    let mut out = vec![];
    for p in list.iter().flat_map(|l| l.get_ref()) {
        let n = match p.get_ref() {
            PortOrPattern::Port(n) => Some(*n),
            PortOrPattern::Pattern(s) => s.parse::<i64>().ok(),
        };
        match n {
            Some(n) if (0..=65535).contains(&n) => out.push(n as u16),
            _ => cx.err_at(
                Some(p.span()),
                key,
                "a native sandbox restricts TCP by port (Landlock has no address rules): give port numbers, as in [6379]",
            ),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Parses `[sandbox]` for `isolation = "sandbox"`.
pub(super) fn parse(cx: &mut FileCtx, raw: Option<&Spanned<RawSandbox>>) -> SandboxSpec {
    let mut spec = SandboxSpec {
        seccomp: true,
        userns: true,
        ..Default::default()
    };
    let Some(raw) = raw else { return spec };
    let s = raw.get_ref();
    match s.network.as_ref().map(|n| (n, n.get_ref().as_str())) {
        None | Some((_, "none")) => {}
        Some((_, "host")) => spec.host_network = true,
        Some((n, other)) => cx.err_at(
            Some(n.span()),
            "sandbox.network",
            format!("unknown value \"{other}\"; expected \"none\" (the default: its own network namespace with only loopback) or \"host\""),
        ),
    }
    spec.tcp_bind = ports(cx, "sandbox.tcp_bind", &s.tcp_bind);
    parse_publish(cx, s, &mut spec);
    spec.tcp_connect = ports(cx, "sandbox.tcp_connect", &s.tcp_connect);
    let mut seen: Vec<(PathBuf, &str)> = vec![];
    for (key, list, must_exist) in [
        ("sandbox.read_only", &s.read_only, true),
        ("sandbox.read_write", &s.read_write, true),
        ("sandbox.tmpfs", &s.tmpfs, false),
    ] {
        let mut out = vec![];
        for p in list.iter().flat_map(|l| l.get_ref()) {
            let path = match sandbox_path(p.get_ref()) {
                Ok(path) => path,
                Err(e) => {
                    cx.err_at(Some(p.span()), key, e);
                    continue;
                }
            };
            if let Some((_, other)) = seen.iter().find(|(q, _)| *q == path) {
                cx.err_at(
                    Some(p.span()),
                    key,
                    format!("{} is already listed in {other}", path.display()),
                );
                continue;
            }
            if must_exist && let Err(e) = std::fs::metadata(&path) {
                cx.err_at(
                    Some(p.span()),
                    key,
                    format!(
                        "{}: {} on this host; create it, or remove it from the list",
                        path.display(),
                        crate::util::io_reason(&e)
                    ),
                );
                continue;
            }
            seen.push((path.clone(), key));
            out.push(path);
        }
        match key {
            "sandbox.read_only" => spec.read_only = out,
            "sandbox.read_write" => spec.read_write = out,
            _ => spec.tmpfs = out,
        }
    }
    spec.userns = s.userns.as_ref().is_none_or(|u| *u.get_ref());
    spec.udp = s.udp.as_ref().is_some_and(|u| *u.get_ref());
    spec.symlinks = s.symlinks.as_ref().is_some_and(|u| *u.get_ref());
    for f in s.address_families.iter().flat_map(|l| l.get_ref()) {
        let name = f.get_ref().to_ascii_uppercase();
        let name = if name.starts_with("AF_") {
            name
        } else {
            format!("AF_{name}")
        };
        match crate::syscalls::FAMILIES.iter().find(|(n, _)| *n == name) {
            Some((n, nr)) if !spec.address_families.iter().any(|(x, _)| x == n) => {
                spec.address_families.push((n.to_string(), *nr))
            }
            Some(_) => {}
            None if ["AF_UNIX", "AF_INET", "AF_INET6", "AF_LOCAL"].contains(&name.as_str()) => {}
            None => cx.err_at(
                Some(f.span()),
                "sandbox.address_families",
                format!(
                    "unknown or unsupported family \"{}\"; AF_UNIX, AF_INET and AF_INET6 are always allowed, and these can be added: {}",
                    f.get_ref(),
                    crate::syscalls::FAMILIES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    for c in s.syscalls.iter().flat_map(|l| l.get_ref()) {
        match crate::syscalls::lookup(c.get_ref()) {
            Some(nr) => {
                if !spec.syscalls.iter().any(|(_, n)| *n == nr) {
                    spec.syscalls.push((c.get_ref().clone(), nr));
                }
            }
            None => cx.err_at(
                Some(c.span()),
                "sandbox.syscalls",
                format!(
                    "unknown system call \"{}\" (names as in syscalls(2), e.g. \"io_uring_setup\"); a call paddock does not know cannot be allowed",
                    c.get_ref()
                ),
            ),
        }
    }
    if let Some(t) = &s.tmp_size {
        match super::units::parse_size(t.get_ref()) {
            Ok(n) if n >= 1 << 20 => spec.tmp_size = Some(n),
            Ok(_) => cx.err_at(Some(t.span()), "sandbox.tmp_size", "must be at least 1MiB"),
            Err(e) => cx.err_at(Some(t.span()), "sandbox.tmp_size", e),
        }
    }
    for c in s.capabilities.iter().flat_map(|l| l.get_ref()) {
        match capability(c.get_ref()) {
            Ok((name, _)) if !spec.capabilities.contains(&name) => spec.capabilities.push(name),
            Ok(_) => {}
            Err(e) => cx.err_at(Some(c.span()), "sandbox.capabilities", e),
        }
    }
    match s.seccomp.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "default")) => {}
        Some((_, "off")) => spec.seccomp = false,
        Some((v, other)) => cx.err_at(
            Some(v.span()),
            "sandbox.seccomp",
            format!("unknown value \"{other}\"; expected \"default\" (an allow list of the system calls services use; `syscalls` adds more) or \"off\""),
        ),
    }
    spec
}

// ---- `publish` (issue 12): host listeners forwarded into the app's network namespace ----

/// One `[sandbox] publish` entry: paddock listens on `host` and forwards each connection to
/// 127.0.0.1:`port` inside the app's network namespace (see the publish module).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Publish {
    pub host: SocketAddr,
    pub port: u16,
    /// Line and column of the entry in its file, for conflicts found across files.
    #[serde(skip)]
    pub at: super::Ignored<(usize, usize)>,
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.port == self.host.port() {
            write!(f, "{}", self.host)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

const PUBLISH_SHAPE: &str = "give \"address:port\" or \"address:port:port inside\", as in \"127.0.0.1:8080\", \"127.0.0.1:8081:80\" or \"[::1]:8080\"";

fn publish_port(p: &str, what: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) => Err(format!(
            "{what} 0 would be a port the kernel picks; give a fixed port (1-65535)"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{what} \"{p}\" is not a port number (1-65535)")),
    }
}

/// `"127.0.0.1:8080"`, `"127.0.0.1:8081:80"`, `"[::1]:8080"`, `"[::1]:8080:80"`.
fn publish_entry(text: &str) -> Result<(SocketAddr, u16), String> {
    let (addr, ports) = if let Some(rest) = text.strip_prefix('[') {
        let Some((a, ports)) = rest.split_once("]:") else {
            return Err(format!("\"{text}\": {PUBLISH_SHAPE}"));
        };
        let a: Ipv6Addr = a
            .parse()
            .map_err(|_| format!("\"{a}\" is not an IPv6 address; {PUBLISH_SHAPE}"))?;
        (IpAddr::V6(a), ports)
    } else {
        let Some((a, ports)) = text.split_once(':') else {
            return Err(format!(
                "\"{text}\" names no host address: give it, as in \"127.0.0.1:{text}\" (only this host) or \"0.0.0.0:{text}\" (every interface)"
            ));
        };
        if ports.split(':').count() > 2 {
            return Err(if a.parse::<Ipv4Addr>().is_ok() {
                format!("\"{text}\": {PUBLISH_SHAPE}")
            } else {
                format!("\"{text}\": an IPv6 address goes in brackets, as in \"[::1]:8080\"")
            });
        }
        let a: Ipv4Addr = a.parse().map_err(|_| {
            format!("\"{a}\" is not an IP address (host names are not resolved); {PUBLISH_SHAPE}")
        })?;
        (IpAddr::V4(a), ports)
    };
    let (host_port, inside) = match ports.split_once(':') {
        Some((h, i)) => (
            publish_port(h, "host port")?,
            publish_port(i, "port inside")?,
        ),
        None => {
            let p = publish_port(ports, "port")?;
            (p, p)
        }
    };
    Ok((SocketAddr::new(addr, host_port), inside))
}

/// Whether two host listeners cannot both be bound: the same port and the same address, or a
/// wildcard of the same family (`[::]` also takes IPv4, as a dual-stack socket).
pub fn publish_overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip(), b.ip());
    x == y
        || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()))
        || (y.is_unspecified() && (y.is_ipv6() || x.is_ipv4()))
}

/// `[sandbox] publish`: checked and added to `spec` (the ports inside are added to `tcp_bind`:
/// the app must be able to listen on them).
fn parse_publish(cx: &mut FileCtx, raw: &RawSandbox, spec: &mut SandboxSpec) {
    let Some(list) = &raw.publish else { return };
    if spec.host_network && !list.get_ref().is_empty() {
        cx.err_at(
            Some(list.span()),
            "sandbox.publish",
            "is for network = \"none\": with network = \"host\" the app listens on the host's addresses itself (allowed by tcp_bind); remove publish, or the network key",
        );
        return;
    }
    for e in list.get_ref() {
        let text = match e.get_ref() {
            PortOrPattern::Pattern(t) => t.clone(),
            PortOrPattern::Port(n) => {
                cx.err_at(
                    Some(e.span()),
                    "sandbox.publish",
                    format!("give the host address too, as a string: \"127.0.0.1:{n}\" (only this host) or \"0.0.0.0:{n}\" (every interface)"),
                );
                continue;
            }
        };
        let (host, port) = match publish_entry(&text) {
            Ok(x) => x,
            Err(m) => {
                cx.err_at(Some(e.span()), "sandbox.publish", m);
                continue;
            }
        };
        if let Some(prev) = spec
            .publish
            .iter()
            .find(|p| publish_overlaps(&p.host, &host))
        {
            cx.err_at(
                Some(e.span()),
                "sandbox.publish",
                format!(
                    "{host} is already published by \"{prev}\" (line {}): a host address and port can be bound once",
                    prev.at.0.0
                ),
            );
            continue;
        }
        let at = super::line_col(cx.src, e.span().start);
        spec.publish.push(Publish {
            host,
            port,
            at: super::Ignored(at),
        });
        if !spec.tcp_bind.contains(&port) {
            spec.tcp_bind.push(port);
            spec.tcp_bind.sort_unstable();
        }
    }
}

/// Refuses `[sandbox] publish` for a level other than `sandbox` (the table itself is refused
/// at `none` and `bundle`; level `wasm` reads its network keys).
pub(super) fn refuse_publish(cx: &mut FileCtx, raw: Option<&Spanned<RawSandbox>>) {
    if let Some(l) = raw.and_then(|r| r.get_ref().publish.as_ref()) {
        cx.err_at(
            Some(l.span()),
            "sandbox.publish",
            "is for isolation = \"sandbox\" (an app in its own network namespace); a wasm app with network = \"host\" listens on the addresses its tcp_bind allows",
        );
    }
}

/// Host addresses published by two apps (both could not be bound), as errors at the second.
pub fn check_publish(
    apps: &std::collections::BTreeMap<String, super::AppSpec>,
) -> Vec<super::ConfigError> {
    let mut errors = vec![];
    let mut seen: Vec<(&super::AppSpec, &Publish)> = vec![];
    for a in apps.values() {
        for p in a.sandbox.iter().flat_map(|s| &s.publish) {
            if let Some((other, q)) = seen
                .iter()
                .find(|(_, q)| publish_overlaps(&q.host, &p.host))
            {
                errors.push(super::ConfigError {
                    file: a.file.clone(),
                    line: p.at.0.0,
                    col: p.at.0.1,
                    message: format!(
                        "key `sandbox.publish`: {} is already published by app \"{}\" ({}:{}:{}); a host address and port can be bound once",
                        p.host,
                        other.name,
                        other.file.display(),
                        q.at.0.0,
                        q.at.0.1
                    ),
                });
            } else {
                seen.push((a, p));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(sandbox_path("/var/lib/x").is_ok());
        assert_eq!(
            sandbox_path("/var//lib/x/").unwrap(),
            PathBuf::from("/var/lib/x")
        );
        assert!(sandbox_path("var").unwrap_err().contains("absolute"));
        assert!(sandbox_path("/var/../etc").unwrap_err().contains(".."));
        assert!(sandbox_path("/").unwrap_err().contains("whole host"));
        assert!(
            sandbox_path("/proc/sys")
                .unwrap_err()
                .contains("made by paddock")
        );
        assert!(
            sandbox_path("/tmp")
                .unwrap_err()
                .contains("made by paddock")
        );
        assert!(sandbox_path("/tmp/app.sock").is_ok());
        assert!(sandbox_path("/tmpdata").is_ok());
    }

    #[test]
    fn capability_names() {
        assert_eq!(
            capability("net_bind_service").unwrap().0,
            "CAP_NET_BIND_SERVICE"
        );
        assert_eq!(capability("CAP_CHOWN").unwrap().0, "CAP_CHOWN");
        assert!(
            capability("FLY")
                .unwrap_err()
                .contains("unknown capability")
        );
    }

    #[test]
    fn publish_entries() {
        let ok = |t: &str| publish_entry(t).unwrap();
        assert_eq!(
            ok("127.0.0.1:8080"),
            ("127.0.0.1:8080".parse().unwrap(), 8080)
        );
        assert_eq!(
            ok("127.0.0.1:8081:80"),
            ("127.0.0.1:8081".parse().unwrap(), 80)
        );
        assert_eq!(ok("[::1]:8080"), ("[::1]:8080".parse().unwrap(), 8080));
        assert_eq!(ok("[::]:8080:80"), ("[::]:8080".parse().unwrap(), 80));
        let err = |t: &str| publish_entry(t).unwrap_err();
        assert!(err("8080").contains("names no host address"));
        assert!(err("127.0.0.1:0").contains("port 0"));
        assert!(err("127.0.0.1:8080:0").contains("port inside 0"));
        assert!(err("localhost:8080").contains("not an IP address"));
        assert!(err("::1:8080").contains("in brackets"));
        assert!(err("[::1:8080").contains("address:port"));
        assert!(err("127.0.0.1:http").contains("not a port number"));
        assert!(err("127.0.0.1:70000").contains("not a port number"));
        let a = |t: &str| t.parse::<SocketAddr>().unwrap();
        assert!(publish_overlaps(&a("0.0.0.0:80"), &a("127.0.0.1:80")));
        assert!(publish_overlaps(&a("[::]:80"), &a("127.0.0.1:80")));
        assert!(!publish_overlaps(&a("0.0.0.0:80"), &a("[::1]:80")));
        assert!(!publish_overlaps(&a("127.0.0.1:80"), &a("127.0.0.2:80")));
        assert!(!publish_overlaps(&a("127.0.0.1:80"), &a("127.0.0.1:81")));
    }

    fn errs(src: &str) -> String {
        let file = Path::new("/etc/paddock/apps/web.toml");
        super::super::parse_app("web", file, src)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn publish_errors_name_the_entry() {
        let sb = "isolation = \"sandbox\"\nbundle = \"/nonexistent/bundle\"\ncommand = [\"x\"]\n";
        for (tail, want) in [
            (
                "[sandbox]\npublish = [\"127.0.0.1:8080\", \"bad:80\"]\n",
                "web.toml:5:30: key `sandbox.publish`: \"bad\" is not an IP address",
            ),
            (
                "[sandbox]\npublish = [8080]\n",
                "web.toml:5:12: key `sandbox.publish`: give the host address too, as a string: \"127.0.0.1:8080\"",
            ),
            (
                "[sandbox]\npublish = [\"127.0.0.1:0\"]\n",
                "web.toml:5:12: key `sandbox.publish`: port 0 would be",
            ),
            (
                "[sandbox]\npublish = [\"0.0.0.0:80\", \"127.0.0.1:80:81\"]\n",
                "web.toml:5:26: key `sandbox.publish`: 127.0.0.1:80 is already published by \"0.0.0.0:80\" (line 5)",
            ),
            (
                "[sandbox]\nnetwork = \"host\"\npublish = [\"127.0.0.1:80\"]\n",
                "web.toml:6:11: key `sandbox.publish`: is for network = \"none\"",
            ),
        ] {
            let e = errs(&format!("{sb}{tail}"));
            assert!(e.contains(want), "{tail}: {e}");
        }
        let e = errs(
            "isolation = \"wasm\"\nmodule = \"/nonexistent/m.wasm\"\n[sandbox]\npublish = [\"127.0.0.1:80\"]\n",
        );
        assert!(
            e.contains(":4:11: key `sandbox.publish`: is for isolation = \"sandbox\""),
            "{e}"
        );
        let e = errs("command = [\"/bin/true\"]\n[sandbox]\npublish = [\"127.0.0.1:80\"]\n");
        assert!(e.contains("the [sandbox] table is for isolation"), "{e}");
    }

    #[test]
    fn publish_conflicts_across_apps() {
        let app = |name: &str, at: (usize, usize), host: &str| {
            let file = PathBuf::from(format!("/etc/paddock/apps/{name}.toml"));
            let mut a =
                super::super::parse_app(name, &file, "command = [\"/bin/true\"]\n").unwrap();
            a.sandbox = Some(Box::new(SandboxSpec {
                publish: vec![Publish {
                    host: host.parse().unwrap(),
                    port: 80,
                    at: super::super::Ignored(at),
                }],
                ..Default::default()
            }));
            (name.to_string(), a)
        };
        let apps = [
            app("a", (7, 12), "127.0.0.1:8080"),
            app("b", (6, 14), "0.0.0.0:8080"),
            app("c", (6, 14), "127.0.0.1:8081"),
        ]
        .into_iter()
        .collect();
        let e = check_publish(&apps);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].to_string(),
            "/etc/paddock/apps/b.toml:6:14: key `sandbox.publish`: 0.0.0.0:8080 is already published by app \"a\" (/etc/paddock/apps/a.toml:7:12); a host address and port can be bound once"
        );
    }
}
