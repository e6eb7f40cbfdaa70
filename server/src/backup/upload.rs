//! The resource tarball written straight into the bucket: items are tarred and gzipped into a
//! small buffer that is handed to a multipart upload whenever it passes [`FLUSH_AT`], so a
//! backup of any size holds about three upload parts in memory and never touches local disk.
//! Nothing is visible in the bucket until [`StreamingTarball::finish`].

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use lifeboat_repo::{Bucket, StoreError, Upload};

use super::collect::ItemSink;
use super::tarball::{ItemPath, TarballWriter};

/// Size of each upload part: above S3's 5 MiB minimum, small enough that a few in flight
/// stay a few tens of MiB.
pub const PART_SIZE: usize = 8 << 20;

/// Compressed bytes gathered before they are handed to the upload.
const FLUSH_AT: usize = 1 << 20;

/// The compressed bytes the tar writer produced and the upload has not taken yet.
#[derive(Debug, Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take_if(&self, at_least: usize) -> Option<Vec<u8>> {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (buf.len() >= at_least && !buf.is_empty()).then(|| std::mem::take(&mut *buf))
    }
}

impl Write for Pending {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tarball being uploaded.
pub struct StreamingTarball {
    tar: TarballWriter<Pending>,
    pending: Pending,
    upload: Upload,
    uploaded: u64,
}

impl std::fmt::Debug for StreamingTarball {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingTarball")
            .field("upload", &self.upload)
            .field("uploaded", &self.uploaded)
            .finish_non_exhaustive()
    }
}

impl StreamingTarball {
    /// Starts the upload of `key` and the tarball's first entry; `mtime` stamps every entry.
    pub async fn start(bucket: &Bucket, key: &str, mtime: u64) -> Result<Self, StoreError> {
        let upload = bucket.upload(key, PART_SIZE).await?;
        let pending = Pending::default();
        let tar = TarballWriter::new(pending.clone(), mtime).map_err(|source| StoreError::Io {
            path: key.to_owned(),
            source,
        })?;
        Ok(StreamingTarball {
            tar,
            pending,
            upload,
            uploaded: 0,
        })
    }

    async fn drain(&mut self, at_least: usize) -> io::Result<()> {
        if let Some(bytes) = self.pending.take_if(at_least) {
            self.uploaded += bytes.len() as u64;
            self.upload.write(&bytes).await.map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Ends the tarball, sends the rest and makes it visible; returns its compressed size.
    pub async fn finish(self) -> io::Result<u64> {
        let StreamingTarball {
            tar,
            mut upload,
            mut uploaded,
            ..
        } = self;
        if let Some(rest) = tar.finish()?.take_if(0) {
            uploaded += rest.len() as u64;
            upload.write(&rest).await.map_err(io::Error::other)?;
        }
        upload.finish().await.map_err(io::Error::other)?;
        Ok(uploaded)
    }

    /// Gives the upload up: nothing appears in the bucket.
    pub async fn abort(self) {
        self.upload.abort().await;
    }
}

impl ItemSink for StreamingTarball {
    fn write_item<'a>(
        &'a mut self,
        path: &'a ItemPath,
        json: &'a [u8],
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            self.tar.add_item(path, json)?;
            self.drain(FLUSH_AT).await
        })
    }
}
