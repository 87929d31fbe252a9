#!/usr/bin/env bash
# Checks the shipped fail2ban filter (contrib/fail2ban/sync-node-filter.conf)
# with fail2ban's own fail2ban-regex against real server lines, as written
# to a log file and as the journal shows them: it must match the address
# lockout and the registration limit (the attacker's address), and nothing
# else (not the account lockout, whose address may be the owner's, nor
# access lines).   sudo apt-get install fail2ban python3 && scripts/test-fail2ban.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test-fail2ban: the shipped filter, with fail2ban-regex, on real log lines (file and journal form)"
command -v fail2ban-regex >/dev/null || { echo "test-fail2ban: fail2ban-regex is missing (sudo apt-get install fail2ban)" >&2; exit 1; }
[ -x target/release/sync-node ] || cargo build --release --locked --quiet
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
STATIC_ROOT="$work/data" PORT=0 BIND=127.0.0.1 PBKDF2_ITERATIONS=1000 ACCESS_LOG=1 target/release/sync-node 2> "$work/server.log" &
server=$!
for _ in $(seq 50); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$work/server.log")
post() { curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port$1" -d "$2"; }
post /v1/accounts '{"id":"owner@example.org","password":"a long passphrase"}' >/dev/null
for i in $(seq 5); do post /v1/sessions '{"id":"owner@example.org","password":"wrong guess"}' >/dev/null; done   # account lockout
for i in $(seq 15); do post /v1/sessions "{\"id\":\"nobody-$((i / 4))\",\"password\":\"wrong guess\"}" >/dev/null; done  # address lockout
for i in $(seq 9); do post /v1/accounts "{\"id\":\"filler-$i\",\"password\":\"a long passphrase\"}" >/dev/null; done
post /v1/accounts '{"id":"one-too-many","password":"a long passphrase"}' >/dev/null   # registration limit
sleep 0.3
# The journal's form of the same lines.
sed 's/^/Dec 02 15:00:00 pi sync-node[4242]: /' "$work/server.log" > "$work/journal.log"
status=0
for form in server journal; do
  out=$(fail2ban-regex "$work/$form.log" contrib/fail2ban/sync-node-filter.conf 2>&1)
  matched=$(echo "$out" | sed -n 's/^Lines: [0-9]* lines, [0-9]* ignored, \([0-9]*\) matched.*/\1/p')
  echo "  $form form: ${matched:-no} line(s) matched (expected 2: the address lockout and the registration limit)"
  [ "${matched:-}" = 2 ] || { echo "$out" | tail -20; status=1; }
  # And the address they name: the client's.
  fail2ban-regex --print-all-matched "$work/$form.log" contrib/fail2ban/sync-node-filter.conf 2>&1 \
    | grep -q 'address-lockout address=127.0.0.1' || { echo "  $form form: the address lockout was not matched"; status=1; }
done
[ $status = 0 ] && echo "test-fail2ban: passed" || echo "test-fail2ban: FAILED"
exit $status
