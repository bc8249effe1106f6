//! Full disks: a run with the disk-full nemesis puts every node's data directory on a
//! small tmpfs mount of its own (made by the run, so it needs root), and a fault fills
//! one with a filler file until the file system answers "no space", then empties it.
//!
//! A mount is undone when its [`TmpfsMount`] is dropped (the cluster drops it after
//! stopping its nodes, on every exit path, a panic's unwinding included), lazily
//! (`MNT_DETACH`), so a process that still holds a file open cannot keep it mounted.

use anyhow::{Context, bail};
use nix::mount::{MntFlags, MsFlags};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The filler file's name in a data directory.
pub const FILLER_NAME: &str = "harness-filler";

/// Refuse clearly when the harness does not run as root: `what` needs it.
///
/// # Errors
/// Not root.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} needs root (it mounts or creates namespaces of its own): run the harness as root, or leave it out of --nemesis"
        );
    }
    Ok(())
}

/// Whether the harness runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A tmpfs mounted by the run; unmounted when dropped.
#[derive(Debug)]
pub struct TmpfsMount {
    path: PathBuf,
    mounted: bool,
}

impl TmpfsMount {
    /// Mount a tmpfs of `size_bytes` on `path` (created if missing; it must be empty).
    ///
    /// # Errors
    /// Not root, `path` not empty, or the mount refused.
    pub fn mount(path: &Path, size_bytes: u64) -> anyhow::Result<TmpfsMount> {
        require_root("the disk-full nemesis")?;
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        if std::fs::read_dir(path)?.next().is_some() {
            bail!(
                "{} is not empty: a data directory on a fresh tmpfs must start empty",
                path.display()
            );
        }
        let options = format!("size={size_bytes},mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )
        .with_context(|| {
            format!(
                "mounting a tmpfs of {size_bytes} bytes on {}",
                path.display()
            )
        })?;
        Ok(TmpfsMount {
            path: path.to_path_buf(),
            mounted: true,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmount (lazily: it goes away once no process uses it). Idempotent.
    pub fn unmount(&mut self) {
        if self.mounted {
            self.mounted = false;
            if let Err(error) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH) {
                eprintln!(
                    "fencelock-harness: cannot unmount {}: {error}; unmount it by hand (`umount -l`)",
                    self.path.display()
                );
            }
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Fill `dir`'s file system: write the filler file until the file system answers "no
/// space" (or `limit_bytes` were written). Returns the bytes written.
///
/// # Errors
/// A write failed with anything but "no space".
pub fn fill(dir: &Path, limit_bytes: u64) -> std::io::Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(FILLER_NAME))?;
    let mut written = 0u64;
    // Large chunks first, then small ones, so that the last few pages are taken too.
    for chunk in [1 << 20, 4096usize] {
        let block = vec![0xa5u8; chunk];
        while written < limit_bytes {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}

/// Give the space back: remove the filler file of `dir`.
///
/// # Errors
/// It exists and cannot be removed.
pub fn empty(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(FILLER_NAME)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tmpfs_fills_to_no_space_and_empties() {
        if !is_root() {
            assert!(require_root("this test").is_err());
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("data");
        let mut mount = TmpfsMount::mount(&mount_point, 2 << 20).unwrap();
        let written = fill(mount.path(), 64 << 20).unwrap();
        assert!(written > 1 << 20 && written <= 2 << 20, "{written}");
        // Full: not one more page.
        let more = std::fs::write(mount.path().join("more"), vec![0u8; 8192]);
        assert_eq!(
            more.unwrap_err().raw_os_error(),
            Some(nix::libc::ENOSPC),
            "the file system is full"
        );
        empty(mount.path()).unwrap();
        std::fs::write(mount.path().join("more"), vec![0u8; 8192]).unwrap();
        mount.unmount();
        // Unmounted: the directory is the plain, empty one again.
        assert!(std::fs::read_dir(&mount_point).unwrap().next().is_none());
    }
}
