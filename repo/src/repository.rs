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
//!
//! Files: [`open`] (init, open), [`backup`], [`restore`], [`check`], [`forget`] (forget,
//! prune), [`locking`] (operations under restic's locks), [`options`] (what operations take
//! and give back); here the [`Repository`] itself and what every operation shares (its thread,
//! the format engine's view, the memory budget, the index files).

mod backup;
mod check;
mod forget;
mod locking;
mod open;
mod options;
mod restore;
#[cfg(feature = "testing")]
pub mod testing;

pub use options::{
    BackupOptions, BackupStats, CheckOptions, CheckReport, Context, Finding, ForgetOptions,
    ForgetStats, KeepPolicy, ParentChoice, PruneStats, RepositoryOptions, RestoreOptions,
    RestoreStats, default_pack_reads,
};

use std::sync::Arc;

use rustic_core::repofile::{ConfigFile, MasterKey as RusticKey, SnapshotFile};
use rustic_core::{Credentials, OpenStatus, RepositoryBackends, RusticError};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::bridge::Bridge;
use crate::budget::{Hold, MemoryBudget, mib_of};
use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::index::IndexError;
use crate::location::Location;
use crate::lock::Locks;
use crate::progress::Adapter;
use crate::snapshot::{self, Snapshot, SnapshotFilter};
use crate::store::{FileKind, Store, StoreError};

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
/// decrypted, decompressed and parsed (50,000 blobs), so four fit in [`crate::budget::INDEX_LOAD_MIB`].
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
            message: crate::bridge::rustic_message(&e),
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
    /// Where the repository is.
    pub fn location(&self) -> &Location {
        self.store.location()
    }

    /// The repository format version (1 or 2).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The store under this repository (for tools and tests).
    pub fn store(&self) -> &Store {
        &self.store
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
                    message: crate::bridge::rustic_message(&e),
                },
            },
        }
    }

    /// Ranged pack reads in flight: as configured, or the store's default.
    fn pack_reads(&self) -> usize {
        self.opts
            .pack_reads
            .unwrap_or_else(|| default_pack_reads(self.store.location()))
    }

    /// Reserves `mib` from the process's budget (nothing without one), waiting while other
    /// operations hold it; cancelled with the operation.
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
}
