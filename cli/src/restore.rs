//! `lifeboat restore create|get|describe|logs|delete`, with Velero's flags, table, description
//! layout and messages (`velero` replaced by `lifeboat`), so scripts and habits carry over.
//!
//! What differs from Velero, on purpose:
//! - Everything the server would only find wrong (a malformed selector or namespace mapping,
//!   an unknown `--existing-resource-policy`, contradicting include/exclude lists, a backup
//!   that does not exist, a schedule with no backups) is refused before anything is created,
//!   with one sentence naming the input.
//! - `--include-namespaces` left out stores no list (the server takes it as every namespace in
//!   the backup); Velero's client wrote `*` whatever the user said.
//! - `describe` and `logs` read the restore's files in the bucket themselves (see [`bucket`]),
//!   through the restore's backup and its storage location, with no DownloadRequest.
//! - `delete` also deletes the restore's PodVolumeRestores and its files in the bucket (Velero
//!   1.5 left both behind).
//! - `create --wait` behaves as `backup create --wait`: it ends when the phase is neither New
//!   nor InProgress and exits 0 whatever that phase is, as Velero does.
//!
//! [`bucket`]: crate::bucket

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use lifeboat_server::api::labels::{RESTORE_NAME, SCHEDULE_NAME, value as label_value};
use lifeboat_server::api::{
    Backup, PodVolumePhase, PodVolumeRestore, Restore, RestorePhase, RestoreSpec,
};
use lifeboat_server::backup::layout::RestoreKeys;
use lifeboat_server::backup::{BackupResults, Messages, validate_includes_excludes};

use crate::bucket::{LocationFiles, StoreAccessArgs, gunzip};
use crate::cluster::{ClusterArgs, Objects, Selection, already_exists, get_named, none_missing};
use crate::describe::Describer;
use crate::format::{
    Format, Output, ask, local_time, parse_pairs, print_objects, print_table, write_stdout,
};
use crate::progress::{Waited, wait_until_finished};
use crate::selector;

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: RestoreCommand,
}

