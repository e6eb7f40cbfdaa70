//! `lifeboat backup logs`: a finished backup's log, read from its storage location.

use anyhow::{Result, bail};
use clap::Args;
use kube::api::Api;
use lifeboat_server::api::Backup;
use lifeboat_server::backup::layout::BackupKeys;

use super::{finished, open_location};
use crate::bucket::{StoreAccessArgs, gunzip};
use crate::cluster::{ClusterArgs, get_named};
use crate::format::write_stdout;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct LogsArgs {
    name: String,
    #[command(flatten)]
    access: StoreAccessArgs,
}

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: LogsArgs) -> Result<()> {
    let LogsArgs { name, access } = args;
    let client = cluster.client().await?;
    let api: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let backup = get_named(&api, "Backup", &name).await?;
    finished(&backup, "Logs of")?;
    let files = open_location(&client, namespace, &backup, &access).await?;
    let key = BackupKeys::new(&name).log();
    let Some(gz) = files.read(&key).await? else {
        bail!(
            "backup {name:?} has no log in backup storage location {:?} ({key} is missing)",
            files.name
        );
    };
    write_stdout(&gunzip(&gz, &key)?)
}
