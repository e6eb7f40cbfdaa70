//! The restore helper: the process of the `restic-wait` init container that a restore puts in
//! front of every restored pod with volume backups (`lifeboat restore-helper <RESTORE_UID>`).
//! It holds the pod's containers back until the agent has put each volume's data in place.
//!
//! The contract with the agent and the server (files only, so this module knows no kube):
//! - every direct subdirectory of the restores directory (`/restores/<volume>` in a pod; a
//!   symlink to a directory counts) is one volume to wait for;
//! - the agent writes the empty file `<volume>/.velero/<RESTORE_UID>` when the volume's data is
//!   restored (Velero's marker, so Velero's own agent works with this helper too), or
//!   `<volume>/.velero/<RESTORE_UID>.failed` holding a one-sentence reason when it is not;
//! - the server names the volumes it cannot restore at all (`--failed VOLUME=REASON`): they
//!   are failed from the start.
//!
//! The helper waits until every volume is restored or failed, then succeeds only if all were
//! restored (removing the `.velero` directories it read, so the application never sees them).
//! Unlike Velero's `restic-wait`, it never waits forever (Velero issues #3686, #4008, #7024):
//! after its timeout it fails naming the volumes still waiting, and a failed volume fails it
//! with the agent's reason, both visible in `kubectl logs` and the pod's Init status.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory the markers live in, inside each volume (Velero's name).
pub const MARKER_DIR: &str = ".velero";
/// The suffix of a failure marker: `<RESTORE_UID>.failed`.
pub const FAILED_SUFFIX: &str = ".failed";

/// What the helper waits for, and how long.
#[derive(Debug, Clone)]
pub struct HelperOptions {
    /// The UID of the Restore: the name of the markers.
    pub restore_uid: String,
    /// Where the volumes are mounted, one subdirectory each (`/restores`).
    pub restores_dir: PathBuf,
    /// Volumes the server could not restore at all, with why.
    pub failed: BTreeMap<String, String>,
    /// How long to wait in all (Velero's restic timeout, 4h, by default in the CLI).
    pub timeout: Duration,
    /// How often to look at the markers.
    pub poll_interval: Duration,
}

/// Why the helper could not look at the volumes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelperError {
    /// The restores directory (or a volume in it) cannot be read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Where one volume's restore is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeState {
    /// No marker yet.
    Waiting,
    /// `.velero/<RESTORE_UID>` is there.
    Restored,
    /// It failed, with the reason.
    Failed(String),
}

/// Every volume and where its restore is, by volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volumes(pub BTreeMap<String, VolumeState>);

impl Volumes {
    /// Looks at the markers of every volume under `options.restores_dir`, and adds the volumes
    /// of `options.failed`.
    pub fn scan(options: &HelperOptions) -> Result<Self, HelperError> {
        let dir = &options.restores_dir;
        let read_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| HelperError::Read { path, source }
        };
        let mut volumes = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
            let entry = entry.map_err(read_err(dir))?;
            let path = entry.path();
            // metadata (not symlink_metadata): a symlink to a directory is a volume too.
            if !std::fs::metadata(&path).map_err(read_err(&path))?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let state = volume_state(&path, &options.restore_uid)?;
            volumes.insert(name, state);
        }
        for (volume, reason) in &options.failed {
            volumes.insert(volume.clone(), VolumeState::Failed(reason.clone()));
        }
        Ok(Self(volumes))
    }

    /// The volumes with no marker yet.
    pub fn waiting(&self) -> Vec<String> {
        self.named(|s| *s == VolumeState::Waiting)
    }

    /// The volumes restored.
    pub fn restored(&self) -> Vec<String> {
        self.named(|s| *s == VolumeState::Restored)
    }

    /// The failed volumes with their reasons.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(v, s)| match s {
                VolumeState::Failed(reason) => Some((v.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn named(&self, pick: impl Fn(&VolumeState) -> bool) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, s)| pick(s))
            .map(|(v, _)| v.clone())
            .collect()
    }
}

/// One volume's markers; a failure marker wins over a done marker (the agent writes one).
fn volume_state(volume: &Path, uid: &str) -> Result<VolumeState, HelperError> {
    let markers = volume.join(MARKER_DIR);
    let failed = markers.join(format!("{uid}{FAILED_SUFFIX}"));
    match std::fs::read(&failed) {
        Ok(bytes) => {
            let reason = String::from_utf8_lossy(&bytes).trim().to_string();
            return Ok(VolumeState::Failed(if reason.is_empty() {
                "the agent's restore failed (it gave no reason)".into()
            } else {
                reason
            }));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(HelperError::Read {
                path: failed.display().to_string(),
                source,
            });
        }
    }
    match std::fs::metadata(markers.join(uid)) {
        Ok(_) => Ok(VolumeState::Restored),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(VolumeState::Waiting),
        Err(source) => Err(HelperError::Read {
            path: markers.join(uid).display().to_string(),
            source,
        }),
    }
}

/// How the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every volume was restored (their `.velero` directories are removed); the names.
    Restored(Vec<String>),
    /// Every volume is restored or failed, and these failed, with their reasons.
    Failed(Vec<(String, String)>),
    /// The timeout passed with these volumes still waiting.
    TimedOut(Vec<String>),
}

