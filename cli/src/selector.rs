//! Label selectors typed on the command line (`--selector`, `-l`, `--or-selector`), parsed into
//! the `LabelSelector` a spec holds exactly as Velero's flags do (`metav1.ParseToLabelSelector`),
//! and written back as Velero prints them.
//!
//! The grammar is kubectl's: comma-separated requirements `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k` and `!k`, all of which must hold. `=` goes to
//! `matchLabels`, everything else to `matchExpressions` (`!=` as `NotIn` with one value), the
//! expressions sorted by key and their values sorted, as Go's parser leaves them. Keys and
//! values are checked as the API server would check them, so a typo is refused here with the
//! requirement named, not after the object was created. `--or-selector` takes selectors joined
//! by ` or ` (Velero ≥ 1.8).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Parses the selector given to `--flag`; an empty text is no selector.
pub(crate) fn parse(flag: &str, text: &str) -> Result<Option<LabelSelector>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match parse_selector(text) {
        Ok(selector) => Ok(Some(selector)),
        Err(reason) => bail!(
            "--{flag} {text:?} is not a label selector: {reason}; write e.g. app=web,tier!=db,env in (prod,staging),!legacy"
        ),
    }
}

/// Parses `--or-selector`: selectors joined by ` or `, any of which may match.
pub(crate) fn parse_or(flag: &str, text: &str) -> Result<Vec<LabelSelector>> {
    let mut selectors = Vec::new();
    for part in text.split(" or ") {
        match parse(flag, part)? {
            Some(selector) => selectors.push(selector),
            None => bail!("--{flag} {text:?} has an empty selector; write e.g. app=web or tier=db"),
        }
    }
    Ok(selectors)
}

/// The selector as Velero prints it (`metav1.FormatLabelSelector`): `<none>` when absent or
/// empty.
pub(crate) fn format(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return "<none>".into();
    };
    match lifeboat_server::backup::Selector::from_label_selector(selector) {
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) => s.to_string(),
        Err(_) => "<error>".into(),
    }
}

/// The selector in the form the API server takes in `?labelSelector=`.
pub(crate) fn query(selector: &LabelSelector) -> String {
    lifeboat_server::backup::Selector::from_label_selector(selector)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Why a selector's text is not a selector; `parse` adds the flag and an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SelectorError {
    #[error("it has an empty requirement (two commas in a row?)")]
    EmptyRequirement,
    #[error("a requirement has no key")]
    NoKey,
    #[error(
        "`{key}` is not a label key (up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, with an optional DNS-name prefix and '/')"
    )]
    BadKey { key: String },
    #[error(
        "`{value}` in `{term}` is not a label value (up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
    )]
    BadValue { value: String, term: String },
    #[error("`{term}` has an unknown operator")]
    UnknownOperator { term: String },
    #[error("`{term}` is not KEY=VALUE, KEY!=VALUE, KEY in (…), KEY notin (…), KEY or !KEY")]
    NotARequirement { term: String },
    #[error("`{term}` needs its values in parentheses: {key} {operator} (a,b)")]
    NoParentheses {
        term: String,
        key: String,
        operator: &'static str,
    },
    #[error("`{term}` has no values")]
    NoValues { term: String },
}

fn parse_selector(text: &str) -> Result<LabelSelector, SelectorError> {
    let mut labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for term in split_top_level(text) {
        let term = term.trim();
        if term.is_empty() {
            return Err(SelectorError::EmptyRequirement);
        }
        match requirement(term)? {
            Requirement::Equals(key, value) => {
                labels.insert(key, value);
            }
            Requirement::Expression(expr) => expressions.push(expr),
        }
    }
    // Go's parser sorts requirements by key; the sort is stable, as is Go's.
    expressions.sort_by(|a: &LabelSelectorRequirement, b| a.key.cmp(&b.key));
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

enum Requirement {
    Equals(String, String),
    Expression(LabelSelectorRequirement),
}

fn expression(key: String, operator: &str, values: Option<Vec<String>>) -> Requirement {
    Requirement::Expression(LabelSelectorRequirement {
        key,
        operator: operator.into(),
        values,
    })
}

fn requirement(term: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(expression(check_key(key.trim())?, "DoesNotExist", None));
    }
    if let Some(at) = term.find(['=', '!']) {
        let key = check_key(term[..at].trim())?;
        let rest = &term[at..];
        let value = if let Some(v) = rest.strip_prefix("==") {
            v
        } else if let Some(v) = rest.strip_prefix("!=") {
            return Ok(expression(
                key,
                "NotIn",
                Some(vec![check_value(v.trim(), term)?]),
            ));
        } else if let Some(v) = rest.strip_prefix('=') {
            v
        } else {
            return Err(SelectorError::UnknownOperator {
                term: term.to_string(),
            });
        };
        return Ok(Requirement::Equals(key, check_value(value.trim(), term)?));
    }
    // `k in (a,b)`, `k notin (a,b)`, or `k` alone.
    let (key, rest) = match term.find(|c: char| c.is_whitespace() || c == '(') {
        Some(at) => (&term[..at], term[at..].trim_start()),
        None => return Ok(expression(check_key(term)?, "Exists", None)),
    };
    let key = check_key(key)?;
    let (operator, list) = if let Some(list) = rest.strip_prefix("notin") {
        ("NotIn", list)
    } else if let Some(list) = rest.strip_prefix("in") {
        ("In", list)
    } else {
        return Err(SelectorError::NotARequirement {
            term: term.to_string(),
        });
    };
    let Some(list) = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
    else {
        return Err(SelectorError::NoParentheses {
            term: term.to_string(),
            key,
            operator: operator_word(operator),
        });
    };
    let values: BTreeSet<String> = list
        .split(',')
        .map(|v| check_value(v.trim(), term))
        .collect::<Result<_, _>>()?;
    if values.iter().all(String::is_empty) {
        return Err(SelectorError::NoValues {
            term: term.to_string(),
        });
    }
    Ok(expression(
        key,
        operator,
        Some(values.into_iter().collect()),
    ))
}

