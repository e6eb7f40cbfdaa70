//! Garbage collection: every `--garbage-collection-frequency`, each Backup whose `expiration`
//! has passed gets a DeleteBackupRequest, as in Velero, so expiry and `lifeboat backup delete`
//! take the same path (see [`deletion`](super::deletion)). A backup on a ReadOnly location is
//! kept (nothing may be deleted from it); one already being deleted gets no second request.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{Context, log_reconciles};
use crate::api::{
    Backup, BackupPhase, BackupStorageLocation, DeleteBackupRequest, DeleteBackupRequestPhase,
    DeleteBackupRequestSpec, Lenient, labels,
};
use crate::error::{Error, Result};
use crate::storage::chain;

const NAME: &str = "gc";

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<Backup>> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .reconcile_all_on(ctx.clock.changes())
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

async fn reconcile(backup: Arc<Lenient<Backup>>, ctx: Arc<Context>) -> Result<Action> {
    // Malformed objects are reported by their own controller; here they are skipped.
    let Some(backup) = backup.ok().cloned().map(Arc::new) else {
        return Ok(Action::await_change());
    };
    let every = Action::requeue(ctx.settings.gc_frequency.max(Duration::from_secs(1)));
    let status = backup.status.clone().unwrap_or_default();
    let Some(expiration) = status.expiration else {
        return Ok(every);
    };
    if expiration.0 > ctx.clock.now()
        || backup.meta().deletion_timestamp.is_some()
        || matches!(
            status.phase,
            Some(BackupPhase::New | BackupPhase::InProgress | BackupPhase::Deleting)
        )
    {
        return Ok(every);
    }
    let name = backup.name_any();
    // The watch can lag behind a deletion that just finished: ask the API server.
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match backups.get_opt(&name).await? {
        Some(current)
            if current.uid() == backup.uid()
                && current.status.as_ref().and_then(|s| s.phase) != Some(BackupPhase::Deleting) => {
        }
        _ => return Ok(every),
    }
    let location = backup.spec.storage_location.clone().unwrap_or_default();
    let locations: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(bsl) = locations.get_opt(&location).await?
        && bsl.spec.access_mode.as_deref() == Some("ReadOnly")
    {
        tracing::info!(backup = %name, %location, "backup expired but its storage location is read-only: kept");
        return Ok(every);
    }

    let requests: Api<DeleteBackupRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{}={}", labels::BACKUP_NAME, labels::value(&name));
    let pending = requests
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .any(|r| r.status.and_then(|s| s.phase) != Some(DeleteBackupRequestPhase::Processed));
    if pending {
        return Ok(every);
    }
    tracing::info!(backup = %name, expiration = %expiration.0, "backup expired: requesting its deletion");
    requests
        .create(&PostParams::default(), &delete_request(&backup))
        .await?;
    ctx.metrics.reconciled(NAME, true);
    Ok(every)
}

/// A DeleteBackupRequest for `backup`, as `velero backup delete` creates it.
pub(crate) fn delete_request(backup: &Backup) -> DeleteBackupRequest {
    let name = backup.name_any();
    let mut request = DeleteBackupRequest::new(
        "",
        DeleteBackupRequestSpec {
            backup_name: name.clone(),
            ..DeleteBackupRequestSpec::default()
        },
    );
    request.metadata = ObjectMeta {
        generate_name: Some(format!("{name}-")),
        namespace: backup.namespace(),
        labels: Some(
            [
                (labels::BACKUP_NAME.to_string(), labels::value(&name)),
                (
                    labels::BACKUP_UID.to_string(),
                    backup.uid().unwrap_or_default(),
                ),
            ]
            .into(),
        ),
        ..ObjectMeta::default()
    };
    request
}

fn error_policy(backup: Arc<Lenient<Backup>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconciled(NAME, false);
    tracing::warn!(backup = %backup.name_any(), "expiry check failed: {}", chain(error));
    Action::requeue(Duration::from_secs(10))
}
