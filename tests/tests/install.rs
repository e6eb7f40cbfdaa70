//! `lifeboat install --dry-run` as a user runs it: the real binary, Velero's flags, the printed
//! `v1` `List` parsed back and every object checked; and the one-sentence refusals. No cluster
//! is needed: a dry run touches nothing.
//!
//! Then `lifeboat_server::install`'s apply and uninstall against the API server stand-in: what
//! a second install updates and what it keeps, the CA a later install issues from, and what
//! uninstall deletes and spares.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DynamicObject, GroupVersionKind};
use lifeboat_server::install::{
    BackupLocationOptions, InstallOptions, Outcome, Progress, SnapshotLocationOptions, apply,
    existing_authority, render, uninstall, wait_uninstalled,
};
use lifeboat_server::pki;
use lifeboat_tests::ApiServer;
use lifeboat_tests::bin::{Run, lifeboat_exe};
use serde_json::{Value, json};

/// `lifeboat ARGS…` with no namespace from the environment and no client config, so the
/// namespace is what the flags say (or Velero's default).
fn lifeboat(home: &Path, args: &[&str]) -> Run {
    lifeboat_with(home, &home.join("no-kubeconfig"), args)
}

/// `lifeboat ARGS…` as [`lifeboat`], with `kubeconfig`.
fn lifeboat_with(home: &Path, kubeconfig: &Path, args: &[&str]) -> Run {
    let out = Command::new(lifeboat_exe())
        .args(args)
        .env("LIFEBOAT_CONFIG", home.join("no-config.json"))
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env_remove("LIFEBOAT_NAMESPACE")
        .env_remove("VELERO_NAMESPACE")
        .output()
        .expect("run lifeboat");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

struct Files {
    dir: tempfile::TempDir,
}

const CREDENTIALS: &str = "[default]\naws_access_key_id=minio\naws_secret_access_key=minio123\n";
const CACERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("credentials-velero"), CREDENTIALS)
            .expect("write the credentials file");
        std::fs::write(dir.path().join("ca.pem"), CACERT).expect("write the CA file");
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("a UTF-8 path")
            .to_string()
    }

    fn run(&self, args: &[&str]) -> Run {
        lifeboat(self.dir.path(), args)
    }
}

/// Velero's full set of install flags, as a user's script passes them.
fn full_flags(files: &Files, output: &str) -> Vec<String> {
    [
        "install",
        "--dry-run",
        "-o",
        output,
        "--namespace",
        "backup",
        "--provider",
        "aws",
        "--bucket",
        "velero-bucket",
        "--prefix",
        "cluster-a",
        "--backup-location-config",
        "region=minio,s3ForcePathStyle=true,s3Url=http://minio.minio.svc:9000/path?a=b",
        "--snapshot-location-config",
        "region=eu-west-1",
        "--secret-file",
        &files.path("credentials-velero"),
        "--cacert",
        &files.path("ca.pem"),
        "--use-restic",
        "--default-volumes-to-restic",
        "--velero-pod-cpu-request",
        "250m",
        "--velero-pod-mem-request",
        "256Mi",
        "--velero-pod-cpu-limit",
        "2",
        "--velero-pod-mem-limit",
        "1Gi",
        "--restic-pod-cpu-request",
        "100m",
        "--restic-pod-mem-request",
        "64Mi",
        "--restic-pod-cpu-limit",
        "1500m",
        "--restic-pod-mem-limit",
        "2Gi",
        "--features",
        "EnableCSI,Other",
        "--image",
        "registry.local/lifeboat:v9",
        "--plugins",
        "velero/velero-plugin-for-aws:v1.2.1",
        "--pod-labels",
        "team=storage",
        "--pod-annotations",
        "sidecar.istio.io/inject=false",
        "--uploader-type",
        "restic",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn items(list: &Value) -> &[Value] {
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    list["items"].as_array().expect("items")
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the output"))
}

fn has(objects: &[Value], kind: &str) -> bool {
    objects.iter().any(|o| o["kind"] == kind)
}

fn secret_data(object: &Value) -> BTreeMap<String, Vec<u8>> {
    let secret: Secret = serde_json::from_value(object.clone()).expect("a Secret");
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"]["fieldRef"]["fieldPath"].clone());
            (
                e["name"].as_str().expect("a named env var").to_string(),
                value,
            )
        })
        .collect()
}

