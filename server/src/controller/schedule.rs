//! The Schedule controller: validates each schedule's cron expression (phase Enabled or
//! FailedValidation with `validationErrors`) and creates a Backup from its template when it is
//! due, as Velero's schedule controller does:
//!
//! - a schedule that never ran is due at once (its first backup runs on creation);
//! - afterwards it is due when the first tick after `status.lastBackup` has passed; the backup
//!   is named `<schedule>-<YYYYMMDDhhmmss>` (UTC, now), labelled with the schedule's labels and
//!   `velero.io/schedule-name`, and `lastBackup` becomes now. Ticks missed while the server was
//!   down therefore produce one backup at start-up, not one per tick;
//! - a paused schedule creates nothing until unpaused.
//!
//! Creating the backup before recording `lastBackup` makes a crash in between harmless: the
//! retry computes the same name (the clock has not reached the next tick) and finds it exists.
//! Time comes from the server's [`Clock`](crate::clock::Clock); a manual clock's moves wake
//! every schedule.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{Context, log_reconciles, retry_after};
use crate::api::{Backup, Lenient, Schedule, SchedulePhase, ScheduleStatus, labels};
use crate::clock::kube_time;
use crate::cron::{CronSchedule, backup_name};
use crate::error::{Error, Result};
use crate::storage::chain;

const NAME: &str = "schedule";

/// The longest a due check waits: a system clock that jumps (suspend, NTP step) is noticed
/// within this.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<Schedule>> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .reconcile_all_on(ctx.clock.changes())
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

async fn reconcile(schedule: Arc<Lenient<Schedule>>, ctx: Arc<Context>) -> Result<Action> {
    let Ok(schedule) = super::readable(&ctx, &schedule).await else {
        return Ok(Action::await_change());
    };
    let name = schedule.name_any();
    let api: Api<Schedule> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // The watch may be behind our own `lastBackup` write; a stale copy would start a second
    // backup for the same tick. Decide on the API server's copy.
    let Some(schedule) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if schedule.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = schedule.status.clone().unwrap_or_default();

    // Validated on every pass, so a corrected spec is picked up.
    let cron = match schedule.spec.schedule.parse::<CronSchedule>() {
        Ok(cron) => cron,
        Err(error) => {
            let error = error.to_string();
            if status.phase != Some(SchedulePhase::FailedValidation)
                || status.validation_errors != [error.clone()]
            {
                tracing::warn!(schedule = %name, "schedule failed validation: {error}");
                let status = ScheduleStatus {
                    phase: Some(SchedulePhase::FailedValidation),
                    validation_errors: vec![error],
                    ..ScheduleStatus::default()
                };
                ctx.patch_status::<Schedule>(&name, &status).await?;
            }
            ctx.metrics.reconciled(NAME, true);
            return Ok(Action::await_change());
        }
    };
    if status.phase != Some(SchedulePhase::Enabled) {
        let status = ScheduleStatus {
            phase: Some(SchedulePhase::Enabled),
            ..ScheduleStatus::default()
        };
        ctx.patch_status_clearing::<Schedule>(&name, &status, &["validationErrors"])
            .await?;
        tracing::info!(schedule = %name, cron = %schedule.spec.schedule, "schedule enabled");
    }
    if schedule.spec.paused {
        ctx.metrics.reconciled(NAME, true);
        return Ok(Action::await_change());
    }

    let now = ctx.clock.now();
    let last = status.last_backup.as_ref().map(|t| t.0);
    let (due, mut next) = cron.due(last, now);
    if due {
        let backup = backup_for(&schedule, now);
        let backup_name = backup.name_any();
        let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        match backups.create(&PostParams::default(), &backup).await {
            Ok(_) => {
                tracing::info!(schedule = %name, backup = %backup_name, "schedule is due: backup created")
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(schedule = %name, backup = %backup_name, "backup already created")
            }
            Err(e) => return Err(e.into()),
        }
        let status = ScheduleStatus {
            last_backup: Some(kube_time(now)),
            ..ScheduleStatus::default()
        };
        ctx.patch_status::<Schedule>(&name, &status).await?;
        next = cron.next_after(now);
    }
    ctx.metrics.reconciled(NAME, true);
    Ok(match next {
        Some(next) => {
            let wait = now.duration_until(next).unsigned_abs();
            Action::requeue(wait.clamp(Duration::from_secs(1), MAX_WAIT))
        }
        None => Action::await_change(),
    })
}

/// The Backup a schedule creates at `now` (Velero's `FromSchedule`).
fn backup_for(schedule: &Schedule, now: jiff::Timestamp) -> Backup {
    let name = backup_name(&schedule.name_any(), now);
    let mut backup_labels = schedule.labels().clone();
    backup_labels.insert(
        labels::SCHEDULE_NAME.into(),
        labels::value(&schedule.name_any()),
    );
    let owner = (schedule.spec.use_owner_references_in_backup == Some(true))
        .then(|| schedule.controller_owner_ref(&()))
        .flatten()
        .map(|owner| OwnerReference {
            controller: Some(true),
            ..owner
        });
    let mut backup = Backup::new(&name, schedule.spec.template.clone());
    backup.metadata = ObjectMeta {
        name: Some(name),
        namespace: schedule.namespace(),
        labels: Some(backup_labels),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    backup
}

fn error_policy(schedule: Arc<Lenient<Schedule>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconciled(NAME, false);
    tracing::warn!(schedule = %schedule.name_any(), "reconcile failed: {}", chain(error));
    retry_after(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupSpec, ScheduleSpec};

    #[test]
    fn a_scheduled_backup_is_named_labelled_and_templated_as_velero_s() {
        let mut schedule = Schedule::new(
            "nightly",
            ScheduleSpec {
                schedule: "0 1 * * *".into(),
                template: BackupSpec {
                    included_namespaces: vec!["app".into()],
                    ttl: Some("24h0m0s".into()),
                    ..BackupSpec::default()
                },
                use_owner_references_in_backup: Some(true),
                ..ScheduleSpec::default()
            },
        );
        schedule.metadata.namespace = Some("velero".into());
        schedule.metadata.uid = Some("u-1".into());
        schedule.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        let backup = backup_for(&schedule, "2026-11-22T01:00:00.3Z".parse().unwrap());
        assert_eq!(backup.name_any(), "nightly-20261122010000");
        assert_eq!(backup.namespace().as_deref(), Some("velero"));
        assert_eq!(backup.labels().get("team").map(String::as_str), Some("a"));
        assert_eq!(
            backup
                .labels()
                .get(labels::SCHEDULE_NAME)
                .map(String::as_str),
            Some("nightly")
        );
        assert_eq!(backup.spec, schedule.spec.template);
        let owner = &backup.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Schedule", "u-1")
        );
    }
}
