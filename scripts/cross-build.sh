#!/usr/bin/env bash
# Builds the release binary for one target with Debian's toolchain (the
# packages named at the top of scripts/build-release.sh), stripped, and
# prints its path. Used by scripts/build-release.sh and scripts/test-deb.sh.
# Usage: scripts/cross-build.sh TARGET dynamic|static [SOURCE_DIR]
#   SOURCE_DIR: another checkout to build (default: this one); its binary
#   goes under its own target/.
set -euo pipefail
target=$1 linkage=$2
cd "${3:-$(dirname "$0")/..}"
# Debian's toolchain has the standard library for every target; rustup's
# (earlier on PATH, usually) has only the host's.
export PATH="/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc
CARGO=/usr/bin/cargo
[ -x "$CARGO" ] || { echo "cross-build: /usr/bin/cargo is missing: install Debian's cargo-web (see scripts/build-release.sh)" >&2; exit 1; }
# The project's own SQLite flags (.cargo/config.toml) must not be replaced.
unset LIBSQLITE3_FLAGS
case "$target" in
  x86_64-unknown-linux-gnu) prefix="" ;;
  aarch64-unknown-linux-gnu) prefix="aarch64-linux-gnu-" ;;
  armv7-unknown-linux-gnueabihf) prefix="arm-linux-gnueabihf-" ;;
  *) echo "cross-build: unknown target $target" >&2; exit 2 ;;
esac
case "$linkage" in
  dynamic) flags="" ;;
  static) flags="-C target-feature=+crt-static" ;;
  *) echo "cross-build: dynamic or static, not $linkage" >&2; exit 2 ;;
esac
upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
env_name=$(echo "$target" | tr '-' '_')
env "CARGO_TARGET_${upper}_LINKER=${prefix}gcc" "CC_${env_name}=${prefix}gcc" "AR_${env_name}=${prefix}ar" \
  RUSTFLAGS="$flags" \
  "$CARGO" build --release --locked --quiet --target "$target" --target-dir "target/dist-$linkage"
echo "$PWD/target/dist-$linkage/$target/release/sync-node"
