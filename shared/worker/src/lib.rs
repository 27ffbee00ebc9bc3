//! Serves work items of a self-hosted environment (PROTOCOL.md §6.3-§7): holds the lease,
//! follows the session's event stream, dispatches tool calls to the toolset one at a time, and
//! posts every result exactly once.
//!
//! Layering (DESIGN.md): `protocol` <- `client` <- `worker` -> `tools` -> `sandbox`. This crate
//! orchestrates; it never executes tool code itself and never holds a credential in a place
//! tool code can reach (the toolset builds the tool environment from an allow-list).
//!
//! What it must never do: run a call twice, run a call it does not own or that was denied,
//! post after its lease was lost, drop a result silently, or stop an item whose lease it lost.

pub mod archive;
pub mod continuation;
pub mod custom_tools;
pub mod feed;
pub mod item;
pub mod janitor;
pub mod lease;
pub mod ledger;
pub mod memory;
pub mod observer;
pub mod poll;
pub mod results;
pub mod runner;
pub mod skills;
pub mod startup;
pub mod workdir;
pub mod workspace_store;

pub use continuation::{CarriedResult, MAX_CARRIED_ANSWERED};
pub use custom_tools::{CustomTools, CustomToolsError, SessionSide};
pub use item::{ItemEnd, ItemOutcome, Resume, Worker, WorkerConfig, default_worker_id};
pub use janitor::{Cleanup, FailedInvocation, StaleItem};
pub use lease::{Lease, LeaseConfig, LeaseStatus};
pub use observer::{NoObserver, Observer};
pub use poll::{Ack, Claim, PollError};
pub use runner::RunEnd;
pub use workdir::WorkdirTemplate;
pub use workspace_store::{StoreError, WorkspaceStore};

// The unit tests' harness is the tier-1 helper of the custom-tool tests that run through it.
#[cfg(test)]
hands_sandbox::helper_dispatch_for_tests!();
