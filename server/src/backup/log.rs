//! A backup's own log, `<backup>-logs.gz`: the lines `lifeboat backup logs` prints, in the
//! logrus text format Velero's logs have (`time="…" level=info msg="…" backup=ns/name`), so
//! tools that grep Velero's backup logs keep working. Each line also goes to the server's log.
//! The log is gzip-compressed as it is written: a backup of 100,000 objects logs a few hundred
//! lines, compressed to a few KiB.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use jiff::Timestamp;

/// The severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// The log of one backup (or restore).
pub struct OperationLog {
    gz: GzEncoder<Vec<u8>>,
    field: &'static str,
    subject: String,
}

impl std::fmt::Debug for OperationLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OperationLog({}={})", self.field, self.subject)
    }
}

impl OperationLog {
    /// A log whose lines carry `field=subject` (`backup=velero/nightly`).
    pub fn new(field: &'static str, subject: &str) -> OperationLog {
        OperationLog {
            gz: GzEncoder::new(Vec::new(), Compression::default()),
            field,
            subject: subject.to_owned(),
        }
    }

    /// Appends one line, stamped `time`.
    pub fn line(&mut self, time: Timestamp, level: Level, msg: &str) {
        match level {
            Level::Info => {
                tracing::info!(target: "lifeboat::operation", "{}={}: {msg}", self.field, self.subject)
            }
            Level::Warning => {
                tracing::warn!(target: "lifeboat::operation", "{}={}: {msg}", self.field, self.subject)
            }
            Level::Error => {
                tracing::error!(target: "lifeboat::operation", "{}={}: {msg}", self.field, self.subject)
            }
        }
        let time = Timestamp::from_second(time.as_second()).unwrap_or(time);
        let line = format!(
            "time=\"{time}\" level={} msg={} {}={}\n",
            level.as_str(),
            quote(msg),
            self.field,
            quote_if_needed(&self.subject)
        );
        // Writing into memory cannot fail.
        let _ = self.gz.write_all(line.as_bytes());
    }

    /// Appends an operation's warnings, then its errors, one line each, stamped `time`; a
    /// namespace's messages say which namespace.
    pub fn results(&mut self, time: Timestamp, results: &crate::backup::BackupResults) {
        for (level, messages) in [
            (Level::Warning, &results.warnings),
            (Level::Error, &results.errors),
        ] {
            for m in messages.velero.iter().chain(&messages.cluster) {
                self.line(time, level, m);
            }
            for (ns, list) in &messages.namespaces {
                for m in list {
                    self.line(time, level, &format!("namespace {ns}: {m}"));
                }
            }
        }
    }

    /// The compressed log.
    pub fn finish(self) -> Vec<u8> {
        self.gz.finish().unwrap_or_default()
    }
}

/// A value in logrus's text format: quoted, with `"` and `\` escaped (Go's `%q`).
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Quoted only when it holds characters logrus would quote.
fn quote_if_needed(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain { text.to_owned() } else { quote(text) }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn lines_are_logrus_text() {
        let mut log = OperationLog::new("backup", "velero/nightly");
        let t: Timestamp = "2026-11-22T10:00:00.5Z".parse().unwrap();
        log.line(t, Level::Info, "Starting backup");
        log.line(t, Level::Warning, "volume \"pv-1\" is not protected");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&log.finish()[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(
            text,
            "time=\"2026-11-22T10:00:00Z\" level=info msg=\"Starting backup\" backup=velero/nightly\n\
             time=\"2026-11-22T10:00:00Z\" level=warning msg=\"volume \\\"pv-1\\\" is not protected\" backup=velero/nightly\n"
        );
    }
}
