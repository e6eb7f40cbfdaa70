//! `lifeboat install` and `lifeboat uninstall` (being written).

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {}

#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {}

pub(crate) async fn install(_args: InstallArgs) -> Result<()> {
    bail!("install is not built yet")
}

pub(crate) async fn uninstall(_args: UninstallArgs) -> Result<()> {
    bail!("uninstall is not built yet")
}
