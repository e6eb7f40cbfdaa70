//! Which node an agent may serve, through the real binaries: every agent holds the install's
//! one client certificate, so the certificate alone must get nothing. An agent proves its node
//! with its pod's projected ServiceAccount token, which the server has the API server (here
//! the stand-in) review; the token's pod must run on the node the agent claims, and while a
//! node's agent is live no other pod may take the node over. The harness plays the kubelet: it
//! creates each agent's Pod object and asks the API server for a token bound to it.

use std::path::PathBuf;
use std::time::Duration;

use lifeboat_tests::cluster::{Cluster, Storage, wait_for};
use serde_json::{Value, json};

/// How long a refusal or a session may take to show up (agents retry after 1 s, then 2 s…).
const WAIT: Duration = Duration::from_secs(20);

/// A running cluster with an agent on each of `nodes`, backups in a directory.
fn cluster(nodes: &[&str]) -> (Cluster, tempfile::TempDir) {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let bucket = scratch.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("create the bucket directory");
    (Cluster::running(Storage::Directory(bucket), nodes), scratch)
}

/// Waits until the log of agent process `process` contains `text`; returns the log.
fn agent_says(cluster: &Cluster, process: &str, text: &str) -> String {
    wait_for(&format!("agent {process} to log {text:?}"), WAIT, || {
        let log = cluster.agent_log(process);
        log.contains(text).then_some(log)
    })
}

/// The `/agents` entry of `node`.
fn live_entry(cluster: &Cluster, node: &str) -> Option<Value> {
    cluster
        .agents_json()
        .into_iter()
        .find(|a| a["node"] == node)
}

/// Asserts that `node`'s live session is the one of the agent pod `pod`.
fn assert_session_of(cluster: &Cluster, node: &str, pod: &lifeboat_tests::cluster::AgentPod) {
    let entry = live_entry(cluster, node).unwrap_or_else(|| panic!("{node} has no live agent"));
    assert_eq!(entry["pod"], pod.name.as_str(), "{entry:#}");
    assert_eq!(entry["podUid"], pod.uid.as_str(), "{entry:#}");
}

/// A file holding `text` as a token.
fn token_file(cluster: &Cluster, name: &str, text: &str) -> PathBuf {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, text).expect("write a token file");
    path
}

/// Backs up one pod on `node` whose volume holds a file; returns the backup's pod volume
/// backup once the backup has ended.
fn back_up_a_pod_on(cluster: &Cluster, node: &str, backup: &str) -> Value {
    let ns = format!("app-{node}");
    let put = |object: Value| {
        cluster
            .api
            .put_object(object)
            .expect("the stand-in stores the object")
    };
    put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    let pod = put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app-0", "namespace": ns,
            "annotations": {"backup.velero.io/backup-volumes": "data"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}],
            "volumes": [{"name": "data", "emptyDir": {}}]},
        "status": {"phase": "Running"}
    }));
    let uid = pod["metadata"]["uid"].as_str().expect("a uid");
    let volume = cluster
        .host_pods(node)
        .join(uid)
        .join("volumes/kubernetes.io~empty-dir/data");
    std::fs::create_dir_all(&volume).expect("create the volume directory");
    std::fs::write(volume.join("file.txt"), format!("data of {node}\n")).expect("write a file");
    cluster
        .lifeboat(["backup", "create", backup, "--include-namespaces", &ns])
        .ok();
    let done = wait_for("the backup to end", Duration::from_secs(60), || {
        let b = cluster.velero_object("backups", backup)?;
        let phase = b["status"]["phase"].as_str()?.to_owned();
        (!["New", "InProgress"].contains(&phase.as_str())).then_some(b)
    });
    assert_eq!(done["status"]["phase"], "Completed", "{done:#}");
    let pvbs: Vec<Value> = cluster
        .api
        .objects()
        .into_iter()
        .filter(|o| o.group == "velero.io" && o.plural == "podvolumebackups")
        .map(|o| o.object)
        .filter(|p| p["metadata"]["labels"]["velero.io/backup-name"] == backup)
        .collect();
    assert_eq!(pvbs.len(), 1, "{pvbs:#?}");
    let pvb = pvbs.into_iter().next().expect("one pod volume backup");
    assert_eq!(pvb["status"]["phase"], "Completed", "{pvb:#}");
    assert_eq!(pvb["spec"]["node"], node, "{pvb:#}");
    pvb
}

