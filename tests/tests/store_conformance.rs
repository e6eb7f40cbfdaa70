//! One conformance suite for every storage backend: local directory, in-memory, and S3 (moto
//! on loopback). Each check states the contract the engine relies on (see `store.rs`).

use bytes::Bytes;
use lifeboat_repo::{FileKind, Location, Store, StoreError, StoreOptions};
use lifeboat_tests::S3;

fn id(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

async fn conformance(store: Store) {
    store.create().await.expect("create");
    store.probe().await.expect("probe an existing store");

    // Missing files: NotFound for reads, None for size, and removing is not an error.
    assert!(matches!(
        store.read(FileKind::Snapshot, &id(1)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.size(FileKind::Config, "").await.expect("size"), None);
    store
        .remove(FileKind::Index, &id(1))
        .await
        .expect("removing a missing file succeeds");
    assert!(
        store
            .list(FileKind::Lock)
            .await
            .expect("list empty")
            .is_empty()
    );

    // Whole and ranged reads of what was written, from several parts.
    let parts = vec![
        Bytes::from_static(b"hello "),
        Bytes::from_static(b"restic "),
        Bytes::from_static(b"world"),
    ];
    store
        .write(FileKind::Pack, &id(2), parts)
        .await
        .expect("write");
    assert_eq!(
        &store.read(FileKind::Pack, &id(2)).await.expect("read")[..],
        b"hello restic world"
    );
    assert_eq!(
        &store
            .read_range(FileKind::Pack, &id(2), 6, 6)
            .await
            .expect("range")[..],
        b"restic"
    );
    assert_eq!(
        store.size(FileKind::Pack, &id(2)).await.expect("size"),
        Some(18)
    );

    // Writing the same name again replaces it whole (content-addressed writes are idempotent).
    store
        .write(
            FileKind::Pack,
            &id(2),
            vec![Bytes::from_static(b"hello restic world")],
        )
        .await
        .expect("rewrite");
    assert_eq!(
        store.size(FileKind::Pack, &id(2)).await.expect("size"),
        Some(18)
    );

    // The config file has no id.
    store
        .write(FileKind::Config, "", vec![Bytes::from_static(b"cfg")])
        .await
        .expect("config");
    assert_eq!(
        store
            .list(FileKind::Config)
            .await
            .expect("list config")
            .len(),
        1
    );

    // Listing: every kind separately, with sizes, only hex names, beyond one page (1000 keys).
    let n = 1_050;
    let mut writes = Vec::new();
    for i in 0..n {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            store
                .write(
                    FileKind::Index,
                    &id(1000 + i),
                    vec![Bytes::from(vec![7u8; (i % 5) as usize])],
                )
                .await
        }));
    }
    for w in writes {
        w.await.expect("join").expect("concurrent write");
    }
    store
        .write(
            FileKind::Index,
            "not-an-id.tmp",
            vec![Bytes::from_static(b"x")],
        )
        .await
        .expect("stray");
    let mut listed = store.list(FileKind::Index).await.expect("list index");
    listed.sort();
    assert_eq!(
        listed.len(),
        n as usize,
        "stray names are skipped, all pages are read"
    );
    assert!(
        listed
            .iter()
            .all(|(name, size)| name.len() == 64 && *size < 5)
    );
    assert_eq!(
        store.list(FileKind::Pack).await.expect("list packs"),
        vec![(id(2), 18)]
    );

    // Removal.
    store.remove(FileKind::Pack, &id(2)).await.expect("remove");
    assert!(store.list(FileKind::Pack).await.expect("list").is_empty());
}

#[tokio::test]
async fn memory_store_conforms() {
    let store = Store::open(
        &Location::Memory {
            name: "conformance".into(),
        },
        &StoreOptions::default(),
    )
    .expect("open");
    conformance(store).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
    let store = Store::open(
        &Location::Local(dir.path().join("repo")),
        &StoreOptions::default(),
    )
    .expect("open");
    conformance(store).await;
    // restic's directory layout exists, and packs live under data/<first two hex digits>.
    assert!(dir.path().join("repo/data/00").is_dir() && dir.path().join("repo/data/ff").is_dir());
    assert!(dir.path().join("repo/locks").is_dir());
}

