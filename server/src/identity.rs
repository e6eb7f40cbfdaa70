//! Which node an agent may serve, proven with Kubernetes' own mechanism.
//!
//! Every agent holds the install's one client certificate (Secret `lifeboat-agent-tls`): it
//! proves that a process belongs to the install, not where it runs. So each session's Hello
//! also carries the agent pod's projected ServiceAccount token (audience
//! [`lifeboat_agent::token::AUDIENCE`]), which the API server binds to that pod. On Hello the
//! server:
//!
//! 1. has the API server review the token (`TokenReview`, authentication.k8s.io/v1, for our
//!    audience only): it must be authenticated, for our audience, and belong to the agents'
//!    account `system:serviceaccount:<install namespace>:lifeboat-agent`;
//! 2. reads the pod the token is bound to from the review's extras
//!    (`authentication.kubernetes.io/pod-name`, `…/pod-uid`);
//! 3. gets that pod in the install namespace and requires the same UID, no deletion under way,
//!    and `spec.nodeName` equal to the node the Hello names.
//!
//! Anything else refuses the session with a status naming the cause ([`Refusal`]). A token is
//! worth only its own pod's node: the certificate alone, a token of another node's agent, a
//! token of a deleted pod, or a token for another audience gets no work. The server needs
//! `create` on tokenreviews and `get` on pods (its ClusterRoleBinding to cluster-admin covers
//! both).

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use lifeboat_agent::token::AUDIENCE;
use tonic::Status;

use crate::install::AGENT_ACCOUNT;

/// The review extra naming the pod a token is bound to.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The review extra carrying that pod's UID.
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// The agent pod a session proved it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPod {
    pub name: String,
    pub uid: String,
}

/// Why a session was refused, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error(
        "the agent's token is not valid (the agent sent none; run an agent of this version, which sends its pod's projected token)"
    )]
    NoToken,
    #[error("the agent's token is not valid ({reason})")]
    Invalid { reason: String },
    #[error(
        "the agent's token belongs to {user}, not to the agents' account {expected}; only the install's agent pods may hold a session"
    )]
    WrongAccount { user: String, expected: String },
    #[error(
        "the agent's token is not bound to a pod; the agent must use the projected token its DaemonSet mounts"
    )]
    NotBound,
    #[error("the agent's pod {namespace}/{pod} does not exist")]
    PodGone { namespace: String, pod: String },
    #[error(
        "the agent's pod {namespace}/{pod} is not the pod its token was issued to (the pod's uid is {uid}, the token's {token_uid})"
    )]
    PodReplaced {
        namespace: String,
        pod: String,
        uid: String,
        token_uid: String,
    },
    #[error("the agent's pod {namespace}/{pod} is being deleted")]
    PodDeleting { namespace: String, pod: String },
    #[error("the agent's pod {namespace}/{pod} runs on node {actual}, not {claimed}")]
    WrongNode {
        namespace: String,
        pod: String,
        actual: String,
        claimed: String,
    },
    #[error("the agent's pod {namespace}/{pod} is not scheduled on a node, so not on {claimed}")]
    Unscheduled {
        namespace: String,
        pod: String,
        claimed: String,
    },
    #[error("cannot check the agent's token with the API server; the agent will retry")]
    Api(#[source] kube::Error),
}

impl Refusal {
    /// The gRPC status the session ends with: Unauthenticated for a token that proves nothing,
    /// PermissionDenied for a valid one that does not entitle its holder to the node,
    /// Unavailable when the API server could not be asked.
    pub fn status(&self) -> Status {
        let message = lifeboat_repo::error_chain(self);
        match self {
            Refusal::NoToken | Refusal::Invalid { .. } => Status::unauthenticated(message),
            Refusal::Api(_) => Status::unavailable(message),
            _ => Status::permission_denied(message),
        }
    }
}

/// Checks agents' tokens against the API server, for the agents of one install namespace.
#[derive(Clone)]
pub struct Verifier {
    client: kube::Client,
    namespace: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for the agents of the install in `namespace`.
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// The agent pod `token` proves, provided that pod runs on `node`.
    pub async fn verify(&self, token: &str, node: &str) -> Result<AgentPod, Refusal> {
        if token.trim().is_empty() {
            return Err(Refusal::NoToken);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Refusal::Api)?;
        let bound = judge_review(reviewed.status.as_ref(), &self.namespace)?;
        let pod = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&bound.name)
            .await
            .map_err(Refusal::Api)?;
        judge_pod(pod.as_ref(), &bound, &self.namespace, node)
    }
}

