//! The walk stage: directories listed, files compared with the parent snapshot and handed out.
//!
//! Input: the source path and the parent snapshot's root tree ([`Walker::top`] makes the
//! stored path's ancestors). Output: each entry's node to its directory's pending tree
//! ([`super::tree`]): directories go onto the shared stack ([`Dirs`]) to be listed, unchanged
//! files keep their parent's content ([`super::parent`]), other files go to the file workers
//! in batches ([`BATCH_FILES`] files or [`BATCH_BYTES`] bytes) over the bounded channel
//! [`super`] assembles, so a walker is at most `QUEUE` files ahead of the workers and blocks
//! when they fall behind.
//!
//! One walker per worker (the calling thread is the first), taking directories from one
//! stack: listing, `lstat` and the parent comparison of many small files is the whole of an
//! unchanged backup's work. The stack makes each walker go depth first, so what waits is the
//! siblings of the directories being walked, not a level of the tree.
//!
//! What a listing saw ([`Identity`]: device, inode, type) is what is read later: a directory
//! is listed through a handle checked to be the listed one ([`list_listed`]), and the file
//! workers open files the same way.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata as FsMetadata;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rustic_core::DataId;
use rustic_core::repofile::{Metadata, Node, NodeType};
use tokio_util::sync::CancellationToken;

use crate::id::TreeId;
use crate::index::Hex32;

use super::file_worker::Job;
use super::parent::{self, Kind, Previous};
use super::tree::Pending;
use super::{Failure, Plan, Shared, bump, lock};

/// The warning of a file deleted between its listing and its reading.
pub(super) const VANISHED: &str = "vanished before it could be read; not in this snapshot";
/// Files sent to the workers together, unless they hold [`BATCH_BYTES`] before.
pub(super) const BATCH_FILES: usize = 64;
const BATCH_BYTES: u64 = 1 << 20;

/// What a listing saw at a path: the object a backup reads there must be this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
    /// `S_IFMT` bits.
    pub(super) kind: u32,
}

impl Identity {
    pub(super) fn of(m: &FsMetadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            kind: m.mode() & libc::S_IFMT,
        }
    }
}

/// Why a listed path was not read.
#[derive(Debug)]
pub(super) enum Opened {
    Failed(std::io::Error),
    /// Something else stands there now: a symlink, or this kind of object.
    Replaced(&'static str),
}

pub(super) fn kind_name(kind: u32) -> &'static str {
    match kind {
        libc::S_IFREG => "another file",
        libc::S_IFDIR => "another directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        _ => "something else",
    }
}

/// Lists what the listing of its parent saw at `path`, and only that, as [`open_listed`]
/// opens a file: the directory is opened without following a symlink, checked to be the
/// listed one, and read through that handle (`/proc/self/fd`), so its entries' metadata is
/// of the directory checked, not of whatever the path leads to by then.
fn list_listed(path: &Path, listed: Identity) -> Result<std::fs::ReadDir, Opened> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Opened::Replaced(kind_name(libc::S_IFLNK)),
            Some(libc::ENOTDIR) => Opened::Replaced(
                path.symlink_metadata()
                    .map_or("something else", |m| kind_name(m.mode() & libc::S_IFMT)),
            ),
            _ => Opened::Failed(e),
        })?;
    let found = Identity::of(&dir.metadata().map_err(Opened::Failed)?);
    if found != listed {
        return Err(Opened::Replaced(kind_name(found.kind)));
    }
    let by_handle = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    match std::fs::read_dir(&by_handle) {
        Ok(list) => Ok(list),
        // Without /proc (never in a container), by the path just checked.
        Err(_) if !Path::new("/proc/self/fd").is_dir() => {
            std::fs::read_dir(path).map_err(Opened::Failed)
        }
        Err(e) => Err(Opened::Failed(e)),
    }
}

pub(super) fn timestamp(secs: i64, nanos: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(secs, nanos as i32).ok()
}

