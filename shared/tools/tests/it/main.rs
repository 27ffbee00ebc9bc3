//! Integration tests of the toolset: one binary, one module per tool or concern.

mod common;
mod catalogue;
mod tables;
