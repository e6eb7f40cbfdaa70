//! One backup from validation to its final status: the spec defaults filled in and checked
//! ([`Run::prepare`]), the resources it selects collected into a tarball streamed to its
//! storage location, its pod volumes handed to the agents ([`crate::podvolume::backup`]), the
//! companion files written, and every step recorded in the Backup's status.
//!
//! Phases: New → FailedValidation (nothing uploaded), or New → InProgress → Completed /
//! PartiallyFailed (some objects could not be backed up: the results name them) / Failed (the
//! backup as a whole could not be written: `status.failureReason` says why).
//!
//! Files reach the bucket in an order that keeps it consistent for readers that key on
//! `velero-backup.json` (bucket sync, Velero itself): the tarball streams first (invisible
//! until complete), then the log, the lists and the results, and `velero-backup.json` last.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::{
    Backup, BackupPhase, BackupStatus, BackupStorageLocation, Lenient, LocationPhase,
    VolumeSnapshotLocation, labels,
};
use crate::backup::layout::BackupKeys;
use crate::backup::log::{Level, OperationLog};
use crate::backup::upload::StreamingTarball;
use crate::backup::{
    BackupFilter, BackupResults, CollectOptions, FORMAT_VERSION, collect, discover, json_gz,
    validate,
};
use crate::clock::kube_time;
use crate::controller::Context;
use crate::controller::operation::{Stop, mark_failed};
use crate::duration::{go_duration, parse_duration};
use crate::error::{Error, Result};
use crate::podvolume::backup::back_up_pod_volumes;
use crate::storage::{LocationStore, chain};

/// Why a backup failed as a whole. With its cause, the Backup's `failureReason`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("cannot open storage location {location}")]
    OpenLocation {
        location: String,
        #[source]
        source: crate::controller::OpenLocationError,
    },
    #[error("backup already exists in object storage (storage location {location})")]
    AlreadyInBucket { location: String },
    #[error("cannot check storage location {location} for an existing backup")]
    CheckBucket {
        location: String,
        #[source]
        source: lifeboat_repo::StoreError,
    },
    #[error(transparent)]
    Selector(crate::backup::SelectorError),
    #[error("cannot start the upload to storage location {location}")]
    StartUpload {
        location: String,
        #[source]
        source: lifeboat_repo::StoreError,
    },
    #[error("collection stopped")]
    Collection(#[source] crate::backup::Error),
    #[error("the server was stopped during the backup; create the backup again")]
    ServerStopped,
    #[error("cannot upload the resources to storage location {location}")]
    Upload {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server was stopped during the backup's pod volumes; create the backup again")]
    ServerStoppedDuringVolumes,
    #[error("cannot write the backup's files to storage location {location}")]
    Persist {
        location: String,
        #[source]
        source: PersistError,
    },
}

/// The schedule a backup was taken by (its label), or empty: the metrics' label.
pub(crate) fn schedule_of(backup: &Backup) -> String {
    backup
        .labels()
        .get(labels::SCHEDULE_NAME)
        .cloned()
        .unwrap_or_default()
}

/// One backup from validation to its final status.
pub(crate) struct Run<'a> {
    ctx: &'a Context,
    backup: Backup,
    name: String,
    log: OperationLog,
    cancel: CancellationToken,
    started: Timestamp,
    /// The backup's TTL, once `prepare` has resolved it.
    ttl: Duration,
}

/// A validated backup's storage location, opened, and the resources the API server serves.
struct Prepared {
    location: BackupStorageLocation,
    store: LocationStore,
    discovered: crate::backup::DiscoveredResources,
}

