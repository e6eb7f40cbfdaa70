//! `lifeboat backup create|get|describe|logs|download|delete`, with Velero's flags, table,
//! description layout and messages, so scripts and habits carry over.
//!
//! What differs from Velero, on purpose:
//! - Everything Velero would only find wrong on the server (a malformed selector, `--selector`
//!   with `--or-selector`, a bad `--ttl`, contradicting include/exclude lists, a storage or
//!   snapshot location that does not exist) is refused before anything is created, with one
//!   sentence naming the flag.
//! - `--from-schedule` refuses the filter flags it would silently ignore.
//! - `--ttl` left out leaves `spec.ttl` empty, so the server's `--default-backup-ttl` applies
//!   (Velero's client wrote its own 720h default).
//! - `logs`, `download` and `describe --details` read the bucket themselves (see [`bucket`]),
//!   so they need no DownloadRequest round trip through the server.
//! - `create --wait` ends when the phase is neither New nor InProgress, and exits 0 whatever
//!   that phase is, as Velero does: the phase is printed, and scripts that check it keep
//!   working. A backup deleted while waiting ends the wait with an error.
//!
//! [`bucket`]: crate::bucket

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use lifeboat_server::api::{
    Backup, BackupPhase, BackupSpec, BackupStorageLocation, DeleteBackupRequest,
    DeleteBackupRequestPhase, DeleteBackupRequestSpec, PodVolumeBackup, PodVolumePhase, Schedule,
    VolumeSnapshotLocation,
};
use lifeboat_server::backup::layout::BackupKeys;
use lifeboat_server::backup::validate_includes_excludes;

use crate::bucket::{LocationFiles, StoreAccessArgs, gunzip};
use crate::cluster::{ClusterArgs, Objects, Selection, already_exists, get_named, none_missing};
use crate::describe::Describer;
use crate::duration;
use crate::format::{
    Format, Output, ask, from_now, go_duration, human_bytes, local_time, parse_pairs,
    print_objects, print_table, write_stdout,
};
use crate::progress::{Waited, wait_until_finished};
use crate::selector;

