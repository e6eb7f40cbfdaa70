//! Objects read one by one. A list or watch of `K` fails whole when one item does not decode,
//! so one malformed object (a field of the wrong type written by hand or by a tool, a value of
//! a newer Velero) would stop a controller, bucket sync and expiry for every other object.
//! Read as [`Lenient<K>`], each item decodes on its own: the malformed one keeps its metadata
//! and says why it cannot be read (with the field's path), and the others go on.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A `K` as the API server sent it: decoded, or its metadata and why it is not.
#[derive(Debug, Clone)]
pub struct Lenient<K> {
    meta: ObjectMeta,
    /// `status.phase` as written, whatever the rest holds.
    phase: Option<String>,
    /// The object, or why it cannot be read.
    pub object: Result<K, Malformed>,
}

/// Why an object cannot be decoded: the field at fault and what is wrong with it, as
/// `spec.ttl: invalid type: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct Malformed {
    /// The path of the field (`spec.ttl`), or empty when the object as a whole is wrong.
    pub field: String,
    pub reason: String,
}

impl<K> Lenient<K> {
    /// The phase its status names, read without decoding the rest.
    pub fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }

    /// The object, when it decoded.
    pub fn ok(&self) -> Option<&K> {
        self.object.as_ref().ok()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let meta = ObjectMeta::deserialize(&value["metadata"]).unwrap_or_default();
        let phase = value["status"]["phase"].as_str().map(str::to_owned);
        let object = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            Malformed {
                field: if path == "." { String::new() } else { path },
                reason: e.into_inner().to_string(),
            }
        });
        Ok(Self {
            meta,
            phase,
            object,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::Backup;

    #[test]
    fn a_malformed_item_keeps_its_name_and_says_which_field_is_wrong() {
        let list: Vec<Lenient<Backup>> = serde_json::from_value(json!([
            {"apiVersion": "velero.io/v1", "kind": "Backup",
             "metadata": {"name": "good", "namespace": "velero"}, "spec": {"ttl": "1h"}},
            {"apiVersion": "velero.io/v1", "kind": "Backup",
             "metadata": {"name": "bad", "namespace": "velero"},
             "spec": {"includedNamespaces": "shop"}, "status": {"phase": "New"}},
        ]))
        .expect("the list decodes");
        assert!(list[0].ok().is_some());
        assert_eq!(list[1].meta().name.as_deref(), Some("bad"));
        assert_eq!(list[1].phase(), Some("New"));
        let why = list[1].object.as_ref().expect_err("malformed").to_string();
        assert!(
            why.starts_with("spec.includedNamespaces: invalid type"),
            "{why}"
        );
    }
}
