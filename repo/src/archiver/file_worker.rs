//! The file worker stage: a listed file read, chunked, hashed, compressed and sealed.
//!
//! Input: batches of [`Job`]s from the walkers over a bounded channel (the assembly in
//! [`super`] sizes it: the walkers are at most `QUEUE` files ahead). Output: the file's node
//! with its content (the ids of its chunks) to its directory ([`Shared::complete`]), and new
//! blobs sealed into the worker's own [`Packer`], which goes to [`super::upload`] whenever it
//! is full and once more when the channel closes.
//!
//! One worker per core the budget allows (`BackupBuffers::workers`): chunking (restic's Rabin),
//! SHA-256, zstd and AES-CTR/Poly1305 are CPU work, done here on the engine's own threads and
//! never on the runtime's. Each holds one chunk (at most 8 MiB), its compressed copy and one
//! pack being filled. Workers share only the set of blobs claimed so far, so a chunk seen twice
//! is stored once.
//!
//! Only what the listing saw is read ([`open_listed`]): a path replaced since (by a symlink, a
//! FIFO, another file) is left out of the snapshot with a warning.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustic_core::DataId;
use rustic_core::repofile::Node;

use crate::chunker::Chunks;
use crate::crypto::MasterKey;
use crate::id::BlobId;

use super::packer::Packer;
use super::tree::Pending;
use super::walk::{Identity, Opened, VANISHED, kind_name, timestamp};
use super::{Shared, bump};

/// A file for the workers.
pub(super) struct Job {
    pub(super) path: PathBuf,
    /// What the listing found there: only that file is read.
    pub(super) listed: Identity,
    pub(super) node: Node,
    pub(super) dir: Arc<Pending>,
    pub(super) slot: usize,
}

/// A worker's zstd context and output buffer, kept from blob to blob.
struct Zstd {
    context: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

impl Zstd {
    /// Compresses (version 2, when it helps) and seals a blob into `packer`; returns the
    /// sealed length.
    fn seal(&mut self, key: &MasterKey, id: BlobId, plain: &[u8], packer: &mut Packer) -> u64 {
        if let Some(c) = &mut self.context {
            self.out.clear();
            self.out
                .reserve(zstd::zstd_safe::compress_bound(plain.len()));
            if c.compress_to_buffer(plain, &mut self.out).is_ok() && self.out.len() < plain.len() {
                return packer.add(key, id, &self.out, plain.len() as u32);
            }
        }
        packer.add(key, id, plain, 0)
    }
}

/// A worker: its compression context, pack being filled and read buffer, kept from file to
/// file.
pub(super) struct FileWorker<'s, 'e> {
    shared: &'s Shared<'e>,
    zstd: Zstd,
    packer: Packer,
    buf: Vec<u8>,
}

impl<'s, 'e> FileWorker<'s, 'e> {
    pub(super) fn new(shared: &'s Shared<'e>) -> Self {
        let env = shared.env;
        Self {
            shared,
            zstd: Zstd {
                context: (env.version >= 2)
                    .then(|| zstd::bulk::Compressor::new(env.level).ok())
                    .flatten(),
                out: Vec::new(),
            },
            packer: Packer::new(false, shared.spare.clone(), env.buffers.pack_size),
            buf: Vec::new(),
        }
    }

    /// Reads, chunks and stores files until the walkers are done; then sends its last pack.
    pub(super) fn run(mut self, jobs: &crossbeam_channel::Receiver<Vec<Job>>) {
        let shared = self.shared;
        for job in jobs.iter().flatten() {
            if shared.stop.is_cancelled() {
                continue;
            }
            let node = self.read_file(&job.path, job.listed, job.node);
            shared.complete(&job.dir, job.slot, node);
        }
        if !shared.stop.is_cancelled() {
            shared.upload(&mut self.packer);
        }
    }

