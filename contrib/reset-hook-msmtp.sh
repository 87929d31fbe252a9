#!/bin/sh
# RESET_HOOK example: mails the password-reset token with msmtp (or any
# sendmail-compatible program). Sync Node runs this program directly (no
# shell command line) with its own environment plus two variables:
#   SYNC_NODE_ID     the account id as the user typed it (usually an e-mail address)
#   SYNC_NODE_TOKEN  the single-use token, valid for one hour
# It must finish within 30 seconds; its exit status and stderr go to the
# server's log, never to the client.
#
# Settings (environment variables of the server, e.g. Environment= lines in
# the systemd unit):
#   SYNC_NODE_MAIL_FROM  the sender address (required: no mail is sent without it)
#   SENDMAIL             the sendmail-compatible program (default /usr/bin/msmtp)
#
# The id is whatever a stranger typed into a reset form, so the mail goes
# to exactly one address or nowhere: an id with a comma, a space, a line
# break, angle brackets or anything else that is not one plain address is
# refused. The recipient is passed as one argument, never read from the
# mail's headers.
#
# Install: install -m 0755 contrib/reset-hook-msmtp.sh /usr/local/lib/sync-node/reset-hook
# and set RESET_HOOK=/usr/local/lib/sync-node/reset-hook.
set -eu

SENDMAIL=${SENDMAIL:-/usr/bin/msmtp}
FROM=${SYNC_NODE_MAIL_FROM:-}
ID=${SYNC_NODE_ID:-}

refuse() {
  echo "reset-hook: $1; not sending" >&2
  exit 0
}

[ -n "$FROM" ] || refuse "SYNC_NODE_MAIL_FROM is not set"
newline='
'
case "$ID" in
  *"$newline"*) refuse "the id spans several lines" ;;
esac
# One address: local part and domain of plain characters, one @, a dot in the domain.
if ! printf '%s' "$ID" | grep -Eqx "[A-Za-z0-9.!#\$%&'*+/=?^_\`{|}~-]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+"; then
  refuse "the id is not one e-mail address"
fi

# The mailer's own messages name the address: keep them out of the
# server's log, and say only that it failed.
if ! "$SENDMAIL" -i -- "$ID" 2>/dev/null <<MAIL
From: $FROM
To: $ID
Subject: Your password reset code

Someone (hopefully you) asked to reset the password of this account.
Enter this code in your app within one hour:

    $SYNC_NODE_TOKEN

If you did not ask for this, ignore this mail: your password is unchanged.
MAIL
then
  echo "reset-hook: $SENDMAIL failed; no mail sent" >&2
  exit 1
fi
