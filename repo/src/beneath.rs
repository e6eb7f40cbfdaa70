//! Writing only beneath a directory: every file system change a restore makes.
//!
//! A snapshot is input from whoever can write to the bucket, and a restore runs as root on a
//! node, into a directory that may already hold anything. So no path is ever handed to the
//! kernel whole: the target is opened once, and each directory below it is opened from its
//! parent's handle one name at a time with `O_NOFOLLOW | O_DIRECTORY`. A symlink on the way —
//! planted by the snapshot or already in the target — fails the open instead of being followed,
//! so nothing outside the target is created, written, chmodded, chowned or timed, whatever the
//! tree says. Each call names one entry of one open directory, so `PATH_MAX` does not bound
//! how deep a restore goes either.
//!
//! What is already in the target where an entry is restored is replaced, never followed: a
//! symlink or file where a directory goes is removed first (a directory where a file goes is
//! an error: its contents are the user's).
//!
//! Metadata goes through the entry's own handle where the kernel has no `…at` call that
//! leaves a symlink alone: the entry is opened with `O_PATH | O_NOFOLLOW` (no side effects,
//! even on a FIFO or a device), its type checked with `fstat`, and its mode set through
//! `/proc/self/fd`, which names exactly that inode. Owners and times use `fchownat` and
//! `utimensat` with `AT_SYMLINK_NOFOLLOW`, extended attributes `lsetxattr` on the entry under
//! its parent's handle.
//!
//! Handles are kept along the last directory used ([`Beneath::dir`]): a restore visits the
//! tree depth first, so each directory is opened about once per pass, and at most one handle
//! per level is open.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// Handles on a restore target and on the directories below it last used.
#[derive(Debug)]
pub(crate) struct Beneath {
    root: OwnedFd,
    /// The directories from the root to the last one used: name and handle.
    open: Vec<(OsString, OwnedFd)>,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The kind of file system object a restore makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

impl Kind {
    fn of(mode: u32) -> Kind {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// A directory of the target opened without following a symlink.
fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        // O_NOFOLLOW's answer for a symlink, O_DIRECTORY's for anything else.
        Errno::ELOOP | Errno::ENOTDIR => io::Error::new(
            io::ErrorKind::NotADirectory,
            "it is not a directory of the restore (a symlink or file stands there)",
        ),
        e => errno(e),
    })
}

/// The one name `path` (relative to the target) ends in, and its parent.
pub(crate) fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no entry",
        )),
    }
}

impl Beneath {
    /// Opens the target directory (which the caller made and trusts).
    pub(crate) fn open(target: &Path) -> io::Result<Self> {
        let root = nix::fcntl::open(
            target,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Self {
            root,
            open: Vec::new(),
        })
    }

