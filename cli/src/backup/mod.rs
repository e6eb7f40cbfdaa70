//! `lifeboat backup create|get|describe|logs|download|delete`, with Velero's flags, table,
//! description layout and messages, so scripts and habits carry over.
//!
//! What differs from Velero, on purpose:
//! - Everything Velero would only find wrong on the server (a malformed selector, `--selector`
//!   with `--or-selector`, a bad `--ttl`, contradicting include/exclude lists, a storage or
//!   snapshot location that does not exist) is refused before anything is created, with one
//!   sentence naming the flag.
//! - `--from-schedule` refuses the filter flags it would silently ignore.
//! - `--ttl` left out leaves `spec.ttl` empty, so the server's `--default-backup-ttl` applies
//!   (Velero's client wrote its own 720h default).
//! - `logs`, `download` and `describe --details` read the bucket themselves (see [`bucket`]),
//!   so they need no DownloadRequest round trip through the server.
//! - `create --wait` ends when the phase is neither New nor InProgress, and exits 0 whatever
//!   that phase is, as Velero does: the phase is printed, and scripts that check it keep
//!   working. A backup deleted while waiting ends the wait with an error.
//!
//! One file per command, as restic's `cmd_*.go`: its arguments and its `run`. Here are the
//! command enum and what several commands share: a backup's storage location, the refusal of
//! unfinished backups, the listing order.
//!
//! [`bucket`]: crate::bucket

mod create;
mod delete;
mod describe;
mod download;
mod get;
mod logs;
mod template;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kube::ResourceExt;
use lifeboat_server::api::{Backup, BackupPhase};

use crate::args::{self, GetArgs};
use crate::bucket::{LocationFiles, StoreAccessArgs};
use crate::cluster::ClusterArgs;

pub(crate) use describe::describe_spec;
pub(crate) use template::TemplateArgs;

pub(crate) use lifeboat_server::api::labels::{
    BACKUP_NAME as BACKUP_NAME_LABEL, BACKUP_UID as BACKUP_UID_LABEL,
    SCHEDULE_NAME as SCHEDULE_NAME_LABEL, value as label_value,
};

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Create a backup.
    Create(Box<create::CreateArgs>),
    /// List backups, or show the ones named.
    #[command(mut_arg("selector", args::only_matching("backups")))]
    Get(GetArgs),
    /// Describe backups.
    #[command(mut_arg("selector", args::only_matching("backups")))]
    Describe(describe::DescribeArgs),
    /// Print a backup's log.
    Logs(logs::LogsArgs),
    /// Download a backup's resources (the tarball; volume data stays in the repositories).
    Download(download::DownloadArgs),
    /// Delete backups with their files, volume data and restores.
    Delete(args::DeleteArgs),
}

pub(crate) async fn run(args: BackupArgs, cluster: &ClusterArgs) -> Result<()> {
    let namespace = cluster.namespace()?;
    match args.command {
        BackupCommand::Create(create) => create::run(cluster, &namespace, *create).await,
        BackupCommand::Get(get) => get::run(cluster, &namespace, get).await,
        BackupCommand::Describe(describe) => describe::run(cluster, &namespace, describe).await,
        BackupCommand::Logs(logs) => logs::run(cluster, &namespace, logs).await,
        BackupCommand::Download(download) => download::run(cluster, &namespace, download).await,
        BackupCommand::Delete(delete) => delete::run(cluster, &namespace, delete).await,
    }
}

/// Refuses a backup that is not finished: its files are not (all) in the bucket yet.
fn finished(backup: &Backup, what: &str) -> Result<()> {
    let name = backup.name_any();
    match backup
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
    {
        BackupPhase::New | BackupPhase::InProgress => bail!(
            "{what} backup {name:?} are not available until it's finished processing. Please wait until the backup has a phase of Completed or Failed and try again."
        ),
        BackupPhase::FailedValidation => bail!(
            "backup {name:?} failed validation, so it stored nothing; see `lifeboat backup describe {name}`"
        ),
        _ => Ok(()),
    }
}

/// The storage location of `backup`, opened for reading.
async fn open_location(
    client: &kube::Client,
    namespace: &str,
    backup: &Backup,
    access: &StoreAccessArgs,
) -> Result<LocationFiles> {
    let location = backup.spec.storage_location.as_deref().unwrap_or_default();
    LocationFiles::open(client, namespace, location, access).await
}

/// Velero's order: by name, but the backups of one schedule (names ending in a 14-digit
/// timestamp) newest first.
fn sort_backups(backups: &mut [Backup]) {
    fn split(name: &str) -> (&str, Option<&str>) {
        match name.len().checked_sub(15).map(|at| name.split_at(at)) {
            Some((prefix, suffix))
                if suffix.starts_with('-') && suffix[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                (prefix, Some(suffix))
            }
            _ => (name, None),
        }
    }
    backups.sort_by(|a, b| {
        let (a, b) = (a.name_any(), b.name_any());
        match (split(&a), split(&b)) {
            ((pa, Some(sa)), (pb, Some(sb))) if pa == pb => sb.cmp(sa),
            _ => a.cmp(&b),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_server::api::BackupSpec;

    #[test]
    fn long_names_become_valid_label_values() {
        assert_eq!(label_value("nightly"), "nightly");
        let long = "a".repeat(70);
        let value = label_value(&long);
        assert_eq!(value.len(), 63);
        assert!(value.starts_with(&"a".repeat(57)));
    }

    #[test]
    fn a_schedule_s_backups_sort_newest_first() {
        let backup = |name: &str| Backup::new(name, BackupSpec::default());
        let mut list = vec![
            backup("nightly-20261120010000"),
            backup("adhoc"),
            backup("nightly-20261122010000"),
            backup("zeta"),
        ];
        sort_backups(&mut list);
        let names: Vec<String> = list.iter().map(ResourceExt::name_any).collect();
        assert_eq!(
            names,
            [
                "adhoc",
                "nightly-20261122010000",
                "nightly-20261120010000",
                "zeta"
            ]
        );
    }
}
