//! Writing a snapshot's tree into a directory with memory bounded by configuration, not by
//! the data (the format engine's restorer queues every decrypted blob it has read until a
//! writer takes it: 0.7 GiB for a 2 GiB restore).
//!
//! Three passes over the tree, as restic's restorer does:
//!
//! 1. **Layout**: directories, empty files of their final length (unwritten ranges stay holes,
//!    so sparse files stay sparse), symlinks, FIFOs and devices; a hardlink is made to the
//!    first path of its inode. Each file's blobs become *pieces* (pack, offset in the pack,
//!    file, offset in the file): 32 bytes per blob. Once [`BATCH`] pieces or files are planned,
//!    pass 2 runs for them and the walk goes on, so a snapshot of millions of files never has
//!    its whole plan in memory.
//! 2. **Contents**: pieces sorted by pack and offset are cut into *reads* (one ranged read of
//!    adjacent blobs of one pack, at most [`MAX_READ`] unless a single blob is larger).
//!    [`RestoreOptions::readers`] threads take reads in turn; each holds one read and one
//!    decrypted blob at a time, so memory is about `readers × (MAX_READ + 2 × blob)`, whatever
//!    the snapshot's size. A blob is decrypted (its MAC checked), decompressed, and written at
//!    its offsets (`pwrite`); an all-zero blob is not written (a hole).
//! 3. **Metadata**: owners, modes and times, children before their directory (writing into a
//!    directory changes its mtime), extended attributes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustic_core::repofile::{Node, NodeType};
use rustic_core::{IndexedFull, Repository as RusticRepository};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::crypto::{MasterKey, Opener};
use crate::progress::{Progress, Unit};
use crate::store::{FileKind, Store};

/// The longest ranged read of adjacent blobs: large enough that a read costs little next to
/// its transfer, small enough that `readers` of them fit the agent's budget.
pub(crate) const MAX_READ: u64 = 8 << 20;
/// Blobs closer than this in one pack are read in one request (the gap is read and dropped).
const GAP: u64 = 256 << 10;
/// Pieces or files planned before their contents are written: about 30 MiB of plan (paths
/// included), and still enough blobs per batch that reads of one pack come together.
pub(crate) const BATCH: usize = 256 * 1024;

/// How a restore writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestoreOptions {
    /// Reads in flight (each also decrypts and writes what it read).
    pub readers: usize,
    /// Pieces or files planned before pass 2 runs for them.
    pub batch: usize,
}

/// What the restore wrote.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Written {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Why a restore stopped: one sentence naming the path or pack.
#[derive(Debug)]
pub(crate) struct RestoreError(pub String);

type Result<T> = std::result::Result<T, RestoreError>;

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let text = format!("cannot {what} {}", path.display());
    move |e| RestoreError(format!("{text}: {e}"))
}

/// One blob of one file.
#[derive(Debug, Clone, Copy)]
struct Piece {
    pack: u32,
    /// Where the encrypted blob is in the pack, and its length.
    offset: u32,
    length: u32,
    /// Its length once decompressed (0: stored uncompressed).
    uncompressed: u32,
    file: u32,
    file_offset: u64,
}

/// The state of the tree walk shared by the passes.
pub(crate) struct Restorer<'a, S: IndexedFull> {
    repo: &'a RusticRepository<S>,
    target: &'a Path,
    files: Vec<PathBuf>,
    packs: Vec<String>,
    pack_ids: HashMap<rustic_core::repofile::PackId, u32>,
    pieces: Vec<Piece>,
    /// First path of each (device, inode) with several links.
    inodes: HashMap<(u64, u64), PathBuf>,
    written: Written,
    /// Bytes planned in this batch.
    batch_bytes: u64,
}

impl<'a, S: IndexedFull> Restorer<'a, S> {
    pub(crate) fn new(repo: &'a RusticRepository<S>, target: &'a Path) -> Self {
        Self {
            repo,
            target,
            files: Vec::new(),
            packs: Vec::new(),
            pack_ids: HashMap::new(),
            pieces: Vec::new(),
            inodes: HashMap::new(),
            written: Written::default(),
            batch_bytes: 0,
        }
    }

