//! `lifeboat install` and `lifeboat uninstall`, with Velero's flags and rules.
//!
//! The objects are rendered by `lifeboat_server::install::render`; this module turns flags into
//! its options (refusing bad input with one sentence naming the flag), prints them with
//! `--dry-run -o yaml|json` as Velero's `v1` `List`, or applies them and waits. Velero's flags
//! that have no meaning for lifeboat are accepted so users' scripts keep working: `--plugins`
//! (providers are built in) is ignored with a note on stderr.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use lifeboat_server::install::{
    self, BackupLocationOptions, InstallOptions, PodResources, Progress, SnapshotLocationOptions,
};
use lifeboat_server::pki;

use crate::cluster::ClusterArgs;
use crate::config::split_features;
use crate::format::{Format, ask, parse_pairs, print_objects};

/// `lifeboat install`'s flags, boxed: Velero's many flags would make every command's
/// arguments as large as these.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    flags: Box<InstallFlags>,
}

#[derive(Debug, Args)]
struct InstallFlags {
    /// The storage provider: aws (and S3-compatible stores), gcp, azure.
    #[arg(long)]
    provider: Option<String>,
    /// The bucket backups are stored in.
    #[arg(long)]
    bucket: Option<String>,
    /// The prefix within the bucket.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Settings of the backup storage location: key=value,key2=value2 (region, s3Url,
    /// s3ForcePathStyle, …).
    #[arg(long, value_name = "K=V,…")]
    backup_location_config: Option<String>,
    /// Settings of the volume snapshot location (creates one): key=value,….
    #[arg(long, value_name = "K=V,…")]
    snapshot_location_config: Option<String>,
    /// File with the provider's credentials, installed as the Secret cloud-credentials.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Install no credentials Secret (the nodes' or pods' own identity reaches the bucket).
    #[arg(long)]
    no_secret: bool,
    /// PEM bundle of the CA of a storage endpoint with a private certificate.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Run the node agents (DaemonSet restic) that back up pod volumes.
    #[arg(long, visible_alias = "use-node-agent")]
    use_restic: bool,
    /// Back up every pod volume unless excluded, by default for every backup.
    #[arg(long, visible_alias = "default-volumes-to-fs-backup")]
    default_volumes_to_restic: bool,
    /// How often the server prunes repositories by default, e.g. 168h (the server's own default).
    #[arg(long, visible_alias = "default-repo-maintain-frequency")]
    default_restic_prune_frequency: Option<String>,
    /// CPU request of the server pod.
    #[arg(long, default_value = "500m")]
    velero_pod_cpu_request: String,
    /// Memory request of the server pod.
    #[arg(long, default_value = "128Mi")]
    velero_pod_mem_request: String,
    /// CPU limit of the server pod (0: none).
    #[arg(long, default_value = "1000m")]
    velero_pod_cpu_limit: String,
    /// Memory limit of the server pod (0: none).
    #[arg(long, default_value = "512Mi")]
    velero_pod_mem_limit: String,
    /// CPU request of each agent pod.
    #[arg(
        long,
        visible_alias = "node-agent-pod-cpu-request",
        default_value = "500m"
    )]
    restic_pod_cpu_request: String,
    /// Memory request of each agent pod.
    #[arg(
        long,
        visible_alias = "node-agent-pod-mem-request",
        default_value = "512Mi"
    )]
    restic_pod_mem_request: String,
    /// CPU limit of each agent pod (0: none).
    #[arg(
        long,
        visible_alias = "node-agent-pod-cpu-limit",
        default_value = "1000m"
    )]
    restic_pod_cpu_limit: String,
    /// Memory limit of each agent pod (0: none).
    #[arg(
        long,
        visible_alias = "node-agent-pod-mem-limit",
        default_value = "1Gi"
    )]
    restic_pod_mem_limit: String,
    /// Server-side feature flags, comma-separated; passed to the server and the agents.
    #[arg(long, default_value = "")]
    features: String,
    /// The image of the server and the agents.
    #[arg(long, default_value_t = install::default_image())]
    image: String,
    /// Install (or print) the CRDs only.
    #[arg(long)]
    crds_only: bool,
    /// Print the objects instead of applying them (with -o yaml|json; yaml by default).
    #[arg(long)]
    dry_run: bool,
    /// How --dry-run prints the objects.
    #[arg(long, short = 'o', value_enum)]
    output: Option<Format>,
    /// Wait until the server (and the agents) are ready.
    #[arg(long)]
    wait: bool,
    /// Accepted for Velero's scripts and ignored: lifeboat's providers are built in.
    #[arg(long, value_name = "IMAGES")]
    plugins: Option<String>,
    /// Create the volume snapshot location `default` (true) or not (false, the default unless
    /// --snapshot-location-config is given).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    use_volume_snapshots: Option<bool>,
    /// Create no backup storage location (then --provider and --bucket are not needed).
    #[arg(long)]
    no_default_backup_location: bool,
    /// Annotations added to the server and agent pods: key=value,….
    #[arg(long, value_name = "K=V,…")]
    pod_annotations: Option<String>,
    /// Labels added to the server and agent pods: key=value,….
    #[arg(long, value_name = "K=V,…")]
    pod_labels: Option<String>,
    /// The data mover: restic (the only one lifeboat has).
    #[arg(long, value_name = "TYPE")]
    uploader_type: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    /// Uninstall without asking (required without a terminal).
    #[arg(long)]
    force: bool,
    /// Wait until the namespace and the CRDs are gone.
    #[arg(long)]
    wait: bool,
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read --{flag} {}", path.display()))
}

