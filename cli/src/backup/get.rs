//! `lifeboat backup get`: Velero's backup table (or the objects as JSON or YAML), in Velero's
//! order.

use anyhow::Result;
use kube::ResourceExt;
use kube::api::Api;
use lifeboat_server::api::Backup;

use super::sort_backups;
use crate::args::GetArgs;
use crate::cluster::{ClusterArgs, none_missing};
use crate::format::{from_now, local_time, print_objects, print_table};
use crate::selector;

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: GetArgs) -> Result<()> {
    let objects = args.show.objects()?;
    let client = cluster.client().await?;
    let api: Api<Backup> = Api::namespaced(client, namespace);
    let (mut backups, missing) = objects.fetch(&api).await?;
    sort_backups(&mut backups);
    // Nothing found of the names given: only the error, as kubectl prints it.
    if !backups.is_empty() || missing.is_empty() {
        match args.output.objects() {
            None => print_backup_table(&backups),
            Some(format) => print_objects(args.show.one_named(), &backups, format)?,
        }
    }
    none_missing("Backup", &missing)
}

fn print_backup_table(backups: &[Backup]) {
    let now = jiff::Timestamp::now();
    let rows = backups
        .iter()
        .map(|b| {
            let status = b.status.clone().unwrap_or_default();
            let mut phase = format!("{:?}", status.phase.unwrap_or_default());
            if b.metadata.deletion_timestamp.is_some() {
                phase = "Deleting".into();
            }
            vec![
                b.name_any(),
                phase,
                status.errors.unwrap_or(0).to_string(),
                status.warnings.unwrap_or(0).to_string(),
                status
                    .start_timestamp
                    .as_ref()
                    .map_or("<nil>".into(), local_time),
                match expiration(b) {
                    Some(t) if t <= now => "expired".into(),
                    Some(t) => from_now(t, now),
                    None => "n/a".into(),
                },
                b.spec.storage_location.clone().unwrap_or_default(),
                selector::format(b.spec.label_selector.as_ref()),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "STATUS",
            "ERRORS",
            "WARNINGS",
            "CREATED",
            "EXPIRES",
            "STORAGE LOCATION",
            "SELECTOR",
        ],
        rows,
    );
}

/// When the backup expires: its status says, else its creation plus its TTL.
fn expiration(backup: &Backup) -> Option<jiff::Timestamp> {
    if let Some(t) = backup.status.as_ref().and_then(|s| s.expiration.as_ref()) {
        return Some(t.0);
    }
    // The server's reading of a stored TTL (not the flags' parser): the table shows when the
    // server will expire the backup.
    let ttl = lifeboat_server::parse_duration(backup.spec.ttl.as_deref()?)?;
    let created = backup.metadata.creation_timestamp.as_ref()?.0;
    created
        .checked_add(jiff::SignedDuration::try_from(ttl).ok()?)
        .ok()
        .filter(|_| !ttl.is_zero())
}
