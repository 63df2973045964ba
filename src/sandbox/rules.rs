//! Landlock for level `sandbox`: which access rights each path of the sandbox gets, computed in
//! the parent with the `landlock` crate's access sets for the kernel's ABI, and applied in the
//! child with the three raw system calls (the child of a vfork-style clone must not allocate,
//! so the crate's `Ruleset` builder cannot run there).

use ::landlock::{ABI, Access, AccessFs, AccessNet, BitFlags, Scope};
use std::ffi::CString;

/// The Landlock ABI of the running kernel (0: Landlock unavailable).
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query: a null attr with size 0 and the VERSION flag, so the kernel reads
    // no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}

/// What a path of the sandbox may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Directory listing only (the root of the sandbox, so `ls /` works).
    List,
    /// Read and execute: the bundle.
    ReadExec,
    /// Read: `read_only`, /proc.
    Read,
    /// Read and write files, no creating or removing: /dev and /dev/pts.
    Device,
    /// Everything but execute and device nodes: /tmp, `tmpfs`, /dev/shm (the sandbox's own).
    ReadWrite,
    /// `ReadWrite` without making symbolic links: `read_write` host paths, where a link the app
    /// plants (`made-rel -> ../secret`) would be a trap for the host's tools (unless
    /// `[sandbox] symlinks = true`).
    HostWrite,
}

/// `struct landlock_ruleset_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RulesetAttr {
    pub handled_access_fs: u64,
    pub handled_access_net: u64,
    pub scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's UAPI).
#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// `struct landlock_net_port_attr`.
#[repr(C)]
struct NetPort {
    allowed_access: u64,
    port: u64,
}

const RULE_PATH_BENEATH: libc::c_int = 1;
const RULE_NET_PORT: libc::c_int = 2;

/// A path rule: the path inside the sandbox and the rights for a directory and for a file.
pub struct PathRule {
    pub path: CString,
    pub dir: u64,
    pub file: u64,
}

pub struct Rules {
    pub abi: i32,
    attr: RulesetAttr,
    attr_size: usize,
    pub paths: Vec<PathRule>,
    /// (port, bind or connect right)
    ports: Vec<(u64, u64)>,
}

fn bits(b: BitFlags<AccessFs>) -> u64 {
    b.bits()
}

fn net_bits(b: BitFlags<AccessNet>) -> u64 {
    b.bits()
}

impl Rules {
    /// A ruleset handling every right the ABI knows, with TCP bind/connect limited to the given
    /// ports where the ABI can (4+), and signals and abstract sockets scoped (6+).
    pub fn new(abi: i32, tcp_bind: &[u16], tcp_connect: &[u16]) -> Rules {
        let a = ABI::from(abi);
        let fs = bits(AccessFs::from_all(a));
        let net = net_bits(AccessNet::from_all(a));
        let scoped = Scope::from_all(a).bits();
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: net,
            scoped,
        };
        let attr_size = if abi >= 6 {
            24
        } else if abi >= 4 {
            16
        } else {
            8
        };
        let mut ports = vec![];
        if net != 0 {
            let bind = net_bits(BitFlags::from(AccessNet::BindTcp));
            let connect = net_bits(BitFlags::from(AccessNet::ConnectTcp));
            ports.extend(tcp_bind.iter().map(|p| (*p as u64, bind)));
            ports.extend(tcp_connect.iter().map(|p| (*p as u64, connect)));
        }
        Rules {
            abi,
            attr,
            attr_size,
            paths: vec![],
            ports,
        }
    }

    pub fn add(&mut self, path: CString, grant: Grant) {
        let a = ABI::from(self.abi);
        let handled = self.attr.handled_access_fs;
        let read = bits(AccessFs::ReadFile | AccessFs::ReadDir);
        let file_rights = bits(
            AccessFs::Execute
                | AccessFs::WriteFile
                | AccessFs::ReadFile
                | AccessFs::Truncate
                | AccessFs::IoctlDev,
        );
        let dev_nodes = bits(AccessFs::MakeChar | AccessFs::MakeBlock);
        let dir = match grant {
            Grant::List => bits(BitFlags::from(AccessFs::ReadDir)),
            Grant::ReadExec => read | bits(BitFlags::from(AccessFs::Execute)),
            Grant::Read => read,
            Grant::Device => {
                read | bits(AccessFs::WriteFile | AccessFs::IoctlDev | AccessFs::Truncate)
            }
            Grant::ReadWrite | Grant::HostWrite => {
                let links = if grant == Grant::HostWrite {
                    bits(BitFlags::from(AccessFs::MakeSym))
                } else {
                    0
                };
                bits(AccessFs::from_all(a))
                    & !bits(BitFlags::from(AccessFs::Execute))
                    & !dev_nodes
                    & !bits(BitFlags::from(AccessFs::IoctlDev))
                    & !links
            }
        } & handled;
        self.paths.push(PathRule {
            path,
            dir,
            file: dir & file_rights,
        });
    }

    /// Applies the rules to the calling thread. Child side: system calls only.
    ///
    /// # Safety
    /// Call in the child between clone and exec (or in a throwaway process).
    pub unsafe fn apply(&self) -> Result<(), (usize, i32)> {
        let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // SAFETY: in the child before exec (this fn's contract): the calls read `self.attr` with
        // its size, the locals `attr` alive for each call, and paths the rules own as C strings; no
        // allocation.
        unsafe {
            let rs = libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &self.attr as *const RulesetAttr,
                self.attr_size,
                0u32,
            ) as libc::c_int;
            if rs < 0 {
                return Err((usize::MAX, errno()));
            }
            for (i, r) in self.paths.iter().enumerate() {
                let fd = libc::open(r.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err((i, errno()));
                }
                let mut st: libc::stat = std::mem::zeroed();
                let is_dir =
                    libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                let attr = PathBeneath {
                    allowed_access: if is_dir { r.dir } else { r.file },
                    parent_fd: fd,
                };
                let rc = if attr.allowed_access == 0 {
                    0
                } else {
                    libc::syscall(
                        libc::SYS_landlock_add_rule,
                        rs,
                        RULE_PATH_BENEATH,
                        &attr as *const PathBeneath,
                        0u32,
                    )
                };
                if rc < 0 {
                    return Err((i, errno()));
                }
                libc::close(fd);
            }
            for (j, (port, right)) in self.ports.iter().enumerate() {
                let attr = NetPort {
                    allowed_access: *right,
                    port: *port,
                };
                if libc::syscall(
                    libc::SYS_landlock_add_rule,
                    rs,
                    RULE_NET_PORT,
                    &attr as *const NetPort,
                    0u32,
                ) < 0
                {
                    return Err((self.paths.len() + j, errno()));
                }
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, rs, 0u32) < 0 {
                return Err((usize::MAX, errno()));
            }
            libc::close(rs);
        }
        Ok(())
    }

    /// The rule an index from `apply` names, for error reports.
    pub fn describe(&self, i: usize) -> String {
        if let Some(r) = self.paths.get(i) {
            return format!("path {}", r.path.to_string_lossy());
        }
        if let Some((port, _)) = self.ports.get(i.wrapping_sub(self.paths.len())) {
            return format!("tcp port {port}");
        }
        format!("ruleset (ABI {})", self.abi)
    }
}
