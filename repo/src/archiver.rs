//! Our backup pipeline: a directory tree into restic-format packs, trees and index files.
//!
//! This file assembles the pipeline ([`archive`]); each stage is a type of its own, in its own
//! file: [`walk`] (walkers), [`parent`] (the parent snapshot comparison), [`file_worker`]
//! (read, chunk, hash, compress, seal), [`tree`] (trees written as directories complete),
//! [`packer`] (packs filled and finished, in [`crate::pack`]'s format) and [`upload`] (packs
//! and index files to the store).
//!
//! ```text
//!  walkers (one per core) ── files to read (bounded) ──▶ workers (one per core)
//!   │ readdir, lstat, parent comparison              read, chunk (restic's Rabin), SHA-256,
//!   │ unchanged files keep their parent's content    dedup, zstd, AES-CTR/Poly1305, own pack
//!   │ subdirectories onto a shared stack                       │ full packs (bounded in flight)
//!   ▼                                                          ▼
//!  pending directories: a tree is written when its     uploads on the runtime ──▶ index files
//!  last child is done (on whichever thread did it)
//! ```
//!
//! A tree's nodes keep their slots in name order whichever thread finishes them, so the
//! trees (and their ids) do not depend on the order the threads ran in.
//!
//! Memory is bounded by configuration: the walkers are at most [`QUEUE`] files ahead of the
//! workers; each worker holds one chunk (≤ 8 MiB), its sealed copy and one pack being filled;
//! at most [`BackupBuffers::uploads`] finished packs are in flight: how many workers, uploads
//! and how large a pack is what the memory budget allows ([`crate::budget`]). Directories wait in memory only until
//! their last child is done, so what is held is the directories along the walks and the
//! siblings listed beside them, not the tree.
//!
//! Order of writes (what makes an interrupted backup harmless): packs, then the index files
//! naming them, then — by the caller — the snapshot. A crash leaves at most packs no index
//! names (restic's `check` calls them additional files; `prune` removes them), and a retry
//! deduplicates against every pack whose index file was written.

mod file_worker;
mod packer;
mod parent;
mod tree;
mod upload;
mod walk;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::budget::BackupBuffers;
use crate::chunker::Rabin;
use crate::crypto::MasterKey;
use crate::id::{BlobId, TreeId};
use crate::index::{BlobError, BlobIndex, IdSet, IndexWriter};
use crate::pack::PackError;
use crate::progress::{Progress, Stage, Unit};
use crate::source::Warnings;
use crate::store::{Store, StoreError};

use file_worker::{FileWorker, Job};
pub(crate) use packer::Packer;
use packer::{Spare, Spares};
use walk::{BATCH_FILES, Dirs, Walker};

/// Files the walker may be ahead of the workers.
const QUEUE: usize = 1024;

/// What the archiver needs from the repository.
pub(crate) struct Env {
    pub store: Store,
    pub rt: Handle,
    pub key: MasterKey,
    pub version: u32,
    pub rabin: Rabin,
    /// zstd level (version 2 repositories).
    pub level: i32,
    /// Workers, pack size and uploads.
    pub buffers: BackupBuffers,
    pub cancel: CancellationToken,
    pub progress: Arc<dyn Progress>,
    pub warnings: Warnings,
}

/// What to back up.
pub(crate) struct Plan<'a> {
    /// The source on disk (canonical).
    pub source: &'a Path,
    /// Its path in the snapshot.
    pub stored: &'a Path,
    /// The parent snapshot's root tree.
    pub parent: Option<TreeId>,
}

/// What a backup did: restic's summary counters, counted from every thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub files_new: AtomicU64,
    pub files_changed: AtomicU64,
    pub files_unmodified: AtomicU64,
    pub dirs_new: AtomicU64,
    pub dirs_changed: AtomicU64,
    pub dirs_unmodified: AtomicU64,
    pub bytes_processed: AtomicU64,
    pub data_blobs: AtomicU64,
    pub tree_blobs: AtomicU64,
    pub data_added: AtomicU64,
    pub data_added_packed: AtomicU64,
    pub trees_added: AtomicU64,
    pub trees_added_packed: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Why a backup stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("the backup was cancelled")]
    Cancelled,
    #[error(transparent)]
    Store(StoreError),
    /// A pack's header did not verify after it was sealed.
    #[error(transparent)]
    Pack(PackError),
    /// A tree of the parent snapshot could not be read.
    #[error("cannot read the parent snapshot's tree")]
    ParentTree {
        tree: TreeId,
        // Boxed, as the other large causes: every stage's result carries this type.
        #[source]
        source: Box<BlobError>,
    },
    /// A tree of the parent snapshot is not a tree.
    #[error("the parent snapshot's tree {tree} does not parse")]
    ParentTreeParse {
        tree: TreeId,
        #[source]
        source: serde_json::Error,
    },
    /// The path to store the backup as has no last component (`/`).
    #[error("the stored path has no name")]
    StoredPathNoName,
    /// Every file worker stopped while the walkers still had files for them.
    #[error("the backup's workers stopped")]
    WorkersStopped,
    /// The walk ended without the root's tree: the pipeline lost a directory.
    #[error("the backup ended before its root tree was written; this is a bug")]
    NoRootTree,
}

