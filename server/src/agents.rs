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
//! A second session from the same node replaces the first (an agent pod restarted before its
//! old connection timed out); the replaced session ends without touching the new one.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use lifeboat_agent::proto::agents_server::{Agents as AgentsService, AgentsServer};
use lifeboat_agent::proto::{AgentMessage, ServerMessage, Welcome, agent_message, server_message};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

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
}

/// The registry of live agents, shared by the service and whoever needs to know which nodes
/// can take work. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agents {
    inner: Arc<Mutex<Registry>>,
    heartbeat: Duration,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Registry {
    next_session: u64,
    live: BTreeMap<String, Entry>,
}

impl Agents {
    /// An empty registry; agents are asked to send a heartbeat every `heartbeat`.
    pub fn new(heartbeat: Duration, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry::default())),
            heartbeat,
            metrics,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock (plain map updates), so poisoning cannot happen;
        // recover the data anyway rather than take the server down.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, info: AgentInfo) -> u64 {
        let mut reg = self.lock();
        reg.next_session += 1;
        let session = reg.next_session;
        let node = info.node.clone();
        if reg
            .live
            .insert(
                node.clone(),
                Entry {
                    session,
                    info,
                    last_seen: Instant::now(),
                },
            )
            .is_some()
        {
            tracing::info!(%node, "a new session from the node replaces the old one");
        }
        self.metrics.agents_live(reg.live.len());
        session
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

    fn deregister(&self, node: &str, session: u64) {
        let mut reg = self.lock();
        if reg.live.get(node).is_some_and(|e| e.session == session) {
            reg.live.remove(node);
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
                    match msg.body {
                        Some(agent_message::Body::Heartbeat(_)) => {}
                        Some(agent_message::Body::Hello(_)) => {
                            tracing::warn!(%node, "ignoring a second Hello on one session");
                        }
                        None => {}
                    }
                }
            }
        };
        self.deregister(&node, session);
        tracing::warn!(%node, "agent gone: {reason}");
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
        let session = self.register(AgentInfo {
            node: node.clone(),
            version: hello.version,
            concurrency: hello.concurrency,
            host_pods: hello.host_pods,
            connected_since: jiff::Timestamp::now().to_string(),
            last_seen_ms: 0,
        });
        tracing::info!(%node, concurrency = hello.concurrency, "agent connected");
        // Outbound: Welcome now, work later. A small buffer: the server never floods an agent.
        let (tx, rx) = mpsc::channel(16);
        let welcome = ServerMessage {
            body: Some(server_message::Body::Welcome(Welcome {
                heartbeat_interval_ms: u64::try_from(self.heartbeat.as_millis())
                    .unwrap_or(u64::MAX),
                server_version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("the agent left"))?;
        let agents = self.clone();
        tokio::spawn(async move {
            // Holding the sender keeps the outbound stream open as long as the session lives.
            let _outbound = tx;
            agents.follow(node, session, inbound).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
