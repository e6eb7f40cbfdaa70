//! lifeboat-repo: the restic-compatible repository engine.
//!
//! A [`Repository`] lives on a [`Store`] (a local directory, S3, GCS or Azure, given as a
//! [`Location`]) and offers init/open, backup, restore, snapshots, forget, prune, check and
//! unlock, with restic's locks, progress reporting ([`Progress`]) and cancellation (a
//! `CancellationToken` in the [`Context`]). Repositories it writes pass `restic check
//! --read-data`, and it reads what restic writes.

mod archiver;
mod beneath;
mod bridge;
mod budget;
mod chunker;
mod crypto;
mod error;
mod id;
mod index;
mod location;
mod lock;
mod pack;
mod progress;
mod repository;
mod restorer;
mod snapshot;
mod source;
mod store;
mod tree;
mod verify;

pub use beneath::write_file_beneath;
pub use budget::{
    BudgetError, MIN_BUDGET_MIB, MemoryBudget, PROCESS_MIB, parse_budget, parse_size,
};
pub use error::{BackupFailure, Error, RestoreFailure, Result, error_chain};
pub use id::{BlobId, InvalidId, LockId, PackId, SnapshotId};
pub use location::Location;
pub use lock::{LockInfo, LockOptions};
pub use progress::{NoProgress, Progress, Stage, Unit};
#[cfg(feature = "testing")]
pub use repository::testing;
pub use repository::{
    BackupOptions, BackupStats, CheckOptions, CheckReport, Context, Finding, ForgetOptions,
    ForgetStats, KeepPolicy, ParentChoice, PruneStats, Repository, RepositoryOptions,
    RestoreOptions, RestoreStats, default_pack_reads,
};
pub use restorer::Unrestored;
pub use snapshot::{Snapshot, SnapshotFilter};
pub use source::Warning;
pub use store::{
    Bucket, Credentials, FileKind, Store, StoreError, StoreOptions, TrafficCount, Upload,
};
pub use tree::UnsafeName;

/// Re-exported so callers can cancel operations without depending on tokio-util themselves.
pub use tokio_util::sync::CancellationToken;
