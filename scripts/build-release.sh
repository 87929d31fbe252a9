#!/usr/bin/env bash
# Builds the release archives: x86_64, aarch64 (64-bit Raspberry Pi OS,
# Pi 3/4/5) and armv7 (32-bit Raspberry Pi OS, Pi 2/3/4/5), each dynamic
# (glibc >= 2.34: Debian 12 / Pi OS bookworm and newer) and static
# (runs on any Linux of that architecture), stripped, into
#   dist/sync-node-<version>-<target>[-static].tar.gz
# with README.md, LICENSE, CHANGELOG.md, the docs and contrib/, plus
# dist/SHA256SUMS. Cross-compiles with Debian's packages only:
#   sudo dpkg --add-architecture arm64 && sudo dpkg --add-architecture armhf && sudo apt-get update
#   sudo apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64 libstd-rust-web-dev:armhf \
#        gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
# Usage: scripts/build-release.sh [target …]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's toolchain has the standard library for every target above;
# rustup's (earlier on PATH, usually) has only the host's.
export PATH="/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc
CARGO=/usr/bin/cargo
[ -x "$CARGO" ] || { echo "build-release: /usr/bin/cargo is missing: install Debian's cargo-web (see the top of this script)" >&2; exit 1; }
# The project's own SQLite flags (.cargo/config.toml) must not be replaced.
unset LIBSQLITE3_FLAGS

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

gcc_prefix() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo "" ;;
    aarch64-unknown-linux-gnu) echo "aarch64-linux-gnu-" ;;
    armv7-unknown-linux-gnueabihf) echo "arm-linux-gnueabihf-" ;;
    *) echo "build-release: unknown target $1" >&2; exit 2 ;;
  esac
}

rm -rf dist && mkdir -p dist
for target in "${targets[@]}"; do
  prefix=$(gcc_prefix "$target")
  upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
  env_name=$(echo "$target" | tr '-' '_')
  for linkage in dynamic static; do
    flags=""
    suffix=""
    if [ "$linkage" = static ]; then flags="-C target-feature=+crt-static"; suffix="-static"; fi
    echo "== $target ($linkage)" >&2
    env "CARGO_TARGET_${upper}_LINKER=${prefix}gcc" "CC_${env_name}=${prefix}gcc" "AR_${env_name}=${prefix}ar" \
      RUSTFLAGS="$flags" \
      "$CARGO" build --release --locked --quiet --target "$target" --target-dir "target/dist-$linkage"
    binary="target/dist-$linkage/$target/release/sync-node"
    name="sync-node-$version-$target$suffix"
    stage="dist/$name"
    mkdir -p "$stage/contrib" "$stage/docs"
    cp "$binary" "$stage/sync-node"
    cp README.md LICENSE CHANGELOG.md "$stage/"
    cp docs/*.md "$stage/docs/"
    cp -R contrib/. "$stage/contrib/"     # unit, reset hook, proxy recipes, fail2ban
    tar -C dist -czf "dist/$name.tar.gz" --owner=0 --group=0 "$name"
    rm -rf "$stage"
    file "$binary" | sed 's/^[^:]*: /   /' >&2
  done
done
(cd dist && sha256sum -- *.tar.gz > SHA256SUMS)
ls -l dist >&2
