#!/usr/bin/env bash
# pimail scan vs clamscan on the same signatures and corpus (see bench.py).
# Not part of `make test`. Installs Debian's clamav and clamav-testfiles.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v clamscan >/dev/null || [ ! -d /usr/share/clamav-testfiles ] || [ ! -x /usr/bin/time ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clamav clamav-testfiles time >/dev/null
fi
cargo build --locked --release
exec python3 benches/scan/bench.py "$@"
