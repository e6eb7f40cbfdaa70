//! HTTP: kube-apiserver's URL layout mapped onto the store. One fallback handler parses every
//! path itself, because the layout (`/api/v1/namespaces/NS/RES/NAME/status`,
//! `/apis/G/V/RES`, discovery documents) does not fit a route table well: whether
//! `namespaces/x/y` is a namespace's subresource or a collection in namespace `x` depends on `y`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::{Value, json};

use super::discovery::Resource;
use super::failure::{Failure, Result};
use super::patch::PatchKind;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Preconditions, Store, Target};
use super::token::Tokens;
use super::watch::{self, WatchOptions};

/// The largest request body accepted; far above any object a test writes.
const BODY_LIMIT: usize = 64 << 20;
/// Requests remembered for `ApiServer::requests`; the oldest half is dropped beyond this.
const REQUEST_LOG: usize = 100_000;

/// What the server's tasks share: the cluster state and the request log.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// ServiceAccount tokens issued; locked after `store` when both are held.
    tokens: Mutex<Tokens>,
    requests: Mutex<Vec<Logged>>,
    /// Added before answering each list request (see `ApiServer::set_list_latency`).
    list_latency: Mutex<Duration>,
    /// How long after a write its watch events go out (see `ApiServer::set_watch_delay`).
    watch_delay: Mutex<Duration>,
    /// Delays for requests whose `METHOD /path?query` starts with a prefix (see
    /// `ApiServer::set_request_latency`).
    request_latency: Mutex<Vec<(String, Duration)>>,
}

/// One request as the log keeps it.
#[derive(Debug, Clone)]
struct Logged {
    /// `METHOD /path?query`
    line: String,
    /// The Content-Type header, when the request had one.
    content_type: Option<String>,
    /// Whether the method changes state (anything but GET, HEAD, OPTIONS, TRACE).
    write: bool,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            store: Mutex::new(Store::new()),
            tokens: Mutex::new(Tokens::default()),
            requests: Mutex::new(Vec::new()),
            list_latency: Mutex::new(Duration::ZERO),
            watch_delay: Mutex::new(Duration::ZERO),
            request_latency: Mutex::new(Vec::new()),
        }
    }

    /// Delays requests whose `METHOD /path?query` (as `requests` logs them) starts with
    /// `prefix` by `latency` (zero: removes the delay).
    pub(crate) fn set_request_latency(&self, prefix: &str, latency: Duration) {
        let mut delays = self
            .request_latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        delays.retain(|(p, _)| p != prefix);
        if !latency.is_zero() {
            delays.push((prefix.to_owned(), latency));
        }
    }

    /// The delay of a request: the list latency for lists, plus any matching prefix's.
    fn latency(&self, method: &Method, uri: &Uri, list: bool) -> Duration {
        let line = format!("{method} {uri}");
        let prefixed: Duration = self
            .request_latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(prefix, _)| line.starts_with(prefix.as_str()))
            .map(|(_, d)| *d)
            .sum();
        if list {
            prefixed + self.list_latency()
        } else {
            prefixed
        }
    }

    /// Sets how long after a write its watch events are sent.
    pub(crate) fn set_watch_delay(&self, delay: Duration) {
        *self
            .watch_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
    }

    pub(crate) fn watch_delay(&self) -> Duration {
        *self
            .watch_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the delay added before answering each list request.
    pub(crate) fn set_list_latency(&self, latency: Duration) {
        *self
            .list_latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = latency;
    }

    fn list_latency(&self) -> Duration {
        *self
            .list_latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The store, locked. A panic while holding the lock leaves the state as the panicking
    /// write left it; serving on is better for a test than poisoning every later request.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The issued tokens (take `store` first when holding both).
    pub(crate) fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every request so far, as `METHOD /path?query`, oldest first.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.log().iter().map(|r| r.line.clone()).collect()
    }

    /// Every write so far (any method but GET, HEAD, OPTIONS and TRACE), as
    /// `METHOD /path?query content-type` (without the content type when the request had
    /// none), oldest first: how a test sees which kind of patch a client sent.
    pub(crate) fn writes(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter(|r| r.write)
            .map(|r| match &r.content_type {
                Some(content_type) => format!("{} {content_type}", r.line),
                None => r.line.clone(),
            })
            .collect()
    }

    fn log(&self) -> MutexGuard<'_, Vec<Logged>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap) {
        let logged = Logged {
            line: format!("{method} {uri}"),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            write: !method.is_safe(),
        };
        let mut requests = self.log();
        if requests.len() >= REQUEST_LOG {
            requests.drain(..REQUEST_LOG / 2);
        }
        requests.push(logged);
    }
}

