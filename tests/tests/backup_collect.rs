//! The backup collection walk against the API-server stand-in: a few namespaces of realistic
//! objects (deployments, services, config maps, secrets, pods, PVCs bound to PVs, a CRD and its
//! instances), backed up with several filter sets into an in-memory tarball whose exact file
//! list and JSON contents are checked; and a namespace of more objects than one page.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use flate2::read::GzDecoder;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lifeboat_server::api::BackupSpec;
use lifeboat_server::backup::{
    self, BackupFilter, CollectOptions, CollectStats, DiscoveredResources, TarballWriter,
};
use lifeboat_tests::ApiServer;
use serde_json::{Value, json};

/// (api version, kind, namespace, name, labels) of one seeded object.
type Seed = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Value,
);

/// Seeds the cluster: namespaces app-a, app-b and other; a CRD and an instance; PVs bound to
/// PVCs in app-a and app-b, and one free PV.
fn seed(server: &ApiServer) {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    });
    server
        .put_object(crd)
        .expect("the stand-in stores the object");
    let seeds: Vec<Seed> = vec![
        ("v1", "Namespace", None, "app-a", json!({"team": "a"})),
        ("v1", "Namespace", None, "app-b", json!({"team": "b"})),
        ("v1", "Namespace", None, "other", json!({})),
        (
            "apps/v1",
            "Deployment",
            Some("app-a"),
            "web",
            json!({"app": "web"}),
        ),
        ("v1", "Service", Some("app-a"), "web", json!({"app": "web"})),
        (
            "v1",
            "ConfigMap",
            Some("app-a"),
            "settings",
            json!({"app": "web"}),
        ),
        ("v1", "Secret", Some("app-a"), "creds", json!({"app": "db"})),
        ("v1", "Pod", Some("app-a"), "web-0", json!({"app": "web"})),
        (
            "v1",
            "PersistentVolumeClaim",
            Some("app-a"),
            "data",
            json!({"app": "db"}),
        ),
        (
            "example.com/v1",
            "Widget",
            Some("app-a"),
            "w1",
            json!({"app": "web"}),
        ),
        (
            "v1",
            "ConfigMap",
            Some("app-b"),
            "cfg-b",
            json!({"app": "web"}),
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            Some("app-b"),
            "logs",
            json!({"app": "db"}),
        ),
        (
            "v1",
            "ConfigMap",
            Some("app-b"),
            "skipped",
            json!({"app": "web", "velero.io/exclude-from-backup": "true"}),
        ),
        ("v1", "ConfigMap", Some("other"), "x", json!({})),
        ("v1", "PersistentVolume", None, "pv-a", json!({})),
        ("v1", "PersistentVolume", None, "pv-b", json!({})),
        (
            "v1",
            "PersistentVolume",
            None,
            "pv-free",
            json!({"app": "web"}),
        ),
    ];
    for (api_version, kind, namespace, name, labels) in seeds {
        let mut object = json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "labels": labels},
        });
        if let Some(ns) = namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        object["spec"] = spec_of(kind, name);
        if kind == "Secret" || kind == "ConfigMap" {
            object
                .as_object_mut()
                .expect("the stand-in and the writer answer")
                .remove("spec");
            object["data"] = json!({"key": "dmFsdWU="});
        }
        server
            .put_object(object)
            .expect("the stand-in stores the object");
    }
}

fn spec_of(kind: &str, name: &str) -> Value {
    match (kind, name) {
        ("Pod", _) => json!({
            "containers": [{"name": "web", "image": "nginx"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        }),
        ("PersistentVolumeClaim", "data") => json!({"volumeName": "pv-a"}),
        ("PersistentVolumeClaim", "logs") => json!({"volumeName": "pv-b"}),
        ("PersistentVolume", "pv-a") => json!({"claimRef": {"namespace": "app-a", "name": "data"}}),
        ("PersistentVolume", "pv-b") => json!({"claimRef": {"namespace": "app-b", "name": "logs"}}),
        ("Deployment", _) => json!({"replicas": 1}),
        _ => json!({}),
    }
}

/// One backup run: the tarball's entries in order, the stats, and every progress report.
struct Run {
    entries: Vec<(String, Vec<u8>)>,
    stats: CollectStats,
    progress: Vec<(usize, usize)>,
}

impl Run {
    /// The unversioned paths of the objects, sorted.
    fn objects(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| p.starts_with("resources/") && !p.contains("-preferredversion/"))
            .map(str::to_owned)
            .collect()
    }

    fn json(&self, path: &str) -> Value {
        let (_, data) = self
            .entries
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} is in the tarball"));
        serde_json::from_slice(data).expect("the stand-in and the writer answer")
    }
}

