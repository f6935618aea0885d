#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1, for the cluster tests and for trying the chart:
# etcd, kube-apiserver (RBAC, a CA made here), kube-controller-manager, kube-scheduler, and kwok
# standing in for the kubelets. kwok runs no containers: it gives pods an IP and Pending status;
# tests/cluster/podrunner runs what each pod's container would run (see tests/cluster/README.md).
#
#   scripts/k8s/cluster.sh up [STATE_DIR]        # build if needed, start, wait for a Ready node
#   scripts/k8s/cluster.sh down [STATE_DIR]      # stop exactly the processes `up` started
#   scripts/k8s/cluster.sh add-node NAME [STATE_DIR]
#   scripts/k8s/cluster.sh env [STATE_DIR]       # `eval "$(... env)"` sets KUBECONFIG and PATH
#
# STATE_DIR defaults to <repo>/.cluster (git-ignored): PKI, kubeconfigs, etcd data, logs, pids.
# Ports are free ones picked at `up` and written to STATE_DIR/env. Pods get loopback IPs
# 127.<net>.<node>.<n>; <net> is taken under a lock in /tmp, so clusters of several checkouts
# on one machine never hand out the same pod IP. Services get 127.96.x.y (nothing listens there).
#   PDSTACK_K8S_NODES=2          nodes made by `up` (each: 64 cpu, 512Gi, 8 nvidia.com/gpu)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/k8s/env.sh
source "$HERE/env.sh"

CMD=${1:-}
say() { printf 'k8s-cluster: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

state_dir() { local d=${1:-$ROOT/.cluster}; mkdir -p "$d"; cd "$d" && pwd; }

SERVICE_CIDR=127.96.0.0/16
SERVICE_IP=127.96.0.1
NODE_ANNOTATION=kwok.x-k8s.io/node=fake

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# --- PKI ---------------------------------------------------------------------------------------
make_pki() {
  local pki=$S/pki
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=pdstack-test-ca" 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # name  subject                                                    extendedKeyUsage  SANs
    cert apiserver "/CN=kube-apiserver" serverAuth \
      "IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert kwok-serving "/CN=kwok" serverAuth "IP:127.0.0.1,DNS:localhost"
    cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    cert controller-manager "/CN=system:kube-controller-manager" clientAuth
    cert scheduler "/CN=system:kube-scheduler" clientAuth
    # kwok acts for every node (status, leases, pods): an admin identity, as in kwokctl.
    cert kwok "/O=system:masters/CN=kwok-controller" clientAuth
  )
}

cert() {
  local name=$1 subj=$2 usage=$3 sans=${4:-}
  local ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage"
  [[ -n "$sans" ]] && ext+="
subjectAltName=$sans"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -out "$name.crt" -extfile <(printf '%s\n' "$ext") 2>/dev/null
  rm -f "$name.csr"
}

kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pdstack
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $S/pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $S/pki/$user.crt
    client-key: $S/pki/$user.key
contexts:
- name: pdstack
  context: {cluster: pdstack, user: $user, namespace: default}
current-context: pdstack
EOF
}

# --- processes ---------------------------------------------------------------------------------
start() {
  local name=$1
  shift
  # Own session, so `down` can signal the process without touching its parent shell; the
  # pod-network lock (fd 9) is inherited and held for as long as any of them runs.
  setsid "$@" >"$S/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$S/pids"
}

is_ours() { # pid binary: the pid is alive and still runs the binary we started
  [[ -r /proc/$1/cmdline ]] && [[ "$(tr '\0' '\n' <"/proc/$1/cmdline" | head -1)" == "$2" ]]
}

wait_for() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what (logs in $S/logs)"
    check_alive
    sleep 0.2
  done
}

check_alive() {
  local name pid
  while read -r name pid; do
    is_ours "$pid" "$K8S_BIN/$name" || die "$name exited: $(tail -5 "$S/logs/$name.log")"
  done <"$S/pids"
}

kc() { "$K8S_BIN/kubectl" --kubeconfig "$S/kubeconfig" "$@"; }

