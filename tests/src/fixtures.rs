//! Realistic cluster contents for backup and restore tests: three application namespaces with
//! what real workloads leave in a cluster (deployments, a stateful set, services, config maps,
//! secrets, pods mounting claims bound to volumes, instances of a custom resource), the nodes
//! the pods run on, a storage class, and one volume nobody claims.
//!
//! ```text
//! shop   (team=shop)  deployment web, pod web-5d9c7-x2x9k, service web, config map web-config
//!                     (all app=web); stateful set db, pod db-0 mounting claim data-db-0 (bound
//!                     to pv-shop-db), service db, secret db-credentials (all app=db);
//!                     widget storefront (app=web)
//! blog   (team=blog)  deployment blog, pod blog-6f8d4-k7q2m mounting claim uploads (bound to
//!                     pv-blog-uploads), service blog, config map blog-theme, widget comments
//!                     (all app=blog)
//! tools               config map scripts, secret api-token
//! cluster             nodes node-1 and node-2, storage class standard, volumes pv-shop-db,
//!                     pv-blog-uploads and pv-free (Available), the CRD widgets.example.com
//! ```
//!
//! Objects are stored as a real cluster would hold them, statuses included (pods Running on a
//! node, claims Bound), through the stand-in's seeding call, so the first watch event a
//! controller sees is the final state.

use serde_json::{Value, json};

use crate::apiserver::ApiServer;

/// One seeded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// `v1`, `apps/v1`, `example.com/v1`.
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The resource (`deployments`).
    pub plural: &'static str,
    pub namespace: Option<&'static str>,
    pub name: &'static str,
}

impl Seed {
    /// `<plural>.<group>`, or `<plural>` for the core group: the tarball's directory.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The unversioned tarball path of this object.
    pub fn path(&self) -> String {
        object_path(&self.group_resource(), self.namespace, self.name)
    }

    /// `<namespace>/<name>` or `<name>`, as the resource list writes it.
    pub fn key(&self) -> String {
        match self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.to_owned(),
        }
    }
}

/// The unversioned tarball path of an object of resource `gr` (`deployments.apps`).
pub fn object_path(gr: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("resources/{gr}/namespaces/{ns}/{name}.json"),
        None => format!("resources/{gr}/cluster/{name}.json"),
    }
}

/// What [`seed_apps`] stored.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub objects: Vec<Seed>,
}

impl Seeded {
    /// The seeded objects `keep` selects.
    pub fn filter(&self, keep: impl Fn(&Seed) -> bool) -> Vec<&Seed> {
        self.objects.iter().filter(|s| keep(s)).collect()
    }

    /// The seeded objects of namespace `ns`, its Namespace object included.
    pub fn namespace(&self, ns: &str) -> Vec<&Seed> {
        self.filter(|s| s.namespace == Some(ns) || (s.plural == "namespaces" && s.name == ns))
    }

    /// The seeded object `gr` (`pods`, `deployments.apps`) `ns/name` or `name`.
    pub fn get(&self, gr: &str, key: &str) -> &Seed {
        self.objects
            .iter()
            .find(|s| s.group_resource() == gr && s.key() == key)
            .unwrap_or_else(|| panic!("nothing seeded as {gr} {key}"))
    }
}

/// The custom resource definition the seeded widgets are instances of.
pub const WIDGET_CRD: &str = "widgets.example.com";

