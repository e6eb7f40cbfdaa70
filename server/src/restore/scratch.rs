//! The scratch directories of restores: where a backup's tarball is unpacked
//! ([`archive`](super::archive)) while its objects are restored.
//!
//! Contract:
//! - each restore gets a directory of its own, `<scratch>/lifeboat-restore-XXXXXX`, created
//!   0700 (what is in it is the backed-up cluster's objects, Secrets included; the archive
//!   writes its files 0600), and removed when the restore ends;
//! - while a restore runs, its process holds an exclusive `flock` on the directory; the kernel
//!   drops it when the process dies, however it dies;
//! - at start-up the server removes the restore directories nobody holds
//!   ([`remove_stale`]): those a killed process (an OOM kill, a node failure) left behind.
//!   Only directories named with [`PREFIX`] are considered, and a locked one is left alone, so
//!   servers sharing a scratch directory (several on one host's temporary directory) never
//!   remove each other's; nothing else in the scratch directory is touched.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The name prefix of every restore's scratch directory: what makes one recognisably ours.
pub const PREFIX: &str = "lifeboat-restore-";

/// A restore's scratch directory, private and locked; removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    // Fields drop in order: the directory is removed while the lock is still held.
    dir: tempfile::TempDir,
    _lock: File,
}

/// Why a scratch directory cannot be made.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create a private scratch directory in {root}; check that it exists and is writable (VELERO_SCRATCH_DIR, --scratch-dir)"
)]
pub struct ScratchError {
    root: String,
    #[source]
    source: io::Error,
}

impl Scratch {
    /// Creates a new directory in `root`, 0700, and locks it.
    pub fn create(root: &Path) -> Result<Scratch, ScratchError> {
        let failed = |source| ScratchError {
            root: root.display().to_string(),
            source,
        };
        // A start-up sweep of another server on the same `root` may remove the directory
        // between its creation and its lock: then it is made again (once more is plenty; the
        // sweep runs once per process start).
        for _ in 0..2 {
            let dir = tempfile::Builder::new()
                .prefix(PREFIX)
                .permissions(fs::Permissions::from_mode(0o700))
                .tempdir_in(root)
                .map_err(failed)?;
            let lock = File::open(dir.path()).map_err(failed)?;
            lock.try_lock().map_err(|e| failed(e.into()))?;
            if dir.path().is_dir() {
                return Ok(Scratch { dir, _lock: lock });
            }
        }
        Err(failed(io::Error::other(
            "the new directory was removed as soon as it was made",
        )))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What [`remove_stale`] did.
#[derive(Debug, Default)]
pub struct StaleStats {
    /// The directories removed.
    pub removed: Vec<PathBuf>,
    /// Restore directories held by a running process, left alone.
    pub in_use: usize,
    /// Stale directories that could not be removed (or not wholly), and why; the others are
    /// removed all the same.
    pub failed: Vec<(PathBuf, io::Error)>,
}

/// Removes the restore directories in `root` that no process holds: those left by a server
/// that was killed mid-restore. Entries not named with [`PREFIX`], symbolic links and plain
/// files are never touched. A missing `root` holds nothing; only a `root` that cannot be
/// listed is an error (one directory that cannot be removed is reported in the stats).
pub fn remove_stale(root: &Path) -> io::Result<StaleStats> {
    let mut stats = StaleStats::default();
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(stats),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        // `file_type` does not follow links: a link named like ours is not ours.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let dir = match File::open(&path) {
            Ok(dir) => dir,
            Err(e) => {
                stats.failed.push((path, e));
                continue;
            }
        };
        match dir.try_lock() {
            Ok(()) => match fs::remove_dir_all(&path) {
                Ok(()) => stats.removed.push(path),
                Err(e) => stats.failed.push((path, e)),
            },
            Err(fs::TryLockError::WouldBlock) => stats.in_use += 1,
            Err(fs::TryLockError::Error(e)) => stats.failed.push((path, e)),
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_restore_directory_is_private_held_while_in_use_and_removed_after() {
        let root = tempfile::tempdir().unwrap();
        let scratch = Scratch::create(root.path()).unwrap();
        let path = scratch.path().to_owned();
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(PREFIX)
        );
        assert_eq!(mode(&path), 0o700);
        // Another server starting on the same root leaves it alone.
        let stats = remove_stale(root.path()).unwrap();
        assert_eq!(stats.removed, Vec::<PathBuf>::new());
        assert_eq!(stats.in_use, 1);
        assert!(path.is_dir());
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn stale_restore_directories_are_removed_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        // What a killed server left: a world-readable directory with objects in it.
        let stale = root.path().join(format!("{PREFIX}k1Ll3d"));
        fs::create_dir_all(stale.join("contents/resources/secrets")).unwrap();
        fs::write(stale.join("contents/resources/secrets/a.json"), "{}").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o755)).unwrap();
        // Not ours: other names, a file and a link named like ours (with a target to keep).
        let other_dir = root.path().join("restore-of-someone-else");
        fs::create_dir(&other_dir).unwrap();
        fs::write(other_dir.join("data"), "keep").unwrap();
        let other_file = root.path().join("notes.txt");
        fs::write(&other_file, "keep").unwrap();
        let file_like_ours = root.path().join(format!("{PREFIX}file"));
        fs::write(&file_like_ours, "keep").unwrap();
        let link_like_ours = root.path().join(format!("{PREFIX}link"));
        std::os::unix::fs::symlink(&other_dir, &link_like_ours).unwrap();

        let stats = remove_stale(root.path()).unwrap();
        assert_eq!(stats.removed, vec![stale.clone()]);
        assert_eq!(stats.in_use, 0);
        assert!(stats.failed.is_empty(), "{:?}", stats.failed);
        assert!(!stale.exists());
        assert_eq!(fs::read_to_string(other_dir.join("data")).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&other_file).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&file_like_ours).unwrap(), "keep");
        assert!(fs::symlink_metadata(&link_like_ours).unwrap().is_symlink());
    }

    #[test]
    fn a_missing_scratch_directory_holds_nothing_stale() {
        let root = tempfile::tempdir().unwrap();
        let stats = remove_stale(&root.path().join("absent")).unwrap();
        assert!(stats.removed.is_empty() && stats.in_use == 0 && stats.failed.is_empty());
    }
}
