//! Pod volume backup through the whole system: the server process picks the volumes by
//! Velero's rules, hands them to the real agent processes of two simulated nodes, and the
//! snapshots land in the per-namespace restic repositories, where the real restic binary
//! restores them byte for byte. A second backup reads only what changed; a killed agent ends
//! the backup PartiallyFailed within seconds, naming why.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_tests::bin::Restic;
use lifeboat_tests::cluster::{Cluster, Storage, wait_for};
use lifeboat_tests::tree::{assert_same_tree, compat_tree, random, small_files};
use rand::SeedableRng;
use serde_json::{Value, json};

/// The test cluster, its bucket directory, and the repository password install generated.
struct Rig {
    cluster: Cluster,
    bucket: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Rig {
    /// Backups in a directory (the `filesystem` provider).
    fn new(nodes: &[&str]) -> Rig {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let bucket = scratch.path().join("bucket");
        fs::create_dir_all(&bucket).expect("create the bucket directory");
        Rig::start(Storage::Directory(bucket.clone()), bucket, scratch, nodes)
    }

    /// Backups in a bucket of the S3 server.
    fn with_s3(test: &str, nodes: &[&str]) -> Rig {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let bucket = scratch.path().join("unused");
        let s3 = lifeboat_tests::s3::S3::bucket(test);
        Rig::start(Storage::S3(s3), bucket, scratch, nodes)
    }

    fn start(storage: Storage, bucket: PathBuf, scratch: tempfile::TempDir, nodes: &[&str]) -> Rig {
        let cluster = Cluster::running(storage, nodes);
        Rig {
            cluster,
            bucket,
            _scratch: scratch,
        }
    }

    fn password(&self) -> String {
        let secret = self
            .cluster
            .api
            .get(
                "v1",
                "secrets",
                Some(&self.cluster.namespace),
                "velero-restic-credentials",
            )
            .expect("install created the repository Secret");
        let encoded = secret["data"]["repository-password"]
            .as_str()
            .expect("the password key");
        let bytes = base64_decode(encoded);
        String::from_utf8(bytes).expect("a text password")
    }

    fn restic(&self, namespace: &str) -> Restic {
        let password = ("RESTIC_PASSWORD", self.password());
        match &self.cluster.storage {
            Storage::S3(s3) => {
                let mut env = s3.env();
                env.push(password);
                Restic::new(s3.restic_url(&format!("cluster-a/restic/{namespace}"))).with_env(&env)
            }
            Storage::Directory(_) => {
                let repo = self.bucket.join("cluster-a/restic").join(namespace);
                Restic::new(repo.display().to_string()).with_env(&[password])
            }
        }
    }

    fn put(&self, object: Value) -> Value {
        self.cluster
            .api
            .put_object(object)
            .expect("the stand-in stores the object")
    }

    /// A running pod on `node` with `volumes`; returns its UID.
    fn pod(&self, ns: &str, name: &str, node: &str, annotations: Value, volumes: Value) -> String {
        let pod = self.put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}], "volumes": volumes},
            "status": {"phase": "Running"}
        }));
        pod["metadata"]["uid"].as_str().expect("a uid").to_owned()
    }

    /// A claim bound to a PV of `pv_source` (e.g. `{"csi": …}`).
    fn claim(&self, ns: &str, name: &str, pv: &str, pv_source: Value) {
        let mut spec = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "claimRef": {"namespace": ns, "name": name}});
        for (k, v) in pv_source.as_object().expect("an object") {
            spec[k] = v.clone();
        }
        self.put(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv}, "spec": spec, "status": {"phase": "Bound"}}));
        self.put(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"volumeName": pv, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}}));
    }

    /// The host directory of a pod volume, as kubelet lays it out.
    fn volume_dir(&self, node: &str, uid: &str, plugin: &str, dir: &str) -> PathBuf {
        let path = self
            .cluster
            .host_pods(node)
            .join(uid)
            .join("volumes")
            .join(plugin)
            .join(dir);
        fs::create_dir_all(&path).expect("create the volume directory");
        path
    }

    fn backup(&self, name: &str, extra: &[&str]) -> Value {
        let mut args = vec!["backup", "create", name];
        args.extend_from_slice(extra);
        self.cluster.lifeboat(args).ok();
        wait_for("the backup to end", Duration::from_secs(120), || {
            let b = self.cluster.velero_object("backups", name)?;
            let phase = b["status"]["phase"].as_str()?.to_owned();
            (!["New", "InProgress"].contains(&phase.as_str())).then_some(b)
        })
    }

    fn volume_backups(&self, backup: &str) -> Vec<Value> {
        self.cluster
            .api
            .objects()
            .into_iter()
            .filter(|o| o.group == "velero.io" && o.plural == "podvolumebackups")
            .map(|o| o.object)
            .filter(|p| p["metadata"]["labels"]["velero.io/backup-name"] == backup)
            .collect()
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 data")
}

