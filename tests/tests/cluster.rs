//! System tests of the cluster side on the test cluster: the API-server stand-in, the S3
//! server, a real `lifeboat server` and real `lifeboat agent` processes, driven by the
//! `lifeboat` CLI as a user types it.

use std::time::{Duration, Instant};

use lifeboat_tests::cluster::{Cluster, wait_for};

/// The phase and message of a backup storage location.
fn location_state(cluster: &Cluster, name: &str) -> Option<(String, String)> {
    let bsl = cluster.velero_object("backupstoragelocations", name)?;
    let phase = bsl["status"]["phase"].as_str()?.to_string();
    let message = bsl["status"]["message"].as_str().unwrap_or("").to_string();
    Some((phase, message))
}

fn wait_for_phase(cluster: &Cluster, name: &str, phase: &str) -> String {
    wait_for(
        &format!("location {name} to become {phase}"),
        Duration::from_secs(30),
        || match location_state(cluster, name) {
            Some((p, message)) if p == phase => Some(message),
            _ => None,
        },
    )
}

#[test]
fn install_applies_the_crds_and_the_default_location_becomes_available() {
    let mut cluster = Cluster::with_s3("install-available");
    let run = cluster.install();
    assert!(run.stdout.contains("installed"), "{}", run.stdout);

    // The CRDs in the cluster are the ones generated from the types (and checked in).
    for crd in lifeboat_server::api::crds() {
        let name = crd.metadata.name.clone().expect("CRDs have names");
        let served = cluster
            .api
            .get(
                "apiextensions.k8s.io/v1",
                "customresourcedefinitions",
                None,
                &name,
            )
            .unwrap_or_else(|| panic!("install did not create the CRD {name}"));
        let checked_in: serde_json::Value = serde_yaml::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy/crds")
                    .join(format!("{name}.yaml")),
            )
            .expect("the checked-in CRD"),
        )
        .expect("CRD YAML");
        assert_eq!(served["spec"], checked_in["spec"], "CRD {name}");
    }

    // The location exists as install wrote it, and the server validates it.
    let bsl = cluster
        .velero_object("backupstoragelocations", "default")
        .expect("install creates the location `default`");
    assert_eq!(bsl["spec"]["default"], true);
    assert_eq!(bsl["spec"]["provider"], "aws");
    cluster.start_server();
    let message = wait_for_phase(&cluster, "default", "Available");
    assert_eq!(message, "");
    let bsl = cluster
        .velero_object("backupstoragelocations", "default")
        .expect("location");
    assert!(bsl["status"]["lastValidationTime"].is_string(), "{bsl}");

    let table = cluster.lifeboat(["backup-location", "get"]).ok().stdout;
    let row = table
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or_else(|| panic!("no row for default:\n{table}"));
    assert!(row.contains("Available") && row.contains("true"), "{table}");
    assert!(
        cluster
            .metrics()
            .contains("lifeboat_backup_storage_location_available{location=\"default\"} 1"),
        "{}",
        cluster.metrics()
    );
}

#[test]
fn a_location_whose_bucket_is_missing_is_unavailable_and_says_why() {
    let mut cluster = Cluster::with_s3("missing-bucket");
    cluster.install();
    cluster.start_server();
    let missing = lifeboat_tests::S3::missing_bucket();
    cluster
        .lifeboat([
            "backup-location",
            "create",
            "elsewhere",
            "--provider",
            "aws",
            "--bucket",
            &missing.bucket,
            "--config",
            &format!("region=us-east-1,s3Url={}", missing.endpoint),
        ])
        .ok();
    let message = wait_for_phase(&cluster, "elsewhere", "Unavailable");
    assert!(
        message.contains(&missing.bucket) && message.contains("does not exist"),
        "{message}"
    );
    // The good location is untouched by the bad one.
    wait_for_phase(&cluster, "default", "Available");

    // A prefix holding foreign data is refused with the directory named.
    let s3 = cluster.s3().clone();
    put_object(&s3, "shared/photos/cat.jpg");
    cluster
        .lifeboat([
            "backup-location",
            "create",
            "shared",
            "--provider",
            "aws",
            "--bucket",
            &s3.bucket,
            "--prefix",
            "shared",
            "--config",
            &format!("region=us-east-1,s3Url={}", s3.endpoint),
        ])
        .ok();
    let message = wait_for_phase(&cluster, "shared", "Unavailable");
    assert!(message.contains("photos"), "{message}");
}