fn resources(
    prefix: &str,
    [cpu_request, memory_request, cpu_limit, memory_limit]: [&str; 4],
) -> Result<PodResources> {
    for (name, value) in [
        ("cpu-request", cpu_request),
        ("mem-request", memory_request),
        ("cpu-limit", cpu_limit),
        ("mem-limit", memory_limit),
    ] {
        if !value.is_empty() && !install::is_quantity(value) {
            bail!(
                "--{prefix}-{name} `{value}` is not a Kubernetes quantity such as 500m, 1, 512Mi or 1Gi"
            );
        }
    }
    Ok(PodResources {
        cpu_request: cpu_request.to_string(),
        memory_request: memory_request.to_string(),
        cpu_limit: cpu_limit.to_string(),
        memory_limit: memory_limit.to_string(),
    })
}

/// The render options the flags describe, without the TLS material (issued once the
/// namespace, and any CA already in it, is known); refuses what Velero refuses.
fn options(args: &InstallFlags, namespace: &str, tls: pki::Bundle) -> Result<InstallOptions> {
    if args.output.is_some() && !args.dry_run {
        bail!("-o/--output prints what --dry-run would install; add --dry-run or leave -o out");
    }
    if let Some(uploader) = args.uploader_type.as_deref()
        && uploader != "restic"
    {
        if uploader == "kopia" {
            bail!(
                "--uploader-type kopia is not supported: lifeboat writes restic repositories; use --uploader-type restic or leave it out"
            );
        }
        bail!("--uploader-type `{uploader}` is unknown; the one uploader is restic");
    }
    let mut options = InstallOptions::new(namespace, tls);
    options.crds_only = args.crds_only;
    options.image = args.image.clone();
    options.features = split_features(&args.features);
    options.use_restic = args.use_restic;
    options.default_volumes_to_restic = args.default_volumes_to_restic;
    if let Some(frequency) = &args.default_restic_prune_frequency {
        // It becomes the server's flag of the same name: checked with the parser that flag
        // uses, so an install never writes a Deployment whose server refuses to start.
        let frequency = frequency.trim();
        if let Err(e) = lifeboat_server::duration::parse_positive(frequency) {
            bail!("--default-restic-prune-frequency {e}");
        }
        options.default_restic_prune_frequency = Some(frequency.to_owned());
    }
    options.pod_labels = parse_pairs("pod-labels", args.pod_labels.as_slice())?;
    options.pod_annotations = parse_pairs("pod-annotations", args.pod_annotations.as_slice())?;
    options.server_resources = resources(
        "velero-pod",
        [
            &args.velero_pod_cpu_request,
            &args.velero_pod_mem_request,
            &args.velero_pod_cpu_limit,
            &args.velero_pod_mem_limit,
        ],
    )?;
    options.agent_resources = resources(
        "restic-pod",
        [
            &args.restic_pod_cpu_request,
            &args.restic_pod_mem_request,
            &args.restic_pod_cpu_limit,
            &args.restic_pod_mem_limit,
        ],
    )?;
    if let Some(budget) = install::agent_memory_budget(&args.restic_pod_mem_limit)
        && budget < u64::from(lifeboat_repo::MIN_BUDGET_MIB) << 20
    {
        bail!(
            "--restic-pod-mem-limit {} leaves the agent {} MiB for its volume jobs, below the {} MiB they need at least; give it 128Mi or more",
            args.restic_pod_mem_limit,
            budget >> 20,
            lifeboat_repo::MIN_BUDGET_MIB
        );
    }
    if args.crds_only {
        return Ok(options);
    }

    if args.secret_file.is_some() && args.no_secret {
        bail!("--secret-file and --no-secret contradict each other; give one");
    }
    options.credentials = match (&args.secret_file, args.no_secret) {
        (Some(path), _) => Some(read_file("secret-file", path)?),
        (None, true) => None,
        (None, false) => bail!(
            "give --secret-file with the provider's credentials, or --no-secret when the cluster's own identity reaches the bucket"
        ),
    };

    let provider = args.provider.as_deref().filter(|p| !p.is_empty());
    if !args.no_default_backup_location {
        let Some(provider) = provider else {
            bail!("--provider is required (or --no-default-backup-location)");
        };
        let Some(bucket) = args.bucket.as_deref().filter(|b| !b.is_empty()) else {
            bail!("--bucket is required (or --no-default-backup-location)");
        };
        options.backup_location = Some(BackupLocationOptions {
            provider: provider.to_string(),
            bucket: bucket.to_string(),
            prefix: args.prefix.trim_matches('/').to_string(),
            config: parse_pairs(
                "backup-location-config",
                args.backup_location_config.as_slice(),
            )?,
            ca_cert: args
                .cacert
                .as_deref()
                .map(|path| read_file("cacert", path))
                .transpose()?,
        });
    }

    let snapshot_config = parse_pairs(
        "snapshot-location-config",
        args.snapshot_location_config.as_slice(),
    )?;
    let want_snapshots = match args.use_volume_snapshots {
        Some(explicit) => explicit,
        None => args.snapshot_location_config.is_some(),
    };
    if want_snapshots {
        let Some(provider) = provider else {
            bail!("--provider is required for the volume snapshot location");
        };
        options.snapshot_location = Some(SnapshotLocationOptions {
            provider: provider.to_string(),
            config: snapshot_config,
        });
    }
    Ok(options)
}

