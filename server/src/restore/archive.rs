//! A backup's resource tarball, unpacked for a restore: extracted into a scratch directory
//! as Velero does (objects are then read one at a time, in restore order, so memory does not
//! grow with the backup), and catalogued by resource, namespace and name.
//!
//! Each object is read from the unversioned path (`resources/<gr>/namespaces/<ns>/<name>.json`,
//! `resources/<gr>/cluster/<name>.json`) that every Velero version writes; a resource that
//! only has per-version directories is read from its `<version>-preferredversion` one.
//! A tarball comes from a bucket, which is not trusted: an entry that would land outside the
//! scratch directory (absolute, `..`), or is not a regular file or directory, fails the
//! extraction before anything is restored.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use serde_json::Value;

/// Why a tarball cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The gzip or tar stream is broken.
    #[error("the backup tarball is not a readable tar.gz")]
    Corrupt(#[source] io::Error),
    /// An entry would escape the extraction directory, or is a link or device.
    #[error("the backup tarball holds an unsafe entry {0:?}; nothing was restored")]
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
    /// The resources (`resource.group`, or `resource` for the core group) and their objects.
    pub resources: BTreeMap<String, ResourceItems>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Extracts the gzip tarball read from `tarball` into `dir` (which must exist and be empty)
/// and catalogues it.
pub fn extract(tarball: impl Read, dir: &Path) -> Result<BackupContents, ArchiveError> {
    let mut archive = tar::Archive::new(GzDecoder::new(tarball));
    for entry in archive.entries().map_err(ArchiveError::Corrupt)? {
        let mut entry = entry.map_err(ArchiveError::Corrupt)?;
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
                fs::create_dir_all(&target).map_err(io_error(&target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io_error(parent))?;
                }
                let mut out = fs::File::create(&target).map_err(io_error(&target))?;
                io::copy(&mut entry, &mut out).map_err(ArchiveError::Corrupt)?;
            }
            // GNU long names and PAX headers are read by the tar crate itself.
            tar::EntryType::GNULongName
            | tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader => {}
            _ => return Err(ArchiveError::UnsafeEntry(shown)),
        }
    }
    catalogue(dir)
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

/// Catalogues an extracted tarball at `root`.
pub fn catalogue(root: &Path) -> Result<BackupContents, ArchiveError> {
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
        resources,
    })
}

impl BackupContents {
    /// Reads one object: `namespace` empty for a cluster-scoped one.
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
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| ArchiveError::NotJson {
            path: path
                .strip_prefix(&self.root)
                .unwrap_or(&path)
                .display()
                .to_string(),
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
        let contents = extract(&bytes[..], dir.path()).unwrap();
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
        let err = extract(&data[..], &dir.path().join("x")).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafeEntry(_)), "{err}");
        assert!(!dir.path().join("evil.json").exists());
    }

    #[test]
    fn a_tarball_without_resources_says_so() {
        let writer = TarballWriter::new(Vec::new(), 0).unwrap();
        let bytes = writer.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            extract(&bytes[..], dir.path()),
            Err(ArchiveError::NoResources)
        ));
    }
}
