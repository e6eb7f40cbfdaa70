//! The collection walk: every resource the API server serves, at its group's preferred
//! version, listed page by page, filtered, and handed object by object to an [`ItemSink`]
//! (the tarball writer).
//!
//! Memory is bounded by one page (`CollectOptions::page_size`, 500 as kubectl and Velero's
//! pager use) plus one key per backed-up object (needed anyway to skip duplicates and for the
//! resource list), never by the size of a namespace: Velero 1.5 first wrote every object to a
//! temporary file; we stream.
//!
//! The rules follow Velero v1.5.4 (`item_collector.go`, `item_backupper.go`, and its pod and
//! PVC backup actions):
//! - core resources first, pods, then PVCs, then PVs, then the rest in discovery order, then
//!   the other groups in discovery order; resources without the `list` verb are skipped;
//! - a resource served by two groups (deployments in `apps` and `extensions`, events in the
//!   core group and `events.k8s.io`…) is taken once, from the first group seen;
//! - cluster-scoped resources other than namespaces follow `includeClusterResources`;
//!   namespaces themselves are taken when included, even with cluster resources off;
//! - an object labelled `velero.io/exclude-from-backup=true`, or being deleted, is skipped;
//! - a pod brings the PVCs it mounts, a PVC the PV bound to it (whatever the label selector
//!   says; the namespace and resource filters still apply, and PVs are refused only when
//!   `includeClusterResources` is false);
//! - with `includeClusterResources` unset, the CRD of every backed-up custom resource is
//!   taken too;
//! - objects are written as the API server returned them (Velero strips nothing at backup
//!   time), with `apiVersion` and `kind` filled in as client-go's list decoding does;
//! - with several label selectors (`orLabelSelectors`), each is listed in turn and an object
//!   selected by more than one is written once.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};

use futures::future::BoxFuture;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::api::{Api, ApiResource, DynamicObject, GetParams, ListParams};
use serde_json::Value;

use super::filter::{BackupFilter, GroupResource, ResourceIndex, ServedResource};
use super::tarball::{BackupResults, ItemPath, ResourceList, TarballWriter};
use super::{Error, Result};

/// Settings of a collection.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Objects per list request. 500 is what kubectl and client-go's pager ask for: large
    /// enough that a namespace of thousands takes a few requests, small enough that a page of
    /// big objects (secrets, config maps up to 1 MiB each) stays well under memory limits.
    pub page_size: u32,
}

impl Default for CollectOptions {
    fn default() -> CollectOptions {
        CollectOptions { page_size: 500 }
    }
}

/// Where collected objects go. Writing may wait (on an upload making room), so it is async;
/// an error stops the collection.
pub trait ItemSink: Send {
    /// Stores one object's JSON.
    fn write_item<'a>(
        &'a mut self,
        path: &'a ItemPath,
        json: &'a [u8],
    ) -> BoxFuture<'a, io::Result<()>>;
}

impl<W: Write + Send> ItemSink for TarballWriter<W> {
    fn write_item<'a>(
        &'a mut self,
        path: &'a ItemPath,
        json: &'a [u8],
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(std::future::ready(self.add_item(path, json)))
    }
}

/// What a finished collection found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectStats {
    /// Every object written, for `<backup>-resource-list.json.gz`.
    pub resource_list: ResourceList,
    /// Warnings and errors, for `<backup>-results.gz` and the status counts.
    pub results: BackupResults,
    /// How many objects were written.
    pub items_backed_up: usize,
}

/// The served resources, and the groups whose discovery document could not be read (an
/// aggregated API whose server is down, typically): their resources are not backed up, which
/// the controller reports as a warning rather than failing the backup, as Velero does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveredResources {
    /// The resources, in backup order.
    pub index: ResourceIndex,
    /// `group/version` of every group that failed discovery.
    pub unreachable_groups: Vec<String>,
}

