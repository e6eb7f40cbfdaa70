//! `lifeboat restore …` as a user types it, against the API-server stand-in with an install in
//! it and a `filesystem` location whose bucket is a directory of this test. No lifeboat server
//! runs: the tests play its part by writing statuses and the restore's files in the bucket,
//! then check what the client stored, printed, refused and removed.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeboat_server::api::{PodVolumeRestore, Restore};
use lifeboat_tests::bin::Run;
use lifeboat_tests::cluster::{Cluster, Storage, wait_for};
use serde_json::{Value, json};

/// An installed cluster whose location `default` is a directory, with one completed backup
/// `nightly` in it.
struct Setup {
    cluster: Cluster,
    bucket: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let bucket = tempfile::tempdir().expect("a bucket directory");
        let cluster = Cluster::new(Storage::Directory(bucket.path().to_path_buf()));
        cluster.install();
        let s = Self { cluster, bucket };
        s.put(json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "nightly", "namespace": "velero",
                         "labels": {"velero.io/schedule-name": "daily"}},
            "spec": {"storageLocation": "default"},
            "status": {"phase": "Completed"},
        }));
        s
    }

    /// `lifeboat ARGS…` in UTC, with no terminal.
    fn run(&self, args: &[&str]) -> Run {
        Run::from_output(
            self.command(args)
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

    fn put(&self, object: Value) -> Value {
        self.cluster
            .api
            .put_object(object)
            .expect("store an object")
    }

    fn put_restore(&self, name: &str, spec: Value, status: Value) -> Value {
        self.put(json!({
            "apiVersion": "velero.io/v1", "kind": "Restore",
            "metadata": {"name": name, "namespace": "velero"},
            "spec": spec, "status": status,
        }))
    }

    fn put_pod_volume_restore(
        &self,
        name: &str,
        restore: &str,
        pod: &str,
        volume: &str,
        phase: &str,
    ) {
        self.put(json!({
            "apiVersion": "velero.io/v1", "kind": "PodVolumeRestore",
            "metadata": {"name": name, "namespace": "velero",
                         "labels": {"velero.io/restore-name": restore}},
            "spec": {"pod": {"kind": "Pod", "namespace": "shop-copy", "name": pod},
                     "volume": volume, "backupStorageLocation": "default",
                     "repoIdentifier": "restic/shop", "snapshotID": "3a4b5c6d"},
            "status": {"phase": phase},
        }));
    }

    fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.cluster.velero_object(plural, name)
    }

    /// Where the location keeps `key` (install's prefix is `cluster-a`).
    fn bucket_path(&self, key: &str) -> PathBuf {
        self.bucket.path().join("cluster-a").join(key)
    }

    fn put_file(&self, key: &str, bytes: &[u8]) {
        let path = self.bucket_path(key);
        std::fs::create_dir_all(path.parent().expect("keys have a directory"))
            .expect("create the restore's directory");
        std::fs::write(path, bytes).expect("write a bucket file");
    }

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
fn create_writes_every_flag_into_the_restore_exactly() {
    let s = Setup::new();
    let out = s
        .run(&[
            "restore",
            "create",
            "full",
            "--from-backup",
            "nightly",
            "--include-namespaces",
            "shop,db",
            "--exclude-namespaces",
            "kube-system",
            "--include-resources",
            "pods,configmaps",
            "--exclude-resources",
            "secrets",
            "--include-cluster-resources=false",
            "-l",
            "app=web,tier!=db",
            "--namespace-mappings",
            "shop:shop-copy,db:db-copy",
            "--restore-volumes",
            "--preserve-nodeports=true",
            "--existing-resource-policy",
            "update",
            "--labels",
            "team=storage",
        ])
        .ok()
        .stdout;
    assert_eq!(
        out,
        "Restore request \"full\" submitted successfully.\n\
         Run `lifeboat restore describe full` or `lifeboat restore logs full` for more details.\n"
    );
    let stored = s.object("restores", "full").expect("the restore exists");
    assert_eq!(
        stored["spec"],
        json!({
            "backupName": "nightly",
            "includedNamespaces": ["shop", "db"],
            "excludedNamespaces": ["kube-system"],
            "includedResources": ["pods", "configmaps"],
            "excludedResources": ["secrets"],
            "includeClusterResources": false,
            "labelSelector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
            },
            "namespaceMapping": {"shop": "shop-copy", "db": "db-copy"},
            "restorePVs": true,
            "preserveNodePorts": true,
            "existingResourcePolicy": "update",
        })
    );
    assert_eq!(stored["metadata"]["labels"], json!({"team": "storage"}));

    // The least a user types: the backup's name and the UTC time, no namespace list.
    let before = k8s_openapi::jiff::Timestamp::now();
    s.run(&["restore", "create", "--from-backup", "nightly"])
        .ok();
    let restores = s.list::<Restore>();
    let plain = restores
        .iter()
        .find(|r| r.metadata.name.as_deref() != Some("full"))
        .expect("a second restore");
    let name = plain.metadata.name.clone().expect("a name");
    let stamp = name.strip_prefix("nightly-").expect("BACKUP-TIME");
    assert_eq!(stamp.len(), 14, "{name}");
    let at = k8s_openapi::jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", stamp)
        .expect("YYYYMMDDhhmmss")
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .expect("a UTC time")
        .timestamp();
    assert!(
        (at.as_second() - before.as_second()).abs() <= 5,
        "{name} is not now in UTC"
    );
    assert_eq!(
        serde_json::to_value(&plain.spec).expect("JSON"),
        json!({"backupName": "nightly"})
    );

    // From a schedule: the server resolves the backup.
    s.run(&[
        "restore",
        "create",
        "from-daily",
        "--from-schedule",
        "daily",
    ])
    .ok();
    let stored = s.object("restores", "from-daily").expect("created");
    assert_eq!(stored["spec"], json!({"scheduleName": "daily"}));
}

