//! `lifeboat snapshot-location create|get|set`: volume snapshot locations, with Velero's
//! flags, table and `-o json|yaml` output.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use lifeboat_server::api::{VolumeSnapshotLocation, VolumeSnapshotLocationSpec};

use super::{SET_OR_DELETE, parse_credential};
use crate::cluster::{ClusterArgs, already_exists, get_named};
use crate::format::{Format, Output, parse_pairs, print_objects, print_table};

#[derive(Debug, Args)]
pub(crate) struct SnapshotLocationArgs {
    #[command(subcommand)]
    command: SnapshotLocationCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotLocationCommand {
    /// Create a volume snapshot location.
    Create {
        name: String,
        #[arg(long)]
        provider: String,
        /// Provider config, key=value pairs separated by commas.
        #[arg(long)]
        config: Vec<String>,
        /// The Secret key holding this location's credentials, as secret-name=key.
        #[arg(long)]
        credential: Option<String>,
        /// Labels, key=value pairs separated by commas.
        #[arg(long)]
        labels: Vec<String>,
    },
    /// List volume snapshot locations, or show one.
    Get {
        name: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Change a volume snapshot location.
    Set {
        name: String,
        /// The Secret key holding this location's credentials, as secret-name=key.
        #[arg(long)]
        credential: Option<String>,
    },
}

pub(crate) async fn run_snapshot_location(
    args: SnapshotLocationArgs,
    cluster: &ClusterArgs,
) -> Result<()> {
    let namespace = cluster.namespace()?;
    let command = args.command;
    let client = cluster.client().await?;
    let api: Api<VolumeSnapshotLocation> = Api::namespaced(client, &namespace);
    match command {
        SnapshotLocationCommand::Create {
            name,
            provider,
            config,
            credential,
            labels,
        } => {
            let config = parse_pairs("config", &config)?;
            let labels = parse_pairs("labels", &labels)?;
            let credential = credential.as_deref().map(parse_credential).transpose()?;
            let location = VolumeSnapshotLocation {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: (!labels.is_empty()).then_some(labels),
                    ..Default::default()
                },
                spec: VolumeSnapshotLocationSpec {
                    provider,
                    config,
                    credential,
                    ..Default::default()
                },
                status: None,
            };
            api.create(&PostParams::default(), &location)
                .await
                .map_err(|e| already_exists(e, "Snapshot location", &name, SET_OR_DELETE))?;
            println!("Snapshot location {name:?} configured successfully.");
        }
        SnapshotLocationCommand::Get { name, output } => {
            let mut items = match &name {
                Some(n) => vec![get_named(&api, "Snapshot location", n).await?],
                None => api.list(&ListParams::default()).await?.items,
            };
            items.sort_by_key(ResourceExt::name_any);
            match output {
                Output::Table => print_table(
                    &["NAME", "PROVIDER"],
                    items
                        .iter()
                        .map(|l| vec![l.name_any(), l.spec.provider.clone()])
                        .collect::<Vec<_>>(),
                ),
                _ => print_objects(
                    name.is_some(),
                    &items,
                    output.objects().unwrap_or(Format::Json),
                )?,
            }
        }
        SnapshotLocationCommand::Set { name, credential } => {
            let Some(c) = credential else {
                bail!("nothing to set: pass --credential");
            };
            get_named(&api, "Snapshot location", &name).await?;
            let patch = serde_json::json!({ "spec": { "credential": parse_credential(&c)? } });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            println!("Snapshot location {name:?} configured successfully.");
        }
    }
    Ok(())
}
