//! `lifeboat backup …` and `lifeboat schedule …` as a user types them, against the API-server
//! stand-in with an install in it and a `filesystem` location whose bucket is a directory of
//! this test (one test uses the S3 server). No lifeboat server runs: the tests play its part by
//! writing statuses and bucket files themselves, then check what the client stored, printed
//! and refused.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use lifeboat_server::api::{Backup, DeleteBackupRequest};
use lifeboat_tests::bin::Run;
use lifeboat_tests::cluster::{Cluster, Storage, wait_for};
use serde_json::{Value, json};

/// An installed cluster whose location `default` is a directory; the bucket directory lives
/// as long as the cluster.
struct Setup {
    cluster: Cluster,
    bucket: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let bucket = tempfile::tempdir().expect("a bucket directory");
        let cluster = Cluster::new(Storage::Directory(bucket.path().to_path_buf()));
        cluster.install();
        Self { cluster, bucket }
    }

    /// `lifeboat ARGS…` in UTC (times print as `… +0000 UTC`), with no terminal.
    fn run(&self, args: &[&str]) -> Run {
        self.run_in(args, self.cluster.dir.path())
    }

    fn run_in(&self, args: &[&str], dir: &Path) -> Run {
        Run::from_output(
            self.command(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .expect("run lifeboat"),
        )
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.cluster.command();
        cmd.args(args).env("TZ", "UTC");
        cmd
    }

    /// Where the location keeps `key` (install's prefix is `cluster-a`).
    fn bucket_path(&self, key: &str) -> PathBuf {
        self.bucket.path().join("cluster-a").join(key)
    }

    fn put_file(&self, key: &str, bytes: &[u8]) {
        let path = self.bucket_path(key);
        std::fs::create_dir_all(path.parent().expect("keys have a directory"))
            .expect("create the backup's directory");
        std::fs::write(path, bytes).expect("write a bucket file");
    }

    /// Stores a Backup as the server would have left it; returns it as stored (with its UID).
    fn put_backup(&self, name: &str, labels: Value, spec: Value, status: Value) -> Value {
        self.cluster
            .api
            .put_object(json!({
                "apiVersion": "velero.io/v1", "kind": "Backup",
                "metadata": {"name": name, "namespace": "velero", "labels": labels},
                "spec": spec, "status": status,
            }))
            .expect("store the backup")
    }

    fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.cluster.velero_object(plural, name)
    }

    /// Every object of a kind in the install namespace, as JSON.
    fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let client = self.cluster.api.client().await.expect("a client");
            kube::Api::<K>::namespaced(client, "velero")
                .list(&Default::default())
                .await
                .expect("list")
                .items
        })
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

/// A failed command's stderr, which must be one line naming the problem.
fn one_error(run: Run) -> String {
    let run = run.fails();
    assert_eq!(
        run.stderr.trim_end().lines().count(),
        1,
        "one line of error:\n{}",
        run.stderr
    );
    run.stderr
}

#[test]
fn create_writes_every_flag_into_the_backup_exactly() {
    let s = Setup::new();
    s.run(&["snapshot-location", "create", "vsl-1", "--provider", "aws"])
        .ok();
    let out = s
        .run(&[
            "backup",
            "create",
            "full",
            "--include-namespaces",
            "app,db",
            "--exclude-namespaces",
            "kube-system",
            "--include-resources",
            "pods,configmaps",
            "--exclude-resources",
            "secrets",
            "--include-cluster-resources=false",
            "--selector",
            "app=web,tier!=db,env in (staging,prod),!legacy",
            "--labels",
            "team=storage,tier=gold",
            "--ttl",
            "72h",
            "--storage-location",
            "default",
            "--volume-snapshot-locations",
            "vsl-1",
            "--snapshot-volumes=false",
            "--default-volumes-to-fs-backup",
            "--ordered-resources",
            "pods=app/web-0,app/web-1;persistentvolumeclaims=app/data",
        ])
        .ok()
        .stdout;
    assert_eq!(
        out,
        "Backup request \"full\" submitted successfully.\n\
         Run `lifeboat backup describe full` or `lifeboat backup logs full` for more details.\n"
    );
    let stored = s.object("backups", "full").expect("the backup exists");
    assert_eq!(
        stored["spec"],
        json!({
            "includedNamespaces": ["app", "db"],
            "excludedNamespaces": ["kube-system"],
            "includedResources": ["pods", "configmaps"],
            "excludedResources": ["secrets"],
            "includeClusterResources": false,
            "labelSelector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                    {"key": "legacy", "operator": "DoesNotExist"},
                    {"key": "tier", "operator": "NotIn", "values": ["db"]},
                ],
            },
            "ttl": "72h0m0s",
            "storageLocation": "default",
            "volumeSnapshotLocations": ["vsl-1"],
            "snapshotVolumes": false,
            "defaultVolumesToRestic": true,
            "orderedResources": {
                "pods": "app/web-0,app/web-1",
                "persistentvolumeclaims": "app/data",
            },
        })
    );
    assert_eq!(
        stored["metadata"]["labels"],
        json!({"team": "storage", "tier": "gold"})
    );
    assert!(stored.get("status").is_none(), "{stored}");

    // The least a user types: every namespace, and the server's TTL (none written).
    s.run(&["backup", "create", "plain"]).ok();
    let stored = s.object("backups", "plain").expect("the backup exists");
    assert_eq!(stored["spec"], json!({"includedNamespaces": ["*"]}));
    assert!(stored["metadata"].get("labels").is_none(), "{stored}");

    // Velero ≥ 1.8's or-selectors, a Go-style TTL, and =true spellings.
    s.run(&[
        "backup",
        "create",
        "any",
        "--or-selector",
        "app=web or tier in (db)",
        "--ttl",
        "24h0m0s",
        "--include-cluster-resources",
        "--snapshot-volumes=true",
        "--default-volumes-to-restic=false",
    ])
    .ok();
    let stored = s.object("backups", "any").expect("the backup exists");
    assert_eq!(
        stored["spec"],
        json!({
            "includedNamespaces": ["*"],
            "orLabelSelectors": [
                {"matchLabels": {"app": "web"}},
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
            ],
            "ttl": "24h0m0s",
            "includeClusterResources": true,
            "snapshotVolumes": true,
            "defaultVolumesToRestic": false,
        })
    );

    // A second backup of the same name is refused, the first kept.
    let err = one_error(s.run(&["backup", "create", "plain", "--ttl", "1h"]));
    assert!(err.contains("Backup \"plain\" already exists"), "{err}");
}

