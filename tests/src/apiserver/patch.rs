//! The PATCH bodies kube sends, applied to a stored object as JSON: JSON merge patch
//! (RFC 7386, also used for strategic-merge and server-side apply, whose extra semantics the
//! stand-in does not need) and JSON patch (RFC 6902).
//!
//! One deliberate departure from RFC 6902 copies kube-apiserver (evanphx/json-patch): a
//! `test` of `null` against a missing path passes. kube's finalizer helper depends on it when it
//! adds the first finalizer (`test /metadata/finalizers null`, then `add`).

use serde_json::{Map, Value};

use super::failure::{Failure, Result};

/// The patch formats, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`, applied as a merge patch.
    Strategic,
    /// `application/json-patch+json`
    Json,
    /// `application/apply-patch+yaml`: creates a missing object, else merges.
    Apply,
}

impl PatchKind {
    /// The patch kind for a request's `Content-Type` (parameters ignored); 415 if unknown.
    pub(crate) fn from_content_type(content_type: &str) -> Result<PatchKind> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchKind::Apply),
            other => Err(Failure::unsupported_media_type(other)),
        }
    }

    /// Parses the body: JSON, except apply patches, which may be YAML (JSON is YAML).
    pub(crate) fn parse_body(self, body: &[u8]) -> Result<Value> {
        match self {
            PatchKind::Apply => serde_yaml::from_slice(body)
                .map_err(|e| Failure::bad_request(format!("error decoding YAML: {e}"))),
            _ => serde_json::from_slice(body)
                .map_err(|e| Failure::bad_request(format!("error decoding patch: {e}"))),
        }
    }

    /// Applies a parsed patch body to `target`.
    pub(crate) fn apply(self, target: &Value, patch: &Value) -> Result<Value> {
        match self {
            PatchKind::Json => json_patch(target, patch),
            PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply => {
                let mut out = target.clone();
                merge_patch(&mut out, patch);
                Ok(out)
            }
        }
    }
}

/// RFC 7386: objects merge recursively, `null` removes a member, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902 on a copy of `target`; any failing operation fails the whole patch with 422.
pub(crate) fn json_patch(target: &Value, patch: &Value) -> Result<Value> {
    let operations = patch
        .as_array()
        .ok_or_else(|| Failure::bad_request("a json patch must be an array of operations"))?;
    let mut doc = target.clone();
    for op in operations {
        apply_operation(&mut doc, op)?;
    }
    Ok(doc)
}

fn apply_operation(doc: &mut Value, op: &Value) -> Result<()> {
    let field = |name: &str| {
        op.get(name).and_then(Value::as_str).ok_or_else(|| {
            Failure::bad_request(format!("json patch operation lacks {name:?}: {op}"))
        })
    };
    let value = || {
        op.get("value").cloned().ok_or_else(|| {
            Failure::bad_request(format!("json patch operation lacks \"value\": {op}"))
        })
    };
    let path = parse_pointer(field("path")?)?;
    match field("op")? {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            remove(doc, &path)?;
            add(doc, &path, value()?)
        }
        "move" => {
            let from = parse_pointer(field("from")?)?;
            let moved = remove(doc, &from)?;
            add(doc, &path, moved)
        }
        "copy" => {
            let from = parse_pointer(field("from")?)?;
            let copied = get(doc, &from).cloned().ok_or_else(|| missing(&from))?;
            add(doc, &path, copied)
        }
        "test" => {
            let expected = value()?;
            let actual = get(doc, &path).unwrap_or(&Value::Null);
            if *actual == expected {
                Ok(())
            } else {
                Err(Failure::invalid(format!(
                    "testing value {} failed: found {actual}, expected {expected}",
                    render(&path)
                )))
            }
        }
        other => Err(Failure::bad_request(format!(
            "unknown json patch operation {other:?}"
        ))),
    }
}

/// A JSON pointer's unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| Failure::bad_request(format!("invalid json pointer {pointer:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn render(path: &[String]) -> String {
    path.iter().map(|t| format!("/{t}")).collect()
}

fn missing(path: &[String]) -> Failure {
    Failure::invalid(format!("json patch: path {} does not exist", render(path)))
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<(&'a mut Value, String)> {
    let Some((last, init)) = path.split_last() else {
        return Err(Failure::invalid(
            "json patch: the root cannot be added to or removed",
        ));
    };
    let mut node = doc;
    for token in init {
        node = match node {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| missing(path))?;
    }
    Ok((node, last.clone()))
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<()> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (node, last) = parent(doc, path)?;
    match node {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| missing(path))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value> {
    let (node, last) = parent(doc, path)?;
    match node {
        Value::Object(map) => map.remove(&last).ok_or_else(|| missing(path)),
        Value::Array(items) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(|| missing(path))?;
            Ok(items.remove(index))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_and_removes() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": null, "d": 3}, "l": [3], "n": {"m": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": {"c": 2, "d": 3}, "l": [3], "s": "x", "n": {"m": 1}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let doc = json!({"metadata": {"name": "x"}, "list": ["a", "b"], "m": {"k": 1}});
        let patch = json!([
            {"op": "add", "path": "/list/-", "value": "c"},
            {"op": "add", "path": "/list/0", "value": "z"},
            {"op": "remove", "path": "/list/1"},
            {"op": "replace", "path": "/m/k", "value": 2},
            {"op": "copy", "from": "/m", "path": "/copied"},
            {"op": "move", "from": "/copied/k", "path": "/moved"},
            {"op": "test", "path": "/moved", "value": 2},
            {"op": "add", "path": "/a~1b", "value": true},
        ]);
        let out = json_patch(&doc, &patch).expect("patch applies");
        assert_eq!(
            out,
            json!({"metadata": {"name": "x"}, "list": ["z", "b", "c"], "m": {"k": 2}, "copied": {}, "moved": 2, "a/b": true})
        );
    }

    #[test]
    fn json_patch_test_of_null_passes_on_a_missing_path() {
        let doc = json!({"metadata": {"name": "x"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        ]);
        let out = json_patch(&doc, &patch).expect("patch applies");
        assert_eq!(out, json!({"metadata": {"name": "x", "finalizers": ["f"]}}));
    }

    #[test]
    fn json_patch_failures_are_invalid() {
        let doc = json!({"metadata": {"name": "x", "finalizers": ["f"]}});
        for patch in [
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]),
            json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "g"}]),
            json!([{"op": "remove", "path": "/metadata/labels"}]),
            json!([{"op": "replace", "path": "/spec/x", "value": 1}]),
            json!([{"op": "add", "path": "/metadata/finalizers/5", "value": "g"}]),
        ] {
            let err = json_patch(&doc, &patch).expect_err("patch fails");
            assert_eq!(err.code, 422, "{patch}");
        }
    }
}
