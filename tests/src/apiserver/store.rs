//! The objects, the global resourceVersion counter and the watch log, with the write rules a
//! real kube-apiserver applies: server-managed metadata, status only through `/status`,
//! generation bumps on spec changes, optimistic concurrency, finalizers and graceful deletion,
//! namespace termination that empties the namespace, and CRDs that register their resources.
//!
//! Every write happens under one lock and takes the next resourceVersion, so the watch log
//! (`history`) is totally ordered by RV. Watches read the log from their cursor; `floor` is the
//! RV after which the log is complete, and a watch asking for older history gets 410 Expired.
//! A write that changes nothing is not stored and emits nothing, as on a real server: a
//! controller that writes the status it already has must not wake itself up forever.

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;
use serde_json::{Map, Value, json};

use super::discovery::{self, Collection, Registry, Resource};
use super::failure::{Failure, Result};
use super::selector::{FieldSelector, LabelSelector};

/// Watch events kept for resuming watches. kube-apiserver's watch cache keeps a window of
/// recent events too; 10,000 is far more than a test produces between a list and its watch.
const HISTORY: usize = 10_000;

/// The namespaces a fresh cluster has; like kube-apiserver, it refuses to delete them.
const INITIAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// An object's place in its collection: namespace ("" for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// One stored object with where it is served, as `ApiServer::objects` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// The API group; empty for the core group.
    pub group: String,
    /// The version it is presented at (the resource's preferred one).
    pub version: String,
    /// The resource's plural name (`deployments`).
    pub plural: String,
    /// Its namespace; None when cluster-scoped.
    pub namespace: Option<String>,
    pub name: String,
    /// The object as a GET at that version returns it.
    pub object: Value,
}

impl StoredObject {
    /// `<plural>.<group>`, or just `<plural>` for the core group, as Velero names resources.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the watch log: the object as it was after the write (for DELETED, as it was
/// when removed, carrying the deletion's resourceVersion).
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) collection: Collection,
    pub(crate) event_type: EventType,
    pub(crate) object: Value,
    /// When the write happened (watches may hold events back from it, see `set_watch_delay`).
    pub(crate) at: tokio::time::Instant,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The main endpoint: everything but `status` for kinds with a status subresource.
    Main,
    /// The `/status` subresource: only `status`.
    Status,
    /// Test seeding: everything, status included.
    Whole,
}

/// Preconditions a DELETE may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Preconditions {
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
}

/// The cluster's state; see the module docs.
#[derive(Debug)]
pub(crate) struct Store {
    registry: Registry,
    objects: BTreeMap<Collection, BTreeMap<ObjectKey, Value>>,
    rv: u64,
    history: VecDeque<Event>,
    /// The log holds every event with an RV above this.
    floor: u64,
    /// Bumped by `compact`: watches opened before it end with 410.
    epoch: u64,
    /// The latest RV, for watches waiting for the next write.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// A cluster with the built-in resources and the namespaces every cluster has.
    pub(crate) fn new() -> Store {
        let mut store = Store {
            registry: Registry::new(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            floor: 0,
            epoch: 0,
            changed: tokio::sync::watch::Sender::new(0),
        };
        let namespaces = store
            .registry
            .find("", "v1", "namespaces")
            .cloned()
            .expect("namespaces are built in");
        for name in INITIAL_NAMESPACES {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            store
                .create(&namespaces, None, namespace, false)
                .expect("a fresh store accepts the initial namespaces");
        }
        store
    }

    /// The served resources.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current (latest) resourceVersion.
    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The current watch epoch (see `compact`).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A receiver that changes on every write.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Forgets the watch log: resuming from any RV older than the current one, or continuing
    /// any watch open now, gets 410 Expired.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
        self.epoch += 1;
        self.changed.send_replace(self.rv);
    }

    /// Every logged event after `cursor`, and the RV the caller has now seen everything up to;
    /// 410 when the log no longer reaches back to `cursor` or `epoch` was compacted away.
    pub(crate) fn events_after(&self, cursor: u64, epoch: u64) -> Result<(Vec<Event>, u64)> {
        if epoch != self.epoch || cursor < self.floor {
            return Err(Failure::expired(format!(
                "too old resource version: {cursor} ({})",
                self.floor + 1
            )));
        }
        let start = self.history.partition_point(|e| e.rv <= cursor);
        let events = self.history.range(start..).cloned().collect();
        Ok((events, self.rv.max(cursor)))
    }

