//! Backups end to end on the test cluster: the API-server stand-in seeded with a few
//! namespaces of realistic objects (`lifeboat_tests::fixtures`), a bucket on the S3 server,
//! the real `lifeboat server`, driven by the `lifeboat` CLI. Every backup is checked where a
//! user (or Velero, or a restore) would find it: the tarball and companion files downloaded
//! from the bucket and decoded, and the Backup's status.
//!
//! Also what happens around backups: a missing location, a server killed mid-backup,
//! schedules on a clock the test moves (server in-process), expiry and deletion requests,
//! and the bucket synced into a second cluster.

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
    for path in holds
        .keys()
        .filter(|p| !changed.contains(*p) && !p.starts_with("resources/events.events.k8s.io/"))
    {
        assert!(objects.contains(path), "the full backup lacks {path}");
    }
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
    cluster
        .lifeboat([
            "backup",
            "create",
            "after-restart",
            "--include-namespaces",
            "shop",
        ])
        .ok();
    let next = wait_backup(
        &cluster,
        "after-restart",
        &["Completed", "Failed", "PartiallyFailed"],
    );
    assert_eq!(next["status"]["phase"], "Completed", "{next:#}");
}
