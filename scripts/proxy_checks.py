"""Checks one reverse proxy in front of a running Sync Node (TRUST_PROXY=1,
ACCESS_LOG=1): long-polls of 60 s pass, feed streams (SPEC §6.1) pass
unbuffered and outlive the proxy's timeouts, uploads are streamed, and the
client address (and so every per-address limit) comes from the proxy's
X-Forwarded-For, which a client cannot forge. Used by scripts/test-proxy.sh.

    python3 scripts/proxy_checks.py PROXY_PORT DATA_DIR SERVER_LOG NAME
"""
import http.client, json, os, socket, sys, threading, time

PORT, DATA, LOG, NAME = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
PASSWORD = "a long passphrase"


def call(method, path, body=None, token=None, source="127.0.0.2", headers=None, timeout=90):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout, source_address=(source, 0))
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def register(ident, source, headers=None):
    status, data = call("POST", "/v1/accounts", json.dumps({"id": ident, "password": PASSWORD}).encode(), source=source, headers=headers)
    return status, (json.loads(data).get("token") if status == 201 else None)


failures = []


def check(ok, what):
    print(f"  {'ok ' if ok else 'FAIL'} {NAME}: {what}")
    if not ok:
        failures.append(what)


stamp = str(time.time_ns())
status, token = register(f"proxy-{stamp}@example.org", "127.0.0.2", headers={"X-Forwarded-For": "203.0.113.1"})
check(status == 201, f"registration through the proxy (status {status})")

# 1. A long-poll of 60 s (an account of its own, which nothing below
#    changes) comes back 200 with no changes, not a proxy timeout.
_, quiet = register(f"quiet-{stamp}@example.org", "127.0.0.5")
seq = json.loads(call("GET", "/v1/changes?since=0", token=quiet)[1])["seq"]
poll = {}


def long_poll():
    started = time.time()
    poll["status"], data = call("GET", f"/v1/changes?since={seq}&wait=60", token=quiet)
    poll["took"] = time.time() - started
    poll["changes"] = json.loads(data).get("changes") if poll["status"] == 200 else None


poller = threading.Thread(target=long_poll)
poller.start()

# 1b. A feed stream held as long as the long-poll: each event comes
#     through at once (not buffered), keep-alive comments hold it open past
#     the proxy's timeouts, and an event after that still arrives.
_, streamer = register(f"streamer-{stamp}@example.org", "127.0.0.6")
stream_sock = socket.create_connection(("127.0.0.1", PORT), timeout=90, source_address=("127.0.0.6", 0))
stream_sock.sendall(f"GET /v1/changes?since=0 HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nAccept: text/event-stream\r\n"
                    f"Authorization: Bearer {streamer}\r\n\r\n".encode())
stream = {"data": b"", "arrivals": []}


def read_stream():
    while True:
        try:
            data = stream_sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        stream["data"] += data
        stream["arrivals"].append((time.time(), data))


streaming = threading.Thread(target=read_stream, daemon=True)
streaming.start()
time.sleep(1)
written = time.time()
call("PUT", f"/v1/stores/early-{stamp}", b"x", token=streamer, source="127.0.0.6")
time.sleep(2)
early = [at for at, data in stream["arrivals"] if b"early-" in data]
check(stream["data"].startswith(b"HTTP/1.1 200") and early and early[0] - written < 1.5,
      f"a stream's event passes at once ({(early[0] - written) if early else None} s)")

# 2. An upload is streamed: its staged file grows on the server while the client still sends.
size, chunk = 1_000_000, 50_000
conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60, source_address=("127.0.0.2", 0))
conn.putrequest("PUT", "/v1/stores/streamed-" + stamp)
conn.putheader("Authorization", f"Bearer {token}")
conn.putheader("Content-Length", str(size))
conn.endheaders()
staged_while_sending = 0
for i in range(size // chunk):
    conn.send(b"s" * chunk)
    time.sleep(0.2)
    if i == size // chunk // 2:
        tmp = os.path.join(DATA, "tmp")
        staged_while_sending = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
resp = conn.getresponse()
resp.read()
check(resp.status == 201, f"a 1 MB upload at 250 KB/s arrives (status {resp.status})")
check(0 < staged_while_sending < size, f"the server was receiving it while it was sent ({staged_while_sending} bytes staged half-way)")

# 3. Per-address limits use the address the proxy saw: ten registrations
#    from 127.0.0.3 use up its hour (whatever X-Forwarded-For it forges),
#    and 127.0.0.4 is not affected.
for i in range(10):
    register(f"limit-{stamp}-{i}@example.org", "127.0.0.3", headers={"X-Forwarded-For": f"198.51.100.{i}"})
status, _ = register(f"limit-{stamp}-x@example.org", "127.0.0.3", headers={"X-Forwarded-For": "198.51.100.99"})
check(status == 429, f"the 11th registration from one client is refused, forged header or not (status {status})")
status, _ = register(f"limit-{stamp}-y@example.org", "127.0.0.4")
check(status == 201, f"another client is not (status {status})")

poller.join()
written = time.time()
call("PUT", f"/v1/stores/late-{stamp}", b"x", token=streamer, source="127.0.0.6")
time.sleep(2)
late = [at for at, data in stream["arrivals"] if b"late-" in data]
check(stream["data"].count(b": keep-alive") >= 2 and late and late[0] - written < 1.5,
      f"the stream outlives 60 s on keep-alive comments ({stream['data'].count(b': keep-alive')}) and still passes events")
stream_sock.close()
check(poll.get("status") == 200 and poll.get("changes") == [] and poll.get("took", 0) >= 59,
      f"a 60 s long-poll passes (status {poll.get('status')}, {poll.get('took', 0):.1f} s)")

log = open(LOG).read()
check("access 127.0.0.2 POST /v1/accounts 201" in log, "the access log names the client the proxy saw")
check("203.0.113.1" not in log and "198.51.100." not in log, "no forged address reaches the log")
check("WARN registration-limit address=127.0.0.3" in log, "the registration limit's log line names the client")
sys.exit(1 if failures else 0)
