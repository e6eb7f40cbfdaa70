//! The API server stand-in, driven only through kube's real client and runtime: what the
//! controllers and the CLI rely on must behave as on a real cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{Expression, Object, Selector};
use kube::discovery::{Discovery, Scope};
use kube::runtime::controller::Action;
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{Controller, finalizer, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use lifeboat_tests::ApiServer;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long any single wait for the server or a controller may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (ApiServer, Client) {
    let server = ApiServer::start().expect("the stand-in starts");
    let client = server.client().await.expect("a client for the stand-in");
    (server, client)
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    }
}

/// The HTTP code of the `kube::Error::Api` a call failed with.
fn code<T: Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names<K: kube::Resource>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    let mut names: Vec<String> = items.into_iter().map(|o| o.name_any()).collect();
    names.sort();
    names
}

/// The next item of a stream, failing the test if it takes longer than `WAIT`.
async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the stream yields in time")
        .expect("the stream has not ended")
}

/// Waits until `name` satisfies `condition`, driven by a watch (no polling).
async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    condition: impl kube::runtime::wait::Condition<K>,
) -> Option<K>
where
    K: Clone + Debug + Send + serde::de::DeserializeOwned + kube::Resource + 'static,
{
    tokio::time::timeout(WAIT, await_condition(api.clone(), name, condition))
        .await
        .expect("the condition holds in time")
        .expect("the watch works")
}

#[tokio::test]
async fn typed_create_get_replace_delete_and_their_errors() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let created = api.create(&pp, &config_map("a", &[])).await.unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.uid.as_ref().map(String::len), Some(36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(code(api.create(&pp, &config_map("a", &[])).await), 409);
    assert_eq!(code(api.get("missing").await), 404);

    let got = api.get("a").await.unwrap();
    assert_eq!(got, created);
    let mut changed = got.clone();
    changed.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
    let replaced = api.replace("a", &pp, &changed).await.unwrap();
    assert_eq!(replaced.data, changed.data);
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // `changed` still carries the old resourceVersion: a stale write.
    assert_eq!(code(api.replace("a", &pp, &changed).await), 409);
    changed.metadata.resource_version = None;
    changed.data = Some(BTreeMap::from([("k".to_string(), "x".to_string())]));
    assert_eq!(
        api.replace("a", &pp, &changed).await.unwrap().data,
        changed.data
    );
    assert_eq!(
        code(api.replace("nope", &pp, &config_map("nope", &[])).await),
        404
    );

    assert_eq!(code(api.create(&pp, &ConfigMap::default()).await), 422);
    assert_eq!(
        code(api.create(&pp, &config_map("Upper_Case", &[])).await),
        422
    );
    assert_eq!(
        code(
            api.create(&pp, &config_map("bad-label", &[("k", "has space")]))
                .await
        ),
        422
    );
    let generated = ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some("gen-".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let generated = api.create(&pp, &generated).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    assert_eq!(
        code(elsewhere.create(&pp, &config_map("a", &[])).await),
        404
    );
    let mut wrong_namespace = config_map("b", &[]);
    wrong_namespace.metadata.namespace = Some("kube-system".into());
    assert_eq!(code(api.create(&pp, &wrong_namespace).await), 400);
    let mut with_rv = config_map("c", &[]);
    with_rv.metadata.resource_version = Some("5".into());
    assert_eq!(code(api.create(&pp, &with_rv).await), 500);

    assert!(
        server
            .get("v1", "configmaps", Some("default"), "a")
            .is_some()
    );
    let deleted = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().map(|cm| cm.name_any()).as_deref(), Some("a"));
    assert_eq!(code(api.get("a").await), 404);
    assert_eq!(code(api.delete("a", &DeleteParams::default()).await), 404);
    assert!(
        server
            .get("v1", "configmaps", Some("default"), "a")
            .is_none()
    );

    let unknown = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nope.example.com", "v1", "Nope"),
        "nopes",
    );
    let unknown: Api<DynamicObject> = Api::all_with(client.clone(), &unknown);
    assert_eq!(code(unknown.list(&ListParams::default()).await), 404);
    let put_collection = axum::http::Request::put("/api/v1/namespaces/default/configmaps")
        .body(b"{}".to_vec())
        .unwrap();
    assert_eq!(code(client.request_text(put_collection).await), 405);
    let nonsense = axum::http::Request::get("/nonsense")
        .body(Vec::new())
        .unwrap();
    assert_eq!(code(client.request_text(nonsense).await), 404);
    let namespaces: Api<Namespace> = Api::all(client);
    assert_eq!(
        names(namespaces.list(&ListParams::default()).await.unwrap()),
        ["default", "kube-public", "kube-system"]
    );
}

