//! `lifeboat restore-helper`, the `restic-wait` init container's process, run as the real
//! binary on temporary restore directories, with the test playing the agent's part by
//! writing the marker files (volumes are symlinks to directories, as the contract allows).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_tests::bin::{Run, lifeboat_exe};

const UID: &str = "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";

/// A restores directory whose volumes are symlinks to directories elsewhere.
struct Restores {
    dir: tempfile::TempDir,
    volumes: tempfile::TempDir,
}

impl Restores {
    fn new(volumes: &[&str]) -> Self {
        let r = Self {
            dir: tempfile::tempdir().expect("a restores directory"),
            volumes: tempfile::tempdir().expect("a volumes directory"),
        };
        for v in volumes {
            let target = r.volumes.path().join(v);
            std::fs::create_dir(&target).expect("a volume");
            std::os::unix::fs::symlink(&target, r.dir.path().join(v)).expect("a symlink");
        }
        r
    }

    fn markers(&self, volume: &str) -> PathBuf {
        self.volumes.path().join(volume).join(".velero")
    }

    fn mark(&self, volume: &str, file: &str, contents: &str) {
        std::fs::create_dir_all(self.markers(volume)).expect("the marker directory");
        std::fs::write(self.markers(volume).join(file), contents).expect("a marker");
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(lifeboat_exe());
        cmd.arg("restore-helper")
            .arg(UID)
            .arg("--restores-dir")
            .arg(self.dir.path())
            .args(["--poll-interval", "100ms"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, extra: &[&str]) -> Run {
        Run::from_output(self.command(extra).output().expect("run the helper"))
    }
}

#[test]
fn the_helper_exits_when_the_agent_marks_every_volume_done_and_removes_the_markers() {
    let r = Restores::new(&["cache", "data"]);
    r.mark("cache", UID, "");
    let child = r.command(&[]).spawn().expect("start the helper");
    std::thread::sleep(Duration::from_millis(500));
    r.mark("data", UID, "");
    let start = Instant::now();
    let run = Run::from_output(child.wait_with_output().expect("the helper ends"));
    assert!(start.elapsed() < Duration::from_secs(3));
    let run = run.ok();
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("volume "))
            .collect::<Vec<_>>(),
        ["volume cache restored", "volume data restored"],
        "{}",
        run.stdout
    );
    assert!(!r.markers("cache").exists());
    assert!(!r.markers("data").exists());
    assert!(r.volumes.path().join("data").exists());

    // No volumes at all: done at once.
    let empty = Restores::new(&[]);
    empty.run(&[]).ok();
}

#[test]
fn a_failure_marker_fails_the_helper_with_the_volume_and_reason() {
    let r = Restores::new(&["cache", "data"]);
    r.mark("cache", UID, "");
    r.mark(
        "data",
        &format!("{UID}.failed"),
        "snapshot 3a4b5c6d is not in repository restic/shop\n",
    );
    let run = r.run(&[]).fails();
    assert!(
        run.stderr
            .contains("volume data: snapshot 3a4b5c6d is not in repository restic/shop\n"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("volume cache"), "{}", run.stderr);
}

#[test]
fn a_volume_the_server_cannot_restore_fails_the_helper_at_once() {
    let r = Restores::new(&["data"]);
    r.mark("data", UID, "");
    let start = Instant::now();
    let run = r
        .run(&["--failed", "scratch=the backup has no snapshot of it"])
        .fails();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        run.stderr
            .contains("volume scratch: the backup has no snapshot of it"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_timeout_fails_the_helper_naming_the_volumes_still_waiting() {
    let r = Restores::new(&["cache", "data"]);
    r.mark("cache", UID, "");
    let start = Instant::now();
    let run = r.run(&["--timeout", "1s"]).fails();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        run.stderr
            .contains("timed out after 1s waiting for the restore of volume(s) data"),
        "{}",
        run.stderr
    );
    // Nothing removed when the pod does not start.
    assert!(r.markers("cache").exists());
}

#[test]
fn bad_arguments_are_usage_errors() {
    let r = Restores::new(&["data"]);
    for args in [&["--timeout", "soon"][..], &["--failed", "data"][..]] {
        let run = r.run(args);
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
    }
}
