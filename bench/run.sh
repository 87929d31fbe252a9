#!/usr/bin/env bash
# The Sync Node benchmark: builds the release binary and the write-ceiling
# program, then runs bench/bench.py (wrk against Sync Node and nginx on
# loopback). Needs wrk, nginx and python3:  sudo apt-get install wrk nginx python3
# Options are passed on: --seconds N (per row, default 10), --warmup N, --conns 1,16,64
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx python3; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh: '$tool' is missing; install it: sudo apt-get install wrk nginx python3" >&2; exit 1; }
done
cargo build --release --locked --quiet
cargo build --release --locked --quiet --example write_ceiling
exec python3 bench/bench.py "$@"
