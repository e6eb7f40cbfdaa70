//! ServiceAccount tokens, as kube-apiserver issues and checks bound tokens: TokenRequest
//! (`POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`, what the kubelet calls for a
//! projected token volume) and TokenReview (`POST /apis/authentication.k8s.io/v1/tokenreviews`,
//! what a server calls to learn who holds a token).
//!
//! Issuing requires the ServiceAccount, and for a pod-bound token the pod, running as that
//! account (same UID when the reference gives one). A token is an opaque random string, not a
//! JWT: nothing outside the stand-in reads it. A review answers `authenticated: true` with the
//! account as user (`system:serviceaccount:NS:NAME`, its UID, the service-account groups) and
//! the bound pod's name and UID in `extra` (plus the node name when the pod was scheduled, as
//! Kubernetes 1.30+ adds), and `status.audiences` the audiences asked for that the token
//! carries. It answers `authenticated: false` with `status.error` for a token it never issued,
//! an expired one, one for none of the audiences asked for, one whose account was deleted or
//! recreated, and one whose pod no longer exists with that UID: a real server invalidates a
//! bound token with its object. (A real server keeps a token valid for 60 s into its pod's
//! graceful deletion; pods deleted here go at once, so the stand-in needs no such window.)
//!
//! Time: tokens expire by the wall clock; [`Tokens::age`] moves every issued token's expiry
//! back, so a test sees an expired token without waiting an hour.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::discovery::Collection;
use super::failure::{Failure, Result};
use super::store::Store;

/// The audience of tokens that name none, and of reviews that ask for none: the API server's
/// own (`--api-audiences`, by default the issuer).
pub(crate) const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// A TokenRequest's default lifetime (the API's default for `expirationSeconds`).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime the API accepts.
const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The review extras that name the pod a token is bound to.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
const CREDENTIAL_ID_EXTRA: &str = "authentication.kubernetes.io/credential-id";

/// One issued token.
#[derive(Debug, Clone)]
struct Issued {
    /// The token's own id (the JWT `jti` of a real token).
    id: String,
    namespace: String,
    account: String,
    account_uid: String,
    audiences: Vec<String>,
    expires: Timestamp,
    /// The pod it is bound to: name, UID, and its node when scheduled.
    pod: Option<(String, String, Option<String>)>,
}

/// The tokens issued so far.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    issued: HashMap<String, Issued>,
}

impl Tokens {
    /// Moves every issued token's expiry `by` into the past.
    pub(crate) fn age(&mut self, by: Duration) {
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        for token in self.issued.values_mut() {
            token.expires = token.expires.checked_sub(by).unwrap_or(Timestamp::MIN);
        }
    }

