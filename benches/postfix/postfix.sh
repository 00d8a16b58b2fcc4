#!/usr/bin/env bash
# A private Postfix instance on loopback, the peer of pimail in benches/run.sh.
# Adapted from the shared mailbench reference stack (Postfix part only).
# It never touches /etc/postfix: config, queue, Maildir and log live in $PF_DATA.
#
# Usage: postfix.sh {setup|start|stop|reload|status|masterpid|maildir|logs}
# Env:
#   PF_DATA       instance directory (default /var/tmp/pimail-bench-postfix)
#   PF_HOST       listen address, loopback only (default 127.0.0.1)
#   PF_SMTP_PORT  smtpd port (default 2525)
#   PF_USER       local part of the one mailbox, in domain bench.local (default bench)
#   PF_SYSUSER    system user owning the Maildir, created if missing (default mailbench)
# Needs root (Postfix's master runs as root) and the postfix package.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="${PF_DATA:-/var/tmp/pimail-bench-postfix}"
HOST="${PF_HOST:-127.0.0.1}"
SMTP_PORT="${PF_SMTP_PORT:-2525}"
BUSER="${PF_USER:-bench}"
SYSUSER="${PF_SYSUSER:-mailbench}"
PFDIR="$DATA/etc/postfix"
MASTER_PID_FILE="$DATA/postfix/spool/pid/master.pid"
export PATH="$PATH:/usr/sbin:/sbin"

case "$HOST" in 127.*) ;; *) echo "postfix.sh: refusing non-loopback PF_HOST=$HOST" >&2; exit 2;; esac

render() { # template output
  sed -e "s|@DATA@|$DATA|g" -e "s|@HOST@|$HOST|g" -e "s|@SMTP_PORT@|$SMTP_PORT|g" \
      -e "s|@USER@|$BUSER|g" -e "s|@UID@|$UID_|g" -e "s|@GID@|$GID_|g" "$1" > "$2"
}

setup() {
  command -v postfix >/dev/null || {
    echo "postfix.sh: postfix is not installed (apt-get install postfix)" >&2; exit 1; }
  id -u "$SYSUSER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$SYSUSER"
  UID_=$(id -u "$SYSUSER"); GID_=$(id -g "$SYSUSER")
  mkdir -p "$PFDIR" "$DATA/postfix/spool" "$DATA/postfix/lib" "$DATA/log" \
           "$DATA/mail/$BUSER/Maildir"/{cur,new,tmp}
  render "$HERE/main.cf.in" "$PFDIR/main.cf"
  render "$HERE/master.cf.in" "$PFDIR/master.cf"
  chown -R "$UID_:$GID_" "$DATA/mail"
  chown postfix "$DATA/postfix/lib"
  # Postfix daemons run as the postfix user and must reach the queue.
  chmod 755 "$DATA" "$DATA/etc" "$DATA/log"
  # create the queue directory tree with Postfix's own permissions
  postfix -c "$PFDIR" set-permissions >/dev/null 2>&1 || postfix -c "$PFDIR" check
}

master_pid() { [ -s "$MASTER_PID_FILE" ] && tr -d ' \n' < "$MASTER_PID_FILE"; }
running() { local pid; pid=$(master_pid) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start() {
  [ -f "$PFDIR/main.cf" ] || setup
  running && return 0
  postfix -c "$PFDIR" start >/dev/null 2>"$DATA/log/postfix-start.err" || {
    echo "postfix.sh: postfix start failed:" >&2; cat "$DATA/log/postfix-start.err" >&2; exit 1; }
}

stop() {
  running || return 0
  local pid; pid=$(master_pid)
  postfix -c "$PFDIR" stop >/dev/null 2>&1 || true
  # bounded wait for the master (its children exit with it)
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "postfix.sh: master $pid did not stop in 10 s; aborting it" >&2
  postfix -c "$PFDIR" abort >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true
}

# Re-read the config; as a side effect idle smtpd/cleanup processes left
# from an earlier load exit within a fraction of a second.
reload() { running && postfix -c "$PFDIR" reload >/dev/null 2>&1; }

case "${1:-}" in
  setup) setup ;;
  start) start ;;
  stop) stop ;;
  reload) reload ;;
  status) if running; then echo "postfix running, master pid $(master_pid)"; else echo "postfix stopped"; fi ;;
  masterpid) running && master_pid ;;
  maildir) echo "$DATA/mail/$BUSER/Maildir" ;;
  logs) tail -n 50 "$DATA/log/postfix.log" 2>/dev/null ;;
  *) echo "usage: $0 {setup|start|stop|reload|status|masterpid|maildir|logs}" >&2; exit 2 ;;
esac
