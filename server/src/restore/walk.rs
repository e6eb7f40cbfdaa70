//! The walk over a backup's objects, in Velero's priority order: per object, the resource and
//! namespace filters and the label selector (on the backed-up labels); the API version must be
//! served by this cluster (restored CRDs are waited for), else a warning names the object;
//! [`transform::prepare`] resets what must not be restored and maps the namespace; a pod whose
//! volumes were backed up gets the `restic-wait` init container
//! ([`podvolume::restore`](crate::podvolume::restore)). An object that already exists is never
//! overwritten: identical is fine, different is a warning, or an update with
//! `existingResourcePolicy: update`. The merge rules (ServiceAccounts keep both sides' secrets)
//! live here too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::api::{BackupSpec, PodVolumeBackup, Restore};
use crate::backup::{BackupFilter, BackupResults};
use crate::controller::Context;
use crate::controller::operation::Stop;
use crate::error::Result;
use crate::podvolume::restore::{self as volume_restore, PodVolumes};
use crate::restore::archive::BackupContents;
use crate::restore::transform::{self, Restoring};
use crate::storage::chain;

use super::run::{CRD_WAIT, Failure, NON_RESTORABLE, Prepared, Run};

/// The walk over the tarball's objects.
pub(super) struct Walk<'r> {
    ctx: &'r Context,
    restore: &'r Restore,
    restoring: Restoring,
    filter: BackupFilter,
    update_existing: bool,
    restore_volumes: bool,
    /// Pod volume backups by (source namespace, pod name).
    volume_backups: BTreeMap<(String, String), Vec<PodVolumeBackup>>,
    /// Claims whose data comes back through pod volume restores: (source namespace, claim).
    claims_with_data: BTreeSet<(String, String)>,
    /// Target namespaces known to exist.
    namespaces: HashSet<String>,
    /// CRDs this restore created (`plural.group`), whose objects wait for them to be served.
    restored_crds: HashSet<String>,
    /// Served resources by group/version (`None`: the version is not served).
    served: HashMap<String, Option<Vec<String>>>,
    /// (total, restored).
    pub(super) progress: crate::controller::ItemProgress,
    pub(super) results: BackupResults,
    /// Pods restored with volumes to fill.
    pub(super) pod_volumes: Vec<PodVolumes>,
    /// Lines for the restore log.
    pub(super) log: Vec<String>,
}

