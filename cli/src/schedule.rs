//! `lifeboat schedule create|get|describe|delete|pause|unpause`, with Velero's flags (the
//! backup template takes every flag of `backup create`), table, description and messages.
//!
//! The cron expression is parsed here exactly as the server parses it
//! ([`lifeboat_server::cron::CronSchedule`]), so a bad one is refused before the Schedule exists
//! instead of ending up in its `validationErrors`. Deleting a schedule leaves its backups.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use lifeboat_server::api::{Schedule, ScheduleSpec};
use lifeboat_server::cron::CronSchedule;

use crate::args::{self, DeleteArgs, GetArgs, Selection, ShowArgs};
use crate::backup::{TemplateArgs, describe_spec};
use crate::cluster::{ClusterArgs, already_exists, none_missing};
use crate::describe::Describer;
use crate::format::{Format, ask, from_now, local_time, print_objects, print_table};
use crate::selector;

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Create a schedule: backups taken from a template on a cron schedule (UTC).
    Create(Box<CreateArgs>),
    /// List schedules, or show the ones named.
    #[command(mut_arg("selector", args::only_matching("schedules")))]
    Get(GetArgs),
    /// Describe schedules.
    #[command(mut_arg("selector", args::only_matching("schedules")))]
    Describe(ShowArgs),
    /// Delete schedules (their backups stay).
    Delete(DeleteArgs),
    /// Stop schedules from starting backups.
    Pause(Selection),
    /// Let paused schedules start backups again.
    Unpause(Selection),
}

#[derive(Debug, Args)]
struct CreateArgs {
    name: String,
    /// When to back up, in cron notation (minute hour day-of-month month day-of-week, UTC), a
    /// descriptor (`@daily`), or `@every 6h`.
    #[arg(long, value_name = "CRON")]
    schedule: String,
    #[command(flatten)]
    template: TemplateArgs,
    /// Make the schedule the owner of its backups (deleting it then deletes them).
    #[arg(long)]
    use_owner_references_in_backup: bool,
    /// Create the schedule paused.
    #[arg(long)]
    paused: bool,
    /// Print the schedule as JSON or YAML instead of creating it.
    #[arg(long, short = 'o', value_enum)]
    output: Option<Format>,
}

