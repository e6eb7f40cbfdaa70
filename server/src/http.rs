//! The server's plain HTTP endpoint (Velero's metrics port, 8085): `/healthz` (the process
//! serves), `/readyz` (controllers and the agents' service are running), `/metrics`
//! (Prometheus), and `/agents` (the live agents as JSON, for people and tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
struct AppState {
    ready: Arc<AtomicBool>,
    metrics: Metrics,
    agents: Agents,
}

/// Serves the endpoints on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicBool>,
    metrics: Metrics,
    agents: Agents,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/agents", get(agents_json))
        .with_state(AppState {
            ready,
            metrics,
            agents,
        });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn agents_json(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.agents.live())
}
