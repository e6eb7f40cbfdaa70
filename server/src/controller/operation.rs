//! What the Backup and Restore controllers share: the skeleton of an operation that runs once,
//! from `New` through `InProgress` to a final phase.
//!
//! 1. [`claim`]: decide on the API server's copy (a watch can lag this process's own writes),
//!    skip what is finished, deleted or running here, and hand back an `InProgress` one that
//!    no process runs (its server stopped) as [`Claimed::Abandoned`], to be failed at once;
//!    otherwise record it as running in this process for as long as the [`RunningGuard`] lives.
//! 2. The operation runs and ends in a [`Stop`] or a final phase it writes itself.
//! 3. [`mark_failed`] writes the `Failed` status (phase, reason, completion time).

use kube::ResourceExt as _;
use kube::api::Api;

use super::{Context, Running};
use crate::api::{
    Backup, BackupPhase, BackupProgress, BackupStatus, Lenient, Restore, RestorePhase,
    RestoreProgress, RestoreStatus,
};
use crate::clock::kube_time;
use crate::error::{Error, Result};
use crate::storage::chain;

/// A Backup or a Restore, as the operation skeleton sees it.
pub(crate) trait Operation:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// Its status, written as a merge patch (absent fields are left alone).
    type Status: serde::Serialize + std::fmt::Debug;

    /// Where the operation is: not started, running, or finished (any other phase).
    fn stage(&self) -> Stage;

    /// The operations of this kind this process runs.
    fn running(ctx: &Context) -> &Running;

    /// Whether another process ran it and this one only mirrors it (a synced Backup).
    fn ran_elsewhere(&self) -> bool {
        false
    }

    /// The status of a running operation that has handled `done` of `total` items.
    fn progress(total: usize, done: usize) -> Self::Status;

    /// The status of an operation that cannot run, for `errors`.
    fn invalid(errors: Vec<String>) -> Self::Status;

    /// The status of a failed operation.
    fn failed(
        reason: &str,
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> Self::Status;
}

/// A status as a merge patch carries it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct StatusPatch<S> {
    pub status: S,
}

/// A count as a Kubernetes integer.
fn count(n: usize) -> Option<i64> {
    Some(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Where an operation is, by its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    New,
    InProgress,
    Finished,
}

/// What [`claim`] decided.
pub(crate) enum Claimed<'c, K> {
    /// Nothing to do: finished, gone, replaced, mirrored, or already running here.
    Skip,
    /// `InProgress` but run by no one: its server stopped. Fail it.
    Abandoned(K),
    /// This process runs it now, until the guard drops.
    Run(K, RunningGuard<'c>),
}

/// Records an operation as running in this process; dropping it ends the record.
pub(crate) struct RunningGuard<'a> {
    running: &'a Running,
    uid: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.running.end(&self.uid);
    }
}

/// Decides what to do with `lenient`: see the module doc. An object that cannot be read is
/// reported by [`super::readable`], failed validation when it has not started, and skipped.
pub(crate) async fn claim<'c, K: Operation>(
    ctx: &'c Context,
    lenient: &Lenient<K>,
) -> Result<Claimed<'c, K>> {
    let object = match super::readable(ctx, lenient).await {
        Ok(object) => object,
        Err(note) => {
            if matches!(lenient.phase(), None | Some("" | "New")) {
                let status = K::invalid(vec![note]);
                if let Err(e) = ctx
                    .patch_status::<Lenient<K>>(&lenient.name_any(), &status)
                    .await
                {
                    tracing::warn!(object = %lenient.name_any(), "cannot record the validation failure: {}", chain(&e));
                }
            }
            return Ok(Claimed::Skip);
        }
    };
    let uid = object.uid().unwrap_or_default();
    let running = K::running(ctx);
    if object.stage() == Stage::Finished || running.contains(&uid) {
        return Ok(Claimed::Skip);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(current) = api.get_opt(&object.name_any()).await? else {
        return Ok(Claimed::Skip);
    };
    if current.uid() != object.uid()
        || current.meta().deletion_timestamp.is_some()
        || current.ran_elsewhere()
    {
        return Ok(Claimed::Skip);
    }
    match current.stage() {
        Stage::Finished => Ok(Claimed::Skip),
        Stage::InProgress => Ok(Claimed::Abandoned(current)),
        Stage::New if !running.start(&uid) => Ok(Claimed::Skip),
        Stage::New => Ok(Claimed::Run(current, RunningGuard { running, uid })),
    }
}

/// Writes `Failed` with `reason` into the status of the `K` named `name`.
pub(crate) async fn mark_failed<K: Operation>(
    ctx: &Context,
    name: &str,
    reason: &str,
) -> Result<()> {
    tracing::warn!(kind = %K::kind(&()), object = %name, "failed: {reason}");
    ctx.patch_status::<K>(name, K::failed(reason, kube_time(ctx.clock.now())))
        .await
}

/// What stops an operation before it completes; `F` is its engine's failure.
pub(crate) enum Stop<F> {
    /// The spec cannot be run; nothing was done.
    Invalid(Vec<String>),
    /// The operation as a whole failed (boxed: failures carry their causes, and a `Stop` is
    /// returned through every step of an operation).
    Failed(Box<F>),
    /// The Kubernetes API failed; the reconcile is retried.
    Api(Error),
}

