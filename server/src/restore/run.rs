//! One restore from validation to its final status: the spec checked against the backup and
//! the cluster ([`Run::prepare`]), the tarball downloaded and unpacked within the server's
//! limits into a private scratch directory while the objects are restored one at a time
//! ([`walk`](super::walk)), the pod volumes handed to the agents, and the results, log and
//! status written.
//!
//! Phases: New → FailedValidation (nothing created), or New → InProgress → Completed /
//! PartiallyFailed (some objects or volumes could not be restored: the results name them) /
//! Failed (the restore as a whole could not run: `status.failureReason` says why).

use std::os::unix::fs::DirBuilderExt as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::{
    Backup, BackupPhase, BackupStorageLocation, PodVolumeBackup, Restore, RestorePhase,
    RestoreProgress, RestoreStatus, labels,
};
use crate::backup::layout::{self, BackupKeys, RestoreKeys};
use crate::backup::log::{Level, OperationLog};
use crate::backup::{BackupResults, ResourceIndex, discover, validate_includes_excludes};
use crate::clock::kube_time;
use crate::controller::Context;
use crate::controller::operation::{Stop, mark_failed};
use crate::error::{Error, Result};
use crate::podvolume::restore::{self as volume_restore};
use crate::restore::archive::{self, BackupContents};
use crate::restore::scratch::Scratch;
use crate::storage::{LocationStore, chain};

use super::walk::Walk;

/// Download chunks queued for the extraction: a few response chunks (object_store's are tens
/// of KiB), so a slow extraction slows the download instead of filling memory.
const CHUNKS_IN_FLIGHT: usize = 8;

/// How long a CRD restored by this restore may take to be served before its objects are
/// given up (with an error naming them).
pub(super) const CRD_WAIT: Duration = Duration::from_secs(60);

/// Resources never restored (Velero's `nonRestorableResources`): they describe the source
/// cluster or Velero's own bookkeeping, and restoring them would confuse both.
pub(super) const NON_RESTORABLE: &[&str] = &[
    "nodes",
    "events",
    "events.events.k8s.io",
    "backups.velero.io",
    "restores.velero.io",
    "resticrepositories.velero.io",
];

/// A validated restore's backup and where it is stored.
pub(super) struct Prepared {
    pub backup: Backup,
    pub location: BackupStorageLocation,
    pub store: LocationStore,
    pub index: ResourceIndex,
}

