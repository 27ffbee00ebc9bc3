//! devplane: a local control plane for tests and `hands dev`.
