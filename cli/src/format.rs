//! What the client commands share for input and output: `k=v,k2=v2` flags, objects printed as
//! JSON or YAML (one object, or a `v1` `List` as kubectl and Velero print), and tables.

use std::collections::BTreeMap;
use std::io::Write as _;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;
use serde::Serialize;

/// `-o` of the commands that print objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Json,
    Yaml,
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
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `lifeboat … -o yaml | head` is not a failure.
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
}
