//! lifeboat-server: the `velero.io/v1` API types (used by the CLI too), the controllers, the
//! agents' gRPC service, and the server process that runs them.

pub mod agents;
pub mod api;
mod controller;
mod error;
mod http;
pub mod metrics;
mod server;
pub mod storage;

pub use controller::{Settings, parse_duration};
pub use error::{Error, Result};
pub use server::{ServerOptions, run};
