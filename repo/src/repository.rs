//! The repository: open or create one, and run the operations on it.
//!
//! Design: the data paths are ours — backups ([`crate::archiver`]: restic's chunker, packs and
//! index files), restores ([`crate::restorer`]) and `check --read-data` ([`crate::verify`]).
//! rustic_core provides the rest of the restic format: opening keys, the structural check,
//! forget and prune. This module owns everything around them that makes those safe to call:
//! the storage ([`Store`]), restic's locks ([`crate::lock`]), snapshot and parent selection,
//! the restore path checks, per-file warnings, progress, cancellation and typed errors. The
//! rustic_core types never appear in our public API.
//!
//! Threads: rustic_core is synchronous and spawns its own workers. Each operation therefore runs
//! on one dedicated OS thread (one per operation in flight, never per file), which blocks on the
//! tokio runtime only for storage I/O. Callers await the result on the runtime.
//!
//! Keys: the password is run through scrypt once, at [`Repository::open`]; each operation then
//! reopens rustic_core's view with the master key, which costs one read of `config`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustic_core::repofile::{ConfigFile, MasterKey as RusticKey, Node, SnapshotFile};
use rustic_core::{
    Credentials, Grouped, KeyOptions, OpenStatus, RepositoryBackends, RusticError,
    SnapshotGroupCriterion, SnapshotOptions,
};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::archiver::{self, Failure};
use crate::beneath::Beneath;
use crate::bridge::Bridge;
use crate::budget::{
    BackupBuffers, Hold, INDEX_LOAD_MIB, KEY_MIB, MemoryBudget, RestoreBuffers, mib_of,
};
use crate::chunker::{Rabin, Sizes};
use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::id::{PackId, SnapshotId, TreeId};
use crate::index::{BlobIndex, IndexError};
use crate::location::Location;
use crate::lock::{LockGuard, LockInfo, LockOptions, Locks};
use crate::progress::{Adapter, NoProgress, Progress, Unit};
use crate::restorer::{self, RestoreOptions as RestoreRun, Restorer, Unrestored};
use crate::snapshot::{self, Snapshot, SnapshotFilter};
use crate::source::{Warning, Warnings};
use crate::store::{FileKind, Store, StoreError, StoreOptions, TrafficCount};
use crate::tree::{TreeCache, Trees, WalkError, unsafe_name_in};
use crate::verify;

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
/// the backup's buffers ([`BackupBuffers::mib`]); a budget too small gets fewer.
fn default_uploads(location: &Location) -> usize {
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

/// An open repository. Cheap to clone; clones share nothing mutable.
#[derive(Clone)]
pub struct Repository {
    store: Store,
    key: RusticKey,
    locks: Locks,
    version: u32,
    /// The repository's config as opened (chunker, compression, version), and as stored.
    config: Arc<ConfigFile>,
    sealed_config: bytes::Bytes,
    opts: RepositoryOptions,
    rt: Handle,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Repository({}, v{})",
            self.store.location(),
            self.version
        )
    }
}

/// A failure inside an operation thread: rustic_core's, or one of ours.
enum OpError {
    Rustic(Box<RusticError>),
    Ours(Error),
}

impl From<Box<RusticError>> for OpError {
    fn from(e: Box<RusticError>) -> Self {
        OpError::Rustic(e)
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Ours(e)
    }
}

type OpResult<T> = std::result::Result<T, OpError>;

/// restic's largest chunk by default (a repository's config may say otherwise).
const MAX_CHUNK: u64 = 8 << 20;
/// Index files read at once when a backup loads the index: each is up to ~12 MB while it is
/// decrypted, decompressed and parsed (50,000 blobs), so four fit in [`INDEX_LOAD_MIB`].
const INDEX_READS: usize = 4;
/// Trees kept between a restore's walks, as stored: about 60 bytes a file (measured: 568 KB
/// of trees for 10,000 small files in 113 directories), so the trees of about half a million
/// files; a larger snapshot's walks read the rest again.
const TREE_CACHE_MIB: u32 = 32;
/// Tree reads in flight while a restore checks every name, at least: each is small, so
/// their number, not their size, is what a round trip costs.
const TREE_READS: usize = 32;
/// zstd level of our blobs when the repository asks for the default: level 3 (rustic's and
/// close to restic's `auto`) costs twice level 1's time for a few percent of size.
const ZSTD_LEVEL: i32 = 3;

fn rustic_options() -> rustic_core::RepositoryOptions {
    // No local cache: agents run in short-lived pods, and a stale cache is one more thing
    // to go wrong; indexes and snapshots are read from the store.
    rustic_core::RepositoryOptions::default().no_cache(true)
}

/// Runs `f` (work that reads the store without the format engine) on a thread of its own;
/// the format engine's own errors become ours.
async fn on_engine_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> OpResult<T> + Send + 'static,
) -> Result<T> {
    on_thread(name, f).await?.map_err(|e| match e {
        OpError::Ours(e) => e,
        OpError::Rustic(e) => Error::Engine {
            message: rustic_message(&e),
        },
    })
}

/// Runs `f` on its own OS thread and awaits it without blocking the runtime.
async fn on_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("lifeboat-{name}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::engine(format!("cannot start the {name} thread: {e}")))?;
    rx.await
        .map_err(|_| Error::engine(format!("the {name} operation panicked; this is a bug")))
}

/// rustic_core's error text, without its banner.
fn rustic_message(e: &RusticError) -> String {
    let text = e.display_log();
    let text = text.strip_prefix("Error: ").unwrap_or(&text);
    text.split(" (kind: related to")
        .next()
        .unwrap_or(text)
        .trim()
        .to_string()
}

/// Reserves `mib` of `budget`, waiting for it unless `cancel` fires first.
async fn reserve(budget: &MemoryBudget, mib: u32, cancel: &CancellationToken) -> Result<Hold> {
    tokio::select! {
        hold = budget.reserve(mib) => Ok(hold),
        () = cancel.cancelled() => Err(Error::Cancelled),
    }
}

/// The error when an index of `index_mib` (described by `index`) and the smallest buffers of
/// an `operation` cannot fit in `budget` at all.
fn beyond(
    budget: &MemoryBudget,
    operation: &'static str,
    index: &str,
    index_mib: u32,
    smallest_mib: u32,
) -> Result<()> {
    let needed_mib = index_mib + smallest_mib;
    if needed_mib <= budget.usable() {
        return Ok(());
    }
    Err(Error::MemoryBudget {
        operation,
        what: format!(
            "the repository's index ({index}) and the smallest buffers ({smallest_mib} MiB)"
        ),
        needed_mib,
        budget_mib: budget.mib(),
        usable_mib: budget.usable(),
    })
}

/// [`reserve`] from an operation thread.
fn reserve_blocking(
    rt: &Handle,
    budget: &MemoryBudget,
    mib: u32,
    cancel: &CancellationToken,
) -> Result<Hold> {
    rt.block_on(reserve(budget, mib, cancel))
}

fn store_error(store: &Store, source: StoreError) -> Error {
    Error::store(store.location(), source)
}