/// Waits until every volume is restored or failed, or the timeout passes. On success the
/// `.velero` directories are removed; a directory that cannot be removed is returned in the
/// second value (the data is restored: that is worth a warning, not a failed pod).
pub async fn wait(options: &HelperOptions) -> Result<(Outcome, Vec<String>), HelperError> {
    let deadline = tokio::time::Instant::now() + options.timeout;
    loop {
        let volumes = Volumes::scan(options)?;
        let waiting = volumes.waiting();
        if waiting.is_empty() {
            let failed = volumes.failed();
            if !failed.is_empty() {
                return Ok((Outcome::Failed(failed), Vec::new()));
            }
            let restored = volumes.restored();
            let not_removed = remove_markers(&options.restores_dir, &restored);
            return Ok((Outcome::Restored(restored), not_removed));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok((Outcome::TimedOut(waiting), Vec::new()));
        }
        // The last look is at the deadline itself, not a whole interval after it.
        tokio::time::sleep(options.poll_interval.min(deadline - now)).await;
    }
}

/// Removes the `.velero` directory of each volume; returns the ones that could not be removed,
/// with why.
fn remove_markers(restores_dir: &Path, volumes: &[String]) -> Vec<String> {
    volumes
        .iter()
        .filter_map(|v| {
            let markers = restores_dir.join(v).join(MARKER_DIR);
            match std::fs::remove_dir_all(&markers) {
                Ok(()) => None,
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => Some(format!("cannot remove {}: {e}", markers.display())),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6a1f4c2e-0000-4000-8000-000000000001";

    fn options(dir: &Path) -> HelperOptions {
        HelperOptions {
            restore_uid: UID.into(),
            restores_dir: dir.to_path_buf(),
            failed: BTreeMap::new(),
            timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
        }
    }

    fn mark(dir: &Path, volume: &str, file: &str, contents: &str) {
        let markers = dir.join(volume).join(MARKER_DIR);
        std::fs::create_dir_all(&markers).unwrap();
        std::fs::write(markers.join(file), contents).unwrap();
    }

    #[test]
    fn each_volume_is_waiting_restored_or_failed_by_its_markers() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["cache", "data", "logs", "other"] {
            std::fs::create_dir(dir.path().join(v)).unwrap();
        }
        // A file beside the volumes is not a volume.
        std::fs::write(dir.path().join("README"), "").unwrap();
        mark(dir.path(), "data", UID, "");
        mark(
            dir.path(),
            "logs",
            &format!("{UID}.failed"),
            "snapshot 3a4b not found\n",
        );
        // Another restore's marker does not count.
        mark(dir.path(), "other", "another-uid", "");
        let mut opts = options(dir.path());
        opts.failed
            .insert("scratch".into(), "the backup has no snapshot of it".into());
        let volumes = Volumes::scan(&opts).unwrap();
        assert_eq!(volumes.waiting(), ["cache", "other"]);
        assert_eq!(volumes.restored(), ["data"]);
        assert_eq!(
            volumes.failed(),
            [
                ("logs".to_string(), "snapshot 3a4b not found".to_string()),
                (
                    "scratch".to_string(),
                    "the backup has no snapshot of it".to_string()
                ),
            ]
        );
    }

    #[test]
    fn an_empty_failure_marker_still_fails_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        mark(dir.path(), "data", &format!("{UID}.failed"), "");
        mark(dir.path(), "data", UID, "");
        let volumes = Volumes::scan(&options(dir.path())).unwrap();
        assert!(
            matches!(&volumes.0["data"], VolumeState::Failed(r) if r.contains("no reason")),
            "{volumes:?}"
        );
    }

    #[test]
    fn a_missing_restores_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Volumes::scan(&options(&dir.path().join("nope"))).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_volumes_is_done_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let start = tokio::time::Instant::now();
        let (outcome, _) = wait(&options(dir.path())).await.unwrap();
        assert_eq!(outcome, Outcome::Restored(vec![]));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn all_restored_removes_the_markers() {
        let dir = tempfile::tempdir().unwrap();
        mark(dir.path(), "a", UID, "");
        mark(dir.path(), "b", UID, "");
        std::fs::write(dir.path().join("a").join("file"), "data").unwrap();
        let (outcome, not_removed) = wait(&options(dir.path())).await.unwrap();
        assert_eq!(outcome, Outcome::Restored(vec!["a".into(), "b".into()]));
        assert!(not_removed.is_empty());
        assert!(!dir.path().join("a").join(MARKER_DIR).exists());
        assert!(!dir.path().join("b").join(MARKER_DIR).exists());
        assert!(dir.path().join("a").join("file").exists());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_reported_only_once_every_volume_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("slow")).unwrap();
        let mut opts = options(dir.path());
        opts.failed.insert("gone".into(), "no snapshot".into());
        let path = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move { wait(&opts).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        mark(&path, "slow", UID, "");
        let (outcome, _) = waiter.await.unwrap().unwrap();
        assert_eq!(
            outcome,
            Outcome::Failed(vec![("gone".into(), "no snapshot".into())])
        );
        // Markers stay when the pod does not start: they tell what happened.
        assert!(path.join("slow").join(MARKER_DIR).join(UID).exists());
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_ends_the_wait_naming_the_volumes_still_waiting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        mark(dir.path(), "done", UID, "");
        let mut opts = options(dir.path());
        opts.timeout = Duration::from_secs(90);
        opts.poll_interval = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        let (outcome, _) = wait(&opts).await.unwrap();
        assert_eq!(outcome, Outcome::TimedOut(vec!["data".into()]));
        // Looked at 0s, 60s and at the deadline, not at 120s.
        assert_eq!(start.elapsed(), Duration::from_secs(90));
        // Nothing removed: the pod does not start.
        assert!(dir.path().join("done").join(MARKER_DIR).exists());
    }
}
