//! The integration tests: each starts the real binary and speaks HTTP to it.

mod accounts;
mod crash;
mod http_layer;
mod service;
mod stores;
mod support;
