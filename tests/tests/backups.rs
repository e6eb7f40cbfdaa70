//! Backups end to end on the test cluster: the API-server stand-in seeded with a few
//! namespaces of realistic objects (`lifeboat_tests::fixtures`), a bucket on the S3 server,
//! the real `lifeboat server`, driven by the `lifeboat` CLI. Every backup is checked where a
//! user (or Velero, or a restore) would find it: the tarball and companion files downloaded
//! from the bucket and decoded, and the Backup's status.
//!
//! Also what happens around backups: a missing location, a server killed mid-backup,
//! schedules on a clock the test moves (server in-process), expiry and deletion requests,
//! and the bucket synced into a second cluster. A few tests make the API stand-in's watches
//! lag behind its writes (or slow one request), as a loaded API server does, so that a
//! controller deciding on its cache right after its own writes is caught every time rather
//! than once in a while.
//!
//! Absence (no further backup, no change) can only be checked after giving the server time to
//! act wrongly: those checks wait `SETTLE`; everything else waits for the state it expects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use lifeboat_tests::apiserver::StoredObject;
use lifeboat_tests::bucket::{BackupFiles, Tarball};
use lifeboat_tests::cluster::{Cluster, wait_for};
use lifeboat_tests::fixtures::{Seeded, WIDGET_CRD, object_path, seed_apps};
use serde_json::{Value, json};

/// How long a backup of the fixtures may take before a test gives up (they take about a
/// second; the margin is for a loaded two-core machine).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// An installed cluster on a new S3 bucket, seeded, whose server runs with `server_args`
/// and whose location `default` has been validated.
fn cluster(test: &str, server_args: &[&str]) -> (Cluster, Seeded) {
    let mut cluster = Cluster::with_s3(test);
    cluster.install();
    let seeded = seed_apps(&cluster.api);
    cluster.start_server_with(server_args);
    wait_available(&cluster, "default");
    (cluster, seeded)
}

/// Waits for a location to be validated Available: a backup created before that waits for
/// the verdict, and the tests should not depend on how long.
fn wait_available(cluster: &Cluster, location: &str) {
    wait_for(
        &format!("location {location} to become Available"),
        Duration::from_secs(30),
        || {
            let bsl = cluster.velero_object("backupstoragelocations", location)?;
            (bsl["status"]["phase"] == "Available").then_some(())
        },
    );
}

