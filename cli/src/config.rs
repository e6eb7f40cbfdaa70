//! `lifeboat client config`: settings of the client kept between commands, in
//! `$HOME/.config/lifeboat/config.json` (or `$LIFEBOAT_CONFIG`), as Velero keeps
//! `~/.config/velero/config.json`: `namespace`, `features` and `colorized`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

/// The client's settings. Keys we do not know are kept.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Client-side feature flags, comma-separated as Velero writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colorized: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl ClientConfig {
    /// Where the settings live.
    pub fn path() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("LIFEBOAT_CONFIG") {
            return Ok(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME")
            .context("HOME is not set, so the client config has no place; set LIFEBOAT_CONFIG")?;
        Ok(PathBuf::from(home).join(".config/lifeboat/config.json"))
    }

    /// The saved settings; none saved yet is the default.
    pub fn load() -> Result<Self> {
        let path = Self::path()?;
        match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Self::default()),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("the client config {} is not valid JSON", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read the client config {}", path.display()))
            }
        }
    }

    fn save(&self) -> Result<()> {
        let path = Self::path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let json = serde_json::to_vec_pretty(self).expect("the config always serialises");
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let value = (!value.is_empty()).then(|| value.to_string());
        match key {
            "namespace" => self.namespace = value,
            "features" => self.features = value.map(|v| split_features(&v).join(",")),
            "colorized" => {
                if let Some(v) = &value
                    && v != "true"
                    && v != "false"
                {
                    bail!("colorized must be true or false, not `{v}`");
                }
                self.colorized = value;
            }
            other => bail!(
                "unknown client config key `{other}`; the keys are namespace, features and colorized"
            ),
        }
        Ok(())
    }
}

/// Splits a comma-separated feature list, dropping blanks.
pub(crate) fn split_features(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Get and set the client's settings.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Set settings: `lifeboat client config set namespace=backup features=EnableCSI`.
    Set {
        /// KEY=VALUE pairs; an empty value removes the setting.
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Print settings: all of them, or the named keys.
    Get { keys: Vec<String> },
}

pub(crate) fn run(args: ClientArgs) -> Result<()> {
    let ClientCommand::Config(command) = args.command;
    match command {
        ConfigCommand::Set { settings } => {
            let mut config = ClientConfig::load()?;
            for setting in &settings {
                let Some((key, value)) = setting.split_once('=') else {
                    bail!("`{setting}` is not KEY=VALUE");
                };
                config.set(key.trim(), value.trim())?;
            }
            config.save()
        }
        ConfigCommand::Get { keys } => {
            let config = ClientConfig::load()?;
            let all = [
                ("namespace", config.namespace.clone()),
                ("features", config.features.clone()),
                ("colorized", config.colorized.clone()),
            ];
            for key in &keys {
                if !all.iter().any(|(k, _)| k == key) {
                    bail!(
                        "unknown client config key `{key}`; the keys are namespace, features and colorized"
                    );
                }
            }
            for (key, value) in all {
                if keys.is_empty() || keys.iter().any(|k| k == key) {
                    println!("{key}: {}", value.as_deref().unwrap_or("<NOT SET>"));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_unknown_keys_and_normalises_features() {
        let mut config: ClientConfig =
            serde_json::from_str(r#"{"features":"A","future":1}"#).unwrap();
        config.set("features", " EnableCSI, ,Other ").unwrap();
        config.set("namespace", "backup").unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["features"], "EnableCSI,Other");
        assert_eq!(json["namespace"], "backup");
        assert_eq!(json["future"], 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let mut config = ClientConfig::default();
        assert!(config.set("colour", "x").is_err());
        assert!(config.set("colorized", "yes").is_err());
        config.set("namespace", "").unwrap();
        assert_eq!(config.namespace, None);
    }
}