impl<'a> Run<'a> {
    pub(crate) fn new(ctx: &'a Context, backup: &Backup, cancel: CancellationToken) -> Run<'a> {
        let name = backup.name_any();
        Run {
            ctx,
            log: OperationLog::new("backup", &format!("{}/{name}", ctx.namespace)),
            backup: backup.clone(),
            name,
            cancel,
            started: ctx.clock.now(),
            ttl: ctx.settings.default_backup_ttl,
        }
    }

    fn info(&mut self, msg: &str) {
        self.log.line(self.ctx.clock.now(), Level::Info, msg);
    }

    pub(crate) async fn go(mut self) -> Result<()> {
        let schedule = schedule_of(&self.backup);
        self.ctx.metrics.backup_attempted(&schedule);
        let location = match self.prepare().await {
            Ok(location) => location,
            Err(Stop::Invalid(errors)) => {
                for e in &errors {
                    tracing::warn!(backup = %self.name, "validation: {e}");
                }
                // Expires like any other backup, so garbage collection removes it in time.
                let now = self.ctx.clock.now();
                let status = BackupStatus {
                    phase: Some(BackupPhase::FailedValidation),
                    validation_errors: errors,
                    version: Some(1),
                    format_version: Some(FORMAT_VERSION.to_owned()),
                    expiration: Some(kube_time(expires(now, self.ttl))),
                    ..BackupStatus::default()
                };
                self.ctx.patch_status::<Backup>(&self.name, &status).await?;
                self.ctx
                    .metrics
                    .backup_finished(&schedule, BackupPhase::FailedValidation);
                return Ok(());
            }
            Err(Stop::Failed(failure)) => {
                mark_failed::<Backup>(self.ctx, &self.name, &chain(&failure)).await?;
                self.ctx
                    .metrics
                    .backup_finished(&schedule, BackupPhase::Failed);
                return Ok(());
            }
            Err(Stop::Api(e)) => return Err(e),
        };
        match self.execute(&location).await {
            Ok(phase) => {
                let elapsed = self.ctx.clock.now().duration_since(self.started);
                self.ctx.metrics.backup_finished(&schedule, phase);
                self.ctx
                    .metrics
                    .backup_duration(&schedule, elapsed.as_secs_f64().max(0.0));
                Ok(())
            }
            Err(Stop::Failed(failure)) => {
                self.ctx
                    .metrics
                    .backup_finished(&schedule, BackupPhase::Failed);
                mark_failed::<Backup>(self.ctx, &self.name, &chain(&failure)).await
            }
            Err(Stop::Invalid(errors)) => {
                // Only `prepare` yields these.
                mark_failed::<Backup>(self.ctx, &self.name, &errors.join("; ")).await
            }
            Err(Stop::Api(e)) => {
                // The backup did run but its status could not be written: say so once more
                // rather than leave it InProgress.
                let reason = format!("the Kubernetes API failed during the backup: {}", chain(&e));
                let _ = mark_failed::<Backup>(self.ctx, &self.name, &reason).await;
                Err(e)
            }
        }
    }

    /// Fills in the defaults, validates, and moves the Backup to InProgress.
    async fn prepare(&mut self) -> Result<Prepared, Stop<Failure>> {
        let ctx = self.ctx;
        let settings = &ctx.settings;
        let mut errors = Vec::new();
        let spec = &mut self.backup.spec;

        let ttl = match spec.ttl.as_deref().map(str::trim) {
            None | Some("") | Some("0") | Some("0s") => settings.default_backup_ttl,
            Some(text) => match parse_duration(text) {
                Some(ttl) => ttl,
                None => {
                    errors.push(format!(
                        "invalid ttl {text:?}: expected a duration such as 720h0m0s"
                    ));
                    settings.default_backup_ttl
                }
            },
        };
        spec.ttl = Some(go_duration(ttl));
        self.ttl = ttl;
        if spec.default_volumes_to_restic.is_none() {
            spec.default_volumes_to_restic = Some(
                spec.default_volumes_to_fs_backup
                    .unwrap_or(settings.default_volumes_to_restic),
            );
        }

        let locations: Api<BackupStorageLocation> =
            Api::namespaced(ctx.client.clone(), &ctx.namespace);
        if spec.storage_location.as_deref().unwrap_or("").is_empty() {
            let all = Api::<Lenient<BackupStorageLocation>>::namespaced(
                ctx.client.clone(),
                &ctx.namespace,
            )
            .list(&ListParams::default())
            .await?;
            let marked = all
                .items
                .iter()
                .filter_map(Lenient::ok)
                .find(|l| l.spec.default)
                .map(|l| l.name_any());
            spec.storage_location =
                Some(marked.unwrap_or_else(|| settings.default_backup_location.clone()));
        }
        let location_name = spec.storage_location.clone().unwrap_or_default();
        let bad_name = crate::api::bad_object_name(&location_name);
        let location = match &bad_name {
            Some(_) => None,
            None => locations.get_opt(&location_name).await?,
        };
        match &location {
            None if bad_name.is_some() => errors.push(format!(
                "spec.storageLocation: {}",
                bad_name.clone().unwrap_or_default()
            )),
            None => errors.push(format!(
                "a BackupStorageLocation CRD with the name specified in the backup spec needs to \
                 be created before this backup can be executed: backupstoragelocations.velero.io \
                 \"{location_name}\" not found"
            )),
            Some(bsl) if bsl.spec.access_mode.as_deref() == Some("ReadOnly") => {
                errors.push(format!(
                    "backup can't be created because backup storage location {location_name} is \
                 currently in read-only mode"
                ))
            }
            Some(bsl) => match bsl.status.as_ref().and_then(|s| s.phase) {
                Some(LocationPhase::Available) => {}
                Some(LocationPhase::Unavailable) => errors.push(format!(
                    "backup can't be created because backup storage location {location_name} is \
                     unavailable: {}",
                    bsl.status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_else(|| "it did not validate".into())
                )),
                // Not validated yet (a location created a moment ago): wait for the verdict.
                _ => {
                    return Err(Stop::Api(Error::NotReady(format!(
                        "backup storage location {location_name} has not been validated yet"
                    ))));
                }
            },
        }

        match self.snapshot_locations().await {
            Ok(names) => self.backup.spec.volume_snapshot_locations = names,
            Err(Stop::Invalid(mut more)) => errors.append(&mut more),
            Err(other) => return Err(other),
        }

        let discovered = discover(&ctx.client).await.map_err(Error::from)?;
        errors.extend(validate(&self.backup.spec, &discovered.index));
        if !errors.is_empty() {
            self.write_spec().await?;
            return Err(Stop::Invalid(errors));
        }
        let Some(location) = location else {
            return Err(Stop::Invalid(errors));
        };

        // Valid: record the defaults and labels, then go InProgress.
        self.write_spec().await?;
        let now = ctx.clock.now();
        self.started = now;
        let expiration = expires(now, ttl);
        let status = BackupStatus {
            phase: Some(BackupPhase::InProgress),
            version: Some(1),
            format_version: Some(FORMAT_VERSION.to_owned()),
            start_timestamp: Some(kube_time(now)),
            expiration: Some(kube_time(expiration)),
            ..BackupStatus::default()
        };
        ctx.patch_status_clearing::<Backup>(&self.name, &status, &["validationErrors"])
            .await?;
        self.info(&format!(
            "Starting backup to storage location {location_name} (expires {})",
            kube_time(expiration).0
        ));
        let store = ctx.open_location(&location).await.map_err(|source| {
            Stop::failed(Failure::OpenLocation {
                location: location_name.clone(),
                source,
            })
        })?;
        Ok(Prepared {
            location,
            store,
            discovered,
        })
    }

    /// The spec defaults and Velero's labels and annotations, on the object itself.
    async fn write_spec(&mut self) -> Result<(), Stop<Failure>> {
        let ctx = self.ctx;
        let spec = &self.backup.spec;
        let location = spec.storage_location.clone().unwrap_or_default();
        let version = ctx.server_version.clone();
        // A name that is no object's name is no label value either (it failed validation).
        let label = crate::api::bad_object_name(&location)
            .is_none()
            .then(|| labels::value(&location));
        let patch = json!({
            "metadata": {
                "labels": {labels::STORAGE_LOCATION: label},
                "annotations": {
                    labels::SOURCE_CLUSTER_GIT_VERSION: version.git_version,
                    labels::SOURCE_CLUSTER_MAJOR: version.major,
                    labels::SOURCE_CLUSTER_MINOR: version.minor,
                },
            },
            "spec": {
                "storageLocation": location,
                "ttl": spec.ttl,
                "defaultVolumesToRestic": spec.default_volumes_to_restic,
                "volumeSnapshotLocations": spec.volume_snapshot_locations,
            },
        });
        let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let updated = api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::from)?;
        // Keep what the API server made of it (labels, resourceVersion) for velero-backup.json.
        self.backup.metadata = updated.metadata;
        Ok(())
    }

