#!/usr/bin/env bash
# SMTP ingest benchmark: pimail against a private Postfix instance, on this
# machine, in this run, reported as a ratio. Run by hand (`make bench`), never
# by `make test`. See benches/README.md for what is measured and the knobs.
#
# Everything it starts (pimail, Postfix, samplers) is stopped on exit, also on
# failure or Ctrl-C; its scratch directory is removed unless BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin"   # postfix, useradd

RUN_SECONDS="${BENCH_SECONDS:-10}"
SIZES="${BENCH_SIZES:-4096 65536}"
SESSION_COUNTS="${BENCH_SESSIONS:-1 10 50}"
WARMUP_SECONDS="${BENCH_WARMUP_SECONDS:-2}"
FSYNC_SECONDS="${BENCH_FSYNC_SECONDS:-3}"
PAUSE_SECONDS="${BENCH_PAUSE_SECONDS:-1}"
DELIVER_TIMEOUT="${BENCH_DELIVER_TIMEOUT:-60}"
PORT_BASE="${BENCH_PORT_BASE:-12000}"
POSTFIX_PORT="${BENCH_POSTFIX_PORT:-2525}"
SKIP_PIMAIL="${BENCH_SKIP_PIMAIL:-0}"
SKIP_POSTFIX="${BENCH_SKIP_POSTFIX:-0}"
NO_INSTALL="${BENCH_NO_INSTALL:-0}"
KEEP="${BENCH_KEEP:-0}"
# /var/tmp rather than /tmp: /tmp is often tmpfs, where fsync costs nothing and
# the figures would say nothing about a disk.
WORK_PARENT="${BENCH_WORK_PARENT:-/var/tmp}"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PIMAIL="${BENCH_PIMAIL_BIN:-$TARGET_DIR/release/pimail}"
INGEST="$TARGET_DIR/ingest-bench"
REPORT="$TARGET_DIR/bench-ingest.md"
RCPT="bench@bench.local"
PIMAIL_SMTP_PORT=$((PORT_BASE + 25))

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Cleanup: whatever happens, stop what we started.
WORK=""
PIMAIL_PID=""
POSTFIX_STARTED=0

stop_pimail() {
  [ -n "$PIMAIL_PID" ] || return 0
  if kill -0 "$PIMAIL_PID" 2>/dev/null; then
    kill -TERM "$PIMAIL_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do   # up to 10 s for a clean shutdown
      kill -0 "$PIMAIL_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$PIMAIL_PID" 2>/dev/null; then
      log "pimail (pid $PIMAIL_PID) ignored SIGTERM for 10 s; killing it"
      kill -KILL "$PIMAIL_PID" 2>/dev/null || true
    fi
  fi
  wait "$PIMAIL_PID" 2>/dev/null || true
  PIMAIL_PID=""
}

postfix_ctl() { PF_DATA="$WORK/postfix" PF_SMTP_PORT="$POSTFIX_PORT" bash benches/postfix/postfix.sh "$@"; }

stop_postfix() {
  [ "$POSTFIX_STARTED" = 1 ] || return 0
  postfix_ctl stop || true
  POSTFIX_STARTED=0
}

cleanup() {
  local status=$?
  set +e
  stop_pimail
  stop_postfix
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ]; then log "kept scratch directory $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers

# `key=value` field of an ingest output line, or NA.
field() {
  local token
  for token in $1; do
    if [ "${token%%=*}" = "$2" ]; then printf '%s' "${token#*=}"; return; fi
  done
  printf 'NA'
}