#[derive(Debug, Subcommand)]
enum RestoreCommand {
    /// Restore from a backup, or from a schedule's newest completed backup.
    Create(Box<CreateArgs>),
    /// List restores, or show the ones named.
    Get {
        names: Vec<String>,
        /// Only the restores matching this label selector.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Describe restores, with their warnings and errors (read from the bucket).
    Describe {
        names: Vec<String>,
        /// Only the restores matching this label selector.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        /// Also list each volume restore by phase.
        #[arg(long)]
        details: bool,
        #[command(flatten)]
        access: StoreAccessArgs,
    },
    /// Print a restore's log.
    Logs {
        name: String,
        #[command(flatten)]
        access: StoreAccessArgs,
    },
    /// Delete restores, their volume restores and their files in the bucket (not what they
    /// restored).
    Delete {
        #[command(flatten)]
        selection: Selection,
        /// Do not ask for confirmation.
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        access: StoreAccessArgs,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The restore's name (default: BACKUP-YYYYMMDDhhmmss or SCHEDULE-YYYYMMDDhhmmss, UTC).
    name: Option<String>,
    /// The backup to restore from.
    #[arg(long, value_name = "BACKUP")]
    from_backup: Option<String>,
    /// Restore from the newest completed backup of this schedule (the server picks it).
    #[arg(long, value_name = "SCHEDULE")]
    from_schedule: Option<String>,
    /// Namespaces to include, comma-separated (`*` for all; default: all in the backup).
    #[arg(long, value_delimiter = ',', value_name = "NS,…")]
    include_namespaces: Vec<String>,
    /// Namespaces to exclude, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NS,…")]
    exclude_namespaces: Vec<String>,
    /// Resources to include, as resource.group (`storageclasses.storage.k8s.io`); `*` for all.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE,…")]
    include_resources: Vec<String>,
    /// Resources to exclude, as resource.group.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE,…")]
    exclude_resources: Vec<String>,
    /// Include cluster-scoped resources (=true or =false; default: when all namespaces are
    /// included).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    include_cluster_resources: Option<bool>,
    /// Only restore resources matching this label selector (`app=web,tier!=db`).
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Restore namespaces under other names: `src1:dst1,src2:dst2`.
    #[arg(long, value_name = "SRC:DST,…")]
    namespace_mappings: Vec<String>,
    /// Restore persistent volumes (=true or =false; default: the server's).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    restore_volumes: Option<bool>,
    /// Keep the node ports of restored Services (=true or =false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    preserve_nodeports: Option<bool>,
    /// What to do with resources that exist already: `none` (leave them) or `update`.
    #[arg(long, value_name = "none|update")]
    existing_resource_policy: Option<String>,
    /// Labels of the restore, key=value pairs separated by commas.
    #[arg(long, value_name = "K=V,…")]
    labels: Vec<String>,
    /// Wait until the restore is finished.
    #[arg(long, short = 'w')]
    wait: bool,
    /// Print the restore as JSON or YAML instead of creating it.
    #[arg(long, short = 'o', value_enum)]
    output: Option<Format>,
}

impl CreateArgs {
    /// The backup or schedule restored from (exactly one), and whether it is a schedule.
    fn source(&self) -> Result<(&str, bool)> {
        match (self.from_backup.as_deref(), self.from_schedule.as_deref()) {
            (Some(b), None) if !b.trim().is_empty() => Ok((b.trim(), false)),
            (None, Some(s)) if !s.trim().is_empty() => Ok((s.trim(), true)),
            (Some(_), Some(_)) => {
                bail!("pass either --from-backup or --from-schedule, not both")
            }
            _ => {
                bail!("name what to restore from: --from-backup BACKUP or --from-schedule SCHEDULE")
            }
        }
    }

    /// The restore the flags describe, checked as the server would check it.
    fn restore(&self, namespace: &str, now: jiff::Timestamp) -> Result<Restore> {
        let (source, from_schedule) = self.source()?;
        for (what, includes, excludes) in [
            (
                "namespaces",
                &self.include_namespaces,
                &self.exclude_namespaces,
            ),
            (
                "resources",
                &self.include_resources,
                &self.exclude_resources,
            ),
        ] {
            let errors = validate_includes_excludes(includes, excludes);
            if !errors.is_empty() {
                bail!(
                    "--include-{what} and --exclude-{what} do not go together: {}",
                    errors.join("; ")
                );
            }
        }
        let label_selector = match &self.selector {
            Some(text) => selector::parse("selector", text)?,
            None => None,
        };
        let namespace_mapping = parse_namespace_mappings(&self.namespace_mappings)?;
        let existing_resource_policy = match self.existing_resource_policy.as_deref() {
            None => None,
            Some(p @ ("none" | "update")) => Some(p.to_string()),
            Some(other) => {
                bail!("--existing-resource-policy `{other}` is not a policy; use none or update")
            }
        };
        let labels = parse_pairs("labels", &self.labels)?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| lifeboat_server::cron::backup_name(source, now));
        Ok(Restore {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_string()),
                labels: (!labels.is_empty()).then_some(labels),
                ..Default::default()
            },
            spec: RestoreSpec {
                // From a schedule the server resolves the backup when it starts the restore.
                backup_name: if from_schedule {
                    String::new()
                } else {
                    source.to_string()
                },
                schedule_name: from_schedule.then(|| source.to_string()),
                included_namespaces: self.include_namespaces.clone(),
                excluded_namespaces: self.exclude_namespaces.clone(),
                included_resources: self.include_resources.clone(),
                excluded_resources: self.exclude_resources.clone(),
                namespace_mapping,
                label_selector,
                restore_pvs: self.restore_volumes,
                include_cluster_resources: self.include_cluster_resources,
                existing_resource_policy,
                preserve_node_ports: self.preserve_nodeports,
                ..Default::default()
            },
            status: None,
        })
    }
}

/// `--namespace-mappings src1:dst1,src2:dst2` (repeatable).
fn parse_namespace_mappings(values: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for pair in values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match pair.split_once(':') {
            Some((src, dst))
                if !src.trim().is_empty() && !dst.trim().is_empty() && !dst.contains(':') =>
            {
                let (src, dst) = (src.trim(), dst.trim());
                if let Some(before) = map.insert(src.to_string(), dst.to_string())
                    && before != dst
                {
                    bail!(
                        "--namespace-mappings maps namespace {src:?} twice ({before} and {dst}); map each namespace once"
                    );
                }
            }
            _ => bail!(
                "--namespace-mappings `{pair}` is not SOURCE:TARGET; write e.g. --namespace-mappings shop:shop-copy,db:db-copy"
            ),
        }
    }
    Ok(map)
}

