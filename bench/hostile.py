#!/usr/bin/env python3
"""Figures for hostile and unlucky clients (issue 12), against the release
build on loopback. Run: cargo build --release && python3 bench/hostile.py

1. /v1/health latency (p50, p99, max) while 8 clients page through an
   account of 10,000 stores (GET /v1/stores, pages of 1000), against an
   idle baseline.
2. How long a new client is kept out while 256 connections trickle request
   heads (one byte a second) from 4 addresses, filling MAX_CONNECTIONS=256
   (64 per address); the attacker reconnects as soon as a slot frees.
   Target: never longer than the 10 s head deadline.
3. Sign-in timing at PBKDF2_ITERATIONS=600000, wrong password: medians for
   a known id hashed at 300,000 iterations (old cost), a known id at the
   current cost, and an unknown id. Target: within 5 % of each other.

Then one row per resource a client could hold without paying for it
(issue 21, bench/hostile_rows.py): what a victim on another address saw
and the server's largest RSS while the attack ran. `--quick` runs every
row briefly and small (CI does, so the script cannot rot).
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BIN, free_port, http, start_server  # noqa: E402
from hostile_rows import ROWS  # noqa: E402

PASSWORD = "benchmark password"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def health_latencies(port, seconds):
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        assert http(port, "GET", "/v1/health")[0] == 200
        out.append((time.monotonic() - started) * 1000)
        time.sleep(0.005)
    return out


def put_many(port, token, count, threads=16):
    def worker(start):
        with socket.create_connection(("127.0.0.1", port)) as s:
            f = s.makefile("rb")
            for i in range(start, count, threads):
                head = (f"PUT /v1/stores/s{i:05d} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n"
                        "Content-Length: 1\r\n\r\nx")
                s.sendall(head.encode())
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                    if line.startswith(b"HTTP/1.1"):
                        assert line.split()[1] == b"201", line
                f.read(length)
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    [t.start() for t in pool]
    [t.join() for t in pool]


def listing_load(work):
    port = free_port()
    proc, _ = start_server(os.path.join(work, "list"), port, PBKDF2_ITERATIONS="1000")
    try:
        token = json.loads(http(port, "POST", "/v1/accounts", body={"id": "lister", "password": PASSWORD})[2])["token"]
        started = time.monotonic()
        put_many(port, token, 10_000)
        print(f"(10,000 stores written in {time.monotonic() - started:.1f} s)")
        idle = health_latencies(port, 3)
        stop, pages = threading.Event(), [0]

        def lister():
            # Cheap on purpose (no JSON parsing): the figure is the server's.
            while not stop.is_set():
                after = ""
                while True:
                    status, _, body = http(port, "GET", f"/v1/stores?limit=1000{after}", token)
                    assert status == 200
                    pages[0] += 1
                    if b'"more":true' not in body[-64:]:
                        break
                    last = body.rindex(b'{"key":"') + 8
                    after = "&after=" + body[last:body.index(b'"', last)].decode()
        listers = [threading.Thread(target=lister) for _ in range(8)]
        [t.start() for t in listers]
        time.sleep(0.5)
        loaded = health_latencies(port, 10)
        stop.set()
        [t.join() for t in listers]
        for name, values in (("idle", idle), ("8 clients listing 10,000 stores", loaded)):
            print(f"| /v1/health, {name} | {len(values)} | {statistics.median(values):.2f} ms | "
                  f"{percentile(values, 0.99):.2f} ms | {max(values):.2f} ms |")
        print(f"(pages listed meanwhile: {pages[0]}, {pages[0] / 10.5:.0f}/s)")
    finally:
        proc.kill()


def trickle_load(work, seconds=25):
    port = free_port()
    proc, _ = start_server(os.path.join(work, "trickle"), port, MAX_CONNECTIONS="256",
                           MAX_CONNECTIONS_PER_ADDRESS="64")
    stop = threading.Event()
    head = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n"

    def attacker(address):
        conns = []
        while not stop.is_set():
            while len(conns) < 64 and not stop.is_set():
                try:
                    s = socket.socket()
                    s.bind((address, 0))
                    s.settimeout(0.2)
                    s.connect(("127.0.0.1", port))
                    conns.append([s, 0])
                except OSError:
                    break
            for entry in list(conns):
                s, sent = entry
                try:
                    s.send(head[sent % (len(head) - 2): sent % (len(head) - 2) + 1])
                    entry[1] += 1
                except OSError:
                    conns.remove(entry)
                    s.close()
            time.sleep(1)
        for s, _ in conns:
            s.close()
    attackers = [threading.Thread(target=attacker, args=(f"127.0.0.{a}",)) for a in range(1, 5)]
    [t.start() for t in attackers]
    time.sleep(3)
    waits, end = [], time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            started = time.monotonic()
            while True:
                try:
                    s = socket.socket()
                    s.bind(("127.0.0.9", 0))
                    s.settimeout(2)
                    s.connect(("127.0.0.1", port))
                    s.sendall(head)
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        s.close()
                        break
                    s.close()
                except OSError:
                    pass
                time.sleep(0.05)
            waits.append(time.monotonic() - started)
            time.sleep(0.5)
    finally:
        stop.set()
        [t.join() for t in attackers]
        proc.kill()
    print(f"| new client kept out while 256 connections trickle heads | {len(waits)} tries | "
          f"median {statistics.median(waits):.2f} s | max {max(waits):.2f} s |")


def add_account(root, account, iterations):
    env = dict(os.environ, STATIC_ROOT=root, PBKDF2_ITERATIONS=str(iterations))
    subprocess.run([BIN, "account", "add", account], input=(PASSWORD + "\n").encode(), env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sign_in_timing(work, rounds=21):
    root = os.path.join(work, "timing")
    port = free_port()
    # Each attempt from its own (forwarded) address and for its own id, so
    # no lockout ends the run and no success upgrades an old hash.
    proc, _ = start_server(root, port, PBKDF2_ITERATIONS="600000", TRUST_PROXY="1")
    try:
        for i in range(rounds):
            add_account(root, f"current{i}", 600_000)
            add_account(root, f"old{i}", 300_000)
        results = {}
        for name, prefix in (("known, old cost (300,000)", "old"), ("known, current cost", "current"),
                             ("unknown id", "nobody")):
            times = []
            for i in range(rounds):
                forwarded = (("X-Forwarded-For", f"198.51.100.{len(results) * rounds + i}"),)
                started = time.monotonic()
                status = http(port, "POST", "/v1/sessions", body={"id": f"{prefix}{i}", "password": "wrong password"},
                              headers=forwarded)[0]
                times.append((time.monotonic() - started) * 1000)
                assert status == 401, status
                time.sleep(0.02)
            results[name] = statistics.median(times)
        base = results["known, current cost"]
        for name, median in results.items():
            print(f"| sign-in, wrong password, {name} | {rounds} | median {median:.1f} ms | "
                  f"{(median / base - 1) * 100:+.1f} % |")
    finally:
        proc.kill()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="every row briefly and small (for CI)")
    args = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    with tempfile.TemporaryDirectory() as work:
        if not args.quick:
            print("| figure | samples | p50 / median | p99 | max |\n|---|---|---|---|---|")
            listing_load(work)
            trickle_load(work)
            sign_in_timing(work, rounds=21)
        print("\n| attack | what the victim saw | server RSS max | target |\n|---|---|---|---|")
        for attack in ROWS:
            attack(work, args.quick)


if __name__ == "__main__":
    main()
