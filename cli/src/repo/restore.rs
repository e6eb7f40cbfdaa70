//! `lifeboat repo restore`: a snapshot, or a path inside it (`ID:SUBPATH`), into a directory,
//! as `restic restore`; what could not be restored is named and the exit code is 1.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lifeboat_repo::{Context, Repository, RestoreOptions, SnapshotFilter};

use super::print_json;
use crate::format::human_bytes;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct RestoreArgs {
    /// `latest`, a snapshot id or prefix, optionally followed by `:SUBPATH`.
    snapshot: String,
    /// The directory to restore into (created if missing).
    #[arg(long, short = 't')]
    target: PathBuf,
    /// With `latest`: only snapshots with this tag.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// With `latest`: only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
}

pub(super) async fn run(
    repo: &Repository,
    ctx: &Context,
    json: bool,
    args: RestoreArgs,
) -> Result<()> {
    let RestoreArgs {
        snapshot,
        target,
        tags,
        host,
    } = args;
    let (snap, sub) = match snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), Some(p.to_string())),
        None => (snapshot, None),
    };
    let opts = RestoreOptions {
        filter: SnapshotFilter { tags, host },
        ..RestoreOptions::default()
    };
    let stats = repo
        .restore(&snap, sub.as_deref(), &target, &opts, ctx)
        .await?;
    if json {
        print_json(&stats)?;
    } else {
        for u in &stats.unrestored {
            eprintln!("error: {}: {}", u.path, u.reason);
        }
        let unlisted = stats.unrestored_count - stats.unrestored.len() as u64;
        if unlisted > 0 {
            eprintln!("error: and {unlisted} more left out");
        }
        println!(
            "restored snapshot {} into {}: {} files, {} dirs, {} in {:.1}s",
            stats.snapshot.short(),
            target.display(),
            stats.files,
            stats.dirs,
            human_bytes(stats.bytes),
            stats.duration_secs
        );
        if stats.traffic.requests > 0 {
            println!("{}", stats.traffic);
        }
    }
    if !stats.is_complete() {
        return Err(crate::Exit {
            code: 1,
            message: format!(
                "snapshot {} was restored partially: {} entry(ies) left out (named above); everything else is restored",
                stats.snapshot.short(),
                stats.unrestored_count
            ),
        }
        .into());
    }
    Ok(())
}
