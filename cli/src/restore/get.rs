//! `lifeboat restore get`: Velero's restore table, or the objects as JSON or YAML.

use anyhow::Result;
use kube::ResourceExt;
use kube::api::Api;
use lifeboat_server::api::Restore;

use crate::args::GetArgs;
use crate::cluster::{ClusterArgs, none_missing};
use crate::format::{local_time, print_objects, print_table};
use crate::selector;

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: GetArgs) -> Result<()> {
    let objects = args.show.objects()?;
    let client = cluster.client().await?;
    let api: Api<Restore> = Api::namespaced(client, namespace);
    let (restores, missing) = objects.fetch(&api).await?;
    // Nothing found of the names given: only the error, as kubectl prints it.
    if !restores.is_empty() || missing.is_empty() {
        match args.output.objects() {
            None => print_restore_table(&restores),
            Some(format) => print_objects(args.show.one_named(), &restores, format)?,
        }
    }
    none_missing("Restore", &missing)
}

fn print_restore_table(restores: &[Restore]) {
    let rows = restores
        .iter()
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                t.map_or("<nil>".into(), local_time)
            };
            vec![
                r.name_any(),
                r.spec.backup_name.clone(),
                format!("{:?}", status.phase.unwrap_or_default()),
                time(status.start_timestamp.as_ref()),
                time(status.completion_timestamp.as_ref()),
                status.errors.unwrap_or(0).to_string(),
                status.warnings.unwrap_or(0).to_string(),
                time(r.metadata.creation_timestamp.as_ref()),
                selector::format(r.spec.label_selector.as_ref()),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "BACKUP",
            "STATUS",
            "STARTED",
            "COMPLETED",
            "ERRORS",
            "WARNINGS",
            "CREATED",
            "SELECTOR",
        ],
        rows,
    );
}