/// Seeds the objects described in the module docs and returns them.
pub fn seed_apps(api: &ApiServer) -> Seeded {
    let mut objects = Vec::new();
    let mut put = |seed: Seed, labels: Value, body: Value| {
        let mut object = body;
        object["apiVersion"] = json!(seed.api_version);
        object["kind"] = json!(seed.kind);
        object["metadata"]["name"] = json!(seed.name);
        if let Some(ns) = seed.namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        if labels.as_object().is_some_and(|l| !l.is_empty()) {
            object["metadata"]["labels"] = labels;
        }
        api.put_object(object)
            .unwrap_or_else(|e| panic!("the stand-in refused {seed:?}: {e}"));
        objects.push(seed);
    };
    let core = |kind: &'static str, plural: &'static str, ns, name| Seed {
        group: "",
        api_version: "v1",
        kind,
        plural,
        namespace: ns,
        name,
    };
    let apps = |kind: &'static str, plural: &'static str, ns, name| Seed {
        group: "apps",
        api_version: "apps/v1",
        kind,
        plural,
        namespace: ns,
        name,
    };
    let widget = |ns, name| Seed {
        group: "example.com",
        api_version: "example.com/v1",
        kind: "Widget",
        plural: "widgets",
        namespace: ns,
        name,
    };

    // Cluster-scoped first: the CRD (so widgets can be stored), nodes, storage, namespaces.
    put(
        Seed {
            group: "apiextensions.k8s.io",
            api_version: "apiextensions.k8s.io/v1",
            kind: "CustomResourceDefinition",
            plural: "customresourcedefinitions",
            namespace: None,
            name: WIDGET_CRD,
        },
        json!({}),
        json!({
            "metadata": {},
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                          "listKind": "WidgetList", "shortNames": ["wd"]},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        }),
    );
    for (name, zone, cidr) in [
        ("node-1", "zone-a", "10.244.1.0/24"),
        ("node-2", "zone-b", "10.244.2.0/24"),
    ] {
        put(
            core("Node", "nodes", None, name),
            json!({"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}),
            json!({
                "metadata": {},
                "spec": {"podCIDR": cidr},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12"},
                },
            }),
        );
    }
    put(
        Seed {
            group: "storage.k8s.io",
            api_version: "storage.k8s.io/v1",
            kind: "StorageClass",
            plural: "storageclasses",
            namespace: None,
            name: "standard",
        },
        json!({}),
        json!({
            "metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }),
    );
    for (name, claim, size) in [
        ("pv-shop-db", Some(("shop", "data-db-0")), "10Gi"),
        ("pv-blog-uploads", Some(("blog", "uploads")), "5Gi"),
        ("pv-free", None, "1Gi"),
    ] {
        let mut spec = json!({
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard",
            "hostPath": {"path": format!("/var/local-path-provisioner/{name}"), "type": "DirectoryOrCreate"},
        });
        let phase = match claim {
            Some((ns, claim)) => {
                spec["claimRef"] = json!({
                    "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": ns, "name": claim,
                });
                "Bound"
            }
            None => "Available",
        };
        put(
            core("PersistentVolume", "persistentvolumes", None, name),
            json!({}),
            json!({"metadata": {}, "spec": spec, "status": {"phase": phase}}),
        );
    }
    for (name, labels) in [
        ("shop", json!({"team": "shop"})),
        ("blog", json!({"team": "blog"})),
        ("tools", json!({})),
    ] {
        put(
            core("Namespace", "namespaces", None, name),
            labels,
            json!({"metadata": {}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
    }

    // shop: a web front end and a database.
    let web = json!({"app": "web"});
    let db = json!({"app": "db"});
    put(
        apps("Deployment", "deployments", Some("shop"), "web"),
        web.clone(),
        json!({
            "metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx", "image": "nginx:1.27",
                            "ports": [{"containerPort": 8080}],
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/nginx/conf.d"}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
                    },
                },
            },
            "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1},
        }),
    );
    put(
        core("Pod", "pods", Some("shop"), "web-5d9c7-x2x9k"),
        json!({"app": "web", "pod-template-hash": "5d9c7"}),
        json!({
            "metadata": {},
            "spec": {
                "nodeName": "node-1",
                "containers": [{
                    "name": "nginx", "image": "nginx:1.27",
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/nginx/conf.d"}],
                }],
                "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
            },
            "status": {"phase": "Running", "podIP": "10.244.1.12", "hostIP": "172.18.0.2"},
        }),
    );
    put(
        core("Service", "services", Some("shop"), "web"),
        web.clone(),
        json!({
            "metadata": {},
            "spec": {
                "type": "ClusterIP", "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"],
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
            "status": {"loadBalancer": {}},
        }),
    );
    put(
        core("ConfigMap", "configmaps", Some("shop"), "web-config"),
        web.clone(),
        json!({"metadata": {}, "data": {"default.conf": "server { listen 8080; root /srv; }\n"}}),
    );
    put(
        apps("StatefulSet", "statefulsets", Some("shop"), "db"),
        db.clone(),
        json!({
            "metadata": {},
            "spec": {
                "replicas": 1, "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{
                        "name": "postgres", "image": "postgres:16",
                        "envFrom": [{"secretRef": {"name": "db-credentials"}}],
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                    }]},
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
                }],
            },
            "status": {"replicas": 1, "readyReplicas": 1},
        }),
    );
    put(
        core("Pod", "pods", Some("shop"), "db-0"),
        json!({"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"}),
        json!({
            "metadata": {},
            "spec": {
                "nodeName": "node-2",
                "containers": [{
                    "name": "postgres", "image": "postgres:16",
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}],
            },
            "status": {"phase": "Running", "podIP": "10.244.2.7", "hostIP": "172.18.0.3"},
        }),
    );
    put(
        core(
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            Some("shop"),
            "data-db-0",
        ),
        db.clone(),
        json!({
            "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                "resources": {"requests": {"storage": "10Gi"}}, "volumeName": "pv-shop-db",
                "volumeMode": "Filesystem",
            },
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]},
        }),
    );
    put(
        core("Service", "services", Some("shop"), "db"),
        db.clone(),
        json!({
            "metadata": {},
            "spec": {"clusterIP": "None", "selector": {"app": "db"},
                     "ports": [{"name": "postgres", "port": 5432, "protocol": "TCP"}]},
        }),
    );
    put(
        core("Secret", "secrets", Some("shop"), "db-credentials"),
        db,
        json!({"metadata": {}, "type": "Opaque",
               "data": {"POSTGRES_USER": "c2hvcA==", "POSTGRES_PASSWORD": "czNjcjN0"}}),
    );
    put(
        widget(Some("shop"), "storefront"),
        web,
        json!({"metadata": {}, "spec": {"color": "teal", "size": 3}}),
    );

    // blog: one deployment with an uploads volume.
    let blog = json!({"app": "blog"});
    put(
        apps("Deployment", "deployments", Some("blog"), "blog"),
        blog.clone(),
        json!({
            "metadata": {},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "blog"}},
                "template": {
                    "metadata": {"labels": {"app": "blog"}},
                    "spec": {
                        "containers": [{"name": "ghost", "image": "ghost:5",
                            "volumeMounts": [{"name": "uploads", "mountPath": "/var/lib/ghost/content"}]}],
                        "volumes": [{"name": "uploads", "persistentVolumeClaim": {"claimName": "uploads"}}],
                    },
                },
            },
            "status": {"replicas": 1, "readyReplicas": 1},
        }),
    );
    put(
        core("Pod", "pods", Some("blog"), "blog-6f8d4-k7q2m"),
        json!({"app": "blog", "pod-template-hash": "6f8d4"}),
        json!({
            "metadata": {},
            "spec": {
                "nodeName": "node-1",
                "containers": [{"name": "ghost", "image": "ghost:5",
                    "volumeMounts": [{"name": "uploads", "mountPath": "/var/lib/ghost/content"}]}],
                "volumes": [{"name": "uploads", "persistentVolumeClaim": {"claimName": "uploads"}}],
            },
            "status": {"phase": "Running", "podIP": "10.244.1.20"},
        }),
    );
    put(
        core(
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            Some("blog"),
            "uploads",
        ),
        blog.clone(),
        json!({
            "metadata": {},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "5Gi"}}, "volumeName": "pv-blog-uploads"},
            "status": {"phase": "Bound"},
        }),
    );
    put(
        core("Service", "services", Some("blog"), "blog"),
        blog.clone(),
        json!({
            "metadata": {},
            "spec": {"clusterIP": "10.96.40.2", "selector": {"app": "blog"},
                     "ports": [{"port": 80, "targetPort": 2368, "protocol": "TCP"}]},
        }),
    );
    put(
        core("ConfigMap", "configmaps", Some("blog"), "blog-theme"),
        blog.clone(),
        json!({"metadata": {}, "data": {"theme": "casper"}}),
    );
    put(
        widget(Some("blog"), "comments"),
        blog,
        json!({"metadata": {}, "spec": {"color": "plum", "size": 1}}),
    );

    // tools: loose configuration.
    put(
        core("ConfigMap", "configmaps", Some("tools"), "scripts"),
        json!({}),
        json!({"metadata": {}, "data": {"cleanup.sh": "#!/bin/sh\nexit 0\n"}}),
    );
    put(
        core("Secret", "secrets", Some("tools"), "api-token"),
        json!({}),
        json!({"metadata": {}, "type": "Opaque", "data": {"token": "dG9rZW4="}}),
    );
    Seeded { objects }
}
