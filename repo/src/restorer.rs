//! Writing a snapshot's tree into a directory with memory bounded by configuration, not by
//! the data, and only beneath that directory, whatever the snapshot says.
//!
//! The snapshot is untrusted: before anything is written, every name of the tree is checked
//! ([`crate::tree::unsafe_name_in`]: plain names, none twice in a directory), and every file
//! system change goes through [`Beneath`], which never follows a symlink on the way.
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
//!
//! Damage does not stop a restore: a blob that does not decrypt, or a pack that is missing or
//! shorter than the index says, leaves out the files holding it (removed, never left
//! zero-filled), and an entry the target file system cannot hold (a name too long for it, say)
//! is left out too; each is listed by path with the reason ([`Unrestored`]) and the restore
//! goes on with everything else. What stops it: the store failing (after its retries), the
//! target's file system full or read-only, cancellation.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use nix::sys::stat::SFlag;
use rustic_core::repofile::{Node, NodeType};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::beneath::{Beneath, EntryMeta, Kind};
use crate::crypto::{MasterKey, Opener};
use crate::index::BlobIndex;
use crate::progress::{Progress, Unit};
use crate::store::{Arriving, Asked, FileKind, Store, StoreError};

/// The longest ranged read of adjacent blobs: large enough that a read costs little next to
/// its transfer, small enough that `readers` of them fit the agent's budget.
pub(crate) const MAX_READ: u64 = 8 << 20;
/// What a read taken as it arrives holds, whatever its length: the HTTP client's buffers
/// (the rest waits in the connection).
pub(crate) const STREAMED_READ: u64 = 1 << 20;
/// Blobs closer than this in one pack are read in one request (the gap is read and dropped).
const GAP: u64 = 256 << 10;
/// Pieces or files planned before their contents are written: about 30 MiB of plan (paths
/// included), and still enough blobs per batch that reads of one pack come together.
pub(crate) const BATCH: usize = 256 * 1024;
/// Entries left out that are listed one by one; beyond it they are counted (a snapshot whose
/// every file is damaged must not hold its whole listing in memory).
pub(crate) const LISTED: usize = 1000;

/// How a restore writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestoreOptions {
    /// Threads that decrypt and write what was read.
    pub readers: usize,
    /// Reads in flight, shared out among the readers (at least one each): a remote store
    /// needs more than there are cores to keep its link busy.
    pub reads: usize,
    /// The longest read of adjacent blobs: [`MAX_READ`] when a read is held whole, longer
    /// when it is taken as it arrives (an object store's: see [`crate::store::Arriving`]).
    pub max_read: u64,
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

/// An entry of the snapshot a restore left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unrestored {
    /// Its path relative to the restore target.
    pub path: String,
    /// Why, in one sentence.
    pub reason: String,
}

/// Why a restore stopped, naming the path or pack.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the restore target")]
    Target(#[source] std::io::Error),
    #[error("the restore was cancelled")]
    Cancelled,
    #[error("cannot read pack {pack}")]
    ReadPack {
        pack: String,
        #[source]
        source: Box<StoreError>,
    },
}

type Result<T> = std::result::Result<T, RestoreError>;

/// Whether an error of the target's file system stops the whole restore (no entry after it
/// could be written either) rather than leaving one entry out.
fn stops_everything(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EIO)
    )
}

fn io_stop(what: &'static str, path: &Path, e: std::io::Error) -> RestoreError {
    RestoreError::Io {
        what,
        path: path.to_owned(),
        source: e,
    }
}

/// One blob of one file.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// The pack's number in the index.
    pack: u32,
    /// Where the encrypted blob is in the pack, and its length.
    offset: u32,
    length: u32,
    /// Its length once decompressed (0: stored uncompressed).
    uncompressed: u32,
    file: u32,
    file_offset: u64,
}

/// A blob pass 2 could not write: which piece, and why (completing "the blob …").
#[derive(Debug)]
struct Damage {
    piece: Piece,
    what: &'static str,
}

/// Entries left out: the first [`LISTED`], and how many.
#[derive(Debug, Default)]
pub(crate) struct LeftOut {
    pub listed: Vec<Unrestored>,
    pub count: u64,
}

impl LeftOut {
    fn add(&mut self, path: &Path, reason: String) {
        log::warn!("restore: {} left out: {reason}", path.display());
        self.count += 1;
        if self.listed.len() < LISTED {
            self.listed.push(Unrestored {
                path: path.display().to_string(),
                reason,
            });
        }
    }
}