/// Reads the plain discovery documents (`/api`, `/api/v1`, `/apis`, `/apis/G/V`) and keeps
/// every resource at its group's preferred version. The raw documents are read rather than
/// through `kube::discovery::Discovery`, because resolving users' resource names needs the
/// short and singular names that only the documents carry.
pub async fn discover(client: &kube::Client) -> Result<DiscoveredResources> {
    let mut out = DiscoveredResources::default();
    let mut resources = Vec::new();
    let core = client
        .list_core_api_versions()
        .await
        .map_err(Error::Discovery)?;
    if let Some(version) = core.versions.first() {
        let list = client
            .list_core_api_resources(version)
            .await
            .map_err(Error::Discovery)?;
        let mut core_resources = served(&list, "", version);
        core_resources.sort_by_key(|r| core_priority(&r.group_resource.resource));
        resources.extend(core_resources);
    }
    let groups = client.list_api_groups().await.map_err(Error::Discovery)?;
    for group in groups.groups {
        let Some(preferred) = group
            .preferred_version
            .or_else(|| group.versions.into_iter().next())
        else {
            continue;
        };
        match client
            .list_api_group_resources(&preferred.group_version)
            .await
        {
            Ok(list) => resources.extend(served(&list, &group.name, &preferred.version)),
            Err(error) => {
                tracing::warn!(group = %preferred.group_version, %error, "discovery failed; its resources are not backed up");
                out.unreachable_groups.push(preferred.group_version);
            }
        }
    }
    out.index = ResourceIndex::new(resources);
    Ok(out)
}

/// Velero's order in the core group: pods before the PVCs they mount, PVCs before their PVs,
/// so a restore recreates claims before volumes are bound.
fn core_priority(resource: &str) -> u8 {
    match resource {
        "pods" => 0,
        "persistentvolumeclaims" => 1,
        "persistentvolumes" => 2,
        _ => 3,
    }
}

fn served(list: &APIResourceList, group: &str, version: &str) -> Vec<ServedResource> {
    list.resources
        .iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| ServedResource {
            group_resource: GroupResource::new(group, r.name.clone()),
            version: version.to_owned(),
            kind: r.kind.clone(),
            singular: r.singular_name.clone(),
            short_names: r.short_names.clone().unwrap_or_default(),
            namespaced: r.namespaced,
            listable: r.verbs.iter().any(|v| v == "list"),
        })
        .collect()
}

/// Resources that two groups serve from one storage (Velero's `cohabitatingResources`): each
/// is backed up once, from the first group that serves it.
const COHABITATING: &[(&str, &[&str])] = &[
    ("deployments", &["extensions", "apps"]),
    ("daemonsets", &["extensions", "apps"]),
    ("replicasets", &["extensions", "apps"]),
    ("networkpolicies", &["extensions", "networking.k8s.io"]),
    ("events", &["", "events.k8s.io"]),
];

/// Walks every served resource, hands each selected object to `sink`, and calls `progress`
/// with (objects found so far plus those still to come in the current list, objects written)
/// after each object. Only a discovery or sink failure is an `Err`; everything else ends up in
/// the returned results.
pub async fn collect(
    client: &kube::Client,
    index: &ResourceIndex,
    filter: &BackupFilter,
    options: &CollectOptions,
    sink: &mut dyn ItemSink,
    progress: impl FnMut(usize, usize) + Send,
) -> Result<CollectStats> {
    let mut walk = Walk {
        client,
        index,
        filter,
        options,
        sink,
        progress: Box::new(progress),
        written: HashSet::new(),
        backed_up_resources: BTreeSet::new(),
        cohabitants_seen: HashSet::new(),
        stats: CollectStats::default(),
        attempted: 0,
    };
    for resource in index.resources() {
        walk.resource(resource).await?;
    }
    if filter.include_cluster_resources.is_none() {
        walk.crds_of_backed_up_resources().await?;
    }
    Ok(walk.stats)
}

/// Up to how many included namespaces each resource is listed namespace by namespace.
const PER_NAMESPACE_LISTS: usize = 16;

