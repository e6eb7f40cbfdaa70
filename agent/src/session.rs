//! The agent's side of the server connection: dial, introduce the node, keep the session alive
//! with heartbeats, and dial again when it breaks.
//!
//! The session is one gRPC bidirectional stream (see `proto/agent.proto`). A broken
//! connection is retried with exponential backoff (1 s doubling to 30 s), so a server restart
//! or a rolling upgrade costs an agent seconds, not a pod restart. Bad local settings (unreadable
//! certificates, an invalid server address) end the agent at once with one sentence instead.
//!
//! Each session's Hello carries the pod's ServiceAccount token (see [`crate::token`]), read
//! from its file at that moment: the kubelet rotates it. A missing or empty token file is a
//! session failure like a refused connection (said in one sentence, retried with the same
//! backoff), since the kubelet may not have written it yet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lifeboat_repo::error_chain as chain;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::jobs;
use crate::proto::agents_client::AgentsClient;
use crate::proto::{
    AgentMessage, Heartbeat, Hello, JobResult, VolumeBackup, VolumeRestore, agent_message,
    job_result, server_message,
};
use crate::tls::TlsMaterial;

/// How an agent reaches its server, and what it says about itself.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The server's gRPC address, e.g. `https://lifeboat.velero.svc:8443`.
    pub server: String,
    /// The name the server's certificate must carry (defaults to the address's host).
    pub server_name: String,
    /// This node's name (NODE_NAME from the downward API).
    pub node: String,
    /// Where the host's kubelet pod directories are mounted (`/host_pods`).
    pub host_pods: PathBuf,
    /// The agent's own pod UID (POD_UID from the downward API), whose directory the host-pods
    /// root must hold.
    pub pod_uid: Option<String>,
    /// What the health endpoint reports; the session keeps it current.
    pub readiness: crate::health::Readiness,
    /// Volumes backed up or restored at once.
    pub concurrency: usize,
    /// Memory for the jobs: they size their buffers to it and wait for each other's.
    pub memory: Option<lifeboat_repo::MemoryBudget>,
    /// This side's certificate, key and the CA.
    pub tls: TlsMaterial,
    /// The pod's projected ServiceAccount token (default [`crate::token::DEFAULT_TOKEN_FILE`]).
    pub token_file: PathBuf,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the server address `{address}` is not valid")]
    BadAddress {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the agent's TLS settings cannot be used")]
    Tls(#[source] tonic::transport::Error),
}

/// Runs the agent until `cancel` fires: holds a session with the server, reconnecting as needed.
pub async fn run(opts: AgentOptions, cancel: CancellationToken) -> Result<(), Error> {
    let endpoint = Endpoint::from_shared(opts.server.clone())
        .map_err(|source| Error::BadAddress {
            address: opts.server.clone(),
            source,
        })?
        .tls_config(opts.tls.client_config(&opts.server_name))
        .map_err(Error::Tls)?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let mut backoff = Duration::from_secs(1);
    loop {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            outcome = session(&endpoint, &opts, &cancel) => outcome,
        };
        match outcome {
            // A session that got as far as Welcome resets the backoff: the server is up.
            Ok(()) => {
                opts.readiness
                    .session(Some("the session ended; dialling again".into()));
                tracing::warn!(server = %opts.server, "the session with the server ended; dialling again");
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                let reason = chain(&e);
                tracing::warn!(server = %opts.server, retry_in = ?backoff, "cannot hold a session with the server: {reason}");
                opts.readiness.session(Some(reason));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Why a session with the server could not start.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error("cannot connect to the server")]
    Connect(#[from] tonic::transport::Error),
    #[error("the outbound queue closed")]
    QueueClosed,
    /// The server answered with an error status (already one sentence).
    #[error("{0}")]
    Refused(String),
    #[error("the server's first message was not Welcome")]
    NoWelcome,
    #[error("the server closed the session before welcoming the agent")]
    ClosedBeforeWelcome,
}

/// One session: returns Ok when it ran and ended, Err with the reason when it could not start.
async fn session(
    endpoint: &Endpoint,
    opts: &AgentOptions,
    cancel: &CancellationToken,
) -> Result<(), SessionError> {
    let token = crate::token::read(&opts.token_file)?;
    let channel: Channel = endpoint.connect().await?;
    let mut client = AgentsClient::new(channel);
    // Outbound messages: Hello, then heartbeats. 16 is plenty for a heartbeat every few seconds.
    let (tx, rx) = mpsc::channel::<AgentMessage>(16);
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            node: opts.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            concurrency: u32::try_from(opts.concurrency).unwrap_or(u32::MAX),
            host_pods: opts.host_pods.display().to_string(),
            host_pods_problem: host_pods_problem(opts),
            token,
        })),
    })
    .await
    .map_err(|_| SessionError::QueueClosed)?;
    let response = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|status| SessionError::Refused(describe(&status)))?;
    let mut inbound = response.into_inner();
    let welcome = match inbound.next().await {
        Some(Ok(msg)) => match msg.body {
            Some(server_message::Body::Welcome(w)) => w,
            _ => return Err(SessionError::NoWelcome),
        },
        Some(Err(status)) => return Err(SessionError::Refused(describe(&status))),
        None => return Err(SessionError::ClosedBeforeWelcome),
    };
    let interval = Duration::from_millis(welcome.heartbeat_interval_ms.max(100));
    tracing::info!(node = %opts.node, server_version = %welcome.server_version, heartbeat = ?interval, "session with the server open");
    opts.readiness.session(None);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Jobs belong to this session: when it ends they are cancelled (the server, which saw the
    // session end, has already given them up).
    let jobs = Jobs::new(opts, cancel.child_token());
    let _end_jobs = jobs.session.clone().drop_guard();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                let running = u32::try_from(jobs.running()).unwrap_or(u32::MAX);
                let beat = AgentMessage { body: Some(agent_message::Body::Heartbeat(Heartbeat { running })) };
                if tx.send(beat).await.is_err() {
                    return Ok(());
                }
            }
            msg = inbound.next() => match msg {
                Some(Ok(msg)) => match msg.body {
                    Some(server_message::Body::Backup(job)) => jobs.start_backup(job, tx.clone()),
                    Some(server_message::Body::Restore(job)) => jobs.start_restore(job, tx.clone()),
                    Some(server_message::Body::Cancel(c)) => jobs.cancel(&c.job_id),
                    Some(server_message::Body::Welcome(_)) | None => {}
                },
                Some(Err(status)) => {
                    tracing::warn!("the server ended the session: {}", describe(&status));
                    return Ok(());
                }
                None => return Ok(()),
            }
        }
    }
}