#[test]
fn printing_and_bad_input_create_nothing() {
    let s = Setup::new();
    let yaml = s
        .run(&["backup", "create", "dry", "--ttl", "24h", "-o", "yaml"])
        .ok()
        .stdout;
    let printed: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(printed["apiVersion"], "velero.io/v1");
    assert_eq!(printed["kind"], "Backup");
    assert_eq!(printed["metadata"]["name"], "dry");
    assert_eq!(printed["metadata"]["namespace"], "velero");
    assert_eq!(printed["spec"]["ttl"], "24h0m0s");
    let printed = s
        .run(&[
            "schedule",
            "create",
            "dry",
            "--schedule",
            "@every 6h",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(printed["kind"], "Schedule");
    assert_eq!(printed["spec"]["schedule"], "@every 6h");
    assert!(s.object("backups", "dry").is_none());
    assert!(s.object("schedules", "dry").is_none());

    for (args, says) in [
        (
            vec!["backup", "create", "bad", "--selector", "app web"],
            "--selector \"app web\" is not a label selector",
        ),
        (
            vec![
                "backup",
                "create",
                "bad",
                "--selector",
                "a=b",
                "--or-selector",
                "c=d",
            ],
            "either --selector or --or-selector, not both",
        ),
        (
            vec!["backup", "create", "bad", "--or-selector", "a=b or "],
            "--or-selector",
        ),
        (
            vec!["backup", "create", "bad", "--ttl", "soon"],
            "--ttl `soon` is not a duration",
        ),
        (
            vec!["backup", "create", "bad", "--labels", "team"],
            "`team` in --labels is not KEY=VALUE",
        ),
        (
            vec![
                "backup",
                "create",
                "bad",
                "--include-namespaces",
                "app",
                "--exclude-namespaces",
                "app",
            ],
            "excludes list cannot contain an item in the includes list: app",
        ),
        (
            vec!["backup", "create", "bad", "--ordered-resources", "pods"],
            "--ordered-resources `pods` is not KIND=NAMES",
        ),
        (
            vec!["backup", "create", "bad", "--storage-location", "nowhere"],
            "Backup storage location \"nowhere\" does not exist",
        ),
        (
            vec![
                "backup",
                "create",
                "bad",
                "--volume-snapshot-locations",
                "nowhere",
            ],
            "Volume snapshot location \"nowhere\" does not exist",
        ),
        (vec!["backup", "create"], "name the backup"),
        (
            vec!["schedule", "create", "bad", "--schedule", "61 * * * *"],
            "--schedule \"61 * * * *\": invalid schedule",
        ),
        (
            vec!["schedule", "create", "bad", "--schedule", "0 1 * *"],
            "expected exactly 5 fields",
        ),
        (
            vec![
                "schedule",
                "create",
                "bad",
                "--schedule",
                "@daily",
                "--selector",
                "a=b=c",
            ],
            "--selector",
        ),
    ] {
        let err = one_error(s.run(&args));
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(s.object("backups", "bad").is_none());
    assert!(s.object("schedules", "bad").is_none());
    let listed = s.run(&["backup", "get", "-o", "json"]).ok().json();
    assert_eq!(listed["items"], json!([]));
}

#[test]
fn get_prints_velero_s_table_and_the_objects() {
    let s = Setup::new();
    let in_29_days = Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(29 * 24 + 12))
        .expect("a time")
        .to_string();
    let labels = json!({"velero.io/schedule-name": "nightly"});
    for (name, day) in [
        ("nightly-20261120010000", 20),
        ("nightly-20261122010000", 22),
    ] {
        s.put_backup(
            name,
            labels.clone(),
            json!({"includedNamespaces": ["*"], "storageLocation": "default", "ttl": "720h0m0s"}),
            json!({"phase": "Completed", "startTimestamp": format!("2026-11-{day}T01:00:00Z"),
                   "expiration": in_29_days, "errors": 0, "warnings": 2}),
        );
    }
    s.put_backup(
        "adhoc",
        json!({}),
        json!({"labelSelector": {"matchLabels": {"app": "web"}}, "storageLocation": "default"}),
        json!({"phase": "PartiallyFailed", "startTimestamp": "2026-11-01T10:30:00Z",
               "expiration": "2026-11-02T10:30:00Z", "errors": 3}),
    );
    s.put_backup("fresh", json!({}), json!({}), json!({}));

    let table = s.run(&["backup", "get"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    let columns: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "NAME",
            "STATUS",
            "ERRORS",
            "WARNINGS",
            "CREATED",
            "EXPIRES",
            "STORAGE LOCATION",
            "SELECTOR"
        ],
        "{table}"
    );
    let cells = |line: &str| -> Vec<String> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    // Velero's order: by name, a schedule's backups newest first.
    assert_eq!(
        cells(lines[1]),
        [
            "adhoc",
            "PartiallyFailed",
            "3",
            "0",
            "2026-11-01 10:30:00 +0000 UTC",
            "expired",
            "default",
            "app=web"
        ],
        "{table}"
    );
    assert_eq!(cells(lines[2])[0], "fresh");
    assert_eq!(cells(lines[2])[1..5], ["New", "0", "0", "<nil>"], "{table}");
    assert_eq!(
        cells(lines[3]),
        [
            "nightly-20261122010000",
            "Completed",
            "0",
            "2",
            "2026-11-22 01:00:00 +0000 UTC",
            "29d",
            "default",
            "<none>"
        ],
        "{table}"
    );
    assert_eq!(cells(lines[4])[0], "nightly-20261120010000");
    assert_eq!(lines.len(), 5, "{table}");

    // One name: the object; a selector: a List of what matches.
    let one = s.run(&["backup", "get", "adhoc", "-o", "json"]).ok().json();
    assert_eq!(one["kind"], "Backup");
    assert_eq!(one["status"]["errors"], 3);
    let list: Value = serde_yaml::from_str(
        &s.run(&[
            "backup",
            "get",
            "-l",
            "velero.io/schedule-name=nightly",
            "-o",
            "yaml",
        ])
        .ok()
        .stdout,
    )
    .expect("YAML");
    assert_eq!(list["kind"], "List");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["nightly-20261122010000", "nightly-20261120010000"]);

    // Several names: each fetched; a missing one is named, the others still printed.
    let run = s.run(&["backup", "get", "adhoc", "missing", "fresh"]);
    assert!(
        run.stdout.contains("adhoc") && run.stdout.contains("fresh"),
        "{}",
        run.stdout
    );
    let err = one_error(run);
    assert!(err.contains("Backup \"missing\" does not exist"), "{err}");
    let err = one_error(s.run(&["backup", "get", "adhoc", "-l", "a=b"]));
    assert!(err.contains("not both"), "{err}");
}

/// A completed backup `web` with a bit of everything a description shows.
fn put_described_backup(s: &Setup) -> Value {
    s.put_backup(
        "web",
        json!({"velero.io/schedule-name": "nightly", "team": "storage"}),
        json!({
            "includedNamespaces": ["app"],
            "excludedResources": ["events"],
            "labelSelector": {"matchLabels": {"tier": "web"}},
            "ttl": "720h0m0s",
            "storageLocation": "default",
            "defaultVolumesToRestic": true,
            "hooks": {"resources": [{"name": "freeze", "includedNamespaces": ["app"],
                "pre": [{"exec": {"container": "db", "command": ["/bin/sync"], "onError": "Fail", "timeout": "30s"}}]}]},
        }),
        json!({
            "phase": "PartiallyFailed", "formatVersion": "1.1.0", "errors": 1, "warnings": 2,
            "startTimestamp": "2026-11-22T01:00:00Z", "completionTimestamp": "2026-11-22T01:02:03Z",
            "expiration": "2026-12-22T01:00:00Z",
            "progress": {"totalItems": 12, "itemsBackedUp": 12},
        }),
    )
}

fn put_pod_volume_backup(
    s: &Setup,
    name: &str,
    backup: &str,
    pod: &str,
    volume: &str,
    status: Value,
) {
    s.cluster
        .api
        .put_object(json!({
            "apiVersion": "velero.io/v1", "kind": "PodVolumeBackup",
            "metadata": {"name": name, "namespace": "velero",
                         "labels": {"velero.io/backup-name": backup}},
            "spec": {"node": "node-1", "pod": {"kind": "Pod", "namespace": "app", "name": pod},
                     "volume": volume, "backupStorageLocation": "default",
                     "repoIdentifier": "restic/app"},
            "status": status,
        }))
        .expect("store the pod volume backup");
}

#[test]
fn describe_shows_velero_s_layout_and_with_details_the_bucket_s_resource_list() {
    let s = Setup::new();
    put_described_backup(&s);
    put_pod_volume_backup(
        &s,
        "web-a",
        "web",
        "db-0",
        "data",
        json!({"phase": "Completed", "snapshotID": "3a4b5c6d",
               "startTimestamp": "2026-11-22T01:00:10Z", "completionTimestamp": "2026-11-22T01:00:22Z",
               "progress": {"totalBytes": 1048576, "bytesDone": 1048576}}),
    );
    put_pod_volume_backup(
        &s,
        "web-b",
        "web",
        "web-0",
        "cache",
        json!({"phase": "Failed", "message": "no agent on node-1",
               "startTimestamp": "2026-11-22T01:00:10Z", "completionTimestamp": "2026-11-22T01:00:11Z"}),
    );
    put_pod_volume_backup(
        &s,
        "other-a",
        "other",
        "db-0",
        "data",
        json!({"phase": "Completed"}),
    );
    s.put_file(
        "backups/web/web-resource-list.json.gz",
        &gzip(br#"{"v1/ConfigMap": ["app/settings", "app/flags"], "apps/v1/Deployment": ["app/web"]}"#),
    );

    s.put_file(
        "backups/web/web-results.gz",
        &gzip(
            br#"{"errors":{"namespaces":{"app":["pod volume backup web-b of pod web-0 volume cache failed: no agent on node-1"]}},"warnings":{"velero":["API group metrics.k8s.io did not answer discovery; its resources are not backed up"],"cluster":["persistent volume pv-1 is not protected"]}}"#,
        ),
    );

    let text = s.run(&["backup", "describe", "web"]).ok().stdout;
    assert_eq!(text, DESCRIBED);

    // --details adds what the errors and warnings are (from the bucket's results file), the
    // resource list from the bucket and each volume, where the counts were.
    let details = s
        .run(&["backup", "describe", "web", "--details"])
        .ok()
        .stdout;
    let results = "Warnings:  2\n\n\
                   Errors:\n  \
                     Velero:   <none>\n  \
                     Cluster:  <none>\n  \
                     Namespaces:\n    \
                       app:  pod volume backup web-b of pod web-0 volume cache failed: no agent on node-1\n\n\
                   Warnings:\n  \
                     Velero:      API group metrics.k8s.io did not answer discovery; its resources are not backed up\n  \
                     Cluster:     persistent volume pv-1 is not protected\n  \
                     Namespaces:  <none>\n";
    let with_results = DESCRIBED.replacen("Warnings:  2\n", results, 1);
    assert_ne!(
        with_results, DESCRIBED,
        "the counts are where the messages go"
    );
    let (before, after) = with_results
        .split_once("Velero-Native Snapshots")
        .expect("the layout has snapshots");
    let volumes = "Restic Backups:\n  \
                     Completed:\n    \
                       app/db-0/data:  snapshot 3a4b5c6d  1.00 MiB of 1.00 MiB  12s\n  \
                     Failed:\n    \
                       app/web-0/cache:  snapshot <none>  0 B of 0 B  1s  no agent on node-1\n";
    let expected = format!(
        "{before}Resource List:\n  \
           apps/v1/Deployment:\n    \
             - app/web\n  \
           v1/ConfigMap:\n    \
             - app/settings\n    \
             - app/flags\n\n\
         Velero-Native Snapshots{}",
        after.replace(
            "Restic Backups (specify --details for more information):\n  Completed:  1\n  Failed:     1\n",
            volumes
        )
    );
    assert_eq!(details, expected);

    // A backup without a resource list says so; several backups are separated by blank lines.
    s.put_backup(
        "bare",
        json!({}),
        json!({"storageLocation": "default"}),
        json!({"phase": "Failed"}),
    );
    let both = s
        .run(&["backup", "describe", "bare", "web", "--details"])
        .ok()
        .stdout;
    assert!(both.starts_with("Name:         bare\n"), "{both}");
    assert!(
        both.contains("Resource List:  <backup resource list not found>\n"),
        "{both}"
    );
    assert!(both.ends_with(&format!("\n\n{expected}")), "{both}");
    let by_label = s
        .run(&["backup", "describe", "-l", "team=storage"])
        .ok()
        .stdout;
    assert_eq!(by_label, DESCRIBED);
    let err = one_error(s.run(&["backup", "describe", "web", "gone"]));
    assert!(err.contains("Backup \"gone\" does not exist"), "{err}");
}

/// `lifeboat backup describe web` of [`put_described_backup`], in Velero's layout.
const DESCRIBED: &str = "\
Name:         web
Namespace:    velero
Labels:       team=storage
              velero.io/schedule-name=nightly
Annotations:  <none>

Phase:  PartiallyFailed (run `lifeboat backup logs web` for more information)

Errors:    1
Warnings:  2

Namespaces:
  Included:  app
  Excluded:  <none>

Resources:
  Included:        *
  Excluded:        events
  Cluster-scoped:  auto

Label selector:  tier=web

Storage Location:  default

Velero-Native Snapshot PVs:  auto
Default Volumes to Restic:   true

TTL:  720h0m0s

Hooks:
  Resources:
    freeze:
      Namespaces:
        Included:  app
        Excluded:  <none>

      Resources:
        Included:  *
        Excluded:  <none>

      Label selector:  <none>

      Pre Exec Hook:
        Container:  db
        Command:    /bin/sync
        On Error:   Fail
        Timeout:    30s

Backup Format Version:  1.1.0

Started:    2026-11-22 01:00:00 +0000 UTC
Completed:  2026-11-22 01:02:03 +0000 UTC

Expiration:  2026-12-22 01:00:00 +0000 UTC

Total items to be backed up:  12
Items backed up:              12

Velero-Native Snapshots: <none included>

Restic Backups (specify --details for more information):
  Completed:  1
  Failed:     1
";

#[test]
fn logs_and_download_read_the_bucket_and_refuse_unfinished_backups() {
    let s = Setup::new();
    let spec = json!({"storageLocation": "default"});
    s.put_backup(
        "web",
        json!({}),
        spec.clone(),
        json!({"phase": "Completed"}),
    );
    let log =
        "time=\"2026-11-22T01:00:00Z\" level=info msg=\"Backing up item\" backup=velero/web\n";
    s.put_file("backups/web/web-logs.gz", &gzip(log.as_bytes()));
    s.put_file("backups/web/web.tar.gz", b"first tarball");
    assert_eq!(s.run(&["backup", "logs", "web"]).ok().stdout, log);

    // download: NAME-data.tar.gz in the current directory, never overwritten without --force.
    let cwd = tempfile::tempdir().expect("a working directory");
    let target = cwd.path().join("web-data.tar.gz");
    let out = s
        .run_in(&["backup", "download", "web"], cwd.path())
        .ok()
        .stdout;
    assert_eq!(
        out,
        format!(
            "Backup web has been successfully downloaded to {}\n",
            target.display()
        )
    );
    assert_eq!(
        std::fs::read(&target).expect("downloaded"),
        b"first tarball"
    );
    s.put_file("backups/web/web.tar.gz", b"second tarball");
    let err = one_error(s.run_in(&["backup", "download", "web"], cwd.path()));
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(std::fs::read(&target).expect("kept"), b"first tarball");
    s.run_in(&["backup", "download", "web", "--force"], cwd.path())
        .ok();
    assert_eq!(
        std::fs::read(&target).expect("overwritten"),
        b"second tarball"
    );
    // A backup holds every Secret of its namespaces: readable by its owner only, also when
    // it replaces a file anyone could read.
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&target), 0o600);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    s.run_in(&["backup", "download", "web", "--force"], cwd.path())
        .ok();
    assert_eq!(mode(&target), 0o600);
    let elsewhere = cwd.path().join("copy.tgz");
    let out = s
        .run(&[
            "backup",
            "download",
            "web",
            "-o",
            elsewhere.to_str().expect("UTF-8"),
        ])
        .ok()
        .stdout;
    assert!(
        out.ends_with(&format!("to {}\n", elsewhere.display())),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&elsewhere).expect("downloaded"),
        b"second tarball"
    );

    // Not finished yet, failed validation, gone, or files missing: said, and nothing written.
    s.put_backup(
        "busy",
        json!({}),
        spec.clone(),
        json!({"phase": "InProgress"}),
    );
    s.put_file("backups/busy/busy-logs.gz", &gzip(b"partial"));
    s.put_backup("new", json!({}), json!({}), json!({}));
    for name in ["busy", "new"] {
        let err = one_error(s.run(&["backup", "logs", name]));
        assert!(
            err.contains(&format!(
                "Logs of backup \"{name}\" are not available until it's finished processing"
            )),
            "{err}"
        );
        let err = one_error(s.run_in(&["backup", "download", name], cwd.path()));
        assert!(err.contains("not available until it's finished"), "{err}");
        assert!(!cwd.path().join(format!("{name}-data.tar.gz")).exists());
    }
    s.put_backup(
        "invalid",
        json!({}),
        json!({}),
        json!({"phase": "FailedValidation", "validationErrors": ["bad"]}),
    );
    let err = one_error(s.run(&["backup", "logs", "invalid"]));
    assert!(
        err.contains("failed validation, so it stored nothing"),
        "{err}"
    );
    let err = one_error(s.run(&["backup", "logs", "nope"]));
    assert!(err.contains("Backup \"nope\" does not exist"), "{err}");
    let err = one_error(s.run_in(&["backup", "download", "nope"], cwd.path()));
    assert!(err.contains("Backup \"nope\" does not exist"), "{err}");
    s.put_backup("empty", json!({}), spec, json!({"phase": "Failed"}));
    let err = one_error(s.run(&["backup", "logs", "empty"]));
    assert!(
        err.contains("backup \"empty\" has no log in backup storage location \"default\""),
        "{err}"
    );
    let err = one_error(s.run_in(&["backup", "download", "empty"], cwd.path()));
    assert!(err.contains("has no contents"), "{err}");
    assert!(!cwd.path().join("empty-data.tar.gz").exists());
    // A backup the server has not given a location yet is read from the default location.
    s.put_backup(
        "unplaced",
        json!({}),
        json!({}),
        json!({"phase": "Completed"}),
    );
    s.put_file("backups/unplaced/unplaced-logs.gz", &gzip(b"found\n"));
    assert_eq!(
        s.run(&["backup", "logs", "unplaced"]).ok().stdout,
        "found\n"
    );
}

