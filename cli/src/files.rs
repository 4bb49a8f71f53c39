//! Files zopp writes for the user that hold plaintext secrets (`zopp secret export -o`,
//! `zopp inject -o`): created 0600 whatever the umask, and replaced atomically, so a reader
//! never sees half a file and a failed run leaves the old file (or none) behind.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::home::replace_private;

/// Writes `bytes` to `path` as a 0600 file, atomically (a temporary file in the same
/// directory, then a rename over `path`).
///
/// # Errors
/// [`Error::LocalIo`] when the directory is not writable or the disk is full.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    // `out.env` has an empty parent: the temporary file belongs in the current directory.
    let target: PathBuf = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new(".").join(path),
        _ => path.to_owned(),
    };
    replace_private(&target, bytes).map_err(|e| Error::io("cannot write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_a_readable_file_with_a_private_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("out.env");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, b"A=1\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"A=1\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            write_private(&tmp.path().join("missing/dir/f"), b"x"),
            Err(Error::LocalIo { .. })
        ));
    }
}
