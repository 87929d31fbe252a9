#!/usr/bin/env bash
# Installs, upgrades, rolls back, removes and purges the Debian package in
# a fresh Debian 12 root (debootstrap), for amd64 and for arm64 under
# qemu-user, and prints each step's result and time. Not CI (a few minutes
# and about 1 GB per architecture); `scripts/test-deb.sh --quick` (CI)
# only builds the amd64 package from the debug binary and checks what it
# holds and its maintainer scripts' syntax.
#
# Then install.sh from a release archive's files in another fresh root.
#
# The packages: the commit before schema 8 as 0.1.0~schema7 (so the first
# upgrade crosses a schema migration), this tree as 0.1.0, the same binary
# as 0.1.0+rebuild1, a binary that cannot start as 0.1.0+broken1, and the
# tree again as 0.1.0+fixed1.
#
# systemd is not PID 1 in the root: scripts/test-deb/systemctl stands in
# for systemctl and starts the service as its unit says (the unit's user
# and group, Environment= then EnvironmentFile=, ExecStart; not its
# sandboxing). Everything runs in a network namespace of its own, so the
# service's port 8080 is its own.
#
# Needs (as root): debootstrap, qemu-user-static and binfmt-support (arm64),
# Debian's cross toolchain (scripts/build-release.sh), curl, iproute2.
# Usage: sudo scripts/test-deb.sh [amd64|arm64 …]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/target/test-deb
mkdir -p "$work"

if [ "${1:-}" = "--quick" ]; then
  cargo build --quiet
  package=$(scripts/make-deb.sh target/debug/sync-node amd64 0.0.0+ci "$work/quick")
  dpkg-deb --info "$package" >/dev/null
  contents=$(dpkg-deb --contents "$package")
  for path in ./usr/bin/sync-node ./lib/systemd/system/sync-node.service ./etc/sync-node/sync-node.conf \
    ./usr/share/man/man1/sync-node.1.gz ./usr/share/doc/sync-node/copyright \
    ./usr/share/doc/sync-node/examples/nginx/sync-node.conf; do
    grep -q " $path\$" <<<"$contents" || { echo "test-deb --quick: $path is missing" >&2; exit 1; }
  done
  control=$(mktemp -d)
  dpkg-deb --control "$package" "$control"
  for script in preinst postinst prerm postrm; do bash -n "$control/$script"; done
  bash -n <(packaging/expand.sh packaging/install.sh 0.0.0)
  bash -n scripts/test-deb/systemctl
  rm -rf "$control" "$work/quick"
  echo "test-deb --quick: the package holds what it should and its scripts parse"
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "test-deb: run as root (debootstrap, chroot, network namespaces)" >&2; exit 1; }
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)
old_commit=$(git log --format=%H -1 -S'    // 8: quota counts what is stored' -- src/db/schema.rs)^
results=()
failed=0

# One step: its name, then the command (a function, run in a subshell with
# errexit, so its first failing check fails it); its result and time go in
# the report.
step() {
  local name=$1 started took rc
  shift
  started=$(date +%s%N)
  set +e
  (
    set -e
    "$@"
  ) >>"$log" 2>&1
  rc=$?
  set -e
  took=$(awk -v ns="$(($(date +%s%N) - started))" 'BEGIN { printf "%.1f", ns / 1e9 }')
  if [ "$rc" = 0 ]; then
    results+=("$arch | $name | ok | ${took} s")
    echo "   ok    $name (${took} s)"
  else
    results+=("$arch | $name | FAILED | ${took} s")
    echo "   FAIL  $name (${took} s; log: $log)"
    failed=1
  fi
}

in_root() {
  ip netns exec sn-test-deb chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}
host_curl() { ip netns exec sn-test-deb curl -sS --max-time 10 "$@"; }
healthy() { host_curl -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/v1/health | grep -q 200; }
# The health wait of the maintainer scripts is 60 s; 20 s is plenty here.
apt_install() {
  in_root env DEBIAN_FRONTEND=noninteractive SYNC_NODE_HEALTH_SECONDS=20 \
    apt-get install -y --no-install-recommends --allow-downgrades "/tmp/$1"
}
expect_failure() { ! "$@"; }

# The tree's and the old commit's binaries for $arch, their paths in files.
binaries() {
  local target
  case "$arch" in amd64) target=x86_64-unknown-linux-gnu ;; arm64) target=aarch64-unknown-linux-gnu ;; esac
  if [ ! -d "$work/old-src" ]; then git worktree add --force --detach "$work/old-src" "$old_commit" >/dev/null; fi
  scripts/cross-build.sh "$target" dynamic >"$work/bin-$arch-tree"
  scripts/cross-build.sh "$target" dynamic "$work/old-src" >"$work/bin-$arch-old"
}