    /// Velero's choice of volume snapshot locations: each named one must exist, at most one
    /// per provider, and a provider's only location (or the server's default for it) is added.
    /// With `snapshotVolumes: false` there are none.
    async fn snapshot_locations(&self) -> Result<Vec<String>, Stop<Failure>> {
        if self.backup.spec.snapshot_volumes == Some(false) {
            return Ok(Vec::new());
        }
        let api: Api<VolumeSnapshotLocation> =
            Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
        let all = api
            .list(&ListParams::default())
            .await
            .map_err(Error::from)?;
        let mut chosen: BTreeMap<String, String> = BTreeMap::new();
        let mut errors = Vec::new();
        for name in &self.backup.spec.volume_snapshot_locations {
            let Some(vsl) = all.items.iter().find(|v| v.name_any() == *name) else {
                errors.push(format!(
                    "a VolumeSnapshotLocation CRD for the location {name} with the name specified \
                     in the backup spec needs to be created before this snapshot can be executed"
                ));
                continue;
            };
            match chosen.get(&vsl.spec.provider) {
                Some(other) if other != name => errors.push(format!(
                    "more than one VolumeSnapshotLocation name specified for provider {}: {name}; \
                     unexpected name was {other}",
                    vsl.spec.provider
                )),
                _ => {
                    chosen.insert(vsl.spec.provider.clone(), name.clone());
                }
            }
        }
        if !errors.is_empty() {
            return Err(Stop::Invalid(errors));
        }
        let mut by_provider: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for vsl in &all.items {
            by_provider
                .entry(vsl.spec.provider.as_str())
                .or_default()
                .push(vsl.name_any());
        }
        for (provider, names) in by_provider {
            if chosen.contains_key(provider) {
                continue;
            }
            match (
                names.as_slice(),
                self.ctx.settings.default_snapshot_locations.get(provider),
            ) {
                ([only], _) => {
                    chosen.insert(provider.to_owned(), only.clone());
                }
                (_, Some(default)) if names.contains(default) => {
                    chosen.insert(provider.to_owned(), default.clone());
                }
                _ => errors.push(format!(
                    "provider {provider} has more than one possible volume snapshot location, and \
                     none were specified explicitly or as a default"
                )),
            }
        }
        if !errors.is_empty() {
            return Err(Stop::Invalid(errors));
        }
        Ok(chosen.into_values().collect())
    }