#[test]
fn logs_come_from_an_s3_location_with_the_install_s_credentials_secret() {
    let cluster = Cluster::with_s3("cli-logs");
    cluster.install();
    let s3 = cluster.s3().clone();
    // Written with explicit keys: the test process exports none, and neither may the client use
    // any but those of the Secret cloud-credentials that install created.
    let location = lifeboat_repo::Location::parse(&s3.restic_url("cluster-a")).expect("location");
    let options = lifeboat_repo::StoreOptions {
        credentials: Some(lifeboat_repo::Credentials::Aws {
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            session_token: None,
        }),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let bucket = lifeboat_repo::Bucket::open(&location, &options).expect("bucket");
        bucket
            .put("backups/s3web/s3web-logs.gz", gzip(b"from s3\n").into())
            .await
            .expect("put the log");
    });
    cluster
        .api
        .put_object(json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "s3web", "namespace": "velero"},
            "spec": {"storageLocation": "default"}, "status": {"phase": "Completed"},
        }))
        .expect("store the backup");
    let logs = || {
        let mut cmd = cluster.command();
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        Run::from_output(
            cmd.args(["backup", "logs", "s3web"])
                .env("HOME", cluster.dir.path())
                .stdin(Stdio::null())
                .output()
                .expect("run lifeboat"),
        )
    };
    assert_eq!(logs().ok().stdout, "from s3\n");

    // Without the Secret there are no credentials at all, and the client says so.
    rt.block_on(async {
        let client = cluster.api.client().await.expect("a client");
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "velero")
            .delete("cloud-credentials", &Default::default())
            .await
            .expect("delete the Secret");
    });
    let err = one_error(logs());
    assert!(err.contains("no credentials for the S3 endpoint"), "{err}");
}