packages() {
  local out=$work/packages-$arch help=$work/help.txt broken
  rm -rf "$out"
  mkdir -p "$out"
  # The man page's text from the tree's own binary (an arm64 one runs
  # through qemu-user's binfmt entry).
  "$(cat "$work/bin-$arch-tree")" --help >"$help"
  scripts/make-deb.sh "$(cat "$work/bin-$arch-old")" "$arch" 0.1.0~schema7 "$out" "$help"
  for version in 0.1.0 0.1.0+rebuild1 0.1.0+fixed1; do
    scripts/make-deb.sh "$(cat "$work/bin-$arch-tree")" "$arch" "$version" "$out" "$help"
  done
  broken=$out/broken
  printf '#!/bin/sh\necho "sync-node: deliberately broken for scripts/test-deb.sh" >&2\nexit 2\n' >"$broken"
  scripts/make-deb.sh "$broken" "$arch" 0.1.0+broken1 "$out" "$help"
  cp "$out"/*.deb "$root/tmp/"
  for package in "$out"/*.deb; do
    echo "== $package"
    dpkg-deb --info "$package"
    dpkg-deb --contents "$package"
    if command -v lintian >/dev/null; then lintian --no-tag-display-limit "$package" || true; fi
  done
}

fresh_root() {
  local base=$work/base-$arch
  if [ ! -d "$base" ]; then
    debootstrap --variant=minbase --arch="$arch" bookworm "$base" http://deb.debian.org/debian
  fi
  rm -rf "$root"
  cp -a "$base" "$root"
  mount -t proc proc "$root/proc"
  # Where systemd would put it (apt runs dpkg with PATH=/usr/sbin:/usr/bin:/sbin:/bin).
  install -m 0755 scripts/test-deb/systemctl "$root/usr/bin/systemctl"
  mkdir -p "$root/run/systemd/system"
  ip netns add sn-test-deb
  ip netns exec sn-test-deb ip link set lo up
}

cleanup() {
  if [ -n "${root:-}" ] && [ -d "$root" ]; then
    in_root systemctl stop sync-node.service 2>/dev/null || true
    umount "$root/var/backups/sync-node" 2>/dev/null || true
    umount "$root/proc" 2>/dev/null || true
  fi
  ip netns delete sn-test-deb 2>/dev/null || true
}
trap cleanup EXIT

# --- the checks each step makes ---------------------------------------------

installed_as_it_should() {
  in_root getent passwd sync-node | grep -q ':/usr/sbin/nologin$'
  [ "$(in_root stat -c '%a %U' /var/lib/sync-node)" = "700 sync-node" ]
  [ "$(in_root stat -c '%a %U' /var/backups/sync-node)" = "700 sync-node" ]
  grep -qx /etc/sync-node/sync-node.conf "$root/var/lib/dpkg/info/sync-node.conffiles"
  grep -qx 'BIND=127.0.0.1' "$root/etc/sync-node/sync-node.conf"
  grep -qx 'REGISTRATION=invite' "$root/etc/sync-node/sync-node.conf"
  grep -qx 'ExecStart=/usr/bin/sync-node serve' "$root/lib/systemd/system/sync-node.service"
  grep -qx 'EnvironmentFile=-/etc/sync-node/sync-node.conf' "$root/lib/systemd/system/sync-node.service"
  in_root systemctl is-enabled sync-node.service
  healthy
  # Only this machine: not on the namespace's other addresses (none) nor 0.0.0.0.
  grep -q 'listening on http://127.0.0.1:8080' "$root/var/log/sync-node.log"
}

first_install() {
  apt_install "sync-node_0.1.0~schema7_${arch}.deb"
  installed_as_it_should
}

# An account through an invitation (as the old binary needs: STATIC_ROOT on
# the command line), and two stores.
register_and_write() {
  local code token
  code=$(in_root runuser -u sync-node -- env STATIC_ROOT=/var/lib/sync-node sync-node invite | tail -n 1)
  token=$(host_curl -X POST -H 'Content-Type: application/json' \
    -d "{\"id\":\"alice\",\"password\":\"correct horse battery\",\"invite\":\"$code\"}" \
    http://127.0.0.1:8080/v1/accounts | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  [ -n "$token" ]
  echo "$token" >"$work/token"
  for key in notes-1 photos-2; do
    head -c 200000 /dev/urandom >"$work/$key"
    host_curl -f -X PUT -H "Authorization: Bearer $token" --data-binary "@$work/$key" \
      "http://127.0.0.1:8080/v1/stores/$key" >/dev/null
  done
}

data_kept() {
  local key token
  token=$(cat "$work/token")
  healthy
  for key in notes-1 photos-2; do
    host_curl -f -H "Authorization: Bearer $token" "http://127.0.0.1:8080/v1/stores/$key" -o "$work/$key.read"
    cmp "$work/$key" "$work/$key.read"
  done
}

backups_are() { [ "$(find "$root/var/backups/sync-node" -mindepth 1 -maxdepth 1 -type d | wc -l)" = "$1" ]; }

upgrade_crosses_schema() {
  apt_install sync-node_0.1.0_"$arch".deb
  data_kept
  backups_are 1
  # Root's commands act on the service's data as its user, with its configuration.
  in_root sync-node account list | grep -c . | grep -qx 1
  in_root sync-node invite | grep -q .
  [ "$(in_root find /var/lib/sync-node ! -user sync-node | wc -l)" = 0 ]
}

upgrade_rebuilt() {
  apt_install sync-node_0.1.0+rebuild1_"$arch".deb
  data_kept
  backups_are 2
}

upgrade_broken_rolls_back() {
  expect_failure apt_install sync-node_0.1.0+broken1_"$arch".deb
  grep -q 'FAILED' "$log"
  grep -q 'Rolled back' "$log"
  data_kept
  in_root sync-node --version | grep -q '^sync-node '
}

downgrade_over_newer_schema_refused() {
  expect_failure apt_install sync-node_0.1.0~schema7_"$arch".deb
  grep -q 'the data has a newer schema than 0.1.0~schema7 reads. 0.1.0+rebuild1 (put back) runs' "$log"
  data_kept
}

upgrade_refused_without_space() {
  local before
  before=$(find "$root/var/backups/sync-node" -mindepth 1 -maxdepth 1 | sort)
  mount -t tmpfs -o size=256k tmpfs "$root/var/backups/sync-node"
  expect_failure apt_install sync-node_0.1.0+fixed1_"$arch".deb
  umount "$root/var/backups/sync-node"
  grep -q 'the upgrade is refused' "$log"
  [ "$(find "$root/var/backups/sync-node" -mindepth 1 -maxdepth 1 | sort)" = "$before" ]
  data_kept
}

fixed_version_recovers() {
  apt_install sync-node_0.1.0+fixed1_"$arch".deb
  in_root dpkg -s sync-node | grep -qx 'Status: install ok installed'
  grep -q 'upgraded from 0.1.0+rebuild1 to 0.1.0+fixed1' "$log"
  data_kept
  backups_are 3
}

removed_keeps_data_and_config() {
  in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y sync-node
  expect_failure healthy
  [ -f "$root/etc/sync-node/sync-node.conf" ]
  [ -f "$root/var/lib/sync-node/sync-node.db" ]
  expect_failure in_root systemctl is-enabled sync-node.service
}

purged_keeps_data_only() {
  in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y sync-node
  [ ! -e "$root/etc/sync-node" ]
  expect_failure in_root getent passwd sync-node
  [ -f "$root/var/lib/sync-node/sync-node.db" ]
  grep -q 'Your data is kept' "$log"
}

reinstalled_finds_its_data() {
  apt_install sync-node_0.1.0+fixed1_"$arch".deb
  data_kept
}

# install.sh from a release archive's files, in a fresh root: the same
# service, with the binary in /usr/local/bin; run again over itself, it
# takes the upgrade path (a backup, the data kept).
install_script() {
  local archive=$root/tmp/archive
  mkdir -p "$archive"
  cp "$(cat "$work/bin-$arch-tree")" "$archive/sync-node"
  cp -R contrib "$archive/contrib"
  packaging/expand.sh packaging/install.sh 0.1.0 >"$archive/install.sh"
  chmod 0755 "$archive/install.sh"
  in_root /tmp/archive/install.sh
  in_root getent passwd sync-node | grep -q ':/usr/sbin/nologin$'
  grep -qx 'ExecStart=/usr/local/bin/sync-node serve' "$root/etc/systemd/system/sync-node.service"
  grep -qx 'REGISTRATION=invite' "$root/etc/sync-node/sync-node.conf"
  [ "$(in_root stat -c '%a %U' /var/lib/sync-node)" = "700 sync-node" ]
  in_root systemctl is-enabled sync-node.service
  healthy
  register_and_write
  in_root /tmp/archive/install.sh
  backups_are 1
  data_kept
}

for arch in "${arches[@]}"; do
  root=$work/root-$arch
  log=$work/test-deb-$arch.log
  : >"$log"
  echo "== $arch (log: $log)"
  step "build the binaries (tree, and $old_commit for schema 7)" binaries
  cleanup
  step "fresh Debian 12 root" fresh_root
  step "make the five packages" packages
  step "install 0.1.0~schema7: user, modes, unit, config, running on 127.0.0.1" first_install
  step "register through an invitation, write two stores" register_and_write
  step "upgrade to 0.1.0 (schema 7 -> 8): data kept, backup made, sudo commands" upgrade_crosses_schema
  step "upgrade to 0.1.0+rebuild1: data kept, second backup" upgrade_rebuilt
  step "upgrade to 0.1.0+broken1: rolled back, old version answers, data intact" upgrade_broken_rolls_back
  step "downgrade to 0.1.0~schema7 over schema 8: refused, data intact" downgrade_over_newer_schema_refused
  step "upgrade with no room for the backup: refused, nothing changed" upgrade_refused_without_space
  step "upgrade to 0.1.0+fixed1 after the failures: installed, data kept, 3 backups kept" fixed_version_recovers
  step "remove: stopped and disabled, data and config kept" removed_keeps_data_and_config
  step "purge: config and user gone, data kept" purged_keeps_data_only
  step "install again after purge: the kept data is served" reinstalled_finds_its_data
  cleanup
  step "fresh Debian 12 root" fresh_root
  step "install.sh from the archive, then again over itself: backup, data kept" install_script
  cleanup
done

echo
echo "arch | step | result | time"
echo "---|---|---|---"
printf '%s\n' "${results[@]}"
exit "$failed"