/// The whole API as one axum router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    shared.record(&parts.method, &parts.uri, &parts.headers);
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(e) => {
            return failure(Failure::bad_request(format!(
                "cannot read the request body: {e}"
            )));
        }
    };
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let request = ApiRequest {
        method: parts.method,
        headers: parts.headers,
        query,
        body,
    };
    // The delay is slept here, on the async side: the server has one thread, and a blocking
    // sleep would stall every other request and watch with it.
    let list = request.method == Method::GET && is_list(parts.uri.path(), &request);
    let latency = shared.latency(&request.method, &parts.uri, list);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    serve(&shared, parts.uri.path(), &request).unwrap_or_else(failure)
}

/// Whether a GET on `path` lists a collection (not a watch, a single object or discovery),
/// by the same path rules `serve` applies.
fn is_list(path: &str, request: &ApiRequest) -> bool {
    if matches!(request.param("watch"), Some("true" | "1")) {
        return false;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => return false,
    };
    match rest {
        ["namespaces", _, next, rest @ ..] if !matches!(*next, "status" | "finalize") => {
            rest.is_empty()
        }
        [_] => true,
        _ => false,
    }
}

/// One request, decoded.
struct ApiRequest {
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Bytes,
}

impl ApiRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun").is_some_and(|v| v == "All")
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector)> {
        Ok((
            LabelSelector::parse(self.param("labelSelector").unwrap_or_default())?,
            FieldSelector::parse(self.param("fieldSelector").unwrap_or_default())?,
        ))
    }

    fn json_body(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Failure::bad_request(format!("cannot decode the body as JSON: {e}")))
    }
}

/// Where a resource path points.
struct Location {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn serve(shared: &Arc<Shared>, path: &str, request: &ApiRequest) -> Result<Response> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return get_only(request, || serde_json::to_value(version_info())),
        ["healthz" | "readyz" | "livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        // Aggregated-discovery Accept headers get the plain documents, as from a server that
        // predates aggregated discovery.
        ["api"] => {
            return get_only(request, || {
                serde_json::to_value(shared.store().registry().core_versions())
            });
        }
        ["apis"] => {
            return get_only(request, || {
                serde_json::to_value(shared.store().registry().group_list())
            });
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(Failure::no_such_path()),
    };
    if rest.is_empty() {
        let list = shared.store().registry().resource_list(group, version);
        let list = list.ok_or_else(Failure::no_such_path)?;
        return get_only(request, || serde_json::to_value(list));
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, next, rest @ ..] if !matches!(*next, "status" | "finalize") => (
            Some(ns.to_string()),
            std::iter::once(next)
                .chain(rest)
                .copied()
                .collect::<Vec<_>>(),
        ),
        _ => (None, rest.to_vec()),
    };
    let (plural, name, status) = match rest.as_slice() {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some(name.to_string()), false),
        [plural, name, "status"] => (*plural, Some(name.to_string()), true),
        ["serviceaccounts", name, "token"] if group.is_empty() && version == "v1" => {
            let Some(namespace) = namespace else {
                return Err(Failure::no_such_path());
            };
            if request.method != Method::POST {
                return Err(Failure::method_not_allowed(request.method.as_str()));
            }
            let body = request.json_body()?;
            let store = shared.store();
            let created = shared.tokens().request(&store, &namespace, name, &body)?;
            return Ok(respond(StatusCode::CREATED, &created));
        }
        _ => return Err(Failure::no_such_path()),
    };
    let resource = shared
        .store()
        .registry()
        .find(group, version, plural)
        .cloned()
        .ok_or_else(Failure::no_such_path)?;
    let scoped_wrongly = (namespace.is_some() && !resource.namespaced)
        || (name.is_some() && resource.namespaced && namespace.is_none())
        || (status && !resource.status);
    if scoped_wrongly {
        return Err(Failure::no_such_path());
    }
    if resource.review {
        if request.method != Method::POST || name.is_some() {
            return Err(Failure::method_not_allowed(request.method.as_str()));
        }
        let body = request.json_body()?;
        let store = shared.store();
        let reviewed = if resource.is_token_review() {
            shared.tokens().review(&store, &body)?
        } else {
            return Err(Failure::no_such_path());
        };
        return Ok(respond(StatusCode::CREATED, &reviewed));
    }
    let target = Location {
        resource,
        namespace,
        name,
        status,
    };
    match target.name.clone() {
        None => collection(shared, &target, request),
        Some(name) => object(shared, &target, &name, request),
    }
}

