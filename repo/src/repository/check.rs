//! Check: the structure by the format engine and, with `read_data`, every pack by our own
//! readers ([`crate::verify`]) beside it; the engine's findings told in our words.

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::PackId;
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
                                plain_finding(&e.to_string()),
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
        for (name, what) in damage {
            report.errors.push(Finding {
                message: format!("pack {name} is damaged: {what}"),
                pack: name.parse().ok(),
            });
        }
        for (is_error, message) in findings {
            let pack = pack_in_message(&message, &packs);
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

/// A finding of the format engine's structural check in our words: its findings carry its
/// error reports (banners, backtrace notes, causes' debug names) and advise `rustic` commands,
/// which our users do not have. Its finding type is not public, so the text is read: the
/// first line, the object it names, our sentence.
fn plain_finding(text: &str) -> String {
    let first = text.lines().next().unwrap_or(text).trim();
    let word_after = |prefix: &str| {
        first.strip_prefix(prefix).map(|rest| {
            rest.split([' ', ',', ':'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
    };
    if let Some(id) =
        word_after("error reading pack ").or_else(|| word_after("error checking pack "))
    {
        return format!(
            "pack {id} cannot be read, or its header does not decrypt: the pack is damaged"
        );
    }
    if first.starts_with("error checking trees") {
        return "the snapshots' trees cannot all be read: a tree is missing or damaged (`lifeboat repo check --read-data` names the damaged pack)".into();
    }
    if let Some(rest) = first
        .strip_prefix("Error reading file Type: ")
        .or_else(|| first.strip_prefix("Error reading cached file Type: "))
        && let Some((kind, rest)) = rest.split_once(", Id: ")
    {
        let id = rest.split(' ').next().unwrap_or_default();
        return format!(
            "{} file {id} cannot be read or does not decrypt: it is damaged",
            kind.to_lowercase()
        );
    }
    if first.contains("not referenced in index")
        && let Some(id) = word_after("pack ").or_else(|| word_after("hot pack "))
    {
        return format!(
            "pack {id} is in no index: a backup running now, or one interrupted, leaves such packs; `lifeboat repo prune` removes them when none runs"
        );
    }
    let first = first.split(" : ").next().unwrap_or(first);
    first.replace(
        " To repair: 'rustic repair index'.",
        ": the index and the packs disagree, the repository is damaged",
    )
}

/// rustic_core names packs by their first 8 hex digits in messages; find the full id.
fn pack_in_message(message: &str, packs: &[(String, u64)]) -> Option<PackId> {
    let after = message.split("pack ").nth(1)?;
    let short: String = after.chars().take_while(char::is_ascii_hexdigit).collect();
    if short.len() < 8 {
        return None;
    }
    let mut hits = packs.iter().filter(|(name, _)| name.starts_with(&short));
    let (name, _) = hits.next()?;
    if hits.next().is_some() {
        return None;
    }
    name.parse().ok()
}
