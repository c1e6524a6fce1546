#!/usr/bin/env bash
# The whole thing on one machine: a real local control plane, nuclia-fake, the CRDs, the operator
# and the examples. Waits until everything is Ready, shows `kubectl get nuclia`, the Secrets'
# keys (values masked) and one rotation, deletes the namespace (every token revoked, chained KB
# key first), then cleans up on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building the operator and nuclia-fake"
cargo build --locked -p nuclia-token-operator -p nuclia-fake --bin nuclia-token-operator --bin nuclia-fake
TARGET_BIN=${CARGO_TARGET_DIR:-target}/debug
STATE=$(mktemp -d "${TMPDIR:-/tmp}/nto-demo.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  tests/k8s/cluster.sh stop "$STATE" >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT

say "starting a local control plane (kube-apiserver v1.20.2; built once and cached)"
BIN=$(tests/k8s/provision.sh)
NTO_CLUSTER_WATCH_PID=$$ tests/k8s/cluster.sh start "$STATE" >/dev/null
export KUBECONFIG=$STATE/kubeconfig
k() { "$BIN/kubectl" "$@"; }

say "starting nuclia-fake"
"$TARGET_BIN/nuclia-fake" --listen 127.0.0.1:0 >"$STATE/fake.out" 2>"$STATE/fake.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -s $STATE/fake.out ]] && break; sleep 0.1; done
field() { python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(eval(sys.argv[2], {}, d))' "$STATE/fake.out" "$1"; }
URL=$(field url); ZONE=$(field zone); KB_URL=$(field 'kbs[0]["url"]')
echo "nuclia-fake at $URL (zone $ZONE)"

say "installing the CRDs and the examples' login Secret (a 30-minute user token)"
k apply -f crds/ >/dev/null
k wait --for=condition=Established crd/nucliapersonaltokens.nuclia.dev crd/nucliakbapikeys.nuclia.dev --timeout=60s >/dev/null
k create namespace demo >/dev/null
field user_token | k -n demo create secret generic nuclia-login --from-file=token=/dev/stdin >/dev/null

say "starting the operator"
"$TARGET_BIN/nuclia-token-operator" --nuclia-global-url "$URL" --nuclia-zone-origin "$ZONE=$URL" \
  --metrics-addr 127.0.0.1:0 --cluster-id demo --verify-interval 30s --rollout-restart-interval 5s >"$STATE/operator.log" 2>&1 &
PIDS+=($!)

say "applying the examples"
k -n demo apply -f examples/personal-token.yaml
k -n demo apply -f examples/consumer-deployment.yaml
sed "s|kbUrl: .*|kbUrl: $KB_URL|" examples/kb-api-key.yaml | k -n demo apply -f -
k -n demo wait --for=condition=Ready nucliapersonaltoken/ci nucliakbapikey/search --timeout=120s

say "kubectl get nuclia"
k -n demo get nuclia -o wide

say "the Secrets the operator wrote (values masked)"
for s in ci-nuclia-token search-nuclia; do
  k -n demo get secret "$s" -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["metadata"]["name"] + ":")
for key, value in sorted(s["data"].items()):
    # only what is not a credential is shown (the token, and any format that carries it, masked)
    shown = key in ("kbUrl", "kbId", "zone", "NUCLIA_KB_URL", "NUCLIA_KB_ID", "NUCLIA_ZONE")
    print("  %-8s %s" % (key, __import__("base64").b64decode(value).decode() if shown else "****(%d bytes)" % len(value)))
'
done

say "one rotation (kubectl annotate ... nuclia.dev/rotate=now)"
OLD=$(k -n demo get npt ci -o jsonpath='{.status.tokenId}')
k -n demo annotate npt ci nuclia.dev/rotate="$(date +%s)" --overwrite >/dev/null
for _ in $(seq 1 300); do
  NEW=$(k -n demo get npt ci -o jsonpath='{.status.tokenId}')
  [[ -n $NEW && $NEW != "$OLD" ]] && break
  sleep 0.2
done
[[ $NEW != "$OLD" ]] || { echo "no rotation happened; operator log:"; tail -20 "$STATE/operator.log"; exit 1; }
echo "token $OLD -> $NEW; the old one stays valid for rotation.revokePreviousAfter, then is revoked"
k -n demo get npt ci -o jsonpath='{range .status.previousTokens[*]}  previous {.id} revoked at {.revokeAt}{"\n"}{end}'
k -n demo get events --field-selector involvedObject.name=ci -o custom-columns=REASON:.reason,MESSAGE:.message | tail -3
say "the KB key's consumer is restarted after a rotation (spec.rolloutRestartTargets)"
sets() { k -n demo get rs -l app=search-client -o jsonpath='{range .items[*]}{.metadata.name}{" restartedAt="}{.spec.template.metadata.annotations.nuclia\.dev/restartedAt}{"\n"}{end}'; }
# the first key restarted it already; count once the controller-manager has made that ReplicaSet
for _ in $(seq 1 100); do sets | grep -q 'restartedAt=2' && break; sleep 0.2; done
BEFORE=$(sets | wc -l)
OLD=$(k -n demo get nkak search -o jsonpath='{.status.tokenId}')
k -n demo annotate nkak search nuclia.dev/rotate="$(date +%s)" --overwrite >/dev/null
for _ in $(seq 1 300); do
  AFTER=$(sets | wc -l)
  NEW=$(k -n demo get nkak search -o jsonpath='{.status.rolloutRestart.tokenId}')
  [[ -n $NEW && $NEW != "$OLD" && $AFTER -gt $BEFORE ]] && break
  sleep 0.2
done
[[ $AFTER -gt $BEFORE ]] || { echo "the consumer was not restarted; operator log:"; tail -20 "$STATE/operator.log"; exit 1; }
echo "key $OLD -> $NEW; ReplicaSets of search-client ($BEFORE before the rotation, $AFTER after):"
sets
k -n demo get events --field-selector involvedObject.name=search -o custom-columns=REASON:.reason,MESSAGE:.message | tail -2

say "deleting the namespace: the KB key is revoked first, then the token it authenticates with"
IDS=$(k -n demo get npt,nkak -o jsonpath='{range .items[*]}{.status.tokenId}{" "}{range .status.previousTokens[*]}{.id}{" "}{end}{end}')
k delete namespace demo --timeout=120s
curl -fsS "$URL/_fake/credentials?all=true" | python3 -c '
import json, sys
ids = set(sys.argv[1].split())
live = [c["id"] for c in json.load(sys.stdin) if c["id"] in ids and c["live"]]
print("namespace gone; %d token(s) the resources held, %d still valid at Nuclia" % (len(ids), len(live)))
sys.exit(1 if live else 0)' "$IDS"
say "done; cleaning up"
