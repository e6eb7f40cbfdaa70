//! A Kubernetes API server stand-in for system tests: kube's client, watcher, reflector,
//! `Controller`, finalizer helper and discovery, and the `lifeboat` CLI, run against it exactly
//! as against a real cluster (no real API server can run on the test machines; see
//! TESTING.md, "The Kubernetes API stand-in").
//!
//! It serves plain HTTP/1.1 on 127.0.0.1 from its own thread and tokio runtime, so a test that
//! blocks its own runtime never stalls it. State lives in memory and dies with the server.
//! What it does and does not do: discovery for the built-in kinds and every CRD created through
//! it; get, list (paging, label and field selectors), watch (resume, bookmarks, 410 after
//! `compact`), create, replace, merge/json/apply patch, delete with finalizers, delete of
//! collections; server-managed metadata, status subresources, namespace termination;
//! ServiceAccount tokens bound to pods, issued by TokenRequest and checked by TokenReview
//! (`token`). No authentication of its own clients, no authorization, no admission, no schema validation, no garbage collection by owner reference, no field
//! ownership for server-side apply.
//!
//! Split by concern: `routing` (URLs and verbs), `store` (objects, write rules, watch log),
//! `watch` (streaming), `selector`, `patch`, `discovery` (the registry of resources), `token`
//! (TokenRequest and TokenReview) and `failure` (Status errors).

mod discovery;
mod failure;
mod patch;
mod routing;
mod selector;
mod store;
mod token;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use serde_json::{Value, json};

use self::routing::Shared;
pub use self::store::StoredObject;

/// A running API server stand-in; dropping it stops the server and ends its open watches.
pub struct ApiServer {
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts on 127.0.0.1 on a free port, on its own thread with its own tokio runtime, so a
    /// test that blocks its own runtime (waiting on processes) never stalls the server.
    ///
    /// Also installs rustls' ring crypto provider for the process (as the `lifeboat` binary
    /// does at startup): kube's client builds a TLS connector even for `http://` clusters, and
    /// with more than one provider compiled into the workspace rustls cannot pick one itself.
    pub fn start() -> anyhow::Result<ApiServer> {
        // Err only when a provider is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
        listener
            .set_nonblocking(true)
            .context("cannot make the listening socket non-blocking")?;
        let port = listener
            .local_addr()
            .context("cannot read the bound address")?
            .port();
        // One thread is plenty: every request is short work under one lock, and watches sleep.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the API server's runtime")?;
        let shared = Arc::new(Shared::new());
        let app = routing::router(shared.clone());
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("apiserver-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            eprintln!("API server stand-in: cannot listen: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        served = axum::serve(listener, app) => {
                            if let Err(e) = served {
                                eprintln!("API server stand-in stopped: {e}");
                            }
                        }
                        _ = stop => {}
                    }
                });
                // Dropping the runtime here ends every connection task, open watches included.
                drop(runtime);
            })
            .context("cannot start the API server's thread")?;
        Ok(ApiServer {
            url: format!("http://127.0.0.1:{port}"),
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Writes a kubeconfig (cluster `stand-in` at url(), context `stand-in`, a user with no
    /// credentials, namespace unset) to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "stand-in", "user": {}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
            "current-context": "stand-in",
            "preferences": {},
        });
        let text = serde_yaml::to_string(&config).context("cannot render the kubeconfig")?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the kubeconfig {}", path.display()))
    }

    /// A kube::Client for this server (for test code); its default namespace is `default`.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let url = self.url.parse().context("the server URL is a valid URI")?;
        kube::Client::try_from(kube::Config::new(url))
            .context("cannot build a client for the API server stand-in")
    }

    /// Forgets the watch history, so a watch resuming from any older resourceVersion gets an
    /// ERROR event with a 410 Gone Status (kube's watcher then relists). Watches open now get
    /// that too, at once: compaction is how a test makes every watcher relist.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// A snapshot of one stored object as JSON (None if absent), for assertions without a client.
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let store = self.shared.store();
        let resource = store.registry().find(group, version, plural)?.clone();
        store
            .get_raw(&resource.collection(), namespace.unwrap_or_default(), name)
            .map(|o| store::present(&resource, o))
    }

    /// Stores `object` (its apiVersion and kind name the resource) as given, status included,
    /// creating or replacing it, with the usual ADDED or MODIFIED event; returns it as stored.
    /// For seeding state a client could only reach in several steps (a pod with its status).
    pub fn put_object(&self, object: Value) -> anyhow::Result<Value> {
        Ok(self.shared.store().put(object)?)
    }

    /// Deletes one object as a client's DELETE would (a namespace takes its objects with it),
    /// for a test that removes what it backed up before restoring it.
    pub fn delete_object(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<()> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let mut store = self.shared.store();
        let resource = store
            .registry()
            .find(group, version, plural)
            .ok_or_else(|| anyhow::anyhow!("{plural} at {api_version} is not served"))?
            .clone();
        store
            .delete(&resource, namespace, name, &Default::default(), false)
            .map_err(|e| anyhow::anyhow!("{}", e.to_status()))?;
        Ok(())
    }

    /// Delays the answer to every list request (`GET` on a collection, not a watch) by
    /// `latency` from now on; zero turns it off. A backup lists every resource it takes, so
    /// this stretches a backup out long enough for a test to act while it runs (kill the
    /// server mid-backup), without seeding thousands of objects.
    pub fn set_list_latency(&self, latency: std::time::Duration) {
        self.shared.set_list_latency(latency);
    }

    /// Delays every request whose `METHOD /path?query`, as [`ApiServer::requests`] lists it,
    /// starts with `prefix` (`"POST /apis/velero.io/v1/namespaces/velero/backups"`) by
    /// `latency`, from now on; zero removes the delay. For widening the gap between two
    /// requests a controller makes in one pass.
    pub fn set_request_latency(&self, prefix: &str, latency: std::time::Duration) {
        self.shared.set_request_latency(prefix, latency);
    }

    /// Holds every watch event back until `delay` after the write that made it, from now on
    /// (zero: at once). A real API server's watches lag behind its writes under load; with a
    /// delay, a controller that acts on its cache right after its own writes sees its stale
    /// copy every time, not once in a while. Lists and gets stay current.
    pub fn set_watch_delay(&self, delay: std::time::Duration) {
        self.shared.set_watch_delay(delay);
    }

    /// Every stored object, each as served at the first version its resource is registered
    /// at (the preferred one), in collection then key order. For assertions that a backup
    /// holds exactly what the cluster holds.
    pub fn objects(&self) -> Vec<StoredObject> {
        self.shared.store().all_objects()
    }

    /// Makes every ServiceAccount token issued so far `by` older, as if that much time had
    /// passed for them: a token of an hour is expired after `age_tokens` of an hour.
    pub fn age_tokens(&self, by: std::time::Duration) {
        self.shared.tokens().age(by);
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Every request served so far as `METHOD /path?query`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests()
    }

    /// Every write served so far (POST, PUT, PATCH, DELETE) as
    /// `METHOD /path?query content-type`, oldest first; the content type is left out when the
    /// request had none. It tells a merge patch from a server-side apply.
    pub fn writes(&self) -> Vec<String> {
        self.shared.writes()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // Err only when the server already stopped by itself.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread was already printed there.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApiServer;

    #[test]
    fn the_server_handle_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<ApiServer>();
    }
}