fn by_volume<'a>(pvbs: &'a [Value], pod: &str, volume: &str) -> &'a Value {
    pvbs.iter()
        .find(|p| p["spec"]["pod"]["name"] == pod && p["spec"]["volume"] == volume)
        .unwrap_or_else(|| panic!("no pod volume backup of {pod}/{volume} among {pvbs:#?}"))
}

fn restore_and_compare(rig: &Rig, ns: &str, pvb: &Value, original: &Path) {
    let id = pvb["status"]["snapshotID"].as_str().expect("a snapshot id");
    let path = pvb["status"]["path"].as_str().expect("the stored path");
    let target = tempfile::tempdir().expect("a restore target");
    rig.restic(ns)
        .run([
            "restore",
            id,
            "--target",
            &target.path().display().to_string(),
        ])
        .ok();
    assert_same_tree(original, &target.path().join(path.trim_start_matches('/')));
}

#[test]
fn chosen_volumes_are_backed_up_by_their_nodes_agents_and_restic_restores_them() {
    // On the S3 server: the agents reach the bucket only with what the server sends them.
    let rig = Rig::with_s3("pod-volumes", &["node-1", "node-2"]);
    rig.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    rig.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "blog"}}));
    rig.put(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "shop"}, "data": {}}));

    // shop: opted in by annotation; a CSI claim, an emptyDir, and a secret it did not name.
    rig.claim(
        "shop",
        "data-db-0",
        "pv-csi-1",
        json!({"csi": {"driver": "x.csi", "volumeHandle": "h1"}}),
    );
    let db = rig.pod(
        "shop",
        "db-0",
        "node-1",
        json!({"backup.velero.io/backup-volumes": "data,scratch"}),
        json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "creds", "secret": {"secretName": "creds"}},
        ]),
    );
    let data = rig
        .volume_dir("node-1", &db, "kubernetes.io~csi", "pv-csi-1")
        .join("mount");
    compat_tree(&data, 11);
    let scratch = rig.volume_dir("node-1", &db, "kubernetes.io~empty-dir", "scratch");
    small_files(&scratch, 200, 5);
    rig.volume_dir("node-1", &db, "kubernetes.io~secret", "creds");

    // blog on node-2: no annotation; with --default-volumes-to-restic everything but the
    // excluded volume, the secret and the service account token.
    let blog = rig.pod(
        "blog",
        "blog-0",
        "node-2",
        json!({"backup.velero.io/backup-volumes-excludes": "tmp"}),
        json!([
            {"name": "content", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "default-token-x1", "secret": {"secretName": "t"}},
        ]),
    );
    let content = rig.volume_dir("node-2", &blog, "kubernetes.io~empty-dir", "content");
    small_files(&content, 100, 6);
    rig.volume_dir("node-2", &blog, "kubernetes.io~empty-dir", "tmp");

    // Opt-in only: blog's volumes are not taken.
    let first = rig.backup("opt-in", &[]);
    assert_eq!(first["status"]["phase"], "Completed", "{first:#}");
    let pvbs = rig.volume_backups("opt-in");
    assert_eq!(pvbs.len(), 2, "{pvbs:#?}");
    let data_pvb = by_volume(&pvbs, "db-0", "data");
    assert_eq!(data_pvb["status"]["phase"], "Completed", "{data_pvb:#}");
    assert_eq!(data_pvb["spec"]["node"], "node-1");
    assert_eq!(
        data_pvb["metadata"]["annotations"]["velero.io/pvc-name"],
        "data-db-0"
    );
    assert_eq!(data_pvb["status"]["path"], "/shop/pvc/data-db-0");
    restore_and_compare(&rig, "shop", data_pvb, &data);
    restore_and_compare(&rig, "shop", by_volume(&pvbs, "db-0", "scratch"), &scratch);
    rig.restic("shop").run(["check", "--read-data"]).ok();

    // One file of the claim changes before the next backup.
    fs::write(data.join("small.txt"), b"changed by the application\n").expect("change a file");

    // Opt-out: every volume but the excluded ones, from both nodes.
    let second = rig.backup("opt-out", &["--default-volumes-to-restic"]);
    assert_eq!(second["status"]["phase"], "Completed", "{second:#}");
    let pvbs = rig.volume_backups("opt-out");
    let mut names: Vec<String> = pvbs
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["spec"]["pod"]["name"].as_str().unwrap_or(""),
                p["spec"]["volume"].as_str().unwrap_or("")
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, ["blog-0/content", "db-0/data", "db-0/scratch"]);
    restore_and_compare(
        &rig,
        "blog",
        by_volume(&pvbs, "blog-0", "content"),
        &content,
    );

    // The claim's second backup has the first as parent and read nothing unchanged.
    let parent = data_pvb["status"]["snapshotID"].as_str().expect("an id");
    let again = by_volume(&pvbs, "db-0", "data");
    let listed = rig.restic("shop").run(["snapshots", "--json"]).ok().json();
    let snap = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["id"] == again["status"]["snapshotID"])
        .expect("the second snapshot is listed");
    assert_eq!(snap["parent"], parent, "{snap:#}");
    // ...and read only the changed file: the agent's account of that volume says so.
    let job = again["metadata"]["name"].as_str().expect("a name");
    let log = rig.cluster.agent_log("node-1");
    let line = log
        .lines()
        .find(|l| l.contains(job) && l.contains("pod volume backed up"))
        .unwrap_or_else(|| panic!("no result line for {job} in\n{log}"));
    assert!(
        line.contains("files_new=0") && line.contains("files_changed=1"),
        "{line}"
    );

    // The namespaces' repositories are listed as Ready, as `velero restic repo get` does.
    let repos = rig.cluster.lifeboat(["restic", "repo", "get"]).ok();
    for prefix in ["shop-default-", "blog-default-"] {
        assert!(repos.stdout.contains(prefix), "{}", repos.stdout);
    }
    assert!(repos.stdout.contains("Ready"), "{}", repos.stdout);
    let listed = rig
        .cluster
        .lifeboat(["repo", "get", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(2),
        "{listed:#}"
    );

    // The pod volume backups are in the bucket with the backup, and describe lists them.
    let described = rig
        .cluster
        .lifeboat(["backup", "describe", "opt-out", "--details"])
        .ok();
    for line in ["blog/blog-0/content", "shop/db-0/data", "shop/db-0/scratch"] {
        assert!(
            described.stdout.contains(line),
            "{line} missing from\n{}",
            described.stdout
        );
    }
}

