//! The integration tests: each starts the real binary and speaks HTTP to it.

mod http_layer;
mod service;
mod support;
