//! The layout of `describe` output, as Velero's describers write it: `Label:\tvalue` lines
//! aligned by Go's `text/tabwriter` (no minimum width, two spaces of padding), where a block of
//! consecutive lines with the same cells shares its column widths and continuation lines start
//! with an empty cell. A prefix indents a whole section (the Backup Template of a schedule).

use std::collections::BTreeMap;
use std::io::Write as _;

use kube::api::ObjectMeta;

/// The two kinds of messages an operation's results hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Errors,
    Warnings,
}

impl Outcome {
    fn title(self) -> &'static str {
        match self {
            Outcome::Errors => "Errors",
            Outcome::Warnings => "Warnings",
        }
    }

    fn of(
        self,
        results: &lifeboat_server::backup::BackupResults,
    ) -> &lifeboat_server::backup::Messages {
        match self {
            Outcome::Errors => &results.errors,
            Outcome::Warnings => &results.warnings,
        }
    }
}

/// Collects the lines of one description.
#[derive(Debug, Default)]
pub(crate) struct Describer {
    text: String,
    /// Written before every line (`\t` for a nested section).
    pub prefix: &'static str,
}

impl Describer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// One line; cells are separated by `\t`.
    pub(crate) fn line(&mut self, line: impl AsRef<str>) {
        self.text.push_str(self.prefix);
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    /// An empty line (it ends the alignment block above it).
    pub(crate) fn blank(&mut self) {
        self.line("");
    }

    /// Name, namespace, labels and annotations, as every Velero description begins.
    pub(crate) fn metadata(&mut self, meta: &ObjectMeta) {
        self.line(format!(
            "Name:\t{}",
            meta.name.as_deref().unwrap_or_default()
        ));
        self.line(format!(
            "Namespace:\t{}",
            meta.namespace.as_deref().unwrap_or_default()
        ));
        self.map("Labels", meta.labels.as_ref());
        self.map("Annotations", meta.annotations.as_ref());
    }

    /// `Name:\tk=v`, further pairs on their own lines under the first, or `<none>`.
    pub(crate) fn map(&mut self, name: &str, map: Option<&BTreeMap<String, String>>) {
        let pairs: Vec<String> = map
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        self.list(name, &pairs);
    }

    /// `Name:\tfirst`, further items on their own lines under the first, or `<none>`.
    pub(crate) fn list(&mut self, name: &str, items: &[String]) {
        match items.split_first() {
            None => self.line(format!("{name}:\t<none>")),
            Some((first, rest)) => {
                self.line(format!("{name}:\t{first}"));
                for item in rest {
                    self.line(format!("\t{item}"));
                }
            }
        }
    }

    /// An operation's errors and warnings (`describe --details`), the kinds in `order` with the
    /// counts its status gives, each kind with a message shown; or why they cannot be read.
    /// Nothing when `results` is None (the operation recorded none, so none were read).
    pub(crate) fn results(
        &mut self,
        results: Option<&anyhow::Result<lifeboat_server::backup::BackupResults>>,
        order: [(Outcome, i64); 2],
    ) {
        match results {
            None => {}
            Some(Err(why)) => {
                let [(a, na), (b, nb)] = order;
                self.blank();
                self.line(format!(
                    "{} and {}:\t<{na} {} and {nb} {}; cannot read them: {}>",
                    a.title(),
                    b.title().to_lowercase(),
                    a.title().to_lowercase(),
                    b.title().to_lowercase(),
                    crate::sentence(why)
                ));
            }
            Some(Ok(results)) => {
                for (kind, count) in order {
                    if count > 0 {
                        self.blank();
                        self.messages(kind.title(), kind.of(results));
                    }
                }
            }
        }
    }

    /// One kind of an operation's results (`Errors`, `Warnings`) in Velero's layout: the
    /// server's own, the cluster-scoped objects', then each namespace's.
    fn messages(&mut self, title: &str, messages: &lifeboat_server::backup::Messages) {
        self.line(format!("{title}:"));
        self.list("\tVelero", &messages.velero);
        self.list("\tCluster", &messages.cluster);
        if messages.namespaces.is_empty() {
            self.line("\tNamespaces:\t<none>");
        } else {
            self.line("\tNamespaces:");
            for (namespace, list) in &messages.namespaces {
                self.list(&format!("\t\t{namespace}"), list);
            }
        }
    }

    /// The aligned text.
    pub(crate) fn finish(self) -> String {
        let mut writer = tabwriter::TabWriter::new(Vec::new()).minwidth(0).padding(2);
        // Writing to and flushing into a Vec cannot fail.
        if writer.write_all(self.text.as_bytes()).is_err() || writer.flush().is_err() {
            return self.text;
        }
        match writer.into_inner() {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => self.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_align_as_go_s_tabwriter_does() {
        let mut d = Describer::new();
        d.line("Name:\tnightly");
        d.line("Namespace:\tvelero");
        d.map(
            "Labels",
            Some(&[("a".into(), "1".into()), ("b".into(), "2".into())].into()),
        );
        d.map("Annotations", None);
        d.blank();
        d.line("Phase:\tCompleted");
        d.line("Backup Template:");
        d.prefix = "\t";
        d.line("Included:\t*");
        assert_eq!(
            d.finish(),
            "Name:         nightly\n\
             Namespace:    velero\n\
             Labels:       a=1\n\
             \x20             b=2\n\
             Annotations:  <none>\n\
             \n\
             Phase:  Completed\n\
             Backup Template:\n\
             \x20 Included:  *\n"
        );
    }
}
