//! The agents' service: which nodes have a live agent, and the sessions that connect them.
//!
//! Each agent holds one bidirectional gRPC stream (`proto/agent.proto` in lifeboat-agent),
//! authenticated both ways with the install's certificates. An agent is live from its Hello
//! until its stream ends or nothing (heartbeat or other message) arrives for
//! [`MISSED_HEARTBEATS`] heartbeat intervals. A killed agent process closes its TCP connection,
//! which ends the stream at once; the heartbeat deadline covers the silent cases (a frozen
//! process, a dropped network path), so a dead agent is noticed within seconds, never the hours
//! Velero users waited (Velero #4874, #4917).
//!
//! A session serves one node, and only the agent pod running there may hold it: Hello carries
//! the pod's ServiceAccount token, which [`crate::identity`] checks against the API server
//! before Welcome (the shared client certificate alone gets nothing). The session records its
//! pod (name and UID, shown on `/agents`), and while it is live a session from another pod for
//! the same node is refused (PermissionDenied, naming both pods), never swapped in: a stolen
//! certificate plus some other token cannot take over a node's jobs, repository password and
//! store credentials. A new session from the same pod replaces the old one (the agent process
//! restarted before its old connection timed out; the replaced session ends without touching
//! the new one). Once the old session is gone (its stream ended, or it missed
//! [`MISSED_HEARTBEATS`] heartbeats), a new pod on the node (the DaemonSet's replacement) gets in.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use lifeboat_agent::proto::agents_server::{Agents as AgentsService, AgentsServer};
use lifeboat_agent::proto::{
    AgentMessage, BackupDone, CancelJob, JobProgress, RestoreDone, ServerMessage, VolumeBackup,
    VolumeRestore, Welcome, agent_message, job_result, server_message,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::identity::{AgentPod, Verifier};
use crate::metrics::Metrics;

/// Heartbeats an agent may miss before it counts as gone.
pub const MISSED_HEARTBEATS: u32 = 3;

/// How long a new session may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A live agent, as the server sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub node: String,
    pub version: String,
    pub concurrency: u32,
    pub host_pods: String,
    /// Why the host-pods root does not look like the node's kubelet pods directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_pods_problem: Option<String>,
    /// The agent's pod (in the install namespace), as its token proved.
    pub pod: String,
    /// That pod's UID.
    pub pod_uid: String,
    /// When the session started (RFC 3339).
    pub connected_since: String,
    /// Milliseconds since the agent was last heard from.
    pub last_seen_ms: u64,
}

#[derive(Debug)]
struct Entry {
    session: u64,
    info: AgentInfo,
    last_seen: Instant,
    /// Messages to the agent.
    outbound: mpsc::Sender<Result<ServerMessage, Status>>,
    /// The jobs sent on this session and not finished, by id.
    jobs: BTreeMap<String, mpsc::UnboundedSender<JobEvent>>,
}

/// What a job sent to an agent reports.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// How far it is.
    Progress(JobProgress),
    /// It ended.
    Done(JobOutcome),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The volume is backed up.
    Backup(BackupDone),
    /// The volume is restored.
    Restore(RestoreDone),
    /// It failed, or its agent left (the reason says which).
    Failed(String),
    /// There was nothing to back up (the volume is not mounted on the node).
    Skipped(String),
}

/// A job sent to an agent: its events, ending with exactly one [`JobEvent::Done`].
#[derive(Debug)]
pub struct JobHandle {
    /// The job's id.
    pub job_id: String,
    /// The node whose agent runs it.
    pub node: String,
    events: mpsc::UnboundedReceiver<JobEvent>,
}

impl JobHandle {
    /// The next event; after `Done` there are none (`None`).
    pub async fn next(&mut self) -> Option<JobEvent> {
        self.events.recv().await
    }
}

/// The registry of live agents, shared by the service and whoever needs to know which nodes
/// can take work. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agents {
    inner: Arc<Mutex<Registry>>,
    heartbeat: Duration,
    metrics: Metrics,
    verifier: Verifier,
}

