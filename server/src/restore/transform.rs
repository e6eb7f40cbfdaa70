//! What a backed-up object becomes before it is created again, as Velero's restore makes it
//! (`resetMetadataAndStatus` and its pod, service and claim actions, v1.5.4):
//!
//! - metadata keeps only `name`, `namespace`, `labels` and `annotations`: no uid,
//!   resourceVersion, creationTimestamp, ownerReferences or managed fields;
//! - `status` is dropped (the API server and controllers own it);
//! - the namespace is mapped (`--namespace-mappings`), and so are the references that carry a
//!   namespace: a PV's `claimRef` (which also loses the old claim's uid), the ServiceAccount
//!   subjects of (Cluster)RoleBindings;
//! - the labels `velero.io/restore-name` and `velero.io/backup-name` are added;
//! - a pod loses `nodeName` (the scheduler places it again), `priority` (admission sets it from
//!   the class) and the service account token volume (`default-token-*`) with its mounts;
//! - a Service loses its `clusterIP`(s) (unless headless) and the node ports it did not ask for;
//! - a claim loses the binding annotations, and its `volumeName` when its data comes back from
//!   a pod volume backup rather than with its PV.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api::labels;

/// What the transformation needs to know about the restore.
#[derive(Debug, Clone, Default)]
pub struct Restoring {
    /// The restore's name (`velero.io/restore-name`).
    pub restore: String,
    /// The backup's name (`velero.io/backup-name`).
    pub backup: String,
    /// Source namespace → target namespace.
    pub namespace_mapping: BTreeMap<String, String>,
    /// Whether claims get their data from pod volume backups (their PVs are not restored
    /// with them, so the binding must not be kept).
    pub claims_from_volume_backups: bool,
}

impl Restoring {
    /// The namespace `ns` is restored into.
    pub fn target_namespace<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespace_mapping
            .get(ns)
            .map(String::as_str)
            .unwrap_or(ns)
    }
}

/// Prepares `object` of resource `gr` (`resource.group`) for creation.
pub fn prepare(object: &mut Value, gr: &str, restoring: &Restoring) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(meta)) = fields.get_mut("metadata") {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
        if let Some(Value::String(ns)) = meta.get_mut("namespace") {
            *ns = restoring.target_namespace(ns).to_owned();
        }
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(labels_map) = labels.as_object_mut() {
            labels_map.insert(
                labels::RESTORE_NAME.into(),
                Value::String(labels::value(&restoring.restore)),
            );
            labels_map.insert(
                labels::BACKUP_NAME.into(),
                Value::String(labels::value(&restoring.backup)),
            );
        }
    }
    fields.remove("status");
    match gr {
        "pods" => pod(fields),
        "services" => service(fields),
        "persistentvolumeclaims" => claim(fields, restoring),
        "persistentvolumes" => {
            if let Some(Value::Object(claim)) =
                fields.get_mut("spec").and_then(|s| s.get_mut("claimRef"))
            {
                // The restored claim is a new object: a claimRef naming the old one's uid
                // would leave the volume Released instead of bound to it.
                claim.remove("uid");
                claim.remove("resourceVersion");
                if let Some(Value::String(ns)) = claim.get_mut("namespace") {
                    *ns = restoring.target_namespace(ns).to_owned();
                }
            }
        }
        "rolebindings.rbac.authorization.k8s.io"
        | "clusterrolebindings.rbac.authorization.k8s.io" => {
            if let Some(Value::Array(subjects)) = fields.get_mut("subjects") {
                for subject in subjects {
                    if subject["kind"] == "ServiceAccount"
                        && let Some(Value::String(ns)) = subject.get_mut("namespace")
                    {
                        *ns = restoring.target_namespace(ns).to_owned();
                    }
                }
            }
        }
        _ => {}
    }
}

fn pod(fields: &mut Map<String, Value>) {
    let Some(Value::Object(spec)) = fields.get_mut("spec") else {
        return;
    };
    spec.remove("nodeName");
    spec.remove("priority");
    let tokens: Vec<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .filter(|n| n.starts_with("default-token-"))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return;
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        volumes.retain(|v| !tokens.iter().any(|t| v["name"] == t.as_str()));
    }
    for kind in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(kind) {
            for container in containers {
                if let Some(Value::Array(mounts)) = container.get_mut("volumeMounts") {
                    mounts.retain(|m| !tokens.iter().any(|t| m["name"] == t.as_str()));
                }
            }
        }
    }
}

