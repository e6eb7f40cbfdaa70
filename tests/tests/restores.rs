//! Restores through the whole system: a real server restores what it backed up into the
//! API-server stand-in, and the real agents of two simulated nodes fill restored pods' volumes
//! while the harness plays kubelet (it schedules the pod, makes its volume directories, binds
//! its claims, reports `restic-wait` running, and runs that init container as the real
//! `lifeboat restore-helper` process on the volume directories).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lifeboat_tests::bin::lifeboat_exe;
use lifeboat_tests::bucket::gunzip;
use lifeboat_tests::cluster::{Cluster, Storage, wait_for};
use lifeboat_tests::fixtures::{WIDGET_CRD, seed_apps};
use lifeboat_tests::tree::{assert_same_tree, compat_tree, small_files};
use rand::SeedableRng;
use serde_json::{Value, json};

const CSI: &str = "kubernetes.io~csi";
const EMPTY_DIR: &str = "kubernetes.io~empty-dir";

fn put(cluster: &Cluster, object: Value) -> Value {
    cluster
        .api
        .put_object(object)
        .expect("the stand-in stores the object")
}

/// A running pod with `volumes` on `node`; returns its UID.
fn pod(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    node: &str,
    backed_up: &str,
    volumes: Value,
) -> String {
    let mounts: Vec<Value> = volumes
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| json!({"name": v["name"], "mountPath": format!("/mnt/{}", v["name"].as_str().unwrap_or(""))}))
        .collect();
    let pod = put(
        cluster,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                "annotations": {"backup.velero.io/backup-volumes": backed_up}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1", "volumeMounts": mounts}],
                "volumes": volumes},
            "status": {"phase": "Running"}
        }),
    );
    pod["metadata"]["uid"].as_str().expect("a uid").to_owned()
}

/// Namespace `shop` and its pod `db-0` on node-1 with an emptyDir volume `data` backed up by
/// annotation; its uid.
fn shop_db_pod(cluster: &Cluster) -> String {
    put(
        cluster,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    );
    pod(
        cluster,
        "shop",
        "db-0",
        "node-1",
        "data",
        json!([{"name": "data", "emptyDir": {}}]),
    )
}

/// A claim bound to a CSI volume `pv`.
fn csi_claim(cluster: &Cluster, ns: &str, name: &str, pv: &str) {
    put(
        cluster,
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "csi": {"driver": "x.csi", "volumeHandle": pv},
                "claimRef": {"namespace": ns, "name": name}},
            "status": {"phase": "Bound"}}),
    );
    put(
        cluster,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns,
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": pv, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}}),
    );
}

/// The host directory holding the data of a pod volume, as kubelet lays it out.
fn volume_dir(cluster: &Cluster, node: &str, uid: &str, plugin: &str, dir: &str) -> PathBuf {
    let mut path = cluster
        .host_pods(node)
        .join(uid)
        .join("volumes")
        .join(plugin)
        .join(dir);
    if plugin == CSI {
        path = path.join("mount");
    }
    fs::create_dir_all(&path).expect("create the volume directory");
    path
}

fn backup(cluster: &Cluster, name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["backup", "create", name];
    args.extend_from_slice(extra);
    cluster.lifeboat(args).ok();
    wait_for("the backup to end", Duration::from_secs(120), || {
        let b = cluster.velero_object("backups", name)?;
        let phase = b["status"]["phase"].as_str()?.to_owned();
        (!["New", "InProgress"].contains(&phase.as_str())).then_some(b)
    })
}

/// Creates a Restore as `kubectl apply` of a user's manifest would.
fn create_restore(cluster: &Cluster, name: &str, spec: Value) {
    put(
        cluster,
        json!({"apiVersion": "velero.io/v1", "kind": "Restore",
            "metadata": {"name": name, "namespace": cluster.namespace}, "spec": spec}),
    );
}

fn restore_ended(cluster: &Cluster, name: &str, timeout: Duration) -> Value {
    wait_for("the restore to end", timeout, || {
        let r = cluster.velero_object("restores", name)?;
        let phase = r["status"]["phase"].as_str()?.to_owned();
        (!["New", "InProgress"].contains(&phase.as_str())).then_some(r)
    })
}

fn get(
    cluster: &Cluster,
    api_version: &str,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    cluster.api.get(api_version, plural, ns, name)
}

/// The restore's results file from the bucket.
fn results(cluster: &Cluster, restore: &str) -> Value {
    let bucket = cluster.bucket();
    let gz = bucket
        .get(&format!("restores/{restore}/restore-{restore}-results.gz"))
        .unwrap_or_else(|| panic!("no results file for restore {restore}"));
    serde_json::from_slice(&gunzip(&gz)).expect("results JSON")
}