impl<'r> Walk<'r> {
    pub(super) fn new(
        run: &'r Run<'_>,
        prepared: &'r Prepared,
        contents: &BackupContents,
        volume_backups: Vec<PodVolumeBackup>,
    ) -> Result<Walk<'r>, Stop<Failure>> {
        let spec = &run.restore.spec;
        let as_backup = BackupSpec {
            included_namespaces: spec.included_namespaces.clone(),
            excluded_namespaces: spec.excluded_namespaces.clone(),
            included_resources: spec.included_resources.clone(),
            excluded_resources: spec.excluded_resources.clone(),
            include_cluster_resources: spec.include_cluster_resources,
            label_selector: spec.label_selector.clone(),
            or_label_selectors: spec.or_label_selectors.clone(),
            ..BackupSpec::default()
        };
        let filter = BackupFilter::new(&as_backup, &prepared.index)
            .map_err(|e| Stop::Invalid(vec![format!("Invalid label selector: {e}")]))?;
        let restore_volumes = spec.restore_pvs != Some(false);
        let mut by_pod: BTreeMap<(String, String), Vec<PodVolumeBackup>> = BTreeMap::new();
        for pvb in volume_backups {
            let pod = &pvb.spec.pod;
            let key = (
                pod.namespace.clone().unwrap_or_default(),
                pod.name.clone().unwrap_or_default(),
            );
            by_pod.entry(key).or_default().push(pvb);
        }
        // The claims those volumes are on, read from the backed-up pods.
        let mut claims_with_data = BTreeSet::new();
        if restore_volumes && let Some(pods) = contents.resources.get("pods") {
            for (ns, names) in &pods.by_namespace {
                for name in names {
                    let Some(pvbs) = by_pod.get(&(ns.clone(), name.clone())) else {
                        continue;
                    };
                    let Ok(pod) = contents.read("pods", ns, name) else {
                        continue;
                    };
                    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
                        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str()
                            && pvbs.iter().any(|p| v["name"] == p.spec.volume.as_str())
                        {
                            claims_with_data.insert((ns.clone(), claim.to_owned()));
                        }
                    }
                }
            }
        }
        Ok(Walk {
            ctx: run.ctx,
            restore: &run.restore,
            restoring: Restoring {
                restore: run.name.clone(),
                backup: prepared.backup.name_any(),
                namespace_mapping: spec.namespace_mapping.clone(),
                claims_from_volume_backups: false,
            },
            filter,
            update_existing: spec.existing_resource_policy.as_deref() == Some("update"),
            restore_volumes,
            volume_backups: by_pod,
            claims_with_data,
            namespaces: HashSet::new(),
            restored_crds: HashSet::new(),
            served: HashMap::new(),
            progress: Arc::default(),
            results: BackupResults::default(),
            pod_volumes: Vec::new(),
            log: Vec::new(),
        })
    }

    /// Whether objects of `gr` are restored at all, and which namespaces (source names) of it.
    fn wanted(&self, gr: &str) -> bool {
        if NON_RESTORABLE.contains(&gr) {
            return false;
        }
        // The filter names resources as discovery resolves them; an unserved resource keeps
        // its tarball name, which a filter of the same spelling still matches.
        self.filter.resources.should_include(gr)
    }

    pub(super) async fn restore_all(
        &mut self,
        contents: &BackupContents,
    ) -> Result<(), Stop<Failure>> {
        let order = crate::restore::order(contents.resources.keys().map(String::as_str));
        let mut plan: Vec<(String, String, String)> = Vec::new();
        for gr in &order {
            if !self.wanted(gr) {
                continue;
            }
            let items = &contents.resources[gr];
            for (ns, names) in &items.by_namespace {
                let take = if ns.is_empty() {
                    gr == "namespaces"
                        || gr == "persistentvolumes"
                        || self.filter.wants_cluster_scoped()
                } else {
                    self.filter.namespaces.should_include(ns)
                };
                if take {
                    plan.extend(names.iter().map(|n| (gr.clone(), ns.clone(), n.clone())));
                }
            }
        }
        self.progress.0.store(plan.len(), Ordering::Relaxed);
        for (gr, ns, name) in plan {
            let object = match contents.read(&gr, &ns, &name) {
                Ok(o) => o,
                Err(e) => {
                    self.error(&ns, format!("error reading {gr} {name}: {}", chain(&e)));
                    continue;
                }
            };
            // The total shrinks by what the filters leave out; only what the cluster now holds
            // as backed up counts as restored.
            match self.restore_one(&gr, &ns, &name, object, contents).await? {
                Taken::NotSelected => {
                    self.progress.0.fetch_sub(1, Ordering::Relaxed);
                }
                Taken::Restored => {
                    self.progress.1.fetch_add(1, Ordering::Relaxed);
                }
                Taken::Failed => {}
            }
        }
        Ok(())
    }

    fn target<'a>(&'a self, ns: &'a str) -> &'a str {
        self.restoring.target_namespace(ns)
    }

    fn warn(&mut self, source_ns: &str, message: String) {
        let target = (!source_ns.is_empty()).then(|| self.target(source_ns).to_owned());
        self.results.warnings.add(target.as_deref(), message);
    }

    fn error(&mut self, source_ns: &str, message: String) {
        let target = (!source_ns.is_empty()).then(|| self.target(source_ns).to_owned());
        self.results.errors.add(target.as_deref(), message);
    }

    async fn restore_one(
        &mut self,
        gr: &str,
        ns: &str,
        name: &str,
        mut object: Value,
        contents: &BackupContents,
    ) -> Result<Taken, Stop<Failure>> {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default();
        if !self.filter.selects(&labels) {
            return Ok(Taken::NotSelected);
        }
        if gr == "namespaces" {
            // A namespace is restored when its objects are wanted, under its mapped name.
            if self.filter.namespaces.should_include(name) {
                self.ensure_namespace(name, contents).await?;
                return Ok(Taken::Restored);
            }
            return Ok(Taken::NotSelected);
        }
        if gr == "persistentvolumes" && !self.pv_wanted(&object) {
            return Ok(Taken::NotSelected);
        }
        if !ns.is_empty() {
            self.ensure_namespace(ns, contents).await?;
        }
        let Some(api_version) = object["apiVersion"].as_str().map(str::to_owned) else {
            self.error(ns, format!("{gr} {name} in the backup has no apiVersion"));
            return Ok(Taken::Failed);
        };
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let plural = gr.split_once('.').map_or(gr, |(r, _)| r).to_owned();
        if !self.is_served(gr, &api_version, &plural).await? {
            self.warn(
                ns,
                format!(
                    "{kind} {} was not restored: this cluster does not serve {plural} at {api_version}",
                    qualified(ns, name)
                ),
            );
            return Ok(Taken::Failed);
        }

        // Claims whose data a pod volume restore brings back must not keep their old binding.
        self.restoring.claims_from_volume_backups = gr == "persistentvolumeclaims"
            && self
                .claims_with_data
                .contains(&(ns.to_owned(), name.to_owned()));
        transform::prepare(&mut object, gr, &self.restoring);
        let mut pod_volumes = None;
        if gr == "pods" && self.restore_volumes {
            let pvbs = self
                .volume_backups
                .get(&(ns.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_default();
            pod_volumes = volume_restore::add_wait_container(
                &mut object,
                &pvbs,
                &self.ctx.settings,
                &self.restore.uid().unwrap_or_default(),
            );
        }

        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), api_version.clone()),
        };
        let resource = ApiResource {
            group,
            version,
            api_version: api_version.clone(),
            kind: kind.clone(),
            plural,
        };
        let target_ns = self.target(ns).to_owned();
        let api: Api<DynamicObject> = if ns.is_empty() {
            Api::all_with(self.ctx.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.ctx.client.clone(), &target_ns, &resource)
        };
        let dynamic: DynamicObject = match serde_json::from_value(object.clone()) {
            Ok(d) => d,
            Err(e) => {
                self.error(
                    ns,
                    format!("{kind} {} is not a valid object: {e}", qualified(ns, name)),
                );
                return Ok(Taken::Failed);
            }
        };
        let taken = match api.create(&PostParams::default(), &dynamic).await {
            Ok(created) => {
                if gr == "customresourcedefinitions.apiextensions.k8s.io" {
                    self.restored_crds.insert(name.to_owned());
                }
                if let Some(volumes) = pod_volumes {
                    let pod_uid = created.uid().unwrap_or_default();
                    self.pod_volumes.push(PodVolumes {
                        namespace: target_ns,
                        name: name.to_owned(),
                        uid: pod_uid,
                        source_namespace: ns.to_owned(),
                        volumes,
                        claims: claims_of(&object),
                        restore_uid: self.restore.uid().unwrap_or_default(),
                    });
                }
                Taken::Restored
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let present = self.exists(&api, ns, name, &kind, gr, &object).await?;
                if pod_volumes.is_some() {
                    self.warn(
                        ns,
                        format!(
                            "the volumes of pod {} were not restored: the pod already exists",
                            qualified(ns, name)
                        ),
                    );
                }
                if present {
                    Taken::Restored
                } else {
                    Taken::Failed
                }
            }
            Err(kube::Error::Api(e)) => {
                self.error(
                    ns,
                    format!(
                        "error restoring {gr}/{}: {}",
                        qualified(&target_ns, name),
                        e.message
                    ),
                );
                Taken::Failed
            }
            Err(e) => return Err(Stop::Api(e.into())),
        };
        Ok(taken)
    }

    /// An object that already exists: left alone when it matches, else a warning, or an update
    /// with `existingResourcePolicy: update`. True when the cluster now holds the backed-up
    /// object (the same, merged or updated).
    async fn exists(
        &mut self,
        api: &Api<DynamicObject>,
        ns: &str,
        name: &str,
        kind: &str,
        gr: &str,
        object: &Value,
    ) -> Result<bool, Stop<Failure>> {
        let Some(existing) = api.get_opt(name).await? else {
            self.error(
                ns,
                format!("{kind} {} existed and then vanished", qualified(ns, name)),
            );
            return Ok(false);
        };
        let mut in_cluster = serde_json::to_value(&existing).unwrap_or_default();
        transform::prepare(&mut in_cluster, gr, &self.restoring);
        if same_content(&in_cluster, object) {
            self.log.push(format!(
                "{kind} {} already exists with the backed-up content",
                qualified(ns, name)
            ));
            return Ok(true);
        }
        if gr == "serviceaccounts" {
            // Velero merges service accounts (a namespace's `default` always exists): the
            // backed-up secrets, pull secrets, labels and annotations are added to the live one.
            let merged =
                merge_service_account(&serde_json::to_value(&existing).unwrap_or_default(), object);
            let Some(patch) = merged else {
                return Ok(true);
            };
            {
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => self.log.push(format!(
                        "ServiceAccount {} merged with the backed-up one",
                        qualified(ns, name)
                    )),
                    Err(kube::Error::Api(e)) => {
                        self.warn(
                            ns,
                            format!(
                                "could not merge the existing ServiceAccount {}: {}",
                                qualified(ns, name),
                                e.message
                            ),
                        );
                        return Ok(false);
                    }
                    Err(e) => return Err(Stop::Api(e.into())),
                }
            }
            return Ok(true);
        }
        if self.update_existing {
            let mut patch = object.clone();
            if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| matches!(k.as_str(), "labels" | "annotations"));
            }
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.log.push(format!(
                    "{kind} {} already existed and was updated (existingResourcePolicy: update)",
                    qualified(ns, name)
                )),
                Err(kube::Error::Api(e)) => {
                    self.warn(
                        ns,
                        format!(
                            "could not update the existing {kind} {}: {}",
                            qualified(ns, name),
                            e.message
                        ),
                    );
                    return Ok(false);
                }
                Err(e) => return Err(Stop::Api(e.into())),
            }
            return Ok(true);
        }
        self.warn(
            ns,
            format!(
                "could not restore, {kind} \"{name}\" already exists. Warning: the in-cluster \
                 version is different than the backed-up version."
            ),
        );
        Ok(false)
    }

    /// A PV is restored unless its data comes back through a pod volume restore (a new volume
    /// is provisioned for the claim then) or its claim is not restored.
    fn pv_wanted(&self, pv: &Value) -> bool {
        let claim = &pv["spec"]["claimRef"];
        match (claim["namespace"].as_str(), claim["name"].as_str()) {
            (Some(ns), Some(name)) => {
                !self
                    .claims_with_data
                    .contains(&(ns.to_owned(), name.to_owned()))
                    && self.filter.namespaces.should_include(ns)
                    && self.filter.allows_cluster_scoped_item()
                    && self
                        .filter
                        .resources
                        .should_include("persistentvolumeclaims")
            }
            _ => self.filter.wants_cluster_scoped(),
        }
    }

    /// Creates the target namespace of source namespace `ns` unless it exists, from the
    /// backed-up Namespace when there is one (its labels and annotations), under its mapped name.
    async fn ensure_namespace(
        &mut self,
        ns: &str,
        contents: &BackupContents,
    ) -> Result<(), Stop<Failure>> {
        let target = self.target(ns).to_owned();
        if self.namespaces.contains(&target) {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        if api.get_opt(&target).await?.is_none() {
            let mut object = contents.read("namespaces", "", ns).unwrap_or_else(
                |_| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
            transform::prepare(&mut object, "namespaces", &self.restoring);
            object["metadata"]["name"] = json!(target);
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
            let namespace: Namespace = serde_json::from_value(object).map_err(|source| {
                Stop::failed(Failure::Namespace {
                    namespace: ns.to_owned(),
                    source,
                })
            })?;
            match api.create(&PostParams::default(), &namespace).await {
                Ok(_) => self.log.push(format!("Created namespace {target}")),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(Stop::Api(e.into())),
            }
        }
        self.namespaces.insert(target);
        Ok(())
    }

    /// Whether this cluster serves `plural` at `api_version`; a CRD this restore created is
    /// waited for (up to [`CRD_WAIT`]).
    async fn is_served(
        &mut self,
        gr: &str,
        api_version: &str,
        plural: &str,
    ) -> Result<bool, Stop<Failure>> {
        let deadline = tokio::time::Instant::now() + CRD_WAIT;
        loop {
            if !self.served.contains_key(api_version) {
                let list = served_resources(&self.ctx.client, api_version).await?;
                self.served.insert(api_version.to_owned(), list);
            }
            let served = self.served[api_version]
                .as_ref()
                .is_some_and(|l| l.iter().any(|r| r == plural));
            if served || !self.restored_crds.contains(gr) || tokio::time::Instant::now() >= deadline
            {
                if !served && self.restored_crds.contains(gr) {
                    self.log.push(format!(
                        "The restored CRD {gr} was not served within {}s",
                        CRD_WAIT.as_secs()
                    ));
                }
                return Ok(served);
            }
            self.served.remove(api_version);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The resource names served at `api_version` (`None` when the version is not served).
async fn served_resources(
    client: &kube::Client,
    api_version: &str,
) -> Result<Option<Vec<String>>, Stop<Failure>> {
    let listed = if api_version.contains('/') {
        client.list_api_group_resources(api_version).await
    } else {
        client.list_core_api_resources(api_version).await
    };
    match listed {
        Ok(list) => Ok(Some(list.resources.into_iter().map(|r| r.name).collect())),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(Stop::Api(e.into())),
    }
}

/// `ns/name`, or `name` for a cluster-scoped object.
fn qualified(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    }
}

/// Whether two prepared objects hold the same content (what the API server adds — defaults
/// in `metadata` it keeps — aside).
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(fields) = v.as_object_mut() {
            fields.remove("apiVersion");
            fields.remove("kind");
        }
        v
    };
    strip(a) == strip(b)
}

/// The merge patch that adds a backed-up ServiceAccount's secrets, pull secrets, labels and
/// annotations to the live one; `None` when the live one has them all.
fn merge_service_account(live: &Value, backed_up: &Value) -> Option<Value> {
    let mut patch = serde_json::Map::new();
    for list in ["secrets", "imagePullSecrets"] {
        let mut merged: Vec<Value> = live[list].as_array().cloned().unwrap_or_default();
        for item in backed_up[list].as_array().into_iter().flatten() {
            // The token Secrets are the old cluster's; the new one makes its own.
            let token = item["name"].as_str().is_some_and(|n| {
                n.starts_with(&format!(
                    "{}-token-",
                    backed_up["metadata"]["name"].as_str().unwrap_or_default()
                ))
            });
            if !token && !merged.iter().any(|m| m["name"] == item["name"]) {
                merged.push(item.clone());
            }
        }
        if merged.len() != live[list].as_array().map_or(0, Vec::len) {
            patch.insert(list.into(), Value::Array(merged));
        }
    }
    let mut meta = serde_json::Map::new();
    for field in ["labels", "annotations"] {
        let missing: serde_json::Map<String, Value> = backed_up["metadata"][field]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| live["metadata"][field].get(k.as_str()) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !missing.is_empty() {
            meta.insert(field.into(), Value::Object(missing));
        }
    }
    if !meta.is_empty() {
        patch.insert("metadata".into(), Value::Object(meta));
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// The claims a (prepared) pod mounts, by volume name.
fn claims_of(pod: &Value) -> BTreeMap<String, String> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_owned(),
                v["persistentVolumeClaim"]["claimName"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// What became of one object of the backup.
enum Taken {
    /// The restore's filters (label selector, namespaces, volumes) leave it out.
    NotSelected,
    /// The cluster holds it as backed up: created, already the same, merged or updated.
    Restored,
    /// It was wanted but is not restored (an error or a warning says why).
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_content_is_not_a_conflict() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let b = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        assert!(same_content(&a, &b));
        let c = json!({"metadata": {"name": "a"}, "data": {"k": "other"}});
        assert!(!same_content(&a, &c));
    }

    #[test]
    fn service_accounts_are_merged_not_overwritten() {
        let live = json!({"metadata": {"name": "default", "labels": {"a": "1"}},
            "secrets": [{"name": "default-token-new"}]});
        let backed_up = json!({"metadata": {"name": "default", "labels": {"a": "1", "velero.io/restore-name": "r"}},
            "secrets": [{"name": "default-token-old"}, {"name": "registry"}],
            "imagePullSecrets": [{"name": "registry"}]});
        assert_eq!(
            merge_service_account(&live, &backed_up),
            Some(
                json!({"secrets": [{"name": "default-token-new"}, {"name": "registry"}],
                "imagePullSecrets": [{"name": "registry"}],
                "metadata": {"labels": {"velero.io/restore-name": "r"}}})
            )
        );
        let same = json!({"metadata": {"name": "default", "labels": {"a": "1"}}});
        assert_eq!(merge_service_account(&live, &same), None);
    }

    #[test]
    fn claims_are_found_by_volume() {
        let pod = json!({"spec": {"volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "db"}},
            {"name": "tmp", "emptyDir": {}}]}});
        assert_eq!(
            claims_of(&pod),
            BTreeMap::from([("data".to_string(), "db".to_string())])
        );
    }
}
