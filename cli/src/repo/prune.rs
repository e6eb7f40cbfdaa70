//! `lifeboat repo prune`: removes unreferenced data and repacks partly used packs, as
//! `restic prune`.

use anyhow::Result;
use lifeboat_repo::{Context, Repository};

use super::print_json;
use crate::format::human_bytes;

pub(super) async fn run(repo: &Repository, ctx: &Context, json: bool) -> Result<()> {
    let stats = repo.prune(ctx).await?;
    if json {
        print_json(&stats)?;
    } else {
        print_prune(&stats);
    }
    Ok(())
}

pub(super) fn print_prune(p: &lifeboat_repo::PruneStats) {
    println!(
        "prune: removed {} pack(s) ({}), repacked {} pack(s) ({}), kept {}",
        p.packs_removed,
        human_bytes(p.bytes_removed),
        p.packs_repacked,
        human_bytes(p.bytes_repacked),
        p.packs_kept
    );
}
