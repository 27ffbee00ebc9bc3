//! Wire types of the Claude Managed Agents self-hosted worker protocol (`../shared/PROTOCOL.md`
//! §2-§10) and Standard Webhooks signing and verification.
//!
//! This crate is pure: no I/O, no clock reads (time is always passed in), no logging. Every
//! other crate builds on it, so it must stay small to compile and impossible to panic on
//! hostile input.

pub mod environment;
pub mod error;
pub mod events;
pub mod memory;
pub mod secret;
pub mod session;
pub mod skills;
pub mod toolset;
pub mod webhook;
pub mod webhook_event;
mod webhook_event_head;
mod webhook_event_scan;
pub mod work;
