#!/usr/bin/env bash
# POP3 benchmark: pimail against a private Dovecot instance, on this machine,
# in this run, with the same messages; reported as ratios. Run by hand from
# the repo root (`bash benches/pop3/run.sh`), never by `make test`.
# See benches/pop3/README.md for what is measured and the knobs.
#
# Everything it starts (pimail, Dovecot) is stopped on exit, also on failure
# or Ctrl-C; its scratch directory is removed unless BENCH_KEEP=1. All
# traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="$PATH:/usr/sbin:/sbin"   # dovecot, useradd

MESSAGES="${BENCH_MESSAGES:-1000}"
RUNS="${BENCH_RUNS:-3}"
WARMUP="${BENCH_WARMUP:-1}"
IDLE_SESSIONS="${BENCH_IDLE_SESSIONS:-50}"
SETTLE_MS="${BENCH_SETTLE_MS:-2000}"
SEED="${BENCH_SEED:-1}"
PORT_BASE="${BENCH_PORT_BASE:-13000}"
DOVECOT_PORT="${BENCH_DOVECOT_PORT:-2110}"
SKIP_PIMAIL="${BENCH_SKIP_PIMAIL:-0}"
SKIP_DOVECOT="${BENCH_SKIP_DOVECOT:-0}"
NO_INSTALL="${BENCH_NO_INSTALL:-0}"
KEEP="${BENCH_KEEP:-0}"
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-180}"   # seconds, any one client step
WORK_PARENT="${BENCH_WORK_PARENT:-/var/tmp}"  # not /tmp: often tmpfs

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PIMAIL="${BENCH_PIMAIL_BIN:-$TARGET_DIR/release/pimail}"
CLIENT="$TARGET_DIR/pop3-bench"
REPORT="$TARGET_DIR/bench-pop3.md"
USER_MAIN="bench@bench.local"
USER_FMT="bench{}@bench.local"   # idle users bench1..benchN
PASS="benchpass"
SYSUSER="mailbench"               # owns Dovecot's Maildirs
PIMAIL_SMTP_PORT=$((PORT_BASE + 25))
PIMAIL_POP3_PORT=$((PORT_BASE + 110))

