//! Which pod volumes a backup protects, by Velero's rules (`pkg/restic/common.go`,
//! `backupper.go`):
//!
//! - opt-in: the pod's annotation `backup.velero.io/backup-volumes: a,b` names them;
//! - opt-out (`defaultVolumesToRestic`, or `defaultVolumesToFsBackup`): every volume except
//!   those in `backup.velero.io/backup-volumes-excludes`, hostPath, secret and config map
//!   volumes, and the service account token (`default-token-*`), which the resources
//!   themselves carry;
//!
//! then, for each chosen volume, what makes it impossible (a warning naming the reason): the
//! pod is not running or not scheduled, the volume is hostPath (itself or through its PV),
//! the claim is block mode or not bound, or the pod has no such volume.

use serde_json::Value;

/// The opt-in annotation.
pub const BACKUP_VOLUMES: &str = "backup.velero.io/backup-volumes";
/// The opt-out exclusions.
pub const BACKUP_VOLUMES_EXCLUDES: &str = "backup.velero.io/backup-volumes-excludes";

/// A volume chosen for backup, before its claim and volume are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The pod's volume name.
    pub name: String,
    /// The claim it mounts, if any.
    pub claim: Option<String>,
    /// Whether it is a hostPath volume itself.
    pub host_path: bool,
}

fn list(annotation: Option<&str>) -> Vec<String> {
    annotation
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The volumes of `pod` (its JSON) the backup asks for, with warnings for names the pod
/// does not have.
pub fn chosen(pod: &Value, default_volumes: bool) -> (Vec<Chosen>, Vec<String>) {
    let annotations = &pod["metadata"]["annotations"];
    let volumes: Vec<&Value> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let describe = |v: &Value| Chosen {
        name: v["name"].as_str().unwrap_or_default().to_owned(),
        claim: v["persistentVolumeClaim"]["claimName"]
            .as_str()
            .map(str::to_owned),
        host_path: !v["hostPath"].is_null(),
    };
    let mut warnings = Vec::new();
    if !default_volumes {
        let wanted = list(annotations[BACKUP_VOLUMES].as_str());
        let mut out = Vec::new();
        for name in wanted {
            match volumes.iter().find(|v| v["name"].as_str() == Some(&name)) {
                Some(v) => out.push(describe(v)),
                None => warnings.push(format!(
                    "volume {name} named in {BACKUP_VOLUMES} is not a volume of the pod; skipped"
                )),
            }
        }
        return (out, warnings);
    }
    let excluded = list(annotations[BACKUP_VOLUMES_EXCLUDES].as_str());
    let out = volumes
        .into_iter()
        .filter(|v| {
            let name = v["name"].as_str().unwrap_or_default();
            v["hostPath"].is_null()
                && v["secret"].is_null()
                && v["configMap"].is_null()
                && !excluded.iter().any(|e| e == name)
                && !name.starts_with("default-token")
        })
        .map(describe)
        .collect();
    (out, warnings)
}

/// Why a running pod's chosen volume cannot be backed up, given its claim and volume (JSON),
/// or `None` when it can.
pub fn unsupported(chosen: &Chosen, claim: Option<&Value>, pv: Option<&Value>) -> Option<String> {
    if chosen.host_path {
        return Some("it is a hostPath volume, which is not under kubelet's pod directory".into());
    }
    if let Some(claim) = claim {
        if claim["spec"]["volumeMode"].as_str() == Some("Block") {
            return Some(
                "its claim is a block-mode volume; only file systems are backed up".into(),
            );
        }
        if claim["spec"]["volumeName"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            return Some("its claim is not bound to a volume".into());
        }
        if let Some(pv) = pv
            && !pv["spec"]["hostPath"].is_null()
        {
            return Some(
                "its persistent volume is a hostPath volume, which is not under kubelet's pod \
                 directory"
                    .into(),
            );
        }
    }
    None
}

/// Why a pod's volumes cannot be backed up at all (not running, not scheduled), or `None`.
pub fn pod_unready(pod: &Value) -> Option<String> {
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Some("the pod is being deleted".into());
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or("Unknown");
    if phase != "Running" {
        return Some(format!("the pod is not running (phase {phase})"));
    }
    if pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return Some("the pod is not scheduled on a node".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(annotations: Value) -> Value {
        json!({
            "metadata": {"name": "web-0", "namespace": "shop", "annotations": annotations},
            "spec": {"nodeName": "node-1", "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "cache", "emptyDir": {}},
                {"name": "logs", "hostPath": {"path": "/var/log"}},
                {"name": "creds", "secret": {"secretName": "s"}},
                {"name": "settings", "configMap": {"name": "c"}},
                {"name": "default-token-abcde", "projected": {}},
                {"name": "scratch", "emptyDir": {}},
            ]},
            "status": {"phase": "Running"}
        })
    }

    fn names(chosen: &[Chosen]) -> Vec<&str> {
        chosen.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn opt_in_takes_the_annotated_volumes_and_warns_of_unknown_names() {
        let (chosen, warnings) = chosen(&pod(json!({BACKUP_VOLUMES: "data, cache,nope"})), false);
        assert_eq!(names(&chosen), ["data", "cache"]);
        assert_eq!(chosen[0].claim.as_deref(), Some("data-web-0"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("nope"), "{warnings:?}");
        assert!(super::chosen(&pod(json!({})), false).0.is_empty());
    }

    #[test]
    fn opt_out_takes_all_but_excluded_and_the_kinds_velero_never_backs_up() {
        let (chosen, _) = chosen(&pod(json!({BACKUP_VOLUMES_EXCLUDES: "scratch"})), true);
        assert_eq!(names(&chosen), ["data", "cache"]);
    }

    #[test]
    fn what_cannot_be_backed_up_says_why() {
        let host = Chosen {
            name: "logs".into(),
            claim: None,
            host_path: true,
        };
        assert!(unsupported(&host, None, None).unwrap().contains("hostPath"));
        let claimed = Chosen {
            name: "data".into(),
            claim: Some("c".into()),
            host_path: false,
        };
        let block = json!({"spec": {"volumeMode": "Block", "volumeName": "pv-1"}});
        assert!(
            unsupported(&claimed, Some(&block), None)
                .unwrap()
                .contains("block-mode")
        );
        let pending = json!({"spec": {}});
        assert!(
            unsupported(&claimed, Some(&pending), None)
                .unwrap()
                .contains("not bound")
        );
        let bound = json!({"spec": {"volumeName": "pv-1"}});
        let host_pv = json!({"spec": {"hostPath": {"path": "/mnt"}}});
        assert!(
            unsupported(&claimed, Some(&bound), Some(&host_pv))
                .unwrap()
                .contains("persistent volume is a hostPath")
        );
        let nfs_pv = json!({"spec": {"nfs": {"server": "n", "path": "/"}}});
        assert_eq!(unsupported(&claimed, Some(&bound), Some(&nfs_pv)), None);
        let mut pending_pod = pod(json!({}));
        pending_pod["status"]["phase"] = json!("Pending");
        assert!(
            pod_unready(&pending_pod)
                .unwrap()
                .contains("not running (phase Pending)")
        );
        assert_eq!(pod_unready(&pod(json!({}))), None);
    }
}