#[tokio::test]
async fn status_subresource_and_generation_rules_on_a_deployment() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
        "status": {"replicas": 5},
    }))
    .unwrap();
    let created = api
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.status, None,
        "create ignores status for kinds with a status subresource"
    );

    let status = Patch::Merge(json!({"status": {"replicas": 1, "observedGeneration": 1}}));
    let with_status = api
        .patch_status("web", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(
        with_status.status.as_ref().and_then(|s| s.replicas),
        Some(1)
    );
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );

    let scaled = Patch::Merge(json!({"spec": {"replicas": 3}}));
    let scaled = api
        .patch("web", &PatchParams::default(), &scaled)
        .await
        .unwrap();
    assert_eq!(
        scaled.metadata.generation,
        Some(2),
        "spec changes bump the generation"
    );
    assert_eq!(scaled.status.as_ref().and_then(|s| s.replicas), Some(1));

    let mut status_via_main = scaled.clone();
    status_via_main.status.as_mut().unwrap().replicas = Some(9);
    let unchanged = api
        .replace("web", &PostParams::default(), &status_via_main)
        .await
        .unwrap();
    assert_eq!(
        unchanged.status.as_ref().and_then(|s| s.replicas),
        Some(1),
        "the main endpoint ignores status"
    );
    assert_eq!(
        unchanged.metadata.resource_version, scaled.metadata.resource_version,
        "a write that changes nothing is not stored"
    );

    let mut spec_via_status = unchanged.clone();
    spec_via_status.spec.as_mut().unwrap().replicas = Some(7);
    spec_via_status.status.as_mut().unwrap().replicas = Some(2);
    let after = api
        .replace_status("web", &PostParams::default(), &spec_via_status)
        .await
        .unwrap();
    assert_eq!(
        after.spec.as_ref().and_then(|s| s.replicas),
        Some(3),
        "/status ignores spec"
    );
    assert_eq!(after.status.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(after.metadata.generation, Some(2));

    let labelled = Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}}));
    let labelled = api
        .patch("web", &PatchParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata changes keep the generation"
    );
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &config_map(&format!("cm-{i}"), &[]))
            .await
            .unwrap();
    }
    let mut params = ListParams::default().limit(2);
    let mut pages = Vec::new();
    let mut list_rvs = BTreeSet::new();
    loop {
        let page = api.list(&params).await.unwrap();
        list_rvs.insert(page.metadata.resource_version.clone().unwrap());
        pages.push(names(page.items));
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
        if pages.len() == 1 {
            // A write between pages neither breaks the token nor moves the list's RV.
            api.create(&PostParams::default(), &config_map("late", &[]))
                .await
                .unwrap();
        }
    }
    assert_eq!(
        pages,
        [
            vec!["cm-0", "cm-1"],
            vec!["cm-2", "cm-3"],
            vec!["cm-4", "late"]
        ]
    );
    assert_eq!(
        list_rvs.len(),
        1,
        "every page reports the first page's resourceVersion"
    );
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 6);
    assert_eq!(all.metadata.continue_, None);
}