/// Why a restore failed as a whole. With its cause, the Restore's `failureReason`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("cannot open storage location {location}")]
    OpenLocation {
        location: String,
        #[source]
        source: crate::controller::OpenLocationError,
    },
    #[error(transparent)]
    Scratch(crate::restore::scratch::ScratchError),
    #[error("cannot read the backup's pod volume list")]
    VolumeList(#[source] lifeboat_repo::StoreError),
    #[error("the server was stopped during the restore; create the restore again")]
    ServerStopped,
    #[error("the server was stopped during the restore's pod volumes; create the restore again")]
    ServerStoppedDuringVolumes,
    #[error("cannot download the resources of backup {backup} ({key})")]
    Download {
        backup: String,
        key: String,
        #[source]
        source: lifeboat_repo::StoreError,
    },
    #[error("the extraction stopped")]
    ExtractionStopped(#[source] tokio::task::JoinError),
    #[error("cannot unpack the resources of backup {backup}, so nothing was restored")]
    Unpack {
        backup: String,
        #[source]
        source: archive::ArchiveError,
    },
    #[error("the backed-up namespace {namespace} is not valid")]
    Namespace {
        namespace: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One restore from validation to its final status.
pub(crate) struct Run<'a> {
    pub(super) ctx: &'a Context,
    pub(super) restore: Restore,
    pub(super) name: String,
    pub(super) log: OperationLog,
    pub(super) results: BackupResults,
    pub(super) cancel: CancellationToken,
    pub(super) started: Timestamp,
}

impl<'a> Run<'a> {
    pub(crate) fn new(ctx: &'a Context, restore: Restore, cancel: CancellationToken) -> Run<'a> {
        let name = restore.name_any();
        Run {
            ctx,
            log: OperationLog::new("restore", &format!("{}/{name}", ctx.namespace)),
            restore,
            name,
            results: BackupResults::default(),
            cancel,
            started: ctx.clock.now(),
        }
    }

    fn info(&mut self, msg: &str) {
        self.log.line(self.ctx.clock.now(), Level::Info, msg);
    }

    pub(crate) async fn go(mut self) -> Result<()> {
        let schedule = self.restore.spec.schedule_name.clone().unwrap_or_default();
        let metrics = self.ctx.metrics.clone();
        metrics.restore_attempted(&schedule);
        let prepared = match self.prepare().await {
            Ok(p) => p,
            Err(Stop::Invalid(errors)) => {
                for e in &errors {
                    tracing::warn!(restore = %self.name, "validation: {e}");
                }
                let status = RestoreStatus {
                    phase: Some(RestorePhase::FailedValidation),
                    validation_errors: errors,
                    completion_timestamp: Some(kube_time(self.ctx.clock.now())),
                    ..RestoreStatus::default()
                };
                metrics.restore_finished(&schedule, RestorePhase::FailedValidation);
                return self.ctx.patch_status::<Restore>(&self.name, &status).await;
            }
            Err(Stop::Failed(failure)) => {
                metrics.restore_finished(&schedule, RestorePhase::Failed);
                return mark_failed::<Restore>(self.ctx, &self.name, &chain(&failure)).await;
            }
            Err(Stop::Api(e)) => return Err(e),
        };
        let outcome = self.execute(&prepared).await;
        metrics.restore_finished(
            &schedule,
            match &outcome {
                Ok(phase) => *phase,
                Err(_) => RestorePhase::Failed,
            },
        );
        match outcome {
            Ok(_) => Ok(()),
            Err(Stop::Failed(failure)) => {
                mark_failed::<Restore>(self.ctx, &self.name, &chain(&failure)).await
            }
            Err(Stop::Invalid(errors)) => {
                mark_failed::<Restore>(self.ctx, &self.name, &errors.join("; ")).await
            }
            Err(Stop::Api(e)) => {
                let reason = format!(
                    "the Kubernetes API failed during the restore: {}",
                    chain(&e)
                );
                let _ = mark_failed::<Restore>(self.ctx, &self.name, &reason).await;
                Err(e)
            }
        }
    }

    /// Resolves the backup (or the schedule's newest usable one), validates, goes InProgress.
    async fn prepare(&mut self) -> Result<Prepared, Stop<Failure>> {
        let ctx = self.ctx;
        let spec = &self.restore.spec;
        let mut errors = Vec::new();
        let schedule = spec.schedule_name.clone().unwrap_or_default();
        match (spec.backup_name.is_empty(), schedule.is_empty()) {
            (true, true) | (false, false) => errors.push(
                "Either a backup or schedule must be specified as a source for the restore, but not both"
                    .to_owned(),
            ),
            _ => {}
        }
        for (field, name) in [
            ("backupName", &spec.backup_name),
            ("scheduleName", &schedule),
        ] {
            if let Some(why) = (!name.is_empty())
                .then(|| crate::api::bad_object_name(name))
                .flatten()
            {
                errors.push(format!("spec.{field}: {why}"));
            }
        }
        for e in validate_includes_excludes(&spec.included_resources, &spec.excluded_resources) {
            errors.push(format!("Invalid included/excluded resource lists: {e}"));
        }
        for e in validate_includes_excludes(&spec.included_namespaces, &spec.excluded_namespaces) {
            errors.push(format!("Invalid included/excluded namespace lists: {e}"));
        }
        for r in &spec.included_resources {
            if NON_RESTORABLE.contains(&r.as_str()) {
                errors.push(format!("{r} are non-restorable resources"));
            }
        }
        match spec.existing_resource_policy.as_deref() {
            None | Some("") | Some("none") | Some("update") => {}
            Some(other) => errors.push(format!(
                "invalid existingResourcePolicy {other:?}: expected none or update"
            )),
        }
        if spec.label_selector.is_some() && !spec.or_label_selectors.is_empty() {
            errors.push(
                "encountered labelSelector as well as orLabelSelectors in restore spec, only one can be specified"
                    .to_owned(),
            );
        }
        // Resource names resolve through this cluster's discovery; a name it does not serve
        // is kept as written and matches the tarball's directory of that name (a backup can
        // hold resources this cluster does not serve: they are skipped with warnings).
        let discovered = discover(&ctx.client).await.map_err(Error::from)?;
        if !errors.is_empty() {
            return Err(Stop::Invalid(errors));
        }

        let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let backup_name = if schedule.is_empty() {
            self.restore.spec.backup_name.clone()
        } else {
            let selector = format!("{}={}", labels::SCHEDULE_NAME, labels::value(&schedule));
            let list = backups
                .list(&ListParams::default().labels(&selector))
                .await?;
            let newest = list
                .items
                .iter()
                .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
                .max_by_key(|b| b.status.as_ref().and_then(|s| s.start_timestamp.clone()));
            match newest {
                Some(b) => b.name_any(),
                None => {
                    return Err(Stop::Invalid(vec![format!(
                        "No completed backups found for schedule {schedule}"
                    )]));
                }
            }
        };
        let Some(backup) = backups.get_opt(&backup_name).await? else {
            return Err(Stop::Invalid(vec![format!(
                "Error retrieving backup: backup.velero.io \"{backup_name}\" not found"
            )]));
        };
        let phase = backup.status.as_ref().and_then(|s| s.phase);
        if !matches!(
            phase,
            Some(BackupPhase::Completed | BackupPhase::PartiallyFailed)
        ) {
            return Err(Stop::Invalid(vec![format!(
                "backup {backup_name} is {}: only a Completed or PartiallyFailed backup can be restored",
                phase
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "New".into())
            )]));
        }
        let location_name = backup.spec.storage_location.clone().unwrap_or_default();
        let locations: Api<BackupStorageLocation> =
            Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let Some(location) = locations.get_opt(&location_name).await? else {
            return Err(Stop::Invalid(vec![format!(
                "Error getting backup storage location: backupstoragelocation.velero.io \"{location_name}\" not found"
            )]));
        };

        // Valid: record the backup (a schedule's restore names the one it chose), go InProgress.
        let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let patch = json!({
            "metadata": {"labels": {labels::BACKUP_NAME: labels::value(&backup_name)}},
            "spec": {"backupName": backup_name},
        });
        let updated = api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.restore = updated;
        let now = ctx.clock.now();
        self.started = now;
        let status = RestoreStatus {
            phase: Some(RestorePhase::InProgress),
            start_timestamp: Some(kube_time(now)),
            ..RestoreStatus::default()
        };
        ctx.patch_status_clearing::<Restore>(&self.name, &status, &["validationErrors"])
            .await?;
        self.info(&format!(
            "Starting restore of backup {}/{backup_name} from storage location {location_name}",
            ctx.namespace
        ));
        let store = ctx.open_location(&location).await.map_err(|source| {
            Stop::failed(Failure::OpenLocation {
                location: location_name.clone(),
                source,
            })
        })?;
        Ok(Prepared {
            backup,
            location,
            store,
            index: discovered.index,
        })
    }

    /// Downloads, restores every selected object, waits for the pod volumes, and records the
    /// final status and files.
    async fn execute(&mut self, prepared: &Prepared) -> Result<RestorePhase, Stop<Failure>> {
        let ctx = self.ctx;
        let backup_name = prepared.backup.name_any();
        let keys = BackupKeys::new(&backup_name);
        let bucket = &prepared.store.bucket;
        let scratch = Scratch::create(&ctx.settings.scratch_root())
            .map_err(|e| Stop::failed(Failure::Scratch(e)))?;
        let (size, contents) = self.unpack(&backup_name, bucket, scratch.path()).await?;
        self.info(&format!(
            "Downloaded and unpacked the backup's resources ({size} bytes)"
        ));

        let volume_backups = match bucket
            .get_at_most(&keys.pod_volume_backups(), layout::METADATA_LIMIT)
            .await
        {
            Ok(bytes) => layout::decode_list::<PodVolumeBackup>(&bytes).unwrap_or_else(|e| {
                self.results.warnings.velero.push(format!(
                    "the backup's pod volume list is unreadable ({}); no pod volume is restored",
                    chain(&e)
                ));
                Vec::new()
            }),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => {
                return Err(Stop::failed(Failure::VolumeList(e)));
            }
        };

        let mut walk = Walk::new(self, prepared, &contents, volume_backups)?;
        let reporter =
            crate::controller::report_progress::<Restore>(ctx, &self.name, walk.progress.clone());
        let walked = tokio::select! {
            r = walk.restore_all(&contents) => Some(r),
            _ = self.cancel.cancelled() => None,
        };
        reporter.abort();
        let (pods, walk_log) = match walked {
            Some(Ok(())) => (
                std::mem::take(&mut walk.pod_volumes),
                std::mem::take(&mut walk.log),
            ),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Stop::failed(Failure::ServerStopped));
            }
        };
        let (total, restored) = (
            walk.progress.0.load(Ordering::Relaxed),
            walk.progress.1.load(Ordering::Relaxed),
        );
        let mut results = std::mem::take(&mut walk.results);
        drop(walk);
        drop(contents);
        // The objects are restored: the unpacked tarball goes now, not after the pod volumes.
        drop(scratch);
        for line in walk_log {
            self.info(&line);
        }
        self.info(&format!("Restored {restored} of {total} items"));

        if !pods.is_empty() {
            let count: usize = pods.iter().map(|p| p.volumes.len()).sum();
            self.info(&format!(
                "Waiting for the pod volume restores of {count} volume(s) in {} pod(s)",
                pods.len()
            ));
            let volumes =
                volume_restore::run(ctx, &self.restore, &prepared.store, pods, &mut results);
            tokio::select! {
                r = volumes => r?,
                _ = self.cancel.cancelled() => {
                    return Err(Stop::failed(Failure::ServerStoppedDuringVolumes));
                }
            }
        }
        self.results = results;
        self.finish(prepared, total, restored).await
    }

    /// Streams the backup's tarball from the bucket into [`archive::extract`] on a blocking
    /// thread (download, gunzip and untar at once: neither the tarball nor an entry is ever
    /// whole in memory, and a limit reached stops the download), unpacking into `scratch`.
    /// Returns the bytes downloaded and the catalogue.
    async fn unpack(
        &self,
        backup_name: &str,
        bucket: &lifeboat_repo::Bucket,
        scratch: &std::path::Path,
    ) -> Result<(u64, BackupContents), Stop<Failure>> {
        let key = BackupKeys::new(backup_name).contents();
        let download_failed = |source: lifeboat_repo::StoreError| {
            Stop::failed(Failure::Download {
                backup: backup_name.to_owned(),
                key: key.clone(),
                source,
            })
        };
        let stream = bucket.get_stream(&key).await.map_err(download_failed)?;
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let download = async move {
            let mut stream = std::pin::pin!(stream);
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        size += bytes.len() as u64;
                        // A closed channel: the extraction ended (a limit, a corrupt stream).
                        if tx.send(Ok(bytes)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(std::io::Error::other("the download failed")))
                            .await;
                        return Err(e);
                    }
                }
            }
            Ok(size)
        };
        let dir = scratch.join("contents");
        let limits = self.ctx.settings.restore_limits;
        let extraction = tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|source| archive::ArchiveError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            archive::extract(archive::ChunkReader::new(rx), &dir, &limits)
        });
        let (downloaded, extracted) = tokio::join!(download, extraction);
        // A failed download shows in the extraction as a broken stream: say what happened.
        let size = downloaded.map_err(download_failed)?;
        let contents = extracted
            .map_err(|e| Stop::failed(Failure::ExtractionStopped(e)))?
            .map_err(|source| {
                Stop::failed(Failure::Unpack {
                    backup: backup_name.to_owned(),
                    source,
                })
            })?;
        Ok((size, contents))
    }

    /// Logs the results, writes the files, and sets the final status.
    async fn finish(
        &mut self,
        prepared: &Prepared,
        total: usize,
        restored: usize,
    ) -> Result<RestorePhase, Stop<Failure>> {
        let ctx = self.ctx;
        let results = std::mem::take(&mut self.results);
        self.log.results(ctx.clock.now(), &results);
        let errors = results.errors.count();
        let warnings = results.warnings.count();
        let phase = if errors > 0 {
            RestorePhase::PartiallyFailed
        } else {
            RestorePhase::Completed
        };
        self.info(&format!("Restore completed with status {phase:?}"));
        let log = std::mem::replace(&mut self.log, OperationLog::new("restore", "")).finish();
        let keys = RestoreKeys::new(&self.name);
        let location_name = prepared.location.name_any();
        let mut failure_reason = None;
        if prepared.store.read_only {
            tracing::info!(restore = %self.name, location = %location_name,
                "the location is ReadOnly: the restore's log and results are not written to it");
        } else {
            let files = [
                (keys.log(), Ok(Bytes::from(log))),
                (keys.results(), results.to_json_gz().map(Bytes::from)),
            ];
            for (key, bytes) in files {
                let written = match bytes {
                    Ok(bytes) => prepared
                        .store
                        .bucket
                        .put(&key, bytes)
                        .await
                        .map_err(|e| chain(&e)),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = written {
                    tracing::warn!(restore = %self.name, "cannot write {key}: {e}");
                    failure_reason = Some(format!(
                        "the restore's {key} could not be written to storage location {location_name}: {e}"
                    ));
                }
            }
        }
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let status = RestoreStatus {
            phase: Some(phase),
            completion_timestamp: Some(kube_time(ctx.clock.now())),
            errors: Some(count(errors)),
            warnings: Some(count(warnings)),
            failure_reason,
            progress: Some(RestoreProgress {
                total_items: Some(count(total)),
                items_restored: Some(count(restored)),
            }),
            ..RestoreStatus::default()
        };
        ctx.patch_status::<Restore>(&self.name, &status).await?;
        Ok(phase)
    }
}
