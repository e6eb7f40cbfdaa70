//! `lifeboat repo check`: the repository's structure, and with `--read-data` every blob
//! decrypted and hashed, as `restic check`.

use anyhow::Result;
use clap::Args;
use lifeboat_repo::{CheckOptions, Context, Repository};

use super::print_json;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    #[arg(long)]
    read_data: bool,
}

pub(super) async fn run(
    repo: &Repository,
    ctx: &Context,
    json: bool,
    args: CheckArgs,
) -> Result<()> {
    let CheckArgs { read_data } = args;
    let report = repo.check(&CheckOptions { read_data }, ctx).await?;
    if json {
        print_json(&report)?;
    } else {
        for f in &report.warnings {
            eprintln!("warning: {}", f.message);
        }
        for f in &report.errors {
            eprintln!("error: {}", f.message);
        }
        if report.errors.is_empty() {
            println!("no errors were found");
        }
    }
    report.ensure_ok()?;
    Ok(())
}