#[tokio::test]
async fn label_selectors_of_every_form() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let objects = [
        config_map("a", &[("app", "web"), ("tier", "front")]),
        config_map("b", &[("app", "web"), ("tier", "back")]),
        config_map("c", &[("app", "db")]),
        config_map("d", &[]),
    ];
    for object in &objects {
        api.create(&PostParams::default(), object).await.unwrap();
    }
    let select = |selector: &'static str| {
        let api = api.clone();
        async move {
            names(
                api.list(&ListParams::default().labels(selector))
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(select("app=web").await, ["a", "b"]);
    assert_eq!(select("app==web").await, ["a", "b"]);
    assert_eq!(select("app!=web").await, ["c", "d"]);
    assert_eq!(select("app in (web, db)").await, ["a", "b", "c"]);
    assert_eq!(select("app notin (web)").await, ["c", "d"]);
    assert_eq!(select("tier").await, ["a", "b"]);
    assert_eq!(select("!tier").await, ["c", "d"]);
    assert_eq!(select("app=web,tier!=front").await, ["b"]);
    assert_eq!(
        select("app in (web),tier notin (back),!missing").await,
        ["a"]
    );
    let typed = Selector::from_iter([
        Expression::In("app".into(), ["web".into(), "db".into()].into()),
        Expression::DoesNotExist("tier".into()),
    ]);
    let typed = api
        .list(&ListParams::default().labels_from(&typed))
        .await
        .unwrap();
    assert_eq!(names(typed), ["c"]);
    assert_eq!(
        code(api.list(&ListParams::default().labels("app in web")).await),
        400
    );
}

#[tokio::test]
async fn field_selectors_and_delete_collection() {
    let (_server, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let other = Namespace {
        metadata: ObjectMeta {
            name: Some("other".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let other = namespaces
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    assert_eq!(
        other.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    for (namespace, name, node) in [
        ("default", "p1", "a"),
        ("default", "p2", "b"),
        ("other", "p3", "a"),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"node": node}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        }))
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let default_pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = Patch::Merge(json!({"status": {"phase": "Running"}}));
    default_pods
        .patch_status("p1", &PatchParams::default(), &running)
        .await
        .unwrap();

    let all: Api<Pod> = Api::all(client.clone());
    let select = |api: &Api<Pod>, selector: &'static str| {
        let api = api.clone();
        async move {
            names(
                api.list(&ListParams::default().fields(selector))
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(
        select(&all, "").await,
        ["p1", "p2", "p3"],
        "a namespaced kind listed without a namespace"
    );
    assert_eq!(select(&all, "spec.nodeName=a").await, ["p1", "p3"]);
    assert_eq!(select(&all, "metadata.namespace=other").await, ["p3"]);
    assert_eq!(select(&all, "metadata.name==p2").await, ["p2"]);
    assert_eq!(select(&all, "status.phase=Running").await, ["p1"]);
    assert_eq!(
        select(&all, "status.phase=Pending").await,
        ["p2", "p3"],
        "pods start Pending"
    );
    assert_eq!(select(&default_pods, "spec.nodeName!=a").await, ["p2"]);
    assert_eq!(
        select(&all, "spec.nodeName=a,metadata.namespace!=other").await,
        ["p1"]
    );

    let deleted = default_pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("node=a"),
        )
        .await
        .unwrap();
    assert_eq!(names(deleted.left().unwrap()), ["p1"]);
    assert_eq!(select(&all, "").await, ["p2", "p3"]);
}

#[tokio::test]
async fn watcher_sees_changes_and_relists_after_compaction() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("before", &[]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();

    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    match next(&mut events).await.unwrap() {
        watcher::Event::InitApply(cm) => assert_eq!(cm.name_any(), "before"),
        other => panic!("expected InitApply, got {other:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));

    api.create(&PostParams::default(), &config_map("live", &[]))
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.name_any(), "live"),
        other => panic!("expected Apply, got {other:?}"),
    }
    api.delete("live", &DeleteParams::default()).await.unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Delete(cm) => assert_eq!(cm.name_any(), "live"),
        other => panic!("expected Delete, got {other:?}"),
    }

    server.compact();
    match next(&mut events).await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected the watch to end with 410 Expired, got {other:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    match next(&mut events).await.unwrap() {
        watcher::Event::InitApply(cm) => assert_eq!(cm.name_any(), "before"),
        other => panic!("expected InitApply after the relist, got {other:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));
    let lists = server
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /api/v1/namespaces/default/configmaps?") && !r.contains("watch=true")
        })
        .count();
    assert_eq!(lists, 2, "one list at the start, one after the 410");
}

#[tokio::test]
async fn watcher_streaming_list_gets_initial_events_then_a_bookmark() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitApply(_)
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));
    api.create(&PostParams::default(), &config_map("two", &[]))
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.name_any(), "two"),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn raw_watch_resumes_sends_bookmarks_times_out_and_expires() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &config_map("w", &[]))
        .await
        .unwrap();
    let from = created.resource_version().unwrap();
    let patch = Patch::Merge(json!({"data": {"k": "changed"}}));
    let changed = api
        .patch("w", &PatchParams::default(), &patch)
        .await
        .unwrap();

    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &from)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Modified(cm) => assert_eq!(cm.resource_version(), changed.resource_version()),
        other => panic!("expected the MODIFIED after {from} from the history, got {other:?}"),
    }
    match next(&mut stream).await.unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(
            Some(b.metadata.resource_version),
            changed.resource_version()
        ),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let rest: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the watch times out");
    assert!(
        rest.iter()
            .all(|e| matches!(e, Ok(WatchEvent::Bookmark(_)))),
        "{rest:?}"
    );

    let mut from_zero = api
        .watch(&WatchParams::default().timeout(2), "0")
        .await
        .unwrap()
        .boxed();
    match next(&mut from_zero).await.unwrap() {
        WatchEvent::Added(cm) => assert_eq!(cm.data, changed.data),
        other => panic!("expected a synthetic ADDED, got {other:?}"),
    }

    server.compact();
    let mut expired = api
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    match next(&mut expired).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, expired.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn reflector_store_fills_and_follows() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let mut events = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().labels("app=r")),
    )
    .boxed();
    for name in ["r-1", "r-2", "r-3"] {
        api.create(&PostParams::default(), &config_map(name, &[("app", "r")]))
            .await
            .unwrap();
    }
    api.create(
        &PostParams::default(),
        &config_map("other", &[("app", "x")]),
    )
    .await
    .unwrap();
    while reader.state().len() < 3 {
        next(&mut events).await.unwrap();
    }
    api.delete("r-2", &DeleteParams::default()).await.unwrap();
    while reader.state().len() > 2 {
        next(&mut events).await.unwrap();
    }
    assert_eq!(
        names(reader.state().iter().map(|cm| (**cm).clone())),
        ["r-1", "r-3"]
    );
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct WidgetSpec {
    size: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct WidgetStatus {
    observed_generation: i64,
    size: i64,
}

type Widget = Object<WidgetSpec, WidgetStatus>;

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}},
            }],
        },
    }))
    .expect("the CRD is well formed")
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

