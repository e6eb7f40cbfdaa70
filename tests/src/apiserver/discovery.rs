//! Which resources the server serves, and the discovery documents that say so.
//!
//! The registry holds the built-in kinds lifeboat and its tests touch, plus one entry per served
//! version of every CustomResourceDefinition stored: creating, replacing or deleting a CRD
//! changes the registry in the same write, so the new resource is discoverable and servable at
//! once (a real server takes a moment to mark a CRD Established; clients poll for that
//! condition, which the stand-in sets straight away).
//!
//! Review resources (TokenReview) are served but not stored: `create` is their only verb and
//! answers at once (see `token`). Subresources other than `/status` that only create
//! (`serviceaccounts/token`, TokenRequest) are listed from [`CREATE_SUBRESOURCES`].
//!
//! Objects are stored per group and plural (`Collection`), not per version: a CRD with several
//! versions serves one set of objects, rewritten to the requested `apiVersion` on the way out
//! (no conversion, as with `conversion: None`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
};
use serde_json::Value;

use super::failure::{Failure, Result};

/// The verbs every resource here supports (all of them: no RBAC, no read-only kinds).
const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// The verbs of a `/status` subresource.
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];
/// The verb of a review resource or a create-only subresource.
const CREATE_VERBS: [&str; 1] = ["create"];

/// The group of CustomResourceDefinitions, whose writes change the registry.
pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";
/// The plural of CustomResourceDefinitions.
pub(crate) const CRD_PLURAL: &str = "customresourcedefinitions";

/// Where a resource's objects are stored: one collection per group and plural, shared by all
/// the versions that serve it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Collection {
    pub(crate) group: String,
    pub(crate) plural: String,
}

/// One served resource at one group version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) kind: String,
    pub(crate) namespaced: bool,
    pub(crate) short_names: Vec<String>,
    /// Whether it has a `/status` subresource (then status is written only through it).
    pub(crate) status: bool,
    /// Whether it is a review: created only, answered at once, never stored.
    pub(crate) review: bool,
}

impl Resource {
    /// `v1` for the core group, else `group/version`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn collection(&self) -> Collection {
        Collection {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    /// Whether this is the CustomResourceDefinition resource.
    pub(crate) fn is_crd(&self) -> bool {
        self.group == CRD_GROUP && self.plural == CRD_PLURAL
    }

    /// Whether this is TokenReview.
    pub(crate) fn is_token_review(&self) -> bool {
        self.review && self.group == "authentication.k8s.io" && self.plural == "tokenreviews"
    }

    /// Whether this is the Namespace resource.
    pub(crate) fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }
}

/// One built-in resource: (group, version, plural, kind, namespaced, status subresource, short
/// names).
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
);

/// The built-in resources.
#[rustfmt::skip]
const BUILTIN: &[Builtin] = &[
    ("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
    ("", "v1", "pods", "Pod", true, true, &["po"]),
    ("", "v1", "nodes", "Node", false, true, &["no"]),
    ("", "v1", "secrets", "Secret", true, false, &[]),
    ("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
    ("", "v1", "services", "Service", true, true, &["svc"]),
    ("", "v1", "serviceaccounts", "ServiceAccount", true, false, &["sa"]),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, true, &["pvc"]),
    ("", "v1", "persistentvolumes", "PersistentVolume", false, true, &["pv"]),
    ("", "v1", "events", "Event", true, false, &["ev"]),
    ("", "v1", "endpoints", "Endpoints", true, false, &["ep"]),
    ("", "v1", "limitranges", "LimitRange", true, false, &["limits"]),
    ("", "v1", "resourcequotas", "ResourceQuota", true, true, &["quota"]),
    ("apps", "v1", "deployments", "Deployment", true, true, &["deploy"]),
    ("apps", "v1", "daemonsets", "DaemonSet", true, true, &["ds"]),
    ("apps", "v1", "replicasets", "ReplicaSet", true, true, &["rs"]),
    ("apps", "v1", "statefulsets", "StatefulSet", true, true, &["sts"]),
    ("batch", "v1", "jobs", "Job", true, true, &[]),
    ("batch", "v1", "cronjobs", "CronJob", true, true, &["cj"]),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, false, &[]),
    (CRD_GROUP, "v1", CRD_PLURAL, "CustomResourceDefinition", false, true, &["crd", "crds"]),
    ("events.k8s.io", "v1", "events", "Event", true, false, &["ev"]),
    ("coordination.k8s.io", "v1", "leases", "Lease", true, false, &[]),
    ("storage.k8s.io", "v1", "storageclasses", "StorageClass", false, false, &["sc"]),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, true, &["pdb"]),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", true, true, &["ing"]),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true, false, &["netpol"]),
];

