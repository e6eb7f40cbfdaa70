//! `lifeboat backup delete`: asks the server to delete backups, one DeleteBackupRequest each
//! (the server deletes the backup with its files, volume data and restores), as Velero does.

use anyhow::{Result, bail};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use lifeboat_server::api::{Backup, DeleteBackupRequest, DeleteBackupRequestSpec};

use super::{BACKUP_NAME_LABEL, BACKUP_UID_LABEL, label_value};
use crate::args::DeleteArgs;
use crate::cluster::{ClusterArgs, none_missing};
use crate::format::ask;

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: DeleteArgs) -> Result<()> {
    let objects = args.selection.objects("backups")?;
    let client = cluster.client().await?;
    let api: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let (backups, missing) = objects.fetch(&api).await?;
    if backups.is_empty() && missing.is_empty() {
        println!("No backups found");
        return Ok(());
    }
    if !backups.is_empty() && !args.confirm {
        let names: Vec<String> = backups.iter().map(ResourceExt::name_any).collect();
        let question = format!(
            "You are about to delete backup(s) {}. Are you sure you want to continue",
            names.join(", ")
        );
        if ask(&question)? != Some(true) {
            bail!("not deleted; pass --confirm to delete without asking");
        }
    }
    let requests: Api<DeleteBackupRequest> = Api::namespaced(client.clone(), namespace);
    let mut failed = Vec::new();
    for backup in &backups {
        let name = backup.name_any();
        let request = DeleteBackupRequest {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(namespace.to_string()),
                labels: Some(
                    [
                        (BACKUP_NAME_LABEL.to_string(), label_value(&name)),
                        (
                            BACKUP_UID_LABEL.to_string(),
                            backup.uid().unwrap_or_default(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: DeleteBackupRequestSpec {
                backup_name: name.clone(),
                ..Default::default()
            },
            status: None,
        };
        match requests.create(&PostParams::default(), &request).await {
            Ok(_) => println!(
                "Request to delete backup {name:?} submitted successfully.\nThe backup will be fully deleted after all associated data (disk snapshots, backup files, restores) are removed."
            ),
            Err(e) => {
                eprintln!(
                    "lifeboat: cannot request the deletion of backup {name:?}: {}",
                    lifeboat_repo::error_chain(&e)
                );
                failed.push(name);
            }
        }
    }
    none_missing("Backup", &missing)?;
    if !failed.is_empty() {
        bail!("the deletion of {} was not requested", failed.join(", "));
    }
    Ok(())
}
