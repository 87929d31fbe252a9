#!/bin/bash
# Makes the Debian package of one built binary with dpkg-deb (no other
# tool: dpkg-deb is on every Debian, and the binaries are cross-built by
# scripts/build-release.sh already, which cargo-deb would want to redo):
#   /usr/bin/sync-node, the hardened unit (enabled and started), the
#   configuration /etc/sync-node/sync-node.conf (a conffile), the man page
#   (made from --help), docs, and the proxy, fail2ban and reset-hook
#   examples in /usr/share/doc/sync-node/; the maintainer scripts of
#   packaging/deb with packaging/lib.sh in them.
# Usage: scripts/make-deb.sh BINARY ARCH VERSION OUTDIR [HELP_TEXT]
#   ARCH is Debian's (amd64, arm64, armhf); HELP_TEXT a file holding the
#   binary's --help (for a binary this machine cannot run).
# Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$1 arch=$2 version=$3 out=$4 help=${5:-}
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
doc="$stage/usr/share/doc/sync-node"
install -D -m 0755 "$binary" "$stage/usr/bin/sync-node"
install -D -m 0644 contrib/sync-node.service "$stage/lib/systemd/system/sync-node.service"
install -D -m 0644 contrib/sync-node.conf "$stage/etc/sync-node/sync-node.conf"
install -d "$doc/examples/nginx" "$doc/examples/fail2ban" "$doc/docs"
install -m 0644 contrib/nginx/sync-node.conf "$doc/examples/nginx/"
install -m 0644 contrib/Caddyfile "$doc/examples/"
install -m 0644 contrib/fail2ban/*.conf "$doc/examples/fail2ban/"
install -m 0755 contrib/reset-hook-msmtp.sh "$doc/examples/"
install -m 0644 README.md "$doc/"
install -m 0644 docs/*.md "$doc/docs/"
gzip -9n -c CHANGELOG.md >"$doc/CHANGELOG.md.gz"
# A native package's changelog.gz is read as Debian's format: one entry
# pointing at the project's own.
cat <<CHANGES | gzip -9n >"$doc/changelog.gz"
sync-node ($version) stable; urgency=medium

  * Sync Node $version: see CHANGELOG.md.gz.

 -- The Sync Node developers <maintainers@users.noreply.b-seed-b5e68763.example>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
CHANGES
gzip -9n "$doc/README.md" "$doc"/docs/*.md
cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sync-node
Source: the project's repository

Files: *
Copyright: 2026 The Sync Node developers
License: MIT
$(sed -e 's/^$/./' -e 's/^/ /' LICENSE)
COPYRIGHT
# The man page: --help as it is (it is the reference), under a header.
install -d "$stage/usr/share/man/man1"
{
  printf '.TH SYNC-NODE 1 "" "sync-node %s" "User Commands"\n' "$version"
  printf '.SH NAME\nsync-node \\- a sync server for local-first apps\n.SH DESCRIPTION\n.nf\n'
  if [ -n "$help" ]; then cat "$help"; else "$binary" --help; fi | sed -e 's/\\/\\e/g' -e 's/^[.'"'"']/\\\&&/'
  printf '.fi\n.SH FILES\n/etc/sync-node/sync-node.conf, /var/lib/sync-node, /var/backups/sync-node\n'
  printf '.SH SEE ALSO\n/usr/share/doc/sync-node/README.md.gz\n'
} | gzip -9n >"$stage/usr/share/man/man1/sync-node.1.gz"
install -d "$stage/DEBIAN"
for script in preinst postinst prerm postrm; do
  packaging/expand.sh "packaging/deb/$script" "$version" >"$stage/DEBIAN/$script"
  chmod 0755 "$stage/DEBIAN/$script"
done
echo /etc/sync-node/sync-node.conf >"$stage/DEBIAN/conffiles"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: sync-node
Version: $version
Architecture: $arch
Maintainer: The Sync Node developers <maintainers@users.noreply.b-seed-b5e68763.example>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: libc6 (>= 2.34), passwd
Recommends: systemd
Suggests: nginx | caddy, fail2ban
Section: net
Priority: optional
Description: sync server for local-first apps
 Sync Node keeps opaque (client-encrypted) stores and append-only logs for
 local-first apps, and tells every device of every user what changed. It
 never lets a write silently overwrite a newer version, and a 2xx on a
 write means it is on disk.
 .
 The package runs it as the sync-node service on 127.0.0.1:8080 with
 registration by invitation (sudo sync-node invite); its configuration is
 /etc/sync-node/sync-node.conf. Upgrades back the data up first and roll
 back by themselves when the new version does not start.
CONTROL
mkdir -p "$out"
package="$out/sync-node_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$package" >/dev/null
echo "$package"
