//! lifeboat-server: the `velero.io/v1` API types (used by the CLI too), what `install` renders
//! and the certificates it issues, the controllers, the agents' gRPC service, and the server
//! process that runs them.

pub mod agents;
pub mod api;
pub mod backup;
pub mod clock;
mod controller;
pub mod cron;
pub mod duration;
mod error;
mod http;
pub mod identity;
pub mod install;
pub mod metrics;
pub mod pki;
mod podvolume;
pub mod restore;
mod server;
pub mod storage;
mod tls;

pub use controller::Settings;
pub use duration::{go_duration, parse_duration};
pub use error::{Error, Result};
pub use server::{ServerOptions, run, serve_agents};