/// What is wrong with the host-pods root, logged (again at each session, until mended) and
/// told to the server; empty when nothing is.
fn host_pods_problem(opts: &AgentOptions) -> String {
    let problem = crate::volume::root_problem(&opts.host_pods, opts.pod_uid.as_deref());
    opts.readiness.host_pods(problem.clone());
    match problem {
        Some(problem) => {
            tracing::error!("no pod volume on this node can be found: {problem}");
            problem
        }
        None => String::new(),
    }
}

/// The jobs of one session: at most `concurrency` run at once, the rest wait their turn.
struct Jobs {
    node: jobs::Node,
    permits: Arc<Semaphore>,
    tokens: Arc<Mutex<HashMap<String, CancellationToken>>>,
    session: CancellationToken,
}

impl Jobs {
    fn new(opts: &AgentOptions, session: CancellationToken) -> Jobs {
        Jobs {
            node: jobs::Node {
                host_pods: opts.host_pods.clone(),
                memory: opts.memory.clone(),
            },
            permits: Arc::new(Semaphore::new(opts.concurrency.max(1))),
            tokens: Arc::default(),
            session,
        }
    }

    fn running(&self) -> usize {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn cancel(&self, job_id: &str) {
        if let Some(token) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id)
        {
            tracing::info!(job = job_id, "job cancelled by the server");
            token.cancel();
        }
    }

    fn start_backup(&self, job: VolumeBackup, tx: mpsc::Sender<AgentMessage>) {
        let id = job.job_id.clone();
        tracing::debug!(job = %id, pod = %job.pod_uid, volume = %job.volume_dir, "backup job received");
        self.start(id, "backup", tx, move |node, counters, token| async move {
            tracing::info!(pod = %job.pod_uid, volume = %job.volume_dir, "backing up a pod volume");
            jobs::backup(&job, &node, counters, token).await
        });
    }

