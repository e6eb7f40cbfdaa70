//! A backup's resource tarball, unpacked for a restore: extracted into a scratch directory
//! as Velero does (objects are then read one at a time, in restore order, so memory does not
//! grow with the backup), and catalogued by resource, namespace and name.
//!
//! Each object is read from the unversioned path (`resources/<gr>/namespaces/<ns>/<name>.json`,
//! `resources/<gr>/cluster/<name>.json`) that every Velero version writes; a resource that
//! only has per-version directories is read from its `<version>-preferredversion` one.
//!
//! A tarball comes from a bucket, which is not trusted. The extraction reads it as a stream
//! (the caller feeds it from the store as it downloads; nothing holds the whole tarball or a
//! whole entry in memory) and fails, before anything is restored, on:
//! - an entry that would land outside the scratch directory (absolute, `..`), or that is not a
//!   regular file or directory;
//! - more than [`ArchiveLimits::max_unpacked`] bytes of uncompressed tar stream (headers
//!   included): a gzip bomb stops at the limit, however small it is compressed;
//! - an entry larger than [`ArchiveLimits::max_object`], told by its header before any of it
//!   is written; the same cap bounds the metadata the tar reader holds in memory for the next
//!   entry (GNU long names, PAX records) and every later read of an object file;
//! - more than [`ArchiveLimits::max_entries`] entries.
//!
//! What it writes is private: directories 0700, files 0600, inside the restore's own scratch
//! directory ([`scratch`](super::scratch)).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use bytes::{Buf as _, Bytes};
use flate2::read::GzDecoder;
use serde_json::Value;

/// Default of [`ArchiveLimits::max_unpacked`]: 4 GiB. etcd's default space quota is 2 GiB,
/// and a tarball holds each object twice (its unversioned and preferred-version paths), so a
/// backup of everything a default-sized etcd can hold fits.
pub const DEFAULT_MAX_UNPACKED: u64 = 4 << 30;
/// Default of [`ArchiveLimits::max_object`]: 8 MiB. No object can be larger in a cluster:
/// etcd refuses requests over 1.5 MiB and the API server request bodies over 3 MiB, so this
/// is more than twice anything that can be restored. It bounds the memory of one object's
/// parse, too (a JSON value takes several times its text).
pub const DEFAULT_MAX_OBJECT: u64 = 8 << 20;
/// Default of [`ArchiveLimits::max_entries`]: 1,000,000, about 500,000 objects (each is in
/// the tarball twice), more than a default-sized etcd holds at a few KiB per object.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// Room for the tar framing read around one entry (its header, padding, a long name's
/// header): what the reader may take beyond [`ArchiveLimits::max_object`] for one entry.
const ENTRY_FRAMING: u64 = 64 << 10;

/// How much a restore may unpack from a tarball (the server's `--restore-max-unpacked-size`,
/// `--restore-max-object-size` and `--restore-max-entries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Bytes of the uncompressed tar stream, headers included: a bound on the scratch space a
    /// restore uses and on the work a gzip bomb can cause.
    pub max_unpacked: u64,
    /// Bytes of one entry (one object's JSON), and of a long name or PAX record.
    pub max_object: u64,
    /// Entries, directories included.
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_unpacked: DEFAULT_MAX_UNPACKED,
            max_object: DEFAULT_MAX_OBJECT,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// A size for people: whole GiB, MiB or KiB when it is one, else bytes.
pub fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Why a tarball cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The gzip or tar stream is broken.
    #[error("the backup tarball is not a readable tar.gz")]
    Corrupt(#[source] io::Error),
    /// An entry would escape the extraction directory, or is a link or device.
    #[error("the backup tarball holds an unsafe entry {0:?}")]
    UnsafeEntry(String),
    /// The tarball has no `resources/` directory.
    #[error("the backup tarball has no resources directory")]
    NoResources,
    /// The scratch directory could not be written or read.
    #[error("cannot use the scratch directory {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// An object file is not JSON.
    #[error("{path} in the backup tarball is not a JSON object")]
    NotJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The tarball unpacks to more than [`ArchiveLimits::max_unpacked`].
    #[error(
        "the backup tarball unpacks to more than {}, the server's limit: raise --restore-max-unpacked-size to restore this backup",
        show_size(*.limit)
    )]
    TooLarge { limit: u64 },
    /// An entry (`what` names it) is larger than [`ArchiveLimits::max_object`].
    #[error(
        "{what} in the backup tarball is larger than {}, the server's limit for one object: raise --restore-max-object-size to restore this backup",
        show_size(*.limit)
    )]
    ObjectTooLarge { what: String, limit: u64 },
    /// The tarball has more than [`ArchiveLimits::max_entries`] entries.
    #[error(
        "the backup tarball has more than {limit} entries, the server's limit: raise --restore-max-entries to restore this backup"
    )]
    TooManyEntries { limit: u64 },
}

