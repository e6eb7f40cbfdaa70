//! The ResticRepository controller: keeps each repository usable and maintained.
//!
//! A repository is `Ready` once it opens with the install's password (it is created on first
//! use by the backup that needs it), `NotReady` with the reason otherwise. Every
//! `maintenanceFrequency` (default 7 days, `--default-restic-prune-frequency`) its stale locks
//! are removed — by restic's rule only: a lock is stale when its process is gone from the host
//! that took it, or it was not refreshed for 30 minutes — and it is pruned, which frees the
//! space of snapshots forgotten by deleted backups. Prune takes the exclusive lock; while
//! backups hold theirs it does not wait but is tried again a minute later, and the status says
//! so. Backups meeting prune's lock wait for it, up to a bound (see the agent's jobs).

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use lifeboat_repo::{Repository, RepositoryOptions};
use tokio_util::sync::CancellationToken;

use super::{Context, log_reconciles};
use crate::api::{
    BackupStorageLocation, Lenient, RepositoryPhase, ResticRepository, ResticRepositoryStatus,
};
use crate::clock::kube_time;
use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::storage::chain;

const NAME: &str = "restic-repository";

/// How soon maintenance is tried again when backups hold the repository.
const BUSY_RETRY: Duration = Duration::from_secs(60);

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<ResticRepository>> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .reconcile_all_on(ctx.clock.changes())
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

async fn reconcile(repo: Arc<Lenient<ResticRepository>>, ctx: Arc<Context>) -> Result<Action> {
    let Ok(repo) = super::readable(&ctx, &repo).await else {
        return Ok(Action::await_change());
    };
    let name = repo.name_any();
    if repo.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let frequency = parse_duration(&repo.spec.maintenance_frequency)
        .filter(|d| !d.is_zero())
        .unwrap_or(ctx.settings.default_prune_frequency);
    let status = repo.status.clone().unwrap_or_default();
    let now = ctx.clock.now();

    let opened = open(&ctx, &repo).await;
    let repository = match opened {
        Ok(repository) => repository,
        Err(e) => {
            let reason = chain(&e);
            if status.phase != Some(RepositoryPhase::NotReady)
                || status.message.as_deref() != Some(&reason)
            {
                tracing::warn!(repository = %name, "repository not ready: {reason}");
                let status = ResticRepositoryStatus {
                    phase: Some(RepositoryPhase::NotReady),
                    message: Some(reason),
                    ..ResticRepositoryStatus::default()
                };
                ctx.patch_status::<ResticRepository>(&name, &status).await?;
            }
            return Ok(Action::requeue(BUSY_RETRY));
        }
    };
    match status.last_maintenance_time.as_ref().map(|t| t.0) {
        // A new repository counts as maintained when it is first seen.
        None => {
            let status = ResticRepositoryStatus {
                phase: Some(RepositoryPhase::Ready),
                last_maintenance_time: Some(kube_time(now)),
                ..ResticRepositoryStatus::default()
            };
            ctx.patch_status_clearing::<ResticRepository>(&name, &status, &["message"])
                .await?;
            return Ok(Action::requeue(frequency.min(Duration::from_secs(3600))));
        }
        Some(last) => {
            let elapsed = now.duration_since(last).unsigned_abs();
            if elapsed < frequency {
                if status.phase != Some(RepositoryPhase::Ready) {
                    let status = ResticRepositoryStatus {
                        phase: Some(RepositoryPhase::Ready),
                        ..ResticRepositoryStatus::default()
                    };
                    ctx.patch_status_clearing::<ResticRepository>(&name, &status, &["message"])
                        .await?;
                }
                return Ok(Action::requeue(
                    (frequency - elapsed).min(Duration::from_secs(3600)),
                ));
            }
        }
    }

    let maintenance = async {
        let stale = repository.unlock(false).await?;
        let pruned = repository.prune(&lifeboat_repo::Context::default()).await?;
        Ok::<_, lifeboat_repo::Error>((stale, pruned))
    }
    .await;
    match maintenance {
        Ok((stale, pruned)) => {
            tracing::info!(
                repository = %name,
                stale_locks_removed = stale,
                packs_removed = pruned.packs_removed,
                bytes_removed = pruned.bytes_removed,
                "repository maintained"
            );
            let status = ResticRepositoryStatus {
                phase: Some(RepositoryPhase::Ready),
                last_maintenance_time: Some(kube_time(ctx.clock.now())),
                ..ResticRepositoryStatus::default()
            };
            ctx.patch_status_clearing::<ResticRepository>(&name, &status, &["message"])
                .await?;
            ctx.metrics.reconciled(NAME, true);
            Ok(Action::requeue(frequency.min(Duration::from_secs(3600))))
        }
        Err(e) => {
            let reason = lifeboat_repo::error_chain(&e);
            let busy = matches!(e, lifeboat_repo::Error::Locked { .. });
            let message = if busy {
                format!(
                    "maintenance postponed: backups hold the repository ({reason}); trying again in a minute"
                )
            } else {
                format!("maintenance failed: {reason}")
            };
            tracing::warn!(repository = %name, "{message}");
            let status = ResticRepositoryStatus {
                phase: Some(RepositoryPhase::Ready),
                message: Some(message),
                ..ResticRepositoryStatus::default()
            };
            ctx.patch_status::<ResticRepository>(&name, &status).await?;
            Ok(Action::requeue(BUSY_RETRY))
        }
    }
}

/// Why a repository cannot be opened for maintenance; the message of its NotReady status.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("cannot read backup storage location {location}")]
    ReadLocation {
        location: String,
        #[source]
        source: kube::Error,
    },
    #[error("backup storage location {location} does not exist")]
    NoLocation { location: String },
    #[error(transparent)]
    OpenLocation(#[from] super::OpenLocationError),
    #[error("cannot read the repository password")]
    Password(#[source] Error),
    #[error("cannot open repository {location}")]
    Open {
        location: lifeboat_repo::Location,
        #[source]
        source: lifeboat_repo::Error,
    },
}

/// Opens the repository with the install's password.
async fn open(ctx: &Context, repo: &ResticRepository) -> std::result::Result<Repository, NotReady> {
    let locations: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let location_name = &repo.spec.backup_storage_location;
    let bsl = locations
        .get_opt(location_name)
        .await
        .map_err(|source| NotReady::ReadLocation {
            location: location_name.clone(),
            source,
        })?
        .ok_or_else(|| NotReady::NoLocation {
            location: location_name.clone(),
        })?;
    let store = ctx.open_location(&bsl).await?;
    let password = ctx
        .repository_password()
        .await
        .map_err(NotReady::Password)?;
    let location = store.repo_root.join(&repo.spec.volume_namespace);
    let opts = RepositoryOptions {
        store: store.options.clone(),
        ..RepositoryOptions::default()
    };
    Repository::open(&location, &password, opts)
        .await
        .map_err(|source| NotReady::Open { location, source })
}

fn error_policy(repo: Arc<Lenient<ResticRepository>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconciled(NAME, false);
    tracing::warn!(repository = %repo.name_any(), "reconcile failed: {}", chain(error));
    Action::requeue(Duration::from_secs(30))
}