struct WidgetContext {
    client: Client,
    reconciles: AtomicUsize,
}

async fn reconcile_widget(
    widget: Arc<Widget>,
    ctx: Arc<WidgetContext>,
) -> Result<Action, kube::Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let api: Api<Widget> = Api::namespaced_with(
        ctx.client.clone(),
        &widget.namespace().expect("widgets are namespaced"),
        &widget_resource(),
    );
    let status = json!({"status": {
        "observedGeneration": widget.metadata.generation.expect("the server sets the generation"),
        "size": widget.spec.size,
    }});
    api.patch_status(
        &widget.name_any(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await?;
    Ok(Action::await_change())
}

fn retry<K>(_: Arc<K>, error: &kube::Error, _: Arc<WidgetContext>) -> Action {
    panic!("reconcile failed: {error}");
}

#[tokio::test]
async fn controller_reconciles_a_custom_resource() {
    let (_server, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd())
        .await
        .unwrap();
    wait_for(
        &crds,
        "widgets.example.com",
        conditions::is_crd_established(),
    )
    .await;

    let ar = widget_resource();
    let widgets: Api<Widget> = Api::namespaced_with(client.clone(), "default", &ar);
    let ctx = Arc::new(WidgetContext {
        client: client.clone(),
        reconciles: AtomicUsize::new(0),
    });
    let controller = Controller::new_with(widgets.clone(), watcher::Config::default(), ar.clone())
        .run(reconcile_widget, retry, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let controller = tokio::spawn(controller);

    widgets
        .create(
            &PostParams::default(),
            &Widget::new("w1", &ar, WidgetSpec { size: 1 }),
        )
        .await
        .unwrap();
    let observed = |generation: i64| {
        move |w: Option<&Widget>| {
            w.and_then(|w| w.status.as_ref())
                .is_some_and(|s| s.observed_generation == generation)
        }
    };
    let seen = wait_for(&widgets, "w1", observed(1)).await.unwrap();
    assert_eq!(
        seen.metadata.generation,
        Some(1),
        "the status write kept the generation"
    );
    assert_eq!(
        seen.status,
        Some(WidgetStatus {
            observed_generation: 1,
            size: 1
        })
    );

    let grow = Patch::Merge(json!({"spec": {"size": 2}}));
    let grown = widgets
        .patch("w1", &PatchParams::default(), &grow)
        .await
        .unwrap();
    assert_eq!(
        grown.metadata.generation,
        Some(2),
        "the spec change bumped the generation"
    );
    let seen = wait_for(&widgets, "w1", observed(2)).await.unwrap();
    assert_eq!(seen.metadata.generation, Some(2));
    assert_eq!(
        seen.status,
        Some(WidgetStatus {
            observed_generation: 2,
            size: 2
        })
    );

    let mut forged = seen.clone();
    forged.status = Some(WidgetStatus {
        observed_generation: 99,
        size: 99,
    });
    let kept = widgets
        .replace("w1", &PostParams::default(), &forged)
        .await
        .unwrap();
    assert_eq!(kept.status, seen.status, "the main endpoint ignores status");
    assert!(ctx.reconciles.load(Ordering::SeqCst) >= 2);
    controller.abort();
}

#[tokio::test]
async fn finalizer_helper_adds_then_removes_its_finalizer_across_a_delete() {
    const FINALIZER: &str = "example.com/cleanup";
    struct Ctx {
        client: Client,
        cleanups: AtomicUsize,
    }
    async fn reconcile(
        cm: Arc<ConfigMap>,
        ctx: Arc<Ctx>,
    ) -> Result<Action, finalizer::Error<std::convert::Infallible>> {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &cm.namespace().unwrap());
        finalizer(&api, FINALIZER, cm, |event| async move {
            if let finalizer::Event::Cleanup(_) = event {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Action::await_change())
        })
        .await
    }
    fn error_policy(
        _: Arc<ConfigMap>,
        error: &finalizer::Error<std::convert::Infallible>,
        _: Arc<Ctx>,
    ) -> Action {
        panic!("reconcile failed: {error}");
    }

    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let controller = tokio::spawn(controller);

    let created = api
        .create(&PostParams::default(), &config_map("guarded", &[]))
        .await
        .unwrap();
    let has_finalizer =
        |cm: Option<&ConfigMap>| cm.is_some_and(|cm| cm.finalizers() == [FINALIZER]);
    wait_for(&api, "guarded", has_finalizer).await;

    let deleting = api
        .delete("guarded", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = deleting
        .left()
        .expect("the object comes back while finalizers remain");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    wait_for(
        &api,
        "guarded",
        conditions::is_deleted(&created.uid().unwrap()),
    )
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    assert!(
        server
            .get("v1", "configmaps", Some("default"), "guarded")
            .is_none()
    );
    controller.abort();
}

#[tokio::test]
async fn json_patch_test_operation_semantics() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("j", &[]))
        .await
        .unwrap();
    let json_patch = |ops: Value| Patch::Json::<()>(serde_json::from_value(ops).unwrap());
    let pp = PatchParams::default();

    let add_first = json_patch(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["a"]},
    ]));
    let patched = api.patch("j", &pp, &add_first).await.unwrap();
    assert_eq!(
        patched.finalizers(),
        ["a"],
        "a test of null passes on an absent path"
    );
    assert_eq!(
        code(api.patch("j", &pp, &add_first).await),
        422,
        "and fails once the path exists"
    );

    let remove = json_patch(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "a"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]));
    let patched = api.patch("j", &pp, &remove).await.unwrap();
    assert!(patched.finalizers().is_empty());
    assert_eq!(
        patched.metadata.finalizers, None,
        "an emptied list is dropped, as a real server does"
    );

    let wrong = json_patch(json!([{"op": "test", "path": "/data/k", "value": "wrong"}]));
    assert_eq!(code(api.patch("j", &pp, &wrong).await), 422);
    let ops = json_patch(json!([
        {"op": "replace", "path": "/data/k", "value": "r"},
        {"op": "copy", "from": "/data/k", "path": "/data/c"},
        {"op": "move", "from": "/data/c", "path": "/data/m"},
    ]));
    let patched = api.patch("j", &pp, &ops).await.unwrap();
    let expected = BTreeMap::from([
        ("k".to_string(), "r".to_string()),
        ("m".to_string(), "r".to_string()),
    ]);
    assert_eq!(patched.data, Some(expected));
}

