//! The test cluster: the API-server stand-in, a bucket on the S3 server, one `lifeboat server`
//! process and one `lifeboat agent` process per simulated node (each with its own host-pods
//! directory), all on loopback, driven through the real `lifeboat` CLI.
//!
//! It is what a test (or a person, through the `testcluster` binary) gets instead of a real
//! cluster: the only stand-in is the API server; every lifeboat part is the real binary.
//! Processes are killed when the cluster is dropped, however the test ends.
//!
//! The harness plays the scheduler's and the kubelet's part for each agent, as TESTING.md
//! describes: it creates the agent's Pod object in the install namespace (`restic-<node>`, the
//! agents' ServiceAccount, bound to the node, Running), asks the API server for a token bound to
//! that pod for the `lifeboat` audience (TokenRequest, as the kubelet does for the DaemonSet's
//! projected volume), writes it to a file and starts the agent with `--token-file`. A restarted
//! agent keeps its pod, as a restarted container does.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_server::ServerOptions;
/// An agent Pod object (its name and UID), as the harness created it and the server records it.
pub use lifeboat_server::identity::AgentPod;

use crate::apiserver::ApiServer;
use crate::bin::{Run, lifeboat_exe};

/// Where the backups go.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A bucket on the S3 server (moto), reached with an AWS credentials file.
    S3(crate::s3::S3),
    /// A directory (the `filesystem` provider).
    Directory(PathBuf),
}

