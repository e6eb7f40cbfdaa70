//! The bridge between rustic_core, which drives the restic format synchronously from its own
//! threads, and our asynchronous [`Store`].
//!
//! rustic_core calls [`ReadBackend`]/[`WriteBackend`] from the dedicated operation thread and
//! its worker threads, never from a tokio worker, so blocking on the runtime handle here is
//! safe. Every call first checks the operation's cancellation token: cancelling makes the next
//! storage call fail, and rustic_core unwinds from there. The first storage error is kept so
//! the engine can report it with its type instead of rustic_core's text.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::store::{FileKind, Store, StoreError};

#[derive(Clone)]
pub(crate) struct Bridge {
    store: Store,
    rt: Handle,
    cancel: CancellationToken,
    first_error: Arc<Mutex<Option<StoreError>>>,
    /// Caps ranged pack reads in flight (restore, check); see `RepositoryOptions::pack_reads`.
    pack_reads: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bridge({:?})", self.store)
    }
}

fn kind(tpe: FileType) -> FileKind {
    match tpe {
        FileType::Config => FileKind::Config,
        FileType::Index => FileKind::Index,
        FileType::Key => FileKind::Key,
        FileType::Snapshot => FileKind::Snapshot,
        FileType::Pack => FileKind::Pack,
    }
}

impl Bridge {
    pub(crate) fn new(
        store: Store,
        rt: Handle,
        cancel: CancellationToken,
        pack_reads: usize,
    ) -> Self {
        Self {
            store,
            rt,
            cancel,
            first_error: Arc::default(),
            pack_reads: Arc::new(tokio::sync::Semaphore::new(pack_reads.max(1))),
        }
    }

    /// The first storage error seen, if any.
    pub(crate) fn take_error(&self) -> Option<StoreError> {
        self.first_error.lock().ok()?.take()
    }

    fn run<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> RusticResult<T> {
        if self.cancel.is_cancelled() {
            return Err(RusticError::new(ErrorKind::Backend, "operation cancelled"));
        }
        let cancel = self.cancel.clone();
        let res = self.rt.block_on(async move {
            tokio::select! {
                res = fut => Some(res),
                () = cancel.cancelled() => None,
            }
        });
        match res {
            None => Err(RusticError::new(ErrorKind::Backend, "operation cancelled")),
            Some(Ok(v)) => Ok(v),
            Some(Err(err)) => {
                let message = format!("{what} failed: {err}");
                if !matches!(err, StoreError::NotFound { .. })
                    && let Ok(mut slot) = self.first_error.lock()
                    && slot.is_none()
                {
                    *slot = Some(err);
                }
                Err(RusticError::new(ErrorKind::Backend, message))
            }
        }
    }
}

impl ReadBackend for Bridge {
    fn location(&self) -> String {
        self.store.location().to_string()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        let files = self.run("listing", self.store.list(kind(tpe)))?;
        Ok(files
            .into_iter()
            .filter_map(|(name, size)| {
                let id = if tpe == FileType::Config {
                    Id::default()
                } else {
                    name.parse().ok()?
                };
                // restic's files are far below 4 GiB; a larger object is not one of ours.
                Some((id, u32::try_from(size).ok()?))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let name = id.to_hex();
        self.run("reading", self.store.read(kind(tpe), name.as_str()))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let name = id.to_hex();
        let permits = self.pack_reads.clone();
        let store = self.store.clone();
        self.run("reading", async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            store
                .read_range(kind(tpe), name.as_str(), offset.into(), length.into())
                .await
        })
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        format!("{}/{}", kind(tpe).dir(), id.to_hex().as_str())
    }
}

impl WriteBackend for Bridge {
    fn create(&self) -> RusticResult<()> {
        self.run("creating the repository layout", self.store.create())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let name = id.to_hex();
        self.run(
            "writing",
            self.store
                .write(kind(tpe), name.as_str(), content.into_vec()),
        )
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let name = id.to_hex();
        self.run("removing", self.store.remove(kind(tpe), name.as_str()))
    }
}
