//! Bucket sync: every `backupSyncPeriod` (the location's, else `--backup-sync-period`; 0 turns
//! it off) each storage location's backups are brought into the cluster, as Velero's backup
//! sync controller does, so a new cluster pointed at an old cluster's bucket can restore from
//! it:
//!
//! - a backup in the bucket (its `velero-backup.json` present) but not in the cluster is
//!   created, with its status, `spec.storageLocation` set to this location and the
//!   `velero.io/storage-location` label; then its PodVolumeBackups from
//!   `<name>-podvolumebackups.json.gz`, owner references and `velero.io/backup-uid` pointed at
//!   the new Backup;
//! - a Completed backup of this location that is gone from the bucket is removed from the
//!   cluster (only when the listing succeeded: an unreachable bucket deletes nothing);
//! - the location's `status.lastSyncedTime` records the sync.
//!
//! Sync only reads the bucket, so a ReadOnly location is synced like any other.

use std::collections::{HashMap, HashSet};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{Context, log_reconciles};
use crate::api::{
    Backup, BackupPhase, BackupStorageLocation, BackupStorageLocationStatus, Lenient,
    PodVolumeBackup, labels,
};
use crate::backup::layout::{self, BACKUPS_DIR, BackupKeys};
use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::storage::{LocationStore, chain};

const NAME: &str = "backup-sync";

/// When each location was last synced (this process's own memory: a restart syncs at once).
#[derive(Debug, Default)]
pub(crate) struct State {
    synced: Mutex<HashMap<String, Instant>>,
}

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<BackupStorageLocation>> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

async fn reconcile(bsl: Arc<Lenient<BackupStorageLocation>>, ctx: Arc<Context>) -> Result<Action> {
    // Malformed objects are reported by their own controller; here they are skipped.
    let Some(bsl) = bsl.ok().cloned().map(Arc::new) else {
        return Ok(Action::await_change());
    };
    let name = bsl.name_any();
    if bsl.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let period = match bsl.spec.backup_sync_period.as_deref().map(str::trim) {
        None | Some("") => ctx.settings.backup_sync_period,
        Some(text) => parse_duration(text).unwrap_or(ctx.settings.backup_sync_period),
    };
    if period.is_zero() {
        return Ok(Action::await_change());
    }
    // Our own status write wakes this reconcile again: do nothing until the period is up.
    let last = ctx
        .sync
        .synced
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .copied();
    if let Some(at) = last
        && at.elapsed() < period
    {
        return Ok(Action::requeue(period - at.elapsed()));
    }
    ctx.sync
        .synced
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.clone(), Instant::now());

    match ctx.open_location(&bsl).await {
        Ok(store) => sync(&ctx, &bsl, &store).await?,
        Err(e) => tracing::debug!(location = %name, "cannot sync: {}", chain(&e)),
    }
    let status = BackupStorageLocationStatus {
        last_synced_time: Some(crate::clock::kube_time(ctx.clock.now())),
        ..BackupStorageLocationStatus::default()
    };
    ctx.patch_status::<BackupStorageLocation>(&name, &status)
        .await?;
    ctx.metrics.reconciled(NAME, true);
    Ok(Action::requeue(period))
}

