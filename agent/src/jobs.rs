//! The agent's jobs: one pod volume backed up into a repository, or one snapshot restored into
//! a restored pod's volume, with progress streamed back at a bounded rate and a result that
//! says what happened in one sentence when it failed.
//!
//! A job finds its volume under the host-pods root ([`find_volume`]), opens the repository
//! the server described (the agent holds no credentials of its own), and runs the engine's
//! backup with the stored path, host, tags and parent the server chose. Cancellation (the
//! server's CancelJob, or the session ending) stops the engine between chunks; the repository
//! is left consistent (restic's rule: nothing is referenced before it is written).
//!
//! A restore ends with a marker in the volume for the pod's `restic-wait` init container
//! (`lifeboat restore-helper`): `.velero/<restore-uid>` once the data is in place, or
//! `.velero/<restore-uid>.failed` holding the reason, so the pod never waits on a restore that
//! is not coming.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lifeboat_repo::{
    BackupOptions, Context, Error as RepoError, Location, LockOptions, MemoryBudget, ParentChoice,
    Progress, Repository, RepositoryOptions, RestoreOptions, Stage, StoreOptions, Unit,
};
use tokio_util::sync::CancellationToken;

use crate::access::{AccessError, RepositoryAccess};
use crate::helper::{FAILED_SUFFIX, MARKER_DIR};
use crate::proto::{
    self, BackupDone, JobProgress, RestoreDone, VolumeBackup, VolumeRestore, job_result,
};
use crate::volume::{VolumeError, find_volume};

/// How long a job waits for a repository another process holds exclusively (prune).
pub const MAINTENANCE_WAIT: Duration = Duration::from_secs(10 * 60);

/// How often a running job reports its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Counters a job's progress reports read.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    files_total: AtomicU64,
}

impl Counters {
    /// The counters as a progress message of `job_id`.
    pub fn snapshot(&self, job_id: &str) -> JobProgress {
        JobProgress {
            job_id: job_id.to_owned(),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
        }
    }
}

/// The engine's stages, folded into bytes and files.
#[derive(Debug, Clone)]
struct Report(Arc<Counters>);

struct CountingStage {
    counters: Arc<Counters>,
    unit: Unit,
}

impl Stage for CountingStage {
    fn set_total(&self, total: u64) {
        match self.unit {
            Unit::Bytes => self.counters.bytes_total.store(total, Ordering::Relaxed),
            Unit::Items => self.counters.files_total.store(total, Ordering::Relaxed),
            Unit::None => {}
        }
    }

    fn advance(&self, n: u64) {
        match self.unit {
            Unit::Bytes => self.counters.bytes_done.fetch_add(n, Ordering::Relaxed),
            Unit::Items => self.counters.files_done.fetch_add(n, Ordering::Relaxed),
            Unit::None => 0,
        };
    }

    fn finish(&self) {}
}

impl Progress for Report {
    fn stage(&self, _title: &str, unit: Unit) -> Box<dyn Stage> {
        Box::new(CountingStage {
            counters: self.0.clone(),
            unit,
        })
    }
}

/// What jobs on this node share: where pod volumes are, and the agent's memory budget.
#[derive(Debug, Clone)]
pub struct Node {
    pub host_pods: PathBuf,
    pub memory: Option<MemoryBudget>,
}

/// Why a job's repository cannot be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("the job names no repository")]
    NoRepository,
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("cannot open repository {location}")]
    Open {
        location: Location,
        #[source]
        source: RepoError,
    },
}

/// Opens the repository a job names. A backup that meets maintenance's exclusive lock (prune)
/// waits for it, bounded by [`MAINTENANCE_WAIT`]; after that the job fails naming the lock,
/// and the backup can be run again.
async fn open(repo: Option<&proto::Repository>, node: &Node) -> Result<Repository, OpenError> {
    let access = RepositoryAccess::try_from(repo.ok_or(OpenError::NoRepository)?)?;
    let opts = RepositoryOptions {
        store: access.store_options(StoreOptions::default()),
        lock: LockOptions {
            wait: MAINTENANCE_WAIT,
            ..LockOptions::default()
        },
        memory: node.memory.clone(),
        ..RepositoryOptions::default()
    };
    Repository::open(&access.location, &access.password, opts)
        .await
        .map_err(|source| OpenError::Open {
            location: access.location.clone(),
            source,
        })
}