/// Go's `os.FileMode` of a Unix mode, as restic stores it.
pub(super) fn go_mode(mode: u32) -> u32 {
    let mut go = mode & 0o777;
    match mode & libc::S_IFMT {
        libc::S_IFDIR => go |= 1 << 31,
        libc::S_IFLNK => go |= 1 << 27,
        libc::S_IFBLK => go |= 1 << 26,
        libc::S_IFCHR => go |= (1 << 26) | (1 << 21),
        libc::S_IFIFO => go |= 1 << 25,
        libc::S_IFSOCK => go |= 1 << 24,
        _ => {}
    }
    if mode & libc::S_ISUID != 0 {
        go |= 1 << 23;
    }
    if mode & libc::S_ISGID != 0 {
        go |= 1 << 22;
    }
    if mode & libc::S_ISVTX != 0 {
        go |= 1 << 20;
    }
    go
}

/// A directory to list: its path, its pending tree and its parent-snapshot tree.
struct DirTask {
    path: PathBuf,
    /// What the listing found there: only that directory is listed.
    listed: Identity,
    dir: Arc<Pending>,
    before: Option<TreeId>,
}

/// Directories listed but not walked yet, shared by the walkers: a stack, so each walker goes
/// depth first and what waits is the siblings of the directories being walked (as in a
/// recursive walk), not a level of the tree.
#[derive(Default)]
pub(super) struct Dirs {
    /// The stack, and how many walkers are listing a directory (which may push more).
    state: Mutex<(Vec<DirTask>, usize)>,
    changed: std::sync::Condvar,
    /// The first walker's failure.
    pub(super) failure: Mutex<Option<Failure>>,
}

impl Dirs {
    fn push(&self, task: DirTask) {
        lock(&self.state).0.push(task);
        self.changed.notify_one();
    }