    /// Pass 1: creates `path` (relative to the target) for `node`, and plans its contents.
    pub(crate) fn lay_out(&mut self, path: &Path, node: &Node) -> Result<()> {
        let dest = self.target.join(path);
        match &node.node_type {
            NodeType::Dir => {
                fs::create_dir_all(&dest).map_err(io("create the directory", &dest))?;
                self.written.dirs += 1;
            }
            NodeType::File => {
                self.written.files += 1;
                if node.meta.links > 1 && node.meta.inode != 0 {
                    let key = (node.meta.device_id, node.meta.inode);
                    if let Some(first) = self.inodes.get(&key) {
                        remove_existing(&dest)?;
                        return fs::hard_link(first, &dest).map_err(io("link", &dest));
                    }
                    self.inodes.insert(key, dest.clone());
                }
                remove_existing(&dest)?;
                let file = File::create(&dest).map_err(io("create", &dest))?;
                file.set_len(node.meta.size).map_err(io("size", &dest))?;
                let index = u32::try_from(self.files.len())
                    .map_err(|_| RestoreError("more than 2^32 files in one restore".into()))?;
                self.files.push(dest);
                let mut offset = 0u64;
                for id in node.content.iter().flatten() {
                    let entry = self.repo.get_index_entry(id).map_err(|e| {
                        RestoreError(format!(
                            "blob {id} of {} is in no index of the repository: {}",
                            path.display(),
                            e.display_log()
                        ))
                    })?;
                    let next = u32::try_from(self.pack_ids.len()).unwrap_or(u32::MAX);
                    let pack = *self.pack_ids.entry(entry.pack).or_insert_with(|| {
                        self.packs.push(entry.pack.to_hex().to_string());
                        next
                    });
                    let location = entry.location;
                    self.pieces.push(Piece {
                        pack,
                        offset: location.offset,
                        length: location.length,
                        uncompressed: location.uncompressed_length.map_or(0, |n| n.get()),
                        file: index,
                        file_offset: offset,
                    });
                    offset += u64::from(location.data_length());
                }
                self.batch_bytes += offset;
            }
            NodeType::Symlink { .. } => {
                remove_existing(&dest)?;
                std::os::unix::fs::symlink(node.node_type.to_link(), &dest)
                    .map_err(io("create the symlink", &dest))?;
            }
            NodeType::Fifo => {
                remove_existing(&dest)?;
                nix::unistd::mkfifo(&dest, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| {
                        RestoreError(format!("cannot create the FIFO {}: {e}", dest.display()))
                    })?;
            }
            NodeType::Dev { device } | NodeType::Chardev { device } => {
                remove_existing(&dest)?;
                let kind = if matches!(node.node_type, NodeType::Dev { .. }) {
                    nix::sys::stat::SFlag::S_IFBLK
                } else {
                    nix::sys::stat::SFlag::S_IFCHR
                };
                // Devices need privileges; without them restic warns and goes on, so do we.
                if let Err(e) = nix::sys::stat::mknod(
                    &dest,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    *device,
                ) {
                    log::warn!("cannot create the device {}: {e}", dest.display());
                }
            }
            // Sockets belong to the process that made them; restic does not restore them.
            NodeType::Socket => {}
        }
        Ok(())
    }

    /// Whether the plan is large enough to write before the walk goes on.
    pub(crate) fn batch_full(&self, opts: RestoreOptions) -> bool {
        self.pieces.len() >= opts.batch || self.files.len() >= opts.batch
    }

    /// What was written so far.
    pub(crate) fn written(&self) -> Written {
        self.written
    }

    /// Pass 2 for the files planned since the last call: reads, decrypts and writes their
    /// blobs with `opts.readers` threads, then forgets the plan.
    pub(crate) fn write_contents(
        &mut self,
        store: &Store,
        key: &MasterKey,
        rt: &Handle,
        opts: RestoreOptions,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Written> {
        let mut pieces = std::mem::take(&mut self.pieces);
        pieces.sort_unstable_by_key(|p| (p.pack, p.offset, p.file, p.file_offset));
        let reads = cut_reads(&pieces);
        let stage = progress.stage("restoring", Unit::Bytes);
        stage.set_total(self.written.bytes + self.batch_bytes);
        let readers = opts.readers.max(1);
        let stretches = Stretches::new(reads.len(), readers);
        let failure: Mutex<Option<RestoreError>> = Mutex::new(None);
        let files = &self.files;
        let packs = &self.packs;
        let stop = cancel.child_token();
        std::thread::scope(|scope| {
            for me in 0..readers {
                let (stretches, reads, pieces) = (&stretches, &reads, &pieces);
                let (stop, failure, stage) = (&stop, &failure, &stage);
                scope.spawn(move || {
                    let mut reader = Reader {
                        opener: Opener::default(),
                        file: None,
                    };
                    while !stop.is_cancelled() {
                        let Some(i) = stretches.next(me) else { return };
                        let read = &reads[i];
                        let group = &pieces[read.clone()];
                        let outcome = reader
                            .write_read(group, store, key, rt, files, packs)
                            .map(|bytes| stage.advance(bytes));
                        if let Err(e) = outcome {
                            failure
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            stop.cancel();
                        }
                    }
                });
            }
        });
        stage.finish();
        if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(RestoreError("the restore was cancelled".into()));
        }
        self.written.bytes += self.batch_bytes;
        self.batch_bytes = 0;
        self.files.clear();
        Ok(self.written)
    }
}