async fn discovered(server: &ApiServer) -> DiscoveredResources {
    let client = server
        .client()
        .await
        .expect("the stand-in and the writer answer");
    backup::discover(&client)
        .await
        .expect("the stand-in and the writer answer")
}

async fn run(server: &ApiServer, spec: &BackupSpec) -> Run {
    run_with(server, spec, &CollectOptions::default()).await
}

async fn run_with(server: &ApiServer, spec: &BackupSpec, options: &CollectOptions) -> Run {
    let client = server
        .client()
        .await
        .expect("the stand-in and the writer answer");
    let found = discovered(server).await;
    assert!(found.unreachable_groups.is_empty());
    assert_eq!(backup::validate(spec, &found.index), Vec::<String>::new());
    let filter = BackupFilter::new(spec, &found.index).expect("the stand-in and the writer answer");
    let mut writer =
        TarballWriter::new(Vec::new(), 1_700_000_000).expect("the stand-in and the writer answer");
    let mut progress = Vec::new();
    let stats = backup::collect(
        &client,
        &found.index,
        &filter,
        options,
        &mut writer,
        |t, b| progress.push((t, b)),
    )
    .await
    .expect("the stand-in and the writer answer");
    let bytes = writer.finish().expect("the stand-in and the writer answer");
    let mut archive = tar::Archive::new(GzDecoder::new(&bytes[..]));
    let entries = archive
        .entries()
        .expect("the stand-in and the writer answer")
        .map(|e| {
            let mut e = e.expect("the stand-in and the writer answer");
            let mut data = Vec::new();
            e.read_to_end(&mut data)
                .expect("the stand-in and the writer answer");
            (
                e.path()
                    .expect("the stand-in and the writer answer")
                    .to_string_lossy()
                    .into_owned(),
                data,
            )
        })
        .collect();
    Run {
        entries,
        stats,
        progress,
    }
}

/// Unversioned paths for `gr` objects, `ns/name` or `name`.
fn paths(gr: &str, objects: &[&str]) -> Vec<String> {
    objects
        .iter()
        .map(|o| match o.split_once('/') {
            Some((ns, name)) => format!("resources/{gr}/namespaces/{ns}/{name}.json"),
            None => format!("resources/{gr}/cluster/{o}.json"),
        })
        .collect()
}

fn set(groups: &[Vec<String>]) -> BTreeSet<String> {
    groups.iter().flatten().cloned().collect()
}

/// Every app-a object, its namespace, and what its pod and claim bring.
fn app_a() -> Vec<Vec<String>> {
    vec![
        paths("namespaces", &["app-a"]),
        paths("pods", &["app-a/web-0"]),
        paths("persistentvolumeclaims", &["app-a/data"]),
        paths("configmaps", &["app-a/settings"]),
        paths("secrets", &["app-a/creds"]),
        paths("services", &["app-a/web"]),
        paths("deployments.apps", &["app-a/web"]),
        paths("widgets.example.com", &["app-a/w1"]),
    ]
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        match_expressions: None,
    }
}

const CRD: &str = "customresourcedefinitions.apiextensions.k8s.io";