/// The pod a review's token is bound to, when the review says the token is an agent's.
fn judge_review(status: Option<&TokenReviewStatus>, namespace: &str) -> Result<AgentPod, Refusal> {
    let Some(status) = status else {
        return Err(Refusal::Invalid {
            reason: "the API server's review has no status".into(),
        });
    };
    if status.authenticated != Some(true) {
        let reason = match status.error.as_deref() {
            Some(e) if !e.is_empty() => format!("the API server says: {e}"),
            _ => "the API server did not authenticate it".into(),
        };
        return Err(Refusal::Invalid { reason });
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == AUDIENCE))
    {
        return Err(Refusal::Invalid {
            reason: format!("it is not for the audience {AUDIENCE}"),
        });
    }
    let user = status.user.as_ref();
    let expected = format!("system:serviceaccount:{namespace}:{AGENT_ACCOUNT}");
    let username = user.and_then(|u| u.username.clone()).unwrap_or_default();
    if username != expected {
        return Err(Refusal::WrongAccount {
            user: if username.is_empty() {
                "no user".into()
            } else {
                username
            },
            expected,
        });
    }
    let empty = BTreeMap::new();
    let extra = user.and_then(|u| u.extra.as_ref()).unwrap_or(&empty);
    let single = |key: &str| match extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Some(value.clone()),
        _ => None,
    };
    match (single(POD_NAME_EXTRA), single(POD_UID_EXTRA)) {
        (Some(name), Some(uid)) => Ok(AgentPod { name, uid }),
        _ => Err(Refusal::NotBound),
    }
}

/// The agent pod, when `pod` (as read now) is the one the token is bound to and runs on `node`.
fn judge_pod(
    pod: Option<&Pod>,
    bound: &AgentPod,
    namespace: &str,
    node: &str,
) -> Result<AgentPod, Refusal> {
    let name = || bound.name.clone();
    let Some(pod) = pod else {
        return Err(Refusal::PodGone {
            namespace: namespace.into(),
            pod: name(),
        });
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if uid != bound.uid {
        return Err(Refusal::PodReplaced {
            namespace: namespace.into(),
            pod: name(),
            uid,
            token_uid: bound.uid.clone(),
        });
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(Refusal::PodDeleting {
            namespace: namespace.into(),
            pod: name(),
        });
    }
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(actual) if actual == node => Ok(bound.clone()),
        Some(actual) if !actual.is_empty() => Err(Refusal::WrongNode {
            namespace: namespace.into(),
            pod: name(),
            actual: actual.into(),
            claimed: node.into(),
        }),
        _ => Err(Refusal::Unscheduled {
            namespace: namespace.into(),
            pod: name(),
            claimed: node.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn agent_review() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![AUDIENCE.into()]),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:velero:lifeboat-agent".into()),
                extra: Some(BTreeMap::from([
                    (POD_NAME_EXTRA.into(), vec!["restic-abc".into()]),
                    (POD_UID_EXTRA.into(), vec!["uid-1".into()]),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(uid: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("restic-abc".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn bound() -> AgentPod {
        AgentPod {
            name: "restic-abc".into(),
            uid: "uid-1".into(),
        }
    }

    #[test]
    fn an_agent_pod_s_review_names_its_pod() {
        assert_eq!(
            judge_review(Some(&agent_review()), "velero").expect("an agent's token"),
            bound()
        );
    }

    #[test]
    fn reviews_that_do_not_prove_an_agent_pod_are_refused_with_their_cause() {
        let refused = |status: TokenReviewStatus, namespace: &str| {
            let refusal = judge_review(Some(&status), namespace).expect_err("refused");
            (refusal.status().code(), refusal.to_string())
        };
        let mut unknown = agent_review();
        unknown.authenticated = Some(false);
        unknown.error = Some("the token is unknown".into());
        let (code, text) = refused(unknown, "velero");
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert_eq!(
            text,
            "the agent's token is not valid (the API server says: the token is unknown)"
        );

        let mut other_audience = agent_review();
        other_audience.audiences = Some(vec!["https://kubernetes.default.svc".into()]);
        let (code, text) = refused(other_audience, "velero");
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert!(text.contains("not for the audience lifeboat"), "{text}");

        let (code, text) = refused(agent_review(), "backup");
        assert_eq!(code, tonic::Code::PermissionDenied);
        assert!(
            text.contains("belongs to system:serviceaccount:velero:lifeboat-agent, not to the agents' account system:serviceaccount:backup:lifeboat-agent"),
            "{text}"
        );

        let mut unbound = agent_review();
        if let Some(user) = &mut unbound.user {
            user.extra = None;
        }
        let (code, _) = refused(unbound, "velero");
        assert_eq!(code, tonic::Code::PermissionDenied);

        assert_eq!(
            Refusal::NoToken.status().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn the_pod_must_be_the_token_s_live_and_on_the_claimed_node() {
        assert_eq!(
            judge_pod(
                Some(&pod("uid-1", Some("node-1"))),
                &bound(),
                "velero",
                "node-1"
            )
            .expect("its own node"),
            bound()
        );
        let refusal = |pod: Option<Pod>| {
            judge_pod(pod.as_ref(), &bound(), "velero", "node-1")
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            refusal(Some(pod("uid-1", Some("node-2")))),
            "the agent's pod velero/restic-abc runs on node node-2, not node-1"
        );
        assert_eq!(
            refusal(None),
            "the agent's pod velero/restic-abc does not exist"
        );
        assert!(refusal(Some(pod("uid-2", Some("node-1")))).contains("not the pod its token"));
        assert!(refusal(Some(pod("uid-1", None))).contains("not scheduled"));
        let mut deleting = pod("uid-1", Some("node-1"));
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            refusal(Some(deleting)),
            "the agent's pod velero/restic-abc is being deleted"
        );
    }
}