#[test]
fn delete_submits_delete_backup_requests_labelled_as_velero_s() {
    let s = Setup::new();
    let a = s.put_backup(
        "a",
        json!({"team": "x"}),
        json!({}),
        json!({"phase": "Completed"}),
    );
    let b = s.put_backup("b", json!({}), json!({}), json!({"phase": "Completed"}));
    let long_name = format!("{}-20261122010000", "n".repeat(60));
    s.put_backup(
        &long_name,
        json!({}),
        json!({}),
        json!({"phase": "Completed"}),
    );

    // No terminal to ask on: nothing happens without --confirm.
    let err = one_error(s.run(&["backup", "delete", "a"]));
    assert!(err.contains("pass --confirm"), "{err}");
    assert!(s.list::<DeleteBackupRequest>().is_empty());
    let err = one_error(s.run(&["backup", "delete", "a", "--all", "--confirm"]));
    assert!(err.contains("exactly one of them"), "{err}");
    let err = one_error(s.run(&["backup", "delete", "--confirm"]));
    assert!(err.contains("exactly one of them"), "{err}");

    // A missing name is named, and the others are still deleted.
    let run = s.run(&["backup", "delete", "a", "missing", "--confirm"]);
    assert_eq!(
        run.stdout,
        "Request to delete backup \"a\" submitted successfully.\n\
         The backup will be fully deleted after all associated data (disk snapshots, backup files, restores) are removed.\n"
    );
    let err = one_error(run);
    assert!(err.contains("Backup \"missing\" does not exist"), "{err}");
    let requests = s.list::<DeleteBackupRequest>();
    assert_eq!(requests.len(), 1);
    let request = serde_json::to_value(&requests[0]).expect("JSON");
    assert_eq!(request["metadata"]["generateName"], "a-");
    assert!(
        request["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("a-") && n.len() > 2),
        "{request}"
    );
    assert_eq!(
        request["metadata"]["labels"],
        json!({"velero.io/backup-name": "a", "velero.io/backup-uid": a["metadata"]["uid"]})
    );
    assert_eq!(request["spec"], json!({"backupName": "a"}));
    // The backup itself is the server's to delete.
    assert!(s.object("backups", "a").is_some());

    // By label, and all of them (a name too long for a label value is shortened as Velero does).
    s.run(&["backup", "delete", "-l", "team=x", "--confirm"])
        .ok();
    s.run(&["backup", "delete", "--all", "--confirm"]).ok();
    let mut for_backup: Vec<(String, String)> = s
        .list::<DeleteBackupRequest>()
        .iter()
        .map(|r| {
            let labels = r.metadata.labels.clone().unwrap_or_default();
            (
                r.spec.backup_name.clone(),
                labels["velero.io/backup-name"].clone(),
            )
        })
        .collect();
    for_backup.sort();
    let short = long_name[..57].to_string();
    assert_eq!(for_backup.len(), 5, "{for_backup:?}");
    // a three times (by name, by label, with all), then b and the long one.
    assert_eq!(for_backup[2], ("a".to_string(), "a".to_string()));
    assert_eq!(for_backup[3], ("b".to_string(), "b".to_string()));
    assert_eq!(for_backup[4].0, long_name);
    assert!(
        for_backup[4].1.starts_with(&short) && for_backup[4].1.len() == 63,
        "{for_backup:?}"
    );
    let uid_b = s
        .list::<DeleteBackupRequest>()
        .into_iter()
        .find(|r| r.spec.backup_name == "b")
        .and_then(|r| r.metadata.labels)
        .map(|l| l["velero.io/backup-uid"].clone());
    assert_eq!(uid_b.as_deref(), b["metadata"]["uid"].as_str());
    let out = s
        .run(&["backup", "delete", "-l", "team=nobody", "--confirm"])
        .ok()
        .stdout;
    assert_eq!(out, "No backups found\n");
}

#[test]
fn create_from_schedule_takes_its_template_and_labels() {
    let s = Setup::new();
    s.run(&[
        "schedule",
        "create",
        "daily",
        "--schedule",
        "0 1 * * *",
        "--include-namespaces",
        "app",
        "--ttl",
        "24h",
        "--labels",
        "team=storage",
    ])
    .ok();
    let schedule = s.object("schedules", "daily").expect("the schedule");

    let out = s
        .run(&["backup", "create", "--from-schedule", "daily"])
        .ok()
        .stdout;
    let name = out
        .strip_prefix("Backup request \"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| panic!("{out}"));
    let stamp = name
        .strip_prefix("daily-")
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    let backup = s.object("backups", &name).expect("the backup");
    assert_eq!(backup["spec"], schedule["spec"]["template"]);
    assert_eq!(
        backup["spec"],
        json!({"includedNamespaces": ["app"], "ttl": "24h0m0s"})
    );
    assert_eq!(
        backup["metadata"]["labels"],
        json!({"team": "storage", "velero.io/schedule-name": "daily"})
    );

    // A name and extra labels may be given; the filters may not (they would be ignored).
    s.run(&[
        "backup",
        "create",
        "manual",
        "--from-schedule",
        "daily",
        "--labels",
        "run=adhoc,team=ops",
    ])
    .ok();
    let backup = s.object("backups", "manual").expect("the backup");
    assert_eq!(
        backup["metadata"]["labels"],
        json!({"team": "ops", "run": "adhoc", "velero.io/schedule-name": "daily"})
    );
    let err = one_error(s.run(&[
        "backup",
        "create",
        "x",
        "--from-schedule",
        "daily",
        "--ttl",
        "1h",
        "--include-namespaces",
        "b",
    ]));
    assert!(
        err.contains("--include-namespaces, --ttl cannot be used with it"),
        "{err}"
    );
    let err = one_error(s.run(&["backup", "create", "--from-schedule", "nope"]));
    assert!(err.contains("Schedule \"nope\" does not exist"), "{err}");
    assert!(s.object("backups", "x").is_none());
}

#[test]
fn schedules_are_created_listed_described_paused_and_deleted() {
    let s = Setup::new();
    let out = s
        .run(&[
            "schedule",
            "create",
            "nightly",
            "--schedule",
            "0 1 * * *",
            "--include-namespaces",
            "app",
            "--selector",
            "tier=db",
            "--ttl",
            "168h",
            "--default-volumes-to-restic",
            "--use-owner-references-in-backup",
            "--labels",
            "team=storage",
        ])
        .ok()
        .stdout;
    assert_eq!(out, "Schedule \"nightly\" created successfully.\n");
    let stored = s.object("schedules", "nightly").expect("the schedule");
    assert_eq!(
        stored["spec"],
        json!({
            "schedule": "0 1 * * *",
            "useOwnerReferencesInBackup": true,
            "template": {
                "includedNamespaces": ["app"],
                "labelSelector": {"matchLabels": {"tier": "db"}},
                "ttl": "168h0m0s",
                "defaultVolumesToRestic": true,
            },
        })
    );
    assert_eq!(stored["metadata"]["labels"], json!({"team": "storage"}));
    s.run(&[
        "schedule",
        "create",
        "hourly",
        "--schedule",
        "@every 1h",
        "--paused",
    ])
    .ok();
    assert_eq!(
        s.object("schedules", "hourly").expect("the schedule")["spec"],
        json!({"schedule": "@every 1h", "paused": true, "template": {"includedNamespaces": ["*"]}})
    );

    // The server's part: it ran the schedule five minutes ago.
    let five_minutes_ago = Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(5 * 60 + 10))
        .expect("a time");
    let mut ran = stored.clone();
    ran["status"] = json!({"phase": "Enabled", "lastBackup": five_minutes_ago.to_string()});
    s.cluster.api.put_object(ran).expect("store the status");

    let table = s.run(&["schedule", "get"]).ok().stdout;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "STATUS",
            "CREATED",
            "SCHEDULE",
            "BACKUP TTL",
            "LAST BACKUP",
            "SELECTOR",
            "PAUSED"
        ],
        "{table}"
    );
    assert_eq!(rows[1][0], "hourly");
    assert_eq!(rows[1][1], "New");
    assert!(rows[1][2].ends_with("+0000 UTC"), "{table}");
    assert_eq!(
        rows[1][3..],
        ["@every 1h", "0s", "n/a", "<none>", "true"],
        "{table}"
    );
    assert_eq!(rows[2][0], "nightly");
    assert_eq!(rows[2][1], "Enabled");
    assert_eq!(
        rows[2][3..],
        ["0 1 * * *", "168h0m0s", "5m ago", "tier=db", "false"],
        "{table}"
    );
    let json = s
        .run(&["schedule", "get", "nightly", "-o", "json"])
        .ok()
        .json();
    assert_eq!(json["spec"]["schedule"], "0 1 * * *");
    let run = s.run(&["schedule", "get", "nope"]);
    assert_eq!(run.stdout, "", "only the error");
    let err = one_error(run);
    assert!(err.contains("Schedule \"nope\" does not exist"), "{err}");

    let text = s.run(&["schedule", "describe", "nightly"]).ok().stdout;
    let expected_start = "\
Name:         nightly
Namespace:    velero
Labels:       team=storage
Annotations:  <none>

