//! Label and field selectors, parsed from the `labelSelector` / `fieldSelector` query
//! parameters (already percent- and `+`-decoded) and matched against stored JSON objects.
//!
//! Label selectors take kube-apiserver's grammar: comma-separated requirements, each `k=v`,
//! `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` or `!k`, all of which must hold.
//! Field selectors take `path=v`, `path==v`, `path!=v` where `path` is a dotted JSON path
//! (`metadata.name`, `spec.nodeName`, `status.phase`, ...). A real server accepts only a few
//! paths per kind; accepting every path is harmless here. A missing field reads as "", as it
//! does on a real server.

use serde_json::Value;

use super::failure::{Failure, Result};

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses a label selector; a malformed one is a 400, as on a real server.
    pub(crate) fn parse(text: &str) -> Result<LabelSelector> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term).ok_or_else(|| {
                Failure::bad_request(format!(
                    "unable to parse requirement: {term:?} in label selector {text:?}"
                ))
            })?);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside a `(...)` value list.
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

fn parse_requirement(term: &str) -> Option<Requirement> {
    if let Some(open) = term.find('(') {
        let close = term.rfind(')')?;
        if close != term.len() - 1 || close < open {
            return None;
        }
        let head = term[..open].trim();
        let (key, op) = head.rsplit_once(char::is_whitespace)?;
        let key = valid_key(key.trim())?;
        let values: Vec<String> = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .collect();
        return match op {
            "in" => Some(Requirement::In(key, values)),
            "notin" => Some(Requirement::NotIn(key, values)),
            _ => None,
        };
    }
    if let Some(key) = term.strip_prefix('!') {
        return Some(Requirement::NotExists(valid_key(key.trim())?));
    }
    for (op, equal) in [("!=", false), ("==", true), ("=", true)] {
        if let Some((key, value)) = term.split_once(op) {
            let key = valid_key(key.trim())?;
            let value = value.trim().to_string();
            return Some(if equal {
                Requirement::Equals(key, value)
            } else {
                Requirement::NotEquals(key, value)
            });
        }
    }
    Some(Requirement::Exists(valid_key(term)?))
}

fn valid_key(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_string())
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(Vec<String>, String, bool)>);

impl FieldSelector {
    /// Parses a field selector; a malformed one is a 400.
    pub(crate) fn parse(text: &str) -> Result<FieldSelector> {
        let mut terms = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let parsed = [("!=", false), ("==", true), ("=", true)]
                .into_iter()
                .find_map(|(op, equal)| {
                    term.split_once(op)
                        .map(|(p, v)| (p.trim(), v.trim(), equal))
                });
            let Some((path, value, equal)) = parsed.filter(|(p, _, _)| !p.is_empty()) else {
                return Err(Failure::bad_request(format!(
                    "invalid selector: {term:?} in field selector {text:?}"
                )));
            };
            let path = path.split('.').map(str::to_string).collect();
            terms.push((path, value.to_string(), equal));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether every term holds for `object`.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, value, equal)| {
            let found = path.iter().try_fold(object, |v, key| v.get(key));
            let text = match found {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (text == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    fn matches(selector: &str, labels: Value) -> bool {
        LabelSelector::parse(selector)
            .expect("selector parses")
            .matches(&labelled(labels))
    }

    #[test]
    fn label_selector_forms() {
        let l = json!({"app": "web", "tier": "front"});
        assert!(matches("", l.clone()));
        assert!(matches("app=web", l.clone()));
        assert!(matches("app==web", l.clone()));
        assert!(!matches("app!=web", l.clone()));
        assert!(matches("app!=db", l.clone()));
        assert!(matches("missing!=db", l.clone()));
        assert!(matches("app in (db, web)", l.clone()));
        assert!(!matches("app notin (db,web)", l.clone()));
        assert!(matches("missing notin (db,web)", l.clone()));
        assert!(!matches("missing in (db,web)", l.clone()));
        assert!(matches("app", l.clone()));
        assert!(!matches("!app", l.clone()));
        assert!(matches("!missing", l.clone()));
        assert!(matches("app=web,tier in (front),!missing", l.clone()));
        assert!(!matches("app=web,tier=back", l));
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for bad in ["app in db", "=x", "a b=c", "app between (a)", "app in (a"] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn field_selector_reads_dotted_paths() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "a"}, "status": {"phase": "Running"}, "spec2": {"n": 3}});
        let m = |s: &str| FieldSelector::parse(s).expect("parses").matches(&pod);
        assert!(m("metadata.name=p,metadata.namespace==n"));
        assert!(m("spec.nodeName=a,status.phase!=Pending"));
        assert!(!m("spec.nodeName!=a"));
        assert!(m("spec.missing="));
        assert!(m("spec2.n=3"));
        assert!(FieldSelector::parse("novalue").is_err());
    }
}
