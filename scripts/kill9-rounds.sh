#!/usr/bin/env bash
# Crash safety, the long way: 100 rounds (or $1) of kill -9 at a random
# instant while 6 clients create, replace, share and delete stores, then
# 50 (half as many) while 4 clients append to store logs and compact them;
# each round is followed by a restart that must show every acknowledged
# write and entry and pass `sync-node check`. Release build. About three
# minutes on 2 cores.
#   scripts/kill9-rounds.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "kill -9 rounds: ${1:-100} rounds mid-storm (creates, updates, shares, deletes) and half as many mid-appends and compactions, release build"
SYNC_NODE_CRASH_ROUNDS="${1:-100}" cargo test --release --locked --test it -- crash::kill_9_during --nocapture
