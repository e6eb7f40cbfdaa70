//! The Restore controller: hands each new Restore to the restore engine ([`crate::restore`])
//! and fails one found InProgress that this process is not running (its server stopped: what
//! it created is left in place) at once, so nothing stays InProgress forever.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::operation::{self, Claimed};
use super::{Context, log_reconciles, retry_after};
use crate::api::{Lenient, Restore};
use crate::error::{Error, Result};
use crate::podvolume::restore as volume_restore;
use crate::restore::run::Run;
use crate::storage::chain;

const NAME: &str = "restore";

/// Restores run at once. Each mostly waits on the API server and the agents; two keep a long
/// pod volume restore from holding up a quick one.
const CONCURRENCY: u16 = 2;

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
    let ctx = &rctx.ctx;
    match operation::claim(ctx, &restore).await? {
        Claimed::Skip => {}
        Claimed::Abandoned(current) => {
            let reason = "the server stopped while this restore was in progress; what it \
                          created is left in place: create the restore again to finish it";
            volume_restore::fail_abandoned(ctx, &current, reason).await?;
            operation::mark_failed::<Restore>(ctx, &current.name_any(), reason).await?;
        }
        Claimed::Run(current, _running) => {
            let outcome = Run::new(ctx, current, rctx.shutdown.clone()).go().await;
            ctx.metrics.reconciled(NAME, outcome.is_ok());
            outcome?;
        }
    }
    Ok(Action::await_change())
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