#[tokio::test]
async fn apply_patch_creates_then_updates() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PatchParams::apply("x").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}});
    let created = api
        .patch("applied", &pp, &Patch::Apply(&first))
        .await
        .unwrap();
    assert_eq!(
        created.data,
        Some(BTreeMap::from([("a".to_string(), "1".to_string())]))
    );
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "2", "b": "3"}});
    let updated = api
        .patch("applied", &pp, &Patch::Apply(&second))
        .await
        .unwrap();
    assert_eq!(updated.uid(), created.uid());
    assert_eq!(updated.data.as_ref().map(|d| d.len()), Some(2));
    assert_eq!(
        updated
            .data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("2")
    );

    // kube sends JSON, which is YAML; the server also takes YAML proper.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  y: \"1\"\n";
    let request = axum::http::Request::patch(
        "/api/v1/namespaces/default/configmaps/from-yaml?fieldManager=x&force=true",
    )
    .header("content-type", "application/apply-patch+yaml")
    .body(yaml.as_bytes().to_vec())
    .unwrap();
    let from_yaml: ConfigMap = client.request(request).await.unwrap();
    assert_eq!(
        from_yaml.data,
        Some(BTreeMap::from([("y".to_string(), "1".to_string())]))
    );
}

#[tokio::test]
async fn discovery_finds_a_new_crd_and_dynamic_objects_follow_it() {
    let (server, client) = start().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(!discovery.has_group("example.org"));
    let (deployments, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .unwrap();
    assert_eq!(deployments.plural, "deployments");
    // An aggregated-discovery Accept header gets the plain document.
    let aggregated = axum::http::Request::get("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let groups: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList =
        client.request(aggregated).await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "apps"));
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.33.0");

    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "gadgets.example.org"},
        "spec": {
            "group": "example.org",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "scope": "Cluster",
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false},
                {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
            ],
        },
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .get("example.org")
        .expect("the new group is discovered");
    assert_eq!(group.preferred_version_or_latest(), "v1");
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.org", "v1", "Gadget"))
        .unwrap();
    assert_eq!(
        (ar.plural.as_str(), caps.scope.clone()),
        ("gadgets", Scope::Cluster)
    );
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "status")
    );

    let gadgets: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let gadget = DynamicObject::new("g1", &ar).data(json!({"spec": {"x": 1}}));
    gadgets
        .create(&PostParams::default(), &gadget)
        .await
        .unwrap();
    let (beta, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.org", "v1beta1", "Gadget"))
        .unwrap();
    let via_beta: Api<DynamicObject> = Api::all_with(client.clone(), &beta);
    let got = via_beta.get("g1").await.unwrap();
    assert_eq!(got.types.unwrap().api_version, "example.org/v1beta1");
    assert_eq!(got.data["spec"]["x"], 1);

    crds.delete("gadgets.example.org", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(code(gadgets.list(&ListParams::default()).await), 404);
    assert!(
        server
            .get("example.org/v1", "gadgets", None, "g1")
            .is_none()
    );
    let discovery = Discovery::new(client).run().await.unwrap();
    assert!(!discovery.has_group("example.org"));
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let (_server, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let doomed = Namespace {
        metadata: ObjectMeta {
            name: Some("doomed".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &doomed)
        .await
        .unwrap();
    let inside: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let kept: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    inside
        .create(&PostParams::default(), &config_map("plain", &[]))
        .await
        .unwrap();
    let mut held = config_map("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    inside.create(&PostParams::default(), &held).await.unwrap();
    kept.create(&PostParams::default(), &config_map("plain", &[]))
        .await
        .unwrap();

    let protected = namespaces.delete("default", &DeleteParams::default()).await;
    assert_eq!(code(protected), 403);
    let terminating = namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = terminating.left().unwrap();
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(code(inside.get("plain").await), 404);
    assert!(
        inside
            .get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert_eq!(
        code(
            inside
                .create(&PostParams::default(), &config_map("new", &[]))
                .await
        ),
        403
    );
    assert!(
        kept.get("plain").await.is_ok(),
        "other namespaces are untouched"
    );

    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    inside
        .patch("held", &PatchParams::default(), &release)
        .await
        .unwrap();
    assert_eq!(code(inside.get("held").await), 404);
    assert_eq!(
        code(namespaces.get("doomed").await),
        404,
        "the emptied namespace goes too"
    );
}

#[tokio::test]
async fn kubeconfig_reaches_the_server() {
    let server = ApiServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
    let client = Client::try_from(config).unwrap();
    assert_eq!(client.default_namespace(), "default");
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &config_map("via-kubeconfig", &[]))
        .await
        .unwrap();
    assert!(
        server
            .get("v1", "configmaps", Some("default"), "via-kubeconfig")
            .is_some()
    );

    let seeded = server
        .put_object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "seeded", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running"},
        }))
        .unwrap();
    assert_eq!(seeded["status"]["phase"], "Running", "seeding keeps status");
    assert_eq!(seeded["metadata"]["generation"], 1);
}

#[tokio::test]
async fn latency_knobs_slow_lists_and_chosen_requests_and_hold_watch_events_back() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let delay = Duration::from_millis(300);

    // Lists wait; a get does not (it would take a minute if it did).
    server.set_list_latency(delay);
    let started = std::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= delay);
    server.set_list_latency(Duration::from_secs(60));
    tokio::time::timeout(WAIT, api.get("a"))
        .await
        .expect("a get is not a list")
        .unwrap();
    server.set_list_latency(Duration::ZERO);

    // A request named by its method and path prefix waits; others do not.
    server.set_request_latency("POST /api/v1/namespaces/default/configmaps", delay);
    let started = std::time::Instant::now();
    api.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    assert!(started.elapsed() >= delay);
    server.set_request_latency(
        "GET /api/v1/namespaces/default/configmaps/b",
        Duration::from_secs(60),
    );
    tokio::time::timeout(WAIT, api.get("a"))
        .await
        .expect("another path is not delayed")
        .unwrap();
    for prefix in [
        "POST /api/v1/namespaces/default/configmaps",
        "GET /api/v1/namespaces/default/configmaps/b",
    ] {
        server.set_request_latency(prefix, Duration::ZERO);
    }

    // A watch sends an event no sooner than the delay after its write.
    let current = api.get("b").await.unwrap().resource_version().unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &current)
        .await
        .unwrap()
        .boxed();
    server.set_watch_delay(delay);
    let written = std::time::Instant::now();
    api.create(&PostParams::default(), &config_map("c", &[]))
        .await
        .unwrap();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Added(cm) => assert_eq!(cm.name_any(), "c"),
        other => panic!("expected the ADDED of c, got {other:?}"),
    }
    assert!(written.elapsed() >= delay);
}