pub(crate) use lifeboat_server::api::labels::{
    BACKUP_NAME as BACKUP_NAME_LABEL, BACKUP_UID as BACKUP_UID_LABEL,
    SCHEDULE_NAME as SCHEDULE_NAME_LABEL, value as label_value,
};

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Create a backup.
    Create(Box<CreateArgs>),
    /// List backups, or show the ones named.
    Get {
        names: Vec<String>,
        /// Only the backups matching this label selector.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Describe backups.
    Describe {
        names: Vec<String>,
        /// Only the backups matching this label selector.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        /// Also list the backed-up resources (read from the bucket) and each volume backup.
        #[arg(long)]
        details: bool,
        #[command(flatten)]
        access: StoreAccessArgs,
    },
    /// Print a backup's log.
    Logs {
        name: String,
        #[command(flatten)]
        access: StoreAccessArgs,
    },
    /// Download a backup's resources (the tarball; volume data stays in the repositories).
    Download {
        name: String,
        /// Where to write it (default: NAME-data.tar.gz in the current directory).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        access: StoreAccessArgs,
    },
    /// Delete backups with their files, volume data and restores.
    Delete {
        #[command(flatten)]
        selection: Selection,
        /// Do not ask for confirmation.
        #[arg(long)]
        confirm: bool,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
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

/// What a backup takes: the flags of `backup create` that `schedule create` shares.
#[derive(Debug, Clone, Args)]
pub(crate) struct TemplateArgs {
    /// Namespaces to include, comma-separated (`*`, the default, for all).
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
    /// Only back up resources matching this label selector (`app=web,tier!=db,env in (a,b)`).
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Back up resources matching any of these selectors, joined by ` or ` (`app=web or app=db`).
    #[arg(long)]
    or_selector: Option<String>,
    /// Labels of the object, key=value pairs separated by commas.
    #[arg(long, value_name = "K=V,…")]
    labels: Vec<String>,
    /// How long the backup is kept (`72h`, `720h0m0s`; default: the server's).
    // Parsed in `spec`, not by clap, so a bad one is one line naming the flag, as the other
    // checks of the spec are.
    #[arg(long)]
    ttl: Option<String>,
    /// The backup storage location (default: the default location).
    #[arg(long)]
    storage_location: Option<String>,
    /// Volume snapshot locations, comma-separated (at most one per provider).
    #[arg(long, value_delimiter = ',', value_name = "NAME,…")]
    volume_snapshot_locations: Vec<String>,
    /// Take native snapshots of persistent volumes (=true or =false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    snapshot_volumes: Option<bool>,
    /// Back up every pod volume with restic unless excluded (=true or =false; default: the
    /// server's).
    #[arg(long, visible_alias = "default-volumes-to-fs-backup", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    default_volumes_to_restic: Option<bool>,
    /// The order to back up resources of some kinds in:
    /// `pods=ns1/pod1,ns1/pod2;persistentvolumeclaims=ns1/pvc4`.
    #[arg(long, value_name = "KIND=NAMES;…")]
    ordered_resources: Option<String>,
}

impl TemplateArgs {
    /// The spec the flags describe, checked as the server would check it.
    pub(crate) fn spec(&self) -> Result<BackupSpec> {
        if self.selector.is_some() && self.or_selector.is_some() {
            bail!("pass either --selector or --or-selector, not both");
        }
        let label_selector = match &self.selector {
            Some(text) => selector::parse("selector", text)?,
            None => None,
        };
        let or_label_selectors = match &self.or_selector {
            Some(text) => selector::parse_or("or-selector", text)?,
            None => Vec::new(),
        };
        let included_namespaces = if self.include_namespaces.is_empty() {
            vec!["*".to_string()]
        } else {
            self.include_namespaces.clone()
        };
        for (what, includes, excludes) in [
            ("namespaces", &included_namespaces, &self.exclude_namespaces),
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
        // Written back as Go writes it (`1.5h` as `1h30m0s`): what Velero's client stores.
        let ttl = self
            .ttl
            .as_deref()
            .map(|t| {
                duration::parse(t)
                    .map(go_duration)
                    .map_err(|e| anyhow!("--ttl {e}"))
            })
            .transpose()?;
        let ordered_resources = match &self.ordered_resources {
            Some(text) => parse_ordered_resources(text)?,
            None => BTreeMap::new(),
        };
        Ok(BackupSpec {
            included_namespaces,
            excluded_namespaces: self.exclude_namespaces.clone(),
            included_resources: self.include_resources.clone(),
            excluded_resources: self.exclude_resources.clone(),
            label_selector,
            or_label_selectors,
            snapshot_volumes: self.snapshot_volumes,
            ttl,
            include_cluster_resources: self.include_cluster_resources,
            storage_location: self.storage_location.clone(),
            volume_snapshot_locations: self.volume_snapshot_locations.clone(),
            default_volumes_to_restic: self.default_volumes_to_restic,
            ordered_resources,
            ..Default::default()
        })
    }

    /// The labels of the object.
    pub(crate) fn labels(&self) -> Result<BTreeMap<String, String>> {
        parse_pairs("labels", &self.labels)
    }

    /// The flags given that shape the spec (all but `--labels`).
    fn spec_flags(&self) -> Vec<&'static str> {
        [
            ("--include-namespaces", !self.include_namespaces.is_empty()),
            ("--exclude-namespaces", !self.exclude_namespaces.is_empty()),
            ("--include-resources", !self.include_resources.is_empty()),
            ("--exclude-resources", !self.exclude_resources.is_empty()),
            (
                "--include-cluster-resources",
                self.include_cluster_resources.is_some(),
            ),
            ("--selector", self.selector.is_some()),
            ("--or-selector", self.or_selector.is_some()),
            ("--ttl", self.ttl.is_some()),
            ("--storage-location", self.storage_location.is_some()),
            (
                "--volume-snapshot-locations",
                !self.volume_snapshot_locations.is_empty(),
            ),
            ("--snapshot-volumes", self.snapshot_volumes.is_some()),
            (
                "--default-volumes-to-restic",
                self.default_volumes_to_restic.is_some(),
            ),
            ("--ordered-resources", self.ordered_resources.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// Checks that the storage and snapshot locations named exist (as Velero's client does).
    pub(crate) async fn check_locations(
        &self,
        client: &kube::Client,
        namespace: &str,
    ) -> Result<()> {
        if let Some(name) = &self.storage_location {
            let api: Api<BackupStorageLocation> = Api::namespaced(client.clone(), namespace);
            get_named(&api, "Backup storage location", name).await?;
        }
        let api: Api<VolumeSnapshotLocation> = Api::namespaced(client.clone(), namespace);
        for name in &self.volume_snapshot_locations {
            get_named(&api, "Volume snapshot location", name).await?;
        }
        Ok(())
    }
}

/// Velero's `--ordered-resources`: `kind=ns/name,ns/name;kind2=…`.
fn parse_ordered_resources(text: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for entry in text.split(';').filter(|e| !e.trim().is_empty()) {
        match entry.split_once('=') {
            Some((kind, names))
                if !kind.trim().is_empty() && !names.trim().is_empty() && !names.contains('=') =>
            {
                map.insert(kind.trim().to_string(), names.trim().to_string());
            }
            _ => bail!(
                "--ordered-resources `{entry}` is not KIND=NAMES; write e.g. pods=ns1/pod1,ns1/pod2;persistentvolumeclaims=ns1/pvc4"
            ),
        }
    }
    Ok(map)
}

pub(crate) async fn run(args: BackupArgs) -> Result<()> {
    let namespace = args.cluster.namespace()?;
    match args.command {
        BackupCommand::Create(create_args) => create(&args.cluster, &namespace, *create_args).await,
        BackupCommand::Get {
            names,
            selector,
            output,
        } => {
            let objects = Objects::given(&names, selector.as_deref())?;
            let client = args.cluster.client().await?;
            let api: Api<Backup> = Api::namespaced(client, &namespace);
            let (mut backups, missing) = objects.fetch(&api).await?;
            sort_backups(&mut backups);
            // Nothing found of the names given: only the error, as kubectl prints it.
            if !backups.is_empty() || missing.is_empty() {
                match output.objects() {
                    None => print_backup_table(&backups),
                    Some(format) => print_objects(names.len() == 1, &backups, format)?,
                }
            }
            none_missing("Backup", &missing)
        }
        BackupCommand::Describe {
            names,
            selector,
            details,
            access,
        } => {
            let objects = Objects::given(&names, selector.as_deref())?;
            let client = args.cluster.client().await?;
            let api: Api<Backup> = Api::namespaced(client.clone(), &namespace);
            let (mut backups, missing) = objects.fetch(&api).await?;
            sort_backups(&mut backups);
            for (i, backup) in backups.iter().enumerate() {
                let related = Related::fetch(&client, &namespace, backup).await;
                let resources = if details {
                    Some(resource_list(&client, &namespace, backup, &access).await)
                } else {
                    None
                };
                let text = describe_backup(backup, &related, resources.as_ref(), details);
                write_stdout(format!("{}{text}", if i > 0 { "\n\n" } else { "" }).as_bytes())?;
            }
            none_missing("Backup", &missing)
        }
        BackupCommand::Logs { name, access } => {
            let client = args.cluster.client().await?;
            let api: Api<Backup> = Api::namespaced(client.clone(), &namespace);
            let backup = get_named(&api, "Backup", &name).await?;
            finished(&backup, "Logs of")?;
            let files = open_location(&client, &namespace, &backup, &access).await?;
            let key = BackupKeys::new(&name).log();
            let Some(gz) = files.read(&key).await? else {
                bail!(
                    "backup {name:?} has no log in backup storage location {:?} ({key} is missing)",
                    files.name
                );
            };
            write_stdout(&gunzip(&gz, &key)?)
        }
        BackupCommand::Download {
            name,
            output,
            force,
            access,
        } => {
            let path = match output {
                Some(path) => path,
                None => std::env::current_dir()
                    .context("cannot find the current directory")?
                    .join(format!("{name}-data.tar.gz")),
            };
            if !force && path.exists() {
                bail!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                );
            }
            let client = args.cluster.client().await?;
            let api: Api<Backup> = Api::namespaced(client.clone(), &namespace);
            let backup = get_named(&api, "Backup", &name).await?;
            finished(&backup, "The contents of")?;
            let files = open_location(&client, &namespace, &backup, &access).await?;
            let key = BackupKeys::new(&name).contents();
            let Some(bytes) = files.read(&key).await? else {
                bail!(
                    "backup {name:?} has no contents in backup storage location {:?} ({key} is missing)",
                    files.name
                );
            };
            write_file(&path, &bytes, force)?;
            println!(
                "Backup {name} has been successfully downloaded to {}",
                path.display()
            );
            Ok(())
        }
        BackupCommand::Delete { selection, confirm } => {
            let objects = selection.objects("backups")?;
            let client = args.cluster.client().await?;
            delete(&client, &namespace, &objects, confirm).await
        }
    }
}

async fn create(cluster: &ClusterArgs, namespace: &str, args: CreateArgs) -> Result<()> {
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

/// Refuses a backup that is not finished: its files are not (all) in the bucket yet.
fn finished(backup: &Backup, what: &str) -> Result<()> {
    let name = backup.name_any();
    match backup
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
    {
        BackupPhase::New | BackupPhase::InProgress => bail!(
            "{what} backup {name:?} are not available until it's finished processing. Please wait until the backup has a phase of Completed or Failed and try again."
        ),
        BackupPhase::FailedValidation => bail!(
            "backup {name:?} failed validation, so it stored nothing; see `lifeboat backup describe {name}`"
        ),
        _ => Ok(()),
    }
}

/// The storage location of `backup`, opened for reading.
async fn open_location(
    client: &kube::Client,
    namespace: &str,
    backup: &Backup,
    access: &StoreAccessArgs,
) -> Result<LocationFiles> {
    let location = backup.spec.storage_location.as_deref().unwrap_or_default();
    LocationFiles::open(client, namespace, location, access).await
}

/// Writes a downloaded backup readable by its owner only (0600, also over an existing file
/// with `force`): it holds every Secret of the backed-up namespaces.
fn write_file(path: &std::path::Path, bytes: &[u8], force: bool) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = match options.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        }
        other => other.with_context(|| format!("cannot create {}", path.display()))?,
    };
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

async fn delete(
    client: &kube::Client,
    namespace: &str,
    objects: &Objects,
    confirm: bool,
) -> Result<()> {
    let api: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let (backups, missing) = objects.fetch(&api).await?;
    if backups.is_empty() && missing.is_empty() {
        println!("No backups found");
        return Ok(());
    }
    if !backups.is_empty() && !confirm {
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

/// Velero's order: by name, but the backups of one schedule (names ending in a 14-digit
/// timestamp) newest first.
fn sort_backups(backups: &mut [Backup]) {
    fn split(name: &str) -> (&str, Option<&str>) {
        match name.len().checked_sub(15).map(|at| name.split_at(at)) {
            Some((prefix, suffix))
                if suffix.starts_with('-') && suffix[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                (prefix, Some(suffix))
            }
            _ => (name, None),
        }
    }
    backups.sort_by(|a, b| {
        let (a, b) = (a.name_any(), b.name_any());
        match (split(&a), split(&b)) {
            ((pa, Some(sa)), (pb, Some(sb))) if pa == pb => sb.cmp(sa),
            _ => a.cmp(&b),
        }
    });
}

fn print_backup_table(backups: &[Backup]) {
    let now = jiff::Timestamp::now();
    let rows = backups
        .iter()
        .map(|b| {
            let status = b.status.clone().unwrap_or_default();
            let mut phase = format!("{:?}", status.phase.unwrap_or_default());
            if b.metadata.deletion_timestamp.is_some() {
                phase = "Deleting".into();
            }
            vec![
                b.name_any(),
                phase,
                status.errors.unwrap_or(0).to_string(),
                status.warnings.unwrap_or(0).to_string(),
                status
                    .start_timestamp
                    .as_ref()
                    .map_or("<nil>".into(), local_time),
                match expiration(b) {
                    Some(t) if t <= now => "expired".into(),
                    Some(t) => from_now(t, now),
                    None => "n/a".into(),
                },
                b.spec.storage_location.clone().unwrap_or_default(),
                selector::format(b.spec.label_selector.as_ref()),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "STATUS",
            "ERRORS",
            "WARNINGS",
            "CREATED",
            "EXPIRES",
            "STORAGE LOCATION",
            "SELECTOR",
        ],
        rows,
    );
}

/// When the backup expires: its status says, else its creation plus its TTL.
fn expiration(backup: &Backup) -> Option<jiff::Timestamp> {
    if let Some(t) = backup.status.as_ref().and_then(|s| s.expiration.as_ref()) {
        return Some(t.0);
    }
    // The server's reading of a stored TTL (not the flags' parser): the table shows when the
    // server will expire the backup.
    let ttl = lifeboat_server::parse_duration(backup.spec.ttl.as_deref()?)?;
    let created = backup.metadata.creation_timestamp.as_ref()?.0;
    created
        .checked_add(jiff::SignedDuration::try_from(ttl).ok()?)
        .ok()
        .filter(|_| !ttl.is_zero())
}

/// What else the cluster holds about a backup.
struct Related {
    delete_requests: Vec<DeleteBackupRequest>,
    pod_volume_backups: Vec<PodVolumeBackup>,
}

impl Related {
    /// The backup's DeleteBackupRequests and PodVolumeBackups; a failure to list is reported
    /// on stderr and the description goes on without them, as Velero's does.
    async fn fetch(client: &kube::Client, namespace: &str, backup: &Backup) -> Related {
        let name = label_value(&backup.name_any());
        let requests: Api<DeleteBackupRequest> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(&format!(
            "{BACKUP_NAME_LABEL}={name},{BACKUP_UID_LABEL}={}",
            backup.uid().unwrap_or_default()
        ));
        let delete_requests = match requests.list(&params).await {
            Ok(list) => list.items,
            Err(e) => {
                eprintln!(
                    "lifeboat: cannot list the DeleteBackupRequests of backup {name:?}: {}",
                    lifeboat_repo::error_chain(&e)
                );
                Vec::new()
            }
        };
        let volumes: Api<PodVolumeBackup> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(&format!("{BACKUP_NAME_LABEL}={name}"));
        let pod_volume_backups = match volumes.list(&params).await {
            Ok(list) => list.items,
            Err(e) => {
                eprintln!(
                    "lifeboat: cannot list the PodVolumeBackups of backup {name:?}: {}",
                    lifeboat_repo::error_chain(&e)
                );
                Vec::new()
            }
        };
        Related {
            delete_requests,
            pod_volume_backups,
        }
    }
}

/// The resource list of a backup (`{"v1/ConfigMap": ["ns/name", …]}`), or why there is none.
type ResourceList = Result<BTreeMap<String, Vec<String>>, ResourceListError>;

/// Why a backup's resource list cannot be shown, written in Velero's words where the list would
/// be. The cause is part of the text (not a `source`): this is printed in place of the list,
/// never wrapped into a chain.
#[derive(Debug, thiserror::Error)]
enum ResourceListError {
    /// Missing for backups before Velero 1.1, unfinished or failed ones, or removed files.
    #[error("<backup resource list not found>")]
    NotFound,
    #[error("<error getting backup resource list: {}>", crate::sentence(.0))]
    Get(anyhow::Error),
    #[error("<error reading backup resource list: {}>", crate::sentence(.0))]
    Read(anyhow::Error),
}

async fn resource_list(
    client: &kube::Client,
    namespace: &str,
    backup: &Backup,
    access: &StoreAccessArgs,
) -> ResourceList {
    let files = open_location(client, namespace, backup, access)
        .await
        .map_err(ResourceListError::Get)?;
    let key = BackupKeys::new(&backup.name_any()).resource_list();
    let gz = match files.read(&key).await {
        Ok(Some(gz)) => gz,
        Ok(None) => return Err(ResourceListError::NotFound),
        Err(e) => return Err(ResourceListError::Get(e)),
    };
    gunzip(&gz, &key)
        .and_then(|json| serde_json::from_slice(&json).context("it is not a JSON map of lists"))
        .map_err(ResourceListError::Read)
}

/// Velero's `backup describe` layout.
fn describe_backup(
    backup: &Backup,
    related: &Related,
    resources: Option<&ResourceList>,
    details: bool,
) -> String {
    let name = backup.name_any();
    let status = backup.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let mut d = Describer::new();
    d.metadata(&backup.metadata);
    d.blank();
    let logs_note = if matches!(phase, BackupPhase::Failed | BackupPhase::PartiallyFailed) {
        format!(" (run `lifeboat backup logs {name}` for more information)")
    } else {
        String::new()
    };
    d.line(format!("Phase:\t{phase:?}{logs_note}"));
    if let Some((first, rest)) = status.validation_errors.split_first() {
        d.blank();
        d.line(format!("Validation errors:\t{first}"));
        for e in rest {
            d.line(format!("\t{e}"));
        }
    }
    d.blank();
    d.line(format!("Errors:\t{}", status.errors.unwrap_or(0)));
    d.line(format!("Warnings:\t{}", status.warnings.unwrap_or(0)));
    d.blank();
    describe_spec(&mut d, &backup.spec);
    d.blank();

    d.line(format!(
        "Backup Format Version:\t{}",
        status.format_version.as_deref().unwrap_or_default()
    ));
    d.blank();
    // `<n/a>` only for backups that failed validation, or are not processed yet.
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map_or("<n/a>".into(), local_time)
    };
    d.line(format!("Started:\t{}", time(&status.start_timestamp)));
    d.line(format!(
        "Completed:\t{}",
        time(&status.completion_timestamp)
    ));
    d.blank();
    d.line(format!("Expiration:\t{}", time(&status.expiration)));
    d.blank();
    if let Some(progress) = &status.progress {
        let (total, done) = (
            progress.total_items.unwrap_or(0),
            progress.items_backed_up.unwrap_or(0),
        );
        if phase == BackupPhase::InProgress {
            d.line(format!("Estimated total items to be backed up:\t{total}"));
            d.line(format!("Items backed up so far:\t{done}"));
        } else {
            d.line(format!("Total items to be backed up:\t{total}"));
            d.line(format!("Items backed up:\t{done}"));
        }
        d.blank();
    }
    if let Some(resources) = resources {
        match resources {
            Err(why) => d.line(format!("Resource List:\t{why}")),
            Ok(list) => {
                d.line("Resource List:");
                for (kind, items) in list {
                    d.line(format!("\t{kind}:"));
                    for item in items {
                        d.line(format!("\t\t- {item}"));
                    }
                }
            }
        }
        d.blank();
    }
    match status.volume_snapshots_attempted.unwrap_or(0) {
        0 => d.line("Velero-Native Snapshots: <none included>"),
        attempted => d.line(format!(
            "Velero-Native Snapshots:\t{} of {attempted} snapshots completed successfully",
            status.volume_snapshots_completed.unwrap_or(0)
        )),
    }
    if !related.delete_requests.is_empty() {
        d.blank();
        describe_delete_requests(&mut d, &related.delete_requests);
    }
    if !related.pod_volume_backups.is_empty() {
        d.blank();
        describe_pod_volume_backups(&mut d, &related.pod_volume_backups, details);
    }
    d.finish()
}

/// A backup spec (also a schedule's template), in Velero's layout.
pub(crate) fn describe_spec(d: &mut Describer, spec: &BackupSpec) {
    let joined = |items: &[String], empty: &str| {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.join(", ")
        }
    };
    let tri = |b: Option<bool>, f: &str, t: &str, none: &str| match b {
        None => none.to_string(),
        Some(true) => t.to_string(),
        Some(false) => f.to_string(),
    };
    d.line("Namespaces:");
    d.line(format!(
        "\tIncluded:\t{}",
        joined(&spec.included_namespaces, "*")
    ));
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
        tri(
            spec.include_cluster_resources,
            "excluded",
            "included",
            "auto"
        )
    ));
    d.blank();
    d.line(format!(
        "Label selector:\t{}",
        selector::format(spec.label_selector.as_ref())
    ));
    if !spec.or_label_selectors.is_empty() {
        d.blank();
        let any: Vec<String> = spec
            .or_label_selectors
            .iter()
            .map(|s| selector::format(Some(s)))
            .collect();
        d.line(format!("Or label selector:\t{}", any.join(" or ")));
    }
    d.blank();
    d.line(format!(
        "Storage Location:\t{}",
        spec.storage_location.as_deref().unwrap_or_default()
    ));
    d.blank();
    d.line(format!(
        "Velero-Native Snapshot PVs:\t{}",
        tri(spec.snapshot_volumes, "false", "true", "auto")
    ));
    let fs_backup = spec
        .default_volumes_to_restic
        .or(spec.default_volumes_to_fs_backup);
    d.line(format!(
        "Default Volumes to Restic:\t{}",
        tri(fs_backup, "false", "true", "auto")
    ));
    d.blank();
    d.line(format!(
        "TTL:\t{}",
        spec.ttl
            .as_deref()
            .unwrap_or("0s (the server's default applies)")
    ));
    d.blank();
    let hooks = spec
        .hooks
        .as_ref()
        .map(|h| h.resources.as_slice())
        .unwrap_or_default();
    if hooks.is_empty() {
        d.line("Hooks:\t<none>");
    } else {
        d.line("Hooks:");
        d.line("\tResources:");
        for hook in hooks {
            d.line(format!("\t\t{}:", hook.name));
            d.line("\t\t\tNamespaces:");
            d.line(format!(
                "\t\t\t\tIncluded:\t{}",
                joined(&hook.included_namespaces, "*")
            ));
            d.line(format!(
                "\t\t\t\tExcluded:\t{}",
                joined(&hook.excluded_namespaces, "<none>")
            ));
            d.blank();
            d.line("\t\t\tResources:");
            d.line(format!(
                "\t\t\t\tIncluded:\t{}",
                joined(&hook.included_resources, "*")
            ));
            d.line(format!(
                "\t\t\t\tExcluded:\t{}",
                joined(&hook.excluded_resources, "<none>")
            ));
            d.blank();
            d.line(format!(
                "\t\t\tLabel selector:\t{}",
                selector::format(hook.label_selector.as_ref())
            ));
            for (when, list) in [("Pre", &hook.pre), ("Post", &hook.post)] {
                for exec in list.iter().filter_map(|h| h.exec.as_ref()) {
                    d.blank();
                    d.line(format!("\t\t\t{when} Exec Hook:"));
                    d.line(format!("\t\t\t\tContainer:\t{}", exec.container));
                    d.line(format!("\t\t\t\tCommand:\t{}", exec.command.join(" ")));
                    d.line(format!(
                        "\t\t\t\tOn Error:\t{}",
                        exec.on_error.as_deref().unwrap_or_default()
                    ));
                    d.line(format!(
                        "\t\t\t\tTimeout:\t{}",
                        exec.timeout.as_deref().unwrap_or("0s")
                    ));
                }
            }
        }
    }
    if !spec.ordered_resources.is_empty() {
        d.blank();
        d.line("OrderedResources:");
        for (kind, names) in &spec.ordered_resources {
            d.line(format!("\t{kind}: {names}"));
        }
    }
}

fn describe_delete_requests(d: &mut Describer, requests: &[DeleteBackupRequest]) {
    let failed = requests
        .iter()
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(DeleteBackupRequestPhase::Processed) && !s.errors.is_empty()
            })
        })
        .count();
    if failed > 0 {
        d.line(format!("Deletion Attempts ({failed} failed):"));
    } else {
        d.line("Deletion Attempts:");
    }
    for (i, request) in requests.iter().enumerate() {
        if i > 0 {
            d.blank();
        }
        let status = request.status.clone().unwrap_or_default();
        d.line(format!(
            "\t{}: {:?}",
            request
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or("<n/a>".into(), local_time),
            status.phase.unwrap_or_default()
        ));
        if !status.errors.is_empty() {
            d.line("\tErrors:");
            for e in &status.errors {
                d.line(format!("\t\t{e}"));
            }
        }
    }
}

