//! The command line containerd gives a shim: Go `flag` syntax (`-name value`, `-name=value`,
//! `--name`), then the action (`start`, `delete`, or none for the daemon).

#[derive(Debug, Default)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    pub action: Option<String>,
}

impl Flags {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
        let mut f = Flags::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
                if f.action.is_some() {
                    return Err(format!("unexpected argument \"{a}\" after the action"));
                }
                f.action = Some(a);
                continue;
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            match name {
                "debug" => f.debug = inline.is_none_or(|v| v != "false"),
                "v" | "version" => f.version = true,
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                    let v = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| format!("flag -{name} needs a value"))?,
                    };
                    match name {
                        "namespace" => f.namespace = v,
                        "id" => f.id = v,
                        "address" => f.address = v,
                        "publish-binary" => f.publish_binary = v,
                        "bundle" => f.bundle = v,
                        _ => f.socket = v,
                    }
                }
                other => {
                    return Err(format!(
                        "unknown flag -{other} (known: -namespace, -id, -address, -publish-binary, -bundle, -socket, -debug, -v)"
                    ));
                }
            }
        }
        Ok(f)
    }

    pub fn require_start(&self) -> Result<(), String> {
        for (name, v) in [
            ("namespace", &self.namespace),
            ("id", &self.id),
            ("address", &self.address),
        ] {
            if v.is_empty() {
                return Err(format!("`start` needs -{name}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Flags, String> {
        Flags::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn containerd_command_lines() {
        let f = p("-namespace default -address /run/c.sock -publish-binary /usr/bin/containerd -id web -debug start").unwrap();
        assert_eq!(
            (f.namespace.as_str(), f.id.as_str(), f.address.as_str()),
            ("default", "web", "/run/c.sock")
        );
        assert!(f.debug);
        assert_eq!(f.action.as_deref(), Some("start"));
        let f = p("--namespace=k8s.io -id=x -bundle /b delete").unwrap();
        assert_eq!((f.namespace.as_str(), f.bundle.as_str()), ("k8s.io", "/b"));
        assert_eq!(f.action.as_deref(), Some("delete"));
        assert!(p("-id").unwrap_err().contains("-id needs a value"));
        assert!(p("-bogus 1").unwrap_err().contains("unknown flag -bogus"));
        assert!(p("start extra").unwrap_err().contains("after the action"));
    }
}
