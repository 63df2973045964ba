//! App files parsed from strings: every key, its defaults, and the precise error of each bad
//! value.

use super::*;

fn parse(src: &str) -> Result<AppSpec, Vec<ConfigError>> {
    parse_app("web", Path::new("/etc/paddock/apps/web.toml"), src)
}

fn first_err(src: &str) -> String {
    parse(src).unwrap_err()[0].to_string()
}

fn all_errs(src: &str) -> String {
    parse(src)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sandbox_keys_are_checked_precisely() {
    let sb = "isolation = \"sandbox\"\nbundle = \"/nonexistent/bundle\"\ncommand = [\"x\"]\n";
    let cases = [
        (
            "[sandbox]\nread_write = [\"relative\"]\n",
            ":5:15: key `sandbox.read_write`: \"relative\" must be an absolute path",
        ),
        (
            "[sandbox]\nread_only = [\"/no/such/dir\"]\n",
            "key `sandbox.read_only`: /no/such/dir: No such file or directory on this host; create it, or remove it from the list",
        ),
        (
            "[sandbox]\nread_only = [\"/etc\"]\nread_write = [\"/etc\"]\n",
            "key `sandbox.read_write`: /etc is already listed in sandbox.read_only",
        ),
        (
            "[sandbox]\ntmpfs = [\"/proc/x\"]\n",
            "key `sandbox.tmpfs`: /proc is made by paddock",
        ),
        (
            "[sandbox]\nread_only = [\"/\"]\n",
            "would give the app the whole host",
        ),
        (
            "[sandbox]\ntcp_bind = [70000]\n",
            "key `sandbox.tcp_bind`: a native sandbox restricts TCP by port",
        ),
        (
            "[sandbox]\ntcp_connect = [\"10.0.0.1:5432\"]\n",
            "key `sandbox.tcp_connect`: a native sandbox restricts TCP by port",
        ),
        (
            "[sandbox]\ncapabilities = [\"FLY\"]\n",
            "key `sandbox.capabilities`: unknown capability \"FLY\"",
        ),
        (
            "[sandbox]\nseccomp = \"strict\"\n",
            "key `sandbox.seccomp`: unknown value \"strict\"",
        ),
        (
            "[sandbox]\nnetwork = \"bridge\"\n",
            "key `sandbox.network`: unknown value \"bridge\"",
        ),
        ("[sandbox]\nuserns = \"yes\"\n", "key `sandbox.userns`"),
        ("[sandbox]\nudp = 1\n", "key `sandbox.udp`"),
        (
            "[sandbox]\naddress_families = [\"AF_NETLINK\", \"AF_FOO\"]\n",
            ":5:35: key `sandbox.address_families`: unknown or unsupported family \"AF_FOO\"; AF_UNIX, AF_INET and AF_INET6 are always allowed, and these can be added: AF_NETLINK,",
        ),
        (
            "[sandbox]\nsyscalls = [\"io_uring_setup\", \"nosuchcall\"]\n",
            ":5:31: key `sandbox.syscalls`: unknown system call \"nosuchcall\"",
        ),
        (
            "[sandbox]\ntmp_size = \"1KiB\"\n",
            "key `sandbox.tmp_size`: must be at least 1MiB",
        ),
        (
            "[sandbox]\ntmp_size = \"lots\"\n",
            "key `sandbox.tmp_size`: ",
        ),
        ("[sandbox]\nhostname = \"x\"\n", "unknown field `hostname`"),
        (
            "fallback = \"wasm\"\n",
            "key `fallback`: unknown level \"wasm\"",
        ),
    ];
    for (extra, want) in cases {
        let e = all_errs(&format!("{sb}{extra}"));
        assert!(e.contains(want), "{extra}: {e}");
    }
    let e = all_errs("command = [\"/bin/true\"]\nfallback = \"bundle\"\n");
    assert!(
        e.contains("key `fallback`: is only used with isolation = \"sandbox\""),
        "{e}"
    );
    let e = all_errs("command = [\"/bin/true\"]\n[sandbox]\nread_only = [\"/etc\"]\n");
    assert!(
        e.contains("the [sandbox] table is for isolation = \"sandbox\""),
        "{e}"
    );
    let e = all_errs("isolation = \"sandbox\"\ncommand = [\"x\"]\n");
    assert!(
        e.contains("missing: isolation = \"sandbox\" needs the bundle"),
        "{e}"
    );
}

#[test]
fn one_line_app() {
    let a = parse(r#"command = ["/bin/sleep", "100007"]"#).unwrap();
    assert_eq!(a.command, vec!["/bin/sleep", "100007"]);
    assert!(a.autostart);
    assert_eq!(a.stop_signal, libc::SIGTERM);
    assert_eq!(a.stop_timeout, Duration::from_secs(10));
    assert_eq!(a.restart, RestartSpec::default());
    assert_eq!(a.logs, LogSpec::default());
}

#[test]
fn path_lookup() {
    let a = parse(r#"command = ["sleep", "1"]"#).unwrap();
    assert!(a.program.ends_with("sleep"));
    assert!(first_err(r#"command = ["no-such-prog-xyz"]"#).contains("not found in PATH"));
}

#[test]
fn full_file() {
    let a = parse(
        r#"
command = ["/bin/sh", "-c", "echo hi"]
workdir = "/tmp"
env = { A = "1" }
autostart = false
stop_signal = "INT"
stop_timeout = "2s"
isolation = "none"
[restart]
policy = "always"
backoff_initial = "0s"
backoff_max = "1m"
stable_after = "500ms"
max_failures = 0
[logs]
max_size = "64KiB"
keep = 2
stdout = "inherit"
combine = true
"#,
    )
    .unwrap();
    assert_eq!(a.stop_signal, libc::SIGINT);
    assert_eq!(a.restart.policy, RestartPolicy::Always);
    assert_eq!(a.restart.backoff_initial, Duration::ZERO);
    assert_eq!(a.restart.backoff_max, Duration::from_secs(60));
    assert_eq!(a.logs.max_size, 65536);
    assert_eq!(a.logs.stdout, StdoutMode::Inherit);
    assert!(a.logs.combine && !a.autostart);
    assert_eq!(a.env["A"], "1");
}

#[test]
fn errors_name_file_line_and_key() {
    let e = first_err("command = [\"/bin/true\"]\n[restart]\npolcy = \"always\"\n");
    assert!(
        e.starts_with("/etc/paddock/apps/web.toml:3:1: key `restart.polcy`: unknown field `polcy`"),
        "{e}"
    );
    assert!(e.contains("policy"), "{e}");
    let e = first_err("command = [\"/bin/true\"]\nstop_timeout = \"10x\"\n");
    assert!(
        e.contains(":2:") && e.contains("key `stop_timeout`") && e.contains("unknown unit"),
        "{e}"
    );
    let e = first_err("command = [\"/bin/true\"]\nstop_timeout = 10\n");
    assert!(
        e.contains("key `stop_timeout`") && e.contains("\"10s\""),
        "{e}"
    );
    let e = first_err("command = [\"/bin/true\"]\n[restart]\npolicy = \"sometimes\"\n");
    assert!(
        e.contains(":3:") && e.contains("restart.policy") && e.contains("always"),
        "{e}"
    );
    let e = first_err("command = []\n");
    assert!(e.contains(":1:11: key `command`: is empty"), "{e}");
    let e = first_err("workdir = \"/\"\n");
    assert!(e.contains("key `command`: missing"), "{e}");
    let e = first_err("command = [\"/nonexistent/bin/x\"]\n");
    assert!(
        e.contains("No such file or directory") || e.contains("does not exist"),
        "{e}"
    );
    let e = first_err("command = [\"/etc/passwd\"]\n");
    assert!(e.contains("not executable"), "{e}");
    let e = first_err("command = [\"/bin/true\"]\nisolation = \"vm\"\n");
    assert!(e.contains("key `isolation`: unknown level \"vm\""), "{e}");
    let e = first_err("command = [\"/bin/true\"]\nuser = \"no-such-user-xyz\"\n");
    assert!(e.contains("key `user`: no such user"), "{e}");
    let e = first_err("command = [\"/bin/true\"]\nstop_signal = \"FOO\"\n");
    assert!(e.contains("key `stop_signal`: unknown signal"), "{e}");
    let e = first_err("command = [\"/bin/true\"\n");
    assert!(e.contains("web.toml:"), "{e}");
    let e = first_err(
        "command = [\"/bin/true\"]\n[restart]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n",
    );
    assert!(e.contains("restart.backoff_max"), "{e}");
    let e = first_err("command = [\"/bin/true\"]\nenv = { \"A=B\" = \"1\" }\n");
    assert!(
        e.contains("web.toml:2:9: key `env`: invalid variable name"),
        "{e}"
    );
    let e = first_err("command = [\"/bin/true\"]\n[logs]\nmax_size = \"12XB\"\n");
    assert!(
        e.contains("logs.max_size") && e.contains("unknown unit"),
        "{e}"
    );
}

#[test]
fn names() {
    assert!(valid_app_name("web-1_a.b@x").is_ok());
    assert!(valid_app_name("all").is_err());
    assert!(valid_app_name("a b").is_err());
    assert!(valid_app_name(".hidden").is_err());
    assert!(valid_app_name("").is_err());
}

#[test]
fn diffing() {
    let a = parse(r#"command = ["/bin/sleep", "1"]"#).unwrap();
    let mut b = a.clone();
    b.command[1] = "2".into();
    let mut c = a.clone();
    c.name = "other".into();
    let old: BTreeMap<String, &AppSpec> = [("web".to_string(), &a)].into();
    let new: BTreeMap<String, AppSpec> = [("web".to_string(), b), ("other".to_string(), c)].into();
    let d = diff(&old, &new);
    assert_eq!(d.added, vec!["other"]);
    assert_eq!(d.changed, vec!["web"]);
    assert!(d.removed.is_empty());
    let d = diff(&old, &BTreeMap::new());
    assert_eq!(d.removed, vec!["web"]);
}