/// The state of the tree walk shared by the passes.
pub(crate) struct Restorer<'a> {
    index: &'a BlobIndex,
    beneath: Beneath,
    /// Files of this batch (relative to the target).
    files: Vec<PathBuf>,
    /// Other names given this batch to the files above: (file, name).
    links: Vec<(u32, PathBuf)>,
    pieces: Vec<Piece>,
    /// First path of each (device, inode) with several links; its file number, if planned
    /// in this batch.
    inodes: HashMap<(u64, u64), (PathBuf, Option<u32>)>,
    /// A directory that could not be made: what is under it is left out with it.
    skipping: Option<PathBuf>,
    /// Files of this batch with a blob in no index: (file, blob).
    missing: Vec<(u32, String)>,
    written: Written,
    /// Bytes planned in this batch.
    batch_bytes: u64,
    pub(crate) left_out: LeftOut,
}

impl<'a> Restorer<'a> {
    pub(crate) fn new(index: &'a BlobIndex, beneath: Beneath) -> Self {
        Self {
            index,
            beneath,
            files: Vec::new(),
            links: Vec::new(),
            pieces: Vec::new(),
            inodes: HashMap::new(),
            skipping: None,
            missing: Vec::new(),
            written: Written::default(),
            batch_bytes: 0,
            left_out: LeftOut::default(),
        }
    }

    /// Pass 1: creates `path` (relative to the target) for `node`, and plans its contents.
    /// An entry the target cannot hold is left out (listed); a full or read-only target stops
    /// the restore.
    pub(crate) fn lay_out(&mut self, path: &Path, node: &Node) -> Result<()> {
        if let Some(dir) = &self.skipping {
            if path.starts_with(dir) {
                return Ok(());
            }
            self.skipping = None;
        }
        match self.make(path, node) {
            Ok(()) => Ok(()),
            Err(e) if stops_everything(&e) => Err(io_stop("create", path, e)),
            Err(e) => {
                let what = match &node.node_type {
                    NodeType::Dir => {
                        self.skipping = Some(path.to_path_buf());
                        "the directory cannot be created here, nor anything in it"
                    }
                    NodeType::Symlink { .. } => "the symlink cannot be created here",
                    NodeType::File => "the file cannot be created here",
                    _ => "it cannot be created here",
                };
                self.left_out.add(path, format!("{what}: {e}"));
                Ok(())
            }
        }
    }

    fn make(&mut self, path: &Path, node: &Node) -> std::io::Result<()> {
        let b = &mut self.beneath;
        match &node.node_type {
            NodeType::Dir => {
                b.make_dir(path)?;
                self.written.dirs += 1;
            }
            NodeType::File => {
                let key = (node.meta.device_id, node.meta.inode);
                let linked = node.meta.links > 1 && node.meta.inode != 0;
                if linked && let Some((first, planned)) = self.inodes.get(&key) {
                    b.hard_link(first, path)?;
                    if let Some(file) = planned {
                        self.links.push((*file, path.to_path_buf()));
                    }
                    self.written.files += 1;
                    return Ok(());
                }
                b.create_file(path, node.meta.size)?;
                self.written.files += 1;
                let index = u32::try_from(self.files.len())
                    .map_err(|_| std::io::Error::other("more than 2^32 files in one batch"))?;
                if linked {
                    self.inodes.insert(key, (path.to_path_buf(), Some(index)));
                }
                self.files.push(path.to_path_buf());
                let mut offset = 0u64;
                for id in node.content.iter().flatten() {
                    let blob = crate::id::BlobId::from_rustic(**id);
                    let Some(loc) = self.index.get(&blob) else {
                        // Planned with what it has; the missing blob leaves the file out.
                        self.left_out_later(index, blob.to_string());
                        continue;
                    };
                    self.pieces.push(Piece {
                        pack: loc.pack,
                        offset: loc.offset,
                        length: loc.length,
                        uncompressed: loc.uncompressed,
                        file: index,
                        file_offset: offset,
                    });
                    offset += u64::from(if loc.uncompressed != 0 {
                        loc.uncompressed
                    } else {
                        loc.length.saturating_sub(32)
                    });
                }
                self.batch_bytes += offset;
            }
            NodeType::Symlink { .. } => b.symlink(path, node.node_type.to_link())?,
            NodeType::Fifo => b.special(path, SFlag::S_IFIFO, 0)?,
            NodeType::Dev { device } => b.special(path, SFlag::S_IFBLK, *device)?,
            NodeType::Chardev { device } => b.special(path, SFlag::S_IFCHR, *device)?,
            // Sockets belong to the process that made them; restic does not restore them.
            NodeType::Socket => {}
        }
        Ok(())
    }

