//! `lifeboat server` and `lifeboat agent` (being written).

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {}

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {}

pub(crate) async fn server(_args: ServerArgs) -> Result<()> {
    bail!("server is not built yet")
}

pub(crate) async fn agent(_args: AgentArgs) -> Result<()> {
    bail!("agent is not built yet")
}