fn get_only(
    request: &ApiRequest,
    document: impl FnOnce() -> serde_json::Result<Value>,
) -> Result<Response> {
    if request.method != Method::GET {
        return Err(Failure::method_not_allowed(request.method.as_str()));
    }
    let document = document()
        .map_err(|e| Failure::internal(format!("cannot encode a discovery document: {e}")))?;
    Ok(respond(StatusCode::OK, &document))
}

fn version_info() -> Info {
    Info {
        major: "1".into(),
        minor: "33".into(),
        git_version: "v1.33.0".into(),
        git_commit: "0000000000000000000000000000000000000000".into(),
        git_tree_state: "clean".into(),
        build_date: "2025-04-23T00:00:00Z".into(),
        go_version: "go1.24.2".into(),
        compiler: "gc".into(),
        platform: "linux/amd64".into(),
        ..Info::default()
    }
}

fn collection(shared: &Arc<Shared>, target: &Location, request: &ApiRequest) -> Result<Response> {
    let resource = &target.resource;
    let namespace = target.namespace.as_deref();
    match request.method {
        Method::GET if matches!(request.param("watch"), Some("true" | "1")) => {
            let (labels, fields) = request.selectors()?;
            let timeout =
                match request.param("timeoutSeconds") {
                    Some(t) => Some(t.parse().map_err(|_| {
                        Failure::bad_request(format!("invalid timeoutSeconds {t:?}"))
                    })?),
                    None => None,
                };
            let options = WatchOptions {
                resource: resource.clone(),
                namespace: target.namespace.clone(),
                labels,
                fields,
                resource_version: request.param("resourceVersion").map(str::to_string),
                timeout_seconds: timeout,
                bookmarks: request.param("allowWatchBookmarks") == Some("true"),
                send_initial_events: request.param("sendInitialEvents") == Some("true"),
            };
            watch::start(shared.clone(), options)
        }
        Method::GET => list(shared, target, request),
        Method::POST => {
            if resource.namespaced && namespace.is_none() {
                return Err(Failure::no_such_path());
            }
            let body = request.json_body()?;
            let created = shared
                .store()
                .create(resource, namespace, body, request.dry_run())?;
            Ok(respond(StatusCode::CREATED, &created))
        }
        Method::DELETE => {
            let (labels, fields) = request.selectors()?;
            let items = shared.store().delete_collection(
                resource,
                namespace,
                &labels,
                &fields,
                request.dry_run(),
            )?;
            let rv = shared.store().resource_version();
            Ok(respond(
                StatusCode::OK,
                &list_document(resource, items, rv, None),
            ))
        }
        _ => Err(Failure::method_not_allowed(request.method.as_str())),
    }
}

/// GET on a collection: a page of the matching objects. The continue token names the last key
/// served and the RV of the first page, which every page reports, so a client that pages and
/// then watches from that RV misses nothing (it may see an object twice, which is harmless).
fn list(shared: &Arc<Shared>, target: &Location, request: &ApiRequest) -> Result<Response> {
    let (labels, fields) = request.selectors()?;
    let limit = match request.param("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| Failure::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let after = match request.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(
            serde_json::from_str::<(u64, String, String)>(token)
                .map_err(|_| Failure::bad_request(format!("invalid continue token {token:?}")))?,
        ),
        None => None,
    };
    let store = shared.store();
    let mut items = store.list(
        &target.resource,
        target.namespace.as_deref(),
        &labels,
        &fields,
    );
    let rv = after
        .as_ref()
        .map_or(store.resource_version(), |(rv, _, _)| *rv);
    drop(store);
    if let Some((_, ns, name)) = &after {
        items.retain(|(k, _)| {
            (k.namespace.as_str(), k.name.as_str()) > (ns.as_str(), name.as_str())
        });
    }
    let mut next = None;
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        next = items
            .last()
            .map(|(k, _)| json!([rv, k.namespace, k.name]).to_string());
    }
    let items = items.into_iter().map(|(_, o)| o).collect();
    Ok(respond(
        StatusCode::OK,
        &list_document(&target.resource, items, rv, next),
    ))
}