fn operator_word(operator: &str) -> &'static str {
    if operator == "In" { "in" } else { "notin" }
}

/// Splits on the commas that are not inside `(…)`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A label name: at most 63 letters, digits, `-`, `_`, `.`, starting and ending with a letter
/// or digit.
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS subdomain: at most 253 lower-case letters, digits, `-` and `.`, each dot-separated
/// part starting and ending with a letter or digit.
fn is_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

fn check_key(key: &str) -> Result<String, SelectorError> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_subdomain(prefix) && is_name(name),
        None => is_name(key),
    };
    if valid {
        Ok(key.to_string())
    } else if key.is_empty() {
        Err(SelectorError::NoKey)
    } else {
        Err(SelectorError::BadKey {
            key: key.to_string(),
        })
    }
}

fn check_value(value: &str, term: &str) -> Result<String, SelectorError> {
    if value.is_empty() || is_name(value) {
        Ok(value.to_string())
    } else {
        Err(SelectorError::BadValue {
            value: value.to_string(),
            term: term.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> serde_json::Value {
        serde_json::to_value(parse("selector", text).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn requirements_go_where_velero_puts_them() {
        assert_eq!(
            parsed("a=b,c!=d,e in (y, x),!f,g,h==i"),
            serde_json::json!({
                "matchLabels": {"a": "b", "h": "i"},
                "matchExpressions": [
                    {"key": "c", "operator": "NotIn", "values": ["d"]},
                    {"key": "e", "operator": "In", "values": ["x", "y"]},
                    {"key": "f", "operator": "DoesNotExist"},
                    {"key": "g", "operator": "Exists"},
                ]
            })
        );
        assert_eq!(
            parsed("app.kubernetes.io/name notin (db)"),
            serde_json::json!({"matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["db"]}
            ]})
        );
        assert!(parse("selector", "  ").unwrap().is_none());
    }

    #[test]
    fn selectors_print_as_velero_prints_them() {
        let selector = parse("selector", "e in (y,x),a=b,!f,c!=d").unwrap();
        assert_eq!(format(selector.as_ref()), "a=b,c notin (d),e in (x,y),!f");
        assert_eq!(format(None), "<none>");
        assert_eq!(format(Some(&LabelSelector::default())), "<none>");
    }

    #[test]
    fn bad_selectors_name_the_flag_and_the_requirement() {
        for (bad, says) in [
            ("a b", "`a b` is not KEY=VALUE"),
            ("a=b,,c", "empty requirement"),
            ("=b", "no key"),
            ("a=b c", "`b c` in `a=b c` is not a label value"),
            ("a in x", "needs its values in parentheses"),
            ("a in ()", "has no values"),
            ("Bad_Prefix/a=b", "`Bad_Prefix/a` is not a label key"),
            ("a>1", "`a>1` is not a label key"),
        ] {
            let err = parse("selector", bad).unwrap_err().to_string();
            assert!(err.contains("--selector"), "{bad}: {err}");
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn or_selectors_split_on_or() {
        let selectors = parse_or("or-selector", "a=b or c in (d)").unwrap();
        assert_eq!(selectors.len(), 2);
        assert_eq!(format(Some(&selectors[1])), "c in (d)");
        assert!(parse_or("or-selector", "a=b or ").is_err());
    }
}
