//! Private temporary kubeconfig files for `zopp run --kubeconfig` and `zopp apply`.
//!
//! Each file lives in its own 0700 directory `kube-<pid>-<random>` under a per-user runtime
//! directory (`$XDG_RUNTIME_DIR/zopp`, else `$TMPDIR/zopp-<uid>`, itself 0700 and checked to be
//! this user's). The file is 0600. [`KubeconfigFile`] removes it (overwritten with zeros first)
//! when dropped, which zopp does once the child has exited, including after a signal it passed
//! on. A zopp killed with SIGKILL cannot clean up, so every new file first sweeps away the
//! directories whose pid no longer runs.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use rand_core::{OsRng, RngCore};

use crate::error::{Error, Result};

/// Prefix of the per-file directories.
const DIR_PREFIX: &str = "kube-";
/// The file's name inside its directory.
const FILE_NAME: &str = "config";

/// A kubeconfig written to a private file, removed on drop.
#[derive(Debug)]
pub struct KubeconfigFile {
    dir: PathBuf,
    path: PathBuf,
}

/// This process's effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The per-user directory the files go in: `$XDG_RUNTIME_DIR/zopp`, else `$TMPDIR/zopp-<uid>`.
pub fn runtime_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("zopp"),
        None => std::env::temp_dir().join(format!("zopp-{}", euid())),
    }
}

/// Creates `root` (0700) or checks that the existing one is a directory of this user that
/// nobody else can enter.
fn private_root(root: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).recursive(false).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("cannot create", root, e)),
    }
    let meta = std::fs::symlink_metadata(root).map_err(|e| Error::io("cannot inspect", root, e))?;
    if !meta.is_dir() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err(Error::InvalidInput(format!(
            "{} must be a directory owned by you with mode 0700; remove it or fix its mode \
             (chmod 700) and try again",
            root.display()
        )));
    }
    Ok(())
}

/// The pid a directory name carries, if it is one of ours.
fn dir_pid(name: &str) -> Option<i32> {
    name.strip_prefix(DIR_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Removes the directories left by zopp processes that no longer run. Returns how many.
pub fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(dir_pid) else {
            continue;
        };
        if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            let dir = entry.path();
            wipe(&dir.join(FILE_NAME));
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Overwrites a file with zeros before it is unlinked, so its blocks do not keep the
/// credentials (best effort).
fn wipe(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.is_file() {
            if let Ok(mut f) = OpenOptions::new().write(true).open(path) {
                let len = usize::try_from(meta.len()).unwrap_or(0);
                let _ = f.write_all(&vec![0u8; len]);
                let _ = f.sync_data();
            }
        }
    }
    let _ = std::fs::remove_file(path);
}

impl KubeconfigFile {
    /// Writes `contents` to a fresh private file under [`runtime_root`], after sweeping stale
    /// ones.
    ///
    /// # Errors
    /// The runtime directory is not private, or the file cannot be written.
    pub fn create(contents: &[u8]) -> Result<Self> {
        Self::create_in(&runtime_root(), contents)
    }

    /// [`KubeconfigFile::create`] under `root`.
    ///
    /// # Errors
    /// As [`KubeconfigFile::create`].
    pub fn create_in(root: &Path, contents: &[u8]) -> Result<Self> {
        private_root(root)?;
        sweep(root);
        let dir = root.join(format!(
            "{DIR_PREFIX}{}-{:016x}",
            std::process::id(),
            OsRng.next_u64()
        ));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("cannot create", &dir, e))?;
        let path = dir.join(FILE_NAME);
        let file = Self { dir, path };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file.path)
            .map_err(|e| Error::io("cannot create", &file.path, e))?;
        // The mode asked for may be narrowed by the umask, never widened; say it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| f.write_all(contents))
            .map_err(|e| Error::io("cannot write", &file.path, e))?;
        Ok(file)
    }

    /// Where the file is (for `KUBECONFIG`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for KubeconfigFile {
    fn drop(&mut self) {
        wipe(&self.path);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_private_and_removed_on_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("zopp");
        let f = KubeconfigFile::create_in(&root, b"apiVersion: v1\n").expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(f.dir()), 0o700);
        assert_eq!(mode(f.path()), 0o600);
        assert_eq!(std::fs::read(f.path()).expect("read"), b"apiVersion: v1\n");
        let dir = f.dir().to_owned();
        drop(f);
        assert!(!dir.exists());
    }

    #[test]
    fn stale_directories_of_dead_pids_are_swept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("zopp");
        private_root(&root).expect("root");
        // A pid far above pid_max never runs.
        let stale = root.join("kube-2147483000-00");
        std::fs::create_dir(&stale).expect("mkdir");
        std::fs::write(stale.join(FILE_NAME), b"x").expect("write");
        let alive = root.join(format!("kube-{}-00", std::process::id()));
        std::fs::create_dir(&alive).expect("mkdir");
        let other = root.join("unrelated");
        std::fs::create_dir(&other).expect("mkdir");
        assert_eq!(sweep(&root), 1);
        assert!(!stale.exists());
        assert!(alive.exists() && other.exists());
    }

    #[test]
    fn a_shared_root_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("zopp");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = KubeconfigFile::create_in(&root, b"x").expect_err("shared root");
        assert!(e.to_string().contains("mode 0700"), "{e}");
    }
}