/// The volume backups, by phase (Velero's order, New and unset together): counts only, or
/// with `--details` each volume with its snapshot, bytes and duration.
fn describe_pod_volume_backups(d: &mut Describer, backups: &[PodVolumeBackup], details: bool) {
    if details {
        d.line("Restic Backups:");
    } else {
        d.line("Restic Backups (specify --details for more information):");
    }
    let phase_of =
        |b: &PodVolumeBackup| match b.status.as_ref().and_then(|s| s.phase).unwrap_or_default() {
            PodVolumePhase::Completed => "Completed",
            PodVolumePhase::Failed => "Failed",
            PodVolumePhase::InProgress => "In Progress",
            PodVolumePhase::New => "New",
            PodVolumePhase::Unknown => "Unknown",
        };
    let now = jiff::Timestamp::now();
    for phase in ["Completed", "Failed", "In Progress", "New", "Unknown"] {
        let mut group: Vec<&PodVolumeBackup> =
            backups.iter().filter(|b| phase_of(b) == phase).collect();
        if group.is_empty() {
            continue;
        }
        if !details {
            d.line(format!("\t{phase}:\t{}", group.len()));
            continue;
        }
        d.line(format!("\t{phase}:"));
        let volume = |b: &PodVolumeBackup| {
            format!(
                "{}/{}/{}",
                b.spec.pod.namespace.as_deref().unwrap_or_default(),
                b.spec.pod.name.as_deref().unwrap_or_default(),
                b.spec.volume
            )
        };
        group.sort_by_key(|b| volume(b));
        for b in group {
            let status = b.status.clone().unwrap_or_default();
            let progress = status.progress.clone().unwrap_or_default();
            let (done, total) = (
                u64::try_from(progress.bytes_done.unwrap_or(0)).unwrap_or(0),
                u64::try_from(progress.total_bytes.unwrap_or(0)).unwrap_or(0),
            );
            let mut bytes = format!("{} of {}", human_bytes(done), human_bytes(total));
            if phase == "In Progress" && total > 0 {
                bytes.push_str(&format!(" ({:.2}%)", done as f64 / total as f64 * 100.0));
            }
            let took = match (&status.start_timestamp, &status.completion_timestamp) {
                (Some(start), Some(end)) => seconds(end.0.duration_since(start.0)),
                (Some(start), None) => {
                    format!("running for {}", seconds(now.duration_since(start.0)))
                }
                _ => "not started".into(),
            };
            let mut line = format!(
                "\t\t{}:\tsnapshot {}\t{bytes}\t{took}",
                volume(b),
                status.snapshot_id.as_deref().unwrap_or("<none>"),
            );
            if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
                line.push_str(&format!("\t{message}"));
            }
            d.line(line);
        }
    }
}

