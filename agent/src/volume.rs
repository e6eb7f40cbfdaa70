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