    /// One object as served at `resource`'s version.
    pub(crate) fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        self.stored(resource, namespace, name)
            .map(|o| present(resource, o.clone()))
            .ok_or_else(|| Failure::not_found(&resource.plural, name))
    }

    /// Every stored object at its resource's first registered version (see `StoredObject`).
    pub(crate) fn all_objects(&self) -> Vec<StoredObject> {
        let mut all = Vec::new();
        for (collection, objects) in &self.objects {
            let Some(resource) = self.registry.versions_of(collection).first().copied() else {
                continue;
            };
            for (key, object) in objects {
                all.push(StoredObject {
                    group: resource.group.clone(),
                    version: resource.version.clone(),
                    plural: resource.plural.clone(),
                    namespace: resource.namespaced.then(|| key.namespace.clone()),
                    name: key.name.clone(),
                    object: present(resource, object.clone()),
                });
            }
        }
        all
    }

    /// A stored object by collection, whatever version wrote it (for test assertions).
    pub(crate) fn get_raw(
        &self,
        collection: &Collection,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.objects
            .get(collection)?
            .get(&key(namespace, name))
            .cloned()
    }

    fn stored(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Option<&Value> {
        self.objects
            .get(&resource.collection())?
            .get(&key(namespace.unwrap_or_default(), name))
    }

    /// The matching objects in key order (namespace, then name); `namespace` None means all.
    pub(crate) fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<(ObjectKey, Value)> {
        let Some(objects) = self.objects.get(&resource.collection()) else {
            return Vec::new();
        };
        objects
            .iter()
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .map(|(k, o)| (k.clone(), present(resource, o.clone())))
            .collect()
    }

    /// POST: creates `body` in `namespace` (Some exactly for namespaced kinds).
    pub(crate) fn create(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Value,
        dry_run: bool,
    ) -> Result<Value> {
        self.create_object(resource, namespace, body, dry_run, Target::Main)
    }

    fn create_object(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Value,
        dry_run: bool,
        target: Target,
    ) -> Result<Value> {
        let mut object = self.check_body(resource, namespace, body)?;
        let meta = metadata_mut(&mut object);
        if meta
            .get("resourceVersion")
            .is_some_and(|v| v.as_str() != Some(""))
        {
            return Err(Failure::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let namespace = namespace.unwrap_or_default().to_string();
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if prefix.is_empty() {
                return Err(Failure::invalid(format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    resource.kind
                )));
            }
            name = loop {
                let candidate = format!("{prefix}{}", random_suffix());
                if self
                    .get_raw(&resource.collection(), &namespace, &candidate)
                    .is_none()
                {
                    break candidate;
                }
            };
        }
        if resource.namespaced {
            self.check_namespace_open(&namespace)?;
        }
        if self
            .get_raw(&resource.collection(), &namespace, &name)
            .is_some()
        {
            return Err(Failure::already_exists(&resource.plural, &name));
        }
        let now = now();
        let meta = metadata_mut(&mut object);
        meta.insert("name".into(), name.clone().into());
        meta.insert("uid".into(), uid().into());
        meta.insert("creationTimestamp".into(), now.clone().into());
        meta.insert("generation".into(), 1.into());
        for server_owned in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            meta.remove(server_owned);
        }
        if resource.status && target != Target::Whole {
            remove_status(&mut object);
        }
        if resource.is_namespace() {
            object["status"] = json!({"phase": "Active"});
        }
        if resource.group.is_empty() && resource.plural == "pods" && object.get("status").is_none()
        {
            object["status"] = json!({"phase": "Pending"});
        }
        if resource.is_crd() {
            discovery::crd_resources(&name, &object)?;
            object["status"] = discovery::crd_status(&object, &now);
        }
        normalize(&mut object);
        validate(resource, &name, &object)?;
        if dry_run {
            return Ok(present(resource, object));
        }
        let rv = self.next_rv();
        set_rv(&mut object, rv);
        if resource.is_crd() {
            self.registry.set_crd(&name, &object)?;
        }
        self.objects
            .entry(resource.collection())
            .or_default()
            .insert(key(&namespace, &name), object.clone());
        self.log(rv, resource.collection(), EventType::Added, object.clone());
        Ok(present(resource, object))
    }

    /// PUT or PATCH: `change` turns the current object (as served at `resource`'s version) into
    /// the proposed one; the write rules then decide what of it is stored.
    pub(crate) fn update(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        target: Target,
        dry_run: bool,
        change: impl FnOnce(&Value) -> Result<Value>,
    ) -> Result<Value> {
        let current = self
            .stored(resource, namespace, name)
            .cloned()
            .ok_or_else(|| Failure::not_found(&resource.plural, name))?;
        let proposed = change(&present(resource, current.clone()))?;
        let proposed = self.check_body(resource, namespace, proposed)?;
        if proposed
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| n != name)
        {
            return Err(Failure::bad_request(format!(
                "the name of the object does not match the name on the URL ({name})"
            )));
        }
        let current_rv = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        match proposed
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            Some(rv) if !rv.is_empty() && Some(rv) != current_rv => {
                return Err(Failure::conflict(&resource.plural, name));
            }
            _ => {}
        }
        let mut object = match target {
            Target::Status => {
                let mut object = current.clone();
                match proposed.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => remove_status(&mut object),
                }
                object
            }
            Target::Main | Target::Whole => {
                let mut object = proposed;
                if resource.status && target == Target::Main {
                    match current.get("status") {
                        Some(status) => object["status"] = status.clone(),
                        None => remove_status(&mut object),
                    }
                }
                let current_meta = current.get("metadata").and_then(Value::as_object);
                let meta = metadata_mut(&mut object);
                for server_owned in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "resourceVersion",
                ] {
                    match current_meta.and_then(|m| m.get(server_owned)) {
                        Some(v) => meta.insert(server_owned.into(), v.clone()),
                        None => meta.remove(server_owned),
                    };
                }
                object
            }
        };
        if resource.is_crd() {
            discovery::crd_resources(name, &object)?;
            let transition = current.pointer("/status/conditions/0/lastTransitionTime");
            let since = transition
                .and_then(Value::as_str)
                .map_or_else(now, str::to_string);
            object["status"] = discovery::crd_status(&object, &since);
        }
        normalize(&mut object);
        validate(resource, name, &object)?;
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            let old = finalizers(&current);
            if let Some(added) = finalizers(&object).into_iter().find(|f| !old.contains(f)) {
                return Err(Failure::invalid(format!(
                    "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]",
                    resource.kind
                )));
            }
        }
        if spec_of(&object) != spec_of(&current) {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut object).insert("generation".into(), (generation + 1).into());
        }
        if object == current {
            return Ok(present(resource, current));
        }
        if dry_run {
            return Ok(present(resource, object));
        }
        let namespace = namespace.unwrap_or_default();
        if object.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&object).is_empty()
        {
            if resource.is_namespace() && self.namespace_has_objects(name) {
                // Still emptying: the namespace stays, Terminating, until its last object goes.
            } else {
                let object = self.remove(resource.collection(), namespace, name, object);
                return Ok(present(resource, object));
            }
        }
        let rv = self.next_rv();
        set_rv(&mut object, rv);
        if resource.is_crd() {
            self.registry.set_crd(name, &object)?;
        }
        self.objects
            .entry(resource.collection())
            .or_default()
            .insert(key(namespace, name), object.clone());
        self.log(
            rv,
            resource.collection(),
            EventType::Modified,
            object.clone(),
        );
        Ok(present(resource, object))
    }

    /// DELETE of one object: with finalizers it is only marked (deletionTimestamp, MODIFIED);
    /// without, it is removed (DELETED). A namespace is emptied first. Returns the object.
    pub(crate) fn delete(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        preconditions: &Preconditions,
        dry_run: bool,
    ) -> Result<Value> {
        let current = self
            .stored(resource, namespace, name)
            .cloned()
            .ok_or_else(|| Failure::not_found(&resource.plural, name))?;
        if resource.is_namespace() && INITIAL_NAMESPACES.contains(&name) {
            return Err(Failure::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        let meta = |field: &str| {
            current
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
        };
        if preconditions
            .uid
            .as_deref()
            .is_some_and(|uid| Some(uid) != meta("uid"))
            || preconditions
                .resource_version
                .as_deref()
                .is_some_and(|rv| Some(rv) != meta("resourceVersion"))
        {
            return Err(Failure::conflict(&resource.plural, name));
        }
        if dry_run {
            return Ok(present(resource, current));
        }
        let collection = resource.collection();
        let namespace = namespace.unwrap_or_default();
        let object = self.delete_stored(&collection, namespace, name, current);
        if resource.is_namespace() {
            self.empty_namespace(name);
            self.finish_namespace(name);
        }
        Ok(present(
            resource,
            self.get_raw(&collection, namespace, name).unwrap_or(object),
        ))
    }

    /// DELETE of a collection: deletes every match as `delete` would; returns them.
    pub(crate) fn delete_collection(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        dry_run: bool,
    ) -> Result<Vec<Value>> {
        let keys: Vec<ObjectKey> = self
            .list(resource, namespace, labels, fields)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut deleted = Vec::new();
        for k in keys {
            let ns = resource.namespaced.then_some(k.namespace.as_str());
            deleted.push(self.delete(resource, ns, &k.name, &Preconditions::default(), dry_run)?);
        }
        Ok(deleted)
    }

    /// Stores `object` as given, status included, creating or replacing it (test seeding).
    pub(crate) fn put(&mut self, mut object: Value) -> Result<Value> {
        if !object.is_object() {
            return Err(Failure::bad_request("an object must be a JSON object"));
        }
        let text = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        let resource = self
            .registry
            .find_kind(&api_version, &kind)
            .cloned()
            .ok_or_else(|| {
                Failure::bad_request(format!("no resource serves {api_version} {kind}"))
            })?;
        let namespace = text("/metadata/namespace");
        let namespace = resource.namespaced.then(|| {
            if namespace.is_empty() {
                "default".to_string()
            } else {
                namespace
            }
        });
        let name = text("/metadata/name");
        metadata_mut(&mut object).remove("resourceVersion");
        if !name.is_empty()
            && self
                .stored(&resource, namespace.as_deref(), &name)
                .is_some()
        {
            return self.update(
                &resource,
                namespace.as_deref(),
                &name,
                Target::Whole,
                false,
                |_| Ok(object),
            );
        }
        self.create_object(
            &resource,
            namespace.as_deref(),
            object,
            false,
            Target::Whole,
        )
    }

    /// Marks or removes one stored object (see `delete`); returns its last state.
    fn delete_stored(
        &mut self,
        collection: &Collection,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Value {
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            return object;
        }
        let is_namespace = collection.group.is_empty() && collection.plural == "namespaces";
        // A namespace always passes through Terminating (on a real cluster its `kubernetes`
        // finalizer holds it there while the namespace controller empties it).
        if !is_namespace && finalizers(&object).is_empty() {
            return self.remove(collection.clone(), namespace, name, object);
        }
        let generation = object
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let meta = metadata_mut(&mut object);
        meta.insert("deletionTimestamp".into(), now().into());
        meta.insert("deletionGracePeriodSeconds".into(), 0.into());
        meta.insert("generation".into(), (generation + 1).into());
        if is_namespace {
            object["status"] = json!({"phase": "Terminating"});
        }
        let rv = self.next_rv();
        set_rv(&mut object, rv);
        self.objects
            .entry(collection.clone())
            .or_default()
            .insert(key(namespace, name), object.clone());
        self.log(rv, collection.clone(), EventType::Modified, object.clone());
        object
    }

    /// Deletes every object in a terminating namespace, as the namespace controller does.
    fn empty_namespace(&mut self, namespace: &str) {
        let contents: Vec<(Collection, String, Value)> = self
            .objects
            .iter()
            .flat_map(|(c, objects)| {
                objects
                    .iter()
                    .filter(|(k, _)| k.namespace == namespace)
                    .map(|(k, o)| (c.clone(), k.name.clone(), o.clone()))
            })
            .collect();
        for (collection, name, object) in contents {
            self.delete_stored(&collection, namespace, &name, object);
        }
    }

    /// Removes a terminating namespace once it is empty and has no finalizers of its own.
    fn finish_namespace(&mut self, namespace: &str) {
        let collection = Collection {
            group: String::new(),
            plural: "namespaces".into(),
        };
        let Some(object) = self.get_raw(&collection, "", namespace) else {
            return;
        };
        if object.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(&object).is_empty()
            && !self.namespace_has_objects(namespace)
        {
            self.remove(collection, "", namespace, object);
        }
    }

    fn namespace_has_objects(&self, namespace: &str) -> bool {
        self.objects
            .values()
            .any(|objects| objects.keys().any(|k| k.namespace == namespace))
    }

    /// Removes an object with a DELETED event, and what goes with it: a CRD's resources and
    /// objects; the namespace it empties, if that namespace is terminating.
    fn remove(
        &mut self,
        collection: Collection,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Value {
        let rv = self.next_rv();
        set_rv(&mut object, rv);
        if let Some(objects) = self.objects.get_mut(&collection) {
            objects.remove(&key(namespace, name));
        }
        self.log(rv, collection.clone(), EventType::Deleted, object.clone());
        if collection.group == discovery::CRD_GROUP && collection.plural == discovery::CRD_PLURAL {
            self.registry.remove_crd(name);
            let text = |p: &str| {
                object
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let served = Collection {
                group: text("/spec/group"),
                plural: text("/spec/names/plural"),
            };
            let contents: Vec<(ObjectKey, Value)> = self
                .objects
                .get(&served)
                .map(|objects| {
                    objects
                        .iter()
                        .map(|(k, o)| (k.clone(), o.clone()))
                        .collect()
                })
                .unwrap_or_default();
            for (k, o) in contents {
                self.remove(served.clone(), &k.namespace, &k.name, o);
            }
            self.objects.remove(&served);
        }
        if !namespace.is_empty() {
            self.finish_namespace(namespace);
        }
        object
    }

    /// 400 unless `body` is an object of `resource`'s kind in `namespace`; fills in apiVersion,
    /// kind and namespace.
    fn check_body(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        mut body: Value,
    ) -> Result<Value> {
        if !body.is_object() {
            return Err(Failure::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let api_version = resource.api_version();
        let versions = self.registry.versions_of(&resource.collection());
        match body.get("apiVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() && !versions.iter().any(|r| r.api_version() == v) => {
                return Err(Failure::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
            _ => {}
        }
        match body.get("kind").and_then(Value::as_str) {
            Some(k) if !k.is_empty() && k != resource.kind => {
                return Err(Failure::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    resource.kind
                )));
            }
            _ => {}
        }
        body["apiVersion"] = api_version.into();
        body["kind"] = resource.kind.clone().into();
        let meta = metadata_mut(&mut body);
        match namespace {
            Some(ns) => {
                if meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty() && n != ns)
                {
                    return Err(Failure::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                meta.insert("namespace".into(), ns.into());
            }
            None => {
                meta.remove("namespace");
            }
        }
        Ok(body)
    }

    fn check_namespace_open(&self, namespace: &str) -> Result<()> {
        let collection = Collection {
            group: String::new(),
            plural: "namespaces".into(),
        };
        let object = self
            .get_raw(&collection, "", namespace)
            .ok_or_else(|| Failure::not_found("namespaces", namespace))?;
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(Failure::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn log(&mut self, rv: u64, collection: Collection, event_type: EventType, object: Value) {
        self.history.push_back(Event {
            rv,
            collection,
            event_type,
            object,
            at: tokio::time::Instant::now(),
        });
        while self.history.len() > HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        self.changed.send_replace(self.rv);
    }
}

fn key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// The object as served at `resource`'s version.
pub(crate) fn present(resource: &Resource, mut object: Value) -> Value {
    if object.is_object() {
        object["apiVersion"] = resource.api_version().into();
        object["kind"] = resource.kind.clone().into();
    }
    object
}

/// `metadata` as a map, created if missing or not an object. `object` must be a JSON object.
fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let meta = object
        .as_object_mut()
        .expect("bodies are checked to be JSON objects before their metadata is touched")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
        .expect("metadata was just made an object")
}

fn remove_status(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
}

fn set_rv(object: &mut Value, rv: u64) {
    metadata_mut(object).insert("resourceVersion".into(), rv.to_string().into());
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the generation counts changes of: everything but metadata and status.
fn spec_of(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Some(map) = spec.as_object_mut() {
        for field in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(field);
        }
    }
    spec
}

/// Drops what a real server never stores: null and empty metadata fields (they are
/// `omitempty`; kube's finalizer helper tests for an absent `finalizers`) and managedFields
/// (field ownership is not tracked).
fn normalize(object: &mut Value) {
    let meta = metadata_mut(object);
    meta.retain(|field, value| match value {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty() || field == "name",
        _ => true,
    });
    meta.remove("managedFields");
    meta.remove("selfLink");
}

/// Name, label and annotation rules a real server enforces, so that a name or label the
/// product builds wrong fails here as it would in a cluster.
fn validate(resource: &Resource, name: &str, object: &Value) -> Result<()> {
    let invalid = |field: &str, value: &str, rule: &str| {
        Failure::invalid(format!(
            "{} \"{name}\" is invalid: {field}: Invalid value: {value:?}: {rule}",
            resource.kind
        ))
    };
    let name_ok = if resource.is_namespace() {
        is_dns_label(name)
    } else if resource.group == "rbac.authorization.k8s.io" {
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
    } else {
        is_dns_subdomain(name)
    };
    if !name_ok {
        return Err(invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 name is required",
        ));
    }
    if let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                return Err(invalid(
                    "metadata.labels",
                    k,
                    "name part must consist of alphanumeric characters, '-', '_' or '.' (at most 63), with an optional DNS subdomain prefix and '/'",
                ));
            }
            let v = v
                .as_str()
                .ok_or_else(|| invalid("metadata.labels", k, "label values must be strings"))?;
            if !(v.is_empty() || is_label_name(v)) {
                return Err(invalid(
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.' (at most 63), and must start and end with an alphanumeric character",
                ));
            }
        }
    }
    if let Some(annotations) = object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in annotations {
            if !is_qualified_name(k) || !v.is_string() {
                return Err(invalid(
                    "metadata.annotations",
                    k,
                    "annotation keys must be qualified names and values strings",
                ));
            }
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_part(s)
}

/// Lower-case letters, digits and `-`, starting and ending with a letter or digit.
fn is_dns_part(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Kubernetes' `IsDNS1123Subdomain`: at most 253 characters in all; its regex puts no limit on
/// one dot-separated part (so `<long schedule name>-20261122010000` is a valid object name).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_part)
}

fn is_label_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// RFC 3339 UTC to the second, as Kubernetes writes timestamps.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A random version-4 UUID, as the server gives every object.
fn uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The 5-character suffix of a `generateName`, from Kubernetes' alphabet (no vowels, no
/// look-alike digits).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_maps(store: &Store) -> Resource {
        store
            .registry()
            .find("", "v1", "configmaps")
            .cloned()
            .expect("configmaps are built in")
    }

    #[test]
    fn the_watch_log_is_bounded_and_older_history_expires() {
        let mut store = Store::new();
        let resource = config_maps(&store);
        let body = json!({"metadata": {"name": "cm"}, "data": {"n": "0"}});
        store
            .create(&resource, Some("default"), body, false)
            .expect("created");
        let start = store.resource_version();
        for n in 1..=HISTORY + 5 {
            let data = json!({"metadata": {"name": "cm"}, "data": {"n": n.to_string()}});
            store
                .update(
                    &resource,
                    Some("default"),
                    "cm",
                    Target::Main,
                    false,
                    |_| Ok(data),
                )
                .expect("updated");
        }
        let gone = store
            .events_after(start, store.epoch())
            .expect_err("expired");
        assert_eq!(gone.code, 410);
        let recent = store.resource_version() - 5;
        let (events, cursor) = store.events_after(recent, store.epoch()).expect("retained");
        assert_eq!(events.len(), 5);
        assert_eq!(cursor, store.resource_version());
    }

    #[test]
    fn a_write_that_changes_nothing_is_not_stored() {
        let mut store = Store::new();
        let resource = config_maps(&store);
        let body = json!({"metadata": {"name": "cm", "labels": {}}, "data": {"k": "v"}});
        let created = store
            .create(&resource, Some("default"), body.clone(), false)
            .expect("created");
        let rv = store.resource_version();
        let same = store
            .update(
                &resource,
                Some("default"),
                "cm",
                Target::Main,
                false,
                |_| Ok(body),
            )
            .expect("updated");
        assert_eq!(same, created);
        assert_eq!(store.resource_version(), rv);
        assert!(
            store
                .events_after(rv, store.epoch())
                .expect("log")
                .0
                .is_empty()
        );
    }
}
