//! Portcullis's core: everything that decides, as synchronous Rust that takes values and returns
//! values. It knows nothing of the Workers runtime; the `portcullis-worker` crate is the adapter
//! that does the I/O.
//!
//! Modules, in the order a request meets them:
//! [`config`] (loaded once: it assembles the config sections the phases own), [`request_id`],
//! [`request`] (the one reading of a request: [`path`], [`query`], [`addr`]), [`router`],
//! [`policy`], [`auth`], [`sso`], [`gateway`] (the plan), [`headers`], [`cache`], [`upstream`]
//! (servers and retries), [`compress`] (the client's coding), [`error`], [`log`]; [`lifecycle`] orders them. The leaves [`problems`]
//! (config problems and their JSON paths), [`http`] (header primitives), [`query`], [`path`],
//! [`addr`] and [`template`] import nothing above them, no phase imports [`config`], [`gateway`]
//! or [`lifecycle`], and no module imports itself back through others (`tests/layers.rs`).

pub mod addr;
pub mod auth;
pub mod cache;
pub mod compress;
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