Phase:  Enabled

Paused:  false

Schedule:  0 1 * * *

Backup Template:
  Namespaces:
    Included:  app
    Excluded:  <none>
";
    assert!(text.starts_with(expected_start), "{text}");
    assert!(text.contains("\n  Label selector:  tier=db\n"), "{text}");
    assert!(text.contains("\n  TTL:  168h0m0s\n"), "{text}");
    assert!(
        text.ends_with(&format!(
            "\nLast Backup:  {}\n",
            five_minutes_ago
                .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
                .strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
        )),
        "{text}"
    );

    // Pause and unpause by name, label or all; a schedule already so is left alone.
    let out = s.run(&["schedule", "pause", "nightly"]).ok().stdout;
    assert_eq!(out, "Schedule \"nightly\" paused successfully.\n");
    assert_eq!(
        s.object("schedules", "nightly").expect("schedule")["spec"]["paused"],
        true
    );
    let out = s.run(&["schedule", "pause", "--all"]).ok().stdout;
    assert_eq!(
        out,
        "Schedule \"hourly\" is already paused.\nSchedule \"nightly\" is already paused.\n"
    );
    let out = s
        .run(&["schedule", "unpause", "-l", "team=storage"])
        .ok()
        .stdout;
    assert_eq!(out, "Schedule \"nightly\" unpaused successfully.\n");
    assert_eq!(
        s.object("schedules", "nightly").expect("schedule")["spec"]["paused"],
        false
    );
    assert_eq!(
        s.object("schedules", "hourly").expect("schedule")["spec"]["paused"],
        true
    );
    let err = one_error(s.run(&["schedule", "pause", "nope"]));
    assert!(err.contains("Schedule \"nope\" does not exist"), "{err}");

    // Deleting asks (or takes --confirm), and leaves the schedule's backups.
    s.put_backup(
        "nightly-20261122010000",
        json!({"velero.io/schedule-name": "nightly"}),
        json!({}),
        json!({"phase": "Completed"}),
    );
    let err = one_error(s.run(&["schedule", "delete", "nightly"]));
    assert!(err.contains("pass --confirm"), "{err}");
    assert!(s.object("schedules", "nightly").is_some());
    let out = s
        .run(&["schedule", "delete", "nightly", "--confirm"])
        .ok()
        .stdout;
    assert_eq!(out, "Schedule deleted: nightly\n");
    assert!(s.object("schedules", "nightly").is_none());
    assert!(s.object("backups", "nightly-20261122010000").is_some());
    s.run(&["schedule", "delete", "--all", "--confirm"]).ok();
    assert!(s.object("schedules", "hourly").is_none());
    assert_eq!(
        s.run(&["schedule", "get", "-o", "json"]).ok().json()["items"],
        json!([])
    );
}

