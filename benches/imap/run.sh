#!/usr/bin/env bash
# IMAP benchmark, pimail next to Dovecot (see bench.py). From the repo root:
#   bash benches/imap/run.sh [bench.py options]
# Starts a release pimail on 127.0.0.1:30143 (data in /tmp/pimail-imap-bench)
# and the reference Dovecot on 127.0.0.1:2143 (/work/shared/reference-stack or
# $REFSTACK), loads both with the same messages, prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
REFSTACK="${REFSTACK:-/work/shared/reference-stack}"
DATA="${PIMAIL_BENCH_DATA:-/tmp/pimail-imap-bench}"
# A private reference instance, on ports apart from other benchmarks'.
export MAILBENCH_REF_DATA="${MAILBENCH_REF_DATA:-/tmp/mailbench-ref-imap}"
export IMAP_PORT="${IMAP_PORT:-2243}" POP3_PORT="${POP3_PORT:-2210}" SMTP_PORT="${SMTP_PORT:-2625}"
# BENCH_PIMAIL_BIN: a prebuilt binary (e.g. the static musl build, the
# closest to the Raspberry Pi's); otherwise a release build.
BIN="${BENCH_PIMAIL_BIN:-}"
if [ -z "$BIN" ]; then cargo build --release --locked; BIN=target/release/pimail; fi
if [ ! -f "$DATA/pimail.toml" ]; then
  $BIN init --data-dir "$DATA" --domain bench.test --dev --port-base 30000 >/dev/null
  sed -i -e 's/^max_connections = 200/max_connections = 5000/' \
         -e 's/^max_connections_per_ip = 20/max_connections_per_ip = 5000/' "$DATA/pimail.toml"
  echo benchpass | $BIN user add bench@bench.test --password-stdin --config "$DATA/pimail.toml"
fi
ulimit -n 65536 2>/dev/null || true
$BIN serve --config "$DATA/pimail.toml" 2>"$DATA/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; bash "$REFSTACK/refstack.sh" stop >/dev/null 2>&1 || true' EXIT
bash "$REFSTACK/refstack.sh" start
# Both servers must be answering before the clients start.
for port in 30143 "$IMAP_PORT"; do
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
done
python3 benches/imap/bench.py --pimail-pid "$PID" --dovecot-port "$IMAP_PORT" \
  --dovecot-pidfile "$MAILBENCH_REF_DATA/dovecot/run/master.pid" "$@"
# The same stores timed with a raw socket client (server time, no imaplib).
python3 benches/imap/raw_timing.py 30143 "$IMAP_PORT"
