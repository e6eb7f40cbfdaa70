//! `lifeboat backup create`: a Backup from the template flags, or from a schedule's template
//! (`--from-schedule`), created after the locations it names are found; `--wait` follows it
//! until it is finished.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use lifeboat_server::api::{Backup, BackupPhase, Schedule};

use super::{SCHEDULE_NAME_LABEL, TemplateArgs, label_value};
use crate::cluster::{ClusterArgs, already_exists, get_named};
use crate::format::{Format, print_objects};
use crate::progress::{Waited, wait_until_finished};

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct CreateArgs {
    /// The backup's name (default with --from-schedule: SCHEDULE-YYYYMMDDhhmmss, UTC).
    name: Option<String>,
    #[command(flatten)]
    template: TemplateArgs,
    /// Create the backup from the template (and labels) of this schedule.
    #[arg(long, value_name = "SCHEDULE")]
    from_schedule: Option<String>,
    /// Wait until the backup is finished.
    #[arg(long, short = 'w')]
    wait: bool,
    /// Print the backup as JSON or YAML instead of creating it.
    #[arg(long, short = 'o', value_enum)]
    output: Option<Format>,
}

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: CreateArgs) -> Result<()> {
    let labels = args.template.labels()?;
    let from_schedule = args.from_schedule.as_deref().map(str::trim);
    let mut client = None;
    let backup = match from_schedule {
        Some("") => bail!("--from-schedule needs the name of a schedule"),
        Some(schedule_name) => {
            let given = args.template.spec_flags();
            if !given.is_empty() {
                bail!(
                    "--from-schedule takes the schedule's template as it is, so {} cannot be used with it; change the schedule, or create the backup without --from-schedule",
                    given.join(", ")
                );
            }
            let kube = cluster.client().await?;
            let schedules: Api<Schedule> = Api::namespaced(kube.clone(), namespace);
            let schedule = get_named(&schedules, "Schedule", schedule_name).await?;
            client = Some(kube);
            let name = args.name.clone().unwrap_or_else(|| {
                lifeboat_server::cron::backup_name(schedule_name, jiff::Timestamp::now())
            });
            from_schedule_template(&schedule, &name, namespace, labels)
        }
        None => {
            let Some(name) = args.name.clone() else {
                bail!(
                    "name the backup (lifeboat backup create NAME), or create it from a schedule with --from-schedule"
                );
            };
            let spec = args.template.spec()?;
            Backup {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(namespace.to_string()),
                    labels: (!labels.is_empty()).then_some(labels),
                    ..Default::default()
                },
                spec,
                status: None,
            }
        }
    };
    if let Some(format) = args.output {
        return print_objects(true, &[backup], format);
    }
    let client = match client {
        Some(c) => c,
        None => {
            let c = cluster.client().await?;
            args.template.check_locations(&c, namespace).await?;
            c
        }
    };
    let name = backup.name_any();
    let api: Api<Backup> = Api::namespaced(client, namespace);
    api.create(&PostParams::default(), &backup)
        .await
        .map_err(|e| already_exists(e, "Backup", &name, "choose another name"))?;
    println!("Backup request {name:?} submitted successfully.");
    if args.wait {
        wait_for(&api, &name).await
    } else {
        println!(
            "Run `lifeboat backup describe {name}` or `lifeboat backup logs {name}` for more details."
        );
        Ok(())
    }
}

/// A backup from a schedule's template, labelled as the schedule's own backups are: the
/// template's `metadata.labels` if it has them, else the schedule's labels, plus
/// `velero.io/schedule-name`, then the `--labels` given (Velero's order, later wins).
fn from_schedule_template(
    schedule: &Schedule,
    name: &str,
    namespace: &str,
    extra_labels: BTreeMap<String, String>,
) -> Backup {
    let template_labels: Option<BTreeMap<String, String>> = schedule
        .spec
        .template
        .extra
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    let mut labels = template_labels.unwrap_or_else(|| schedule.labels().clone());
    labels.insert(
        SCHEDULE_NAME_LABEL.into(),
        label_value(&schedule.name_any()),
    );
    labels.extend(extra_labels);
    let owner = (schedule.spec.use_owner_references_in_backup == Some(true)).then(|| {
        vec![OwnerReference {
            api_version: "velero.io/v1".into(),
            kind: "Schedule".into(),
            name: schedule.name_any(),
            uid: schedule.uid().unwrap_or_default(),
            controller: Some(true),
            ..Default::default()
        }]
    });
    Backup {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: schedule.metadata.annotations.clone(),
            owner_references: owner,
            ..Default::default()
        },
        spec: schedule.spec.template.clone(),
        status: None,
    }
}

/// Polls the backup until its phase is neither New nor InProgress, showing the items backed
/// up on a terminal.
async fn wait_for(api: &Api<Backup>, name: &str) -> Result<()> {
    let phase = wait_until_finished("backup", || async {
        let backup = api.get_opt(name).await.with_context(|| {
            format!("cannot read backup {name:?} while waiting; it goes on in the background")
        })?;
        let Some(backup) = backup else {
            bail!("backup {name:?} was deleted while waiting for it");
        };
        let status = backup.status.unwrap_or_default();
        Ok(match status.phase.unwrap_or_default() {
            BackupPhase::InProgress => Waited::Running(match &status.progress {
                Some(p) => format!(
                    "{}/{} items backed up",
                    p.items_backed_up.unwrap_or(0),
                    p.total_items.unwrap_or(0)
                ),
                None => "in progress".into(),
            }),
            BackupPhase::New => Waited::Running("waiting for the server to start it".into()),
            phase => Waited::Finished(format!("{phase:?}")),
        })
    })
    .await?;
    println!(
        "Backup completed with status: {phase}. You may check for more information using the commands `lifeboat backup describe {name}` and `lifeboat backup logs {name}`."
    );
    Ok(())
}