/// Reads handed out so that readers work far apart in the list: reads in order are mostly of
/// one file, and two threads writing one file take turns on its inode lock (measured: a tenth
/// of a 2 GiB restore's time spent spinning on it). Each reader takes reads in order from its
/// own stretch; one whose stretch is done takes the back half of the longest left.
struct Stretches(Mutex<Vec<std::ops::Range<usize>>>);

impl Stretches {
    fn new(reads: usize, readers: usize) -> Self {
        let part = reads.div_ceil(readers.max(1));
        let stretches = (0..readers.max(1))
            .map(|k| (k * part).min(reads)..((k + 1) * part).min(reads))
            .collect();
        Self(Mutex::new(stretches))
    }

    /// The next read for reader `me`, or `None` when every read is taken.
    fn next(&self, me: usize) -> Option<usize> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if all[me].is_empty() {
            let longest = (0..all.len()).max_by_key(|&k| all[k].len())?;
            let from = all[longest].clone();
            if from.is_empty() {
                return None;
            }
            let middle = from.start + from.len() / 2;
            all[longest] = from.start..middle;
            all[me] = middle..from.end;
        }
        all[me].next()
    }
}

/// Removes what is at `path` (not a directory) so it can be created anew.
fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_dir() => fs::remove_file(path).map_err(io("replace", path)),
        _ => Ok(()),
    }
}

/// Index ranges of `pieces` (sorted by pack and offset) that are read together.
fn cut_reads(pieces: &[Piece]) -> Vec<std::ops::Range<usize>> {
    let mut reads = Vec::new();
    let mut start = 0;
    for i in 1..=pieces.len() {
        let Some(p) = pieces.get(i) else {
            if start < i {
                reads.push(start..i);
            }
            break;
        };
        let first = &pieces[start];
        let prev = &pieces[i - 1];
        let prev_end = u64::from(prev.offset) + u64::from(prev.length);
        let end = u64::from(p.offset) + u64::from(p.length);
        let joins = p.pack == first.pack
            && u64::from(p.offset) <= prev_end + GAP
            && end - u64::from(first.offset) <= MAX_READ;
        if !joins {
            reads.push(start..i);
            start = i;
        }
    }
    reads
}

/// A reader thread's buffers and its last opened file, kept from read to read: most reads
/// write blobs of one file, and each blob is up to 8 MiB.
struct Reader {
    opener: Opener,
    file: Option<(u32, File)>,
}

impl Reader {
    /// Reads one range of a pack and writes its blobs; returns the bytes written.
    fn write_read(
        &mut self,
        group: &[Piece],
        store: &Store,
        key: &MasterKey,
        rt: &Handle,
        files: &[PathBuf],
        packs: &[String],
    ) -> Result<u64> {
        let first = group[0];
        let pack = &packs[first.pack as usize];
        let start = u64::from(first.offset);
        let end = group
            .iter()
            .map(|p| u64::from(p.offset) + u64::from(p.length))
            .max()
            .unwrap_or(start);
        let data = rt
            .block_on(store.read_range(FileKind::Pack, pack, start, end - start))
            .map_err(|e| {
                RestoreError(format!(
                    "cannot read pack {pack}: {}",
                    crate::error_chain(&e)
                ))
            })?;
        let mut written = 0u64;
        let mut last: Option<(u32, u32)> = None;
        for piece in group {
            let here = (piece.offset, piece.length);
            if last != Some(here) {
                let from = (u64::from(piece.offset) - start) as usize;
                let encrypted = data
                    .get(from..from + piece.length as usize)
                    .ok_or_else(|| {
                        RestoreError(format!("pack {pack} is shorter than its index says"))
                    })?;
                self.opener
                    .open(key, encrypted, piece.uncompressed)
                    .map_err(|e| {
                        RestoreError(format!(
                            "a blob at offset {} of pack {pack} {e}: the pack is damaged",
                            piece.offset
                        ))
                    })?;
                last = Some(here);
            }
            let blob = self.opener.last();
            if blob.iter().any(|&b| b != 0) {
                let path = &files[piece.file as usize];
                if self.file.as_ref().is_none_or(|(f, _)| *f != piece.file) {
                    self.file = None;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io("open", path))?;
                    self.file = Some((piece.file, file));
                }
                let (_, file) = self.file.as_ref().expect("opened above");
                file.write_all_at(blob, piece.file_offset)
                    .map_err(io("write", path))?;
            }
            written += blob.len() as u64;
        }
        Ok(written)
    }
}

