"""The rows of bench/hostile.py for issue 21: one per resource a client
could hold without paying for it, each run against its own release server
on loopback while a victim on another address is measured. Every row
prints what the victim saw and the server's largest RSS during the attack.

`quick` shrinks each attack (CI runs it so the script cannot rot); the
figures in README come from a full run."""
import json, os, socket, sqlite3, statistics, subprocess, threading, time

from bench import BIN, free_port, http, proc_status, start_server

PASSWORD = "benchmark password"
MIB = 1024 * 1024
VICTIM = "127.0.0.9"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def connect(port, source, timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def request(port, method, path, token=None, body=b"", headers=(), source=VICTIM, timeout=30):
    """One request from `source`; (status, body, seconds), status 0 if none."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    head = f"{method} {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers)
    started = time.monotonic()
    try:
        with connect(port, source, timeout) as s:
            s.sendall(head.encode() + b"\r\n" + data)
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
    except OSError:
        return 0, b"", time.monotonic() - started
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
    return status, raw.partition(b"\r\n\r\n")[2], time.monotonic() - started


def register(port, account, source="127.0.0.1", headers=()):
    status, body, _ = request(port, "POST", "/v1/accounts", body={"id": account, "password": PASSWORD},
                              source=source, headers=headers)
    assert status == 201, (account, status, body)
    return json.loads(body)["token"]


class Watch:
    """Samples the victim's /v1/health latency and the server's RSS while
    an attack runs."""

    def __init__(self, port, pid):
        self.port, self.pid, self.stop = port, pid, threading.Event()
        self.health, self.statuses, self.rss = [], [], 0
        self.threads = [threading.Thread(target=self._health), threading.Thread(target=self._rss)]

    def __enter__(self):
        [t.start() for t in self.threads]
        return self

    def __exit__(self, *_):
        self.stop.set()
        [t.join() for t in self.threads]

    def _health(self):
        while not self.stop.is_set():
            status, _, seconds = request(self.port, "GET", "/v1/health", timeout=10)
            self.statuses.append(status)
            self.health.append(seconds * 1000)
            time.sleep(0.01)

    def _rss(self):
        while not self.stop.is_set():
            try:
                self.rss = max(self.rss, proc_status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                pass
            time.sleep(0.05)

    def summary(self):
        served = sum(1 for s in self.statuses if s == 200)
        return (f"health p50 {statistics.median(self.health):.1f} ms, p99 {percentile(self.health, 0.99):.1f} ms, "
                f"{served}/{len(self.statuses)} answered")


def row(attack, victim, watch, target):
    print(f"| {attack} | {victim} | {watch.rss / 1024:.1f} MiB | {target} |", flush=True)


def hammer(port, pid, loops, seconds):
    """Runs each of `loops` on its own thread (it is given an Event to stop
    at) for `seconds` under a Watch of the victim, and returns the Watch."""
    stop = threading.Event()
    threads = [threading.Thread(target=loop, args=(stop,)) for loop in loops]
    with Watch(port, pid) as watch:
        [t.start() for t in threads]
        time.sleep(seconds)
        stop.set()
        [t.join() for t in threads]
    return watch


def server(work, name, **env):
    """A release server with the shipped connection caps and no trusted
    proxy (bench.py's own defaults raise the caps and trust loopback, which
    would exempt the attackers' addresses from the per-address cap)."""
    port = free_port()
    settings = dict(PBKDF2_ITERATIONS="1000", MAX_CONNECTIONS="256", MAX_CONNECTIONS_PER_ADDRESS="32",
                    TRUST_PROXY="")
    proc, _ = start_server(os.path.join(work, name), port, **{**settings, **env})
    return port, proc


def held_entries(work, quick):
    """Item 2: appends that send all but their last byte, then nothing."""
    port, proc = server(work, "entries")
    try:
        attacker, victim = register(port, "slowpoke"), register(port, "victim")
        for key, token in (("doc", attacker), ("mine", victim)):
            assert request(port, "PUT", f"/v1/stores/{key}", token)[0] == 201
        entry, count = MIB - 40, 64 if quick else 256
        sockets, refused = [], 0
        with Watch(port, proc.pid) as watch:
            for n in range(count):
                s = connect(port, f"127.0.0.{n % 4 + 1}", timeout=0.3)
                sockets.append(s)
                try:
                    s.sendall((f"POST /v1/stores/doc/log HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {attacker}\r\n"
                               f"Content-Length: {entry}\r\n\r\n").encode() + b"x" * (entry - 1))
                    refused += s.recv(16).startswith(b"HTTP/1.1 503")
                except OSError:
                    pass
            status, _, seconds = request(port, "POST", "/v1/stores/mine/log", victim, b"v" * entry)
        row(f"{count} log entries of 1 MiB sent but for their last byte, from 4 addresses",
            f"{refused} refused with 503; victim's 1 MiB append {status} in {seconds * 1000:.0f} ms; "
            + watch.summary(), watch, "RSS bounded by the 32 MiB entry budget; victim served")
        [s.close() for s in sockets]
    finally:
        proc.kill()


def chunked_put(port, key, token, total, source):
    try:
        with connect(port, source, timeout=30) as s:
            s.sendall((f"PUT /v1/stores/{key} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n").encode())
            chunk = b"%x\r\n" % (256 * 1024) + b"u" * (256 * 1024) + b"\r\n"
            for _ in range(total // (256 * 1024)):
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
            return int(s.recv(64).split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


def uploads_in_flight(work, quick):
    """Item 3: chunked uploads larger than the quota left, all at once."""
    port, proc = server(work, "uploads", QUOTA_BYTES=str(10 * MIB))
    root = os.path.join(work, "uploads")
    try:
        attacker, victim = register(port, "chunky"), register(port, "victim")
        size, count = (20 if quick else 62) * MIB, 6
        peak = [0]
        stop = threading.Event()

        def staged():
            while not stop.is_set():
                tmp = os.path.join(root, "tmp")
                total = sum(e.stat().st_size for e in os.scandir(tmp)) if os.path.isdir(tmp) else 0
                peak[0] = max(peak[0], total)
                time.sleep(0.005)
        sampler = threading.Thread(target=staged)
        sampler.start()
        statuses = []
        with Watch(port, proc.pid) as watch:
            threads = [threading.Thread(target=lambda n=n: statuses.append(
                chunked_put(port, f"s{n}", attacker, size, f"127.0.0.{n % 4 + 1}"))) for n in range(count)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            status, _, seconds = request(port, "PUT", "/v1/stores/small", victim, b"v" * 1024)
        stop.set()
        sampler.join()
        used = json.loads(request(port, "GET", "/v1/account", attacker)[1])["bytes_used"]
        row(f"{count} chunked {size // MIB} MiB uploads by an account with a 10 MiB quota",
            f"statuses {sorted(str(s or 'cut off while sending') for s in statuses)}; at most {peak[0] / MIB:.1f} MiB staged at once; bytes_used {used}; "
            f"victim's PUT {status} in {seconds * 1000:.0f} ms; " + watch.summary(), watch,
            "staged bytes within the quota room; victim served")
    finally:
        proc.kill()


def sliding_pace(work, quick):
    """Item 3: 2 MiB at once, then a byte every 5 s."""
    port, proc = server(work, "pace", MAX_STORE_BYTES=str(64 * MIB))
    try:
        token = register(port, "sprinter")
        with Watch(port, proc.pid) as watch:
            s = connect(port, "127.0.0.1", timeout=0.1)
            s.sendall((f"PUT /v1/stores/k HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n"
                       "Content-Length: 67108864\r\n\r\n").encode() + b"x" * (2 * MIB))
            started, answer = time.monotonic(), b""
            while not answer and time.monotonic() - started < 120:
                try:
                    s.sendall(b"x")
                    answer = s.recv(64)
                except socket.timeout:
                    time.sleep(5)
                except OSError:
                    break
            cut = time.monotonic() - started
        row("an upload sends 2 MiB at once, then one byte every 5 s",
            f"cut off after {cut:.0f} s ({answer[:12].decode(errors='replace') or 'closed'}); " + watch.summary(),
            watch, "cut within 40 s (an average since the start allowed 512 s)")
    finally:
        proc.kill()


def empty_stores(work, quick):
    """Items 4 and 5: many empty stores with long keys and metadata."""
    port, proc = server(work, "stores", QUOTA_BYTES=str(1_000_000_000))
    try:
        token = register(port, "hoarder")
        count = 400 if quick else 4000
        meta, pad = "m" * 8000, "k" * 1000
        created = 0
        with Watch(port, proc.pid) as watch:
            def maker(start):
                nonlocal created
                for i in range(start, count, 8):
                    if request(port, "PUT", f"/v1/stores/{pad}{i:05d}", token, headers=(("Sync-Meta", meta),),
                               source="127.0.0.1")[0] == 201:
                        created += 1
            threads = [threading.Thread(target=maker, args=(t,)) for t in range(8)]
            [t.start() for t in threads]
            [t.join() for t in threads]
        used = json.loads(request(port, "GET", "/v1/account", token)[1])["bytes_used"]
        row(f"{count} empty stores with 1 KiB keys and 8,000-byte metadata",
            f"{created} created; bytes_used {used / created:.0f} per store (was 0); " + watch.summary(), watch,
            "each counts its key, metadata and rows")
        times = []

        def summer(stop):
            while not stop.is_set():
                times.append(request(port, "GET", "/v1/account", token, source="127.0.0.2")[2] * 1000)
        watch = hammer(port, proc.pid, [summer] * 32, 2 if quick else 10)
        row(f"32 connections asking GET /v1/account of an account of {created} stores",
            f"its p50 {statistics.median(times):.1f} ms; " + watch.summary(), watch,
            "health p99 ≤ 10 ms (a counter, not a sum)")

        def pinger(stop):
            while not stop.is_set():
                request(port, "GET", "/v1/health", source="127.0.0.2")
        watch = hammer(port, proc.pid, [pinger] * 32, 2 if quick else 10)
        row("32 connections asking GET /v1/health (for comparison: the cheapest request)", watch.summary(), watch,
            "the floor of the row above on this machine")
    finally:
        proc.kill()


def long_logs(work, quick):
    """Item 5: deleting and compacting long logs."""
    name = "logs"
    port, proc = server(work, name)
    root = os.path.join(work, name)
    entries = 100_000 if quick else 1_000_000
    try:
        token = register(port, "logger")
        for key in ("gone", "folded"):
            assert request(port, "PUT", f"/v1/stores/{key}", token, b"body")[0] == 201
            assert request(port, "POST", f"/v1/stores/{key}/log", token, b"e")[0] == 201
    finally:
        proc.kill()
        proc.wait()
    db = sqlite3.connect(os.path.join(root, "sync-node.db"))
    for key in ("gone", "folded"):
        log_id, head, total = db.execute("SELECT log_id, log_head, log_total FROM sync_store WHERE store_key = ?",
                                         (key,)).fetchone()
        db.executemany("INSERT INTO store_entry (log_id, idx, cum, bytes) VALUES (?, ?, ?, x'00')",
                       ((log_id, head + n, total + n) for n in range(1, entries + 1)))
        db.execute("UPDATE sync_store SET log_head = log_head + ?1, log_bytes = log_bytes + ?1, "
                   "log_total = log_total + ?1 WHERE store_key = ?2", (entries, key))
    db.commit()
    db.close()
    proc, _ = start_server(root, port, PBKDF2_ITERATIONS="1000")
    try:
        def left():
            with sqlite3.connect(os.path.join(root, "sync-node.db")) as check:
                return check.execute("SELECT count(*) FROM store_entry").fetchone()[0]
        with Watch(port, proc.pid) as watch:
            time.sleep(0.5)
            started = time.monotonic()
            status, _, deleted_in = request(port, "DELETE", "/v1/stores/gone", token, headers=(("If-Match", "*"),))
            assert status == 204, status
            etag_headers = (("If-Match", "*"), ("Sync-Log-Base", str(entries + 1)))
            status, _, compacted_in = request(port, "PUT", "/v1/stores/folded", token, b"folded", etag_headers)
            assert status == 200, status
            while left() > 0 and time.monotonic() - started < 120:
                time.sleep(0.2)
            reaped_in = time.monotonic() - started
        row(f"deleting a store with {entries:,} log entries and compacting another",
            f"answered in {deleted_in * 1000:.0f} / {compacted_in * 1000:.0f} ms; rows gone after {reaped_in:.1f} s; "
            + watch.summary(), watch, "health p99 ≤ 10 ms")
    finally:
        proc.kill()


def hashing_places(work, quick):
    """Item 6: correct sign-ins from four addresses, over and over."""
    port, proc = server(work, "hashing", TRUST_PROXY="1", PBKDF2_ITERATIONS="100000")
    try:
        accounts = [(f"198.51.100.{a + 1}", f"attacker{a}x{n}") for a in range(4) for n in range(4)]
        for source, account in accounts:
            register(port, account, headers=(("X-Forwarded-For", source),))
        register(port, "victim", headers=(("X-Forwarded-For", "203.0.113.9"),))
        stop = threading.Event()

        def flood(source, account):
            while not stop.is_set():
                request(port, "POST", "/v1/sessions", body={"id": account, "password": PASSWORD},
                        headers=(("X-Forwarded-For", source),), source="127.0.0.1")
        threads = [threading.Thread(target=flood, args=who) for who in accounts for _ in range(5)]
        with Watch(port, proc.pid) as watch:
            [t.start() for t in threads]
            time.sleep(0.5)
            victim = [request(port, "POST", "/v1/sessions", body={"id": "victim", "password": PASSWORD},
                              headers=(("X-Forwarded-For", "203.0.113.9"),)) for _ in range(3 if quick else 10)]
            stop.set()
            [t.join() for t in threads]
        statuses = [status for status, _, _ in victim]
        row("80 connections signing in correctly to 16 accounts from 4 addresses",
            f"victim's sign-ins {statuses}, median {statistics.median(s for _, _, s in victim) * 1000:.0f} ms; "
            + watch.summary(), watch, "the victim signs in every time")
    finally:
        proc.kill()


def slow_readers(work, quick):
    """Item 8: large log pages asked for and never read, from 4 addresses."""
    port, proc = server(work, "readers")
    try:
        token = register(port, "hoarder")
        assert request(port, "PUT", "/v1/stores/doc", token, b"body")[0] == 201
        for _ in range(4):
            assert request(port, "POST", "/v1/stores/doc/log", token, b"z" * (MIB - 12))[0] == 201
        sockets = []
        with Watch(port, proc.pid) as watch:
            for n in range(8):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.bind((f"127.0.0.{n % 4 + 1}", 0))
                s.connect(("127.0.0.1", port))
                s.sendall(f"GET /v1/stores/doc/log HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
                sockets.append(s)
            time.sleep(1)
            pages = [request(port, "GET", "/v1/stores/doc/log", token)[0] for _ in range(5)]
        row("8 log pages of 4 MiB asked for and never read, from 4 addresses",
            f"victim's full pages {pages}; " + watch.summary(), watch, "victim's pages 200")
        [s.close() for s in sockets]
    finally:
        proc.kill()


def write_flood(work, quick):
    """The loop's turns: 4 addresses keep 4 × 30 writes in flight, store
    bodies (committed in groups) and grants (one commit each)."""
    port, proc = server(work, "flood")
    try:
        token = register(port, "flooder")
        register(port, "grantee")
        for n in range(120):
            assert request(port, "PUT", f"/v1/stores/f{n}", token, b"x")[0] == 201
        bodies = lambda n: (f"PUT /v1/stores/f{n} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n"
                            "If-Match: *\r\nContent-Length: 1\r\n\r\nx").encode()

        def grants(n, flip=[0]):
            flip[0] ^= 1
            body = json.dumps({"account": "grantee", "permission": "READ" if flip[0] else None}).encode()
            return (f"PUT /v1/stores/f{n}/permissions HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for name, make in (("replacing stores", bodies), ("granting and revoking", grants)):

            def writer(stop, n):
                s = connect(port, f"127.0.0.{n % 4 + 1}")
                f = s.makefile("rb")
                while not stop.is_set():
                    s.sendall(make(n))
                    length = 0
                    while (line := f.readline()) not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    f.read(length)
                s.close()
            writers = [lambda stop, n=n: writer(stop, n) for n in range(120)]
            watch = hammer(port, proc.pid, writers, 2 if quick else 10)
            row(f"120 connections from 4 addresses {name} as fast as they can", watch.summary(), watch,
                "the victim waits for a turn, not for every write in flight")
    finally:
        proc.kill()


def arriving_requests(work, quick):
    """Issue 22: requests that send a head and most of a 64 KiB JSON body,
    then nothing, from many addresses (each within its connection cap)."""
    count = 300 if quick else 6000
    port, proc = server(work, "arriving", MAX_CONNECTIONS=str(count + 200))
    head = (b"POST /v1/sessions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            b"Content-Length: 65536\r\n\r\n")
    body = b'{"id":"' + b"x" * 65000
    held, refused = [], 0
    try:
        with Watch(port, proc.pid) as watch:
            for n in range(count):
                s = connect(port, f"127.0.{5 + n // 30 // 250}.{1 + (n // 30) % 250}")
                s.sendall(head + body)
                held.append(s)
            time.sleep(1)
        for s in held:
            s.setblocking(False)
            try:
                refused += s.recv(64).startswith(b"HTTP/1.1 503")
            except OSError:
                pass
        row(f"{count:,} connections from {count // 30} addresses: a head and 65,000 bytes of a 64 KiB JSON body each, "
            "then nothing", f"{watch.summary()}; {refused:,} refused with 503", watch,
            "RSS bounded by the request memory (32 MiB), health unaffected")
    finally:
        [s.close() for s in held]
        proc.kill()


def descriptors(work, quick):
    """Item 7: a MAX_CONNECTIONS the descriptors cannot serve."""
    env = dict(os.environ, STATIC_ROOT=os.path.join(work, "fds"), PORT="0", BIND="127.0.0.1", MAX_CONNECTIONS="1000")
    out = subprocess.run(["prlimit", "--nofile=1024:1024", BIN], env=env, capture_output=True, timeout=30)
    line = out.stderr.decode().strip().splitlines()[-1] if out.stderr else ""
    print(f"| MAX_CONNECTIONS=1000 under a descriptor limit of 1,024 | exit {out.returncode}: {line[:90]}… | — "
          "| refused at start (exit 2), not 500s later |", flush=True)


ROWS = [held_entries, uploads_in_flight, sliding_pace, empty_stores, long_logs, hashing_places, slow_readers,
        write_flood, arriving_requests, descriptors]