#[derive(Debug, Default)]
struct Registry {
    next_session: u64,
    live: BTreeMap<String, Entry>,
}

/// Why a job could not be handed to an agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("no live agent on node {node}")]
    NoAgent { node: String },
    #[error("job {job} is already running on node {node}")]
    AlreadyRunning { job: String, node: String },
    #[error("the agent on node {node} left before taking the job")]
    AgentLeft { node: String },
}

impl Agents {
    /// An empty registry; agents are asked to send a heartbeat every `heartbeat`, and prove
    /// their node to `verifier`.
    pub fn new(heartbeat: Duration, metrics: Metrics, verifier: Verifier) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry::default())),
            heartbeat,
            metrics,
            verifier,
        }
    }

    /// The tonic service to mount on the gRPC server.
    pub fn service(&self) -> AgentsServer<Self> {
        AgentsServer::new(self.clone())
    }

    /// The live agents, by node.
    pub fn live(&self) -> Vec<AgentInfo> {
        let reg = self.lock();
        let now = Instant::now();
        reg.live
            .values()
            .map(|e| AgentInfo {
                last_seen_ms: u64::try_from(now.duration_since(e.last_seen).as_millis())
                    .unwrap_or(u64::MAX),
                ..e.info.clone()
            })
            .collect()
    }

    /// Whether `node` has a live agent.
    pub fn is_live(&self, node: &str) -> bool {
        self.lock().live.contains_key(node)
    }

    /// What the agent on `node` said is wrong with its host-pods root, if it is live and said so.
    pub fn host_pods_problem(&self, node: &str) -> Option<String> {
        self.lock()
            .live
            .get(node)
            .and_then(|e| e.info.host_pods_problem.clone())
    }

    /// Sends a volume backup to the agent on `node`. Fails at once when the node has no live
    /// agent; afterwards the handle reports progress and exactly one outcome, a failure naming
    /// the reason if the agent leaves (its process dies, its connection breaks, it goes
    /// silent) before finishing.
    pub async fn submit_backup(
        &self,
        node: &str,
        job: VolumeBackup,
    ) -> Result<JobHandle, SubmitError> {
        let job_id = job.job_id.clone();
        self.submit(node, job_id, server_message::Body::Backup(job))
            .await
    }

    /// Sends a volume restore to the agent on `node`, as [`Agents::submit_backup`] does.
    pub async fn submit_restore(
        &self,
        node: &str,
        job: VolumeRestore,
    ) -> Result<JobHandle, SubmitError> {
        let job_id = job.job_id.clone();
        self.submit(node, job_id, server_message::Body::Restore(job))
            .await
    }

    async fn submit(
        &self,
        node: &str,
        job_id: String,
        body: server_message::Body,
    ) -> Result<JobHandle, SubmitError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let outbound = {
            let mut reg = self.lock();
            let Some(entry) = reg.live.get_mut(node) else {
                return Err(SubmitError::NoAgent {
                    node: node.to_owned(),
                });
            };
            if entry.jobs.contains_key(&job_id) {
                return Err(SubmitError::AlreadyRunning {
                    job: job_id,
                    node: node.to_owned(),
                });
            }
            entry.jobs.insert(job_id.clone(), events_tx);
            entry.outbound.clone()
        };
        let message = ServerMessage { body: Some(body) };
        if outbound.send(Ok(message)).await.is_err() {
            self.finish_job(node, &job_id);
            return Err(SubmitError::AgentLeft {
                node: node.to_owned(),
            });
        }
        Ok(JobHandle {
            job_id,
            node: node.to_owned(),
            events,
        })
    }

    /// Asks the agent on `node` to stop job `job_id`; its handle then reports the outcome.
    pub async fn cancel_job(&self, node: &str, job_id: &str) {
        let outbound = self.lock().live.get(node).map(|e| e.outbound.clone());
        if let Some(outbound) = outbound {
            let message = ServerMessage {
                body: Some(server_message::Body::Cancel(CancelJob {
                    job_id: job_id.to_owned(),
                })),
            };
            let _ = outbound.send(Ok(message)).await;
        }
    }

    /// Forgets a finished job.
    fn finish_job(&self, node: &str, job_id: &str) -> Option<mpsc::UnboundedSender<JobEvent>> {
        self.lock()
            .live
            .get_mut(node)
            .and_then(|e| e.jobs.remove(job_id))
    }

    /// Hands a job's message from the agent to its handle.
    fn job_message(&self, node: &str, session: u64, body: agent_message::Body) {
        match body {
            agent_message::Body::Progress(progress) => {
                let reg = self.lock();
                if let Some(tx) = reg
                    .live
                    .get(node)
                    .filter(|e| e.session == session)
                    .and_then(|e| e.jobs.get(&progress.job_id))
                {
                    let _ = tx.send(JobEvent::Progress(progress));
                }
            }
            agent_message::Body::Result(result) => {
                let outcome = match result.outcome {
                    Some(job_result::Outcome::Backup(done)) => JobOutcome::Backup(done),
                    Some(job_result::Outcome::Restore(done)) => JobOutcome::Restore(done),
                    Some(job_result::Outcome::Error(reason)) => JobOutcome::Failed(reason),
                    Some(job_result::Outcome::Skipped(reason)) => JobOutcome::Skipped(reason),
                    None => JobOutcome::Failed("the agent reported no outcome".into()),
                };
                if let Some(tx) = self.finish_job(node, &result.job_id) {
                    let _ = tx.send(JobEvent::Done(outcome));
                }
            }
            agent_message::Body::Hello(_) => {
                tracing::warn!(%node, "ignoring a second Hello on one session");
            }
            agent_message::Body::Heartbeat(_) => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock (plain map updates), so poisoning cannot happen;
        // recover the data anyway rather than take the server down.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session of `info.pod` for `info.node`; refused while another pod's session
    /// for the node is live (heard from within [`MISSED_HEARTBEATS`] intervals).
    fn register(
        &self,
        info: AgentInfo,
        outbound: mpsc::Sender<Result<ServerMessage, Status>>,
    ) -> Result<u64, Status> {
        let mut reg = self.lock();
        let node = info.node.clone();
        let deadline = self.heartbeat * MISSED_HEARTBEATS;
        if let Some(live) = reg.live.get(&node)
            && live.info.pod_uid != info.pod_uid
            && live.last_seen.elapsed() < deadline
        {
            return Err(Status::permission_denied(format!(
                "node {node} already has a live agent, pod {} (uid {}); the agent's pod {} (uid {}) may take over only once that session ends",
                live.info.pod, live.info.pod_uid, info.pod, info.pod_uid
            )));
        }
        reg.next_session += 1;
        let session = reg.next_session;
        let replaced = reg.live.insert(
            node.clone(),
            Entry {
                session,
                info,
                last_seen: Instant::now(),
                outbound,
                jobs: BTreeMap::new(),
            },
        );
        if let Some(old) = replaced {
            tracing::info!(%node, pod = %old.info.pod, "a new session from the node replaces the old one");
            fail_jobs(
                old.jobs,
                "its agent started a new session (the old one's work is lost)",
            );
        }
        self.metrics.agents_live(reg.live.len());
        Ok(session)
    }

    /// Marks the session as heard from; false when it has been replaced.
    fn touch(&self, node: &str, session: u64) -> bool {
        let mut reg = self.lock();
        match reg.live.get_mut(node) {
            Some(e) if e.session == session => {
                e.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    fn deregister(&self, node: &str, session: u64, reason: &str) {
        let mut reg = self.lock();
        if reg.live.get(node).is_some_and(|e| e.session == session)
            && let Some(entry) = reg.live.remove(node)
        {
            fail_jobs(
                entry.jobs,
                &format!("the agent on node {node} left: {reason}"),
            );
        }
        self.metrics.agents_live(reg.live.len());
    }

    /// Follows one session until it ends: heartbeats keep it alive, silence ends it.
    async fn follow(self, node: String, session: u64, mut inbound: Streaming<AgentMessage>) {
        let deadline = self.heartbeat * MISSED_HEARTBEATS;
        // Checking the replacement every interval lets a replaced session end promptly.
        let reason = loop {
            match tokio::time::timeout(deadline, inbound.next()).await {
                Err(_) => break format!("no heartbeat for {}s", deadline.as_secs_f32()),
                Ok(None) => break "the agent closed the session".to_string(),
                Ok(Some(Err(status))) => {
                    break format!("the connection broke: {}", status.message());
                }
                Ok(Some(Ok(msg))) => {
                    if !self.touch(&node, session) {
                        break "replaced by a newer session".to_string();
                    }
                    if let Some(body) = msg.body {
                        self.job_message(&node, session, body);
                    }
                }
            }
        };
        self.deregister(&node, session, &reason);
        tracing::warn!(%node, "agent gone: {reason}");
    }
}

/// Ends the unfinished jobs of a session with `reason`.
fn fail_jobs(jobs: BTreeMap<String, mpsc::UnboundedSender<JobEvent>>, reason: &str) {
    for (_, tx) in jobs {
        let _ = tx.send(JobEvent::Done(JobOutcome::Failed(reason.to_owned())));
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentsService for Agents {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(AgentMessage {
                body: Some(agent_message::Body::Hello(hello)),
            }))) => hello,
            Ok(Some(Ok(_))) => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be Hello",
                ));
            }
            Ok(Some(Err(status))) => return Err(status),
            Ok(None) => return Err(Status::cancelled("the agent left before saying Hello")),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
        };
        if hello.node.trim().is_empty() {
            return Err(Status::invalid_argument(
                "Hello names no node; set NODE_NAME on the agent",
            ));
        }
        let node = hello.node.clone();
        let AgentPod {
            name: pod,
            uid: pod_uid,
        } = self
            .verifier
            .verify(&hello.token, &node)
            .await
            .map_err(|refusal| {
                let status = refusal.status();
                tracing::warn!(%node, "refused an agent's session: {}", status.message());
                status
            })?;
        // Outbound: Welcome first, work after (jobs can be queued only once the session is
        // registered, below). A small buffer: the server never floods an agent.
        let (tx, rx) = mpsc::channel(16);
        let welcome = ServerMessage {
            body: Some(server_message::Body::Welcome(Welcome {
                heartbeat_interval_ms: u64::try_from(self.heartbeat.as_millis())
                    .unwrap_or(u64::MAX),
                server_version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        };
        // Queued before the session is registered, so it precedes any job; a refused session
        // drops the queue unsent.
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("the agent left"))?;
        let session = self
            .register(
                AgentInfo {
                    node: node.clone(),
                    version: hello.version,
                    concurrency: hello.concurrency,
                    host_pods: hello.host_pods,
                    host_pods_problem: (!hello.host_pods_problem.is_empty())
                        .then_some(hello.host_pods_problem),
                    pod: pod.clone(),
                    pod_uid,
                    connected_since: jiff::Timestamp::now().to_string(),
                    last_seen_ms: 0,
                },
                tx.clone(),
            )
            .inspect_err(|status| {
                tracing::warn!(%node, "refused an agent's session: {}", status.message());
            })?;
        tracing::info!(%node, %pod, concurrency = hello.concurrency, "agent connected");
        if let Some(problem) = self.host_pods_problem(&node) {
            tracing::warn!(%node, "the agent cannot see the node's pods: {problem}");
        }
        let agents = self.clone();
        tokio::spawn(async move {
            // Holding the sender keeps the outbound stream open as long as the session lives.
            let _outbound = tx;
            agents.follow(node, session, inbound).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
