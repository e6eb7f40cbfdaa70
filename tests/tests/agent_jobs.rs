//! Pod volume jobs between the server's agent registry and real agent processes: a volume is
//! found under the node's host-pods root and backed up into a repository the real restic
//! reads back byte for byte; a failing job says why; an agent killed mid-volume ends its job
//! with that reason within seconds and leaves the repository sound.
//!
//! The server side here is the agents' gRPC service alone (`lifeboat_server::serve_agents`,
//! mutual TLS from the install), driven directly: which volumes to send is the pod volume
//! controller's business, tested with it.

use std::fs;
use std::time::{Duration, Instant};

use lifeboat_agent::proto::{BackupDone, Repository as RepositoryMsg, VolumeBackup, VolumeRestore};
use lifeboat_server::agents::{Agents, JobEvent, JobHandle, JobOutcome};
use lifeboat_tests::bin::Restic;
use lifeboat_tests::cluster::{Cluster, Storage, wait_for};
use lifeboat_tests::tree::{assert_same_tree, compat_tree, random};
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "agent-jobs-password";

/// The test cluster with the agents' service in this process and one agent per node.
struct Rig {
    cluster: Cluster,
    agents: Agents,
    runtime: tokio::runtime::Runtime,
    stop: CancellationToken,
    repo: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(nodes: &[&str]) -> Rig {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let dir = scratch.path();
        let mut cluster = Cluster::new(Storage::Directory(dir.join("bucket")));
        cluster.install().ok();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        // The agents prove their nodes against the stand-in, as against a real API server.
        let client = runtime
            .block_on(cluster.api.client())
            .expect("a client for the API server stand-in");
        let agents = Agents::new(
            Duration::from_millis(500),
            lifeboat_server::metrics::Metrics::new(),
            lifeboat_server::identity::Verifier::new(client, cluster.namespace.clone()),
        );
        let stop = CancellationToken::new();
        let tls = lifeboat_agent::TlsMaterial::load(&cluster.tls_dir("lifeboat-server-tls"))
            .expect("the install's server certificate loads");
        let address = cluster.grpc_url().trim_start_matches("https://").to_owned();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .expect("bind the agents' port");
            let serve = lifeboat_server::serve_agents(listener, &tls, agents.clone(), stop.clone())
                .expect("the TLS material is usable");
            tokio::spawn(serve);
        });
        for node in nodes {
            cluster.start_agent(node);
        }
        for node in nodes {
            wait_for("the agent's session", Duration::from_secs(20), || {
                agents.is_live(node).then_some(())
            });
        }
        let repo = dir.join("repo");
        Restic::new(repo.display().to_string())
            .with_env(&[("RESTIC_PASSWORD", PASSWORD.into())])
            .run(["init"])
            .ok();
        Rig {
            cluster,
            agents,
            runtime,
            stop,
            repo,
            _dir: scratch,
        }
    }

    fn restic(&self) -> Restic {
        Restic::new(self.repo.display().to_string())
            .with_env(&[("RESTIC_PASSWORD", PASSWORD.into())])
    }

    /// A volume directory of pod `uid` on `node`, as kubelet lays it out.
    fn volume(&self, node: &str, uid: &str, plugin: &str, dir: &str) -> std::path::PathBuf {
        let path = self
            .cluster
            .host_pods(node)
            .join(uid)
            .join("volumes")
            .join(plugin)
            .join(dir);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create the volume's parent");
        path
    }

    fn job(&self, id: &str, uid: &str, dir: &str, stored: &str) -> VolumeBackup {
        VolumeBackup {
            job_id: id.into(),
            pod_uid: uid.into(),
            volume_dir: dir.into(),
            repository: Some(RepositoryMsg {
                location: self.repo.display().to_string(),
                password: PASSWORD.into(),
                ..RepositoryMsg::default()
            }),
            stored_path: stored.into(),
            host: "velero".into(),
            tags: vec![format!("volume={dir}"), "backup=b1".into()],
            parent: String::new(),
        }
    }

    /// A restore of `snapshot` into volume `dir` of pod `new-pod`, marked for `restore_uid`.
    fn restore_job(&self, id: &str, dir: &str, snapshot: &str, restore_uid: &str) -> VolumeRestore {
        VolumeRestore {
            job_id: id.into(),
            pod_uid: "new-pod".into(),
            volume_dir: dir.into(),
            repository: Some(RepositoryMsg {
                location: self.repo.display().to_string(),
                password: PASSWORD.into(),
                ..RepositoryMsg::default()
            }),
            snapshot_id: snapshot.into(),
            restore_uid: restore_uid.into(),
            fail_reason: String::new(),
        }
    }

    fn submit(&self, node: &str, job: VolumeBackup) -> JobHandle {
        self.runtime
            .block_on(self.agents.submit_backup(node, job))
            .expect("the node has a live agent")
    }

    /// Waits for the job's outcome; returns it with how many progress reports came first.
    fn outcome(&self, handle: &mut JobHandle, timeout: Duration) -> (JobOutcome, usize) {
        self.runtime.block_on(async {
            let mut reports = 0;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                match tokio::time::timeout_at(deadline, handle.next()).await {
                    Ok(Some(JobEvent::Progress(_))) => reports += 1,
                    Ok(Some(JobEvent::Done(outcome))) => return (outcome, reports),
                    Ok(None) => panic!("the job's events ended without an outcome"),
                    Err(_) => panic!("no outcome within {timeout:?}"),
                }
            }
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn finished(outcome: JobOutcome) -> BackupDone {
    match outcome {
        JobOutcome::Backup(done) => done,
        JobOutcome::Failed(reason) => panic!("the job failed: {reason}"),
        JobOutcome::Skipped(reason) => panic!("the job was skipped: {reason}"),
        JobOutcome::Restore(done) => panic!("a backup answered as a restore: {done:?}"),
    }
}

#[test]
fn an_agent_backs_up_a_volume_that_restic_restores_byte_for_byte() {
    let rig = Rig::new(&["node-1"]);
    let data = rig.volume("node-1", "pod-uid-1", "kubernetes.io~csi", "pv-data");
    compat_tree(&data.join("mount"), 7);
    let mut handle = rig.submit(
        "node-1",
        rig.job("job-1", "pod-uid-1", "pv-data", "/shop/data-web-0"),
    );
    let (outcome, _) = rig.outcome(&mut handle, Duration::from_secs(60));
    let done = finished(outcome);
    assert_eq!(done.path, "/shop/data-web-0");
    assert!(done.files_new > 0, "{done:?}");

    // restic sees the snapshot with our host, tags and stored path, checks the repository,
    // and restores the volume's data exactly.
    let listed = rig.restic().run(["snapshots", "--json"]).ok().json();
    let snap = &listed.as_array().expect("a list")[0];
    assert_eq!(snap["id"], done.snapshot_id);
    assert_eq!(snap["hostname"], "velero");
    assert_eq!(snap["paths"][0], "/shop/data-web-0");
    let tags: Vec<&str> = snap["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tags.contains(&"volume=pv-data") && tags.contains(&"backup=b1"),
        "{tags:?}"
    );
    rig.restic().run(["check", "--read-data"]).ok();
    let target = tempfile::tempdir().expect("a restore target");
    rig.restic()
        .run([
            "restore",
            &done.snapshot_id,
            "--target",
            &target.path().display().to_string(),
        ])
        .ok();
    assert_same_tree(&data.join("mount"), &target.path().join("shop/data-web-0"));

    // The next backup of the same stored path, from a new pod, finds its parent by that path
    // and reads nothing unchanged.
    let moved = rig.volume("node-1", "pod-uid-2", "kubernetes.io~csi", "pv-data");
    fs::rename(data, &moved).expect("move the volume to the new pod");
    let mut handle = rig.submit(
        "node-1",
        rig.job("job-2", "pod-uid-2", "pv-data", "/shop/data-web-0"),
    );
    let second = finished(rig.outcome(&mut handle, Duration::from_secs(60)).0);
    assert_eq!(
        (second.files_new, second.files_changed),
        (0, 0),
        "{second:?}"
    );
    assert!(second.files_unchanged > 0, "{second:?}");
}

#[test]
fn a_failing_job_says_why_and_a_node_without_agent_is_refused() {
    let rig = Rig::new(&["node-1"]);
    // A volume that is not on the node is skipped (nothing to protect there), not failed.
    let mut handle = rig.submit(
        "node-1",
        rig.job("missing", "pod-uid-9", "cache", "/a/cache"),
    );
    match rig.outcome(&mut handle, Duration::from_secs(20)).0 {
        JobOutcome::Skipped(reason) => {
            assert!(
                reason.contains("pod pod-uid-9 has no directory"),
                "{reason}"
            );
        }
        other => panic!("expected a skip, got {other:?}"),
    }
    fs::create_dir_all(rig.volume("node-1", "pod-uid-1", "kubernetes.io~empty-dir", "cache"))
        .expect("create the volume");
    let mut job = rig.job("bad-password", "pod-uid-1", "cache", "/a/cache");
    job.repository.as_mut().expect("a repository").password = "wrong".into();
    let mut handle = rig.submit("node-1", job);
    match rig.outcome(&mut handle, Duration::from_secs(20)).0 {
        JobOutcome::Failed(reason) => {
            assert!(reason.contains("cannot open repository"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let refused = rig.runtime.block_on(
        rig.agents
            .submit_backup("node-2", rig.job("x", "u", "v", "/v")),
    );
    assert_eq!(
        refused.expect_err("no agent on node-2").to_string(),
        "no live agent on node node-2"
    );
}

#[test]
fn an_agent_killed_mid_volume_ends_its_job_within_seconds_and_the_repository_stays_sound() {
    let mut rig = Rig::new(&["node-1"]);
    let data = rig.volume("node-1", "pod-uid-1", "kubernetes.io~empty-dir", "big");
    fs::create_dir_all(&data).expect("create the volume");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for i in 0..24 {
        fs::write(data.join(format!("f{i}")), random(&mut rng, 16 << 20)).expect("write data");
    }
    let mut handle = rig.submit("node-1", rig.job("big", "pod-uid-1", "big", "/a/big"));
    // Let it get going: the first progress report with bytes done.
    rig.runtime.block_on(async {
        loop {
            match handle.next().await {
                Some(JobEvent::Progress(p)) if p.bytes_done > 0 => return,
                Some(JobEvent::Done(outcome)) => panic!("finished before the kill: {outcome:?}"),
                Some(_) => {}
                None => panic!("no outcome"),
            }
        }
    });
    let killed = Instant::now();
    rig.cluster.kill_agent("node-1");
    let (outcome, _) = rig.outcome(&mut handle, Duration::from_secs(10));
    let noticed = killed.elapsed();
    match outcome {
        JobOutcome::Failed(reason) => {
            assert!(reason.contains("the agent on node node-1 left"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    eprintln!("killed agent noticed after {noticed:?}");
    // The interrupted backup left no snapshot, and nothing restic finds wrong once its lock,
    // stale by restic's own rule (its process is gone), is removed by `restic unlock`.
    let listed = rig.restic().run(["snapshots", "--json"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0));
    let unlocked = rig.restic().run(["unlock"]).ok();
    assert!(
        unlocked.stdout.contains("successfully removed locks"),
        "{}",
        unlocked.stdout
    );
    rig.restic().run(["check"]).ok();

    // A new agent on the node takes the job again and finishes it.
    rig.cluster.start_agent("node-1");
    wait_for("the new agent's session", Duration::from_secs(20), || {
        rig.agents.is_live("node-1").then_some(())
    });
    let mut handle = rig.submit("node-1", rig.job("big-again", "pod-uid-1", "big", "/a/big"));
    finished(rig.outcome(&mut handle, Duration::from_secs(120)).0);
    rig.restic().run(["check"]).ok();
}

#[test]
fn an_agent_restores_a_restic_snapshot_into_a_new_pods_volume_and_marks_it() {
    let rig = Rig::new(&["node-1"]);
    // A snapshot the real restic wrote (its stored path is the absolute source path).
    let source = tempfile::tempdir().expect("a source directory");
    let data = source.path().join("data");
    compat_tree(&data, 13);
    // A volume root such as a database's data directory: its owner's alone. restic stores the
    // root's own metadata, and the volume gets it back.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    rig.restic()
        .run(["backup", "--host", "velero", &data.display().to_string()])
        .ok();
    let listed = rig.restic().run(["snapshots", "--json"]).ok().json();
    let snapshot = listed[0]["id"].as_str().expect("an id").to_owned();

    let volume = rig.volume("node-1", "new-pod", "kubernetes.io~csi", "pv-new");
    fs::create_dir_all(volume.join("mount")).expect("the volume's mount");
    let job = |id: &str, snapshot: &str| rig.restore_job(id, "pv-new", snapshot, "restore-uid-1");
    let mut handle = rig
        .runtime
        .block_on(rig.agents.submit_restore("node-1", job("r-1", &snapshot)))
        .expect("the node has a live agent");
    match rig.outcome(&mut handle, Duration::from_secs(60)).0 {
        JobOutcome::Restore(done) => {
            assert_eq!(done.snapshot_id, snapshot);
            assert!(done.files > 0, "{done:?}");
        }
        other => panic!("expected a restore, got {other:?}"),
    }
    // The data is the snapshot's, and the marker tells the init container it is there.
    let mount = volume.join("mount");
    let marker = mount.join(".velero/restore-uid-1");
    assert!(marker.is_file(), "no marker at {}", marker.display());
    fs::remove_dir_all(mount.join(".velero")).expect("remove the marker as the helper does");
    assert_same_tree(&data, &mount);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&mount)
            .expect("the volume root")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o700, "the volume root's mode comes back");
    }

    // A snapshot that is not there fails the job, and the volume says why.
    let mut handle = rig
        .runtime
        .block_on(
            rig.agents
                .submit_restore("node-1", job("r-2", "0123456789abcdef")),
        )
        .expect("the node has a live agent");
    match rig.outcome(&mut handle, Duration::from_secs(60)).0 {
        JobOutcome::Failed(reason) => {
            assert!(reason.contains("0123456789abcdef"), "{reason}");
            let failed = fs::read_to_string(mount.join(".velero/restore-uid-1.failed"))
                .expect("the failure marker");
            assert_eq!(failed, reason);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A snapshot crafted to write outside the volume (a symlink `x` to a directory outside, then
/// a directory `x` holding a file), and a volume that already holds such a symlink: the agent,
/// root on the node, writes nothing outside the volume; the crafted snapshot fails its job and
/// the volume says why.
#[test]
fn an_agent_restores_nothing_outside_the_volume_whatever_the_snapshot_says() {
    use lifeboat_repo::testing::{self, Crafted};
    let rig = Rig::new(&["node-1"]);
    let scratch = tempfile::tempdir().expect("scratch");
    let outside = scratch.path().join("outside");
    fs::create_dir(&outside).expect("outside");
    let repo = rig.runtime.block_on(async {
        lifeboat_repo::Repository::open(
            &lifeboat_repo::Location::Local(rig.repo.clone()),
            PASSWORD,
            lifeboat_repo::RepositoryOptions::default(),
        )
        .await
        .expect("open")
    });
    let crafted = |entries: Vec<Crafted>| {
        rig.runtime
            .block_on(testing::snapshot_of_tree(&repo, &entries))
            .expect("crafted snapshot")
            .to_string()
    };
    let pwn_dir = |entries| Crafted::Dir {
        name: b"x".to_vec(),
        mode: 0o777,
        entries,
    };
    let pwn = || Crafted::File {
        name: b"pwn".to_vec(),
        data: b"planted\n".to_vec(),
        mode: 0o4755,
    };
    let hostile = crafted(vec![
        Crafted::Symlink {
            name: b"x".to_vec(),
            target: outside.as_os_str().as_encoded_bytes().to_vec(),
        },
        pwn_dir(vec![pwn()]),
    ]);
    let plain = crafted(vec![pwn_dir(vec![pwn()])]);

    let volume = rig.volume("node-1", "new-pod", "kubernetes.io~csi", "pv-x");
    let mount = volume.join("mount");
    fs::create_dir_all(&mount).expect("the volume's mount");
    let job = |id: &str, snapshot: &str| rig.restore_job(id, "pv-x", snapshot, "restore-uid-x");
    let mut handle = rig
        .runtime
        .block_on(
            rig.agents
                .submit_restore("node-1", job("r-hostile", &hostile)),
        )
        .expect("the node has a live agent");
    match rig.outcome(&mut handle, Duration::from_secs(60)).0 {
        JobOutcome::Failed(reason) => {
            assert!(reason.contains("twice"), "{reason}");
            assert!(
                reason.contains("could escape the restore target"),
                "{reason}"
            );
        }
        other => panic!("the crafted snapshot must fail the job, got {other:?}"),
    }
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);

    // The volume already holds `x` as a symlink outside: the restore replaces it.
    std::os::unix::fs::symlink(&outside, mount.join("x")).expect("symlink");
    let mut handle = rig
        .runtime
        .block_on(rig.agents.submit_restore("node-1", job("r-plain", &plain)))
        .expect("the node has a live agent");
    match rig.outcome(&mut handle, Duration::from_secs(60)).0 {
        JobOutcome::Restore(done) => assert_eq!(done.files, 1, "{done:?}"),
        other => panic!("expected a restore, got {other:?}"),
    }
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
    assert!(fs::symlink_metadata(mount.join("x")).expect("x").is_dir());
    assert_eq!(fs::read(mount.join("x/pwn")).expect("pwn"), b"planted\n");
}