/// The objects of one resource in the tarball.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceItems {
    /// Where its files are, relative to `resources/<gr>/` (empty, or `<v>-preferredversion`).
    version_dir: String,
    /// Object names by namespace; `""` holds the cluster-scoped ones.
    pub by_namespace: BTreeMap<String, Vec<String>>,
}

/// An extracted tarball.
#[derive(Debug)]
pub struct BackupContents {
    root: PathBuf,
    /// The largest object file [`BackupContents::read`] reads.
    max_object: u64,
    /// The resources (`resource.group`, or `resource` for the core group) and their objects.
    pub resources: BTreeMap<String, ResourceItems>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The limit a [`Metered`] reader reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tripped {
    Unpacked,
    Entry,
}

/// Counts of the uncompressed stream, shared by the reader under the tar parser and the
/// extraction loop (one thread: `Cell`s).
#[derive(Debug)]
struct Meter {
    total: Cell<u64>,
    /// Bytes read since the extraction loop last asked for an entry: that entry's framing,
    /// any metadata entries before it, and its data.
    entry: Cell<u64>,
    tripped: Cell<Option<Tripped>>,
    limits: ArchiveLimits,
}

impl Meter {
    /// The error to report for a failed read: the limit, when one was reached.
    fn error(&self, e: io::Error) -> ArchiveError {
        match self.tripped.get() {
            Some(Tripped::Unpacked) => ArchiveError::TooLarge {
                limit: self.limits.max_unpacked,
            },
            Some(Tripped::Entry) => ArchiveError::ObjectTooLarge {
                what: "an entry's header (a long name or PAX record)".into(),
                limit: self.limits.max_object,
            },
            None => ArchiveError::Corrupt(e),
        }
    }
}

/// The uncompressed tar stream, failing once it goes past a limit: the tar parser reads
/// skipped data and metadata entries (into memory) on its own, and this is what bounds them.
struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let m = &self.meter;
        if m.tripped.get().is_some() {
            return Err(io::Error::other("a limit of the tarball was reached"));
        }
        let n = self.inner.read(buf)?;
        m.total.set(m.total.get() + n as u64);
        m.entry.set(m.entry.get() + n as u64);
        if m.total.get() > m.limits.max_unpacked {
            m.tripped.set(Some(Tripped::Unpacked));
        } else if m.entry.get() > m.limits.max_object.saturating_add(ENTRY_FRAMING) {
            m.tripped.set(Some(Tripped::Entry));
        }
        if m.tripped.get().is_some() {
            return Err(io::Error::other("a limit of the tarball was reached"));
        }
        Ok(n)
    }
}

/// Extracts the gzip tarball read from `tarball` into `dir` (which must exist and be empty,
/// and should be private: see [`scratch`](super::scratch)) within `limits`, and catalogues
/// it. On an error, what was written so far stays in `dir` for the caller to remove.
pub fn extract(
    tarball: impl Read,
    dir: &Path,
    limits: &ArchiveLimits,
) -> Result<BackupContents, ArchiveError> {
    let meter = Rc::new(Meter {
        total: Cell::new(0),
        entry: Cell::new(0),
        tripped: Cell::new(None),
        limits: *limits,
    });
    let mut archive = tar::Archive::new(Metered {
        inner: GzDecoder::new(tarball),
        meter: meter.clone(),
    });
    let mut entries = archive.entries().map_err(|e| meter.error(e))?;
    let mut count = 0u64;
    // One copy buffer for every entry: 64 KiB makes the per-read cost noise, and is nothing
    // next to the limits.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        meter.entry.set(0);
        let Some(entry) = entries.next() else { break };
        let mut entry = entry.map_err(|e| meter.error(e))?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let path = entry.path().map_err(ArchiveError::Corrupt)?.into_owned();
        let shown = path.display().to_string();
        if !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ArchiveError::UnsafeEntry(shown));
        }
        let target = dir.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                private_dirs(&target)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // Told by the header: nothing of an oversize entry is written.
                let size = entry.size();
                if size > limits.max_object {
                    return Err(ArchiveError::ObjectTooLarge {
                        what: format!("{shown} ({})", show_size(size)),
                        limit: limits.max_object,
                    });
                }
                if let Some(parent) = target.parent() {
                    private_dirs(parent)?;
                }
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io_error(&target))?;
                loop {
                    let n = entry.read(&mut buf).map_err(|e| meter.error(e))?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).map_err(io_error(&target))?;
                }
            }
            // GNU long names and PAX headers are read by the tar crate itself.
            tar::EntryType::GNULongName
            | tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader => {}
            _ => return Err(ArchiveError::UnsafeEntry(shown)),
        }
    }
    catalogue(dir, limits)
}