#[test]
fn bad_input_and_printing_create_nothing() {
    let s = Setup::new();
    for (args, says) in [
        (
            &[
                "restore",
                "create",
                "--from-backup",
                "nightly",
                "--from-schedule",
                "daily",
            ][..],
            "not both",
        ),
        (&["restore", "create", "r"][..], "--from-backup BACKUP"),
        (
            &[
                "restore",
                "create",
                "--from-backup",
                "nightly",
                "--namespace-mappings",
                "shop=copy",
            ][..],
            "`shop=copy`",
        ),
        (
            &[
                "restore",
                "create",
                "--from-backup",
                "nightly",
                "--existing-resource-policy",
                "overwrite",
            ][..],
            "`overwrite`",
        ),
        (
            &["restore", "create", "--from-backup", "missing"][..],
            "Backup \"missing\" does not exist",
        ),
        (
            &["restore", "create", "--from-schedule", "weekly"][..],
            "schedule \"weekly\" has no backups",
        ),
        (
            &[
                "restore",
                "create",
                "--from-backup",
                "nightly",
                "-l",
                "app web",
            ][..],
            "--selector",
        ),
    ] {
        let err = one_error(s.run(args));
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let yaml = s
        .run(&[
            "restore",
            "create",
            "printed",
            "--from-backup",
            "nightly",
            "-o",
            "yaml",
        ])
        .ok()
        .stdout;
    let printed: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(printed["kind"], "Restore");
    assert_eq!(printed["metadata"]["name"], "printed");
    assert_eq!(printed["spec"]["backupName"], "nightly");
    assert!(s.list::<Restore>().is_empty(), "nothing created");
}

#[test]
fn get_prints_velero_s_table() {
    let s = Setup::new();
    s.put_restore(
        "r1",
        json!({"backupName": "nightly", "labelSelector": {"matchLabels": {"app": "web"}}}),
        json!({"phase": "PartiallyFailed", "startTimestamp": "2026-11-22T03:00:00Z",
               "completionTimestamp": "2026-11-22T03:01:00Z", "errors": 1, "warnings": 2}),
    );
    s.put_restore("r2", json!({"backupName": "nightly"}), json!({}));
    let table = s.run(&["restore", "get"]).ok().stdout;
    let cells = |line: &str| -> Vec<String> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "NAME",
            "BACKUP",
            "STATUS",
            "STARTED",
            "COMPLETED",
            "ERRORS",
            "WARNINGS",
            "CREATED",
            "SELECTOR"
        ],
        "{table}"
    );
    let r1 = cells(lines[1]);
    assert_eq!(
        r1[..7],
        [
            "r1",
            "nightly",
            "PartiallyFailed",
            "2026-11-22 03:00:00 +0000 UTC",
            "2026-11-22 03:01:00 +0000 UTC",
            "1",
            "2"
        ],
        "{table}"
    );
    assert_eq!(r1[8], "app=web", "{table}");
    assert_eq!(
        cells(lines[2])[..5],
        ["r2", "nightly", "New", "<nil>", "<nil>"],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    let one = s.run(&["restore", "get", "r1", "-o", "json"]).ok().json();
    assert_eq!(one["kind"], "Restore");
    let err = one_error(s.run(&["restore", "get", "nope"]));
    assert!(err.contains("Restore \"nope\" does not exist"), "{err}");
}

