//! `lifeboat repo unlock`: removes stale locks (every lock with `--remove-all`), as
//! `restic unlock`.

use anyhow::Result;
use clap::Args;
use lifeboat_repo::Repository;

use super::print_json;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct UnlockArgs {
    #[arg(long)]
    remove_all: bool,
}

pub(super) async fn run(repo: &Repository, json: bool, args: UnlockArgs) -> Result<()> {
    let n = repo.unlock(args.remove_all).await?;
    if json {
        print_json(&serde_json::json!({"removed": n}))?;
    } else {
        println!("removed {n} lock(s)");
    }
    Ok(())
}