log() { printf '[pop3-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Cleanup: whatever happens, stop what we started.
WORK=""
PIMAIL_PID=""
DOVECOT_CONF=""
DOVECOT_MASTER=""

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

stop_dovecot() {
  [ -n "$DOVECOT_CONF" ] || return 0
  dovecot -c "$DOVECOT_CONF" stop >/dev/null 2>&1 || true
  if [ -n "$DOVECOT_MASTER" ]; then
    for _ in $(seq 1 100); do
      kill -0 "$DOVECOT_MASTER" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$DOVECOT_MASTER" 2>/dev/null; then
      log "dovecot master (pid $DOVECOT_MASTER) still running after 10 s; killing it"
      kill -KILL "$DOVECOT_MASTER" 2>/dev/null || true
    fi
  fi
  DOVECOT_CONF=""
  DOVECOT_MASTER=""
}

cleanup() {
  local status=$?
  set +e
  stop_pimail
  stop_dovecot
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

# `key=value` field of a client output line, or NA.
field() {
  local token
  for token in $1; do
    if [ "${token%%=*}" = "$2" ]; then printf '%s' "${token#*=}"; return; fi
  done
  printf 'NA'
}
# Median of the numbers given (NA ignored; NA if none).
median() {
  printf '%s\n' "$@" | awk '$1 != "NA" && $1 != "" { v[n++] = $1 }
    END { if (n == 0) { print "NA"; exit }
          for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
          if (n % 2) m = v[(n - 1) / 2]; else m = (v[n / 2 - 1] + v[n / 2]) / 2
          print m }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b }'; }
kib_to_mib() { awk -v k="$1" 'BEGIN { if (k == "NA" || k == "") print "NA"; else printf "%.1f MiB", k / 1024 }'; }
fmt_ms() { awk -v x="$1" 'BEGIN { if (x == "NA" || x == "") print "NA"; else if (x < 10) printf "%.2f ms", x; else printf "%.0f ms", x }'; }

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

client() { timeout "$STEP_TIMEOUT" "$CLIENT" "$@"; }

# ---------------------------------------------------------------------------
# 1. Build

mkdir -p "$TARGET_DIR"
if [ -n "${BENCH_PIMAIL_BIN:-}" ]; then
  PIMAIL_LABEL="binary $PIMAIL"
else
  # what cargo builds is the work tree, so say whether it differs from HEAD
  PIMAIL_LABEL="$(git describe --always --dirty 2>/dev/null || echo '(not a git checkout)'), $PIMAIL"
  if [ "$SKIP_PIMAIL" != 1 ]; then
    log "building pimail (release)"
    cargo build --release
  fi
fi
log "building the benchmark client"
rustc -O --edition 2024 benches/pop3/client.rs -o "$CLIENT"
SET_LINE=$("$CLIENT" sizes --count "$MESSAGES" --seed "$SEED")
log "message set: $SET_LINE"

WORK=$(mktemp -d "$WORK_PARENT/pimail-pop3-bench.XXXXXX")
chmod 755 "$WORK"   # Dovecot's mail processes (user $SYSUSER) must reach their Maildirs
FS_TYPE=$(df -PT "$WORK" 2>/dev/null | awk 'NR == 2 { print $2 }')

# ---------------------------------------------------------------------------
# 2. pimail: init, users, serve, messages over SMTP

PIMAIL_NOTE=""
PIMAIL_START_KIB=NA
PIMAIL_LIMIT_NOTE=""
PIMAIL_DELIVERY=""
if [ "$SKIP_PIMAIL" = 1 ]; then
  PIMAIL_NOTE="skipped (BENCH_SKIP_PIMAIL=1)"
else
  [ -x "$PIMAIL" ] || die "no pimail binary at $PIMAIL"
  for p in "$PIMAIL_SMTP_PORT" "$PIMAIL_POP3_PORT"; do
    port_open "$p" && die "port $p already accepts connections; set BENCH_PORT_BASE"
  done
  PD="$WORK/pimail"
  CONF="$PD/pimail.toml"
  log "pimail: init in $PD, SMTP 127.0.0.1:$PIMAIL_SMTP_PORT, POP3 127.0.0.1:$PIMAIL_POP3_PORT"
  "$PIMAIL" init --data-dir "$PD" --domain bench.local --dev --port-base "$PORT_BASE" \
    > "$WORK/pimail-init.log" 2>&1 || { cat "$WORK/pimail-init.log" >&2; die "pimail init failed"; }
  # All idle sessions come from 127.0.0.1; init's per-IP cap (20) would refuse
  # some of them. Other settings stay as init wrote them.
  need=$((IDLE_SESSIONS + 10))
  for key in max_connections_per_ip max_connections; do
    current=$(sed -n "s/^$key *= *\([0-9][0-9]*\).*/\1/p" "$CONF")
    if [ -n "$current" ] && [ "$current" -lt "$need" ]; then
      sed -i "s/^$key *= *[0-9][0-9]*/$key = $need/" "$CONF"
      PIMAIL_LIMIT_NOTE+=" limits.$key $current -> $need;"
    fi
  done
  log "pimail: adding $USER_MAIN and $IDLE_SESSIONS idle users (Argon2: takes a while)"
  for i in "" $(seq 1 "$IDLE_SESSIONS"); do
    u="${USER_FMT/\{\}/$i}"
    echo "$PASS" | "$PIMAIL" user add "$u" --password-stdin --config "$CONF" \
      >> "$WORK/pimail-user.log" 2>&1 || { tail -n 5 "$WORK/pimail-user.log" >&2; die "pimail user add $u failed"; }
  done
  "$PIMAIL" serve --config "$CONF" > "$WORK/pimail.log" 2>&1 &
  PIMAIL_PID=$!
  for p in "$PIMAIL_SMTP_PORT" "$PIMAIL_POP3_PORT"; do
    if ! wait_port "$p" 30 "$PIMAIL_PID"; then
      tail -n 30 "$WORK/pimail.log" >&2
      die "pimail did not accept on port $p within 30 s"
    fi
  done
  sleep 2
  PIMAIL_START_KIB=$(field "$("$CLIENT" mem --pid "$PIMAIL_PID" --metric rss)" kib)
  log "pimail: idle after start $PIMAIL_START_KIB KiB VmRSS; delivering $MESSAGES messages over SMTP"
  PIMAIL_DELIVERY=$(client smtp --addr "127.0.0.1:$PIMAIL_SMTP_PORT" --rcpt "$USER_MAIN" \
    --count "$MESSAGES" --seed "$SEED") || { tail -n 20 "$WORK/pimail.log" >&2; die "SMTP delivery to pimail failed"; }
  log "pimail: $PIMAIL_DELIVERY"
  stored=$("$PIMAIL" message list "$USER_MAIN" --config "$CONF" 2>&1 | grep -cE '^ *[0-9]+[[:space:]]' || true)
  log "pimail: message list shows $stored messages in INBOX"
  [ "$stored" = "$MESSAGES" ] || log "warning: expected $MESSAGES messages in pimail's INBOX, message list shows $stored"
fi

# ---------------------------------------------------------------------------
# 3. Dovecot: install, private instance, the same messages in its Maildir

install_dovecot() {
  [ -x /usr/lib/dovecot/pop3 ] && command -v dovecot > /dev/null && return 0
  [ "$NO_INSTALL" = 1 ] && { log "dovecot-pop3d not installed and BENCH_NO_INSTALL=1"; return 1; }
  command -v apt-get > /dev/null || { log "dovecot-pop3d not installed and no apt-get"; return 1; }
  log "installing dovecot-pop3d (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dovecot-imapd dovecot-pop3d \
      > "$WORK/apt.log" 2>&1; then
    apt-get update >> "$WORK/apt.log" 2>&1 || true   # a stale package list is the usual reason
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dovecot-imapd dovecot-pop3d \
      >> "$WORK/apt.log" 2>&1 || { tail -n 20 "$WORK/apt.log" >&2; log "dovecot install failed"; return 1; }
  fi
}

DOVECOT_NOTE=""
DOVECOT_START_KIB=NA
DOVECOT_START_PROCS=NA
DOVECOT_VERSION=""
DOVECOT_WRITE=""
if [ "$SKIP_DOVECOT" = 1 ]; then
  DOVECOT_NOTE="skipped (BENCH_SKIP_DOVECOT=1)"
elif [ "$(id -u)" != 0 ]; then
  DOVECOT_NOTE="skipped (a private Dovecot instance needs root)"
elif ! install_dovecot; then
  DOVECOT_NOTE="skipped (Dovecot not available)"
else
  port_open "$DOVECOT_PORT" && die "port $DOVECOT_PORT already accepts connections; set BENCH_DOVECOT_PORT"
  DV="$WORK/dovecot"
  id -u "$SYSUSER" > /dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$SYSUSER"
  UID_=$(id -u "$SYSUSER"); GID_=$(id -g "$SYSUSER")
  mkdir -p "$DV/run" "$DV/state" "$DV/mail"
  sed -e "s|@DATA@|$DV|g" -e "s|@MAIL@|$DV/mail|g" -e "s|@HOST@|127.0.0.1|g" \
      -e "s|@POP3_PORT@|$DOVECOT_PORT|g" -e "s|@UID@|$UID_|g" -e "s|@GID@|$GID_|g" \
      benches/pop3/dovecot.conf.in > "$DV/dovecot.conf"
  : > "$DV/users"
  for i in "" $(seq 1 "$IDLE_SESSIONS"); do
    u="${USER_FMT/\{\}/$i}"
    printf '%s:%s\n' "$u" "$PASS" >> "$DV/users"
    mkdir -p "$DV/mail/$u/Maildir"/{cur,new,tmp}
  done
  chmod 644 "$DV/users"
  log "dovecot: writing the same $MESSAGES messages into $DV/mail/$USER_MAIN/Maildir/new"
  DOVECOT_WRITE=$(client maildir --dir "$DV/mail/$USER_MAIN/Maildir" --count "$MESSAGES" --seed "$SEED")
  log "dovecot: $DOVECOT_WRITE"
  chown -R "$UID_:$GID_" "$DV/mail"
  chmod 755 "$DV"
  DOVECOT_VERSION=$(dovecot --version 2>/dev/null | awk '{ print $1 }')
  DOVECOT_CONF="$DV/dovecot.conf"
  ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
  log "dovecot $DOVECOT_VERSION: private instance, POP3 127.0.0.1:$DOVECOT_PORT"
  dovecot -c "$DOVECOT_CONF" || { tail -n 20 "$DV/dovecot.log" >&2 2>/dev/null; die "dovecot did not start"; }
  for _ in $(seq 1 50); do [ -s "$DV/run/master.pid" ] && break; sleep 0.1; done
  DOVECOT_MASTER=$(tr -d ' \n' < "$DV/run/master.pid" 2>/dev/null || true)
  [ -n "$DOVECOT_MASTER" ] || die "dovecot wrote no master.pid"
  wait_port "$DOVECOT_PORT" 30 "$DOVECOT_MASTER" || { tail -n 20 "$DV/dovecot.log" >&2; die "dovecot did not accept on $DOVECOT_PORT"; }
  sleep 2
  line=$("$CLIENT" mem --pid "$DOVECOT_MASTER" --metric pss)
  DOVECOT_START_KIB=$(field "$line" kib); DOVECOT_START_PROCS=$(field "$line" procs)
  log "dovecot: idle after start $DOVECOT_START_KIB KiB PSS over $DOVECOT_START_PROCS processes"
fi
[ -n "$DOVECOT_NOTE" ] && log "dovecot: $DOVECOT_NOTE"

# ---------------------------------------------------------------------------
# 4. Sessions: warm-up, then RUNS rounds, pimail and Dovecot alternating so
# that background noise hits both alike.

declare -A ADDR PID_OF
ADDR[pimail]="127.0.0.1:$PIMAIL_POP3_PORT"; PID_OF[pimail]="$PIMAIL_PID"
ADDR[dovecot]="127.0.0.1:$DOVECOT_PORT"; PID_OF[dovecot]="$DOVECOT_MASTER"
SERVERS=()
[ -n "$PIMAIL_PID" ] && SERVERS+=(pimail)
[ -n "$DOVECOT_MASTER" ] && SERVERS+=(dovecot)
[ "${#SERVERS[@]}" -gt 0 ] || die "no server to measure"

declare -A RUN_LINES WARM_LINE IDLE_LINE
RAW=()
LINE=""
session() { # server label -> LINE
  LINE=$(client bench --addr "${ADDR[$1]}" --user "$USER_MAIN" --pass "$PASS" \
    --cpu-pid "${PID_OF[$1]}" --expect "$MESSAGES") || { log "$1 $2: the session failed"; LINE="failed=1"; }
  log "$1 $2: $LINE"
  RAW+=("$1 $2 $LINE")
}

if [ "$WARMUP" = 1 ]; then
  for s in "${SERVERS[@]}"; do session "$s" "first session (not in the medians)"; WARM_LINE[$s]=$LINE; done
fi
for r in $(seq 1 "$RUNS"); do
  for s in "${SERVERS[@]}"; do session "$s" "run $r"; RUN_LINES[$s]+="$LINE"$'\n'; done
done

# ---------------------------------------------------------------------------
# 5. Memory: IDLE_SESSIONS idle authenticated sessions of different users

# Twice: the first round's logins are these users' first (pimail hashes each
# password with Argon2id then, and keeps a success cache); the second round
# shows what holding a session costs once the server has seen the users.
declare -A IDLE_LINE2
idle_round() { # server
  local metric=rss
  [ "$1" = dovecot ] && metric=pss
  client idle --addr "${ADDR[$1]}" --user-fmt "$USER_FMT" --pass "$PASS" \
    --count "$IDLE_SESSIONS" --pid "${PID_OF[$1]}" --metric "$metric" --settle-ms "$SETTLE_MS" ||
    { log "$1: idle sessions failed"; echo "failed=1"; }
}
for s in "${SERVERS[@]}"; do
  log "$s: $IDLE_SESSIONS idle sessions of $IDLE_SESSIONS users, first round"
  IDLE_LINE[$s]=$(idle_round "$s")
  log "$s: ${IDLE_LINE[$s]}"
  RAW+=("$s idle-1 ${IDLE_LINE[$s]}")
  log "$s: $IDLE_SESSIONS idle sessions, second round"
  IDLE_LINE2[$s]=$(idle_round "$s")
  log "$s: ${IDLE_LINE2[$s]}"
  RAW+=("$s idle-2 ${IDLE_LINE2[$s]}")
done

[ -z "$PIMAIL_PID" ] || kill -0 "$PIMAIL_PID" 2>/dev/null || { tail -n 30 "$WORK/pimail.log" >&2; die "pimail died during the benchmark"; }
PIMAIL_LOG_ERRORS=""
if [ -n "$PIMAIL_PID" ]; then
  PIMAIL_LOG_ERRORS=$(grep -ciE ' (error|warn)' "$WORK/pimail.log" || true)
fi
DOVECOT_LOG_ERRORS=""
if [ -n "$DOVECOT_MASTER" ]; then
  DOVECOT_LOG_ERRORS=$(grep -ciE 'error|fatal|panic' "$WORK/dovecot/dovecot.log" || true)
fi
stop_pimail
stop_dovecot

# ---------------------------------------------------------------------------
# 6. Report

med() { # server key
  local values=() l
  while IFS= read -r l; do [ -n "$l" ] && values+=("$(field "$l" "$2")"); done <<< "${RUN_LINES[$1]:-}"
  median "${values[@]:-NA}"
}
errs() { # server: errors summed over the measured runs and the warm-up
  local sum=0 l e
  while IFS= read -r l; do
    [ -n "$l" ] || continue
    e=$(field "$l" errors); [ "$e" = NA ] && e=1
    sum=$((sum + e))
  done <<< "${RUN_LINES[$1]:-}"$'\n'"${WARM_LINE[$1]:-}"
  printf '%s' "$sum"
}

report() {
  echo "# POP3: pimail vs Dovecot"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -sr), data on $FS_TYPE ($WORK_PARENT)."
  echo "pimail ${PIMAIL_LABEL}${PIMAIL_NOTE:+ $PIMAIL_NOTE}; Dovecot ${DOVECOT_VERSION:-$DOVECOT_NOTE}."
  echo "$MESSAGES messages (seed $SEED: $(field "$SET_LINE" crlf_octets) octets with CRLF," \
    "$(field "$SET_LINE" min)-$(field "$SET_LINE" max) octets, $(field "$SET_LINE" over_64k) over 64 KiB)," \
    "one session per run: login, STAT, UIDL, LIST, RETR of each message in turn (no pipelining), QUIT" \
    "without DELE. Median of $RUNS runs per server, the servers alternating."
  echo
  echo "| operation | pimail | Dovecot | pimail / Dovecot |"
  echo "|---|---:|---:|---:|"
  local key name p d
  for key in login_ms:"connect + USER/PASS" stat_ms:STAT uidl_ms:"UIDL (all)" list_ms:"LIST (all)" \
             retr_ms:"RETR x $MESSAGES" quit_ms:QUIT total_ms:"**total session**" server_cpu_ms:"server CPU time (user+sys)"; do
    name=${key#*:}; key=${key%%:*}
    p=$(med pimail "$key"); d=$(med dovecot "$key")
    echo "| $name | $(fmt_ms "$p") | $(fmt_ms "$d") | $(ratio "$p" "$d") |"
  done
  echo
  local pw dw
  pw="${WARM_LINE[pimail]:-}"; dw="${WARM_LINE[dovecot]:-}"
  if [ "$WARMUP" = 1 ]; then
    echo "- First session after loading (not in the medians; Dovecot builds its index here): total" \
      "pimail $(fmt_ms "$(field "$pw" total_ms)"), Dovecot $(fmt_ms "$(field "$dw" total_ms)")."
  fi
  local pl dl
  pl=$(printf '%s' "${RUN_LINES[pimail]:-}" | head -n 1); dl=$(printf '%s' "${RUN_LINES[dovecot]:-}" | head -n 1)
  echo "- Maildrop as STAT reports it: pimail $(field "$pl" messages) messages, $(field "$pl" stat_octets) octets;" \
    "Dovecot $(field "$dl" messages) messages, $(field "$dl" stat_octets) octets" \
    "(pimail's count includes the Received: header it adds at delivery)."
  local gen_digest
  gen_digest=$(field "${PIMAIL_DELIVERY:-$DOVECOT_WRITE}" body_digest)
  echo "- Message bodies as retrieved, digest: pimail $(field "$pl" body_digest), Dovecot $(field "$dl" body_digest)," \
    "as generated $gen_digest$( [ "$(field "$pl" body_digest)" = "$gen_digest" ] && [ "$(field "$dl" body_digest)" = "$gen_digest" ] && echo ' (all equal)')."
  echo "- Checks failed (message counts, unique UIDLs, each RETR's octets = its LIST size, no bare LF): " \
    "pimail $(errs pimail), Dovecot $(errs dovecot)."
  if [ -n "$PIMAIL_DELIVERY" ]; then
    echo "- Loading: pimail over SMTP (one session) in $(field "$PIMAIL_DELIVERY" seconds) s; Dovecot: files written into Maildir/new (LF, S= and W= sizes in the names as its LDA writes them)."
  fi
  echo
  echo "Memory ($IDLE_SESSIONS idle authenticated sessions of $IDLE_SESSIONS different users, sampled ${SETTLE_MS} ms after the last login):"
  echo
  local pi="${IDLE_LINE[pimail]:-}" di="${IDLE_LINE[dovecot]:-}"
  echo "| | pimail (VmRSS, one process) | Dovecot (sum of PSS, all processes) | pimail / Dovecot |"
  echo "|---|---:|---:|---:|"
  echo "| idle, after start | $(kib_to_mib "$PIMAIL_START_KIB") | $(kib_to_mib "$DOVECOT_START_KIB") ($DOVECOT_START_PROCS processes) | $(ratio "$PIMAIL_START_KIB" "$DOVECOT_START_KIB") |"
  echo "| idle, after the runs | $(kib_to_mib "$(field "$pi" before_kib)") | $(kib_to_mib "$(field "$di" before_kib)") ($(field "$di" procs_before) processes) | $(ratio "$(field "$pi" before_kib)" "$(field "$di" before_kib)") |"
  echo "| with $IDLE_SESSIONS sessions | $(kib_to_mib "$(field "$pi" with_kib)") | $(kib_to_mib "$(field "$di" with_kib)") ($(field "$di" procs_with) processes) | $(ratio "$(field "$pi" with_kib)" "$(field "$di" with_kib)") |"
  echo "| **per session** | $(field "$pi" per_session_kib) KiB | $(field "$di" per_session_kib) KiB | $(ratio "$(field "$pi" per_session_kib)" "$(field "$di" per_session_kib)") |"
  echo "| after they QUIT | $(kib_to_mib "$(field "$pi" after_kib)") | $(kib_to_mib "$(field "$di" after_kib)") ($(field "$di" procs_after) processes) | |"
  local pi2="${IDLE_LINE2[pimail]:-}" di2="${IDLE_LINE2[dovecot]:-}"
  echo "| second round: with $IDLE_SESSIONS sessions | $(kib_to_mib "$(field "$pi2" with_kib)") | $(kib_to_mib "$(field "$di2" with_kib)") | $(ratio "$(field "$pi2" with_kib)" "$(field "$di2" with_kib)") |"
  echo "| **second round: per session** | $(field "$pi2" per_session_kib) KiB | $(field "$di2" per_session_kib) KiB | $(ratio "$(field "$pi2" per_session_kib)" "$(field "$di2" per_session_kib)") |"
  echo "| second round: after they QUIT | $(kib_to_mib "$(field "$pi2" after_kib)") | $(kib_to_mib "$(field "$di2" after_kib)") | |"
  echo
  echo "- Sessions alive (NOOP answered) of $IDLE_SESSIONS: pimail $(field "$pi" alive), Dovecot $(field "$di" alive);" \
    "$IDLE_SESSIONS logins took pimail $(fmt_ms "$(field "$pi" login_ms)"), Dovecot $(fmt_ms "$(field "$di" login_ms)")" \
    "(pimail hashes with Argon2id, Dovecot's passwd-file here holds plain passwords)."
  echo "- Per session = (with sessions - just before that round) / sessions alive. Second round: the same" \
    "$IDLE_SESSIONS users log in again after all first-round sessions quit; logins took pimail" \
    "$(fmt_ms "$(field "$pi2" login_ms)"), Dovecot $(fmt_ms "$(field "$di2" login_ms)")."
  if [ -n "$PIMAIL_LIMIT_NOTE" ]; then
    echo "- pimail config changed from init's defaults (all sessions come from one IP):$PIMAIL_LIMIT_NOTE"
  fi
  echo "- Log lines with error/warn: pimail ${PIMAIL_LOG_ERRORS:-NA}, Dovecot ${DOVECOT_LOG_ERRORS:-NA}."
  echo "- Times are wall clock on a machine that may be shared; server CPU is user+system time of the" \
    "server's processes during the session (10 ms ticks), less sensitive to other load."
  echo
  echo "<details><summary>raw</summary>"
  echo
  echo '```'
  echo "set $SET_LINE"
  [ -n "$PIMAIL_DELIVERY" ] && echo "pimail smtp $PIMAIL_DELIVERY"
  [ -n "$DOVECOT_WRITE" ] && echo "dovecot maildir $DOVECOT_WRITE"
  local raw
  for raw in "${RAW[@]}"; do echo "$raw"; done
  echo '```'
  echo "</details>"
}

report | tee "$REPORT"
log "report written to $REPORT"