    fn start_restore(&self, job: VolumeRestore, tx: mpsc::Sender<AgentMessage>) {
        let id = job.job_id.clone();
        self.start(id, "restore", tx, move |node, counters, token| async move {
            tracing::info!(pod = %job.pod_uid, volume = %job.volume_dir, snapshot = %job.snapshot_id, "restoring a pod volume");
            jobs::restore(&job, &node, counters, token).await
        });
    }

    /// Runs a job when a permit is free, reporting its progress every
    /// [`jobs::PROGRESS_EVERY`] and its result once.
    fn start<F, Fut>(&self, id: String, what: &'static str, tx: mpsc::Sender<AgentMessage>, run: F)
    where
        F: FnOnce(jobs::Node, Arc<jobs::Counters>, CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = job_result::Outcome> + Send,
    {
        let token = self.session.child_token();
        {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if tokens.contains_key(&id) {
                tracing::warn!(job = %id, "job already running; the repeat is ignored");
                return;
            }
            tokens.insert(id.clone(), token.clone());
        }
        let permits = self.permits.clone();
        let tokens = self.tokens.clone();
        let node = self.node.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                permit = permits.acquire_owned() => {
                    let _permit = permit;
                    let counters = Arc::new(jobs::Counters::default());
                    let reporter = {
                        let (tx, counters, id) = (tx.clone(), counters.clone(), id.clone());
                        tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(jobs::PROGRESS_EVERY).await;
                                let msg = AgentMessage {
                                    body: Some(agent_message::Body::Progress(counters.snapshot(&id))),
                                };
                                if tx.send(msg).await.is_err() {
                                    return;
                                }
                            }
                        })
                    };
                    let outcome = run(node, counters, token).await;
                    reporter.abort();
                    outcome
                }
                _ = token.cancelled() => job_result::Outcome::Error(format!("the {what} was cancelled before it started")),
            };
            match &outcome {
                job_result::Outcome::Backup(done) => tracing::info!(
                    job = %id,
                    snapshot = %done.snapshot_id,
                    files_new = done.files_new,
                    files_changed = done.files_changed,
                    files_unchanged = done.files_unchanged,
                    bytes_added = done.bytes_added,
                    seconds = done.duration_secs,
                    "pod volume backed up"
                ),
                job_result::Outcome::Restore(done) => tracing::info!(
                    job = %id,
                    snapshot = %done.snapshot_id,
                    files = done.files,
                    bytes = done.bytes,
                    seconds = done.duration_secs,
                    "pod volume restored"
                ),
                job_result::Outcome::Error(reason) => {
                    tracing::warn!(job = %id, "pod volume {what} failed: {reason}")
                }
                job_result::Outcome::Skipped(reason) => {
                    tracing::warn!(job = %id, "pod volume skipped: {reason}")
                }
            }
            let result = AgentMessage {
                body: Some(agent_message::Body::Result(JobResult {
                    job_id: id.clone(),
                    outcome: Some(outcome),
                })),
            };
            let _ = tx.send(result).await;
            tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
}

/// A status in words, with its transport cause (a TLS alert names why the server refused us).
fn describe(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let cause = status.source().map(chain);
    let text = match cause {
        Some(cause) if status.message().is_empty() || cause.starts_with(status.message()) => cause,
        Some(cause) => format!("{}: {cause}", status.message()),
        None => format!("{} ({:?})", status.message(), status.code()),
    };
    if text.contains("alert") || text.contains("certificate") {
        format!(
            "the TLS handshake failed, the server refused this agent's certificate or the agent the server's: {text}"
        )
    } else if text.contains("connection closed") || text.contains("broken pipe") {
        // With TLS 1.3 a refused client certificate often shows only as a closed connection.
        format!(
            "the server closed the connection ({text}); if this persists, check that the agent's certificate (Secret lifeboat-agent-tls) comes from the install's CA"
        )
    } else {
        text
    }
}
