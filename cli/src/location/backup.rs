//! `lifeboat backup-location create|get|set|delete`: backup storage locations, with Velero's
//! flags, table and `-o json|yaml` output; `--default` moves the one default mark.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use lifeboat_server::api::{
    BackupStorageLocation, BackupStorageLocationSpec, ObjectStorageLocation,
};

use super::{SET_OR_DELETE, parse_credential, read_cacert};
use crate::cluster::{ClusterArgs, already_exists, get_named};
use crate::format::{Format, Output, ask, parse_pairs, print_objects, print_table};

#[derive(Debug, Args)]
pub(crate) struct BackupLocationArgs {
    #[command(subcommand)]
    command: BackupLocationCommand,
}

#[derive(Debug, Subcommand)]
enum BackupLocationCommand {
    /// Create a backup storage location.
    Create {
        name: String,
        /// aws (and S3-compatible stores), gcp, azure or filesystem.
        #[arg(long)]
        provider: String,
        /// The bucket (a directory for the filesystem provider).
        #[arg(long)]
        bucket: String,
        /// A prefix inside the bucket.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Provider config, key=value pairs separated by commas (region, s3Url, s3ForcePathStyle, …).
        #[arg(long)]
        config: Vec<String>,
        /// The Secret key holding this location's credentials, as secret-name=key.
        #[arg(long)]
        credential: Option<String>,
        /// Make this the default location (clearing the mark from the others).
        #[arg(long)]
        default: bool,
        /// ReadWrite or ReadOnly.
        #[arg(long, default_value = "ReadWrite", value_parser = ["ReadWrite", "ReadOnly"])]
        access_mode: String,
        /// How often to sync backups from the bucket (e.g. 1m; 0 disables).
        #[arg(long)]
        backup_sync_period: Option<String>,
        /// How often to validate the location (e.g. 1m; 0 validates on changes only).
        #[arg(long)]
        validation_frequency: Option<String>,
        /// PEM file with the CA of a self-signed endpoint.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// Labels for the location, key=value pairs separated by commas.
        #[arg(long)]
        labels: Vec<String>,
    },
    /// List backup storage locations, or show one.
    Get {
        name: Option<String>,
        /// Only the default location.
        #[arg(long)]
        default: bool,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Change a backup storage location.
    Set {
        name: String,
        /// Make this the default location (clearing the mark from the others).
        #[arg(long)]
        default: bool,
        /// The Secret key holding this location's credentials, as secret-name=key.
        #[arg(long)]
        credential: Option<String>,
        /// PEM file with the CA of a self-signed endpoint.
        #[arg(long)]
        cacert: Option<PathBuf>,
    },
    /// Delete backup storage locations.
    Delete {
        names: Vec<String>,
        /// Delete every location.
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        confirm: bool,
    },
}

/// Refuses a provider Velero has no plugin for, naming the one meant: the server would take
/// `s3` as AWS and, without an `s3Url`, send the requests to AWS.
fn check_provider(provider: &str) -> Result<()> {
    let name = provider.trim();
    match name.strip_prefix("velero.io/").unwrap_or(name) {
        "aws" | "gcp" | "azure" | "filesystem" => Ok(()),
        "s3" | "minio" => bail!(
            "--provider {name} is not a provider: use --provider aws for AWS and for any \
             S3-compatible store, with --config s3Url=<endpoint> for one that is not AWS"
        ),
        "gcs" | "google" => bail!("--provider {name} is not a provider: use --provider gcp"),
        other => bail!(
            "--provider {other:?} is not a provider: use aws (AWS and S3-compatible stores), gcp, \
             azure or filesystem"
        ),
    }
}

pub(crate) async fn run_backup_location(
    args: BackupLocationArgs,
    cluster: &ClusterArgs,
) -> Result<()> {
    // Validate everything the user typed before contacting the cluster.
    if let BackupLocationCommand::Create { provider, .. } = &args.command {
        check_provider(provider)?;
    }
    let namespace = cluster.namespace()?;
    let command = args.command;
    let client = cluster.client().await?;
    let api: Api<BackupStorageLocation> = Api::namespaced(client, &namespace);
    match command {
        BackupLocationCommand::Create {
            name,
            provider,
            bucket,
            prefix,
            config,
            credential,
            default,
            access_mode,
            backup_sync_period,
            validation_frequency,
            cacert,
            labels,
        } => {
            let config = parse_pairs("config", &config)?;
            let labels = parse_pairs("labels", &labels)?;
            let credential = credential.as_deref().map(parse_credential).transpose()?;
            let ca_cert = cacert.as_ref().map(read_cacert).transpose()?;
            // Stored as text in the location's spec and read by the server's controller, so
            // checked as the server reads a field (surrounding blanks allowed).
            for (flag, value) in [
                ("backup-sync-period", &backup_sync_period),
                ("validation-frequency", &validation_frequency),
            ] {
                if let Some(v) = value
                    && lifeboat_server::parse_duration(v).is_none()
                {
                    bail!("--{flag} `{v}` is not a duration such as 30s, 1m or 1h");
                }
            }
            let location = BackupStorageLocation {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: (!labels.is_empty()).then_some(labels),
                    ..Default::default()
                },
                spec: BackupStorageLocationSpec {
                    provider,
                    object_storage: ObjectStorageLocation {
                        bucket,
                        prefix,
                        ca_cert,
                        ..Default::default()
                    },
                    config,
                    credential,
                    default,
                    access_mode: Some(access_mode),
                    backup_sync_period,
                    validation_frequency,
                    ..Default::default()
                },
                status: None,
            };
            api.create(&PostParams::default(), &location)
                .await
                .map_err(|e| already_exists(e, "Backup storage location", &name, SET_OR_DELETE))?;
            if default {
                clear_other_defaults(&api, &name).await?;
            }
            println!("Backup storage location {name:?} configured successfully.");
        }
        BackupLocationCommand::Get {
            name,
            default,
            output,
        } => {
            let mut items = match &name {
                Some(n) => vec![get_named(&api, "Backup storage location", n).await?],
                None => api.list(&ListParams::default()).await?.items,
            };
            if default {
                items.retain(|l| l.spec.default);
            }
            items.sort_by_key(ResourceExt::name_any);
            match output {
                Output::Table => print_table(
                    &[
                        "NAME",
                        "PROVIDER",
                        "BUCKET/PREFIX",
                        "PHASE",
                        "LAST VALIDATED",
                        "ACCESS MODE",
                        "DEFAULT",
                    ],
                    items
                        .iter()
                        .map(|l| {
                            let status = l.status.clone().unwrap_or_default();
                            let os = &l.spec.object_storage;
                            vec![
                                l.name_any(),
                                l.spec.provider.clone(),
                                if os.prefix.is_empty() {
                                    os.bucket.clone()
                                } else {
                                    format!("{}/{}", os.bucket, os.prefix)
                                },
                                status.phase.map_or("Unknown".into(), |p| format!("{p:?}")),
                                status
                                    .last_validation_time
                                    .map_or("<never>".into(), |t| t.0.to_string()),
                                l.spec.access_mode.clone().unwrap_or("ReadWrite".into()),
                                if l.spec.default { "true" } else { "" }.into(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => print_objects(
                    name.is_some(),
                    &items,
                    output.objects().unwrap_or(Format::Json),
                )?,
            }
        }
        BackupLocationCommand::Set {
            name,
            default,
            credential,
            cacert,
        } => {
            let mut spec = serde_json::Map::new();
            if default {
                spec.insert("default".into(), true.into());
            }
            if let Some(c) = credential {
                spec.insert(
                    "credential".into(),
                    serde_json::to_value(parse_credential(&c)?)?,
                );
            }
            if let Some(path) = cacert {
                spec.insert(
                    "objectStorage".into(),
                    serde_json::json!({ "caCert": read_cacert(&path)? }),
                );
            }
            if spec.is_empty() {
                bail!("nothing to set: pass --default, --credential or --cacert");
            }
            get_named(&api, "Backup storage location", &name).await?;
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await?;
            if default {
                clear_other_defaults(&api, &name).await?;
            }
            println!("Backup storage location {name:?} configured successfully.");
        }
        BackupLocationCommand::Delete {
            names,
            all,
            confirm,
        } => {
            let names = if all {
                if !names.is_empty() {
                    bail!("pass either location names or --all, not both");
                }
                api.list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect()
            } else if names.is_empty() {
                bail!("name the locations to delete, or pass --all");
            } else {
                names
            };
            if names.is_empty() {
                println!("No backup storage locations found.");
                return Ok(());
            }
            if !confirm
                && ask(&format!(
                    "You are about to delete backup storage location(s) {}. Are you sure you want to continue",
                    names.join(", ")
                ))? != Some(true)
            {
                bail!("not deleted; pass --confirm to delete without asking");
            }
            for name in names {
                get_named(&api, "Backup storage location", &name).await?;
                api.delete(&name, &DeleteParams::default()).await?;
                println!("Backup storage location {name:?} deleted successfully.");
            }
        }
    }
    Ok(())
}

/// Clears `spec.default` on every location but `keep`.
async fn clear_other_defaults(api: &Api<BackupStorageLocation>, keep: &str) -> Result<()> {
    for other in api.list(&ListParams::default()).await?.items {
        let other_name = other.name_any();
        if other_name != keep && other.spec.default {
            api.patch(
                &other_name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "default": false } })),
            )
            .await?;
            println!("Backup storage location {other_name:?} is no longer the default.");
        }
    }
    Ok(())
}
