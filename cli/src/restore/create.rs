//! `lifeboat restore create`: a Restore from a backup, or from a schedule's newest completed
//! backup, checked as the server would check it and created once its source is found;
//! `--wait` follows it until it is finished.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use lifeboat_server::api::labels::{SCHEDULE_NAME, value as label_value};
use lifeboat_server::api::{Backup, Restore, RestorePhase, RestoreSpec};
use lifeboat_server::backup::validate_includes_excludes;

use crate::cluster::{ClusterArgs, already_exists, get_named};
use crate::format::{Format, parse_pairs, print_objects};
use crate::progress::{Waited, wait_until_finished};
use crate::selector;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct CreateArgs {
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

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: CreateArgs) -> Result<()> {
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
