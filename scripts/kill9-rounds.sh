#!/usr/bin/env bash
# Crash safety, the long way: 100 rounds (or $1) of kill -9 at a random
# instant while 6 clients create, replace, share and delete stores, each
# round followed by a restart that must show every acknowledged write and
# pass `sync-node check`. Release build. About two minutes on 2 cores.
#   scripts/kill9-rounds.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "kill -9 rounds: ${1:-100} rounds of kill -9 mid-storm (creates, updates, shares, deletes), release build"
SYNC_NODE_CRASH_ROUNDS="${1:-100}" cargo test --release --locked --test it -- crash::kill_9_during_creates_updates_deletes_and_shares --exact --nocapture
