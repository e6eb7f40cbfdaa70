//! The server process: the controllers, the agents' gRPC service and the health/metrics
//! endpoint, started together and stopped together.
//!
//! Listening sockets are bound before anything else starts, so a taken port fails the start
//! with one clear error. `/readyz` turns ready once the API server has answered and the
//! controllers run. Before the controllers start, the restore scratch directories an earlier
//! process left (killed mid-restore) are removed ([`crate::restore::scratch`]). On shutdown
//! (the token) the controllers finish their current reconciles, the gRPC server stops taking
//! sessions and the endpoint stops; agents then dial again until the next server is up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lifeboat_agent::TlsMaterial;
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::controller::{self, Context, Settings};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The namespace of the install, whose velero.io objects this server owns.
    pub namespace: String,
    /// `/healthz`, `/readyz`, `/metrics`, `/agents` (Velero's metrics port is 8085).
    pub metrics_address: SocketAddr,
    /// The agents' gRPC service.
    pub grpc_address: SocketAddr,
    /// The server's certificate, key and the install's CA.
    pub tls: TlsMaterial,
    /// How often agents send heartbeats; an agent silent for three of these is gone.
    pub heartbeat: Duration,
    /// Server-side feature flags (`--features`).
    pub features: Vec<String>,
    /// The controllers' settings.
    pub settings: Settings,
    /// The clock schedules and expiry go by (the system's, except in tests).
    pub clock: crate::clock::Clock,
}

/// The agents' gRPC service on `listener`, with mutual TLS from `tls`, until `shutdown`:
/// what [`run`] serves, usable on its own (tests drive agents through it). Fails at once when
/// the TLS material cannot be used.
pub fn serve_agents(
    listener: tokio::net::TcpListener,
    tls: &TlsMaterial,
    agents: Agents,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static> {
    let acceptor = crate::tls::acceptor(tls)?;
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(agents.service());
    Ok(async move {
        server
            .serve_with_incoming_shutdown(
                crate::tls::incoming(listener, acceptor, shutdown.clone()),
                async move { shutdown.cancelled().await },
            )
            .await
    })
}

/// Runs the server until `shutdown` fires or a part of it fails.
pub async fn run(
    client: kube::Client,
    opts: ServerOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    let bind = |address: SocketAddr| async move {
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind { address, source })
    };
    let http_listener = bind(opts.metrics_address).await?;
    let grpc_listener = bind(opts.grpc_address).await?;
    tracing::info!(
        namespace = %opts.namespace,
        metrics = %http_listener.local_addr().unwrap_or(opts.metrics_address),
        grpc = %grpc_listener.local_addr().unwrap_or(opts.grpc_address),
        features = ?opts.features,
        "lifeboat server starting"
    );

    let metrics = Metrics::new();
    let agents = Agents::new(
        opts.heartbeat,
        metrics.clone(),
        crate::identity::Verifier::new(client.clone(), opts.namespace.clone()),
    );
    let ready = Arc::new(AtomicBool::new(false));

    // What a server killed mid-restore left in the scratch directory (the objects of a backup,
    // Secrets included) goes before any restore starts; directories a running server holds
    // (one sharing this scratch directory) stay. A failure here only costs disk space: the
    // restores themselves report an unusable scratch directory.
    let scratch = opts.settings.scratch_root();
    let swept = tokio::task::spawn_blocking({
        let scratch = scratch.clone();
        move || crate::restore::scratch::remove_stale(&scratch)
    })
    .await;
    match swept {
        Ok(Ok(stats)) => {
            for dir in &stats.removed {
                tracing::info!(dir = %dir.display(), "removed a restore's scratch directory left by an earlier process");
            }
            for (dir, e) in &stats.failed {
                tracing::warn!(dir = %dir.display(), "cannot remove a restore's scratch directory left by an earlier process: {e}");
            }
        }
        Ok(Err(e)) => tracing::warn!(
            scratch = %scratch.display(),
            "cannot remove the scratch directories left by an earlier process: {e}"
        ),
        Err(e) => tracing::warn!("the scratch directory sweep stopped: {e}"),
    }

    let http = tokio::spawn(crate::http::serve(
        http_listener,
        ready.clone(),
        metrics.clone(),
        agents.clone(),
        shutdown.clone(),
    ));
    let grpc = tokio::spawn(serve_agents(
        grpc_listener,
        &opts.tls,
        agents.clone(),
        shutdown.clone(),
    )?);

    // The API server must answer before the controllers start: a wrong kubeconfig or missing
    // RBAC is then one error at start-up rather than a log of failing watches.
    let version = client.apiserver_version().await?;
    tracing::info!(version = %version.git_version, "connected to the API server");

    let ctx = Arc::new(Context::new(
        client,
        opts.namespace.clone(),
        metrics,
        opts.settings.clone(),
        opts.clock.clone(),
        version,
        agents.clone(),
    ));
    let controllers = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            // `--restore-only`: nothing is backed up, scheduled or expired (Velero's flag, for a
            // cluster that restores from another's bucket without touching it).
            let backups = !ctx.settings.restore_only;
            tokio::join!(
                controller::location::run(ctx.clone(), shutdown.clone()),
                async {
                    if backups {
                        controller::backup::run(ctx.clone(), shutdown.clone()).await;
                    }
                },
                async {
                    if backups {
                        controller::schedule::run(ctx.clone(), shutdown.clone()).await;
                    }
                },
                async {
                    if backups {
                        controller::gc::run(ctx.clone(), shutdown.clone()).await;
                    }
                },
                controller::restore::run(ctx.clone(), shutdown.clone()),
                controller::deletion::run(ctx.clone(), shutdown.clone()),
                controller::sync::run(ctx.clone(), shutdown.clone()),
                controller::repository::run(ctx.clone(), shutdown.clone()),
            );
        }
    });
    ready.store(true, Ordering::Release);

    // Whichever part ends first ends the server; the others stop with the token.
    let outcome = tokio::select! {
        r = http => r.map(|r| r.map_err(Error::Http)),
        r = grpc => r.map(|r| r.map_err(Error::Transport)),
        r = controllers => r.map(Ok),
        _ = shutdown.cancelled() => Ok(Ok(())),
    };
    shutdown.cancel();
    match outcome {
        Ok(result) => result,
        Err(join) => {
            tracing::error!("a server task ended abnormally: {join}");
            Ok(())
        }
    }
}