    /// The next directory to list, waiting while others may still push one (`before_waiting`
    /// runs first, unlocked); `None` once the stack is empty and no walker is listing, or the
    /// backup stopped.
    fn take(&self, stop: &CancellationToken, before_waiting: impl FnOnce()) -> Option<DirTask> {
        let mut before_waiting = Some(before_waiting);
        let mut state = lock(&self.state);
        loop {
            if stop.is_cancelled() {
                return None;
            }
            if let Some(task) = state.0.pop() {
                state.1 += 1;
                return Some(task);
            }
            if state.1 == 0 {
                return None;
            }
            if let Some(run) = before_waiting.take() {
                drop(state);
                run();
                state = lock(&self.state);
                continue;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// A walker finished listing the directory it took.
    fn done(&self) {
        lock(&self.state).1 -= 1;
        self.changed.notify_all();
    }

    pub(super) fn fail(&self, failure: Failure, stop: &CancellationToken) {
        lock(&self.failure).get_or_insert(failure);
        stop.cancel();
        // Walkers waiting for a directory see the stop.
        let _state = lock(&self.state);
        self.changed.notify_all();
    }
}

/// A walker: lists directories, compares with the parent snapshot, hands out files. One per
/// core takes directories from [`Dirs`]: listing, `lstat` and the parent comparison of many
/// small files is the whole of an unchanged backup's work.
pub(super) struct Walker<'s, 'e> {
    shared: &'s Shared<'e>,
    dirs: &'s Dirs,
    jobs: crossbeam_channel::Sender<Vec<Job>>,
    /// Files not sent yet: sent together, so a worker wakes once per batch, not per file.
    batch: Vec<Job>,
    batch_bytes: u64,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl<'s, 'e> Walker<'s, 'e> {
    /// A walker taking directories from `dirs` and sending files to `jobs`.
    pub(super) fn new(
        shared: &'s Shared<'e>,
        dirs: &'s Dirs,
        jobs: crossbeam_channel::Sender<Vec<Job>>,
    ) -> Self {
        Self {
            shared,
            dirs,
            jobs,
            batch: Vec::new(),
            batch_bytes: 0,
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    /// Names of user and group ids, looked up once each.
    fn name(
        cache: &mut HashMap<u32, Option<String>>,
        id: u32,
        look_up: impl FnOnce(u32) -> Option<String>,
    ) -> Option<String> {
        cache.entry(id).or_insert_with(|| look_up(id)).clone()
    }

    /// The node of `path` from its `lstat`, without content or subtree.
    fn node(&mut self, name: &OsStr, path: &Path, m: &FsMetadata) -> std::io::Result<Node> {
        let ft = m.file_type();
        let mtime = timestamp(m.mtime(), m.mtime_nsec());
        let meta = Metadata {
            mode: Some(go_mode(m.mode())),
            mtime,
            // atime as the mtime (rustic's default): reading a file must not change its tree.
            atime: mtime,
            ctime: timestamp(m.ctime(), m.ctime_nsec()),
            uid: Some(m.uid()),
            gid: Some(m.gid()),
            user: Self::name(&mut self.users, m.uid(), |id| {
                nix::unistd::User::from_uid(id.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            }),
            group: Self::name(&mut self.groups, m.gid(), |id| {
                nix::unistd::Group::from_gid(id.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            }),
            inode: m.ino(),
            // Only hardlinked files need it (to find their other names).
            device_id: if m.nlink() > 1 && !ft.is_dir() {
                m.dev()
            } else {
                0
            },
            size: if ft.is_dir() { 0 } else { m.len() },
            links: if ft.is_dir() { 0 } else { m.nlink() },
            extended_attributes: xattrs(path),
        };
        let node_type = if ft.is_dir() {
            NodeType::Dir
        } else if ft.is_symlink() {
            NodeType::from_link(&std::fs::read_link(path)?)
        } else if ft.is_block_device() {
            NodeType::Dev { device: m.rdev() }
        } else if ft.is_char_device() {
            NodeType::Chardev { device: m.rdev() }
        } else if ft.is_fifo() {
            NodeType::Fifo
        } else if ft.is_socket() {
            NodeType::Socket
        } else {
            NodeType::File
        };
        Ok(Node::new_node(name, node_type, meta))
    }

    /// The snapshot's root: the stored path's ancestors as directories, then the source.
    pub(super) fn top(&mut self, plan: &Plan<'_>) -> Result<(), Failure> {
        let shared = self.shared;
        let components: Vec<&OsStr> = plan
            .stored
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let Some((last, ancestors)) = components.split_last() else {
            return Err(Failure::StoredPathNoName);
        };
        let root = Pending::new(None, None, plan.parent);
        let mut before = parent::load(shared, plan.parent)?;
        let mut dir = root;
        let mut real = PathBuf::from("/");
        for name in ancestors {
            real.push(name);
            let node = if plan.stored == plan.source {
                std::fs::symlink_metadata(&real)
                    .ok()
                    .and_then(|m| self.node(name, &real, &m).ok())
            } else {
                None
            };
            // A logical path's directories do not exist: the same node every time, so a
            // moved volume's snapshots share them.
            let node = node.unwrap_or_else(|| {
                let meta = Metadata {
                    mode: Some((1 << 31) | 0o755),
                    ..Metadata::default()
                };
                Node::new_node(name, NodeType::Dir, meta)
            });
            let prev = before
                .get(&node.name)
                .filter(|n| n.kind == Kind::Dir)
                .and_then(|n| n.subtree.as_ref())
                .map(Hex32::tree);
            *lock(&dir.children) = vec![None];
            let child = Pending::new(Some(node), Some((dir.clone(), 0)), prev);
            // The listing of `dir` is complete once its one child is.
            dir.remaining.fetch_add(1, Ordering::AcqRel);
            shared.release(&dir);
            before = parent::load(shared, prev)?;
            dir = child;
        }
        *lock(&dir.children) = vec![None];
        dir.remaining.fetch_add(1, Ordering::AcqRel);
        let res = self.entry(plan.source, last, &dir, 0, &before, None);
        shared.release(&dir);
        res
    }

    /// Backs up `path` as child `slot` of `dir`; `previous` is the parent snapshot's tree of
    /// `dir`.
    fn entry(
        &mut self,
        path: &Path,
        name: &OsStr,
        dir: &Arc<Pending>,
        slot: usize,
        previous: &Previous,
        listed: Option<&std::fs::DirEntry>,
    ) -> Result<(), Failure> {
        let shared = self.shared;
        if shared.stop.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        let warnings = &shared.env.warnings;
        // From the listing: `fstatat` on the directory, not a walk of the whole path.
        let meta = match listed {
            Some(e) => e.metadata(),
            None => std::fs::symlink_metadata(path),
        };
        let node = meta.and_then(|m| Ok((self.node(name, path, &m)?, m)));
        let (mut node, m) = match node {
            Ok(n) => n,
            Err(e) => {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    VANISHED.to_string()
                } else {
                    format!("cannot be read; not in this snapshot: {e}")
                };
                warnings.add(path, what);
                shared.complete(dir, slot, None);
                return Ok(());
            }
        };
        let before = previous.get(&node.name);
        match node.node_type {
            NodeType::Dir => {
                let before = before
                    .filter(|b| b.kind == Kind::Dir)
                    .and_then(|b| b.subtree.as_ref());
                let before = before.map(Hex32::tree);
                let child = Pending::new(Some(node), Some((dir.clone(), slot)), before);
                self.dirs.push(DirTask {
                    path: path.to_path_buf(),
                    listed: Identity::of(&m),
                    dir: child,
                    before,
                });
            }
            NodeType::File => {
                let counters = &shared.counters;
                match before.filter(|b| b.kind == Kind::File) {
                    Some(b) if parent::unchanged(b, &node) && b.all_known(shared.index) => {
                        node.content = b.content.as_ref().map(|c| {
                            c.iter()
                                .map(|id| DataId::from(id.blob().to_rustic()))
                                .collect()
                        });
                        bump(&counters.files_unmodified, 1);
                        bump(&counters.bytes_processed, m.len());
                        shared.stage.advance(m.len());
                        shared.complete(dir, slot, Some(node));
                        return Ok(());
                    }
                    Some(_) => bump(&counters.files_changed, 1),
                    None => bump(&counters.files_new, 1),
                }
                self.batch_bytes += node.meta.size;
                self.batch.push(Job {
                    path: path.to_path_buf(),
                    listed: Identity::of(&m),
                    node,
                    dir: dir.clone(),
                    slot,
                });
                if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
                    self.flush()?;
                }
            }
            _ => shared.complete(dir, slot, Some(node)),
        }
        Ok(())
    }

    /// Sends the batch to the workers.
    fn flush(&mut self) -> Result<(), Failure> {
        self.batch_bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.jobs.send(batch).map_err(|_| Failure::WorkersStopped)
    }

    /// Lists directories until none is left; then sends its last files.
    pub(super) fn run(&mut self) {
        let (stop, dirs) = (&self.shared.stop, self.dirs);
        loop {
            // Files held back while this walker waits would hold back their directories.
            let mut sent = Ok(());
            let task = dirs.take(stop, || sent = self.flush());
            if let Err(f) = sent {
                dirs.fail(f, stop);
            }
            let Some(task) = task else { break };
            if let Err(f) = self.dir(&task.path, task.listed, &task.dir, task.before) {
                dirs.fail(f, stop);
            }
            dirs.done();
        }
        if let Err(f) = self.flush() {
            dirs.fail(f, stop);
        }
    }

    /// Lists directory `path` into `dir` (whose parent-snapshot tree is `before`):
    /// its files go to the workers, its directories onto the stack.
    fn dir(
        &mut self,
        path: &Path,
        listed: Identity,
        dir: &Arc<Pending>,
        before: Option<TreeId>,
    ) -> Result<(), Failure> {
        let shared = self.shared;
        let previous = parent::load(shared, before)?;
        let mut entries: Vec<(OsString, std::fs::DirEntry)> = match list_listed(path, listed) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| (e.file_name(), e)))
                .collect(),
            Err(Opened::Failed(e)) => {
                shared.env.warnings.add(
                    path,
                    format!("cannot be listed; its contents are not in this snapshot: {e}"),
                );
                Vec::new()
            }
            Err(Opened::Replaced(by)) => {
                shared.env.warnings.add(
                    path,
                    format!(
                        "was replaced by {by} after it was listed; its contents are not in this snapshot (nothing of the replacement was read)"
                    ),
                );
                Vec::new()
            }
        };
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        *lock(&dir.children) = vec![None; entries.len()];
        dir.remaining.fetch_add(entries.len(), Ordering::AcqRel);
        for (slot, (name, entry)) in entries.iter().enumerate() {
            self.entry(&path.join(name), name, dir, slot, &previous, Some(entry))?;
        }
        shared.release(dir);
        Ok(())
    }
}

/// Extended attributes in restic's form (`{"name", "value": base64}`), read without
/// following a symlink.
fn xattrs<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    use base64::Engine;
    let Ok(names) = xattr::list(path) else {
        return T::default();
    };
    let list: Vec<serde_json::Value> = names
        .map(|name| {
            let value = xattr::get(path, &name).ok().flatten();
            serde_json::json!({
                "name": name.to_string_lossy(),
                "value": value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
            })
        })
        .collect();
    if list.is_empty() {
        return T::default();
    }
    serde_json::from_value(serde_json::Value::Array(list)).unwrap_or_default()
}

/// What the tests of the walk and of the file workers share: a file's identity as listed,
/// and what replaced it.
#[cfg(test)]
pub(super) mod testing {
    use std::path::Path;

    use super::{Identity, Opened};

    pub(in crate::archiver) fn listed(path: &Path) -> Identity {
        Identity::of(&path.symlink_metadata().expect("lstat"))
    }

    pub(in crate::archiver) fn replaced_by<T>(r: Result<T, Opened>) -> &'static str {
        match r {
            Err(Opened::Replaced(by)) => by,
            Err(Opened::Failed(e)) => panic!("failed instead: {e}"),
            Ok(_) => panic!("the replacement was opened"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{listed, replaced_by};
    use super::{go_mode, list_listed};

    #[test]
    fn a_directory_replaced_after_its_listing_is_not_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), b"s").expect("write");
        let path = dir.path().join("volume");
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("mine"), b"m").expect("write");
        let seen = listed(&path);
        let names: Vec<_> = list_listed(&path, seen)
            .map_err(|_| ())
            .expect("listed")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["mine"]);
        std::fs::rename(&path, dir.path().join("moved")).expect("move away");
        std::os::unix::fs::symlink(&outside, &path).expect("symlink");
        assert_eq!(replaced_by(list_listed(&path, seen)), "a symlink");
        std::fs::remove_file(&path).expect("remove");
        std::fs::create_dir(&path).expect("another directory");
        assert_eq!(replaced_by(list_listed(&path, seen)), "another directory");
    }

    #[test]
    fn unix_modes_become_go_file_modes_as_restic_stores_them() {
        assert_eq!(go_mode(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(go_mode(libc::S_IFDIR | 0o700), (1 << 31) | 0o700);
        assert_eq!(go_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(
            go_mode(libc::S_IFCHR | 0o600),
            (1 << 26) | (1 << 21) | 0o600
        );
        assert_eq!(go_mode(libc::S_IFIFO | 0o644), (1 << 25) | 0o644);
        assert_eq!(
            go_mode(libc::S_IFREG | libc::S_ISUID | libc::S_ISGID | 0o755),
            (1 << 23) | (1 << 22) | 0o755
        );
        assert_eq!(
            go_mode(libc::S_IFDIR | libc::S_ISVTX | 0o777),
            (1 << 31) | (1 << 20) | 0o777
        );
    }
}