impl Repository {
    /// Creates a repository (restic format version 2, zstd compression) at `location`,
    /// protected by `password`. Fails if one exists there already. Must be called on a tokio
    /// runtime.
    pub async fn init(
        location: &Location,
        password: &str,
        opts: RepositoryOptions,
    ) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::NoPassword);
        }
        if let Location::Local(path) = location {
            std::fs::create_dir_all(path).map_err(|source| {
                Error::store(
                    location,
                    StoreError::Io {
                        path: path.display().to_string(),
                        source,
                    },
                )
            })?;
        }
        let store = Store::open(location, &opts.store)?;
        store.create().await.map_err(|e| store_error(&store, e))?;
        let (probe, config) = tokio::join!(store.probe(), store.size(FileKind::Config, ""));
        if let Err(source) = probe {
            return Err(Error::BucketMissing {
                location: location.to_string(),
                source: Box::new(source),
            });
        }
        if config.map_err(|e| store_error(&store, e))?.is_some() {
            return Err(Error::AlreadyInitialized {
                location: location.to_string(),
            });
        }
        let rt = Handle::current();
        let bridge = Bridge::new(
            store.clone(),
            rt.clone(),
            CancellationToken::new(),
            opts.pack_reads
                .unwrap_or_else(|| default_pack_reads(location)),
        );
        let b = bridge.clone();
        // The format engine writes the config under a fresh master key; the key file is ours
        // (see `crypto::key_file` for its scrypt parameters). The key is written last: a
        // crash in between leaves a config no password opens, and init can be retried after
        // removing it.
        let master = RusticKey::new();
        let m = master.clone();
        let res = on_thread("init", move || -> OpResult<ConfigFile> {
            let backends = RepositoryBackends::new(Arc::new(b), None);
            let config = rustic_core::ConfigOptions::default().set_version(2u32);
            let repo = rustic_core::Repository::new(&rustic_options(), &backends)?.init(
                &Credentials::Masterkey(m),
                &KeyOptions::default(),
                &config,
            )?;
            Ok(repo.config().clone())
        })
        .await?;
        let config = res.map_err(|e| Self::op_error(e, &store, &bridge, None))?;
        let (name, bytes) = crypto::key_file(&master, password);
        store
            .write(FileKind::Key, &name, vec![bytes.into()])
            .await
            .map_err(|e| store_error(&store, e))?;
        // The config as stored, for the format engine's later opens (see `Bridge::with_config`).
        let sealed = bridge.written_config().ok_or_else(|| {
            Error::engine("the format engine created the repository without writing its config")
        })?;
        let key = master;
        Ok(Self::assemble(store, key, (config, sealed), opts, rt))
    }

    /// Opens the repository at `location` with `password`. Must be called on a tokio runtime.
    pub async fn open(
        location: &Location,
        password: &str,
        opts: RepositoryOptions,
    ) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::NoPassword);
        }
        if let Location::Local(path) = location
            && !path.join("config").is_file()
        {
            return Err(Error::NoRepository {
                location: location.to_string(),
            });
        }
        let store = Store::open(location, &opts.store)?;
        // The config and the key files' names together, then every key file together: two
        // round trips before the key is derived (the format engine's open took five, one
        // after the other, which over an 80 ms link was half a small job's time).
        let (config, keys) =
            tokio::join!(store.read(FileKind::Config, ""), store.list(FileKind::Key));
        let sealed_config = match config {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => {
                return Err(match store.probe().await {
                    Err(source) if !matches!(location, Location::Local(_)) => {
                        Error::BucketMissing {
                            location: location.to_string(),
                            source: Box::new(source),
                        }
                    }
                    _ => Error::NoRepository {
                        location: location.to_string(),
                    },
                });
            }
            Err(e) => return Err(store_error(&store, e)),
        };
        let key_files: Vec<(String, bytes::Bytes)> = {
            use futures::{StreamExt, TryStreamExt};
            let names = keys.map_err(|e| store_error(&store, e))?;
            futures::stream::iter(names)
                .map(|(name, _)| {
                    let store = &store;
                    async move {
                        Ok::<_, StoreError>((name.clone(), store.read(FileKind::Key, &name).await?))
                    }
                })
                .buffered(8)
                .try_collect()
                .await
                .map_err(|e| store_error(&store, e))?
        };
        // Deriving the key from the password holds scrypt's table: several jobs opening at
        // once (an agent's volumes) would otherwise hold one each beside the others' buffers.
        let _deriving = match &opts.memory {
            None => Hold::none(),
            Some(budget) => reserve(budget, KEY_MIB, &CancellationToken::new()).await?,
        };
        let password = password.to_string();
        let at = location.to_string();
        // Each key file in turn, as restic tries them; one that is not a key file is passed
        // over (another may open), and named if none does.
        let key = on_thread("open", move || {
            let mut damaged = Vec::new();
            for (name, bytes) in &key_files {
                match crypto::open_key_file(bytes, &password) {
                    Ok(Some(key)) => return Ok(key),
                    Ok(None) => {}
                    Err(why) => damaged.push(format!("{name} ({why})")),
                }
            }
            Err(if key_files.is_empty() || damaged.len() < key_files.len() {
                Error::WrongPassword { location: at }
            } else {
                Error::KeysDamaged {
                    location: at,
                    files: damaged.join(", "),
                }
            })
        })
        .await??;
        let config_damaged = || Error::ConfigDamaged {
            location: location.to_string(),
        };
        let plain = MasterKey::from_rustic(&key)
            .decrypt(&sealed_config)
            .map_err(|_| config_damaged())?;
        let json = crypto::unpack_json(&plain).ok_or_else(config_damaged)?;
        let config: ConfigFile = serde_json::from_slice(&json).map_err(|_| config_damaged())?;
        if !(1..=2).contains(&config.version) {
            return Err(Error::engine(format!(
                "the repository at {location} has format version {}, which lifeboat does not read (1 and 2 are restic's)",
                config.version
            )));
        }
        let rt = Handle::current();
        Ok(Self::assemble(
            store,
            key,
            (config, sealed_config),
            opts,
            rt,
        ))
    }

    fn assemble(
        store: Store,
        key: RusticKey,
        (config, sealed_config): (ConfigFile, bytes::Bytes),
        opts: RepositoryOptions,
        rt: Handle,
    ) -> Self {
        let version = config.version;
        let locks = Locks::new(store.clone(), MasterKey::from_rustic(&key), version);
        Self {
            store,
            key,
            locks,
            version,
            config: Arc::new(config),
            sealed_config,
            opts,
            rt,
        }
    }

    /// Where the repository is.
    pub fn location(&self) -> &Location {
        self.store.location()
    }

    /// The repository format version (1 or 2).
    pub fn version(&self) -> u32 {
        self.version
    }

    fn op_error(
        e: OpError,
        store: &Store,
        bridge: &Bridge,
        cancel: Option<&CancellationToken>,
    ) -> Error {
        match e {
            OpError::Ours(e) => e,
            OpError::Rustic(_) if cancel.is_some_and(CancellationToken::is_cancelled) => {
                Error::Cancelled
            }
            OpError::Rustic(e) if e.is_incorrect_password() => Error::WrongPassword {
                location: store.location().to_string(),
            },
            OpError::Rustic(e) => match bridge.take_error() {
                Some(source) => store_error(store, source),
                None => Error::Engine {
                    message: rustic_message(&e),
                },
            },
        }
    }

    /// Reserves `mib` from the process's budget (nothing without one), waiting while other
    /// operations hold it; cancelled with the operation.
    /// Ranged pack reads in flight: as configured, or the store's default.
    fn pack_reads(&self) -> usize {
        self.opts
            .pack_reads
            .unwrap_or_else(|| default_pack_reads(self.store.location()))
    }

    async fn reserve(&self, mib: u32, ctx: &Context) -> Result<Hold> {
        match &self.opts.memory {
            None => Ok(Hold::none()),
            Some(budget) => reserve(budget, mib, &ctx.cancel).await,
        }
    }

    /// What an index of this repository takes in memory (MiB), from its index files' size:
    /// 48 bytes a blob, which takes about 40 bytes of a compressed (version 2) index file
    /// and 130 of an uncompressed one (measured: two million blobs, 80 MB of index files).
    fn index_estimate(&self, files: &[(String, u64)]) -> u32 {
        let bytes: u64 = files.iter().map(|(_, size)| size).sum();
        mib_of(if self.version >= 2 {
            bytes / 5 * 6
        } else {
            bytes / 5 * 2
        })
    }

    /// The index files: name, size.
    async fn index_files(&self) -> Result<Vec<(String, u64)>> {
        self.store
            .list(FileKind::Index)
            .await
            .map_err(|e| store_error(&self.store, e))
    }

    fn index_error(&self, e: IndexError) -> Error {
        match e {
            IndexError::Store { source, .. } => store_error(&self.store, source),
            IndexError::Damaged(file) => Error::IndexDamaged {
                location: self.location().to_string(),
                file,
            },
        }
    }

    /// Runs `f` on rustic_core's view of the repository, on an operation thread.
    async fn run<T: Send + 'static>(
        &self,
        name: &str,
        ctx: &Context,
        f: impl FnOnce(rustic_core::Repository<OpenStatus>) -> OpResult<T> + Send + 'static,
    ) -> Result<T> {
        let bridge = Bridge::new(
            self.store.clone(),
            self.rt.clone(),
            ctx.cancel.clone(),
            self.pack_reads(),
        )
        .with_config(self.sealed_config.clone());
        let key = self.key.clone();
        let b = bridge.clone();
        let progress = Adapter(ctx.progress.clone());
        let res = on_thread(name, move || {
            let backends = RepositoryBackends::new(Arc::new(b), None);
            let repo =
                rustic_core::Repository::new_with_progress(&rustic_options(), &backends, progress)?
                    .open(&Credentials::Masterkey(key))?;
            f(repo)
        })
        .await?;
        res.map_err(|e| Self::op_error(e, &self.store, &bridge, Some(&ctx.cancel)))
    }

    /// Runs `op` under a lock, releasing it whatever the outcome.
    async fn locked<T>(
        &self,
        exclusive: bool,
        ctx: &Context,
        op: impl AsyncFnOnce(&Context) -> Result<T>,
    ) -> Result<T> {
        self.locked_after(exclusive, ctx, async { Ok(()) }, async |ctx, ()| {
            op(ctx).await
        })
        .await
    }

    /// [`Self::locked`], with `first` run while the lock is taken and its outcome handed to
    /// `op`: reads that need no lock (listings, snapshot files, which are never rewritten)
    /// travel beside the lock's own round trips instead of after them. If `first` fails, the
    /// lock is not waited for and its failure is the operation's.
    async fn locked_after<P, T>(
        &self,
        exclusive: bool,
        ctx: &Context,
        first: impl Future<Output = Result<P>>,
        op: impl AsyncFnOnce(&Context, P) -> Result<T>,
    ) -> Result<T> {
        // The lock may cancel the operation (when it cannot be refreshed), the caller too.
        let op_ctx = Context {
            progress: ctx.progress.clone(),
            cancel: ctx.cancel.child_token(),
        };
        // The lock is never dropped half taken (a lock file written and then forgotten):
        // a failure of `first` stops only its waiting, through the token.
        let first = async {
            let res = first.await;
            if res.is_err() {
                op_ctx.cancel.cancel();
            }
            res
        };
        let (guard, first) = tokio::join!(
            self.locks
                .acquire(exclusive, &self.opts.lock, &op_ctx.cancel),
            first
        );
        let before = match first {
            Ok(before) => before,
            Err(e) => {
                if let Ok(guard) = guard {
                    let _ = guard.release().await;
                }
                return Err(e);
            }
        };
        let guard: LockGuard = guard?;
        let res = op(&op_ctx, before).await;
        let lost = guard.was_lost();
        let released = guard.release().await;
        if lost {
            return Err(Error::LockLost {
                location: self.location().to_string(),
            });
        }
        let value = res?;
        // The operation is done: a lock file left behind (the store failed past its retries)
        // goes stale and is ignored by restic and by us once it is; say so, as restic does.
        if let Err(e) = released {
            log::warn!(
                "{}: the lock could not be removed ({}); it is ignored once stale (30 minutes), or remove it with `lifeboat repo unlock`",
                self.location(),
                crate::error_chain(&e)
            );
        }
        Ok(value)
    }

    /// All snapshots passing `filter`, oldest first.
    /// A snapshot file that does not decrypt or parse fails the listing, naming it.
    pub async fn snapshots(&self, filter: &SnapshotFilter) -> Result<Vec<Snapshot>> {
        use futures::{StreamExt, TryStreamExt};
        let key = MasterKey::from_rustic(&self.key);
        let names = self
            .store
            .list(FileKind::Snapshot)
            .await
            .map_err(|e| store_error(&self.store, e))?;
        let all: Vec<Snapshot> = futures::stream::iter(names)
            .map(|(name, _)| {
                let key = &key;
                async move {
                    let raw = self
                        .store
                        .read(FileKind::Snapshot, &name)
                        .await
                        .map_err(|e| store_error(&self.store, e))?;
                    let damaged = || Error::SnapshotDamaged {
                        location: self.location().to_string(),
                        file: name.clone(),
                    };
                    let plain = key.decrypt(&raw).map_err(|_| damaged())?;
                    let json = crypto::unpack_json(&plain).ok_or_else(damaged)?;
                    let mut file: SnapshotFile =
                        serde_json::from_slice(&json).map_err(|_| damaged())?;
                    let id: rustic_core::Id = name.parse().map_err(|_| damaged())?;
                    file.id = id.into();
                    Ok::<_, Error>(Snapshot::from_rustic(&file))
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut list: Vec<Snapshot> = all.into_iter().filter(|s| filter.matches(s)).collect();
        list.sort_by_key(|s| s.time);
        Ok(list)
    }

    /// Resolves `latest`, an id or a prefix among the snapshots passing `filter`.
    pub async fn find_snapshot(&self, query: &str, filter: &SnapshotFilter) -> Result<Snapshot> {
        let list = self.snapshots(filter).await?;
        snapshot::resolve(&list, query).cloned()
    }

    /// Backs up the directory (or file) `source` into a new snapshot, under a shared lock.
    pub async fn backup(
        &self,
        source: &Path,
        opts: &BackupOptions,
        ctx: &Context,
    ) -> Result<BackupStats> {
        let started = Instant::now();
        let traffic = self.store.traffic();
        let source = std::fs::canonicalize(source).map_err(|e| Error::Source {
            path: source.display().to_string(),
            source: e,
        })?;
        if let Some(p) = &opts.as_path
            && !p.is_absolute()
        {
            return Err(Error::InvalidOption(format!(
                "--as-path must be absolute, got `{}`",
                p.display()
            )));
        }
        let opts = opts.clone();
        let stored_root = opts.as_path.clone().unwrap_or_else(|| source.clone());
        let host = opts
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        let warnings = Warnings::new(source.clone(), stored_root.clone());
        let w = warnings.clone();
        // The parent and the index files' names are read while the lock is taken.
        let (auto_host, auto_paths) = (
            host.clone(),
            vec![stored_root.to_string_lossy().into_owned()],
        );
        let parent = async {
            Ok(match &opts.parent {
                ParentChoice::None => None,
                ParentChoice::Snapshot(q) => {
                    Some(self.find_snapshot(q, &SnapshotFilter::default()).await?)
                }
                // restic's choice: the newest snapshot of this host and these paths.
                ParentChoice::Auto => self
                    .snapshots(&SnapshotFilter::default())
                    .await?
                    .into_iter()
                    .filter(|s| s.hostname == auto_host && s.paths == auto_paths)
                    .max_by_key(|s| s.time),
            })
        };
        let listed = async { tokio::try_join!(parent, self.index_files()) };
        let snap = self
            .locked_after(false, ctx, listed, async |ctx, (parent, index_files)| {
                let key = MasterKey::from_rustic(&self.key);
                // A backup that cannot fit beside the index fails before loading it.
                if let Some(budget) = &self.opts.memory {
                    let index_mib = self.index_estimate(&index_files);
                    let smallest = BackupBuffers::smallest().mib(MAX_CHUNK as usize);
                    let index_text = format!("~{index_mib} MiB");
                    beyond(budget, "backup", &index_text, index_mib, smallest)?;
                }
                let loading = self.reserve(INDEX_LOAD_MIB, ctx).await?;
                let index = BlobIndex::load(&self.store, &key, index_files, INDEX_READS)
                    .await
                    .map_err(|e| self.index_error(e))?;
                drop(loading);
                let store = self.store.clone();
                let rt = self.rt.clone();
                let version = self.version;
                let budget = self.opts.memory.clone();
                let cores = std::thread::available_parallelism().map_or(2, usize::from);
                let uploads = default_uploads(self.location());
                let (cancel, progress) = (ctx.cancel.clone(), ctx.progress.clone());
                let config = self.config.clone();
                on_engine_thread("backup", move || {
                    if config.chunker() != rustic_core::repofile::Chunker::Rabin {
                        return Err(Error::engine(
                            "this repository uses a fixed-size chunker, which lifeboat does not write",
                        )
                        .into());
                    }
                    let sizes = Sizes {
                        min: config.chunk_min_size(),
                        max: config.chunk_max_size(),
                        average: config.chunk_size(),
                    };
                    let level = match config.zstd()? {
                        None => None,
                        Some(0) => Some(ZSTD_LEVEL),
                        Some(l) => Some(l),
                    };
                    // The index for as long as the backup runs, and the largest buffers that
                    // fit beside it in what is free now (the smallest, waited for, if none do).
                    let (buffers, _held) = match &budget {
                        None => (BackupBuffers::full(cores, uploads), Hold::none()),
                        Some(budget) => {
                            let index_mib = mib_of(index.memory());
                            let smallest = BackupBuffers::smallest().mib(sizes.max);
                            let index_text =
                                format!("{} blobs, {index_mib} MiB", index.len());
                            beyond(budget, "backup", &index_text, index_mib, smallest)?;
                            let buffers = BackupBuffers::fitting(
                                cores,
                                uploads,
                                sizes.max,
                                budget.free().saturating_sub(index_mib),
                            )
                            .unwrap_or_else(BackupBuffers::smallest);
                            let hold = reserve_blocking(
                                &rt,
                                budget,
                                index_mib + buffers.mib(sizes.max),
                                &cancel,
                            )?;
                            (buffers, hold)
                        }
                    };
                    let env = archiver::Env {
                        store: store.clone(),
                        rt,
                        key: key.clone(),
                        version: if level.is_some() { version } else { 1 },
                        rabin: Rabin::new(config.poly()?, sizes),
                        level: level.unwrap_or(0),
                        buffers,
                        cancel,
                        progress,
                        warnings: w,
                    };
                    let plan = archiver::Plan {
                        source: &source,
                        stored: &stored_root,
                        parent: parent.as_ref().map(|p| TreeId::from_bytes(*p.tree.as_bytes())),
                    };
                    let (root, summary) =
                        archiver::archive(&env, &index, &plan).map_err(|f| match f {
                            Failure::Cancelled => Error::Cancelled,
                            Failure::Store(e) => store_error(&store, e),
                            Failure::Pack(e) => Error::engine(e),
                            Failure::Other(m) => Error::engine(m),
                        })?;
                    let mut snap = SnapshotOptions::default().to_snapshot()?;
                    snap.hostname = host;
                    for tag in &opts.tags {
                        snap.tags.add(tag.clone());
                    }
                    snap.paths.add(stored_root.to_string_lossy().into_owned());
                    snap.tree = rustic_core::TreeId::from(root.to_rustic());
                    snap.parent = parent.map(|p| {
                        rustic_core::repofile::SnapshotId::from(rustic_core::Id::new(
                            *p.id.as_bytes(),
                        ))
                    });
                    snap.summary = Some(summary_of(&summary, &snap.time, started));
                    // Written as the last file: a snapshot only ever names stored data.
                    let json = serde_json::to_vec(&snap)
                        .map_err(|e| Error::engine(format!("cannot encode the snapshot: {e}")))?;
                    let bytes = key.encrypt(&crypto::pack_json(version, &json));
                    let id = SnapshotId::of(&bytes);
                    env.rt
                        .block_on(store.write(
                            FileKind::Snapshot,
                            &id.to_string(),
                            vec![bytes.into()],
                        ))
                        .map_err(|e| store_error(&store, e))?;
                    snap.id = rustic_core::repofile::SnapshotId::from(id.to_rustic());
                    Ok(snap)
                })
                .await
            })
            .await?;
        let mut stats = backup_stats(&snap, warnings.take(), started.elapsed());
        stats.traffic = self.store.traffic().since(traffic);
        Ok(stats)
    }

    /// Restores `snapshot` (`latest`, an id or a prefix), or its `subpath`, into `target`,
    /// under a shared lock. Every entry name is checked first: a name that would leave the
    /// target (`..`, `/`, NUL, empty) or that appears twice in a directory fails the restore
    /// before anything is written, the target itself included; and nothing is written outside
    /// the target whatever it already holds ([`crate::beneath`]). Damaged data leaves out the
    /// files holding it, listed in [`RestoreStats::unrestored`]; everything else is restored.
    pub async fn restore(
        &self,
        snapshot: &str,
        subpath: Option<&str>,
        target: &Path,
        opts: &RestoreOptions,
        ctx: &Context,
    ) -> Result<RestoreStats> {
        let started = Instant::now();
        let traffic = self.store.traffic();
        // The snapshot and the index files' names are read while the lock is taken.
        let listed = async {
            tokio::try_join!(
                self.find_snapshot(snapshot, &opts.filter),
                self.index_files()
            )
        };
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        // Every core decrypting and decompressing (never more than 8 threads), the store's
        // reads in flight, and the trees kept between the walks.
        let full = RestoreBuffers {
            readers: cores.clamp(1, 8),
            reads: self.pack_reads(),
            trees_mib: TREE_CACHE_MIB,
            batch: opts.batch.unwrap_or(restorer::BATCH).max(1),
        };
        let smallest = RestoreBuffers {
            readers: 1,
            reads: 1,
            trees_mib: 0,
            batch: full.batch.min(16_384),
        };
        // A read taken as it arrives holds a connection's buffers, not its length: it may
        // span a whole pack (restic's packs reach 128 MiB).
        let (read_cost, max_read) = if self.store.streams() {
            (restorer::STREAMED_READ, 128 << 20)
        } else {
            (restorer::MAX_READ, restorer::MAX_READ)
        };
        let budget = self.opts.memory.clone();
        let subpath = subpath.unwrap_or("").trim_start_matches('/').to_string();
        let key = MasterKey::from_rustic(&self.key);
        let target = target.to_path_buf();
        let (snap_id, written, left_out) = self
            .locked_after(false, ctx, listed, async |ctx, (snap, index_files)| {
                // The index, estimated before it is loaded: a restore that cannot fit fails
                // before it starts (and before the target is made).
                let index_mib = self.index_estimate(&index_files);
                if let Some(budget) = &budget {
                    let smallest_mib = smallest.mib(read_cost, MAX_CHUNK);
                    let index_text = format!("~{index_mib} MiB");
                    beyond(budget, "restore", &index_text, index_mib, smallest_mib)?;
                }
                // A snapshot's tree is a tree blob.
                let (snap_id, root) = (snap.id, TreeId::from_bytes(*snap.tree.as_bytes()));
                let loading = self.reserve(INDEX_LOAD_MIB + index_mib, ctx).await?;
                let index = BlobIndex::load(&self.store, &key, index_files, INDEX_READS)
                    .await
                    .map_err(|e| self.index_error(e))?;
                drop(loading);
                let (store, rt) = (self.store.clone(), self.rt.clone());
                let (progress, cancel) = (ctx.progress.clone(), ctx.cancel.clone());
                on_thread("restore", move || {
                    let max_blob = MAX_CHUNK;
                    let index_mib = mib_of(index.memory());
                    let (buffers, _held) = match &budget {
                        None => (full, Hold::none()),
                        Some(budget) => {
                            let buffers = RestoreBuffers::fitting(
                                full,
                                read_cost,
                                max_blob,
                                budget.free().saturating_sub(index_mib),
                            )
                            .unwrap_or(smallest);
                            let mib = index_mib + buffers.mib(read_cost, max_blob);
                            (buffers, reserve_blocking(&rt, budget, mib, &cancel)?)
                        }
                    };
                    let ropts = RestoreRun {
                        readers: buffers.readers,
                        reads: buffers.reads,
                        max_read,
                        batch: buffers.batch,
                    };
                    let cache = TreeCache::new(u64::from(buffers.trees_mib) << 20);
                    // Over a remote store a missing tree is read with its neighbours, in
                    // spans the size (and number) of the budget's reads.
                    let span_reads = tokio::sync::Semaphore::new(if store.streams() {
                        buffers.reads
                    } else {
                        0
                    });
                    let trees = Trees {
                        index: &index,
                        store: &store,
                        key: &key,
                        rt: &rt,
                        cache: &cache,
                        span: u32::try_from(read_cost).unwrap_or(u32::MAX),
                        span_reads: &span_reads,
                    };
                    let walk_error = |e: WalkError| match e {
                        WalkError::NotFound { .. } => Error::PathNotInSnapshot {
                            snapshot: snap_id,
                            path: subpath.clone(),
                        },
                        e => Error::TreeUnreadable {
                            snapshot: snap_id,
                            detail: e.to_string(),
                        },
                    };
                    let node = trees.find(&root, &subpath).map_err(walk_error)?;
                    let single = (!node.is_dir()).then(|| PathBuf::from(node.name().into_owned()));
                    // Every name first, before the target is made: the restore writes as it
                    // walks, so a bad name must be found before it starts. This crawl reads
                    // every tree with the store's reads in flight and keeps them for the
                    // walks after it (as far as the cache holds them).
                    let found = match &single {
                        Some(_) => Ok(unsafe_name_in(Path::new(""), std::slice::from_ref(&node))),
                        None => trees.check_every_name(&node, ropts.reads.max(TREE_READS)),
                    };
                    if let Some((parent, name, why)) = found.map_err(walk_error)? {
                        return Err(Error::UnsafeEntry {
                            snapshot: snap_id,
                            parent: parent.display().to_string(),
                            name: name.to_string_lossy().into_owned(),
                            why,
                        });
                    }
                    let target_err = |e| Error::Target {
                        path: target.display().to_string(),
                        source: e,
                    };
                    std::fs::create_dir_all(&target).map_err(target_err)?;
                    let beneath = Beneath::open(&target).map_err(target_err)?;
                    let mut restorer = Restorer::new(&index, beneath);
                    let contents = |restorer: &mut Restorer<'_>| {
                        restorer
                            .write_contents(&store, &key, &rt, ropts, progress.as_ref(), &cancel)
                            .map_err(|e| Error::Restore(e.0))
                    };
                    match &single {
                        Some(name) => restorer
                            .lay_out(name, &node)
                            .map_err(|e| Error::Restore(e.0))?,
                        None => {
                            for item in trees.walk(&node) {
                                let (dir, entry) = item.map_err(walk_error)?;
                                let path = dir.join(entry.name());
                                restorer
                                    .lay_out(&path, &entry)
                                    .map_err(|e| Error::Restore(e.0))?;
                                if restorer.batch_full(ropts) {
                                    contents(&mut restorer)?;
                                }
                            }
                        }
                    }
                    contents(&mut restorer)?;
                    // Metadata last, each directory after everything in it.
                    match &single {
                        Some(name) => restorer.set_metadata(name, &node),
                        None => {
                            let mut dirs_open: Vec<(PathBuf, Node)> = Vec::new();
                            for item in trees.walk(&node) {
                                let (dir, entry) = item.map_err(walk_error)?;
                                let path = dir.join(entry.name());
                                while let Some((open, _)) = dirs_open.last() {
                                    if path.starts_with(open) {
                                        break;
                                    }
                                    let (open, dnode) = dirs_open.pop().expect("not empty");
                                    restorer.set_metadata(&open, &dnode);
                                }
                                if entry.is_dir() {
                                    dirs_open.push((path, entry));
                                } else {
                                    restorer.set_metadata(&path, &entry);
                                }
                            }
                            for (dir, dnode) in dirs_open.into_iter().rev() {
                                restorer.set_metadata(&dir, &dnode);
                            }
                            // The target takes the restored directory's own owner, mode and
                            // times: a volume's root (a database's data directory must be
                            // 0700 and its user's) comes back as it was.
                            restorer.set_metadata(Path::new(""), &node);
                        }
                    }
                    Ok((snap_id, restorer.written(), restorer.left_out))
                })
                .await?
            })
            .await?;
        Ok(RestoreStats {
            snapshot: snap_id,
            files: written.files,
            dirs: written.dirs,
            bytes: written.bytes,
            duration_secs: started.elapsed().as_secs_f64(),
            unrestored: left_out.listed,
            unrestored_count: left_out.count,
            traffic: self.store.traffic().since(traffic),
        })
    }

    /// Checks the repository's structure, and with `read_data` every blob, under a shared lock.
    pub async fn check(&self, opts: &CheckOptions, ctx: &Context) -> Result<CheckReport> {
        let read_data = opts.read_data;
        let (findings, damage) = self
            .locked_after(false, ctx, self.index_files(), async |ctx, index_files| {
                // The structure (snapshots, trees, index against the packs' sizes) by the
                // format engine, and beside it the data by our readers: the engine's reads
                // wait for each other, and over a slow link they would otherwise come first.
                let structure = self.run("check", ctx, move |repo| {
                    let results = repo.check(rustic_core::CheckOptions::default())?;
                    Ok(results
                        .0
                        .iter()
                        .map(|(level, e)| {
                            (
                                format!("{level:?}") == "Error",
                                plain_finding(&e.to_string()),
                            )
                        })
                        .collect::<Vec<_>>())
                });
                let data = async {
                    // Our own index: a damaged index file is named (the format engine stops
                    // on it with its own report).
                    let key = MasterKey::from_rustic(&self.key);
                    let index = BlobIndex::load(&self.store, &key, index_files, INDEX_READS)
                        .await
                        .map_err(|e| self.index_error(e))?;
                    if !read_data {
                        return Ok(Vec::new());
                    }
                    let (store, rt) = (self.store.clone(), self.rt.clone());
                    let cancel = ctx.cancel.clone();
                    let stage = ctx.progress.stage("reading packs", Unit::Items);
                    // Each read holds a whole pack (it is hashed whole): two per reader at most.
                    let readers = std::thread::available_parallelism().map_or(2, usize::from);
                    let reads = self.pack_reads().min(2 * readers);
                    on_thread("check", move || {
                        verify::read_data(
                            &store,
                            &rt,
                            &key,
                            &index,
                            (readers, reads),
                            &cancel,
                            stage.as_ref(),
                        )
                    })
                    .await?
                    .map_err(|()| Error::Cancelled)
                };
                let (findings, damage) = tokio::join!(structure, data);
                // Our index's failure first: it names the file.
                let damage = damage?;
                Ok((findings?, damage))
            })
            .await?;
        // Findings name packs by a short prefix; the full ids are only needed then.
        let packs = if findings.iter().any(|(_, m)| m.contains("pack ")) {
            self.store
                .list(FileKind::Pack)
                .await
                .map_err(|e| store_error(&self.store, e))?
        } else {
            Vec::new()
        };
        let mut report = CheckReport::default();
        for (name, what) in damage {
            report.errors.push(Finding {
                message: format!("pack {name} is damaged: {what}"),
                pack: name.parse().ok(),
            });
        }
        for (is_error, message) in findings {
            let pack = pack_in_message(&message, &packs);
            let finding = Finding { message, pack };
            if is_error {
                report.errors.push(finding);
            } else {
                report.warnings.push(finding);
            }
        }
        Ok(report)
    }

    /// Removes snapshots by id or by keep policy, under an exclusive lock. Data is freed by
    /// [`Repository::prune`].
    pub async fn forget(&self, opts: &ForgetOptions, ctx: &Context) -> Result<ForgetStats> {
        if opts.ids.is_empty() && opts.keep.is_empty() {
            return Err(Error::InvalidOption(
                "forget needs snapshot ids or a keep policy (--keep-last, --keep-daily, …)".into(),
            ));
        }
        if !opts.ids.is_empty() && !opts.keep.is_empty() {
            return Err(Error::InvalidOption(
                "give either snapshot ids or a keep policy, not both".into(),
            ));
        }
        let opts = opts.clone();
        self.locked(true, ctx, async |ctx| {
            if opts.ids.is_empty() {
                let keep = keep_options(&opts.keep);
                let filter = opts.filter.clone();
                return self
                    .run("forget", ctx, move |repo| {
                        let snaps: Vec<SnapshotFile> = repo
                            .get_all_snapshots()?
                            .into_iter()
                            .filter(|s| filter.matches(&Snapshot::from_rustic(s)))
                            .collect();
                        let grouped = Grouped::from_items(snaps, SnapshotGroupCriterion::default());
                        let now = jiff::Zoned::now();
                        let groups =
                            rustic_core::ForgetGroups::from_grouped_snapshots_with_retention(
                                grouped, &keep, &now,
                            )?;
                        let mut stats = ForgetStats::default();
                        let mut remove = Vec::new();
                        for group in groups.0 {
                            for item in group.items {
                                let id = Snapshot::from_rustic(&item.snapshot).id;
                                if item.keep {
                                    stats.kept.push(id);
                                } else {
                                    stats.removed.push(id);
                                    remove.push(item.snapshot.id);
                                }
                            }
                        }
                        repo.delete_snapshots(&remove)?;
                        Ok(stats)
                    })
                    .await;
            }
            let all = self.snapshots(&SnapshotFilter::default()).await?;
            let mut remove = Vec::new();
            for q in &opts.ids {
                let s = snapshot::resolve(&all, q)?;
                if !remove.contains(&s.id) {
                    remove.push(s.id);
                }
            }
            let stats = ForgetStats {
                kept: all
                    .iter()
                    .map(|s| s.id)
                    .filter(|id| !remove.contains(id))
                    .collect(),
                removed: remove.clone(),
            };
            self.run("forget", ctx, move |repo| {
                let ids = remove
                    .iter()
                    .map(|id| Ok(id.to_string().parse::<rustic_core::Id>()?.into()))
                    .collect::<OpResult<Vec<rustic_core::repofile::SnapshotId>>>()?;
                repo.delete_snapshots(&ids)?;
                Ok(())
            })
            .await?;
            Ok(stats)
        })
        .await
    }

    /// Removes data no snapshot references and repacks partly used packs, under an exclusive
    /// lock. Packs are deleted at once (as restic does): the exclusive lock guarantees no
    /// backup is writing.
    pub async fn prune(&self, ctx: &Context) -> Result<PruneStats> {
        self.locked(true, ctx, async |ctx| {
            self.run("prune", ctx, |repo| {
                let popts = rustic_core::PruneOptions::default().instant_delete(true);
                let plan = repo.prune_plan(&popts)?;
                let s = &plan.stats;
                let stats = PruneStats {
                    packs_removed: s.packs_to_delete.remove,
                    packs_repacked: s.packs.repack,
                    packs_kept: s.packs.keep + s.packs.used,
                    bytes_removed: s.size_to_delete.remove,
                    bytes_repacked: s.size_sum().repack,
                };
                repo.prune(&popts, plan)?;
                Ok(stats)
            })
            .await
        })
        .await
    }

    /// The locks in the repository.
    pub async fn locks(&self) -> Result<Vec<LockInfo>> {
        Ok(self
            .locks
            .list()
            .await
            .map_err(|e| store_error(&self.store, e))?
            .into_iter()
            .map(|l| l.info)
            .collect())
    }

    /// Removes stale locks, or every lock with `all`; returns how many were removed.
    pub async fn unlock(&self, all: bool) -> Result<usize> {
        self.locks
            .unlock(all, &self.opts.lock)
            .await
            .map_err(|e| store_error(&self.store, e))
    }

    /// The store under this repository (for tools and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn keep_options(p: &KeepPolicy) -> rustic_core::KeepOptions {
    let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    rustic_core::KeepOptions::default()
        .keep_last(n(p.last))
        .keep_hourly(n(p.hourly))
        .keep_daily(n(p.daily))
        .keep_weekly(n(p.weekly))
        .keep_monthly(n(p.monthly))
        .keep_yearly(n(p.yearly))
}

/// A finding of the format engine's structural check in our words: its findings carry its
/// error reports (banners, backtrace notes, causes' debug names) and advise `rustic` commands,
/// which our users do not have. Its finding type is not public, so the text is read: the
/// first line, the object it names, our sentence.
fn plain_finding(text: &str) -> String {
    let first = text.lines().next().unwrap_or(text).trim();
    let word_after = |prefix: &str| {
        first.strip_prefix(prefix).map(|rest| {
            rest.split([' ', ',', ':'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
    };
    if let Some(id) =
        word_after("error reading pack ").or_else(|| word_after("error checking pack "))
    {
        return format!(
            "pack {id} cannot be read, or its header does not decrypt: the pack is damaged"
        );
    }
    if first.starts_with("error checking trees") {
        return "the snapshots' trees cannot all be read: a tree is missing or damaged (`lifeboat repo check --read-data` names the damaged pack)".into();
    }
    if let Some(rest) = first
        .strip_prefix("Error reading file Type: ")
        .or_else(|| first.strip_prefix("Error reading cached file Type: "))
        && let Some((kind, rest)) = rest.split_once(", Id: ")
    {
        let id = rest.split(' ').next().unwrap_or_default();
        return format!(
            "{} file {id} cannot be read or does not decrypt: it is damaged",
            kind.to_lowercase()
        );
    }
    if first.contains("not referenced in index")
        && let Some(id) = word_after("pack ").or_else(|| word_after("hot pack "))
    {
        return format!(
            "pack {id} is in no index: a backup running now, or one interrupted, leaves such packs; `lifeboat repo prune` removes them when none runs"
        );
    }
    let first = first.split(" : ").next().unwrap_or(first);
    first.replace(
        " To repair: 'rustic repair index'.",
        ": the index and the packs disagree, the repository is damaged",
    )
}

/// rustic_core names packs by their first 8 hex digits in messages; find the full id.
fn pack_in_message(message: &str, packs: &[(String, u64)]) -> Option<PackId> {
    let after = message.split("pack ").nth(1)?;
    let short: String = after.chars().take_while(char::is_ascii_hexdigit).collect();
    if short.len() < 8 {
        return None;
    }
    let mut hits = packs.iter().filter(|(name, _)| name.starts_with(&short));
    let (name, _) = hits.next()?;
    if hits.next().is_some() {
        return None;
    }
    name.parse().ok()
}

/// restic's summary of a backup from the archiver's counters.
fn summary_of(
    c: &archiver::Counters,
    start: &jiff::Zoned,
    started: Instant,
) -> rustic_core::repofile::SnapshotSummary {
    let g = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let mut out = rustic_core::repofile::SnapshotSummary::default();
    out.files_new = g(&c.files_new);
    out.files_changed = g(&c.files_changed);
    out.files_unmodified = g(&c.files_unmodified);
    out.total_files_processed = out.files_new + out.files_changed + out.files_unmodified;
    out.total_bytes_processed = g(&c.bytes_processed);
    out.dirs_new = g(&c.dirs_new);
    out.dirs_changed = g(&c.dirs_changed);
    out.dirs_unmodified = g(&c.dirs_unmodified);
    out.total_dirs_processed = out.dirs_new + out.dirs_changed + out.dirs_unmodified;
    out.data_blobs = g(&c.data_blobs);
    out.tree_blobs = g(&c.tree_blobs);
    out.data_added_files = g(&c.data_added);
    out.data_added_files_packed = g(&c.data_added_packed);
    out.data_added_trees = g(&c.trees_added);
    out.data_added_trees_packed = g(&c.trees_added_packed);
    out.data_added = out.data_added_files + out.data_added_trees;
    out.data_added_packed = out.data_added_files_packed + out.data_added_trees_packed;
    out.command = "backup".into();
    out.backup_start = start.clone();
    out.backup_end = jiff::Zoned::now();
    out.backup_duration = secs;
    out.total_duration = secs;
    out
}

fn backup_stats(snap: &SnapshotFile, warnings: Vec<Warning>, elapsed: Duration) -> BackupStats {
    let s = snap.summary.clone().unwrap_or_default();
    BackupStats {
        snapshot: Snapshot::from_rustic(snap),
        files_new: s.files_new,
        files_changed: s.files_changed,
        files_unchanged: s.files_unmodified,
        dirs_new: s.dirs_new,
        dirs_changed: s.dirs_changed,
        dirs_unchanged: s.dirs_unmodified,
        bytes_processed: s.total_bytes_processed,
        bytes_added: s.data_added,
        bytes_stored: s.data_added_packed,
        duration_secs: elapsed.as_secs_f64(),
        warnings,
        traffic: TrafficCount::default(),
    }
}

/// Test helpers: repositories in states a well-behaved writer never produces.
#[cfg(feature = "testing")]
pub mod testing {
    use std::ffi::OsStr;
    use std::io::Cursor;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    use rustic_core::repofile::{Metadata, Node, NodeType};
    use rustic_core::{ReadSource, ReadSourceEntry, RusticResult, SnapshotOptions};

    use super::{Context, Repository};
    use crate::error::Result;
    use crate::id::SnapshotId;

    /// A lock held by a test, released on `release` (or in the background when dropped).
    #[derive(Debug)]
    pub struct HeldLock(crate::lock::LockGuard);

    impl HeldLock {
        /// Removes the lock file.
        pub async fn release(self) -> Result<()> {
            let location = self.0.location();
            self.0
                .release()
                .await
                .map_err(|e| crate::error::Error::store(location, e))
        }
    }

    /// Takes a lock the way an operation does, and holds it until released.
    pub async fn hold_lock(repo: &Repository, exclusive: bool) -> Result<HeldLock> {
        let guard = repo
            .locks
            .acquire(
                exclusive,
                &repo.opts.lock,
                &tokio_util::sync::CancellationToken::new(),
            )
            .await?;
        Ok(HeldLock(guard))
    }

    struct Files(Vec<(PathBuf, Node, Vec<u8>)>);

    impl ReadSource for Files {
        type Open = Cursor<Vec<u8>>;
        type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Cursor<Vec<u8>>>>>;

        fn size(&self) -> RusticResult<Option<u64>> {
            Ok(None)
        }

        fn entries(&self) -> Self::Iter {
            self.0
                .iter()
                .map(|(path, node, data)| {
                    Ok(ReadSourceEntry {
                        path: path.clone(),
                        node: node.clone(),
                        open: Some(Cursor::new(data.clone())),
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
        }
    }

    /// An entry of a crafted tree: stored as given, in the given order — duplicate names,
    /// names no file system allows and symlinks anywhere included.
    #[derive(Debug, Clone)]
    pub enum Crafted {
        /// A file with `data` and permission bits `mode`.
        File {
            name: Vec<u8>,
            data: Vec<u8>,
            mode: u32,
        },
        /// A directory with permission bits `mode`.
        Dir {
            name: Vec<u8>,
            mode: u32,
            entries: Vec<Crafted>,
        },
        /// A symlink to `target`.
        Symlink { name: Vec<u8>, target: Vec<u8> },
    }

    /// Writes packs, an index file and a snapshot of `/crafted` whose root tree holds
    /// `entries` exactly as given: what a hostile writer of the bucket could store.
    #[allow(clippy::field_reassign_with_default)]
    pub async fn snapshot_of_tree(repo: &Repository, entries: &[Crafted]) -> Result<SnapshotId> {
        use crate::archiver::Packer;
        use crate::crypto::{self, MasterKey};
        use crate::id::{BlobId, TreeId};
        use crate::index::IndexWriter;
        use crate::store::FileKind;

        struct Writer {
            key: MasterKey,
            data: Packer,
            trees: Packer,
            seen: std::collections::HashSet<BlobId>,
        }
        impl Writer {
            fn node(&mut self, entry: &Crafted) -> Node {
                let mut meta = Metadata::default();
                meta.mtime = Some(jiff::Timestamp::from_second(1_600_000_000).expect("a time"));
                meta.atime = meta.mtime;
                match entry {
                    Crafted::File { name, data, mode } => {
                        meta.size = data.len() as u64;
                        meta.mode = Some(*mode);
                        let mut node =
                            Node::new_node(OsStr::from_bytes(name), NodeType::File, meta);
                        let mut content = Vec::new();
                        if !data.is_empty() {
                            let id = BlobId::of(data);
                            if self.seen.insert(id) {
                                self.data.add(&self.key, id, data, 0);
                            }
                            content.push(rustic_core::DataId::from(id.to_rustic()));
                        }
                        node.content = Some(content);
                        node
                    }
                    Crafted::Dir {
                        name,
                        mode,
                        entries,
                    } => {
                        meta.mode = Some((1 << 31) | *mode);
                        let id = self.tree(entries);
                        let mut node = Node::new_node(OsStr::from_bytes(name), NodeType::Dir, meta);
                        node.subtree = Some(rustic_core::TreeId::from(id.to_rustic()));
                        node
                    }
                    Crafted::Symlink { name, target } => {
                        meta.mode = Some((1 << 27) | 0o777);
                        let link =
                            NodeType::from_link(std::path::Path::new(OsStr::from_bytes(target)));
                        Node::new_node(OsStr::from_bytes(name), link, meta)
                    }
                }
            }

            fn tree(&mut self, entries: &[Crafted]) -> TreeId {
                let nodes = entries.iter().map(|e| self.node(e)).collect();
                let mut json = serde_json::to_vec(&rustic_core::repofile::Tree { nodes })
                    .expect("a tree serialises");
                json.push(b'\n');
                let id = TreeId::of(&json);
                if self.seen.insert(id.blob()) {
                    self.trees.add(&self.key, id.blob(), &json, 0);
                }
                id
            }
        }

        let key = MasterKey::from_rustic(&repo.key);
        let mut w = Writer {
            key: key.clone(),
            data: Packer::alone(false),
            trees: Packer::alone(true),
            seen: std::collections::HashSet::new(),
        };
        let root = w.tree(entries);
        let store = repo.store();
        let mut index = IndexWriter::default();
        for packer in [&mut w.data, &mut w.trees] {
            if let Some(pack) = packer.finish(&key).map_err(crate::error::Error::engine)? {
                store
                    .write(
                        FileKind::Pack,
                        &pack.id.to_string(),
                        vec![pack.bytes.into()],
                    )
                    .await
                    .map_err(|e| crate::error::Error::store(store.location(), e))?;
                index.add(pack.id, pack.blobs);
            }
        }
        if let Some((name, bytes)) = index.take_file(&key, repo.version) {
            store
                .write(FileKind::Index, &name, vec![bytes])
                .await
                .map_err(|e| crate::error::Error::store(store.location(), e))?;
        }
        let mut snap = SnapshotOptions::default()
            .to_snapshot()
            .map_err(crate::error::Error::engine)?;
        snap.hostname = "crafted".into();
        snap.paths.add("/crafted".into());
        snap.tree = rustic_core::TreeId::from(root.to_rustic());
        let json = serde_json::to_vec(&snap).expect("a snapshot serialises");
        let bytes = key.encrypt(&crypto::pack_json(repo.version, &json));
        let id = SnapshotId::of(&bytes);
        store
            .write(FileKind::Snapshot, &id.to_string(), vec![bytes.into()])
            .await
            .map_err(|e| crate::error::Error::store(store.location(), e))?;
        Ok(id)
    }

    /// Writes a snapshot of `/crafted` holding one file per `(name, content)`, with the names
    /// stored verbatim — also names no file system allows (`..`, `a/b`, NUL), to prove that
    /// restore refuses them.
    // `Metadata` is non-exhaustive: it can only be built from its default, then filled in.
    #[allow(clippy::field_reassign_with_default)]
    pub async fn snapshot_with_names(
        repo: &Repository,
        files: &[(&[u8], &[u8])],
    ) -> Result<SnapshotId> {
        let entries: Vec<(PathBuf, Node, Vec<u8>)> = files
            .iter()
            .enumerate()
            .map(|(i, (name, data))| {
                let mut meta = Metadata::default();
                meta.size = data.len() as u64;
                meta.mode = Some(0o100_644);
                meta.mtime = Some(jiff::Timestamp::now());
                let node = Node::new_node(OsStr::from_bytes(name), NodeType::File, meta);
                (
                    PathBuf::from(format!("/crafted/f{i:04}")),
                    node,
                    data.to_vec(),
                )
            })
            .collect();
        let snap = repo
            .run("backup", &Context::default(), move |r| {
                let r = r.to_indexed_ids()?;
                let snap = SnapshotOptions::default().to_snapshot()?;
                let opts = rustic_core::BackupOptions::default();
                Ok(r.archive(&opts, &Files(entries), snap, &[PathBuf::from("/crafted")])?)
            })
            .await?;
        Ok(crate::snapshot::Snapshot::from_rustic(&snap).id)
    }
}
