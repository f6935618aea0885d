# Sourced by scripts/k8s/*.sh: the pinned control-plane versions and where their build is cached.
#
# The binaries are big (~0.4 GB) and slow to build (5-10 min on 2 cores), and CI runs in a fresh
# clone, so they live OUTSIDE the clone, in a folder keyed by every version that goes into them:
#   ${PDSTACK_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pdstack/k8s}/<key>/bin
# kwok's Stage and CRD YAMLs are copied next to them (<key>/kwok/), so nothing needs the Go
# module cache once the build is done.

K8S_VERSION=v1.36.1   # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
ETCD_VERSION=v3.6.8   # the version k8s v1.36.1's go.mod requires
KWOK_VERSION=v0.8.0   # links k8s.io/* v0.36.1; its supported releases start at 1.36.1

k8s_go_version() { GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo nogo; }

K8S_CACHE_ROOT=${PDSTACK_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pdstack/k8s}
K8S_KEY="k8s-$K8S_VERSION.etcd-$ETCD_VERSION.kwok-$KWOK_VERSION.$(k8s_go_version)"
K8S_HOME=$K8S_CACHE_ROOT/$K8S_KEY
K8S_BIN=$K8S_HOME/bin
K8S_KWOK_FILES=$K8S_HOME/kwok
K8S_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

# What each binary must answer to --version (checked on every run, as install-tools.sh does).
k8s_binary_ok() {
  local bin=$K8S_BIN/$1 out
  [[ -x "$bin" ]] || return 1
  case $1 in
    etcd) out=$("$bin" --version 2>/dev/null | head -1); [[ "$out" == "etcd Version: ${ETCD_VERSION#v}" ]] ;;
    kubectl) out=$("$bin" version --client 2>/dev/null | head -1); [[ "$out" == "Client Version: $K8S_VERSION" ]] ;;
    kwok) out=$("$bin" --version 2>/dev/null | head -1); [[ "$out" == *"${KWOK_VERSION#v}"* ]] ;;
    *) out=$("$bin" --version 2>/dev/null | head -1); [[ "$out" == "Kubernetes $K8S_VERSION" ]] ;;
  esac
}

k8s_installed() {
  local b
  for b in "${K8S_BINARIES[@]}"; do k8s_binary_ok "$b" || return 1; done
  [[ -f "$K8S_KWOK_FILES/.complete" ]]
}
