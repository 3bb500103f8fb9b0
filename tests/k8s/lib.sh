# shellcheck shell=bash
# Shared by tests/k8s/*.sh: versions, paths, logging and failing. Source it; it defines
# functions and variables only (and creates no files).
#
# Versions come from the go.mod files beside this script, so there is one place to change
# them: tests/k8s/go.mod (Kubernetes, etcd) and tests/k8s/kwok/go.mod (kwok).

K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$K8S_DIR/../.." && pwd)"
ENV_DIR="$ROOT/target/test-env"
KWOK_WORKDIR="$ENV_DIR/kwok"       # kwokctl's KWOK_WORKDIR: clusters/, logs, pki
K8S_ENV_FILE="$ENV_DIR/k8s.env"    # export lines for env.sh
KUBECONFIG_LINK="$KWOK_WORKDIR/kubeconfig"
CLUSTER_NAME="${PACKFY_KWOK_CLUSTER:-packfy}"

# mod_version FILE MODULE: the version FILE requires MODULE at.
mod_version() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}
K8S_VERSION="$(mod_version "$K8S_DIR/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version "$K8S_DIR/go.mod" go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(mod_version "$K8S_DIR/kwok/go.mod" sigs.k8s.io/kwok)"

PACKFY_CACHE="${PACKFY_CACHE:-${HOME:-/root}/.cache/packfy}"
K8S_CACHE_DIR="$PACKFY_CACHE/k8s/$K8S_VERSION-$KWOK_VERSION"
K8S_BIN_DIR="$K8S_CACHE_DIR/bin"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl)

k8s_log() { printf '[k8s] %s\n' "$*" >&2; }

# Under CI: CI set to anything but empty, false or 0 (as tests/support's is_ci).
k8s_is_ci() { [[ -n "${CI:-}" && "${CI,,}" != "false" && "$CI" != "0" ]]; }

# k8s_fail REASON [LOGFILE]: print the reason (and the log's tail) and exit 1. Callers that
# want to carry on without the cluster outside CI check the exit code themselves.
k8s_fail() {
  {
    printf '[k8s] ERROR: %s\n' "$1"
    if [[ -n "${2:-}" && -s "${2:-}" ]]; then
      printf '[k8s] last lines of %s:\n' "$2"
      tail -n 25 "$2" | sed 's/^/    /'
    fi
  } >&2
  exit 1
}
