//! What the client commands share for input and output: `k=v,k2=v2` flags, objects printed as
//! JSON or YAML (one object, or a `v1` `List` as kubectl and Velero print), tables, and times,
//! durations and sizes written as Velero writes them (Go's `time.Time` and `time.Duration`
//! strings, kubectl's short ages).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

/// `-o` of the commands that print objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Json,
    Yaml,
}

/// `-o` of `get`: a table, or the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

impl Output {
    /// The object format, or None for a table.
    pub(crate) fn objects(self) -> Option<Format> {
        match self {
            Output::Table => None,
            Output::Json => Some(Format::Json),
            Output::Yaml => Some(Format::Yaml),
        }
    }
}

/// Parses `k=v,k2=v2` pairs of `--flag` (repeatable); values may hold `=`, `:` and `/` as URLs
/// do, and surrounding quotes (`s3ForcePathStyle="true"`, as Velero's docs write it) are dropped.
pub(crate) fn parse_pairs<S: AsRef<str>>(
    flag: &str,
    values: &[S],
) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for value in values {
        for pair in value
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    map.insert(
                        key.trim().to_string(),
                        value.trim().trim_matches('"').to_string(),
                    );
                }
                _ => bail!(
                    "`{pair}` in --{flag} is not KEY=VALUE; write --{flag} key1=value1,key2=value2"
                ),
            }
        }
    }
    Ok(map)
}

/// Asks `question` on the terminal and reads a yes or no; `None` when there is no terminal to
/// ask on (the caller decides what that means: refuse, or require a flag).
pub(crate) fn ask(question: &str) -> Result<Option<bool>> {
    use std::io::{BufRead as _, IsTerminal as _};
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("{question} (Y/N)? ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(Some(matches!(
        answer.trim(),
        "y" | "Y" | "yes" | "Yes" | "YES"
    )))
}

/// Prints `items` as a `v1` `List`, or the one object when `single`.
pub(crate) fn print_objects<T: Serialize>(single: bool, items: &[T], format: Format) -> Result<()> {
    let value = match (single, items) {
        (true, [one]) => serde_json::to_value(one)?,
        _ => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
    };
    let text = match format {
        Format::Yaml => {
            serde_yaml::to_string(&value).context("cannot write the objects as YAML")?
        }
        Format::Json => {
            let mut text =
                serde_json::to_string_pretty(&value).context("cannot write the objects as JSON")?;
            text.push('\n');
            text
        }
    };
    write_stdout(text.as_bytes())
}

/// Writes `bytes` to stdout; a closed pipe (`lifeboat … | head`) is not a failure.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write to stdout"),
    }
}

/// Prints rows under a header, columns padded to their widest cell.
pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A size in bytes for people: `512 B`, `1.50 KiB`, `3.00 GiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// A time as Go prints a `time.Time` (what Velero's tables and descriptions show), in the
/// local time zone: `2006-01-02 15:04:05 -0700 MST`.
pub(crate) fn local_time(time: &Time) -> String {
    time.0
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S %z %Z")
        .to_string()
}

/// A duration as Go writes it (`72h0m0s`), the form Velero stores and prints; parsing is
/// [`crate::duration`].
pub(crate) use lifeboat_server::go_duration;

/// A duration as kubectl shows ages (`45s`, `5m`, `3h`, `29d`, `2y`), the unit truncated.
pub(crate) fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ if secs < 365 * 86_400 => format!("{}d", secs / 86_400),
        _ => format!("{}y", secs / (365 * 86_400)),
    }
}

/// The time from `now` until `time` (`29d`), or since it (`5m ago`).
pub(crate) fn from_now(time: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let ahead = time.duration_since(now);
    match Duration::try_from(ahead) {
        Ok(d) => short_duration(d),
        Err(_) => format!(
            "{} ago",
            short_duration(Duration::try_from(now.duration_since(time)).unwrap_or_default())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_keep_urls_drop_quotes_and_name_the_flag() {
        let map = parse_pairs(
            "backup-location-config",
            &[
                "region=minio,s3ForcePathStyle=\"true\",s3Url=http://minio:9000/x?a=b",
                "profile=p",
            ],
        )
        .unwrap();
        assert_eq!(map["s3Url"], "http://minio:9000/x?a=b");
        assert_eq!(map["s3ForcePathStyle"], "true");
        assert_eq!(map["region"], "minio");
        assert_eq!(map["profile"], "p");
        let err = parse_pairs("pod-labels", &["a=b,oops"]).unwrap_err();
        assert!(err.to_string().contains("--pod-labels"), "{err}");
        assert!(parse_pairs("pod-labels", &["=x"]).is_err());
        assert!(parse_pairs::<&str>("x", &[]).unwrap().is_empty());
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn ages_are_kubectl_s() {
        let d = |s: u64| Duration::from_secs(s);
        assert_eq!(short_duration(d(45)), "45s");
        assert_eq!(short_duration(d(5 * 60 + 59)), "5m");
        assert_eq!(short_duration(d(5 * 3600)), "5h");
        assert_eq!(short_duration(d(29 * 86_400 + 3600)), "29d");
        assert_eq!(short_duration(d(800 * 86_400)), "2y");
        let now: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let later: jiff::Timestamp = "2026-12-22T09:00:00Z".parse().unwrap();
        let earlier: jiff::Timestamp = "2026-11-22T09:55:00Z".parse().unwrap();
        assert_eq!(from_now(later, now), "29d");
        assert_eq!(from_now(earlier, now), "5m ago");
    }
}
