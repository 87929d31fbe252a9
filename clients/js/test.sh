#!/usr/bin/env bash
# The JavaScript client's tests, set-up included: installs Debian's
# chromium (apt-get, as root or through sudo) and the npm dev dependencies
# when they are missing, then runs `npm test` (typecheck, the Node suite,
# the headless-Chromium suite) against ../../target/debug/sync-node, which
# `cargo test` builds (and which the tests build themselves if it is missing).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "clients/js/test.sh: installing Debian's chromium for the browser tests" >&2
  $sudo apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
npm ci --prefix examples/automerge --no-audit --no-fund --loglevel=error
npm test
# The client's bench, briefly, so it cannot rot (bench/open.mjs N for real figures).
node bench/open.mjs 1
