//! Progress reporting: the engine announces stages (scanning, backing up, restoring, checking
//! packs…) and advances them; callers draw bars (the CLI), stream updates (the agent) or ignore
//! them ([`NoProgress`]). Implementations must be cheap: `advance` is called per chunk.

use std::sync::Arc;

/// What a stage counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of file data.
    Bytes,
    /// Items: files, packs, snapshots.
    Items,
    /// Nothing countable: a spinner.
    None,
}

/// One running stage.
pub trait Stage: Send + Sync {
    /// The total, once known.
    fn set_total(&self, total: u64);
    /// `n` more units done.
    fn advance(&self, n: u64);
    /// The stage is over.
    fn finish(&self);
}

/// Receives the stages of an operation.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A stage named `title` begins.
    fn stage(&self, title: &str, unit: Unit) -> Box<dyn Stage>;
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

struct Silent;

impl Stage for Silent {
    fn set_total(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: Unit) -> Box<dyn Stage> {
        Box::new(Silent)
    }
}

/// rustic_core's progress traits over ours.
#[derive(Debug, Clone)]
pub(crate) struct Adapter(pub Arc<dyn Progress>);

struct StageAdapter(Box<dyn Stage>);

impl std::fmt::Debug for StageAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage")
    }
}

impl rustic_core::RusticProgress for StageAdapter {
    fn is_hidden(&self) -> bool {
        false
    }
    fn set_length(&self, len: u64) {
        self.0.set_total(len);
    }
    fn set_title(&self, _title: &str) {}
    fn inc(&self, inc: u64) {
        self.0.advance(inc);
    }
    fn finish(&self) {
        self.0.finish();
    }
}

impl rustic_core::ProgressBars for Adapter {
    fn progress(
        &self,
        progress_type: rustic_core::ProgressType,
        prefix: &str,
    ) -> rustic_core::Progress {
        use rustic_core::ProgressType;
        let unit = match progress_type {
            ProgressType::Spinner => Unit::None,
            ProgressType::Counter => Unit::Items,
            ProgressType::Bytes => Unit::Bytes,
        };
        rustic_core::Progress::new(StageAdapter(
            self.0.stage(prefix.trim_end_matches("..."), unit),
        ))
    }
}
