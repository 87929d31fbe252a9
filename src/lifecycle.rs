//! The server's life as its threads share it: whether it is stopping, and
//! how many requests are in flight, so a graceful shutdown (SIGTERM or
//! SIGINT, SPEC §8) can stop accepting, let the requests in flight finish
//! for a while, and then end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct Lifecycle {
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    /// Where a connection wakes the accept thread (the listening address;
    /// loopback for a wildcard one).
    wake: SocketAddr,
}

/// Counts one request in flight for as long as it lives.
#[derive(Debug)]
pub struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lifecycle {
    pub fn new(listening: SocketAddr) -> Lifecycle {
        let ip = match listening.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Lifecycle {
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            wake: SocketAddr::new(ip, listening.port()),
        }
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Starts the shutdown: connections close after their current answer,
    /// and the accept thread (woken by a connection of ours) stops
    /// accepting and closes the listening socket.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_in_flight() {
        let life = Arc::new(Lifecycle::new("127.0.0.1:9".parse().unwrap()));
        let first = life.request();
        let second = life.request();
        assert_eq!(life.in_flight(), 2);
        drop(first);
        assert_eq!(life.in_flight(), 1);
        drop(second);
        assert_eq!(life.in_flight(), 0);
    }

    #[test]
    fn wildcard_addresses_are_woken_on_loopback() {
        assert_eq!(Lifecycle::new("0.0.0.0:80".parse().unwrap()).wake, "127.0.0.1:80".parse().unwrap());
        assert_eq!(Lifecycle::new("[::]:80".parse().unwrap()).wake, "[::1]:80".parse().unwrap());
        assert_eq!(Lifecycle::new("127.0.0.2:80".parse().unwrap()).wake, "127.0.0.2:80".parse().unwrap());
    }
}
