//! Finding a pod volume on this node: kubelet keeps each mounted volume of a pod at
//! `<pods>/<pod-uid>/volumes/<plugin>/<dir>`, where `<plugin>` is the volume plugin with `/`
//! written `~` (`kubernetes.io~empty-dir`, `kubernetes.io~nfs`, `kubernetes.io~csi`…) and
//! `<dir>` is the pod's volume name, or the PersistentVolume's name for a claim. CSI volumes
//! hold their data one level down, in `mount` (next to kubelet's `vol_data.json`). The agent
//! sees `<pods>` as its host-pods root (`/host_pods`).
//!
//! Exactly one directory must match: none means the volume is not mounted on this node (the pod
//! moved, or the volume is a kind kubelet does not keep there); more than one means the name is
//! ambiguous, and guessing could back up the wrong data.

use std::io;
use std::path::{Path, PathBuf};

/// Why a volume could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The pod has no directory under the host-pods root.
    #[error("pod {pod_uid} has no directory under {root} on this node (not running here?)")]
    NoPod { pod_uid: String, root: String },
    /// No plugin directory holds the volume.
    #[error(
        "volume directory {dir:?} of pod {pod_uid} is not mounted on this node (looked in {pattern})"
    )]
    NotMounted {
        pod_uid: String,
        dir: String,
        pattern: String,
    },
    /// Several plugin directories hold a directory of that name.
    #[error("volume directory {dir:?} of pod {pod_uid} is ambiguous: {}", .paths.join(", "))]
    Ambiguous {
        pod_uid: String,
        dir: String,
        paths: Vec<String>,
    },
    /// The pod UID or directory name would leave the root (`..`, `/`).
    #[error("{what} {value:?} is not a plain name")]
    BadName { what: &'static str, value: String },
    /// The host-pods tree could not be read.
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The plugin directory of CSI volumes, whose data is in `<pv>/mount`.
const CSI_PLUGIN: &str = "kubernetes.io~csi";

/// The directory holding the data of volume `dir` of pod `pod_uid` under `root`.
pub fn find_volume(root: &Path, pod_uid: &str, dir: &str) -> Result<PathBuf, VolumeError> {
    plain(pod_uid, "pod UID")?;
    plain(dir, "volume directory")?;
    let pod = root.join(pod_uid);
    if !pod.is_dir() {
        return Err(VolumeError::NoPod {
            pod_uid: pod_uid.to_owned(),
            root: root.display().to_string(),
        });
    }
    let volumes = pod.join("volumes");
    let plugins = match std::fs::read_dir(&volumes) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_mounted(root, pod_uid, dir));
        }
        Err(source) => {
            return Err(VolumeError::Io {
                path: volumes.display().to_string(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for plugin in plugins {
        let plugin = plugin.map_err(|source| VolumeError::Io {
            path: volumes.display().to_string(),
            source,
        })?;
        let candidate = plugin.path().join(dir);
        // `symlink_metadata`: a symlink planted in a volume directory must not lead elsewhere.
        if !std::fs::symlink_metadata(&candidate).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        if plugin.file_name() == CSI_PLUGIN {
            let mount = candidate.join("mount");
            if std::fs::symlink_metadata(&mount).is_ok_and(|m| m.is_dir()) {
                found.push(mount);
            }
        } else {
            found.push(candidate);
        }
    }
    match found.len() {
        0 => Err(not_mounted(root, pod_uid, dir)),
        1 => Ok(found.remove(0)),
        _ => {
            found.sort();
            Err(VolumeError::Ambiguous {
                pod_uid: pod_uid.to_owned(),
                dir: dir.to_owned(),
                paths: found.iter().map(|p| p.display().to_string()).collect(),
            })
        }
    }
}

fn not_mounted(root: &Path, pod_uid: &str, dir: &str) -> VolumeError {
    VolumeError::NotMounted {
        pod_uid: pod_uid.to_owned(),
        dir: dir.to_owned(),
        pattern: root
            .join(pod_uid)
            .join("volumes")
            .join("*")
            .join(dir)
            .display()
            .to_string(),
    }
}

/// Why `root` does not look like the kubelet's pods directory of this node, or None when it
/// does (or nothing can be told: an empty root on an agent that does not know its own pod).
///
/// An agent in a pod knows its own pod's UID (`POD_UID` from the downward API) and the kubelet
/// keeps a directory for every pod of the node, the agent's own included: when that directory
/// is missing, the root is not the node's pods directory (another kubelet root, a wrong host
/// path), and every volume the agent is sent would be "not here". Without its UID the agent
/// can only see whether the root holds anything shaped like pod directories.
pub fn root_problem(root: &Path, own_pod_uid: Option<&str>) -> Option<String> {
    const ADVICE: &str = "mount the node's kubelet pods directory at the agent's /host_pods \
        (kubelet's --root-dir plus /pods: /var/lib/kubelet/pods on most distributions, \
        /var/lib/k0s/kubelet/pods on k0s, /var/snap/microk8s/common/var/lib/kubelet/pods on \
        MicroK8s)";
    let shown = root.display();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) => {
            return Some(format!(
                "the host-pods root {shown} cannot be read ({e}); {ADVICE}"
            ));
        }
    };
    if let Some(uid) = own_pod_uid.filter(|u| plain(u, "pod UID").is_ok()) {
        return (!root.join(uid).is_dir()).then(|| {
            format!(
                "the host-pods root {shown} does not hold this agent's own pod directory ({uid}), so it is not the kubelet's pods directory of this node; {ADVICE}"
            )
        });
    }
    let mut others = 0usize;
    for entry in entries.flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && entry.file_name().to_str().is_some_and(uid_shaped) {
            return None;
        }
        others += 1;
    }
    (others > 0).then(|| {
        format!(
            "the host-pods root {shown} holds {others} entr{} but no pod directory (named by pod UIDs), so it is not the kubelet's pods directory; {ADVICE}",
            if others == 1 { "y" } else { "ies" }
        )
    })
}

