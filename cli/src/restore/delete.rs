//! `lifeboat restore delete`: deletes restores with their PodVolumeRestores and their files in
//! the bucket (Velero 1.5 left both behind); what they restored stays.

use anyhow::{Result, bail};
use clap::Args;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use lifeboat_server::api::labels::{RESTORE_NAME, value as label_value};
use lifeboat_server::api::{PodVolumeRestore, Restore};
use lifeboat_server::backup::layout::RestoreKeys;

use super::open_location;
use crate::args;
use crate::bucket::StoreAccessArgs;
use crate::cluster::{ClusterArgs, none_missing};
use crate::format::ask;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment. Not named `DeleteArgs`: clap names a flattened
// struct's argument group after it, and refuses two groups of one name in a command.
#[derive(Debug, Args)]
pub(super) struct DeleteRestoresArgs {
    #[command(flatten)]
    delete: args::DeleteArgs,
    #[command(flatten)]
    access: StoreAccessArgs,
}

/// Deletes each restore: its PodVolumeRestores, its files in the bucket (when the location can
/// be written; otherwise it says so and goes on), then the Restore, last, so that a failure
/// leaves something to delete again.
pub(super) async fn run(
    cluster: &ClusterArgs,
    namespace: &str,
    args: DeleteRestoresArgs,
) -> Result<()> {
    let DeleteRestoresArgs { delete, access } = args;
    let objects = delete.selection.objects("restores")?;
    let client = &cluster.client().await?;
    let access = &access;
    let api: Api<Restore> = Api::namespaced(client.clone(), namespace);
    let (restores, missing) = objects.fetch(&api).await?;
    if restores.is_empty() && missing.is_empty() {
        println!("No restores found");
        return Ok(());
    }
    if !restores.is_empty() && !delete.confirm {
        let names: Vec<String> = restores.iter().map(ResourceExt::name_any).collect();
        let question = format!(
            "You are about to delete restore(s) {}. Are you sure you want to continue",
            names.join(", ")
        );
        if ask(&question)? != Some(true) {
            bail!("not deleted; pass --confirm to delete without asking");
        }
    }
    let volumes: Api<PodVolumeRestore> = Api::namespaced(client.clone(), namespace);
    let mut failed = Vec::new();
    for restore in &restores {
        let name = restore.name_any();
        let params =
            ListParams::default().labels(&format!("{RESTORE_NAME}={}", label_value(&name)));
        if let Err(e) = volumes
            .delete_collection(&DeleteParams::default(), &params)
            .await
        {
            eprintln!(
                "lifeboat: cannot delete the PodVolumeRestores of restore {name:?}: {}",
                lifeboat_repo::error_chain(&e)
            );
            failed.push(name);
            continue;
        }
        let removed = async {
            let files = open_location(client, namespace, restore, access, true).await?;
            files.remove_dir(&RestoreKeys::new(&name).dir()).await
        };
        if let Err(e) = removed.await {
            eprintln!(
                "lifeboat: the files of restore {name:?} were not removed from the bucket: {}",
                crate::sentence(&e)
            );
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => println!("Restore {name:?} deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => println!("Restore {name:?} deleted"),
            Err(e) => {
                eprintln!(
                    "lifeboat: cannot delete restore {name:?}: {}",
                    lifeboat_repo::error_chain(&e)
                );
                failed.push(name);
            }
        }
    }
    none_missing("Restore", &missing)?;
    if !failed.is_empty() {
        bail!("{} not deleted", failed.join(", "));
    }
    Ok(())
}
