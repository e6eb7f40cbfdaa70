//! `lifeboat restore create|get|describe|logs|delete`, with Velero's flags, table, description
//! layout and messages (`velero` replaced by `lifeboat`), so scripts and habits carry over.
//!
//! What differs from Velero, on purpose:
//! - Everything the server would only find wrong (a malformed selector or namespace mapping,
//!   an unknown `--existing-resource-policy`, contradicting include/exclude lists, a backup
//!   that does not exist, a schedule with no backups) is refused before anything is created,
//!   with one sentence naming the input.
//! - `--include-namespaces` left out stores no list (the server takes it as every namespace in
//!   the backup); Velero's client wrote `*` whatever the user said.
//! - `describe` and `logs` read the restore's files in the bucket themselves (see [`bucket`]),
//!   through the restore's backup and its storage location, with no DownloadRequest.
//! - `delete` also deletes the restore's PodVolumeRestores and its files in the bucket (Velero
//!   1.5 left both behind).
//! - `create --wait` behaves as `backup create --wait`: it ends when the phase is neither New
//!   nor InProgress and exits 0 whatever that phase is, as Velero does.
//!
//! One file per command, as restic's `cmd_*.go`: its arguments and its `run`. Here are the
//! command enum and what several commands share: the phase, and the storage location of a
//! restore's backup.
//!
//! [`bucket`]: crate::bucket

mod create;
mod delete;
mod describe;
mod get;
mod logs;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::Api;
use lifeboat_server::api::{Backup, Restore, RestorePhase};

use crate::args::{self, GetArgs};
use crate::bucket::{LocationFiles, StoreAccessArgs};
use crate::cluster::ClusterArgs;

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    #[command(subcommand)]
    command: RestoreCommand,
}

#[derive(Debug, Subcommand)]
enum RestoreCommand {
    /// Restore from a backup, or from a schedule's newest completed backup.
    Create(Box<create::CreateArgs>),
    /// List restores, or show the ones named.
    #[command(mut_arg("selector", args::only_matching("restores")))]
    Get(GetArgs),
    /// Describe restores, with their warnings and errors (read from the bucket).
    #[command(mut_arg("selector", args::only_matching("restores")))]
    Describe(describe::DescribeArgs),
    /// Print a restore's log.
    Logs(logs::LogsArgs),
    /// Delete restores, their volume restores and their files in the bucket (not what they
    /// restored).
    Delete(delete::DeleteRestoresArgs),
}

pub(crate) async fn run(args: RestoreArgs, cluster: &ClusterArgs) -> Result<()> {
    let namespace = cluster.namespace()?;
    match args.command {
        RestoreCommand::Create(create) => create::run(cluster, &namespace, *create).await,
        RestoreCommand::Get(get) => get::run(cluster, &namespace, get).await,
        RestoreCommand::Describe(describe) => describe::run(cluster, &namespace, describe).await,
        RestoreCommand::Logs(logs) => logs::run(cluster, &namespace, logs).await,
        RestoreCommand::Delete(delete) => delete::run(cluster, &namespace, delete).await,
    }
}

fn phase(restore: &Restore) -> RestorePhase {
    restore
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
}

/// The storage location of the restore's backup, opened for reading or (for `delete`) writing.
async fn open_location(
    client: &kube::Client,
    namespace: &str,
    restore: &Restore,
    access: &StoreAccessArgs,
    writable: bool,
) -> Result<LocationFiles> {
    let backup_name = &restore.spec.backup_name;
    if backup_name.is_empty() {
        bail!(
            "restore {:?} names no backup yet, so its storage location is not known",
            restore.name_any()
        );
    }
    let backups: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let Some(backup) = backups.get_opt(backup_name).await? else {
        bail!("its backup {backup_name:?} does not exist, so its storage location is not known");
    };
    let location = backup.spec.storage_location.as_deref().unwrap_or_default();
    if writable {
        LocationFiles::open_writable(client, namespace, location, access).await
    } else {
        LocationFiles::open(client, namespace, location, access).await
    }
}
