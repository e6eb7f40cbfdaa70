//! The files of a backup in Velero's format: the resource tarball (`<name>.tar.gz`), the
//! resource list (`<name>-resource-list.json.gz`) and the results (`<name>-results.gz`).
//!
//! Layout, as Velero v1.5.4 writes it (`pkg/backup/backup.go`, `item_backupper.go`,
//! `pkg/apis/velero/v1/constants.go`) and its restore reads:
//!
//! ```text
//! metadata/version                                       "1.1.0\n"
//! resources/<gr>/<version>-preferredversion/namespaces/<ns>/<name>.json
//! resources/<gr>/namespaces/<ns>/<name>.json             the same bytes again
//! resources/<gr>/<version>-preferredversion/cluster/<name>.json
//! resources/<gr>/cluster/<name>.json
//! ```
//!
//! `<gr>` is `resource.group`, or just `resource` for the core group. 1.5.4 writes both paths
//! for every item, with no feature flag: the versioned one first (suffixed
//! `-preferredversion` when the object is at the group's preferred version, which is always
//! so for objects we list), then the unversioned one that older restores read. Every entry is
//! a regular file with mode 0755, the current time in whole seconds (Go's tar rounds when no
//! format is forced), uid and gid 0 and no user names, in the USTAR format (a path over 100
//! bytes is split into prefix and name as Go does; one too long even for that gets a GNU long
//! name entry where Go would write PAX: Go's reader, which Velero's restore uses, reads both).
//! The whole is gzip-compressed at the default level, and written as it is produced, so a
//! backup never sits in memory.

use std::collections::BTreeMap;
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use super::filter::GroupResource;

/// The backup format version Velero 1.5 writes and reads (`BackupFormatVersion`).
pub const FORMAT_VERSION: &str = "1.1.0";

/// The mode of every entry in Velero's tarballs.
const ENTRY_MODE: u32 = 0o755;

/// Where one object goes in the tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemPath {
    /// Its group-resource.
    pub group_resource: GroupResource,
    /// The version the object was read at.
    pub version: String,
    /// The group's preferred version.
    pub preferred_version: String,
    /// Its namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ItemPath {
    /// The per-version path (`<version>[-preferredversion]`), written first.
    pub fn versioned(&self) -> String {
        let version = if self.version == self.preferred_version {
            format!("{}-preferredversion", self.version)
        } else {
            self.version.clone()
        };
        self.under(Some(&version))
    }

    /// The unversioned path, written only for the preferred version (what Velero < 1.6 reads).
    pub fn unversioned(&self) -> Option<String> {
        (self.version == self.preferred_version).then(|| self.under(None))
    }

    fn under(&self, version: Option<&str>) -> String {
        let mut path = format!("resources/{}/", self.group_resource);
        if let Some(v) = version {
            path.push_str(v);
            path.push('/');
        }
        match &self.namespace {
            Some(ns) => path.push_str(&format!("namespaces/{ns}/")),
            None => path.push_str("cluster/"),
        }
        path.push_str(&self.name);
        path.push_str(".json");
        path
    }
}

/// Writes a resource tarball into any sink, entry by entry.
pub struct TarballWriter<W: Write> {
    builder: tar::Builder<GzEncoder<W>>,
    mtime: u64,
}

impl<W: Write> std::fmt::Debug for TarballWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarballWriter")
            .field("mtime", &self.mtime)
            .finish_non_exhaustive()
    }
}

impl<W: Write> TarballWriter<W> {
    /// Starts a tarball in `sink` and writes `metadata/version`. `mtime` (seconds since the
    /// epoch) stamps every entry; Velero uses the time of writing.
    pub fn new(sink: W, mtime: u64) -> io::Result<TarballWriter<W>> {
        let builder = tar::Builder::new(GzEncoder::new(sink, Compression::default()));
        let mut writer = TarballWriter { builder, mtime };
        writer.append("metadata/version", format!("{FORMAT_VERSION}\n").as_bytes())?;
        Ok(writer)
    }

    /// Writes one object's JSON at its paths.
    pub fn add_item(&mut self, path: &ItemPath, json: &[u8]) -> io::Result<()> {
        self.append(&path.versioned(), json)?;
        if let Some(plain) = path.unversioned() {
            self.append(&plain, json)?;
        }
        Ok(())
    }

