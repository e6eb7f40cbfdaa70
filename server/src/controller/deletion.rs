//! The DeleteBackupRequest controller: deletes a backup with everything it stored, as Velero's
//! backup deletion controller does, and reports the outcome in the request's status
//! (`phase: Processed`, `errors`).
//!
//! In order: the Backup goes to phase Deleting; its pod volume snapshots are forgotten in
//! their repositories (their data is freed by the next maintenance prune); its files under
//! `backups/<name>/` are removed; the Restores made from it are deleted with their files under
//! `restores/<restore>/`; its PodVolumeBackups are deleted; and, only when all of that
//! succeeded, the Backup object itself. Any failure leaves the Backup in place (Deleting) with
//! the errors on the request, so a new request can finish the job. A ReadOnly location refuses
//! the deletion and changes nothing. Processed requests are removed after a day.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use lifeboat_repo::{Repository, RepositoryOptions};
use tokio_util::sync::CancellationToken;

use super::{Context, log_reconciles, retry_after};
use crate::api::{
    Backup, BackupPhase, BackupStatus, BackupStorageLocation, DeleteBackupRequest,
    DeleteBackupRequestPhase, DeleteBackupRequestStatus, Lenient, PodVolumeBackup, Restore, labels,
};
use crate::backup::layout::{BackupKeys, RestoreKeys};
use crate::error::{Error, Result};
use crate::storage::{LocationStore, chain};

const NAME: &str = "delete-backup-request";

/// How long a processed request is kept for `kubectl get deletebackuprequests` to show.
const KEEP_PROCESSED: Duration = Duration::from_secs(24 * 3600);

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<DeleteBackupRequest>> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

async fn reconcile(
    request: Arc<Lenient<DeleteBackupRequest>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let Ok(request) = super::readable(&ctx, &request).await else {
        return Ok(Action::await_change());
    };
    let requests: Api<DeleteBackupRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = request.name_any();
    // The watch may be behind our own status write: decide on the API server's copy, so a
    // processed request is never processed again.
    let Some(request) = requests.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if request.status.as_ref().and_then(|s| s.phase) == Some(DeleteBackupRequestPhase::Processed) {
        let age = request
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|t| ctx.clock.now().duration_since(t.0).unsigned_abs())
            .unwrap_or_default();
        if age >= KEEP_PROCESSED {
            requests.delete(&name, &DeleteParams::default()).await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(KEEP_PROCESSED - age));
    }

    // The request's errors are those of this pass only.
    let status = |phase: DeleteBackupRequestPhase, errors: Vec<String>| {
        let clear: &'static [&'static str] = if errors.is_empty() { &["errors"] } else { &[] };
        let status = DeleteBackupRequestStatus {
            phase: Some(phase),
            errors,
            ..DeleteBackupRequestStatus::default()
        };
        (status, clear)
    };
    let (in_progress, clear) = status(DeleteBackupRequestPhase::InProgress, Vec::new());
    ctx.patch_status_clearing::<DeleteBackupRequest>(&name, &in_progress, clear)
        .await?;
    let backup_name = request.spec.backup_name.clone();
    let errors = delete_backup(&ctx, &backup_name).await?;
    if errors.is_empty() {
        tracing::info!(backup = %backup_name, "backup deleted");
    } else {
        tracing::warn!(backup = %backup_name, "backup deletion incomplete: {}", errors.join("; "));
    }
    let (processed, clear) = status(DeleteBackupRequestPhase::Processed, errors);
    ctx.patch_status_clearing::<DeleteBackupRequest>(&name, &processed, clear)
        .await?;
    ctx.metrics.reconciled(NAME, true);
    Ok(Action::requeue(KEEP_PROCESSED))
}