#[test]
fn a_killed_agent_ends_the_backup_partially_failed_within_seconds_naming_why() {
    let mut rig = Rig::new(&["node-1"]);
    rig.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "big"}}));
    let uid = rig.pod(
        "big",
        "loader-0",
        "node-1",
        json!({"backup.velero.io/backup-volumes": "data"}),
        json!([{"name": "data", "emptyDir": {}}]),
    );
    let data = rig.volume_dir("node-1", &uid, "kubernetes.io~empty-dir", "data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for i in 0..24 {
        fs::write(data.join(format!("f{i}")), random(&mut rng, 16 << 20)).expect("write data");
    }
    rig.cluster
        .lifeboat(["backup", "create", "interrupted"])
        .ok();
    wait_for(
        "the volume to be under way",
        Duration::from_secs(60),
        || {
            let pvbs = rig.volume_backups("interrupted");
            pvbs.iter()
                .any(|p| p["status"]["phase"] == "InProgress")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    rig.cluster.kill_agent("node-1");
    let backup = wait_for("the backup to end", Duration::from_secs(30), || {
        let b = rig.cluster.velero_object("backups", "interrupted")?;
        let phase = b["status"]["phase"].as_str()?.to_owned();
        (!["New", "InProgress"].contains(&phase.as_str())).then_some(b)
    });
    let took = killed.elapsed();
    assert_eq!(backup["status"]["phase"], "PartiallyFailed", "{backup:#}");
    assert!(
        took < Duration::from_secs(10),
        "the backup ended {took:?} after the kill"
    );
    let pvbs = rig.volume_backups("interrupted");
    let pvb = by_volume(&pvbs, "loader-0", "data");
    assert_eq!(pvb["status"]["phase"], "Failed");
    let message = pvb["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the agent on node node-1 left"),
        "{message}"
    );
    eprintln!("backup ended {took:?} after the agent was killed");

    // The killed agent's lock is stale by restic's rule (its process is gone): maintenance
    // removes it and prunes, after which restic takes its exclusive lock without `unlock`.
    let repo = rig
        .cluster
        .api
        .objects()
        .into_iter()
        .find(|o| o.plural == "resticrepositories")
        .expect("the namespace's repository object");
    let before = repo.object["status"]["lastMaintenanceTime"].clone();
    rig.cluster
        .lifeboat(["repo", "get", &repo.name, "-o", "json"])
        .ok();
    let mut object = repo.object.clone();
    object["spec"]["maintenanceFrequency"] = json!("1s");
    rig.put(object);
    wait_for("maintenance", Duration::from_secs(60), || {
        let now = rig
            .cluster
            .velero_object("resticrepositories", &repo.name)?;
        (now["status"]["lastMaintenanceTime"] != before && now["status"]["message"].is_null())
            .then_some(())
    });
    // Maintenance every second would keep taking its own exclusive lock: back to daily, and
    // restic's check gets the repository as soon as a run still going has finished (a prune
    // of this repository takes seconds alone, and much longer beside the other tests on two
    // loaded cores: the bound is only there to fail rather than hang).
    let mut object = rig
        .cluster
        .velero_object("resticrepositories", &repo.name)
        .expect("the repository object");
    object["spec"]["maintenanceFrequency"] = json!("24h");
    rig.put(object);
    wait_for("restic check", Duration::from_secs(120), || {
        let run = rig.restic("big").run(["check"]);
        assert!(
            run.status == 0 || run.stderr.contains("already locked"),
            "{}",
            run.stderr
        );
        (run.status == 0).then_some(())
    });
}

