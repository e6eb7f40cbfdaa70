//! The glue between operations and restic's locks ([`crate::lock`]): every operation runs
//! under a shared or exclusive lock taken beside its first reads, released whatever the
//! outcome, and failed if the lock was lost while it ran; and listing or removing locks.

use crate::error::{Error, Result};
use crate::lock::{LockGuard, LockInfo};

use super::{Context, Repository, store_error};

impl Repository {
    /// Runs `op` under a lock, releasing it whatever the outcome.
    pub(super) async fn locked<T>(
        &self,
        exclusive: bool,
        ctx: &Context,
        op: impl AsyncFnOnce(&Context) -> Result<T>,
    ) -> Result<T> {
        self.locked_after(exclusive, ctx, async { Ok(()) }, async |ctx, ()| {
            op(ctx).await
        })
        .await
    }

    /// [`Self::locked`], with `first` run while the lock is taken and its outcome handed to
    /// `op`: reads that need no lock (listings, snapshot files, which are never rewritten)
    /// travel beside the lock's own round trips instead of after them. If `first` fails, the
    /// lock is not waited for and its failure is the operation's.
    pub(super) async fn locked_after<P, T>(
        &self,
        exclusive: bool,
        ctx: &Context,
        first: impl Future<Output = Result<P>>,
        op: impl AsyncFnOnce(&Context, P) -> Result<T>,
    ) -> Result<T> {
        // The lock may cancel the operation (when it cannot be refreshed), the caller too.
        let op_ctx = Context {
            progress: ctx.progress.clone(),
            cancel: ctx.cancel.child_token(),
        };
        // The lock is never dropped half taken (a lock file written and then forgotten):
        // a failure of `first` stops only its waiting, through the token.
        let first = async {
            let res = first.await;
            if res.is_err() {
                op_ctx.cancel.cancel();
            }
            res
        };
        let (guard, first) = tokio::join!(
            self.locks
                .acquire(exclusive, &self.opts.lock, &op_ctx.cancel),
            first
        );
        let before = match first {
            Ok(before) => before,
            Err(e) => {
                if let Ok(guard) = guard {
                    let _ = guard.release().await;
                }
                return Err(e);
            }
        };
        let guard: LockGuard = guard?;
        let res = op(&op_ctx, before).await;
        let lost = guard.was_lost();
        let released = guard.release().await;
        if lost {
            return Err(Error::LockLost {
                location: self.location().to_string(),
            });
        }
        let value = res?;
        // The operation is done: a lock file left behind (the store failed past its retries)
        // goes stale and is ignored by restic and by us once it is; say so, as restic does.
        if let Err(e) = released {
            log::warn!(
                "{}: the lock could not be removed ({}); it is ignored once stale (30 minutes)",
                self.location(),
                crate::error_chain(&e)
            );
        }
        Ok(value)
    }

    /// The locks in the repository.
    pub async fn locks(&self) -> Result<Vec<LockInfo>> {
        Ok(self
            .locks
            .list()
            .await
            .map_err(|e| store_error(&self.store, e))?
            .into_iter()
            .map(|l| l.info)
            .collect())
    }

    /// Removes stale locks, or every lock with `all`; returns how many were removed.
    pub async fn unlock(&self, all: bool) -> Result<usize> {
        self.locks
            .unlock(all, &self.opts.lock)
            .await
            .map_err(|e| store_error(&self.store, e))
    }
}
