#!/usr/bin/env python3
"""Holds N long-polls spread over 10 accounts that share one store (a server
holds at most 64 per account), reports the server's RSS while they are
parked, then commits one write to the shared store and reports how long
until every poll has its answer. Usage: bench/longpoll.py [N]  (builds nothing: run `cargo build --release` first)."""
import json, os, shutil, socket, subprocess, sys, tempfile, threading, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "sync-node")

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return {l.split(":")[0]: int(l.split()[1]) for l in status if l.startswith(("VmRSS", "VmHWM"))}

def request(port, method, path, token=None, body=b"", headers=()):
    s = socket.create_connection(("127.0.0.1", port))
    head = f"{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1] or b"null")

root = tempfile.mkdtemp()
env = dict(os.environ, PORT="0", BIND="127.0.0.1", STATIC_ROOT=root, MAX_CONNECTIONS=str(N + 64), PBKDF2_ITERATIONS="1000")
server = subprocess.Popen([BIN], env=env, stderr=subprocess.PIPE, text=True)
port = int(server.stderr.readline().split("http://")[1].split()[0].rsplit(":", 1)[1])
try:
    tokens = [request(port, "POST", "/v1/accounts", body=f'{{"id":"bench{i}","password":"password123"}}'.encode())["token"]
              for i in range(10)]
    token = tokens[0]
    request(port, "PUT", "/v1/stores/shared", token, b"v1")
    for i in range(1, 10):
        request(port, "PUT", "/v1/stores/shared/permissions", token, f'{{"account":"bench{i}","permission":"READ"}}'.encode())
    since = request(port, "GET", "/v1/changes?since=0", token)["seq"]
    idle = rss_kib(server.pid)
    socks = []
    for i in range(N):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /v1/changes?since={since}&wait=60 HTTP/1.1\r\nAuthorization: Bearer {tokens[i % 10]}\r\n\r\n".encode())
        socks.append(s)
    time.sleep(1.0)
    parked = rss_kib(server.pid)
    done = []
    def wait(s):
        s.recv(65536)
        done.append(time.monotonic())
    threads = [threading.Thread(target=wait, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    request(port, "PUT", "/v1/stores/shared", token, b"v2", [("If-Match", "*")])
    for t in threads:
        t.join()
    print(f"{N} parked long-polls: RSS idle {idle['VmRSS']} KiB, parked {parked['VmRSS']} KiB (HWM {parked['VmHWM']} KiB)")
    print(f"wake-up after one commit: first {1000*(min(done)-t0):.1f} ms, last {1000*(max(done)-t0):.1f} ms")
finally:
    server.kill()
    shutil.rmtree(root)