/// One agent on node-1 started with `agent_args`; a pod in a new `namespace` with `volumes`
/// emptyDirs of `files` seeded random files of `size` bytes each; the namespace backed up, and
/// every volume's backup asserted Completed.
fn back_up_volumes_of_one_agent(
    agent_args: &[&str],
    namespace: &str,
    (volumes, files, size): (usize, usize, usize),
    seed: u64,
) -> Rig {
    let mut rig = Rig::new(&[]);
    rig.cluster.start_agent_with("node-1", agent_args);
    wait_for("the agent's session", Duration::from_secs(30), || {
        (rig.cluster.live_agents().len() == 1).then_some(())
    });
    rig.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
    let specs: Vec<Value> = (0..volumes)
        .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
        .collect();
    let uid = rig.pod(
        namespace,
        "worker-0",
        "node-1",
        json!({}),
        Value::Array(specs),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..volumes {
        let dir = rig.volume_dir("node-1", &uid, "kubernetes.io~empty-dir", &format!("v{i}"));
        for f in 0..files {
            fs::write(dir.join(format!("f{f}")), random(&mut rng, size)).expect("write data");
        }
    }
    let backup = rig.backup(namespace, &["--default-volumes-to-restic"]);
    assert_eq!(backup["status"]["phase"], "Completed", "{backup:#}");
    let pvbs = rig.volume_backups(namespace);
    assert_eq!(pvbs.len(), volumes);
    assert!(
        pvbs.iter().all(|p| p["status"]["phase"] == "Completed"),
        "{pvbs:#?}"
    );
    rig
}

#[test]
fn eight_volumes_on_one_node_run_at_once() {
    let rig = back_up_volumes_of_one_agent(&["--concurrency", "8"], "many", (8, 4, 8 << 20), 21);
    // All eight started before the first one finished.
    let log = rig.cluster.agent_log("node-1");
    let first_done = log
        .find("pod volume backed up")
        .expect("a finished volume in the log");
    let started = log[..first_done].matches("backing up a pod volume").count();
    assert_eq!(
        started, 8,
        "volumes started before the first finished:\n{log}"
    );
}

#[test]
fn volumes_at_once_share_the_agents_memory_budget() {
    const BUDGET_MIB: u64 = 128;
    let budget = format!("{BUDGET_MIB}Mi");
    let rig = back_up_volumes_of_one_agent(
        &["--concurrency", "4", "--memory-budget", &budget],
        "lean",
        (4, 3, 16 << 20),
        128,
    );
    // Four volumes at once would hold ~4 × 130 MiB unbounded; together they stayed within the
    // budget, each waiting for memory the others held.
    let peak = rig.cluster.agent_peak_rss_kib("node-1");
    eprintln!("the agent's peak RSS: {} MiB", peak / 1024);
    assert!(
        peak <= BUDGET_MIB * 1024,
        "the agent peaked at {peak} KiB, over its {BUDGET_MIB} MiB budget\n{}",
        rig.cluster.agent_log("node-1")
    );
    rig.restic("lean").run(["check", "--read-data"]).ok();
}

#[test]
fn a_running_pod_s_volume_the_agent_cannot_find_fails_the_backup_and_the_timeout_bounds_the_volumes()
 {
    let rig = Rig::new(&["node-1"]);
    rig.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}}));
    // Named by the annotation, the pod running on the node, but kubelet has no such directory
    // there (the pod's directory is there, the volume's is not): nothing of it is protected,
    // so the backup is not Completed, whatever the agent calls it.
    let ghost = rig.pod(
        "edge",
        "ghost-0",
        "node-1",
        json!({"backup.velero.io/backup-volumes": "cache"}),
        json!([{"name": "cache", "emptyDir": {}}]),
    );
    fs::create_dir_all(rig.cluster.host_pods("node-1").join(&ghost).join("volumes"))
        .expect("create the pod's directory");
    let backup = rig.backup("ghost", &["--include-namespaces", "edge"]);
    assert_eq!(backup["status"]["phase"], "PartiallyFailed", "{backup:#}");
    assert_eq!(backup["status"]["errors"], 1, "{backup:#}");
    let described = rig
        .cluster
        .lifeboat(["backup", "describe", "ghost", "--details"])
        .ok();
    assert!(
        described.stdout.contains("not mounted")
            && described.stdout.contains("the pod runs on node node-1"),
        "{}",
        described.stdout
    );
    // A pod that is not running is legitimately not backed up: a warning naming why.
    rig.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "done-0", "namespace": "edge",
            "annotations": {"backup.velero.io/backup-volumes": "cache"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}],
            "volumes": [{"name": "cache", "emptyDir": {}}]},
        "status": {"phase": "Succeeded"}
    }));
    rig.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ghost-0", "namespace": "edge"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running"}}));
    let backup = rig.backup("finished", &["--include-namespaces", "edge"]);
    assert_eq!(backup["status"]["phase"], "Completed", "{backup:#}");
    assert_eq!(backup["status"]["warnings"], 1, "{backup:#}");
    let results = rig
        .cluster
        .bucket()
        .backup("finished")
        .json_gz("-results.gz");
    assert!(
        results["warnings"]["namespaces"]["edge"][0]
            .as_str()
            .is_some_and(|w| w.contains("done-0") && w.contains("not running (phase Succeeded)")),
        "{results:#}"
    );

    // A backup's own timeout (Velero's annotation) bounds its volumes: what is still running
    // then is cancelled and failed, naming the timeout.
    rig.cluster
        .api
        .delete_object("v1", "pods", Some("edge"), "done-0")
        .expect("delete the pod");
    let uid = rig.pod(
        "edge",
        "loader-0",
        "node-1",
        json!({"backup.velero.io/backup-volumes": "data"}),
        json!([{"name": "data", "emptyDir": {}}]),
    );
    let data = rig.volume_dir("node-1", &uid, "kubernetes.io~empty-dir", "data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for i in 0..24 {
        fs::write(data.join(format!("f{i}")), random(&mut rng, 16 << 20)).expect("write data");
    }
    rig.put(json!({
        "apiVersion": "velero.io/v1", "kind": "Backup",
        "metadata": {"name": "bounded", "namespace": rig.cluster.namespace,
            "annotations": {"velero.io/pod-volume-timeout": "1s"}},
        "spec": {"includedNamespaces": ["edge"]}
    }));
    let ended = wait_for("the bounded backup to end", Duration::from_secs(60), || {
        let b = rig.cluster.velero_object("backups", "bounded")?;
        let phase = b["status"]["phase"].as_str()?.to_owned();
        (!["New", "InProgress"].contains(&phase.as_str())).then_some(b)
    });
    assert_eq!(ended["status"]["phase"], "PartiallyFailed", "{ended:#}");
    let pvbs = rig.volume_backups("bounded");
    let loader = by_volume(&pvbs, "loader-0", "data");
    let message = loader["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("timed out after 1s"), "{message}");
}