/// Writes an object through the engine's bucket API (the same client the server uses).
fn put_object(s3: &lifeboat_tests::S3, key: &str) {
    s3.export_env();
    let location = lifeboat_repo::Location::parse(&s3.restic_url("")).expect("location");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let bucket = lifeboat_repo::Bucket::open(&location, &Default::default()).expect("bucket");
        bucket
            .put(key, bytes::Bytes::from_static(b"meow"))
            .await
            .expect("put");
    });
}

#[test]
fn setting_a_second_location_as_default_moves_the_default() {
    let mut cluster = Cluster::with_s3("move-default");
    cluster.install();
    cluster.start_server();
    let s3 = cluster.s3().clone();
    let config = format!("region=us-east-1,s3Url={}", s3.endpoint);
    cluster
        .lifeboat([
            "backup-location",
            "create",
            "second",
            "--provider",
            "aws",
            "--bucket",
            &s3.bucket,
            "--prefix",
            "second",
            "--config",
            &config,
            "--access-mode",
            "ReadOnly",
        ])
        .ok();
    let is_default = |name: &str| {
        cluster
            .velero_object("backupstoragelocations", name)
            .map(|b| b["spec"]["default"] == true)
            .unwrap_or(false)
    };
    assert!(is_default("default") && !is_default("second"));
    let out = cluster
        .lifeboat(["backup-location", "set", "second", "--default"])
        .ok();
    assert!(
        out.stdout.contains("configured successfully"),
        "{}",
        out.stdout
    );
    assert!(is_default("second") && !is_default("default"));

    let json = cluster
        .lifeboat(["backup-location", "get", "--default", "-o", "json"])
        .ok()
        .json();
    let names: Vec<&str> = json["items"]
        .as_array()
        .expect("a List")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["second"]);

    // A ReadOnly location validates without writing.
    wait_for_phase(&cluster, "second", "Available");

    // Errors name the input and change nothing.
    let err = cluster
        .lifeboat(["backup-location", "set", "nope", "--default"])
        .fails()
        .stderr;
    assert!(err.contains("\"nope\" does not exist"), "{err}");
    assert!(is_default("second"));
    let err = cluster
        .lifeboat([
            "backup-location",
            "create",
            "second",
            "--provider",
            "aws",
            "--bucket",
            "x",
        ])
        .fails()
        .stderr;
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn agents_with_the_install_certificate_connect_and_a_killed_agent_is_noticed_within_seconds() {
    let mut cluster = Cluster::with_s3("agents");
    cluster.install();
    cluster.start_server();
    cluster.start_agent("node-a");
    cluster.start_agent("node-b");
    wait_for("both agents to be live", Duration::from_secs(20), || {
        (cluster.live_agents() == ["node-a", "node-b"]).then_some(())
    });
    assert!(
        cluster.metrics().contains("lifeboat_agents_connected 2"),
        "{}",
        cluster.metrics()
    );
    // Each agent's readiness follows its session, as the DaemonSet's probe reads it.
    wait_for(
        "node-b's agent to be ready",
        Duration::from_secs(10),
        || (cluster.agent_health("node-b", "/readyz")?.0 == 200).then_some(()),
    );
    assert_eq!(
        cluster.agent_health("node-b", "/healthz").map(|(s, _)| s),
        Some(200)
    );

    let killed = Instant::now();
    cluster.kill_agent("node-a");
    wait_for("node-a to be gone", Duration::from_secs(10), || {
        (cluster.live_agents() == ["node-b"]).then_some(())
    });
    let noticed = killed.elapsed();
    assert!(noticed < Duration::from_secs(10), "took {noticed:?}");
    eprintln!("a killed agent was noticed after {noticed:?}");
    assert!(
        cluster.server_log().contains("agent gone"),
        "{}",
        cluster.server_log()
    );

    // It comes back when restarted.
    cluster.start_agent("node-a");
    wait_for("node-a to be back", Duration::from_secs(20), || {
        (cluster.live_agents() == ["node-a", "node-b"]).then_some(())
    });

    // A frozen agent keeps its connection but stops heartbeating (1 s here): gone after three
    // missed heartbeats, back when it thaws and dials again.
    let frozen = Instant::now();
    cluster.freeze_agent("node-b", true);
    wait_for("frozen node-b to be gone", Duration::from_secs(10), || {
        (cluster.live_agents() == ["node-a"]).then_some(())
    });
    let noticed = frozen.elapsed();
    eprintln!("a frozen agent was noticed after {noticed:?}");
    assert!(noticed >= Duration::from_secs(2), "too soon: {noticed:?}");
    assert!(
        cluster.server_log().contains("no heartbeat"),
        "{}",
        cluster.server_log()
    );
    cluster.freeze_agent("node-b", false);
    wait_for("node-b to be back", Duration::from_secs(20), || {
        (cluster.live_agents() == ["node-a", "node-b"]).then_some(())
    });
}

