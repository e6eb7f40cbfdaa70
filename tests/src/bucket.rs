//! A backup storage location's bucket as tests see it: keys and bytes read and written with
//! the same object-store client the server uses, and a backup's files downloaded and decoded
//! (the resource tarball unpacked, the gzip-JSON companions parsed) for assertions.
//!
//! Tests are plain threads, so every call here is blocking; each bucket has a small runtime of
//! its own for the client.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use crate::cluster::Storage;

/// A storage location's bucket under its prefix.
pub struct TestBucket {
    bucket: lifeboat_repo::Bucket,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for TestBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestBucket({:?})", self.bucket)
    }
}

impl TestBucket {
    /// The bucket of `storage` under `prefix` (`""`: the whole bucket). S3 is reached with
    /// explicit keys (moto takes any), so nothing depends on this process's environment.
    pub fn open(storage: &Storage, prefix: &str) -> TestBucket {
        let (url, options) = match storage {
            Storage::S3(s3) => (
                s3.restic_url(prefix),
                lifeboat_repo::StoreOptions {
                    credentials: Some(lifeboat_repo::Credentials::Aws {
                        access_key_id: "test".into(),
                        secret_access_key: "test".into(),
                        session_token: None,
                    }),
                    ..Default::default()
                },
            ),
            Storage::Directory(dir) => {
                let dir = dir.join(prefix);
                std::fs::create_dir_all(&dir).expect("create the bucket directory");
                (dir.display().to_string(), Default::default())
            }
        };
        let location = lifeboat_repo::Location::parse(&url).expect("a bucket location");
        let bucket = lifeboat_repo::Bucket::open(&location, &options).expect("open the bucket");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the bucket client");
        TestBucket { bucket, runtime }
    }

    /// Every key under `dir` (recursively; `""`: all), relative to the prefix, sorted.
    pub fn keys(&self, dir: &str) -> Vec<String> {
        let mut keys = self
            .runtime
            .block_on(self.bucket.list_keys(dir))
            .unwrap_or_else(|e| panic!("cannot list {dir:?}: {e}"));
        keys.sort();
        keys
    }

    /// The bytes of `key`, or None when it does not exist.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let exists = self
            .runtime
            .block_on(self.bucket.exists(key))
            .unwrap_or_else(|e| panic!("cannot look for {key}: {e}"));
        if !exists {
            return None;
        }
        let bytes = self
            .runtime
            .block_on(self.bucket.get(key))
            .unwrap_or_else(|e| panic!("cannot read {key}: {e}"));
        Some(bytes.to_vec())
    }

    /// Writes `key`.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        self.runtime
            .block_on(self.bucket.put(key, bytes.to_vec().into()))
            .unwrap_or_else(|e| panic!("cannot write {key}: {e}"));
    }

    /// Removes `key` (a missing key is fine).
    pub fn delete(&self, key: &str) {
        self.runtime
            .block_on(self.bucket.delete(key))
            .unwrap_or_else(|e| panic!("cannot delete {key}: {e}"));
    }

    /// Every object under `dir` with its bytes: a snapshot to compare a later one with.
    pub fn contents(&self, dir: &str) -> BTreeMap<String, Vec<u8>> {
        self.keys(dir)
            .into_iter()
            .filter_map(|key| self.get(&key).map(|bytes| (key, bytes)))
            .collect()
    }

    /// The files of backup `name` (`backups/<name>/…`), downloaded and decoded.
    pub fn backup(&self, name: &str) -> BackupFiles {
        let files = self.contents(&format!("backups/{name}"));
        assert!(
            !files.is_empty(),
            "the bucket holds no files of backup {name}"
        );
        BackupFiles {
            name: name.to_owned(),
            files,
        }
    }
}

/// One backup's files in the bucket, by file name (`velero-backup.json`, `<name>.tar.gz`, …).
#[derive(Debug, Clone)]
pub struct BackupFiles {
    pub name: String,
    /// By key (`backups/<name>/<file>`).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl BackupFiles {
    /// The file names, sorted.
    pub fn names(&self) -> Vec<String> {
        let dir = format!("backups/{}/", self.name);
        self.files
            .keys()
            .map(|k| k.strip_prefix(&dir).unwrap_or(k).to_owned())
            .collect()
    }

    /// The bytes of file `file` (name within the backup's directory).
    pub fn raw(&self, file: &str) -> &[u8] {
        let key = format!("backups/{}/{file}", self.name);
        self.files
            .get(&key)
            .unwrap_or_else(|| panic!("backup {} has no file {file}", self.name))
    }

    /// `velero-backup.json`.
    pub fn metadata(&self) -> Value {
        serde_json::from_slice(self.raw("velero-backup.json")).expect("velero-backup.json is JSON")
    }

    /// `<name><suffix>` gunzipped and parsed as JSON (`-resource-list.json.gz`, `-results.gz`,
    /// `-podvolumebackups.json.gz`, `-volumesnapshots.json.gz`).
    pub fn json_gz(&self, suffix: &str) -> Value {
        let file = format!("{}{suffix}", self.name);
        let text = gunzip(self.raw(&file));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
    }

    /// `<name>-logs.gz`, as text.
    pub fn log(&self) -> String {
        String::from_utf8(gunzip(self.raw(&format!("{}-logs.gz", self.name))))
            .expect("the log is UTF-8")
    }

    /// The resource tarball's entries, in order.
    pub fn tarball(&self) -> Tarball {
        let bytes = self.raw(&format!("{}.tar.gz", self.name));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let entries = archive
            .entries()
            .expect("the tarball is a tar.gz")
            .map(|entry| {
                let mut entry = entry.expect("a tar entry");
                let path = entry
                    .path()
                    .expect("an entry path")
                    .to_string_lossy()
                    .into_owned();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("read a tar entry");
                (path, data)
            })
            .collect();
        Tarball { entries }
    }
}

/// A resource tarball, unpacked.
#[derive(Debug, Clone)]
pub struct Tarball {
    /// (path, contents), in the tarball's order.
    pub entries: Vec<(String, Vec<u8>)>,
}

impl Tarball {
    /// Every path, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.entries.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// The objects' unversioned paths (`resources/<gr>/namespaces/<ns>/<name>.json`,
    /// `resources/<gr>/cluster/<name>.json`), sorted.
    pub fn objects(&self) -> std::collections::BTreeSet<String> {
        self.entries
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| p.starts_with("resources/") && !p.contains("-preferredversion/"))
            .map(str::to_owned)
            .collect()
    }

    /// The contents of `path`, if the tarball has it.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, data)| data.as_slice())
    }

    /// The object at `path`, parsed.
    pub fn json(&self, path: &str) -> Value {
        let data = self
            .get(path)
            .unwrap_or_else(|| panic!("the tarball has no {path}"));
        serde_json::from_slice(data).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
    }
}

/// Gunzips `bytes`.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip data");
    out
}

/// Gzips `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}