    /// TokenRequest for ServiceAccount `namespace/account`: the TokenRequest object as created,
    /// its `status.token` the new token.
    pub(crate) fn request(
        &mut self,
        store: &Store,
        namespace: &str,
        account: &str,
        body: &Value,
    ) -> Result<Value> {
        let sa = store
            .get_raw(&core("serviceaccounts"), namespace, account)
            .ok_or_else(|| Failure::not_found("serviceaccounts", account))?;
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let audiences = match spec.get("audiences").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|a| {
                    a.as_str().map(str::to_string).ok_or_else(|| {
                        Failure::bad_request("spec.audiences must be a list of strings")
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            _ => vec![API_AUDIENCE.to_string()],
        };
        let seconds = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| Failure::bad_request("spec.expirationSeconds must be an integer"))?,
        };
        if seconds < MIN_EXPIRATION_SECONDS {
            return Err(Failure::invalid(format!(
                "TokenRequest.authentication.k8s.io \"{account}\" is invalid: spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
            )));
        }
        let pod = match spec.get("boundObjectRef").filter(|r| !r.is_null()) {
            None => None,
            Some(reference) => Some(bound_pod(store, namespace, account, reference)?),
        };
        let now = Timestamp::now();
        let expires = now
            .checked_add(SignedDuration::from_secs(seconds))
            .map_err(|e| Failure::bad_request(format!("spec.expirationSeconds: {e}")))?;
        let token = random_hex(32);
        self.issued.insert(
            token.clone(),
            Issued {
                id: random_hex(16),
                namespace: namespace.to_string(),
                account: account.to_string(),
                account_uid: text(&sa, "/metadata/uid"),
                audiences: audiences.clone(),
                expires,
                pod: pod.clone(),
            },
        );
        let mut spec_out = json!({"audiences": audiences, "expirationSeconds": seconds});
        if let Some((name, uid, _)) = &pod {
            spec_out["boundObjectRef"] =
                json!({"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid});
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": account,
                "namespace": namespace,
                "creationTimestamp": seconds_text(now),
            },
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": seconds_text(expires)},
        }))
    }

    /// TokenReview: the review as sent, with its status.
    pub(crate) fn review(&self, store: &Store, body: &Value) -> Result<Value> {
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let token = spec
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let asked: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => vec![API_AUDIENCE.to_string()],
        };
        let status = match self.check(store, token, &asked) {
            Ok(status) => status,
            Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
        };
        Ok(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }))
    }

    /// The status of an authenticated review, or why the token does not authenticate.
    fn check(&self, store: &Store, token: &str, asked: &[String]) -> Result<Value, String> {
        let issued = self
            .issued
            .get(token)
            .ok_or_else(|| "invalid bearer token: the token is unknown".to_string())?;
        if issued.expires <= Timestamp::now() {
            return Err(format!(
                "invalid bearer token: the token expired at {}",
                seconds_text(issued.expires)
            ));
        }
        let audiences: Vec<&String> = asked
            .iter()
            .filter(|a| issued.audiences.contains(a))
            .collect();
        if audiences.is_empty() {
            return Err(format!(
                "token audiences {:?} is invalid for the target audiences {asked:?}",
                issued.audiences
            ));
        }
        let sa = store.get_raw(&core("serviceaccounts"), &issued.namespace, &issued.account);
        if sa.is_none_or(|sa| text(&sa, "/metadata/uid") != issued.account_uid) {
            return Err(format!(
                "service account token has been invalidated: the ServiceAccount {}/{} it was issued to no longer exists",
                issued.namespace, issued.account
            ));
        }
        let mut extra = json!({CREDENTIAL_ID_EXTRA: [format!("JTI={}", issued.id)]});
        if let Some((name, uid, node)) = &issued.pod {
            let pod = store.get_raw(&core("pods"), &issued.namespace, name);
            if pod.is_none_or(|pod| text(&pod, "/metadata/uid") != *uid) {
                return Err(format!(
                    "service account token has been invalidated: the pod {}/{name} (uid {uid}) it is bound to no longer exists",
                    issued.namespace
                ));
            }
            extra[POD_NAME_EXTRA] = json!([name]);
            extra[POD_UID_EXTRA] = json!([uid]);
            if let Some(node) = node {
                extra[NODE_NAME_EXTRA] = json!([node]);
            }
        }
        Ok(json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{}:{}", issued.namespace, issued.account),
                "uid": issued.account_uid,
                "groups": [
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{}", issued.namespace),
                    "system:authenticated",
                ],
                "extra": extra,
            },
            "audiences": audiences,
        }))
    }
}

/// The pod a TokenRequest's `boundObjectRef` names: (name, UID, node), after the checks a real
/// server makes.
fn bound_pod(
    store: &Store,
    namespace: &str,
    account: &str,
    reference: &Value,
) -> Result<(String, String, Option<String>)> {
    let kind = text(reference, "/kind");
    if kind != "Pod" {
        return Err(Failure::bad_request(format!(
            "boundObjectRef.kind {kind:?}: the stand-in binds tokens to pods only"
        )));
    }
    let name = text(reference, "/name");
    let pod = store
        .get_raw(&core("pods"), namespace, &name)
        .ok_or_else(|| Failure::not_found("pods", &name))?;
    let uid = text(&pod, "/metadata/uid");
    let asked_uid = text(reference, "/uid");
    if !asked_uid.is_empty() && asked_uid != uid {
        return Err(Failure::conflict_with(format!(
            "the UID in the bound object reference ({asked_uid}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        )));
    }
    let runs_as = text(&pod, "/spec/serviceAccountName");
    if runs_as != account {
        return Err(Failure::bad_request(format!(
            "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
        )));
    }
    let node = Some(text(&pod, "/spec/nodeName")).filter(|n| !n.is_empty());
    Ok((name, uid, node))
}

fn core(plural: &str) -> Collection {
    Collection {
        group: String::new(),
        plural: plural.to_string(),
    }
}

fn text(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn seconds_text(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