/// State shared by the walker, the workers and the uploads.
struct Shared<'e> {
    env: &'e Env,
    index: &'e BlobIndex,
    /// Blobs written by this backup.
    seen: IdSet,
    trees: Mutex<Packer>,
    counters: Counters,
    stage: Box<dyn Stage>,
    /// Cancelled by the caller or by the first failure.
    stop: CancellationToken,
    failure: Arc<Mutex<Option<Failure>>>,
    uploads: Arc<tokio::sync::Semaphore>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    written: Arc<Mutex<IndexWriter>>,
    spare: Spare,
    root: Mutex<Option<TreeId>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared<'_> {
    /// Claims `id` for this backup: false if the repository or this backup has it already.
    fn claim(&self, id: &BlobId) -> bool {
        !self.index.contains(id) && self.seen.insert(id)
    }
}

/// Backs up `plan.source` into packs, trees and index files; returns the root tree and the
/// counters. Runs on the calling thread plus `env.buffers.workers` workers and as many walkers
/// (the calling thread is one); blocks on `env.rt` only for storage.
pub(crate) fn archive(
    env: &Env,
    index: &BlobIndex,
    plan: &Plan<'_>,
) -> Result<(TreeId, Counters), Failure> {
    let stop = env.cancel.child_token();
    let buffers = env.buffers;
    // Of each pack buffer: the pack's target size, the last blob that may pass it (a chunk
    // at most), then the header.
    let spare = Spares::shared(buffers.pack_size + env.rabin.max_size() + (1 << 20));
    let shared = Shared {
        env,
        index,
        seen: IdSet::default(),
        trees: Mutex::new(Packer::new(true, spare.clone(), buffers.pack_size)),
        counters: Counters::default(),
        stage: env.progress.stage("backing up", Unit::Bytes),
        stop: stop.clone(),
        failure: Arc::new(Mutex::new(None)),
        uploads: Arc::new(tokio::sync::Semaphore::new(buffers.uploads)),
        tasks: Mutex::new(Vec::new()),
        written: Arc::new(Mutex::new(IndexWriter::default())),
        spare,
        root: Mutex::new(None),
    };
    let dirs = Dirs::default();
    let walked = std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Job>>(QUEUE / BATCH_FILES);
        let shared = &shared;
        let scanner = scope.spawn(move || scan_total(plan.source, shared));
        for _ in 0..buffers.workers.max(1) {
            let rx = rx.clone();
            scope.spawn(move || FileWorker::new(shared).run(&rx));
        }
        drop(rx);
        let dirs = &dirs;
        let walker = |jobs| Walker::new(shared, dirs, jobs);
        let mut first = walker(tx.clone());
        match first.top(plan) {
            Ok(()) => {
                let others: Vec<_> = (1..buffers.workers.max(1))
                    .map(|_| {
                        let mut w = walker(tx.clone());
                        scope.spawn(move || w.run())
                    })
                    .collect();
                first.run();
                for w in others {
                    let _ = w.join();
                }
            }
            Err(f) => dirs.fail(f, &stop),
        }
        drop((first, tx));
        let _ = scanner.join();
        lock(&dirs.failure).take().map_or(Ok(()), Err)
    });
    // Workers have flushed their packs; the trees' pack is last.
    if walked.is_ok() && !stop.is_cancelled() {
        shared.upload(&mut lock(&shared.trees));
    }
    shared.wait_uploads();
    shared.stage.finish();
    // The caller's cancel first, then the first failure, then the walker's own result.
    if env.cancel.is_cancelled() {
        return Err(Failure::Cancelled);
    }
    if let Some(f) = lock(&shared.failure).take() {
        return Err(f);
    }
    walked?;
    shared.write_last_index()?;
    let root = lock(&shared.root).take().ok_or(Failure::NoRootTree)?;
    Ok((root, shared.counters))
}

/// Sums the sizes of the source's files for the progress total, beside the backup, at a
/// lower priority than the backup's own threads: it repeats the walkers' `readdir` and
/// `lstat` (about a third of a core while they walk many small files). Until it is done,
/// progress has no total.
fn scan_total(source: &Path, shared: &Shared<'_>) {
    lower_priority();
    let mut total = 0u64;
    let mut dirs = vec![source.to_path_buf()];
    if let Ok(m) = source.symlink_metadata()
        && !m.is_dir()
    {
        total = m.len();
        dirs.clear();
    }
    while let Some(dir) = dirs.pop() {
        if shared.stop.is_cancelled() {
            return;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    shared.stage.set_total(total);
}

/// Gives the calling thread a nice value of 10 (on Linux a thread's own: `setpriority` on a
/// thread id); failure is harmless (the thread runs at its normal priority).
fn lower_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}
