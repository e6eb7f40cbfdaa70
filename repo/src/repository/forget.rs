//! Forget and prune: snapshots removed by id or keep policy, then data no snapshot
//! references removed by the format engine, each under an exclusive lock.

use rustic_core::repofile::SnapshotFile;
use rustic_core::{Grouped, SnapshotGroupCriterion};

use crate::error::{Error, Result};
use crate::snapshot::{self, Snapshot, SnapshotFilter};

use super::{Context, ForgetOptions, ForgetStats, KeepPolicy, OpResult, PruneStats, Repository};

impl Repository {
    /// Removes snapshots by id or by keep policy, under an exclusive lock. Data is freed by
    /// [`Repository::prune`].
    pub async fn forget(&self, opts: &ForgetOptions, ctx: &Context) -> Result<ForgetStats> {
        if opts.ids.is_empty() && opts.keep.is_empty() {
            return Err(Error::InvalidOption(
                "forget needs snapshot ids or a keep policy".into(),
            ));
        }
        if !opts.ids.is_empty() && !opts.keep.is_empty() {
            return Err(Error::InvalidOption(
                "give either snapshot ids or a keep policy, not both".into(),
            ));
        }
        let opts = opts.clone();
        self.locked(true, ctx, async |ctx| {
            if opts.ids.is_empty() {
                let keep = keep_options(&opts.keep);
                let filter = opts.filter.clone();
                return self
                    .run("forget", ctx, move |repo| {
                        let snaps: Vec<SnapshotFile> = repo
                            .get_all_snapshots()?
                            .into_iter()
                            .filter(|s| filter.matches(&Snapshot::from_rustic(s)))
                            .collect();
                        let grouped = Grouped::from_items(snaps, SnapshotGroupCriterion::default());
                        let now = jiff::Zoned::now();
                        let groups =
                            rustic_core::ForgetGroups::from_grouped_snapshots_with_retention(
                                grouped, &keep, &now,
                            )?;
                        let mut stats = ForgetStats::default();
                        let mut remove = Vec::new();
                        for group in groups.0 {
                            for item in group.items {
                                let id = Snapshot::from_rustic(&item.snapshot).id;
                                if item.keep {
                                    stats.kept.push(id);
                                } else {
                                    stats.removed.push(id);
                                    remove.push(item.snapshot.id);
                                }
                            }
                        }
                        repo.delete_snapshots(&remove)?;
                        Ok(stats)
                    })
                    .await;
            }
            let all = self.snapshots(&SnapshotFilter::default()).await?;
            let mut remove = Vec::new();
            for q in &opts.ids {
                let s = snapshot::resolve(&all, q)?;
                if !remove.contains(&s.id) {
                    remove.push(s.id);
                }
            }
            let stats = ForgetStats {
                kept: all
                    .iter()
                    .map(|s| s.id)
                    .filter(|id| !remove.contains(id))
                    .collect(),
                removed: remove.clone(),
            };
            self.run("forget", ctx, move |repo| {
                let ids = remove
                    .iter()
                    .map(|id| Ok(id.to_string().parse::<rustic_core::Id>()?.into()))
                    .collect::<OpResult<Vec<rustic_core::repofile::SnapshotId>>>()?;
                repo.delete_snapshots(&ids)?;
                Ok(())
            })
            .await?;
            Ok(stats)
        })
        .await
    }

    /// Removes data no snapshot references and repacks partly used packs, under an exclusive
    /// lock. Packs are deleted at once (as restic does): the exclusive lock guarantees no
    /// backup is writing.
    pub async fn prune(&self, ctx: &Context) -> Result<PruneStats> {
        self.locked(true, ctx, async |ctx| {
            self.run("prune", ctx, |repo| {
                let popts = rustic_core::PruneOptions::default().instant_delete(true);
                let plan = repo.prune_plan(&popts)?;
                let s = &plan.stats;
                let stats = PruneStats {
                    packs_removed: s.packs_to_delete.remove,
                    packs_repacked: s.packs.repack,
                    packs_kept: s.packs.keep + s.packs.used,
                    bytes_removed: s.size_to_delete.remove,
                    bytes_repacked: s.size_sum().repack,
                };
                repo.prune(&popts, plan)?;
                Ok(stats)
            })
            .await
        })
        .await
    }
}

fn keep_options(p: &KeepPolicy) -> rustic_core::KeepOptions {
    let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    rustic_core::KeepOptions::default()
        .keep_last(n(p.last))
        .keep_hourly(n(p.hourly))
        .keep_daily(n(p.daily))
        .keep_weekly(n(p.weekly))
        .keep_monthly(n(p.monthly))
        .keep_yearly(n(p.yearly))
}