#[test]
fn an_agent_without_a_certificate_from_the_install_is_refused() {
    let mut cluster = Cluster::with_s3("foreign-cert");
    cluster.install();
    cluster.start_server();

    // A certificate from another authority, with the right name.
    let foreign = cluster.dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).expect("dir");
    let authority = lifeboat_server::pki::Authority::generate().expect("a CA");
    let agent = authority
        .issue_client("lifeboat-agent")
        .expect("a client certificate");
    std::fs::write(foreign.join("tls.crt"), &agent.cert).expect("write");
    std::fs::write(foreign.join("tls.key"), &agent.key).expect("write");
    // It trusts the real server CA, so only the server's check can refuse it.
    let real = cluster.tls_dir("lifeboat-agent-tls");
    std::fs::copy(real.join("ca.crt"), foreign.join("ca.crt")).expect("copy");

    cluster.start_agent_with_tls("intruder", &foreign);
    cluster.start_agent("node-a");
    wait_for("node-a to be live", Duration::from_secs(20), || {
        cluster
            .live_agents()
            .contains(&"node-a".to_string())
            .then_some(())
    });
    // The intruder has had as long as node-a, and keeps trying; it never gets in.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cluster.live_agents(), ["node-a"]);
    let log = cluster.agent_log("intruder");
    assert!(
        log.contains("cannot hold a session with the server"),
        "the intruder's log says nothing of the refusal:\n{log}"
    );
    // The server says whom it refused and why (the reason depends on the TLS version's timing
    // on the agent's side, not on the server's).
    let server_log = cluster.server_log();
    assert!(
        server_log.contains("refused a connection to the agents' service")
            && server_log.contains("certificate"),
        "{server_log}"
    );
    assert!(
        cluster.agent_running("intruder"),
        "the agent keeps retrying"
    );
    // And it is not ready: its probe names why.
    let (status, body) = cluster
        .agent_health("intruder", "/readyz")
        .expect("the health endpoint answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no session with the server"), "{body}");
}

