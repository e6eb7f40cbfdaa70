//! `lifeboat repo get` and `lifeboat restic repo get`: the install's repositories
//! (ResticRepository objects) with their phase and last maintenance, Velero's
//! `velero restic repo get`.

use anyhow::{Context as _, Result};
use clap::Args;

use crate::cluster::ClusterArgs;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(crate) struct RepositoryGetArgs {
    /// Repositories to show (default: all).
    names: Vec<String>,
    /// Only repositories with these labels.
    #[arg(long, short = 'l')]
    selector: Option<String>,
}

/// Lists the ResticRepositories: Velero's columns, or the objects as JSON.
pub(crate) async fn repositories(
    args: &RepositoryGetArgs,
    cluster: &ClusterArgs,
    json: bool,
) -> Result<()> {
    use kube::ResourceExt as _;
    use lifeboat_server::api::ResticRepository;
    let namespace = cluster.namespace()?;
    let client = cluster.client().await?;
    let api: kube::Api<ResticRepository> = kube::Api::namespaced(client, &namespace);
    let mut params = kube::api::ListParams::default();
    if let Some(selector) = &args.selector {
        params = params.labels(selector);
    }
    let mut items = api
        .list(&params)
        .await
        .with_context(|| format!("cannot list the repositories in namespace {namespace}"))?
        .items;
    if !args.names.is_empty() {
        for name in &args.names {
            if !items.iter().any(|r| &r.name_any() == name) {
                anyhow::bail!("repository {name:?} does not exist in namespace {namespace}");
            }
        }
        items.retain(|r| args.names.contains(&r.name_any()));
    }
    if json {
        return crate::format::print_objects(
            args.names.len() == 1,
            &items,
            crate::format::Format::Json,
        );
    }
    let rows = items
        .iter()
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            vec![
                r.name_any(),
                status
                    .phase
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "New".into()),
                status
                    .last_maintenance_time
                    .as_ref()
                    .map(crate::format::local_time)
                    .unwrap_or_else(|| "<never>".into()),
            ]
        })
        .collect();
    crate::format::print_table(&["NAME", "STATUS", "LAST MAINTENANCE"], rows);
    Ok(())
}
