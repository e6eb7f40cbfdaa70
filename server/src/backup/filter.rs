//! Which objects a Backup takes: Velero's include/exclude rules for namespaces and resources,
//! the `includeClusterResources` tri-state, and label selectors (`labelSelector`, or several
//! `orLabelSelectors`) turned into the selector strings the API server takes.
//!
//! The rules are Velero v1.5.4's (`pkg/util/collections/includes_excludes.go`,
//! `pkg/backup/item_collector.go`, `item_backupper.go`), with two deliberate differences:
//! a resource name that discovery does not know is a validation error naming it (Velero keeps
//! it as written and silently matches nothing), and `orLabelSelectors` (Velero ≥ 1.8) is
//! understood. Validation messages are Velero's, word for word, so scripts that read
//! `status.validationErrors` keep working.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::api::BackupSpec;

/// A group and a resource plural, written as Velero writes it: `deployments.apps`, or just
/// `pods` for the core group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    /// The API group; empty for the core group.
    pub group: String,
    /// The plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// A group-resource from its parts.
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> GroupResource {
        GroupResource {
            group: group.into(),
            resource: resource.into(),
        }
    }

    /// Whether this is the core group's `namespaces`, which Velero treats apart from other
    /// cluster-scoped resources.
    pub fn is_namespaces(&self) -> bool {
        self.group.is_empty() && self.resource == "namespaces"
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// Lists of included and excluded names: everything included except what is excluded. An
/// empty include list, or `*`, includes everything. Entries may be globs (`*` any run, `?` one
/// character), as Velero's are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncludesExcludes {
    includes: BTreeSet<String>,
    excludes: BTreeSet<String>,
}

impl IncludesExcludes {
    /// Lists as given; `*` in the excludes is ignored (validation reports it).
    pub fn new<I, E>(includes: I, excludes: E) -> IncludesExcludes
    where
        I: IntoIterator,
        I::Item: Into<String>,
        E: IntoIterator,
        E::Item: Into<String>,
    {
        IncludesExcludes {
            includes: includes.into_iter().map(Into::into).collect(),
            excludes: excludes
                .into_iter()
                .map(Into::into)
                .filter(|e| e != "*")
                .collect(),
        }
    }

    /// Whether `name` is included and not excluded.
    pub fn should_include(&self, name: &str) -> bool {
        if self.excludes.iter().any(|e| glob_match(e, name)) {
            return false;
        }
        self.includes.is_empty()
            || self.includes.contains("*")
            || self.includes.iter().any(|i| glob_match(i, name))
    }

    /// Whether nothing is excluded and everything is included (empty or `*` only).
    pub fn include_everything(&self) -> bool {
        self.excludes.is_empty() && self.includes_all()
    }

    /// Whether the include list is empty or contains `*`.
    pub fn includes_all(&self) -> bool {
        self.includes.is_empty() || self.includes.contains("*")
    }

    /// The included names, sorted.
    pub fn includes(&self) -> impl Iterator<Item = &str> {
        self.includes.iter().map(String::as_str)
    }

    /// The included names when every one is an exact name (no glob), so each can be asked
    /// for directly; `None` when the includes are everything or contain a glob.
    pub fn exact_includes(&self) -> Option<Vec<&str>> {
        if self.includes_all() || self.includes.iter().any(|i| is_glob(i)) {
            return None;
        }
        Some(self.includes().collect())
    }

    /// The includes joined by `, `, or `*` when empty (as Velero logs them).
    pub fn includes_string(&self) -> String {
        join_or(&self.includes, "*")
    }

    /// The excludes joined by `, `, or `<none>` when empty (as Velero logs them).
    pub fn excludes_string(&self) -> String {
        join_or(&self.excludes, "<none>")
    }
}

