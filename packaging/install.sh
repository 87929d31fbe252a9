#!/bin/bash
# Installs or upgrades Sync Node as a systemd service on any Linux, as the
# Debian package does: the binary in /usr/local/bin, a system user
# sync-node, the unit, the configuration in /etc/sync-node/sync-node.conf
# (kept if it exists), the data in /var/lib/sync-node (0700); then starts
# it. Over an older version it first stops it and backs the data up into
# /var/backups/sync-node/, and rolls back by itself when the new version
# does not become healthy. Run from the unpacked release archive:
#   sudo ./install.sh
set -euo pipefail
SN_BIN=/usr/local/bin/sync-node
#LIB#
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run it as root: sudo $0" >&2
  exit 1
fi
if ! command -v systemctl >/dev/null; then
  echo "install.sh: this installs a systemd service, and systemctl is missing; without systemd, run" \
    "$here/sync-node yourself (README.md, \"The two commands\")" >&2
  exit 1
fi
new=$("$here/sync-node" --version | awk '{ print $2 }')
old=""
if [ -x "$SN_BIN" ]; then old=$("$SN_BIN" --version | awk '{ print $2 }'); fi
sn_ensure_user
if [ -n "$old" ]; then sn_before_upgrade "$old"; fi
install -m 0755 "$here/sync-node" "$SN_BIN"
sed 's|^ExecStart=/usr/bin/sync-node|ExecStart=/usr/local/bin/sync-node|' "$here/contrib/sync-node.service" \
  >/etc/systemd/system/sync-node.service
if [ ! -e "$SN_CONF" ]; then install -D -m 0644 "$here/contrib/sync-node.conf" "$SN_CONF"; fi
sn_ensure_dirs
sn_after_upgrade "$new"