# Float formatting for the report; NA in, NA out.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b }'; }
kib_to_mib() { awk -v k="$1" 'BEGIN { if (k == "NA" || k == "") print "NA"; else printf "%.1f MiB", k / 1024 }'; }
round() { awk -v x="$1" 'BEGIN { if (x == "NA" || x == "") print "NA"; else printf "%.0f", x }'; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait until 127.0.0.1:$1 accepts, at most $2 s; give up early if pid $3 died.
wait_port() {
  local tries=$(($2 * 10)) i
  for ((i = 0; i < tries; i++)); do
    port_open "$1" && return 0
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# One benchmark run; prints ingest's result line. Extra args go to ingest.
run_smtp() { # port size sessions seconds [ingest args...]
  local port=$1 size=$2 sessions=$3 seconds=$4
  shift 4
  "$INGEST" smtp --addr "127.0.0.1:$port" --rcpt "$RCPT" --size "$size" \
    --sessions "$sessions" --seconds "$seconds" --ehlo bench.client "$@"
}

# ---------------------------------------------------------------------------
# 1. Build

mkdir -p "$TARGET_DIR"
if [ -n "${BENCH_PIMAIL_BIN:-}" ]; then
  PIMAIL_LABEL="binary $PIMAIL"
else
  # what cargo builds is the work tree, so say whether it differs from HEAD
  PIMAIL_LABEL=$(git describe --always --dirty 2>/dev/null || echo '(not a git checkout)')
  if [ "$SKIP_PIMAIL" != 1 ]; then
    log "building pimail (release)"
    cargo build --release
  fi
fi
log "building the benchmark client"
rustc -O --edition 2024 benches/ingest.rs -o "$INGEST"

WORK=$(mktemp -d "$WORK_PARENT/pimail-bench.XXXXXX")
chmod 755 "$WORK"   # Postfix daemons (user postfix) must reach their queue in here
FS_TYPE=$(df -PT "$WORK" 2>/dev/null | awk 'NR == 2 { print $2 }')
[ "$FS_TYPE" = tmpfs ] && log "warning: $WORK is on tmpfs; fsync is free there, set BENCH_WORK_PARENT to a disk"

# ---------------------------------------------------------------------------
# 2. Disk: fdatasync rate on the filesystem of both servers' data

log "measuring the fsync rate in $WORK ($FS_TYPE)"
FSYNC_LINE=$("$INGEST" fsync --dir "$WORK" --seconds "$FSYNC_SECONDS")
FSYNC_RATE=$(field "$FSYNC_LINE" fsyncs_per_sec)
log "$FSYNC_LINE"

declare -A RESULT   # "server/size/sessions" -> ingest output line
RAW_LINES=()

run_matrix() { # server port [ingest args...]
  local server=$1 port=$2 size sessions line
  shift 2
  for size in $SIZES; do
    for sessions in $SESSION_COUNTS; do
      if [ "$server" = postfix ]; then
        # Idle smtpd processes of a bigger previous cell would count in this
        # cell's PSS; a reload makes them exit.
        postfix_ctl reload
      fi
      sleep "$PAUSE_SECONDS"   # let the previous run's work (delivery, flushes) settle
      log "$server: ${size} B x ${sessions} sessions for ${RUN_SECONDS} s"
      line=$(run_smtp "$port" "$size" "$sessions" "$RUN_SECONDS" "$@")
      log "  $line"
      RESULT["$server/$size/$sessions"]="$line"
      RAW_LINES+=("$server size=$size sessions=$sessions $line")
      if [ "$server" = postfix ]; then
        # Keep the Maildir small so that counting deliveries stays cheap.
        find "$POSTFIX_MAILDIR/new" -type f -delete
      fi
    done
  done
}

# ---------------------------------------------------------------------------
# 3-4. pimail

# All benchmark sessions come from 127.0.0.1, where real load comes from many
# addresses; Postfix exempts $mynetworks from its per-client limits
# (smtpd_client_event_limit_exceptions), so pimail's per-IP cap is raised to
# let the largest cell really run that many sessions. Other limits stay default.
PIMAIL_LIMIT_NOTE=""
raise_pimail_connection_limits() { # config file
  local config=$1 need current key
  # shellcheck disable=SC2086  # the list is meant to split into words
  need=$(( $(printf '%s\n' $SESSION_COUNTS | sort -n | tail -n 1) + 10 ))
  for key in max_connections_per_ip max_connections; do
    current=$(sed -n "s/^$key *= *\([0-9][0-9]*\).*/\1/p" "$config")
    if [ -z "$current" ]; then
      log "warning: no '$key = N' line in $config; left as is (cells above its limit will see 421s)"
    elif [ "$current" -lt "$need" ]; then
      sed -i "s/^$key *= *[0-9][0-9]*/$key = $need/" "$config"
      PIMAIL_LIMIT_NOTE+=" limits.$key $current -> $need;"
    fi
  done
  [ -z "$PIMAIL_LIMIT_NOTE" ] || log "pimail config:$PIMAIL_LIMIT_NOTE"
}

PIMAIL_IDLE_KIB=NA
PIMAIL_NOTE=""
if [ "$SKIP_PIMAIL" = 1 ]; then
  PIMAIL_NOTE="skipped (BENCH_SKIP_PIMAIL=1)"
  log "pimail: $PIMAIL_NOTE"
else
  [ -x "$PIMAIL" ] || die "no pimail binary at $PIMAIL"
  port_open "$PIMAIL_SMTP_PORT" && die "port $PIMAIL_SMTP_PORT already accepts connections; set BENCH_PORT_BASE"
  PIMAIL_DATA="$WORK/pimail"
  log "pimail: init in $PIMAIL_DATA, SMTP on 127.0.0.1:$PIMAIL_SMTP_PORT"
  "$PIMAIL" init --data-dir "$PIMAIL_DATA" --domain bench.local --dev --port-base "$PORT_BASE" \
    > "$WORK/pimail-init.log" 2>&1 || { cat "$WORK/pimail-init.log" >&2; die "pimail init failed"; }
  raise_pimail_connection_limits "$PIMAIL_DATA/pimail.toml"
  echo benchpass | "$PIMAIL" user add "$RCPT" --password-stdin --config "$PIMAIL_DATA/pimail.toml" \
    > "$WORK/pimail-user.log" 2>&1 || { cat "$WORK/pimail-user.log" >&2; die "pimail user add failed"; }
  "$PIMAIL" serve --config "$PIMAIL_DATA/pimail.toml" > "$WORK/pimail.log" 2>&1 &
  PIMAIL_PID=$!
  if ! wait_port "$PIMAIL_SMTP_PORT" 30 "$PIMAIL_PID"; then
    tail -n 30 "$WORK/pimail.log" >&2
    kill -0 "$PIMAIL_PID" 2>/dev/null || die "pimail serve exited before accepting (its log is above)"
    die "pimail did not accept on port $PIMAIL_SMTP_PORT within 30 s"
  fi
  sleep 2   # idle means: started, listening, nothing asked of it yet
  PIMAIL_IDLE_KIB=$(field "$("$INGEST" rss --pid "$PIMAIL_PID" --metric rss)" peak_kib)
  log "pimail idle VmRSS: $PIMAIL_IDLE_KIB KiB"
  if [ "$WARMUP_SECONDS" != 0 ]; then
    log "pimail: warm-up ${WARMUP_SECONDS} s (not reported)"
    run_smtp "$PIMAIL_SMTP_PORT" 4096 10 "$WARMUP_SECONDS" > /dev/null
  fi
  run_matrix pimail "$PIMAIL_SMTP_PORT" --sample-pid "$PIMAIL_PID" --metric rss
  kill -0 "$PIMAIL_PID" 2>/dev/null || { tail -n 30 "$WORK/pimail.log" >&2; die "pimail died during the benchmark"; }
  stop_pimail   # nothing of it may run while Postfix is measured
fi

# ---------------------------------------------------------------------------
# 5. Postfix

install_postfix() {
  command -v postfix > /dev/null && return 0
  [ "$NO_INSTALL" = 1 ] && { log "postfix not installed and BENCH_NO_INSTALL=1"; return 1; }
  [ "$(id -u)" = 0 ] || { log "postfix not installed and not root"; return 1; }
  command -v apt-get > /dev/null || { log "postfix not installed and no apt-get"; return 1; }
  log "installing postfix (apt-get)"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix > "$WORK/apt.log" 2>&1; then
    # a stale package list is the usual reason
    apt-get update >> "$WORK/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix >> "$WORK/apt.log" 2>&1 ||
      { tail -n 20 "$WORK/apt.log" >&2; log "postfix install failed"; return 1; }
  fi
}

POSTFIX_NOTE=""
POSTFIX_IDLE_KIB=NA
POSTFIX_VERSION=""
if [ "$SKIP_POSTFIX" = 1 ]; then
  POSTFIX_NOTE="skipped (BENCH_SKIP_POSTFIX=1)"
elif [ "$(id -u)" != 0 ]; then
  POSTFIX_NOTE="skipped (a private Postfix instance needs root)"
elif ! install_postfix; then
  POSTFIX_NOTE="skipped (Postfix not available)"
elif port_open "$POSTFIX_PORT"; then
  die "port $POSTFIX_PORT already accepts connections (a leftover Postfix?); set BENCH_POSTFIX_PORT"
else
  log "postfix: private instance in $WORK/postfix, SMTP on 127.0.0.1:$POSTFIX_PORT"
  postfix_ctl setup > "$WORK/postfix-setup.log" 2>&1 || { cat "$WORK/postfix-setup.log" >&2; die "postfix setup failed"; }
  POSTFIX_STARTED=1
  postfix_ctl start
  POSTFIX_MASTER=$(postfix_ctl masterpid) || die "postfix master did not start"
  wait_port "$POSTFIX_PORT" 30 "$POSTFIX_MASTER" || { postfix_ctl logs >&2; die "postfix did not accept on port $POSTFIX_PORT"; }
  POSTFIX_MAILDIR=$(postfix_ctl maildir)
  POSTFIX_VERSION=$(postconf -c "$WORK/postfix/etc/postfix" -h mail_version 2>/dev/null || true)
  sleep 2
  POSTFIX_IDLE_KIB=$(field "$("$INGEST" rss --pid "$POSTFIX_MASTER" --metric pss)" peak_kib)
  log "postfix idle PSS: $POSTFIX_IDLE_KIB KiB"
  if [ "$WARMUP_SECONDS" != 0 ]; then
    log "postfix: warm-up ${WARMUP_SECONDS} s (not reported)"
    run_smtp "$POSTFIX_PORT" 4096 10 "$WARMUP_SECONDS" --maildir "$POSTFIX_MAILDIR" \
      --deliver-timeout-secs "$DELIVER_TIMEOUT" > /dev/null
    find "$POSTFIX_MAILDIR/new" -type f -delete
  fi
  run_matrix postfix "$POSTFIX_PORT" --sample-pid "$POSTFIX_MASTER" --metric pss \
    --maildir "$POSTFIX_MAILDIR" --deliver-timeout-secs "$DELIVER_TIMEOUT"
  stop_postfix
fi
[ -n "$POSTFIX_NOTE" ] && log "postfix: $POSTFIX_NOTE"

# ---------------------------------------------------------------------------
# 6. Report

cell() { # server size sessions key
  local line="${RESULT["$1/$2/$3"]:-}"
  if [ -z "$line" ]; then printf 'NA'; else field "$line" "$4"; fi
}

report() {
  echo "# SMTP ingest: pimail vs Postfix"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -sr), data on $FS_TYPE ($WORK_PARENT);" \
    "${RUN_SECONDS} s per cell, one recipient per message, no pipelining."
  echo "pimail ${PIMAIL_LABEL}${PIMAIL_NOTE:+ $PIMAIL_NOTE};" \
    "Postfix ${POSTFIX_VERSION:-$POSTFIX_NOTE}."
  echo
  echo "| size | sessions | pimail msg/s | pimail peak RSS | Postfix accepted msg/s | Postfix delivered msg/s | Postfix peak PSS | pimail/Postfix (delivered) |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  local size sessions p_rate pf_del pf_del_text
  for size in $SIZES; do
    for sessions in $SESSION_COUNTS; do
      p_rate=$(cell pimail "$size" "$sessions" rate)
      pf_del=$(cell postfix "$size" "$sessions" delivered_rate)
      pf_del_text=$(round "$pf_del")
      if [ "$(cell postfix "$size" "$sessions" delivered_complete)" = 0 ]; then
        pf_del_text+=" (incomplete)"
      fi
      echo "| $size | $sessions | $(round "$p_rate") | $(kib_to_mib "$(cell pimail "$size" "$sessions" peak_kib)")" \
        "| $(round "$(cell postfix "$size" "$sessions" rate)") | $pf_del_text" \
        "| $(kib_to_mib "$(cell postfix "$size" "$sessions" peak_kib)") | $(ratio "$p_rate" "$pf_del") |"
    done
  done
  echo
  echo "Latency, final \".\" to its 250 (Postfix: queued, not yet delivered), p50 / p99 ms:"
  echo
  echo "| size | sessions | pimail | Postfix |"
  echo "|---:|---:|---:|---:|"
  for size in $SIZES; do
    for sessions in $SESSION_COUNTS; do
      echo "| $size | $sessions | $(cell pimail "$size" "$sessions" p50_ms) / $(cell pimail "$size" "$sessions" p99_ms)" \
        "| $(cell postfix "$size" "$sessions" p50_ms) / $(cell postfix "$size" "$sessions" p99_ms) |"
    done
  done
  echo
  local p_ref
  p_ref=$(cell pimail 4096 10 rate)
  echo "- Disk: ${FSYNC_RATE} fdatasync/s (4 KiB overwrite, same filesystem as both servers' data)."
  echo "- pimail 4 KiB @ 10 sessions: $(round "$p_ref") msg/s = $(ratio "$p_ref" "$FSYNC_RATE") x the fsync rate" \
    "(above 1 only if commits are grouped)."
  echo "- Idle: pimail $(kib_to_mib "$PIMAIL_IDLE_KIB") VmRSS; Postfix $(kib_to_mib "$POSTFIX_IDLE_KIB") PSS (all processes)."
  if [ -n "$PIMAIL_LIMIT_NOTE" ]; then
    echo "- pimail config changed from init's defaults (all sessions come from one IP; Postfix exempts" \
      "loopback from its per-client limits):$PIMAIL_LIMIT_NOTE"
  fi
  echo "- pimail memory is VmRSS of its one process (counts shared libraries in full);" \
    "Postfix's is the sum of PSS over the master and all its children."
  echo "- Postfix delivered = messages accepted in the cell / time from the cell's start until the last one is in Maildir/new."
  local failed="" reconnected="" key count
  for key in $(printf '%s\n' "${!RESULT[@]}" | sort -t/ -k1,1 -k2,2n -k3,3n); do
    count=$(field "${RESULT[$key]}" failures)
    [ "$count" = 0 ] || failed+=" $key: $count;"
    count=$(field "${RESULT[$key]}" reconnects)
    [ "$count" = 0 ] || reconnected+=" $key: $count;"
  done
  if [ -n "$failed" ]; then echo "- **Failures** (server/size/sessions: count):$failed see the run's stderr."; fi
  if [ -n "$reconnected" ]; then
    echo "- Sessions the server closed with 421 between messages (a per-session limit; the client" \
      "reconnected, no message lost, not counted as failures):$reconnected"
  fi
  echo
  echo "<details><summary>raw</summary>"
  echo
  echo '```'
  echo "$FSYNC_LINE"
  local raw
  for raw in "${RAW_LINES[@]}"; do echo "$raw"; done
  echo '```'
  echo "</details>"
}

report | tee "$REPORT"
log "report written to $REPORT"
