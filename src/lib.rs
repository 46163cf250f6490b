//! Portcullis's core: everything that decides, as synchronous Rust that takes values and returns
//! values. It knows nothing of the Workers runtime; the `portcullis-worker` crate is the adapter
//! that does the I/O.
//!
//! Modules, in the order a request meets them:
//! [`config`] (loaded once), [`request_id`], [`request`] (the one reading of a request:
//! [`path`], [`query`], [`addr`]), [`router`], [`auth`], [`gateway`] (the plan), [`headers`],
//! [`cache`], [`upstream`] (servers and retries), [`error`], [`log`].

pub mod addr;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod gateway;
pub mod headers;
pub mod http;
pub mod lifecycle;
pub mod log;
pub mod path;
pub mod policy;
pub mod problems;
pub mod query;
pub mod request;
pub mod request_id;
pub mod router;
mod sort;
pub mod sso;
pub mod template;
pub mod upstream;

pub use config::{Config, ConfigError, ConfigErrors};
pub use error::{ErrorResponse, GatewayError};
pub use gateway::{ForwardPlan, Gateway, Incoming, Refusal};
