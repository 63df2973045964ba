//! The container's root filesystem: containerd hands the shim the snapshot's mounts (overlay,
//! or a bind mount from the native snapshotter) and the shim mounts them at `<bundle>/rootfs`,
//! as containerd's runc shim does; `delete` unmounts it.

use containerd_shim_protos::types::mount::Mount;
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

/// Splits mount options into flags and filesystem data (the common subset of `mount(8)`).
fn options(opts: &[String]) -> (MsFlags, Vec<&str>) {
    let mut flags = MsFlags::empty();
    let mut data = vec![];
    for o in opts {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => flags &= !MsFlags::MS_RDONLY,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
            other => data.push(other),
        }
    }
    (flags, data)
}

/// Mounts `mounts` (containerd gives one for a snapshot) at `target`.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<(), String> {
    if mounts.len() > 1 {
        return Err(format!(
            "{} rootfs mounts: the paddock shim mounts one snapshot (overlay or bind)",
            mounts.len()
        ));
    }
    let Some(m) = mounts.first() else {
        return Ok(());
    };
    std::fs::create_dir_all(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let (flags, data) = options(&m.options);
    let data = data.join(",");
    let fstype = (!m.type_.is_empty() && m.type_ != "bind").then_some(m.type_.as_str());
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        fstype,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| {
        format!(
            "cannot mount the rootfs ({} {} on {}, options {:?}): {e}",
            m.type_,
            m.source,
            target.display(),
            m.options
        )
    })?;
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        // A bind mount ignores MS_RDONLY until a remount.
        let _ = nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        );
    }
    Ok(())
}

/// Unmounts whatever is mounted at `target` (nothing when nothing is).
pub fn unmount_rootfs(target: &Path) {
    for _ in 0..8 {
        if nix::mount::umount2(target, MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
}
