//! The Backup controller: hands each new Backup to the backup engine ([`crate::backup::run`])
//! and fails one found InProgress that this process is not running (its server stopped
//! mid-backup: nothing it wrote is usable) at once, so nothing stays InProgress forever. On a
//! clean shutdown (SIGTERM) running backups are cancelled and end Failed the same way.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::operation::{self, Claimed};
use super::{Context, log_reconciles, retry_after};
use crate::api::{Backup, BackupPhase, Lenient};
use crate::backup::run::{Run, schedule_of};
use crate::error::{Error, Result};
use crate::storage::chain;

const NAME: &str = "backup";

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<Backup>> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let concurrency = ctx.settings.backup_concurrency.max(1);
    let ctx = Arc::new(BackupContext {
        ctx,
        shutdown: shutdown.clone(),
    });
    // Running backups see the token and end themselves (marked Failed); the controller then
    // waits for them rather than abandoning them mid-write.
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .with_config(Config::default().concurrency(concurrency))
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

struct BackupContext {
    ctx: Arc<Context>,
    shutdown: CancellationToken,
}

async fn reconcile(backup: Arc<Lenient<Backup>>, bctx: Arc<BackupContext>) -> Result<Action> {
    let ctx = &bctx.ctx;
    match operation::claim(ctx, &backup).await? {
        Claimed::Skip => {}
        Claimed::Abandoned(current) => {
            let reason = "the server stopped while this backup was in progress; \
                          nothing it wrote is usable: create the backup again";
            crate::podvolume::backup::fail_abandoned(ctx, &current, reason).await?;
            operation::mark_failed::<Backup>(ctx, &current.name_any(), reason).await?;
            ctx.metrics
                .backup_finished(&schedule_of(&current), BackupPhase::Failed);
        }
        Claimed::Run(current, _running) => {
            let outcome = Run::new(ctx, &current, bctx.shutdown.clone()).go().await;
            ctx.metrics.reconciled(NAME, outcome.is_ok());
            outcome?;
        }
    }
    Ok(Action::await_change())
}

fn error_policy(backup: Arc<Lenient<Backup>>, error: &Error, bctx: Arc<BackupContext>) -> Action {
    bctx.ctx.metrics.reconciled(NAME, false);
    tracing::warn!(backup = %backup.name_any(), "reconcile failed: {}", chain(error));
    retry_after(error)
}
