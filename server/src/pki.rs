//! The certificates that authenticate the server and the agents to each other.
//!
//! `lifeboat install` makes a private certificate authority (ECDSA P-256, valid ten years) and
//! issues from it one server certificate (for the Service `lifeboat` under every name a pod can
//! dial it by, plus `localhost` and `127.0.0.1` for tests and port-forwards; serverAuth) and one
//! agent client certificate (CN `lifeboat-agent`; clientAuth). Both sides trust only this CA:
//! the server refuses an agent without a certificate it issued, and an agent refuses a server
//! that cannot show one, so neither a pod on the cluster network nor a stolen service-account
//! token can pose as either.
//!
//! The material lands in three Secrets of type `kubernetes.io/tls` (keys `tls.crt`, `tls.key`,
//! `ca.crt`): `lifeboat-server-tls`, `lifeboat-agent-tls`, and `lifeboat-ca` holding the CA's own
//! certificate and key, so that a later install can issue from the same CA
//! ([`Authority::from_pem`]) and running agents keep working. The server and the agent read the
//! three files from a directory, [`TLS_DIR`] unless told otherwise.
//!
//! The CA and leaf certificates share one validity: ten years from install, back-dated a day
//! so that a node whose clock runs behind does not refuse a certificate issued a minute ago.

use jiff::ToSpan as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// Where the server and the agent find their certificate, key and CA by default.
pub const TLS_DIR: &str = "/etc/lifeboat/tls";
/// The certificate file (PEM) in a TLS directory and the key of a `kubernetes.io/tls` Secret.
pub const CERT_FILE: &str = "tls.crt";
/// The private key file (PEM, PKCS#8) in a TLS directory and Secret.
pub const KEY_FILE: &str = "tls.key";
/// The CA certificate file (PEM) in a TLS directory and Secret.
pub const CA_FILE: &str = "ca.crt";

/// The Service name the server certificate is issued for (and the agents dial).
pub const SERVER_NAME: &str = "lifeboat";
/// The common name of the agents' client certificate.
pub const AGENT_CN: &str = "lifeboat-agent";
/// The common name of the CA.
pub const CA_CN: &str = "lifeboat-ca";

/// How long the CA and its certificates are valid.
const VALIDITY_YEARS: i16 = 10;

