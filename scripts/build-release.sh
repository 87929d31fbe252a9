#!/usr/bin/env bash
# Builds the release archives and Debian packages: x86_64, aarch64 (64-bit Raspberry Pi OS,
# Pi 3/4/5) and armv7 (32-bit Raspberry Pi OS, Pi 2/3/4/5), each dynamic
# (glibc >= 2.34: Debian 12 / Pi OS bookworm and newer) and static
# (runs on any Linux of that architecture), stripped, into
#   dist/sync-node-<version>-<target>[-static].tar.gz
# with README.md, LICENSE, CHANGELOG.md, the docs, contrib/ and install.sh,
# the packages dist/sync-node_<version>_{amd64,arm64,armhf}.deb (of the
# dynamic builds, by scripts/make-deb.sh), and dist/SHA256SUMS (the builds
# by scripts/cross-build.sh). Cross-compiles with Debian's packages only:
#   sudo dpkg --add-architecture arm64 && sudo dpkg --add-architecture armhf && sudo apt-get update
#   sudo apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64 libstd-rust-web-dev:armhf \
#        gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
# Usage: scripts/build-release.sh [target …]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

debian_arch() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo amd64 ;;
    aarch64-unknown-linux-gnu) echo arm64 ;;
    armv7-unknown-linux-gnueabihf) echo armhf ;;
  esac
}

rm -rf dist && mkdir -p dist
help=$(mktemp)
trap 'rm -f "$help"' EXIT
for target in "${targets[@]}"; do
  for linkage in dynamic static; do
    suffix=""
    if [ "$linkage" = static ]; then suffix="-static"; fi
    echo "== $target ($linkage)" >&2
    binary=$(scripts/cross-build.sh "$target" "$linkage")
    name="sync-node-$version-$target$suffix"
    stage="dist/$name"
    mkdir -p "$stage/contrib" "$stage/docs"
    cp "$binary" "$stage/sync-node"
    cp README.md LICENSE CHANGELOG.md "$stage/"
    cp docs/*.md "$stage/docs/"
    cp -R contrib/. "$stage/contrib/"     # unit, configuration, reset hook, proxy recipes, fail2ban
    packaging/expand.sh packaging/install.sh "$version" >"$stage/install.sh"
    chmod 0755 "$stage/install.sh"
    tar -C dist -czf "dist/$name.tar.gz" --owner=0 --group=0 "$name"
    rm -rf "$stage"
    file "$binary" | sed 's/^[^:]*: /   /' >&2
    # The man page is --help: taken from the first binary this machine runs
    # (an ARM one too, with qemu-user's binfmt entries).
    if [ ! -s "$help" ]; then "$binary" --help >"$help" 2>/dev/null || : >"$help"; fi
    if [ "$linkage" = dynamic ]; then
      [ -s "$help" ] || { echo "build-release: cannot run $binary to make the man page (build x86_64 first)" >&2; exit 1; }
      scripts/make-deb.sh "$binary" "$(debian_arch "$target")" "$version" dist "$help" >&2
    fi
  done
done
(cd dist && sha256sum -- *.tar.gz *.deb > SHA256SUMS)
ls -l dist >&2