/// Runs one volume backup; `counters` follow its progress. The outcome is the job's result.
pub async fn backup(
    job: &VolumeBackup,
    node: &Node,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> job_result::Outcome {
    match run_backup(job, node, counters, cancel).await {
        Ok(done) => job_result::Outcome::Backup(done),
        Err(JobError::Skipped(reason)) => job_result::Outcome::Skipped(reason),
        Err(JobError::Failed(reason)) => job_result::Outcome::Error(reason),
    }
}

/// How a job ends without a snapshot.
enum JobError {
    /// The volume is not here.
    Skipped(String),
    /// It could not be backed up.
    Failed(String),
}

impl From<OpenError> for JobError {
    fn from(e: OpenError) -> Self {
        JobError::Failed(lifeboat_repo::error_chain(&e))
    }
}

async fn run_backup(
    job: &VolumeBackup,
    node: &Node,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> Result<BackupDone, JobError> {
    let source =
        find_volume(&node.host_pods, &job.pod_uid, &job.volume_dir).map_err(|e| match e {
            VolumeError::NoPod { .. } | VolumeError::NotMounted { .. } => {
                JobError::Skipped(e.to_string())
            }
            other => JobError::Failed(other.to_string()),
        })?;
    let repository = open(job.repository.as_ref(), node).await?;
    let stored = if job.stored_path.is_empty() {
        None
    } else {
        Some(PathBuf::from(&job.stored_path))
    };
    let options = BackupOptions {
        tags: job.tags.clone(),
        host: (!job.host.is_empty()).then(|| job.host.clone()),
        as_path: stored,
        parent: if job.parent.is_empty() {
            ParentChoice::Auto
        } else {
            ParentChoice::Snapshot(job.parent.clone())
        },
    };
    let ctx = Context {
        progress: Arc::new(Report(counters)),
        cancel: cancel.clone(),
    };
    let stats = repository
        .backup(&source, &options, &ctx)
        .await
        .map_err(|e| {
            JobError::Failed(if cancel.is_cancelled() {
                "the backup was cancelled".to_string()
            } else {
                format!(
                    "backing up {} failed: {}",
                    source.display(),
                    lifeboat_repo::error_chain(&e)
                )
            })
        })?;
    log_traffic("backup", &source, stats.traffic);
    Ok(BackupDone {
        snapshot_id: stats.snapshot.id.to_string(),
        path: stats
            .snapshot
            .paths
            .first()
            .cloned()
            .unwrap_or_else(|| source.display().to_string()),
        bytes_processed: stats.bytes_processed,
        bytes_added: stats.bytes_added,
        files_new: stats.files_new,
        files_changed: stats.files_changed,
        files_unchanged: stats.files_unchanged,
        duration_secs: stats.duration_secs,
        warnings: stats
            .warnings
            .iter()
            .map(|w| format!("{}: {}", w.path, w.message))
            .collect(),
    })
}

/// Runs one volume restore; `counters` follow its progress. The outcome is the job's result,
/// and the volume gets its marker (done or failed) whenever the volume was found.
pub async fn restore(
    job: &VolumeRestore,
    node: &Node,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> job_result::Outcome {
    let target = match find_volume(&node.host_pods, &job.pod_uid, &job.volume_dir) {
        Ok(target) => target,
        Err(e) => return job_result::Outcome::Error(e.to_string()),
    };
    if !job.fail_reason.is_empty() {
        return match mark(&target, &job.restore_uid, Some(&job.fail_reason)) {
            Ok(()) => job_result::Outcome::Restore(RestoreDone::default()),
            Err(e) => job_result::Outcome::Error(format!(
                "the failure marker cannot be written in {}: {e}",
                target.display()
            )),
        };
    }
    let outcome = match run_restore(job, node, &target, counters, cancel).await {
        Ok(done) => job_result::Outcome::Restore(done),
        Err(e) => job_result::Outcome::Error(lifeboat_repo::error_chain(&e)),
    };
    let marked = match &outcome {
        job_result::Outcome::Error(reason) => mark(&target, &job.restore_uid, Some(reason)),
        _ => mark(&target, &job.restore_uid, None),
    };
    match (outcome, marked) {
        (outcome, Ok(())) => outcome,
        (job_result::Outcome::Error(reason), Err(_)) => job_result::Outcome::Error(reason),
        (_, Err(e)) => job_result::Outcome::Error(format!(
            "the data is restored but the marker for the init container cannot be written in {}: {e}",
            target.display()
        )),
    }
}

/// Writes the markers [`crate::helper`] reads: `.velero/<restore_uid>` (done), or
/// `.velero/<restore_uid>.failed` holding `failure`.
fn mark(volume: &Path, restore_uid: &str, failure: Option<&str>) -> std::io::Result<()> {
    if restore_uid.is_empty() || restore_uid.contains(['/', '\0']) || restore_uid.starts_with('.') {
        return Err(std::io::Error::other(format!(
            "the restore UID {restore_uid:?} is not a plain name"
        )));
    }
    // The volume now holds what the snapshot held: a `.velero` symlink planted there must not
    // take the marker (written as root) anywhere else.
    let (name, contents) = match failure {
        None => (restore_uid.to_owned(), &b""[..]),
        Some(reason) => (format!("{restore_uid}{FAILED_SUFFIX}"), reason.as_bytes()),
    };
    lifeboat_repo::write_file_beneath(
        volume,
        std::ffi::OsStr::new(MARKER_DIR),
        std::ffi::OsStr::new(&name),
        contents,
    )
}

/// Why a volume restore ends without all of its snapshot in place.
#[derive(Debug, thiserror::Error)]
enum RestoreJobError {
    #[error("the job names no snapshot")]
    NoSnapshot,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the restore was cancelled")]
    Cancelled,
    #[error("restoring snapshot {snapshot} from {location} failed")]
    Engine {
        snapshot: String,
        location: Location,
        #[source]
        source: RepoError,
    },
    #[error(
        "partially restored: snapshot {snapshot} restored {files} files, but {left_out} entry(ies) left out: {named}"
    )]
    Partial {
        snapshot: String,
        files: u64,
        left_out: u64,
        named: String,
    },
}

async fn run_restore(
    job: &VolumeRestore,
    node: &Node,
    target: &Path,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> Result<RestoreDone, RestoreJobError> {
    if job.snapshot_id.is_empty() {
        return Err(RestoreJobError::NoSnapshot);
    }
    let repository = open(job.repository.as_ref(), node).await?;
    let location = repository.location().clone();
    let failed = |source: RepoError| {
        if cancel.is_cancelled() {
            RestoreJobError::Cancelled
        } else {
            RestoreJobError::Engine {
                snapshot: job.snapshot_id.clone(),
                location: location.clone(),
                source,
            }
        }
    };
    let snapshot = repository
        .find_snapshot(&job.snapshot_id, &Default::default())
        .await
        .map_err(failed)?;
    let ctx = Context {
        progress: Arc::new(Report(counters)),
        cancel: cancel.clone(),
    };
    // The volume's data is the snapshot's stored path (`/<ns>/pvc/<claim>`, as our backups and
    // `--as-path` write it); a snapshot Velero's restic took of `.` holds it at the root.
    let stored = snapshot.paths.first().map(|p| p.trim_start_matches('/'));
    let opts = RestoreOptions::default();
    let id = snapshot.id.to_string();
    let stats = match repository.restore(&id, stored, target, &opts, &ctx).await {
        Err(RepoError::PathNotInSnapshot { .. }) => {
            repository.restore(&id, None, target, &opts, &ctx).await
        }
        other => other,
    }
    .map_err(failed)?;
    log_traffic("restore", target, stats.traffic);
    if !stats.is_complete() {
        // Velero's PodVolumeRestore has no partial phase: the volume fails, naming what is
        // missing, and everything else is in place.
        let mut named: Vec<String> = stats
            .unrestored
            .iter()
            .take(10)
            .map(|u| format!("{}: {}", u.path, u.reason))
            .collect();
        let unnamed = stats.unrestored_count.saturating_sub(named.len() as u64);
        if unnamed > 0 {
            named.push(format!("and {unnamed} more"));
        }
        return Err(RestoreJobError::Partial {
            snapshot: job.snapshot_id.clone(),
            files: stats.files,
            left_out: stats.unrestored_count,
            named: named.join("; "),
        });
    }
    Ok(RestoreDone {
        snapshot_id: id,
        files: stats.files,
        dirs: stats.dirs,
        bytes: stats.bytes,
        duration_secs: stats.duration_secs,
    })
}

/// A volume job's requests to the store in the agent's log; a warning when some were retried
/// (a store throttling or a link dropping connections shows here before it fails a job).
fn log_traffic(job: &str, volume: &Path, traffic: lifeboat_repo::TrafficCount) {
    if traffic.failed() > 0 {
        tracing::warn!(volume = %volume.display(), "pod volume {job}: {traffic}");
    } else if traffic.requests > 0 {
        tracing::info!(volume = %volume.display(), "pod volume {job}: {traffic}");
    }
}