/// The built-in reviews, as (group, version, plural, kind): served, not stored.
const REVIEWS: &[(&str, &str, &str, &str)] =
    &[("authentication.k8s.io", "v1", "tokenreviews", "TokenReview")];

/// Create-only subresources, as (group, version, parent plural, subresource, kind's group,
/// kind's version, kind).
#[rustfmt::skip]
const CREATE_SUBRESOURCES: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
    ("", "v1", "serviceaccounts", "token", "authentication.k8s.io", "v1", "TokenRequest"),
];

/// The served resources: built-ins, then those of each stored CRD (by CRD name).
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    builtin: Vec<Resource>,
    crds: BTreeMap<String, Vec<Resource>>,
}

impl Registry {
    /// The built-in resources only.
    pub(crate) fn new() -> Registry {
        let stored = BUILTIN.iter().map(
            |&(group, version, plural, kind, namespaced, status, short)| Resource {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                singular: kind.to_lowercase(),
                kind: kind.into(),
                namespaced,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                status,
                review: false,
            },
        );
        let reviews = REVIEWS
            .iter()
            .map(|&(group, version, plural, kind)| Resource {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                singular: kind.to_lowercase(),
                kind: kind.into(),
                namespaced: false,
                short_names: Vec::new(),
                status: false,
                review: true,
            });
        let builtin = stored.chain(reviews).collect();
        Registry {
            builtin,
            crds: BTreeMap::new(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Resource> {
        self.builtin.iter().chain(self.crds.values().flatten())
    }

    /// The resource served at `group/version/plural`.
    pub(crate) fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Resource> {
        self.all()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The resource for an object's `apiVersion` and `kind`.
    pub(crate) fn find_kind(&self, api_version: &str, kind: &str) -> Option<&Resource> {
        self.all()
            .find(|r| r.api_version() == api_version && r.kind == kind)
    }

    /// Every served version of a collection (one for built-ins, one per served CRD version).
    pub(crate) fn versions_of(&self, collection: &Collection) -> Vec<&Resource> {
        self.all()
            .filter(|r| r.group == collection.group && r.plural == collection.plural)
            .collect()
    }

    /// Registers (or re-registers) the resources a stored CRD defines.
    pub(crate) fn set_crd(&mut self, name: &str, crd: &Value) -> Result<()> {
        let resources = crd_resources(name, crd)?;
        self.crds.insert(name.to_string(), resources);
        Ok(())
    }

    /// Forgets a CRD's resources; false if it had none registered.
    pub(crate) fn remove_crd(&mut self, name: &str) -> bool {
        self.crds.remove(name).is_some()
    }

    /// `/api`
    pub(crate) fn core_versions(&self) -> APIVersions {
        APIVersions {
            server_address_by_client_cidrs: Vec::new(),
            versions: vec!["v1".into()],
        }
    }

    /// `/apis`: every non-core group, built-ins first, each with its versions by kube's
    /// priority (highest, the preferred one, first).
    pub(crate) fn group_list(&self) -> APIGroupList {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.all().filter(|r| !r.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) if versions.contains(&r.version) => {}
                Some((_, versions)) => versions.push(r.version.clone()),
                None => groups.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        let groups = groups
            .into_iter()
            .map(|(name, mut versions)| {
                versions
                    .sort_by_key(|v| std::cmp::Reverse(kube::core::Version::parse(v).priority()));
                let versions: Vec<GroupVersionForDiscovery> = versions
                    .into_iter()
                    .map(|version| GroupVersionForDiscovery {
                        group_version: format!("{name}/{version}"),
                        version,
                    })
                    .collect();
                APIGroup {
                    preferred_version: versions.first().cloned(),
                    name,
                    server_address_by_client_cidrs: None,
                    versions,
                }
            })
            .collect();
        APIGroupList { groups }
    }

    /// `/api/v1` or `/apis/G/V`; None if nothing is served there.
    pub(crate) fn resource_list(&self, group: &str, version: &str) -> Option<APIResourceList> {
        let mut resources = Vec::new();
        for r in self
            .all()
            .filter(|r| r.group == group && r.version == version)
        {
            resources.push(APIResource {
                name: r.plural.clone(),
                singular_name: r.singular.clone(),
                namespaced: r.namespaced,
                kind: r.kind.clone(),
                verbs: if r.review {
                    &CREATE_VERBS[..]
                } else {
                    &VERBS[..]
                }
                .iter()
                .map(|v| v.to_string())
                .collect(),
                short_names: (!r.short_names.is_empty()).then(|| r.short_names.clone()),
                ..APIResource::default()
            });
            for &(_, _, _, sub, kind_group, kind_version, kind) in CREATE_SUBRESOURCES
                .iter()
                .filter(|s| s.0 == r.group && s.1 == r.version && s.2 == r.plural)
            {
                resources.push(APIResource {
                    name: format!("{}/{sub}", r.plural),
                    singular_name: String::new(),
                    namespaced: r.namespaced,
                    group: Some(kind_group.into()),
                    version: Some(kind_version.into()),
                    kind: kind.into(),
                    verbs: CREATE_VERBS.iter().map(|v| v.to_string()).collect(),
                    ..APIResource::default()
                });
            }
            if r.status {
                resources.push(APIResource {
                    name: format!("{}/status", r.plural),
                    singular_name: String::new(),
                    namespaced: r.namespaced,
                    kind: r.kind.clone(),
                    verbs: STATUS_VERBS.iter().map(|v| v.to_string()).collect(),
                    ..APIResource::default()
                });
            }
        }
        if resources.is_empty() {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(APIResourceList {
            group_version,
            resources,
        })
    }
}

/// The resources a CRD defines, one per served version; 422 if the CRD is not well formed.
pub(crate) fn crd_resources(name: &str, crd: &Value) -> Result<Vec<Resource>> {
    let text = |pointer: &str| {
        crd.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let invalid = |what: &str| {
        Failure::invalid(format!(
            "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: {what}"
        ))
    };
    let group = text("/spec/group");
    let plural = text("/spec/names/plural");
    let kind = text("/spec/names/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err(invalid(
            "spec.group, spec.names.plural and spec.names.kind are required",
        ));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let namespaced = match text("/spec/scope") {
        "Namespaced" => true,
        "Cluster" => false,
        _ => return Err(invalid("spec.scope must be Namespaced or Cluster")),
    };
    let singular = match text("/spec/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let short_names: Vec<String> = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid("spec.versions must not be empty"))?;
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        return Err(invalid(
            "spec.versions must have exactly one storage version",
        ));
    }
    let mut resources = Vec::new();
    for v in versions {
        let version = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if version.is_empty() {
            return Err(invalid("spec.versions[].name is required"));
        }
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        resources.push(Resource {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            kind: kind.to_string(),
            namespaced,
            short_names: short_names.clone(),
            status: v
                .pointer("/subresources/status")
                .is_some_and(Value::is_object),
            review: false,
        });
    }
    Ok(resources)
}

/// The status a real server gives an accepted CRD: Established and NamesAccepted, the names as
/// accepted and the storage version recorded.
pub(crate) fn crd_status(crd: &Value, now: &str) -> Value {
    let mut names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    if let Some(map) = names.as_object_mut() {
        let kind = map
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        map.entry("singular")
            .or_insert_with(|| kind.to_lowercase().into());
        map.entry("listKind")
            .or_insert_with(|| format!("{kind}List").into());
    }
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let condition = |kind: &str, reason: &str, message: &str| {
        serde_json::json!({
            "type": kind, "status": "True", "lastTransitionTime": now,
            "reason": reason, "message": message,
        })
    };
    serde_json::json!({
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "scope": "Namespaced",
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v2alpha1", "served": false, "storage": false},
                ],
            },
        })
    }

    #[test]
    fn crd_registers_its_served_versions() {
        let mut registry = Registry::new();
        registry
            .set_crd("widgets.example.com", &crd())
            .expect("valid CRD");
        let v1 = registry
            .find("example.com", "v1", "widgets")
            .expect("v1 served");
        assert!(v1.status && v1.namespaced);
        assert_eq!(v1.singular, "widget");
        assert!(
            !registry
                .find("example.com", "v1beta1", "widgets")
                .expect("served")
                .status
        );
        assert!(
            registry
                .find("example.com", "v2alpha1", "widgets")
                .is_none()
        );
        let group = registry
            .group_list()
            .groups
            .into_iter()
            .find(|g| g.name == "example.com")
            .expect("group listed");
        assert_eq!(group.preferred_version.expect("preferred").version, "v1");
        let list = registry.resource_list("example.com", "v1").expect("served");
        let names: Vec<_> = list.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["widgets", "widgets/status"]);
        assert!(registry.remove_crd("widgets.example.com"));
        assert!(registry.find("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn malformed_crds_are_invalid() {
        let mut wrong_name = crd();
        wrong_name["metadata"]["name"] = json!("gadgets.example.com");
        assert_eq!(
            crd_resources("gadgets.example.com", &wrong_name)
                .expect_err("bad")
                .code,
            422
        );
        let mut no_storage = crd();
        no_storage["spec"]["versions"][1]["storage"] = json!(false);
        assert_eq!(
            crd_resources("widgets.example.com", &no_storage)
                .expect_err("bad")
                .code,
            422
        );
    }
}
