//! Standard Webhooks signing and verification (PROTOCOL.md §10.5).