    fn append(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(ENTRY_MODE);
        header.set_size(data.len() as u64);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        self.builder.append_data(&mut header, path, data)
    }

    /// Writes the end-of-archive blocks and the gzip trailer, flushes, and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        let gz = self.builder.into_inner()?;
        let mut sink = gz.finish()?;
        sink.flush()?;
        Ok(sink)
    }
}

/// The backed-up objects by `apiVersion/Kind` (`apps/v1/Deployment`, `v1/Pod`), each a sorted
/// list of `namespace/name` (or `name` when cluster-scoped): Velero's
/// `<backup>-resource-list.json.gz`, which `velero backup describe --details` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ResourceList {
    entries: BTreeMap<String, Vec<String>>,
}

impl ResourceList {
    /// Records one backed-up object.
    pub fn add(&mut self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        let entry = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        };
        self.entries
            .entry(format!("{api_version}/{kind}"))
            .or_default()
            .push(entry);
    }

    /// The entries, each list sorted.
    pub fn entries(&self) -> BTreeMap<String, Vec<String>> {
        let mut entries = self.entries.clone();
        entries.values_mut().for_each(|v| v.sort());
        entries
    }

    /// The number of objects recorded.
    pub fn len(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gzip-compressed JSON, as Go's `json.Encoder` writes it (sorted keys, newline).
    pub fn to_json_gz(&self) -> io::Result<Vec<u8>> {
        json_gz(&self.entries())
    }
}

/// Messages of one kind (warnings or errors) from a backup: Velero's `Result` (`velero`,
/// `cluster` and per-namespace lists, each left out when empty). Restores write the same
/// shape; the client reads both back for `describe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Messages {
    /// About lifeboat's own operation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub velero: Vec<String>,
    /// About cluster-scoped objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    /// About namespaced objects, by namespace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, Vec<String>>,
}

impl Messages {
    /// Adds a message about an object in `namespace`, or a cluster-scoped one.
    pub fn add(&mut self, namespace: Option<&str>, message: impl Into<String>) {
        match namespace {
            Some(ns) => self
                .namespaces
                .entry(ns.to_owned())
                .or_default()
                .push(message.into()),
            None => self.cluster.push(message.into()),
        }
    }

    /// How many messages there are (what `status.warnings` / `status.errors` count).
    pub fn count(&self) -> usize {
        self.velero.len()
            + self.cluster.len()
            + self.namespaces.values().map(Vec::len).sum::<usize>()
    }
}

/// A backup's warnings and errors: `<backup>-results.gz`, `{"errors":…,"warnings":…}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupResults {
    /// What failed.
    pub errors: Messages,
    /// What was skipped or is not protected.
    pub warnings: Messages,
}

impl BackupResults {
    /// The gzip-compressed JSON, as Go's `json.Encoder` writes it (newline-terminated).
    pub fn to_json_gz(&self) -> io::Result<Vec<u8>> {
        json_gz(self)
    }
}