#[test]
fn an_agent_looking_in_the_wrong_host_directory_says_so_and_its_backups_are_not_green() {
    let mut rig = Rig::new(&["node-1"]);
    // The agent's pod UID (the DaemonSet gives it from the downward API) has no directory under
    // its host-pods root: the mount is not the node's kubelet pods directory (a distribution
    // with another kubelet root). The agent says so when it connects.
    let own = "0b6f3c1e-9d2a-4f7e-8a1b-2c3d4e5f6a7b";
    rig.cluster
        .start_agent_with_env("node-1", &[("POD_UID", own)]);
    let problem = wait_for(
        "the agent to report its root",
        Duration::from_secs(30),
        || {
            let (_, body) =
                lifeboat_tests::cluster::http_get(&rig.cluster.metrics_address(), "/agents")?;
            let agents: Vec<Value> = serde_json::from_str(&body).ok()?;
            agents
                .iter()
                .find_map(|a| a["hostPodsProblem"].as_str().map(str::to_owned))
        },
    );
    assert!(
        problem.contains("does not hold this agent's own pod directory"),
        "{problem}"
    );
    // Its readiness says so too, as the DaemonSet's probe reads it.
    let (status, body) = rig
        .cluster
        .agent_health("node-1", "/readyz")
        .expect("the agent's health endpoint answers");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("does not hold this agent's own pod directory"),
        "{body}"
    );
    assert!(
        rig.cluster
            .agent_log("node-1")
            .contains("no pod volume on this node can be found"),
        "{}",
        rig.cluster.agent_log("node-1")
    );

    rig.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    rig.pod(
        "shop",
        "db-0",
        "node-1",
        json!({"backup.velero.io/backup-volumes": "data"}),
        json!([{"name": "data", "emptyDir": {}}]),
    );
    let out = rig
        .cluster
        .lifeboat([
            "backup",
            "create",
            "nightly",
            "--include-namespaces",
            "shop",
            "--wait",
        ])
        .ok();
    assert!(
        out.stdout
            .contains("Backup completed with status: PartiallyFailed"),
        "{}",
        out.stdout
    );
    let pvbs = rig.volume_backups("nightly");
    let pvb = by_volume(&pvbs, "db-0", "data");
    assert_eq!(pvb["status"]["phase"], "Failed", "{pvb:#}");
    let message = pvb["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("has no directory")
            && message.contains("does not hold this agent's own pod directory"),
        "{message}"
    );
}

