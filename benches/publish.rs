//! `[sandbox] publish` figures on this host (run: `cargo bench --bench publish`): what a
//! published port costs over reaching the same server directly, measured side by side in one
//! run (the two paths alternate round by round). Root only.
//!
//! - per connection: connect, one small HTTP request, the answer, close — a busybox httpd
//!   sandboxed with `network = "none"` reached through its published port, against the same
//!   server sandboxed with `network = "host"` reached directly;
//! - per request on a kept connection: a redis PING/PONG, the same two ways (when
//!   /usr/bin/redis-server is installed).
//!
//! Figures are printed, never asserted. `--quick` uses fewer rounds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paddock");

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_once(addr: SocketAddr) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf)?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("no 200"));
    }
    Ok(buf.len())
}

fn ping(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    if &buf != b"+PONG\r\n" {
        return Err(std::io::Error::other("no PONG"));
    }
    Ok(())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what}: not within 30s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes no pointers; the pid is of the child this bench started and has not
        // waited for yet, so it cannot have been reused.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Times `op(true)` (through the published port) and `op(false)` (directly) `rounds` times each,
/// alternating which goes first so neither always follows the other, and prints both with the
/// difference and paddock's CPU (`pid`) per published operation.
fn side_by_side(
    title: &str,
    per: &str,
    rounds: usize,
    pid: u32,
    hz: f64,
    mut op: impl FnMut(bool),
) {
    let (mut t_pub, mut t_host) = (vec![], vec![]);
    let cpu0 = cpu_ticks(pid);
    for i in 0..rounds {
        for published in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            op(published);
            if published {
                t_pub.push(t.elapsed());
            } else {
                t_host.push(t.elapsed());
            }
        }
    }
    let ticks = cpu_ticks(pid) - cpu0;
    println!("{title}");
    let (a, b) = (stats(t_pub), stats(t_host));
    row("through the published port", a);
    row("network = \"host\", directly", b);
    println!(
        "  cost of the published port: {:+.1} µs median, {:+.1} µs p99; paddock's CPU {:.1} µs per forwarded {per}",
        (a.0.as_secs_f64() - b.0.as_secs_f64()) * 1e6,
        (a.1.as_secs_f64() - b.1.as_secs_f64()) * 1e6,
        ticks as f64 / hz * 1e6 / rounds as f64
    );
}

fn row(what: &str, (med, p99): (Duration, Duration)) {
    println!(
        "  {what:44} median {:>7.1} µs   p99 {:>7.1} µs",
        med.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("publish bench skipped: needs root");
        return;
    }
    if !Path::new("/usr/bin/busybox").exists() {
        println!("publish bench skipped: needs /usr/bin/busybox (apt-get install busybox)");
        return;
    }
    let redis = Path::new("/usr/bin/redis-server").exists();
    let tmp = std::env::temp_dir().join(format!("paddock-bench-publish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (apps, www, store) = (tmp.join("apps"), tmp.join("www"), tmp.join("store"));
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello\n").unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut recipes = vec![format!("{root}/bundles/busybox.toml")];
    if redis {
        recipes.push(format!("{root}/bundles/redis-server.toml"));
    }
    let o = Command::new(BIN)
        .args(["bundle", "build"])
        .args(&recipes)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let (web_pub, web_host, redis_pub, redis_host) =
        (free_port(), free_port(), free_port(), free_port());
    let w = www.display();
    std::fs::write(
        apps.join("web-published.toml"),
        format!(
            "isolation = \"sandbox\"\nbundle = \"busybox\"\n\
             command = [\"busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:8000\", \"-h\", \"{w}\"]\n\
             [sandbox]\nread_only = [\"{w}\"]\npublish = [\"127.0.0.1:{web_pub}:8000\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        apps.join("web-host.toml"),
        format!(
            "isolation = \"sandbox\"\nbundle = \"busybox\"\n\
             command = [\"busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:{web_host}\", \"-h\", \"{w}\"]\n\
             [sandbox]\nread_only = [\"{w}\"]\nnetwork = \"host\"\ntcp_bind = [{web_host}]\n"
        ),
    )
    .unwrap();
    if redis {
        let cmd = |port: u16| {
            format!(
                "command = [\"redis-server\", \"--bind\", \"127.0.0.1\", \"--port\", \"{port}\", \"--save\", \"\", \"--appendonly\", \"no\"]\n"
            )
        };
        std::fs::write(
            apps.join("redis-published.toml"),
            format!(
                "isolation = \"sandbox\"\nbundle = \"redis-server\"\n{}[sandbox]\npublish = [\"127.0.0.1:{redis_pub}:6379\"]\n",
                cmd(6379)
            ),
        )
        .unwrap();
        std::fs::write(
            apps.join("redis-host.toml"),
            format!(
                "isolation = \"sandbox\"\nbundle = \"redis-server\"\n{}[sandbox]\nnetwork = \"host\"\ntcp_bind = [{redis_host}]\n",
                cmd(redis_host)
            ),
        )
        .unwrap();
    }
    let serve = Serve(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&apps)
            .arg("--socket")
            .arg(tmp.join("paddock.sock"))
            .arg("--state-dir")
            .arg(tmp.join("state"))
            .arg("--store")
            .arg(&store)
            .env(
                "PADDOCK_CGROUP_NAME",
                format!("paddock-bench-publish-{}", std::process::id()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("paddock serve"),
    );
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (wp, wh) = (addr(web_pub), addr(web_host));
    wait_until("web-published answers", || http_once(wp).is_ok());
    wait_until("web-host answers", || http_once(wh).is_ok());

    println!(
        "published port vs network = \"host\", side by side (paddock's runtime forwards; one helper thread makes sockets in the app's namespace)"
    );
    let rounds = if quick { 300 } else { 3000 };
    for _ in 0..20 {
        http_once(wp).unwrap();
        http_once(wh).unwrap();
    }
    // SAFETY: sysconf takes an integer name only.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    side_by_side(
        &format!(
            "per connection (connect, GET of a 6-byte file from busybox httpd, close), {rounds} each:"
        ),
        "connection",
        rounds,
        serve.0.id(),
        hz,
        |published| {
            http_once(if published { wp } else { wh }).unwrap();
        },
    );

    if redis {
        let (rp, rh) = (addr(redis_pub), addr(redis_host));
        let conn = |a: SocketAddr| {
            let s = TcpStream::connect(a)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut s2 = s;
            ping(&mut s2)?;
            Ok::<_, std::io::Error>(s2)
        };
        wait_until("redis-published answers", || conn(rp).is_ok());
        wait_until("redis-host answers", || conn(rh).is_ok());
        let (mut sp, mut sh) = (conn(rp).unwrap(), conn(rh).unwrap());
        let n = if quick { 3000 } else { 30000 };
        for _ in 0..200 {
            ping(&mut sp).unwrap();
            ping(&mut sh).unwrap();
        }
        side_by_side(
            &format!("per request on a kept connection (redis PING/PONG), {n} each:"),
            "request",
            n,
            serve.0.id(),
            hz,
            |published| ping(if published { &mut sp } else { &mut sh }).unwrap(),
        );
    } else {
        println!("per request on a kept connection: skipped (needs /usr/bin/redis-server)");
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(&tmp);
}
