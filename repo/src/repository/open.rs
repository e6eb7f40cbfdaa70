//! Creating and opening a repository: the key (scrypt, once), the config, the format
//! version, and the [`Repository`] assembled from them.

use std::sync::Arc;

use rustic_core::repofile::{ConfigFile, MasterKey as RusticKey};
use rustic_core::{Credentials, KeyOptions, RepositoryBackends};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::bridge::Bridge;
use crate::budget::{Hold, KEY_MIB};
use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::lock::Locks;
use crate::store::{FileKind, Store, StoreError};

use super::{
    OpResult, Repository, RepositoryOptions, default_pack_reads, on_thread, reserve,
    rustic_options, store_error,
};

impl Repository {
    /// Creates a repository (restic format version 2, zstd compression) at `location`,
    /// protected by `password`. Fails if one exists there already. Must be called on a tokio
    /// runtime.
    pub async fn init(
        location: &Location,
        password: &str,
        opts: RepositoryOptions,
    ) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::NoPassword);
        }
        if let Location::Local(path) = location {
            std::fs::create_dir_all(path).map_err(|source| {
                Error::store(
                    location,
                    StoreError::Io {
                        path: path.display().to_string(),
                        source,
                    },
                )
            })?;
        }
        let store = Store::open(location, &opts.store)?;
        store.create().await.map_err(|e| store_error(&store, e))?;
        let (probe, config) = tokio::join!(store.probe(), store.size(FileKind::Config, ""));
        if let Err(source) = probe {
            return Err(Error::BucketMissing {
                location: location.to_string(),
                source: Box::new(source),
            });
        }
        if config.map_err(|e| store_error(&store, e))?.is_some() {
            return Err(Error::AlreadyInitialized {
                location: location.to_string(),
            });
        }
        let rt = Handle::current();
        let bridge = Bridge::new(
            store.clone(),
            rt.clone(),
            CancellationToken::new(),
            opts.pack_reads
                .unwrap_or_else(|| default_pack_reads(location)),
        );
        let b = bridge.clone();
        // The format engine writes the config under a fresh master key; the key file is ours
        // (see `crypto::key_file` for its scrypt parameters). The key is written last: a
        // crash in between leaves a config no password opens, and init can be retried after
        // removing it.
        let master = RusticKey::new();
        let m = master.clone();
        let res = on_thread("init", move || -> OpResult<ConfigFile> {
            let backends = RepositoryBackends::new(Arc::new(b), None);
            let config = rustic_core::ConfigOptions::default().set_version(2u32);
            let repo = rustic_core::Repository::new(&rustic_options(), &backends)?.init(
                &Credentials::Masterkey(m),
                &KeyOptions::default(),
                &config,
            )?;
            Ok(repo.config().clone())
        })
        .await?;
        let config = res.map_err(|e| Self::op_error(e, &store, &bridge, None))?;
        let (name, bytes) = crypto::key_file(&master, password);
        store
            .write(FileKind::Key, &name, vec![bytes.into()])
            .await
            .map_err(|e| store_error(&store, e))?;
        // The config as stored, for the format engine's later opens (see `Bridge::with_config`).
        let sealed = bridge.written_config().ok_or_else(|| {
            Error::engine("the format engine created the repository without writing its config")
        })?;
        let key = master;
        Ok(Self::assemble(store, key, (config, sealed), opts, rt))
    }

    /// Opens the repository at `location` with `password`. Must be called on a tokio runtime.
    pub async fn open(
        location: &Location,
        password: &str,
        opts: RepositoryOptions,
    ) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::NoPassword);
        }
        if let Location::Local(path) = location
            && !path.join("config").is_file()
        {
            return Err(Error::NoRepository {
                location: location.to_string(),
            });
        }
        let store = Store::open(location, &opts.store)?;
        // The config and the key files' names together, then every key file together: two
        // round trips before the key is derived (the format engine's open took five, one
        // after the other, which over an 80 ms link was half a small job's time).
        let (config, keys) =
            tokio::join!(store.read(FileKind::Config, ""), store.list(FileKind::Key));
        let sealed_config = match config {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => {
                return Err(match store.probe().await {
                    Err(source) if !matches!(location, Location::Local(_)) => {
                        Error::BucketMissing {
                            location: location.to_string(),
                            source: Box::new(source),
                        }
                    }
                    _ => Error::NoRepository {
                        location: location.to_string(),
                    },
                });
            }
            Err(e) => return Err(store_error(&store, e)),
        };
        let key_files: Vec<(String, bytes::Bytes)> = {
            use futures::{StreamExt, TryStreamExt};
            let names = keys.map_err(|e| store_error(&store, e))?;
            futures::stream::iter(names)
                .map(|(name, _)| {
                    let store = &store;
                    async move {
                        Ok::<_, StoreError>((name.clone(), store.read(FileKind::Key, &name).await?))
                    }
                })
                .buffered(8)
                .try_collect()
                .await
                .map_err(|e| store_error(&store, e))?
        };
        // Deriving the key from the password holds scrypt's table: several jobs opening at
        // once (an agent's volumes) would otherwise hold one each beside the others' buffers.
        let _deriving = match &opts.memory {
            None => Hold::none(),
            Some(budget) => reserve(budget, KEY_MIB, &CancellationToken::new()).await?,
        };
        let password = password.to_string();
        let at = location.to_string();
        // Each key file in turn, as restic tries them; one that is not a key file is passed
        // over (another may open), and named if none does.
        let key = on_thread("open", move || {
            let mut damaged = Vec::new();
            for (name, bytes) in &key_files {
                match crypto::open_key_file(bytes, &password) {
                    Ok(Some(key)) => return Ok(key),
                    Ok(None) => {}
                    Err(why) => damaged.push(format!("{name} ({why})")),
                }
            }
            Err(if key_files.is_empty() || damaged.len() < key_files.len() {
                Error::WrongPassword { location: at }
            } else {
                Error::KeysDamaged {
                    location: at,
                    files: damaged.join(", "),
                }
            })
        })
        .await??;
        let config_damaged = || Error::ConfigDamaged {
            location: location.to_string(),
        };
        let plain = MasterKey::from_rustic(&key)
            .decrypt(&sealed_config)
            .map_err(|_| config_damaged())?;
        let json = crypto::unpack_json(&plain).ok_or_else(config_damaged)?;
        let config: ConfigFile = serde_json::from_slice(&json).map_err(|_| config_damaged())?;
        if !(1..=2).contains(&config.version) {
            return Err(Error::engine(format!(
                "the repository at {location} has format version {}, which lifeboat does not read (1 and 2 are restic's)",
                config.version
            )));
        }
        let rt = Handle::current();
        Ok(Self::assemble(
            store,
            key,
            (config, sealed_config),
            opts,
            rt,
        ))
    }

    fn assemble(
        store: Store,
        key: RusticKey,
        (config, sealed_config): (ConfigFile, bytes::Bytes),
        opts: RepositoryOptions,
        rt: Handle,
    ) -> Self {
        let version = config.version;
        let locks = Locks::new(store.clone(), MasterKey::from_rustic(&key), version);
        Self {
            store,
            key,
            locks,
            version,
            config: Arc::new(config),
            sealed_config,
            opts,
            rt,
        }
    }
}
