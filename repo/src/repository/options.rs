//! What callers pass to the repository's operations and what they get back: options,
//! statistics and reports, and the [`Context`] every operation carries.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::budget::MemoryBudget;
use crate::error::{Error, Result};
use crate::id::{PackId, SnapshotId};
use crate::location::Location;
use crate::lock::LockOptions;
use crate::progress::{NoProgress, Progress};
use crate::restorer::Unrestored;
use crate::snapshot::{Snapshot, SnapshotFilter};
use crate::source::Warning;
use crate::store::{StoreOptions, TrafficCount};

/// How a repository is accessed.
#[derive(Debug, Clone)]
pub struct RepositoryOptions {
    pub store: StoreOptions,
    pub lock: LockOptions,
    /// Ranged pack reads in flight during restore and check (`None`: [`default_pack_reads`],
    /// or `LIFEBOAT_PACK_READS`). Requests to a remote store cost a round trip each, so its
    /// reads must overlap: at 20 ms, one 8 MiB read at a time restores a few hundred MiB/s
    /// at best, whatever the cores.
    pub pack_reads: Option<usize>,
    /// The process's memory budget, shared by its backups and restores (`None`: every core,
    /// restic's 16 MiB packs, two uploads, whatever the index takes). See [`MemoryBudget`].
    pub memory: Option<MemoryBudget>,
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        Self {
            store: StoreOptions::default(),
            lock: LockOptions::default(),
            pack_reads: pack_reads_from_env(),
            memory: None,
        }
    }
}

/// Ranged pack reads in flight on `location` unless configured: one per core (2 to 8) on a
/// local disk, whose reads cost no round trip; 8 on an object store, where each read first
/// waits a round trip and, taken as it arrives, holds a connection's buffers rather than its
/// length (the bench: a restore of 5,000 small files at 80 ms in twice its time without
/// latency, restic's in five times).
pub fn default_pack_reads(location: &Location) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    match location {
        Location::Local(_) => cores.clamp(2, 8),
        _ => 8,
    }
}

/// Finished packs a backup uploads at once on `location`: two on a local disk, whose writes
/// cost no round trip; four on an object store, where each upload also waits out round trips
/// (and the trees' pack, last, need not wait for the final data packs). Each costs a pack in
/// the backup's buffers ([`crate::budget::BackupBuffers::mib`]); a budget too small gets fewer.
pub(super) fn default_uploads(location: &Location) -> usize {
    match location {
        Location::Local(_) => 2,
        _ => 4,
    }
}

/// `LIFEBOAT_PACK_READS`: a number from 1 to 64, or unset (said once when it is not).
fn pack_reads_from_env() -> Option<usize> {
    let text = std::env::var("LIFEBOAT_PACK_READS").ok()?;
    match text.trim().parse::<usize>() {
        Ok(n @ 1..=64) => Some(n),
        _ => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                log::warn!(
                    "LIFEBOAT_PACK_READS={text:?} is not a number from 1 to 64; using the store's default"
                );
            });
            None
        }
    }
}

/// What every operation may carry: progress reporting and cancellation.
#[derive(Debug, Clone)]
pub struct Context {
    pub progress: Arc<dyn Progress>,
    pub cancel: CancellationToken,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            progress: Arc::new(NoProgress),
            cancel: CancellationToken::new(),
        }
    }
}

/// Which snapshot a backup compares against to skip unchanged files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest snapshot with the same host and paths, as restic chooses.
    #[default]
    Auto,
    /// No parent: read every file.
    None,
    /// This snapshot (`latest`, an id or an id prefix), whatever its host and paths.
    Snapshot(String),
}

/// Options of a backup.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Tags of the snapshot (`key=value` by convention).
    pub tags: Vec<String>,
    /// The snapshot's host name; this machine's by default.
    pub host: Option<String>,
    /// The path stored in the snapshot instead of the source's own path. A pod volume's host
    /// path changes with every pod; its logical path does not, and parents are found by it.
    pub as_path: Option<PathBuf>,
    pub parent: ParentChoice,
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStats {
    pub snapshot: Snapshot,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unchanged: u64,
    /// Bytes of the files looked at (unchanged ones included).
    pub bytes_processed: u64,
    /// Bytes of new data, before compression.
    pub bytes_added: u64,
    /// Bytes written to the repository for that data (compressed, encrypted).
    pub bytes_stored: u64,
    pub duration_secs: f64,
    /// Files that vanished, could not be read, or changed while read.
    pub warnings: Vec<Warning>,
    /// The requests it made to the store.
    pub traffic: TrafficCount,
}

impl BackupStats {
    /// Whether every file listed is in the snapshot (restic's exit code 0 rather than 3).
    pub fn is_complete(&self) -> bool {
        !self.warnings.iter().any(|w| w.left_out)
    }
}

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Among which snapshots `latest` or a prefix is resolved.
    pub filter: SnapshotFilter,
    /// Files or blobs planned before their contents are written (default 262,144: about 30
    /// MiB of plan). Smaller bounds memory further, at the cost of less read locality.
    pub batch: Option<usize>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreStats {
    pub snapshot: SnapshotId,
    /// Files and directories restored (files left out not counted).
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub duration_secs: f64,
    /// Entries left out (damaged data, a name the target cannot hold), the first
    /// thousand; everything else was restored.
    pub unrestored: Vec<Unrestored>,
    /// How many entries were left out in all.
    pub unrestored_count: u64,
    /// The requests it made to the store.
    pub traffic: TrafficCount,
}

impl RestoreStats {
    /// Whether every entry of the snapshot was restored.
    pub fn is_complete(&self) -> bool {
        self.unrestored_count == 0
    }
}

/// Options of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Read every pack, decrypt and hash every blob.
    pub read_data: bool,
}

/// One problem found by check.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub message: String,
    /// The pack concerned, when the problem is in one.
    pub pack: Option<PackId>,
}

/// What check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl CheckReport {
    /// `Err(CheckFailed)` naming the first damaged pack, when there are errors.
    pub fn ensure_ok(&self) -> Result<()> {
        if self.errors.is_empty() {
            return Ok(());
        }
        Err(Error::CheckFailed {
            errors: self.errors.len(),
            pack: self.errors.iter().find_map(|f| f.pack),
        })
    }
}

/// How many snapshots to keep per group (host and paths), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
}

impl KeepPolicy {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Options of forget.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// Snapshots to remove by id or prefix.
    pub ids: Vec<String>,
    /// Or: remove what the policy does not keep, among the snapshots passing `filter`.
    pub keep: KeepPolicy,
    pub filter: SnapshotFilter,
}

/// What forget did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetStats {
    pub removed: Vec<SnapshotId>,
    pub kept: Vec<SnapshotId>,
}

/// What prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneStats {
    pub packs_removed: u64,
    pub packs_repacked: u64,
    pub packs_kept: u64,
    pub bytes_removed: u64,
    pub bytes_repacked: u64,
}