fn join_or(set: &BTreeSet<String>, empty: &str) -> String {
    if set.is_empty() {
        empty.to_owned()
    } else {
        set.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Matches `name` against a glob of `*` (any run, possibly empty) and `?` (one character).
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Classic two-pointer matcher with backtracking to the last `*`: linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Velero's consistency rules for one pair of lists, with its messages.
pub fn validate_includes_excludes(includes: &[String], excludes: &[String]) -> Vec<String> {
    let includes: BTreeSet<&str> = includes.iter().map(String::as_str).collect();
    let excludes: BTreeSet<&str> = excludes.iter().map(String::as_str).collect();
    let mut errors = Vec::new();
    if includes.len() > 1 && includes.contains("*") {
        errors.push(
            "includes list must either contain '*' only, or a non-empty list of items".to_owned(),
        );
    }
    if excludes.contains("*") {
        errors.push("excludes list cannot contain '*'".to_owned());
    }
    for item in excludes.iter().filter(|e| includes.contains(*e)) {
        errors.push(format!(
            "excludes list cannot contain an item in the includes list: {item}"
        ));
    }
    errors
}

/// One resource the API server serves, as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedResource {
    /// Group and plural.
    pub group_resource: GroupResource,
    /// The version it is served at (the group's preferred version).
    pub version: String,
    /// The kind, e.g. `Deployment`.
    pub kind: String,
    /// The singular name, when discovery gives one.
    pub singular: String,
    /// Short names such as `deploy`.
    pub short_names: Vec<String>,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the resource can be listed (has the `list` verb).
    pub listable: bool,
}

impl ServedResource {
    /// `v1` for the core group, else `group/version`.
    pub fn api_version(&self) -> String {
        if self.group_resource.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group_resource.group, self.version)
        }
    }

    /// Whether `name` (lower-cased) names this resource: plural, singular, kind or short name.
    fn answers_to(&self, name: &str) -> bool {
        self.group_resource.resource == name
            || self.singular == name
            || self.kind.to_lowercase() == name
            || self.short_names.iter().any(|s| s == name)
    }
}

/// The resources discovery found, in discovery order, for resolving the names users write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceIndex {
    resources: Vec<ServedResource>,
}

impl ResourceIndex {
    /// An index over resources in the order they are to be backed up.
    pub fn new(resources: Vec<ServedResource>) -> ResourceIndex {
        ResourceIndex { resources }
    }

    /// Every resource, in order.
    pub fn resources(&self) -> &[ServedResource] {
        &self.resources
    }

    /// The resource with this group-resource.
    pub fn get(&self, gr: &GroupResource) -> Option<&ServedResource> {
        self.resources.iter().find(|r| &r.group_resource == gr)
    }

    /// Resolves a name as users write it — plural, singular, kind or short name, optionally
    /// followed by `.group` — as `kubectl` and Velero do: the first `.` splits name from group.
    /// A bare name prefers the core group, then discovery order.
    pub fn resolve(&self, name: &str) -> Option<&ServedResource> {
        let name = name.to_lowercase();
        let (resource, group) = match name.split_once('.') {
            Some((r, g)) => (r, Some(g)),
            None => (name.as_str(), None),
        };
        let mut candidates = self
            .resources
            .iter()
            .filter(|r| r.answers_to(resource))
            .filter(|r| group.is_none_or(|g| r.group_resource.group == g));
        let first = candidates.next()?;
        if first.group_resource.group.is_empty() {
            return Some(first);
        }
        candidates
            .find(|r| r.group_resource.group.is_empty())
            .or(Some(first))
    }

    /// The names in `names` (other than `*`) that resolve to nothing.
    pub fn unknown<'a>(&self, names: &'a [String]) -> Vec<&'a str> {
        names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "*" && self.resolve(n).is_none())
            .collect()
    }
}

/// A label selector in the form the API server takes (`a=b,c in (d,e),!f`), which can also
/// test labels locally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Requirement {
    Equals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", list(vs)),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", list(vs)),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

impl Selector {
    /// Converts a Kubernetes `LabelSelector`, as `metav1.LabelSelectorAsSelector` does:
    /// requirements sorted by key, values sorted; an empty selector matches everything.
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for expr in selector.match_expressions.iter().flatten() {
            requirements.push(requirement(expr)?);
        }
        requirements.sort_by(|a, b| a.key().cmp(b.key()).then_with(|| a.cmp(b)));
        requirements.dedup();
        Ok(Selector { requirements })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Why a label selector cannot be used; the texts are the API server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    #[error(
        "values: Invalid value: []: for '{operator}' operator, values set can't be empty (key {key})"
    )]
    NoValues { operator: String, key: String },
    #[error(
        "values: Invalid value: {values:?}: values set must be empty for exists and does not exist (key {key})"
    )]
    UnexpectedValues {
        values: BTreeSet<String>,
        key: String,
    },
    #[error("{operator:?} is not a valid pod selector operator")]
    Operator { operator: String },
}

fn requirement(expr: &LabelSelectorRequirement) -> Result<Requirement, SelectorError> {
    let key = expr.key.clone();
    let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
    match expr.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(SelectorError::NoValues {
            operator: expr.operator.clone(),
            key,
        }),
        "In" => Ok(Requirement::In(key, values)),
        "NotIn" => Ok(Requirement::NotIn(key, values)),
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            Err(SelectorError::UnexpectedValues { values, key })
        }
        "Exists" => Ok(Requirement::Exists(key)),
        "DoesNotExist" => Ok(Requirement::DoesNotExist(key)),
        other => Err(SelectorError::Operator {
            operator: other.to_owned(),
        }),
    }
}

