//! Restores of cluster resources in Velero's way, the counterpart of [`crate::backup`]: the
//! backup tarball unpacked within limits and catalogued ([`archive`]) in a private scratch
//! directory ([`scratch`]), the order resources are created in ([`order`]), what each object
//! becomes before it is created ([`transform`]), the walk that creates them and the rules for
//! objects that already exist ([`walk`]), and one restore from validation to its final status
//! ([`run`]), which the Restore controller drives.

pub mod archive;
pub(crate) mod run;
pub mod scratch;
pub mod transform;
mod walk;

/// Velero's restore priorities (`defaultRestorePriorities`, v1.5.4), as the tarball names
/// their directories (Velero resolves its short names through discovery; these are the
/// results): these first, in this order, so that what others depend on exists before them
/// (CRDs before their instances, namespaces before their contents, volumes and claims before
/// pods, pods before their controllers).
pub const PRIORITIES: &[&str] = &[
    "customresourcedefinitions.apiextensions.k8s.io",
    "namespaces",
    "storageclasses.storage.k8s.io",
    "volumesnapshotclasses.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
    "volumesnapshots.snapshot.storage.k8s.io",
    "persistentvolumes",
    "persistentvolumeclaims",
    "secrets",
    "configmaps",
    "serviceaccounts",
    "limitranges",
    "pods",
    "replicasets.apps",
    "clusters.cluster.x-k8s.io",
    "clusterresourcesets.addons.cluster.x-k8s.io",
];

/// The order in which the resources of a backup are restored: the priorities that are in it,
/// then the others alphabetically, each once. Names are the tarball's directory names
/// (`resource.group`, or `resource` for the core group).
pub fn order<'a>(in_backup: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut rest: Vec<&str> = in_backup.into_iter().collect();
    rest.sort_unstable();
    rest.dedup();
    let mut out: Vec<String> = PRIORITIES
        .iter()
        .filter(|p| rest.contains(p))
        .map(|p| (*p).to_owned())
        .collect();
    out.extend(
        rest.into_iter()
            .filter(|gr| !PRIORITIES.contains(gr))
            .map(str::to_owned),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_first_then_the_rest_alphabetically() {
        let in_backup = [
            "services",
            "deployments.apps",
            "pods",
            "customresourcedefinitions.apiextensions.k8s.io",
            "widgets.example.com",
            "namespaces",
            "persistentvolumeclaims",
            "persistentvolumes",
            "replicasets.apps",
            "configmaps",
            "secrets",
            "pods.metrics.k8s.io",
            "storageclasses.storage.k8s.io",
        ];
        assert_eq!(
            order(in_backup),
            [
                "customresourcedefinitions.apiextensions.k8s.io",
                "namespaces",
                "storageclasses.storage.k8s.io",
                "persistentvolumes",
                "persistentvolumeclaims",
                "secrets",
                "configmaps",
                "pods",
                "replicasets.apps",
                "deployments.apps",
                "pods.metrics.k8s.io",
                "services",
                "widgets.example.com",
            ]
        );
    }
}