impl<F> Stop<F> {
    /// The operation failed as a whole for `failure`.
    pub(crate) fn failed(failure: F) -> Self {
        Stop::Failed(Box::new(failure))
    }
}

impl<F> From<Error> for Stop<F> {
    fn from(e: Error) -> Self {
        Stop::Api(e)
    }
}

impl<F> From<kube::Error> for Stop<F> {
    fn from(e: kube::Error) -> Self {
        Stop::Api(e.into())
    }
}

impl Operation for Backup {
    type Status = BackupStatus;

    fn stage(&self) -> Stage {
        match self.status.as_ref().and_then(|s| s.phase) {
            None | Some(BackupPhase::New) => Stage::New,
            Some(BackupPhase::InProgress) => Stage::InProgress,
            Some(_) => Stage::Finished,
        }
    }

    fn running(ctx: &Context) -> &Running {
        &ctx.running_backups
    }

    fn invalid(errors: Vec<String>) -> BackupStatus {
        BackupStatus {
            phase: Some(BackupPhase::FailedValidation),
            validation_errors: errors,
            ..BackupStatus::default()
        }
    }

    fn progress(total: usize, done: usize) -> BackupStatus {
        BackupStatus {
            progress: Some(BackupProgress {
                total_items: count(total),
                items_backed_up: count(done),
            }),
            ..BackupStatus::default()
        }
    }

    fn ran_elsewhere(&self) -> bool {
        self.annotations()
            .contains_key(crate::api::labels::SYNCED_FROM)
    }

    fn failed(
        reason: &str,
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> BackupStatus {
        BackupStatus {
            phase: Some(BackupPhase::Failed),
            failure_reason: Some(reason.to_owned()),
            completion_timestamp: Some(at),
            ..BackupStatus::default()
        }
    }
}

impl Operation for Restore {
    type Status = RestoreStatus;

    fn stage(&self) -> Stage {
        match self.status.as_ref().and_then(|s| s.phase) {
            None | Some(RestorePhase::New) => Stage::New,
            Some(RestorePhase::InProgress) => Stage::InProgress,
            Some(_) => Stage::Finished,
        }
    }

    fn running(ctx: &Context) -> &Running {
        &ctx.running_restores
    }

    fn invalid(errors: Vec<String>) -> RestoreStatus {
        RestoreStatus {
            phase: Some(RestorePhase::FailedValidation),
            validation_errors: errors,
            ..RestoreStatus::default()
        }
    }

    fn progress(total: usize, done: usize) -> RestoreStatus {
        RestoreStatus {
            progress: Some(RestoreProgress {
                total_items: count(total),
                items_restored: count(done),
            }),
            ..RestoreStatus::default()
        }
    }

    fn failed(
        reason: &str,
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> RestoreStatus {
        RestoreStatus {
            phase: Some(RestorePhase::Failed),
            failure_reason: Some(reason.to_owned()),
            completion_timestamp: Some(at),
            ..RestoreStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;

    fn at() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        kube_time(Timestamp::from_second(1_700_000_000).expect("a time"))
    }

    /// The merge patches the controllers wrote as JSON literals before the statuses were
    /// typed: the same fields, and nothing else (an absent field is left alone).
    #[test]
    fn typed_statuses_patch_exactly_the_fields_they_set() {
        let when = serde_json::to_value(at()).expect("json");
        assert_eq!(
            serde_json::to_value(Backup::failed("disk on fire", at())).expect("json"),
            json!({"phase": "Failed", "failureReason": "disk on fire", "completionTimestamp": when})
        );
        assert_eq!(
            serde_json::to_value(Restore::failed("disk on fire", at())).expect("json"),
            json!({"phase": "Failed", "failureReason": "disk on fire", "completionTimestamp": when})
        );
        assert_eq!(
            serde_json::to_value(Backup::invalid(vec!["bad ttl".into()])).expect("json"),
            json!({"phase": "FailedValidation", "validationErrors": ["bad ttl"]})
        );
        assert_eq!(
            serde_json::to_value(Restore::progress(7, 3)).expect("json"),
            json!({"progress": {"totalItems": 7, "itemsRestored": 3}})
        );
        assert_eq!(
            serde_json::to_value(Backup::progress(7, 3)).expect("json"),
            json!({"progress": {"totalItems": 7, "itemsBackedUp": 3}})
        );
    }

    #[test]
    fn an_operation_s_stage_follows_its_phase() {
        let with = |phase| Backup {
            status: Some(BackupStatus {
                phase,
                ..BackupStatus::default()
            }),
            ..Backup::new("b", Default::default())
        };
        assert_eq!(with(None).stage(), Stage::New);
        assert_eq!(with(Some(BackupPhase::New)).stage(), Stage::New);
        assert_eq!(
            with(Some(BackupPhase::InProgress)).stage(),
            Stage::InProgress
        );
        for done in [
            BackupPhase::Completed,
            BackupPhase::PartiallyFailed,
            BackupPhase::Failed,
            BackupPhase::FailedValidation,
            BackupPhase::Deleting,
        ] {
            assert_eq!(with(Some(done)).stage(), Stage::Finished, "{done:?}");
        }
        let mut synced = with(None);
        synced
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(crate::api::labels::SYNCED_FROM.into(), "default".into());
        assert!(synced.ran_elsewhere());
        assert!(!with(None).ran_elsewhere());
    }
}