#[test]
fn uninstall_removes_what_install_created() {
    let cluster = Cluster::with_s3("uninstall");
    cluster.install();
    assert!(
        cluster
            .api
            .get("v1", "namespaces", None, &cluster.namespace)
            .is_some()
    );
    let err = cluster.lifeboat(["uninstall"]).fails().stderr;
    assert!(err.contains("--force"), "{err}");
    cluster.lifeboat(["uninstall", "--force"]).ok();
    assert!(
        cluster
            .api
            .get("v1", "namespaces", None, &cluster.namespace)
            .is_none()
    );
    for crd in lifeboat_server::api::crds() {
        let name = crd.metadata.name.expect("CRDs have names");
        assert!(
            cluster
                .api
                .get(
                    "apiextensions.k8s.io/v1",
                    "customresourcedefinitions",
                    None,
                    &name
                )
                .is_none(),
            "{name} is still there"
        );
    }
    assert!(
        cluster
            .api
            .get(
                "rbac.authorization.k8s.io/v1",
                "clusterrolebindings",
                None,
                "velero"
            )
            .is_none()
    );
    // Uninstalling twice is fine.
    cluster.lifeboat(["uninstall", "--force"]).ok();
}

#[test]
fn a_location_uses_its_own_credential_secret() {
    let mut cluster = Cluster::with_s3("credentials");
    cluster.install();
    cluster.start_server();
    let s3 = cluster.s3().clone();
    let config = format!("region=us-east-1,profile=backup,s3Url={}", s3.endpoint);
    let create = |name: &str, credential: &str| {
        cluster
            .lifeboat([
                "backup-location",
                "create",
                name,
                "--provider",
                "aws",
                "--bucket",
                &s3.bucket,
                "--prefix",
                name,
                "--config",
                &config,
                "--credential",
                credential,
            ])
            .ok();
    };
    // The install's credentials file has no profile `backup`; the location's Secret has.
    cluster.create_secret(
        "bsl-credentials",
        "cloud",
        b"[backup]\naws_access_key_id = other\naws_secret_access_key = other\n",
    );
    create("own", "bsl-credentials=cloud");
    create("no-secret", "absent=cloud");
    create("no-key", "bsl-credentials=nope");
    wait_for_phase(&cluster, "own", "Available");
    let message = wait_for_phase(&cluster, "no-secret", "Unavailable");
    assert!(
        message.contains("velero/absent") && message.contains("`cloud`"),
        "{message}"
    );
    let message = wait_for_phase(&cluster, "no-key", "Unavailable");
    assert!(message.contains("`nope`"), "{message}");

    // SIGTERM stops the server cleanly.
    assert_eq!(cluster.stop_server(), Some(0));
}

#[test]
fn install_wait_returns_once_the_server_and_the_agents_are_ready() {
    let cluster = Cluster::with_s3("install-wait");
    let mut args = cluster.install_args();
    args.push("--wait".into());
    let mut child = cluster
        .command()
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start install");
    let get = |plural: &str, name: &str| cluster.api.get("apps/v1", plural, Some("velero"), name);
    let mut deployment = wait_for("the Deployment", Duration::from_secs(30), || {
        get("deployments", "velero")
    });
    let mut daemon_set = wait_for("the DaemonSet", Duration::from_secs(30), || {
        get("daemonsets", "restic")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().expect("poll").is_none(),
        "install --wait returned before anything was ready"
    );
    // Play the kubelet and the controllers: the server pod is available, agents run on 2 nodes.
    deployment["status"] = serde_json::json!({
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
    });
    cluster
        .api
        .put_object(deployment)
        .expect("mark the Deployment available");
    daemon_set["status"] = serde_json::json!({
        "observedGeneration": daemon_set["metadata"]["generation"],
        "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 2,
        "numberMisscheduled": 0, "numberAvailable": 2, "updatedNumberScheduled": 2,
    });
    cluster
        .api
        .put_object(daemon_set)
        .expect("mark the DaemonSet ready");
    let started = Instant::now();
    let output = loop {
        if child.try_wait().expect("poll").is_some() {
            break child.wait_with_output().expect("output");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "install --wait did not return once everything was ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("installed"), "{stdout}");
}