pub(crate) async fn run(args: RestoreArgs) -> Result<()> {
    let namespace = args.cluster.namespace()?;
    match args.command {
        RestoreCommand::Create(create_args) => {
            create(&args.cluster, &namespace, *create_args).await
        }
        RestoreCommand::Get {
            names,
            selector,
            output,
        } => {
            let objects = Objects::given(&names, selector.as_deref())?;
            let client = args.cluster.client().await?;
            let api: Api<Restore> = Api::namespaced(client, &namespace);
            let (restores, missing) = objects.fetch(&api).await?;
            // Nothing found of the names given: only the error, as kubectl prints it.
            if !restores.is_empty() || missing.is_empty() {
                match output.objects() {
                    None => print_restore_table(&restores),
                    Some(format) => print_objects(names.len() == 1, &restores, format)?,
                }
            }
            none_missing("Restore", &missing)
        }
        RestoreCommand::Describe {
            names,
            selector,
            details,
            access,
        } => {
            let objects = Objects::given(&names, selector.as_deref())?;
            let client = args.cluster.client().await?;
            let api: Api<Restore> = Api::namespaced(client.clone(), &namespace);
            let (restores, missing) = objects.fetch(&api).await?;
            for (i, restore) in restores.iter().enumerate() {
                let results = results(&client, &namespace, restore, &access).await;
                let volumes = pod_volume_restores(&client, &namespace, restore).await;
                let text = describe_restore(restore, results.as_ref(), &volumes, details);
                write_stdout(format!("{}{text}", if i > 0 { "\n\n" } else { "" }).as_bytes())?;
            }
            none_missing("Restore", &missing)
        }
        RestoreCommand::Logs { name, access } => {
            let client = args.cluster.client().await?;
            let api: Api<Restore> = Api::namespaced(client.clone(), &namespace);
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
            let files = open_location(&client, &namespace, &restore, &access, false).await?;
            let key = RestoreKeys::new(&name).log();
            let Some(gz) = files.read(&key).await? else {
                bail!(
                    "restore {name:?} has no log in backup storage location {:?} ({key} is missing)",
                    files.name
                );
            };
            write_stdout(&gunzip(&gz, &key)?)
        }
        RestoreCommand::Delete {
            selection,
            confirm,
            access,
        } => {
            let objects = selection.objects("restores")?;
            let client = args.cluster.client().await?;
            delete(&client, &namespace, &objects, confirm, &access).await
        }
    }
}

async fn create(cluster: &ClusterArgs, namespace: &str, args: CreateArgs) -> Result<()> {
    let restore = args.restore(namespace, jiff::Timestamp::now())?;
    if let Some(format) = args.output {
        return print_objects(true, &[restore], format);
    }
    let client = cluster.client().await?;
    let (source, from_schedule) = args.source()?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), namespace);
    if from_schedule {
        // As Velero's client: the schedule must have backups; the server picks the newest
        // completed one when it starts the restore.
        let params =
            ListParams::default().labels(&format!("{SCHEDULE_NAME}={}", label_value(source)));
        if backups.list(&params).await?.items.is_empty() {
            bail!("schedule {source:?} has no backups to restore from");
        }
    } else {
        get_named(&backups, "Backup", source).await?;
    }
    let name = restore.name_any();
    let api: Api<Restore> = Api::namespaced(client, namespace);
    api.create(&PostParams::default(), &restore)
        .await
        .map_err(|e| already_exists(e, "Restore", &name, "choose another name"))?;
    println!("Restore request {name:?} submitted successfully.");
    if !args.wait {
        println!(
            "Run `lifeboat restore describe {name}` or `lifeboat restore logs {name}` for more details."
        );
        return Ok(());
    }
    let phase = wait_until_finished("restore", || async {
        let restore = api.get_opt(&name).await.with_context(|| {
            format!("cannot read restore {name:?} while waiting; it goes on in the background")
        })?;
        let Some(restore) = restore else {
            bail!("restore {name:?} was deleted while waiting for it");
        };
        let status = restore.status.unwrap_or_default();
        Ok(match status.phase.unwrap_or_default() {
            RestorePhase::InProgress => Waited::Running(match &status.progress {
                Some(p) => format!(
                    "{}/{} items restored",
                    p.items_restored.unwrap_or(0),
                    p.total_items.unwrap_or(0)
                ),
                None => "in progress".into(),
            }),
            RestorePhase::New => Waited::Running("waiting for the server to start it".into()),
            phase => Waited::Finished(format!("{phase:?}")),
        })
    })
    .await?;
    println!(
        "Restore completed with status: {phase}. You may check for more information using the commands `lifeboat restore describe {name}` and `lifeboat restore logs {name}`."
    );
    Ok(())
}

