//! Check: the structure by the format engine and, with `read_data`, every pack by our own
//! readers ([`crate::verify`]) beside it; the engine's findings told in our words.

use crate::bridge;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::index::BlobIndex;
use crate::progress::Unit;
use crate::store::FileKind;
use crate::verify;

use super::{
    CheckOptions, CheckReport, Context, Finding, INDEX_READS, Repository, on_thread, store_error,
};

impl Repository {
    /// Checks the repository's structure, and with `read_data` every blob, under a shared lock.
    pub async fn check(&self, opts: &CheckOptions, ctx: &Context) -> Result<CheckReport> {
        let read_data = opts.read_data;
        let (findings, damage) = self
            .locked_after(false, ctx, self.index_files(), async |ctx, index_files| {
                // The structure (snapshots, trees, index against the packs' sizes) by the
                // format engine, and beside it the data by our readers: the engine's reads
                // wait for each other, and over a slow link they would otherwise come first.
                let structure = self.run("check", ctx, move |repo| {
                    let results = repo.check(rustic_core::CheckOptions::default())?;
                    Ok(results
                        .0
                        .iter()
                        .map(|(level, e)| {
                            (
                                format!("{level:?}") == "Error",
                                bridge::plain_finding(&e.to_string()),
                            )
                        })
                        .collect::<Vec<_>>())
                });
                let data = async {
                    // Our own index: a damaged index file is named (the format engine stops
                    // on it with its own report).
                    let key = MasterKey::from_rustic(&self.key);
                    let index = BlobIndex::load(&self.store, &key, index_files, INDEX_READS)
                        .await
                        .map_err(|e| self.index_error(e))?;
                    if !read_data {
                        return Ok(Vec::new());
                    }
                    let (store, rt) = (self.store.clone(), self.rt.clone());
                    let cancel = ctx.cancel.clone();
                    let stage = ctx.progress.stage("reading packs", Unit::Items);
                    // Each read holds a whole pack (it is hashed whole): two per reader at most.
                    let readers = std::thread::available_parallelism().map_or(2, usize::from);
                    let reads = self.pack_reads().min(2 * readers);
                    on_thread("check", move || {
                        verify::read_data(
                            &store,
                            &rt,
                            &key,
                            &index,
                            (readers, reads),
                            &cancel,
                            stage.as_ref(),
                        )
                    })
                    .await?
                    .map_err(|()| Error::Cancelled)
                };
                let (findings, damage) = tokio::join!(structure, data);
                // Our index's failure first: it names the file.
                let damage = damage?;
                Ok((findings?, damage))
            })
            .await?;
        // Findings name packs by a short prefix; the full ids are only needed then.
        let packs = if findings.iter().any(|(_, m)| m.contains("pack ")) {
            self.store
                .list(FileKind::Pack)
                .await
                .map_err(|e| store_error(&self.store, e))?
        } else {
            Vec::new()
        };
        let mut report = CheckReport::default();
        for (pack, what) in damage {
            // A finding is a sentence: the damage and its causes, each once.
            report.errors.push(Finding {
                message: format!("pack {pack} is damaged: {}", crate::error_chain(&what)),
                pack: Some(pack),
            });
        }
        for (is_error, message) in findings {
            let pack = bridge::pack_in_message(&message, &packs);
            let finding = Finding { message, pack };
            if is_error {
                report.errors.push(finding);
            } else {
                report.warnings.push(finding);
            }
        }
        Ok(report)
    }
}
