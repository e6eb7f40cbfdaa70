//! Support code for lifeboat's end-to-end tests and benchmarks: the S3 server on loopback
//! (and a link in front of it that adds latency and faults), the real `restic` and `lifeboat`
//! binaries, seeded datasets, tree comparison, and the Kubernetes API server stand-in the
//! cluster-side tests run against.
//!
//! Tests use real parts only. The S3 server is moto (`moto_server`): `scripts/test` installs
//! it and starts one for the whole run (`LIFEBOAT_TEST_S3_ENDPOINT`); a test run without that
//! variable starts its own from `PATH`. Every test gets its own bucket.

pub mod apiserver;
pub mod bin;
pub mod bucket;
pub mod cluster;
pub mod fixtures;
pub mod gate;
pub mod link;
pub mod s3;
pub mod tree;

pub use apiserver::ApiServer;
pub use bin::{Lifeboat, Restic};
pub use s3::S3;