#[test]
fn an_agent_with_another_node_s_token_is_refused_and_that_node_keeps_its_own_agent() {
    let (mut cluster, _scratch) = cluster(&["node-1", "node-2"]);
    let node_2 = cluster.agent_pod("node-2");
    // The shared certificate and a valid token of node-1's agent pod, claiming node-2.
    let stolen = cluster.agent_token(&cluster.agent_pod("node-1").name);
    cluster.start_agent_as("intruder", "node-2", Some(&stolen));

    let refusal = "the agent's pod velero/restic-node-1 runs on node node-1, not node-2";
    let log = agent_says(&cluster, "intruder", refusal);
    assert!(log.contains("PermissionDenied"), "{log}");
    let server_log = cluster.server_log();
    assert!(
        server_log.contains("refused an agent's session") && server_log.contains(refusal),
        "{server_log}"
    );
    // Refused again on its retry, and node-2's real agent kept its session throughout.
    wait_for("the intruder's second refusal", WAIT, || {
        (cluster.agent_log("intruder").matches(refusal).count() >= 2).then_some(())
    });
    assert!(
        cluster.agent_running("intruder"),
        "the agent keeps retrying"
    );
    assert_session_of(&cluster, "node-2", &node_2);

    // node-2's work goes to node-2's agent, and only to it.
    back_up_a_pod_on(&cluster, "node-2", "on-node-2");
    assert!(
        cluster
            .agent_log("node-2")
            .contains("backing up a pod volume"),
        "{}",
        cluster.agent_log("node-2")
    );
    let intruder = cluster.agent_log("intruder");
    assert!(
        !intruder.contains("backing up") && !intruder.contains("session with the server open"),
        "{intruder}"
    );
    assert_session_of(&cluster, "node-2", &node_2);
}

#[test]
fn an_agent_without_a_valid_token_is_refused() {
    let (mut cluster, _scratch) = cluster(&["node-1"]);

    // No token file: the agent says so and keeps trying, as after any failed session.
    cluster.start_agent_as("tokenless", "node-2", None);
    let log = agent_says(
        &cluster,
        "tokenless",
        "cannot read the agent's ServiceAccount token",
    );
    assert!(log.contains("--token-file"), "{log}");

    // A token the API server never issued.
    let garbage = token_file(&cluster, "garbage-token", "not-a-token\n");
    cluster.start_agent_as("garbage", "node-2", Some(&garbage));
    let log = agent_says(&cluster, "garbage", "the agent's token is not valid");
    assert!(log.contains("Unauthenticated"), "{log}");

    // A real token of node-1's agent pod, but for the API server's audience (what a pod's
    // auto-mounted token would be): not valid here.
    let node_1 = cluster.agent_pod("node-1");
    let api_token = cluster.pod_token(&node_1.name, "https://kubernetes.default.svc.cluster.local");
    cluster.start_agent_as("api-audience", "node-1", Some(&api_token));
    agent_says(&cluster, "api-audience", "the agent's token is not valid");

    assert!(
        cluster
            .server_log()
            .contains("refused an agent's session: the agent's token is not valid"),
        "{}",
        cluster.server_log()
    );
    assert_eq!(cluster.live_agents(), ["node-1"]);
    assert_session_of(&cluster, "node-1", &node_1);
    for process in ["tokenless", "garbage", "api-audience"] {
        assert!(cluster.agent_running(process), "{process} keeps retrying");
    }
}

