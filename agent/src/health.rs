//! The agent's health endpoint (the DaemonSet's probes): `/healthz` answers while the process
//! serves; `/readyz` answers 200 only while the agent holds a session with the server and its
//! host-pods root looks like the node's kubelet pods directory, else 503 with the reasons, so
//! `kubectl get pods` shows an agent that cannot do its work as not ready, and `kubectl
//! describe pod` says why.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// What keeps the agent from being ready. Cheap to clone; shared with the session.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<Mutex<Reasons>>,
}

#[derive(Debug)]
struct Reasons {
    /// Why there is no session with the server (None: there is one).
    session: Option<String>,
    /// What is wrong with the host-pods root.
    host_pods: Option<String>,
}

impl Default for Reasons {
    fn default() -> Self {
        Self {
            session: Some("no session with the server yet".into()),
            host_pods: None,
        }
    }
}

impl Readiness {
    /// The session is up (`None`) or why it is not.
    pub fn session(&self, down: Option<String>) {
        self.lock().session = down;
    }

    /// What is wrong with the host-pods root, if anything.
    pub fn host_pods(&self, problem: Option<String>) {
        self.lock().host_pods = problem;
    }

    /// Why the agent is not ready, one reason per line; empty when it is.
    pub fn reasons(&self) -> Vec<String> {
        let reasons = self.lock();
        let mut out = Vec::new();
        if let Some(why) = &reasons.session {
            out.push(format!("no session with the server: {why}"));
        }
        if let Some(problem) = &reasons.host_pods {
            out.push(problem.clone());
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reasons> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves `/healthz` and `/readyz` on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, String) {
    let reasons = readiness.reasons();
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_a_session_and_a_kubelet_root() {
        let r = Readiness::default();
        assert_eq!(
            r.reasons(),
            ["no session with the server: no session with the server yet"]
        );
        r.session(None);
        assert!(r.reasons().is_empty());
        r.host_pods(Some("the host-pods root /host_pods is wrong".into()));
        assert_eq!(r.reasons(), ["the host-pods root /host_pods is wrong"]);
        r.session(Some("refused".into()));
        assert_eq!(r.reasons().len(), 2);
    }
}