fn say(progress: &Progress) {
    println!("{progress}");
}

pub(crate) async fn install(args: InstallArgs, cluster: &ClusterArgs) -> Result<()> {
    let args = args.flags;
    if args.plugins.is_some() {
        eprintln!("lifeboat: --plugins ignored: lifeboat's storage providers are built in");
    }
    let namespace = cluster.namespace()?;
    if args.dry_run {
        return dry_run(&args, cluster, &namespace).await;
    }

    // Check the flags before reaching for the cluster, so a typo fails at once.
    let placeholder = pki::Bundle::generate(&namespace).context("cannot make the certificates")?;
    let mut options = options(&args, &namespace, placeholder)?;
    let client = cluster.client().await?;
    if !args.crds_only {
        // An earlier install's CA keeps issuing, so running agents keep trusting the server.
        if let Some(authority) = install::existing_authority(&client, &namespace).await? {
            options.tls = pki::Bundle::issue(&authority, &namespace)
                .context("cannot issue certificates from the existing CA")?;
        }
    }
    let objects = install::render(&options);
    install::apply(&client, &objects, say).await?;
    if args.crds_only {
        println!("The lifeboat CRDs are installed.");
        return Ok(());
    }
    if args.wait {
        install::wait_ready(&client, &namespace, args.use_restic, say).await?;
    }
    println!(
        "lifeboat is installed! ⛵ Use 'kubectl logs deployment/{} -n {namespace}' to view the status.",
        install::DEPLOYMENT
    );
    Ok(())
}

