//! `lifeboat repo forget`: removes snapshots by id or by a keep policy, as `restic forget`,
//! and with `--prune` prunes afterwards.
//!
//! restic's `--keep-within` (with its own `1y2m3d4h` syntax) is not offered; were it added, it
//! would keep restic's syntax rather than [`crate::duration`]'s, as restic users write it.

use anyhow::Result;
use clap::Args;
use lifeboat_repo::{Context, ForgetOptions, KeepPolicy, Repository, SnapshotFilter};

use super::print_json;
use super::prune::print_prune;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct ForgetArgs {
    /// Snapshot ids or prefixes.
    ids: Vec<String>,
    #[arg(long)]
    keep_last: Option<u32>,
    #[arg(long)]
    keep_hourly: Option<u32>,
    #[arg(long)]
    keep_daily: Option<u32>,
    #[arg(long)]
    keep_weekly: Option<u32>,
    #[arg(long)]
    keep_monthly: Option<u32>,
    #[arg(long)]
    keep_yearly: Option<u32>,
    /// With a policy: only snapshots with this tag; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// With a policy: only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Prune afterwards.
    #[arg(long)]
    prune: bool,
}

pub(super) async fn run(
    repo: &Repository,
    ctx: &Context,
    json: bool,
    args: ForgetArgs,
) -> Result<()> {
    let ForgetArgs {
        ids,
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        tags,
        host,
        prune,
    } = args;
    let opts = ForgetOptions {
        ids,
        keep: KeepPolicy {
            last: keep_last,
            hourly: keep_hourly,
            daily: keep_daily,
            weekly: keep_weekly,
            monthly: keep_monthly,
            yearly: keep_yearly,
        },
        filter: SnapshotFilter { tags, host },
    };
    let stats = repo.forget(&opts, ctx).await?;
    let pruned = if prune {
        Some(repo.prune(ctx).await?)
    } else {
        None
    };
    if json {
        print_json(&serde_json::json!({"forget": stats, "prune": pruned}))?;
    } else {
        println!(
            "removed {} snapshot(s), kept {}",
            stats.removed.len(),
            stats.kept.len()
        );
        for id in &stats.removed {
            println!("  removed {}", id.short());
        }
        if let Some(p) = pruned {
            print_prune(&p);
        }
    }
    Ok(())
}