/// A span in whole seconds, Go-style (`1m12s`).
fn seconds(span: jiff::SignedDuration) -> String {
    go_duration(Duration::from_secs(
        u64::try_from(span.as_secs()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(args: &[&str]) -> TemplateArgs {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            template: TemplateArgs,
        }
        let mut all = vec!["x"];
        all.extend(args);
        <Cli as clap::Parser>::try_parse_from(all).unwrap().template
    }

    #[test]
    fn optional_bools_take_no_value_or_an_equals_value() {
        let t = template(&[
            "--include-cluster-resources",
            "--snapshot-volumes=false",
            "--default-volumes-to-fs-backup=true",
        ]);
        assert_eq!(t.include_cluster_resources, Some(true));
        assert_eq!(t.snapshot_volumes, Some(false));
        assert_eq!(t.default_volumes_to_restic, Some(true));
        assert_eq!(template(&[]).snapshot_volumes, None);
    }

    #[test]
    fn ordered_resources_are_velero_s_format() {
        let map =
            parse_ordered_resources("pods=ns1/pod1,ns1/pod2;persistentvolumeclaims=ns1/pvc4;")
                .unwrap();
        assert_eq!(map["pods"], "ns1/pod1,ns1/pod2");
        assert_eq!(map["persistentvolumeclaims"], "ns1/pvc4");
        let err = parse_ordered_resources("pods").unwrap_err().to_string();
        assert!(err.contains("--ordered-resources `pods`"), "{err}");
    }

    #[test]
    fn the_ttl_is_stored_as_go_writes_it() {
        // `=` so that `-1h` is the flag's value, not a flag.
        let ttl = |text: &str| template(&[&format!("--ttl={text}")]).spec().map(|s| s.ttl);
        assert_eq!(ttl("72h").unwrap().as_deref(), Some("72h0m0s"));
        assert_eq!(ttl("24h0m0s").unwrap().as_deref(), Some("24h0m0s"));
        assert_eq!(ttl("1.5h").unwrap().as_deref(), Some("1h30m0s"));
        assert_eq!(ttl("90m").unwrap().as_deref(), Some("1h30m0s"));
        assert_eq!(template(&[]).spec().unwrap().ttl, None);
        for bad in ["soon", "-1h", "3d", "9999999999999999999h"] {
            let err = ttl(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--ttl `{bad}` is not a duration")),
                "{err}"
            );
        }
    }

    #[test]
    fn long_names_become_valid_label_values() {
        assert_eq!(label_value("nightly"), "nightly");
        let long = "a".repeat(70);
        let value = label_value(&long);
        assert_eq!(value.len(), 63);
        assert!(value.starts_with(&"a".repeat(57)));
    }

    #[test]
    fn a_schedule_s_backups_sort_newest_first() {
        let backup = |name: &str| Backup::new(name, BackupSpec::default());
        let mut list = vec![
            backup("nightly-20261120010000"),
            backup("adhoc"),
            backup("nightly-20261122010000"),
            backup("zeta"),
        ];
        sort_backups(&mut list);
        let names: Vec<String> = list.iter().map(ResourceExt::name_any).collect();
        assert_eq!(
            names,
            [
                "adhoc",
                "nightly-20261122010000",
                "nightly-20261120010000",
                "zeta"
            ]
        );
    }
}