/// Prints what install would apply, touching nothing. With the cluster reachable the output
/// is what `install` would do there: certificates from the existing CA, and what install would
/// keep (Secrets holding the repository password, the CA and keys, credentials; locations)
/// left out with a note, so applying the output (`kubectl apply`, a GitOps pipeline) never
/// replaces a password or a CA. Without a cluster the Secrets are new, as for a first
/// install, and stderr says what applying them over an existing install would do.
async fn dry_run(args: &InstallFlags, cluster: &ClusterArgs, namespace: &str) -> Result<()> {
    let format = args.output.unwrap_or(Format::Yaml);
    // The flags are checked before reaching for the cluster, so a typo fails at once.
    let fresh = pki::Bundle::generate(namespace).context("cannot make the certificates")?;
    let mut options = options(args, namespace, fresh)?;
    let client = cluster.client().await.ok();
    let reach = |client: kube::Client| async move {
        let authority = install::existing_authority(&client, namespace).await?;
        Ok::<_, install::Error>((client, authority))
    };
    let seen = match client {
        Some(client) => match tokio::time::timeout(DRY_RUN_REACH, reach(client)).await {
            Ok(Ok(seen)) => Some(seen),
            // A CA that exists but cannot issue is what a real install would stop on, too.
            Ok(Err(
                e @ (install::Error::ExistingCa { .. }
                | install::Error::ExistingCaIncomplete { .. }),
            )) => {
                return Err(e.into());
            }
            Ok(Err(_)) | Err(_) => None,
        },
        None => None,
    };
    if let Some(authority) = seen.as_ref().and_then(|(_, authority)| authority.as_ref()) {
        options.tls = pki::Bundle::issue(authority, namespace)
            .context("cannot issue certificates from the existing CA")?;
    }
    let mut objects = install::render(&options);
    let Some((client, _)) = seen else {
        if !args.crds_only {
            eprintln!(
                "lifeboat: no cluster reachable, so the Secrets printed are new (repository password, CA, certificates): applied over an existing install they would replace its password, and its pod volume backups could no longer be read. Run the dry run where the cluster is reachable to leave out what exists there."
            );
        }
        return print_objects(false, &objects, format);
    };
    let kept = install::kept(&client, &objects).await?;
    objects.retain(|o| {
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        !kept.iter().any(|(k, n)| k == kind && n == name)
    });
    let notes: String = kept
        .iter()
        .map(|(kind, name)| {
            format!(
                "# {kind} {namespace}/{name} exists in the cluster and install keeps it: left out, so applying this never replaces it.\n"
            )
        })
        .collect();
    match format {
        Format::Yaml => crate::format::write_stdout(notes.as_bytes())?,
        Format::Json => eprint!("{}", notes.replace("# ", "lifeboat: ")),
    }
    print_objects(false, &objects, format)
}

