//! The agent toolset.