/// The mount path of each volume of a pod spec's first container, by the volume it mounts.
fn mounts_by_volume(spec: &Value) -> BTreeMap<String, (Value, Value)> {
    let volumes: BTreeMap<String, Value> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("a named volume").to_string(),
                v.clone(),
            )
        })
        .collect();
    spec["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let path = m["mountPath"].as_str().expect("a mount path").to_string();
            let volume = volumes[m["name"].as_str().expect("a mounted volume name")].clone();
            (path, (m.clone(), volume))
        })
        .collect()
}

fn yaml(run: &Run) -> Value {
    serde_yaml::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not YAML ({e}):\n{}", run.stdout))
}

/// Checks every object and every flag of [`full_flags`].
fn check_full_install(list: &Value) {
    let objects = items(list);
    let mut kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().expect("a kind"))
        .collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRoleBinding",
            "Secret",
            "Service",
            "Deployment",
            "DaemonSet",
            "BackupStorageLocation",
            "VolumeSnapshotLocation"
        ],
        "apply order"
    );
    for object in objects {
        assert_eq!(
            object["metadata"]["labels"]["component"], "velero",
            "{} {}",
            object["kind"], object["metadata"]["name"]
        );
    }
    find(objects, "Namespace", "backup");
    for crd in [
        "backups.velero.io",
        "restores.velero.io",
        "schedules.velero.io",
        "backupstoragelocations.velero.io",
        "volumesnapshotlocations.velero.io",
        "podvolumebackups.velero.io",
        "podvolumerestores.velero.io",
        "resticrepositories.velero.io",
        "deletebackuprequests.velero.io",
    ] {
        find(objects, "CustomResourceDefinition", crd);
    }

    // RBAC: the server is cluster-admin (as Velero's), the agent has no access at all.
    find(objects, "ServiceAccount", "velero");
    let agent_account = find(objects, "ServiceAccount", "lifeboat-agent");
    assert_eq!(agent_account["automountServiceAccountToken"], false);
    let bindings: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
        .collect();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["metadata"]["name"], "velero-backup");
    assert_eq!(bindings[0]["roleRef"]["name"], "cluster-admin");
    assert_eq!(
        bindings[0]["subjects"],
        json!([{"kind": "ServiceAccount", "name": "velero", "namespace": "backup"}])
    );

    // Secrets.
    let credentials = find(objects, "Secret", "cloud-credentials");
    assert_eq!(secret_data(credentials)["cloud"], CREDENTIALS.as_bytes());
    let password = secret_data(find(objects, "Secret", "velero-restic-credentials"));
    let password =
        String::from_utf8(password["repository-password"].clone()).expect("a UTF-8 password");
    assert!(password.len() >= 32, "a strong password: {password}");
    assert_ne!(password, "static-passw0rd");
    let ca = secret_data(find(objects, "Secret", "lifeboat-ca"));
    for name in ["lifeboat-server-tls", "lifeboat-agent-tls", "lifeboat-ca"] {
        let secret = find(objects, "Secret", name);
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(
            secret["metadata"]["labels"]["velero.io/exclude-from-backup"], "true",
            "{name}'s keys never reach a backup"
        );
        let data = secret_data(secret);
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            let text = String::from_utf8(data[key].clone()).expect("UTF-8 PEM");
            assert!(text.starts_with("-----BEGIN "), "{name} {key}");
        }
        assert_eq!(
            data["ca.crt"], ca["tls.crt"],
            "{name} trusts the install's CA"
        );
    }
    assert_ne!(
        secret_data(find(objects, "Secret", "lifeboat-server-tls"))["tls.key"],
        secret_data(find(objects, "Secret", "lifeboat-agent-tls"))["tls.key"]
    );

    // The Service the agents dial.
    let service = find(objects, "Service", "lifeboat");
    assert_eq!(service["spec"]["selector"], json!({"deploy": "velero"}));
    assert_eq!(service["spec"]["ports"][0]["port"], 8443);
    assert_eq!(service["spec"]["ports"][0]["name"], "grpc");

    // The server.
    let deployment = find(objects, "Deployment", "velero");
    let template = &deployment["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["component"], "velero");
    assert_eq!(template["metadata"]["labels"]["deploy"], "velero");
    assert_eq!(template["metadata"]["labels"]["team"], "storage");
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8085");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(annotations["sidecar.istio.io/inject"], "false");
    let spec = &template["spec"];
    assert_eq!(spec["serviceAccountName"], "velero");
    let server = &spec["containers"][0];
    assert_eq!(server["name"], "velero");
    assert_eq!(server["image"], "registry.local/lifeboat:v9");
    assert_eq!(server["command"], json!(["/lifeboat"]));
    assert_eq!(
        server["args"],
        json!([
            "server",
            "--features=EnableCSI,Other",
            "--default-volumes-to-restic",
            "--restore-helper-image=registry.local/lifeboat:v9"
        ])
    );
    let ports: Vec<(Value, Value)> = server["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].clone(), p["containerPort"].clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (json!("metrics"), json!(8085)),
            (json!("grpc"), json!(8443))
        ]
    );
    assert_eq!(server["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(server["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(server["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(server["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(
        server["resources"],
        json!({"requests": {"cpu": "250m", "memory": "256Mi"},
               "limits": {"cpu": "2", "memory": "1Gi"}})
    );
    let env = env_of(server);
    assert_eq!(env["VELERO_NAMESPACE"], "metadata.namespace");
    for var in [
        "AWS_SHARED_CREDENTIALS_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_CREDENTIALS_FILE",
    ] {
        assert_eq!(env[var], "/credentials/cloud", "server {var}");
    }
    let mounts = mounts_by_volume(spec);
    assert_eq!(
        mounts["/credentials"].1["secret"]["secretName"],
        "cloud-credentials"
    );
    assert_eq!(
        mounts["/etc/lifeboat/tls"].1["secret"]["secretName"],
        "lifeboat-server-tls"
    );
    assert_eq!(mounts["/etc/lifeboat/tls"].0["readOnly"], true);
    assert!(mounts["/scratch"].1["emptyDir"].is_object());

    // The agents.
    let daemon_set = find(objects, "DaemonSet", "restic");
    let template = &daemon_set["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["component"], "velero");
    assert_eq!(template["metadata"]["labels"]["name"], "restic");
    assert_eq!(template["metadata"]["labels"]["team"], "storage");
    assert_eq!(
        template["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    let spec = &template["spec"];
    assert_eq!(spec["serviceAccountName"], "lifeboat-agent");
    assert_eq!(spec["securityContext"]["runAsUser"], 0);
    let agent = &spec["containers"][0];
    assert_eq!(agent["name"], "restic");
    assert_eq!(agent["image"], "registry.local/lifeboat:v9");
    assert_eq!(agent["command"], json!(["/lifeboat"]));
    assert_eq!(
        agent["args"],
        json!(["agent", "--features=EnableCSI,Other"])
    );
    assert_eq!(
        agent["resources"],
        json!({"requests": {"cpu": "100m", "memory": "64Mi"},
               "limits": {"cpu": "1500m", "memory": "2Gi"}})
    );
    let env = env_of(agent);
    assert_eq!(env["NODE_NAME"], "spec.nodeName");
    assert_eq!(env["VELERO_NAMESPACE"], "metadata.namespace");
    assert_eq!(env["AWS_SHARED_CREDENTIALS_FILE"], "/credentials/cloud");
    let mounts = mounts_by_volume(spec);
    let (host_mount, host_volume) = &mounts["/host_pods"];
    assert_eq!(host_volume["hostPath"]["path"], "/var/lib/kubelet/pods");
    assert_eq!(host_mount["mountPropagation"], "HostToContainer");
    assert_eq!(
        mounts["/etc/lifeboat/tls"].1["secret"]["secretName"],
        "lifeboat-agent-tls"
    );
    assert_eq!(mounts["/etc/lifeboat/tls"].0["readOnly"], true);
    assert_eq!(
        mounts["/credentials"].1["secret"]["secretName"],
        "cloud-credentials"
    );
    assert!(mounts["/scratch"].1["emptyDir"].is_object());

    // The locations.
    let bsl = find(objects, "BackupStorageLocation", "default");
    assert_eq!(bsl["metadata"]["namespace"], "backup");
    assert_eq!(bsl["spec"]["default"], true);
    assert_eq!(bsl["spec"]["provider"], "aws");
    assert_eq!(bsl["spec"]["objectStorage"]["bucket"], "velero-bucket");
    assert_eq!(bsl["spec"]["objectStorage"]["prefix"], "cluster-a");
    let ca_cert: Secret = serde_json::from_value(json!({
        "data": {"ca": bsl["spec"]["objectStorage"]["caCert"]}
    }))
    .expect("caCert is base64");
    assert_eq!(
        ca_cert.data.expect("caCert decoded")["ca"].0,
        CACERT.as_bytes()
    );
    assert_eq!(
        bsl["spec"]["config"],
        json!({"region": "minio", "s3ForcePathStyle": "true",
               "s3Url": "http://minio.minio.svc:9000/path?a=b"})
    );
    let vsl = find(objects, "VolumeSnapshotLocation", "default");
    assert_eq!(
        vsl["spec"],
        json!({"provider": "aws", "config": {"region": "eu-west-1"}})
    );
}

#[test]
fn dry_run_yaml_prints_every_object_with_every_flag() {
    let files = Files::new();
    let flags = full_flags(&files, "yaml");
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let run = files.run(&args).ok();
    check_full_install(&yaml(&run));
    assert!(
        run.stderr.contains("--plugins ignored"),
        "the ignored flag is noted: {}",
        run.stderr
    );
}

#[test]
fn a_dry_run_where_the_cluster_is_reachable_never_renders_what_would_replace_its_keys() {
    let server = ApiServer::start().expect("the stand-in starts");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let installed = options_in("velero");
    runtime.block_on(async {
        let client = server.client().await.expect("a client for the stand-in");
        apply(&client, &render(&installed), |_| {}).await.unwrap();
    });
    let files = Files::new();
    let kubeconfig = files.dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("write the kubeconfig");
    let flags = full_flags(&files, "yaml");
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let at = args
        .iter()
        .position(|a| *a == "--namespace")
        .expect("--namespace");
    args[at + 1] = "velero";
    let stored = |name: &str| server.get("v1", "secrets", Some("velero"), name);
    let before: Vec<_> = KEPT_SECRETS.iter().map(|n| stored(n)).collect();

    let run = lifeboat_with(files.dir.path(), &kubeconfig, &args).ok();
    let printed = yaml(&run);
    let names: Vec<String> = items(&printed)
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    // What install keeps is left out, each with a note; what it owns is there to apply.
    for name in KEPT_SECRETS {
        assert!(
            !names.contains(&format!("Secret/{name}")),
            "{name} rendered: {names:?}"
        );
        assert!(
            run.stdout.contains(&format!(
                "# Secret velero/{name} exists in the cluster and install keeps it: left out"
            )),
            "{}",
            run.stdout
        );
    }
    assert!(
        !names.contains(&"BackupStorageLocation/default".to_string()),
        "{names:?}"
    );
    for owned in ["Deployment/velero", "DaemonSet/restic", "Namespace/velero"] {
        assert!(
            names.contains(&owned.to_string()),
            "{owned} missing: {names:?}"
        );
    }
    // Nothing was written.
    let after: Vec<_> = KEPT_SECRETS.iter().map(|n| stored(n)).collect();
    assert_eq!(before, after);

    // A certificate missing from the cluster is issued from the stored CA, as install would.
    server
        .delete_object("v1", "secrets", Some("velero"), "lifeboat-agent-tls")
        .expect("delete the agent's certificate");
    let run = lifeboat_with(files.dir.path(), &kubeconfig, &args).ok();
    let printed = yaml(&run);
    let agent = secret_data(find(items(&printed), "Secret", "lifeboat-agent-tls"));
    assert_eq!(
        String::from_utf8(agent["ca.crt"].clone()).expect("PEM"),
        installed.tls.ca.cert
    );

    // No cluster: the Secrets are new, and stderr says what applying them over an install does.
    let offline = files.run(&args).ok();
    assert!(
        find(
            items(&yaml(&offline)),
            "Secret",
            "velero-restic-credentials"
        )
        .is_object()
    );
    assert!(
        offline.stderr.contains("no cluster reachable")
            && offline.stderr.contains("replace its password"),
        "{}",
        offline.stderr
    );
}

/// The Secrets a full install renders and a later install keeps.
const KEPT_SECRETS: [&str; 5] = [
    "velero-restic-credentials",
    "lifeboat-ca",
    "lifeboat-server-tls",
    "lifeboat-agent-tls",
    "cloud-credentials",
];

#[test]
fn dry_run_json_prints_the_same_list() {
    let files = Files::new();
    let flags = full_flags(&files, "json");
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let run = files.run(&args).ok();
    check_full_install(&run.json());
}

#[test]
fn each_install_gets_its_own_password_and_ca() {
    let files = Files::new();
    let flags = full_flags(&files, "json");
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let first = files.run(&args).ok().json();
    let second = files.run(&args).ok().json();
    let secret = |list: &Value, name: &str, key: &str| {
        secret_data(find(items(list), "Secret", name))[key].clone()
    };
    assert_ne!(
        secret(&first, "velero-restic-credentials", "repository-password"),
        secret(&second, "velero-restic-credentials", "repository-password")
    );
    assert_ne!(
        secret(&first, "lifeboat-ca", "tls.key"),
        secret(&second, "lifeboat-ca", "tls.key")
    );
}

#[test]
fn node_agent_aliases_no_secret_and_velero_defaults() {
    let files = Files::new();
    let run = files
        .run(&[
            "install",
            "--dry-run",
            "-o",
            "yaml",
            "--provider",
            "gcp",
            "--bucket",
            "b",
            "--no-secret",
            "--use-node-agent",
            "--default-volumes-to-fs-backup",
            "--default-repo-maintain-frequency",
            "72h",
            "--node-agent-pod-mem-limit",
            "3Gi",
        ])
        .ok();
    let list = yaml(&run);
    let objects = items(&list);
    find(objects, "Namespace", "velero");
    find(objects, "ClusterRoleBinding", "velero");
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "cloud-credentials")
    );
    assert!(
        !has(objects, "VolumeSnapshotLocation"),
        "no VSL unless asked"
    );
    let server = &find(objects, "Deployment", "velero")["spec"]["template"]["spec"];
    let container = &server["containers"][0];
    assert_eq!(
        container["args"],
        json!([
            "server",
            "--default-volumes-to-restic",
            "--default-restic-prune-frequency=72h"
        ])
    );
    assert_eq!(
        container["image"],
        format!("lifeboat/lifeboat:v{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "500m", "memory": "128Mi"},
               "limits": {"cpu": "1000m", "memory": "512Mi"}})
    );
    assert!(!env_of(container).contains_key("AWS_SHARED_CREDENTIALS_FILE"));
    assert!(!mounts_by_volume(server).contains_key("/credentials"));
    let agent = &find(objects, "DaemonSet", "restic")["spec"]["template"]["spec"];
    assert_eq!(agent["containers"][0]["args"], json!(["agent"]));
    assert_eq!(
        agent["containers"][0]["resources"],
        json!({"requests": {"cpu": "500m", "memory": "512Mi"},
               "limits": {"cpu": "1000m", "memory": "3Gi"}})
    );
    assert!(!mounts_by_volume(agent).contains_key("/credentials"));
    let bsl = find(objects, "BackupStorageLocation", "default");
    assert!(bsl["spec"].get("config").is_none());
    assert!(bsl["spec"]["objectStorage"].get("caCert").is_none());
}

#[test]
fn without_use_restic_there_is_no_daemon_set_and_a_vsl_when_asked() {
    let files = Files::new();
    let run = files
        .run(&[
            "install",
            "--dry-run",
            "--provider=aws",
            "--no-secret",
            "--no-default-backup-location",
            "--use-volume-snapshots=true",
        ])
        .ok();
    let list = yaml(&run);
    let objects = items(&list);
    assert!(!has(objects, "DaemonSet"));
    assert!(!has(objects, "BackupStorageLocation"));
    let vsl = find(objects, "VolumeSnapshotLocation", "default");
    assert_eq!(vsl["spec"]["provider"], "aws");
}

#[test]
fn crds_only_prints_the_crds_alone() {
    let files = Files::new();
    let run = files
        .run(&["install", "--crds-only", "--dry-run", "-o", "yaml"])
        .ok();
    let list = yaml(&run);
    let objects = items(&list);
    assert_eq!(objects.len(), 9);
    for object in objects {
        assert_eq!(object["kind"], "CustomResourceDefinition");
        assert_eq!(object["metadata"]["labels"]["component"], "velero");
    }
}

/// Exit 1 with one line on stderr that contains `needle`.
fn refused(run: Run, needle: &str) {
    let run = run.fails();
    let line = run.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "one sentence: {line}");
    assert!(line.starts_with("lifeboat: "), "{line}");
    assert!(line.contains(needle), "`{needle}` not in: {line}");
    assert!(run.stdout.is_empty(), "nothing printed: {}", run.stdout);
}

#[test]
fn bad_flags_are_refused_with_one_sentence_naming_them() {
    let files = Files::new();
    let secret = files.path("credentials-velero");
    let dry = ["install", "--dry-run", "-o", "yaml"];
    let with = |extra: &[&str]| -> Vec<String> {
        dry.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        files.run(&args)
    };
    // A complete install (no credentials) plus `extra`.
    let aws = |extra: &[&str]| -> Vec<String> {
        let base = ["--provider", "aws", "--bucket", "b", "--no-secret"];
        with(&base.iter().chain(extra).copied().collect::<Vec<_>>())
    };
    refused(
        run(with(&["--provider", "aws", "--secret-file", &secret])),
        "--bucket",
    );
    refused(
        run(with(&["--bucket", "b", "--secret-file", &secret])),
        "--provider",
    );
    refused(
        run(with(&["--provider", "aws", "--bucket", "b"])),
        "--secret-file",
    );
    let missing = files.path("no-such-file");
    refused(
        run(with(&[
            "--provider",
            "aws",
            "--bucket",
            "b",
            "--secret-file",
            &missing,
        ])),
        "no-such-file",
    );
    refused(run(aws(&["--uploader-type", "kopia"])), "kopia");
    refused(
        run(aws(&["--restic-pod-mem-limit", "2GB"])),
        "--restic-pod-mem-limit",
    );
    refused(
        run(aws(&["--restic-pod-mem-limit", "100Mi"])),
        "--restic-pod-mem-limit 100Mi leaves the agent 75 MiB for its volume jobs, below the 96 MiB",
    );
    refused(
        run(aws(&["--backup-location-config", "region"])),
        "--backup-location-config",
    );
    // -o without --dry-run is refused before any cluster is looked for.
    refused(
        files.run(&[
            "install",
            "-o",
            "yaml",
            "--provider",
            "aws",
            "--bucket",
            "b",
            "--no-secret",
        ]),
        "--dry-run",
    );
}

#[test]
fn uninstall_without_a_terminal_needs_force() {
    let files = Files::new();
    // The test's stdin is not a terminal.
    let out = Command::new(lifeboat_exe())
        .args(["uninstall"])
        .env("LIFEBOAT_CONFIG", files.path("no-config.json"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
}

// apply and uninstall against the API server stand-in.

async fn start() -> (ApiServer, kube::Client) {
    let server = ApiServer::start().expect("the stand-in starts");
    let client = server.client().await.expect("a client for the stand-in");
    (server, client)
}

/// An install in `namespace` with agents, cloud credentials and a backup location.
fn options_in(namespace: &str) -> InstallOptions {
    let mut options = InstallOptions::new(
        namespace,
        pki::Bundle::generate(namespace).expect("a CA and certificates"),
    );
    options.use_restic = true;
    options.credentials = Some(b"[default]\n".to_vec());
    options.backup_location = Some(BackupLocationOptions {
        provider: "aws".into(),
        bucket: "b".into(),
        ..Default::default()
    });
    options
}

fn lines(progress: &[Progress]) -> Vec<String> {
    progress.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn apply_creates_then_updates_what_it_owns_and_keeps_keys_and_locations() {
    let (server, client) = start().await;
    let options = options_in("backup");
    let first = render(&options);
    let mut seen = Vec::new();
    apply(&client, &first, |p| seen.push(p.clone()))
        .await
        .unwrap();
    let seen = lines(&seen);
    assert!(seen.contains(&"CustomResourceDefinition/backups.velero.io: created".to_string()));
    assert!(seen.contains(&"Deployment/velero: created".to_string()));
    assert!(seen.contains(&"BackupStorageLocation/default: created".to_string()));
    let waited = seen
        .iter()
        .position(|l| l.starts_with("Waiting for"))
        .unwrap();
    let last_crd = seen
        .iter()
        .rposition(|l| l.starts_with("CustomResourceDefinition/"))
        .unwrap();
    assert_eq!(
        waited,
        last_crd + 1,
        "discovery is awaited right after the CRDs"
    );
    let password = || server.get("v1", "secrets", Some("backup"), "velero-restic-credentials");
    let stored_password = password().expect("the password Secret is stored");

    // A second install: a new password and CA are rendered, but the stored ones stay.
    let again = render(&options_in("backup"));
    let mut seen = Vec::new();
    apply(&client, &again, |p| seen.push(p.clone()))
        .await
        .unwrap();
    let seen = lines(&seen);
    for kept in [
        "Secret/velero-restic-credentials: already exists, kept",
        "Secret/lifeboat-ca: already exists, kept",
        "Secret/cloud-credentials: already exists, kept",
        "BackupStorageLocation/default: already exists, kept",
    ] {
        assert!(seen.contains(&kept.to_string()), "{kept} in {seen:?}");
    }
    for updated in [
        "Namespace/backup: already exists, updated",
        "DaemonSet/restic: already exists, updated",
        "ClusterRoleBinding/velero-backup: already exists, updated",
        "CustomResourceDefinition/backups.velero.io: already exists, updated",
    ] {
        assert!(seen.contains(&updated.to_string()), "{updated} in {seen:?}");
    }
    assert_eq!(password(), Some(stored_password));
    let writes = server.writes();
    let applies: Vec<&String> = writes.iter().filter(|w| w.starts_with("PATCH")).collect();
    assert!(!applies.is_empty());
    for patch in applies {
        assert!(
            patch.contains("fieldManager=lifeboat-install")
                && patch.contains("force=true")
                && patch.ends_with("application/apply-patch+yaml"),
            "{patch}"
        );
        assert!(
            !patch.contains("/secrets/") && !patch.contains("/backupstoragelocations/"),
            "{patch}"
        );
    }
}

#[tokio::test]
async fn a_later_install_issues_from_the_stored_ca() {
    let (_server, client) = start().await;
    assert!(
        existing_authority(&client, "velero")
            .await
            .unwrap()
            .is_none()
    );
    let options = options_in("velero");
    apply(&client, &render(&options), |_| {}).await.unwrap();
    let authority = existing_authority(&client, "velero")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(authority.own(), &options.tls.ca);
    let reissued = pki::Bundle::issue(&authority, "velero").unwrap();
    assert_eq!(reissued.ca, options.tls.ca);
}

#[tokio::test]
async fn uninstall_deletes_everything_install_applied_and_is_idempotent() {
    let (server, client) = start().await;
    let mut options = options_in("backup");
    options.snapshot_location = Some(SnapshotLocationOptions {
        provider: "aws".into(),
        ..Default::default()
    });
    let objects = render(&options);
    apply(&client, &objects, |_| {}).await.unwrap();
    // Where each applied object lives, as discovery names its resource, while the CRDs are
    // still there to serve the velero.io kinds.
    let mut applied = Vec::new();
    for value in &objects {
        let object: DynamicObject = serde_json::from_value(value.clone()).unwrap();
        let types = object.types.clone().unwrap();
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (resource, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        let name = object.metadata.name.clone().unwrap();
        assert!(
            server
                .get(
                    &types.api_version,
                    &resource.plural,
                    object.metadata.namespace.as_deref(),
                    &name
                )
                .is_some(),
            "{} {name} was applied",
            types.kind
        );
        applied.push((
            types.api_version,
            resource.plural,
            object.metadata.namespace,
            name,
        ));
    }

    let mut seen = Vec::new();
    uninstall(&client, "backup", |p| seen.push(p.clone()))
        .await
        .unwrap();
    let left: Vec<String> = applied
        .iter()
        .filter(|(api_version, plural, namespace, name)| {
            server
                .get(api_version, plural, namespace.as_deref(), name)
                .is_some()
        })
        .map(|(_, plural, namespace, name)| format!("{plural} {namespace:?} {name}"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let seen = lines(&seen);
    assert!(seen.contains(&"Namespace/backup: deleted".to_string()));
    let crb = seen
        .iter()
        .position(|l| l.starts_with("ClusterRoleBinding/"))
        .unwrap();
    let first_crd = seen
        .iter()
        .position(|l| l.starts_with("CustomResourceDefinition/"))
        .unwrap();
    assert!(crb < first_crd, "the CRDs go last");
    wait_uninstalled(&client, "backup", true, |_| {})
        .await
        .unwrap();

    let mut again = Vec::new();
    uninstall(&client, "backup", |p| again.push(p.clone()))
        .await
        .unwrap();
    assert!(again.iter().all(|p| matches!(
        p,
        Progress::Object {
            outcome: Outcome::Missing,
            ..
        }
    )));
}

#[tokio::test]
async fn uninstall_spares_a_namespace_install_did_not_label() {
    let (server, client) = start().await;
    server
        .put_object(json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "shared", "labels": {"team": "x"}}}))
        .unwrap();
    let mut seen = Vec::new();
    uninstall(&client, "shared", |p| seen.push(p.clone()))
        .await
        .unwrap();
    let namespace = server
        .get("v1", "namespaces", None, "shared")
        .expect("the namespace is still there");
    assert!(
        namespace["metadata"].get("deletionTimestamp").is_none(),
        "not even terminating: {namespace}"
    );
    assert!(seen.iter().any(|p| matches!(
        p,
        Progress::Object { kind, outcome: Outcome::Spared, .. } if kind == "Namespace"
    )));
}
