//! Network allow lists for wasm apps (`[sandbox] tcp_bind` / `tcp_connect`), checked by WASI
//! preview 2 sockets through `WasiCtxBuilder::socket_addr_check` on every bind, listen and
//! connect.
//!
//! A pattern is `HOST:PORT`: HOST is an IPv4 address, an IPv6 address in brackets, either with an
//! optional `/prefix` (CIDR), or `*` for any address; PORT is a number, a range `8000-8099`, or
//! `*`. Examples: `127.0.0.1:8080`, `*:443`, `10.0.0.0/8:5432`, `[::1]:*`.

use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddrPattern {
    /// Address and prefix length; `None` = any address.
    pub net: Option<(IpAddr, u8)>,
    pub ports: (u16, u16),
    /// As written, for messages.
    pub text: String,
}

impl fmt::Display for AddrPattern {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AddrPattern {
    pub fn parse(s: &str) -> Result<AddrPattern, String> {
        let bad = |why: &str| {
            format!(
                "invalid address pattern \"{s}\": {why}; write HOST:PORT, as in \"127.0.0.1:8080\", \"*:443\", \"10.0.0.0/8:5432\", \"[::1]:*\", \"0.0.0.0:8000-8099\""
            )
        };
        let t = s.trim();
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, p) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
            let p = p
                .strip_prefix(':')
                .ok_or_else(|| bad("missing ':PORT' after ']'"))?;
            (h, p)
        } else {
            let (h, p) = t.rsplit_once(':').ok_or_else(|| bad("missing ':PORT'"))?;
            if h.contains(':') {
                return Err(bad("put an IPv6 address in brackets, as in \"[::1]:8080\""));
            }
            (h, p)
        };
        let net = if host == "*" {
            None
        } else {
            let (addr, prefix) = match host.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (host, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| bad(&format!("\"{addr}\" is not an IP address (or `*`)")))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(bad(&format!("prefix length \"/{p}\" must be 0 to {max}"))),
                },
            };
            Some((ip, len))
        };
        let port_num = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad(&format!("\"{p}\" is not a port number (0-65535)")))
        };
        let ports = if port == "*" {
            (0, u16::MAX)
        } else if let Some((a, b)) = port.split_once('-') {
            let (a, b) = (port_num(a)?, port_num(b)?);
            if a > b {
                return Err(bad("the port range is empty"));
            }
            (a, b)
        } else {
            let p = port_num(port)?;
            (p, p)
        };
        Ok(AddrPattern {
            net,
            ports,
            text: t.to_string(),
        })
    }

    pub fn matches(&self, addr: &SocketAddr) -> bool {
        if addr.port() < self.ports.0 || addr.port() > self.ports.1 {
            return false;
        }
        let Some((net, len)) = self.net else {
            return true;
        };
        let ip = canonical(addr.ip());
        match (canonical(net), ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) compares as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let len = len as usize;
    let (full, rest) = (len / 8, len % 8);
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// What a wasm app may do on the network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetPolicy {
    /// `[sandbox] network = "host"`: TCP sockets on the host's network, within the lists.
    pub host: bool,
    pub tcp_bind: Vec<AddrPattern>,
    pub tcp_connect: Vec<AddrPattern>,
}

/// How a socket address is about to be used (mirrors `wasmtime_wasi::sockets::SocketAddrUse`,
/// so the rules can be unit-tested without a store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    TcpBind,
    TcpListen,
    TcpAccept,
    TcpConnect,
    Udp,
}

impl NetPolicy {
    pub fn allows(&self, addr: &SocketAddr, u: Use) -> bool {
        if !self.host {
            return false;
        }
        match u {
            // An outgoing connection binds implicitly to the wildcard address and port 0: that
            // is part of connecting, which `tcp_connect` governs.
            Use::TcpBind
                if addr.ip().is_unspecified()
                    && addr.port() == 0
                    && !self.tcp_connect.is_empty() =>
            {
                true
            }
            Use::TcpBind | Use::TcpListen => self.tcp_bind.iter().any(|p| p.matches(addr)),
            // Whoever can reach a port the app was allowed to listen on may connect to it.
            Use::TcpAccept => true,
            Use::TcpConnect => self.tcp_connect.iter().any(|p| p.matches(addr)),
            Use::Udp => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn patterns() {
        let p = AddrPattern::parse("127.0.0.1:8080").unwrap();
        assert!(p.matches(&sa("127.0.0.1:8080")));
        assert!(!p.matches(&sa("127.0.0.1:8081")));
        assert!(!p.matches(&sa("127.0.0.2:8080")));
        let p = AddrPattern::parse("*:443").unwrap();
        assert!(p.matches(&sa("1.2.3.4:443")) && p.matches(&sa("[::1]:443")));
        let p = AddrPattern::parse("10.0.0.0/8:5432").unwrap();
        assert!(p.matches(&sa("10.200.3.4:5432")) && !p.matches(&sa("11.0.0.1:5432")));
        assert!(p.matches(&sa("[::ffff:10.1.1.1]:5432")));
        let p = AddrPattern::parse("[::1]:*").unwrap();
        assert!(p.matches(&sa("[::1]:1")) && !p.matches(&sa("127.0.0.1:1")));
        let p = AddrPattern::parse("0.0.0.0/0:8000-8099").unwrap();
        assert!(p.matches(&sa("9.9.9.9:8050")) && !p.matches(&sa("9.9.9.9:8100")));
        let p = AddrPattern::parse("192.168.1.0/23:1").unwrap();
        assert!(p.matches(&sa("192.168.0.7:1")) && !p.matches(&sa("192.168.2.7:1")));
        for bad in [
            "127.0.0.1",
            "localhost:80",
            "::1:80",
            "[::1]80",
            "1.2.3.4:99999",
            "1.2.3.4/33:1",
            "*:9-1",
            "*:x",
        ] {
            assert!(AddrPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(
            AddrPattern::parse("localhost:80")
                .unwrap_err()
                .contains("not an IP address")
        );
    }

    #[test]
    fn policy() {
        let none = NetPolicy::default();
        assert!(!none.allows(&sa("127.0.0.1:80"), Use::TcpConnect));
        let p = NetPolicy {
            host: true,
            tcp_bind: vec![AddrPattern::parse("127.0.0.1:8080").unwrap()],
            tcp_connect: vec![],
        };
        assert!(p.allows(&sa("127.0.0.1:8080"), Use::TcpBind));
        assert!(p.allows(&sa("127.0.0.1:8080"), Use::TcpListen));
        assert!(!p.allows(&sa("0.0.0.0:8080"), Use::TcpBind));
        assert!(
            !p.allows(&sa("0.0.0.0:0"), Use::TcpBind),
            "no connects allowed"
        );
        assert!(!p.allows(&sa("1.1.1.1:80"), Use::TcpConnect));
        assert!(p.allows(&sa("1.1.1.1:5555"), Use::TcpAccept));
        assert!(!p.allows(&sa("127.0.0.1:8080"), Use::Udp));
        let c = NetPolicy {
            host: true,
            tcp_bind: vec![],
            tcp_connect: vec![AddrPattern::parse("10.0.0.0/8:*").unwrap()],
        };
        assert!(c.allows(&sa("0.0.0.0:0"), Use::TcpBind));
        assert!(c.allows(&sa("10.1.2.3:80"), Use::TcpConnect));
        assert!(!c.allows(&sa("0.0.0.0:80"), Use::TcpListen));
    }
}