fn phase(restore: &Restore) -> RestorePhase {
    restore
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
}

/// The storage location of the restore's backup, opened for reading or (for `delete`) writing.
async fn open_location(
    client: &kube::Client,
    namespace: &str,
    restore: &Restore,
    access: &StoreAccessArgs,
    writable: bool,
) -> Result<LocationFiles> {
    let backup_name = &restore.spec.backup_name;
    if backup_name.is_empty() {
        bail!(
            "restore {:?} names no backup yet, so its storage location is not known",
            restore.name_any()
        );
    }
    let backups: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let Some(backup) = backups.get_opt(backup_name).await? else {
        bail!("its backup {backup_name:?} does not exist, so its storage location is not known");
    };
    let location = backup.spec.storage_location.as_deref().unwrap_or_default();
    if writable {
        LocationFiles::open_writable(client, namespace, location, access).await
    } else {
        LocationFiles::open(client, namespace, location, access).await
    }
}

/// The warnings and errors of a restore from its results file, None when it has neither (the
/// bucket is not read then, as Velero does), or why they cannot be read.
async fn results(
    client: &kube::Client,
    namespace: &str,
    restore: &Restore,
    access: &StoreAccessArgs,
) -> Option<Result<BackupResults>> {
    let status = restore.status.clone().unwrap_or_default();
    if status.warnings.unwrap_or(0) == 0 && status.errors.unwrap_or(0) == 0 {
        return None;
    }
    let read = async {
        let files = open_location(client, namespace, restore, access, false).await?;
        let key = RestoreKeys::new(&restore.name_any()).results();
        let Some(gz) = files.read(&key).await? else {
            bail!("{key} is not in backup storage location {:?}", files.name);
        };
        let json = gunzip(&gz, &key)?;
        serde_json::from_slice(&json).with_context(|| format!("{key} is not a results file"))
    };
    Some(read.await)
}

/// The restore's PodVolumeRestores; a failure to list is reported on stderr and the description
/// goes on without them, as Velero's does.
async fn pod_volume_restores(
    client: &kube::Client,
    namespace: &str,
    restore: &Restore,
) -> Vec<PodVolumeRestore> {
    let name = restore.name_any();
    let api: Api<PodVolumeRestore> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{RESTORE_NAME}={}", label_value(&name)));
    match api.list(&params).await {
        Ok(list) => list.items,
        Err(e) => {
            eprintln!(
                "lifeboat: cannot list the PodVolumeRestores of restore {name:?}: {}",
                lifeboat_repo::error_chain(&e)
            );
            Vec::new()
        }
    }
}

