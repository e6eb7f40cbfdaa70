//! `lifeboat repo snapshots`: the snapshots, as `restic snapshots` lists them.

use anyhow::Result;
use clap::Args;
use lifeboat_repo::{Repository, Snapshot, SnapshotFilter};

use super::print_json;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct SnapshotsArgs {
    /// Only snapshots with this tag; repeatable (all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
}

pub(super) async fn run(repo: &Repository, json: bool, args: SnapshotsArgs) -> Result<()> {
    let SnapshotsArgs { tags, host } = args;
    let list = repo.snapshots(&SnapshotFilter { tags, host }).await?;
    if json {
        print_json(&list)?;
    } else {
        print_snapshots(&list);
    }
    Ok(())
}

fn print_snapshots(list: &[Snapshot]) {
    println!(
        "{:<8}  {:<19}  {:<16}  {:<30}  tags",
        "ID", "Time", "Host", "Paths"
    );
    for s in list {
        let time = s.time.strftime("%Y-%m-%d %H:%M:%S").to_string();
        println!(
            "{:<8}  {:<19}  {:<16}  {:<30}  {}",
            s.id.short(),
            time,
            s.hostname,
            s.paths.join(","),
            s.tags.join(",")
        );
    }
    println!("{} snapshot(s)", list.len());
}
