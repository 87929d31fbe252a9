//! Our small HTTP/1.1 layer on `std::net`: the accept thread with its
//! connection cap ([`listener`]), the waiting room where connections wait
//! without a thread ([`room`]), the work threads ([`pool`]), request heads
//! and body framing ([`request`]), answers as plain values ([`response`]),
//! the byte work on one connection ([`conn`]), refusing connections there
//! is no room for ([`refuser`]) and the memory answers being sent may hold
//! ([`budget`]). Only this module touches sockets.

pub mod body;
pub mod budget;
pub mod conn;
pub mod listener;
pub mod pool;
pub mod proxies;
pub mod refuser;
pub mod rejection;
pub mod request;
pub mod response;
pub mod room;

pub use conn::{BodyError, Connection, Limits, Pace, SendOptions};
pub use rejection::Rejection;
pub use request::{Framing, RequestHead};
pub use response::{Body, Response};