/// Namespace `ns` with ServiceAccount `agent` and pod `p1` running as it on node `n1`; the
/// pod's UID.
async fn account_and_pod(client: &Client) -> String {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("ns".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the namespace");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), "ns")
        .create(&PostParams::default(), &account)
        .await
        .expect("create the account");
    create_pod(client, "p1", "agent").await
}

/// Pod `name` in `ns` running as `account` on node `n1`; its UID.
async fn create_pod(client: &Client, name: &str, account: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": account,
            "nodeName": "n1",
            "containers": [{"name": "c", "image": "i"}],
        },
    }))
    .expect("a pod");
    Api::<Pod>::namespaced(client.clone(), "ns")
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the pod")
        .metadata
        .uid
        .expect("a uid")
}

fn token_request(
    audiences: &[&str],
    seconds: i64,
    pod: Option<(&str, &str)>,
) -> k8s_openapi::api::authentication::v1::TokenRequest {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: Some(seconds),
            bound_object_ref: pod.map(|(name, uid)| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
            }),
        },
        ..TokenRequest::default()
    }
}

async fn request_token(
    client: &Client,
    account: &str,
    request: &k8s_openapi::api::authentication::v1::TokenRequest,
) -> Result<k8s_openapi::api::authentication::v1::TokenRequest, kube::Error> {
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "ns")
        .create_subresource("token", account, &PostParams::default(), request)
        .await
}