    /// Collects and uploads; returns the final phase. Every file is written, or the backup is
    /// Failed and what was written is removed.
    async fn execute(&mut self, prepared: &Prepared) -> Result<BackupPhase, Stop<Failure>> {
        let Prepared {
            location,
            store,
            discovered,
        } = prepared;
        let ctx = self.ctx;
        let keys = BackupKeys::new(&self.name);
        let bucket = &store.bucket;
        let location_name = location.name_any();
        match bucket.exists(&keys.metadata()).await {
            Ok(false) => {}
            Ok(true) => {
                return Err(Stop::failed(Failure::AlreadyInBucket {
                    location: location_name,
                }));
            }
            Err(source) => {
                return Err(Stop::failed(Failure::CheckBucket {
                    location: location_name,
                    source,
                }));
            }
        }

        let index = &discovered.index;
        let filter = BackupFilter::new(&self.backup.spec, index)
            .map_err(|e| Stop::failed(Failure::Selector(e)))?;
        let mtime = u64::try_from(self.started.as_second()).unwrap_or(0);
        let mut tarball = StreamingTarball::start(bucket, &keys.contents(), mtime)
            .await
            .map_err(|source| {
                Stop::failed(Failure::StartUpload {
                    location: location_name.clone(),
                    source,
                })
            })?;

        let progress = crate::controller::ItemProgress::default();
        let reporter =
            crate::controller::report_progress::<Backup>(ctx, &self.name, progress.clone());

        self.info("Backing up resources");
        let collected = {
            let progress = progress.clone();
            let options = CollectOptions::default();
            let work = collect(
                &ctx.client,
                index,
                &filter,
                &options,
                &mut tarball,
                move |total, done| {
                    progress.0.store(total, Ordering::Relaxed);
                    progress.1.store(done, Ordering::Relaxed);
                },
            );
            tokio::select! {
                r = work => Some(r),
                _ = self.cancel.cancelled() => None,
            }
        };
        reporter.abort();
        let stats = match collected {
            Some(Ok(stats)) => stats,
            Some(Err(e)) => {
                tarball.abort().await;
                return Err(Stop::failed(Failure::Collection(e)));
            }
            None => {
                tarball.abort().await;
                return Err(Stop::failed(Failure::ServerStopped));
            }
        };
        let tarball_size = tarball.finish().await.map_err(|source| {
            Stop::failed(Failure::Upload {
                location: location_name.clone(),
                source,
            })
        })?;

        let mut results = stats.results;
        let pods: Vec<(String, String)> = stats
            .resource_list
            .entries()
            .get("v1/Pod")
            .into_iter()
            .flatten()
            .filter_map(|p| p.split_once('/'))
            .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
            .collect();
        if !pods.is_empty() {
            self.info("Backing up pod volumes");
        }
        let volumes = back_up_pod_volumes(ctx, &self.backup, store, &pods, &mut results);
        let volume_backups = tokio::select! {
            r = volumes => r?,
            _ = self.cancel.cancelled() => {
                return Err(Stop::failed(Failure::ServerStoppedDuringVolumes));
            }
        };
        if !volume_backups.is_empty() {
            let failed = volume_backups
                .iter()
                .filter(|p| {
                    p.status.as_ref().and_then(|s| s.phase)
                        != Some(crate::api::PodVolumePhase::Completed)
                })
                .count();
            self.info(&format!(
                "Pod volume backups: {} completed, {failed} failed",
                volume_backups.len() - failed
            ));
        }
        for group in &discovered.unreachable_groups {
            results.warnings.velero.push(format!(
                "API group {group} did not answer discovery; its resources are not backed up"
            ));
        }
        self.warn_unprotected_volumes(&stats.resource_list, &mut results);
        self.log.results(ctx.clock.now(), &results);
        let items = stats.items_backed_up;
        self.info(&format!(
            "Backed up a total of {items} items ({tarball_size} bytes compressed)"
        ));

        let errors = results.errors.count();
        let warnings = results.warnings.count();
        let phase = if errors > 0 {
            BackupPhase::PartiallyFailed
        } else {
            BackupPhase::Completed
        };
        let completed = ctx.clock.now();
        self.info(&format!("Backup completed with status {phase:?}"));

        // The final status, written into velero-backup.json first and then onto the object.
        let mut status = self.backup.status.clone().unwrap_or_default();
        status.phase = Some(phase);
        status.version = Some(1);
        status.format_version = Some(FORMAT_VERSION.into());
        status.start_timestamp = Some(kube_time(self.started));
        status.expiration = Some(kube_time(expires(self.started, self.ttl)));
        status.completion_timestamp = Some(kube_time(completed));
        status.errors = Some(errors as i64);
        status.warnings = Some(warnings as i64);
        status.progress = Some(crate::api::BackupProgress {
            total_items: Some(items as i64),
            items_backed_up: Some(items as i64),
        });
        status.volume_snapshots_attempted = Some(0);
        status.volume_snapshots_completed = Some(0);
        status.validation_errors = Vec::new();
        let mut finished = self.backup.clone();
        finished.status = Some(status.clone());
        let log = std::mem::replace(&mut self.log, OperationLog::new("backup", "")).finish();

        let companions = Companions {
            finished: &finished,
            resource_list: &stats.resource_list,
            results: &results,
            volume_backups: &volume_backups,
            log,
        };
        if let Err(e) = persist(bucket, &keys, companions).await {
            for key in [keys.metadata(), keys.contents()] {
                let _ = bucket.delete(&key).await;
            }
            return Err(Stop::failed(Failure::Persist {
                location: location_name,
                source: e,
            }));
        }
        ctx.metrics
            .backup_tarball_size(&schedule_of(&self.backup), tarball_size);
        if phase == BackupPhase::Completed {
            ctx.metrics
                .backup_last_success(&schedule_of(&self.backup), completed.as_second());
        }
        ctx.patch_status::<Backup>(&self.name, &status).await?;
        Ok(phase)
    }

