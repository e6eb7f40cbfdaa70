//! The engine's one error type.
//!
//! Callers (the CLI, the agent) print an error's `Display` as the one sentence a user reads, so
//! each message names the input or object at fault. Messages describe the engine only: what
//! to run or which flag to pass is the caller's to add (the engine has no flags), matching on
//! the variant. Causes go in `#[source]`, never into the message as well.

use crate::id::{PackId, SnapshotId};
use crate::lock::LockInfo;
use crate::tree::UnsafeName;

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository string could not be understood.
    #[error("cannot understand repository location `{input}`: {reason}")]
    InvalidLocation { input: String, reason: String },

    /// No password was given.
    #[error("no repository password was given")]
    NoPassword,

    /// The password opens none of the repository's keys.
    #[error("wrong password for the repository at {location}: no key could be opened with it")]
    WrongPassword { location: String },

    /// No key file of the repository could be read as one.
    #[error(
        "no key file of the repository at {location} could be read: {files}; restore the keys/ directory from a copy of the bucket"
    )]
    KeysDamaged { location: String, files: String },

    /// The config file does not decrypt with the key the password opened, or does not parse.
    #[error(
        "the config file of the repository at {location} does not decrypt or parse with the key the password opened: it is damaged, or the key belongs to another repository; restore the config file from a copy of the bucket"
    )]
    ConfigDamaged { location: String },

    /// There is no repository (no `config` file) at the location.
    #[error("there is no repository at {location} (no config file)")]
    NoRepository { location: String },

    /// The bucket or container itself does not exist.
    #[error("the bucket of {location} does not exist or cannot be listed")]
    BucketMissing {
        location: String,
        #[source]
        source: Box<crate::store::StoreError>,
    },

    /// `init` on a location that already holds a repository.
    #[error("a repository already exists at {location}")]
    AlreadyInitialized { location: String },

    /// Another process holds a lock that conflicts with ours.
    #[error("the repository at {location} is locked by {holder}; retry later")]
    Locked {
        location: String,
        holder: Box<LockInfo>,
    },

    /// Our own lock could not be kept fresh, so the operation was stopped before others could
    /// consider it stale.
    #[error(
        "the repository lock at {location} could not be refreshed in time; the operation was stopped"
    )]
    LockLost { location: String },

    /// No snapshot matches the given id, prefix or `latest`.
    #[error("no snapshot matches `{query}`")]
    SnapshotNotFound { query: String },

    /// An id prefix matches more than one snapshot.
    #[error("snapshot id prefix `{query}` is ambiguous; give more digits")]
    SnapshotAmbiguous { query: String },

    /// The restore could not write or read what it needed (its cause names the path or
    /// pack).
    #[error("restore failed")]
    Restore(#[source] RestoreFailure),

    /// The backup pipeline failed (a pack that did not verify, a parent tree that cannot be
    /// read, …): its message and causes say what.
    #[error(transparent)]
    Backup(BackupFailure),

    /// A path inside a snapshot does not exist.
    #[error("`{path}` does not exist in snapshot {snapshot}")]
    PathNotInSnapshot { snapshot: SnapshotId, path: String },

    /// A tree entry could be written outside the restore target.
    #[error(
        "snapshot {snapshot} holds the entry `{name}` under `/{parent}` {why}, which could escape the restore target; nothing was restored"
    )]
    UnsafeEntry {
        snapshot: SnapshotId,
        parent: String,
        name: String,
        why: UnsafeName,
    },

    /// A directory of the snapshot cannot be read: its tree is missing or damaged.
    #[error("snapshot {snapshot} cannot be restored: {detail}")]
    TreeUnreadable {
        snapshot: SnapshotId,
        detail: String,
    },

    /// A snapshot file does not decrypt or parse.
    #[error(
        "snapshot file {file} of {location} does not decrypt or parse: it is damaged; remove it from the bucket's snapshots/ to list and restore the others"
    )]
    SnapshotDamaged { location: String, file: String },

    /// An index file does not decrypt or parse.
    #[error(
        "index file {file} of {location} does not decrypt or parse: the repository is damaged; restore the file from a copy of the bucket, or rebuild the index from the packs with restic's `restic rebuild-index` (the repository is restic's format)"
    )]
    IndexDamaged { location: String, file: String },

    /// The source directory of a backup cannot be read.
    #[error("cannot back up `{path}`")]
    Source {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The restore target cannot be used.
    #[error("cannot restore into `{path}`")]
    Target {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// `check` found damage; the report lists it. The first damaged pack is named.
    #[error("{}", match pack { Some(p) => format!("the repository has {errors} error(s); pack {p} is damaged"), None => format!("the repository has {errors} error(s)") })]
    CheckFailed { errors: usize, pack: Option<PackId> },

    /// The operation cannot fit in the process's memory budget even with its smallest buffers.
    #[error(
        "the memory budget of {budget_mib} MiB cannot hold this {operation}: {what} need {needed_mib} MiB, and {usable_mib} MiB is all operations may use beside the process; it would take a budget of at least {} MiB", needed_mib + (budget_mib - usable_mib)
    )]
    MemoryBudget {
        operation: &'static str,
        what: String,
        needed_mib: u32,
        budget_mib: u32,
        usable_mib: u32,
    },

    /// An invalid option value.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The operation was cancelled by its caller.
    #[error("the operation was cancelled")]
    Cancelled,

    /// A storage operation failed.
    #[error("storage error at {location}")]
    Store {
        location: String,
        #[source]
        source: Box<crate::store::StoreError>,
    },

    /// The format engine reported an error we have no finer variant for.
    #[error("{message}")]
    Engine { message: String },
}

impl Error {
    /// Whether the same call may succeed if tried again unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { source, .. } => source.is_retryable(),
            Error::Locked { .. } | Error::LockLost { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn store(
        location: impl std::fmt::Display,
        source: crate::store::StoreError,
    ) -> Self {
        Error::Store {
            location: location.to_string(),
            source: Box::new(source),
        }
    }

    pub(crate) fn engine(err: impl std::fmt::Display) -> Self {
        Error::Engine {
            message: err.to_string(),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes as one line, each cause once: every layer's message describes only
/// that layer, so the chain reads as a sentence ("cannot list …: access denied: …").
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Why a restore stopped. Opaque: its message and source chain name the path or pack.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RestoreFailure(#[from] pub(crate) crate::restorer::RestoreError);

/// Why a backup's pipeline stopped. Opaque: its message and source chain say what happened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackupFailure(Box<crate::archiver::Failure>);

impl From<crate::archiver::Failure> for BackupFailure {
    fn from(failure: crate::archiver::Failure) -> Self {
        Self(Box::new(failure))
    }
}
