#!/usr/bin/env bash
# Outbound delivery benchmark: messages/s from pimail's queue to a local
# sink (as smarthost, so no DNS is involved) with recipients in 1 and 10
# destination domains (one connection per domain), and pimail's RSS with
# 1,000 messages queued. Loopback only; everything it starts is stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${BENCH_MESSAGES:-1000}"
BASE="${BENCH_PORT_BASE:-13000}"
SINK_PORT="${BENCH_SINK_PORT:-2526}"
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="${BENCH_PIMAIL_BIN:-}"
if [ -z "$BIN" ]; then cargo build --release --quiet; BIN="$TARGET/release/pimail"; fi
rustc -O --edition 2024 benches/outbound/sink.rs -o "$TARGET/outbound-sink"
WORK=$(mktemp -d /var/tmp/pimail-outbound.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

run_case() { # domains
  local domains=$1 d="$WORK/p$1"
  "$BIN" init --data-dir "$d" --domain bench.local --dev --port-base "$BASE" >/dev/null
  sed -i "s/^smarthost = \"\"/smarthost = \"127.0.0.1:$SINK_PORT\"/; s/^smarthost_tls = \"starttls\"/smarthost_tls = \"none\"/" "$d/pimail.toml"
  echo benchpass | "$BIN" user add bench@bench.local --password-stdin --config "$d/pimail.toml" >/dev/null
  "$BIN" serve --config "$d/pimail.toml" 2>"$d/log" & local pid=$!; PIDS+=("$pid")
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$((BASE+587))) 2>/dev/null && break; sleep 0.1; done
  # Queue N messages while no sink listens (each fails to connect once).
  python3 - "$((BASE+587))" "$N" "$domains" <<'PY'
import smtplib, sys
port, n, domains = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port)
s.login("bench@bench.local", "benchpass")
body = "From: bench@bench.local\r\nSubject: out\r\n\r\n" + ("x" * 76 + "\r\n") * 50
for i in range(n):
    s.sendmail("bench@bench.local", [f"r{i}@d{i % domains}.example"], body)
s.quit()
PY
  sleep 2
  local queued_rss; queued_rss=$(rss "$pid")
  local queued; queued=$("$BIN" queue list --config "$d/pimail.toml" | wc -l)
  # Now the sink comes up and every entry is made due at once.
  "$TARGET/outbound-sink" "127.0.0.1:$SINK_PORT" 120 > "$d/sink.out" & local sink=$!; PIDS+=("$sink")
  sleep 0.3
  local t0; t0=$(date +%s.%N)
  "$BIN" queue retry --config "$d/pimail.toml" >/dev/null
  local peak=0
  while kill -0 "$sink" 2>/dev/null; do r=$(rss "$pid"); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.1; done
  local t1; t1=$(date +%s.%N)
  local out; out=$(cat "$d/sink.out")
  local msgs=${out#messages=}; msgs=${msgs%% *}
  local last=${out##*last_ms=}
  local left; left=$("$BIN" queue list --config "$d/pimail.toml" | wc -l)
  # Delivery time: from `queue retry` (sink start + 0.3 s) to the last message.
  local secs; secs=$(awk -v l="$last" 'BEGIN { printf "%.2f", (l - 300) / 1000 }')
  local rate; rate=$(awk -v m="$msgs" -v s="$secs" 'BEGIN { if (s > 0) printf "%.0f", m / s; else print "n/a" }')
  printf '| %s | %s | %s | %s | %s | %s KiB | %s KiB |\n' "$domains" "$queued" "$msgs" "$left" "$rate" "$queued_rss" "$peak"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  : "$t0" "$t1"
}

echo "| domains | queued | delivered | left in queue | msg/s | RSS with $N queued | peak RSS delivering |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
run_case 1
run_case 10