#[test]
fn create_wait_follows_the_backup_until_it_is_finished() {
    let s = Setup::new();
    let mut child = s
        .command(&["backup", "create", "waited", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lifeboat");
    // The server's part: start the backup, make progress, finish it.
    let created = wait_for("the backup to be created", Duration::from_secs(10), || {
        s.object("backups", "waited")
    });
    let mut backup = created.clone();
    backup["status"] =
        json!({"phase": "InProgress", "progress": {"totalItems": 10, "itemsBackedUp": 4}});
    s.cluster
        .api
        .put_object(backup.clone())
        .expect("in progress");
    std::thread::sleep(Duration::from_millis(1500));
    backup["status"] = json!({"phase": "PartiallyFailed", "errors": 1});
    s.cluster.api.put_object(backup).expect("finished");
    let status = wait_for("lifeboat to exit", Duration::from_secs(10), || {
        child.try_wait().expect("wait for lifeboat")
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with(
            "Backup request \"waited\" submitted successfully.\n\
             Waiting for backup to complete. You may safely press ctrl-c to stop waiting - your backup will continue in the background.\n."
        ),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(
            ".\nBackup completed with status: PartiallyFailed. You may check for more information using the commands `lifeboat backup describe waited` and `lifeboat backup logs waited`.\n"
        ),
        "{stdout}"
    );

    // A backup deleted while waiting ends the wait with an error.
    let child = s
        .command(&["backup", "create", "vanishing", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lifeboat");
    wait_for("the backup to be created", Duration::from_secs(10), || {
        s.object("backups", "vanishing")
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let client = s.cluster.api.client().await.expect("a client");
        kube::Api::<Backup>::namespaced(client, "velero")
            .delete("vanishing", &Default::default())
            .await
            .expect("delete the backup");
    });
    let err = one_error(Run::from_output(
        child.wait_with_output().expect("lifeboat ends"),
    ));
    assert!(
        err.contains("backup \"vanishing\" was deleted while waiting"),
        "{err}"
    );
}