#[tokio::test]
async fn a_full_backup_takes_every_object_at_both_paths_as_the_server_returned_it() {
    let server = ApiServer::start().unwrap();
    seed(&server);
    let run = run(&server, &BackupSpec::default()).await;

    let mut expected = app_a();
    expected.extend([
        paths(
            "namespaces",
            &["app-b", "other", "default", "kube-system", "kube-public"],
        ),
        paths("persistentvolumeclaims", &["app-b/logs"]),
        paths("persistentvolumes", &["pv-a", "pv-b", "pv-free"]),
        paths("configmaps", &["app-b/cfg-b", "other/x"]),
        paths(CRD, &["widgets.example.com"]),
    ]);
    assert_eq!(run.objects(), set(&expected));

    // metadata/version first, then every object twice: versioned, then unversioned.
    assert_eq!(
        run.entries[0],
        ("metadata/version".to_owned(), b"1.1.0\n".to_vec())
    );
    assert_eq!(run.entries.len(), 1 + 2 * run.objects().len());
    for pair in run.entries[1..].chunks(2) {
        let (versioned, plain) = (&pair[0], &pair[1]);
        assert_eq!(versioned.1, plain.1);
        let rest = plain.0.strip_prefix("resources/").unwrap();
        let (gr, rest) = rest.split_once('/').unwrap();
        let expected_versioned = format!("resources/{gr}/v1-preferredversion/{rest}");
        assert_eq!(versioned.0, expected_versioned);
    }

    // Contents are the objects as the server serves them.
    for (api_version, plural, ns, name, path) in [
        (
            "apps/v1",
            "deployments",
            Some("app-a"),
            "web",
            "resources/deployments.apps/namespaces/app-a/web.json",
        ),
        (
            "v1",
            "secrets",
            Some("app-a"),
            "creds",
            "resources/secrets/namespaces/app-a/creds.json",
        ),
        (
            "v1",
            "persistentvolumes",
            None,
            "pv-a",
            "resources/persistentvolumes/cluster/pv-a.json",
        ),
        (
            "example.com/v1",
            "widgets",
            Some("app-a"),
            "w1",
            "resources/widgets.example.com/namespaces/app-a/w1.json",
        ),
    ] {
        let stored = server.get(api_version, plural, ns, name).unwrap();
        assert_eq!(run.json(path), stored, "{path}");
    }

    // The pod's claim and the claim's volume precede it (Velero's actions run first).
    let order: Vec<&str> = run.entries.iter().map(|(p, _)| p.as_str()).collect();
    let at = |p: &str| order.iter().position(|o| *o == p).unwrap();
    assert!(
        at("resources/persistentvolumes/cluster/pv-a.json")
            < at("resources/persistentvolumeclaims/namespaces/app-a/data.json")
    );
    assert!(
        at("resources/persistentvolumeclaims/namespaces/app-a/data.json")
            < at("resources/pods/namespaces/app-a/web-0.json")
    );

    // The resource list and the counts agree with the tarball.
    let list = run.stats.resource_list.entries();
    assert_eq!(
        list["v1/PersistentVolume"],
        strings(&["pv-a", "pv-b", "pv-free"])
    );
    assert_eq!(
        list["v1/ConfigMap"],
        strings(&["app-a/settings", "app-b/cfg-b", "other/x"])
    );
    assert_eq!(list["apps/v1/Deployment"], strings(&["app-a/web"]));
    assert_eq!(list["example.com/v1/Widget"], strings(&["app-a/w1"]));
    assert_eq!(run.stats.items_backed_up, run.objects().len());
    assert_eq!(run.stats.resource_list.len(), run.objects().len());
    assert_eq!(run.stats.results.errors.count(), 0);
    assert_eq!(
        run.progress.last(),
        Some(&(run.objects().len(), run.objects().len()))
    );
}

#[tokio::test]
async fn included_namespaces_take_bound_volumes_and_crds_only_when_cluster_resources_allow() {
    let server = ApiServer::start().unwrap();
    seed(&server);
    let mut spec = BackupSpec {
        included_namespaces: strings(&["app-a"]),
        ..Default::default()
    };

    // Unset: the bound PV and the CRD of the backed-up widgets come along; nothing else
    // cluster-scoped.
    let mut expected = app_a();
    expected.push(paths("persistentvolumes", &["pv-a"]));
    expected.push(paths(CRD, &["widgets.example.com"]));
    assert_eq!(run(&server, &spec).await.objects(), set(&expected));

    // False: no cluster-scoped object but the namespace.
    spec.include_cluster_resources = Some(false);
    assert_eq!(run(&server, &spec).await.objects(), set(&app_a()));

    // True: every cluster-scoped object.
    spec.include_cluster_resources = Some(true);
    let mut expected = app_a();
    expected.push(paths("persistentvolumes", &["pv-a", "pv-b", "pv-free"]));
    expected.push(paths(CRD, &["widgets.example.com"]));
    assert_eq!(run(&server, &spec).await.objects(), set(&expected));
}

#[tokio::test]
async fn excluded_resources_and_namespaces_are_left_out() {
    let server = ApiServer::start().unwrap();
    seed(&server);
    let spec = BackupSpec {
        excluded_namespaces: strings(&["other", "kube-*", "default"]),
        excluded_resources: strings(&["cm", "Secret", "crd", "pv"]),
        ..Default::default()
    };
    // Namespaces are excluded, so cluster resources are not wanted (unset, not all namespaces);
    // the CRD is excluded by resource; the PVs by resource though their claims are taken.
    let expected = set(&[
        paths("namespaces", &["app-a", "app-b"]),
        paths("pods", &["app-a/web-0"]),
        paths("persistentvolumeclaims", &["app-a/data", "app-b/logs"]),
        paths("services", &["app-a/web"]),
        paths("deployments.apps", &["app-a/web"]),
        paths("widgets.example.com", &["app-a/w1"]),
    ]);
    assert_eq!(run(&server, &spec).await.objects(), expected);
}