#[tokio::test]
async fn s3_store_conforms() {
    let s3 = S3::bucket("conformance");
    s3.export_env();
    let location = Location::parse(&s3.restic_url("some/prefix")).expect("parse");
    let store = Store::open(&location, &StoreOptions::default()).expect("open");
    conformance(store).await;
}

#[tokio::test]
async fn s3_missing_bucket_fails_the_probe() {
    let s3 = S3::missing_bucket();
    s3.export_env();
    let location = Location::parse(&s3.restic_url("x")).expect("parse");
    let store = Store::open(&location, &StoreOptions::default()).expect("open");
    assert!(store.probe().await.is_err());
}

/// The bucket view of a location: objects by key, the directories under the prefix, and
/// repository stores under it that are the same repository as their joined location.
async fn bucket_conformance(location: Location, opts: StoreOptions) {
    use lifeboat_repo::Bucket;
    let bucket = Bucket::open(&location, &opts).expect("open bucket");
    assert!(
        bucket
            .list_dirs("")
            .await
            .expect("list an empty prefix")
            .is_empty()
    );
    assert!(matches!(
        bucket.get("backups/b1/velero-backup.json").await,
        Err(StoreError::NotFound { .. })
    ));
    bucket
        .put("backups/b1/velero-backup.json", Bytes::from_static(b"{}"))
        .await
        .expect("put");
    bucket
        .put("metadata/revision", Bytes::from_static(b"r1"))
        .await
        .expect("put");
    assert_eq!(
        &bucket
            .get("backups/b1/velero-backup.json")
            .await
            .expect("get")[..],
        b"{}"
    );
    // A reader with a limit gets what fits and refuses what does not, never holding more.
    assert_eq!(
        &bucket
            .get_at_most("backups/b1/velero-backup.json", 2)
            .await
            .expect("it fits")[..],
        b"{}"
    );
    assert!(matches!(
        bucket.get_at_most("backups/b1/velero-backup.json", 1).await,
        Err(StoreError::TooLarge { limit: 1, .. })
    ));
    let mut dirs = bucket.list_dirs("").await.expect("list dirs");
    dirs.sort();
    assert_eq!(dirs, ["backups", "metadata"]);
    assert_eq!(bucket.list_dirs("backups").await.expect("list"), ["b1"]);
    bucket.delete("metadata/revision").await.expect("delete");
    bucket
        .delete("metadata/revision")
        .await
        .expect("deleting a missing object succeeds");

    // A repository under the bucket is the one its joined location opens.
    let under = bucket.store("restic/app");
    under.create().await.expect("create");
    under
        .write(
            FileKind::Snapshot,
            &id(7),
            vec![Bytes::from_static(b"snap")],
        )
        .await
        .expect("write");
    let joined = Store::open(&location.join("restic/app"), &opts).expect("open joined");
    assert_eq!(
        &joined.read(FileKind::Snapshot, &id(7)).await.expect("read")[..],
        b"snap"
    );
    assert_eq!(under.location(), &location.join("restic/app"));
}

#[tokio::test]
async fn memory_bucket_conforms() {
    bucket_conformance(
        Location::Memory {
            name: "bucket-conformance".into(),
        },
        StoreOptions::default(),
    )
    .await;
}

#[tokio::test]
async fn local_bucket_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    bucket_conformance(
        Location::Local(dir.path().to_path_buf()),
        StoreOptions::default(),
    )
    .await;
}

#[tokio::test]
async fn s3_bucket_conforms_with_explicit_credentials() {
    let s3 = S3::bucket("bucket-conformance");
    let location = Location::parse(&s3.restic_url("cluster-a")).expect("parse");
    // Credentials from the options, not the environment: what a location's Secret gives.
    let opts = StoreOptions {
        credentials: Some(lifeboat_repo::Credentials::Aws {
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            session_token: None,
        }),
        ..StoreOptions::default()
    };
    bucket_conformance(location, opts).await;
}
