//! How a job reaches its repository, and its one translation to and from the agent protocol's
//! [`proto::Repository`]: the server fills a [`RepositoryAccess`] from a storage location's
//! typed settings and sends it; the agent turns the message back into the engine's
//! [`Location`] and [`StoreOptions`]. The agent holds no credentials of its own, so everything
//! it needs to open the repository travels here (over the mutually authenticated channel).
//!
//! The protocol writes "absent" as an empty field (proto3): an empty region, session token or
//! CA bundle is read back as none.

use lifeboat_repo::{Credentials, Location, StoreOptions};

use crate::proto;

/// A repository as a job names it: where it is, how to reach its store, and its password.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryAccess {
    pub location: Location,
    /// The store's credentials, or none to use what the store allows without.
    pub credentials: Option<Credentials>,
    /// PEM certificates of a private CA the store's certificate chains to.
    pub ca_certificates: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
    pub password: String,
}

/// Why a repository cannot be carried in, or read from, a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The message's location is not one the engine knows.
    #[error("the repository location {location:?} is not valid")]
    BadLocation {
        location: String,
        #[source]
        source: lifeboat_repo::Error,
    },
    /// The engine has a kind of credentials the protocol has no field for (a newer engine).
    #[error("the agent protocol cannot carry this kind of store credentials")]
    CredentialsNotCarried,
}

impl RepositoryAccess {
    /// The store settings the engine opens the repository with; the rest of `base` (retries,
    /// timeouts, connections) is the agent's own.
    pub fn store_options(&self, base: StoreOptions) -> StoreOptions {
        StoreOptions {
            credentials: self.credentials.clone(),
            ca_certificates: self.ca_certificates.clone(),
            insecure_skip_tls_verify: self.insecure_skip_tls_verify,
            ..base
        }
    }
}

impl TryFrom<RepositoryAccess> for proto::Repository {
    type Error = AccessError;

    fn try_from(access: RepositoryAccess) -> Result<Self, AccessError> {
        let region = match &access.location {
            Location::S3 { region, .. } => region.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let credentials = access.credentials.map(credentials_message).transpose()?;
        Ok(proto::Repository {
            location: access.location.to_string(),
            region,
            password: access.password,
            credentials,
            ca_certificates: access.ca_certificates.unwrap_or_default(),
            insecure_skip_tls_verify: access.insecure_skip_tls_verify,
        })
    }
}

impl TryFrom<&proto::Repository> for RepositoryAccess {
    type Error = AccessError;

    fn try_from(message: &proto::Repository) -> Result<Self, AccessError> {
        let mut location =
            Location::parse(&message.location).map_err(|source| AccessError::BadLocation {
                location: message.location.clone(),
                source,
            })?;
        // A location's text has no place for its region: the message carries it beside.
        if let Location::S3 { region, .. } = &mut location
            && !message.region.is_empty()
        {
            *region = Some(message.region.clone());
        }
        let credentials = message.credentials.as_ref().map(|c| match c {
            proto::repository::Credentials::Aws(aws) => Credentials::Aws {
                access_key_id: aws.access_key_id.clone(),
                secret_access_key: aws.secret_access_key.clone(),
                session_token: (!aws.session_token.is_empty()).then(|| aws.session_token.clone()),
            },
            proto::repository::Credentials::Gcp(gcp) => Credentials::Gcp {
                service_account_key: gcp.service_account_key.clone(),
            },
            proto::repository::Credentials::Azure(azure) => Credentials::Azure {
                account: azure.account.clone(),
                key: azure.key.clone(),
            },
        });
        Ok(RepositoryAccess {
            location,
            credentials,
            ca_certificates: (!message.ca_certificates.is_empty())
                .then(|| message.ca_certificates.clone()),
            insecure_skip_tls_verify: message.insecure_skip_tls_verify,
            password: message.password.clone(),
        })
    }
}

fn credentials_message(
    credentials: Credentials,
) -> Result<proto::repository::Credentials, AccessError> {
    Ok(match credentials {
        Credentials::Aws {
            access_key_id,
            secret_access_key,
            session_token,
        } => proto::repository::Credentials::Aws(proto::AwsCredentials {
            access_key_id,
            secret_access_key,
            session_token: session_token.unwrap_or_default(),
        }),
        Credentials::Gcp {
            service_account_key,
        } => proto::repository::Credentials::Gcp(proto::GcpCredentials {
            service_account_key,
        }),
        Credentials::Azure { account, key } => {
            proto::repository::Credentials::Azure(proto::AzureCredentials { account, key })
        }
        _ => return Err(AccessError::CredentialsNotCarried),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(access: RepositoryAccess) -> RepositoryAccess {
        let message = proto::Repository::try_from(access).expect("carried");
        RepositoryAccess::try_from(&message).expect("read back")
    }

    #[test]
    fn every_kind_of_repository_survives_the_protocol() {
        let cases = [
            RepositoryAccess {
                location: Location::parse("s3:http://127.0.0.1:9000/bucket/prefix/restic/ns")
                    .expect("location"),
                credentials: Some(Credentials::Aws {
                    access_key_id: "AKIA".into(),
                    secret_access_key: "secret".into(),
                    session_token: Some("token".into()),
                }),
                ca_certificates: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
                insecure_skip_tls_verify: false,
                password: "pw".into(),
            },
            RepositoryAccess {
                location: Location::parse("gs:bucket:/prefix/restic/ns").expect("location"),
                credentials: Some(Credentials::Gcp {
                    service_account_key: "{\"type\":\"service_account\"}".into(),
                }),
                ca_certificates: None,
                insecure_skip_tls_verify: true,
                password: "pw".into(),
            },
            RepositoryAccess {
                location: Location::parse("azure:container:/restic/ns").expect("location"),
                credentials: Some(Credentials::Azure {
                    account: "acct".into(),
                    key: "key".into(),
                }),
                ca_certificates: None,
                insecure_skip_tls_verify: false,
                password: "pw".into(),
            },
            RepositoryAccess {
                location: Location::parse("/var/lib/backups/restic/ns").expect("location"),
                credentials: None,
                ca_certificates: None,
                insecure_skip_tls_verify: false,
                password: "pw".into(),
            },
        ];
        for access in cases {
            assert_eq!(round_trip(access.clone()), access);
        }
    }

    #[test]
    fn an_s3_region_travels_beside_the_location() {
        let mut location =
            Location::parse("s3:https://s3.example.com/bucket/restic/ns").expect("location");
        if let Location::S3 { region, .. } = &mut location {
            *region = Some("eu-west-3".into());
        }
        let access = RepositoryAccess {
            location,
            credentials: None,
            ca_certificates: None,
            insecure_skip_tls_verify: false,
            password: "pw".into(),
        };
        let message = proto::Repository::try_from(access.clone()).expect("carried");
        assert_eq!(message.region, "eu-west-3");
        assert_eq!(RepositoryAccess::try_from(&message).expect("read"), access);
    }

    #[test]
    fn a_location_the_engine_does_not_know_is_named() {
        let message = proto::Repository {
            location: "ftp://nowhere".into(),
            ..proto::Repository::default()
        };
        let e = RepositoryAccess::try_from(&message).expect_err("refused");
        assert!(e.to_string().contains("ftp://nowhere"), "{e}");
    }
}
