# Sync Node's install and upgrade steps, shared by the Debian package's
# maintainer scripts and install.sh (scripts/make-deb.sh and
# scripts/build-release.sh put this text into each): the service's user
# and directories, the pre-upgrade backup, and starting the new version
# with a roll-back when it does not become healthy.
#
# An upgrade goes: before (check the space, stop, back up, keep the old
# binary, write down what was done) · the new files are put in place ·
# after (refuse a downgrade over a newer schema, start, wait for
# /v1/health; if it never answers: the old binary and the backup come
# back and the old version starts). Needs bash, coreutils, util-linux
# (runuser) and systemd; without a running systemd (a chroot, an image
# build) nothing is started or stopped.

SN_CONF=/etc/sync-node/sync-node.conf
SN_USER=sync-node
SN_UNIT=sync-node.service
SN_BACKUPS=/var/backups/sync-node
# What an upgrade in progress wrote down (removed once it is done).
SN_PENDING=$SN_BACKUPS/upgrade-in-progress
# After a roll-back the binary in place is not the package's: its version.
SN_PUT_BACK=$SN_BACKUPS/version-put-back
# Backups an upgrade keeps (the newest).
SN_KEEP=3
SN_HEALTH_SECONDS=${SYNC_NODE_HEALTH_SECONDS:-60}
# Where the binary is: /usr/bin (package) or /usr/local/bin (install.sh).
SN_BIN=${SN_BIN:-/usr/bin/sync-node}

sn_say() { printf 'sync-node: %s\n' "$*" >&2; }

# The value the configuration file gives NAME, or DEFAULT.
sn_conf() {
  local value=""
  if [ -r "$SN_CONF" ]; then
    value=$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$SN_CONF" | tail -n 1 |
      sed -e 's/[[:space:]]*$//' -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/")
  fi
  printf '%s\n' "${value:-$2}"
}

sn_data() { sn_conf STATIC_ROOT /var/lib/sync-node; }

sn_systemd() { [ -d /run/systemd/system ]; }

sn_ensure_user() {
  getent passwd "$SN_USER" >/dev/null ||
    useradd --system --user-group --home-dir "$(sn_data)" --no-create-home --shell /usr/sbin/nologin \
      --comment "Sync Node" "$SN_USER"
}

# The data and backup directories, the service's own (0700). A data
# directory kept from an earlier install (purge removes the user, keeps
# the data) still belongs to that user's number: it is given, whole, to
# the user made now. (Only then: a directory the current user owns is
# never walked by root, so nothing it links to can be handed over.)
sn_ensure_dirs() {
  local dir uid
  uid=$(id -u "$SN_USER")
  for dir in "$(sn_data)" "$SN_BACKUPS"; do
    if [ -d "$dir" ] && [ "$(stat -c %u "$dir")" != "$uid" ] && ! getent passwd "$(stat -c %u "$dir")" >/dev/null; then
      chown -R -h "$SN_USER:$SN_USER" "$dir"
    fi
    install -d -m 0700 -o "$SN_USER" -g "$SN_USER" "$dir"
  done
}

# Runs the binary (or BINARY=… instead) as the service's user on its data.
sn_as_service() {
  runuser -u "$SN_USER" -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin STATIC_ROOT="$(sn_data)" \
    "${BINARY:-$SN_BIN}" "$@"
}

# True once /v1/health answers 200 on the configured address, within
# SN_HEALTH_SECONDS.
sn_healthy() {
  local host port deadline
  host=$(sn_conf BIND 127.0.0.1)
  port=$(sn_conf PORT 8080)
  case "$host" in 0.0.0.0) host=127.0.0.1 ;; ::) host=::1 ;; esac
  deadline=$(($(date +%s) + SN_HEALTH_SECONDS))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    # shellcheck disable=SC2016 # expanded by the inner bash
    if timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" &&
        printf "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" >&3 &&
        head -c 15 <&3' _ "$host" "$port" 2>/dev/null | grep -q '^HTTP/1.1 200'; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

sn_start() {
  sn_systemd || return 0
  systemctl daemon-reload
  systemctl start "$SN_UNIT"
}

sn_stop() {
  sn_systemd || return 0
  systemctl stop "$SN_UNIT"
}

# Before an upgrade from VERSION: refuses (exit 1, the service left as it
# was) when the backup would not fit; else stops the service, backs the
# data up into SN_BACKUPS/<time>-<VERSION>, keeps the old binary beside it
# and writes down both for sn_after_upgrade.
sn_before_upgrade() {
  local from=$1 data need free backup
  data=$(sn_data)
  rm -f "$SN_PENDING"
  if [ -f "$SN_PUT_BACK" ]; then from=$(cat "$SN_PUT_BACK"); fi
  if [ ! -x "$SN_BIN" ] || [ ! -f "$data/sync-node.db" ]; then
    return 0 # nothing to keep yet
  fi
  install -d -m 0700 -o "$SN_USER" -g "$SN_USER" "$SN_BACKUPS"
  # The backup copies the database and the store files (not unfinished uploads).
  need=$(du -sk --exclude=tmp "$data" | cut -f1)
  free=$(df -Pk "$SN_BACKUPS" | awk 'NR == 2 { print $4 }')
  if [ $((need + need / 10 + 65536)) -gt "$free" ]; then
    sn_say "the upgrade is refused: its backup of $data needs about $(((need + 1023) / 1024 + 64)) MiB in" \
      "$SN_BACKUPS, and only $((free / 1024)) MiB are free there. Make room (older backups are in" \
      "$SN_BACKUPS; the last $SN_KEEP are kept) and upgrade again. Nothing was changed."
    return 1
  fi
  sn_stop
  backup="$SN_BACKUPS/$(date -u +%Y%m%dT%H%M%SZ)-$from"
  if ! sn_as_service backup "$backup" >&2; then
    rm -rf "$backup"
    sn_start || true
    sn_say "the upgrade is refused: the backup into $backup failed (above). The service runs as before."
    return 1
  fi
  install -m 0755 "$SN_BIN" "$backup.sync-node"
  printf 'from=%s\nbackup=%s\nbinary=%s\n' "$from" "$backup" "$backup.sync-node" >"$SN_PENDING"
  sn_say "stopped; backed up $data into $backup"
}