    /// PersistentVolumes backed up as objects only: no volume snapshot provider runs here, so
    /// their data is protected only where pod volume backup covers them. One warning names them.
    fn warn_unprotected_volumes(
        &self,
        resources: &crate::backup::ResourceList,
        results: &mut BackupResults,
    ) {
        if self.backup.spec.snapshot_volumes == Some(false) {
            return;
        }
        let volumes = resources
            .entries()
            .get("v1/PersistentVolume")
            .cloned()
            .unwrap_or_default();
        if volumes.is_empty() {
            return;
        }
        results.warnings.velero.push(format!(
            "no volume snapshots were taken (no volume snapshot provider is configured): the data \
             of persistent volume(s) {} is protected only where pod volume backup covers it \
             (annotation backup.velero.io/backup-volumes or --default-volumes-to-restic)",
            volumes.join(", ")
        ));
    }
}

/// What is written next to the tarball.
struct Companions<'a> {
    /// The Backup with its final status.
    finished: &'a Backup,
    resource_list: &'a crate::backup::ResourceList,
    results: &'a BackupResults,
    volume_backups: &'a [crate::api::PodVolumeBackup],
    /// The gzip-compressed log.
    log: Vec<u8>,
}

/// Why a backup's companion files could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    #[error("cannot encode {key}")]
    Encode {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}")]
    Put {
        key: String,
        #[source]
        source: lifeboat_repo::StoreError,
    },
}

