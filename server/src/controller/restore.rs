//! The Restore controller: validates each new Restore, unpacks its backup's tarball into a
//! private scratch directory as it downloads, within the server's limits (the bucket is not
//! trusted: see [`archive`]; past a limit the restore fails and nothing is created), reads the
//! objects one at a time, creates the selected objects in Velero's priority order, hands pod
//! volumes to the agents, and records the results.
//!
//! Phases: New → FailedValidation (nothing created), or New → InProgress → Completed /
//! PartiallyFailed (some objects or volumes could not be restored: the results name them) /
//! Failed (the restore as a whole could not run: `status.failureReason` says why). A Restore
//! found InProgress that this process is not running was left by a server that stopped: it is
//! marked Failed at once.
//!
//! Per object, in order: the resource and namespace filters and the label selector (on the
//! backed-up labels); the API version must be served by this cluster (restored CRDs are waited
//! for), else a warning names the object; [`transform::prepare`] resets what must not be
//! restored and maps the namespace; a pod whose volumes were backed up gets the `restic-wait`
//! init container ([`volume_restore`](super::volume_restore)). An object that already exists is
//! never overwritten: identical is fine, different is a warning, or an update with
//! `existingResourcePolicy: update`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::volume_restore::{self, PodVolumes};
use super::{Context, log_reconciles, retry_after};
use crate::api::{
    Backup, BackupPhase, BackupSpec, BackupStorageLocation, Lenient, PodVolumeBackup, Restore,
    RestorePhase, labels,
};
use crate::backup::layout::{BackupKeys, RestoreKeys};
use crate::backup::log::{Level, OperationLog};
use crate::backup::{
    BackupFilter, BackupResults, ResourceIndex, discover, validate_includes_excludes,
};
use crate::clock::kube_time;
use crate::error::{Error, Result};
use crate::restore::archive::{self, BackupContents};
use crate::restore::scratch::Scratch;
use crate::restore::transform::{self, Restoring};
use crate::storage::{LocationStore, chain};

const NAME: &str = "restore";

/// Restores run at once. Each mostly waits on the API server and the agents; two keep a long
/// pod volume restore from holding up a quick one.
const CONCURRENCY: u16 = 2;

/// Download chunks queued for the extraction: a few response chunks (object_store's are tens
/// of KiB), so a slow extraction slows the download instead of filling memory.
const CHUNKS_IN_FLIGHT: usize = 8;

/// How long a CRD restored by this restore may take to be served before its objects are
/// given up (with an error naming them).
const CRD_WAIT: Duration = Duration::from_secs(60);

/// Resources never restored (Velero's `nonRestorableResources`): they describe the source
/// cluster or Velero's own bookkeeping, and restoring them would confuse both.
const NON_RESTORABLE: &[&str] = &[
    "nodes",
    "events",
    "events.events.k8s.io",
    "backups.velero.io",
    "restores.velero.io",
    "resticrepositories.velero.io",
];

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<Restore>> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let rctx = Arc::new(RestoreContext {
        ctx,
        shutdown: shutdown.clone(),
    });
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .with_config(Config::default().concurrency(CONCURRENCY))
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, rctx),
    )
    .await;
}

struct RestoreContext {
    ctx: Arc<Context>,
    shutdown: CancellationToken,
}