#[test]
fn describe_reads_the_results_from_the_bucket_and_lists_volume_restores() {
    let s = Setup::new();
    s.put_restore(
        "r1",
        json!({"backupName": "nightly", "namespaceMapping": {"shop": "shop-copy"},
               "restorePVs": true, "existingResourcePolicy": "update"}),
        json!({"phase": "PartiallyFailed", "startTimestamp": "2026-11-22T03:00:00Z",
               "completionTimestamp": "2026-11-22T03:01:00Z", "errors": 1, "warnings": 2}),
    );
    s.put_file(
        "restores/r1/restore-r1-results.gz",
        &gzip(
            br#"{"errors":{"namespaces":{"shop-copy":["error restoring pods/shop-copy/web-0: boom"]}},"warnings":{"velero":["no snapshot provider"],"cluster":["could not restore, persistentvolumes \"pv-1\" already exists"]}}"#,
        ),
    );
    s.put_pod_volume_restore("r1-a", "r1", "web-0", "data", "Completed");
    s.put_pod_volume_restore("r1-b", "r1", "web-0", "cache", "Completed");
    s.put_pod_volume_restore("r1-c", "r1", "db-0", "pgdata", "Failed");
    s.put_pod_volume_restore("other", "r2", "db-0", "pgdata", "Failed");

    let text = s.run(&["restore", "describe", "r1"]).ok().stdout;
    for expected in [
        "Name:         r1\n",
        "Phase:  PartiallyFailed (run `lifeboat restore logs r1` for more information)\n",
        "Started:    2026-11-22 03:00:00 +0000 UTC\n",
        "Warnings:\n  Velero:      no snapshot provider\n  Cluster:     could not restore, persistentvolumes \"pv-1\" already exists\n  Namespaces:  <none>\n",
        "Errors:\n  Velero:   <none>\n  Cluster:  <none>\n  Namespaces:\n    shop-copy:  error restoring pods/shop-copy/web-0: boom\n",
        "Backup:  nightly\n",
        "  Included:  all namespaces found in the backup\n",
        "Namespace mappings:  shop=shop-copy\n",
        "Restore PVs:  true\n",
        "Existing Resource Policy:    update\n",
        "Restic Restores (specify --details for more information):\n  Completed:  2\n  Failed:     1\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let details = s
        .run(&["restore", "describe", "r1", "--details"])
        .ok()
        .stdout;
    assert!(
        details.contains(
            "Restic Restores:\n  Completed:\n    shop-copy/web-0: cache, data\n  Failed:\n    shop-copy/db-0: pgdata\n"
        ),
        "{details}"
    );

    // Results that cannot be read: one line says so, the rest is still described.
    s.put_restore(
        "r3",
        json!({"backupName": "gone"}),
        json!({"phase": "Completed", "warnings": 1}),
    );
    let text = s.run(&["restore", "describe", "r3"]).ok().stdout;
    let line = text
        .lines()
        .find(|l| l.starts_with("Warnings and errors:"))
        .unwrap_or_else(|| panic!("no results line in:\n{text}"));
    assert!(line.contains("\"gone\" does not exist"), "{line}");
    assert!(text.contains("Restore PVs:  auto\n"), "{text}");
}

#[test]
fn logs_come_from_the_bucket_and_unfinished_restores_have_none() {
    let s = Setup::new();
    s.put_restore(
        "done",
        json!({"backupName": "nightly"}),
        json!({"phase": "Completed"}),
    );
    s.put_file(
        "restores/done/restore-done-logs.gz",
        &gzip(b"time=\"2026-11-22T03:00:00Z\" level=info msg=\"restored 12 items\"\n"),
    );
    let out = s.run(&["restore", "logs", "done"]).ok().stdout;
    assert_eq!(
        out,
        "time=\"2026-11-22T03:00:00Z\" level=info msg=\"restored 12 items\"\n"
    );
    s.put_restore(
        "running",
        json!({"backupName": "nightly"}),
        json!({"phase": "InProgress"}),
    );
    let err = one_error(s.run(&["restore", "logs", "running"]));
    assert!(err.contains("not available until it's finished"), "{err}");
    s.put_restore(
        "nolog",
        json!({"backupName": "nightly"}),
        json!({"phase": "Failed"}),
    );
    let err = one_error(s.run(&["restore", "logs", "nolog"]));
    assert!(err.contains("has no log"), "{err}");
}

#[test]
fn delete_removes_the_restores_their_volume_restores_and_files() {
    let s = Setup::new();
    for name in ["r1", "r2"] {
        s.put_restore(
            name,
            json!({"backupName": "nightly"}),
            json!({"phase": "Completed"}),
        );
        s.put_file(
            &format!("restores/{name}/restore-{name}-logs.gz"),
            &gzip(b"log\n"),
        );
        s.put_file(
            &format!("restores/{name}/restore-{name}-results.gz"),
            &gzip(b"{}\n"),
        );
        s.put_pod_volume_restore(&format!("{name}-a"), name, "web-0", "data", "Completed");
    }
    let err = one_error(s.run(&["restore", "delete", "r1"]));
    assert!(err.contains("pass --confirm"), "{err}");
    assert!(s.object("restores", "r1").is_some());

    let out = s.run(&["restore", "delete", "r1", "--confirm"]).ok().stdout;
    assert_eq!(out, "Restore \"r1\" deleted\n");
    assert!(s.object("restores", "r1").is_none());
    assert!(!s.bucket_path("restores/r1/restore-r1-logs.gz").exists());
    assert!(!s.bucket_path("restores/r1/restore-r1-results.gz").exists());
    let left: Vec<String> = s
        .list::<PodVolumeRestore>()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left, ["r2-a"]);
    // The other restore is untouched.
    assert!(s.bucket_path("restores/r2/restore-r2-logs.gz").exists());

    s.run(&["restore", "delete", "--all", "--confirm"]).ok();
    assert!(s.list::<Restore>().is_empty());
    assert!(s.list::<PodVolumeRestore>().is_empty());
    assert!(!s.bucket_path("restores/r2/restore-r2-logs.gz").exists());
    let out = s
        .run(&["restore", "delete", "--all", "--confirm"])
        .ok()
        .stdout;
    assert_eq!(out, "No restores found\n");
}

#[test]
fn create_wait_returns_when_the_restore_is_finished() {
    let s = Setup::new();
    let mut child = s
        .command(&[
            "restore",
            "create",
            "waited",
            "--from-backup",
            "nightly",
            "--wait",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lifeboat");
    let mut restore = wait_for("the restore to be created", Duration::from_secs(10), || {
        s.object("restores", "waited")
    });
    restore["status"] = json!({"phase": "InProgress"});
    s.put(restore.clone());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("lifeboat runs").is_none(),
        "still waiting"
    );
    restore["status"] = json!({"phase": "Completed"});
    s.put(restore);
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
            "Restore request \"waited\" submitted successfully.\n\
             Waiting for restore to complete. You may safely press ctrl-c to stop waiting - your restore will continue in the background.\n."
        ),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(
            ".\nRestore completed with status: Completed. You may check for more information using the commands `lifeboat restore describe waited` and `lifeboat restore logs waited`.\n"
        ),
        "{stdout}"
    );
}