async fn sync(ctx: &Context, bsl: &BackupStorageLocation, store: &LocationStore) -> Result<()> {
    let location = bsl.name_any();
    // The cluster first, then the bucket: a backup that completes in between is then seen
    // InProgress (never an orphan) rather than Completed and missing from a stale listing.
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // Read one by one: a malformed Backup (reported by the backup controller) still holds its
    // name, so the bucket's copy is not synced over it, and it stops nothing else.
    let listed = Api::<Lenient<Backup>>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let known: HashSet<String> = listed.iter().map(ResourceExt::name_any).collect();
    let in_cluster: Vec<Backup> = listed.into_iter().filter_map(|b| b.object.ok()).collect();
    let in_bucket: HashSet<String> = match store.bucket.list_dirs(BACKUPS_DIR).await {
        Ok(names) => names.into_iter().collect(),
        Err(e) => {
            tracing::warn!(%location, "cannot list the location's backups: {}", chain(&e));
            return Ok(());
        }
    };

    let mut missing: Vec<&String> = in_bucket.difference(&known).collect();
    missing.sort();
    for name in missing {
        if let Err(e) = sync_backup(ctx, store, &location, name).await {
            tracing::warn!(%location, backup = %name, "cannot sync the backup into the cluster: {}", chain(&e));
        }
    }

    let label = labels::value(&location);
    for backup in in_cluster {
        let name = backup.name_any();
        let phase = backup.status.as_ref().and_then(|s| s.phase);
        // A synced backup whose status was not written yet (the server stopped in between).
        if backup.annotations().contains_key(labels::SYNCED_FROM)
            && matches!(phase, None | Some(BackupPhase::New))
            && in_bucket.contains(&name)
        {
            if let Some(synced) = read_backup(store, &location, &name).await
                && let Some(status) = synced.status
            {
                ctx.patch_status::<Backup>(&name, &status).await?;
            }
            continue;
        }
        let ours = backup.labels().get(labels::STORAGE_LOCATION) == Some(&label);
        if !ours || phase != Some(BackupPhase::Completed) || in_bucket.contains(&name) {
            continue;
        }
        // Gone from the listing: make sure on the file itself before removing anything.
        match store
            .bucket
            .exists(&BackupKeys::new(&name).metadata())
            .await
        {
            Ok(false) => {}
            Ok(true) => continue,
            Err(e) => {
                tracing::warn!(%location, backup = %name, "cannot check the backup's files: {}", chain(&e));
                continue;
            }
        }
        tracing::info!(%location, backup = %name, "backup is gone from its storage location: removing it from the cluster");
        match backups.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The Backup in a location's `velero-backup.json`; `None` when absent or unreadable (logged).
async fn read_backup(store: &LocationStore, location: &str, name: &str) -> Option<Backup> {
    let metadata = match store
        .bucket
        .get_at_most(&BackupKeys::new(name).metadata(), layout::METADATA_LIMIT)
        .await
    {
        Ok(bytes) => bytes,
        // No velero-backup.json: being written, or not a backup.
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            tracing::warn!(%location, backup = %name, "cannot read velero-backup.json: {}", chain(&e));
            return None;
        }
    };
    match serde_json::from_slice(&metadata) {
        Ok(backup) => Some(backup),
        Err(e) => {
            tracing::warn!(%location, backup = %name, "velero-backup.json is not a Backup: {e}");
            None
        }
    }
}

/// Creates one backup found in the bucket, then its PodVolumeBackups.
async fn sync_backup(
    ctx: &Context,
    store: &LocationStore,
    location: &str,
    name: &str,
) -> Result<()> {
    let keys = BackupKeys::new(name);
    let Some(mut backup) = read_backup(store, location, name).await else {
        return Ok(());
    };
    let status = backup.status.take();
    let meta = &mut backup.metadata;
    meta.name = Some(name.to_owned());
    meta.namespace = Some(ctx.namespace.clone());
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(labels::STORAGE_LOCATION.into(), labels::value(location));
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(labels::SYNCED_FROM.into(), location.to_owned());
    backup.spec.storage_location = Some(location.to_owned());

    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let created = match backups.create(&PostParams::default(), &backup).await {
        Ok(created) => created,
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if let Some(status) = status {
        ctx.patch_status::<Backup>(name, &status).await?;
    }
    tracing::info!(location, backup = %name, "backup synced into the cluster");

    let volume_backups = match store
        .bucket
        .get_at_most(&keys.pod_volume_backups(), layout::METADATA_LIMIT)
        .await
    {
        Ok(bytes) => match layout::decode_list::<PodVolumeBackup>(&bytes) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(backup = %name, "pod volume backups list unreadable: {}", chain(&e));
                Vec::new()
            }
        },
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            tracing::warn!(backup = %name, "cannot read the pod volume backups list: {}", chain(&e));
            Vec::new()
        }
    };
    let uid = created.uid().unwrap_or_default();
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for mut pvb in volume_backups {
        let status = pvb.status.take();
        let meta = &mut pvb.metadata;
        meta.namespace = Some(ctx.namespace.clone());
        meta.resource_version = None;
        meta.uid = None;
        meta.creation_timestamp = None;
        meta.managed_fields = None;
        for owner in meta.owner_references.iter_mut().flatten() {
            if owner.kind == "Backup" && owner.name == name {
                owner.uid = uid.clone();
            }
        }
        if let Some(l) = meta.labels.as_mut()
            && l.contains_key(labels::BACKUP_UID)
        {
            l.insert(labels::BACKUP_UID.into(), uid.clone());
        }
        let pvb_name = pvb.name_any();
        match pvbs.create(&PostParams::default(), &pvb).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                tracing::warn!(backup = %name, pvb = %pvb_name, "cannot sync a pod volume backup: {}", chain(&e));
                continue;
            }
        }
        if let Some(status) = status {
            ctx.patch_status::<PodVolumeBackup>(&pvb_name, &status)
                .await?;
        }
    }
    Ok(())
}

fn error_policy(
    bsl: Arc<Lenient<BackupStorageLocation>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconciled(NAME, false);
    tracing::warn!(location = %bsl.name_any(), "sync failed: {}", chain(error));
    Action::requeue(Duration::from_secs(10))
}
