//! What a backup takes: the flags `backup create` and `schedule create` share, turned into a
//! `BackupSpec` and checked as the server would check it (selectors, include/exclude lists,
//! `--ttl`, `--ordered-resources`), so a mistake is refused before anything is created.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use kube::api::Api;
use lifeboat_server::api::{BackupSpec, BackupStorageLocation, VolumeSnapshotLocation};
use lifeboat_server::backup::validate_includes_excludes;

use crate::cluster::get_named;
use crate::format::{go_duration, parse_pairs};
use crate::selector;
use lifeboat_server::duration;

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
    pub(super) fn spec_flags(&self) -> Vec<&'static str> {
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
}
