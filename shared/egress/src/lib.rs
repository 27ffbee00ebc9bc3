//! The egress proxy: capabilities, not credentials.
//!
//! A forward HTTP(S) proxy that runs in the worker, outside the sandbox. Tool code reaches it
//! with a per-session proxy credential; the operator's policy decides what may leave, and for
//! the hosts it names, the proxy attaches secrets (bearer tokens, git basic auth) that never
//! enter the sandbox. It must never hand a secret value to tool code: not in the environment,
//! not in the CA bundle, not echoed back in a response.
//!
//! - [`policy`]: the TOML rules (first match wins, default deny) and what they decide.
//! - [`secrets`]: the seam `{secret:NAME}` is resolved through; [`worker_secrets`]: the
//!   worker's implementation of it over `shared/secrets`.
//! - [`proxy`]: the server; [`sessions`]: per-session credentials; [`address`]: the SSRF guard;
//!   [`ca`]: the per-worker CA for intercepted hosts; [`redact`]: secret stripping;
//!   [`audit`]: the audit line and counters.

pub mod address;
pub mod audit;
pub mod ca;
pub mod explain;
pub mod policy;
pub mod proxy;
pub mod redact;
pub mod resolve;
pub mod secrets;
pub mod sessions;
pub mod tls;
pub mod worker_secrets;

pub use audit::EgressMetrics;
pub use policy::{Policy, PolicyError};
pub use proxy::{
    EgressConfig, EgressError, EgressProxy, MAX_SESSION_CONNECTIONS, SessionEgress, TIER0_NOTICE,
};
pub use resolve::Resolver;
pub use secrets::{SecretError, SecretSource, StaticSecrets};
pub use sessions::{SessionGrant, SessionRegistry};
pub use tls::UpstreamRoots;
pub use worker_secrets::WorkerSecrets;