/// Creates `dir` and its missing parents, 0700.
fn private_dirs(dir: &Path) -> Result<(), ArchiveError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

/// A blocking reader over the chunks of a download, for [`extract`] on a blocking thread
/// while the download runs on the runtime: the channel is bounded, so the download waits for
/// the extraction and memory stays at the channel's chunks. Dropping the reader (the
/// extraction ended, early or not) closes the channel, which tells the download to stop.
#[derive(Debug)]
pub struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChunkReader {
    /// Reads what arrives on `chunks`; an `Err` chunk is returned as a read error, and the
    /// channel's end is the stream's end.
    pub fn new(chunks: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

fn names(dir: &Path) -> Result<Vec<String>, ArchiveError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

fn items(dir: &Path) -> Result<Vec<String>, ArchiveError> {
    Ok(names(dir)?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect())
}

/// Catalogues an extracted tarball at `root`; its objects are read within `limits`.
pub fn catalogue(root: &Path, limits: &ArchiveLimits) -> Result<BackupContents, ArchiveError> {
    let resources_dir = root.join("resources");
    if !resources_dir.is_dir() {
        return Err(ArchiveError::NoResources);
    }
    let mut resources = BTreeMap::new();
    for gr in names(&resources_dir)? {
        let base = resources_dir.join(&gr);
        if !base.is_dir() {
            continue;
        }
        let version_dir = if base.join("cluster").is_dir() || base.join("namespaces").is_dir() {
            String::new()
        } else {
            match names(&base)?
                .into_iter()
                .find(|n| n.ends_with("-preferredversion"))
            {
                Some(v) => v,
                None => continue,
            }
        };
        let dir = base.join(&version_dir);
        let mut by_namespace = BTreeMap::new();
        if dir.join("cluster").is_dir() {
            let cluster = items(&dir.join("cluster"))?;
            if !cluster.is_empty() {
                by_namespace.insert(String::new(), cluster);
            }
        }
        if dir.join("namespaces").is_dir() {
            for ns in names(&dir.join("namespaces"))? {
                let list = items(&dir.join("namespaces").join(&ns))?;
                if !list.is_empty() {
                    by_namespace.insert(ns, list);
                }
            }
        }
        resources.insert(
            gr,
            ResourceItems {
                version_dir,
                by_namespace,
            },
        );
    }
    Ok(BackupContents {
        root: root.to_owned(),
        max_object: limits.max_object,
        resources,
    })
}

impl BackupContents {
    /// Reads one object: `namespace` empty for a cluster-scoped one. A file larger than the
    /// per-object limit is refused without being read whole.
    pub fn read(&self, gr: &str, namespace: &str, name: &str) -> Result<Value, ArchiveError> {
        let version_dir = self
            .resources
            .get(gr)
            .map(|r| r.version_dir.as_str())
            .unwrap_or_default();
        let mut path = self.root.join("resources").join(gr).join(version_dir);
        path = if namespace.is_empty() {
            path.join("cluster")
        } else {
            path.join("namespaces").join(namespace)
        };
        let path = path.join(format!("{name}.json"));
        let shown = path
            .strip_prefix(&self.root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let mut bytes = Vec::new();
        fs::File::open(&path)
            .and_then(|f| f.take(self.max_object + 1).read_to_end(&mut bytes))
            .map_err(io_error(&path))?;
        if bytes.len() as u64 > self.max_object {
            return Err(ArchiveError::ObjectTooLarge {
                what: shown,
                limit: self.max_object,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| ArchiveError::NotJson {
            path: shown,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::backup::filter::GroupResource;
    use crate::backup::tarball::{ItemPath, TarballWriter};

    fn item(gr: (&str, &str), ns: Option<&str>, name: &str) -> ItemPath {
        ItemPath {
            group_resource: GroupResource::new(gr.0, gr.1),
            version: "v1".into(),
            preferred_version: "v1".into(),
            namespace: ns.map(str::to_owned),
            name: name.into(),
        }
    }

    #[test]
    fn what_the_backup_wrote_is_catalogued_and_read_back() {
        let mut writer = TarballWriter::new(Vec::new(), 1_700_000_000).unwrap();
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}});
        writer
            .add_item(
                &item(("", "configmaps"), Some("shop"), "a"),
                cm.to_string().as_bytes(),
            )
            .unwrap();
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
        writer
            .add_item(
                &item(("", "namespaces"), None, "shop"),
                ns.to_string().as_bytes(),
            )
            .unwrap();
        let bytes = writer.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let contents = extract(&bytes[..], dir.path(), &ArchiveLimits::default()).unwrap();
        assert_eq!(
            contents.resources["configmaps"].by_namespace["shop"],
            vec!["a".to_string()]
        );
        assert_eq!(
            contents.resources["namespaces"].by_namespace[""],
            vec!["shop".to_string()]
        );
        assert_eq!(contents.read("configmaps", "shop", "a").unwrap(), cm);
        assert_eq!(contents.read("namespaces", "", "shop").unwrap(), ns);
    }

    #[test]
    fn an_entry_escaping_the_directory_is_refused() {
        let mut data = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut data, flate2::Compression::default());
            let mut builder = tar::Builder::new(gz);
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // Written raw: the tar crate refuses to build such a path itself.
            let name = b"../evil.json";
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            builder.append(&header, &b"{}"[..]).unwrap();
            builder
                .into_inner()
                .unwrap()
                .finish()
                .unwrap()
                .flush()
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let err = extract(&data[..], &dir.path().join("x"), &ArchiveLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafeEntry(_)), "{err}");
        assert!(!dir.path().join("evil.json").exists());
    }

    #[test]
    fn a_tarball_without_resources_says_so() {
        let writer = TarballWriter::new(Vec::new(), 0).unwrap();
        let bytes = writer.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            extract(&bytes[..], dir.path(), &ArchiveLimits::default()),
            Err(ArchiveError::NoResources)
        ));
    }

    const MIB: u64 = 1 << 20;

    fn limits(max_unpacked: u64, max_object: u64, max_entries: u64) -> ArchiveLimits {
        ArchiveLimits {
            max_unpacked,
            max_object,
            max_entries,
        }
    }

    /// The bytes of every file under `dir`: what an extraction wrote to scratch.
    fn written(dir: &Path) -> u64 {
        let mut total = 0;
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            total += if meta.is_dir() {
                written(&entry.path())
            } else {
                meta.len()
            };
        }
        total
    }

    /// A tar.gz made as it is read, by a thread writing into a pipe: `entries` entries of
    /// `size` bytes of zeros (`resources/configmaps/namespaces/ns/N.json`), never held in
    /// memory and never made further than the reader reads. Returns the reader and a count
    /// of the entries that went into the pipe whole.
    fn streamed_tarball(
        entries: u64,
        size: u64,
    ) -> (
        io::PipeReader,
        std::thread::JoinHandle<()>,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        use std::sync::atomic::Ordering;
        let (reader, writer) = io::pipe().unwrap();
        let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = made.clone();
        let thread = std::thread::spawn(move || {
            let gz = flate2::write::GzEncoder::new(writer, flate2::Compression::default());
            let mut builder = tar::Builder::new(gz);
            for n in 0..entries {
                let mut header = tar::Header::new_gnu();
                header.set_size(size);
                header.set_mode(0o644);
                header.set_entry_type(tar::EntryType::Regular);
                let path = format!("resources/configmaps/namespaces/ns/{n}.json");
                // The reader stopping (a broken pipe) ends the generator.
                if builder
                    .append_data(&mut header, path, io::repeat(0).take(size))
                    .is_err()
                {
                    return;
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(gz) = builder.into_inner() {
                let _ = gz.finish();
            }
        });
        (reader, thread, made)
    }

    #[test]
    fn an_entry_over_the_object_limit_fails_before_any_of_it_is_written() {
        let (reader, thread, _) = streamed_tarball(1, 64 * MIB);
        let dir = tempfile::tempdir().unwrap();
        let err = extract(reader, dir.path(), &limits(1 << 40, MIB, 100)).unwrap_err();
        thread.join().unwrap();
        assert!(
            matches!(err, ArchiveError::ObjectTooLarge { limit, .. } if limit == MIB),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("--restore-max-object-size"), "{message}");
        assert!(
            message.contains("resources/configmaps/namespaces/ns/0.json (64 MiB)"),
            "{message}"
        );
        assert!(message.contains("1 MiB"), "{message}");
        assert_eq!(written(dir.path()), 0);
    }

    #[test]
    fn a_tarball_over_the_unpacked_limit_stops_at_the_limit() {
        // 64 objects of 1 MiB each, each under the object limit; 8 MiB in all is allowed.
        let (reader, thread, _) = streamed_tarball(64, MIB);
        let dir = tempfile::tempdir().unwrap();
        let err = extract(reader, dir.path(), &limits(8 * MIB, 4 * MIB, 1000)).unwrap_err();
        thread.join().unwrap();
        assert!(
            matches!(err, ArchiveError::TooLarge { limit } if limit == 8 * MIB),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("--restore-max-unpacked-size") && message.contains("8 MiB"),
            "{message}"
        );
        assert!(written(dir.path()) <= 8 * MIB, "{}", written(dir.path()));
    }

    #[test]
    fn too_many_entries_fail_at_the_limit() {
        let (reader, thread, _) = streamed_tarball(1000, 10);
        let dir = tempfile::tempdir().unwrap();
        let err = extract(reader, dir.path(), &limits(1 << 40, MIB, 100)).unwrap_err();
        thread.join().unwrap();
        assert!(
            matches!(err, ArchiveError::TooManyEntries { limit: 100 }),
            "{err}"
        );
        assert!(err.to_string().contains("--restore-max-entries"), "{err}");
        let files = fs::read_dir(dir.path().join("resources/configmaps/namespaces/ns"))
            .unwrap()
            .count();
        assert_eq!(files, 100);
    }

    #[test]
    fn a_gzip_bomb_is_stopped_at_the_limit_not_after() {
        use std::sync::atomic::Ordering;
        // 1 GiB of zeros in 1 MiB objects (about 1 MiB compressed), against a 32 MiB limit.
        let (reader, thread, made) = streamed_tarball(1024, MIB);
        let dir = tempfile::tempdir().unwrap();
        let err = extract(reader, dir.path(), &limits(32 * MIB, 4 * MIB, 1_000_000)).unwrap_err();
        thread.join().unwrap();
        assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err}");
        assert!(written(dir.path()) <= 32 * MIB, "{}", written(dir.path()));
        // The generator stopped soon after: what the pipe and the two gzip buffers hold
        // (a few KiB compressed stand for many MiB of zeros), not the rest of the GiB.
        let made = made.load(Ordering::Relaxed);
        assert!(
            made < 256,
            "{made} MiB were compressed before the reader stopped"
        );
    }

    #[test]
    fn a_long_name_record_over_the_object_limit_is_not_read_into_memory() {
        // A GNU long name the tar reader would gather in memory before the entry it names.
        let mut data = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut data, flate2::Compression::default());
            let mut builder = tar::Builder::new(gz);
            let mut header = tar::Header::new_gnu();
            header.set_size(64 * MIB);
            header.set_entry_type(tar::EntryType::GNULongName);
            header.set_path("././@LongLink").unwrap();
            header.set_cksum();
            builder
                .append(&header, io::repeat(b'a').take(64 * MIB))
                .unwrap();
            builder.into_inner().unwrap().finish().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let err = extract(&data[..], dir.path(), &limits(1 << 40, MIB, 100)).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::ObjectTooLarge { what, .. } if what.contains("long name")),
            "{err}"
        );
    }

    #[test]
    fn what_is_extracted_is_private() {
        use std::os::unix::fs::MetadataExt as _;
        let mut writer = TarballWriter::new(Vec::new(), 1_700_000_000).unwrap();
        writer
            .add_item(&item(("", "secrets"), Some("shop"), "db"), b"{}")
            .unwrap();
        let bytes = writer.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        extract(&bytes[..], dir.path(), &ArchiveLimits::default()).unwrap();
        let file = dir.path().join("resources/secrets/namespaces/shop/db.json");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        let mut parent = file.parent();
        while let Some(p) = parent.filter(|p| *p != dir.path()) {
            assert_eq!(fs::metadata(p).unwrap().mode() & 0o777, 0o700, "{p:?}");
            parent = p.parent();
        }
    }

    #[test]
    fn reading_an_object_is_bounded_by_the_object_limit() {
        let mut writer = TarballWriter::new(Vec::new(), 1_700_000_000).unwrap();
        writer
            .add_item(&item(("", "configmaps"), Some("shop"), "a"), b"{}")
            .unwrap();
        let bytes = writer.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let contents = extract(&bytes[..], dir.path(), &limits(1 << 30, MIB, 100)).unwrap();
        // The file grew after the extraction checked it (scratch is ours, but reads are
        // bounded all the same).
        let file = dir
            .path()
            .join("resources/configmaps/namespaces/shop/a.json");
        fs::write(&file, vec![b' '; 2 * MIB as usize]).unwrap();
        let err = contents.read("configmaps", "shop", "a").unwrap_err();
        assert!(
            matches!(err, ArchiveError::ObjectTooLarge { limit, .. } if limit == MIB),
            "{err}"
        );
    }
}
