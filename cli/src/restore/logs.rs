//! `lifeboat restore logs`: a finished restore's log, read from the storage location of its
//! backup.

use anyhow::{Result, bail};
use clap::Args;
use kube::api::Api;
use lifeboat_server::api::{Restore, RestorePhase};
use lifeboat_server::backup::layout::RestoreKeys;

use super::{open_location, phase};
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
    let api: Api<Restore> = Api::namespaced(client.clone(), namespace);
    let restore = get_named(&api, "Restore", &name).await?;
    match phase(&restore) {
        RestorePhase::New | RestorePhase::InProgress => bail!(
            "logs for restore {name:?} are not available until it's finished processing; wait until the restore has a phase of Completed or Failed and try again"
        ),
        RestorePhase::FailedValidation => bail!(
            "restore {name:?} failed validation, so it has no log; see `lifeboat restore describe {name}`"
        ),
        _ => {}
    }
    let files = open_location(&client, namespace, &restore, &access, false).await?;
    let key = RestoreKeys::new(&name).log();
    let Some(gz) = files.read(&key).await? else {
        bail!(
            "restore {name:?} has no log in backup storage location {:?} ({key} is missing)",
            files.name
        );
    };
    write_stdout(&gunzip(&gz, &key)?)
}
