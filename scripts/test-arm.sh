#!/usr/bin/env bash
# Runs the whole Rust test suite (unit and property tests, and the
# integration tests that start the real binary and speak HTTP to it) for
# aarch64 and armv7 Linux under qemu-user emulation, and prints the pass,
# fail and ignore counts per target.
#
# Needs Debian's cross toolchain (see scripts/build-release.sh) and
# qemu-user with binfmt_misc entries, since the integration tests start
# the ARM binary themselves:
#   sudo apt-get install qemu-user binfmt-support
#   sudo update-binfmts --enable qemu-aarch64 && sudo update-binfmts --enable qemu-arm
# Heavy (about 1.7 GB of packages; see docs/raspberry-pi.md for how long it
# takes): not part of CI.
# Usage: scripts/test-arm.sh [target …]   (default: both) — extra cargo test
# arguments after `--`, e.g. scripts/test-arm.sh aarch64-unknown-linux-gnu -- logs
set -uo pipefail
cd "$(dirname "$0")/.."
echo "test-arm: the whole cargo test suite (unit, property and integration tests against the real binary) for ARM targets under qemu-user; pass/fail counts per target"

export PATH="/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc
CARGO=/usr/bin/cargo
unset LIBSQLITE3_FLAGS
targets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

status=0
summary=()
for target in "${targets[@]}"; do
  case "$target" in
    aarch64-unknown-linux-gnu) prefix=aarch64-linux-gnu- qemu=qemu-aarch64 ;;
    armv7-unknown-linux-gnueabihf) prefix=arm-linux-gnueabihf- qemu=qemu-arm ;;
    *) echo "test-arm: unknown target $target" >&2; exit 2 ;;
  esac
  if [ ! -e "/proc/sys/fs/binfmt_misc/$qemu" ]; then
    echo "test-arm: no binfmt_misc entry for $qemu (sudo update-binfmts --enable $qemu)" >&2
    exit 1
  fi
  upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
  env_name=$(echo "$target" | tr '-' '_')
  log="target/test-arm-$target.log"
  started=$(date +%s)
  echo "== $target: building and running (log: $log)"
  env "CARGO_TARGET_${upper}_LINKER=${prefix}gcc" "CC_${env_name}=${prefix}gcc" "AR_${env_name}=${prefix}ar" \
    "$CARGO" test --locked --target "$target" --target-dir target/test-arm -- "$@" > "$log" 2>&1
  code=$?
  took=$(( $(date +%s) - started ))
  read -r passed failed ignored < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } } END { print p+0, f+0, g+0 }' "$log")
  line="$target: $passed passed, $failed failed, $ignored ignored in ${took} s (cargo exit $code)"
  echo "$line"
  grep -E "^test .* FAILED$|^failures:$" "$log" | head -20
  summary+=("$line")
  [ "$code" = 0 ] || status=1
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