/// How long a dry run tries to reach the cluster before rendering as for a new one.
const DRY_RUN_REACH: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn uninstall(args: UninstallArgs, cluster: &ClusterArgs) -> Result<()> {
    let namespace = cluster.namespace()?;
    if !args.force {
        let question = format!(
            "You are about to uninstall lifeboat from namespace {namespace}. Are you sure you want to continue"
        );
        match ask(&question)? {
            None => bail!(
                "uninstall deletes lifeboat and its CRDs; without a terminal to confirm on, pass --force"
            ),
            Some(false) => {
                println!("Uninstall cancelled.");
                return Ok(());
            }
            Some(true) => {}
        }
    }
    let client = cluster.client().await?;
    let mut namespace_deleted = false;
    install::uninstall(&client, &namespace, |progress| {
        if let Progress::Object { kind, outcome, .. } = progress {
            if kind == "Namespace" && *outcome == install::Outcome::Deleted {
                namespace_deleted = true;
            }
            if *outcome == install::Outcome::Missing {
                return;
            }
        }
        say(progress);
    })
    .await?;
    if args.wait {
        install::wait_uninstalled(&client, &namespace, namespace_deleted, say).await?;
    }
    println!("lifeboat is uninstalled from namespace {namespace}.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: InstallArgs,
    }

    fn parse(args: &[&str]) -> Box<InstallFlags> {
        Cli::try_parse_from(std::iter::once("install").chain(args.iter().copied()))
            .unwrap()
            .args
            .flags
    }

    fn tls() -> pki::Bundle {
        pki::Bundle::generate("velero").unwrap()
    }

    #[test]
    fn aliases_and_velero_defaults() {
        let args = parse(&[
            "--use-node-agent",
            "--default-volumes-to-fs-backup",
            "--node-agent-pod-mem-limit=3Gi",
            "--no-secret",
            "--provider=aws",
            "--bucket=b",
        ]);
        let options = options(&args, "velero", tls()).unwrap();
        assert!(options.use_restic && options.default_volumes_to_restic);
        assert_eq!(options.agent_resources.memory_limit, "3Gi");
        assert_eq!(options.server_resources, PodResources::server_default());
        assert!(options.snapshot_location.is_none(), "no VSL unless asked");
        assert!(options.credentials.is_none());
    }

    #[test]
    fn a_snapshot_location_when_configured_or_asked_for_explicitly() {
        let base = ["--no-secret", "--provider=aws", "--bucket=b"];
        let with = |extra: &[&str]| {
            let all: Vec<&str> = base.iter().chain(extra).copied().collect();
            options(&parse(&all), "velero", tls())
                .unwrap()
                .snapshot_location
        };
        assert!(with(&["--snapshot-location-config", "region=x"]).is_some());
        assert!(with(&["--use-volume-snapshots"]).is_some());
        assert!(with(&["--use-volume-snapshots=true"]).is_some());
        assert!(
            with(&[
                "--use-volume-snapshots=false",
                "--snapshot-location-config=region=x"
            ])
            .is_none()
        );
        assert!(with(&[]).is_none());
    }

    #[test]
    fn bad_input_is_one_sentence_naming_the_flag() {
        let err = |args: &[&str]| {
            options(&parse(args), "velero", tls())
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["--no-secret", "--bucket=b"]).contains("--provider"));
        assert!(err(&["--no-secret", "--provider=aws"]).contains("--bucket"));
        assert!(err(&["--provider=aws", "--bucket=b"]).contains("--secret-file"));
        assert!(
            err(&["--no-secret", "--provider=aws", "--bucket=b", "-o", "yaml"])
                .contains("--dry-run")
        );
        assert!(
            err(&[
                "--no-secret",
                "--provider=aws",
                "--bucket=b",
                "--uploader-type=kopia"
            ])
            .contains("kopia")
        );
        assert!(
            err(&[
                "--no-secret",
                "--provider=aws",
                "--bucket=b",
                "--velero-pod-cpu-limit=lots"
            ])
            .contains("--velero-pod-cpu-limit")
        );
        assert!(
            err(&[
                "--no-secret",
                "--provider=aws",
                "--bucket=b",
                "--restic-pod-mem-request=1GB"
            ])
            .contains("--restic-pod-mem-request")
        );
        assert!(
            err(&[
                "--no-secret",
                "--no-default-backup-location",
                "--use-volume-snapshots"
            ])
            .contains("--provider")
        );
        // Neither a location nor a secret is needed for the CRDs alone.
        assert!(options(&parse(&["--crds-only"]), "velero", tls()).is_ok());
        assert!(
            options(
                &parse(&["--no-secret", "--no-default-backup-location"]),
                "velero",
                tls()
            )
            .unwrap()
            .backup_location
            .is_none()
        );
    }
}