fn list_document(resource: &Resource, items: Vec<Value>, rv: u64, next: Option<String>) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = next {
        metadata["continue"] = token.into();
    }
    json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": items,
    })
}

fn object(
    shared: &Arc<Shared>,
    target: &Location,
    name: &str,
    request: &ApiRequest,
) -> Result<Response> {
    let resource = &target.resource;
    let namespace = target.namespace.as_deref();
    let part = if target.status {
        Target::Status
    } else {
        Target::Main
    };
    let dry_run = request.dry_run();
    match request.method {
        Method::GET => {
            let object = shared.store().get(resource, namespace, name)?;
            Ok(respond(StatusCode::OK, &object))
        }
        Method::PUT => {
            let body = request.json_body()?;
            let updated =
                shared
                    .store()
                    .update(resource, namespace, name, part, dry_run, |_| Ok(body))?;
            Ok(respond(StatusCode::OK, &updated))
        }
        Method::PATCH => {
            let content_type = request
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = PatchKind::from_content_type(content_type)?;
            let patch = kind.parse_body(&request.body)?;
            let mut store = shared.store();
            let patched = store.update(resource, namespace, name, part, dry_run, |current| {
                kind.apply(current, &patch)
            });
            match patched {
                // Server-side apply creates what does not exist yet.
                Err(e) if e.code == 404 && kind == PatchKind::Apply && part == Target::Main => {
                    let mut body = patch;
                    if !body.is_object() {
                        return Err(Failure::bad_request("an apply patch must be an object"));
                    }
                    match body.pointer("/metadata/name").and_then(Value::as_str) {
                        Some(n) if n != name => {
                            return Err(Failure::bad_request(format!(
                                "the name of the object ({n}) does not match the name on the URL ({name})"
                            )));
                        }
                        Some(_) => {}
                        None => body["metadata"]["name"] = name.into(),
                    }
                    let created = store.create(resource, namespace, body, dry_run)?;
                    Ok(respond(StatusCode::CREATED, &created))
                }
                patched => Ok(respond(StatusCode::OK, &patched?)),
            }
        }
        Method::DELETE if !target.status => {
            let options: Value = if request.body.is_empty() {
                Value::Null
            } else {
                request.json_body()?
            };
            let text = |p: &str| {
                options
                    .pointer(p)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let preconditions = Preconditions {
                uid: text("/preconditions/uid"),
                resource_version: text("/preconditions/resourceVersion"),
            };
            let dry_run = dry_run
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|v| v == "All"));
            let deleted =
                shared
                    .store()
                    .delete(resource, namespace, name, &preconditions, dry_run)?;
            Ok(respond(StatusCode::OK, &deleted))
        }
        _ => Err(Failure::method_not_allowed(request.method.as_str())),
    }
}

fn respond(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body.to_string()),
    )
        .into_response()
}

fn failure(failure: Failure) -> Response {
    let code = StatusCode::from_u16(failure.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(code, &failure.to_status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_log_keeps_content_types_and_leaves_reads_out() {
        let shared = Shared::new();
        let mut apply = HeaderMap::new();
        apply.insert(
            header::CONTENT_TYPE,
            "application/apply-patch+yaml".parse().unwrap(),
        );
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        shared.record(&Method::GET, &uri("/api/v1/namespaces"), &HeaderMap::new());
        shared.record(
            &Method::PATCH,
            &uri("/api/v1/namespaces/a?fieldManager=m&force=true"),
            &apply,
        );
        shared.record(
            &Method::DELETE,
            &uri("/api/v1/namespaces/a"),
            &HeaderMap::new(),
        );
        assert_eq!(
            shared.requests(),
            [
                "GET /api/v1/namespaces",
                "PATCH /api/v1/namespaces/a?fieldManager=m&force=true",
                "DELETE /api/v1/namespaces/a",
            ]
        );
        assert_eq!(
            shared.writes(),
            [
                "PATCH /api/v1/namespaces/a?fieldManager=m&force=true application/apply-patch+yaml",
                "DELETE /api/v1/namespaces/a",
            ]
        );
    }
}
