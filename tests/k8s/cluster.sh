#!/usr/bin/env bash
# A throwaway local control plane for tests and the demo: etcd + kube-apiserver v1.20.2
# + kube-controller-manager (garbage collection, namespaces, service-account tokens),
# bound to 127.0.0.1 on free ports. Binaries come from tests/k8s/provision.sh.
#
# usage: tests/k8s/cluster.sh start STATE_DIR   start (or reuse); prints `export KUBECONFIG=...`
#        tests/k8s/cluster.sh stop STATE_DIR    stop the processes this script started there
#        tests/k8s/cluster.sh restart-apiserver STATE_DIR
# env:   NTO_CLUSTER_WATCH_PID  stop the cluster by itself when this process exits
set -euo pipefail

CMD=${1:-}; D=${2:-}
[[ -n $CMD && -n $D ]] || { echo "usage: $0 start|stop|restart-apiserver STATE_DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "[cluster] $*" >&2; }

alive() { [[ -f $D/$1.pid ]] && kill -0 "$(cat "$D/$1.pid")" 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # description seconds command...
  local what=$1 t=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || { log "timed out waiting for $what"; return 1; }
    sleep 0.3
  done
}

gen_certs() {
  local c=$D/pki
  [[ -f $c/done ]] && return 0
  mkdir -p "$c"
  (
    cd "$c"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=nto-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc' > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    # admin: system:masters is cluster-admin through RBAC's bootstrap policy
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
    printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth' > client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    touch done
  )
}

write_kubeconfig() {
  local c=$D/pki
  cat > "$D/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$(cat "$D/api.port")
    certificate-authority-data: $(base64 -w0 < "$c/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 < "$c/admin.crt")
    client-key-data: $(base64 -w0 < "$c/admin.key")
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
KC
  chmod 600 "$D/kubeconfig"
}

api_ready() {
  curl -fsS --max-time 2 --cacert "$D/pki/ca.crt" --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" \
    "https://127.0.0.1:$(cat "$D/api.port")/readyz"
}

start_apiserver() {
  local c=$D/pki
  setsid "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$(cat "$D/api.port")" --insecure-port=0 \
    --etcd-servers="http://127.0.0.1:$(cat "$D/etcd.port")" \
    --tls-cert-file="$c/apiserver.crt" --tls-private-key-file="$c/apiserver.key" --client-ca-file="$c/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$c/sa.pub" --service-account-signing-key-file="$c/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=RBAC --anonymous-auth=false \
    --allow-privileged=true --profiling=false --enable-priority-and-fairness=false --cert-dir="$c" \
    >>"$D/logs/kube-apiserver.log" 2>&1 </dev/null &
  echo $! > "$D/kube-apiserver.pid"
  wait_for kube-apiserver 120 api_ready || { tail -20 "$D/logs/kube-apiserver.log" >&2; return 1; }
}

stop_one() {
  local f=$D/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop_all() {
  local n
  # The watchdog execs `stop` itself: never kill the process that is doing the stopping.
  if [[ "$(cat "$D/watchdog.pid" 2>/dev/null)" == "$$" ]]; then rm -f "$D/watchdog.pid"; else stop_one watchdog; fi
  for n in kube-controller-manager kube-apiserver etcd; do stop_one $n; done
}

start() {
  mkdir -p "$D/logs"
  if alive etcd && alive kube-apiserver && api_ready >/dev/null 2>&1; then
    log "reusing the control plane in $D"; echo "export KUBECONFIG=$D/kubeconfig"; return 0
  fi
  stop_all
  BIN=$("$HERE/provision.sh")
  echo "$BIN" > "$D/bin.dir"
  gen_certs
  free_port > "$D/api.port"; free_port > "$D/etcd.port"; free_port > "$D/etcd-peer.port"
  write_kubeconfig
  local t0=$SECONDS ep pp
  ep=$(cat "$D/etcd.port"); pp=$(cat "$D/etcd-peer.port")
  rm -rf "$D/etcd-data"
  setsid "$BIN/etcd" --name local --data-dir "$D/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ep" --advertise-client-urls "http://127.0.0.1:$ep" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "local=http://127.0.0.1:$pp" --quota-backend-bytes $((1024 * 1024 * 1024)) \
    >"$D/logs/etcd.log" 2>&1 </dev/null &
  echo $! > "$D/etcd.pid"
  wait_for etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$ep/health" || { tail -20 "$D/logs/etcd.log" >&2; return 1; }
  start_apiserver
  setsid "$BIN/kube-controller-manager" \
    --kubeconfig="$D/kubeconfig" --bind-address=127.0.0.1 --secure-port=0 --port=0 \
    --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file="$D/pki/sa.key" --root-ca-file="$D/pki/ca.crt" \
    --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-pv-protection,-pvc-protection,-ttl,-bootstrapsigner,-tokencleaner,-csrsigning,-csrapproving,-csrcleaner' \
    >"$D/logs/kube-controller-manager.log" 2>&1 </dev/null &
  echo $! > "$D/kube-controller-manager.pid"
  # ready once the service-account controller has made default/default
  wait_for "kube-controller-manager" 120 "$BIN/kubectl" --kubeconfig "$D/kubeconfig" get serviceaccount default \
    -n default -o name --request-timeout=2s || { tail -20 "$D/logs/kube-controller-manager.log" >&2; return 1; }
  if [[ -n ${NTO_CLUSTER_WATCH_PID:-} ]]; then
    # Stop everything when the caller dies, even by SIGKILL, so no test run leaves servers behind.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop "$3"' _ \
      "$NTO_CLUSTER_WATCH_PID" "$HERE/cluster.sh" "$D" >/dev/null 2>&1 </dev/null &
    echo $! > "$D/watchdog.pid"
  fi
  log "ready in $((SECONDS - t0))s (apiserver 127.0.0.1:$(cat "$D/api.port"))"
  echo "export KUBECONFIG=$D/kubeconfig"
}

case $CMD in
  start) start ;;
  stop) stop_all; log "stopped $D" ;;
  restart-apiserver)
    BIN=$(cat "$D/bin.dir"); stop_one kube-apiserver; start_apiserver; log "apiserver restarted" ;;
  *) echo "usage: $0 start|stop|restart-apiserver STATE_DIR" >&2; exit 2 ;;
esac