/// What a backup spec selects, resolved against discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFilter {
    /// Namespaces to take objects from.
    pub namespaces: IncludesExcludes,
    /// Resources, as group-resource strings (`deployments.apps`, `pods`).
    pub resources: IncludesExcludes,
    /// `includeClusterResources`: `None` means "when the backup is for all namespaces".
    pub include_cluster_resources: Option<bool>,
    /// The label selectors; an object is taken when any selects it (no entry: all objects).
    pub selectors: Vec<Selector>,
}

impl BackupFilter {
    /// Resolves a spec; the spec must have passed [`validate`] (an unknown resource name is
    /// kept as written here, matching nothing, as Velero does).
    pub fn new(spec: &BackupSpec, index: &ResourceIndex) -> Result<BackupFilter, SelectorError> {
        let resolve = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .map(|n| match (n.as_str(), index.resolve(n)) {
                    ("*", _) => n.clone(),
                    (_, Some(r)) => r.group_resource.to_string(),
                    (_, None) => n.clone(),
                })
                .collect()
        };
        Ok(BackupFilter {
            namespaces: IncludesExcludes::new(
                spec.included_namespaces.clone(),
                spec.excluded_namespaces.clone(),
            ),
            resources: IncludesExcludes::new(
                resolve(&spec.included_resources),
                resolve(&spec.excluded_resources),
            ),
            include_cluster_resources: spec.include_cluster_resources,
            selectors: selectors(spec)?,
        })
    }

    /// Whether every object of a cluster-scoped resource other than namespaces is wanted:
    /// `true` takes them, `false` never, unset only when all namespaces are backed up.
    pub fn wants_cluster_scoped(&self) -> bool {
        match self.include_cluster_resources {
            Some(include) => include,
            None => self.namespaces.include_everything(),
        }
    }

    /// Whether a cluster-scoped object that another item brings along (a PV bound to a PVC,
    /// a CRD of a backed-up resource) may be taken: always, unless cluster resources are
    /// explicitly excluded (Velero's `backupItem` check).
    pub fn allows_cluster_scoped_item(&self) -> bool {
        self.include_cluster_resources != Some(false)
    }

    /// Whether any of the selectors selects these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(labels))
    }
}

fn selectors(spec: &BackupSpec) -> Result<Vec<Selector>, SelectorError> {
    let given: Vec<&LabelSelector> = match &spec.label_selector {
        Some(s) => vec![s],
        None => spec.or_label_selectors.iter().collect(),
    };
    let mut out = Vec::new();
    for s in given {
        let selector = Selector::from_label_selector(s)?;
        if selector.is_empty() {
            // One branch selecting everything makes the whole OR select everything.
            return Ok(Vec::new());
        }
        out.push(selector);
    }
    Ok(out)
}

