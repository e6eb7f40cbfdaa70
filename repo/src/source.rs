//! Per-file problems of a backup: files which vanish, cannot be read, or change while being
//! read become warnings in the backup's result, named by their path in the snapshot (the
//! backup itself goes on, as restic's does).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Something that went wrong with one file of a backup.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Warning {
    /// The path as stored in the snapshot.
    pub path: String,
    /// What happened.
    pub message: String,
    /// The path (or what is under it) is not in the snapshot: it vanished, could not be
    /// read, or was replaced. Otherwise it is stored, but may be inconsistent.
    pub left_out: bool,
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

    /// `path` (or what is under it) is left out of the snapshot, for the reason `message`.
    pub(crate) fn add(&self, path: &Path, message: String) {
        self.push(path, message, true);
    }

    /// `path` is stored, but its content may be inconsistent, for the reason `message`.
    pub(crate) fn add_stored(&self, path: &Path, message: String) {
        self.push(path, message, false);
    }

    fn push(&self, path: &Path, message: String, left_out: bool) {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let stored = self.stored_root.join(rel);
        log::warn!("{}: {message}", stored.display());
        if let Ok(mut list) = self.list.lock() {
            list.push(Warning {
                path: stored.to_string_lossy().into_owned(),
                message,
                left_out,
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
