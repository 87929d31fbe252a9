#!/usr/bin/env python3
"""The Sync Node benchmark (run it through bench/run.sh, which builds first).

Starts Sync Node (release build) and nginx on loopback, measures the
ceilings (nginx serving a static 1 KiB file; this disk's durable-write
ceiling), drives every workload with wrk at 1, 16 and 64 connections, and
prints a Markdown table with each row's ratio to its ceiling, then the
footprint (binary size, idle RSS, RSS under load, cold start)."""
import argparse, json, math, os, re, shutil, socket, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
# SYNC_NODE_BIN names another build to measure (say, the one before a change).
BIN = os.environ.get("SYNC_NODE_BIN") or os.path.join(TOP, "target", "release", "sync-node")
CEILING = os.path.join(TOP, "target", "release", "examples", "write_ceiling")
# Environment for the processes whose disk is slowed down (--fsync-delay-ms).
SLOW_DISK = {}
WRK = os.path.join(HERE, "wrk")
PASSWORD = "benchmark password"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, token=None, body=None, headers=()):
    """One request on its own connection; returns (status, headers dict, body)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + b"\r\n" + data)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
    return int(lines[0].split()[1]), fields, payload


def login_accounts_per_connection(conns, seconds):
    """Accounts one login connection cycles through: at most 50 sign-ins
    each, at up to 30 PBKDF2 runs a second on each core it can use."""
    per_connection = seconds * 30 * min(os.cpu_count(), conns) / conns
    return max(1, math.ceil(per_connection / 50))


def sign_in_seconds(port):
    """How long one sign-in takes, and whether it was let in."""
    started = time.monotonic()
    status = http(port, "POST", "/v1/sessions", body={"id": "login-drain", "password": PASSWORD},
                  headers=(("X-Forwarded-For", "10.3.0.1"),))[0]
    return time.monotonic() - started if status == 201 else None


def drained(port, one_sign_in, most=60):
    """Waits until a sign-in takes no longer than alone: the sign-ins wrk
    left behind when it stopped (their PBKDF2 jobs run to the end, holding
    their places) would otherwise refuse the next row's first requests,
    which wrk then repeats as fast as 503s come."""
    until = time.monotonic() + most
    while time.monotonic() < until:
        took = sign_in_seconds(port)
        if took is not None and took < 2 * one_sign_in:
            return
        time.sleep(0.2)
    raise SystemExit("the sign-ins of a login row did not drain in a minute")


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmRSS", "VmHWM"))}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_server(root, port, **env):
    # Loopback is a trusted proxy, so the login row's accounts can register
    # from forwarded addresses (10 registrations an hour per address).
    defaults = dict(MAX_CONNECTIONS="1024", MAX_CONNECTIONS_PER_ADDRESS="1024", MAX_LOG_BYTES="1073741824",
                    TRUST_PROXY="1")
    environment = dict(os.environ, PORT=str(port), BIND="127.0.0.1", STATIC_ROOT=root, **{**defaults, **env}, **SLOW_DISK)
    started = time.monotonic()
    proc = subprocess.Popen([BIN], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if http(port, "GET", "/v1/health")[0] == 200:
                return proc, time.monotonic() - started
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit("sync-node exited at start")
        time.sleep(0.001)


def start_nginx(work, port):
    docroot = os.path.join(work, "www")
    os.makedirs(docroot)
    with open(os.path.join(docroot, "1k.bin"), "wb") as f:
        f.write(b"x" * 1024)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 60;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
    uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    server {{ listen 127.0.0.1:{port}; root {docroot}; }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if http(port, "GET", "/1k.bin")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.01)
    proc.kill()
    sys.exit(f"nginx did not serve {docroot}/1k.bin (see {work}/nginx-error.log)")


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(port, script, conns, seconds, env, threads=None, timeout="10s"):
    threads = threads or min(conns, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", f"--timeout={timeout}", "--latency",
           "-s", os.path.join(WRK, script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    result["p50"] = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    result["p99"] = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(errors.group(1)) if errors else 0
    conflicts = re.search(r"conflicts (\d+)", out)
    result["conflicts"] = int(conflicts.group(1)) if conflicts else 0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = socket_errors.group(1) if socket_errors else ""
    return result


def measured(pid, fn):
    """Runs fn while sampling the server's RSS; adds RSS and CPU figures."""
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(proc_status(pid)["VmRSS"])
            stop.wait(0.25)

    sampler = threading.Thread(target=sample)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    sampler.start()
    result = fn()
    stop.set()
    sampler.join()
    result["cpu"] = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    result["rss"] = max(samples)
    result["hwm"] = proc_status(pid)["VmHWM"]
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--conns", default="1,16,64")
    parser.add_argument("--workloads", default="get,get304,put,append,log read,login,changes",
                        help="comma-separated subset of the workload rows")
    parser.add_argument("--fsync-delay-ms", type=float, default=0,
                        help="make every fsync of the server and the ceilings this much slower "
                             "(an SD-card-like disk; LD_PRELOAD of bench/slowdisk)")
    args = parser.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    wanted = args.workloads.split(",")
    if args.fsync_delay_ms:
        shim = os.path.join(TOP, "bench", "slowdisk", "libfsync_delay.so")
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", shim, os.path.join(TOP, "bench", "slowdisk", "fsync_delay.c"),
                        "-ldl"], check=True)
        SLOW_DISK.update(LD_PRELOAD=shim, FSYNC_DELAY_US=str(int(args.fsync_delay_ms * 1000)))
    work = tempfile.mkdtemp(prefix="sync-node-bench-")
    os.chmod(work, 0o755)  # nginx's worker may run as another user
    procs = []
    try:
        # Cold start on a fresh and on an existing data directory.
        root = os.path.join(work, "data")
        port = free_port()
        proc, cold_fresh = start_server(root, port)
        proc.kill(); proc.wait()
        proc, cold = start_server(root, port)
        procs.append(proc)
        time.sleep(1)
        idle = proc_status(proc.pid)["VmRSS"]

        status, _, body = http(port, "POST", "/v1/accounts", body={"id": "bench", "password": PASSWORD})
        token = json.loads(body)["token"]
        status, fields, _ = http(port, "PUT", "/v1/stores/bench-1k", token, b"x" * 1024)
        etag = fields["etag"]
        for i in range(20):
            http(port, "PUT", f"/v1/stores/listed-{i}", token, b"y" * 100)
        # One store per append connection (warm-up and measured rows), and one
        # log of 100 entries of 500 bytes to read.
        for c in conns:
            for prefix in (f"append-{c}-", f"warm-append-{c}-"):
                for i in range(1, c + 1):
                    http(port, "PUT", f"/v1/stores/{prefix}{i}", token, b"body")
        # Accounts of their own for each login connection and row, enough
        # that none signs in more than 50 times (an account may 60 times an
        # hour), even at 30 PBKDF2 runs a second per core.
        login_accounts = {c: login_accounts_per_connection(c, args.warmup + args.seconds) for c in conns}
        logins = [(c, i, k) for c in conns for i in range(1, c + 1) for k in range(1, login_accounts[c] + 1)
                  if "login" in wanted]
        for n, (c, i, k) in enumerate(logins):
            forwarded = (("X-Forwarded-For", f"10.0.{n // 200}.{n % 200 + 1}"),)
            created = http(port, "POST", "/v1/accounts", body={"id": f"login-{c}-{i}-{k}", "password": PASSWORD},
                           headers=forwarded)[0]
            assert created == 201, f"registering login-{c}-{i}-{k}: {created}"
        if "login" in wanted:
            http(port, "POST", "/v1/accounts", body={"id": "login-drain", "password": PASSWORD},
                 headers=(("X-Forwarded-For", "10.3.0.1"),))
            one_sign_in = sign_in_seconds(port)
        http(port, "PUT", "/v1/stores/bench-log", token, b"snapshot")
        for i in range(100):
            http(port, "POST", "/v1/stores/bench-log/log", token, b"u" * 500)
        env = {"SYNC_TOKEN": token, "SYNC_KEY": "bench-1k", "SYNC_ETAG": etag,
               "SYNC_PASSWORD": PASSWORD, "SYNC_LOG_KEY": "bench-log"}

        nginx_port = free_port()
        os.makedirs(os.path.join(work, "nginx"))
        procs.append(start_nginx(os.path.join(work, "nginx"), nginx_port))

        ceiling_dir = os.path.join(work, "ceiling")
        ceiling_env = dict(os.environ, **SLOW_DISK)
        out = subprocess.run([CEILING, ceiling_dir, str(args.seconds)], capture_output=True, text=True, check=True,
                             env=ceiling_env).stdout
        write_ceiling = float(out.split()[1])
        out = subprocess.run([CEILING, ceiling_dir, str(args.seconds), "append"], capture_output=True, text=True,
                             check=True, env=ceiling_env).stdout
        append_ceiling = float(out.split()[1])

        rows, nginx_rps = [], {}
        for c in conns:
            wrk(nginx_port, "nginx.lua", c, args.warmup, {})
            r = wrk(nginx_port, "nginx.lua", c, args.seconds, {})
            nginx_rps[c] = r["rps"]
            rows.append(("nginx static 1 KiB (ceiling)", c, r, None, None))
        workloads = [("get", "get.lua", {}), ("get304", "get304.lua", {}), ("put", "put.lua", {}),
                     ("append", "append.lua", {}), ("log read", "logread.lua", {}),
                     ("login", "login.lua", {"timeout": "60s"}), ("changes", "changes.lua", {})]
        for name, script, extra in workloads:
            if name not in wanted:
                continue
            for c in conns:
                row_env = dict(env, SYNC_PREFIX=f"{name}-{c}-", SYNC_ID=f"login-{c}",
                               SYNC_ACCOUNTS=str(login_accounts.get(c, 1)))
                threads = c if name in ("put", "append", "login") else None
                wrk(port, script, c, args.warmup, dict(row_env, SYNC_PREFIX=f"warm-{name}-{c}-"), threads, **extra)
                if name == "login":
                    drained(port, one_sign_in)
                if name in ("get", "get304"):
                    # The ceiling again right before the row: this VM's
                    # speed drifts within minutes, more than the ratio.
                    beside = wrk(nginx_port, "nginx.lua", c, args.seconds, {})["rps"]
                r = measured(proc.pid, lambda: wrk(port, script, c, args.seconds, row_env, threads, **extra))
                if name == "login":
                    drained(port, one_sign_in)
                if name in ("get", "get304"):
                    r["nginx_beside"] = beside
                    ratio = (r["rps"] / beside, "nginx")
                elif name == "put":
                    ratio = (r["rps"] / write_ceiling, "write ceiling")
                elif name == "append":
                    ratio = (r["rps"] / append_ceiling, "append ceiling")
                else:
                    ratio = None
                rows.append((name, c, r, ratio, None))

        print(f"Sync Node benchmark — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {os.uname().machine}, "
              f"{args.seconds} s per row after {args.warmup} s warm-up; wrk and the server share the machine"
              + (f"; every fsync {args.fsync_delay_ms:g} ms slower (bench/slowdisk)" if args.fsync_delay_ms else "") + ".\n")
        print("| workload | conns | req/s | p50 ms | p99 ms | ratio to ceiling | server RSS max / HWM KiB | server CPU % | notes |")
        print("|---|---:|---:|---:|---:|---|---|---:|---|")
        under_load = 0
        for name, c, r, ratio, _ in rows:
            ratio_text = f"{100 * ratio[0]:.0f} % of {ratio[1]}" if ratio else "—"
            rss = f"{r['rss']} / {r['hwm']}" if "rss" in r else "—"
            cpu = f"{r['cpu']:.0f}" if "cpu" in r else "—"
            notes = []
            if r["non2xx"] and name not in ("get304",):
                notes.append(f"{r['non2xx']} non-2xx")
            if r["conflicts"]:
                notes.append(f"{r['conflicts']} × 412")
            if r["socket_errors"]:
                notes.append("socket errors: " + r["socket_errors"])
            if "nginx_beside" in r:
                notes.append(f"nginx {r['nginx_beside']:.0f} req/s just before")
            if c == max(conns) and "rss" in r:
                under_load = max(under_load, r["rss"])
            print(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {ratio_text} | {rss} | {cpu} | {', '.join(notes)} |")
        print(f"\nDurable-write ceiling of this disk (1 KiB temp file + fsync + rename + dir fsync + SQLite FULL commit, one writer): {write_ceiling:.0f} ops/s")
        print(f"Append ceiling (one 1 KiB blob INSERT + SQLite FULL commit, one writer): {append_ceiling:.0f} ops/s\n")
        print("| footprint | value |")
        print("|---|---|")
        print(f"| stripped release binary | {os.path.getsize(BIN) / 1e6:.2f} MB ({os.path.getsize(BIN)} bytes) |")
        print(f"| idle RSS after start | {idle / 1024:.1f} MiB ({idle} KiB) |")
        print(f"| RSS under {max(conns)} connections (max sampled) | {under_load / 1024:.1f} MiB ({under_load} KiB) |")
        print(f"| cold start to first /v1/health answer | {1000 * cold:.1f} ms (first start on an empty directory: {1000 * cold_fresh:.1f} ms) |")
    finally:
        # SIGTERM, not SIGKILL: nginx's master then stops its worker too
        # (a killed master left the worker behind).
        for p in procs:
            if p:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