/// Velero's `restore describe` layout (v1.5), with the fields later versions added.
fn describe_restore(
    restore: &Restore,
    results: Option<&Result<BackupResults>>,
    volumes: &[PodVolumeRestore],
    details: bool,
) -> String {
    let name = restore.name_any();
    let status = restore.status.clone().unwrap_or_default();
    let spec = &restore.spec;
    let phase = phase(restore);
    let mut d = Describer::new();
    d.metadata(&restore.metadata);
    d.blank();
    let logs_note = if matches!(phase, RestorePhase::Failed | RestorePhase::PartiallyFailed) {
        format!(" (run `lifeboat restore logs {name}` for more information)")
    } else {
        String::new()
    };
    d.line(format!("Phase:\t{phase:?}{logs_note}"));
    if let Some(reason) = status.failure_reason.as_deref().filter(|r| !r.is_empty()) {
        d.line(format!("Failure reason:\t{reason}"));
    }
    d.blank();
    // `<n/a>` only for restores that failed validation, or are not processed yet.
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map_or("<n/a>".into(), local_time)
    };
    d.line(format!("Started:\t{}", time(&status.start_timestamp)));
    d.line(format!(
        "Completed:\t{}",
        time(&status.completion_timestamp)
    ));
    if !status.validation_errors.is_empty() {
        d.blank();
        d.list("Validation errors", &status.validation_errors);
    }
    match results {
        None => {}
        Some(Err(why)) => {
            d.blank();
            d.line(format!(
                "Warnings and errors:\t<{} warnings and {} errors; cannot read them: {}>",
                status.warnings.unwrap_or(0),
                status.errors.unwrap_or(0),
                crate::sentence(why)
            ));
        }
        Some(Ok(results)) => {
            if status.warnings.unwrap_or(0) > 0 {
                d.blank();
                describe_messages(&mut d, "Warnings", &results.warnings);
            }
            if status.errors.unwrap_or(0) > 0 {
                d.blank();
                describe_messages(&mut d, "Errors", &results.errors);
            }
        }
    }
    d.blank();
    d.line(format!("Backup:\t{}", spec.backup_name));
    if let Some(schedule) = &spec.schedule_name {
        d.line(format!("Schedule:\t{schedule}"));
    }
    d.blank();
    let joined = |items: &[String], empty: &str| {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.join(", ")
        }
    };
    let tri = |b: Option<bool>, f: &str, t: &str| match b {
        None => "auto".to_string(),
        Some(true) => t.to_string(),
        Some(false) => f.to_string(),
    };
    d.line("Namespaces:");
    let included = match spec.included_namespaces.as_slice() {
        [] => "all namespaces found in the backup".to_string(),
        [all] if all == "*" => "all namespaces found in the backup".to_string(),
        some => some.join(", "),
    };
    d.line(format!("\tIncluded:\t{included}"));
    d.line(format!(
        "\tExcluded:\t{}",
        joined(&spec.excluded_namespaces, "<none>")
    ));
    d.blank();
    d.line("Resources:");
    d.line(format!(
        "\tIncluded:\t{}",
        joined(&spec.included_resources, "*")
    ));
    d.line(format!(
        "\tExcluded:\t{}",
        joined(&spec.excluded_resources, "<none>")
    ));
    d.line(format!(
        "\tCluster-scoped:\t{}",
        tri(spec.include_cluster_resources, "excluded", "included")
    ));
    d.blank();
    d.map("Namespace mappings", Some(&spec.namespace_mapping));
    d.blank();
    d.line(format!(
        "Label selector:\t{}",
        selector::format(spec.label_selector.as_ref())
    ));
    d.blank();
    d.line(format!(
        "Restore PVs:\t{}",
        tri(spec.restore_pvs, "false", "true")
    ));
    d.blank();
    d.line(format!(
        "Existing Resource Policy:\t{}",
        spec.existing_resource_policy.as_deref().unwrap_or("<none>")
    ));
    d.line(format!(
        "Preserve Service NodePorts:\t{}",
        tri(spec.preserve_node_ports, "false", "true")
    ));
    if !volumes.is_empty() {
        d.blank();
        describe_pod_volume_restores(&mut d, volumes, details);
    }
    d.finish()
}

/// One kind of results (`Warnings`, `Errors`) in Velero's layout.
fn describe_messages(d: &mut Describer, title: &str, messages: &Messages) {
    d.line(format!("{title}:"));
    d.list("\tVelero", &messages.velero);
    d.list("\tCluster", &messages.cluster);
    if messages.namespaces.is_empty() {
        d.line("\tNamespaces:\t<none>");
    } else {
        d.line("\tNamespaces:");
        for (namespace, list) in &messages.namespaces {
            d.list(&format!("\t\t{namespace}"), list);
        }
    }
}

