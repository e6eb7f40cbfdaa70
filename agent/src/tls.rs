//! The certificates of the server–agent connection, read from a directory holding the keys of a
//! `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`), as install mounts
//! `lifeboat-server-tls` and `lifeboat-agent-tls` at `/etc/lifeboat/tls`.
//!
//! Both sides present a certificate and trust only the install's CA: the server refuses an
//! agent whose certificate the CA did not sign, and an agent refuses a server likewise.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Where the certificates are when nothing else is said.
pub const DEFAULT_TLS_DIR: &str = "/etc/lifeboat/tls";

/// A certificate file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the TLS file {path} (the directory must hold tls.crt, tls.key and ca.crt)")]
pub struct TlsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One side's certificate and key, and the CA it trusts.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { .. }")
    }
}

impl TlsMaterial {
    /// Reads `tls.crt`, `tls.key` and `ca.crt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) if bytes.is_empty() => Err(TlsError {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file is empty",
                    ),
                }),
                Ok(bytes) => Ok(bytes),
                Err(source) => Err(TlsError { path, source }),
            }
        };
        Ok(Self {
            ca: read("ca.crt")?,
            cert: read("tls.crt")?,
            key: read("tls.key")?,
        })
    }

    /// Material from PEM text (tests, and callers holding a Secret's data).
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Self {
        Self {
            ca: ca.to_vec(),
            cert: cert.to_vec(),
            key: key.to_vec(),
        }
    }

    /// The CA's certificates (PEM).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca
    }

    /// This side's certificate chain (PEM).
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert
    }

    /// This side's private key (PEM).
    pub fn key_pem(&self) -> &[u8] {
        &self.key
    }

    /// The agent side: present our certificate, trust only the CA, and check the server's
    /// certificate for `server_name` (the Service's DNS name, whatever address is dialled).
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name(server_name)
    }
}
