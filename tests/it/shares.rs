//! Fair shares (issue 21): what one client, registered or not, from a few
//! addresses, can hold of the server's hashing places, memory, disk, loop
//! and connection slots — and that others are still served meanwhile.

use crate::support::{Options, PASSWORD, Server};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// `POST /v1/sessions` for `id` as if from `from` (behind `TRUST_PROXY=1`).
fn sign_in_from(server: &Server, id: &str, from: &str) -> u16 {
    let body = json!({"id": id, "password": PASSWORD}).to_string();
    let headers = [("Content-Type", "application/json"), ("X-Forwarded-For", from)];
    server.call("POST", "/v1/sessions", None, &headers, body.as_bytes()).status
}

#[test]
fn correct_sign_ins_from_four_addresses_leave_hashing_places_for_others() {
    let options = Options::default().env("TRUST_PROXY", "1").env("PBKDF2_ITERATIONS", "20000");
    let server = Arc::new(Server::start_with(options));
    let attackers: Vec<(String, String)> = (0..4)
        .flat_map(|a| (0..4).map(move |n| (format!("198.51.100.{}", a + 1), format!("attacker{a}x{n}"))))
        .collect();
    for (from, id) in &attackers {
        assert_eq!(server.register_from(id, from).status, 201);
    }
    assert_eq!(server.register_from("victim", "203.0.113.9").status, 201);
    let stop = Arc::new(AtomicBool::new(false));
    // Each attacker account signs in on 5 connections at once, over and over
    // (80 at once in all, more than the 64 places).
    let flood: Vec<_> = attackers
        .iter()
        .flat_map(|who| std::iter::repeat_n(who.clone(), 5))
        .map(|(from, id)| {
            let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
            thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Refusals are cheap; this test is about the places, not
                    // about a flood of requests.
                    if sign_in_from(&server, &id, &from) != 201 {
                        thread::sleep(Duration::from_millis(20));
                    }
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let victim: Vec<u16> = (0..6).map(|_| sign_in_from(&server, "victim", "203.0.113.9")).collect();
    stop.store(true, Ordering::Relaxed);
    let attempts: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(attempts > 80, "the flood ran ({attempts} attempts)");
    assert_eq!(victim, vec![201; 6], "the victim signed in every time while the flood ran");
}

#[test]
fn successful_sign_ins_of_one_account_are_limited_per_hour() {
    let server = Server::start();
    server.register("busy");
    let statuses: Vec<u16> = (0..60).map(|_| sign_in_from(&server, "busy", "192.0.2.1")).collect();
    assert_eq!(statuses, vec![201; 60], "the sign-ins an hour allows");
    let refused = server.post_json("/v1/sessions", None, &json!({"id": "busy", "password": PASSWORD}));
    assert_eq!((refused.status, refused.error().as_str()), (429, "too_many_requests"));
    assert!(refused.header("Retry-After").is_some());
    server.register("other");
    assert_eq!(sign_in_from(&server, "other", "192.0.2.1"), 201, "another account is not affected");
}
