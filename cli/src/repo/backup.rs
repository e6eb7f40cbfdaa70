//! `lifeboat repo backup`: a directory (or file) into a new snapshot, as `restic backup`; exit
//! code 3 when the snapshot was saved without some files that could not be read.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lifeboat_repo::{BackupOptions, Context, ParentChoice, Repository};

use super::print_json;
use crate::format::human_bytes;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// The directory (or file) to back up.
    path: PathBuf,
    /// Tag the snapshot (K=V by convention); repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name stored in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Path stored in the snapshot instead of PATH, e.g. a volume's logical path.
    #[arg(long)]
    as_path: Option<PathBuf>,
    /// Parent snapshot to compare with (default: the newest of the same host and path).
    #[arg(long, conflicts_with = "force")]
    parent: Option<String>,
    /// Read every file, without a parent.
    #[arg(long)]
    force: bool,
}

pub(super) async fn run(
    repo: &Repository,
    ctx: &Context,
    json: bool,
    args: BackupArgs,
) -> Result<()> {
    let BackupArgs {
        path,
        tags,
        host,
        as_path,
        parent,
        force,
    } = args;
    let parent = match (parent, force) {
        (Some(p), _) => ParentChoice::Snapshot(p),
        (None, true) => ParentChoice::None,
        (None, false) => ParentChoice::Auto,
    };
    let opts = BackupOptions {
        tags,
        host,
        as_path,
        parent,
    };
    let stats = repo.backup(&path, &opts, ctx).await?;
    if json {
        print_json(&stats)?;
    } else {
        for w in &stats.warnings {
            eprintln!("warning: {}: {}", w.path, w.message);
        }
        println!(
            "Files: {} new, {} changed, {} unchanged\nDirs:  {} new, {} changed, {} unchanged\nAdded: {} ({} stored)\nProcessed {} in {:.1}s\nsnapshot {} saved",
            stats.files_new,
            stats.files_changed,
            stats.files_unchanged,
            stats.dirs_new,
            stats.dirs_changed,
            stats.dirs_unchanged,
            human_bytes(stats.bytes_added),
            human_bytes(stats.bytes_stored),
            human_bytes(stats.bytes_processed),
            stats.duration_secs,
            stats.snapshot.id.short(),
        );
        if stats.traffic.requests > 0 {
            println!("{}", stats.traffic);
        }
    }
    if !stats.is_complete() {
        let left_out = stats.warnings.iter().filter(|w| w.left_out).count();
        return Err(crate::Exit {
            code: 3,
            message: format!(
                "snapshot {} was saved without {left_out} path(s) that could not be read (named above)",
                stats.snapshot.id.short()
            ),
        }
        .into());
    }
    Ok(())
}