/// Whether `name` is shaped like a Kubernetes UID (`8-4-4-4-12` hex digits).
fn uid_shaped(name: &str) -> bool {
    let groups: Vec<&str> = name.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn plain(value: &str, what: &'static str) -> Result<(), VolumeError> {
    let bad = value.is_empty()
        || value == "."
        || value == ".."
        || value.contains('/')
        || value.contains('\0');
    if bad {
        return Err(VolumeError::BadName {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn pods() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("a temporary directory");
        for dir in [
            "uid-1/volumes/kubernetes.io~empty-dir/cache",
            "uid-1/volumes/kubernetes.io~nfs/pv-data",
            "uid-1/volumes/kubernetes.io~csi/pv-csi/mount",
            "uid-1/volumes/kubernetes.io~secret/token",
            "uid-2/volumes/kubernetes.io~empty-dir/same",
            "uid-2/volumes/kubernetes.io~configmap/same",
            "uid-3",
        ] {
            fs::create_dir_all(root.path().join(dir)).expect("create the tree");
        }
        root
    }

    #[test]
    fn a_volume_is_found_by_its_name_or_its_pv_and_csi_data_is_under_mount() {
        let root = pods();
        let r = root.path();
        assert_eq!(
            find_volume(r, "uid-1", "cache").unwrap(),
            r.join("uid-1/volumes/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(
            find_volume(r, "uid-1", "pv-data").unwrap(),
            r.join("uid-1/volumes/kubernetes.io~nfs/pv-data")
        );
        assert_eq!(
            find_volume(r, "uid-1", "pv-csi").unwrap(),
            r.join("uid-1/volumes/kubernetes.io~csi/pv-csi/mount")
        );
    }

    #[test]
    fn a_root_without_the_agent_s_own_pod_or_any_pod_is_not_kubelet_s() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let r = root.path();
        let own = "0b6f3c1e-9d2a-4f7e-8a1b-2c3d4e5f6a7b";
        // Empty: nothing to tell without the agent's own UID; with it, the root is wrong.
        assert_eq!(root_problem(r, None), None);
        let e = root_problem(r, Some(own)).expect("a problem");
        assert!(
            e.contains("does not hold this agent's own pod directory"),
            "{e}"
        );
        assert!(e.contains("/var/lib/k0s/kubelet/pods"), "{e}");
        fs::create_dir(r.join(own)).expect("create the agent's pod directory");
        assert_eq!(root_problem(r, Some(own)), None);
        // A directory of something else (a host's /var/lib, say).
        let other = tempfile::tempdir().expect("a temporary directory");
        fs::create_dir(other.path().join("kubelet")).expect("create a directory");
        let e = root_problem(other.path(), None).expect("a problem");
        assert!(e.contains("1 entry but no pod directory"), "{e}");
        fs::create_dir(other.path().join(own)).expect("create a pod directory");
        assert_eq!(root_problem(other.path(), None), None);
        let e = root_problem(&r.join("missing"), None).expect("a problem");
        assert!(e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn missing_ambiguous_and_escaping_names_say_what_is_wrong() {
        let root = pods();
        let r = root.path();
        let e = find_volume(r, "uid-9", "cache").unwrap_err().to_string();
        assert!(e.contains("pod uid-9 has no directory"), "{e}");
        let e = find_volume(r, "uid-1", "gone").unwrap_err().to_string();
        assert!(e.contains("\"gone\" of pod uid-1 is not mounted"), "{e}");
        assert!(e.contains("volumes/*/gone"), "{e}");
        let e = find_volume(r, "uid-3", "x").unwrap_err().to_string();
        assert!(e.contains("not mounted"), "{e}");
        let e = find_volume(r, "uid-2", "same").unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("configmap") && e.contains("empty-dir"),
            "{e}"
        );
        for (uid, dir) in [("..", "x"), ("uid-1", ".."), ("uid-1", "a/b"), ("", "x")] {
            let e = find_volume(r, uid, dir).unwrap_err().to_string();
            assert!(e.contains("is not a plain name"), "{e}");
        }
    }

    #[test]
    fn a_symlink_in_place_of_a_volume_is_not_followed() {
        let root = pods();
        let r = root.path();
        fs::create_dir_all(r.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(
            r.join("elsewhere"),
            r.join("uid-1/volumes/kubernetes.io~empty-dir/linked"),
        )
        .unwrap();
        assert!(matches!(
            find_volume(r, "uid-1", "linked"),
            Err(VolumeError::NotMounted { .. })
        ));
    }
}