fn volume_restores(cluster: &Cluster, restore: &str) -> Vec<Value> {
    cluster
        .api
        .objects()
        .into_iter()
        .filter(|o| o.group == "velero.io" && o.plural == "podvolumerestores")
        .map(|o| o.object)
        .filter(|p| p["metadata"]["labels"]["velero.io/restore-name"] == restore)
        .collect()
}

/// What kubelet does for a restored pod on `node`: waits for the pod, binds its claims to new
/// CSI volumes, makes its volume directories, reports `restic-wait` running, and runs that init
/// container (the real `lifeboat restore-helper`, with the pod's own arguments) on the volume
/// directories. Returns the helper's output and the volume directories by volume name.
struct Kubelet<'a> {
    cluster: &'a Cluster,
    node: &'a str,
}

struct Started {
    uid: String,
    volumes: Vec<(String, PathBuf)>,
    helper: std::process::Child,
    _restores: tempfile::TempDir,
}

impl Started {
    fn volume(&self, name: &str) -> &Path {
        &self
            .volumes
            .iter()
            .find(|(v, _)| v == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .1
    }

    fn wait(self, timeout: Duration) -> Output {
        let mut child = self.helper;
        wait_for("the restore helper to exit", timeout, || {
            child.try_wait().expect("poll the helper").map(|_| ())
        });
        child.wait_with_output().expect("the helper's output")
    }
}

impl Kubelet<'_> {
    fn start(&self, ns: &str, name: &str) -> Started {
        let cluster = self.cluster;
        let mut pod = wait_for("the restored pod", Duration::from_secs(60), || {
            get(cluster, "v1", "pods", Some(ns), name)
        });
        let uid = pod["metadata"]["uid"].as_str().expect("a uid").to_owned();
        let wait = pod["spec"]["initContainers"][0].clone();
        assert_eq!(wait["name"], "restic-wait", "{pod:#}");
        let mut volumes = Vec::new();
        let restores = tempfile::tempdir().expect("a restores directory");
        for mount in wait["volumeMounts"].as_array().expect("mounts") {
            let volume = mount["name"].as_str().expect("a name").to_owned();
            assert_eq!(mount["mountPath"], format!("/restores/{volume}"));
            let spec = pod["spec"]["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == volume.as_str())
                .expect("the mounted volume is the pod's")
                .clone();
            let dir = match spec["persistentVolumeClaim"]["claimName"].as_str() {
                Some(claim) => {
                    // The provisioner's part: a new volume for the restored claim.
                    let pv = format!("pv-restored-{ns}-{claim}");
                    let mut pvc = get(cluster, "v1", "persistentvolumeclaims", Some(ns), claim)
                        .expect("the restored claim");
                    assert!(
                        pvc["spec"]["volumeName"].is_null(),
                        "a claim whose data comes from a pod volume backup keeps no binding: {pvc:#}"
                    );
                    put(
                        cluster,
                        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                "csi": {"driver": "x.csi", "volumeHandle": pv},
                                "claimRef": {"namespace": ns, "name": claim}},
                            "status": {"phase": "Bound"}}),
                    );
                    pvc["spec"]["volumeName"] = json!(pv);
                    pvc["status"] = json!({"phase": "Bound"});
                    put(cluster, pvc);
                    volume_dir(cluster, self.node, &uid, CSI, &pv)
                }
                None => volume_dir(cluster, self.node, &uid, EMPTY_DIR, &volume),
            };
            std::os::unix::fs::symlink(&dir, restores.path().join(&volume))
                .expect("mount the volume for the helper");
            volumes.push((volume, dir));
        }
        // Scheduled, and restic-wait running.
        pod["spec"]["nodeName"] = json!(self.node);
        pod["status"] = json!({"phase": "Pending", "initContainerStatuses": [{
            "name": "restic-wait", "ready": false, "restartCount": 0, "image": wait["image"],
            "imageID": "", "state": {"running": {"startedAt": "2026-11-22T00:00:00Z"}}}]});
        put(cluster, pod);
        let mut args: Vec<String> = wait["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("text").to_owned())
            .collect();
        assert_eq!(args[0], "restore-helper");
        args.extend([
            "--restores-dir".to_owned(),
            restores.path().display().to_string(),
            "--poll-interval".to_owned(),
            "100ms".to_owned(),
        ]);
        let helper = std::process::Command::new(lifeboat_exe())
            .args(&args)
            .env("POD_NAMESPACE", ns)
            .env("POD_NAME", name)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the restore helper");
        Started {
            uid,
            volumes,
            helper,
            _restores: restores,
        }
    }
}

fn has_restore_label(object: &Value, restore: &str) -> bool {
    object["metadata"]["labels"]["velero.io/restore-name"] == restore
}