add_node() { # name index
  local cidr=127.$POD_NET.$2.0/24
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations: {${NODE_ANNOTATION%%=*}: ${NODE_ANNOTATION#*=}}
  labels: {type: kwok, kubernetes.io/hostname: $1, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
spec:
  podCIDR: $cidr
  podCIDRs: [$cidr]
status:
  allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8", ephemeral-storage: 1Ti}
  capacity: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8", ephemeral-storage: 1Ti}
EOF
  wait_for 30 "node $1 Ready" kc wait --for=condition=Ready "node/$1" --timeout=1s
}

stages_file() {
  # kwok's own node stages (copied next to the binaries at build time) and the project's pod
  # stages. No KwokConfiguration document: one in this file disables kwok's option defaults.
  local f
  for f in "$K8S_KWOK_FILES/stage/node/fast/node-initialize.yaml" \
    "$K8S_KWOK_FILES/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
    "$HERE/stages/pod-create.yaml" "$HERE/stages/pod-delete.yaml"; do
    [[ -f "$f" ]] || die "missing stage file $f"
    echo "---"
    cat "$f"
  done
}

up() {
  S=$(state_dir "${1:-}")
  if [[ -f "$S/pids" ]]; then
    # shellcheck disable=SC1091
    source "$S/env"
    if (check_alive) 2>/dev/null; then
      say "already running ($S)"
      return
    fi
    say "a cluster started in $S has died in part: stopping the rest and starting afresh"
    down "$S"
  fi
  "$HERE/build.sh" >/dev/null
  local t0=$SECONDS
  rm -rf "$S/etcd" "$S/logs" "$S/pki" "$S/pids"
  mkdir -p "$S/logs"

  # A pod network no other cluster on this machine uses, held while our processes run.
  local net
  for net in $(seq 101 199); do
    exec 9>"/tmp/pdstack-k8s-podnet-$net.lock"
    if flock -n 9; then POD_NET=$net; break; fi
    exec 9>&-
  done
  [[ -n "${POD_NET:-}" ]] || die "no free pod network 127.101-199.x.y"

  read -r API_PORT ETCD_PORT ETCD_PEER_PORT CM_PORT SCHED_PORT KWOK_PORT <<<"$(free_ports 6)"
  cat >"$S/env" <<EOF
export KUBECONFIG=$S/kubeconfig
export PATH=$K8S_BIN:$ROOT/.tools/bin:\$PATH
PDSTACK_K8S_BIN=$K8S_BIN
PDSTACK_K8S_STATE=$S
API_PORT=$API_PORT
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
CM_PORT=$CM_PORT
SCHED_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
POD_NET=$POD_NET
EOF
  make_pki
  kubeconfig "$S/kubeconfig" admin
  kubeconfig "$S/controller-manager.kubeconfig" controller-manager
  kubeconfig "$S/scheduler.kubeconfig" scheduler
  kubeconfig "$S/kwok.kubeconfig" kwok
  local pki=$S/pki

  start etcd "$K8S_BIN/etcd" --name pdstack --data-dir "$S/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "pdstack=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --endpoint-reconciler-type none --profiling=false
  wait_for 60 "kube-apiserver /readyz" kc get --raw /readyz
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$S/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$S/controller-manager.kubeconfig" --authorization-kubeconfig "$S/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --profiling=false
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$S/scheduler.kubeconfig" \
    --authentication-kubeconfig "$S/scheduler.kubeconfig" --authorization-kubeconfig "$S/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --profiling=false

  # kwok serves port-forward from PortForward objects (the pod runner makes one per pod).
  kc apply -f "$K8S_KWOK_FILES/crds/kwok.x-k8s.io_portforwards.yaml" \
    -f "$K8S_KWOK_FILES/crds/kwok.x-k8s.io_clusterportforwards.yaml" >/dev/null
  stages_file >"$S/kwok-stages.yaml"
  start kwok "$K8S_BIN/kwok" --kubeconfig "$S/kwok.kubeconfig" --config "$S/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector "$NODE_ANNOTATION" \
    --node-ip 127.0.0.1 --node-port "$KWOK_PORT" --server-address "127.0.0.1:$KWOK_PORT" \
    --tls-cert-file "$pki/kwok-serving.crt" --tls-private-key-file "$pki/kwok-serving.key" \
    --cidr "127.$POD_NET.255.0/24" --node-lease-duration-seconds 40 \
    --enable-crds PortForward,ClusterPortForward
  exec 9>&-

  local i
  for ((i = 0; i < ${PDSTACK_K8S_NODES:-2}; i++)); do add_node "kwok-node-$i" "$i"; done
  wait_for 60 "the default ServiceAccount" kc get serviceaccount default -n default
  say "up in $((SECONDS - t0))s: API https://127.0.0.1:$API_PORT, pods 127.$POD_NET.x.y, state $S"
  say "use it with: eval \"\$($0 env $S)\""
}

down() {
  S=$(state_dir "${1:-}")
  [[ -f "$S/pids" ]] || { say "nothing running in $S"; return; }
  # shellcheck disable=SC1091
  source "$S/env"
  local name pid pids=()
  # Reverse start order: kwok and the controllers first, etcd last.
  while read -r name pid; do
    if is_ours "$pid" "$PDSTACK_K8S_BIN/$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid:$PDSTACK_K8S_BIN/$name")
    fi
  done < <(tac "$S/pids")
  local deadline=$((SECONDS + 20)) p
  for p in "${pids[@]}"; do
    while is_ours "${p%%:*}" "${p#*:}" && ((SECONDS < deadline)); do sleep 0.1; done
    is_ours "${p%%:*}" "${p#*:}" && kill -KILL "${p%%:*}" 2>/dev/null || true
  done
  rm -f "$S/pids" "/tmp/pdstack-k8s-podnet-$POD_NET.lock"
  say "stopped ${#pids[@]} processes (state kept in $S)"
}

case $CMD in
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  add-node)
    [[ -n "${2:-}" ]] || die "usage: $0 add-node NAME [STATE_DIR]"
    S=$(state_dir "${3:-}")
    # shellcheck disable=SC1091
    source "$S/env"
    add_node "$2" "$(($(kc get nodes -o name | wc -l)))"
    ;;
  env)
    S=$(state_dir "${2:-}")
    [[ -f "$S/env" ]] || die "no cluster state in $S"
    grep '^export ' "$S/env"
    ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