    /// The file's node with its content, or `None` (a warning) if it cannot be read.
    fn read_file(&mut self, path: &Path, listed: Identity, mut node: Node) -> Option<Node> {
        let Self {
            shared,
            zstd,
            packer,
            buf,
        } = self;
        let warnings = &shared.env.warnings;
        let file = match open_listed(path, listed) {
            Ok(f) => f,
            Err(Opened::Failed(e)) => {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    VANISHED.to_string()
                } else {
                    format!("cannot be opened; not in this snapshot: {e}")
                };
                warnings.add(path, what);
                return None;
            }
            Err(Opened::Replaced(by)) => {
                warnings.add(path, replaced(by));
                return None;
            }
        };
        let mut chunks = Chunks::new(&shared.env.rabin, &file, buf);
        let mut content = Vec::new();
        let mut size = 0u64;
        loop {
            if shared.stop.is_cancelled() {
                return None;
            }
            let chunk = match chunks.next_chunk() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    warnings.add(path, format!("read failed; not in this snapshot: {e}"));
                    return None;
                }
            };
            let id = BlobId::of(chunk);
            if shared.claim(&id) {
                let sealed = zstd.seal(&shared.env.key, id, chunk, packer);
                bump(&shared.counters.data_blobs, 1);
                bump(&shared.counters.data_added, chunk.len() as u64);
                bump(&shared.counters.data_added_packed, sealed);
                if packer.full() {
                    shared.upload(packer);
                }
            }
            size += chunk.len() as u64;
            shared.stage.advance(chunk.len() as u64);
            content.push(DataId::from(id.to_rustic()));
        }
        bump(&shared.counters.bytes_processed, size);
        if let Ok(after) = file.metadata()
            && (after.len() != node.meta.size
                || timestamp(after.mtime(), after.mtime_nsec()) != node.meta.mtime)
        {
            warnings.add_stored(
                path,
                "changed while it was being read; the stored content may be inconsistent".into(),
            );
        }
        node.meta.size = size;
        node.content = Some(content);
        Some(node)
    }
}

/// The warning of a path replaced between its listing and its reading.
fn replaced(by: &str) -> String {
    format!(
        "was replaced by {by} after it was listed; not in this snapshot (nothing of the replacement was read)"
    )
}

/// Opens what the listing saw at `path`, and only that: the last name is not followed if it
/// became a symlink, a FIFO or device swapped in neither blocks the open nor is read
/// (`O_NONBLOCK`), and the object opened must be the listed one (same device, inode and
/// type) — which also refuses a path that reached another object through a directory
/// swapped for a symlink on the way. restic's archiver makes the same checks.
fn open_listed(path: &Path, listed: Identity) -> Result<File, Opened> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let open = |extra: i32| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).custom_flags(flags | extra);
        o.open(path)
    };
    // O_NOATIME spares the filesystem an inode update per file read; it needs the file's
    // owner (or CAP_FOWNER), so fall back without it.
    let file = open(libc::O_NOATIME)
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EPERM) => open(0),
            _ => Err(e),
        })
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW's answer when the last name is now a symlink.
            Some(libc::ELOOP) => Opened::Replaced(kind_name(libc::S_IFLNK)),
            _ => Opened::Failed(e),
        })?;
    let now = file.metadata().map_err(Opened::Failed)?;
    let found = Identity::of(&now);
    if found != listed {
        return Err(Opened::Replaced(kind_name(found.kind)));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::open_listed;
    use crate::archiver::walk::testing::{listed, replaced_by};
    use std::io::Read;

    /// The race of the issue, made deterministic: listed as a regular file, then replaced by a
    /// symlink to a root-only file, by a FIFO, by another file.
    #[test]
    fn a_file_replaced_after_its_listing_is_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root's secret").expect("write");
        let path = dir.path().join("data");
        std::fs::write(&path, b"the user's data").expect("write");
        let seen = listed(&path);
        let mut f = open_listed(&path, seen)
            .map_err(|_| ())
            .expect("the listed file opens");
        let mut text = String::new();
        f.read_to_string(&mut text).expect("read");
        assert_eq!(text, "the user's data");

        std::fs::remove_file(&path).expect("remove");
        std::os::unix::fs::symlink(&secret, &path).expect("symlink");
        assert_eq!(replaced_by(open_listed(&path, seen)), "a symlink");

        std::fs::remove_file(&path).expect("remove");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // Opening a FIFO for reading blocks until a writer comes, without O_NONBLOCK: the
        // answer must come at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(replaced_by(open_listed(&p, seen)));
        });
        let by = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the open of a FIFO returns at once");
        assert_eq!(by, "a FIFO");

        std::fs::remove_file(&path).expect("remove");
        std::fs::write(dir.path().join("other"), b"other").expect("write");
        std::fs::rename(dir.path().join("other"), &path).expect("rename");
        assert_eq!(replaced_by(open_listed(&path, seen)), "another file");
    }
}
