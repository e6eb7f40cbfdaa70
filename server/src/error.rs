//! The server's errors.

use std::net::SocketAddr;

/// A failure of the server process or one of its controllers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("the Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    /// A listening address is taken or not ours.
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The agents' gRPC service failed.
    #[error("the agents' service failed")]
    Transport(#[from] tonic::transport::Error),
    /// The server's certificate files cannot be used.
    #[error("the server's TLS settings cannot be used: {reason}")]
    Tls { reason: String },
    /// A backup's collection stopped.
    #[error("the backup failed")]
    Backup(#[from] crate::backup::Error),
    /// The HTTP endpoint failed.
    #[error("the health and metrics endpoint failed")]
    Http(#[source] std::io::Error),
    /// Something the reconcile needs is not ready yet; it is retried shortly.
    #[error("{0}")]
    NotReady(String),
    /// A Secret a resource names does not exist or lacks the key.
    #[error("the Secret {namespace}/{name} has no key `{key}`")]
    SecretKey {
        namespace: String,
        name: String,
        key: String,
    },
}

impl Error {
    /// Whether the failing request may succeed when repeated.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(status)) => {
                status.code >= 500 || status.code == 429 || status.code == 409
            }
            Error::Kube(_) => true,
            Error::Backup(e) => e.is_retryable(),
            Error::NotReady(_) => true,
            _ => false,
        }
    }
}

/// The server's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
