//! `lifeboat backup-location` and `lifeboat snapshot-location` (being written).

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct BackupLocationArgs {}

#[derive(Debug, Args)]
pub(crate) struct SnapshotLocationArgs {}

pub(crate) async fn run_backup_location(_args: BackupLocationArgs) -> Result<()> {
    bail!("backup-location is not built yet")
}

pub(crate) async fn run_snapshot_location(_args: SnapshotLocationArgs) -> Result<()> {
    bail!("snapshot-location is not built yet")
}