/// What went wrong making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused to make a key or certificate (it does not for the inputs used here).
    #[error("cannot generate the {what}")]
    Generate {
        /// What was being made: "CA key", "server certificate", ….
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// An existing CA's certificate or key is not usable PEM.
    #[error("the existing CA's {what} is not usable")]
    ExistingCa {
        /// "certificate" or "key".
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// A certificate name is not a valid DNS name or IP address.
    #[error("`{name}` cannot be a certificate name")]
    Name {
        /// The offending name.
        name: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The result of this module's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: String,
    /// The private key (PEM, PKCS#8).
    pub key: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert", &self.cert)
            .field("key", &"[elided]")
            .finish()
    }
}

/// The certificate authority of one install: signs the server and agent certificates.
#[derive(Debug)]
pub struct Authority {
    own: Issued,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA with a fresh P-256 key.
    pub fn generate() -> Result<Self> {
        let key = new_key("CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(CA_CN);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let cert = params.self_signed(&key).map_err(|source| Error::Generate {
            what: "CA certificate",
            source,
        })?;
        let own = Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        Ok(Self {
            own,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA an earlier install made, from the `tls.crt` and `tls.key` of its Secret.
    ///
    /// The key is not checked against the certificate: a mismatched pair issues certificates
    /// that fail verification at the first connection.
    pub fn from_pem(cert: &str, key: &str) -> Result<Self> {
        let key_pair = KeyPair::from_pem(key).map_err(|source| Error::ExistingCa {
            what: "key",
            source,
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(cert, key_pair).map_err(|source| Error::ExistingCa {
                what: "certificate",
                source,
            })?;
        Ok(Self {
            own: Issued {
                cert: cert.to_string(),
                key: key.to_string(),
            },
            issuer,
        })
    }

    /// The CA's own certificate and key.
    pub fn own(&self) -> &Issued {
        &self.own
    }

    /// The server certificate for the Service `lifeboat` in `namespace`: every name a pod dials
    /// it by (`lifeboat`, `lifeboat.<ns>`, `lifeboat.<ns>.svc`, `lifeboat.<ns>.svc.cluster.local`)
    /// plus `localhost` and `127.0.0.1`; extended key usage serverAuth.
    pub fn issue_server(&self, namespace: &str) -> Result<Issued> {
        let names = server_names(namespace);
        let mut params = CertificateParams::new(names.clone()).map_err(|source| Error::Name {
            name: names.join(","),
            source,
        })?;
        params.distinguished_name = name(SERVER_NAME);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, "server certificate")
    }

    /// A client certificate with common name `cn`; extended key usage clientAuth.
    pub fn issue_client(&self, cn: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, "client certificate")
    }

    fn issue(&self, mut params: CertificateParams, what: &'static str) -> Result<Issued> {
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let key = new_key(what)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate { what, source })?;
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Everything an install puts into its TLS Secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The CA's own certificate and key (Secret `lifeboat-ca`).
    pub ca: Issued,
    /// The server's certificate (Secret `lifeboat-server-tls`).
    pub server: Issued,
    /// The agents' client certificate (Secret `lifeboat-agent-tls`).
    pub agent: Issued,
}

impl Bundle {
    /// Issues the server certificate for `namespace` and the agent certificate from `authority`.
    pub fn issue(authority: &Authority, namespace: &str) -> Result<Self> {
        Ok(Self {
            ca: authority.own().clone(),
            server: authority.issue_server(namespace)?,
            agent: authority.issue_client(AGENT_CN)?,
        })
    }

    /// A new CA and everything issued from it.
    pub fn generate(namespace: &str) -> Result<Self> {
        Self::issue(&Authority::generate()?, namespace)
    }
}

/// The names the server certificate covers for an install in `namespace`.
pub fn server_names(namespace: &str) -> Vec<String> {
    vec![
        SERVER_NAME.to_string(),
        format!("{SERVER_NAME}.{namespace}"),
        format!("{SERVER_NAME}.{namespace}.svc"),
        format!("{SERVER_NAME}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]
}

fn new_key(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| Error::Generate { what, source })
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "lifeboat");
    dn.push(DnType::CommonName, cn);
    dn
}

/// From yesterday (a node's clock may run behind) for [`VALIDITY_YEARS`].
fn set_validity(params: &mut CertificateParams) {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let from = today.yesterday().unwrap_or(today);
    let until = today
        .checked_add(VALIDITY_YEARS.years())
        .unwrap_or(jiff::civil::Date::MAX);
    // jiff's months and days are 1-based and positive, its years within rcgen's range.
    params.not_before = rcgen::date_time_ymd(
        i32::from(from.year()),
        from.month().unsigned_abs(),
        from.day().unsigned_abs(),
    );
    params.not_after = rcgen::date_time_ymd(
        i32::from(until.year()),
        until.month().unsigned_abs(),
        until.day().unsigned_abs(),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca: &Issued) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(der(&ca.cert))
            .expect("the CA is a usable trust anchor");
        Arc::new(roots)
    }

    /// Verifies `leaf` as a server certificate for `name`, as an agent will.
    fn verify_server(ca: &Issued, leaf: &Issued, name: &str) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .expect("a verifier");
        let name = ServerName::try_from(name.to_string()).expect("a server name");
        verifier
            .verify_server_cert(&der(&leaf.cert), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// Verifies `leaf` as a client certificate, as the server will.
    fn verify_client(ca: &Issued, leaf: &Issued) -> Result<(), rustls::Error> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .expect("a verifier");
        verifier
            .verify_client_cert(&der(&leaf.cert), &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn the_server_certificate_chains_to_the_ca_for_every_name_a_pod_dials() {
        let bundle = Bundle::generate("backup").unwrap();
        for name in server_names("backup") {
            verify_server(&bundle.ca, &bundle.server, &name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(server_names("backup").contains(&"lifeboat.backup.svc.cluster.local".to_string()));
        assert!(
            verify_server(&bundle.ca, &bundle.server, "lifeboat.other.svc").is_err(),
            "a name of another namespace is not covered"
        );
        assert!(
            verify_client(&bundle.ca, &bundle.server).is_err(),
            "the server certificate is not a client certificate (no clientAuth)"
        );
    }

    #[test]
    fn the_agent_certificate_is_a_client_certificate_of_the_ca_only() {
        let bundle = Bundle::generate("velero").unwrap();
        verify_client(&bundle.ca, &bundle.agent).expect("the agent's certificate is accepted");
        assert!(
            verify_server(&bundle.ca, &bundle.agent, "lifeboat").is_err(),
            "the agent certificate cannot serve (no serverAuth)"
        );
        let stranger = Bundle::generate("velero").unwrap();
        assert!(
            verify_client(&bundle.ca, &stranger.agent).is_err(),
            "an agent certificate of another CA is refused"
        );
        assert!(verify_server(&bundle.ca, &stranger.server, "lifeboat").is_err());
    }

    #[test]
    fn a_later_install_issues_from_the_stored_ca() {
        let first = Authority::generate().unwrap();
        let stored = first.own().clone();
        let again = Authority::from_pem(&stored.cert, &stored.key).unwrap();
        let bundle = Bundle::issue(&again, "velero").unwrap();
        assert_eq!(bundle.ca, stored, "the CA is carried over, not replaced");
        verify_server(&stored, &bundle.server, "lifeboat.velero.svc").unwrap();
        verify_client(&stored, &bundle.agent).unwrap();
    }

    #[test]
    fn keys_are_pkcs8_pem_and_never_debug_printed() {
        let bundle = Bundle::generate("velero").unwrap();
        for issued in [&bundle.ca, &bundle.server, &bundle.agent] {
            PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).expect("a PEM private key");
            assert!(!format!("{issued:?}").contains(&issued.key));
        }
        assert_ne!(bundle.server.key, bundle.agent.key);
    }

    #[test]
    fn an_unusable_stored_ca_is_an_error_naming_the_part() {
        let ca = Authority::generate().unwrap();
        let err = Authority::from_pem(&ca.own().cert, "not a key").unwrap_err();
        assert!(
            matches!(err, Error::ExistingCa { what: "key", .. }),
            "{err}"
        );
        let err = Authority::from_pem("not a certificate", &ca.own().key).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ExistingCa {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
    }
}
