//! Reaching the cluster: the kube client and the namespace lifeboat lives in, for every client
//! command (`install`, `backup-location`, …).
//!
//! The kubeconfig is found as kubectl finds it (`--kubeconfig`, then `KUBECONFIG`, then
//! `~/.kube/config`, or the in-cluster service account). The namespace is, in order:
//! `--namespace`, `LIFEBOAT_NAMESPACE` (or Velero's `VELERO_NAMESPACE`), the `namespace` of
//! `lifeboat client config`, and `velero`, Velero's default, so an existing install is found.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::config::ClientConfig;

/// The namespace of an install when nothing else names one (Velero's).
pub(crate) const DEFAULT_NAMESPACE: &str = "velero";

/// How to reach the cluster.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClusterArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG_FILE", hide_env = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub kubecontext: Option<String>,
    /// The namespace lifeboat runs in (default: LIFEBOAT_NAMESPACE, VELERO_NAMESPACE, the client
    /// config's namespace, then `velero`).
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
}

impl ClusterArgs {
    /// The namespace lifeboat's objects live in.
    pub fn namespace(&self) -> Result<String> {
        if let Some(ns) = &self.namespace {
            return Ok(ns.clone());
        }
        for var in ["LIFEBOAT_NAMESPACE", "VELERO_NAMESPACE"] {
            if let Ok(ns) = std::env::var(var)
                && !ns.is_empty()
            {
                return Ok(ns);
            }
        }
        let config = ClientConfig::load()?;
        Ok(config
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()))
    }

    /// A client for the cluster the kubeconfig names.
    pub async fn client(&self) -> Result<kube::Client> {
        let options = kube::config::KubeConfigOptions {
            context: self.kubecontext.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?
            }
            None if self.kubecontext.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .context("cannot load the kubeconfig")?,
            None => kube::Config::infer()
                .await
                .context("cannot find a cluster: set KUBECONFIG or pass --kubeconfig")?,
        };
        kube::Client::try_from(config).context("cannot build a client for the cluster")
    }
}