/// A running lifeboat process and its log file.
#[derive(Debug)]
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("create a process log");
        let err = out.try_clone().expect("clone the log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self { child, log }
    }

    fn stop(&mut self) {
        // SIGTERM first: the processes shut down cleanly on it (as in a pod); kill if they hang.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The peak resident set of a running process so far, in KiB (`VmHWM` of its `/proc` status).
fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .expect("the process's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// A simulated cluster with lifeboat's processes.
pub struct Cluster {
    pub api: ApiServer,
    /// Scratch space: kubeconfig, logs, certificates, host-pods roots.
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// The install namespace.
    pub namespace: String,
    pub storage: Storage,
    /// The cloud credentials file given to install and the server.
    pub credentials: PathBuf,
    metrics_port: u16,
    grpc_port: u16,
    server: Option<Proc>,
    /// How many times a server process was started (names its log).
    server_starts: u32,
    agents: BTreeMap<String, Proc>,
    /// Extra environment of the next agent started.
    agent_env: Vec<(String, String)>,
    /// The health port of each agent process.
    agent_health: BTreeMap<String, u16>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("api", &self.api.url())
            .field("dir", &self.dir.path())
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in self.agents.values_mut() {
            agent.stop();
        }
        if let Some(server) = &mut self.server {
            server.stop();
        }
    }
}

impl Cluster {
    /// A cluster whose backups go to a new bucket on the S3 server.
    pub fn with_s3(test: &str) -> Self {
        Self::new(Storage::S3(crate::s3::S3::bucket(test)))
    }

    /// A second, fresh cluster whose install writes to the same bucket and prefix as `other`'s
    /// (as a cluster restored elsewhere, or migrated, sees its old cluster's backups).
    pub fn with_storage_of(other: &Cluster) -> Self {
        Self::new(other.storage.clone())
    }

    /// A cluster for `storage` with lifeboat installed, the server and one agent per node
    /// running, every agent's session up and the default location Available.
    pub fn running(storage: Storage, nodes: &[&str]) -> Self {
        let mut cluster = Self::new(storage);
        cluster.install().ok();
        cluster.start_server();
        for node in nodes {
            cluster.start_agent(node);
        }
        wait_for("the agents' sessions", Duration::from_secs(30), || {
            (cluster.live_agents().len() == nodes.len()).then_some(())
        });
        wait_for("the location to validate", Duration::from_secs(30), || {
            let bsl = cluster.velero_object("backupstoragelocations", "default")?;
            (bsl["status"]["phase"] == "Available").then_some(())
        });
        cluster
    }

    /// A cluster for `storage`, with nothing installed yet.
    pub fn new(storage: Storage) -> Self {
        let api = ApiServer::start().expect("start the API-server stand-in");
        let dir = tempfile::tempdir().expect("a scratch directory");
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)
            .expect("write the kubeconfig");
        let credentials = dir.path().join("credentials-velero");
        // moto accepts any keys; the server must still send some.
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = test\naws_secret_access_key = test\n",
        )
        .expect("write the credentials file");
        Self {
            api,
            kubeconfig,
            namespace: "velero".into(),
            storage,
            credentials,
            metrics_port: free_port(),
            grpc_port: free_port(),
            server: None,
            server_starts: 0,
            agents: BTreeMap::new(),
            agent_env: Vec::new(),
            agent_health: BTreeMap::new(),
            dir,
        }
    }

    /// The S3 bucket of a cluster made by [`Cluster::with_s3`].
    pub fn s3(&self) -> &crate::s3::S3 {
        match &self.storage {
            Storage::S3(s3) => s3,
            Storage::Directory(dir) => panic!("this cluster stores in {}, not S3", dir.display()),
        }
    }

    /// The `lifeboat` command with this cluster's kubeconfig and a private client config.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(lifeboat_exe());
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env(
                "LIFEBOAT_CONFIG",
                self.dir.path().join("client-config.json"),
            )
            .env_remove("VELERO_NAMESPACE")
            .env_remove("LIFEBOAT_NAMESPACE")
            .env("LIFEBOAT_LOG", "error");
        cmd
    }

    /// Runs `lifeboat ARGS` as a user would, against this cluster.
    pub fn lifeboat<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run lifeboat");
        Run::from_output(out)
    }

    /// The install flags for this cluster's storage.
    pub fn install_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["install".into(), "--use-restic".into()];
        match &self.storage {
            Storage::S3(s3) => args.extend([
                "--provider".into(),
                "aws".into(),
                "--bucket".into(),
                s3.bucket.clone(),
                "--prefix".into(),
                "cluster-a".into(),
                "--backup-location-config".into(),
                format!(
                    "region=us-east-1,s3ForcePathStyle=true,s3Url={}",
                    s3.endpoint
                ),
                "--secret-file".into(),
                self.credentials.display().to_string(),
            ]),
            Storage::Directory(dir) => args.extend([
                "--provider".into(),
                "filesystem".into(),
                "--bucket".into(),
                dir.display().to_string(),
                "--prefix".into(),
                "cluster-a".into(),
                "--no-secret".into(),
            ]),
        }
        args
    }

    /// `lifeboat install --use-restic …` for this cluster's storage; panics unless it succeeds.
    pub fn install(&self) -> Run {
        self.lifeboat(self.install_args()).ok()
    }

    /// Writes the `tls.crt`, `tls.key` and `ca.crt` of the Secret `name` (as install created
    /// it) into a directory, as the pod's Secret volume would, and returns the directory.
    pub fn tls_dir(&self, secret: &str) -> PathBuf {
        use base64::Engine as _;
        let obj = self
            .api
            .get("v1", "secrets", Some(&self.namespace), secret)
            .unwrap_or_else(|| panic!("the Secret {secret} does not exist: run install first"));
        let dir = self.dir.path().join("secrets").join(secret);
        std::fs::create_dir_all(&dir).expect("create the secret directory");
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            let text = obj["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("the Secret {secret} has no {key}"));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("Secret data is base64");
            std::fs::write(dir.join(key), bytes).expect("write a certificate file");
        }
        dir
    }

    /// `http://127.0.0.1:PORT` of the server's health and metrics endpoint.
    pub fn metrics_address(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    /// The server's gRPC address as agents dial it.
    pub fn grpc_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// Starts `lifeboat server` as the Deployment would, and waits until it is ready.
    pub fn start_server(&mut self) {
        self.start_server_with(&[]);
    }

    /// Starts `lifeboat server` with `extra` flags after the usual ones (later flags win, so
    /// these may also override them), and waits until it is ready.
    pub fn start_server_with(&mut self, extra: &[&str]) {
        let tls = self.tls_dir("lifeboat-server-tls");
        let mut cmd = self.command();
        cmd.args([
            "server",
            "--metrics-address",
            &self.metrics_address(),
            "--grpc-address",
            &format!("127.0.0.1:{}", self.grpc_port),
            "--agent-heartbeat",
            "1s",
            "--location-validation-timeout",
            "10s",
        ])
        .arg("--tls-dir")
        .arg(&tls)
        .args(extra)
        .env("VELERO_NAMESPACE", &self.namespace)
        .env("AWS_SHARED_CREDENTIALS_FILE", &self.credentials)
        .env(
            "LIFEBOAT_LOG",
            "info,kube=warn,tower=warn,h2=warn,hyper=warn",
        );
        // Each start logs to a file of its own (server.log, server-2.log, …): a restart after
        // a kill must not truncate what the killed process said.
        self.server_starts += 1;
        let log = match self.server_starts {
            1 => self.dir.path().join("server.log"),
            n => self.dir.path().join(format!("server-{n}.log")),
        };
        let mut proc = Proc::spawn(cmd, log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http_get(&self.metrics_address(), "/readyz") {
                break;
            }
            assert!(
                proc.alive(),
                "the server exited:\n{}",
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "the server did not become ready in 30 s:\n{}",
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.server = Some(proc);
    }

    /// The host-pods root of `node` (kubelet's `/var/lib/kubelet/pods` on that node).
    pub fn host_pods(&self, node: &str) -> PathBuf {
        self.dir.path().join("nodes").join(node).join("pods")
    }

    /// Starts `lifeboat agent` for `node` with the install's agent certificate, in the agent
    /// pod of the node (see [`Cluster::agent_pod`]) with a token of that pod.
    pub fn start_agent(&mut self, node: &str) {
        self.start_agent_with(node, &[]);
    }

    /// Starts the agent of `node` with extra arguments (`--concurrency 8`).
    pub fn start_agent_with(&mut self, node: &str, args: &[&str]) {
        let tls = self.tls_dir("lifeboat-agent-tls");
        let pod = self.agent_pod(node);
        let token = self.agent_token(&pod.name);
        self.spawn_agent(node, node, &tls, Some(&token), args);
    }

    /// Starts `lifeboat agent` for `node` with the certificates in `tls` (and a token of the
    /// node's agent pod).
    pub fn start_agent_with_tls(&mut self, node: &str, tls: &Path) {
        let pod = self.agent_pod(node);
        let token = self.agent_token(&pod.name);
        self.spawn_agent(node, node, tls, Some(&token), &[]);
    }

    /// Starts the agent of `node` (with its pod's token) with extra environment variables
    /// (`POD_UID`).
    pub fn start_agent_with_env(&mut self, node: &str, env: &[(&str, &str)]) {
        self.agent_env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.start_agent(node);
        self.agent_env.clear();
    }

    /// Starts an agent process called `process` (its log: [`Cluster::agent_log`] of that name)
    /// claiming `node` (`NODE_NAME`), with the install's agent certificate and `token_file`
    /// as its token (None: a token file that does not exist). For tests of what an agent can
    /// claim: `token_file` need not belong to `node`'s pod.
    pub fn start_agent_as(&mut self, process: &str, node: &str, token_file: Option<&Path>) {
        let tls = self.tls_dir("lifeboat-agent-tls");
        self.spawn_agent(process, node, &tls, token_file, &[]);
    }

    /// The agent pod of `node` (`restic-<node>`), created as the DaemonSet's would be when it
    /// does not exist yet.
    pub fn agent_pod(&self, node: &str) -> AgentPod {
        let name = format!("{}-{node}", lifeboat_server::install::DAEMONSET);
        match self.api.get("v1", "pods", Some(&self.namespace), &name) {
            Some(pod) => AgentPod {
                uid: pod["metadata"]["uid"]
                    .as_str()
                    .expect("a stored pod has a uid")
                    .to_string(),
                name,
            },
            None => self.create_agent_pod(&name, node),
        }
    }

    /// Creates a pod `name` on `node` that looks like an agent's: the DaemonSet's label, the
    /// agents' ServiceAccount, bound to the node and Running.
    pub fn create_agent_pod(&self, name: &str, node: &str) -> AgentPod {
        let daemon_set = lifeboat_server::install::DAEMONSET;
        let pod = self
            .api
            .put_object(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {"name": daemon_set, "component": "velero"},
                },
                "spec": {
                    "serviceAccountName": lifeboat_server::install::AGENT_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "nodeName": node,
                    "containers": [{"name": daemon_set, "image": lifeboat_server::install::default_image()}],
                },
                "status": {"phase": "Running"},
            }))
            .unwrap_or_else(|e| panic!("create the agent pod {name}: {e}"));
        AgentPod {
            name: name.to_string(),
            uid: pod["metadata"]["uid"]
                .as_str()
                .expect("a created pod has a uid")
                .to_string(),
        }
    }

    /// A token bound to the agent pod `pod`, for the agents' audience, asked of the API server
    /// as the kubelet asks for a projected token, in a file of its own; returns the file.
    pub fn agent_token(&self, pod: &str) -> PathBuf {
        self.pod_token(pod, lifeboat_agent::token::AUDIENCE)
    }

    /// A token of the agents' ServiceAccount bound to `pod`, for `audience`, in a file of its
    /// own (named for both); returns the file.
    pub fn pod_token(&self, pod: &str, audience: &str) -> PathBuf {
        use k8s_openapi::api::authentication::v1::{
            BoundObjectReference, TokenRequest, TokenRequestSpec,
        };
        use k8s_openapi::api::core::v1::ServiceAccount;
        let uid = self
            .api
            .get("v1", "pods", Some(&self.namespace), pod)
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no pod {pod} to bind a token to"));
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.to_string()),
                    uid: Some(uid),
                }),
            },
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let issued: TokenRequest = rt.block_on(async {
            let client = self.api.client().await.expect("a client");
            kube::Api::<ServiceAccount>::namespaced(client, &self.namespace)
                .create_subresource(
                    "token",
                    lifeboat_server::install::AGENT_ACCOUNT,
                    &Default::default(),
                    &request,
                )
                .await
                .unwrap_or_else(|e| panic!("a token for the agent pod {pod}: {e}"))
        });
        let token = issued.status.expect("an issued token has a status").token;
        let dir = self.dir.path().join("tokens");
        std::fs::create_dir_all(&dir).expect("create the token directory");
        let file = dir.join(format!(
            "{pod}-{}",
            audience.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        std::fs::write(&file, token).expect("write the token file");
        file
    }

    /// Starts agent process `process` for `node` (see [`Cluster::start_agent_as`]).
    fn spawn_agent(
        &mut self,
        process: &str,
        node: &str,
        tls: &Path,
        token_file: Option<&Path>,
        extra: &[&str],
    ) {
        let host_pods = self.host_pods(node);
        std::fs::create_dir_all(&host_pods).expect("create the host-pods root");
        let mut cmd = self.command();
        cmd.args(["agent", "--server", &self.grpc_url()])
            .arg("--server-name")
            .arg(format!("lifeboat.{}.svc", self.namespace))
            .arg("--host-pods")
            .arg(&host_pods)
            .arg("--tls-dir")
            .arg(tls)
            .arg("--health-address")
            .arg(format!("127.0.0.1:{}", self.agent_health_port(process)))
            .arg("--token-file")
            .arg(token_file.map_or_else(
                || self.dir.path().join("tokens").join("none"),
                Path::to_path_buf,
            ))
            .args(extra)
            // Agents hold no store credentials of their own (the server sends them with each
            // job); a test's own AWS settings must not stand in for that.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .env("NODE_NAME", node)
            .env("VELERO_NAMESPACE", &self.namespace)
            .env("LIFEBOAT_LOG", "info,h2=warn,hyper=warn,tower=warn")
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        let log = self.dir.path().join(format!("agent-{process}.log"));
        if let Some(mut old) = self.agents.remove(process) {
            old.stop();
        }
        self.agents
            .insert(process.to_string(), Proc::spawn(cmd, log));
    }

    /// The port of the health endpoint of agent process `process` (one per process, kept
    /// across restarts).
    pub fn agent_health_port(&mut self, process: &str) -> u16 {
        *self
            .agent_health
            .entry(process.to_owned())
            .or_insert_with(free_port)
    }

    /// `GET path` on the health endpoint of agent process `process`: status and body.
    pub fn agent_health(&mut self, process: &str, path: &str) -> Option<(u16, String)> {
        let port = self.agent_health_port(process);
        http_get(&format!("127.0.0.1:{port}"), path)
    }

    /// Kills the agent of `node` with SIGKILL, as an OOM kill or node failure would.
    pub fn kill_agent(&mut self, node: &str) {
        let mut proc = self
            .agents
            .remove(node)
            .unwrap_or_else(|| panic!("no agent runs for {node}"));
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the agent of `node`: a frozen process keeps its
    /// connection open but sends nothing, as a hung process or a dropped network path would.
    pub fn freeze_agent(&mut self, node: &str, frozen: bool) {
        let proc = self
            .agents
            .get(node)
            .unwrap_or_else(|| panic!("no agent runs for {node}"));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(proc.child.id()).unwrap_or(i32::MAX));
        let signal = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(pid, signal).expect("signal the agent");
    }

    /// The peak resident set of `node`'s running agent so far, in KiB (`VmHWM`).
    pub fn agent_peak_rss_kib(&self, node: &str) -> u64 {
        let proc = self
            .agents
            .get(node)
            .unwrap_or_else(|| panic!("no agent runs for {node}"));
        peak_rss_kib(&proc.child)
    }

    /// The peak resident set of the running server so far, in KiB (`VmHWM`).
    pub fn server_peak_rss_kib(&self) -> u64 {
        peak_rss_kib(&self.server.as_ref().expect("no server runs").child)
    }

    /// Whether the agent process of `node` still runs.
    pub fn agent_running(&mut self, node: &str) -> bool {
        self.agents.get_mut(node).is_some_and(Proc::alive)
    }

    /// The server's `/agents` endpoint: one JSON object per live agent.
    pub fn agents_json(&self) -> Vec<serde_json::Value> {
        let Some((200, body)) = http_get(&self.metrics_address(), "/agents") else {
            return Vec::new();
        };
        serde_json::from_str(&body).expect("/agents answers JSON")
    }

    /// The nodes the server counts as having a live agent (its `/agents` endpoint).
    pub fn live_agents(&self) -> Vec<String> {
        let Some((200, body)) = http_get(&self.metrics_address(), "/agents") else {
            return Vec::new();
        };
        let agents: Vec<serde_json::Value> =
            serde_json::from_str(&body).expect("/agents answers JSON");
        agents
            .iter()
            .filter_map(|a| a["node"].as_str().map(str::to_string))
            .collect()
    }

    /// The server's `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(&self.metrics_address(), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The server's log so far: every process started, oldest first.
    pub fn server_log(&self) -> String {
        (1..=self.server_starts)
            .map(|n| match n {
                1 => self.dir.path().join("server.log"),
                n => self.dir.path().join(format!("server-{n}.log")),
            })
            .map(|log| std::fs::read_to_string(log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Kills the server with SIGKILL, as an OOM kill or a node failure would: it gets no
    /// chance to finish or mark anything.
    pub fn kill_server(&mut self) {
        let mut proc = self.server.take().expect("no server runs");
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }

    /// The install's backup storage location (its bucket and the prefix `cluster-a`), read
    /// and written as the server does.
    pub fn bucket(&self) -> crate::bucket::TestBucket {
        crate::bucket::TestBucket::open(&self.storage, "cluster-a")
    }

    /// The options `lifeboat server` would run with (the install's TLS Secret, this cluster's
    /// ports and namespace, the harness's 10 s validation timeout), on `clock`: for a test that
    /// runs the server in its own process, where it can move the clock.
    pub fn server_options(&self, clock: lifeboat_server::clock::Clock) -> ServerOptions {
        let tls = lifeboat_agent::TlsMaterial::load(&self.tls_dir("lifeboat-server-tls"))
            .expect("the install's server certificate loads");
        ServerOptions {
            namespace: self.namespace.clone(),
            metrics_address: self.metrics_address().parse().expect("a socket address"),
            grpc_address: format!("127.0.0.1:{}", self.grpc_port)
                .parse()
                .expect("a socket address"),
            tls,
            heartbeat: Duration::from_secs(1),
            features: Vec::new(),
            settings: lifeboat_server::Settings {
                validation_timeout: Duration::from_secs(10),
                ..Default::default()
            },
            clock,
        }
    }

    /// Runs the server in this process with `opts` (see [`Cluster::server_options`]) on a
    /// runtime of its own, and waits until it is ready. Cloud credentials come from this
    /// process's environment (S3 clusters: exported here).
    pub fn start_server_in_process(&self, opts: ServerOptions) -> InProcessServer {
        if let Storage::S3(s3) = &self.storage {
            s3.export_env();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let token = tokio_util::sync::CancellationToken::new();
        let client = runtime
            .block_on(self.api.client())
            .expect("a client for the API server stand-in");
        let task = runtime.spawn(lifeboat_server::run(client, opts, token.clone()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(&self.metrics_address(), "/readyz"), Some((200, _))) {
            if task.is_finished() {
                panic!("the in-process server ended: {:?}", runtime.block_on(task));
            }
            assert!(
                Instant::now() < deadline,
                "the in-process server did not become ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        InProcessServer {
            runtime: Some(runtime),
            token,
            task: Some(task),
        }
    }

    /// The log of `node`'s agent so far.
    pub fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{node}.log")))
            .unwrap_or_default()
    }

    /// Creates the Secret `name` in the install namespace holding `key` = `value`.
    pub fn create_secret(&self, name: &str, key: &str, value: &[u8]) {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            data: Some([(key.to_string(), ByteString(value.to_vec()))].into()),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let client = self.api.client().await.expect("a client");
            kube::Api::<Secret>::namespaced(client, &self.namespace)
                .create(&Default::default(), &secret)
                .await
                .expect("create the Secret");
        });
    }

    /// Stops the server with SIGTERM, as Kubernetes does, and returns its exit code.
    pub fn stop_server(&mut self) -> Option<i32> {
        let mut proc = self.server.take()?;
        proc.stop();
        proc.child.wait().ok().and_then(|s| s.code())
    }

    /// One object of the install namespace as JSON, read straight from the stand-in.
    pub fn velero_object(&self, plural: &str, name: &str) -> Option<serde_json::Value> {
        self.api
            .get("velero.io/v1", plural, Some(&self.namespace), name)
    }
}

/// A server running in the test's own process (see [`Cluster::start_server_in_process`]);
/// dropping it shuts it down as SIGTERM would and waits for it.
pub struct InProcessServer {
    runtime: Option<tokio::runtime::Runtime>,
    token: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<lifeboat_server::Result<()>>>,
}

impl std::fmt::Debug for InProcessServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessServer").finish_non_exhaustive()
    }
}

impl InProcessServer {
    /// Shuts the server down and returns how it ended.
    pub fn stop(mut self) -> lifeboat_server::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> lifeboat_server::Result<()> {
        self.token.cancel();
        let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) else {
            return Ok(());
        };
        let outcome =
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
        // Whatever still runs (a stuck task) is dropped with the runtime, not waited for.
        runtime.shutdown_background();
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => panic!("the in-process server panicked: {join}"),
            Err(_) => panic!("the in-process server did not stop within 10 s of its shutdown"),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.token.cancel();
            if let Some(runtime) = self.runtime.take() {
                runtime.shutdown_background();
            }
            return;
        }
        if let Err(e) = self.shutdown() {
            eprintln!("the in-process server ended with an error: {e}");
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET path` on `addr` over plain HTTP/1.1; the status and body, or None when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Some((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