async fn reconcile(restore: Arc<Lenient<Restore>>, rctx: Arc<RestoreContext>) -> Result<Action> {
    let Some(restore) = super::readable(&rctx.ctx, &restore, true).await else {
        return Ok(Action::await_change());
    };
    let ctx = &rctx.ctx;
    let uid = restore.uid().unwrap_or_default();
    let phase = |r: &Restore| r.status.as_ref().and_then(|s| s.phase);
    if !matches!(
        phase(&restore),
        None | Some(RestorePhase::New | RestorePhase::InProgress)
    ) || ctx.running_restores.contains(&uid)
    {
        return Ok(Action::await_change());
    }
    // Decide on the API server's copy, never on a watch that may lag our own writes.
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(current) = api.get_opt(&restore.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if current.uid() != restore.uid() || current.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    match phase(&current) {
        None | Some(RestorePhase::New) => {}
        Some(RestorePhase::InProgress) => {
            let reason = "the server stopped while this restore was in progress; what it \
                          created is left in place: create the restore again to finish it";
            volume_restore::fail_abandoned(ctx, &current, reason).await?;
            mark_failed(ctx, &current.name_any(), reason).await?;
            return Ok(Action::await_change());
        }
        _ => return Ok(Action::await_change()),
    }
    if !ctx.running_restores.start(&uid) {
        return Ok(Action::await_change());
    }
    let outcome = Run::new(ctx, current, rctx.shutdown.clone()).go().await;
    ctx.running_restores.end(&uid);
    ctx.metrics.reconciled(NAME, outcome.is_ok());
    outcome.map(|()| Action::await_change())
}

fn error_policy(
    restore: Arc<Lenient<Restore>>,
    error: &Error,
    rctx: Arc<RestoreContext>,
) -> Action {
    rctx.ctx.metrics.reconciled(NAME, false);
    tracing::warn!(restore = %restore.name_any(), "reconcile failed: {}", chain(error));
    retry_after(error)
}

async fn mark_failed(ctx: &Context, name: &str, reason: &str) -> Result<()> {
    tracing::warn!(restore = %name, "restore failed: {reason}");
    let status = json!({
        "phase": RestorePhase::Failed,
        "failureReason": reason,
        "completionTimestamp": kube_time(ctx.clock.now()),
    });
    ctx.patch_status::<Restore>(name, status).await
}

/// What stops a restore before it completes.
enum Stop {
    /// The spec cannot be run; nothing was created.
    Invalid(Vec<String>),
    /// The restore as a whole failed.
    Failed(String),
    /// The Kubernetes API failed; the reconcile is retried.
    Api(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Api(e)
    }
}

impl From<kube::Error> for Stop {
    fn from(e: kube::Error) -> Self {
        Stop::Api(e.into())
    }
}

/// A validated restore's backup and where it is stored.
struct Prepared {
    backup: Backup,
    location: BackupStorageLocation,
    store: LocationStore,
    index: ResourceIndex,
}

/// One restore from validation to its final status.
struct Run<'a> {
    ctx: &'a Context,
    restore: Restore,
    name: String,
    log: OperationLog,
    results: BackupResults,
    cancel: CancellationToken,
    started: Timestamp,
}