#[test]
fn a_server_killed_mid_backup_leaves_no_pod_volume_backup_in_progress() {
    let mut rig = Rig::new(&["node-1"]);
    rig.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    let uid = rig.pod(
        "shop",
        "db-0",
        "node-1",
        json!({"backup.velero.io/backup-volumes": "data"}),
        json!([{"name": "data", "emptyDir": {}}]),
    );
    let data = rig.volume_dir("node-1", &uid, "kubernetes.io~empty-dir", "data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for i in 0..8 {
        fs::write(data.join(format!("f{i}")), random(&mut rng, 8 << 20)).expect("write data");
    }
    rig.cluster
        .lifeboat(["backup", "create", "cut", "--include-namespaces", "shop"])
        .ok();
    // The volume is being backed up: its agent holds still, and the server dies.
    wait_for(
        "the volume backup to start",
        Duration::from_secs(60),
        || {
            let pvbs = rig.volume_backups("cut");
            pvbs.iter()
                .any(|p| p["status"]["phase"] == "InProgress")
                .then_some(())
        },
    );
    rig.cluster.freeze_agent("node-1", true);
    rig.cluster.kill_server();
    rig.cluster.freeze_agent("node-1", false);
    rig.cluster.start_server();

    let backup = wait_for("the backup to be failed", Duration::from_secs(60), || {
        let b = rig.cluster.velero_object("backups", "cut")?;
        (b["status"]["phase"] == "Failed").then_some(b)
    });
    let reason = backup["status"]["failureReason"]
        .as_str()
        .unwrap_or_default();
    let pvbs = rig.volume_backups("cut");
    let pvb = by_volume(&pvbs, "db-0", "data");
    assert_eq!(pvb["status"]["phase"], "Failed", "{pvb:#}");
    assert_eq!(pvb["status"]["message"], reason, "{pvb:#}");
    let described = rig
        .cluster
        .lifeboat(["backup", "describe", "cut", "--details"])
        .ok()
        .stdout;
    assert!(!described.contains("In Progress"), "{described}");
}