async fn review(
    client: &Client,
    token: &str,
    audiences: &[&str],
) -> k8s_openapi::api::authentication::v1::TokenReviewStatus {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        },
        ..TokenReview::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a review is answered")
        .status
        .expect("a review has a status")
}

#[tokio::test]
async fn a_token_request_binds_a_token_to_a_pod_of_its_account_and_a_review_names_the_pod() {
    let (_server, client) = start().await;
    let uid = account_and_pod(&client).await;
    create_pod(&client, "other-account", "default").await;

    // What a real server refuses.
    let bound = |pod| token_request(&["lifeboat"], 3600, Some(pod));
    assert_eq!(
        code(request_token(&client, "nobody", &bound(("p1", &uid))).await),
        404
    );
    assert_eq!(
        code(request_token(&client, "agent", &bound(("missing", &uid))).await),
        404
    );
    assert_eq!(
        code(request_token(&client, "agent", &bound(("p1", "another-uid"))).await),
        409
    );
    assert_eq!(
        code(request_token(&client, "agent", &bound(("other-account", ""))).await),
        400
    );
    assert_eq!(
        code(request_token(&client, "agent", &token_request(&["lifeboat"], 60, None)).await),
        422
    );

    let issued = request_token(&client, "agent", &bound(("p1", &uid)))
        .await
        .expect("a token for the pod");
    let status = issued.status.expect("a status");
    assert!(!status.token.is_empty());
    let lifetime =
        status.expiration_timestamp.0.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
    assert!((3500..=3600).contains(&lifetime), "{lifetime}");
    assert_eq!(issued.spec.audiences, ["lifeboat"]);

    let reviewed = review(&client, &status.token, &["lifeboat"]).await;
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    assert_eq!(reviewed.audiences, Some(vec!["lifeboat".to_string()]));
    let user = reviewed.user.expect("a user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:ns:agent")
    );
    let account =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "ns")
            .get("agent")
            .await
            .expect("the account");
    assert_eq!(user.uid, account.metadata.uid);
    assert!(
        user.groups
            .unwrap_or_default()
            .contains(&"system:serviceaccounts:ns".to_string())
    );
    let extra = user.extra.expect("extras");
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], ["p1"]);
    assert_eq!(extra["authentication.kubernetes.io/pod-uid"], [uid]);
    assert_eq!(extra["authentication.kubernetes.io/node-name"], ["n1"]);

    // Unbound tokens default to the API server's audience and carry no pod.
    let unbound = request_token(&client, "agent", &token_request(&[], 3600, None))
        .await
        .expect("an unbound token")
        .status
        .expect("a status")
        .token;
    let reviewed = review(&client, &unbound, &[]).await;
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    let extra = reviewed.user.and_then(|u| u.extra).unwrap_or_default();
    assert!(!extra.contains_key("authentication.kubernetes.io/pod-name"));
}

