//! Reaching the cluster: the kube client and the namespace lifeboat lives in, for every client
//! command (`install`, `backup-location`, …), and fetching the objects a command names (by
//! name, by label selector, or all of them; the flags that name them are [`crate::args`]).
//!
//! The kubeconfig is found as kubectl finds it (`--kubeconfig`, then `KUBECONFIG`, then
//! `~/.kube/config`, or the in-cluster service account). The namespace is, in order:
//! `--namespace`, `LIFEBOAT_NAMESPACE` (or Velero's `VELERO_NAMESPACE`), the `namespace` of
//! `lifeboat client config`, and `velero`, Velero's default, so an existing install is found.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use crate::config::ClientConfig;
use crate::selector;

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
        // Remembered for the one sentence an unreachable server gets (see [`unreachable`]).
        let _ = API_SERVER.set(config.cluster_url.to_string());
        kube::Client::try_from(config).context("cannot build a client for the cluster")
    }
}

/// The API server address this command's client was built for.
static API_SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The sentence for a command whose API server could not be reached (refused, unresolvable,
/// timed out, a TLS handshake that failed: kube reports these as a failed service call), naming the address and the
/// operating system's reason, and what to check; `None` for any other error.
pub(crate) fn unreachable(err: &anyhow::Error) -> Option<String> {
    let service = err
        .chain()
        .find_map(|cause| match cause.downcast_ref::<kube::Error>()? {
            e @ (kube::Error::Service(_) | kube::Error::HyperError(_)) => Some(e),
            _ => None,
        })?;
    // The innermost cause is the operating system's or the TLS library's own words.
    let mut reason: &dyn std::error::Error = service;
    while let Some(inner) = reason.source() {
        reason = inner;
    }
    let address = API_SERVER.get().map_or_else(
        || "the API server".to_owned(),
        |a| format!("the API server {a}"),
    );
    Some(format!(
        "cannot reach the Kubernetes cluster: {address} could not be reached ({reason}); check \
         that the cluster is running and that the kubeconfig (--kubeconfig, KUBECONFIG) points at it"
    ))
}

/// The object `name`, or an error saying that the `what` (`Backup`, `Schedule`, …) does not exist.
pub(crate) async fn get_named<K>(api: &Api<K>, what: &str, name: &str) -> Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        Some(obj) => Ok(obj),
        None => bail!("{what} {name:?} does not exist"),
    }
}

/// A create's error, saying so when the object exists already (with `hint`: what to do).
pub(crate) fn already_exists(e: kube::Error, what: &str, name: &str, hint: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 409 => {
            anyhow::anyhow!("{what} {name:?} already exists; {hint}")
        }
        other => other.into(),
    }
}

/// Which objects to fetch.
#[derive(Debug, Clone)]
pub(crate) enum Objects {
    /// These, each of which must exist.
    Named(Vec<String>),
    /// Those a list with these parameters returns.
    Listed(ListParams),
}

impl Objects {
    /// The objects of `get` and `describe`: the names given, else those matching `-l` (all
    /// without it); names and `-l` together are refused, as they would contradict.
    pub fn given(names: &[String], selector: Option<&str>) -> Result<Objects> {
        match (names.is_empty(), selector) {
            (false, None) => Ok(Objects::Named(names.to_vec())),
            (true, selector) => Objects::matching(selector),
            (false, Some(_)) => bail!("pass names or --selector, not both"),
        }
    }

    /// The objects matching the label selector `text` (checked here, so a typo is named).
    pub fn matching(text: Option<&str>) -> Result<Objects> {
        let mut params = ListParams::default();
        if let Some(selector) = text
            .map(|t| selector::parse("selector", t))
            .transpose()?
            .flatten()
        {
            params = params.labels(&selector::query(&selector));
        }
        Ok(Objects::Listed(params))
    }

    /// Fetches the objects, sorted by name: those that exist, and the names that do not.
    pub async fn fetch<K>(&self, api: &Api<K>) -> Result<(Vec<K>, Vec<String>)>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        match self {
            Objects::Named(names) => {
                for name in names {
                    match api.get_opt(name).await? {
                        Some(obj) => found.push(obj),
                        None => missing.push(name.clone()),
                    }
                }
            }
            Objects::Listed(params) => found = api.list(params).await?.items,
        }
        found.sort_by_key(ResourceExt::name_any);
        Ok((found, missing))
    }
}

/// `Ok` when nothing is `missing`, else the error naming each missing `what` (`backup`).
pub(crate) fn none_missing(what: &str, missing: &[String]) -> Result<()> {
    match missing {
        [] => Ok(()),
        [one] => bail!("{what} {one:?} does not exist"),
        many => bail!(
            "{what}s {} do not exist",
            many.iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