/// Velero's validation of a backup's filters, plus lifeboat's: unknown resource names and
/// unparseable selectors. Empty when the spec is usable. (The storage and snapshot location
/// checks need the cluster and live with the controller.)
pub fn validate(spec: &BackupSpec, index: &ResourceIndex) -> Vec<String> {
    let mut errors = Vec::new();
    for e in validate_includes_excludes(&spec.included_resources, &spec.excluded_resources) {
        errors.push(format!("Invalid included/excluded resource lists: {e}"));
    }
    for e in validate_includes_excludes(&spec.included_namespaces, &spec.excluded_namespaces) {
        errors.push(format!("Invalid included/excluded namespace lists: {e}"));
    }
    let mut unknown = index.unknown(&spec.included_resources);
    unknown.extend(index.unknown(&spec.excluded_resources));
    if !unknown.is_empty() {
        errors.push(format!(
            "Invalid included/excluded resource lists: the API server serves no resource named {}",
            unknown.join(", ")
        ));
    }
    if spec.label_selector.is_some() && !spec.or_label_selectors.is_empty() {
        errors.push(
            "encountered labelSelector as well as orLabelSelectors in backup spec, only one can be specified"
                .to_owned(),
        );
    }
    for s in spec.label_selector.iter().chain(&spec.or_label_selectors) {
        if let Err(e) = Selector::from_label_selector(s) {
            errors.push(format!("Invalid label selector: {e}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(group: &str, resource: &str, kind: &str, short: &[&str], ns: bool) -> ServedResource {
        ServedResource {
            group_resource: GroupResource::new(group, resource),
            version: "v1".into(),
            kind: kind.into(),
            singular: kind.to_lowercase(),
            short_names: short.iter().map(|s| s.to_string()).collect(),
            namespaced: ns,
            listable: true,
        }
    }

    fn index() -> ResourceIndex {
        ResourceIndex::new(vec![
            served("", "pods", "Pod", &["po"], true),
            served("", "events", "Event", &["ev"], true),
            served("", "persistentvolumes", "PersistentVolume", &["pv"], false),
            served("apps", "deployments", "Deployment", &["deploy"], true),
            served("events.k8s.io", "events", "Event", &["ev"], true),
            served("example.com", "widgets", "Widget", &["wd"], true),
        ])
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_includes_take_everything_but_the_excludes() {
        let ie = IncludesExcludes::new(Vec::<String>::new(), ["b"]);
        assert!(ie.should_include("a"));
        assert!(!ie.should_include("b"));
        assert!(!ie.include_everything());
        assert!(IncludesExcludes::new(["*"], Vec::<String>::new()).include_everything());
        assert!(IncludesExcludes::default().include_everything());
    }

    #[test]
    fn exact_includes_take_only_themselves() {
        let ie = IncludesExcludes::new(["a", "b"], Vec::<String>::new());
        assert!(ie.should_include("a"));
        assert!(!ie.should_include("c"));
        assert_eq!(ie.exact_includes(), Some(vec!["a", "b"]));
        assert_eq!(ie.includes_string(), "a, b");
        assert_eq!(ie.excludes_string(), "<none>");
    }

    #[test]
    fn excludes_win_over_includes_and_globs_match() {
        let ie = IncludesExcludes::new(["app-*"], ["app-?b"]);
        assert!(ie.should_include("app-one"));
        assert!(!ie.should_include("app-xb"));
        assert!(ie.should_include("app-xyb"));
        assert!(!ie.should_include("other"));
        assert_eq!(ie.exact_includes(), None);
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYc"));
        assert!(!glob_match("a*b*c", "aXXbY"));
    }

    #[test]
    fn a_star_in_the_excludes_is_ignored() {
        let ie = IncludesExcludes::new(Vec::<String>::new(), ["*"]);
        assert!(ie.should_include("anything"));
    }

    #[test]
    fn validation_messages_are_velero_s() {
        let spec = BackupSpec {
            included_namespaces: strings(&["*", "a"]),
            excluded_namespaces: strings(&["*", "a"]),
            included_resources: strings(&["pods"]),
            excluded_resources: strings(&["pods"]),
            ..Default::default()
        };
        assert_eq!(
            validate(&spec, &index()),
            strings(&[
                "Invalid included/excluded resource lists: excludes list cannot contain an item in the includes list: pods",
                "Invalid included/excluded namespace lists: includes list must either contain '*' only, or a non-empty list of items",
                "Invalid included/excluded namespace lists: excludes list cannot contain '*'",
                "Invalid included/excluded namespace lists: excludes list cannot contain an item in the includes list: *",
                "Invalid included/excluded namespace lists: excludes list cannot contain an item in the includes list: a",
            ])
        );
    }

    #[test]
    fn unknown_resource_names_are_named() {
        let spec = BackupSpec {
            included_resources: strings(&["pods", "gizmos", "*"]),
            excluded_resources: strings(&["deploy.nope"]),
            ..Default::default()
        };
        let errors = validate(&spec, &index());
        assert!(errors.contains(
            &"Invalid included/excluded resource lists: the API server serves no resource named gizmos, deploy.nope".to_owned()
        ), "{errors:?}");
    }

    #[test]
    fn a_valid_spec_has_no_errors() {
        let spec = BackupSpec {
            included_namespaces: strings(&["a", "b"]),
            excluded_resources: strings(&["wd", "Deployment"]),
            ..Default::default()
        };
        assert!(validate(&spec, &index()).is_empty());
    }

    #[test]
    fn resource_names_resolve_by_plural_singular_kind_short_name_and_group() {
        let idx = index();
        let gr = |n: &str| idx.resolve(n).map(|r| r.group_resource.to_string());
        assert_eq!(gr("deployments").as_deref(), Some("deployments.apps"));
        assert_eq!(gr("deploy").as_deref(), Some("deployments.apps"));
        assert_eq!(gr("Deployment").as_deref(), Some("deployments.apps"));
        assert_eq!(gr("deployments.apps").as_deref(), Some("deployments.apps"));
        assert_eq!(gr("po").as_deref(), Some("pods"));
        assert_eq!(gr("events").as_deref(), Some("events"));
        assert_eq!(
            gr("events.events.k8s.io").as_deref(),
            Some("events.events.k8s.io")
        );
        assert_eq!(gr("widget").as_deref(), Some("widgets.example.com"));
        assert_eq!(gr("deployments.extensions"), None);
    }

    #[test]
    fn the_filter_uses_resolved_group_resources() {
        let spec = BackupSpec {
            included_resources: strings(&["deploy", "po"]),
            ..Default::default()
        };
        let filter = BackupFilter::new(&spec, &index()).unwrap();
        assert!(filter.resources.should_include("deployments.apps"));
        assert!(filter.resources.should_include("pods"));
        assert!(!filter.resources.should_include("widgets.example.com"));
    }

    #[test]
    fn cluster_resources_follow_the_tri_state() {
        let mut spec = BackupSpec::default();
        let filter = |s: &BackupSpec| BackupFilter::new(s, &index()).unwrap();
        assert!(filter(&spec).wants_cluster_scoped());
        assert!(filter(&spec).allows_cluster_scoped_item());
        spec.included_namespaces = strings(&["a"]);
        assert!(!filter(&spec).wants_cluster_scoped());
        assert!(filter(&spec).allows_cluster_scoped_item());
        spec.include_cluster_resources = Some(true);
        assert!(filter(&spec).wants_cluster_scoped());
        spec.include_cluster_resources = Some(false);
        spec.included_namespaces.clear();
        assert!(!filter(&spec).wants_cluster_scoped());
        assert!(!filter(&spec).allows_cluster_scoped_item());
        spec.include_cluster_resources = None;
        spec.excluded_namespaces = strings(&["kube-system"]);
        assert!(!filter(&spec).wants_cluster_scoped());
    }

    fn selector(labels: &[(&str, &str)], exprs: &[(&str, &str, &[&str])]) -> LabelSelector {
        LabelSelector {
            match_labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions: (!exprs.is_empty()).then(|| {
                exprs
                    .iter()
                    .map(|(k, op, vs)| LabelSelectorRequirement {
                        key: k.to_string(),
                        operator: op.to_string(),
                        values: (!vs.is_empty()).then(|| strings(vs)),
                    })
                    .collect()
            }),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_render_as_the_api_server_takes_them() {
        let s = Selector::from_label_selector(&selector(
            &[("app", "web")],
            &[
                ("tier", "In", &["b", "a"]),
                ("env", "NotIn", &["prod"]),
                ("keep", "Exists", &[]),
                ("skip", "DoesNotExist", &[]),
            ],
        ))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env notin (prod),keep,!skip,tier in (a,b)"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("keep", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("keep", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("keep", ""),
            ("skip", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("keep", ""),
            ("env", "prod")
        ])));
    }

    #[test]
    fn malformed_selectors_are_validation_errors() {
        for (op, values) in [
            ("In", &[][..]),
            ("Exists", &["x"][..]),
            ("Near", &["x"][..]),
        ] {
            let spec = BackupSpec {
                label_selector: Some(selector(&[], &[("k", op, values)])),
                ..Default::default()
            };
            let errors = validate(&spec, &index());
            assert_eq!(errors.len(), 1, "{op}: {errors:?}");
            assert!(
                errors[0].starts_with("Invalid label selector: "),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn or_selectors_select_when_any_branch_does() {
        let spec = BackupSpec {
            or_label_selectors: vec![
                selector(&[("app", "a")], &[]),
                selector(&[("app", "b")], &[]),
            ],
            ..Default::default()
        };
        let filter = BackupFilter::new(&spec, &index()).unwrap();
        assert_eq!(filter.selectors.len(), 2);
        assert!(filter.selects(&labels(&[("app", "a")])));
        assert!(filter.selects(&labels(&[("app", "b")])));
        assert!(!filter.selects(&labels(&[("app", "c")])));
        assert!(!filter.selects(&labels(&[])));
    }

    #[test]
    fn label_selector_and_or_selectors_together_are_refused() {
        let spec = BackupSpec {
            label_selector: Some(selector(&[("a", "b")], &[])),
            or_label_selectors: vec![selector(&[("c", "d")], &[])],
            ..Default::default()
        };
        assert_eq!(
            validate(&spec, &index()),
            strings(&[
                "encountered labelSelector as well as orLabelSelectors in backup spec, only one can be specified"
            ])
        );
    }

    #[test]
    fn an_empty_selector_selects_everything() {
        let spec = BackupSpec {
            or_label_selectors: vec![selector(&[("a", "b")], &[]), LabelSelector::default()],
            ..Default::default()
        };
        let filter = BackupFilter::new(&spec, &index()).unwrap();
        assert!(filter.selectors.is_empty());
        assert!(filter.selects(&labels(&[])));
    }
}
