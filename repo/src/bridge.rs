//! The bridge between rustic_core, which drives the restic format synchronously from its own
//! threads, and our asynchronous [`Store`].
//!
//! rustic_core calls [`ReadBackend`]/[`WriteBackend`] from the dedicated operation thread and
//! its worker threads, never from a tokio worker, so blocking on the runtime handle here is
//! safe. Every call first checks the operation's cancellation token: cancelling makes the next
//! storage call fail, and rustic_core unwinds from there. The first storage error is kept so
//! the engine can report it with its type instead of rustic_core's text.
//!
//! Over a remote store the format engine's tree reads (a check's, a prune's) are each a round
//! trip, one level of directories after the other. Packs of trees are read whole instead, once,
//! and the engine's reads served from them ([`WHOLE_PACKS`] bytes of them at most), as restic's
//! cache holds whole tree packs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::id::PackId;
use crate::store::{FileKind, Store, StoreError};

#[derive(Clone)]
pub(crate) struct Bridge {
    store: Store,
    rt: Handle,
    cancel: CancellationToken,
    first_error: Arc<Mutex<Option<StoreError>>>,
    /// Caps ranged pack reads in flight (restore, check); see `RepositoryOptions::pack_reads`.
    pack_reads: Arc<tokio::sync::Semaphore>,
    whole: Arc<Mutex<WholePacks>>,
    /// The config file as the repository was opened with it: the engine's own open reads it
    /// (two round trips) before every operation, and it never changes.
    config: Option<Bytes>,
    /// The config file the engine wrote through this bridge (init), as stored.
    written_config: Arc<Mutex<Option<Bytes>>>,
}

/// Bytes of tree packs a bridge to a remote store keeps whole (nothing on a local disk, where a
/// read costs no round trip): a repository's trees take about 60 bytes a file, so those of
/// half a million files.
const WHOLE_PACKS: u64 = 32 << 20;

/// Packs of trees read whole.
#[derive(Default)]
struct WholePacks {
    /// What may still be kept, in bytes.
    room: u64,
    /// Pack sizes, from the engine's last listing of packs.
    sizes: HashMap<Id, u32>,
    packs: HashMap<Id, Arc<tokio::sync::OnceCell<Bytes>>>,
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
        let whole = WholePacks {
            room: if store.streams() { WHOLE_PACKS } else { 0 },
            ..WholePacks::default()
        };
        Self {
            config: None,
            store,
            rt,
            cancel,
            first_error: Arc::default(),
            pack_reads: Arc::new(tokio::sync::Semaphore::new(pack_reads.max(1))),
            whole: Arc::new(Mutex::new(whole)),
            written_config: Arc::default(),
        }
    }

    /// This bridge answers the engine's questions about the config file with `sealed` (the
    /// file as stored).
    pub(crate) fn with_config(mut self, sealed: Bytes) -> Self {
        self.config = Some(sealed);
        self
    }

    /// The config file the engine wrote through this bridge, if it did.
    pub(crate) fn written_config(&self) -> Option<Bytes> {
        self.written_config.lock().ok()?.clone()
    }

    /// Pack `id` read whole (or to be), if its size is known and it fits what is left.
    fn whole_pack(&self, id: &Id) -> Option<Arc<tokio::sync::OnceCell<Bytes>>> {
        let mut whole = self.whole.lock().ok()?;
        if let Some(cell) = whole.packs.get(id) {
            return Some(cell.clone());
        }
        let size = u64::from(*whole.sizes.get(id)?);
        if size > whole.room {
            return None;
        }
        whole.room -= size;
        let cell = Arc::new(tokio::sync::OnceCell::new());
        whole.packs.insert(*id, cell.clone());
        Some(cell)
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
        if tpe == FileType::Config
            && let Some(config) = &self.config
        {
            return Ok(vec![(Id::default(), config.len() as u32)]);
        }
        let files = self.run("listing", self.store.list(kind(tpe)))?;
        let listed: Vec<(Id, u32)> = files
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
            .collect();
        if tpe == FileType::Pack
            && let Ok(mut whole) = self.whole.lock()
            && whole.room > 0
        {
            whole.sizes = listed.iter().copied().collect();
        }
        Ok(listed)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        if tpe == FileType::Config
            && let Some(config) = &self.config
        {
            return Ok(config.clone());
        }
        let name = id.to_hex();
        self.run("reading", self.store.read(kind(tpe), name.as_str()))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let name = id.to_hex();
        let permits = self.pack_reads.clone();
        let store = self.store.clone();
        // A tree (the engine marks them cacheable) from its pack read whole.
        if cacheable
            && tpe == FileType::Pack
            && let Some(cell) = self.whole_pack(id)
        {
            let pack = self.run("reading", async move {
                cell.get_or_try_init(|| async {
                    let _permit = permits
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    store.read(FileKind::Pack, name.as_str()).await
                })
                .await
                .cloned()
            })?;
            let (start, end) = (offset as usize, offset as usize + length as usize);
            if end > pack.len() {
                return Err(RusticError::new(
                    ErrorKind::Backend,
                    "pack {pack} holds {size} bytes, fewer than its index says (a blob ends at {end}): it is damaged",
                )
                .attach_context("pack", id.to_hex().to_string())
                .attach_context("size", pack.len().to_string())
                .attach_context("end", end.to_string()));
            }
            return Ok(pack.slice(start..end));
        }
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
        let parts = content.into_vec();
        if tpe == FileType::Config
            && let Ok(mut written) = self.written_config.lock()
        {
            *written = Some(parts.concat().into());
        }
        self.run("writing", self.store.write(kind(tpe), name.as_str(), parts))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let name = id.to_hex();
        self.run("removing", self.store.remove(kind(tpe), name.as_str()))
    }
}

