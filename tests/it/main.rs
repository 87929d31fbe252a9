//! The integration tests: each starts the real binary and speaks HTTP to it.

mod accounts;
mod changes;
mod cli;
mod contrib;
mod crash;
mod data_dir;
mod hostile;
mod http_layer;
mod invitations;
mod lifecycle;
mod logging;
mod logs;
mod operations;
mod paging;
mod robustness;
mod sealed;
mod service;
mod shares;
mod sharing;
mod shutdown;
mod slow_clients;
mod soak;
mod stores;
mod streams;
mod support;
mod tidy;
