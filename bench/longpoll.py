#!/usr/bin/env python3
"""Parked long-polls (or, with --streams, feed streams): holds N of them, spread over accounts that share one
store (a server holds at most 64 per account), reports the server's RSS
idle and with them parked (and per poll), then commits one write to the
shared store and reports how long until every poll has its answer, and
/v1/health latency meanwhile.

Usage: cargo build --release && python3 bench/longpoll.py [--streams] [N]   (default 500;
CI runs it with N=20 so it cannot rot). MAX_CONNECTIONS is raised to fit N,
which needs a descriptor a connection and 640 more (the server says so
and exits if its hard RLIMIT_NOFILE is too low); this script needs N too."""
import json, os, resource, selectors, shutil, socket, statistics, subprocess, sys, tempfile, time

STREAMS = "--streams" in sys.argv[1:]
NUMBERS = [arg for arg in sys.argv[1:] if arg != "--streams"]
N = int(NUMBERS[0]) if NUMBERS else 500
KIND = "feed streams" if STREAMS else "parked long-polls"
BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "sync-node")
PER_ACCOUNT = 50


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return {l.split(":")[0]: int(l.split()[1]) for l in status if l.startswith(("VmRSS", "VmHWM"))}


def request(port, method, path, token=None, body=b"", headers=()):
    """One request on its own connection: (status, JSON body or None, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        for name, value in headers:
            head += f"{name}: {value}\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload) if payload.startswith(b"{") else None, time.monotonic() - started


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    accounts = max(1, -(-N // PER_ACCOUNT))
    root = tempfile.mkdtemp()
    # Loopback is a trusted proxy here, so each account registers from its
    # own forwarded address (10 registrations an hour per address).
    env = dict(os.environ, PORT="0", BIND="127.0.0.1", STATIC_ROOT=root, MAX_CONNECTIONS=str(N + 64),
               PBKDF2_ITERATIONS="1000", TRUST_PROXY="1")
    server = subprocess.Popen([BIN], env=env, stderr=subprocess.PIPE, text=True)
    socks = []
    try:
        line = server.stderr.readline()
        if "http://" not in line:
            sys.exit(f"sync-node did not start: {line.strip()}")
        port = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1])
        tokens = []
        for i in range(accounts):
            body = json.dumps({"id": f"bench{i}", "password": "password123"}).encode()
            forwarded = [("X-Forwarded-For", f"10.{i // 250}.{i % 250}.1")]
            tokens.append(request(port, "POST", "/v1/accounts", body=body, headers=forwarded)[1]["token"])
        token = tokens[0]
        assert request(port, "PUT", "/v1/stores/shared", token, b"v1")[0] == 201
        for i in range(1, accounts):
            grant = json.dumps({"account": f"bench{i}", "permission": "READ"}).encode()
            assert request(port, "PUT", "/v1/stores/shared/permissions", token, grant)[0] == 204
        since = request(port, "GET", "/v1/changes?since=0", token)[1]["seq"]
        idle = rss_kib(server.pid)
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            ask = "Accept: text/event-stream\r\n" if STREAMS else ""
            s.sendall(f"GET /v1/changes?since={since}&wait=60 HTTP/1.1\r\nHost: bench\r\n{ask}"
                      f"Authorization: Bearer {tokens[i % accounts]}\r\n\r\n".encode())
            socks.append(s)
        if STREAMS:
            # Each stream's head first, so what follows is the commit's event.
            for s in socks:
                s.settimeout(30)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += s.recv(4096)
                assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head
        time.sleep(1.0 + N / 5000)
        parked = rss_kib(server.pid)
        threads = len(os.listdir(f"/proc/{server.pid}/task"))
        health = sorted(request(port, "GET", "/v1/health")[2] * 1000 for _ in range(200))
        selector = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
        done = []
        t0 = time.monotonic()
        assert request(port, "PUT", "/v1/stores/shared", token, b"v2", [("If-Match", "*")])[0] == 200
        waiting = len(socks)
        while waiting and time.monotonic() - t0 < 30:
            for key, _ in selector.select(timeout=1):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 200") or (STREAMS and b"event: changes" in data):
                    done.append(time.monotonic())
                selector.unregister(key.fileobj)
                waiting -= 1
        per_poll = (parked["VmRSS"] - idle["VmRSS"]) / N
        print(f"{N} {KIND} over {accounts} accounts: RSS idle {idle['VmRSS']} KiB, parked "
              f"{parked['VmRSS']} KiB ({per_poll:.1f} KiB each; HWM {parked['VmHWM']} KiB)")
        print(f"server threads with them parked: {threads}")
        print(f"/v1/health while parked: p50 {statistics.median(health):.2f} ms, "
              f"p99 {health[int(len(health) * 0.99) - 1]:.2f} ms, max {max(health):.2f} ms")
        if len(done) != N:
            sys.exit(f"only {len(done)} of {N} {KIND} heard of the commit")
        print(f"wake-up after one commit: first {1000 * (min(done) - t0):.1f} ms, last {1000 * (max(done) - t0):.1f} ms")
    finally:
        for s in socks:
            s.close()
        server.kill()
        server.wait()
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