impl<'a> Run<'a> {
    fn new(ctx: &'a Context, restore: Restore, cancel: CancellationToken) -> Run<'a> {
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

    async fn go(mut self) -> Result<()> {
        let schedule = self.restore.spec.schedule_name.clone().unwrap_or_default();
        let metrics = self.ctx.metrics.clone();
        metrics.restore_attempted(&schedule);
        let prepared = match self.prepare().await {
            Ok(p) => p,
            Err(Stop::Invalid(errors)) => {
                for e in &errors {
                    tracing::warn!(restore = %self.name, "validation: {e}");
                }
                let status = json!({
                    "phase": RestorePhase::FailedValidation,
                    "validationErrors": errors,
                    "completionTimestamp": kube_time(self.ctx.clock.now()),
                });
                metrics.restore_finished(&schedule, "FailedValidation");
                return self.ctx.patch_status::<Restore>(&self.name, status).await;
            }
            Err(Stop::Failed(reason)) => {
                metrics.restore_finished(&schedule, "Failed");
                return mark_failed(self.ctx, &self.name, &reason).await;
            }
            Err(Stop::Api(e)) => return Err(e),
        };
        let outcome = self.execute(&prepared).await;
        metrics.restore_finished(
            &schedule,
            match &outcome {
                Ok(phase) => phase,
                Err(_) => "Failed",
            },
        );
        match outcome {
            Ok(_) => Ok(()),
            Err(Stop::Failed(reason)) => mark_failed(self.ctx, &self.name, &reason).await,
            Err(Stop::Invalid(errors)) => {
                mark_failed(self.ctx, &self.name, &errors.join("; ")).await
            }
            Err(Stop::Api(e)) => {
                let reason = format!(
                    "the Kubernetes API failed during the restore: {}",
                    chain(&e)
                );
                let _ = mark_failed(self.ctx, &self.name, &reason).await;
                Err(e)
            }
        }
    }

    /// Resolves the backup (or the schedule's newest usable one), validates, goes InProgress.
    async fn prepare(&mut self) -> Result<Prepared, Stop> {
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
        let status = json!({
            "phase": RestorePhase::InProgress,
            "startTimestamp": kube_time(now),
            "validationErrors": null,
        });
        ctx.patch_status::<Restore>(&self.name, status).await?;
        self.info(&format!(
            "Starting restore of backup {}/{backup_name} from storage location {location_name}",
            ctx.namespace
        ));
        let store = ctx.open_location(&location).await.map_err(|e| {
            Stop::Failed(format!("cannot open storage location {location_name}: {e}"))
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
    async fn execute(&mut self, prepared: &Prepared) -> Result<&'static str, Stop> {
        let ctx = self.ctx;
        let backup_name = prepared.backup.name_any();
        let keys = BackupKeys::new(&backup_name);
        let bucket = &prepared.store.bucket;
        let scratch =
            Scratch::create(&ctx.settings.scratch_root()).map_err(|e| Stop::Failed(chain(&e)))?;
        let (size, contents) = self.unpack(&backup_name, bucket, scratch.path()).await?;
        self.info(&format!(
            "Downloaded and unpacked the backup's resources ({size} bytes)"
        ));

        let volume_backups = match bucket
            .get_at_most(&keys.pod_volume_backups(), super::sync::METADATA_LIMIT)
            .await
        {
            Ok(bytes) => super::sync::decode_list::<PodVolumeBackup>(&bytes).unwrap_or_else(|e| {
                self.results.warnings.velero.push(format!(
                    "the backup's pod volume list is unreadable ({e}); no pod volume is restored"
                ));
                Vec::new()
            }),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => {
                return Err(Stop::Failed(format!(
                    "cannot read the backup's pod volume list: {}",
                    chain(&e)
                )));
            }
        };

        let mut walk = Walk::new(self, prepared, &contents, volume_backups)?;
        let reporter = super::report_progress::<Restore>(
            ctx,
            &self.name,
            "itemsRestored",
            walk.progress.clone(),
        );
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
                return Err(Stop::Failed(
                    "the server was stopped during the restore; create the restore again".into(),
                ));
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
                    return Err(Stop::Failed(
                        "the server was stopped during the restore's pod volumes; create the restore again".into(),
                    ));
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
    ) -> Result<(u64, BackupContents), Stop> {
        let key = BackupKeys::new(backup_name).contents();
        let download_failed = |e: &lifeboat_repo::StoreError| {
            Stop::Failed(format!(
                "cannot download the resources of backup {backup_name} ({key}): {}",
                chain(e)
            ))
        };
        let stream = bucket
            .get_stream(&key)
            .await
            .map_err(|e| download_failed(&e))?;
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
        let size = downloaded.map_err(|e| download_failed(&e))?;
        let contents = extracted
            .map_err(|e| Stop::Failed(format!("the extraction stopped: {e}")))?
            .map_err(|e| {
                Stop::Failed(format!(
                    "cannot unpack the resources of backup {backup_name}, so nothing was restored: {}",
                    chain(&e)
                ))
            })?;
        Ok((size, contents))
    }

    /// Logs the results, writes the files, and sets the final status.
    async fn finish(
        &mut self,
        prepared: &Prepared,
        total: usize,
        restored: usize,
    ) -> Result<&'static str, Stop> {
        let ctx = self.ctx;
        let results = std::mem::take(&mut self.results);
        for (level, messages) in [
            (Level::Warning, &results.warnings),
            (Level::Error, &results.errors),
        ] {
            for m in messages.velero.iter().chain(&messages.cluster) {
                self.log.line(ctx.clock.now(), level, m);
            }
            for (ns, list) in &messages.namespaces {
                for m in list {
                    self.log
                        .line(ctx.clock.now(), level, &format!("namespace {ns}: {m}"));
                }
            }
        }
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
        let status = json!({
            "phase": phase,
            "completionTimestamp": kube_time(ctx.clock.now()),
            "errors": errors,
            "warnings": warnings,
            "failureReason": failure_reason,
            "progress": {"totalItems": total, "itemsRestored": restored},
        });
        ctx.patch_status::<Restore>(&self.name, status).await?;
        Ok(match phase {
            RestorePhase::Completed => "Completed",
            _ => "PartiallyFailed",
        })
    }
}

/// The walk over the tarball's objects.
struct Walk<'r> {
    ctx: &'r Context,
    restore: &'r Restore,
    restoring: Restoring,
    filter: BackupFilter,
    update_existing: bool,
    restore_volumes: bool,
    /// Pod volume backups by (source namespace, pod name).
    volume_backups: BTreeMap<(String, String), Vec<PodVolumeBackup>>,
    /// Claims whose data comes back through pod volume restores: (source namespace, claim).
    claims_with_data: BTreeSet<(String, String)>,
    /// Target namespaces known to exist.
    namespaces: HashSet<String>,
    /// CRDs this restore created (`plural.group`), whose objects wait for them to be served.
    restored_crds: HashSet<String>,
    /// Served resources by group/version (`None`: the version is not served).
    served: HashMap<String, Option<Vec<String>>>,
    /// (total, restored).
    progress: super::ItemProgress,
    results: BackupResults,
    /// Pods restored with volumes to fill.
    pod_volumes: Vec<PodVolumes>,
    /// Lines for the restore log.
    log: Vec<String>,
}

impl<'r> Walk<'r> {
    fn new(
        run: &'r Run<'_>,
        prepared: &'r Prepared,
        contents: &BackupContents,
        volume_backups: Vec<PodVolumeBackup>,
    ) -> Result<Walk<'r>, Stop> {
        let spec = &run.restore.spec;
        let as_backup = BackupSpec {
            included_namespaces: spec.included_namespaces.clone(),
            excluded_namespaces: spec.excluded_namespaces.clone(),
            included_resources: spec.included_resources.clone(),
            excluded_resources: spec.excluded_resources.clone(),
            include_cluster_resources: spec.include_cluster_resources,
            label_selector: spec.label_selector.clone(),
            or_label_selectors: spec.or_label_selectors.clone(),
            ..BackupSpec::default()
        };
        let filter = BackupFilter::new(&as_backup, &prepared.index)
            .map_err(|e| Stop::Invalid(vec![format!("Invalid label selector: {e}")]))?;
        let restore_volumes = spec.restore_pvs != Some(false);
        let mut by_pod: BTreeMap<(String, String), Vec<PodVolumeBackup>> = BTreeMap::new();
        for pvb in volume_backups {
            let pod = &pvb.spec.pod;
            let key = (
                pod.namespace.clone().unwrap_or_default(),
                pod.name.clone().unwrap_or_default(),
            );
            by_pod.entry(key).or_default().push(pvb);
        }
        // The claims those volumes are on, read from the backed-up pods.
        let mut claims_with_data = BTreeSet::new();
        if restore_volumes && let Some(pods) = contents.resources.get("pods") {
            for (ns, names) in &pods.by_namespace {
                for name in names {
                    let Some(pvbs) = by_pod.get(&(ns.clone(), name.clone())) else {
                        continue;
                    };
                    let Ok(pod) = contents.read("pods", ns, name) else {
                        continue;
                    };
                    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
                        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str()
                            && pvbs.iter().any(|p| v["name"] == p.spec.volume.as_str())
                        {
                            claims_with_data.insert((ns.clone(), claim.to_owned()));
                        }
                    }
                }
            }
        }
        Ok(Walk {
            ctx: run.ctx,
            restore: &run.restore,
            restoring: Restoring {
                restore: run.name.clone(),
                backup: prepared.backup.name_any(),
                namespace_mapping: spec.namespace_mapping.clone(),
                claims_from_volume_backups: false,
            },
            filter,
            update_existing: spec.existing_resource_policy.as_deref() == Some("update"),
            restore_volumes,
            volume_backups: by_pod,
            claims_with_data,
            namespaces: HashSet::new(),
            restored_crds: HashSet::new(),
            served: HashMap::new(),
            progress: Arc::default(),
            results: BackupResults::default(),
            pod_volumes: Vec::new(),
            log: Vec::new(),
        })
    }