#[tokio::test]
async fn a_review_refuses_unknown_foreign_audience_orphaned_and_expired_tokens() {
    let (server, client) = start().await;
    let uid = account_and_pod(&client).await;
    let mint = |pod: &'static str, uid: String| {
        let client = client.clone();
        async move {
            request_token(
                &client,
                "agent",
                &token_request(&["lifeboat"], 3600, Some((pod, &uid))),
            )
            .await
            .expect("a token")
            .status
            .expect("a status")
            .token
        }
    };
    let refused = |status: k8s_openapi::api::authentication::v1::TokenReviewStatus| {
        assert_eq!(status.authenticated, Some(false), "{status:?}");
        status.error.filter(|e| !e.is_empty()).expect("an error")
    };

    let error = refused(review(&client, "made-up", &["lifeboat"]).await);
    assert!(error.contains("unknown"), "{error}");

    let token = mint("p1", uid.clone()).await;
    let error = refused(review(&client, &token, &["other"]).await);
    assert!(error.contains("audiences"), "{error}");
    let error = refused(review(&client, &token, &[]).await);
    assert!(error.contains("audiences"), "{error}");
    assert_eq!(
        review(&client, &token, &["other", "lifeboat"])
            .await
            .audiences,
        Some(vec!["lifeboat".to_string()])
    );

    // The pod goes: its tokens go with it, and a new pod of the same name does not revive them.
    let pods = Api::<Pod>::namespaced(client.clone(), "ns");
    pods.delete("p1", &DeleteParams::default())
        .await
        .expect("delete the pod");
    let error = refused(review(&client, &token, &["lifeboat"]).await);
    assert!(error.contains("p1"), "{error}");
    let new_uid = create_pod(&client, "p1", "agent").await;
    assert_ne!(new_uid, uid);
    refused(review(&client, &token, &["lifeboat"]).await);
    let fresh = mint("p1", new_uid).await;
    assert_eq!(
        review(&client, &fresh, &["lifeboat"]).await.authenticated,
        Some(true)
    );

    // An hour later the token has expired.
    server.age_tokens(Duration::from_secs(3601));
    let error = refused(review(&client, &fresh, &["lifeboat"]).await);
    assert!(error.contains("expired"), "{error}");

    // A token of a deleted account is invalid too.
    let later = mint(
        "p1",
        pods.get("p1").await.expect("p1").uid().expect("a uid"),
    )
    .await;
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "ns")
        .delete("agent", &DeleteParams::default())
        .await
        .expect("delete the account");
    let error = refused(review(&client, &later, &["lifeboat"]).await);
    assert!(error.contains("ServiceAccount"), "{error}");
}

#[tokio::test]
async fn discovery_serves_token_reviews_and_the_token_subresource_as_create_only() {
    let (server, client) = start().await;
    let resources = |path: &str| {
        let address = server.url().trim_start_matches("http://").to_string();
        let (code, body) = lifeboat_tests::cluster::http_get(&address, &format!("/{path}"))
            .expect("the stand-in answers");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList>(
            &body,
        )
        .expect("a resource list")
        .resources
    };
    let auth = resources("apis/authentication.k8s.io/v1");
    let reviews = auth
        .iter()
        .find(|r| r.name == "tokenreviews")
        .expect("tokenreviews served");
    assert_eq!(reviews.verbs, ["create"]);
    assert!(!reviews.namespaced);
    assert_eq!(reviews.kind, "TokenReview");
    let core = resources("api/v1");
    let token = core
        .iter()
        .find(|r| r.name == "serviceaccounts/token")
        .expect("the token subresource served");
    assert_eq!(token.verbs, ["create"]);
    assert_eq!(token.kind, "TokenRequest");
    assert_eq!(token.group.as_deref(), Some("authentication.k8s.io"));
    let accounts = core
        .iter()
        .find(|r| r.name == "serviceaccounts")
        .expect("serviceaccounts served");
    assert!(accounts.verbs.contains(&"list".to_string()));

    // Reviews are not stored: there is nothing to list or get.
    let api = Api::<k8s_openapi::api::authentication::v1::TokenReview>::all(client.clone());
    assert_eq!(code(api.list(&ListParams::default()).await), 405);
}