/// Pass 3: the metadata of `path` (relative to the target) from `node`. Failures to set an
/// owner without privileges are ignored, as restic does; others are warnings in the log.
pub(crate) fn set_metadata(target: &Path, path: &Path, node: &Node) {
    let dest = target.join(path);
    let meta = &node.meta;
    if matches!(node.node_type, NodeType::Socket) {
        return;
    }
    if meta.uid.is_some() || meta.gid.is_some() {
        let _ = std::os::unix::fs::lchown(&dest, meta.uid, meta.gid);
    }
    if !matches!(node.node_type, NodeType::Symlink { .. })
        && let Some(mode) = meta.mode
        && let Err(e) = fs::set_permissions(&dest, fs::Permissions::from_mode(unix_mode(mode)))
    {
        log::warn!("restore {}: chmod failed: {e}", dest.display());
    }
    for xattr in &meta.extended_attributes {
        let value = xattr.value.as_deref().unwrap_or_default();
        if let Err(e) = xattr::set(&dest, OsStr::new(&xattr.name), value) {
            log::warn!(
                "restore {}: xattr {} failed: {e}",
                dest.display(),
                xattr.name
            );
        }
    }
    if let Some(mtime) = meta.mtime {
        let atime = meta.atime.unwrap_or(mtime);
        let time = |t: jiff::Timestamp| {
            filetime::FileTime::from_unix_time(t.as_second(), t.subsec_nanosecond().max(0) as u32)
        };
        if let Err(e) = filetime::set_symlink_file_times(&dest, time(atime), time(mtime)) {
            log::warn!("restore {}: setting times failed: {e}", dest.display());
        }
    }
}

/// Permission bits of a Go `os.FileMode` as restic stores it.
fn unix_mode(go: u32) -> u32 {
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const STICKY: u32 = 1 << 20;
    let mut mode = go & 0o777;
    if go & SETUID != 0 {
        mode |= 0o4000;
    }
    if go & SETGID != 0 {
        mode |= 0o2000;
    }
    if go & STICKY != 0 {
        mode |= 0o1000;
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(pack: u32, offset: u32, length: u32) -> Piece {
        Piece {
            pack,
            offset,
            length,
            uncompressed: 0,
            file: 0,
            file_offset: 0,
        }
    }

    #[test]
    fn adjacent_blobs_of_a_pack_are_read_together_within_the_bound() {
        let mb = 1 << 20;
        let pieces = [
            piece(0, 0, mb),
            piece(0, mb, mb),
            piece(0, 2 * mb + 1000, mb), // a small gap: same read
            piece(0, 20 * mb, mb),       // far: a new read
            piece(1, 0, mb),             // another pack
            piece(1, mb, 9 * mb),        // would pass MAX_READ: a new read
        ];
        assert_eq!(cut_reads(&pieces), vec![0..3, 3..4, 4..5, 5..6]);
        assert!(cut_reads(&[]).is_empty());
    }

    #[test]
    fn readers_start_far_apart_and_take_every_read_once() {
        for (reads, readers) in [(0, 2), (1, 2), (2, 2), (7, 2), (100, 3), (5, 8)] {
            let stretches = Stretches::new(reads, readers);
            let mut taken = Vec::new();
            // The first read of each reader: a stretch apart.
            let firsts: Vec<_> = (0..readers).filter_map(|k| stretches.next(k)).collect();
            if reads >= readers {
                let part = reads.div_ceil(readers);
                assert_eq!(firsts, (0..readers).map(|k| k * part).collect::<Vec<_>>());
            }
            taken.extend(firsts);
            // Reader 0 alone finishes: it takes halves of the others' stretches.
            while let Some(i) = stretches.next(0) {
                taken.push(i);
            }
            for k in 0..readers {
                assert_eq!(stretches.next(k), None);
            }
            taken.sort_unstable();
            assert_eq!(
                taken,
                (0..reads).collect::<Vec<_>>(),
                "{reads} reads, {readers}"
            );
        }
    }

    #[test]
    fn go_modes_become_unix_permissions() {
        assert_eq!(unix_mode(0o644), 0o644);
        assert_eq!(unix_mode((1 << 31) | 0o755), 0o755); // a directory
        assert_eq!(unix_mode((1 << 23) | 0o755), 0o4755);
        assert_eq!(unix_mode((1 << 20) | (1 << 31) | 0o777), 0o1777);
    }
}