#[test]
fn a_second_pod_for_a_live_node_is_refused_until_the_first_session_times_out() {
    let (mut cluster, _scratch) = cluster(&["node-1"]);
    let first = cluster.agent_pod("node-1");
    // A second agent-looking pod on node-1, with a valid token of its own.
    let second = cluster.create_agent_pod("restic-second", "node-1");
    let token = cluster.agent_token(&second.name);
    cluster.start_agent_as("second", "node-1", Some(&token));

    let log = agent_says(&cluster, "second", "already has a live agent");
    assert!(
        log.contains(&format!("pod {} (uid {})", first.name, first.uid))
            && log.contains(&format!("pod {} (uid {})", second.name, second.uid)),
        "the refusal names both pods:\n{log}"
    );
    assert!(log.contains("PermissionDenied"), "{log}");
    assert_session_of(&cluster, "node-1", &first);

    // The first keeps its jobs.
    back_up_a_pod_on(&cluster, "node-1", "on-node-1");
    assert!(
        cluster
            .agent_log("node-1")
            .contains("backing up a pod volume")
    );
    assert!(!cluster.agent_log("second").contains("backing up"));

    // Once the first goes silent for three heartbeats (1 s each here), the second gets in.
    cluster.freeze_agent("node-1", true);
    wait_for("the second pod's session", WAIT, || {
        live_entry(&cluster, "node-1")
            .is_some_and(|e| e["pod"] == second.name.as_str())
            .then_some(())
    });
    assert_session_of(&cluster, "node-1", &second);
    assert!(
        cluster.server_log().contains("no heartbeat"),
        "{}",
        cluster.server_log()
    );
    cluster.kill_agent("node-1");
}

#[test]
fn the_same_pod_s_restarted_agent_replaces_its_live_session() {
    let (mut cluster, _scratch) = cluster(&["node-1"]);
    let pod = cluster.agent_pod("node-1");
    let before = live_entry(&cluster, "node-1").expect("node-1 is live");

    // The old process hangs with its session still live; a new process of the same pod (a
    // restarted container) dials at once and takes the session over.
    cluster.freeze_agent("node-1", true);
    let token = cluster.agent_token(&pod.name);
    cluster.start_agent_as("node-1-restarted", "node-1", Some(&token));
    agent_says(&cluster, "node-1-restarted", "session with the server open");
    let after = live_entry(&cluster, "node-1").expect("node-1 is live");
    assert_ne!(after["connectedSince"], before["connectedSince"]);
    assert_session_of(&cluster, "node-1", &pod);
    let server_log = cluster.server_log();
    assert!(
        server_log.contains("a new session from the node replaces the old one"),
        "the new session replaced a live one, not a timed-out one:\n{server_log}"
    );
    assert!(
        !server_log.contains("refused an agent's session"),
        "{server_log}"
    );
    cluster.kill_agent("node-1");

    // And the session does work.
    back_up_a_pod_on(&cluster, "node-1", "after-restart");
    assert!(
        cluster
            .agent_log("node-1-restarted")
            .contains("backing up a pod volume")
    );
}

#[test]
fn a_token_of_a_deleted_or_deleting_pod_is_refused() {
    let (mut cluster, _scratch) = cluster(&["node-1"]);

    // The pod is gone: the API server no longer accepts its token.
    let gone = cluster.create_agent_pod("restic-gone", "node-2");
    let token = cluster.agent_token(&gone.name);
    cluster
        .api
        .delete_object("v1", "pods", Some(&cluster.namespace), &gone.name)
        .expect("delete the pod");
    cluster.start_agent_as("gone", "node-2", Some(&token));
    let log = agent_says(&cluster, "gone", "the agent's token is not valid");
    assert!(log.contains("restic-gone"), "{log}");

    // The pod is being deleted (a finalizer holds it): its token still authenticates, but the
    // server gives it no session.
    let leaving = cluster.create_agent_pod("restic-leaving", "node-3");
    let token = cluster.agent_token(&leaving.name);
    let mut pod = cluster
        .api
        .get("v1", "pods", Some(&cluster.namespace), &leaving.name)
        .expect("the pod");
    pod["metadata"]["finalizers"] = json!(["example.com/hold"]);
    cluster.api.put_object(pod).expect("add a finalizer");
    cluster
        .api
        .delete_object("v1", "pods", Some(&cluster.namespace), &leaving.name)
        .expect("start deleting the pod");
    cluster.start_agent_as("leaving", "node-3", Some(&token));
    agent_says(
        &cluster,
        "leaving",
        "the agent's pod velero/restic-leaving is being deleted",
    );
    assert_eq!(cluster.live_agents(), ["node-1"]);
}