    /// A blob of file `index` is in no index: the file is left out once pass 2 is done.
    fn left_out_later(&mut self, index: u32, blob: String) {
        self.missing.push((index, blob));
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
    /// blobs with `opts.readers` threads, leaves out (removes and lists) the files holding a
    /// damaged or missing blob, then forgets the plan.
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
        let reads = cut_reads(&pieces, opts.max_read);
        let stage = progress.stage("restoring", Unit::Bytes);
        stage.set_total(self.written.bytes + self.batch_bytes);
        let readers = opts.readers.max(1);
        let stretches = Stretches::new(reads.len(), readers);
        let failure: Mutex<Option<RestoreError>> = Mutex::new(None);
        let damage: Mutex<Vec<Damage>> = Mutex::new(Vec::new());
        let files = &self.files;
        let index = self.index;
        let stop = cancel.child_token();
        let mut handles = Vec::with_capacity(readers);
        for _ in 0..readers {
            handles.push(self.beneath.try_clone().map_err(RestoreError::Target)?);
        }
        // Each reader keeps `ahead` reads in flight: it asks for the next ones before it
        // decrypts and writes the one that arrived.
        let ahead = opts.reads.max(readers).div_ceil(readers);
        std::thread::scope(|scope| {
            for (me, beneath) in handles.into_iter().enumerate() {
                let (stretches, reads, pieces) = (&stretches, &reads, &pieces);
                let (stop, failure, damage, stage) = (&stop, &failure, &damage, &stage);
                scope.spawn(move || {
                    let mut reader = Reader {
                        opener: Opener::default(),
                        file: None,
                        beneath,
                    };
                    let mut asked: VecDeque<(usize, Asked)> = VecDeque::with_capacity(ahead);
                    while !stop.is_cancelled() {
                        while asked.len() < ahead
                            && let Some(i) = stretches.next(me)
                        {
                            asked.push_back((i, ask(store, rt, index, &pieces[reads[i].clone()])));
                        }
                        let Some((i, read)) = asked.pop_front() else {
                            return;
                        };
                        let group = &pieces[reads[i].clone()];
                        let outcome = reader
                            .write_read(group, read.wait(rt), rt, key, files, index, damage)
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
            return Err(RestoreError::Cancelled);
        }
        self.leave_out_damaged(damage.into_inner().unwrap_or_else(|p| p.into_inner()))?;
        self.written.bytes += self.batch_bytes;
        self.batch_bytes = 0;
        self.files.clear();
        self.links.clear();
        for (_, planned) in self.inodes.values_mut() {
            *planned = None;
        }
        Ok(self.written)
    }

    /// Removes and lists the files of this batch that hold a damaged or missing blob, with
    /// their other names.
    fn leave_out_damaged(&mut self, damage: Vec<Damage>) -> Result<()> {
        let mut reasons: HashMap<u32, String> = HashMap::new();
        for (file, blob) in std::mem::take(&mut self.missing) {
            reasons.entry(file).or_insert_with(|| {
                format!("its blob {blob} is in no index of the repository; the file is left out")
            });
        }
        for d in damage {
            reasons.entry(d.piece.file).or_insert_with(|| {
                let pack = self.index.pack_id(d.piece.pack);
                let blob = self
                    .index
                    .blob_at(d.piece.pack, d.piece.offset)
                    .map_or_else(|| "a blob".to_string(), |b| format!("blob {b}"));
                format!(
                    "its data is damaged in the repository: {blob} at offset {} of pack {pack} {}; the file is left out",
                    d.piece.offset, d.what
                )
            });
        }
        let files: BTreeSet<u32> = reasons.keys().copied().collect();
        for file in files {
            let reason = reasons.remove(&file).expect("listed above");
            let path = self.files[file as usize].clone();
            let names = std::iter::once(path).chain(
                self.links
                    .iter()
                    .filter(|(f, _)| *f == file)
                    .map(|(_, p)| p.clone()),
            );
            for name in names.collect::<Vec<_>>() {
                match self.beneath.remove_file(&name) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_stop("remove the damaged file", &name, e)),
                }
                self.written.files = self.written.files.saturating_sub(1);
                self.left_out.add(&name, reason.clone());
            }
        }
        Ok(())
    }

    /// Pass 3 for `path` (relative to the target; empty: the target itself) from `node`:
    /// owner, mode, extended attributes, times. Failures to set an owner without privileges
    /// are ignored, as restic does; others are warnings in the log. An entry left out has
    /// nothing to set.
    pub(crate) fn set_metadata(&mut self, path: &Path, node: &Node) {
        let kind = match node.node_type {
            NodeType::Dir => Kind::Dir,
            NodeType::File => Kind::File,
            NodeType::Symlink { .. } => Kind::Symlink,
            NodeType::Socket => return,
            _ => Kind::Other,
        };
        let meta = &node.meta;
        let xattrs: Vec<(&OsStr, &[u8])> = meta
            .extended_attributes
            .iter()
            .map(|x| {
                (
                    OsStr::new(x.name.as_str()),
                    x.value.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let spec = |t: jiff::Timestamp| {
            nix::sys::time::TimeSpec::new(t.as_second(), i64::from(t.subsec_nanosecond().max(0)))
        };
        let entry = EntryMeta {
            uid: meta.uid,
            gid: meta.gid,
            mode: meta.mode.map(unix_mode),
            xattrs: &xattrs,
            times: meta
                .mtime
                .map(|mtime| (spec(meta.atime.unwrap_or(mtime)), spec(mtime))),
        };
        match self.beneath.set_metadata(path, kind, &entry) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("restore {}: {e}", path.display()),
        }
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

/// Index ranges of `pieces` (sorted by pack and offset) that are read together: adjacent
/// blobs of one pack, at most `max_read` bytes unless a single blob is larger.
fn cut_reads(pieces: &[Piece], max_read: u64) -> Vec<std::ops::Range<usize>> {
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
            && end - u64::from(first.offset) <= max_read;
        if !joins {
            reads.push(start..i);
            start = i;
        }
    }
    reads
}

/// Asks for the span of one pack that holds `group`'s blobs.
fn ask(store: &Store, rt: &Handle, index: &BlobIndex, group: &[Piece]) -> Asked {
    let first = group[0];
    let start = u64::from(first.offset);
    let end = group
        .iter()
        .map(|p| u64::from(p.offset) + u64::from(p.length))
        .max()
        .unwrap_or(start);
    let pack = index.pack_id(first.pack).to_string();
    store.ask(rt, FileKind::Pack, pack, Some((start, end - start)))
}

/// A reader thread's buffers, its handles on the target and its last opened file, kept from
/// read to read: most reads write blobs of one file, and each blob is up to 8 MiB.
struct Reader {
    opener: Opener,
    file: Option<(u32, File)>,
    beneath: Beneath,
}

impl Reader {
    /// Writes the blobs of one read (`data`: the span of a pack they are in as it arrives, or
    /// why it could not be read); returns the bytes written. A blob that does not open, or a
    /// pack that is missing or short, is damage (listed, the read goes on); a store that
    /// fails otherwise, or a target that cannot be written, stops.
    #[allow(clippy::too_many_arguments)]
    fn write_read(
        &mut self,
        group: &[Piece],
        data: std::result::Result<Arriving, StoreError>,
        rt: &Handle,
        key: &MasterKey,
        files: &[PathBuf],
        index: &BlobIndex,
        damage: &Mutex<Vec<Damage>>,
    ) -> Result<u64> {
        let damaged = |piece: Piece, what: &'static str| {
            damage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Damage { piece, what });
        };
        let store_failed = |source: StoreError| RestoreError::ReadPack {
            pack: index.pack_id(group[0].pack).to_string(),
            source: Box::new(source),
        };
        let mut span = match data {
            Ok(arriving) => Span {
                arriving,
                cur: Bytes::new(),
                at: u64::from(group[0].offset),
            },
            Err(e) if e.is_not_found() => {
                for piece in group {
                    damaged(*piece, "is in a pack missing from the repository");
                }
                return Ok(0);
            }
            Err(e) => return Err(store_failed(e)),
        };
        let mut written = 0u64;
        let mut last: Option<(u32, u32)> = None;
        // The outcome of opening the last blob: a blob in two files is opened once.
        let mut last_err: Option<&'static str> = None;
        for piece in group {
            let here = (piece.offset, piece.length);
            if last != Some(here) {
                last = Some(here);
                let from = u64::from(piece.offset);
                let sealed = span
                    .take(from, from + u64::from(piece.length), rt)
                    .map_err(store_failed)?;
                last_err = match sealed {
                    None => Some("is past the end of the pack"),
                    Some(sealed) => match self.opener.open(key, &sealed, piece.uncompressed) {
                        Ok(_) => None,
                        Err(crate::crypto::OpenError::Decrypt) => Some("does not decrypt"),
                        Err(crate::crypto::OpenError::Decompress(_)) => Some("does not decompress"),
                    },
                };
            }
            if let Some(what) = last_err {
                damaged(*piece, what);
                continue;
            }
            let blob = self.opener.last();
            if blob.iter().any(|&b| b != 0) {
                let path = &files[piece.file as usize];
                if self.file.as_ref().is_none_or(|(f, _)| *f != piece.file) {
                    self.file = None;
                    let file = self
                        .beneath
                        .open_file(path)
                        .map_err(|e| io_stop("open", path, e))?;
                    self.file = Some((piece.file, file));
                }
                let (_, file) = self.file.as_ref().expect("opened above");
                file.write_all_at(blob, piece.file_offset)
                    .map_err(|e| io_stop("write", path, e))?;
            }
            written += blob.len() as u64;
        }
        Ok(written)
    }
}

/// One read of a pack, taken blob by blob as it arrives: `cur` holds the pack's bytes from
/// offset `at` that have arrived and are not yet passed.
struct Span {
    arriving: Arriving,
    cur: Bytes,
    at: u64,
}

impl Span {
    /// Bytes `from..to` of the pack, without a copy when one chunk holds them; `None` when the
    /// read ends first (a pack shorter than its index says), or when `from` is before the
    /// previous call's (pieces come sorted by offset, so only a bug would ask).
    fn take(
        &mut self,
        from: u64,
        to: u64,
        rt: &Handle,
    ) -> std::result::Result<Option<Bytes>, StoreError> {
        while self.at + self.cur.len() as u64 <= from {
            self.at += self.cur.len() as u64;
            self.cur = match self.arriving.next(rt) {
                Some(chunk) => chunk?,
                None => return Ok(None),
            };
        }
        if from < self.at {
            return Ok(None);
        }
        self.cur = self.cur.slice((from - self.at) as usize..);
        self.at = from;
        let len = (to - from) as usize;
        if self.cur.len() < len {
            let mut joined = Vec::with_capacity(len);
            joined.extend_from_slice(&self.cur);
            while joined.len() < len {
                match self.arriving.next(rt) {
                    Some(chunk) => joined.extend_from_slice(&chunk?),
                    None => {
                        self.cur = Bytes::from(joined);
                        return Ok(None);
                    }
                }
            }
            self.cur = Bytes::from(joined);
        }
        Ok(Some(self.cur.slice(..len)))
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
        assert_eq!(cut_reads(&pieces, MAX_READ), vec![0..3, 3..4, 4..5, 5..6]);
        assert_eq!(cut_reads(&pieces, 64 << 20), vec![0..3, 3..4, 4..6]);
        assert!(cut_reads(&[], MAX_READ).is_empty());
    }

    #[test]
    fn a_span_gives_blobs_across_chunks_and_refuses_what_is_not_there() {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let pack: Vec<u8> = (0..100u8).collect();
        // The read starts at offset 10 of the pack and arrives in chunks of 7 bytes.
        let chunks: Vec<_> = pack[10..60]
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut span = Span {
            arriving: Arriving::Chunks(Box::pin(futures::stream::iter(chunks))),
            cur: Bytes::new(),
            at: 10,
        };
        let mut take = |from, to| span.take(from, to, rt.handle()).expect("no store error");
        assert_eq!(take(10, 12).as_deref(), Some(&pack[10..12]));
        assert_eq!(
            take(15, 40).as_deref(),
            Some(&pack[15..40]),
            "joined across chunks"
        );
        assert_eq!(
            take(15, 40).as_deref(),
            Some(&pack[15..40]),
            "the same blob again"
        );
        // An index that puts a blob over the one before it gets the bytes it names (which
        // then do not decrypt); nothing is read twice or backwards.
        assert_eq!(take(30, 45).as_deref(), Some(&pack[30..45]));
        assert_eq!(
            take(20, 25),
            None,
            "before the last blob taken: pieces are sorted"
        );
        assert_eq!(take(45, 60).as_deref(), Some(&pack[45..60]));
        // Past the end of the read (a pack shorter than its index says).
        assert_eq!(take(58, 70), None);

        let mut whole = Span {
            arriving: Arriving::Whole(Some(Bytes::copy_from_slice(&pack))),
            cur: Bytes::new(),
            at: 0,
        };
        assert_eq!(
            whole.take(90, 100, rt.handle()).expect("read").as_deref(),
            Some(&pack[90..100])
        );
        assert_eq!(whole.take(99, 101, rt.handle()).expect("read"), None);
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