    /// Another set of handles on the same target, for another thread.
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            root: self.root.try_clone()?,
            open: Vec::new(),
        })
    }

    /// A handle on directory `dir` (relative to the target; empty for the target), opened
    /// name by name from the target, never through a symlink.
    pub(crate) fn dir(&mut self, dir: &Path) -> io::Result<BorrowedFd<'_>> {
        let mut names = Vec::new();
        for c in dir.components() {
            match c {
                Component::Normal(n) => names.push(n),
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the path leaves the restore target",
                    ));
                }
            }
        }
        let common = self
            .open
            .iter()
            .zip(&names)
            .take_while(|((have, _), want)| have.as_os_str() == **want)
            .count();
        self.open.truncate(common);
        for name in &names[common..] {
            let parent = self
                .open
                .last()
                .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
            let fd = match open_dir(parent, name) {
                Ok(fd) => fd,
                Err(e) => {
                    self.open.clear();
                    return Err(e);
                }
            };
            self.open.push(((*name).to_owned(), fd));
        }
        Ok(self
            .open
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd()))
    }

    /// Makes directory `path` (mode 0700 until its metadata is set), keeping a directory that
    /// is there and replacing anything else.
    pub(crate) fn make_dir(&mut self, path: &Path) -> io::Result<()> {
        let (parent, name) = split(path)?;
        let parent = self.dir(parent)?;
        match nix::sys::stat::mkdirat(parent, name, Mode::S_IRWXU) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => match kind_at(parent, name)? {
                Kind::Dir => Ok(()),
                _ => {
                    unlink(parent, name)?;
                    nix::sys::stat::mkdirat(parent, name, Mode::S_IRWXU).map_err(errno)
                }
            },
            Err(e) => Err(errno(e)),
        }
    }

    /// Creates file `path` empty and `size` long (unwritten ranges stay holes), replacing what
    /// is there unless it is a directory.
    pub(crate) fn create_file(&mut self, path: &Path, size: u64) -> io::Result<()> {
        let (parent, name) = split(path)?;
        let parent = self.dir(parent)?;
        remove_existing(parent, name)?;
        let fd = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(errno)?;
        File::from(fd).set_len(size)
    }

    /// Opens the regular file `path` made by [`Beneath::create_file`] for writing; fails
    /// (without blocking) if something else stands there now.
    pub(crate) fn open_file(&mut self, path: &Path) -> io::Result<File> {
        let (parent, name) = split(path)?;
        let parent = self.dir(parent)?;
        let fd = nix::fcntl::openat(
            parent,
            name,
            // O_NONBLOCK: a FIFO swapped in would otherwise block the open until a reader came.
            OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let file = File::from(fd);
        if Kind::of(nix::sys::stat::fstat(&file).map_err(errno)?.st_mode) != Kind::File {
            return Err(io::Error::other(
                "it is no longer the regular file restored there",
            ));
        }
        Ok(file)
    }

    /// Creates a symlink `path` to `to` (any text: it is never followed here).
    pub(crate) fn symlink(&mut self, path: &Path, to: &Path) -> io::Result<()> {
        let (parent, name) = split(path)?;
        let parent = self.dir(parent)?;
        remove_existing(parent, name)?;
        nix::unistd::symlinkat(to, parent, name).map_err(errno)
    }

    /// Creates a FIFO, or a block or character device (`kind`), at `path`.
    pub(crate) fn special(&mut self, path: &Path, kind: SFlag, device: u64) -> io::Result<()> {
        let (parent, name) = split(path)?;
        let parent = self.dir(parent)?;
        remove_existing(parent, name)?;
        let mode = Mode::S_IRUSR | Mode::S_IWUSR;
        if kind == SFlag::S_IFIFO {
            nix::unistd::mkfifoat(parent, name, mode).map_err(errno)
        } else {
            nix::sys::stat::mknodat(parent, name, kind, mode, device).map_err(errno)
        }
    }

    /// Makes `path` another name of the file at `first` (both relative to the target).
    pub(crate) fn hard_link(&mut self, first: &Path, path: &Path) -> io::Result<()> {
        let (first_parent, first_name) = split(first)?;
        let from = self.dir(first_parent)?.try_clone_to_owned()?;
        let (parent, name) = split(path)?;
        let parent = self.dir(parent)?;
        remove_existing(parent, name)?;
        // No AT_SYMLINK_FOLLOW: a symlink at `first` would be linked itself, never its target.
        nix::unistd::linkat(&from, first_name, parent, name, AtFlags::empty()).map_err(errno)
    }

    /// Removes the file at `path` (a restore's file left out after all).
    pub(crate) fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        let (parent, name) = split(path)?;
        let parent = self.dir(parent)?;
        unlink(parent, name)
    }

    /// Sets the metadata of the entry `path` (empty: the target itself), which must be of
    /// `kind`: owner, mode (not of a symlink), extended attributes, then times.
    pub(crate) fn set_metadata(
        &mut self,
        path: &Path,
        kind: Kind,
        meta: &EntryMeta<'_>,
    ) -> io::Result<()> {
        let (parent, name) = if path.as_os_str().is_empty() {
            (self.root.as_fd(), OsStr::new("."))
        } else {
            let (parent, name) = split(path)?;
            (self.dir(parent)?, name)
        };
        // The entry itself, never what it may point to; no side effects on a FIFO or device.
        let fd = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let found = Kind::of(nix::sys::stat::fstat(&fd).map_err(errno)?.st_mode);
        if found != kind {
            return Err(io::Error::other(
                "it is not what the restore made there (the entry was replaced)",
            ));
        }
        if meta.uid.is_some() || meta.gid.is_some() {
            // Without privileges an owner cannot be given away; restic ignores that too.
            let _ = nix::unistd::fchownat(
                &fd,
                "",
                meta.uid.map(nix::unistd::Uid::from_raw),
                meta.gid.map(nix::unistd::Gid::from_raw),
                AtFlags::AT_EMPTY_PATH,
            );
        }
        let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if kind != Kind::Symlink
            && let Some(mode) = meta.mode
        {
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                by_fd.as_str(),
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io::Error::other(format!("cannot set its mode: {}", errno(e))))?;
        }
        let under_parent = Path::new(&format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
        for (attr, value) in meta.xattrs {
            // lsetxattr: the parent by its handle, the entry itself not followed.
            xattr::set(&under_parent, attr, value).map_err(|e| {
                io::Error::other(format!(
                    "cannot set its extended attribute {}: {e}",
                    attr.to_string_lossy()
                ))
            })?;
        }
        if let Some((atime, mtime)) = meta.times {
            nix::sys::stat::utimensat(
                parent,
                name,
                &atime,
                &mtime,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| io::Error::other(format!("cannot set its times: {}", errno(e))))?;
        }
        Ok(())
    }
}

/// What [`Beneath::set_metadata`] sets.
#[derive(Debug, Default)]
pub(crate) struct EntryMeta<'a> {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Unix permission bits (with setuid, setgid, sticky).
    pub mode: Option<u32>,
    pub xattrs: &'a [(&'a OsStr, &'a [u8])],
    pub times: Option<(nix::sys::time::TimeSpec, nix::sys::time::TimeSpec)>,
}

fn kind_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Kind> {
    let st = nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
    Ok(Kind::of(st.st_mode))
}

fn unlink(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(errno)
}

