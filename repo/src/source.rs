//! The backup source: rustic_core's local directory walker, watched so that files which
//! vanish, cannot be read, or change while being read become warnings in the backup's result
//! (the backup itself goes on, as restic's does).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustic_core::{ReadSource, ReadSourceEntry, ReadSourceOpen, RusticResult};
use serde::Serialize;

/// Something that went wrong with one file of a backup.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Warning {
    /// The path as stored in the snapshot.
    pub path: String,
    /// What happened.
    pub message: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Warnings {
    list: Arc<Mutex<Vec<Warning>>>,
    /// Source root on disk and its name in the snapshot.
    root: PathBuf,
    stored_root: PathBuf,
}

impl Warnings {
    pub(crate) fn new(root: PathBuf, stored_root: PathBuf) -> Self {
        Self {
            list: Arc::default(),
            root,
            stored_root,
        }
    }

    fn add(&self, path: &Path, message: String) {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let stored = self.stored_root.join(rel);
        log::warn!("{}: {message}", stored.display());
        if let Ok(mut list) = self.list.lock() {
            list.push(Warning {
                path: stored.to_string_lossy().into_owned(),
                message,
            });
        }
    }

    pub(crate) fn take(&self) -> Vec<Warning> {
        self.list
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// A [`ReadSource`] that records per-file problems.
pub(crate) struct Watched<S> {
    pub(crate) inner: S,
    pub(crate) warnings: Warnings,
}

impl<S> ReadSource for Watched<S>
where
    S: ReadSource,
    S::Open: ReadSourceOpen<Reader = File>,
{
    type Open = WatchedOpen<S::Open>;
    type Iter = WatchedIter<S::Iter>;

    fn size(&self) -> RusticResult<Option<u64>> {
        self.inner.size()
    }

    fn entries(&self) -> Self::Iter {
        WatchedIter {
            inner: self.inner.entries(),
            warnings: self.warnings.clone(),
        }
    }
}

pub(crate) struct WatchedIter<I> {
    inner: I,
    warnings: Warnings,
}

impl<I, O> Iterator for WatchedIter<I>
where
    I: Iterator<Item = RusticResult<ReadSourceEntry<O>>>,
{
    type Item = RusticResult<ReadSourceEntry<WatchedOpen<O>>>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.inner.next()? {
            Err(err) => {
                // The walker failed on an entry (it vanished or cannot be listed): rustic_core
                // skips it; we report it.
                self.warnings
                    .add(Path::new(""), format!("skipped: {}", err.display_log()));
                Err(err)
            }
            Ok(ReadSourceEntry { path, node, open }) => {
                let open = open.map(|inner| WatchedOpen {
                    inner,
                    path: path.clone(),
                    size: node.meta.size,
                    mtime: node.meta.mtime,
                    warnings: self.warnings.clone(),
                });
                Ok(ReadSourceEntry { path, node, open })
            }
        })
    }
}

pub(crate) struct WatchedOpen<O> {
    inner: O,
    path: PathBuf,
    size: u64,
    mtime: Option<jiff::Timestamp>,
    warnings: Warnings,
}

impl<O: ReadSourceOpen<Reader = File>> ReadSourceOpen for WatchedOpen<O> {
    type Reader = WatchedReader;

    fn open(self) -> RusticResult<WatchedReader> {
        match self.inner.open() {
            Ok(file) => Ok(WatchedReader {
                file,
                path: self.path,
                size: self.size,
                mtime: self.mtime,
                warnings: self.warnings,
                done: false,
            }),
            Err(err) => {
                let what = if self.path.symlink_metadata().is_err() {
                    "vanished before it could be read; not in this snapshot".to_string()
                } else {
                    format!(
                        "cannot be opened; not in this snapshot: {}",
                        err.display_log()
                    )
                };
                self.warnings.add(&self.path, what);
                Err(err)
            }
        }
    }
}

pub(crate) struct WatchedReader {
    file: File,
    path: PathBuf,
    size: u64,
    mtime: Option<jiff::Timestamp>,
    warnings: Warnings,
    done: bool,
}

impl Read for WatchedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.file.read(buf) {
            Ok(0) if !buf.is_empty() && !self.done => {
                self.done = true;
                // Compare what we read with what the walker saw: a writer may have been busy.
                if let Ok(meta) = self.file.metadata() {
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| jiff::Timestamp::try_from(t).ok());
                    if meta.len() != self.size || (self.mtime.is_some() && mtime != self.mtime) {
                        self.warnings.add(
                            &self.path,
                            "changed while it was being read; the stored content may be inconsistent".into(),
                        );
                    }
                }
                Ok(0)
            }
            Err(err) => {
                self.warnings.add(
                    &self.path,
                    format!("read failed; not in this snapshot: {err}"),
                );
                Err(err)
            }
            ok => ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Opens a path, as rustic_core's local source does.
    struct OpenPath(PathBuf);

    impl ReadSourceOpen for OpenPath {
        type Reader = File;
        fn open(self) -> RusticResult<File> {
            File::open(&self.0).map_err(|e| {
                rustic_core::RusticError::with_source(
                    rustic_core::ErrorKind::InputOutput,
                    "open failed",
                    e,
                )
            })
        }
    }

    fn watched(path: &Path, warnings: &Warnings) -> WatchedOpen<OpenPath> {
        let meta = std::fs::metadata(path).expect("stat");
        WatchedOpen {
            inner: OpenPath(path.to_path_buf()),
            path: path.to_path_buf(),
            size: meta.len(),
            mtime: meta
                .modified()
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok()),
            warnings: warnings.clone(),
        }
    }

    #[test]
    fn a_file_that_vanishes_before_it_is_read_is_a_warning_with_its_stored_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gone.txt");
        std::fs::write(&file, b"soon gone").expect("write");
        let warnings = Warnings::new(dir.path().to_path_buf(), PathBuf::from("/data"));
        let open = watched(&file, &warnings);
        std::fs::remove_file(&file).expect("remove");
        assert!(open.open().is_err());
        let list = warnings.take();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].path, "/data/gone.txt");
        assert!(list[0].message.contains("vanished"), "{:?}", list[0]);
    }

    #[test]
    fn a_file_that_changes_while_read_is_a_warning_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let warnings = Warnings::new(dir.path().to_path_buf(), dir.path().to_path_buf());
        let stable = dir.path().join("stable.txt");
        std::fs::write(&stable, b"same").expect("write");
        let mut r = watched(&stable, &warnings).open().expect("open");
        std::io::copy(&mut r, &mut std::io::sink()).expect("read");
        assert!(warnings.take().is_empty());

        let busy = dir.path().join("busy.log");
        std::fs::write(&busy, b"line 1\n").expect("write");
        let mut r = watched(&busy, &warnings).open().expect("open");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&busy)
            .and_then(|mut f| f.write_all(b"line 2 written during the backup\n"))
            .expect("append");
        std::io::copy(&mut r, &mut std::io::sink()).expect("read");
        let list = warnings.take();
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].message.contains("changed while it was being read"));
    }
}
