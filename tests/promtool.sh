#!/usr/bin/env bash
# promtool for the alert-rule tests (tests/chart/alerts.rs): the one on PATH when there is one, else
# the binary unpacked from Debian's `prometheus` package (not installed: no server, no service,
# none of its web dependencies), cached outside the repository.
#
# usage: tests/promtool.sh            prints the path of promtool on stdout
# env:   NTO_K8S_CACHE  cache root [~/.cache/nuclia-token-operator]
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
CACHE=${NTO_K8S_CACHE:-${HOME}/.cache/nuclia-token-operator}
OUT=$CACHE/promtool/promtool
log() { echo "[promtool] $*" >&2; }

mkdir -p "$CACHE"
if [[ -x $OUT ]]; then echo "$OUT"; exit 0; fi
exec 9>"$CACHE/promtool.lock"
flock 9
if [[ -x $OUT ]]; then echo "$OUT"; exit 0; fi

W=$(mktemp -d "$CACHE/promtool.XXXXXX")
trap 'rm -rf "$W"' EXIT
log "fetching Debian's prometheus package for its promtool (unpacked, not installed)"
if ! (cd "$W" && apt-get download prometheus >/dev/null 2>&1); then
  apt-get update -q >/dev/null
  (cd "$W" && apt-get download prometheus >/dev/null)
fi
dpkg -x "$W"/prometheus_*.deb "$W/x"
mkdir -p "$(dirname "$OUT")"
install -m755 "$W/x/usr/bin/promtool" "$OUT.new"
mv "$OUT.new" "$OUT"
"$OUT" --version >&2
echo "$OUT"