fn service(fields: &mut Map<String, Value>) {
    // Node ports the user wrote (in kubectl's last-applied configuration) are kept; the ones
    // the API server assigned are not, or the new cluster could refuse them as taken.
    let explicit: Vec<String> = fields
        .get("metadata")
        .and_then(|m| m["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str())
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .map(|applied| {
            applied["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["nodePort"].as_u64().is_some_and(|n| n > 0))
                .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let Some(Value::Object(spec)) = fields.get_mut("spec") else {
        return;
    };
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports {
            let name = port["name"].as_str().unwrap_or_default().to_owned();
            if !explicit.contains(&name)
                && let Some(p) = port.as_object_mut()
            {
                p.remove("nodePort");
            }
        }
    }
}

fn claim(fields: &mut Map<String, Value>, restoring: &Restoring) {
    if let Some(Value::Object(annotations)) = fields
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    {
        annotations.remove("pv.kubernetes.io/bind-completed");
        annotations.remove("pv.kubernetes.io/bound-by-controller");
    }
    if restoring.claims_from_volume_backups
        && let Some(Value::Object(spec)) = fields.get_mut("spec")
    {
        spec.remove("volumeName");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn restoring() -> Restoring {
        Restoring {
            restore: "r1".into(),
            backup: "b1".into(),
            namespace_mapping: [("shop".to_string(), "shop-copy".to_string())].into(),
            claims_from_volume_backups: true,
        }
    }

    #[test]
    fn metadata_and_status_are_reset_and_the_namespace_mapped() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "shop", "uid": "u", "resourceVersion": "9",
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "web"},
                "ownerReferences": [{"kind": "X"}], "managedFields": []},
            "data": {"k": "v"}, "status": {"x": 1}});
        prepare(&mut cm, "configmaps", &restoring());
        assert_eq!(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "shop-copy",
                    "labels": {"app": "web", "velero.io/restore-name": "r1", "velero.io/backup-name": "b1"}},
                "data": {"k": "v"}})
        );
    }

    #[test]
    fn pods_lose_node_priority_and_token_volume() {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "blog"},
            "spec": {"nodeName": "n1", "priority": 0,
                "volumes": [{"name": "data"}, {"name": "default-token-abc"}],
                "containers": [{"name": "c", "volumeMounts": [{"name": "data"}, {"name": "default-token-abc"}]}]}});
        prepare(&mut pod, "pods", &restoring());
        assert_eq!(pod["metadata"]["namespace"], "blog");
        assert_eq!(
            pod["spec"],
            json!({"volumes": [{"name": "data"}],
                "containers": [{"name": "c", "volumeMounts": [{"name": "data"}]}]})
        );
    }

    #[test]
    fn services_lose_assigned_addresses_and_ports_but_keep_asked_ones() {
        let applied =
            json!({"spec": {"ports": [{"name": "fixed", "nodePort": 30080}]}}).to_string();
        let mut svc = json!({"metadata": {"name": "s", "namespace": "shop",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
            "spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "type": "NodePort",
                "ports": [{"name": "fixed", "nodePort": 30080}, {"name": "auto", "nodePort": 31999}]}});
        prepare(&mut svc, "services", &restoring());
        assert_eq!(
            svc["spec"],
            json!({"type": "NodePort", "ports": [{"name": "fixed", "nodePort": 30080}, {"name": "auto"}]})
        );
        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        prepare(&mut headless, "services", &restoring());
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn claims_lose_their_binding_and_references_follow_the_mapping() {
        let mut pvc = json!({"metadata": {"name": "c", "namespace": "shop",
                "annotations": {"pv.kubernetes.io/bind-completed": "yes", "keep": "1"}},
            "spec": {"volumeName": "pv-1", "accessModes": ["ReadWriteOnce"]}});
        prepare(&mut pvc, "persistentvolumeclaims", &restoring());
        assert_eq!(pvc["metadata"]["annotations"], json!({"keep": "1"}));
        assert_eq!(pvc["spec"], json!({"accessModes": ["ReadWriteOnce"]}));

        let mut pv = json!({"metadata": {"name": "pv-1"}, "spec": {"claimRef": {"namespace": "shop", "name": "c", "uid": "old", "resourceVersion": "7"}}});
        prepare(&mut pv, "persistentvolumes", &restoring());
        assert_eq!(
            pv["spec"]["claimRef"],
            json!({"namespace": "shop-copy", "name": "c"})
        );

        let mut rb = json!({"metadata": {"name": "rb", "namespace": "shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "shop"},
                {"kind": "User", "name": "u"}]});
        prepare(
            &mut rb,
            "rolebindings.rbac.authorization.k8s.io",
            &restoring(),
        );
        assert_eq!(rb["subjects"][0]["namespace"], "shop-copy");
        assert_eq!(rb["metadata"]["namespace"], "shop-copy");
    }
}