/// The state of one collection.
struct Walk<'a> {
    client: &'a kube::Client,
    index: &'a ResourceIndex,
    filter: &'a BackupFilter,
    options: &'a CollectOptions,
    sink: &'a mut dyn ItemSink,
    progress: Box<dyn FnMut(usize, usize) + Send + 'a>,
    /// (apiVersion/kind, namespace, name) of every object written or being written.
    written: HashSet<(String, Option<String>, String)>,
    /// Group-resources with at least one object written (for their CRDs).
    backed_up_resources: BTreeSet<GroupResource>,
    /// Plurals of cohabitating resources already walked.
    cohabitants_seen: HashSet<&'static str>,
    stats: CollectStats,
    /// Objects taken so far, written or failed.
    attempted: usize,
}

impl Walk<'_> {
    /// Lists one resource in every namespace and under every selector it needs.
    async fn resource(&mut self, resource: &ServedResource) -> Result<()> {
        if !self.wants(resource) {
            return Ok(());
        }
        // A few named namespaces are listed each on its own (the API server filters); many are
        // taken from one cluster-wide list filtered here, so the requests are bounded by the
        // resources served, never by the length of a backup's include list.
        let namespaces: Vec<Option<String>> = match self.filter.namespaces.exact_includes() {
            Some(names) if resource.namespaced && names.len() <= PER_NAMESPACE_LISTS => {
                names.into_iter().map(|n| Some(n.to_owned())).collect()
            }
            _ => vec![None],
        };
        let selectors: Vec<Option<String>> = if self.filter.selectors.is_empty() {
            vec![None]
        } else {
            self.filter
                .selectors
                .iter()
                .map(|s| Some(s.to_string()))
                .collect()
        };
        for namespace in &namespaces {
            for selector in &selectors {
                self.list(resource, namespace.as_deref(), selector.as_deref())
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether a resource is listed at all.
    fn wants(&mut self, resource: &ServedResource) -> bool {
        let gr = &resource.group_resource;
        if !resource.listable {
            return false;
        }
        let is_namespaces = gr.is_namespaces();
        if !resource.namespaced && !is_namespaces && !self.filter.wants_cluster_scoped() {
            return false;
        }
        if !self.filter.resources.should_include(&gr.to_string()) {
            return false;
        }
        let cohabitant = COHABITATING
            .iter()
            .find(|(plural, groups)| *plural == gr.resource && groups.contains(&gr.group.as_str()));
        match cohabitant {
            Some((plural, _)) => self.cohabitants_seen.insert(plural),
            None => true,
        }
    }

    /// Lists one resource page by page and backs up each object.
    async fn list(
        &mut self,
        resource: &ServedResource,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Result<()> {
        let url = self.api(resource, namespace).resource_url().to_owned();
        let mut params = ListParams::default().limit(self.options.page_size);
        if let Some(s) = selector {
            params = params.labels(s);
        }
        loop {
            let page = match Self::list_page(self.client, &url, &params).await {
                Ok(page) => page,
                Err(error) => {
                    self.stats.results.errors.add(
                        namespace,
                        format!(
                            "cannot list {}: {}",
                            resource.group_resource,
                            lifeboat_repo::error_chain(&error)
                        ),
                    );
                    return Ok(());
                }
            };
            let remaining = page["metadata"]["remainingItemCount"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0);
            let token = page["metadata"]["continue"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let items = match page {
                Value::Object(mut page) => match page.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let count = items.len();
            for (i, object) in items.into_iter().enumerate() {
                if !self.listed_object_wanted(resource, &object) {
                    continue;
                }
                let still_to_come = remaining + (count - i - 1);
                self.item(resource, object, still_to_come).await?;
            }
            match token {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(()),
            }
        }
    }

    /// One page of a list, as the raw JSON the API server sent: objects are written exactly as
    /// returned, with no typed round trip that could drop or reformat a field.
    /// (A function of the client alone, so the walk's futures need not be `Sync`.)
    async fn list_page(
        client: &kube::Client,
        url: &str,
        params: &ListParams,
    ) -> kube::Result<Value> {
        let request = kube::core::Request::new(url)
            .list(params)
            .map_err(kube::Error::BuildRequest)?;
        client.request::<Value>(request).await
    }

    /// One object as raw JSON; `None` when it does not exist.
    async fn get_raw(client: &kube::Client, url: &str, name: &str) -> kube::Result<Option<Value>> {
        let request = kube::core::Request::new(url)
            .get(name, &GetParams::default())
            .map_err(kube::Error::BuildRequest)?;
        match client.request::<Value>(request).await {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The namespace filter on a listed object: a cluster-wide list of a namespaced resource
    /// returns every namespace, and the namespaces resource lists them all.
    fn listed_object_wanted(&self, resource: &ServedResource, object: &Value) -> bool {
        let gr = &resource.group_resource;
        if gr.is_namespaces() {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            return self.filter.namespaces.should_include(name);
        }
        true
    }

    fn api(&self, resource: &ServedResource, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: resource.group_resource.group.clone(),
            version: resource.version.clone(),
            api_version: resource.api_version(),
            kind: resource.kind.clone(),
            plural: resource.group_resource.resource.clone(),
        };
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Backs up one object (and first what it brings along), as Velero's `backupItem`.
    async fn item(
        &mut self,
        resource: &ServedResource,
        mut object: Value,
        still_to_come: usize,
    ) -> Result<()> {
        let gr = &resource.group_resource;
        let text =
            |object: &Value, field: &str| object["metadata"][field].as_str().map(str::to_owned);
        let namespace = text(&object, "namespace").filter(|ns| !ns.is_empty());
        let name = text(&object, "name").unwrap_or_default();
        if !self.item_allowed(gr, &object, namespace.as_deref()) {
            return Ok(());
        }
        // client-go's list decoding gives every item its apiVersion and kind; lists from the
        // API server leave them out of the items.
        let Some(fields) = object.as_object_mut() else {
            return Ok(());
        };
        let api_version = fields
            .entry("apiVersion")
            .or_insert_with(|| Value::String(resource.api_version()))
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let kind = fields
            .entry("kind")
            .or_insert_with(|| Value::String(resource.kind.clone()))
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (
            format!("{api_version}/{kind}"),
            namespace.clone(),
            name.clone(),
        );
        if !self.written.insert(key) {
            return Ok(());
        }
        self.attempted += 1;
        // Velero runs its pod and PVC actions before writing the object itself, so what an
        // object brings along precedes it in the tarball.
        for (related, ns, related_name) in related_items(gr, &object) {
            Box::pin(self.fetch_and_back_up(&related, ns.as_deref(), &related_name)).await?;
        }
        let json = match serde_json::to_vec(&object) {
            Ok(json) => json,
            Err(error) => {
                self.stats.results.errors.add(
                    namespace.as_deref(),
                    format!("cannot encode {gr} {name}: {error}"),
                );
                return Ok(());
            }
        };
        let version = api_version
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let path = ItemPath {
            group_resource: gr.clone(),
            version,
            preferred_version: resource.version.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        };
        self.sink
            .write_item(&path, &json)
            .await
            .map_err(Error::Write)?;
        self.stats
            .resource_list
            .add(&api_version, &kind, namespace.as_deref(), &name);
        self.stats.items_backed_up += 1;
        self.backed_up_resources.insert(gr.clone());
        (self.progress)(self.attempted + still_to_come, self.stats.items_backed_up);
        Ok(())
    }

    /// The per-object rules of Velero's `backupItem`.
    fn item_allowed(&self, gr: &GroupResource, object: &Value, namespace: Option<&str>) -> bool {
        let meta = &object["metadata"];
        if meta["labels"][crate::api::labels::EXCLUDE_FROM_BACKUP].as_str() == Some("true") {
            return false;
        }
        match namespace {
            Some(ns) if !self.filter.namespaces.should_include(ns) => return false,
            None if !gr.is_namespaces() && !self.filter.allows_cluster_scoped_item() => {
                return false;
            }
            _ => {}
        }
        self.filter.resources.should_include(&gr.to_string()) && meta["deletionTimestamp"].is_null()
    }

    /// Gets one object another brought along and backs it up; one that is gone is skipped.
    async fn fetch_and_back_up(
        &mut self,
        gr: &GroupResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<()> {
        let Some(resource) = self.index.get(gr).cloned() else {
            return Ok(());
        };
        let url = self.api(&resource, namespace).resource_url().to_owned();
        match Self::get_raw(self.client, &url, name).await {
            Ok(Some(object)) => self.item(&resource, object, 0).await,
            Ok(None) => {
                tracing::warn!(%gr, ?namespace, name, "additional item not found; not backed up");
                Ok(())
            }
            Err(error) => {
                self.stats.results.errors.add(
                    namespace,
                    format!(
                        "cannot get {gr} {name}: {}",
                        lifeboat_repo::error_chain(&error)
                    ),
                );
                Ok(())
            }
        }
    }

    /// With `includeClusterResources` unset, the CRD behind every backed-up custom resource.
    async fn crds_of_backed_up_resources(&mut self) -> Result<()> {
        let crd = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        let wanted: Vec<GroupResource> = self
            .backed_up_resources
            .iter()
            .filter(|gr| !gr.group.is_empty() && **gr != crd)
            .cloned()
            .collect();
        for gr in wanted {
            self.fetch_and_back_up(&crd, None, &gr.to_string()).await?;
        }
        Ok(())
    }
}

/// What an object brings along (Velero's pod and PVC backup actions): a pod its claims, a
/// bound claim its volume. (group-resource, namespace, name).
fn related_items(
    gr: &GroupResource,
    object: &Value,
) -> Vec<(GroupResource, Option<String>, String)> {
    if !gr.group.is_empty() {
        return Vec::new();
    }
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
    match gr.resource.as_str() {
        "pods" => object["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|claim| {
                (
                    GroupResource::new("", "persistentvolumeclaims"),
                    namespace.clone(),
                    claim.to_owned(),
                )
            })
            .collect(),
        "persistentvolumeclaims" => match object["spec"]["volumeName"].as_str() {
            Some(pv) if !pv.is_empty() => vec![(
                GroupResource::new("", "persistentvolumes"),
                None,
                pv.to_owned(),
            )],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Value {
        value
    }

    #[test]
    fn a_pod_brings_its_claims_once_each() {
        let pod = object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"volumes": [
                {"name": "x", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "y", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "z", "emptyDir": {}},
            ]}
        }));
        assert_eq!(
            related_items(&GroupResource::new("", "pods"), &pod),
            vec![(
                GroupResource::new("", "persistentvolumeclaims"),
                Some("a".to_owned()),
                "data".to_owned()
            )]
        );
    }

    #[test]
    fn a_bound_claim_brings_its_volume_and_an_unbound_one_nothing() {
        let gr = GroupResource::new("", "persistentvolumeclaims");
        let bound = object(json!({
            "metadata": {"name": "c", "namespace": "a"}, "spec": {"volumeName": "pv-1"}
        }));
        assert_eq!(
            related_items(&gr, &bound),
            vec![(
                GroupResource::new("", "persistentvolumes"),
                None,
                "pv-1".to_owned()
            )]
        );
        let pending = object(json!({"metadata": {"name": "c", "namespace": "a"}, "spec": {}}));
        assert!(related_items(&gr, &pending).is_empty());
        assert!(related_items(&GroupResource::new("example.com", "pods"), &bound).is_empty());
    }

    #[test]
    fn core_resources_are_ordered_pods_claims_volumes_rest() {
        let mut names = vec![
            "configmaps",
            "persistentvolumes",
            "pods",
            "persistentvolumeclaims",
        ];
        names.sort_by_key(|n| core_priority(n));
        assert_eq!(
            names,
            [
                "pods",
                "persistentvolumeclaims",
                "persistentvolumes",
                "configmaps"
            ]
        );
    }
}
