//! The agents' listener: mutual TLS terminated here, before tonic sees the connection.
//!
//! tonic could terminate TLS itself, but it drops failed handshakes silently. Doing it here
//! lets the server log every refused connection with its peer address and the reason (a
//! certificate from another CA, none at all, an expired one) — the first thing an operator
//! needs when an agent does not show up. Only the install's CA is trusted, and a client
//! certificate is required.
//!
//! Each handshake runs in its own task with a deadline, so a slow or silent peer cannot hold up
//! the others; handshaken connections reach tonic through a small bounded queue.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use lifeboat_agent::TlsMaterial;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How long a peer may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections handshaken but not yet taken by tonic. Sessions are long-lived and few (one per
/// node), so a short queue is plenty.
const QUEUE: usize = 16;

/// The acceptor for the server's certificate, requiring clients signed by the install's CA.
pub(crate) fn acceptor(tls: &TlsMaterial) -> Result<TlsAcceptor> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Tls {
        reason: format!("{what}: {e}"),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_pem()) {
        let cert = cert.map_err(|e| bad("ca.crt is not PEM", &e))?;
        roots
            .add(cert)
            .map_err(|e| bad("ca.crt is not a CA certificate", &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad("ca.crt cannot verify clients", &e))?;
    let chain = CertificateDer::pem_slice_iter(tls.cert_pem())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("tls.crt is not PEM", &e))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem())
        .map_err(|e| bad("tls.key is not a PEM key", &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("no TLS version", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad("tls.crt and tls.key do not match", &e))?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The mutually authenticated connections arriving on `listener`, until `shutdown`.
pub(crate) fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!("cannot accept an agent connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, "refused a connection to the agents' service: {e}");
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "refused a connection to the agents' service: no TLS handshake within 10s");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
