//! The client commands, and the checks of what a user types, that need no cluster: `client
//! config`, `completion`, a closed pipe, a provider that is not one, a cluster that is not there.

use std::process::Command;

use lifeboat_tests::bin::{Run, lifeboat_exe};

fn lifeboat(config: &std::path::Path, args: &[&str]) -> Run {
    Run::from_output(
        Command::new(lifeboat_exe())
            .args(args)
            .env("LIFEBOAT_CONFIG", config)
            .output()
            .expect("run lifeboat"),
    )
}

#[test]
fn client_config_is_kept_between_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nested/config.json");
    let out = lifeboat(&config, &["client", "config", "get"]).ok().stdout;
    assert!(out.contains("features: <NOT SET>"), "{out}");
    lifeboat(
        &config,
        &[
            "client",
            "config",
            "set",
            "features=EnableCSI,EnableAPIGroupVersions",
            "namespace=backup",
        ],
    )
    .ok();
    let out = lifeboat(&config, &["client", "config", "get", "features"])
        .ok()
        .stdout;
    assert_eq!(out.trim(), "features: EnableCSI,EnableAPIGroupVersions");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("saved")).expect("JSON");
    assert_eq!(saved["namespace"], "backup");

    // Bad settings name what is wrong and change nothing.
    let err = lifeboat(&config, &["client", "config", "set", "colour=yes"])
        .fails()
        .stderr;
    assert!(err.contains("unknown client config key `colour`"), "{err}");
    let err = lifeboat(&config, &["client", "config", "set", "features"])
        .fails()
        .stderr;
    assert!(err.contains("is not KEY=VALUE"), "{err}");
}

#[test]
fn completion_scripts_cover_the_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    for shell in ["bash", "zsh", "fish"] {
        let out = lifeboat(&config, &["completion", shell]).ok().stdout;
        for word in [
            "backup-location",
            "snapshot-location",
            "install",
            "client",
            "schedule",
            "from-schedule",
        ] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let err = lifeboat(&config, &["completion", "tcsh"]).stderr;
    assert!(err.contains("tcsh"), "{err}");
}

#[test]
fn a_reader_that_goes_away_ends_a_client_command_quietly() {
    use std::io::Read as _;
    let mut child = Command::new(lifeboat_exe())
        .args(["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run lifeboat");
    // `| head -c 0`: the reader is gone before the process has started writing (it is still
    // starting: exec, parsing), so its first write meets a closed pipe.
    drop(child.stdout.take().expect("stdout"));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    child.wait().expect("wait");
    assert!(stderr.is_empty(), "a closed pipe is not an error: {stderr}");
}

#[test]
fn a_provider_velero_has_no_plugin_for_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    let create = |provider: &str| {
        lifeboat(
            &config,
            &[
                "backup-location",
                "create",
                "default",
                "--provider",
                provider,
                "--bucket",
                "b",
                // No cluster at all: the refusal must come first.
                "--kubeconfig",
                "/nonexistent/kubeconfig",
            ],
        )
        .fails()
        .stderr
    };
    let err = create("s3");
    assert!(
        err.contains("--provider s3 is not a provider: use --provider aws")
            && err.contains("s3Url"),
        "{err}"
    );
    assert!(create("gcs").contains("use --provider gcp"));
    let err = create("dropbox");
    assert!(err.contains("\"dropbox\" is not a provider"), "{err}");
    // A real provider passes the check and only then needs the cluster.
    let err = create("velero.io/aws");
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}

#[test]
fn an_unreachable_api_server_is_one_sentence_naming_its_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n\
             contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n\
             users:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .expect("kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    // The cluster flags go anywhere: after the command, or before it as kubectl users type them
    // (each of these reaches the closed port, so each took the flag).
    for args in [
        vec!["backup", "get", "--kubeconfig", kubeconfig],
        vec!["--kubeconfig", kubeconfig, "backup", "get"],
        vec!["-n", "other", "--kubeconfig", kubeconfig, "schedule", "get"],
        vec!["backup", "--kubeconfig", kubeconfig, "describe", "b"],
    ] {
        let run = lifeboat(&dir.path().join("config.json"), &args).fails();
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one line, no library log: {}",
            run.stderr
        );
        assert!(
            lines[0].starts_with(&format!(
                "lifeboat: cannot reach the Kubernetes cluster: the API server https://127.0.0.1:{port}"
            )) && lines[0].contains("Connection refused")
                && lines[0].contains("kubeconfig"),
            "{args:?}: {}",
            run.stderr
        );
    }
}