/// Deletes the backup `name`; returns what could not be done (empty: all gone). An `Err` is
/// a Kubernetes API failure before anything was changed, retried by the controller.
async fn delete_backup(ctx: &Context, name: &str) -> Result<Vec<String>> {
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(backup) = backups.get_opt(name).await? else {
        return Ok(vec![format!("backup {name} not found")]);
    };
    let schedule = backup
        .labels()
        .get(labels::SCHEDULE_NAME)
        .cloned()
        .unwrap_or_default();
    if backup.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::InProgress) {
        return Ok(vec![format!(
            "backup {name} is in progress; delete it once it has finished"
        )]);
    }
    let location_name = backup.spec.storage_location.clone().unwrap_or_default();
    let locations: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let location = locations.get_opt(&location_name).await?;
    if let Some(bsl) = &location
        && bsl.spec.access_mode.as_deref() == Some("ReadOnly")
    {
        return Ok(vec![format!(
            "cannot delete backup because backup storage location {location_name} is currently \
             in read-only mode"
        )]);
    }
    let deleting = BackupStatus {
        phase: Some(BackupPhase::Deleting),
        ..BackupStatus::default()
    };
    ctx.patch_status::<Backup>(name, &deleting).await?;

    let mut errors = Vec::new();
    let store = match &location {
        Some(bsl) => match ctx.open_location(bsl).await {
            Ok(store) => Some(store),
            Err(e) => {
                errors.push(format!(
                    "cannot open backup storage location {location_name}: {}",
                    chain(&e)
                ));
                None
            }
        },
        None => {
            // Nothing to reach: the files stay wherever they are, and a location created again
            // would sync the backup back in.
            tracing::warn!(backup = %name, location = %location_name, "storage location not found; deleting the backup's objects only");
            None
        }
    };

    let selector = format!("{}={}", labels::BACKUP_NAME, labels::value(name));
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let volume_backups = pvbs.list(&ListParams::default().labels(&selector)).await?;
    if let Some(store) = &store {
        errors.extend(forget_snapshots(ctx, store, &volume_backups.items).await);
        for key in list_or_note(store, &BackupKeys::new(name).dir(), &mut errors).await {
            if let Err(e) = store.bucket.delete(&key).await {
                errors.push(format!("cannot delete {key}: {}", chain(&e)));
            }
        }
    }

    let restores: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for restore in restores.list(&ListParams::default()).await?.items {
        if restore.spec.backup_name != name {
            continue;
        }
        let restore_name = restore.name_any();
        if let Some(store) = &store {
            for key in
                list_or_note(store, &RestoreKeys::new(&restore_name).dir(), &mut errors).await
            {
                if let Err(e) = store.bucket.delete(&key).await {
                    errors.push(format!("cannot delete {key}: {}", chain(&e)));
                }
            }
        }
        if let Err(e) = restores
            .delete(&restore_name, &DeleteParams::default())
            .await
        {
            errors.push(format!(
                "cannot delete restore {restore_name}: {}",
                chain(&e)
            ));
        }
    }
    if errors.is_empty() {
        for pvb in &volume_backups.items {
            if let Err(e) = pvbs.delete(&pvb.name_any(), &DeleteParams::default()).await {
                errors.push(format!(
                    "cannot delete pod volume backup {}: {}",
                    pvb.name_any(),
                    chain(&e)
                ));
            }
        }
    }
    if errors.is_empty() {
        match backups.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => errors.push(format!("cannot delete the Backup object: {}", chain(&e))),
        }
    }
    ctx.metrics.backup_deleted(&schedule, errors.is_empty());
    Ok(errors)
}

/// The keys under `dir`; a listing failure is noted and yields nothing.
async fn list_or_note(store: &LocationStore, dir: &str, errors: &mut Vec<String>) -> Vec<String> {
    match store.bucket.list_keys(dir).await {
        Ok(keys) => keys,
        Err(e) => {
            errors.push(format!("cannot list {dir}: {}", chain(&e)));
            Vec::new()
        }
    }
}

/// Forgets the backup's pod volume snapshots, repository by repository (one per volume
/// namespace). Returns what failed.
async fn forget_snapshots(
    ctx: &Context,
    store: &LocationStore,
    volume_backups: &[PodVolumeBackup],
) -> Vec<String> {
    let mut by_namespace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pvb in volume_backups {
        let id = pvb
            .status
            .as_ref()
            .and_then(|s| s.snapshot_id.clone())
            .filter(|id| !id.is_empty());
        let namespace = pvb.spec.pod.namespace.clone().unwrap_or_default();
        if let Some(id) = id {
            by_namespace.entry(namespace).or_default().push(id);
        }
    }
    if by_namespace.is_empty() {
        return Vec::new();
    }
    let password = match ctx.repository_password().await {
        Ok(password) => password,
        Err(e) => {
            return vec![format!(
                "cannot read the repository password: {}",
                chain(&e)
            )];
        }
    };
    let mut errors = Vec::new();
    for (namespace, ids) in by_namespace {
        let location = store.repo_root.join(&namespace);
        let opts = RepositoryOptions {
            store: store.options.clone(),
            ..RepositoryOptions::default()
        };
        let outcome = async {
            let repo = Repository::open(&location, &password, opts).await?;
            repo.forget(
                &lifeboat_repo::ForgetOptions {
                    ids: ids.clone(),
                    ..Default::default()
                },
                &lifeboat_repo::Context::default(),
            )
            .await
        }
        .await;
        match outcome {
            Ok(stats) => {
                tracing::info!(repository = %location, forgotten = stats.removed.len(), "pod volume snapshots forgotten")
            }
            Err(e) => errors.push(format!(
                "cannot forget snapshots {} in repository {location}: {}",
                ids.join(", "),
                lifeboat_repo::error_chain(&e)
            )),
        }
    }
    errors
}

fn error_policy(
    request: Arc<Lenient<DeleteBackupRequest>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconciled(NAME, false);
    tracing::warn!(request = %request.name_any(), "reconcile failed: {}", chain(error));
    retry_after(error)
}