/// `value` as gzip-compressed JSON, as Velero's `encodeToJSONGzip` writes its companion files
/// (Go's `json.Encoder`: newline-terminated; a nil list is `null`).
pub fn json_gz<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    serde_json::to_writer(&mut gz, value)?;
    gz.write_all(b"\n")?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    fn item(group: &str, resource: &str, ns: Option<&str>, name: &str) -> ItemPath {
        ItemPath {
            group_resource: GroupResource::new(group, resource),
            version: "v1".into(),
            preferred_version: "v1".into(),
            namespace: ns.map(str::to_owned),
            name: name.into(),
        }
    }

    /// (path, mode, size, mtime, entry type, uid, gid, data) of every entry.
    type Entry = (String, u32, u64, u64, tar::EntryType, u64, u64, Vec<u8>);

    fn read_back(gz: &[u8]) -> Vec<Entry> {
        let mut archive = tar::Archive::new(GzDecoder::new(gz));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                    h.mtime().unwrap(),
                    h.entry_type(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn the_tarball_has_velero_s_paths_and_headers() {
        let mut w = TarballWriter::new(Vec::new(), 1_600_000_000).unwrap();
        w.add_item(
            &item("apps", "deployments", Some("ns1"), "web"),
            b"{\"a\":1}",
        )
        .unwrap();
        w.add_item(&item("", "persistentvolumes", None, "pv-1"), b"{}")
            .unwrap();
        let bytes = w.finish().unwrap();
        let entries = read_back(&bytes);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata/version",
                "resources/deployments.apps/v1-preferredversion/namespaces/ns1/web.json",
                "resources/deployments.apps/namespaces/ns1/web.json",
                "resources/persistentvolumes/v1-preferredversion/cluster/pv-1.json",
                "resources/persistentvolumes/cluster/pv-1.json",
            ]
        );
        for (_, mode, size, mtime, ty, uid, gid, data) in &entries {
            assert_eq!(*mode, 0o755);
            assert_eq!(*size, data.len() as u64);
            assert_eq!(*mtime, 1_600_000_000);
            assert_eq!(*ty, tar::EntryType::Regular);
            assert_eq!((*uid, *gid), (0, 0));
        }
        assert_eq!(entries[0].7, b"1.1.0\n");
        assert_eq!(entries[1].7, b"{\"a\":1}");
        assert_eq!(entries[2].7, b"{\"a\":1}");
    }

    #[test]
    fn entries_are_ustar_regular_files() {
        let mut w = TarballWriter::new(Vec::new(), 0).unwrap();
        w.add_item(&item("", "pods", Some("n"), "p"), b"{}")
            .unwrap();
        let bytes = w.finish().unwrap();
        let mut raw = Vec::new();
        GzDecoder::new(&bytes[..]).read_to_end(&mut raw).unwrap();
        // The first header: USTAR magic and version, typeflag '0', as Go's archive/tar writes.
        assert_eq!(&raw[257..265], b"ustar\x0000");
        assert_eq!(raw[156], b'0');
        // A whole number of 512-byte records, ending in two zero blocks.
        assert_eq!(raw.len() % 512, 0);
        assert!(raw[raw.len() - 1024..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_non_preferred_version_is_written_only_under_its_version() {
        let mut path = item("example.com", "widgets", Some("a"), "w");
        path.version = "v1beta1".into();
        assert_eq!(
            path.versioned(),
            "resources/widgets.example.com/v1beta1/namespaces/a/w.json"
        );
        assert_eq!(path.unversioned(), None);
    }

    #[test]
    fn long_names_survive() {
        let name = "n".repeat(253);
        let mut w = TarballWriter::new(Vec::new(), 0).unwrap();
        w.add_item(
            &item("example.com", "widgets", Some(&"s".repeat(63)), &name),
            b"{}",
        )
        .unwrap();
        let entries = read_back(&w.finish().unwrap());
        assert_eq!(entries.len(), 3);
        assert!(
            entries[1].0.ends_with(&format!("/{name}.json")),
            "{}",
            entries[1].0
        );
        assert!(entries[2].0.ends_with(&format!("/{name}.json")));
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut s = String::new();
        GzDecoder::new(bytes).read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn the_resource_list_is_sorted_by_kind_then_name() {
        let mut list = ResourceList::default();
        list.add("v1", "Pod", Some("b"), "p2");
        list.add("apps/v1", "Deployment", Some("a"), "d");
        list.add("v1", "Pod", Some("a"), "p1");
        list.add("v1", "PersistentVolume", None, "pv");
        assert_eq!(list.len(), 4);
        assert_eq!(
            gunzip(&list.to_json_gz().unwrap()),
            "{\"apps/v1/Deployment\":[\"a/d\"],\"v1/PersistentVolume\":[\"pv\"],\"v1/Pod\":[\"a/p1\",\"b/p2\"]}\n"
        );
        assert_eq!(
            gunzip(&ResourceList::default().to_json_gz().unwrap()),
            "{}\n"
        );
    }

    #[test]
    fn results_have_velero_s_shape() {
        let mut results = BackupResults::default();
        assert_eq!(
            gunzip(&results.to_json_gz().unwrap()),
            "{\"errors\":{},\"warnings\":{}}\n"
        );
        results.errors.add(Some("ns1"), "boom");
        results.warnings.add(None, "pv not snapshotted");
        results.warnings.velero.push("no snapshot provider".into());
        assert_eq!(results.errors.count(), 1);
        assert_eq!(results.warnings.count(), 2);
        assert_eq!(
            gunzip(&results.to_json_gz().unwrap()),
            "{\"errors\":{\"namespaces\":{\"ns1\":[\"boom\"]}},\"warnings\":{\"velero\":[\"no snapshot provider\"],\"cluster\":[\"pv not snapshotted\"]}}\n"
        );
    }
}