    /// Whether objects of `gr` are restored at all, and which namespaces (source names) of it.
    fn wanted(&self, gr: &str) -> bool {
        if NON_RESTORABLE.contains(&gr) {
            return false;
        }
        // The filter names resources as discovery resolves them; an unserved resource keeps
        // its tarball name, which a filter of the same spelling still matches.
        self.filter.resources.should_include(gr)
    }

    async fn restore_all(&mut self, contents: &BackupContents) -> Result<(), Stop> {
        let order = crate::restore::order(contents.resources.keys().map(String::as_str));
        let mut plan: Vec<(String, String, String)> = Vec::new();
        for gr in &order {
            if !self.wanted(gr) {
                continue;
            }
            let items = &contents.resources[gr];
            for (ns, names) in &items.by_namespace {
                let take = if ns.is_empty() {
                    gr == "namespaces"
                        || gr == "persistentvolumes"
                        || self.filter.wants_cluster_scoped()
                } else {
                    self.filter.namespaces.should_include(ns)
                };
                if take {
                    plan.extend(names.iter().map(|n| (gr.clone(), ns.clone(), n.clone())));
                }
            }
        }
        self.progress.0.store(plan.len(), Ordering::Relaxed);
        for (gr, ns, name) in plan {
            let object = match contents.read(&gr, &ns, &name) {
                Ok(o) => o,
                Err(e) => {
                    self.error(&ns, format!("error reading {gr} {name}: {}", chain(&e)));
                    continue;
                }
            };
            // The total shrinks by what the filters leave out; only what the cluster now holds
            // as backed up counts as restored.
            match self.restore_one(&gr, &ns, &name, object, contents).await? {
                Taken::NotSelected => {
                    self.progress.0.fetch_sub(1, Ordering::Relaxed);
                }
                Taken::Restored => {
                    self.progress.1.fetch_add(1, Ordering::Relaxed);
                }
                Taken::Failed => {}
            }
        }
        Ok(())
    }

