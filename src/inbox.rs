//! The loop's queue, fair between client addresses. Events arrive on one
//! channel; waiting ones are kept in one queue per client address (an IPv6
//! /64, or the client a trusted proxy forwards), and the loop takes them in
//! turns: one from each address that has any, round and round. So four
//! addresses keeping 250 writes in flight make another client's request
//! wait for four of them, not for all 250 (it waited 334 ms at p99).
//! Within an address, events keep their order. Events without an address
//! (a signal) and events a batch took ahead of their turn and gave back
//! come first.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

pub struct Inbox<T> {
    events: Receiver<T>,
    /// The client address an event is for (`None`: no client, first).
    address: fn(&T) -> Option<IpAddr>,
    /// Events served before any turn: given back by a batch, or signals.
    first: VecDeque<T>,
    /// The addresses with events waiting, in turn order, each with its own.
    turns: VecDeque<(IpAddr, VecDeque<T>)>,
}

impl<T> Inbox<T> {
    pub fn new(events: Receiver<T>, address: fn(&T) -> Option<IpAddr>) -> Self {
        Inbox { events, address, first: VecDeque::new(), turns: VecDeque::new() }
    }

    /// Files an event that has arrived under its address.
    fn place(&mut self, event: T) {
        let Some(address) = (self.address)(&event) else {
            self.first.push_back(event);
            return;
        };
        match self.turns.iter_mut().find(|(waiting, _)| *waiting == address) {
            Some((_, queue)) => queue.push_back(event),
            None => self.turns.push_back((address, VecDeque::from([event]))),
        }
    }

    /// Files every event that has arrived.
    fn take_arrived(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.place(event);
        }
    }

    /// The event whose turn it is, if any is waiting here.
    fn pop(&mut self) -> Option<T> {
        if let Some(event) = self.first.pop_front() {
            return Some(event);
        }
        let (address, mut queue) = self.turns.pop_front()?;
        let event = queue.pop_front();
        if !queue.is_empty() {
            self.turns.push_back((address, queue));
        }
        event
    }

    /// The next event, waiting for one until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        loop {
            self.take_arrived();
            if let Some(event) = self.pop() {
                return Ok(event);
            }
            let event = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
            self.place(event);
        }
    }

    /// The next event if one is already waiting.
    pub fn ready(&mut self) -> Option<T> {
        self.take_arrived();
        self.pop()
    }

    /// Whether another event is waiting (it keeps its place).
    pub fn has_waiting(&mut self) -> bool {
        self.take_arrived();
        !self.first.is_empty() || !self.turns.is_empty()
    }

    /// Returns events taken by [`Inbox::ready`], in their order, to the
    /// front of the queue.
    pub fn put_back<I: IntoIterator<Item = T, IntoIter: DoubleEndedIterator>>(&mut self, events: I) {
        for event in events.into_iter().rev() {
            self.first.push_front(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Events for the tests: (client address, number); 0 has no address.
    fn address(event: &(u8, u32)) -> Option<IpAddr> {
        (event.0 != 0).then(|| IpAddr::from([192, 0, 2, event.0]))
    }

    #[test]
    fn events_put_back_come_first_and_in_their_order() {
        let (tx, rx) = mpsc::channel();
        let mut inbox = Inbox::new(rx, address);
        for n in 1..=4 {
            tx.send((1, n)).unwrap();
        }
        let taken: Vec<_> = (0..3).filter_map(|_| inbox.ready()).map(|e| e.1).collect();
        assert_eq!(taken, [1, 2, 3]);
        inbox.put_back([(1, 2), (1, 3)]);
        assert_eq!(inbox.ready(), Some((1, 2)));
        inbox.put_back([(1, 2)]);
        let deadline = Instant::now();
        let order: Vec<_> = (0..3).map(|_| inbox.next(deadline).unwrap().1).collect();
        assert_eq!(order, [2, 3, 4]);
        assert_eq!(inbox.ready(), None);
        assert_eq!(inbox.next(deadline), Err(RecvTimeoutError::Timeout));
        drop(tx);
        assert_eq!(inbox.next(deadline), Err(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn addresses_take_turns_and_keep_their_own_order() {
        let (tx, rx) = mpsc::channel();
        let mut inbox = Inbox::new(rx, address);
        for n in 1..=100 {
            tx.send((1, n)).unwrap();
        }
        tx.send((2, 1)).unwrap();
        tx.send((0, 0)).unwrap();
        tx.send((2, 2)).unwrap();
        let order: Vec<_> = (0..6).filter_map(|_| inbox.ready()).collect();
        assert_eq!(order, [(0, 0), (1, 1), (2, 1), (1, 2), (2, 2), (1, 3)], "a signal first, then turns");
        assert!(inbox.has_waiting());
        let rest: Vec<_> = std::iter::from_fn(|| inbox.ready()).map(|e| e.1).collect();
        assert_eq!(rest, (4..=100).collect::<Vec<_>>());
    }
}
