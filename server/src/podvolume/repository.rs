//! The restic repositories pod volumes go into: one per volume namespace and storage location
//! (`restic/<namespace>` under the location's prefix, as Velero lays them out), opened or
//! initialised on first use and recorded as a ResticRepository object; and the parent a
//! volume's next backup starts from.

use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use lifeboat_repo::{Location, Repository, RepositoryOptions};

use super::{Error, PVC_UID_LABEL};
use crate::api::{
    Backup, PodVolumeBackup, PodVolumePhase, RepositoryPhase, ResticRepository,
    ResticRepositorySpec, ResticRepositoryStatus, labels,
};
use crate::controller::Context;
use crate::storage::{LocationStore, chain};

/// The repository of `namespace` on the backup's location: its ResticRepository object, and
/// the repository itself, initialised on first use.
pub(crate) async fn ensure_repository(
    ctx: &Context,
    backup: &Backup,
    store: &LocationStore,
    namespace: &str,
    password: &str,
) -> Result<Location, Error> {
    let location_name = backup.spec.storage_location.clone().unwrap_or_default();
    let location = store.repo_root.join(namespace);
    let opts = RepositoryOptions {
        store: store.options.clone(),
        ..RepositoryOptions::default()
    };
    match Repository::open(&location, password, opts.clone()).await {
        Ok(_) => {}
        Err(lifeboat_repo::Error::NoRepository { .. }) => {
            match Repository::init(&location, password, opts).await {
                Ok(_) | Err(lifeboat_repo::Error::AlreadyInitialized { .. }) => {
                    tracing::info!(repository = %location, "repository initialised");
                }
                Err(source) => return Err(Error::InitRepository { location, source }),
            }
        }
        Err(source) => return Err(Error::OpenRepository { location, source }),
    }

    let api: Api<ResticRepository> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!(
        "velero.io/volume-namespace={},{}={}",
        labels::value(namespace),
        labels::STORAGE_LOCATION,
        labels::value(&location_name)
    );
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::RecordRepository {
            namespace: namespace.to_owned(),
            source,
        })?;
    if existing.items.is_empty() {
        let mut repo = ResticRepository::new(
            "",
            ResticRepositorySpec {
                volume_namespace: namespace.to_owned(),
                backup_storage_location: location_name.clone(),
                restic_identifier: location.to_string(),
                maintenance_frequency: crate::duration::go_duration(
                    ctx.settings.default_prune_frequency,
                ),
                ..ResticRepositorySpec::default()
            },
        );
        repo.metadata = ObjectMeta {
            generate_name: Some(format!("{namespace}-{location_name}-")),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(
                [
                    (
                        "velero.io/volume-namespace".to_string(),
                        labels::value(namespace),
                    ),
                    (
                        labels::STORAGE_LOCATION.to_string(),
                        labels::value(&location_name),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        };
        let created = api
            .create(&PostParams::default(), &repo)
            .await
            .map_err(|source| Error::RecordRepository {
                namespace: namespace.to_owned(),
                source,
            })?;
        let status = ResticRepositoryStatus {
            phase: Some(RepositoryPhase::Ready),
            ..ResticRepositoryStatus::default()
        };
        if let Err(e) = ctx
            .patch_status::<ResticRepository>(&created.name_any(), &status)
            .await
        {
            tracing::debug!(repository = %created.name_any(), "cannot mark the repository Ready: {}", chain(&e));
        }
    }
    Ok(location)
}

/// The newest completed snapshot of the claim on the backup's location, as a parent.
pub(crate) async fn parent_snapshot(
    ctx: &Context,
    claim_uid: &str,
    backup: &Backup,
) -> crate::error::Result<Option<String>> {
    let api: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{PVC_UID_LABEL}={claim_uid}");
    let location = backup.spec.storage_location.clone().unwrap_or_default();
    let newest = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.backup_storage_location == location)
        .filter_map(|p| {
            let status = p.status?;
            (status.phase == Some(PodVolumePhase::Completed))
                .then_some(())
                .and(status.snapshot_id.zip(status.completion_timestamp))
        })
        .max_by_key(|(_, at)| at.0)
        .map(|(id, _)| id);
    Ok(newest)
}