    fn target<'a>(&'a self, ns: &'a str) -> &'a str {
        self.restoring.target_namespace(ns)
    }

    fn warn(&mut self, source_ns: &str, message: String) {
        let target = (!source_ns.is_empty()).then(|| self.target(source_ns).to_owned());
        self.results.warnings.add(target.as_deref(), message);
    }

    fn error(&mut self, source_ns: &str, message: String) {
        let target = (!source_ns.is_empty()).then(|| self.target(source_ns).to_owned());
        self.results.errors.add(target.as_deref(), message);
    }

    async fn restore_one(
        &mut self,
        gr: &str,
        ns: &str,
        name: &str,
        mut object: Value,
        contents: &BackupContents,
    ) -> Result<Taken, Stop> {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default();
        if !self.filter.selects(&labels) {
            return Ok(Taken::NotSelected);
        }
        if gr == "namespaces" {
            // A namespace is restored when its objects are wanted, under its mapped name.
            if self.filter.namespaces.should_include(name) {
                self.ensure_namespace(name, contents).await?;
                return Ok(Taken::Restored);
            }
            return Ok(Taken::NotSelected);
        }
        if gr == "persistentvolumes" && !self.pv_wanted(&object) {
            return Ok(Taken::NotSelected);
        }
        if !ns.is_empty() {
            self.ensure_namespace(ns, contents).await?;
        }
        let Some(api_version) = object["apiVersion"].as_str().map(str::to_owned) else {
            self.error(ns, format!("{gr} {name} in the backup has no apiVersion"));
            return Ok(Taken::Failed);
        };
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let plural = gr.split_once('.').map_or(gr, |(r, _)| r).to_owned();
        if !self.is_served(gr, &api_version, &plural).await? {
            self.warn(
                ns,
                format!(
                    "{kind} {} was not restored: this cluster does not serve {plural} at {api_version}",
                    qualified(ns, name)
                ),
            );
            return Ok(Taken::Failed);
        }

        // Claims whose data a pod volume restore brings back must not keep their old binding.
        self.restoring.claims_from_volume_backups = gr == "persistentvolumeclaims"
            && self
                .claims_with_data
                .contains(&(ns.to_owned(), name.to_owned()));
        transform::prepare(&mut object, gr, &self.restoring);
        let mut pod_volumes = None;
        if gr == "pods" && self.restore_volumes {
            let pvbs = self
                .volume_backups
                .get(&(ns.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_default();
            pod_volumes = volume_restore::add_wait_container(
                &mut object,
                &pvbs,
                &self.ctx.settings,
                &self.restore.uid().unwrap_or_default(),
            );
        }

        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), api_version.clone()),
        };
        let resource = ApiResource {
            group,
            version,
            api_version: api_version.clone(),
            kind: kind.clone(),
            plural,
        };
        let target_ns = self.target(ns).to_owned();
        let api: Api<DynamicObject> = if ns.is_empty() {
            Api::all_with(self.ctx.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.ctx.client.clone(), &target_ns, &resource)
        };
        let dynamic: DynamicObject = match serde_json::from_value(object.clone()) {
            Ok(d) => d,
            Err(e) => {
                self.error(
                    ns,
                    format!("{kind} {} is not a valid object: {e}", qualified(ns, name)),
                );
                return Ok(Taken::Failed);
            }
        };
        let taken = match api.create(&PostParams::default(), &dynamic).await {
            Ok(created) => {
                if gr == "customresourcedefinitions.apiextensions.k8s.io" {
                    self.restored_crds.insert(name.to_owned());
                }
                if let Some(volumes) = pod_volumes {
                    let pod_uid = created.uid().unwrap_or_default();
                    self.pod_volumes.push(PodVolumes {
                        namespace: target_ns,
                        name: name.to_owned(),
                        uid: pod_uid,
                        source_namespace: ns.to_owned(),
                        volumes,
                        claims: claims_of(&object),
                        restore_uid: self.restore.uid().unwrap_or_default(),
                    });
                }
                Taken::Restored
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let present = self.exists(&api, ns, name, &kind, gr, &object).await?;
                if pod_volumes.is_some() {
                    self.warn(
                        ns,
                        format!(
                            "the volumes of pod {} were not restored: the pod already exists",
                            qualified(ns, name)
                        ),
                    );
                }
                if present {
                    Taken::Restored
                } else {
                    Taken::Failed
                }
            }
            Err(kube::Error::Api(e)) => {
                self.error(
                    ns,
                    format!(
                        "error restoring {gr}/{}: {}",
                        qualified(&target_ns, name),
                        e.message
                    ),
                );
                Taken::Failed
            }
            Err(e) => return Err(Stop::Api(e.into())),
        };
        Ok(taken)
    }

    /// An object that already exists: left alone when it matches, else a warning, or an update
    /// with `existingResourcePolicy: update`. True when the cluster now holds the backed-up
    /// object (the same, merged or updated).
    async fn exists(
        &mut self,
        api: &Api<DynamicObject>,
        ns: &str,
        name: &str,
        kind: &str,
        gr: &str,
        object: &Value,
    ) -> Result<bool, Stop> {
        let Some(existing) = api.get_opt(name).await? else {
            self.error(
                ns,
                format!("{kind} {} existed and then vanished", qualified(ns, name)),
            );
            return Ok(false);
        };
        let mut in_cluster = serde_json::to_value(&existing).unwrap_or_default();
        transform::prepare(&mut in_cluster, gr, &self.restoring);
        if same_content(&in_cluster, object) {
            self.log.push(format!(
                "{kind} {} already exists with the backed-up content",
                qualified(ns, name)
            ));
            return Ok(true);
        }
        if gr == "serviceaccounts" {
            // Velero merges service accounts (a namespace's `default` always exists): the
            // backed-up secrets, pull secrets, labels and annotations are added to the live one.
            let merged =
                merge_service_account(&serde_json::to_value(&existing).unwrap_or_default(), object);
            let Some(patch) = merged else {
                return Ok(true);
            };
            {
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => self.log.push(format!(
                        "ServiceAccount {} merged with the backed-up one",
                        qualified(ns, name)
                    )),
                    Err(kube::Error::Api(e)) => {
                        self.warn(
                            ns,
                            format!(
                                "could not merge the existing ServiceAccount {}: {}",
                                qualified(ns, name),
                                e.message
                            ),
                        );
                        return Ok(false);
                    }
                    Err(e) => return Err(Stop::Api(e.into())),
                }
            }
            return Ok(true);
        }
        if self.update_existing {
            let mut patch = object.clone();
            if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| matches!(k.as_str(), "labels" | "annotations"));
            }
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.log.push(format!(
                    "{kind} {} already existed and was updated (existingResourcePolicy: update)",
                    qualified(ns, name)
                )),
                Err(kube::Error::Api(e)) => {
                    self.warn(
                        ns,
                        format!(
                            "could not update the existing {kind} {}: {}",
                            qualified(ns, name),
                            e.message
                        ),
                    );
                    return Ok(false);
                }
                Err(e) => return Err(Stop::Api(e.into())),
            }
            return Ok(true);
        }
        self.warn(
            ns,
            format!(
                "could not restore, {kind} \"{name}\" already exists. Warning: the in-cluster \
                 version is different than the backed-up version."
            ),
        );
        Ok(false)
    }

    /// A PV is restored unless its data comes back through a pod volume restore (a new volume
    /// is provisioned for the claim then) or its claim is not restored.
    fn pv_wanted(&self, pv: &Value) -> bool {
        let claim = &pv["spec"]["claimRef"];
        match (claim["namespace"].as_str(), claim["name"].as_str()) {
            (Some(ns), Some(name)) => {
                !self
                    .claims_with_data
                    .contains(&(ns.to_owned(), name.to_owned()))
                    && self.filter.namespaces.should_include(ns)
                    && self.filter.allows_cluster_scoped_item()
                    && self
                        .filter
                        .resources
                        .should_include("persistentvolumeclaims")
            }
            _ => self.filter.wants_cluster_scoped(),
        }
    }

    /// Creates the target namespace of source namespace `ns` unless it exists, from the
    /// backed-up Namespace when there is one (its labels and annotations), under its mapped name.
    async fn ensure_namespace(&mut self, ns: &str, contents: &BackupContents) -> Result<(), Stop> {
        let target = self.target(ns).to_owned();
        if self.namespaces.contains(&target) {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        if api.get_opt(&target).await?.is_none() {
            let mut object = contents.read("namespaces", "", ns).unwrap_or_else(
                |_| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
            transform::prepare(&mut object, "namespaces", &self.restoring);
            object["metadata"]["name"] = json!(target);
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
            let namespace: Namespace = serde_json::from_value(object).map_err(|e| {
                Stop::Failed(format!("the backed-up namespace {ns} is not valid: {e}"))
            })?;
            match api.create(&PostParams::default(), &namespace).await {
                Ok(_) => self.log.push(format!("Created namespace {target}")),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(Stop::Api(e.into())),
            }
        }
        self.namespaces.insert(target);
        Ok(())
    }

    /// Whether this cluster serves `plural` at `api_version`; a CRD this restore created is
    /// waited for (up to [`CRD_WAIT`]).
    async fn is_served(&mut self, gr: &str, api_version: &str, plural: &str) -> Result<bool, Stop> {
        let deadline = tokio::time::Instant::now() + CRD_WAIT;
        loop {
            if !self.served.contains_key(api_version) {
                let list = served_resources(&self.ctx.client, api_version).await?;
                self.served.insert(api_version.to_owned(), list);
            }
            let served = self.served[api_version]
                .as_ref()
                .is_some_and(|l| l.iter().any(|r| r == plural));
            if served || !self.restored_crds.contains(gr) || tokio::time::Instant::now() >= deadline
            {
                if !served && self.restored_crds.contains(gr) {
                    self.log.push(format!(
                        "The restored CRD {gr} was not served within {}s",
                        CRD_WAIT.as_secs()
                    ));
                }
                return Ok(served);
            }
            self.served.remove(api_version);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The resource names served at `api_version` (`None` when the version is not served).
async fn served_resources(
    client: &kube::Client,
    api_version: &str,
) -> Result<Option<Vec<String>>, Stop> {
    let listed = if api_version.contains('/') {
        client.list_api_group_resources(api_version).await
    } else {
        client.list_core_api_resources(api_version).await
    };
    match listed {
        Ok(list) => Ok(Some(list.resources.into_iter().map(|r| r.name).collect())),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(Stop::Api(e.into())),
    }
}

/// `ns/name`, or `name` for a cluster-scoped object.
fn qualified(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    }
}

/// Whether two prepared objects hold the same content (what the API server adds — defaults
/// in `metadata` it keeps — aside).
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(fields) = v.as_object_mut() {
            fields.remove("apiVersion");
            fields.remove("kind");
        }
        v
    };
    strip(a) == strip(b)
}

/// The merge patch that adds a backed-up ServiceAccount's secrets, pull secrets, labels and
/// annotations to the live one; `None` when the live one has them all.
fn merge_service_account(live: &Value, backed_up: &Value) -> Option<Value> {
    let mut patch = serde_json::Map::new();
    for list in ["secrets", "imagePullSecrets"] {
        let mut merged: Vec<Value> = live[list].as_array().cloned().unwrap_or_default();
        for item in backed_up[list].as_array().into_iter().flatten() {
            // The token Secrets are the old cluster's; the new one makes its own.
            let token = item["name"].as_str().is_some_and(|n| {
                n.starts_with(&format!(
                    "{}-token-",
                    backed_up["metadata"]["name"].as_str().unwrap_or_default()
                ))
            });
            if !token && !merged.iter().any(|m| m["name"] == item["name"]) {
                merged.push(item.clone());
            }
        }
        if merged.len() != live[list].as_array().map_or(0, Vec::len) {
            patch.insert(list.into(), Value::Array(merged));
        }
    }
    let mut meta = serde_json::Map::new();
    for field in ["labels", "annotations"] {
        let missing: serde_json::Map<String, Value> = backed_up["metadata"][field]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| live["metadata"][field].get(k.as_str()) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !missing.is_empty() {
            meta.insert(field.into(), Value::Object(missing));
        }
    }
    if !meta.is_empty() {
        patch.insert("metadata".into(), Value::Object(meta));
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// The claims a (prepared) pod mounts, by volume name.
fn claims_of(pod: &Value) -> BTreeMap<String, String> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_owned(),
                v["persistentVolumeClaim"]["claimName"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// What became of one object of the backup.
enum Taken {
    /// The restore's filters (label selector, namespaces, volumes) leave it out.
    NotSelected,
    /// The cluster holds it as backed up: created, already the same, merged or updated.
    Restored,
    /// It was wanted but is not restored (an error or a warning says why).
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_content_is_not_a_conflict() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let b = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        assert!(same_content(&a, &b));
        let c = json!({"metadata": {"name": "a"}, "data": {"k": "other"}});
        assert!(!same_content(&a, &c));
    }

    #[test]
    fn service_accounts_are_merged_not_overwritten() {
        let live = json!({"metadata": {"name": "default", "labels": {"a": "1"}},
            "secrets": [{"name": "default-token-new"}]});
        let backed_up = json!({"metadata": {"name": "default", "labels": {"a": "1", "velero.io/restore-name": "r"}},
            "secrets": [{"name": "default-token-old"}, {"name": "registry"}],
            "imagePullSecrets": [{"name": "registry"}]});
        assert_eq!(
            merge_service_account(&live, &backed_up),
            Some(
                json!({"secrets": [{"name": "default-token-new"}, {"name": "registry"}],
                "imagePullSecrets": [{"name": "registry"}],
                "metadata": {"labels": {"velero.io/restore-name": "r"}}})
            )
        );
        let same = json!({"metadata": {"name": "default", "labels": {"a": "1"}}});
        assert_eq!(merge_service_account(&live, &same), None);
    }

    #[test]
    fn claims_are_found_by_volume() {
        let pod = json!({"spec": {"volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "db"}},
            {"name": "tmp", "emptyDir": {}}]}});
        assert_eq!(
            claims_of(&pod),
            BTreeMap::from([("data".to_string(), "db".to_string())])
        );
    }
}