/// Waits until backup `name` reaches one of `phases`, and returns it; on a timeout, says
/// where it stands and what the server logged.
fn wait_backup(cluster: &Cluster, name: &str, phases: &[&str]) -> Value {
    let deadline = std::time::Instant::now() + BACKUP_TIMEOUT;
    loop {
        let backup = cluster.velero_object("backups", name);
        if let Some(backup) = &backup {
            let phase = backup["status"]["phase"].as_str().unwrap_or("");
            if phases.contains(&phase) {
                return backup.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backup {name} did not reach {phases:?} in {BACKUP_TIMEOUT:?}; it is\n{:#}\nserver log:\n{}",
            backup.unwrap_or_default(),
            cluster.server_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn time(value: &Value) -> Timestamp {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a timestamp"))
        .parse()
        .unwrap_or_else(|e| panic!("{value} is not a timestamp: {e}"))
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The unversioned tarball path of a stored object.
fn stored_path(o: &StoredObject) -> String {
    object_path(&o.group_resource(), o.namespace.as_deref(), &o.name)
}

/// The stored objects by tarball path.
fn by_path(objects: &[StoredObject]) -> BTreeMap<String, &StoredObject> {
    objects.iter().map(|o| (stored_path(o), o)).collect()
}

/// Checks the layout every backup tarball has: `metadata/version` first, then each object at
/// its preferred-version path and right after at its unversioned path, with the same bytes;
/// every object as the API server holds it (`holds`, by path) unless it changed while the
/// backup ran (`changed`).
fn check_tarball(
    tarball: &Tarball,
    holds: &BTreeMap<String, &StoredObject>,
    changed: &BTreeSet<String>,
) {
    assert_eq!(
        tarball
            .entries
            .first()
            .map(|(p, d)| (p.as_str(), d.as_slice())),
        Some(("metadata/version", &b"1.1.0\n"[..])),
        "the tarball starts with metadata/version"
    );
    let objects = tarball.objects();
    assert_eq!(
        tarball.entries.len(),
        1 + 2 * objects.len(),
        "every object twice and nothing else: {:#?}",
        tarball.paths()
    );
    for pair in tarball.entries[1..].chunks(2) {
        let [(versioned, a), (plain, b)] = pair else {
            panic!("an odd entry: {pair:?}");
        };
        let rest = plain
            .strip_prefix("resources/")
            .unwrap_or_else(|| panic!("{plain} is not under resources/"));
        let (gr, rest) = rest.split_once('/').expect("resources/<gr>/…");
        assert_eq!(
            versioned,
            &format!("resources/{gr}/v1-preferredversion/{rest}"),
            "the preferred-version copy precedes {plain}"
        );
        assert_eq!(a, b, "{versioned} and {plain} hold the same object");
    }
    for path in &objects {
        if changed.contains(path) {
            continue;
        }
        let stored = holds
            .get(path)
            .unwrap_or_else(|| panic!("{path} is in the backup but not in the cluster"));
        assert_eq!(
            tarball.json(path),
            stored.object,
            "{path} is the object as the API server holds it"
        );
    }
}

/// The resource list a tarball implies: `apiVersion/Kind` → sorted `ns/name`.
fn resource_list_of(tarball: &Tarball) -> Value {
    let mut list: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in tarball.objects() {
        let object = tarball.json(&path);
        let key = format!(
            "{}/{}",
            object["apiVersion"].as_str().expect("apiVersion"),
            object["kind"].as_str().expect("kind")
        );
        let name = object["metadata"]["name"].as_str().expect("a name");
        let entry = match object["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        };
        list.entry(key).or_default().push(entry);
    }
    list.values_mut().for_each(|v| v.sort());
    json!(list)
}

/// Checks a finished backup's bucket files and status against each other and against the
/// tarball; returns the number of objects in it.
fn check_backup(backup: &Value, files: &BackupFiles, ttl: Duration) -> usize {
    let name = files.name.as_str();
    assert_eq!(
        files.names(),
        strings(&[
            &format!("{name}-csi-volumesnapshotcontents.json.gz"),
            &format!("{name}-csi-volumesnapshots.json.gz"),
            &format!("{name}-logs.gz"),
            &format!("{name}-podvolumebackups.json.gz"),
            &format!("{name}-resource-list.json.gz"),
            &format!("{name}-results.gz"),
            &format!("{name}-volumesnapshots.json.gz"),
            &format!("{name}.tar.gz"),
            "velero-backup.json",
        ])
    );
    let tarball = files.tarball();
    let count = tarball.objects().len();

    // Status: Completed, timed, expiring after the TTL, every item counted.
    let status = &backup["status"];
    assert_eq!(status["phase"], "Completed", "{backup:#}");
    assert_eq!(status["formatVersion"], "1.1.0");
    let start = time(&status["startTimestamp"]);
    let completion = time(&status["completionTimestamp"]);
    assert!(start <= completion, "{status:#}");
    let ttl = SignedDuration::try_from(ttl).expect("a TTL fits");
    assert_eq!(
        time(&status["expiration"]),
        start.checked_add(ttl).expect("in range"),
        "expiration = start + TTL: {status:#}"
    );
    assert_eq!(status["progress"]["totalItems"], count, "{status:#}");
    assert_eq!(status["progress"]["itemsBackedUp"], count, "{status:#}");
    assert_eq!(status["errors"].as_i64().unwrap_or(0), 0, "{status:#}");
    assert_eq!(
        backup["metadata"]["labels"]["velero.io/storage-location"],
        "default"
    );

    // velero-backup.json is the Backup with that final status.
    let stored = files.metadata();
    assert_eq!(stored["apiVersion"], "velero.io/v1");
    assert_eq!(stored["kind"], "Backup");
    assert_eq!(stored["metadata"]["name"], name);
    assert_eq!(stored["metadata"]["namespace"], "velero");
    assert_eq!(stored["metadata"]["labels"], backup["metadata"]["labels"]);
    // Empty lists may be written out or left out (Go's omitempty leaves them out).
    assert_eq!(
        without_empty(&stored["spec"]),
        without_empty(&backup["spec"])
    );
    assert_eq!(stored["status"], backup["status"]);

    // The companions: what was taken, what went wrong, and no volume data of any kind.
    assert_eq!(
        files.json_gz("-resource-list.json.gz"),
        resource_list_of(&tarball)
    );
    let results = files.json_gz("-results.gz");
    let warnings = &results["warnings"];
    let count_of = |m: &Value| {
        m["velero"].as_array().map_or(0, Vec::len)
            + m["cluster"].as_array().map_or(0, Vec::len)
            + m["namespaces"].as_object().map_or(0, |n| {
                n.values().filter_map(Value::as_array).map(Vec::len).sum()
            })
    };
    assert_eq!(
        status["warnings"].as_i64().unwrap_or(0),
        i64::try_from(count_of(warnings)).expect("a count"),
        "status.warnings counts the results' warnings: {results:#}"
    );
    assert_eq!(count_of(&results["errors"]), 0, "{results:#}");
    assert_eq!(files.json_gz("-podvolumebackups.json.gz"), Value::Null);
    assert_eq!(files.json_gz("-volumesnapshots.json.gz"), Value::Null);

    // The log: logrus lines about this backup.
    let log = files.log();
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(
            line.starts_with("time=\"") && line.contains(&format!("backup=velero/{name}")),
            "not a log line of backup {name}: {line}"
        );
    }
    count
}

/// `value` without the fields of its top-level object that are empty lists or null.
fn without_empty(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(fields) = value.as_object_mut() {
        fields.retain(|_, v| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)));
    }
    value
}

/// The warnings of a backup's results about volumes whose data is not protected.
fn volume_warnings(files: &BackupFiles) -> Vec<String> {
    let results = files.json_gz("-results.gz");
    results["warnings"]["velero"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|w| w.contains("persistent volume"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_full_backup_holds_every_object_as_the_cluster_does_with_velero_s_files_and_status() {
    let (cluster, seeded) = cluster("full-backup", &[]);
    let before = cluster.api.objects();
    cluster.lifeboat(["backup", "create", "full"]).ok();
    cluster
        .lifeboat([
            "backup",
            "create",
            "no-snapshots",
            "--snapshot-volumes=false",
        ])
        .ok();
    let full = wait_backup(
        &cluster,
        "full",
        &["Completed", "PartiallyFailed", "Failed"],
    );
    let quiet = wait_backup(
        &cluster,
        "no-snapshots",
        &["Completed", "PartiallyFailed", "Failed"],
    );
    let after = cluster.api.objects();

    // Objects that did not change while the backups ran must be in it exactly as stored;
    // those that did (the Backups themselves, the location's status) must at least exist.
    let before_rv: BTreeMap<String, &Value> = before
        .iter()
        .map(|o| (stored_path(o), &o.object["metadata"]["resourceVersion"]))
        .collect();
    let holds = by_path(&after);
    let changed: BTreeSet<String> = holds
        .iter()
        .filter(|(path, o)| before_rv.get(*path) != Some(&&o.object["metadata"]["resourceVersion"]))
        .map(|(path, _)| path.clone())
        .collect();
    let bucket = cluster.bucket();
    let files = bucket.backup("full");
    let tarball = files.tarball();
    check_tarball(&tarball, &holds, &changed);
    let objects = tarball.objects();
    // The stand-in keeps the events of the core group and of events.k8s.io apart, where a
    // real API server serves one set through both; the backup takes events once, from the
    // core group (as Velero does), so the events.k8s.io ones the server recorded are not in it.
    // Objects labelled velero.io/exclude-from-backup (lifeboat's own CA and TLS Secrets) are
    // left out.
    let excluded = |o: &StoredObject| {
        o.object["metadata"]["labels"]["velero.io/exclude-from-backup"] == "true"
    };
    for (path, _) in holds.iter().filter(|(p, o)| {
        !changed.contains(*p) && !p.starts_with("resources/events.events.k8s.io/") && !excluded(o)
    }) {
        assert!(objects.contains(path), "the full backup lacks {path}");
    }
    // No key that lets a bucket reader mint certificates the server trusts reaches the
    // bucket; the repository password does (a restore of the volumes needs it).
    for secret in ["lifeboat-ca", "lifeboat-server-tls", "lifeboat-agent-tls"] {
        let path = format!("resources/secrets/namespaces/velero/{secret}.json");
        assert!(holds.contains_key(&path), "install made no {secret}");
        assert!(!objects.contains(&path), "the full backup holds {path}");
    }
    assert!(objects.contains("resources/secrets/namespaces/velero/velero-restic-credentials.json"));
    for seed in &seeded.objects {
        assert!(
            objects.contains(&seed.path()),
            "the full backup lacks {seed:?}"
        );
    }
    assert!(objects.contains("resources/backups.velero.io/namespaces/velero/full.json"));
    let count = check_backup(&full, &files, Duration::from_secs(720 * 3600));
    assert_eq!(count, objects.len());

    // No volume snapshot provider runs: the data of every backed-up PV is unprotected, and
    // the backup says so once, naming them.
    let warnings = volume_warnings(&files);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for pv in ["pv-shop-db", "pv-blog-uploads", "pv-free"] {
        assert!(warnings[0].contains(pv), "{pv} not named in {warnings:?}");
    }
    assert!(
        files
            .log()
            .lines()
            .any(|l| l.contains("level=warning") && l.contains("pv-free")),
        "{}",
        files.log()
    );
    assert!(full["status"]["warnings"].as_i64() >= Some(1), "{full:#}");

    // With snapshotVolumes false the user chose not to protect them: no warning.
    let quiet_files = bucket.backup("no-snapshots");
    check_backup(&quiet, &quiet_files, Duration::from_secs(720 * 3600));
    assert_eq!(volume_warnings(&quiet_files), Vec::<String>::new());
    assert!(
        quiet_files
            .tarball()
            .objects()
            .contains("resources/persistentvolumes/cluster/pv-free.json")
    );
}

#[test]
fn the_unprotected_volumes_warning_reads_as_one_sentence() {
    // It is what `backup describe` and `backup logs` show; a line break in the source must
    // not become a run of spaces in the text.
    let (cluster, _) = cluster("volume-warning", &[]);
    cluster
        .lifeboat(["backup", "create", "shop", "--include-namespaces", "shop"])
        .ok();
    wait_backup(
        &cluster,
        "shop",
        &["Completed", "PartiallyFailed", "Failed"],
    );
    let warnings = volume_warnings(&cluster.bucket().backup("shop"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("pv-shop-db"), "{warnings:?}");
    assert!(
        !warnings[0].contains("  "),
        "the warning has runs of spaces: {:?}",
        warnings[0]
    );
}

#[test]
fn filtered_backups_hold_exactly_what_their_filters_select() {
    let (cluster, seeded) = cluster("filtered-backups", &[]);
    let backups: &[(&str, &[&str])] = &[
        (
            "shop-only",
            &["--include-namespaces", "shop", "--ttl", "24h"],
        ),
        (
            "shop-no-cluster",
            &[
                "--include-namespaces",
                "shop",
                "--include-cluster-resources=false",
            ],
        ),
        (
            "tools-and-cluster",
            &[
                "--include-namespaces",
                "tools",
                "--include-cluster-resources=true",
            ],
        ),
        (
            "some-resources",
            &[
                "--include-namespaces",
                "shop,blog",
                "--include-resources",
                "deployments,configmaps,persistentvolumeclaims",
            ],
        ),
        ("db-selector", &["--selector", "app=db"]),
        (
            "no-secrets",
            &[
                "--exclude-namespaces",
                "velero,default,kube-system,kube-public",
                "--exclude-resources",
                "secrets",
            ],
        ),
    ];
    for (name, flags) in backups {
        let mut args = vec!["backup", "create", name];
        args.extend_from_slice(flags);
        cluster.lifeboat(&args).ok();
    }
    let finished: BTreeMap<&str, Value> = backups
        .iter()
        .map(|(name, _)| {
            (
                *name,
                wait_backup(&cluster, name, &["Completed", "PartiallyFailed", "Failed"]),
            )
        })
        .collect();
    let after = cluster.api.objects();
    let holds = by_path(&after);
    let paths = |seeds: Vec<&lifeboat_tests::fixtures::Seed>| -> BTreeSet<String> {
        seeds.iter().map(|s| s.path()).collect()
    };
    let get = |gr: &str, key: &str| seeded.get(gr, key).path();
    let crd = object_path(
        "customresourcedefinitions.apiextensions.k8s.io",
        None,
        WIDGET_CRD,
    );

    // A namespace: its objects and the Namespace; with cluster resources unset, the volume its
    // claim is bound to and the CRD of its widget come along.
    let shop = paths(seeded.namespace("shop"));
    let shop_only: BTreeSet<String> = shop
        .iter()
        .cloned()
        .chain([get("persistentvolumes", "pv-shop-db"), crd.clone()])
        .collect();
    // With cluster resources off, nothing cluster-scoped but the Namespace.
    let shop_no_cluster = shop.clone();
    // With them on, every cluster-scoped object (the install's too), but no other Namespace.
    let tools_and_cluster: BTreeSet<String> = paths(seeded.namespace("tools"))
        .into_iter()
        .chain(
            after
                .iter()
                .filter(|o| o.namespace.is_none() && o.plural != "namespaces")
                .map(stored_path),
        )
        .collect();
    assert!(
        tools_and_cluster.contains(&crd) && tools_and_cluster.contains(&get("nodes", "node-1"))
    );
    // Resources: only those kinds, so neither Namespaces nor the claims' volumes.
    let some_resources: BTreeSet<String> = seeded
        .filter(|s| {
            matches!(s.namespace, Some("shop" | "blog"))
                && matches!(
                    s.plural,
                    "deployments" | "configmaps" | "persistentvolumeclaims"
                )
        })
        .iter()
        .map(|s| s.path())
        .collect();
    assert_eq!(some_resources.len(), 6);
    // A label selector: what carries the label, and the volume bound to the selected claim.
    let db_selector: BTreeSet<String> = [
        get("pods", "shop/db-0"),
        get("persistentvolumeclaims", "shop/data-db-0"),
        get("persistentvolumes", "pv-shop-db"),
        get("secrets", "shop/db-credentials"),
        get("services", "shop/db"),
        get("statefulsets.apps", "shop/db"),
    ]
    .into();
    // Excluded namespaces: the others' objects but secrets; cluster resources unset but not
    // every namespace taken, so only the bound volumes and the widgets' CRD.
    let no_secrets: BTreeSet<String> = seeded
        .filter(|s| (s.namespace.is_some() || s.plural == "namespaces") && s.plural != "secrets")
        .iter()
        .map(|s| s.path())
        .chain([
            get("persistentvolumes", "pv-shop-db"),
            get("persistentvolumes", "pv-blog-uploads"),
            crd.clone(),
        ])
        .collect();

    let expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("shop-only", shop_only),
        ("shop-no-cluster", shop_no_cluster),
        ("tools-and-cluster", tools_and_cluster),
        ("some-resources", some_resources),
        ("db-selector", db_selector),
        ("no-secrets", no_secrets),
    ]);
    let bucket = cluster.bucket();
    let mut failures = Vec::new();
    for (name, want) in &expected {
        let files = bucket.backup(name);
        let tarball = files.tarball();
        let got = tarball.objects();
        if &got != want {
            failures.push(format!(
                "{name}: missing {:#?}, unexpected {:#?}",
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(want).collect::<Vec<_>>()
            ));
            continue;
        }
        check_tarball(&tarball, &holds, &BTreeSet::new());
        let ttl = if *name == "shop-only" { 24 } else { 720 };
        check_backup(&finished[name], &files, Duration::from_secs(ttl * 3600));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(finished["shop-only"]["spec"]["ttl"], "24h0m0s");
    assert_eq!(
        finished["shop-only"]["spec"]["includedNamespaces"],
        json!(["shop"])
    );
}

#[test]
fn a_backup_to_a_missing_location_fails_validation_and_uploads_nothing() {
    let (cluster, _) = cluster("missing-location", &[]);

    // The client refuses it up front…
    let refused = cluster
        .lifeboat(["backup", "create", "lost", "--storage-location", "nowhere"])
        .fails();
    assert!(refused.stderr.contains("nowhere"), "{}", refused.stderr);
    assert!(cluster.velero_object("backups", "lost").is_none());

    // …so it comes as a manifest, as `kubectl apply` would send it.
    cluster
        .api
        .put_object(json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "lost", "namespace": "velero"},
            "spec": {"storageLocation": "nowhere", "includedNamespaces": ["shop"]},
        }))
        .expect("store the Backup");
    let backup = wait_backup(
        &cluster,
        "lost",
        &["FailedValidation", "Completed", "Failed"],
    );
    assert_eq!(backup["status"]["phase"], "FailedValidation", "{backup:#}");
    let errors = backup["status"]["validationErrors"]
        .as_array()
        .unwrap_or_else(|| panic!("no validationErrors: {backup:#}"));
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("\"nowhere\""))),
        "{errors:?}"
    );
    assert!(backup["status"]["startTimestamp"].is_null(), "{backup:#}");
    assert!(cluster.bucket().keys("backups/lost").is_empty());
    assert!(cluster.bucket().keys("backups").is_empty());
}

#[test]
fn a_server_killed_mid_backup_leaves_it_failed_not_in_progress() {
    let (mut cluster, _) = cluster("killed-mid-backup", &[]);
    // Each list the backup makes now takes 300 ms: about 15 s for the whole walk, plenty of
    // time to kill the server in the middle of it.
    cluster.api.set_list_latency(Duration::from_millis(300));
    cluster.lifeboat(["backup", "create", "interrupted"]).ok();
    wait_backup(
        &cluster,
        "interrupted",
        &["InProgress", "Completed", "Failed"],
    );
    cluster.kill_server();
    let orphan = cluster
        .velero_object("backups", "interrupted")
        .expect("the backup exists");
    assert_eq!(orphan["status"]["phase"], "InProgress", "{orphan:#}");

    cluster.api.set_list_latency(Duration::ZERO);
    cluster.start_server();
    let failed = wait_backup(&cluster, "interrupted", &["Failed", "Completed"]);
    assert_eq!(failed["status"]["phase"], "Failed", "{failed:#}");
    let reason = failed["status"]["failureReason"].as_str().unwrap_or("");
    assert!(reason.contains("server stopped"), "{failed:#}");
    assert!(
        failed["status"]["completionTimestamp"].is_string(),
        "{failed:#}"
    );
    // The tarball's upload was never completed, so nothing of the backup is visible.
    assert_eq!(
        cluster.bucket().keys("backups/interrupted"),
        Vec::<String>::new()
    );

    // The restarted server backs up as usual.
    assert_backs_up_shop(&cluster, "after-restart");
}

/// A backup of namespace `shop` named `name`, made with the CLI, ends Completed.
fn assert_backs_up_shop(cluster: &Cluster, name: &str) {
    cluster
        .lifeboat(["backup", "create", name, "--include-namespaces", "shop"])
        .ok();
    let done = wait_backup(cluster, name, &["Completed", "Failed", "PartiallyFailed"]);
    assert_eq!(done["status"]["phase"], "Completed", "{done:#}");
}

/// The stored velero.io objects of kind `plural` in the install namespace.
fn velero_objects(cluster: &Cluster, plural: &str) -> Vec<Value> {
    cluster
        .api
        .objects()
        .into_iter()
        .filter(|o| o.group == "velero.io" && o.plural == plural)
        .filter(|o| o.namespace.as_deref() == Some(cluster.namespace.as_str()))
        .map(|o| o.object)
        .collect()
}

/// The names of the Backups labelled `velero.io/schedule-name=<schedule>`, sorted.
fn scheduled_backups(cluster: &Cluster, schedule: &str) -> Vec<String> {
    let mut names: Vec<String> = velero_objects(cluster, "backups")
        .iter()
        .filter(|b| b["metadata"]["labels"]["velero.io/schedule-name"] == schedule)
        .filter_map(|b| b["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Waits until schedule `name` records `lastBackup` = `at`.
fn wait_last_backup(cluster: &Cluster, name: &str, at: &str) -> Value {
    wait_for(
        &format!("schedule {name} to record lastBackup {at}"),
        Duration::from_secs(20),
        || {
            let schedule = cluster.velero_object("schedules", name)?;
            (schedule["status"]["lastBackup"] == at).then_some(schedule)
        },
    )
}

/// How long a test lets the server act on something that must NOT produce an object before
/// it checks that none appeared. Every positive step is waited for; this covers only absence.
const SETTLE: Duration = Duration::from_millis(1_500);

#[test]
fn a_schedule_backs_up_at_once_then_once_per_due_tick_of_a_clock_the_test_moves() {
    let cluster = Cluster::with_s3("schedules");
    cluster.install();
    seed_apps(&cluster.api);
    let start: Timestamp = "2026-11-22T10:15:00Z".parse().unwrap();
    let clock = lifeboat_server::clock::Clock::manual(start);
    let server = cluster.start_server_in_process(cluster.server_options(clock.clone()));
    wait_available(&cluster, "default");

    cluster
        .lifeboat([
            "schedule",
            "create",
            "frozen",
            "--schedule",
            "0 * * * *",
            "--paused",
        ])
        .ok();
    cluster
        .lifeboat([
            "schedule",
            "create",
            "hourly",
            "--schedule",
            "0 * * * *",
            "--include-namespaces",
            "shop",
            "--ttl",
            "48h",
            "--labels",
            "team=shop",
        ])
        .ok();

    // The first backup at once, named for the (manual) time, from the template, labelled.
    let first = wait_backup(
        &cluster,
        "hourly-20261122101500",
        &["Completed", "PartiallyFailed", "Failed"],
    );
    assert_eq!(first["status"]["phase"], "Completed", "{first:#}");
    assert_eq!(
        first["metadata"]["labels"],
        json!({
            "team": "shop",
            "velero.io/schedule-name": "hourly",
            "velero.io/storage-location": "default",
        })
    );
    assert_eq!(first["spec"]["includedNamespaces"], json!(["shop"]));
    assert_eq!(first["spec"]["ttl"], "48h0m0s");
    assert_eq!(first["status"]["startTimestamp"], "2026-11-22T10:15:00Z");
    assert_eq!(first["status"]["expiration"], "2026-11-24T10:15:00Z");
    let objects = cluster
        .bucket()
        .backup("hourly-20261122101500")
        .tarball()
        .objects();
    assert!(
        objects
            .iter()
            .all(|p| p.contains("/namespaces/shop/") || p.contains("/cluster/"))
    );
    let schedule = wait_last_backup(&cluster, "hourly", "2026-11-22T10:15:00Z");
    assert_eq!(schedule["status"]["phase"], "Enabled", "{schedule:#}");
    assert_eq!(
        scheduled_backups(&cluster, "hourly"),
        ["hourly-20261122101500"]
    );

    // 11:15: the 11:00 tick has passed since the last backup — one more.
    clock.advance(Duration::from_secs(3600));
    wait_backup(
        &cluster,
        "hourly-20261122111500",
        &["Completed", "PartiallyFailed", "Failed"],
    );
    wait_last_backup(&cluster, "hourly", "2026-11-22T11:15:00Z");

    // 16:15: five ticks missed at once — one backup, not five.
    clock.advance(Duration::from_secs(5 * 3600));
    wait_backup(
        &cluster,
        "hourly-20261122161500",
        &["Completed", "PartiallyFailed", "Failed"],
    );
    wait_last_backup(&cluster, "hourly", "2026-11-22T16:15:00Z");

    // 16:45: no tick since 16:15 — nothing.
    clock.advance(Duration::from_secs(1800));
    std::thread::sleep(SETTLE);
    assert_eq!(
        scheduled_backups(&cluster, "hourly"),
        [
            "hourly-20261122101500",
            "hourly-20261122111500",
            "hourly-20261122161500"
        ]
    );
    // The paused schedule made none in all that time.
    assert_eq!(scheduled_backups(&cluster, "frozen"), Vec::<String>::new());
    let frozen = cluster
        .velero_object("schedules", "frozen")
        .expect("the schedule exists");
    assert!(frozen["status"]["lastBackup"].is_null(), "{frozen:#}");
    server.stop().expect("the server stops cleanly");
}

#[test]
fn expired_and_deleted_backups_disappear_from_the_cluster_and_the_bucket() {
    let (cluster, _) = cluster("expiry", &["--garbage-collection-frequency", "1s"]);
    let bucket = cluster.bucket();
    // Restores made from each backup, with the files a restore leaves in the bucket. Made
    // first: the short-lived backup may be gone a second after it completes.
    for backup in ["kept", "short-lived", "deleted"] {
        let restore = format!("{backup}-restore");
        cluster
            .api
            .put_object(json!({
                "apiVersion": "velero.io/v1", "kind": "Restore",
                "metadata": {"name": restore, "namespace": "velero"},
                "spec": {"backupName": backup},
                "status": {"phase": "Completed"},
            }))
            .expect("store the Restore");
        for file in ["logs", "results"] {
            bucket.put(
                &format!("restores/{restore}/restore-{restore}-{file}.gz"),
                &lifeboat_tests::bucket::gzip(b"{}\n"),
            );
        }
    }
    cluster
        .lifeboat(["backup", "create", "kept", "--include-namespaces", "tools"])
        .ok();
    cluster
        .lifeboat([
            "backup",
            "create",
            "short-lived",
            "--include-namespaces",
            "tools",
            "--ttl",
            "2s",
        ])
        .ok();
    cluster
        .lifeboat([
            "backup",
            "create",
            "deleted",
            "--include-namespaces",
            "tools",
        ])
        .ok();
    wait_backup(&cluster, "deleted", &["Completed"]);
    let kept = wait_backup(&cluster, "kept", &["Completed"]);
    let kept_files = bucket.contents("backups/kept");
    assert!(!kept_files.is_empty());
    let out = cluster
        .lifeboat(["backup", "delete", "deleted", "--confirm"])
        .ok();
    assert!(
        out.stdout.contains("submitted successfully"),
        "{}",
        out.stdout
    );

    for gone in ["short-lived", "deleted"] {
        let restore = format!("{gone}-restore");
        wait_for(
            &format!("backup {gone}, its files and its restore to go"),
            Duration::from_secs(20),
            || {
                (cluster.velero_object("backups", gone).is_none()
                    && cluster.velero_object("restores", &restore).is_none()
                    && bucket.keys(&format!("backups/{gone}")).is_empty()
                    && bucket.keys(&format!("restores/{restore}")).is_empty())
                .then_some(())
            },
        );
        // The request that did it, whether the user's or garbage collection's, says so.
        let requests: Vec<Value> = velero_objects(&cluster, "deletebackuprequests")
            .into_iter()
            .filter(|r| r["spec"]["backupName"] == gone)
            .collect();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        let request = wait_for(
            &format!("the deletion request of {gone} to be Processed"),
            Duration::from_secs(10),
            || {
                let name = requests[0]["metadata"]["name"].as_str()?;
                let r = cluster.velero_object("deletebackuprequests", name)?;
                (r["status"]["phase"] == "Processed").then_some(r)
            },
        );
        assert_eq!(
            request["status"]["errors"].as_array().map_or(0, Vec::len),
            0,
            "{request:#}"
        );
        assert_eq!(request["metadata"]["labels"]["velero.io/backup-name"], gone);
    }

    // The unexpired backup, its restore and all their files are untouched.
    let still = cluster
        .velero_object("backups", "kept")
        .expect("kept is kept");
    assert_eq!(still["status"], kept["status"]);
    assert_eq!(bucket.contents("backups/kept"), kept_files);
    assert!(cluster.velero_object("restores", "kept-restore").is_some());
    assert_eq!(bucket.keys("restores/kept-restore").len(), 2);
}

/// A PodVolumeBackup as Velero stores it in `<backup>-podvolumebackups.json.gz`: the object
/// as it was in the source cluster, metadata and status included.
fn pod_volume_backup(
    backup: &str,
    backup_uid: &str,
    pod: &str,
    volume: &str,
    snapshot: &str,
) -> Value {
    json!({
        "apiVersion": "velero.io/v1", "kind": "PodVolumeBackup",
        "metadata": {
            "name": format!("{backup}-{volume}-x7k2p"),
            "generateName": format!("{backup}-"),
            "namespace": "velero",
            "uid": "0d3f2b47-6c1e-4f0a-9a53-5f4b8c1e2d90",
            "resourceVersion": "48213",
            "creationTimestamp": "2026-11-20T03:00:04Z",
            "labels": {
                "velero.io/backup-name": backup,
                "velero.io/backup-uid": backup_uid,
                "velero.io/pvc-uid": "5b1c7d1e-2f4a-4c55-8d3e-0a9b6c7d8e9f",
            },
            "annotations": {"velero.io/pvc-name": "data-db-0"},
            "ownerReferences": [{
                "apiVersion": "velero.io/v1", "kind": "Backup", "name": backup,
                "uid": backup_uid, "controller": true,
            }],
        },
        "spec": {
            "node": "node-2",
            "pod": {"kind": "Pod", "namespace": "shop", "name": pod, "uid": "8c2e4f6a-1b3d-4e5f-a7b9-c1d3e5f7a9b1"},
            "volume": volume,
            "backupStorageLocation": "default",
            "repoIdentifier": "s3:http://127.0.0.1/bucket/cluster-a/restic/shop",
            "tags": {"backup": backup, "ns": "shop", "pod": pod, "volume": volume},
        },
        "status": {
            "phase": "Completed",
            "path": format!("/host_pods/8c2e4f6a-1b3d-4e5f-a7b9-c1d3e5f7a9b1/volumes/kubernetes.io~csi/pv-shop-db/mount"),
            "snapshotID": snapshot,
            "startTimestamp": "2026-11-20T03:00:04Z",
            "completionTimestamp": "2026-11-20T03:00:09Z",
            "progress": {"totalBytes": 52428800, "bytesDone": 52428800},
        },
    })
}

#[test]
fn a_backup_in_the_bucket_is_synced_into_a_fresh_cluster_and_leaves_with_its_files() {
    let (mut old, _) = cluster("sync-source", &[]);
    old.lifeboat([
        "backup",
        "create",
        "migrate",
        "--include-namespaces",
        "shop",
    ])
    .ok();
    let original = wait_backup(&old, "migrate", &["Completed"]);
    old.stop_server();
    // The backup had a pod volume backup: its list, as Velero writes it.
    let old_uid = original["metadata"]["uid"].as_str().expect("a uid");
    let pvb = pod_volume_backup("migrate", old_uid, "db-0", "data", "4f9a7c2e");
    let bucket = old.bucket();
    bucket.put(
        "backups/migrate/migrate-podvolumebackups.json.gz",
        &lifeboat_tests::bucket::gzip(json!([pvb]).to_string().as_bytes()),
    );

    let mut new = Cluster::with_storage_of(&old);
    new.install();
    new.start_server_with(&["--backup-sync-period", "1s"]);
    let synced = wait_for(
        "the backup to be synced with its status",
        Duration::from_secs(20),
        || {
            let b = new.velero_object("backups", "migrate")?;
            b["status"]["phase"].is_string().then_some(b)
        },
    );
    // Give a controller that might wrongly take the synced backup for a new one the time to
    // do so, then check it is still the backup the old cluster made.
    std::thread::sleep(SETTLE);
    let synced = new.velero_object("backups", "migrate").unwrap_or(synced);
    assert_eq!(synced["status"], original["status"], "{synced:#}");
    assert_eq!(
        without_empty(&synced["spec"]),
        without_empty(&original["spec"])
    );
    assert_eq!(
        synced["metadata"]["labels"]["velero.io/storage-location"],
        "default"
    );
    let new_uid = synced["metadata"]["uid"].as_str().expect("a uid");
    assert_ne!(new_uid, old_uid);

    // Its pod volume backup comes too, pointed at the new Backup.
    let name = pvb["metadata"]["name"].as_str().expect("a name");
    let restored = wait_for(
        "the pod volume backup to be synced",
        Duration::from_secs(10),
        || {
            let p = new.velero_object("podvolumebackups", name)?;
            p["status"]["phase"].is_string().then_some(p)
        },
    );
    assert_eq!(restored["spec"], pvb["spec"]);
    assert_eq!(restored["status"], pvb["status"]);
    assert_eq!(
        restored["metadata"]["labels"]["velero.io/backup-name"],
        "migrate"
    );
    assert_eq!(
        restored["metadata"]["labels"]["velero.io/backup-uid"],
        new_uid
    );
    assert_eq!(restored["metadata"]["ownerReferences"][0]["uid"], new_uid);
    assert_eq!(
        restored["metadata"]["annotations"],
        pvb["metadata"]["annotations"]
    );

    // The backup's files are deleted from the bucket: the cluster lets it go.
    for key in bucket.keys("backups/migrate") {
        bucket.delete(&key);
    }
    wait_for(
        "the backup whose files are gone to leave the cluster",
        Duration::from_secs(20),
        || {
            new.velero_object("backups", "migrate")
                .is_none()
                .then_some(())
        },
    );
}

#[test]
fn a_read_only_location_is_synced_but_never_written() {
    let (mut old, _) = cluster("read-only-source", &[]);
    // Expired by the time the reader syncs it: still nothing may be deleted.
    old.lifeboat([
        "backup",
        "create",
        "archived",
        "--include-namespaces",
        "blog",
        "--ttl",
        "2s",
    ])
    .ok();
    let original = wait_backup(&old, "archived", &["Completed"]);
    old.stop_server();
    let whole = lifeboat_tests::bucket::TestBucket::open(&old.storage, "");
    let before = whole.contents("");
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("cluster-a/backups/archived/"))
    );

    // A cluster of its own (own bucket for its default location), reading the old one's.
    let mut reader = Cluster::with_s3("read-only-reader");
    reader.install();
    reader
        .lifeboat([
            "backup-location",
            "create",
            "archive",
            "--provider",
            "aws",
            "--bucket",
            &old.s3().bucket,
            "--prefix",
            "cluster-a",
            "--access-mode",
            "ReadOnly",
            "--config",
            &format!(
                "region=us-east-1,s3ForcePathStyle=true,s3Url={}",
                old.s3().endpoint
            ),
        ])
        .ok();
    reader.start_server_with(&[
        "--backup-sync-period",
        "1s",
        "--garbage-collection-frequency",
        "1s",
    ]);
    let synced = wait_for("the backup to be synced", Duration::from_secs(20), || {
        let b = reader.velero_object("backups", "archived")?;
        b["status"]["phase"].is_string().then_some(b)
    });
    assert_eq!(
        synced["metadata"]["labels"]["velero.io/storage-location"],
        "archive"
    );
    assert_eq!(synced["spec"]["storageLocation"], "archive");

    // Writes are refused: a backup to it fails validation, a deletion request changes nothing.
    wait_available(&reader, "archive");
    reader
        .lifeboat([
            "backup",
            "create",
            "attempt",
            "--storage-location",
            "archive",
        ])
        .ok();
    let attempt = wait_backup(
        &reader,
        "attempt",
        &["FailedValidation", "Completed", "Failed"],
    );
    assert_eq!(
        attempt["status"]["phase"], "FailedValidation",
        "{attempt:#}"
    );
    assert!(
        attempt["status"]["validationErrors"]
            .to_string()
            .contains("read-only"),
        "{attempt:#}"
    );
    reader
        .lifeboat(["backup", "delete", "archived", "--confirm"])
        .ok();
    let request = wait_for(
        "the deletion request to be Processed",
        Duration::from_secs(20),
        || {
            velero_objects(&reader, "deletebackuprequests")
                .into_iter()
                .find(|r| {
                    r["spec"]["backupName"] == "archived" && r["status"]["phase"] == "Processed"
                })
        },
    );
    assert!(
        request["status"]["errors"]
            .to_string()
            .contains("read-only"),
        "{request:#}"
    );

    // Several more syncs and garbage collections of the expired backup later…
    let synced_at = |reader: &Cluster| {
        reader
            .velero_object("backupstoragelocations", "archive")
            .map(|l| l["status"]["lastSyncedTime"].clone())
            .unwrap_or_default()
    };
    let first = synced_at(&reader);
    wait_for("two more syncs", Duration::from_secs(20), || {
        let now = synced_at(&reader);
        (now.is_string()
            && first.is_string()
            && time(&now)
                >= time(&first)
                    .checked_add(SignedDuration::from_secs(2))
                    .expect("in range"))
        .then_some(())
    });
    // …the backup is still there as it was, and not one object in the bucket changed.
    let kept = reader
        .velero_object("backups", "archived")
        .expect("the backup stays");
    assert_eq!(kept["status"], original["status"], "{kept:#}");
    assert_eq!(whole.contents(""), before);
}

/// How far the API stand-in holds watch events back in the lagging-watch tests: long enough
/// that a controller acting on its cache after its own writes always sees the stale copy, and
/// at least a second, so that a second pass of a schedule falls in a later second than the
/// first (backup names have whole seconds).
const WATCH_LAG: Duration = Duration::from_secs(1);

#[test]
fn a_deletion_request_is_processed_once_when_the_watch_lags() {
    let (cluster, _) = cluster("deletion-lag", &[]);
    cluster.api.set_watch_delay(WATCH_LAG);
    cluster
        .lifeboat([
            "backup",
            "create",
            "doomed",
            "--include-namespaces",
            "tools",
        ])
        .ok();
    wait_backup(&cluster, "doomed", &["Completed"]);
    // The backup controller's own lagging events do not turn it Failed.
    std::thread::sleep(WATCH_LAG + SETTLE);
    let backup = cluster
        .velero_object("backups", "doomed")
        .expect("the backup exists");
    assert_eq!(backup["status"]["phase"], "Completed", "{backup:#}");

    cluster
        .lifeboat(["backup", "delete", "doomed", "--confirm"])
        .ok();
    let request = wait_for("the deletion request", Duration::from_secs(10), || {
        velero_objects(&cluster, "deletebackuprequests")
            .into_iter()
            .find(|r| r["spec"]["backupName"] == "doomed")
    });
    let name = request["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    wait_for("the backup to be deleted", Duration::from_secs(20), || {
        cluster
            .velero_object("backups", "doomed")
            .is_none()
            .then_some(())
    });
    // Once the lagging events of its own status writes have come back, it is still the one
    // successful deletion: Processed without errors, its status written twice (InProgress,
    // Processed) and no more.
    std::thread::sleep(WATCH_LAG + SETTLE);
    let request = cluster
        .velero_object("deletebackuprequests", &name)
        .expect("the request is kept");
    assert_eq!(request["status"]["phase"], "Processed", "{request:#}");
    assert_eq!(
        request["status"]["errors"].as_array().map_or(0, Vec::len),
        0,
        "a successful deletion reported as failed: {request:#}"
    );
    let status_writes: Vec<String> = cluster
        .api
        .writes()
        .into_iter()
        .filter(|w| w.contains(&format!("/deletebackuprequests/{name}/status")))
        .collect();
    assert_eq!(status_writes.len(), 2, "{status_writes:#?}");
}

#[test]
fn a_new_schedule_makes_one_first_backup_when_the_watch_lags() {
    let (cluster, _) = cluster("schedule-lag", &[]);
    cluster.api.set_watch_delay(WATCH_LAG);
    // The schedule's first pass writes its status (Enabled), creates the backup and records
    // lastBackup; slowing the creation keeps the lastBackup event well behind the Enabled one,
    // so the pass the Enabled event triggers sees the schedule as it was before lastBackup.
    cluster.api.set_request_latency(
        "POST /apis/velero.io/v1/namespaces/velero/backups",
        Duration::from_millis(300),
    );
    // Once a year at midnight on January 1st: no tick falls within the test.
    cluster
        .lifeboat([
            "schedule",
            "create",
            "yearly",
            "--schedule",
            "0 0 1 1 *",
            "--include-namespaces",
            "tools",
        ])
        .ok();
    wait_for(
        "the first scheduled backup",
        Duration::from_secs(10),
        || (!scheduled_backups(&cluster, "yearly").is_empty()).then_some(()),
    );
    // Long enough for the lagging events of the schedule's own writes to reach it and for a
    // pass they trigger to create a backup (slowed as above).
    std::thread::sleep(2 * WATCH_LAG + SETTLE);
    assert_eq!(
        scheduled_backups(&cluster, "yearly").len(),
        1,
        "{:?}",
        scheduled_backups(&cluster, "yearly")
    );
}

#[test]
fn a_synced_backup_is_never_taken_for_a_new_one() {
    let (mut old, _) = cluster("sync-not-new", &[]);
    old.lifeboat(["backup", "create", "moved", "--include-namespaces", "tools"])
        .ok();
    let original = wait_backup(&old, "moved", &["Completed"]);
    old.stop_server();
    let bucket = old.bucket();
    let files = bucket.contents("backups/moved");

    // Sync creates the Backup, then writes its status (the status subresource ignores the
    // status of a create). Slowing that second write stands for any delay between the two:
    // meanwhile the Backup has no phase, which is what a new backup looks like.
    let mut new = Cluster::with_storage_of(&old);
    new.install();
    new.api.set_request_latency(
        "PATCH /apis/velero.io/v1/namespaces/velero/backups/moved/status",
        Duration::from_secs(2),
    );
    new.start_server_with(&["--backup-sync-period", "1s"]);
    wait_for("the backup to be synced", Duration::from_secs(20), || {
        let b = new.velero_object("backups", "moved")?;
        b["status"]["phase"].is_string().then_some(())
    });
    std::thread::sleep(SETTLE);
    let synced = new
        .velero_object("backups", "moved")
        .expect("the backup stays");
    assert_eq!(synced["status"], original["status"], "{synced:#}");
    assert_eq!(bucket.contents("backups/moved"), files);
}

#[test]
fn a_backup_completing_while_a_sync_runs_stays_in_the_cluster() {
    let (cluster, _) = cluster("sync-window", &["--backup-sync-period", "1s"]);
    // A sync lists the bucket, then the cluster's backups, and removes the Completed ones the
    // bucket did not list. Slowing the second listing opens that gap wide: a backup that
    // completes in it was not in the bucket's listing, yet is in the bucket.
    let list = "GET /apis/velero.io/v1/namespaces/velero/backups?";
    let gap = Duration::from_secs(4);
    cluster.api.set_request_latency(list, gap);
    let listings = || {
        cluster
            .api
            .requests()
            .iter()
            .filter(|r| r.starts_with(list))
            .count()
    };
    let before = listings();
    wait_for(
        "a sync to list the cluster's backups",
        Duration::from_secs(10),
        || (listings() > before).then_some(()),
    );
    let listed = std::time::Instant::now();
    cluster
        .lifeboat(["backup", "create", "fresh", "--include-namespaces", "tools"])
        .ok();
    wait_backup(&cluster, "fresh", &["Completed"]);
    assert!(
        listed.elapsed() < gap,
        "the backup took longer than the gap; the test proves nothing"
    );
    std::thread::sleep(gap.saturating_sub(listed.elapsed()) + SETTLE);
    cluster.api.set_request_latency(list, Duration::ZERO);
    let fresh = cluster.velero_object("backups", "fresh");
    assert!(
        fresh.is_some(),
        "a backup completed during a sync was removed as gone from the bucket, which holds {:?}",
        cluster.bucket().keys("backups/fresh")
    );
}

#[test]
fn malformed_backups_end_with_a_reason_and_stop_no_other_backup() {
    let (mut cluster, _) = cluster("malformed-backups", &[]);
    let put = |object: Value| {
        cluster.api.put_object(object).expect("store the Backup");
    };
    // A field of the wrong type (a hand-written manifest), and a location name that is no
    // object's name: each decodes or validates on its own and ends FailedValidation, naming
    // the field.
    put(json!({
        "apiVersion": "velero.io/v1", "kind": "Backup",
        "metadata": {"name": "typo", "namespace": "velero"},
        "spec": {"includedNamespaces": "shop"},
    }));
    put(json!({
        "apiVersion": "velero.io/v1", "kind": "Backup",
        "metadata": {"name": "escape", "namespace": "velero"},
        "spec": {"storageLocation": "../../etc", "includedNamespaces": ["shop"]},
    }));
    assert_backs_up_shop(&cluster, "fine");
    for (name, field) in [
        ("typo", "spec.includedNamespaces: invalid type"),
        ("escape", "is not a valid object name"),
    ] {
        let backup = wait_backup(&cluster, name, &["FailedValidation", "Completed", "Failed"]);
        assert_eq!(backup["status"]["phase"], "FailedValidation", "{backup:#}");
        let errors = backup["status"]["validationErrors"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(errors.contains(field), "{name}: {errors}");
    }
    let event = cluster
        .api
        .objects()
        .into_iter()
        .find(|o| o.plural == "events" && o.object["regarding"]["name"] == "typo")
        .map(|o| o.object);
    assert!(
        event.as_ref().is_some_and(|e| e["reason"] == "Malformed"),
        "no event on the malformed Backup: {event:?}"
    );

    // A server started while the malformed Backup exists lists it with the others and goes
    // on: the next backup runs, and bucket sync does not take the name for a missing one.
    cluster.kill_server();
    cluster.start_server();
    assert_backs_up_shop(&cluster, "after-restart");
    assert_eq!(
        cluster.velero_object("backups", "typo").expect("kept")["spec"]["includedNamespaces"],
        "shop"
    );
}

#[test]
fn a_backup_naming_a_hundred_thousand_namespaces_lists_each_resource_once() {
    let (cluster, _) = cluster("many-namespaces", &[]);
    let mut names: Vec<String> = (0..100_000).map(|i| format!("many-{i:06}")).collect();
    names.push("shop".into());
    cluster
        .api
        .put_object(json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "wide", "namespace": "velero"},
            "spec": {"includedNamespaces": names},
        }))
        .expect("store the Backup");
    let backup = wait_backup(
        &cluster,
        "wide",
        &["Completed", "PartiallyFailed", "Failed"],
    );
    assert_eq!(backup["status"]["phase"], "Completed", "{backup:#}");
    let per_namespace = cluster
        .api
        .requests()
        .iter()
        .filter(|r| r.contains("/namespaces/many-"))
        .count();
    assert_eq!(per_namespace, 0, "a request per included namespace");
    let objects = cluster.bucket().backup("wide").tarball().objects();
    assert!(
        objects
            .iter()
            .any(|o| o.starts_with("resources/pods/namespaces/shop/")),
        "{objects:?}"
    );
}
