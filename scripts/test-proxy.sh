#!/usr/bin/env bash
# Tests the reverse-proxy recipes of docs/operations.md — contrib/nginx/
# sync-node.conf with Debian's nginx, and contrib/Caddyfile with Debian's
# caddy when it is installed — in front of the real server (TRUST_PROXY=1):
# a 60 s long-poll passes, a feed stream passes unbuffered for 60 s, uploads are streamed, and per-address limits
# come from the proxy's X-Forwarded-For (scripts/proxy_checks.py). The
# nginx file as shipped must pass `nginx -t` (with a throw-away
# certificate); the checks then run over plain HTTP on loopback, with only
# the TLS lines and addresses changed. Takes about 70 s per proxy.
#   sudo apt-get install nginx python3 [caddy]
#   scripts/test-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test-proxy: the nginx (and Caddy) recipes in front of the real server: 60 s long-polls and feed streams, streamed uploads, limits by forwarded address"
command -v nginx >/dev/null || { echo "test-proxy: nginx is missing (sudo apt-get install nginx)" >&2; exit 1; }
[ -x target/release/sync-node ] || cargo build --release --locked --quiet
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A fresh server per proxy (the limits checked are per server).
start_server() {
  local data="$work/data-$1" log="$work/server-$1.log"
  SERVER_PORT=$(free_port)
  STATIC_ROOT="$data" PORT=$SERVER_PORT BIND=127.0.0.1 TRUST_PROXY=1 ACCESS_LOG=1 PBKDF2_ITERATIONS=1000 \
    target/release/sync-node 2> "$log" &
  pids+=($!)
  for _ in $(seq 50); do grep -q "listening on" "$log" && return; sleep 0.1; done
  echo "test-proxy: the server did not start: $(cat "$log")" >&2; exit 1
}

status=0
# The file as shipped, certificate paths aside, is valid for this nginx.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=sync.example.org \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
sed -e "s#/etc/letsencrypt/live/sync.example.org/fullchain.pem#$work/cert.pem#" \
    -e "s#/etc/letsencrypt/live/sync.example.org/privkey.pem#$work/key.pem#" \
    contrib/nginx/sync-node.conf > "$work/shipped.conf"
mkdir -p "$work/nginx-t"
printf 'pid %s/nginx-t.pid;\nerror_log stderr;\nevents {}\nhttp {\n    include %s/shipped.conf;\n}\n' "$work" "$work" \
    > "$work/nginx-t.conf"
nginx -t -q -c "$work/nginx-t.conf" -p "$work/nginx-t" || { echo "test-proxy: nginx -t refuses contrib/nginx/sync-node.conf" >&2; exit 1; }
echo "== nginx -t accepts contrib/nginx/sync-node.conf as shipped"

start_server nginx
PROXY_PORT=$(free_port)
sed -e "s/listen 443 ssl http2;/listen 127.0.0.1:$PROXY_PORT;/" -e '/listen \[::\]:443/d' -e '/ssl_certificate/d' \
    -e "s#proxy_pass http://127.0.0.1:8080;#proxy_pass http://127.0.0.1:$SERVER_PORT;#" \
    contrib/nginx/sync-node.conf > "$work/site.conf"
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<CONF
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    include $work/site.conf;
}
CONF
nginx -t -q -c "$work/nginx.conf" -p "$work/nginx"
nginx -c "$work/nginx.conf" -p "$work/nginx" &
pids+=($!)
sleep 0.5
echo "== nginx $(nginx -v 2>&1 | sed 's/.*\///')"
python3 scripts/proxy_checks.py "$PROXY_PORT" "$work/data-nginx" "$work/server-nginx.log" nginx || status=1

if command -v caddy >/dev/null; then
  start_server caddy
  PROXY_PORT=$(free_port)
  # The recipe's global options, plus no admin endpoint and a private store.
  sed -e "0,/^{\$/s##{\n\tadmin off\n\tstorage file_system $work/caddy#" \
      -e "s#^sync.example.org {#http://127.0.0.1:$PROXY_PORT {#" -e "s#reverse_proxy 127.0.0.1:8080#reverse_proxy 127.0.0.1:$SERVER_PORT#" \
      contrib/Caddyfile > "$work/Caddyfile"
  XDG_DATA_HOME="$work/caddy" XDG_CONFIG_HOME="$work/caddy" caddy run --config "$work/Caddyfile" --adapter caddyfile \
    > "$work/caddy.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $PROXY_PORT), 0.2)" 2>/dev/null && break; sleep 0.1; done
  echo "== caddy $(caddy version | cut -d' ' -f1)"
  python3 scripts/proxy_checks.py "$PROXY_PORT" "$work/data-caddy" "$work/server-caddy.log" caddy || status=1
else
  echo "== caddy is not installed: its recipe was not tested (sudo apt-get install caddy)"
fi
[ $status = 0 ] && echo "test-proxy: all checks passed" || echo "test-proxy: FAILED"
exit $status