#[tokio::test]
async fn a_label_selector_takes_matching_objects_and_what_they_bring() {
    let server = ApiServer::start().unwrap();
    seed(&server);
    let spec = BackupSpec {
        label_selector: Some(selector("app", "web")),
        ..Default::default()
    };
    let run = run(&server, &spec).await;
    // The pod brings its claim (labelled app=db) and the claim its volume; no namespace object
    // carries the label.
    let expected = set(&[
        paths("pods", &["app-a/web-0"]),
        paths("persistentvolumeclaims", &["app-a/data"]),
        paths("persistentvolumes", &["pv-a", "pv-free"]),
        paths("configmaps", &["app-a/settings", "app-b/cfg-b"]),
        paths("services", &["app-a/web"]),
        paths("deployments.apps", &["app-a/web"]),
        paths("widgets.example.com", &["app-a/w1"]),
        paths(CRD, &["widgets.example.com"]),
    ]);
    assert_eq!(run.objects(), expected);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/configmaps?")
                && r.contains("labelSelector=app%3Dweb")),
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn or_selectors_take_the_union_once() {
    let server = ApiServer::start().unwrap();
    seed(&server);
    let spec = BackupSpec {
        or_label_selectors: vec![
            selector("app", "web"),
            selector("app", "db"),
            selector("team", "a"),
        ],
        include_cluster_resources: Some(false),
        ..Default::default()
    };
    let run = run(&server, &spec).await;
    let expected = set(&[
        paths("namespaces", &["app-a"]),
        paths("pods", &["app-a/web-0"]),
        paths("persistentvolumeclaims", &["app-a/data", "app-b/logs"]),
        paths("configmaps", &["app-a/settings", "app-b/cfg-b"]),
        paths("secrets", &["app-a/creds"]),
        paths("services", &["app-a/web"]),
        paths("deployments.apps", &["app-a/web"]),
        paths("widgets.example.com", &["app-a/w1"]),
    ]);
    assert_eq!(run.objects(), expected);
    // app-a/data is selected by app=db and brought by the pod: written once (two entries).
    assert_eq!(run.entries.len(), 1 + 2 * expected.len());
    assert_eq!(run.stats.items_backed_up, expected.len());
}

#[tokio::test]
async fn validation_names_unknown_resources_from_discovery() {
    let server = ApiServer::start().unwrap();
    seed(&server);
    let found = discovered(&server).await;
    let spec = BackupSpec {
        included_resources: strings(&["widgets", "gizmos", "deploy"]),
        ..Default::default()
    };
    assert_eq!(
        backup::validate(&spec, &found.index),
        strings(&[
            "Invalid included/excluded resource lists: the API server serves no resource named gizmos"
        ])
    );
    let filter = BackupFilter::new(&spec, &found.index).unwrap();
    assert!(filter.resources.should_include("widgets.example.com"));
    assert!(filter.resources.should_include("deployments.apps"));
}

#[tokio::test]
async fn a_namespace_larger_than_a_page_is_listed_in_pages() {
    let server = ApiServer::start().unwrap();
    server
        .put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bulk"}}))
        .unwrap();
    for i in 0..1_200 {
        server
            .put_object(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:04}"), "namespace": "bulk"},
                "data": {"i": i.to_string()},
            }))
            .unwrap();
    }
    let spec = BackupSpec {
        included_namespaces: strings(&["bulk"]),
        included_resources: strings(&["configmaps"]),
        ..Default::default()
    };
    let run = run(&server, &spec).await;
    assert_eq!(run.objects().len(), 1_200);
    assert_eq!(
        run.json("resources/configmaps/namespaces/bulk/cm-0777.json")["data"]["i"],
        "777"
    );
    let lists: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/bulk/configmaps?"))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists.iter().all(|r| r.contains("limit=500")));
    assert_eq!(lists.iter().filter(|r| r.contains("continue=")).count(), 2);
    assert_eq!(run.progress.len(), 1_200);
    assert_eq!(run.progress.last(), Some(&(1_200, 1_200)));
    assert!(run.progress.windows(2).all(|w| w[0].1 < w[1].1));
}