pub(crate) async fn run(args: ScheduleArgs, cluster: &ClusterArgs) -> Result<()> {
    let namespace = cluster.namespace()?;
    match args.command {
        ScheduleCommand::Create(create) => {
            if let Err(e) = create.schedule.parse::<CronSchedule>() {
                bail!("--schedule {:?}: {e}", create.schedule);
            }
            let spec = create.template.spec()?;
            let labels = create.template.labels()?;
            let schedule = Schedule {
                metadata: ObjectMeta {
                    name: Some(create.name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: (!labels.is_empty()).then_some(labels),
                    ..Default::default()
                },
                spec: ScheduleSpec {
                    template: spec,
                    schedule: create.schedule.clone(),
                    use_owner_references_in_backup: create
                        .use_owner_references_in_backup
                        .then_some(true),
                    paused: create.paused,
                    ..Default::default()
                },
                status: None,
            };
            if let Some(format) = create.output {
                return print_objects(true, &[schedule], format);
            }
            let client = cluster.client().await?;
            create.template.check_locations(&client, &namespace).await?;
            let api: Api<Schedule> = Api::namespaced(client, &namespace);
            api.create(&PostParams::default(), &schedule)
                .await
                .map_err(|e| {
                    already_exists(e, "Schedule", &create.name, "pause it, or delete it first")
                })?;
            println!("Schedule {:?} created successfully.", create.name);
            Ok(())
        }
        ScheduleCommand::Get(get) => {
            let objects = get.show.objects()?;
            let api: Api<Schedule> = Api::namespaced(cluster.client().await?, &namespace);
            let (schedules, missing) = objects.fetch(&api).await?;
            if !schedules.is_empty() || missing.is_empty() {
                match get.output.objects() {
                    None => print_schedule_table(&schedules),
                    Some(format) => print_objects(get.show.one_named(), &schedules, format)?,
                }
            }
            none_missing("Schedule", &missing)
        }
        ScheduleCommand::Describe(show) => {
            let objects = show.objects()?;
            let api: Api<Schedule> = Api::namespaced(cluster.client().await?, &namespace);
            let (schedules, missing) = objects.fetch(&api).await?;
            let texts: Vec<String> = schedules.iter().map(describe_schedule).collect();
            crate::format::write_stdout(texts.join("\n\n").as_bytes())?;
            none_missing("Schedule", &missing)
        }
        ScheduleCommand::Delete(delete) => {
            let objects = delete.selection.objects("schedules")?;
            let api: Api<Schedule> = Api::namespaced(cluster.client().await?, &namespace);
            let (schedules, missing) = objects.fetch(&api).await?;
            if schedules.is_empty() && missing.is_empty() {
                println!("No schedules found");
                return Ok(());
            }
            if !schedules.is_empty() && !delete.confirm {
                let names: Vec<String> = schedules.iter().map(ResourceExt::name_any).collect();
                let question = format!(
                    "You are about to delete schedule(s) {}. Are you sure you want to continue",
                    names.join(", ")
                );
                if ask(&question)? != Some(true) {
                    bail!("not deleted; pass --confirm to delete without asking");
                }
            }
            for schedule in &schedules {
                let name = schedule.name_any();
                api.delete(&name, &DeleteParams::default()).await?;
                println!("Schedule deleted: {name}");
            }
            none_missing("Schedule", &missing)
        }
        ScheduleCommand::Pause(selection) => {
            set_paused(cluster, &namespace, &selection, true).await
        }
        ScheduleCommand::Unpause(selection) => {
            set_paused(cluster, &namespace, &selection, false).await
        }
    }
}

async fn set_paused(
    cluster: &ClusterArgs,
    namespace: &str,
    selection: &Selection,
    paused: bool,
) -> Result<()> {
    let objects = selection.objects("schedules")?;
    let api: Api<Schedule> = Api::namespaced(cluster.client().await?, namespace);
    let (schedules, missing) = objects.fetch(&api).await?;
    if schedules.is_empty() && missing.is_empty() {
        println!("No schedules found");
        return Ok(());
    }
    let word = if paused { "paused" } else { "unpaused" };
    for schedule in &schedules {
        let name = schedule.name_any();
        if schedule.spec.paused == paused {
            println!("Schedule {name:?} is already {word}.");
            continue;
        }
        let patch = serde_json::json!({ "spec": { "paused": paused } });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        println!("Schedule {name:?} {word} successfully.");
    }
    none_missing("Schedule", &missing)
}

fn print_schedule_table(schedules: &[Schedule]) {
    let now = jiff::Timestamp::now();
    let rows = schedules
        .iter()
        .map(|s| {
            let status = s.status.clone().unwrap_or_default();
            vec![
                s.name_any(),
                format!("{:?}", status.phase.unwrap_or_default()),
                s.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or("<nil>".into(), local_time),
                s.spec.schedule.clone(),
                s.spec.template.ttl.clone().unwrap_or_else(|| "0s".into()),
                status
                    .last_backup
                    .as_ref()
                    .map_or("n/a".into(), |t| from_now(t.0, now)),
                selector::format(s.spec.template.label_selector.as_ref()),
                s.spec.paused.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "STATUS",
            "CREATED",
            "SCHEDULE",
            "BACKUP TTL",
            "LAST BACKUP",
            "SELECTOR",
            "PAUSED",
        ],
        rows,
    );
}

/// Velero's `schedule describe` layout.
fn describe_schedule(schedule: &Schedule) -> String {
    let status = schedule.status.clone().unwrap_or_default();
    let mut d = Describer::new();
    d.metadata(&schedule.metadata);
    d.blank();
    d.line(format!("Phase:\t{:?}", status.phase.unwrap_or_default()));
    if let Some((first, rest)) = status.validation_errors.split_first() {
        d.blank();
        d.line(format!("Validation errors:\t{first}"));
        for e in rest {
            d.line(format!("\t{e}"));
        }
    }
    d.blank();
    d.line(format!("Paused:\t{}", schedule.spec.paused));
    d.blank();
    d.line(format!("Schedule:\t{}", schedule.spec.schedule));
    d.blank();
    d.line("Backup Template:");
    d.prefix = "\t";
    describe_spec(&mut d, &schedule.spec.template);
    d.prefix = "";
    d.blank();
    d.line(format!(
        "Last Backup:\t{}",
        status
            .last_backup
            .as_ref()
            .map_or("<never>".into(), local_time)
    ));
    d.finish()
}