sn_pending() { sed -n "s/^$1=//p" "$SN_PENDING"; }

# After the new files are in place: VERSION is the new one. Returns 1
# (after putting the old version back) when the upgrade did not take.
sn_after_upgrade() {
  local to=$1 from backup binary data said
  if [ ! -f "$SN_PENDING" ]; then
    rm -f "$SN_PUT_BACK" # the package's own binary is in place
    sn_start_fresh
    return 0
  fi
  from=$(sn_pending from)
  backup=$(sn_pending backup)
  binary=$(sn_pending binary)
  data=$(sn_data)
  if ! sn_systemd; then
    sn_say "upgraded from $from to $to (backup: $backup); systemd is not running: start the server yourself"
    rm -f "$SN_PENDING"
    return 0
  fi
  # A newer schema than this version reads: the data was never touched.
  said=$(sn_as_service check 2>&1 || true)
  if printf '%s' "$said" | grep -q 'newer than this sync-node understands'; then
    install -m 0755 "$binary" "$SN_BIN"
    printf '%s\n' "$from" >"$SN_PUT_BACK"
    rm -f "$SN_PENDING"
    sn_start
    sn_say "$to cannot replace $from: the data has a newer schema than $to reads. $from (put back) runs" \
      "again, on data that was not touched. To go back to $to, restore a backup taken before the" \
      "upgrade to $from (docs/operations.md, \"Backup and restore\")."
    return 1
  fi
  sn_start || true
  if sn_healthy; then
    rm -f "$SN_PENDING" "$SN_PUT_BACK"
    sn_prune
    sn_say "upgraded from $from to $to; the data before it is in $backup"
    return 0
  fi
  # It never answered, so nothing was written: the backup is the data.
  sn_stop || true
  install -m 0755 "$binary" "$SN_BIN"
  printf '%s\n' "$from" >"$SN_PUT_BACK"
  rm -rf "$data.failed-upgrade"
  mv "$data" "$data.failed-upgrade"
  cp -a "$backup" "$data"
  sn_start || true
  rm -f "$SN_PENDING"
  if sn_healthy; then
    sn_say "the upgrade to $to FAILED: it did not answer /v1/health within ${SN_HEALTH_SECONDS} s. Rolled" \
      "back: $from runs again, on the data as it was before the upgrade (from $backup; the data" \
      "$to saw is in $data.failed-upgrade). Read why: journalctl -u sync-node -n 50. The package is" \
      "left half-configured: install a fixed version (or 'apt install --reinstall' this one to try again)."
  else
    sn_say "the upgrade to $to FAILED and $from did not come back either: read journalctl -u" \
      "sync-node -n 100. The data before the upgrade is in $backup; the binary of $from in $binary."
  fi
  return 1
}

# A first install (or one without an upgrade to finish): enable and start.
sn_start_fresh() {
  if ! sn_systemd; then
    sn_say "systemd is not running: start the server yourself (as $SN_USER, with $SN_CONF)"
    return 0
  fi
  systemctl daemon-reload
  systemctl enable "$SN_UNIT" >/dev/null 2>&1 || systemctl enable "$SN_UNIT"
  systemctl restart "$SN_UNIT" || true
  if sn_healthy; then
    cat >&2 <<EOF
Sync Node is running on http://$(sn_conf BIND 127.0.0.1):$(sn_conf PORT 8080), for this machine only.
  configuration: $SN_CONF   (then: sudo systemctl restart sync-node)
  data:          $(sn_data)   log: journalctl -u sync-node
Accounts are by invitation. Make the first one:
  sudo sync-node invite
To serve other machines, put a TLS proxy in front (examples in
/usr/share/doc/sync-node/examples/ or contrib/), see docs/operations.md.
EOF
  else
    sn_say "installed, but the service did not answer /v1/health within ${SN_HEALTH_SECONDS} s:" \
      "read journalctl -u sync-node -n 50 (is port $(sn_conf PORT 8080) taken?), fix $SN_CONF," \
      "then sudo systemctl restart sync-node"
  fi
}

# Keeps the newest SN_KEEP backups (and their binaries).
sn_prune() {
  local old
  find "$SN_BACKUPS" -mindepth 1 -maxdepth 1 -type d -name '2*' | sort | head -n "-$SN_KEEP" |
    while read -r old; do rm -rf "$old" "$old.sync-node"; done
}