/// The volume restores by phase (Velero's order, New and unset together): counts only, or with
/// `--details` each pod's volumes.
fn describe_pod_volume_restores(d: &mut Describer, restores: &[PodVolumeRestore], details: bool) {
    if details {
        d.line("Restic Restores:");
    } else {
        d.line("Restic Restores (specify --details for more information):");
    }
    let phase_of =
        |r: &PodVolumeRestore| match r.status.as_ref().and_then(|s| s.phase).unwrap_or_default() {
            PodVolumePhase::Completed => "Completed",
            PodVolumePhase::Failed => "Failed",
            PodVolumePhase::InProgress => "In Progress",
            PodVolumePhase::New => "New",
            PodVolumePhase::Unknown => "Unknown",
        };
    for phase in ["Completed", "Failed", "In Progress", "New", "Unknown"] {
        let group: Vec<&PodVolumeRestore> =
            restores.iter().filter(|r| phase_of(r) == phase).collect();
        if group.is_empty() {
            continue;
        }
        if !details {
            d.line(format!("\t{phase}:\t{}", group.len()));
            continue;
        }
        d.line(format!("\t{phase}:"));
        let mut by_pod: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in group {
            let pod = format!(
                "{}/{}",
                r.spec.pod.namespace.as_deref().unwrap_or_default(),
                r.spec.pod.name.as_deref().unwrap_or_default()
            );
            by_pod.entry(pod).or_default().push(&r.spec.volume);
        }
        for (pod, mut volumes) in by_pod {
            volumes.sort_unstable();
            d.line(format!("\t\t{pod}: {}", volumes.join(", ")));
        }
    }
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

/// Deletes each restore: its PodVolumeRestores, its files in the bucket (when the location can
/// be written; otherwise it says so and goes on), then the Restore, last, so that a failure
/// leaves something to delete again.
async fn delete(
    client: &kube::Client,
    namespace: &str,
    objects: &Objects,
    confirm: bool,
    access: &StoreAccessArgs,
) -> Result<()> {
    let api: Api<Restore> = Api::namespaced(client.clone(), namespace);
    let (restores, missing) = objects.fetch(&api).await?;
    if restores.is_empty() && missing.is_empty() {
        println!("No restores found");
        return Ok(());
    }
    if !restores.is_empty() && !confirm {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn create_args(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            create: CreateArgs,
        }
        let mut all = vec!["x"];
        all.extend(args);
        <Cli as clap::Parser>::try_parse_from(all).map(|c| c.create)
    }

    fn now() -> jiff::Timestamp {
        "2026-11-22T03:04:05Z".parse().unwrap()
    }

    #[test]
    fn the_default_name_is_the_source_and_the_utc_time() {
        let r = create_args(&["--from-backup", "nightly"])
            .unwrap()
            .restore("velero", now())
            .unwrap();
        assert_eq!(r.name_any(), "nightly-20261122030405");
        assert_eq!(r.spec.backup_name, "nightly");
        assert_eq!(r.spec.schedule_name, None);
        let r = create_args(&["--from-schedule", "daily"])
            .unwrap()
            .restore("velero", now())
            .unwrap();
        assert_eq!(r.name_any(), "daily-20261122030405");
        assert_eq!(r.spec.backup_name, "");
        assert_eq!(r.spec.schedule_name.as_deref(), Some("daily"));
    }

    #[test]
    fn exactly_one_source() {
        for args in [
            &["--from-backup", "a", "--from-schedule", "b"][..],
            &[][..],
            &["--from-backup", " "][..],
        ] {
            let err = create_args(args)
                .unwrap()
                .restore("velero", now())
                .unwrap_err();
            assert!(err.to_string().contains("--from-schedule"), "{err}");
        }
    }

    #[test]
    fn namespace_mappings_are_pairs_each_namespace_once() {
        let map = parse_namespace_mappings(&["a:b, c:d".into(), "e:f".into()]).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map["c"], "d");
        for bad in ["a", "a:", ":b", "a:b:c", "a=b"] {
            let err = parse_namespace_mappings(&[bad.into()]).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        let err = parse_namespace_mappings(&["a:b,a:c".into()]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn the_existing_resource_policy_is_none_or_update() {
        let spec = |p: &str| {
            create_args(&["--from-backup", "b", "--existing-resource-policy", p])
                .unwrap()
                .restore("velero", now())
                .map(|r| r.spec.existing_resource_policy)
        };
        assert_eq!(spec("update").unwrap().as_deref(), Some("update"));
        let err = spec("replace").unwrap_err().to_string();
        assert!(err.contains("`replace`"), "{err}");
    }
}
