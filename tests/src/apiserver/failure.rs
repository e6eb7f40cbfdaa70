//! The API server's error answers: a `Status` object with `status: Failure`, a machine-readable
//! `reason` and the HTTP code, exactly as kube-apiserver sends them, so kube's client turns them
//! into `kube::Error::Api` with the same code and reason a real cluster would give.

use serde_json::{Value, json};

/// One failed request: the HTTP code, the Status reason and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status code (also the Status `code`).
    pub code: u16,
    /// The Status `reason`, e.g. `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// The Status `message`.
    pub message: String,
}

impl Failure {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            reason,
            message: message.into(),
        }
    }

    /// 400: the request itself is malformed (bad JSON, bad selector).
    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(400, "BadRequest", message)
    }

    /// 403: refused by policy (creating in a terminating namespace).
    pub fn forbidden(message: impl Into<String>) -> Failure {
        Failure::new(403, "Forbidden", message)
    }

    /// 404 for a named object of a resource (`configmaps "x" not found`).
    pub fn not_found(plural: &str, name: &str) -> Failure {
        Failure::new(404, "NotFound", format!("{plural} \"{name}\" not found"))
    }

    /// 404 for a path the server does not serve.
    pub fn no_such_path() -> Failure {
        Failure::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405: the resource exists but not this verb on it.
    pub fn method_not_allowed(method: &str) -> Failure {
        Failure::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    /// 409 on create when the name is taken.
    pub fn already_exists(plural: &str, name: &str) -> Failure {
        Failure::new(
            409,
            "AlreadyExists",
            format!("{plural} \"{name}\" already exists"),
        )
    }

    /// 409 on a write whose `resourceVersion` (or delete precondition) is stale.
    pub fn conflict(plural: &str, name: &str) -> Failure {
        Failure::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
    }

    /// 409 with a message of its own (a TokenRequest bound to a pod that was recreated).
    pub fn conflict_with(message: impl Into<String>) -> Failure {
        Failure::new(409, "Conflict", message)
    }

    /// 410: a watch asked for history the server no longer keeps.
    pub fn expired(message: impl Into<String>) -> Failure {
        Failure::new(410, "Expired", message)
    }

    /// 415: a PATCH with a content type the server does not know.
    pub fn unsupported_media_type(content_type: &str) -> Failure {
        Failure::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// 422: the object (or a json-patch applied to it) is invalid.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(422, "Invalid", message)
    }

    /// 500: what kube-apiserver answers for a create that sets `resourceVersion`.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(500, "InternalError", message)
    }

    /// The `Status` object sent as the response body (and as the object of a watch ERROR event).
    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Failure {}

/// Shorthand for the results of the server's operations.
pub type Result<T, E = Failure> = std::result::Result<T, E>;
