//! The mount operations in the child, in its own mount namespace: [`Op::run`] makes the
//! system call of each (mkdir, bind, mount, `mount_setattr`, a sysctl write …) and
//! [`Op::describe`] says what a failed one was doing, for the error report.

use super::Op;
use std::ffi::{CStr, CString};
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

impl Op {
    /// Runs the operation. Child side: system calls only.
    ///
    /// # Safety
    /// In the child, in its own mount namespace.
    pub unsafe fn run(&self) -> libc::c_int {
        // SAFETY: in the child (this fn's contract): paths and data are C strings the op owns (or
        // 'static), `attr` is a live local with its size, and __errno_location always returns this
        // thread's errno.
        unsafe {
            match self {
                Op::Mkdir(p) => {
                    let r = libc::mkdir(p.as_ptr(), 0o755);
                    if r < 0 && *libc::__errno_location() == libc::EEXIST {
                        0
                    } else {
                        r
                    }
                }
                Op::Touch(p) => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o444,
                    );
                    if fd < 0 {
                        return fd;
                    }
                    libc::close(fd)
                }
                Op::Symlink { target, at } => libc::symlink(target.as_ptr(), at.as_ptr()),
                Op::Write { path, data } => {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        // Not on this kernel (ENOENT), or not ours to set: a paddock that is
                        // not root sandboxes in a user namespace that may not (EACCES).
                        let e = *libc::__errno_location();
                        return if e == libc::ENOENT || e == libc::EACCES || e == libc::EPERM {
                            0
                        } else {
                            fd
                        };
                    }
                    let b = data.to_bytes();
                    let r = libc::write(fd, b.as_ptr().cast(), b.len());
                    libc::close(fd);
                    if r < 0 { -1 } else { 0 }
                }
                Op::Bind {
                    src,
                    dst,
                    recursive,
                } => {
                    let rec = if *recursive { libc::MS_REC } else { 0 };
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | rec,
                        std::ptr::null(),
                    )
                }
                Op::Mount {
                    fstype,
                    dst,
                    flags,
                    data,
                } => libc::mount(
                    fstype.as_ptr(),
                    dst.as_ptr(),
                    fstype.as_ptr(),
                    *flags,
                    if data.is_empty() {
                        std::ptr::null()
                    } else {
                        data.as_ptr().cast()
                    },
                ),
                Op::Attr {
                    dst,
                    set,
                    recursive,
                } => {
                    let attr = MountAttr {
                        attr_set: *set,
                        attr_clr: 0,
                        propagation: 0,
                        userns_fd: 0,
                    };
                    const AT_RECURSIVE: libc::c_uint = 0x8000;
                    libc::syscall(
                        libc::SYS_mount_setattr,
                        libc::AT_FDCWD,
                        dst.as_ptr(),
                        if *recursive { AT_RECURSIVE } else { 0 },
                        &attr as *const MountAttr,
                        std::mem::size_of::<MountAttr>(),
                    ) as libc::c_int
                }
            }
        }
    }

    /// For error reports: what the operation does, with paths as the app sees them.
    pub fn describe(&self, newroot: &CStr) -> String {
        let root = newroot.to_string_lossy();
        let inside = |p: &CString| {
            let s = p.to_string_lossy();
            match s.strip_prefix(root.as_ref()) {
                Some("") => "/".to_string(),
                Some(rest) => rest.to_string(),
                None => s.into_owned(),
            }
        };
        match self {
            Op::Mkdir(p) => format!("mkdir {}", inside(p)),
            Op::Touch(p) => format!("create mount point {}", inside(p)),
            Op::Symlink { at, .. } => format!("symlink {}", inside(at)),
            Op::Bind { src, dst, .. } => {
                format!("bind {} on {}", src.to_string_lossy(), inside(dst))
            }
            Op::Mount { fstype, dst, .. } => {
                format!("mount {} on {}", fstype.to_string_lossy(), inside(dst))
            }
            Op::Write { path, data } => {
                format!("write {} to {}", data.to_string_lossy(), inside(path))
            }
            Op::Attr { dst, .. } => format!("make {} read-only/nosuid", inside(dst)),
        }
    }
}
