#!/usr/bin/env bash
# Provision the real `nuclia` Python SDK/CLI (from PyPI, with pip) in a virtualenv, for the test
# that runs it against nuclia-fake with a Secret's NucliaConfig file (tests/cluster/secret_formats.rs).
#
# Idempotent and cached outside the repository, keyed by version, so a fresh clone on the same
# machine (CI) reuses it; concurrent callers wait on a lock instead of installing twice. Fails
# loudly (never skips) when python3, its venv module or the package index is missing.
#
# usage: tests/sdk/provision.sh            prints the virtualenv dir on stdout
# env:   NTO_NUCLIA_SDK_VERSION  version of the `nuclia` package [4.15.0]
#        NTO_K8S_CACHE           cache root [~/.cache/nuclia-token-operator]
set -euo pipefail

VERSION=${NTO_NUCLIA_SDK_VERSION:-4.15.0}
CACHE=${NTO_K8S_CACHE:-${HOME}/.cache/nuclia-token-operator}
OUT=$CACHE/nuclia-sdk-$VERSION
log() { echo "[provision-sdk] $*" >&2; }

ready() { [[ -x $OUT/bin/nuclia && -f $OUT/.complete ]]; }

mkdir -p "$CACHE"
if ready; then echo "$OUT"; exit 0; fi

exec 9>"$CACHE/provision-sdk.lock"
flock 9
if ready; then echo "$OUT"; exit 0; fi

command -v python3 >/dev/null || { log "python3 is missing (apt-get install python3 python3-venv)"; exit 1; }
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  log "python3 cannot make virtualenvs: install python3-venv (apt-get install python3-venv)"
  exit 1
fi
# A virtualenv records its own path, so it is built in place; `.complete` marks it whole.
rm -rf "$OUT"
trap 'ready || rm -rf "$OUT"' EXIT
log "installing nuclia==$VERSION from the package index into a virtualenv"
python3 -m venv "$OUT"
"$OUT/bin/pip" install --quiet --disable-pip-version-check "nuclia==$VERSION" >&2 || {
  log "pip could not install nuclia==$VERSION (no network or no package index?)"
  exit 1
}
"$OUT/bin/python" -c 'import nuclia.config, nuclia.sdk' >&2
touch "$OUT/.complete"
log "nuclia $VERSION ready in $OUT"
echo "$OUT"