/// Removes what is at `name` so it can be created anew; a directory stays (and the create
/// fails on it: its contents are not the restore's to delete).
fn remove_existing(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match kind_at(parent, name) {
        Ok(Kind::Dir) => Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "a directory is in the way",
        )),
        Ok(_) => unlink(parent, name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `contents` into the file `file` of the directory `dir` of `target` (the directory
/// made 0755 and the file 0644, so an unprivileged reader can see them), never following a
/// symlink: whatever else stands at either name (a symlink a restored snapshot planted) is
/// replaced. For the markers an agent leaves in a volume it has just restored, whose content
/// the snapshot decided.
pub fn write_file_beneath(
    target: &Path,
    dir: &OsStr,
    file: &OsStr,
    contents: &[u8],
) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Path::new(dir);
    let path = dir.join(file);
    let mut b = Beneath::open(target)?;
    b.make_dir(dir)?;
    nix::sys::stat::fchmod(b.dir(dir)?, Mode::from_bits_truncate(0o755)).map_err(errno)?;
    b.create_file(&path, 0)?;
    let mut f = b.open_file(&path)?;
    f.write_all(contents)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_marker_replaces_planted_symlinks_and_writes_nothing_outside() {
        let (_dir, target, outside) = scratch();
        symlink(&outside, target.join(".velero")).expect("symlink");
        write_file_beneath(&target, OsStr::new(".velero"), OsStr::new("uid"), b"done")
            .expect("written");
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
        let marker = target.join(".velero/uid");
        assert_eq!(std::fs::read(&marker).expect("marker"), b"done");
        std::fs::remove_file(&marker).expect("remove the marker");
        symlink(outside.join("secret"), &marker).expect("plant a symlink");
        write_file_beneath(&target, OsStr::new(".velero"), OsStr::new("uid"), b"again")
            .expect("written");
        assert!(!outside.join("secret").exists());
        assert!(marker.symlink_metadata().expect("marker").is_file());
    }

    fn scratch() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&target).expect("target");
        std::fs::create_dir(&outside).expect("outside");
        (dir, target, outside)
    }

    #[test]
    fn a_symlink_in_the_target_is_replaced_never_followed() {
        let (_dir, target, outside) = scratch();
        symlink(&outside, target.join("x")).expect("symlink");
        symlink(outside.join("file"), target.join("f")).expect("symlink");
        let mut b = Beneath::open(&target).expect("open");
        b.make_dir(Path::new("x"))
            .expect("the symlink is replaced by a directory");
        b.create_file(Path::new("x/pwn"), 3).expect("file");
        b.create_file(Path::new("f"), 3)
            .expect("the symlink is replaced by a file");
        assert!(target.join("x").symlink_metadata().expect("x").is_dir());
        assert!(target.join("f").symlink_metadata().expect("f").is_file());
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
    }

    #[test]
    fn a_symlink_on_the_way_fails_every_operation() {
        let (_dir, target, outside) = scratch();
        std::fs::write(outside.join("secret"), b"s").expect("write");
        symlink(&outside, target.join("x")).expect("symlink");
        let mut b = Beneath::open(&target).expect("open");
        let through = Path::new("x/secret");
        assert!(b.create_file(Path::new("x/new"), 1).is_err());
        assert!(b.make_dir(Path::new("x/dir")).is_err());
        assert!(b.open_file(through).is_err());
        assert!(b.remove_file(through).is_err());
        assert!(b.symlink(Path::new("x/l"), Path::new("/")).is_err());
        let meta = EntryMeta {
            mode: Some(0o777),
            ..EntryMeta::default()
        };
        assert!(b.set_metadata(through, Kind::File, &meta).is_err());
        // The symlink itself: its type is checked, so no chmod reaches the directory.
        assert!(b.set_metadata(Path::new("x"), Kind::Dir, &meta).is_err());
        assert!(b.dir(Path::new("../outside")).is_err());
        assert_eq!(std::fs::read(outside.join("secret")).expect("read"), b"s");
        let mode = std::fs::metadata(&outside).expect("outside").permissions();
        assert_ne!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o777
        );
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 1);
    }

    #[test]
    fn a_fifo_swapped_in_for_a_file_fails_the_open_at_once() {
        let (_dir, target, _outside) = scratch();
        let mut b = Beneath::open(&target).expect("open");
        b.special(Path::new("p"), SFlag::S_IFIFO, 0).expect("fifo");
        let err = b.open_file(Path::new("p")).expect_err("not a regular file");
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn paths_deeper_than_path_max_are_made_name_by_name() {
        let (_dir, target, _outside) = scratch();
        let mut b = Beneath::open(&target).expect("open");
        let mut path = std::path::PathBuf::new();
        let name = "d".repeat(200);
        for _ in 0..30 {
            path.push(&name);
            b.make_dir(&path).expect("mkdir");
        }
        assert!(path.as_os_str().len() > libc::PATH_MAX as usize);
        let file = path.join("file");
        b.create_file(&file, 5).expect("create");
        b.open_file(&file).expect("open");
    }
}