// The format engine's words. rustic_core reports some failures and every check finding only
// as text; reading that text is done here, and nowhere else, so one file changes when its
// wording does.

/// rustic_core's error text, without its banner.
pub(crate) fn rustic_message(e: &RusticError) -> String {
    let text = e.display_log();
    let text = text.strip_prefix("Error: ").unwrap_or(&text);
    text.split(" (kind: related to")
        .next()
        .unwrap_or(text)
        .trim()
        .to_string()
}

/// A finding of the format engine's structural check in our words: its findings carry its
/// error reports (banners, backtrace notes, causes' debug names) and advise `rustic` commands,
/// which our users do not have. Its finding type is not public, so the text is read: the
/// first line, the object it names, our sentence.
pub(crate) fn plain_finding(text: &str) -> String {
    let first = text.lines().next().unwrap_or(text).trim();
    let word_after = |prefix: &str| {
        first.strip_prefix(prefix).map(|rest| {
            rest.split([' ', ',', ':'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
    };
    if let Some(id) =
        word_after("error reading pack ").or_else(|| word_after("error checking pack "))
    {
        return format!(
            "pack {id} cannot be read, or its header does not decrypt: the pack is damaged"
        );
    }
    if first.starts_with("error checking trees") {
        return "the snapshots' trees cannot all be read: a tree is missing or damaged (`lifeboat repo check --read-data` names the damaged pack)".into();
    }
    if let Some(rest) = first
        .strip_prefix("Error reading file Type: ")
        .or_else(|| first.strip_prefix("Error reading cached file Type: "))
        && let Some((kind, rest)) = rest.split_once(", Id: ")
    {
        let id = rest.split(' ').next().unwrap_or_default();
        return format!(
            "{} file {id} cannot be read or does not decrypt: it is damaged",
            kind.to_lowercase()
        );
    }
    if first.contains("not referenced in index")
        && let Some(id) = word_after("pack ").or_else(|| word_after("hot pack "))
    {
        return format!(
            "pack {id} is in no index: a backup running now, or one interrupted, leaves such packs; `lifeboat repo prune` removes them when none runs"
        );
    }
    let first = first.split(" : ").next().unwrap_or(first);
    first.replace(
        " To repair: 'rustic repair index'.",
        ": the index and the packs disagree, the repository is damaged",
    )
}

/// rustic_core names packs by their first 8 hex digits in messages; find the full id.
pub(crate) fn pack_in_message(message: &str, packs: &[(String, u64)]) -> Option<PackId> {
    let after = message.split("pack ").nth(1)?;
    let short: String = after.chars().take_while(char::is_ascii_hexdigit).collect();
    if short.len() < 8 {
        return None;
    }
    let mut hits = packs.iter().filter(|(name, _)| name.starts_with(&short));
    let (name, _) = hits.next()?;
    if hits.next().is_some() {
        return None;
    }
    name.parse().ok()
}