#[test]
fn a_deleted_application_comes_back_with_its_objects_and_volume_data() {
    let cluster = Cluster::running(
        Storage::S3(lifeboat_tests::s3::S3::bucket("restores")),
        &["node-1", "node-2"],
    );
    let seeded = seed_apps(&cluster.api);
    // Volumes with data on both nodes: a CSI claim and an emptyDir, and an emptyDir elsewhere.
    csi_claim(&cluster, "shop", "files", "pv-csi-files");
    let files_uid = pod(
        &cluster,
        "shop",
        "files-0",
        "node-1",
        "data,cache",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "files"}},
               {"name": "cache", "emptyDir": {}}]),
    );
    let data = volume_dir(&cluster, "node-1", &files_uid, CSI, "pv-csi-files");
    compat_tree(&data, 21);
    let cache = volume_dir(&cluster, "node-1", &files_uid, EMPTY_DIR, "cache");
    small_files(&cache, 150, 3);
    let editor_uid = pod(
        &cluster,
        "blog",
        "editor",
        "node-2",
        "drafts",
        json!([{"name": "drafts", "emptyDir": {}}]),
    );
    let drafts = volume_dir(&cluster, "node-2", &editor_uid, EMPTY_DIR, "drafts");
    small_files(&drafts, 40, 4);
    // Keep copies: the originals go with the pods.
    let originals = tempfile::tempdir().expect("a directory for the originals");
    for (name, dir) in [("data", &data), ("cache", &cache), ("drafts", &drafts)] {
        copy_tree(dir, &originals.path().join(name));
    }

    let b = backup(&cluster, "nightly", &[]);
    assert_eq!(b["status"]["phase"], "Completed", "{b:#}");

    // Disaster: the applications, their volumes and the widget CRD are gone.
    for ns in ["shop", "blog"] {
        cluster
            .api
            .delete_object("v1", "namespaces", None, ns)
            .expect("delete the namespace");
    }
    for pv in ["pv-csi-files", "pv-shop-db", "pv-blog-uploads"] {
        cluster
            .api
            .delete_object("v1", "persistentvolumes", None, pv)
            .expect("delete the volume");
    }
    cluster
        .api
        .delete_object(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            WIDGET_CRD,
        )
        .expect("delete the CRD");
    fs::remove_dir_all(cluster.host_pods("node-1").join(&files_uid))
        .expect("the pod's directory goes");
    fs::remove_dir_all(cluster.host_pods("node-2").join(&editor_uid))
        .expect("the pod's directory goes");

    cluster
        .lifeboat([
            "restore",
            "create",
            "nightly-back",
            "--from-backup",
            "nightly",
        ])
        .ok();
    // The new pods land on the other nodes this time.
    let kubelet2 = Kubelet {
        cluster: &cluster,
        node: "node-2",
    };
    let kubelet1 = Kubelet {
        cluster: &cluster,
        node: "node-1",
    };
    let files = kubelet2.start("shop", "files-0");
    let editor = kubelet1.start("blog", "editor");
    assert_ne!(files.uid, files_uid, "a new pod");
    let (files_data, files_cache) = (
        files.volume("data").to_owned(),
        files.volume("cache").to_owned(),
    );
    let editor_drafts = editor.volume("drafts").to_owned();
    let out = files.wait(Duration::from_secs(60));
    assert!(
        out.status.success(),
        "helper: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = editor.wait(Duration::from_secs(60));
    assert!(
        out.status.success(),
        "helper: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Byte-identical data, the helper's markers removed.
    assert_same_tree(&originals.path().join("data"), &files_data);
    assert_same_tree(&originals.path().join("cache"), &files_cache);
    assert_same_tree(&originals.path().join("drafts"), &editor_drafts);

    let restore = restore_ended(&cluster, "nightly-back", Duration::from_secs(60));
    assert_eq!(
        restore["status"]["phase"],
        "Completed",
        "{restore:#}\n{}",
        cluster.server_log()
    );
    assert_eq!(restore["status"]["errors"], 0, "{restore:#}");
    let pvrs = volume_restores(&cluster, "nightly-back");
    assert_eq!(pvrs.len(), 3, "{pvrs:#?}");
    for pvr in &pvrs {
        assert_eq!(pvr["status"]["phase"], "Completed", "{pvr:#}");
        assert_eq!(pvr["spec"]["backupStorageLocation"], "default");
        assert!(
            pvr["spec"]["snapshotID"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        assert_eq!(
            pvr["metadata"]["labels"]["velero.io/restore-uid"],
            restore["metadata"]["uid"]
        );
    }

    // Every object of the two namespaces is back, labelled; the CRD first, then its widgets.
    for seed in seeded
        .namespace("shop")
        .into_iter()
        .chain(seeded.namespace("blog"))
    {
        let object = get(
            &cluster,
            seed.api_version,
            seed.plural,
            seed.namespace,
            seed.name,
        )
        .unwrap_or_else(|| panic!("{seed:?} was not restored\n{}", cluster.server_log()));
        if seed.plural != "namespaces" {
            assert!(has_restore_label(&object, "nightly-back"), "{object:#}");
            assert_eq!(
                object["metadata"]["labels"]["velero.io/backup-name"],
                "nightly"
            );
        }
    }
    assert!(
        get(
            &cluster,
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            WIDGET_CRD
        )
        .is_some()
    );
    // What the API server owns is not restored.
    let web = get(&cluster, "v1", "services", Some("shop"), "web").expect("the service");
    assert!(web["spec"]["clusterIP"].is_null(), "{web:#}");
    let file_claim = get(
        &cluster,
        "v1",
        "persistentvolumeclaims",
        Some("shop"),
        "files",
    )
    .expect("the claim");
    assert_eq!(
        file_claim["spec"]["volumeName"], "pv-restored-shop-files",
        "bound by the harness, not restored: {file_claim:#}"
    );
    // A PV whose claim's data came from a pod volume backup is provisioned anew, not restored;
    // one without (a hostPath volume backed up as an object) comes back as it was.
    assert!(get(&cluster, "v1", "persistentvolumes", None, "pv-csi-files").is_none());
    assert!(get(&cluster, "v1", "persistentvolumes", None, "pv-shop-db").is_some());

    // The log and results are in the bucket, as Velero lays them out.
    let bucket = cluster.bucket();
    let log = gunzip(
        &bucket
            .get("restores/nightly-back/restore-nightly-back-logs.gz")
            .expect("the log"),
    );
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("Restore completed with status Completed"),
        "{log}"
    );
    let results = results(&cluster, "nightly-back");
    assert!(
        results["errors"].as_object().is_some_and(|e| e.is_empty()),
        "{results:#}"
    );
}

/// Copies a tree with its metadata (cp -a).
fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success());
}