/// The companion files, then `velero-backup.json` (whose presence makes the backup exist for
/// readers of the bucket).
async fn persist(
    bucket: &lifeboat_repo::Bucket,
    keys: &BackupKeys,
    c: Companions<'_>,
) -> std::result::Result<(), PersistError> {
    let none: Option<Vec<serde_json::Value>> = None;
    // Velero encodes a nil list as `null`.
    let volume_list = (!c.volume_backups.is_empty()).then_some(c.volume_backups);
    let files = [
        (keys.log(), Ok(c.log)),
        (keys.pod_volume_backups(), json_gz(&volume_list)),
        (keys.volume_snapshots(), json_gz(&none)),
        (keys.csi_volume_snapshots(), json_gz(&none)),
        (keys.csi_volume_snapshot_contents(), json_gz(&none)),
        (keys.resource_list(), c.resource_list.to_json_gz()),
        (keys.results(), c.results.to_json_gz()),
        (keys.metadata(), velero_backup_json(c.finished)),
    ];
    for (key, bytes) in files {
        let bytes = match bytes {
            Ok(bytes) => Bytes::from(bytes),
            Err(source) => return Err(PersistError::Encode { key, source }),
        };
        bucket
            .put(&key, bytes)
            .await
            .map_err(|source| PersistError::Put { key, source })?;
    }
    Ok(())
}

/// `velero-backup.json`: the Backup as Velero encodes it (`apiVersion`, `kind`, `metadata`
/// without the managed fields, `spec`, `status`).
fn velero_backup_json(backup: &Backup) -> std::io::Result<Vec<u8>> {
    let mut backup = backup.clone();
    backup.metadata.managed_fields = None;
    let mut value = serde_json::to_value(&backup)?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("apiVersion".into(), json!(Backup::api_version(&())));
        fields.insert("kind".into(), json!(Backup::kind(&())));
    }
    let mut bytes = serde_json::to_vec(&value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// When a backup started at `start` with `ttl` expires.
fn expires(start: Timestamp, ttl: Duration) -> Timestamp {
    start
        .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or_default())
        .unwrap_or(Timestamp::MAX)
}
