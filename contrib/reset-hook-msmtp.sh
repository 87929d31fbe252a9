#!/bin/sh
# RESET_HOOK example: mails the password-reset token with msmtp (or any
# sendmail-compatible program). Sync Node runs this program directly (no
# shell command line) with two variables in its environment:
#   SYNC_NODE_ID     the account id as the user typed it (usually an e-mail address)
#   SYNC_NODE_TOKEN  the single-use token, valid for one hour
# It must finish within 30 seconds; its exit status and stderr go to the
# server's log, never to the client.
#
# Install: install -m 0755 contrib/reset-hook-msmtp.sh /usr/local/lib/sync-node/reset-hook
# and set RESET_HOOK=/usr/local/lib/sync-node/reset-hook.
set -eu

SENDMAIL=${SENDMAIL:-/usr/bin/msmtp}
FROM=${SYNC_NODE_MAIL_FROM:-sync@example.org}

case "$SYNC_NODE_ID" in
  *@*) ;;
  *) echo "reset-hook: '$SYNC_NODE_ID' is not an e-mail address; not sending" >&2; exit 0 ;;
esac

"$SENDMAIL" -t <<MAIL
From: $FROM
To: $SYNC_NODE_ID
Subject: Your password reset code

Someone (hopefully you) asked to reset the password of this account.
Enter this code in your app within one hour:

    $SYNC_NODE_TOKEN

If you did not ask for this, ignore this mail: your password is unchanged.
MAIL