#[test]
fn mapped_filtered_and_existing_objects() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let bucket = scratch.path().join("bucket");
    fs::create_dir_all(&bucket).expect("the bucket directory");
    let mut cluster = Cluster::running(Storage::Directory(bucket), &[]);
    let seeded = seed_apps(&cluster.api);
    let b = backup(&cluster, "apps", &[]);
    assert_eq!(b["status"]["phase"], "Completed", "{b:#}");

    // Into a mapped namespace: shop's objects appear in shop-copy, shop is left alone.
    let created = cluster
        .lifeboat([
            "restore",
            "create",
            "to-copy",
            "--from-backup",
            "apps",
            "--include-namespaces",
            "shop",
            "--namespace-mappings",
            "shop:shop-copy",
            "--wait",
        ])
        .ok();
    assert!(
        created
            .stdout
            .contains("Restore completed with status: Completed"),
        "{}",
        created.stdout
    );
    let r = restore_ended(&cluster, "to-copy", Duration::from_secs(60));
    assert_eq!(
        r["status"]["phase"],
        "Completed",
        "{r:#}\n{}",
        cluster.server_log()
    );
    let ns = get(&cluster, "v1", "namespaces", None, "shop-copy").expect("the mapped namespace");
    assert_eq!(ns["metadata"]["labels"]["team"], "shop", "{ns:#}");
    for seed in seeded.filter(|s| s.namespace == Some("shop")) {
        let copy = get(
            &cluster,
            seed.api_version,
            seed.plural,
            Some("shop-copy"),
            seed.name,
        )
        .unwrap_or_else(|| panic!("{seed:?} was not restored into shop-copy"));
        assert!(has_restore_label(&copy, "to-copy"), "{copy:#}");
        let original = get(
            &cluster,
            seed.api_version,
            seed.plural,
            Some("shop"),
            seed.name,
        )
        .expect("the original");
        assert!(
            !has_restore_label(&original, "to-copy"),
            "the original is untouched"
        );
    }
    assert!(
        get(
            &cluster,
            "v1",
            "configmaps",
            Some("shop-copy"),
            "blog-theme"
        )
        .is_none()
    );
    let pod = get(&cluster, "v1", "pods", Some("shop-copy"), "db-0").expect("the pod");
    assert!(
        pod["spec"]["nodeName"].is_null(),
        "the scheduler places it again: {pod:#}"
    );
    // Existing cluster-scoped objects (the seeded PVs, nodes) are not overwritten: a warning.
    assert!(get(&cluster, "v1", "configmaps", Some("tools"), "scripts").is_some());

    // A filtered restore: only config maps of tools.
    cluster
        .api
        .delete_object("v1", "configmaps", Some("tools"), "scripts")
        .expect("delete");
    cluster
        .api
        .delete_object("v1", "secrets", Some("tools"), "api-token")
        .expect("delete");
    create_restore(
        &cluster,
        "scripts-only",
        json!({"backupName": "apps", "includedNamespaces": ["tools"], "includedResources": ["configmaps"]}),
    );
    let r = restore_ended(&cluster, "scripts-only", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    assert!(get(&cluster, "v1", "configmaps", Some("tools"), "scripts").is_some());
    assert!(
        get(&cluster, "v1", "secrets", Some("tools"), "api-token").is_none(),
        "filtered out"
    );
    // A label selector: only blog's objects labelled app=blog.
    cluster
        .api
        .delete_object("v1", "namespaces", None, "blog")
        .expect("delete blog");
    create_restore(
        &cluster,
        "blog-app",
        json!({"backupName": "apps", "includedNamespaces": ["blog"],
            "labelSelector": {"matchLabels": {"app": "blog"}}}),
    );
    let r = restore_ended(&cluster, "blog-app", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    assert!(get(&cluster, "v1", "configmaps", Some("blog"), "blog-theme").is_some());
    // Progress counts what the selector took and what was restored, not the tarball.
    let labelled = cluster
        .api
        .objects()
        .into_iter()
        .filter(|o| {
            o.object["metadata"]["namespace"] == "blog"
                && o.object["metadata"]["labels"]["app"] == "blog"
                && has_restore_label(&o.object, "blog-app")
        })
        .count();
    assert!(labelled >= 1);
    assert_eq!(
        r["status"]["progress"],
        json!({"totalItems": labelled, "itemsRestored": labelled}),
        "{r:#}"
    );

    // An existing object that differs is never overwritten: a warning names it...
    let mut theme =
        get(&cluster, "v1", "configmaps", Some("blog"), "blog-theme").expect("the theme");
    theme["data"] = json!({"theme": "changed since the backup"});
    put(&cluster, theme);
    create_restore(
        &cluster,
        "keep",
        json!({"backupName": "apps", "includedNamespaces": ["blog"]}),
    );
    let r = restore_ended(&cluster, "keep", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    assert!(
        r["status"]["warnings"].as_i64().is_some_and(|w| w >= 1),
        "{r:#}"
    );
    let kept = get(&cluster, "v1", "configmaps", Some("blog"), "blog-theme").expect("the theme");
    assert_eq!(kept["data"]["theme"], "changed since the backup");
    let warnings = results(&cluster, "keep")["warnings"]["namespaces"]["blog"].clone();
    assert!(
        warnings.as_array().is_some_and(|w| w.iter().any(|m| m
            .as_str()
            .is_some_and(|m| m.contains("ConfigMap \"blog-theme\" already exists")))),
        "{warnings:#}"
    );
    // ...unless the restore asks for updates.
    create_restore(
        &cluster,
        "update",
        json!({"backupName": "apps", "includedNamespaces": ["blog"], "existingResourcePolicy": "update"}),
    );
    let r = restore_ended(&cluster, "update", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    let updated = get(&cluster, "v1", "configmaps", Some("blog"), "blog-theme").expect("the theme");
    assert_ne!(
        updated["data"]["theme"], "changed since the backup",
        "{updated:#}"
    );

    // Objects at an API version the cluster no longer serves are skipped, each named.
    cluster
        .api
        .delete_object(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            WIDGET_CRD,
        )
        .expect("delete the CRD");
    create_restore(
        &cluster,
        "no-widgets",
        json!({"backupName": "apps", "includedResources": ["widgets.example.com"], "includeClusterResources": false}),
    );
    let r = restore_ended(&cluster, "no-widgets", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    let warnings = results(&cluster, "no-widgets")["warnings"].to_string();
    assert!(
        warnings.contains("storefront") && warnings.contains("example.com/v1"),
        "{warnings}"
    );
    // describe shows it from the bucket's results, as Velero's does.
    let described = cluster.lifeboat(["restore", "describe", "no-widgets"]).ok();
    assert!(
        described.stdout.contains("storefront"),
        "{}",
        described.stdout
    );

    // A restore of a backup that does not exist fails validation, creating nothing.
    create_restore(&cluster, "nothing", json!({"backupName": "no-such-backup"}));
    let r = restore_ended(&cluster, "nothing", Duration::from_secs(30));
    assert_eq!(r["status"]["phase"], "FailedValidation", "{r:#}");
    assert!(
        r["status"]["validationErrors"]
            .to_string()
            .contains("no-such-backup"),
        "{r:#}"
    );

    // Velero's restore metrics count them.
    let metrics = cluster.metrics();
    for line in [
        "velero_restore_attempt_total{schedule=\"\"} 7",
        "velero_restore_success_total{schedule=\"\"} 6",
        "velero_restore_validation_failed_total{schedule=\"\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // A restore-only server restores, and leaves backups alone.
    cluster.stop_server();
    cluster.start_server_with(&["--restore-only"]);
    cluster.lifeboat(["backup", "create", "not-now"]).ok();
    create_restore(
        &cluster,
        "only-restores",
        json!({"backupName": "apps", "includedNamespaces": ["tools"]}),
    );
    let r = restore_ended(&cluster, "only-restores", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    std::thread::sleep(Duration::from_secs(1));
    let ignored = cluster
        .velero_object("backups", "not-now")
        .expect("the backup object");
    assert!(
        ignored["status"]["phase"].is_null(),
        "a restore-only server ran a backup: {ignored:#}"
    );
}

#[test]
fn a_fresh_cluster_restores_a_synced_backup_and_a_missing_snapshot_fails_its_volume() {
    let old = Cluster::running(
        Storage::S3(lifeboat_tests::s3::S3::bucket("restore-elsewhere")),
        &["node-1"],
    );
    old.api
        .put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wiki"}}))
        .expect("ns");
    let uid = pod(
        &old,
        "wiki",
        "wiki-0",
        "node-1",
        "pages,media",
        json!([{"name": "pages", "emptyDir": {}}, {"name": "media", "emptyDir": {}}]),
    );
    let pages = volume_dir(&old, "node-1", &uid, EMPTY_DIR, "pages");
    small_files(&pages, 30, 9);
    let media = volume_dir(&old, "node-1", &uid, EMPTY_DIR, "media");
    small_files(&media, 5, 10);
    let b = backup(&old, "wiki-backup", &[]);
    assert_eq!(b["status"]["phase"], "Completed", "{b:#}");
    // The media volume's snapshot is lost from the repository.
    let pvb = old
        .api
        .objects()
        .into_iter()
        .filter(|o| o.plural == "podvolumebackups")
        .map(|o| o.object)
        .find(|p| p["spec"]["volume"] == "media")
        .expect("the media volume's backup");
    let snapshot = pvb["status"]["snapshotID"]
        .as_str()
        .expect("an id")
        .to_owned();
    let bucket = old.bucket();
    bucket.delete(&format!("restic/wiki/snapshots/{snapshot}"));

    // A fresh cluster on the same bucket: the backup is synced in, then restored. The volumes'
    // repositories open with the old install's password, which the operator carried over (the
    // Secret `velero-restic-credentials`, as the README's disaster recovery steps say).
    let fresh = Cluster::running(old.storage.clone(), &["node-7"]);
    let mut secret = old
        .api
        .get(
            "v1",
            "secrets",
            Some(&old.namespace),
            "velero-restic-credentials",
        )
        .expect("the old install's repository Secret");
    secret["metadata"] = json!({"name": "velero-restic-credentials", "namespace": fresh.namespace});
    put(&fresh, secret);
    wait_for("the backup to be synced", Duration::from_secs(60), || {
        fresh
            .velero_object("backups", "wiki-backup")
            .filter(|b| b["status"]["phase"] == "Completed")
    });
    create_restore(&fresh, "wiki-back", json!({"backupName": "wiki-backup"}));
    let started = Kubelet {
        cluster: &fresh,
        node: "node-7",
    }
    .start("wiki", "wiki-0");
    let restored_pages = started.volume("pages").to_owned();
    let out = started.wait(Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the helper must not let the pod start: {stderr}"
    );
    assert!(
        stderr.contains("media"),
        "the helper names the volume: {stderr}"
    );
    assert!(
        stderr.contains(&snapshot[..8]),
        "...and the reason: {stderr}"
    );
    // The volume that could be restored was; its marker stays while the pod cannot start, so
    // kubelet's next run of the init container comes to the same answer.
    assert!(restored_pages.join(".velero").is_dir());
    fs::remove_dir_all(restored_pages.join(".velero")).expect("remove the marker");
    assert_same_tree(&pages, &restored_pages);

    let r = restore_ended(&fresh, "wiki-back", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "PartiallyFailed", "{r:#}");
    let pvrs = volume_restores(&fresh, "wiki-back");
    let media_pvr = pvrs
        .iter()
        .find(|p| p["spec"]["volume"] == "media")
        .expect("the media PVR");
    assert_eq!(media_pvr["status"]["phase"], "Failed", "{media_pvr:#}");
    assert!(
        media_pvr["status"]["message"]
            .to_string()
            .contains(&snapshot[..8]),
        "{media_pvr:#}"
    );
    let errors = results(&fresh, "wiki-back")["errors"]["namespaces"]["wiki"].to_string();
    assert!(errors.contains("media"), "{errors}");
}

#[test]
fn a_volume_whose_agent_is_gone_fails_and_its_pod_stops_waiting_once_the_agent_is_back() {
    let bucket = tempfile::tempdir().expect("a bucket directory");
    let mut cluster = Cluster::running(Storage::Directory(bucket.path().to_owned()), &["node-1"]);
    let uid = shop_db_pod(&cluster);
    small_files(
        &volume_dir(&cluster, "node-1", &uid, EMPTY_DIR, "data"),
        20,
        5,
    );
    let b = backup(&cluster, "nightly", &["--include-namespaces", "shop"]);
    assert_eq!(b["status"]["phase"], "Completed", "{b:#}");
    cluster
        .api
        .delete_object("v1", "namespaces", None, "shop")
        .expect("delete the namespace");
    fs::remove_dir_all(cluster.host_pods("node-1").join(&uid)).expect("the pod's directory goes");

    // The node's agent is gone (killed, OOM) when the restored pod starts waiting: its volume
    // fails at once. The failure marker is written through the agent's next session, so the
    // pod's init container ends now rather than at its timeout (4 h), over a volume with no data.
    cluster.kill_agent("node-1");
    cluster
        .lifeboat(["restore", "create", "back", "--from-backup", "nightly"])
        .ok();
    let kubelet = Kubelet {
        cluster: &cluster,
        node: "node-1",
    };
    let started = kubelet.start("shop", "db-0");
    let pvr = wait_for("the volume to fail", Duration::from_secs(60), || {
        let pvrs = volume_restores(&cluster, "back");
        pvrs.into_iter().find(|p| p["status"]["phase"] == "Failed")
    });
    let reason = pvr["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("no live agent on node node-1"), "{reason}");
    let restore = restore_ended(&cluster, "back", Duration::from_secs(60));
    assert_eq!(restore["status"]["phase"], "PartiallyFailed", "{restore:#}");

    cluster.start_agent("node-1");
    let out = started.wait(Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "the helper let the pod start over no data"
    );
    // The reason can only have come from the marker the agent wrote into the volume.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no live agent on node node-1"), "{said}");
}

/// A backup tarball holding, after a namespace `shop`, one object of `size` bytes
/// (JSON whitespace): what a hostile or broken bucket may hold. Compressed, it is small.
fn tarball_with_a_huge_object(size: u64) -> Vec<u8> {
    use std::io::Read as _;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut append = |path: &str, size: u64, data: &mut dyn std::io::Read| {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, data)
            .expect("append to the tarball");
    };
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}).to_string();
    append(
        "resources/namespaces/cluster/shop.json",
        ns.len() as u64,
        &mut ns.as_bytes(),
    );
    append(
        "resources/configmaps/namespaces/shop/big.json",
        size,
        &mut std::io::repeat(b' ').take(size),
    );
    builder
        .into_inner()
        .expect("finish the tarball")
        .finish()
        .expect("finish the gzip stream")
}

/// The bucket is not trusted. A backup whose tarball holds an object far larger than the
/// server's per-object limit fails its restore, naming the limit, its flag and the backup,
/// with nothing created and the server's memory nowhere near the object's size. The server
/// removed at start the scratch directory a killed server left (and nothing else), and the
/// failed restore's own is gone.
#[test]
fn an_oversized_object_in_a_backup_tarball_fails_the_restore_within_bounded_memory() {
    const OBJECT: u64 = 256 << 20;
    let bucket_dir = tempfile::tempdir().expect("a bucket directory");
    let mut cluster = Cluster::new(Storage::Directory(bucket_dir.path().to_path_buf()));
    cluster.install();
    let tarball = tarball_with_a_huge_object(OBJECT);
    assert!(
        tarball.len() < (8 << 20),
        "{} bytes compressed",
        tarball.len()
    );
    let bucket = cluster.bucket();
    bucket.put(
        "backups/huge/velero-backup.json",
        json!({"apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "huge", "namespace": cluster.namespace},
            "spec": {"storageLocation": "default"},
            "status": {"phase": "Completed", "version": 1}})
        .to_string()
        .as_bytes(),
    );
    bucket.put("backups/huge/huge.tar.gz", &tarball);

    // What a server killed mid-restore left (world-readable, as before), next to what is not
    // ours: a file and a directory of someone else's.
    let scratch = cluster.dir.path().join("scratch");
    let stale = scratch.join("lifeboat-restore-k1Ll3d");
    let stale_secret = stale.join("contents/resources/secrets/namespaces/shop");
    fs::create_dir_all(&stale_secret).expect("create a stale scratch directory");
    fs::write(stale_secret.join("db.json"), "{}").expect("write a stale object");
    fs::write(scratch.join("notes.txt"), "keep").expect("write an unrelated file");
    fs::create_dir(scratch.join("restore-cache")).expect("create an unrelated directory");

    let scratch_arg = scratch.display().to_string();
    cluster.start_server_with(&[
        "--scratch-dir",
        &scratch_arg,
        "--restore-max-object-size",
        "16Mi",
    ]);
    assert!(
        !stale.exists(),
        "the stale scratch directory is still there"
    );
    assert!(scratch.join("notes.txt").is_file());
    assert!(scratch.join("restore-cache").is_dir());

    wait_for("the backup to be synced", Duration::from_secs(60), || {
        cluster
            .velero_object("backups", "huge")
            .filter(|b| b["status"]["phase"] == "Completed")
    });
    create_restore(&cluster, "huge-back", json!({"backupName": "huge"}));
    let r = restore_ended(&cluster, "huge-back", Duration::from_secs(60));
    assert_eq!(r["status"]["phase"], "Failed", "{r:#}");
    let reason = r["status"]["failureReason"].as_str().unwrap_or_default();
    for part in [
        "backup huge",
        "resources/configmaps/namespaces/shop/big.json (256 MiB)",
        "16 MiB",
        "--restore-max-object-size",
    ] {
        assert!(reason.contains(part), "{part:?} is not in: {reason}");
    }
    assert!(
        get(&cluster, "v1", "namespaces", None, "shop").is_none(),
        "the namespace before the object was restored"
    );
    let peak_kib = cluster.server_peak_rss_kib();
    println!("server peak RSS: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib * 1024 < OBJECT / 2,
        "the server's peak RSS was {} MiB for a {} MiB object",
        peak_kib / 1024,
        OBJECT >> 20
    );
    let left: Vec<_> = fs::read_dir(&scratch)
        .expect("read the scratch directory")
        .map(|e| e.expect("an entry").file_name())
        .filter(|n| n.to_string_lossy().starts_with("lifeboat-restore-"))
        .collect();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
}

#[test]
fn a_server_killed_mid_restore_fails_its_volumes_and_their_pods_stop_waiting() {
    let bucket = tempfile::tempdir().expect("a bucket directory");
    let mut cluster = Cluster::running(Storage::Directory(bucket.path().to_owned()), &["node-1"]);
    let uid = shop_db_pod(&cluster);
    // Enough data that the volume's restore is still running when the test acts.
    let data = volume_dir(&cluster, "node-1", &uid, EMPTY_DIR, "data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    for i in 0..8 {
        fs::write(
            data.join(format!("f{i}")),
            lifeboat_tests::tree::random(&mut rng, 8 << 20),
        )
        .expect("write data");
    }
    let b = backup(&cluster, "nightly", &["--include-namespaces", "shop"]);
    assert_eq!(b["status"]["phase"], "Completed", "{b:#}");
    cluster
        .api
        .delete_object("v1", "namespaces", None, "shop")
        .expect("delete the namespace");
    fs::remove_dir_all(cluster.host_pods("node-1").join(&uid)).expect("the pod's directory goes");

    cluster
        .lifeboat(["restore", "create", "back", "--from-backup", "nightly"])
        .ok();
    let started = Kubelet {
        cluster: &cluster,
        node: "node-1",
    }
    .start("shop", "db-0");
    wait_for(
        "the volume to be handed out",
        Duration::from_secs(30),
        || {
            let pvrs = volume_restores(&cluster, "back");
            pvrs.iter()
                .any(|p| p["status"]["phase"] == "InProgress")
                .then_some(())
        },
    );
    // The agent holds still mid-restore, and the server dies.
    cluster.freeze_agent("node-1", true);
    cluster.kill_server();
    cluster.start_server();
    cluster.freeze_agent("node-1", false);

    let restore = restore_ended(&cluster, "back", Duration::from_secs(60));
    assert_eq!(restore["status"]["phase"], "Failed", "{restore:#}");
    let pvr = wait_for("the volume to fail", Duration::from_secs(30), || {
        volume_restores(&cluster, "back")
            .into_iter()
            .find(|p| p["status"]["phase"] == "Failed")
    });
    let reason = pvr["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("the server stopped"), "{reason}");
    // The pod stops waiting, saying why: the agent, which had the job when its session
    // broke, marks it cancelled; the server marks it again through the agent's new session.
    let out = started.wait(Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "the helper let the pod start over no data"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the server stopped") || said.contains("the restore was cancelled"),
        "{said}"
    );
}
